"""The store's uniqueness rules hold on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core import appointments
from core.models import Slot
from core.outbox import Kind, Pending
from core.store.migrate import pending as schema_pending
from core.store.repo import lead_for
from core.store.tables import Booking, Call, Conversation, Lead, OutboxRow

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)


def _conversation(session, phone: str = "+15550100001") -> Conversation:
    lead = lead_for(session, tenant_id="t1", phone=phone)
    conversation = Conversation(tenant_id="t1", lead_id=lead.id, business_number="+15550000000", playbook="law",
                                state="booking", answers={}, offered_slots=[])
    session.add(conversation)
    session.flush()
    return conversation


def test_migrations_bring_the_database_to_head(any_db):
    assert schema_pending(any_db.engine) is False


def test_the_migrations_build_exactly_the_tables_the_code_declares(any_db):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from core.store.tables import Base

    with any_db.engine.connect() as connection:
        drift = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert drift == [], "tables.py and the migrations disagree; add a migration for: " + repr(drift)


def test_a_lead_is_one_per_tenant_and_phone(any_db):
    with any_db.transaction() as s:
        first = lead_for(s, tenant_id="t1", phone="+15550100001")
        again = lead_for(s, tenant_id="t1", phone="+15550100001")
        other_tenant = lead_for(s, tenant_id="t2", phone="+15550100001")
    assert first.id == again.id != other_tenant.id

    with pytest.raises(IntegrityError):
        with any_db.transaction() as s:
            s.add(Lead(tenant_id="t1", phone="+15550100001"))


def test_a_call_sid_is_stored_once(any_db):
    with any_db.transaction() as s:
        s.add(Call(tenant_id="t1", call_sid="CA1", from_number="+1", to_number="+2"))
    with pytest.raises(IntegrityError):
        with any_db.transaction() as s:
            s.add(Call(tenant_id="t1", call_sid="CA1", from_number="+1", to_number="+2"))


def test_datetimes_come_back_aware_and_in_utc(any_db):
    local = T0.astimezone(timezone(timedelta(hours=-5)))
    with any_db.transaction() as s:
        conversation = _conversation(s)
        s.add(Booking(tenant_id="t1", conversation_id=conversation.id, lead_id=conversation.lead_id,
                      calendar_id="c", start_at=local, end_at=local + timedelta(minutes=30), status="held"))
    with any_db.transaction() as s:
        booking = s.scalar(select(Booking))
    assert booking.start_at == T0 and booking.start_at.tzinfo is not None


def test_an_outbox_key_is_written_once(any_db):
    pending = Pending()
    with any_db.transaction() as s:
        a = pending.add(s, tenant_id="t1", kind=Kind.send_sms, key="sms:1", payload={"message_id": 1})
        b = pending.add(s, tenant_id="t1", kind=Kind.send_sms, key="sms:1", payload={"message_id": 1})
    assert a == b and pending.ids == [a]
    with any_db.transaction() as s:
        assert len(s.scalars(select(OutboxRow)).all()) == 1


def test_two_conversations_cannot_hold_the_same_slot_but_a_released_one_frees_it(any_db):
    slot = Slot(calendar_id="staff@example.com", start=T0, end=T0 + timedelta(minutes=30))
    with any_db.transaction() as s:
        first = appointments.hold(s, conversation=_conversation(s, "+15550100001"), slot=slot)
        second = appointments.hold(s, conversation=_conversation(s, "+15550100002"), slot=slot)
    assert first is not None and second is None

    with any_db.transaction() as s:
        appointments.release(s, s.get(Booking, first.id))
        third = appointments.hold(s, conversation=_conversation(s, "+15550100003"), slot=slot)
    assert third is not None

"""An engine turn applied to the store (core/inbound.py `_step`): state, replies, outbox rows, handoff, reachability."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from core.config import Tenant
from core.inbound import inbound_sms
from core.outbox import Pending
from core.store.tables import Booking, Conversation, Lead, Message, OutboxRow
from tests.core.engine.conftest import OFFERED

BUSINESS, CALLER, STAFF = "+15550001111", "+15550103333", "+15550009999"
NOW = datetime(2025, 3, 4, 15, 0, tzinfo=timezone.utc)
_sids = itertools.count(1)


@pytest.fixture
def tenant() -> Tenant:
    return Tenant(id="t1", name="Smith & Lee Law", vertical="law", timezone="America/New_York",
                  phone_numbers=[BUSINESS], missed_call={"mode": "forwarded"}, contact="(555) 000-1111",
                  handoff_to=[STAFF], hours={"mon": "09:00-17:00"})


def text(db, tenant: Tenant, body: str, *, now: datetime = NOW) -> int:
    with db.transaction() as session:
        outcome = inbound_sms(session, tenant=tenant, message_sid=f"SM{next(_sids):032d}", caller=CALLER,
                              called=BUSINESS, body=body, now=now, pending=Pending())
    return outcome.conversation_id


def conversation(db, conversation_id: int) -> Conversation:
    with db.transaction() as session:
        return session.get(Conversation, conversation_id)


def rows(db, kind: str) -> list[OutboxRow]:
    with db.transaction() as session:
        return list(session.scalars(select(OutboxRow).where(OutboxRow.kind == kind).order_by(OutboxRow.id)))


def last_reply(db, conversation_id: int) -> str:
    with db.transaction() as session:
        return session.scalars(select(Message.body).where(Message.conversation_id == conversation_id,
                                                          Message.direction == "outbound")
                               .order_by(Message.id.desc())).first()


def booked(db, conversation_id: int, *, start: datetime) -> None:
    with db.transaction() as session:
        row = session.get(Conversation, conversation_id)
        row.state, row.outcome = "booked", "booked"
        session.add(Booking(tenant_id="t1", conversation_id=row.id, lead_id=row.lead_id, calendar_id="staff",
                            start_at=start, end_at=start + timedelta(minutes=30), status="confirmed",
                            external_event_id="evt1"))


def test_an_answer_moves_the_conversation_on_and_texts_the_next_question(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    text(sqlite_db, tenant, "It's about my divorce")
    row = conversation(sqlite_db, cid)
    assert (row.state, row.step, row.answers) == ("asking", "deadline", {"matter_type": "family"})
    assert "court date" in last_reply(sqlite_db, cid)


def test_unclear_replies_are_counted_on_the_step_column_not_in_the_answers(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    text(sqlite_db, tenant, "hmm")
    assert (conversation(sqlite_db, cid).step, conversation(sqlite_db, cid).answers) == ("matter_type#1", {})
    text(sqlite_db, tenant, "1")
    assert conversation(sqlite_db, cid).step == "deadline"


def test_a_handoff_stores_the_summary_tells_staff_and_the_caller(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    text(sqlite_db, tenant, "criminal")
    text(sqlite_db, tenant, "Can I talk to a lawyer please?")
    row = conversation(sqlite_db, cid)
    assert row.state == "handoff" and row.outcome == "needs_human"
    assert row.handoff_summary.startswith("Needs a person: the caller asked for a person.")
    assert "Matter type: Criminal defense" in row.handoff_summary
    assert row.handoff_summary.endswith(f"Transcript: conversation {cid}.")
    assert last_reply(sqlite_db, cid).startswith("Thanks. A member of the Smith & Lee Law team will get back to you")
    [notify] = rows(sqlite_db, "notify_staff")
    assert notify.payload["to"] == STAFF and "Needs a person" in notify.payload["body"]


def test_a_caller_who_texts_after_a_handoff_is_not_asked_the_questions_again(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    text(sqlite_db, tenant, "get me a real person")
    assert text(sqlite_db, tenant, "ok thanks") == cid
    assert "passed that on" in last_reply(sqlite_db, cid)
    assert conversation(sqlite_db, cid).state == "handoff"


def outbound(db, conversation_id: int) -> list[str]:
    with db.transaction() as session:
        return list(session.scalars(select(Message.body).where(Message.conversation_id == conversation_id,
                                                               Message.direction == "outbound").order_by(Message.id)))


def test_a_caller_who_keeps_texting_after_a_handoff_gets_one_acknowledgement_and_staff_get_every_text(
        sqlite_db, tenant):
    # Given a conversation handed to staff
    cid = text(sqlite_db, tenant, "hi")
    text(sqlite_db, tenant, "can i just talk to a person")
    before = outbound(sqlite_db, cid)
    # When the caller texts seven more times
    later = ["ok", "hello?", "are you there", "its about my custody case", "my ex is named Tom Reyes",
             "please call me after 5", "thanks"]
    for body in later:
        assert text(sqlite_db, tenant, body) == cid
    # Then they read one acknowledgement, and staff read every text in the #id thread
    after = outbound(sqlite_db, cid)[len(before):]
    assert len(after) == 1 and "passed that on" in after[0]
    relayed = [r.payload["body"] for r in rows(sqlite_db, "notify_staff") if r.idempotency_key.startswith("relay:")]
    assert len(relayed) == len(later)
    assert all(f"#{cid}" in body and r in body for body, r in zip(relayed, later))
    assert {r.payload["to"] for r in rows(sqlite_db, "notify_staff")} == {STAFF}
    assert len([r for r in rows(sqlite_db, "crm_log_conversation")]) >= len(later)


def test_a_danger_described_after_a_handoff_gets_the_safety_text_once_and_staff_a_flagged_relay(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    text(sqlite_db, tenant, "talk to a human please")
    text(sqlite_db, tenant, "he is threatening me right now")
    text(sqlite_db, tenant, "he is still threatening me")
    replies = outbound(sqlite_db, cid)
    assert sum("call 911" in r for r in replies) == 1
    relayed = [r.payload["body"] for r in rows(sqlite_db, "notify_staff") if r.idempotency_key.startswith("relay:")]
    assert all(body.startswith("textback: EMERGENCY") for body in relayed) and len(relayed) == 2


def test_a_caller_in_a_conversation_staff_took_over_is_relayed_not_answered(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    with sqlite_db.transaction() as session:
        session.get(Conversation, cid).paused = True
    before = outbound(sqlite_db, cid)
    text(sqlite_db, tenant, "ok see you at 3 then")
    assert outbound(sqlite_db, cid) == before
    [relay] = [r for r in rows(sqlite_db, "notify_staff") if r.idempotency_key.startswith("relay:")]
    assert "see you at 3" in relay.payload["body"] and f"#{cid}" in relay.payload["body"]


def test_qualifying_asks_the_booking_side_for_times_once_per_inbound_message(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    for reply in ("1", "no", "no", "Maria Lopez", "none"):
        text(sqlite_db, tenant, reply)
    row = conversation(sqlite_db, cid)
    assert row.state == "offering" and row.outcome == "qualified"
    [offer] = rows(sqlite_db, "offer_slots")
    assert offer.payload == {"conversation_id": cid}


def test_a_pick_books_the_offered_slot_and_a_window_asks_for_times_inside_it(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    for reply in ("1", "no", "no", "Maria Lopez", "none"):
        text(sqlite_db, tenant, reply)
    with sqlite_db.transaction() as session:
        row = session.get(Conversation, cid)
        row.state, row.offered_slots = "choosing", OFFERED
    text(sqlite_db, tenant, "Friday morning instead?")
    assert conversation(sqlite_db, cid).answers["preferred_window"]["start"].startswith("2025-03-07T08:00")
    assert len(rows(sqlite_db, "offer_slots")) == 2
    with sqlite_db.transaction() as session:
        row = session.get(Conversation, cid)
        row.state, row.offered_slots = "choosing", OFFERED
    text(sqlite_db, tenant, "3")
    [book] = rows(sqlite_db, "book_slot")
    assert book.payload == {"conversation_id": cid, "slot": OFFERED[2]} and conversation(sqlite_db, cid).state == "booking"


def test_a_booked_caller_reaches_the_booked_conversation_to_move_it(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    booked(sqlite_db, cid, start=NOW + timedelta(days=2))
    assert text(sqlite_db, tenant, "can we move it?") == cid
    [move] = rows(sqlite_db, "reschedule_booking")
    assert move.payload == {"conversation_id": cid} and conversation(sqlite_db, cid).state == "offering"


def test_a_booked_caller_cancels_in_words_and_the_booking_side_is_asked_to(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    booked(sqlite_db, cid, start=NOW + timedelta(days=2))
    text(sqlite_db, tenant, "I need to cancel my appointment")
    [cancel] = rows(sqlite_db, "cancel_booking")
    assert cancel.payload == {"conversation_id": cid}
    row = conversation(sqlite_db, cid)
    assert row.state == "booked" and row.outcome == "booked"


def test_a_handoff_from_a_booked_conversation_keeps_the_appointment(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    booked(sqlite_db, cid, start=NOW + timedelta(days=2))
    text(sqlite_db, tenant, "what should I do about my ex hiding assets?")
    text(sqlite_db, tenant, "where do I park when I get there?")
    row = conversation(sqlite_db, cid)
    assert row.state == "booked" and row.outcome == "booked" and row.handoff_summary
    assert len(rows(sqlite_db, "notify_staff")) == 1


def test_after_the_appointment_has_passed_a_new_text_starts_a_new_conversation(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    booked(sqlite_db, cid, start=NOW - timedelta(days=1))
    assert text(sqlite_db, tenant, "hello again") != cid


def test_a_caller_who_is_not_a_fit_is_closed_and_logged(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    text(sqlite_db, tenant, "it's about a patent")
    row = conversation(sqlite_db, cid)
    assert (row.state, row.outcome) == ("closed", "not_fit") and row.closed_at is not None
    assert "doesn't handle" in last_reply(sqlite_db, cid)
    assert rows(sqlite_db, "crm_log_conversation")


def test_the_name_the_caller_gives_becomes_the_leads_so_crm_contacts_and_events_carry_it(sqlite_db, tenant):
    cid = text(sqlite_db, tenant, "hi")
    for reply in ("divorce", "no", "nope first time", "this is maria lopez"):
        text(sqlite_db, tenant, reply)
    with sqlite_db.transaction() as session:
        lead = session.get(Lead, session.get(Conversation, cid).lead_id)
        assert (lead.first_name, lead.last_name) == ("Maria", "Lopez")
    assert conversation(sqlite_db, cid).step == "other_party"
    # the CRM contact, made from the number at the missed call, is refreshed with the name once
    assert [r.payload for r in rows(sqlite_db, "crm_sync_lead") if r.idempotency_key.endswith(":named")] == [
        {"lead_id": lead.id}]

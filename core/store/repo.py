"""Small queries shared by the core services and the sync handlers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from core.engine.conversation import OPEN_PHASES, Phase
from core.store.tables import Base, Booking, Conversation, ExternalId, Lead, Message

HANDOFF_REACH = timedelta(days=7)


def lead_for(session: Session, *, tenant_id: str, phone: str) -> Lead:
    lead = find_lead(session, tenant_id=tenant_id, phone=phone)
    if lead is None:
        lead = Lead(tenant_id=tenant_id, phone=phone)
        session.add(lead)
        session.flush()
    return lead


def find_lead(session: Session, *, tenant_id: str, phone: str) -> Lead | None:
    return session.scalar(_LEAD_BY_PHONE, {"tenant_id": tenant_id, "phone": phone})


def insert_row(session: Session, model: type[Base], **values: Any) -> int:
    """INSERT ... RETURNING id through SQLAlchemy Core, for the rows the missed-call path writes and does not
    read back in its transaction: about a tenth of the CPU of an ORM flush, which every first text paid
    several times. Columns left out get their defaults (timestamps from the transaction's clock)."""
    statement = _INSERTS.get(model)
    if statement is None:
        table = model.__table__
        statement = _INSERTS[model] = insert(table).returning(table.c.id)
    return session.execute(statement, values).scalar_one()


_INSERTS: dict[type, Any] = {}


_LEAD_BY_PHONE = select(Lead).where(Lead.tenant_id == bindparam("tenant_id"), Lead.phone == bindparam("phone"))


def open_conversation(session: Session, *, lead_id: int) -> Conversation | None:
    return session.scalar(
        select(Conversation)
        .where(Conversation.lead_id == lead_id, Conversation.state.in_([p.value for p in OPEN_PHASES]))
        .order_by(Conversation.id.desc())
        .limit(1)
    )


def reachable_conversation(session: Session, *, lead_id: int, now: datetime) -> Conversation | None:
    """The conversation a caller's text continues: an open one; else the one holding their upcoming
    appointment (so "can we move it?" reaches it); else one handed to staff within HANDOFF_REACH (so
    "ok thanks" does not restart the questions). Not "open" for the missed-call policy."""
    found = open_conversation(session, lead_id=lead_id)
    if found is not None:
        return found
    found = session.scalar(
        select(Conversation).join(Booking, Booking.conversation_id == Conversation.id)
        .where(Conversation.lead_id == lead_id, Conversation.state == Phase.booked.value,
               Booking.status == "confirmed", Booking.start_at > now)
        .order_by(Booking.start_at).limit(1)
    )
    if found is not None:
        return found
    return session.scalar(
        select(Conversation)
        .where(Conversation.lead_id == lead_id, Conversation.state == Phase.handoff.value,
               Conversation.updated_at >= now - HANDOFF_REACH)
        .order_by(Conversation.id.desc()).limit(1)
    )


def add_outbound(session: Session, *, conversation: Conversation | ConversationRef, body: str, purpose: str = "reply",
                 template: str | None = None) -> int:
    """A queued outbound text in the conversation's transcript; returns its id."""
    return insert_row(session, Message, tenant_id=conversation.tenant_id, conversation_id=conversation.id,
                      lead_id=conversation.lead_id, business_number=conversation.business_number,
                      direction="outbound", body=body, status="queued", purpose=purpose, template=template)


@dataclass(frozen=True)
class ConversationRef:
    """What writing a text into a conversation needs, for one inserted without an ORM object."""

    id: int
    tenant_id: str
    lead_id: int
    business_number: str


def transcript(session: Session, *, conversation_id: int) -> list[Message]:
    return list(session.scalars(select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)))


def external_id(session: Session, *, tenant_id: str, connector: str, local_kind: str, local_id: int) -> str | None:
    return session.scalar(
        select(ExternalId.external_id).where(
            ExternalId.tenant_id == tenant_id,
            ExternalId.connector == connector,
            ExternalId.local_kind == local_kind,
            ExternalId.local_id == local_id,
        )
    )


def remember_external_id(
    session: Session, *, tenant_id: str, connector: str, local_kind: str, local_id: int, external_id: str
) -> None:
    remember_external_ids(session, tenant_id=tenant_id, connector=connector, local_kind=local_kind,
                          external_ids={local_id: external_id})


def remember_external_ids(
    session: Session, *, tenant_id: str, connector: str, local_kind: str, external_ids: Mapping[int, str]
) -> None:
    """Map each local record of one kind to its external id (the mapping replaced where one exists), with one query
    for all of them."""
    if not external_ids:
        return
    known = {row.local_id: row for row in session.scalars(select(ExternalId).where(
        ExternalId.tenant_id == tenant_id, ExternalId.connector == connector, ExternalId.local_kind == local_kind,
        ExternalId.local_id.in_(sorted(external_ids))))}
    for local_id, new_id in external_ids.items():
        if local_id in known:
            known[local_id].external_id = new_id
        else:
            session.add(ExternalId(tenant_id=tenant_id, connector=connector, local_kind=local_kind,
                                   local_id=local_id, external_id=new_id))

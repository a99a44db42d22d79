"""Offers, holds and confirmations: the booking records around a calendar event.

A slot is held by inserting a Booking row; the partial unique index on
(tenant, calendar, start) for active bookings means two callers who pick the
same slot at once cannot both hold it. A booking counts only when the calendar
event exists (status `confirmed`, external_event_id set).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.booking import label
from core.config import Tenant
from core.engine.conversation import Phase, slot_list
from core.engine.playbook import load_playbook
from core.models import Slot
from core.outbox import Kind, Pending, log_conversation_later
from core.store.repo import add_outbound
from core.store.tables import Booking, Conversation


def offer(session: Session, *, tenant: Tenant, conversation: Conversation, slots: list[Slot], pending: Pending,
          template: str = "offer") -> None:
    """Record the offered slots on the conversation and text them (or hand off when there are none)."""
    playbook = load_playbook(conversation.playbook)
    if not slots:
        conversation.state, conversation.offered_slots = Phase.handoff.value, []
        _say(session, tenant, conversation, playbook.no_slots.format(business=tenant.name), pending)
        return
    offered = [{"calendar_id": s.calendar_id, "start": s.start.isoformat(), "end": s.end.isoformat(),
                "label": label(s.start, tenant.zone)} for s in slots]
    conversation.state, conversation.offered_slots = Phase.choosing.value, offered
    text = getattr(playbook, template).format(business=tenant.name, slots=slot_list(offered))
    _say(session, tenant, conversation, text, pending)


def hold(session: Session, *, conversation: Conversation, slot: Slot) -> Booking | None:
    """Hold the slot for this conversation; None when someone else holds or booked it."""
    existing = session.scalar(select(Booking).where(
        Booking.conversation_id == conversation.id, Booking.calendar_id == slot.calendar_id,
        Booking.start_at == slot.start, Booking.status.in_(["held", "creating", "confirmed"])))
    if existing is not None:
        return existing
    booking = Booking(tenant_id=conversation.tenant_id, conversation_id=conversation.id, lead_id=conversation.lead_id,
                      calendar_id=slot.calendar_id, start_at=slot.start, end_at=slot.end, status="held")
    try:
        with session.begin_nested():
            session.add(booking)
    except IntegrityError:
        return None
    return booking


def release(session: Session, booking: Booking) -> None:
    booking.status = "released"


def confirm(session: Session, *, tenant: Tenant, booking: Booking, external_event_id: str, link: str | None,
            pending: Pending) -> None:
    """The event exists: the booking counts, the caller is told, the CRM hears of it."""
    booking.status, booking.external_event_id, booking.link = "confirmed", external_event_id, link
    conversation = session.get(Conversation, booking.conversation_id)
    conversation.state, conversation.outcome, conversation.offered_slots = Phase.booked.value, "booked", []
    location = f" Location: {tenant.booking.location}." if tenant.booking.location else ""
    text = tenant.templates.render("booking_confirmation", business=tenant.name,
                                   slot=label(booking.start_at, tenant.zone), timezone=tenant.timezone,
                                   location=location)
    _say(session, tenant, conversation, text, pending)
    pending.add(session, tenant_id=tenant.id, kind=Kind.crm_upsert_opportunity, key=f"crm-opp:{conversation.id}",
                payload={"conversation_id": conversation.id})
    pending.add(session, tenant_id=tenant.id, kind=Kind.crm_record_booking, key=f"crm-booking:{booking.id}",
                payload={"booking_id": booking.id})
    log_conversation_later(session, conversation, pending)


def _say(session: Session, tenant: Tenant, conversation: Conversation, text: str, pending: Pending) -> None:
    message = add_outbound(session, conversation=conversation, body=text)
    pending.add(session, tenant_id=tenant.id, kind=Kind.send_sms, key=f"sms:{message.id}",
                payload={"message_id": message.id})


def slot_from_offer(item: dict) -> Slot:
    return Slot(calendar_id=item["calendar_id"], start=datetime.fromisoformat(item["start"]),
                end=datetime.fromisoformat(item["end"]))

"""What a change staff made to a booked event in the calendar does here (the calendar owns time and status).

    event moved      booking takes the event's time; the CRM meeting follows; the caller is texted
                     the new time once, inside their texting window
    event cancelled  booking cancelled; the CRM meeting follows; the caller is told and offered new
    or declined      times (unless the conversation is with staff, or the caller opted out)
    moved onto       the booking keeps its old time here (the unique slot index forbids two of ours at
    another booking  one start) and a warning is logged: staff double-booked the slot themselves
    unchanged        nothing: this is how an echo of textback's own write is recognised, since a move
                     textback made has already given the booking the time the calendar now reports

Events that are not a confirmed booking's (staff's own meetings) change nothing: free/busy reads them live.
A past appointment is updated but the caller is not texted about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.booking import label
from core.config import Tenant
from core.engine.conversation import Phase
from core.outbox import Kind, Pending, queue_text
from core.store.tables import Booking, Conversation, Lead

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventState:
    """An event as the calendar reports it now, in the vendor-neutral form the decision needs."""

    calendar_id: str
    event_id: str
    cancelled: bool  # deleted, cancelled, or declined by the calendar's owner
    start: datetime | None = None
    end: datetime | None = None


def apply_event(session: Session, *, tenant: Tenant, event: EventState, now: datetime, pending: Pending) -> str:
    """Apply one event's state to its booking; returns what happened (for logs and tests)."""
    booking = session.scalar(select(Booking).where(
        Booking.tenant_id == tenant.id, Booking.calendar_id == event.calendar_id,
        Booking.external_event_id == event.event_id, Booking.status == "confirmed"))
    if booking is None:
        return "not a booking"
    if event.cancelled:
        _cancelled_by_staff(session, tenant=tenant, booking=booking, now=now, pending=pending)
        return "cancelled"
    if event.start is None or event.end is None or (event.start, event.end) == (booking.start_at, booking.end_at):
        return "unchanged"
    try:
        with session.begin_nested():
            booking.start_at, booking.end_at = event.start, event.end
            session.flush()
    except IntegrityError:
        # Another active booking starts at that time on that calendar: staff put two appointments on one
        # slot. The calendar shows both; ours keeps its old time here and staff are the ones to sort it out.
        log.warning("tenant %s: event %s moved onto another booking's start; booking %s left at its old time",
                    tenant.id, event.event_id, booking.id)
        return "conflict"
    _moved_by_staff(session, tenant=tenant, booking=booking, start=event.start, end=event.end, now=now,
                    pending=pending)
    return "moved"


def _moved_by_staff(session: Session, *, tenant: Tenant, booking: Booking, start: datetime, end: datetime,
                    now: datetime, pending: Pending) -> None:
    pending.add(session, tenant_id=tenant.id, kind=Kind.crm_record_booking,
                key=f"crm-booking:{booking.id}:{start.isoformat()}", payload={"booking_id": booking.id})
    conversation = session.get(Conversation, booking.conversation_id)
    if not _may_tell(session, tenant, booking, now):
        return
    where = f" Location: {tenant.booking.location}." if tenant.booking.location else ""
    text = tenant.templates.render("booking_moved", business=tenant.name, slot=label(start, tenant.zone),
                                   timezone=tenant.timezone, location=where, contact=_contact(tenant))
    queue_text(session, conversation=conversation, body=text, purpose="calendar_change", pending=pending)


def _cancelled_by_staff(session: Session, *, tenant: Tenant, booking: Booking, now: datetime,
                        pending: Pending) -> None:
    booking.status = "cancelled"
    pending.add(session, tenant_id=tenant.id, kind=Kind.crm_record_booking,
                key=f"crm-booking:{booking.id}:cancelled", payload={"booking_id": booking.id})
    conversation = session.get(Conversation, booking.conversation_id)
    if not _may_tell(session, tenant, booking, now):
        if conversation.state == Phase.booked.value:
            conversation.state, conversation.outcome = Phase.closed.value, "cancelled"
        return
    text = tenant.templates.render("booking_cancelled", business=tenant.name,
                                   slot=label(booking.start_at, tenant.zone), timezone=tenant.timezone,
                                   contact=_contact(tenant))
    queue_text(session, conversation=conversation, body=text, purpose="calendar_change", pending=pending)
    # Offer new times in the same conversation: the caller's answers still route the booking.
    conversation.state, conversation.outcome, conversation.offered_slots = Phase.offering.value, None, []
    pending.add(session, tenant_id=tenant.id, kind=Kind.offer_slots,
                key=f"offer:{conversation.id}:staff-cancelled:{booking.id}",
                payload={"conversation_id": conversation.id})


def _may_tell(session: Session, tenant: Tenant, booking: Booking, now: datetime) -> bool:
    """Text the caller only about an appointment still ahead, when staff have not taken the conversation."""
    lead = session.get(Lead, booking.lead_id)
    conversation = session.get(Conversation, booking.conversation_id)
    return (tenant.two_way.tell_caller and booking.start_at > now and not conversation.paused
            and lead.opted_out_at is None and not lead.do_not_text)


def _contact(tenant: Tenant) -> str:
    return tenant.contact or tenant.phone_numbers[0]

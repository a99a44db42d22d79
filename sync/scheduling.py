"""Offer slots from live free/busy and book the chosen one (hold, re-check, create, confirm)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from core import appointments
from core.booking import find_slots, is_free
from core.config import Tenant
from core.engine.conversation import Phase
from core.models import BusyInterval, EventRequest, Slot
from core.outbox import Pending
from core.store.tables import Booking, Conversation, Lead
from sync.runtime import Runtime


def offer_slots(runtime: Runtime, tenant: Tenant, payload: dict, pending: Pending) -> None:
    conversation_id = payload["conversation_id"]
    with runtime.db.transaction() as session:
        if session.get(Conversation, conversation_id).state != Phase.offering.value:
            return
    _offer(runtime, tenant, conversation_id, pending, template="offer")


def book_slot(runtime: Runtime, tenant: Tenant, payload: dict, pending: Pending) -> None:
    conversation_id, slot = payload["conversation_id"], appointments.slot_from_offer(payload["slot"])
    with runtime.db.transaction() as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation.state != Phase.booking.value:
            return
        booking = appointments.hold(session, conversation=conversation, slot=slot)
        if booking is None:
            conversation.state = Phase.offering.value
        booking_id, status = (booking.id, booking.status) if booking else (None, None)
    if booking_id is None:
        _offer(runtime, tenant, conversation_id, pending, template="slot_taken")
        return
    calendar = runtime.connector(tenant, "calendar")
    if status == "held":
        # Never confirm from what was offered earlier: re-read free/busy for this one slot now.
        busy = calendar.free_busy(calendars=[slot.calendar_id], start=slot.start, end=slot.end)
        free = is_free(busy.get(slot.calendar_id, []), slot.start, slot.end, tenant.booking.buffer_minutes)
        with runtime.db.transaction() as session:
            booking = session.get(Booking, booking_id)
            if not free:
                appointments.release(session, booking)
                session.get(Conversation, conversation_id).state = Phase.offering.value
            else:
                booking.status = "creating"
        if not free:
            _offer(runtime, tenant, conversation_id, pending, template="slot_taken")
            return
    with runtime.db.transaction() as session:
        phone = session.scalar(select(Lead.phone).join(Conversation, Conversation.lead_id == Lead.id)
                               .where(Conversation.id == conversation_id))
        answers = session.get(Conversation, conversation_id).answers
    event = calendar.create_event(EventRequest(
        key=f"textback-booking-{booking_id}", calendar_id=slot.calendar_id, start=slot.start, end=slot.end,
        timezone=tenant.timezone, summary=f"{tenant.name}: appointment with {phone}",
        description="Booked by textback by text message.\n" + "\n".join(f"{k}: {v}" for k, v in answers.items())
                    + f"\nCaller: {phone}",
        location=tenant.booking.location,
    ))
    with runtime.db.transaction() as session:
        appointments.confirm(session, tenant=tenant, booking=session.get(Booking, booking_id),
                             external_event_id=event.external_id, link=event.link, pending=pending)


def _offer(runtime: Runtime, tenant: Tenant, conversation_id: int, pending: Pending, *, template: str) -> None:
    calendar = runtime.connector(tenant, "calendar")
    slots: list[Slot] = []
    if calendar is not None:
        calendars = tenant.connectors["calendar"].calendars
        now = runtime.now()
        end = now + timedelta(days=tenant.booking.horizon_days + 1)
        busy = calendar.free_busy(calendars=calendars, start=now, end=end)
        with runtime.db.transaction() as session:
            _add_active_bookings(session, tenant, busy)
        slots = find_slots(busy=busy, calendars=calendars, hours=tenant.hours, zone=tenant.zone,
                           settings=tenant.booking, now=now)
    with runtime.db.transaction() as session:
        conversation = session.get(Conversation, conversation_id)
        appointments.offer(session, tenant=tenant, conversation=conversation, slots=slots, pending=pending,
                           template=template)


def _add_active_bookings(session, tenant: Tenant, busy: dict[str, list[BusyInterval]]) -> None:
    """Slots held by other conversations are busy even before their calendar event exists."""
    for booking in session.scalars(select(Booking).where(
            Booking.tenant_id == tenant.id, Booking.status.in_(["held", "creating", "confirmed"]))):
        busy.setdefault(booking.calendar_id, []).append(BusyInterval(start=booking.start_at, end=booking.end_at))

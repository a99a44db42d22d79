"""Offer slots from live free/busy, book the chosen one, move it, cancel it.

Booking:    hold → re-check free/busy for that slot → `creating` → create the event (key
            `textback-booking-{id}`, so a replay finds the first) → confirm.
Moving:     an offered slot carrying `"moves": booking_id` (see reschedule_booking). Hold the new slot →
            re-check → on the same calendar move the event; on another, create the new one and then
            cancel the old → the booking takes the new time.
Cancelling: cancel the event → the booking is `cancelled` → the caller and the CRM are told.

A caller who loses a race (the slot was held, or turned busy) is offered new slots with the
playbook's `slot_taken` text. Every handler is safe to run again: each step checks what the
previous run left (conversation phase, booking status), and the calendar calls are idempotent.

Payloads are typed in core/jobs.py (the engine's contract is in core/engine/conversation.py): offer_slots and
reschedule_booking {"conversation_id"}, acted on while the conversation is `offering`; book_slot
{"conversation_id", "slot": an offered slot}, acted on while it is `booking`; cancel_booking
{"conversation_id", "booking_id"?}, acted on while it is `booked` (without booking_id, the lead's
next confirmed appointment is cancelled).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.base import CalendarConnector, Rejected
from core import appointments
from core.booking import calendars_for, find_slots, fits, is_free, label, preferred_window
from core.config import Tenant
from core.engine.conversation import Phase
from core.jobs import BookSlotJob, CancelBookingJob, ConversationJob
from core.engine.summary import answer_lines
from core.models import BusyInterval, EventRequest, Slot
from core.outbox import Pending
from core.store.tables import Booking, Conversation, Lead
from sync.runtime import Runtime


def offer_slots(runtime: Runtime, tenant: Tenant, job: ConversationJob, pending: Pending) -> None:
    conversation_id = job.conversation_id
    with runtime.db.transaction() as session:
        if session.get(Conversation, conversation_id).state != Phase.offering.value:
            return
    _offer(runtime, tenant, conversation_id, pending, template="offer")


def reschedule_booking(runtime: Runtime, tenant: Tenant, job: ConversationJob, pending: Pending) -> None:
    """Offer new times for the lead's next appointment; with none, offer to book one."""
    conversation_id = job.conversation_id
    with runtime.db.transaction() as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation.state != Phase.offering.value:
            return
        booking = appointments.upcoming(session, lead_id=conversation.lead_id, now=runtime.now())
        if booking is None:
            moves, intro = None, appointments.NOTHING_TO_MOVE
        else:
            moves, intro = booking.id, appointments.MOVING.format(slot=label(booking.start_at, tenant.zone))
    _offer(runtime, tenant, conversation_id, pending, template="offer", intro=intro, moves=moves)


def book_slot(runtime: Runtime, tenant: Tenant, job: BookSlotJob, pending: Pending) -> None:
    conversation_id, slot = job.conversation_id, appointments.slot_from_offer(job.slot)
    moves = job.slot.get("moves")
    with runtime.db.transaction() as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation.state != Phase.booking.value:
            return
        booking = appointments.hold(session, conversation=conversation, slot=slot,
                                    buffer_minutes=tenant.booking.buffer_minutes)
        # The phase stays `booking` until the new offer is recorded: if that offer fails (free/busy 503),
        # the retry must find this job still to do, not a conversation that looks handled.
        booking_id, status = (booking.id, booking.status) if booking else (None, None)
    if booking_id is None:
        _offer(runtime, tenant, conversation_id, pending, template="slot_taken", moves=moves)
        return
    if status == "held" and not _still_free(runtime, tenant, booking_id, slot, pending, moves):
        return
    with runtime.db.transaction() as session:
        request = _event_request(session, tenant, conversation_id, booking_id, slot)
        original = session.get(Booking, moves) if moves is not None else None
        # A booking cancelled while its move was being chosen is simply booked anew at the chosen time.
        moving = original if original is not None and original.status == "confirmed" else None
        old = (moving.calendar_id, moving.external_event_id) if moving is not None else None
    calendar = _calendar(runtime, tenant)
    if old is None:
        # A refusal (permissions, a bad calendar id) frees the hold and hands the caller to staff (sync/runner.py).
        event = calendar.create_event(request)
        with runtime.db.transaction() as session:
            appointments.confirm(session, tenant=tenant, booking=session.get(Booking, booking_id),
                                 external_event_id=event.external_id, link=event.link, pending=pending)
        return
    event_id, link = _move_event(calendar, request, old)
    with runtime.db.transaction() as session:
        appointments.moved(session, tenant=tenant, booking=session.get(Booking, moves),
                           new_hold=session.get(Booking, booking_id),
                           conversation=session.get(Conversation, conversation_id),
                           external_event_id=event_id, link=link, pending=pending)


def cancel_booking(runtime: Runtime, tenant: Tenant, job: CancelBookingJob, pending: Pending) -> None:
    conversation_id = job.conversation_id
    with runtime.db.transaction() as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation.state != Phase.booked.value:
            return
        if job.booking_id is not None:
            booking = session.get(Booking, job.booking_id)
        else:
            booking = appointments.upcoming(session, lead_id=conversation.lead_id, now=runtime.now())
        if booking is None:
            appointments.nothing_to_cancel(session, tenant=tenant, conversation=conversation, pending=pending)
            return
        if booking.status != "confirmed":
            return
        booking_id, calendar_id, event_id = booking.id, booking.calendar_id, booking.external_event_id
    _calendar(runtime, tenant).cancel_event(calendar_id=calendar_id, external_id=event_id)
    with runtime.db.transaction() as session:
        appointments.cancelled(session, tenant=tenant, booking=session.get(Booking, booking_id),
                               conversation=session.get(Conversation, conversation_id), pending=pending)


def _calendar(runtime: Runtime, tenant: Tenant) -> CalendarConnector:
    calendar = runtime.calendar(tenant)
    if calendar is None:
        raise Rejected(f"tenant {tenant.id} has no calendar connector")
    return calendar


def _move_event(calendar: CalendarConnector, request: EventRequest, old: tuple[str, str]) -> tuple[str, str | None]:
    """The moved event's id and new link. Onto another calendar the new event is created before the old one is
    cancelled, so a failure in between leaves the caller with an appointment (and a replay finishes the move)."""
    old_calendar, old_event = old
    if old_calendar == request.calendar_id:
        calendar.update_event(calendar_id=old_calendar, external_id=old_event, start=request.start, end=request.end,
                              timezone=request.timezone)
        return old_event, None
    created = calendar.create_event(request)
    calendar.cancel_event(calendar_id=old_calendar, external_id=old_event)
    return created.external_id, created.link


def _still_free(runtime: Runtime, tenant: Tenant, booking_id: int, slot: Slot, pending: Pending,
                moves: int | None) -> bool:
    """Never confirm from what was offered earlier: re-read free/busy (buffer included) for this slot now."""
    pad = timedelta(minutes=tenant.booking.buffer_minutes)
    busy = _calendar(runtime, tenant).free_busy(calendars=[slot.calendar_id], start=slot.start - pad,
                                                end=slot.end + pad)
    free = is_free(busy.get(slot.calendar_id, []), slot.start, slot.end, tenant.booking.buffer_minutes)
    with runtime.db.transaction() as session:
        booking = session.get(Booking, booking_id)
        if free:
            booking.status = "creating"
            return True
        appointments.release(session, booking)  # the phase stays `booking` until the new offer (above)
        conversation_id = booking.conversation_id
    _offer(runtime, tenant, conversation_id, pending, template="slot_taken", moves=moves)
    return False


def _event_request(session: Session, tenant: Tenant, conversation_id: int, booking_id: int, slot: Slot) -> EventRequest:
    conversation = session.get(Conversation, conversation_id)
    lead = session.get(Lead, conversation.lead_id)
    phone, name = lead.phone, " ".join(p for p in (lead.first_name, lead.last_name) if p)
    details = "\n".join(answer_lines(conversation.answers))
    return EventRequest(
        key=f"textback-booking-{booking_id}", calendar_id=slot.calendar_id, start=slot.start, end=slot.end,
        timezone=tenant.timezone, summary=f"{tenant.name}: appointment with {name or phone}",
        description=f"Booked by textback by text message.\n{details}\nCaller: {phone}",
        location=tenant.booking.location,
    )


def _offer(runtime: Runtime, tenant: Tenant, conversation_id: int, pending: Pending, *, template: str,
           intro: str = "", moves: int | None = None) -> None:
    calendar = runtime.calendar(tenant)
    with runtime.db.transaction() as session:
        conversation = session.get(Conversation, conversation_id)
        answers = dict(conversation.answers)
        if moves is not None:
            # A move keeps the routing of the conversation that booked the appointment.
            first = session.get(Conversation, session.get(Booking, moves).conversation_id)
            answers = {**first.answers, **answers}
    window = preferred_window(answers, tenant.zone)
    slots: list[Slot] = []
    if calendar is not None:
        calendars = calendars_for(settings=tenant.booking, answers=answers,
                                  configured=tenant.connectors["calendar"].calendars)
        now = runtime.now()
        end = now + timedelta(days=tenant.booking.horizon_days + 1)
        busy = calendar.free_busy(calendars=calendars, start=now, end=end)
        with runtime.db.transaction() as session:
            _add_active_bookings(session, tenant, busy, since=now)
        slots = find_slots(busy=busy, calendars=calendars, hours=tenant.hours, zone=tenant.zone,
                           settings=tenant.booking, now=now, window=window)
    if window is not None and slots and not all(fits(slot, window) for slot in slots):
        intro = f"{intro} {appointments.NOTHING_IN_WINDOW}".strip()
    with runtime.db.transaction() as session:
        conversation = session.get(Conversation, conversation_id)
        appointments.offer(session, tenant=tenant, conversation=conversation, slots=slots, pending=pending,
                           template=template, intro=intro, moves=moves)


def _add_active_bookings(session: Session, tenant: Tenant, busy: dict[str, list[BusyInterval]], *,
                         since: datetime) -> None:
    """Slots held by other conversations are busy even before their calendar event exists."""
    for booking in session.scalars(select(Booking).where(
            Booking.tenant_id == tenant.id, Booking.status.in_(appointments.ACTIVE), Booking.end_at > since)):
        busy.setdefault(booking.calendar_id, []).append(BusyInterval(start=booking.start_at, end=booking.end_at))

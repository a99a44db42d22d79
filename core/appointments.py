"""Offers, holds, confirmations, moves and cancellations: the booking records around a calendar event.

    held ──re-checked free──▶ creating ──event exists──▶ confirmed ──caller cancels──▶ cancelled
     └── taken or busy ──▶ released

A booking counts only when the calendar event exists (`confirmed`, external_event_id set).

Holding is serialized per calendar, so no two active bookings on one calendar overlap (buffer
included): the partial unique index on (tenant, calendar, start) stops two callers holding the same
start, and the overlap check inside the hold stops overlapping starts (two callers whose different
windows led to 10:00 and 10:30 for an hour-long appointment). PostgreSQL serializes holds on a
transaction-scoped advisory lock per calendar; SQLite has one writer at a time, and the check runs
after the hold's INSERT, inside its savepoint, while that write lock is held.

A reschedule holds the new slot in a second row. Once the event has moved, that row is dropped and
the booking itself takes the new time, so one booking (one event key, one CRM meeting) follows the
appointment. Offers made for a reschedule carry `"moves": booking_id` through the engine to book_slot.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy import text as sql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.booking import label
from core.config import Tenant
from core.engine.conversation import Phase, slot_list
from core.engine.summary import answer_lines
from core.handoff import request_handoff
from core.models import Slot
from core.outbox import Kind, Pending, queue_text
from core.store.tables import Booking, Conversation, utcnow

ACTIVE = ("held", "creating", "confirmed")

NOTHING_IN_WINDOW = "Nothing is open in the time you asked for, so here are the nearest times."
MOVING = "Sure, let's move your appointment on {slot}."
NOTHING_TO_MOVE = "I don't see an upcoming appointment for this number, so let's book one."
NO_OTHER_TIME = ("I couldn't find another open time, so your appointment on {slot} stays as it is. "
                 "To change it, call {contact}.")
CANCELLED = ("Your appointment with {business} on {slot} ({timezone}) is cancelled. "
             "To book again, reply to this message or call {contact}.")
NOTHING_TO_CANCEL = "I don't see an upcoming appointment for this number. If you need help, call {contact}."
STILL_BOOKED = " Your appointment on {slot} ({timezone}) is still booked; to cancel it, call {contact}."


def offer(session: Session, *, tenant: Tenant, conversation: Conversation, slots: list[Slot], pending: Pending,
          template: str = "offer", intro: str = "", moves: int | None = None, reason: str | None = None) -> None:
    """Record the offered slots on the conversation and text them; with none, hand off (or, for a move, keep
    the appointment as it is).

    `intro` goes before the playbook's text; `moves` marks every offered slot as the new time for that booking.
    """
    playbook = tenant.conversation_playbook(conversation.playbook)
    if not slots and moves is not None:
        conversation.state, conversation.offered_slots = Phase.booked.value, []
        kept = session.get(Booking, moves)
        _say(session, tenant, conversation, NO_OTHER_TIME.format(slot=label(kept.start_at, tenant.zone),
                                                                 contact=_contact(tenant)), pending)
        return
    if not slots:
        conversation.offered_slots = []
        _say(session, tenant, conversation, playbook.no_slots.format(business=tenant.name), pending)
        answers = ", ".join(answer_lines(conversation.answers))
        why = f" Reason: {reason}." if reason else ""
        request_handoff(session, tenant=tenant, conversation=conversation, pending=pending,
                        summary=f"Qualified but no time could be booked by text; please call to schedule.{why} "
                                f"{answers}".strip())
        return
    offered = [{"calendar_id": s.calendar_id, "start": s.start.isoformat(), "end": s.end.isoformat(),
                "label": label(s.start, tenant.zone)} | ({"moves": moves} if moves is not None else {})
               for s in slots]
    conversation.state, conversation.offered_slots = Phase.choosing.value, offered
    body = getattr(playbook, template).format(business=tenant.name, slots=slot_list(offered))
    _say(session, tenant, conversation, f"{intro} {body}".strip(), pending)


def could_not_book(session: Session, *, tenant: Tenant, conversation_id: int, reason: str, now: datetime,
                   pending: Pending) -> None:
    """A calendar step the caller waits on failed for good (free/busy refused, the event refused, credentials
    revoked, retries exhausted): free the conversation's holds, text the caller that a person will call, and
    tell staff why. A conversation already handed off, closed or opted out is left alone."""
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or conversation.state in (Phase.handoff.value, Phase.closed.value, Phase.opted_out.value):
        return
    for booking in session.scalars(select(Booking).where(Booking.conversation_id == conversation_id,
                                                         Booking.status.in_(("held", "creating")))):
        release(session, booking)
    if conversation.state == Phase.booked.value:
        # A move or a cancellation that could not be made: the appointment stands as it is.
        kept = upcoming(session, lead_id=conversation.lead_id, now=now)
        if kept is not None:
            _say(session, tenant, conversation, NO_OTHER_TIME.format(slot=label(kept.start_at, tenant.zone),
                                                                     contact=_contact(tenant)), pending)
        request_handoff(session, tenant=tenant, conversation=conversation, pending=pending,
                        summary=f"The caller asked to change their appointment by text and it could not be done. "
                                f"Reason: {reason}.")
        conversation.state = Phase.booked.value  # the appointment stands through the handoff
        return
    offer(session, tenant=tenant, conversation=conversation, slots=[], pending=pending, reason=reason)


def hold(session: Session, *, conversation: Conversation, slot: Slot, buffer_minutes: int = 0) -> Booking | None:
    """Hold the slot for this conversation; None when another active booking has it or overlaps it.

    A hold this conversation already has in progress is returned (a replayed book_slot); its confirmed
    booking at that slot is not, so moving an appointment onto its own time can never drop it.
    """
    existing = session.scalar(select(Booking).where(
        Booking.conversation_id == conversation.id, Booking.calendar_id == slot.calendar_id,
        Booking.start_at == slot.start, Booking.status.in_(("held", "creating"))))
    if existing is not None:
        return existing
    _serialize_holds(session, tenant_id=conversation.tenant_id, calendar_id=slot.calendar_id)
    booking = Booking(tenant_id=conversation.tenant_id, conversation_id=conversation.id, lead_id=conversation.lead_id,
                      calendar_id=slot.calendar_id, start_at=slot.start, end_at=slot.end, status="held")
    savepoint = session.begin_nested()
    try:
        session.add(booking)
        session.flush()
        clash = _overlapping(session, booking, timedelta(minutes=buffer_minutes))
    except IntegrityError:
        savepoint.rollback()
        return None
    if clash:
        savepoint.rollback()
        return None
    savepoint.commit()
    return booking


def release(session: Session, booking: Booking) -> None:
    booking.status = "released"


def confirm(session: Session, *, tenant: Tenant, booking: Booking, external_event_id: str, link: str | None,
            pending: Pending) -> None:
    """The event exists: the booking counts, the caller is told, the CRM hears of it."""
    booking.status, booking.external_event_id, booking.link = "confirmed", external_event_id, link
    conversation = session.get(Conversation, booking.conversation_id)
    conversation.state, conversation.outcome, conversation.offered_slots = Phase.booked.value, "booked", []
    _say(session, tenant, conversation, _confirmation(tenant, booking), pending)
    # One CRM job for the booking: the deal/matter, the meeting and the transcript (sync/crm_push.record_booking).
    pending.add(session, tenant_id=tenant.id, kind=Kind.crm_record_booking, key=f"crm-booking:{booking.id}",
                payload={"booking_id": booking.id})


def moved(session: Session, *, tenant: Tenant, booking: Booking, new_hold: Booking, conversation: Conversation,
          external_event_id: str, link: str | None, pending: Pending) -> None:
    """The event now sits at the held time: the booking takes that time and the hold row goes."""
    slot = Slot(calendar_id=new_hold.calendar_id, start=new_hold.start_at, end=new_hold.end_at)
    session.delete(new_hold)
    session.flush()  # the hold's row must leave the unique index before the booking takes its slot
    booking.calendar_id, booking.start_at, booking.end_at = slot.calendar_id, slot.start, slot.end
    booking.external_event_id, booking.link = external_event_id, link or booking.link
    conversation.state, conversation.outcome, conversation.offered_slots = Phase.booked.value, "booked", []
    _say(session, tenant, conversation, _confirmation(tenant, booking), pending)
    pending.add(session, tenant_id=tenant.id, kind=Kind.crm_record_booking,
                key=f"crm-booking:{booking.id}:{slot.start.isoformat()}", payload={"booking_id": booking.id})


def cancelled(session: Session, *, tenant: Tenant, booking: Booking, conversation: Conversation,
              pending: Pending) -> None:
    """The event is gone: the booking no longer counts, the caller is told, the CRM hears of it.

    The conversation closes, so a later text from the caller starts a new one.
    """
    booking.status = "cancelled"
    conversation.state, conversation.outcome, conversation.offered_slots = Phase.closed.value, "cancelled", []
    _say(session, tenant, conversation, CANCELLED.format(
        business=tenant.name, slot=label(booking.start_at, tenant.zone), timezone=tenant.timezone,
        contact=_contact(tenant)), pending)
    pending.add(session, tenant_id=tenant.id, kind=Kind.crm_record_booking, key=f"crm-booking:{booking.id}:cancelled",
                payload={"booking_id": booking.id})


def nothing_to_cancel(session: Session, *, tenant: Tenant, conversation: Conversation, pending: Pending) -> None:
    """The appointment has passed or was cancelled elsewhere: this booked conversation is over."""
    conversation.state = Phase.closed.value
    _say(session, tenant, conversation, NOTHING_TO_CANCEL.format(contact=_contact(tenant)), pending)


def upcoming(session: Session, *, lead_id: int, now: datetime) -> Booking | None:
    """The lead's next confirmed appointment that has not started yet."""
    return session.scalar(select(Booking).where(
        Booking.lead_id == lead_id, Booking.status == "confirmed", Booking.start_at > now,
    ).order_by(Booking.start_at).limit(1))


def active_booking_note(session: Session, lead_id: int, tenant: Tenant, *, now: datetime | None = None) -> str:
    """For the opt-out confirmation: texts stop, so say how to cancel the appointment by phone ("" when none)."""
    booking = upcoming(session, lead_id=lead_id, now=now or utcnow())
    if booking is None:
        return ""
    return STILL_BOOKED.format(slot=label(booking.start_at, tenant.zone), timezone=tenant.timezone,
                               contact=_contact(tenant))


def slot_from_offer(item: dict) -> Slot:
    return Slot(calendar_id=item["calendar_id"], start=datetime.fromisoformat(item["start"]),
                end=datetime.fromisoformat(item["end"]))


def _confirmation(tenant: Tenant, booking: Booking) -> str:
    """Date, time, time zone, and where: the configured location, else the link the calendar gave the event."""
    if tenant.booking.location:
        where = f" Location: {tenant.booking.location}."
    elif booking.link:
        where = f" Link: {booking.link}"
    else:
        where = ""
    return tenant.templates.render("booking_confirmation", business=tenant.name,
                                   slot=label(booking.start_at, tenant.zone), timezone=tenant.timezone,
                                   location=where)


def _serialize_holds(session: Session, *, tenant_id: str, calendar_id: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(f"textback-hold:{tenant_id}:{calendar_id}".encode()).digest()
        session.execute(sql("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": int.from_bytes(digest[:8], "big", signed=True)})


def _overlapping(session: Session, booking: Booking, pad: timedelta) -> bool:
    return session.scalar(select(Booking.id).where(
        Booking.tenant_id == booking.tenant_id, Booking.calendar_id == booking.calendar_id,
        Booking.status.in_(ACTIVE), Booking.id != booking.id,
        Booking.start_at < booking.end_at + pad, Booking.end_at > booking.start_at - pad,
    ).limit(1)) is not None


def _contact(tenant: Tenant) -> str:
    return tenant.contact or tenant.phone_numbers[0]


def _say(session: Session, tenant: Tenant, conversation: Conversation, body: str, pending: Pending) -> None:
    queue_text(session, conversation=conversation, body=body, pending=pending)

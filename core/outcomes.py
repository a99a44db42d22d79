"""The outcome of each missed call, read from the tables that already hold it (no second copy).

One `CallOutcome` per missed call: where it came from, when each step happened, why it was
skipped, what the caller answered, whether the booking exists in the calendar, follow-ups,
opt-out, delivery failures by carrier code, the CRM and calendar ids it was synced to, the
sync jobs still open or failed, and the handoff notes.

Where a step has no timestamp column of its own, its time is the moment core wrote the
outbox row the step caused, in the same transaction as the step:

- qualified: the first `offer_slots` row of the conversation (written when the playbook
  says qualified);
- booked: the `crm-booking:{booking}` row (written when the calendar event exists);
- handed off: the `crm-log:...:handoff` (or `:takeover`) row.

`missed_call_outcomes` runs a fixed number of set-based queries (none per call), so its
time grows linearly with the calls in the window (`python -m bench.report`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from core.store.tables import Booking, Call, Conversation, ExternalId, Lead, Message, OptOutEvent, OutboxRow

OPEN_JOB_STATUSES = ("pending", "failed", "dead", "parked")
FAILED_DELIVERY = ("undelivered", "failed")
BOOKING_RANK = {"confirmed": 0, "creating": 1, "held": 2, "cancelled": 3, "released": 4}


@dataclass(frozen=True)
class DeliveryFailure:
    message_id: int
    status: str
    error_code: int | None


@dataclass(frozen=True)
class OpenJob:
    """A sync job of this call that has not succeeded yet (pending, failed, dead or parked)."""

    outbox_id: int
    kind: str
    status: str
    attempts: int
    error: str | None


@dataclass(frozen=True)
class CallOutcome:
    tenant_id: str
    call_id: int
    call_sid: str
    caller: str
    source: str  # dial | forwarded | api
    called_at: datetime
    skip_reason: str | None = None
    conversation_id: int | None = None
    state: str | None = None
    outcome: str | None = None  # qualified | not_fit | needs_human | booked | handoff | opted_out ...
    answers: dict[str, Any] = field(default_factory=dict)
    first_template: str | None = None
    first_text_at: datetime | None = None
    first_reply_at: datetime | None = None
    qualified_at: datetime | None = None
    booked_at: datetime | None = None
    handed_off_at: datetime | None = None
    booking_id: int | None = None
    booking_status: str | None = None
    calendar_id: str | None = None
    event_id: str | None = None
    event_link: str | None = None
    appointment_at: datetime | None = None
    followups_sent: int = 0
    paused: bool = False
    opted_out_at: datetime | None = None
    opt_out_source: str | None = None
    delivery_failures: tuple[DeliveryFailure, ...] = ()
    external_ids: dict[str, str] = field(default_factory=dict)  # "hubspot:lead" -> "1234"
    open_jobs: tuple[OpenJob, ...] = ()
    handoff_notes: str | None = None

    @property
    def texted(self) -> bool:
        return self.first_text_at is not None

    @property
    def replied(self) -> bool:
        return self.first_reply_at is not None

    @property
    def qualified(self) -> bool:
        return self.qualified_at is not None or self.booked

    @property
    def booked(self) -> bool:
        """Only when the calendar event exists: a hold or a failed create is not a booking."""
        return self.booking_status == "confirmed" and self.event_id is not None

    @property
    def seconds_to_first_text(self) -> float | None:
        return _seconds(self.called_at, self.first_text_at)

    @property
    def seconds_to_first_reply(self) -> float | None:
        return _seconds(self.first_text_at, self.first_reply_at)

    @property
    def sync_status(self) -> str:
        """ok, pending, or the worst state of its open jobs (dead > parked > failed)."""
        statuses = {job.status for job in self.open_jobs}
        for worst in ("dead", "parked", "failed", "pending"):
            if worst in statuses:
                return worst
        return "ok"


def missed_calls(*, tenant_ids: list[str] | None = None, since: datetime | None = None,
                 until: datetime | None = None) -> Select:
    """The ids of the missed calls in the window (since inclusive, until exclusive)."""
    query = select(Call.id).where(Call.status == "missed")
    if tenant_ids is not None:
        query = query.where(Call.tenant_id.in_(tenant_ids))
    if since is not None:
        query = query.where(Call.created_at >= since)
    if until is not None:
        query = query.where(Call.created_at < until)
    return query


def missed_call_outcomes(session: Session, *, tenant_ids: list[str] | None = None, since: datetime | None = None,
                         until: datetime | None = None, call_id: int | None = None) -> list[CallOutcome]:
    """Every missed call in the window with its outcome, oldest first."""
    call_ids = missed_calls(tenant_ids=tenant_ids, since=since, until=until)
    if call_id is not None:
        call_ids = call_ids.where(Call.id == call_id)
    calls = session.execute(
        select(Call.id, Call.tenant_id, Call.call_sid, Call.from_number, Call.source, Call.dial_status,
               Call.created_at, Call.skip_reason, Call.lead_id)
        .where(Call.id.in_(call_ids)).order_by(Call.created_at, Call.id)
    ).all()
    if not calls:
        return []
    conversations = {row.call_id: row for row in session.execute(
        select(Conversation.id, Conversation.call_id, Conversation.state, Conversation.outcome, Conversation.answers,
               Conversation.followups_sent, Conversation.paused, Conversation.handoff_summary)
        .where(Conversation.call_id.in_(call_ids)))}
    conversation_ids = select(Conversation.id).where(Conversation.call_id.in_(call_ids))
    lead_ids = select(Call.lead_id).where(Call.id.in_(call_ids))
    texts = _first_texts(session, conversation_ids)
    replies = dict(session.execute(
        select(Message.conversation_id, func.min(Message.created_at))
        .where(Message.conversation_id.in_(conversation_ids), Message.direction == "inbound")
        .group_by(Message.conversation_id)).all())
    failures: dict[int, list[DeliveryFailure]] = defaultdict(list)
    for row in session.execute(
            select(Message.conversation_id, Message.id, Message.status, Message.error_code)
            .where(Message.conversation_id.in_(conversation_ids), Message.direction == "outbound",
                   Message.status.in_(FAILED_DELIVERY)).order_by(Message.id)):
        failures[row.conversation_id].append(DeliveryFailure(row.id, row.status, row.error_code))
    bookings = _bookings(session, conversation_ids)
    steps = _step_times(session, tenant_ids=tenant_ids, since=since)
    leads = {row.id: row for row in session.execute(
        select(Lead.id, Lead.phone, Lead.opted_out_at, Lead.opt_out_source).where(Lead.id.in_(lead_ids)))}
    opt_outs: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    for row in session.execute(select(OptOutEvent.lead_id, OptOutEvent.created_at, OptOutEvent.source)
                               .where(OptOutEvent.lead_id.in_(lead_ids), OptOutEvent.action == "opt_out")
                               .order_by(OptOutEvent.created_at)):
        opt_outs[row.lead_id].append((row.created_at, row.source))
    external = _external_ids(session, lead_ids=lead_ids, conversation_ids=conversation_ids)
    jobs = _open_jobs(session, tenant_ids=tenant_ids, since=since)

    outcomes = []
    for call in calls:
        conversation = conversations.get(call.id)
        booking = bookings.get(conversation.id) if conversation else None
        first = texts.get(conversation.id) if conversation else None
        opted = next(((at, source) for at, source in opt_outs.get(call.lead_id, []) if at >= call.created_at),
                     (None, None))
        conversation_id = conversation.id if conversation else None
        ids = {**external.get(("lead", call.lead_id), {}), **external.get(("conversation", conversation_id), {})}
        if booking is not None:
            ids.update(external.get(("booking", booking.id), {}))
            if booking.external_event_id:
                ids["calendar:event"] = booking.external_event_id
        outcomes.append(CallOutcome(
            tenant_id=call.tenant_id, call_id=call.id, call_sid=call.call_sid, caller=call.from_number,
            source=_source(call.source, call.dial_status), called_at=call.created_at, skip_reason=call.skip_reason,
            conversation_id=conversation_id,
            state=conversation.state if conversation else None,
            outcome=conversation.outcome if conversation else None,
            answers=dict(conversation.answers or {}) if conversation else {},
            first_template=first[1] if first else None,
            first_text_at=first[0] if first else None,
            first_reply_at=replies.get(conversation_id),
            qualified_at=steps.qualified.get(conversation_id),
            booked_at=steps.booked.get(booking.id) if booking and booking.status == "confirmed" else None,
            handed_off_at=steps.handed_off.get(conversation_id),
            booking_id=booking.id if booking else None,
            booking_status=booking.status if booking else None,
            calendar_id=booking.calendar_id if booking else None,
            event_id=booking.external_event_id if booking else None,
            event_link=booking.link if booking else None,
            appointment_at=booking.start_at if booking else None,
            followups_sent=conversation.followups_sent if conversation else 0,
            paused=bool(conversation.paused) if conversation else False,
            opted_out_at=opted[0], opt_out_source=opted[1],
            delivery_failures=tuple(failures.get(conversation_id, ())),
            external_ids=ids,
            open_jobs=tuple(jobs.by_call.get(call.id, []) + jobs.by_conversation.get(conversation_id, [])
                            + (jobs.by_booking.get(booking.id, []) if booking else [])),
            handoff_notes=conversation.handoff_summary if conversation else None,
        ))
    return outcomes


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


def _source(source: str, dial_status: str | None) -> str:
    if source == "api" or dial_status == "reported":
        return "api"
    return "forwarded" if dial_status == "forwarded" else "dial"


def _first_texts(session: Session, conversation_ids: Select) -> dict[int, tuple[datetime | None, str | None]]:
    """conversation -> (when the first text left, its template); a text never sent has no time."""
    found: dict[int, tuple[datetime | None, str | None]] = {}
    for row in session.execute(
            select(Message.conversation_id, Message.sent_at, Message.template)
            .where(Message.conversation_id.in_(conversation_ids), Message.direction == "outbound",
                   Message.purpose == "first").order_by(Message.id)):
        if row.conversation_id not in found:
            found[row.conversation_id] = (row.sent_at, row.template)
    return found


def _bookings(session: Session, conversation_ids: Select) -> dict[int, Booking]:
    """conversation -> its booking that counts most (confirmed, then in flight, then the newest ended)."""
    chosen: dict[int, Booking] = {}
    for booking in session.scalars(select(Booking).where(Booking.conversation_id.in_(conversation_ids))
                                   .order_by(Booking.id.desc())):
        held = chosen.get(booking.conversation_id)
        if held is None or BOOKING_RANK.get(booking.status, 9) < BOOKING_RANK.get(held.status, 9):
            chosen[booking.conversation_id] = booking
    return chosen


@dataclass
class _Steps:
    qualified: dict[int, datetime] = field(default_factory=dict)
    booked: dict[int, datetime] = field(default_factory=dict)
    handed_off: dict[int, datetime] = field(default_factory=dict)


def _step_times(session: Session, *, tenant_ids: list[str] | None, since: datetime | None) -> _Steps:
    """Step times from the idempotency keys of the rows each step wrote (see the module docstring)."""
    query = select(OutboxRow.kind, OutboxRow.idempotency_key, OutboxRow.created_at).where(
        OutboxRow.kind.in_(("offer_slots", "crm_record_booking", "crm_log_conversation")))
    if tenant_ids is not None:
        query = query.where(OutboxRow.tenant_id.in_(tenant_ids))
    if since is not None:
        query = query.where(OutboxRow.created_at >= since)
    steps = _Steps()
    for kind, key, at in session.execute(query):
        parts = key.split(":")
        if kind == "offer_slots" and parts[0] == "offer":
            _keep_first(steps.qualified, int(parts[1]), at)
        elif kind == "crm_record_booking" and len(parts) == 2 and parts[0] == "crm-booking":
            _keep_first(steps.booked, int(parts[1]), at)
        elif kind == "crm_log_conversation" and parts[-1] in ("handoff", "takeover"):
            _keep_first(steps.handed_off, int(parts[1]), at)
    return steps


def _keep_first(times: dict[int, datetime], key: int, at: datetime) -> None:
    if key not in times or at < times[key]:
        times[key] = at


def _external_ids(session: Session, *, lead_ids: Select, conversation_ids: Select) -> dict[tuple[str, int], dict[str, str]]:
    booking_ids = select(Booking.id).where(Booking.conversation_id.in_(conversation_ids))
    found: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    for kinds, ids in ((("lead",), lead_ids), (("conversation", "opportunity"), conversation_ids),
                       (("booking",), booking_ids)):
        for row in session.execute(select(ExternalId.connector, ExternalId.local_kind, ExternalId.local_id,
                                          ExternalId.external_id)
                                   .where(ExternalId.local_kind.in_(kinds), ExternalId.local_id.in_(ids))):
            owner = "lead" if row.local_kind == "lead" else "booking" if row.local_kind == "booking" else "conversation"
            found[(owner, row.local_id)][f"{row.connector}:{row.local_kind}"] = row.external_id
    return found


@dataclass
class _Jobs:
    by_call: dict[int, list[OpenJob]] = field(default_factory=lambda: defaultdict(list))
    by_conversation: dict[int, list[OpenJob]] = field(default_factory=lambda: defaultdict(list))
    by_booking: dict[int, list[OpenJob]] = field(default_factory=lambda: defaultdict(list))


def _open_jobs(session: Session, *, tenant_ids: list[str] | None, since: datetime | None) -> _Jobs:
    """Jobs not done yet, tied to their call, conversation or booking by their payload and key."""
    query = select(OutboxRow).where(OutboxRow.status.in_(OPEN_JOB_STATUSES)).order_by(OutboxRow.id)
    if tenant_ids is not None:
        query = query.where(OutboxRow.tenant_id.in_(tenant_ids))
    if since is not None:
        query = query.where(OutboxRow.created_at >= since)
    rows = list(session.scalars(query))
    message_ids = [row.payload["message_id"] for row in rows if "message_id" in (row.payload or {})]
    message_conversation = dict(session.execute(
        select(Message.id, Message.conversation_id).where(Message.id.in_(message_ids))).all()) if message_ids else {}
    jobs = _Jobs()
    for row in rows:
        job = OpenJob(row.id, row.kind, row.status, row.attempts, _one_line(row.last_error))
        payload = row.payload or {}
        key = row.idempotency_key.split(":")
        if "conversation_id" in payload:
            jobs.by_conversation[payload["conversation_id"]].append(job)
        elif "message_id" in payload and message_conversation.get(payload["message_id"]) is not None:
            jobs.by_conversation[message_conversation[payload["message_id"]]].append(job)
        elif "booking_id" in payload:
            jobs.by_booking[payload["booking_id"]].append(job)
        elif key[0] == "crm-lead" and len(key) == 4 and key[2] == "call":
            jobs.by_call[int(key[3])].append(job)
        elif key[0] == "handoff" and len(key) >= 2:
            jobs.by_conversation[int(key[1])].append(job)
    return jobs


def _one_line(error: str | None) -> str | None:
    return error.strip().splitlines()[-1][:200] if error and error.strip() else None

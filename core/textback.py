"""A call arrives, a call is missed, and the first text goes out (or a recorded reason why not).

Is it a miss?  DialCallStatus no-answer | busy | failed | canceled; or completed when
the answering side was a machine (AnsweredBy machine_* / fax) or the bridged call
lasted less than `missed_call.min_answered_seconds`. In mode `forwarded` every call is.

Policy before the first text, in this order; the first that applies is recorded on
the call as `skip_reason`:

 1. invalid_number       caller id withheld, missing or not a phone number
 2. blocklisted          the tenant's blocklist
 3. internal_number      the tenant's own numbers and staff (forward_to, handoff_to)
 4. opted_out            the caller opted out of this tenant's texts
 5. do_not_text          staff marked the contact do-not-text (CRM)
 6. undeliverable        an earlier send failed with a carrier code that stops sends (landline, filtered)
 7. active_conversation  the caller is already in an open conversation
 8. cooldown             texted back less than `cooldown_hours` ago (several rings count once)
At send time (sync/messaging.py), because they need a vendor call or the passage of time:
 9. landline             line-type lookup (when enabled) says the number cannot receive SMS
10. answered_meanwhile   with `delay_seconds`, the caller called again and was answered
11. quiet hours          outside 08:00-21:00 in the caller's time zone the first text goes out
                         only if `quiet_hours.first_reply_anytime` (default yes); follow-ups wait
Business hours choose the in-hours or the after-hours first message.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, inspect, select
from sqlalchemy.orm import Session

from core.config import MissedCallSettings, Tenant, to_e164
from core.engine.conversation import opening
from core.hours import is_open, label_opening, next_opening
from core.outbox import Kind, Pending, queue_text
from core.store.repo import ConversationRef, find_lead, insert_row, lead_for, open_conversation
from core.store.tables import CALL_SID_LENGTH, Call, Conversation, Lead

MISSED_DIAL_STATUSES = frozenset({"no-answer", "busy", "failed", "canceled"})

# Caller ids Twilio reports for withheld or unknown numbers.
WITHHELD_CALLER_IDS = frozenset({"anonymous", "restricted", "unknown", "unavailable", "+266696687",
                                 "+7378742833", "+2562533", "+8656696", "+86282452253"})


@dataclass(frozen=True)
class MissedCallOutcome:
    call_id: int
    missed: bool
    texted: bool
    skip_reason: str | None
    duplicate: bool = False


def is_missed(*, dial_status: str, answered_by: str | None, duration: int | None,
              settings: MissedCallSettings) -> bool:
    if dial_status in MISSED_DIAL_STATUSES:
        return True
    if dial_status != "completed":
        return False
    if answered_by and (answered_by.startswith("machine") or answered_by == "fax"):
        return True
    return duration is not None and duration < settings.min_answered_seconds


def call_started(session: Session, *, tenant: Tenant, call_sid: str, caller: str, called: str, now: datetime,
                 source: str = "twilio") -> Call:
    """Record a ringing call once per CallSid; a retried webhook returns the same row."""
    call = _ringing(session, tenant=tenant, call_sid=call_sid, caller=caller, called=called, now=now, source=source)
    if inspect(call).transient:
        session.add(call)
        session.flush()
    return call


def _ringing(session: Session, *, tenant: Tenant, call_sid: str, caller: str, called: str, now: datetime,
             source: str = "twilio") -> Call:
    """The call's row, or a new one not yet added to the session: the missed-call path inserts it once, with
    its outcome, instead of inserting a ringing row and updating it (one statement, not two or three)."""
    call = session.scalar(_CALL_BY_SID, {"call_sid": call_sid})
    if call is None:
        call = Call(tenant_id=tenant.id, call_sid=call_sid, from_number=caller, to_number=called, status="ringing",
                    source=source, texted=False, created_at=now)
    return call


_CALL_BY_SID = select(Call).where(Call.call_sid == bindparam("call_sid"))


def dial_completed(
    session: Session, *, tenant: Tenant, call_sid: str, caller: str, called: str, dial_status: str,
    now: datetime, pending: Pending, answered_by: str | None = None, duration: int | None = None,
) -> MissedCallOutcome:
    """The staff phones were rung; decide whether the call was missed and text back if so."""
    call = _ringing(session, tenant=tenant, call_sid=call_sid, caller=caller, called=called, now=now)
    if call.status != "ringing":
        return MissedCallOutcome(call.id, call.status == "missed", call.texted, call.skip_reason, duplicate=True)
    call.dial_status, call.answered_by, call.duration_seconds = dial_status, answered_by, duration
    if not is_missed(dial_status=dial_status, answered_by=answered_by, duration=duration, settings=tenant.missed_call):
        call.status = "answered"
        _link_lead(session, tenant, call)
        _keep(session, call)
        return MissedCallOutcome(call.id, False, False, None)
    return _missed(session, tenant=tenant, call=call, now=now, pending=pending)


def forwarded_call(
    session: Session, *, tenant: Tenant, call_sid: str, caller: str, called: str, now: datetime, pending: Pending,
) -> MissedCallOutcome:
    """The business's own phone system forwarded an unanswered call: it is missed by definition."""
    call = _ringing(session, tenant=tenant, call_sid=call_sid, caller=caller, called=called, now=now)
    if call.status != "ringing":
        return MissedCallOutcome(call.id, True, call.texted, call.skip_reason, duplicate=True)
    call.dial_status = "forwarded"
    return _missed(session, tenant=tenant, call=call, now=now, pending=pending)


def reported_missed_call(
    session: Session, *, tenant: Tenant, idempotency_key: str, caller: str, called: str, occurred_at: datetime,
    now: datetime, pending: Pending,
) -> MissedCallOutcome:
    """Another phone system reports a miss (POST /api/v1/missed-calls): same policy, same dedupe."""
    call = _ringing(session, tenant=tenant, call_sid=api_call_sid(tenant.id, idempotency_key), caller=caller,
                    called=called, now=min(occurred_at, now), source="api")
    if call.status != "ringing":
        return MissedCallOutcome(call.id, True, call.texted, call.skip_reason, duplicate=True)
    call.dial_status = "reported"
    return _missed(session, tenant=tenant, call=call, now=now, pending=pending)


def api_call_sid(tenant_id: str, idempotency_key: str) -> str:
    """The CallSid a reported call is kept under: readable when it fits the column (64), a digest when not."""
    readable = f"api:{tenant_id}:{idempotency_key}"
    if len(readable) <= CALL_SID_LENGTH:
        return readable
    return "api:" + hashlib.sha256(f"{tenant_id}:{idempotency_key}".encode()).hexdigest()[:CALL_SID_LENGTH - 4]


def _missed(session: Session, *, tenant: Tenant, call: Call, now: datetime, pending: Pending) -> MissedCallOutcome:
    call.status = "missed"
    reason = _skip_reason(session, tenant=tenant, call=call, now=now)
    if reason is not None:
        call.skip_reason = reason
        _keep(session, call)
        return MissedCallOutcome(call.id, True, False, reason)
    call.texted = True
    _keep(session, call)
    if is_open(tenant.hours, tenant.zone, now):
        situation, opens = "first_in_hours", None
    else:
        opening_at = next_opening(tenant.hours, tenant.zone, now)
        situation, opens = "first_after_hours", label_opening(opening_at, tenant.zone, now) if opening_at else "soon"
    delay = tenant.missed_call.delay_seconds
    start_conversation(session, tenant=tenant, lead_id=call.lead_id, business_number=call.to_number, call_id=call.id,
                       pending=pending, situation=situation, opens=opens, purpose="first",
                       not_before=now + timedelta(seconds=delay) if delay else None)
    if "crm" in tenant.connectors:  # no CRM, no job that would only find out there is none
        pending.add_new(session, tenant_id=tenant.id, kind=Kind.crm_sync_lead,
                        key=f"crm-lead:{call.lead_id}:call:{call.id}", payload={"lead_id": call.lead_id})
    return MissedCallOutcome(call.id, True, True, None)


def _keep(session: Session, call: Call) -> None:
    """Insert a new call now, with its outcome (its id names the jobs); a known one is updated at commit.
    The new one is written by one Core INSERT from the object's values, the object staying out of the
    session (nothing reads it back in this transaction)."""
    if inspect(call).transient:
        call.id = insert_row(session, Call, **{name: getattr(call, name) for name in _CALL_COLUMNS
                                               if getattr(call, name) is not None})


_CALL_COLUMNS = tuple(column.key for column in Call.__table__.columns if column.key != "id")


def start_conversation(
    session: Session, *, tenant: Tenant, lead_id: int, business_number: str, call_id: int | None, pending: Pending,
    situation: str = "first_in_hours", opens: str | None = None, purpose: str = "reply",
    not_before: datetime | None = None,
) -> ConversationRef:
    playbook = tenant.conversation_playbook()
    state, question = opening(playbook)
    text = tenant.templates.render(situation, business=tenant.name, question=question, opens=opens)
    conversation = ConversationRef(
        id=insert_row(session, Conversation, tenant_id=tenant.id, lead_id=lead_id, call_id=call_id,
                      business_number=business_number, playbook=playbook.id, state=state.phase.value,
                      step=state.step, answers={}, offered_slots=[]),
        tenant_id=tenant.id, lead_id=lead_id, business_number=business_number)
    queue_text(session, conversation=conversation, body=text, purpose=purpose, pending=pending, call_id=call_id,
               not_before=not_before, template=situation)
    return conversation


def _link_lead(session: Session, tenant: Tenant, call: Call) -> None:
    try:
        call.from_number = to_e164(call.from_number)
    except ValueError:
        return
    call.lead_id = lead_for(session, tenant_id=tenant.id, phone=call.from_number).id


def _skip_reason(session: Session, *, tenant: Tenant, call: Call, now: datetime) -> str | None:
    if call.from_number.strip().lower() in WITHHELD_CALLER_IDS:
        return "invalid_number"
    try:
        caller = to_e164(call.from_number)
    except ValueError:
        return "invalid_number"
    call.from_number = caller
    if caller in tenant.blocklist:
        return "blocklisted"
    if caller in tenant.phone_numbers or caller in tenant.forward_to or caller in tenant.handoff_to:
        return "internal_number"
    lead = find_lead(session, tenant_id=tenant.id, phone=caller)
    if lead is None:  # a caller never seen has no opt-out, conversation or earlier text to look up
        call.lead_id = insert_row(session, Lead, tenant_id=tenant.id, phone=caller)
        return None
    call.lead_id = lead.id
    if lead.opted_out_at is not None:
        return "opted_out"
    if lead.do_not_text:
        return "do_not_text"
    if lead.undeliverable_code is not None:
        return "undeliverable"
    if open_conversation(session, lead_id=lead.id) is not None:
        return "active_conversation"
    cooldown_start = now - timedelta(hours=tenant.missed_call.cooldown_hours)
    earlier = select(Call.id).where(Call.lead_id == lead.id, Call.texted.is_(True), Call.created_at >= cooldown_start)
    if call.id is not None:
        earlier = earlier.where(Call.id != call.id)
    if session.scalar(earlier.limit(1)) is not None:
        return "cooldown"
    return None

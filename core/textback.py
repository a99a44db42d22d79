"""A call arrives, a call is missed, and the first text goes out (or a recorded reason why not).

Policy before the first text, in this order; the first that applies is recorded
on the call as `skip_reason`:

1. invalid_number     the caller id is missing, withheld or not a phone number
2. internal_number    the caller is one of the tenant's own numbers or staff (forward_to)
3. opted_out          the caller has opted out of this tenant's texts
4. active_conversation the caller is already in an open conversation (no second opener)
5. cooldown           the caller was texted back less than cooldown_hours ago

Later issues add blocklists, line type, delay, hours and quiet hours here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Tenant, to_e164
from core.engine.conversation import opening
from core.engine.playbook import load_playbook
from core.outbox import Kind, Pending
from core.store.repo import add_outbound, lead_for, open_conversation
from core.store.tables import Call, Conversation

MISSED_DIAL_STATUSES = frozenset({"no-answer", "busy", "failed", "canceled"})

# Caller ids Twilio reports for withheld or unknown numbers.
WITHHELD_CALLER_IDS = frozenset({"anonymous", "restricted", "unknown", "unavailable", "+266696687",
                                 "+7378742833", "+2562533", "+8656696", "+86282452253"})


@dataclass(frozen=True)
class MissedCallOutcome:
    call_id: int
    texted: bool
    skip_reason: str | None
    duplicate: bool = False


def call_started(session: Session, *, tenant: Tenant, call_sid: str, caller: str, called: str) -> Call:
    """Record a ringing call once per CallSid; a retried webhook returns the same row."""
    call = session.scalar(select(Call).where(Call.call_sid == call_sid))
    if call is None:
        call = Call(tenant_id=tenant.id, call_sid=call_sid, from_number=caller, to_number=called, status="ringing")
        session.add(call)
        session.flush()
    return call


def dial_completed(
    session: Session, *, tenant: Tenant, call_sid: str, caller: str, called: str, dial_status: str,
    now: datetime, pending: Pending,
) -> MissedCallOutcome:
    """The staff phones were rung; decide whether the call was missed and text back if so."""
    call = call_started(session, tenant=tenant, call_sid=call_sid, caller=caller, called=called)
    if call.status != "ringing":
        return MissedCallOutcome(call.id, call.texted, call.skip_reason, duplicate=True)
    call.dial_status = dial_status
    if dial_status not in MISSED_DIAL_STATUSES:
        call.status = "answered"
        return MissedCallOutcome(call.id, False, None)
    return _missed(session, tenant=tenant, call=call, now=now, pending=pending)


def forwarded_call(
    session: Session, *, tenant: Tenant, call_sid: str, caller: str, called: str, now: datetime, pending: Pending,
) -> MissedCallOutcome:
    """The business's own phone system forwarded an unanswered call: it is missed by definition."""
    call = call_started(session, tenant=tenant, call_sid=call_sid, caller=caller, called=called)
    if call.status != "ringing":
        return MissedCallOutcome(call.id, call.texted, call.skip_reason, duplicate=True)
    call.dial_status = "forwarded"
    return _missed(session, tenant=tenant, call=call, now=now, pending=pending)


def _missed(session: Session, *, tenant: Tenant, call: Call, now: datetime, pending: Pending) -> MissedCallOutcome:
    call.status = "missed"
    reason = _skip_reason(session, tenant=tenant, call=call, now=now)
    if reason is not None:
        call.skip_reason = reason
        return MissedCallOutcome(call.id, False, reason)
    lead = lead_for(session, tenant_id=tenant.id, phone=call.from_number)
    call.lead_id = lead.id
    call.texted = True
    start_conversation(session, tenant=tenant, lead_id=lead.id, business_number=call.to_number,
                       call_id=call.id, pending=pending)
    pending.add(session, tenant_id=tenant.id, kind=Kind.crm_sync_lead, key=f"crm-lead:{lead.id}:call:{call.id}",
                payload={"lead_id": lead.id})
    return MissedCallOutcome(call.id, True, None)


def start_conversation(
    session: Session, *, tenant: Tenant, lead_id: int, business_number: str, call_id: int | None, pending: Pending,
) -> Conversation:
    playbook = load_playbook(tenant.vertical.value)
    state, question = opening(playbook)
    text = tenant.templates.render("first_in_hours", business=tenant.name, question=question)
    conversation = Conversation(
        tenant_id=tenant.id, lead_id=lead_id, call_id=call_id, business_number=business_number,
        playbook=playbook.id, state=state.phase.value, step=state.step, answers={}, offered_slots=[],
    )
    session.add(conversation)
    session.flush()
    message = add_outbound(session, conversation=conversation, body=text)
    pending.add(session, tenant_id=tenant.id, kind=Kind.send_sms, key=f"sms:{message.id}",
                payload={"message_id": message.id})
    return conversation


def _skip_reason(session: Session, *, tenant: Tenant, call: Call, now: datetime) -> str | None:
    if call.from_number.strip().lower() in WITHHELD_CALLER_IDS:
        return "invalid_number"
    try:
        caller = to_e164(call.from_number)
    except ValueError:
        return "invalid_number"
    call.from_number = caller
    if caller in tenant.phone_numbers or caller in tenant.forward_to:
        return "internal_number"
    lead = lead_for(session, tenant_id=tenant.id, phone=caller)
    call.lead_id = lead.id
    if lead.opted_out_at is not None:
        return "opted_out"
    if open_conversation(session, lead_id=lead.id) is not None:
        return "active_conversation"
    cooldown_start = now - timedelta(hours=tenant.missed_call.cooldown_hours)
    recent = session.scalar(
        select(Call.id).where(Call.lead_id == lead.id, Call.texted.is_(True), Call.created_at >= cooldown_start,
                              Call.id != call.id).limit(1)
    )
    if recent is not None:
        return "cooldown"
    return None

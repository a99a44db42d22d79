"""Send texts. The last checks happen here, at send time, because time passes between writing and sending:

- an opted-out, do-not-text or undeliverable lead gets nothing (the opt-out confirmation excepted);
- a first text checks the line type (when the tenant enables lookup) and, after a delay, whether the
  caller was answered in the meantime; it may go out in quiet hours only if the tenant allows the
  first reply anytime;
- follow-ups wait for the caller's texting window (08:00-21:00 local by default).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from connectors.base import Rejected
from core.config import Tenant
from core.hours import caller_zones, next_textable, textable
from core.inbound import record_send_failure
from core.models import OutboundSMS
from core.outbox import Deferred, Kind, Pending
from core.store.repo import add_outbound
from core.store.tables import Call, Conversation, Lead, Message
from sync.runtime import Runtime

LANDLINE_TYPES = frozenset({"landline", "fixedVoip", "tollFree", "pager", "voicemail"})
ALWAYS_ALLOWED = frozenset({"opt_out"})
WAIT_FOR_WINDOW = frozenset({"followup"})


def send_sms(runtime: Runtime, tenant: Tenant, payload: dict, pending: Pending) -> None:
    message_id, now = payload["message_id"], runtime.now()
    with runtime.db.transaction() as session:
        message = session.get(Message, message_id)
        if message is None or message.status != "queued":
            return
        lead = session.get(Lead, message.lead_id)
        purpose = message.purpose or "reply"
        if purpose not in ALWAYS_ALLOWED and (lead.opted_out_at or lead.do_not_text or lead.undeliverable_code):
            message.status = "suppressed"
            return
        call = session.get(Call, payload["call_id"]) if payload.get("call_id") else None
        if purpose == "first" and call is not None and _answered_since(session, call):
            _skip_first(session, message, call, "answered_meanwhile")
            return
        zones = caller_zones(lead.phone, tenant.zone)
        must_wait = purpose in WAIT_FOR_WINDOW or (purpose == "first" and not tenant.quiet_hours.first_reply_anytime)
        if must_wait and not textable(tenant.quiet_hours, zones, now):
            raise Deferred(next_textable(tenant.quiet_hours, zones, now), "outside the caller's texting window")
        needs_lookup = purpose == "first" and tenant.missed_call.lookup_line_type and lead.line_type is None
        outbound = OutboundSMS(to=lead.phone, from_=message.business_number, body=message.body,
                               status_callback=f"{runtime.settings.public_url}/twilio/sms/status")
    provider = runtime.connector(tenant, "sms")
    if provider is None:
        raise Rejected(f"tenant {tenant.id} has no sms connector")
    if needs_lookup:
        line_type = provider.line_type(outbound.to) or "unknown"
        with runtime.db.transaction() as session:
            session.get(Lead, session.get(Message, message_id).lead_id).line_type = line_type
            if line_type in LANDLINE_TYPES:
                _skip_first(session, session.get(Message, message_id), session.get(Call, payload["call_id"]),
                            "landline")
                return
    try:
        sent = provider.send(outbound)
    except Rejected as exc:
        with runtime.db.transaction() as session:
            message = session.get(Message, message_id)
            message.status, message.error_code = "failed", getattr(exc, "code", None)
            record_send_failure(session, message=message, error_code=message.error_code, now=now, pending=pending)
        raise
    with runtime.db.transaction() as session:
        message = session.get(Message, message_id)
        message.provider_sid, message.status, message.sent_at = sent.provider_id, sent.status, now
        if message.purpose == "first" and message.conversation_id and tenant.followups.max > 0:
            _schedule_followup(session, tenant, message.conversation_id, number=1, after=now, pending=pending)


def send_followup(runtime: Runtime, tenant: Tenant, payload: dict, pending: Pending) -> None:
    """Nudge a caller who has not answered; never after a reply, an opt-out, a handoff or a takeover."""
    conversation_id, number = payload["conversation_id"], payload["number"]
    with runtime.db.transaction() as session:
        conversation = session.get(Conversation, conversation_id)
        lead = session.get(Lead, conversation.lead_id)
        replied = session.scalar(select(Message.id).where(Message.conversation_id == conversation_id,
                                                          Message.direction == "inbound").limit(1))
        if (replied is not None or conversation.state != "asking" or conversation.paused
                or lead.opted_out_at or lead.do_not_text or conversation.followups_sent >= number):
            return
        question = tenant.conversation_playbook(conversation.playbook).step(conversation.step.split("#")[0]).ask
        text = tenant.templates.render("followup", business=tenant.name, question=question)
        message = add_outbound(session, conversation=conversation, body=text, purpose="followup")
        conversation.followups_sent = number
        pending.add(session, tenant_id=tenant.id, kind=Kind.send_sms, key=f"sms:{message.id}",
                    payload={"message_id": message.id})
        if number < tenant.followups.max:
            _schedule_followup(session, tenant, conversation_id, number=number + 1, after=runtime.now(),
                               pending=pending)


def notify_staff(runtime: Runtime, tenant: Tenant, payload: dict, pending: Pending) -> None:
    """A one-line handoff notice to a staff phone (not part of the caller's transcript)."""
    provider = runtime.connector(tenant, "sms")
    provider.send(OutboundSMS(to=payload["to"], from_=payload["from"], body=payload["body"]))


def _schedule_followup(session, tenant: Tenant, conversation_id: int, *, number: int, after, pending: Pending) -> None:
    pending.add(session, tenant_id=tenant.id, kind=Kind.followup, key=f"followup:{conversation_id}:{number}",
                payload={"conversation_id": conversation_id, "number": number},
                not_before=after + timedelta(hours=tenant.followups.after_hours))


def _answered_since(session, call: Call) -> bool:
    return session.scalar(select(Call.id).where(
        Call.lead_id == call.lead_id, Call.status == "answered", Call.id != call.id,
        Call.created_at >= call.created_at).limit(1)) is not None


def _skip_first(session, message: Message, call: Call, reason: str) -> None:
    message.status = "suppressed"
    call.skip_reason, call.texted = reason, False
    conversation = session.get(Conversation, message.conversation_id)
    if conversation is not None:
        conversation.state, conversation.outcome = "closed", reason

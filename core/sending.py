"""Sending one text: the decisions before the provider call and the record after it (see core/jobs.py).

The last checks happen at send time, because time passes between writing and sending:

- an opted-out, do-not-text or undeliverable lead gets nothing (the opt-out confirmation excepted);
- a first text checks the line type (when the tenant enables lookup; sync fetches it, core decides)
  and, after a delay, whether the caller was answered in the meantime; it may go out in quiet hours
  only if the tenant allows the first reply anytime;
- follow-ups wait for the caller's texting window (08:00-21:00 local by default).

At most once: the message is `sending` before the provider is called. An answer that never came
(a timeout, a connection dropped after the request went out, a 5xx) leaves it `sending`; the next
attempt asks the provider whether it has the message (LookUpSent) before it sends again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.orm import Session, aliased

from core.config import Tenant
from core.hours import caller_zones, next_textable, textable
from core.inbound import record_send_failure
from core.jobs import Defer, FollowupJob, MessageStatus, SendSMSJob, Skip, VendorCall
from core.models import OutboundSMS, SentSMS
from core.outbox import Kind, Pending, queue_text
from core.store.tables import Call, Conversation, Lead, Message

LANDLINE_TYPES = frozenset({"landline", "fixedVoip", "tollFree", "pager", "voicemail"})
ALWAYS_ALLOWED = frozenset({"opt_out"})
WAIT_FOR_WINDOW = frozenset({"followup", "calendar_change"})  # not answers: they wait for the window


@dataclass(frozen=True)
class LookUpLineType(VendorCall):
    number: str


@dataclass(frozen=True)
class LookUpSent(VendorCall):
    """An earlier attempt got no answer: does the provider have this text? Never resend before asking."""

    sms: OutboundSMS
    known_ids: frozenset[str]  # the provider ids of texts we already recorded, which cannot be this one


@dataclass(frozen=True)
class Send(VendorCall):
    sms: OutboundSMS
    called_at: datetime | None = None  # a first text's call: when it came in (the seconds-to-first-text metric)


SendDecision = Skip | Defer | LookUpLineType | LookUpSent | Send


def prepare_send(session: Session, *, tenant: Tenant, job: SendSMSJob, now: datetime,
                 status_callback: str) -> SendDecision:
    found = _sending_rows(session, job)
    if found is None or found[0].tenant_id != tenant.id:
        return Skip("no such message")
    message, lead, call, answered_since = found
    if message.provider_sid is not None:
        return Skip("already at the provider")  # recorded by the send, or named by an early status callback
    if message.status not in (MessageStatus.queued, MessageStatus.sending):
        return Skip(f"already {message.status}")
    purpose = message.purpose or "reply"
    if purpose not in ALWAYS_ALLOWED and (lead.opted_out_at or lead.do_not_text or lead.undeliverable_code):
        message.status = MessageStatus.suppressed
        return Skip("opted out, do-not-text or undeliverable")
    outbound = OutboundSMS(to=lead.phone, from_=message.business_number, body=message.body,
                           status_callback=f"{status_callback}?m={message.id}")
    if message.status == MessageStatus.sending:
        return LookUpSent(outbound, known_ids=_known_ids(session, message))
    if purpose == "first" and call is not None and answered_since:
        _skip_first(session, message, call, "answered_meanwhile")
        return Skip("answered_meanwhile")
    zones = caller_zones(lead.phone, tenant.zone)
    # The first reply may go out at once because the caller has just called; an imported past call has not.
    reply_now = tenant.quiet_hours.first_reply_anytime and not (call is not None and call.source == "import")
    must_wait = purpose in WAIT_FOR_WINDOW or (purpose == "first" and not reply_now)
    if must_wait and not textable(tenant.quiet_hours, zones, now):
        return Defer(next_textable(tenant.quiet_hours, zones, now), "outside the caller's texting window")
    if purpose == "first" and tenant.missed_call.lookup_line_type and lead.line_type is None:
        return LookUpLineType(lead.phone)
    message.status = MessageStatus.sending
    return Send(outbound, called_at=call.created_at if call is not None and purpose == "first" else None)


def _sending_rows(session: Session, job: SendSMSJob) -> tuple[Message, Lead, Call | None, bool] | None:
    """The message, its lead, the call it answers and whether that caller was answered on a later call:
    one query, built once (every text pays for it)."""
    row = session.execute(_SENDING_ROWS, {"message_id": job.message_id, "call_id": job.call_id}).one_or_none()
    return None if row is None else (row[0], row[1], row[2], bool(row[3]))


_LATER = aliased(Call)
_SENDING_ROWS = (
    select(Message, Lead, Call, exists().where(_LATER.lead_id == Call.lead_id, _LATER.status == "answered",
                                               _LATER.id != Call.id, _LATER.created_at >= Call.created_at))
    .join(Lead, Lead.id == Message.lead_id)
    .outerjoin(Call, Call.id == bindparam("call_id"))  # no call (NULL): no row joins
    .where(Message.id == bindparam("message_id"))
)


def record_line_type(session: Session, *, job: SendSMSJob, line_type: str | None) -> None:
    """Store what the lookup said; a landline's first text is not sent (skip reason `landline`)."""
    message = session.get(Message, job.message_id)
    lead = session.get(Lead, message.lead_id)
    lead.line_type = line_type or "unknown"
    if lead.line_type in LANDLINE_TYPES and job.call_id is not None:
        _skip_first(session, message, session.get(Call, job.call_id), "landline")


def record_sent(session: Session, *, tenant: Tenant, job: SendSMSJob, sent: SentSMS, now: datetime,
                pending: Pending) -> str:
    """The provider has the text: note its id and status; a first text schedules the first follow-up.
    Returns the message's purpose."""
    purpose, conversation_id = session.execute(_RECORD_SENT, {
        "message_id": job.message_id, "sid": sent.provider_id, "new_status": sent.status, "at": now}).one()
    if purpose == "first" and conversation_id and tenant.followups.max > 0:
        schedule_followup(session, tenant, conversation_id, number=1, after=now, pending=pending)
    return purpose or "reply"


_MESSAGES = Message.__table__.c
_RECORD_SENT = (  # Core, not an ORM UPDATE: no object of it is loaded in that transaction
    update(Message.__table__).where(_MESSAGES.id == bindparam("message_id"))
    .values(provider_sid=bindparam("sid"), status=bindparam("new_status"), sent_at=bindparam("at"))
    .returning(_MESSAGES.purpose, _MESSAGES.conversation_id)
)


def record_not_sent(session: Session, *, job: SendSMSJob) -> None:
    """The provider certainly did not take it (refused before accepting, unreachable): a retry sends it."""
    message = session.get(Message, job.message_id)
    if message.status == MessageStatus.sending:
        message.status = MessageStatus.queued


def record_refused(session: Session, *, job: SendSMSJob, error_code: int | None, now: datetime,
                   pending: Pending) -> None:
    message = session.get(Message, job.message_id)
    message.status, message.error_code = MessageStatus.failed, error_code
    record_send_failure(session, message=message, error_code=error_code, now=now, pending=pending)


def prepare_followup(session: Session, *, tenant: Tenant, job: FollowupJob, now: datetime,
                     pending: Pending) -> Skip | None:
    """Nudge a caller who has not answered: queue the follow-up text (None), or say why not."""
    conversation = session.get(Conversation, job.conversation_id)
    lead = session.get(Lead, conversation.lead_id)
    replied = session.scalar(select(Message.id).where(Message.conversation_id == conversation.id,
                                                      Message.direction == "inbound").limit(1))
    if replied is not None:
        return Skip("the caller replied")
    if conversation.state != "asking" or conversation.paused or lead.opted_out_at or lead.do_not_text:
        return Skip(f"conversation is {conversation.state}{' (paused)' if conversation.paused else ''}")
    if conversation.followups_sent >= job.number:
        return Skip("already sent")
    question = tenant.conversation_playbook(conversation.playbook).step(conversation.step.split("#")[0]).ask
    text = tenant.templates.render("followup", business=tenant.name, question=question)
    queue_text(session, conversation=conversation, body=text, purpose="followup", pending=pending)
    conversation.followups_sent = job.number
    if job.number < tenant.followups.max:
        schedule_followup(session, tenant, conversation.id, number=job.number + 1, after=now, pending=pending)
    return None


def schedule_followup(session: Session, tenant: Tenant, conversation_id: int, *, number: int, after: datetime,
                      pending: Pending) -> None:
    pending.add(session, tenant_id=tenant.id, kind=Kind.followup, key=f"followup:{conversation_id}:{number}",
                payload={"conversation_id": conversation_id, "number": number},
                not_before=after + timedelta(hours=tenant.followups.after_hours))


def _known_ids(session: Session, message: Message) -> frozenset[str]:
    return frozenset(session.scalars(select(Message.provider_sid).where(
        Message.tenant_id == message.tenant_id, Message.lead_id == message.lead_id,
        Message.direction == "outbound", Message.provider_sid.is_not(None))))


def _skip_first(session: Session, message: Message, call: Call, reason: str) -> None:
    message.status = MessageStatus.suppressed
    call.skip_reason, call.texted = reason, False
    conversation = session.get(Conversation, message.conversation_id)
    if conversation is not None:
        conversation.state, conversation.outcome = "closed", reason

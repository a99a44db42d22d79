"""Opt-out and opt-in: stored with time and source, honoured everywhere, pushed to the CRM.

After an opt-out nothing is ever sent to that number for that tenant, except the
one confirmation, and only when the SMS provider does not already send its own
(Twilio answers the carrier keywords STOP, CANCEL, END, ... itself on long codes and
blocks anything we send afterwards; it does not know about "stop texting me").
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Tenant
from core.engine.conversation import OPEN_PHASES
from core.outbox import Kind, Pending, log_conversation_later
from core.store.tables import Conversation, Lead, Message, OptOutEvent



def opt_out(session: Session, lead: Lead, *, tenant_id: str, source: str, now: datetime, pending: Pending,
            detail: str | None = None) -> bool:
    """Opt the lead out; True when this changed anything (a repeated STOP changes nothing)."""
    if lead.opted_out_at is not None:
        return False
    lead.opted_out_at, lead.opt_out_source = now, source
    session.add(OptOutEvent(tenant_id=tenant_id, lead_id=lead.id, action="opt_out", source=source, detail=detail))
    stop_texting(session, lead, state="opted_out", outcome="opted_out", now=now)
    write_to_crm_later(session, lead, pending)
    latest = session.scalar(select(Conversation).where(Conversation.lead_id == lead.id)
                            .order_by(Conversation.id.desc()).limit(1))
    if latest is not None:
        if latest.outcome is None:
            latest.outcome = "opted_out"
        log_conversation_later(session, latest, pending)
    else:
        pending.add(session, tenant_id=tenant_id, kind=Kind.crm_sync_lead, key=f"crm-lead:{lead.id}:optout",
                    payload={"lead_id": lead.id})
    return True


def stop_texting(session: Session, lead: Lead, *, state: str, outcome: str, now: datetime) -> None:
    """Close the lead's open conversations and suppress the texts still queued for it."""
    for conversation in session.scalars(select(Conversation).where(
            Conversation.lead_id == lead.id, Conversation.state.in_([p.value for p in OPEN_PHASES]))):
        conversation.state, conversation.outcome, conversation.closed_at = state, outcome, now
    for message in session.scalars(select(Message).where(
            Message.lead_id == lead.id, Message.direction == "outbound", Message.status == "queued")):
        message.status = "suppressed"


def opt_in(session: Session, lead: Lead, *, tenant_id: str, source: str, pending: Pending | None = None) -> bool:
    if lead.opted_out_at is None:
        return False
    lead.opted_out_at, lead.opt_out_source = None, None
    session.add(OptOutEvent(tenant_id=tenant_id, lead_id=lead.id, action="opt_in", source=source))
    if pending is not None:
        write_to_crm_later(session, lead, pending)
    return True


def write_to_crm_later(session: Session, lead: Lead, pending: Pending) -> None:
    """Tell the CRM's do-not-text field what the caller said, so both sides agree (the job reads the lead's
    state when it runs; keyed by this opt-out/opt-in event, so each is written once)."""
    count = session.query(OptOutEvent).filter(OptOutEvent.lead_id == lead.id).count()
    pending.add(session, tenant_id=lead.tenant_id, kind=Kind.crm_write_opt_out,
                key=f"crm-opt-out:{lead.id}:{count}", payload={"lead_id": lead.id})


def confirm_opt_out(session: Session, *, tenant: Tenant, lead: Lead, business_number: str, pending: Pending,
                    appointment_note: str = "") -> Message:
    """The one message an opted-out caller gets: the confirmation (purpose opt_out is exempt from suppression)."""
    text = tenant.templates.render("opt_out_confirmation", business=tenant.name, appointment_note=appointment_note)
    message = Message(tenant_id=tenant.id, conversation_id=None, lead_id=lead.id, business_number=business_number,
                      direction="outbound", body=text, status="queued", purpose="opt_out")
    session.add(message)
    session.flush()
    pending.add(session, tenant_id=tenant.id, kind=Kind.send_sms, key=f"sms:{message.id}",
                payload={"message_id": message.id})
    return message

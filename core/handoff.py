"""Handing a conversation to a person: staff are told, the bot stops, the CRM gets the summary.

`relay_to_staff` passes the caller's later texts on to staff; the bot says nothing more.
`request_handoff` does not text the caller: the engine's turn carries what the caller
reads (the playbook's wording, or the tenant's `handoff_caller` template).
A takeover (staff reply or the takeover flag) pauses the bot for that conversation.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from core.config import Tenant
from core.outbox import Kind, Pending, log_conversation_later
from core.store.tables import Conversation, Lead


def request_handoff(session: Session, *, tenant: Tenant, conversation: Conversation, summary: str,
                    pending: Pending) -> None:
    conversation.state = "handoff"
    conversation.handoff_summary = summary
    conversation.outcome = conversation.outcome or "handoff"
    lead = session.get(Lead, conversation.lead_id)
    text = tenant.templates.render("handoff_staff", business=tenant.name, caller=lead.phone, summary=summary,
                                   conversation_id=str(conversation.id))
    for staff in handoff_numbers(tenant, lead):
        pending.add(session, tenant_id=tenant.id, kind=Kind.notify_staff,
                    key=f"handoff:{conversation.id}:{staff}",
                    payload={"to": staff, "from": conversation.business_number, "body": text})
    log_conversation_later(session, conversation, pending, reason="handoff")


def relay_to_staff(session: Session, *, tenant: Tenant, conversation: Conversation, caller: str, body: str,
                   urgency: str, pending: Pending, message_sid: str) -> None:
    """A caller's text after a handoff or takeover: every staff number gets it in the conversation's `#id`
    thread (so "#id your reply" answers them), and the CRM log is brought up to date."""
    flag = f"{urgency.upper()} " if urgency in ("urgent", "emergency") else ""
    said = " ".join(body.split())
    text = f"textback: {flag}#{conversation.id} {caller} wrote: \"{said[:600]}\" Reply \"#{conversation.id} ...\" to answer."
    for staff in tenant.handoff_to or tenant.forward_to:
        pending.add(session, tenant_id=tenant.id, kind=Kind.notify_staff, key=f"relay:{message_sid}:{staff}",
                    payload={"to": staff, "from": conversation.business_number, "body": text})
    log_conversation_later(session, conversation, pending, reason="caller_message")


def handoff_numbers(tenant: Tenant, lead: Lead) -> list[str]:
    """The lead's CRM owner's phone when staff assigned an owner with a mapped phone; else the handoff list."""
    owner_phone = tenant.two_way.owner_phones.get(lead.crm_owner_id or "")
    return [owner_phone] if owner_phone else list(tenant.handoff_to)


def take_over(session: Session, *, conversation: Conversation, by: str, now: datetime, pending: Pending) -> bool:
    """Staff take the conversation: the bot sends nothing more in it. True when this changed anything."""
    if conversation.paused:
        return False
    conversation.paused = True
    conversation.outcome = conversation.outcome or "taken_over"
    conversation.handoff_summary = (conversation.handoff_summary or "") + f" Taken over by {by} at {now:%Y-%m-%d %H:%M}Z."
    log_conversation_later(session, conversation, pending, reason="takeover")
    return True

"""Staff reply to a caller through the business number: the bot steps aside for that conversation.

A staff phone (`forward_to` or `handoff_to`) texts the business number:

    #123 Hi Sam, this is Dana from the office. Can I call you at 3?

textback relays the text to the caller of conversation 123 from the business number, so the
caller sees one thread, and pauses the bot there (a takeover). `#123` alone only pauses it.
Nothing staff text resumes the bot except `#123 resume`: the bot picks up at the question it
was on and asks it again. Anything else gets a one-line usage reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Tenant
from core.handoff import take_over
from core.outbox import Kind, Pending
from core.store.repo import add_outbound
from core.store.tables import Conversation, Lead, OutboxRow

_COMMAND = re.compile(r"^\s*#(\d+)\b\s*(.*)$", re.S)
_RESUME = re.compile(r"^(?:resume|bot\s+on|restart\s+bot|resume\s+bot)[.!]?$", re.I)
USAGE = ("textback: to answer a caller, text \"#<conversation number> your message\"; \"#<number>\" alone pauses "
         "the bot; \"#<number> resume\" hands the conversation back to it.")


@dataclass(frozen=True)
class StaffOutcome:
    duplicate: bool = False
    conversation_id: int | None = None
    relayed: bool = False


def is_staff(tenant: Tenant, phone: str) -> bool:
    return phone in tenant.forward_to or phone in tenant.handoff_to


def staff_message(session: Session, *, tenant: Tenant, staff_phone: str, message_sid: str, called: str, body: str,
                  now: datetime, pending: Pending) -> StaffOutcome:
    key = f"staff:{message_sid}"
    if session.scalar(select(OutboxRow.id).where(OutboxRow.idempotency_key.startswith(key))) is not None:
        return StaffOutcome(duplicate=True)
    match = _COMMAND.match(body)
    conversation = session.get(Conversation, int(match.group(1))) if match else None
    if conversation is None or conversation.tenant_id != tenant.id:
        _tell_staff(session, tenant, staff_phone, called, key, USAGE if not match else
                    f"textback: there is no conversation #{match.group(1)} for {tenant.name}.", pending)
        return StaffOutcome()
    text = match.group(2).strip()
    if _RESUME.match(text):
        _resume(session, tenant, conversation, staff_phone, called, key, pending)
        return StaffOutcome(conversation_id=conversation.id)
    take_over(session, conversation=conversation, by=staff_phone, now=now, pending=pending)
    if not text:
        _tell_staff(session, tenant, staff_phone, called, key,
                    f"textback: paused conversation #{conversation.id}; the bot will not text that caller.", pending)
        return StaffOutcome(conversation_id=conversation.id)
    if session.get(Lead, conversation.lead_id).opted_out_at is not None:
        _tell_staff(session, tenant, staff_phone, called, key,
                    f"textback: not sent; the caller in #{conversation.id} opted out of texts.", pending)
        return StaffOutcome(conversation_id=conversation.id)
    message_id = add_outbound(session, conversation=conversation, body=text, purpose="staff")
    pending.add(session, tenant_id=tenant.id, kind=Kind.send_sms, key=f"{key}:relay",
                payload={"message_id": message_id})
    return StaffOutcome(conversation_id=conversation.id, relayed=True)


def _resume(session: Session, tenant: Tenant, conversation: Conversation, staff_phone: str, called: str, key: str,
            pending: Pending) -> None:
    """Staff said so: the bot takes the conversation back at the question it was on, and asks it again."""
    from core.engine.state import State  # the engine's row format, read where it is needed
    from core.outbox import queue_text

    state = State.from_row(phase=conversation.state, step=conversation.step, answers=conversation.answers,
                           offered=conversation.offered_slots)
    conversation.paused = False
    question = None
    if conversation.state == "handoff" and state.step is not None:
        conversation.state, conversation.step = "asking", state.step
        question = tenant.conversation_playbook(conversation.playbook).step(state.step).ask
    lead = session.get(Lead, conversation.lead_id)
    if question and lead.opted_out_at is None:
        queue_text(session, conversation=conversation, body=question, pending=pending)
    _tell_staff(session, tenant, staff_phone, called, key,
                f"textback: the bot has conversation #{conversation.id} again"
                + (" and asked the caller its last question." if question else "."), pending)


def _tell_staff(session: Session, tenant: Tenant, staff_phone: str, called: str, key: str, text: str,
                pending: Pending) -> None:
    pending.add(session, tenant_id=tenant.id, kind=Kind.notify_staff, key=f"{key}:notice",
                payload={"to": staff_phone, "from": called, "body": text})


def admin_reply(session: Session, *, tenant: Tenant, conversation: Conversation, by: str, text: str, now: datetime,
                pending: Pending) -> str | None:
    """A reply typed in /admin: the bot is paused and the text goes out through the outbox.

    Returns why it was not sent (the caller opted out, nothing to send), or None when queued.
    """
    take_over(session, conversation=conversation, by=by, now=now, pending=pending)
    text = text.strip()
    if not text:
        return "the reply is empty; the conversation is paused"
    if session.get(Lead, conversation.lead_id).opted_out_at is not None:
        return "not sent: the caller opted out of texts"
    message_id = add_outbound(session, conversation=conversation, body=text, purpose="staff")
    pending.add_new(session, tenant_id=tenant.id, kind=Kind.send_sms, key=f"admin-reply:{message_id}",
                    payload={"message_id": message_id})
    return None

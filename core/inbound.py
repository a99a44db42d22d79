"""Inbound texts and delivery reports.

Order for an inbound text: dedupe on the provider's MessageSid, record it, then
carrier keywords (STOP family, HELP, START), then one playbook step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Tenant, to_e164
from core.engine.conversation import Action, Phase, State, Turn, advance
from core.engine.interpreters import Interpreter, interpreter_for
from core.engine.interpreters.names import split_name
from core.engine.keywords import Keyword, keyword, revokes_consent
from core.handoff import relay_to_staff, request_handoff
from core.hours import caller_zones
from core.outbox import Kind, Pending, log_conversation_later, queue_text
from core.appointments import active_booking_note
from core.optout import confirm_opt_out, opt_in, opt_out
from core.staff import is_staff, staff_message
from core.store.repo import lead_for, reachable_conversation
from core.store.tables import Conversation, Lead, Message
from core.textback import start_conversation

# Twilio error codes that mean the recipient opted out at the carrier/provider.
OPTED_OUT_ERRORS = frozenset({21610})
# Codes after which texting the number again is pointless or harmful: carrier filtering (30007),
# unreachable/unknown/landline handsets (30003-30006), "To" is a landline (21635).
STOP_SENDING_ERRORS = frozenset({30003, 30004, 30005, 30006, 30007, 21635})

# Delivery reports can arrive out of order, and again; a status never moves backwards. A handset's receipt
# (delivered) outranks a failure report, so whichever order the two come in, the text counts as delivered.
_STATUS_RANK = {"queued": 0, "accepted": 0, "scheduled": 0, "sending": 1, "sent": 2,
                "undelivered": 3, "failed": 3, "delivered": 4, "read": 5}


class InvalidInput(ValueError):
    """The request names something that cannot be right (answered 4xx by the web edge)."""


@dataclass(frozen=True)
class InboundOutcome:
    duplicate: bool = False
    keyword: str | None = None
    conversation_id: int | None = None


def inbound_sms(
    session: Session, *, tenant: Tenant, message_sid: str, caller: str, called: str, body: str,
    now: datetime, pending: Pending, interpreter: Interpreter | None = None,
) -> InboundOutcome:
    if session.scalar(select(Message.id).where(Message.provider_sid == message_sid)) is not None:
        return InboundOutcome(duplicate=True)
    try:
        phone = to_e164(caller)
    except ValueError as exc:
        raise InvalidInput(f"From is not a phone number: {caller!r}") from exc
    if is_staff(tenant, phone):
        outcome = staff_message(session, tenant=tenant, staff_phone=phone, message_sid=message_sid, called=called,
                                body=body, now=now, pending=pending)
        return InboundOutcome(duplicate=outcome.duplicate, keyword="staff", conversation_id=outcome.conversation_id)
    lead = lead_for(session, tenant_id=tenant.id, phone=phone)
    conversation = reachable_conversation(session, lead_id=lead.id, now=now)
    session.add(Message(
        tenant_id=tenant.id, conversation_id=conversation.id if conversation else None, lead_id=lead.id,
        business_number=called, direction="inbound", body=body, provider_sid=message_sid, status="received",
    ))
    word = keyword(body)
    if word is Keyword.stop or (word is None and revokes_consent(body)):
        source = "sms_keyword" if word is Keyword.stop else "sms_phrase"
        changed = opt_out(session, lead, tenant_id=tenant.id, source=source, now=now, pending=pending, detail=body)
        if changed and (source == "sms_phrase" or not tenant.provider_confirms_opt_out):
            confirm_opt_out(session, tenant=tenant, lead=lead, business_number=called, pending=pending,
                            appointment_note=active_booking_note(session, lead.id, tenant, now=now))
        return InboundOutcome(keyword=word.value if word else "revocation")
    if word is Keyword.start and lead.opted_out_at is not None:
        opt_in(session, lead, tenant_id=tenant.id, source="sms_keyword", pending=pending)
        return InboundOutcome(keyword=word.value)
    if lead.opted_out_at is not None:
        return InboundOutcome()  # opted out: record what they said, answer nothing
    if word is Keyword.help:
        _reply_help(session, tenant=tenant, lead=lead, called=called, conversation=conversation, pending=pending)
        return InboundOutcome(keyword=word.value)
    if conversation is not None and conversation.paused:  # staff took over: the bot stays quiet, staff read it
        relay_to_staff(session, tenant=tenant, conversation=conversation, caller=lead.phone, body=body,
                       urgency="normal", pending=pending, message_sid=message_sid)
        return InboundOutcome(conversation_id=conversation.id)
    if conversation is None:
        conversation = start_conversation(session, tenant=tenant, lead_id=lead.id, business_number=called,
                                          call_id=None, pending=pending)
        return InboundOutcome(conversation_id=conversation.id)
    _step(session, tenant=tenant, conversation=conversation, lead=lead, body=body, message_sid=message_sid, now=now,
          interpreter=interpreter or interpreter_for(tenant.interpreter),
          pending=pending)
    return InboundOutcome(conversation_id=conversation.id)


def _step(session: Session, *, tenant: Tenant, conversation: Conversation, lead: Lead, body: str, message_sid: str,
          now: datetime, pending: Pending, interpreter: Interpreter) -> None:
    """One engine turn, applied: state on the row, replies as outbound texts, the action as an outbox row."""
    playbook = tenant.conversation_playbook(conversation.playbook)
    state = State.from_row(phase=conversation.state, step=conversation.step, answers=conversation.answers,
                           offered=conversation.offered_slots)
    turn = advance(playbook, state, body, business=tenant.name, interpreter=interpreter,
                   now=now.astimezone(_reading_zone(tenant, state, lead.phone)))
    conversation.state = turn.state.phase.value
    conversation.step = turn.state.step_column()
    conversation.answers = dict(turn.state.answers)
    conversation.offered_slots = list(turn.state.offered)
    if _name_the_lead(lead, turn.state.answers):  # the CRM contact was made from the number alone: name it
        pending.add(session, tenant_id=tenant.id, kind=Kind.crm_sync_lead, key=f"crm-lead:{lead.id}:named",
                    payload={"lead_id": lead.id})
    if turn.outcome is not None and turn.state.phase is not Phase.booked:
        conversation.outcome = turn.outcome.value
    for text in _replies(tenant, conversation, turn):
        queue_text(session, conversation=conversation, body=text, pending=pending)
    ids = {"conversation_id": conversation.id}
    if turn.action is Action.offer_slots:
        pending.add(session, tenant_id=tenant.id, kind=Kind.offer_slots, key=f"offer:{conversation.id}:{message_sid}",
                    payload=ids)
    elif turn.action is Action.book_slot:
        slot = turn.state.offered[turn.choice]
        pending.add(session, tenant_id=tenant.id, kind=Kind.book_slot,
                    key=f"book:{conversation.id}:{message_sid}", payload={**ids, "slot": slot})
    elif turn.action is Action.reschedule:
        pending.add(session, tenant_id=tenant.id, kind=Kind.reschedule_booking,
                    key=f"reschedule:{conversation.id}:{message_sid}", payload=ids)
    elif turn.action is Action.cancel_booking:
        pending.add(session, tenant_id=tenant.id, kind=Kind.cancel_booking, key=f"cancel:{conversation.id}:{message_sid}",
                    payload=ids)
    elif turn.action is Action.handoff:
        request_handoff(session, tenant=tenant, conversation=conversation, pending=pending,
                        summary=f"{turn.handoff.summary} Transcript: conversation {conversation.id}.")
        conversation.state = turn.state.phase.value  # a booked caller's appointment stands through a handoff
    elif turn.action is Action.relay:
        relay_to_staff(session, tenant=tenant, conversation=conversation, caller=lead.phone, body=body,
                       urgency=turn.handoff.urgency, pending=pending, message_sid=message_sid)
    if turn.state.phase is Phase.closed:
        conversation.closed_at = now
        log_conversation_later(session, conversation, pending, reason="closed")


NAME_LENGTH = Lead.__table__.c.first_name.type.length


def _name_the_lead(lead: Lead, answers: dict) -> bool:
    """The name the caller gave becomes the lead's, so CRM contacts and calendar events carry it. True when
    it did."""
    name = answers.get("caller_name")
    if lead.first_name or not isinstance(name, str) or name in ("none", "unknown"):
        return False
    first, last = split_name(name)
    # A "name" is whatever the caller wrote at that question; the columns (80) keep its start, as CRMs do.
    lead.first_name, lead.last_name = first[:NAME_LENGTH], last[:NAME_LENGTH] if last else last
    return True


def _replies(tenant: Tenant, conversation: Conversation, turn: Turn) -> list[str]:
    """The engine's replies; a handoff the engine said nothing about gets the tenant's handoff_caller text."""
    if turn.replies or turn.action is not Action.handoff:
        return turn.replies
    return [tenant.templates.render("handoff_caller", business=tenant.name,
                                    contact=tenant.contact or conversation.business_number)]


def _reading_zone(tenant: Tenant, state: State, phone: str) -> ZoneInfo:
    """Offered times are labelled in the business's zone, so picks are read there; other dates in the caller's."""
    if state.phase in (Phase.choosing, Phase.booked):
        return tenant.zone
    zones = caller_zones(phone, tenant.zone)
    return zones[0] if len(zones) == 1 else tenant.zone


def _reply_help(session: Session, *, tenant: Tenant, lead: Lead, called: str, conversation: Conversation | None,
                pending: Pending) -> None:
    text = tenant.templates.render("help", business=tenant.name, contact=tenant.contact or called)
    message = Message(tenant_id=tenant.id, conversation_id=conversation.id if conversation else None, lead_id=lead.id,
                      business_number=called, direction="outbound", body=text, status="queued", purpose="help")
    session.add(message)
    session.flush()
    pending.add(session, tenant_id=tenant.id, kind=Kind.send_sms, key=f"sms:{message.id}",
                payload={"message_id": message.id})


def delivery_status(
    session: Session, *, tenant_id: str, message_sid: str, status: str, error_code: int | None, now: datetime,
    pending: Pending, message_id: int | None = None,
) -> bool:
    """Apply a provider delivery report for one of `tenant_id`'s texts; False when it is not theirs (ignored).

    A report can arrive before the send recorded the provider's id (the answer was lost, or is still on its
    way): the `m` marker our StatusCallback URL carries names the message, which then takes the sid.
    """
    message = session.scalar(select(Message).where(Message.provider_sid == message_sid,
                                                   Message.tenant_id == tenant_id))
    if message is None and message_id is not None:
        message = session.scalar(select(Message).where(Message.id == message_id, Message.tenant_id == tenant_id,
                                                       Message.provider_sid.is_(None),
                                                       Message.direction == "outbound"))
        if message is not None:
            message.provider_sid = message_sid
    if message is None:
        return False
    if not _advances(message.status, status):
        return True  # a report older than what we know (or a replay of it) changes nothing
    message.status = status
    message.error_code = error_code or message.error_code
    record_send_failure(session, message=message, error_code=error_code, now=now, pending=pending)
    return True


def _advances(known: str | None, reported: str) -> bool:
    """A report moves the status forward, or repeats it (a replay); `failed` and `undelivered` do not replace
    each other, and neither replaces `delivered`, so one text is one delivery failure at most."""
    before, after = _STATUS_RANK.get(known or "", 0), _STATUS_RANK.get(reported, 0)
    return after > before or reported == known


def record_send_failure(session: Session, *, message: Message, error_code: int | None, now: datetime,
                        pending: Pending) -> None:
    """21610: the recipient unsubscribed at the carrier. Landline/filtered/unreachable codes stop further sends."""
    if error_code is None:
        return
    lead = session.get(Lead, message.lead_id)
    if error_code in OPTED_OUT_ERRORS:
        opt_out(session, lead, tenant_id=message.tenant_id, source=f"carrier_{error_code}", now=now, pending=pending)
    elif error_code in STOP_SENDING_ERRORS and lead.undeliverable_code is None:
        lead.undeliverable_code = error_code

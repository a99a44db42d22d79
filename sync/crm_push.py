"""Push leads, transcripts, qualified opportunities and bookings to the tenant's CRM.

Every write goes through the external-id map, so a replayed job updates the
record it created instead of creating another. Each write also passes the CRM a key
naming the local record, so a create whose answer was lost (the id never reached the
map) is found by the connector instead of created twice. The key carries the tenant and
the record's creation time besides its id: ids start again from 1 in a new database, and
a key that came back would otherwise update an old record in the CRM.

A CRM with the ActivityLog capability (HubSpot) also gets each text as an activity of its own, mapped per
message (local kind "message"), so a later push creates only the texts not yet mapped; and everything about
a conversation is tied to its deal whichever job runs first: a record created once the deal is mapped is
linked to it when it is made, and the job that makes the deal links what was written before. A link is
made before the record's id is mapped, so a job that fails in between makes it again on its retry.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from connectors.base import ActivityKind, ActivityLog
from core.config import Tenant
from core.engine.summary import answer_lines, headline
from core.jobs import BookingJob, ConversationJob, LeadJob
from core.models import BookingRecord, ContactRecord, ConversationLog, Direction, Opportunity, TranscriptLine
from core.outbox import Pending
from core.store.repo import external_id, remember_external_id, remember_external_ids, transcript
from core.store.tables import Booking, Call, Conversation, ExternalId, Lead, Message
from sync.runtime import Runtime

STABLE_TRIES = 3


def sync_lead(runtime: Runtime, tenant: Tenant, job: LeadJob, pending: Pending) -> None:
    """The contact itself: created, or updated with what textback learnt (a name), once per missed call."""
    if runtime.crm(tenant) is not None:
        with _writing(runtime, tenant, job.lead_id):
            ensure_contact(runtime, tenant, job.lead_id, refresh=True)


def ensure_contact(runtime: Runtime, tenant: Tenant, lead_id: int, *, refresh: bool = False) -> str:
    """The lead's CRM contact id. A contact already mapped is not written again unless `refresh`: the
    transcript, deal and meeting pushes only need its id, so one booked lead upserts its contact once."""
    crm, kind = runtime.crm(tenant), tenant.connectors["crm"].type
    with runtime.db.transaction() as session:
        lead = session.get(Lead, lead_id)
        contact = ContactRecord(phone=lead.phone, first_name=lead.first_name, last_name=lead.last_name)
        known = external_id(session, tenant_id=tenant.id, connector=kind, local_kind="lead", local_id=lead_id)
    if known is not None and not refresh:
        return known
    contact_id = crm.upsert_contact(contact, existing_id=known)
    with runtime.db.transaction() as session:
        remember_external_id(session, tenant_id=tenant.id, connector=kind, local_kind="lead", local_id=lead_id,
                             external_id=contact_id)
    return contact_id


def write_opt_out(runtime: Runtime, tenant: Tenant, job: LeadJob, pending: Pending) -> None:
    """The caller's STOP (or START) as the CRM's do-not-text field, for CRMs textback can set it in."""
    crm = runtime.crm(tenant)
    if crm is None or not hasattr(crm, "set_do_not_text"):
        return  # Clio's field is a custom field staff own; the webhook connector carries opt-outs in its events
    with _writing(runtime, tenant, job.lead_id):
        contact_id = ensure_contact(runtime, tenant, job.lead_id)
        with runtime.db.transaction() as session:
            opted_out = session.get(Lead, job.lead_id).opted_out_at is not None
        crm.set_do_not_text(contact_id=contact_id, value=opted_out)


def log_conversation(runtime: Runtime, tenant: Tenant, job: ConversationJob, pending: Pending) -> None:
    if runtime.crm(tenant) is None:
        return
    lead_id = _lead_of(runtime, job.conversation_id)
    with _writing(runtime, tenant, lead_id):
        _push_transcript(runtime, tenant, job.conversation_id, ensure_contact(runtime, tenant, lead_id))


def _push_transcript(runtime: Runtime, tenant: Tenant, conversation_id: int, contact_id: str) -> None:
    crm = runtime.crm(tenant)
    log, _, key = _conversation_log(runtime, tenant, conversation_id)
    deal = _mapped(runtime, tenant, "opportunity", conversation_id)
    # The conversation can grow while this push writes; a push that finds it changed writes again,
    # so the CRM ends with the newest transcript.
    for _ in range(STABLE_TRIES):
        _upsert(runtime, tenant, "conversation_log", conversation_id,
                lambda existing: _tied(crm, deal, "transcript", existing, crm.log_conversation(
                    contact_id=contact_id, log=log, existing_id=existing, key=key)))
        fresh = _conversation_log(runtime, tenant, conversation_id)[0]
        if fresh == log:
            break
        log = fresh
    if isinstance(crm, ActivityLog):
        _push_messages(runtime, tenant, crm, conversation_id, contact_id, deal)


def _push_messages(runtime: Runtime, tenant: Tenant, crm: ActivityLog, conversation_id: int, contact_id: str,
                   deal: str | None) -> None:
    """Each text of the conversation not yet in the CRM as an activity of its own, mapped per message."""
    kind = tenant.connectors["crm"].type
    with runtime.db.transaction() as session:
        texts = _texts(session, conversation_id)
        mapped = _mapped_ids(session, tenant.id, kind, "message", [m.id for m in texts])
        unlogged = {_key(tenant, "message", m.id, m.created_at): (m.id, _line(m)) for m in texts if m.id not in mapped}
    if not unlogged:
        return
    lines = [line.model_copy(update={"key": key}) for key, (_, line) in unlogged.items()]
    made = crm.log_messages(contact_id=contact_id, lines=lines, opportunity_id=deal)
    with runtime.db.transaction() as session:
        for key, (message_id, _) in unlogged.items():
            if key in made:
                remember_external_id(session, tenant_id=tenant.id, connector=kind, local_kind="message",
                                     local_id=message_id, external_id=made[key])


def _conversation_log(runtime: Runtime, tenant: Tenant, conversation_id: int) -> tuple[ConversationLog, int, str]:
    with runtime.db.transaction() as session:
        return _conversation_log_in(session, tenant, conversation_id)


def _conversation_log_in(session, tenant: Tenant, conversation_id: int) -> tuple[ConversationLog, int, str]:
    """The conversation's transcript as the CRM gets it, its lead, and the key it is created under."""
    conversation = session.get(Conversation, conversation_id)
    call = session.get(Call, conversation.call_id) if conversation.call_id else None
    lines = [TranscriptLine(at=m.created_at, direction=Direction(m.direction), body=m.body)
             for m in _texts(session, conversation_id)]
    log = ConversationLog(
        title=f"textback conversation with {_phone(session, conversation)} ({tenant.name})",
        summary=_summary(conversation, call),
        answers={k: str(v) for k, v in conversation.answers.items()},
        lines=lines,
    )
    return log, conversation.lead_id, _key(tenant, "conversation", conversation_id, conversation.created_at)


def upsert_opportunity(runtime: Runtime, tenant: Tenant, job: ConversationJob, pending: Pending) -> None:
    if runtime.crm(tenant) is None:
        return
    lead_id = _lead_of(runtime, job.conversation_id)
    with _writing(runtime, tenant, lead_id):
        _push_opportunity(runtime, tenant, job.conversation_id, ensure_contact(runtime, tenant, lead_id))


def _push_opportunity(runtime: Runtime, tenant: Tenant, conversation_id: int, contact_id: str) -> None:
    crm = runtime.crm(tenant)
    opportunity, key = _opportunity(runtime, tenant, conversation_id)

    def write(existing: str | None) -> str:
        deal = crm.upsert_opportunity(contact_id=contact_id, opportunity=opportunity, existing_id=existing, key=key)
        if deal != existing and isinstance(crm, ActivityLog):
            if written := _written_before(runtime, tenant, conversation_id):
                crm.link_to_opportunity(opportunity_id=deal, activities=written)
        return deal

    _upsert(runtime, tenant, "opportunity", conversation_id, write)


def _opportunity(runtime: Runtime, tenant: Tenant, conversation_id: int) -> tuple[Opportunity, str]:
    with runtime.db.transaction() as session:
        return _opportunity_in(session, tenant, conversation_id)


def _opportunity_in(session, tenant: Tenant, conversation_id: int) -> tuple[Opportunity, str]:
    """The conversation's deal as the CRM gets it, and the key it is created under."""
    conversation = session.get(Conversation, conversation_id)
    answers = ", ".join(answer_lines(conversation.answers))
    about = headline(tenant.conversation_playbook(conversation.playbook), conversation.answers)
    opportunity = Opportunity(name=f"{about or 'Missed call'}: {_who(session, conversation)}",
                              stage=conversation.outcome or "qualified",
                              description=f"Qualified by textback for {tenant.name}. {answers}")
    return opportunity, _key(tenant, "opportunity", conversation_id, conversation.created_at)


def record_booking(runtime: Runtime, tenant: Tenant, job: BookingJob, pending: Pending) -> None:
    """The CRM side of a booking, coalesced into one job under one lock: the deal/matter, the meeting and
    the transcript as it stands, with the contact looked up once."""
    crm = runtime.crm(tenant)
    if crm is None:
        return
    booking_id = job.booking_id
    with runtime.db.transaction() as session:
        booking = session.get(Booking, booking_id)
        conversation = session.get(Conversation, booking.conversation_id)
        cancelled = booking.status == "cancelled"
        answers = ", ".join(answer_lines(conversation.answers))
        record = BookingRecord(
            title=("Cancelled: " if cancelled else "") + f"{tenant.name}: appointment with {_who(session, conversation)}",
            start=booking.start_at, end=booking.end_at, cancelled=cancelled,
            description=("Cancelled (by the caller, or by staff in the calendar). " if cancelled
                         else "Booked by textback. ") + answers,
        )
        lead_id, conversation_id = booking.lead_id, booking.conversation_id
        key = _key(tenant, "booking", booking_id, booking.created_at)
    with _writing(runtime, tenant, lead_id):
        contact_id = ensure_contact(runtime, tenant, lead_id)
        if not cancelled:
            _push_opportunity(runtime, tenant, conversation_id, contact_id)
        deal = _mapped(runtime, tenant, "opportunity", conversation_id)
        _upsert(runtime, tenant, "booking", booking_id,
                lambda existing: _tied(crm, deal, "booking", existing, crm.record_booking(
                    contact_id=contact_id, booking=record, existing_id=existing, key=key)))
        _push_transcript(runtime, tenant, conversation_id, contact_id)


def _tied(crm, deal: str | None, kind: ActivityKind, existing: str | None, record_id: str) -> str:
    """`record_id`, linked to the deal first when it is a record the map does not name yet."""
    if deal is not None and record_id != existing and isinstance(crm, ActivityLog):
        crm.link_to_opportunity(opportunity_id=deal, activities=[(kind, record_id)])
    return record_id


def _written_before(runtime: Runtime, tenant: Tenant, conversation_id: int) -> list[tuple[ActivityKind, str]]:
    with runtime.db.transaction() as session:
        return _written_before_in(session, tenant, conversation_id)


def _written_before_in(session, tenant: Tenant, conversation_id: int) -> list[tuple[ActivityKind, str]]:
    """The conversation's transcript, texts and meetings already in the CRM (by the external-id map)."""
    kind = tenant.connectors["crm"].type
    messages = list(session.scalars(select(Message.id).where(Message.conversation_id == conversation_id)))
    bookings = list(session.scalars(select(Booking.id).where(Booking.conversation_id == conversation_id)))
    found: list[tuple[ActivityKind, str]] = [
        ("transcript", record) for record in _mapped_ids(session, tenant.id, kind, "conversation_log",
                                                         [conversation_id]).values()]
    found += [("message", record) for record in _mapped_ids(session, tenant.id, kind, "message", messages).values()]
    found += [("booking", record) for record in _mapped_ids(session, tenant.id, kind, "booking", bookings).values()]
    return found


def _mapped(runtime: Runtime, tenant: Tenant, local_kind: str, local_id: int) -> str | None:
    with runtime.db.transaction() as session:
        return external_id(session, tenant_id=tenant.id, connector=tenant.connectors["crm"].type,
                           local_kind=local_kind, local_id=local_id)


def _mapped_ids(session, tenant_id: str, connector: str, local_kind: str, local_ids: list[int]) -> dict[int, str]:
    if not local_ids:
        return {}
    rows = session.execute(select(ExternalId.local_id, ExternalId.external_id).where(
        ExternalId.tenant_id == tenant_id, ExternalId.connector == connector, ExternalId.local_kind == local_kind,
        ExternalId.local_id.in_(local_ids)))
    return dict(rows.all())


def _texts(session, conversation_id: int) -> list[Message]:
    """The conversation's texts as the transcript shows them: a text suppressed before it went out is left out."""
    return [m for m in transcript(session, conversation_id=conversation_id) if m.status != "suppressed"]


def _line(message: Message) -> TranscriptLine:
    return TranscriptLine(at=message.sent_at or message.created_at, direction=Direction(message.direction),
                          body=message.body, by_staff=message.purpose == "staff")


def _lead_of(runtime: Runtime, conversation_id: int) -> int:
    with runtime.db.transaction() as session:
        return session.get(Conversation, conversation_id).lead_id


def _writing(runtime: Runtime, tenant: Tenant, lead_id: int):
    """Every CRM write about one caller runs alone (sync/locks.py), so a new caller becomes one contact."""
    return runtime.locks.hold(f"crm:{tenant.id}:lead:{lead_id}")


def _upsert(runtime: Runtime, tenant: Tenant, local_kind: str, local_id: int, write) -> None:
    kind = tenant.connectors["crm"].type
    with runtime.db.transaction() as session:
        known = external_id(session, tenant_id=tenant.id, connector=kind, local_kind=local_kind, local_id=local_id)
    new_id = write(known)
    stored = _remember(runtime, tenant, local_kind, local_id, new_id)
    if stored != new_id:
        # Another job for the same record (two transcript pushes, say) ran at the same time and stored its id
        # first: that record is the one the map names, so this job's data goes there.
        _remember(runtime, tenant, local_kind, local_id, write(stored))


def _remember(runtime: Runtime, tenant: Tenant, local_kind: str, local_id: int, new_id: str) -> str:
    """Map the local record to `new_id`; the id already mapped instead if another job inserted it meanwhile."""
    kind = tenant.connectors["crm"].type
    try:
        with runtime.db.transaction() as session:
            remember_external_id(session, tenant_id=tenant.id, connector=kind, local_kind=local_kind,
                                 local_id=local_id, external_id=new_id)
        return new_id
    except IntegrityError:
        with runtime.db.transaction() as session:
            return external_id(session, tenant_id=tenant.id, connector=kind, local_kind=local_kind,
                               local_id=local_id)


def _remember_all(runtime: Runtime, tenant: Tenant, local_kind: str, new_ids: dict[int, str]) -> dict[int, str]:
    """_remember for many records of one kind in one transaction; one at a time only if another job mapped
    one of them meanwhile, to learn which."""
    kind = tenant.connectors["crm"].type
    try:
        with runtime.db.transaction() as session:
            remember_external_ids(session, tenant_id=tenant.id, connector=kind, local_kind=local_kind,
                                  external_ids=new_ids)
        return dict(new_ids)
    except IntegrityError:
        return {local_id: _remember(runtime, tenant, local_kind, local_id, new_id)
                for local_id, new_id in new_ids.items()}


def _key(tenant: Tenant, kind: str, local_id: int, created_at: datetime) -> str:
    return f"textback:{tenant.id}:{kind}:{local_id}:{created_at:%Y%m%dT%H%M%S}"


def _summary(conversation: Conversation, call: Call | None) -> str:
    parts = [f"Outcome: {conversation.outcome or conversation.state}"]
    if conversation.handoff_summary:
        parts.append(f"Handoff: {conversation.handoff_summary}")
    if call is not None and call.recording_url:
        parts.append(f"Voicemail: {call.recording_url}")
    if call is not None and call.transcription:
        parts.append(f"Voicemail transcription: {call.transcription}")
    return "\n".join(parts)


def _phone(session, conversation: Conversation) -> str:
    return session.scalar(select(Lead.phone).where(Lead.id == conversation.lead_id))


def _who(session, conversation: Conversation) -> str:
    """The caller as staff read them: the name they gave, else their number."""
    lead = session.get(Lead, conversation.lead_id)
    return " ".join(p for p in (lead.first_name, lead.last_name) if p) or lead.phone

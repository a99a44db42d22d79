"""What each batchable kind pushes together (sync/crm_batch.py claims the rows and takes their locks).

    crm_sync_lead           callers not yet in the CRM: one upsert_contacts call (search, update, create)
    crm_log_conversation    conversations whose contact is in the CRM and whose transcript is not yet: their notes
                            in log_conversations calls, then all their texts in log_texts calls
    crm_upsert_opportunity  conversations whose contact is in the CRM and whose deal is not yet: their deals in
                            upsert_opportunities calls, then what was written before each deal tied to it

Each ends as the single path of sync/crm_push.py ends: the same records, properties and associations, and the same
external-id map. A transcript that grew while it was written, or a record another job mapped first, is finished
by the single path's own write. A row that does not fit (`callers` answers None for it) is left to the single path,
which ensures the contact first or updates the record it mapped.

Each reads what the whole batch needs in one transaction and maps the ids it made in one: a transaction or two per
row (as the single path's helpers take them) cost the worker threads more than the batch calls themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Exists, Select, exists, select

from connectors.base import ActivityLog, ContactTexts, KeyedNote, KeyedOpportunity
from core.config import Tenant
from core.jobs import ConversationJob, LeadJob
from core.models import ContactRecord
from core.outbox import Kind
from core.store.repo import remember_external_ids
from core.store.tables import Conversation, ExternalId, Lead, OutboxRow
from sync.crm_push import (
    _conversation_log_in,
    _key,
    _line,
    _mapped_ids,
    _opportunity_in,
    _push_transcript,
    _remember_all,
    _texts,
    _written_before_in,
)
from sync.runtime import Runtime


@dataclass(frozen=True)
class Batchable:
    capability: str  # the connector method the batch calls, which a CRM without batches does not have
    # (session, tenant, jobs): for each job the lead whose lock it takes, or None where it does not fit; a few
    # queries for the whole list (the job's own row and its locked companions, looked at again under the locks)
    callers: Callable[..., list[int | None]]
    push: Callable[[Runtime, Tenant, list], None]  # all of them together, under their locks
    # (tenant): the same test in SQL, for looking over a backlog: SELECT outbox id, payload, caller of the rows
    # that fit, for the caller to narrow to the waiting ones (the database does the looking, not the worker)
    fitting: Callable[[Tenant], Select]


def _is_mapped(tenant: Tenant, local_kind: str, local_id) -> Exists:
    return exists().where(ExternalId.tenant_id == tenant.id, ExternalId.connector == tenant.connectors["crm"].type,
                          ExternalId.local_kind == local_kind, ExternalId.local_id == local_id)


def _new_callers_sql(tenant: Tenant) -> Select:
    return (select(OutboxRow.id, OutboxRow.payload, Lead.id)
            .join(Lead, Lead.id == OutboxRow.payload["lead_id"].as_integer())
            .where(~_is_mapped(tenant, "lead", Lead.id)))


def _unwritten_sql(local_kind: str) -> Callable[[Tenant], Select]:
    def fitting(tenant: Tenant) -> Select:
        return (select(OutboxRow.id, OutboxRow.payload, Conversation.lead_id)
                .join(Conversation, Conversation.id == OutboxRow.payload["conversation_id"].as_integer())
                .where(_is_mapped(tenant, "lead", Conversation.lead_id),
                       ~_is_mapped(tenant, local_kind, Conversation.id)))
    return fitting


def _mapped_in(session, tenant: Tenant, local_kind: str, local_ids) -> dict[int, str]:
    return _mapped_ids(session, tenant.id, tenant.connectors["crm"].type, local_kind, sorted(set(local_ids)))


def _new_callers(session, tenant: Tenant, jobs: list[LeadJob]) -> list[int | None]:
    """Callers not yet in the CRM (a mapped one is a refresh, which the single path does)."""
    wanted = {job.lead_id for job in jobs}
    present = set(session.scalars(select(Lead.id).where(Lead.id.in_(sorted(wanted))))) if wanted else set()
    mapped = _mapped_in(session, tenant, "lead", present)
    return [job.lead_id if job.lead_id in present and job.lead_id not in mapped else None for job in jobs]


def _unwritten(local_kind: str) -> Callable[..., list[int | None]]:
    def callers(session, tenant: Tenant, jobs: list[ConversationJob]) -> list[int | None]:
        """Conversations whose contact is in the CRM and whose `local_kind` record is not yet."""
        wanted = sorted({job.conversation_id for job in jobs})
        lead_of = dict(session.execute(select(Conversation.id, Conversation.lead_id)
                                       .where(Conversation.id.in_(wanted))).all()) if wanted else {}
        contacts = _mapped_in(session, tenant, "lead", lead_of.values())
        written = _mapped_in(session, tenant, local_kind, lead_of)
        return [lead_of[job.conversation_id] if job.conversation_id in lead_of and lead_of[job.conversation_id]
                in contacts and job.conversation_id not in written else None for job in jobs]
    return callers


def push_contacts(runtime: Runtime, tenant: Tenant, jobs: list[LeadJob]) -> None:
    with runtime.db.transaction() as session:
        leads = {lead.id: lead for lead in session.scalars(select(Lead).where(Lead.id.in_([j.lead_id for j in jobs])))}
        contacts = [(lead.id, ContactRecord(phone=lead.phone, first_name=lead.first_name, last_name=lead.last_name))
                    for lead in (leads[job.lead_id] for job in jobs)]
    ids = runtime.crm(tenant).upsert_contacts([contact for _, contact in contacts])
    _remember_all(runtime, tenant, "lead", {lead_id: contact_id for (lead_id, _), contact_id in zip(contacts, ids)})


def push_transcripts(runtime: Runtime, tenant: Tenant, jobs: list[ConversationJob]) -> None:
    crm, kind = runtime.crm(tenant), tenant.connectors["crm"].type
    wanted = [job.conversation_id for job in jobs]
    with runtime.db.transaction() as session:
        logs = {conversation_id: _conversation_log_in(session, tenant, conversation_id) for conversation_id in wanted}
        deals = _mapped_ids(session, tenant.id, kind, "opportunity", wanted)
        contacts = _mapped_in(session, tenant, "lead", [lead_id for _, lead_id, _ in logs.values()])
    notes = {conversation_id: KeyedNote(key=key, contact_id=contacts.get(lead_id), log=log,
                                        opportunity_id=deals.get(conversation_id))
             for conversation_id, (log, lead_id, key) in logs.items()}
    # The texts first: a batch cut short after them (its budget spent) leaves the notes unmapped, so the rows still
    # fit a batch on their retry, which finds the texts mapped; the other way round, each would take the single path.
    if isinstance(crm, ActivityLog):
        _push_texts(runtime, tenant, crm, notes)
    made = crm.log_conversations(list(notes.values()))
    stored = _remember_all(runtime, tenant, "conversation_log",
                           {conversation_id: made[note.key] for conversation_id, note in notes.items()})
    with runtime.db.transaction() as session:
        unfinished = [conversation_id for conversation_id, note in notes.items()  # mapped by another job first,
                      if stored[conversation_id] != made[note.key]                 # or grown meanwhile
                      or _conversation_log_in(session, tenant, conversation_id)[0] != note.log]
    for conversation_id in unfinished:
        _push_transcript(runtime, tenant, conversation_id, notes[conversation_id].contact_id)


def _push_texts(runtime: Runtime, tenant: Tenant, crm, notes: dict[int, KeyedNote]) -> None:
    """Every text of the conversations not yet in the CRM, as _push_messages writes one conversation's."""
    kind = tenant.connectors["crm"].type
    texts, owners = [], {}
    with runtime.db.transaction() as session:
        for conversation_id, note in notes.items():
            messages = _texts(session, conversation_id)
            mapped = _mapped_ids(session, tenant.id, kind, "message", [m.id for m in messages])
            lines = []
            for message in (m for m in messages if m.id not in mapped):
                key = _key(tenant, "message", message.id, message.created_at)
                owners[key] = message.id
                lines.append(_line(message).model_copy(update={"key": key}))
            if lines:
                texts.append(ContactTexts(contact_id=note.contact_id, lines=lines, opportunity_id=note.opportunity_id))
    if not texts:
        return
    made = crm.log_texts(texts)
    with runtime.db.transaction() as session:
        remember_external_ids(session, tenant_id=tenant.id, connector=kind, local_kind="message",
                              external_ids={message_id: made[key] for key, message_id in owners.items() if key in made})


def push_deals(runtime: Runtime, tenant: Tenant, jobs: list[ConversationJob]) -> None:
    crm = runtime.crm(tenant)
    wanted = [job.conversation_id for job in jobs]
    with runtime.db.transaction() as session:
        opportunities = {conversation_id: _opportunity_in(session, tenant, conversation_id)
                         for conversation_id in wanted}
        lead_of = dict(session.execute(select(Conversation.id, Conversation.lead_id)
                                       .where(Conversation.id.in_(wanted))).all())
        contacts = _mapped_in(session, tenant, "lead", lead_of.values())
    deals = {conversation_id: KeyedOpportunity(key=key, contact_id=contacts.get(lead_of[conversation_id]),
                                               opportunity=opportunity)
             for conversation_id, (opportunity, key) in opportunities.items()}
    made = crm.upsert_opportunities(list(deals.values()))
    if isinstance(crm, ActivityLog):
        # Tied before the deals are mapped, so a push that fails in between ties them again on its retry.
        with runtime.db.transaction() as session:
            links = [(kind, record_id, made[deal.key]) for conversation_id, deal in deals.items()
                     for kind, record_id in _written_before_in(session, tenant, conversation_id)]
        if links:
            crm.link_to_opportunities(links)
    stored = _remember_all(runtime, tenant, "opportunity",
                           {conversation_id: made[deal.key] for conversation_id, deal in deals.items()})
    for conversation_id, deal in deals.items():
        if stored[conversation_id] != made[deal.key]:  # another job mapped its deal first: this job's data goes there
            crm.upsert_opportunity(contact_id=deal.contact_id, opportunity=deal.opportunity,
                                   existing_id=stored[conversation_id], key=deal.key)


BATCHABLE: dict[Kind, Batchable] = {
    Kind.crm_sync_lead: Batchable("upsert_contacts", _new_callers, push_contacts, _new_callers_sql),
    Kind.crm_log_conversation: Batchable("log_conversations", _unwritten("conversation_log"), push_transcripts,
                                         _unwritten_sql("conversation_log")),
    Kind.crm_upsert_opportunity: Batchable("upsert_opportunities", _unwritten("opportunity"), push_deals,
                                           _unwritten_sql("opportunity")),
}

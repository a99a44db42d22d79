"""What each batchable kind pushes together (sync/crm_batch.py claims the rows and takes their locks).

    crm_sync_lead           callers not yet in the CRM: one upsert_contacts call (search, update, create)
    crm_log_conversation    conversations whose contact is in the CRM and whose transcript is not yet: their notes
                            in log_conversations calls, then all their texts in log_texts calls
    crm_upsert_opportunity  conversations whose contact is in the CRM and whose deal is not yet: their deals in
                            upsert_opportunities calls, then what was written before each deal tied to it

Each ends as the single path of sync/crm_push.py ends: the same records, properties and associations, and the same
external-id map. A transcript that grew while it was written, or a record another job mapped first, is finished
by the single path's own write. A row that does not fit (`caller` answers None) is left to the single path, which
ensures the contact first or updates the record it mapped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from connectors.base import ActivityLog, ContactTexts, KeyedNote, KeyedOpportunity
from core.config import Tenant
from core.jobs import ConversationJob, LeadJob
from core.models import ContactRecord
from core.outbox import Kind
from core.store.repo import external_id, remember_external_id
from core.store.tables import Conversation, Lead
from sync.crm_push import (
    _conversation_log,
    _key,
    _lead_of,
    _line,
    _mapped,
    _mapped_ids,
    _opportunity,
    _push_transcript,
    _remember,
    _texts,
    _written_before,
)
from sync.runtime import Runtime


@dataclass(frozen=True)
class Batchable:
    capability: str  # the connector method the batch calls, which a CRM without batches does not have
    caller: Callable[..., int | None]  # (session, tenant, job): the lead whose lock it takes, None if it does not fit
    push: Callable[[Runtime, Tenant, list], None]  # all of them together, under their locks


def _mapped_in(session, tenant: Tenant, local_kind: str, local_id: int) -> str | None:
    return external_id(session, tenant_id=tenant.id, connector=tenant.connectors["crm"].type, local_kind=local_kind,
                       local_id=local_id)


def _new_caller(session, tenant: Tenant, job: LeadJob) -> int | None:
    """A caller not yet in the CRM (a mapped one is a refresh, which the single path does)."""
    lead = session.get(Lead, job.lead_id)
    return lead.id if lead is not None and _mapped_in(session, tenant, "lead", lead.id) is None else None


def _unwritten(local_kind: str) -> Callable[..., int | None]:
    def caller(session, tenant: Tenant, job: ConversationJob) -> int | None:
        """A conversation whose contact is in the CRM and whose `local_kind` record is not yet."""
        conversation = session.get(Conversation, job.conversation_id)
        if conversation is None or _mapped_in(session, tenant, "lead", conversation.lead_id) is None:
            return None
        return None if _mapped_in(session, tenant, local_kind, conversation.id) else conversation.lead_id
    return caller


def push_contacts(runtime: Runtime, tenant: Tenant, jobs: list[LeadJob]) -> None:
    with runtime.db.transaction() as session:
        leads = [session.get(Lead, job.lead_id) for job in jobs]
        contacts = [(lead.id, ContactRecord(phone=lead.phone, first_name=lead.first_name, last_name=lead.last_name))
                    for lead in leads]
    ids = runtime.crm(tenant).upsert_contacts([contact for _, contact in contacts])
    for (lead_id, _), contact_id in zip(contacts, ids):
        _remember(runtime, tenant, "lead", lead_id, contact_id)


def push_transcripts(runtime: Runtime, tenant: Tenant, jobs: list[ConversationJob]) -> None:
    crm = runtime.crm(tenant)
    notes: dict[int, KeyedNote] = {}
    for job in jobs:
        log, lead_id, key = _conversation_log(runtime, tenant, job.conversation_id)
        deal = _mapped(runtime, tenant, "opportunity", job.conversation_id)
        notes[job.conversation_id] = KeyedNote(key=key, contact_id=_mapped(runtime, tenant, "lead", lead_id), log=log,
                                               opportunity_id=deal)
    # The texts first: a batch cut short after them (its budget spent) leaves the notes unmapped, so the rows still
    # fit a batch on their retry, which finds the texts mapped; the other way round, each would take the single path.
    if isinstance(crm, ActivityLog):
        _push_texts(runtime, tenant, crm, notes)
    made = crm.log_conversations(list(notes.values()))
    unfinished = []
    for conversation_id, note in notes.items():
        stored = _remember(runtime, tenant, "conversation_log", conversation_id, made[note.key])
        if stored != made[note.key] or _conversation_log(runtime, tenant, conversation_id)[0] != note.log:
            unfinished.append(conversation_id)  # mapped by another job first, or grown meanwhile
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
        for key, message_id in owners.items():
            if key in made:
                remember_external_id(session, tenant_id=tenant.id, connector=kind, local_kind="message",
                                     local_id=message_id, external_id=made[key])


def push_deals(runtime: Runtime, tenant: Tenant, jobs: list[ConversationJob]) -> None:
    crm = runtime.crm(tenant)
    deals: dict[int, KeyedOpportunity] = {}
    for job in jobs:
        opportunity, key = _opportunity(runtime, tenant, job.conversation_id)
        lead_id = _lead_of(runtime, job.conversation_id)
        deals[job.conversation_id] = KeyedOpportunity(key=key, contact_id=_mapped(runtime, tenant, "lead", lead_id),
                                                      opportunity=opportunity)
    made = crm.upsert_opportunities(list(deals.values()))
    if isinstance(crm, ActivityLog):
        # Tied before the deals are mapped, so a push that fails in between ties them again on its retry.
        links = [(kind, record_id, made[deal.key]) for conversation_id, deal in deals.items()
                 for kind, record_id in _written_before(runtime, tenant, conversation_id)]
        if links:
            crm.link_to_opportunities(links)
    for conversation_id, deal in deals.items():
        stored = _remember(runtime, tenant, "opportunity", conversation_id, made[deal.key])
        if stored != made[deal.key]:  # another job mapped its deal first: this job's data goes there
            crm.upsert_opportunity(contact_id=deal.contact_id, opportunity=deal.opportunity, existing_id=stored,
                                   key=deal.key)


BATCHABLE: dict[Kind, Batchable] = {
    Kind.crm_sync_lead: Batchable("upsert_contacts", _new_caller, push_contacts),
    Kind.crm_log_conversation: Batchable("log_conversations", _unwritten("conversation_log"), push_transcripts),
    Kind.crm_upsert_opportunity: Batchable("upsert_opportunities", _unwritten("opportunity"), push_deals),
}

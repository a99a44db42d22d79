"""HubSpot writes for many conversations at once (a backlog): transcripts, deals and texts in batch calls.

    log_conversations      one note per conversation (hs_note_body, hs_timestamp), batch create associated with its
                           contact (202) and, when the deal is known, the deal (214)
    upsert_opportunities   one deal per conversation (dealname, pipeline, dealstage, description), batch create
                           associated with its contact (3)
    log_texts              one communication per text (connectors/hubspot_activities.py), batch create associated
                           with its contact (81) and deal (85)
    link_to_opportunities  records written before their deals, associated with them (v4 batch default associations)

Each call carries at most BATCH_LIMIT inputs and ends as the single writes of connectors/hubspot.py do: the same
properties, the same associations, idempotent by `textback_key`. Before creating, the keys that exist are read back:
with a unique key by a batch read on `idProperty=textback_key`; with a plain one among the contacts' records of the
type, listed for all the contacts in one v4 batch association read and then read in batches. A record found that way
(made by a call whose answer was lost) is brought up to date and tied to its deal as the single path does, so a
retried batch creates nothing twice. A unique key taken meanwhile refuses the whole create: what exists is kept and
the rest created.

A mixin of HubSpotCRM: it uses the connector's SDK clients, its metered `_calling` and its key property.
"""

from __future__ import annotations

import html
from collections import defaultdict
from datetime import datetime, timezone

from hubspot.crm.associations.v4 import (
    BatchInputPublicDefaultAssociationMultiPost,
    BatchInputPublicFetchAssociationsBatchRequest,
    PublicDefaultAssociationMultiPost,
    PublicFetchAssociationsBatchRequest,
)
from hubspot.crm.associations.v4 import PublicObjectId as LinkedId
from hubspot.crm.objects import (
    AssociationSpec,
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchReadInputSimplePublicObjectId,
    PublicAssociationsForObject,
    PublicObjectId,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputForCreate,
    SimplePublicObjectId,
)

from connectors.base import ActivityKind, ContactTexts, KeyedNote, KeyedOpportunity, Rejected
from connectors.hubspot_activities import (
    BATCH_LIMIT,
    COMMUNICATION_TO_CONTACT,
    COMMUNICATION_TO_DEAL,
    KEY_PROPERTY,
    OBJECT_TYPES,
    _communication,
    hubspot_time,
)
from core.models import ConversationLog

# HUBSPOT_DEFINED default association type ids, from the note or deal.
NOTE_TO_CONTACT = 202
NOTE_TO_DEAL = 214
DEAL_TO_CONTACT = 3
NOTE_BODY_LIMIT = 65_536
_TRUNCATED = "<br>[earlier part of the transcript kept; the rest exceeded HubSpot's note size]"

# (key, properties to create it with, properties to bring a found one up to date, [(record id, association type)])
Keyed = tuple[str, dict[str, str], dict[str, str], list[tuple[str, int]]]


class HubSpotBatches:
    """connectors.base.BatchLog for HubSpotCRM."""

    def log_conversations(self, notes: list[KeyedNote]) -> dict[str, str]:
        records = []
        for note in notes:
            body = {"hs_note_body": note_html(note.log.as_text())}
            to = [(note.contact_id, NOTE_TO_CONTACT)] + ([(note.opportunity_id, NOTE_TO_DEAL)] if note.opportunity_id
                                                         else [])
            records.append((note.key, {**body, "hs_timestamp": hubspot_time(_started(note.log))}, body, to))
        return self._write_keyed("notes", {note.key: note.contact_id for note in notes}, records,
                                 deals={note.key: note.opportunity_id for note in notes})

    def upsert_opportunities(self, opportunities: list[KeyedOpportunity]) -> dict[str, str]:
        records = []
        for each in opportunities:
            described = {"dealname": each.opportunity.name, "description": each.opportunity.description}
            created = {**described, "pipeline": self._config.deal_pipeline, "dealstage": self._config.deal_stage}
            records.append((each.key, created, described, [(each.contact_id, DEAL_TO_CONTACT)]))
        return self._write_keyed("deals", {each.key: each.contact_id for each in opportunities}, records, deals={})

    def log_texts(self, texts: list[ContactTexts]) -> dict[str, str]:
        keyed = [(line, each) for each in texts for line in each.lines if line.key]
        # A text found is only tied to its deal, as log_messages does: its body is what it was when sent.
        return self._write_keyed("communications", {line.key: each.contact_id for line, each in keyed}, [
            (line.key, _communication(line), {}, [(each.contact_id, COMMUNICATION_TO_CONTACT)] + (
                [(each.opportunity_id, COMMUNICATION_TO_DEAL)] if each.opportunity_id else []))
            for line, each in keyed], deals={line.key: each.opportunity_id for line, each in keyed})

    def link_to_opportunities(self, links: list[tuple[ActivityKind, str, str]]) -> None:
        by_deal: dict[tuple[str, str], list[str]] = defaultdict(list)
        for kind, record_id, opportunity_id in links:
            by_deal[(OBJECT_TYPES[kind], opportunity_id)].append(record_id)
        by_type: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for (object_type, opportunity_id), ids in by_deal.items():
            by_type[object_type] += [(record_id, opportunity_id) for record_id in ids]
        for object_type, pairs in sorted(by_type.items()):
            self._associate_pairs(object_type, pairs)

    def _write_keyed(self, object_type: str, contacts: dict[str, str], records: list[Keyed], *,
                     deals: dict[str, str | None]) -> dict[str, str]:
        """Each record created under its key, or found under it and brought up to date and tied to its deal."""
        if not records:
            return {}
        found = self._existing_keys(object_type, contacts)
        changes = {key: changed for key, _, changed, _ in records if key in found and changed}
        if changes:
            found |= self._update_many(object_type, {found[key]: (key, changed) for key, changed in changes.items()})
        if linked := [(found[key], deal) for key, deal in deals.items() if key in found and deal]:
            self._associate_pairs(object_type, linked)
        new = [record for record in records if record[0] not in found]
        for start in range(0, len(new), BATCH_LIMIT):
            found |= self._create_keyed(object_type, contacts, new[start:start + BATCH_LIMIT])
        return found

    def _create_keyed(self, object_type: str, contacts: dict[str, str], records: list[Keyed]) -> dict[str, str]:
        request = BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
            SimplePublicObjectBatchInputForCreate(properties={**created, KEY_PROPERTY: key}, associations=[
                PublicAssociationsForObject(to=PublicObjectId(id=record_id), types=[AssociationSpec(
                    association_category="HUBSPOT_DEFINED", association_type_id=type_id)])
                for record_id, type_id in to]) for key, created, _, to in records])
        keys = {record[0] for record in records}
        try:
            with self._calling(f"create {len(records)} {object_type}"):
                made = self._batch.create(object_type, request, _request_timeout=self._timeout).results
        except Rejected as exc:
            unique = exc.status in (400, 409) and self._key_is_unique(object_type)
            found = self._existing_keys(object_type, {key: contacts[key] for key in keys}) if unique else {}
            if not found:
                raise
            rest = [record for record in records if record[0] not in found]
            return found | (self._create_keyed(object_type, contacts, rest) if rest else {})
        by_key = {(each.properties or {}).get(KEY_PROPERTY): each.id for each in made}
        if keys <= by_key.keys():
            return {key: by_key[key] for key in keys}
        # A create's answer need not echo every property: read the keys back.
        request = BatchReadInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=each.id) for each in made],
                                                     properties=[KEY_PROPERTY], properties_with_history=[])
        with self._calling(f"read {len(made)} new {object_type}"):
            made = self._batch.read(object_type, request, _request_timeout=self._timeout).results
        return {each.properties.get(KEY_PROPERTY): each.id for each in made}

    def _existing_keys(self, object_type: str, contacts: dict[str, str]) -> dict[str, str]:
        """The records already created under the keys (key -> id); `contacts` names each key's contact."""
        keys = sorted(contacts)
        if not self._key_is_unique(object_type):
            return self._oldest_with_keys(object_type, self._linked_to_contacts(object_type, set(contacts.values())),
                                          set(keys))
        found: dict[str, str] = {}
        for start in range(0, len(keys), BATCH_LIMIT):
            request = BatchReadInputSimplePublicObjectId(
                inputs=[SimplePublicObjectId(id=key) for key in keys[start:start + BATCH_LIMIT]],
                id_property=KEY_PROPERTY, properties=[KEY_PROPERTY], properties_with_history=[])
            with self._calling(f"read {object_type} by key"):
                page = self._batch.read(object_type, request, _request_timeout=self._timeout)
            found |= {each.properties.get(KEY_PROPERTY): each.id for each in page.results}
        return found

    def _linked_to_contacts(self, object_type: str, contact_ids: set[str]) -> list[str]:
        """The ids of the contacts' records of the type. A contact with none is answered as an error of the 207
        (or not at all): either way it adds nothing. One with more than a page is listed on its own."""
        linked: set[str] = set()
        ordered = sorted(contact_ids)
        for start in range(0, len(ordered), BATCH_LIMIT):
            chunk = ordered[start:start + BATCH_LIMIT]
            request = BatchInputPublicFetchAssociationsBatchRequest(inputs=[
                PublicFetchAssociationsBatchRequest(id=contact_id) for contact_id in chunk])
            with self._calling(f"list {len(chunk)} contacts' {object_type}"):
                page = self._link_batch.get_page("contacts", object_type, request, _request_timeout=self._timeout)
            for each in page.results or []:
                if each.paging and each.paging.next:
                    linked.update(self._linked(object_type, each._from.id))
                else:
                    linked.update(str(to.to_object_id) for to in each.to or [])
        return sorted(linked, key=int)

    def _update_many(self, object_type: str, changes: dict[str, tuple[str, dict[str, str]]]) -> dict[str, str]:
        """Records found under their keys, brought up to date: key -> the id HubSpot answers with."""
        found: dict[str, str] = {}
        ordered = list(changes.items())
        for start in range(0, len(ordered), BATCH_LIMIT):
            chunk = ordered[start:start + BATCH_LIMIT]
            request = BatchInputSimplePublicObjectBatchInput(inputs=[
                SimplePublicObjectBatchInput(id=record_id, properties=changed) for record_id, (_, changed) in chunk])
            with self._calling(f"update {len(chunk)} {object_type}"):
                updated = self._batch.update(object_type, request, _request_timeout=self._timeout).results
            answered = {each.id for each in updated}
            found |= {key: record_id for record_id, (key, _) in chunk if record_id in answered}
        return found

    def _associate_pairs(self, object_type: str, pairs: list[tuple[str, str]]) -> None:
        """The default association of each (record, deal) pair, in batches; a record gone is left out."""
        for start in range(0, len(pairs), BATCH_LIMIT):
            chunk = pairs[start:start + BATCH_LIMIT]
            request = BatchInputPublicDefaultAssociationMultiPost(inputs=[
                PublicDefaultAssociationMultiPost(_from=LinkedId(id=record_id), to=LinkedId(id=deal_id))
                for record_id, deal_id in chunk])
            with self._calling(f"associate {len(chunk)} {object_type} with their deals"):
                self._link_batch.create_default(object_type, "deals", request, _request_timeout=self._timeout)


def note_html(text: str) -> str:
    """The transcript as note HTML (HubSpot renders note bodies as rich text), within its size limit."""
    body = "<br>".join(html.escape(line) for line in text.splitlines())
    if len(body) <= NOTE_BODY_LIMIT:
        return body
    kept = body[:NOTE_BODY_LIMIT - len(_TRUNCATED)]
    return kept[:kept.rfind("<br>")] + _TRUNCATED


def _started(log: ConversationLog) -> datetime:
    """When the note is timed: the first text, as log_conversation times it."""
    return log.lines[0].at if log.lines else datetime.now(timezone.utc)

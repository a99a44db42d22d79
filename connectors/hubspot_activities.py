"""HubSpot activities beyond the transcript note: each text as a Communication, and what belongs to the deal.

    log_messages          one communication per text, as HubSpot shows logged SMS on the record's timeline:
                          hs_communication_channel_type SMS, hs_communication_logged_from CRM (required),
                          hs_communication_body the text after who wrote it ("Caller: ...", "textback
                          (automated): ...", "Staff via textback: ..."), hs_timestamp when it was sent or
                          received; associated with the contact (81) and, once it exists, the deal (85).
                          Batch create, at most BATCH_LIMIT inputs per call.
    link_to_opportunity   the note, communications and meetings written before the deal existed, associated
                          with it afterwards (v4 batch default associations, the deal side 213/86/211).

Each communication carries its message's key in `textback_key` (a unique-value property where the account allows
one for communications, a plain one otherwise; see connectors/hubspot.py). Before creating, the connector reads
back which of the keys exist, so a retried job whose answer was lost creates none twice: with a unique key by a
batch read on `idProperty=textback_key`, with a plain one among the contact's communications.

A mixin of HubSpotCRM: it uses the connector's SDK clients, its metered `_calling` and its key property.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

from hubspot.crm.associations.v4 import BatchInputPublicDefaultAssociationMultiPost, PublicDefaultAssociationMultiPost
from hubspot.crm.associations.v4 import PublicObjectId as LinkedId
from hubspot.crm.objects import (
    AssociationSpec,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchReadInputSimplePublicObjectId,
    PublicAssociationsForObject,
    PublicObjectId,
    SimplePublicObjectBatchInputForCreate,
    SimplePublicObjectId,
)

from connectors.base import ActivityKind, Rejected
from core.models import Direction, TranscriptLine

KEY_PROPERTY = "textback_key"
BATCH_LIMIT = 100  # inputs per batch create/read/update/associate call
# HUBSPOT_DEFINED default association type ids, from the communication.
COMMUNICATION_TO_CONTACT = 81
COMMUNICATION_TO_DEAL = 85
OBJECT_TYPES: dict[ActivityKind, str] = {"transcript": "notes", "message": "communications", "booking": "meetings"}


class HubSpotActivities:
    """log_messages and link_to_opportunity (connectors.base.ActivityLog) for HubSpotCRM."""

    def log_messages(self, *, contact_id: str, lines: list[TranscriptLine],
                     opportunity_id: str | None = None) -> dict[str, str]:
        keyed = {line.key: line for line in lines if line.key}
        if not keyed:
            return {}
        found = self._communications_by_key(list(keyed), contact_id)
        if opportunity_id and found:
            # Made by an earlier call whose answer was lost, perhaps before the deal existed.
            self._associate("communications", list(found.values()), opportunity_id)
        new = [line for key, line in keyed.items() if key not in found]
        for start in range(0, len(new), BATCH_LIMIT):
            found |= self._create_communications(new[start:start + BATCH_LIMIT], contact_id, opportunity_id)
        return found

    def link_to_opportunity(self, *, opportunity_id: str, activities: list[tuple[ActivityKind, str]]) -> None:
        by_type: dict[str, list[str]] = defaultdict(list)
        for kind, record_id in activities:
            by_type[OBJECT_TYPES[kind]].append(record_id)
        for object_type, ids in sorted(by_type.items()):
            self._associate(object_type, ids, opportunity_id)

    def _create_communications(self, lines: list[TranscriptLine], contact_id: str,
                               opportunity_id: str | None) -> dict[str, str]:
        to = [(contact_id, COMMUNICATION_TO_CONTACT)] + ([(opportunity_id, COMMUNICATION_TO_DEAL)]
                                                         if opportunity_id else [])
        associations = [PublicAssociationsForObject(to=PublicObjectId(id=record_id), types=[AssociationSpec(
            association_category="HUBSPOT_DEFINED", association_type_id=type_id)]) for record_id, type_id in to]
        request = BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
            SimplePublicObjectBatchInputForCreate(properties=_communication(line), associations=associations)
            for line in lines])
        keys = {line.key for line in lines}
        try:
            with self._calling(f"create {len(lines)} communications"):
                made = self._batch.create("communications", request, _request_timeout=self._timeout).results
        except Rejected as exc:
            # A unique key taken meanwhile refuses the whole batch: keep what exists, create the rest.
            unique = exc.status in (400, 409) and self._key_is_unique("communications")
            found = self._communications_by_key(sorted(keys), contact_id) if unique else {}
            if not found:
                raise
            rest = [line for line in lines if line.key not in found]
            return found | (self._create_communications(rest, contact_id, opportunity_id) if rest else {})
        by_key = {(each.properties or {}).get(KEY_PROPERTY): each.id for each in made}
        if keys <= by_key.keys():
            return {key: by_key[key] for key in keys}
        # A create's answer need not echo every property: read the keys back.
        request = BatchReadInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=each.id) for each in made],
                                                     properties=[KEY_PROPERTY], properties_with_history=[])
        with self._calling(f"read {len(made)} new communications"):
            made = self._batch.read("communications", request, _request_timeout=self._timeout).results
        return {each.properties.get(KEY_PROPERTY): each.id for each in made}

    def _communications_by_key(self, keys: list[str], contact_id: str) -> dict[str, str]:
        if not self._key_is_unique("communications"):
            return self._keyed_records("communications", contact_id, set(keys))
        found: dict[str, str] = {}
        for start in range(0, len(keys), BATCH_LIMIT):
            request = BatchReadInputSimplePublicObjectId(
                inputs=[SimplePublicObjectId(id=key) for key in keys[start:start + BATCH_LIMIT]],
                id_property=KEY_PROPERTY, properties=[KEY_PROPERTY], properties_with_history=[])
            with self._calling("read communications by key"):
                page = self._batch.read("communications", request, _request_timeout=self._timeout)
            found |= {each.properties.get(KEY_PROPERTY): each.id for each in page.results}
        return found

    def _associate(self, object_type: str, ids: list[str], opportunity_id: str) -> None:
        """The default association of each record with the deal (both directions); a record gone is left out."""
        for start in range(0, len(ids), BATCH_LIMIT):
            chunk = ids[start:start + BATCH_LIMIT]
            request = BatchInputPublicDefaultAssociationMultiPost(inputs=[
                PublicDefaultAssociationMultiPost(_from=LinkedId(id=record_id), to=LinkedId(id=opportunity_id))
                for record_id in chunk])
            with self._calling(f"associate {len(chunk)} {object_type} with deal {opportunity_id}"):
                self._link_batch.create_default(object_type, "deals", request, _request_timeout=self._timeout)


def hubspot_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _communication(line: TranscriptLine) -> dict[str, str]:
    who = ("Caller" if line.direction is Direction.inbound
           else "Staff via textback" if line.by_staff else "textback (automated)")
    return {"hs_communication_channel_type": "SMS", "hs_communication_logged_from": "CRM",
            "hs_communication_body": f"{who}: {line.body}", "hs_timestamp": hubspot_time(line.at),
            KEY_PROPERTY: line.key}

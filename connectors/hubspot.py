"""HubSpot CRM through the official hubspot-api-client (its generic CRM objects API).

What textback writes, per protocol method:

    upsert_contact      contact: phone (E.164), names, email; lifecyclestage=lead and
                        hs_lead_status=NEW when it creates one
    log_conversation    note (hs_note_body, hs_timestamp) associated to the contact
    log_messages        one communication (SMS) per text, associated to the contact and the deal
                        (connectors/hubspot_activities.py)
    upsert_opportunity  deal (dealname, pipeline, dealstage, description) associated to the contact
    record_booking      meeting (title, start, end, body, outcome SCHEDULED) associated to the contact
    link_to_opportunity the note, communications and meetings written before the deal, associated to it

Contacts are found by phone with CRM search: phone is not a unique-value property, so
batch upsert cannot key on it. The search also matches HubSpot's calculated digits-only
phone properties, which catch numbers staff typed in any format, and every candidate is
checked against the caller's number before it is used.

Updates write only what textback owns: the stage a deal or lead is in, and a meeting's
outcome, belong to the staff once the record exists. A record staff have deleted since
(PATCH answers 404) is created again rather than failing on every retry.

Creates are idempotent by key: notes, deals and meetings carry the caller's key in a custom
property `textback_key`, which the connector creates on first use in its own property group
(`textback`), as a unique-value property where the portal allows one (HubSpot documents them
for deals; an account that refuses one for an activity type gets a plain property). Before
creating, the connector looks for the key: a unique key by reading the record with
`idProperty=textback_key`, a plain one among the records associated with the contact (both are
direct reads, not search, whose index lags writes by seconds). A create that collides with a
unique key all the same (two writers at once) is refused (409 as for a contact's email; 400 has
been seen too, so both count) and the existing record is read back by its key and updated; with
a plain key both creates succeed, so a writer that finds an older record with its key afterwards
archives its own and updates that one.

The SDK's own urllib3 retries are switched off so that every failure reaches the error
tree of connectors/base.py exactly once, and the sync layer decides what to retry.

Every request is counted first on the connection's budgets (connectors/quota.py): the private
app's `plan` (starter 100, professional and enterprise 190 requests per rolling 10 s, or
`requests_per_10s`) and search's own 5 per second. A budget with no slot raises OverQuota before
the request goes out; a 429 all the same shrinks the budget its `policyName` names.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import ClassVar, Literal

import phonenumbers
from hubspot import HubSpot
from hubspot.crm.objects import (
    AssociationSpec,
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchReadInputSimplePublicObjectId,
    Filter,
    FilterGroup,
    PublicAssociationsForObject,
    PublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputForCreate,
    SimplePublicObjectId,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.properties import ApiException as PropertiesApiException
from hubspot.crm.properties import PropertyCreate, PropertyGroupCreate
from pydantic import Field
from urllib3.util.retry import Retry

from connectors.base import (
    ConnectorConfig,
    RateLimited,
    Rejected,
    Secret,
)
from connectors.hubspot_activities import BATCH_LIMIT, KEY_PROPERTY, HubSpotActivities
from connectors.hubspot_activities import hubspot_time as _hubspot_time
from connectors.hubspot_batches import DEAL_TO_CONTACT, NOTE_TO_CONTACT, HubSpotBatches, note_html as _note_html
from connectors.hubspot_errors import policy_name, vendor_errors
from connectors.hubspot_phones import as_e164, national_digits, same_number
from connectors.quota import Meter, OverQuota, Quota, Unmetered, connection_scope, counted
from core.models import BookingRecord, ContactRecord, ConversationLog, Opportunity

PRODUCTION_URL = "https://api.hubapi.com"
# HUBSPOT_DEFINED default association type ids, from the activity or deal to the contact.
MEETING_TO_CONTACT = 200
KEY_GROUP = "textback"
BATCH_READ_LIMIT = 100
SEARCH_PAGE = 200  # the most search returns per page
SEARCH_CAP = 10_000  # search returns no result past the 10,000th
_EXISTING_ID = re.compile(r"Existing ID: (\d+)")


class HubSpotConfig(ConnectorConfig):
    type: Literal["hubspot"]
    access_token: Secret = Field(description="private app access token, as env:NAME or file:PATH")
    base_url: str = PRODUCTION_URL
    deal_pipeline: str = "default"
    deal_stage: str = "appointmentscheduled"
    source_property: str | None = Field(
        default=None, description="a custom contact property that receives where the lead came from "
                                  "(HubSpot's own source properties are enumerations it sets itself)")
    plan: Literal["starter", "professional", "enterprise"] = Field(
        default="starter", description="the portal's subscription, which sets the private app's request budget: "
                                       "starter (and free) 100 requests per 10 s, professional and enterprise 190")
    requests_per_10s: int | None = Field(default=None, gt=0, le=1000, description="the budget when it is not the "
                                         "plan's (the API limit increase pack: 250)")
    timeout_seconds: float = Field(default=10, gt=0, le=60, description="how long one HubSpot call may take, "
                                                                        "connecting included (at most 5 s of it)")
    webhook_secret: Secret | None = Field(
        default=None, description="the app's client secret, which HubSpot signs webhook requests with "
                                  "(X-HubSpot-Signature-v3); without it POST /webhooks/hubspot refuses this portal")
    portal_id: int | None = Field(default=None, description="the HubSpot account (portal) id, to tell apart "
                                                            "tenants whose portals share one app")
    signature_versions: list[Literal["v1", "v2", "v3"]] = Field(
        default=["v3"], description="accepted webhook signatures; v1/v2 (no timestamp, so replayable) only "
                                    "when listed here")
    do_not_text_property: str = Field(
        default="textback_do_not_text", description="the contact property staff set to stop texts "
                                                    "(a checkbox; 'true' stops, cleared resumes)")


class HubSpotCRM(HubSpotBatches, HubSpotActivities):
    """The CRMConnector for one HubSpot portal, with the ActivityLog capability."""

    role: ClassVar[str] = "crm"
    config_model: ClassVar[type[ConnectorConfig]] = HubSpotConfig

    def __init__(self, config: HubSpotConfig, *, client: HubSpot | None = None, meter: Meter | None = None) -> None:
        self._config = config
        self._meter = meter or Unmetered()
        self.quotas = quotas_for(config)
        client = client or HubSpot(access_token=config.access_token.get_secret_value(),
                                   host=config.base_url.rstrip("/"), retry=Retry(total=0, redirect=False))
        # Every `client.crm...` attribute access builds a new ApiClient and connection pool: keep these.
        self._objects = client.crm.objects.basic_api
        self._search = client.crm.objects.search_api
        self._batch = client.crm.objects.batch_api
        self._properties = client.crm.properties.core_api
        self._groups = client.crm.properties.groups_api
        self._links = client.crm.associations.v4.basic_api
        self._link_batch = client.crm.associations.v4.batch_api
        # The SDK has no default timeout and would wait forever.
        self._timeout = (min(5.0, config.timeout_seconds), config.timeout_seconds)
        self._unique_key: dict[str, bool] = {}

    def upsert_contact(self, contact: ContactRecord, *, existing_id: str | None = None) -> str:
        details = _contact_details(contact)
        if existing_id and (updated := self._update("contacts", existing_id, details)):
            return updated
        found = self._contact_by_phone(contact.phone)
        if found and (updated := self._update("contacts", found, details)):
            return updated
        return self._create_contact(contact, details)

    def upsert_contacts(self, contacts: list[ContactRecord]) -> list[str]:
        """Many callers not yet in the map at once (a backlog, an import), in at most four requests for up to
        BATCH_LIMIT of them: one search for all their numbers, one batch update of those found, one batch create
        of the rest and one batch read of what it made. Returns their ids in order. Each contact is matched by phone as `upsert_contact` does."""
        if not 0 < len(contacts) <= BATCH_LIMIT:
            raise ValueError(f"upsert_contacts takes 1 to {BATCH_LIMIT} contacts, not {len(contacts)}")
        found = self._contacts_by_phones([contact.phone for contact in contacts])
        ids = [found.get(contact.phone) for contact in contacts]
        changes = [(ids[n], _contact_details(contact)) for n, contact in enumerate(contacts) if ids[n]]
        changes = [(contact_id, details) for contact_id, details in changes if details]
        if changes:
            request = BatchInputSimplePublicObjectBatchInput(inputs=[
                SimplePublicObjectBatchInput(id=contact_id, properties=details) for contact_id, details in changes])
            with self._calling(f"update {len(changes)} contacts"):
                self._batch.update("contacts", request, _request_timeout=self._timeout)
        new = [contact for n, contact in enumerate(contacts) if not ids[n]]
        if new:
            request = BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
                SimplePublicObjectBatchInputForCreate(properties=self._new_contact(contact), associations=[])
                for contact in new])
            with self._calling(f"create {len(new)} contacts"):
                made = self._batch.create("contacts", request, _request_timeout=self._timeout).results
            # A create's answer need not echo the phone or keep the inputs' order: read the numbers back.
            request = BatchReadInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=each.id) for each in made],
                                                         properties=["phone"], properties_with_history=[])
            with self._calling(f"read {len(made)} new contacts"):
                made = self._batch.read("contacts", request, _request_timeout=self._timeout).results
            by_phone = {each.properties.get("phone"): each.id for each in made}
            ids = [contact_id or by_phone[contact.phone] for contact_id, contact in zip(ids, contacts)]
        return ids

    def log_conversation(self, *, contact_id: str, log: ConversationLog, existing_id: str | None = None,
                         key: str | None = None) -> str:
        body = {"hs_note_body": _note_html(log.as_text())}
        if existing_id and (updated := self._update("notes", existing_id, body)):
            return updated
        started = log.lines[0].at if log.lines else datetime.now(timezone.utc)
        key = key or _derived_key("conversation", contact_id, log.title, started.isoformat())
        return self._create_once("notes", {**body, "hs_timestamp": _hubspot_time(started)}, body, key=key,
                                 contact_id=contact_id, association_type_id=NOTE_TO_CONTACT)

    def upsert_opportunity(self, *, contact_id: str, opportunity: Opportunity, existing_id: str | None = None,
                           key: str | None = None) -> str:
        described = {"dealname": opportunity.name, "description": opportunity.description}
        if existing_id and (updated := self._update("deals", existing_id, described)):
            return updated
        return self._create_once("deals", {**described, "pipeline": self._config.deal_pipeline,
                                           "dealstage": self._config.deal_stage}, described,
                                 key=key or _derived_key("opportunity", contact_id, opportunity.name),
                                 contact_id=contact_id, association_type_id=DEAL_TO_CONTACT)

    def record_booking(self, *, contact_id: str, booking: BookingRecord, existing_id: str | None = None,
                       key: str | None = None) -> str:
        meeting = {"hs_meeting_title": booking.title, "hs_meeting_body": booking.description,
                   "hs_meeting_start_time": _hubspot_time(booking.start),
                   "hs_meeting_end_time": _hubspot_time(booking.end), "hs_timestamp": _hubspot_time(booking.start)}
        if existing_id and (updated := self._update("meetings", existing_id, meeting)):
            return updated
        return self._create_once("meetings", {**meeting, "hs_meeting_outcome": "SCHEDULED"}, meeting,
                                 key=key or _derived_key("booking", contact_id, booking.start.isoformat()),
                                 contact_id=contact_id, association_type_id=MEETING_TO_CONTACT)

    def contacts_changed(self, *, cursor: dict | None) -> tuple[list[tuple[str, dict[str, str | None]]], dict, bool]:
        """One page of contacts modified since the cursor, oldest change first: (id, do-not-text and owner
        values), the cursor to store, and whether this was the last page.

        Search stops at 10,000 results; before reaching it the window moves to start at the last
        modification time seen, so a long backlog is read to the end (the contact at the boundary is read
        twice, which applying values, not differences, makes harmless).
        """
        cursor = cursor or {}
        since, after = cursor.get("since"), int(cursor.get("after") or 0)
        names = [self._config.do_not_text_property, "hubspot_owner_id", "lastmodifieddate"]
        filters = [Filter(property_name="lastmodifieddate", operator="GTE", value=since)] if since else []
        request = PublicObjectSearchRequest(
            filter_groups=[FilterGroup(filters=filters)] if filters else [], properties=names, limit=SEARCH_PAGE,
            sorts=[{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}], after=str(after) if after else None)
        with self._calling("search contacts modified since the last pull", search=True):
            page = self._search.do_search("contacts", request, _request_timeout=self._timeout)
        found = [(str(each.id), {"do_not_text": (each.properties or {}).get(self._config.do_not_text_property),
                                 "owner_id": (each.properties or {}).get("hubspot_owner_id")})
                 for each in page.results]
        last = next((each.properties.get("lastmodifieddate") for each in reversed(page.results)
                     if (each.properties or {}).get("lastmodifieddate")), since)
        following = page.paging.next.after if page.paging and page.paging.next else None
        if following is None:
            return found, {"since": last} if last else {}, True
        if int(following) + SEARCH_PAGE > SEARCH_CAP:
            if last == since:
                raise Rejected(f"contact pull: over {SEARCH_CAP} contacts share lastmodifieddate {last}; "
                               "search cannot page past them")
            return found, {"since": last}, False  # move the window rather than page into the cap
        return found, {"since": since, "after": following} if since else {"after": following}, False

    def set_do_not_text(self, *, contact_id: str, value: bool) -> None:
        """Write the caller's own opt-out (or opt-in) to the do-not-text property, creating it on first use."""
        name = self._config.do_not_text_property
        with self._calling(f"set up the {name} property"):
            try:
                self._properties.get_by_name("contacts", name, _request_timeout=self._timeout)
            except PropertiesApiException as exc:
                if exc.status != 404:
                    raise
                self._create_do_not_text_property(name)
        self._update("contacts", contact_id, {name: "true" if value else "false"})

    def _create_do_not_text_property(self, name: str) -> None:
        self._ensure_group("contacts")
        try:
            self._properties.create("contacts", PropertyCreate(
                name=name, label="Do not text", type="bool", field_type="booleancheckbox", group_name=KEY_GROUP,
                form_field=False, options=[{"label": "Yes", "value": "true", "displayOrder": 0, "hidden": False},
                                           {"label": "No", "value": "false", "displayOrder": 1, "hidden": False}],
                description="Ticked: textback sends this contact no texts. textback ticks it when the caller "
                            "replies STOP and clears it on START."), _request_timeout=self._timeout)
        except PropertiesApiException as exc:
            if exc.status != 409:  # another worker created it meanwhile
                raise

    def _new_contact(self, contact: ContactRecord) -> dict[str, str]:
        created = {"phone": contact.phone, **_contact_details(contact), "lifecyclestage": "lead",
                   "hs_lead_status": "NEW"}
        if self._config.source_property:
            created[self._config.source_property] = contact.source
        return created

    def _create_contact(self, contact: ContactRecord, details: dict[str, str]) -> str:
        try:
            return self._create("contacts", self._new_contact(contact))
        except Rejected as exc:
            match = _EXISTING_ID.search(str(exc)) if exc.status == 409 else None
            # The email belongs to a contact whose phone we could not match: add the caller's
            # number as its mobile rather than overwrite the phone staff entered.
            merged = match and self._update("contacts", match.group(1), {**details, "mobilephone": contact.phone})
            if not merged:
                raise
            return merged

    def check_access(self) -> str:
        """A read-only call that proves the token and its contacts scope (config check --online)."""
        self._contact_by_phone("+15550100000")
        return "token accepted (searched contacts)"

    def _contact_by_phone(self, phone: str) -> str | None:
        national = national_digits(phone)
        request = PublicObjectSearchRequest(
            filter_groups=[FilterGroup(filters=[Filter(property_name=name, operator="EQ", value=value)])
                           for name, value in (("phone", phone), ("mobilephone", phone),
                                               ("hs_searchable_calculated_phone_number", national),
                                               ("hs_searchable_calculated_mobile_number", national))],
            sorts=[{"propertyName": "createdate", "direction": "ASCENDING"}],
            properties=["phone", "mobilephone"], limit=20)
        with self._calling("search contacts by phone", search=True):
            page = self._search.do_search("contacts", request, _request_timeout=self._timeout)
        for candidate in page.results:
            if any(same_number(candidate.properties.get(name), phone) for name in ("phone", "mobilephone")):
                return candidate.id
        return None

    def _contacts_by_phones(self, phones: list[str]) -> dict[str, str]:
        """The oldest contact per number, for many numbers in one search (paged when it answers more)."""
        nationals = sorted({national_digits(phone) for phone in phones})
        request = PublicObjectSearchRequest(
            filter_groups=[FilterGroup(filters=[Filter(property_name=name, operator="IN", values=values)])
                           for name, values in (("phone", phones), ("mobilephone", phones),
                                                ("hs_searchable_calculated_phone_number", nationals),
                                                ("hs_searchable_calculated_mobile_number", nationals))],
            sorts=[{"propertyName": "createdate", "direction": "ASCENDING"}],
            properties=["phone", "mobilephone"], limit=SEARCH_PAGE)
        wanted, found = set(phones), {}
        regions = {phonenumbers.region_code_for_country_code(phonenumbers.parse(phone).country_code)
                   for phone in phones}
        while True:
            with self._calling(f"search {len(phones)} contacts by phone", search=True):
                page = self._search.do_search("contacts", request, _request_timeout=self._timeout)
            for candidate in page.results:
                for stored in (candidate.properties.get(name) for name in ("phone", "mobilephone")):
                    for number in as_e164(stored, regions) & wanted:
                        found.setdefault(number, candidate.id)
            after = page.paging.next.after if page.paging and page.paging.next else None
            if after is None or len(found) == len(wanted):
                return found
            request.after = after

    def _create(self, object_type: str, properties: dict[str, str], *, contact_id: str | None = None,
                association_type_id: int | None = None) -> str:
        associations = [] if contact_id is None else [PublicAssociationsForObject(
            to=PublicObjectId(id=contact_id),
            types=[AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=association_type_id)])]
        with self._calling(f"create {object_type}"):
            created = self._objects.create(
                object_type, SimplePublicObjectInputForCreate(properties=properties, associations=associations),
                _request_timeout=self._timeout)
        return created.id

    def _create_once(self, object_type: str, created: dict[str, str], changes: dict[str, str], *, key: str,
                     contact_id: str, association_type_id: int) -> str:
        """The record created under `key`, made now or found from an earlier call and brought up to date."""
        unique = self._key_is_unique(object_type)
        found = self._read_by_key(object_type, key) if unique else self._associated_by_key(object_type, key,
                                                                                            contact_id)
        if found and (updated := self._update(object_type, found, changes)):
            return updated
        try:
            made = self._create(object_type, {**created, KEY_PROPERTY: key}, contact_id=contact_id,
                                association_type_id=association_type_id)
        except Rejected as exc:
            taken = unique and exc.status in (400, 409) and self._read_by_key(object_type, key)
            if not taken:
                raise
            return self._update(object_type, taken, changes) or taken
        if unique:
            return made
        # Two jobs for one record can each miss the other's create and create too; a plain key does not stop
        # that, so every such writer keeps the oldest record with the key and archives its own copy.
        oldest = self._associated_by_key(object_type, key, contact_id)
        if oldest is None or oldest == made:
            return made
        with self._calling(f"archive the duplicate {object_type} {made}"):
            self._objects.archive(object_type, made, _request_timeout=self._timeout)
        return self._update(object_type, oldest, changes) or oldest

    def _key_is_unique(self, object_type: str) -> bool:
        """Whether the object type's key property holds unique values; it is created on first use."""
        if object_type not in self._unique_key:
            with self._calling(f"set up the {KEY_PROPERTY} property of {object_type}", requests=0):
                self._unique_key[object_type] = self._ensure_key_property(object_type)
        return self._unique_key[object_type]

    def _ensure_key_property(self, object_type: str) -> bool:
        try:
            with self._slot():
                return bool(self._properties.get_by_name(object_type, KEY_PROPERTY,
                                                         _request_timeout=self._timeout).has_unique_value)
        except PropertiesApiException as exc:
            if exc.status != 404:
                raise
        with self._slot():
            self._ensure_group(object_type)
        try:
            return self._create_key_property(object_type, unique=True)
        except PropertiesApiException as exc:
            if exc.status != 400:  # 400: this object type takes no unique-value properties in this account
                raise
        return self._create_key_property(object_type, unique=False)

    def _ensure_group(self, object_type: str) -> None:
        try:
            self._groups.create(object_type, PropertyGroupCreate(name=KEY_GROUP, label="textback", display_order=-1),
                                _request_timeout=self._timeout)
        except PropertiesApiException as exc:
            if exc.status != 409:  # 409: it exists already
                raise

    def _create_key_property(self, object_type: str, *, unique: bool) -> bool:
        try:
            with self._slot():
                self._properties.create(object_type, PropertyCreate(
                    name=KEY_PROPERTY, label="textback key", type="string", field_type="text", group_name=KEY_GROUP,
                    has_unique_value=unique, form_field=False,
                    description="Set by textback so that a retried write finds the record it made"),
                    _request_timeout=self._timeout)
            return unique
        except PropertiesApiException as exc:
            if exc.status != 409:
                raise
        # Another worker created it meanwhile: what it chose stands.
        with self._slot():
            return bool(self._properties.get_by_name(object_type, KEY_PROPERTY,
                                                     _request_timeout=self._timeout).has_unique_value)

    def _read_by_key(self, object_type: str, key: str) -> str | None:
        try:
            with self._calling(f"read {object_type} by {KEY_PROPERTY}"):
                return self._objects.get_by_id(object_type, key, properties=[KEY_PROPERTY], id_property=KEY_PROPERTY,
                                               _request_timeout=self._timeout).id
        except Rejected as exc:
            if exc.status == 404:
                return None
            raise

    def _associated_by_key(self, object_type: str, key: str, contact_id: str) -> str | None:
        """The oldest record of the type associated with the contact that carries `key`."""
        return self._keyed_records(object_type, contact_id, {key}).get(key)

    def _keyed_records(self, object_type: str, contact_id: str, keys: set[str]) -> dict[str, str]:
        """The oldest record per key among the records of the type associated with the contact."""
        return self._oldest_with_keys(object_type, self._linked(object_type, contact_id), keys)

    def _linked(self, object_type: str, contact_id: str) -> list[str]:
        """The ids of the contact's records of the type, every page of them."""
        linked: list[str] = []
        after = None
        while True:
            with self._calling(f"list the contact's {object_type}"):
                page = self._links.get_page("contacts", contact_id, object_type, after=after, limit=500,
                                            _request_timeout=self._timeout)
            linked += [str(each.to_object_id) for each in page.results]
            after = page.paging.next.after if page.paging and page.paging.next else None
            if after is None:
                return linked

    def _oldest_with_keys(self, object_type: str, ids: list[str], keys: set[str]) -> dict[str, str]:
        """The oldest record per key among the records `ids` (read in batches until every key is found)."""
        found: dict[str, str] = {}
        for start in range(0, len(ids), BATCH_READ_LIMIT):
            request = BatchReadInputSimplePublicObjectId(
                inputs=[SimplePublicObjectId(id=each) for each in ids[start:start + BATCH_READ_LIMIT]],
                properties=[KEY_PROPERTY], properties_with_history=[])
            with self._calling(f"read the contact's {object_type}"):
                records = self._batch.read(object_type, request, _request_timeout=self._timeout).results
            for each in sorted(records, key=lambda each: int(each.id)):
                if (key := (each.properties or {}).get(KEY_PROPERTY)) in keys and key not in found:
                    found[key] = each.id
            if len(found) == len(keys):
                break
        return found

    def _update(self, object_type: str, object_id: str, properties: dict[str, str]) -> str | None:
        """The id HubSpot answers with (an old id of merged records updates the surviving one),
        or None when HubSpot no longer has the record."""
        if not properties:
            return object_id
        try:
            with self._calling(f"update {object_type} {object_id}"):
                updated = self._objects.update(object_type, object_id, SimplePublicObjectInput(properties=properties),
                                               _request_timeout=self._timeout)
        except Rejected as exc:
            if exc.status == 404:
                return None
            raise
        return updated.id

    @contextlib.contextmanager
    def _calling(self, action: str, *, search: bool = False, requests: int = 1) -> Iterator[None]:
        """One request (or `requests`) counted on the connection's budget, its failures in the error tree.
        A 429 that comes all the same shrinks the budget it hit."""
        try:
            with self._slot(search=search, requests=requests), vendor_errors(action):
                yield
        except RateLimited as exc:
            if not isinstance(exc, OverQuota):
                hit = self.quotas.search if search and policy_name(exc) in (None, "SECONDLY") else self.quotas.requests
                self._meter.refused(hit, exc.retry_after)
            raise

    def _slot(self, *, search: bool = False, requests: int = 1) -> contextlib.AbstractContextManager[None]:
        # search has a budget of its own, and counts against the app's too
        each = [self.quotas.search, self.quotas.requests] if search else [self.quotas.requests]
        return counted(self._meter, each * requests)


@dataclass(frozen=True)
class HubSpotQuotas:
    requests: Quota
    search: Quota


PLAN_BUDGETS = {"starter": 100, "professional": 190, "enterprise": 190}
SEARCH_PER_SECOND = 5


def quotas_for(config: HubSpotConfig) -> HubSpotQuotas:
    """The budgets of one private app in one portal: by plan per rolling 10 s, and search per second."""
    scope = connection_scope("hubspot", config.base_url.rstrip("/"), config.access_token.get_secret_value())
    return HubSpotQuotas(
        requests=Quota(scope, config.requests_per_10s or PLAN_BUDGETS[config.plan], 10.0),
        search=Quota(scope + ":search", SEARCH_PER_SECOND, 1.0))


def _derived_key(kind: str, *identifying: str) -> str:
    """A key for a caller that gave none, from what identifies the record: the same record, the same key."""
    return f"textback:{kind}:" + hashlib.sha256("\x1f".join(identifying).encode()).hexdigest()[:32]


def _contact_details(contact: ContactRecord) -> dict[str, str]:
    return {name: value for name, value in (("firstname", contact.first_name), ("lastname", contact.last_name),
                                            ("email", contact.email)) if value}

"""HubSpot CRM through the official hubspot-api-client (its generic CRM objects API).

What textback writes, per protocol method:

    upsert_contact      contact: phone (E.164), names, email; lifecyclestage=lead and
                        hs_lead_status=NEW when it creates one
    log_conversation    note (hs_note_body, hs_timestamp) associated to the contact
    upsert_opportunity  deal (dealname, pipeline, dealstage, description) associated to the contact
    record_booking      meeting (title, start, end, body, outcome SCHEDULED) associated to the contact

Contacts are found by phone with CRM search: phone is not a unique-value property, so
batch upsert cannot key on it. The search also matches HubSpot's calculated digits-only
phone properties, which catch numbers staff typed in any format, and every candidate is
checked against the caller's number before it is used.

Updates write only what textback owns: the stage a deal or lead is in, and a meeting's
outcome, belong to the staff once the record exists. A record staff have deleted since
(PATCH answers 404) is created again rather than failing on every retry.

The SDK's own urllib3 retries are switched off so that every failure reaches the error
tree of connectors/base.py exactly once, and the sync layer decides what to retry.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import ClassVar, Literal

import phonenumbers
import urllib3
from hubspot import HubSpot
from hubspot.crm.objects import (
    ApiException,
    AssociationSpec,
    Filter,
    FilterGroup,
    PublicAssociationsForObject,
    PublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from pydantic import Field
from urllib3.util.retry import Retry

from connectors.base import (
    ConnectorConfig,
    ConnectorError,
    Rejected,
    Secret,
    Transient,
    error_for_status,
    parse_retry_after,
)
from core.models import BookingRecord, ContactRecord, ConversationLog, Opportunity

PRODUCTION_URL = "https://api.hubapi.com"
# HUBSPOT_DEFINED default association type ids, from the activity or deal to the contact.
NOTE_TO_CONTACT = 202
DEAL_TO_CONTACT = 3
MEETING_TO_CONTACT = 200
NOTE_BODY_LIMIT = 65_536
_TIMEOUT = (5.0, 30.0)  # connect, read (seconds): the SDK has no default and would wait forever
_EXISTING_ID = re.compile(r"Existing ID: (\d+)")
_TRUNCATED = "<br>[earlier part of the transcript kept; the rest exceeded HubSpot's note size]"


class HubSpotConfig(ConnectorConfig):
    type: Literal["hubspot"]
    access_token: Secret = Field(description="private app access token, as env:NAME or file:PATH")
    base_url: str = PRODUCTION_URL
    deal_pipeline: str = "default"
    deal_stage: str = "appointmentscheduled"
    source_property: str | None = Field(
        default=None, description="a custom contact property that receives where the lead came from "
                                  "(HubSpot's own source properties are enumerations it sets itself)")


class HubSpotCRM:
    """The CRMConnector for one HubSpot portal."""

    role: ClassVar[str] = "crm"
    config_model: ClassVar[type[ConnectorConfig]] = HubSpotConfig

    def __init__(self, config: HubSpotConfig, *, client: HubSpot | None = None) -> None:
        self._config = config
        client = client or HubSpot(access_token=config.access_token.get_secret_value(),
                                   host=config.base_url.rstrip("/"), retry=Retry(total=0, redirect=False))
        # Every `client.crm...` attribute access builds a new ApiClient and connection pool: keep these two.
        self._objects = client.crm.objects.basic_api
        self._search = client.crm.objects.search_api

    def upsert_contact(self, contact: ContactRecord, *, existing_id: str | None = None) -> str:
        details = {name: value for name, value in (("firstname", contact.first_name),
                                                   ("lastname", contact.last_name),
                                                   ("email", contact.email)) if value}
        if existing_id and (updated := self._update("contacts", existing_id, details)):
            return updated
        found = self._contact_by_phone(contact.phone)
        if found and (updated := self._update("contacts", found, details)):
            return updated
        return self._create_contact(contact, details)

    def log_conversation(self, *, contact_id: str, log: ConversationLog, existing_id: str | None = None) -> str:
        body = {"hs_note_body": _note_html(log.as_text())}
        if existing_id and (updated := self._update("notes", existing_id, body)):
            return updated
        started = log.lines[0].at if log.lines else datetime.now(timezone.utc)
        return self._create("notes", {**body, "hs_timestamp": _hubspot_time(started)},
                            contact_id=contact_id, association_type_id=NOTE_TO_CONTACT)

    def upsert_opportunity(self, *, contact_id: str, opportunity: Opportunity, existing_id: str | None = None) -> str:
        described = {"dealname": opportunity.name, "description": opportunity.description}
        if existing_id and (updated := self._update("deals", existing_id, described)):
            return updated
        return self._create("deals", {**described, "pipeline": self._config.deal_pipeline,
                                      "dealstage": self._config.deal_stage},
                            contact_id=contact_id, association_type_id=DEAL_TO_CONTACT)

    def record_booking(self, *, contact_id: str, booking: BookingRecord, existing_id: str | None = None) -> str:
        meeting = {"hs_meeting_title": booking.title, "hs_meeting_body": booking.description,
                   "hs_meeting_start_time": _hubspot_time(booking.start),
                   "hs_meeting_end_time": _hubspot_time(booking.end), "hs_timestamp": _hubspot_time(booking.start)}
        if existing_id and (updated := self._update("meetings", existing_id, meeting)):
            return updated
        return self._create("meetings", {**meeting, "hs_meeting_outcome": "SCHEDULED"},
                            contact_id=contact_id, association_type_id=MEETING_TO_CONTACT)

    def _create_contact(self, contact: ContactRecord, details: dict[str, str]) -> str:
        created = {"phone": contact.phone, **details, "lifecyclestage": "lead", "hs_lead_status": "NEW"}
        if self._config.source_property:
            created[self._config.source_property] = contact.source
        try:
            return self._create("contacts", created)
        except Rejected as exc:
            match = _EXISTING_ID.search(str(exc)) if exc.status == 409 else None
            # The email belongs to a contact whose phone we could not match: add the caller's
            # number as its mobile rather than overwrite the phone staff entered.
            merged = match and self._update("contacts", match.group(1), {**details, "mobilephone": contact.phone})
            if not merged:
                raise
            return merged

    def _contact_by_phone(self, phone: str) -> str | None:
        national = _national_digits(phone)
        request = PublicObjectSearchRequest(
            filter_groups=[FilterGroup(filters=[Filter(property_name=name, operator="EQ", value=value)])
                           for name, value in (("phone", phone), ("mobilephone", phone),
                                               ("hs_searchable_calculated_phone_number", national),
                                               ("hs_searchable_calculated_mobile_number", national))],
            sorts=[{"propertyName": "createdate", "direction": "ASCENDING"}],
            properties=["phone", "mobilephone"], limit=20)
        with _vendor_errors("search contacts by phone"):
            page = self._search.do_search("contacts", request, _request_timeout=_TIMEOUT)
        for candidate in page.results:
            if any(_same_number(candidate.properties.get(name), phone) for name in ("phone", "mobilephone")):
                return candidate.id
        return None

    def _create(self, object_type: str, properties: dict[str, str], *, contact_id: str | None = None,
                association_type_id: int | None = None) -> str:
        associations = [] if contact_id is None else [PublicAssociationsForObject(
            to=PublicObjectId(id=contact_id),
            types=[AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=association_type_id)])]
        with _vendor_errors(f"create {object_type}"):
            created = self._objects.create(
                object_type, SimplePublicObjectInputForCreate(properties=properties, associations=associations),
                _request_timeout=_TIMEOUT)
        return created.id

    def _update(self, object_type: str, object_id: str, properties: dict[str, str]) -> str | None:
        """The id HubSpot answers with (an old id of merged records updates the surviving one),
        or None when HubSpot no longer has the record."""
        if not properties:
            return object_id
        try:
            with _vendor_errors(f"update {object_type} {object_id}"):
                updated = self._objects.update(object_type, object_id, SimplePublicObjectInput(properties=properties),
                                               _request_timeout=_TIMEOUT)
        except Rejected as exc:
            if exc.status == 404:
                return None
            raise
        return updated.id


@contextlib.contextmanager
def _vendor_errors(action: str) -> Iterator[None]:
    """Translate the SDK's and urllib3's failures into the connector error tree."""
    try:
        yield
    except ApiException as exc:
        raise _error_for(exc, action) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise Transient(f"HubSpot {action} failed: {exc}") from exc


def _error_for(exc: ApiException, action: str) -> ConnectorError:
    message = f"HubSpot {action} failed with {exc.status}: {_vendor_message(exc.body) or exc.reason}"
    if not exc.status:  # the SDK reports TLS failures with status 0
        return Transient(message)
    return error_for_status(exc.status, message, retry_after=parse_retry_after((exc.headers or {}).get("Retry-After")))


def _vendor_message(body: bytes | str | None) -> str | None:
    if not body:
        return None
    try:
        return str(json.loads(body).get("message"))
    except (ValueError, AttributeError):
        return (body.decode(errors="replace") if isinstance(body, bytes) else body)[:300]


def _national_digits(phone: str) -> str:
    """HubSpot's calculated phone search key for an E.164 number: the national number's digits."""
    try:
        parsed = phonenumbers.parse(phone)
    except phonenumbers.NumberParseException as exc:
        raise Rejected(f"contact phone {phone!r} is not an E.164 number") from exc
    return phonenumbers.national_significant_number(parsed).lstrip("0")


def _same_number(stored: str | None, e164: str) -> bool:
    """Whether a phone as staff typed it is the E.164 number, read in that number's country."""
    if not stored:
        return False
    region = phonenumbers.region_code_for_country_code(phonenumbers.parse(e164).country_code)
    try:
        parsed = phonenumbers.parse(stored, region)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == e164


def _hubspot_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _note_html(text: str) -> str:
    """The transcript as note HTML (HubSpot renders note bodies as rich text), within its size limit."""
    body = "<br>".join(html.escape(line) for line in text.splitlines())
    if len(body) <= NOTE_BODY_LIMIT:
        return body
    kept = body[:NOTE_BODY_LIMIT - len(_TRUNCATED)]
    return kept[:kept.rfind("<br>")] + _TRUNCATED

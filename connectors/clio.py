"""Clio Manage through its REST API v4 over httpx, and optionally the Clio Grow lead inbox.

What textback writes, per protocol method:

    upsert_contact      a Person with the caller's number (Mobile, default); an existing contact with
                        that number is reused and only its blanks are filled. A new one is also
                        submitted to the Grow lead inbox when `grow_inbox_token` is set, once the
                        contact exists, so a failing inbox never blocks Manage; the lead goes to the
                        inbox at most once (a retry finds the contact by phone and skips it).
    log_conversation    a PhoneCommunication from the contact to the user the token belongs to (or a
                        Note, with `transcript_as: note`), on the contact's newest open matter when
                        there is one; updated in place as the conversation grows
    upsert_opportunity  a Matter for the contact with `matter_status` and the practice area
                        `practice_areas` maps the playbook's matter type to
    record_booking      a calendar entry on `calendar_id` (default: the token user's own calendar),
                        with the contact as attendee

Contacts are found with Clio's `query` search, which matches text as stored: the number is
searched as E.164, in national format and in international format without the country
code, and every candidate is confirmed by parsing its numbers. Names staff typed win: a
found contact's names change only while they are the number textback used as a
placeholder. That read-then-write carries the record's ETag in If-Match, and a 412 (staff
edited it in between) reads it again. Other updates write only fields textback owns
(transcript, matter description, appointment time), so they are sent without If-Match
rather than spending a read of Clio's 50-requests-a-minute budget on each. A record staff
deleted (404 on update) is created again rather than failing every retry.

Creates are idempotent by key. Clio has no field for an integration's own id on these records,
so the text textback writes ends with a line `textback ref: tb<digest of the key>`, and before
creating, the connector finds an earlier record by that token with the index's `query` search
(a wildcard search over subject and body, detail, description or summary), confirming it in
the text it reads back. A create whose answer was lost is then found and updated on retry.

Regions (`base_url`): https://app.clio.com (US), https://eu.app.clio.com, https://ca.app.clio.com,
https://au.app.clio.com; a token works only in its own region. Grow's inbox (`grow_base_url`):
https://grow.clio.com, https://eu.grow.clio.com, https://ca.grow.clio.com, https://au.grow.clio.com.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
import phonenumbers
from pydantic import Field, field_validator

from connectors.base import (
    AuthExpired,
    ConnectorConfig,
    ConnectorError,
    Rejected,
    Secret,
    Transient,
    error_for_status,
    parse_retry_after,
)
from connectors.oauth import OAuthApp
from connectors.quota import Meter, Quota, Unmetered, connection_scope, counted
from core.models import BookingRecord, ContactRecord, ConversationLog, Opportunity

PRODUCTION_URL = "https://app.clio.com"
MANAGE_HOSTS = ("app.clio.com", "eu.app.clio.com", "ca.app.clio.com", "au.app.clio.com")
GROW_URL = "https://grow.clio.com"
GROW_HOSTS = ("grow.clio.com", "eu.grow.clio.com", "ca.grow.clio.com", "au.grow.clio.com")
PAGE_LIMIT = 200
CONTACT_FIELDS = "id,etag,first_name,last_name,phone_numbers{number},email_addresses{address}"
LEAD_SOURCE = "textback"
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def _region_url(value: str, hosts: tuple[str, ...], product: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"{value!r} is not a base URL such as https://{hosts[0]}")
    if parts.hostname.endswith("clio.com") and (parts.hostname not in hosts or parts.scheme != "https"):
        raise ValueError(f"{value!r} is not a {product} region; use one of "
                         + ", ".join(f"https://{host}" for host in hosts))
    return value.rstrip("/")


class ClioConfig(ConnectorConfig):
    type: Literal["clio"]
    access_token: Secret | None = Field(
        default=None, description="a Clio access token as env:NAME or file:PATH; leave it out when the "
                                  "OAuth connection supplies tokens")
    base_url: str = PRODUCTION_URL
    calendar_id: int | None = Field(default=None, description="the Clio calendar bookings go on; default: "
                                                              "the token user's own calendar")
    practice_areas: dict[str, str] = Field(default_factory=dict, description="playbook matter type -> Clio "
                                                                             "practice area name")
    matter_status: Literal["Open", "Pending"] = "Pending"
    transcript_as: Literal["communication", "note"] = "communication"
    grow_inbox_token: Secret | None = Field(default=None, description="Clio Grow inbox token; new leads "
                                                                      "are also sent to the Grow lead inbox")
    grow_base_url: str = GROW_URL
    requests_per_minute: int = Field(default=50, gt=0, le=10_000, description="the account's API budget per access "
                                     "token (Clio: 50 per minute at peak hours); the X-RateLimit-* headers lower it")
    oauth: OAuthApp | None = Field(default=None, description="instead of access_token: the Clio app a person "
                                                             "authorized with `textback connect`")
    do_not_text_field: str | None = Field(default=None, description="the contact custom field (name or id, a "
                                                                    "checkbox) staff tick to stop texts")

    @field_validator("base_url")
    @classmethod
    def _manage_region(cls, value: str) -> str:
        return _region_url(value, MANAGE_HOSTS, "Clio Manage")

    @field_validator("grow_base_url")
    @classmethod
    def _grow_region(cls, value: str) -> str:
        return _region_url(value, GROW_HOSTS, "Clio Grow")


class ClioCRM:
    """The CRMConnector for one Clio Manage account."""

    role: ClassVar[str] = "crm"
    config_model: ClassVar[type[ConnectorConfig]] = ClioConfig

    def __init__(self, config: ClioConfig, *, http: httpx.Client | None = None,
                 token: Callable[[], str] | None = None, meter: Meter | None = None) -> None:
        self._config = config
        self._meter = meter or Unmetered()
        self._http = http or httpx.Client(timeout=_TIMEOUT)
        self._api = config.base_url + "/api/v4"
        if token is None and config.access_token is not None:
            token = config.access_token.get_secret_value
        self._token = token
        self._user_id: int | None = None
        self._own_calendar: int | None = None
        self._practice_area_ids: dict[str, int] | None = None

    # --- the protocol -------------------------------------------------------------------------

    def upsert_contact(self, contact: ContactRecord, *, existing_id: str | None = None) -> str:
        _parse(contact.phone)
        if existing_id and (known := self._read("contacts", existing_id, CONTACT_FIELDS)):
            if (kept := self._fill_contact(known, contact)) is not None:
                return kept
        found = self._contact_by_phone(contact.phone)
        if found and (kept := self._fill_contact(found, contact)) is not None:
            return kept
        created = self._create("contacts", _new_person(contact))
        if self._config.grow_inbox_token is not None:
            self._submit_lead(contact)
        return created

    def log_conversation(self, *, contact_id: str, log: ConversationLog, existing_id: str | None = None,
                         key: str | None = None) -> str:
        first = log.lines[0].at if log.lines else datetime.now(timezone.utc)
        ref = _ref(key or _derived_key("conversation", contact_id, log.title, first.isoformat()))
        text = _with_ref(log.as_text(), ref)
        if self._config.transcript_as == "note":
            return self._upsert("notes", existing_id, {"subject": log.title, "detail": text},
                                lambda: {**self._note_owner(contact_id), "date": first.date().isoformat()},
                                ref=(ref, "detail", [{"type": "Contact", "contact_id": contact_id},
                                                     {"type": "Matter"}]))
        matter_id = self._open_matter(contact_id)
        fields = {"subject": log.title, "body": text, **({"matter": {"id": matter_id}} if matter_id else {})}
        return self._upsert("communications", existing_id, fields, lambda: {
            "type": "PhoneCommunication", "date": first.date().isoformat(),
            **({"received_at": log.lines[0].at.isoformat()} if log.lines else {}),
            "senders": [{"type": "Contact", "id": int(contact_id)}],
            "receivers": [{"type": "User", "id": self._me()}]},
            ref=(ref, "body", [{"contact_id": contact_id}]))

    def upsert_opportunity(self, *, contact_id: str, opportunity: Opportunity, existing_id: str | None = None,
                           key: str | None = None) -> str:
        ref = _ref(key or _derived_key("opportunity", contact_id, opportunity.name))
        described = {"description": _with_ref("\n".join(filter(None, [opportunity.name, opportunity.description])),
                                              ref)}

        def created() -> dict:
            area = self._practice_area(opportunity)
            return {"client": {"id": int(contact_id)}, "status": self._config.matter_status.lower(),
                    **({"practice_area": {"id": area}} if area is not None else {})}
        return self._upsert("matters", existing_id, described, created,
                            ref=(ref, "description", [{"client_id": contact_id}]))

    def record_booking(self, *, contact_id: str, booking: BookingRecord, existing_id: str | None = None,
                       key: str | None = None) -> str:
        if booking.start.tzinfo is None or booking.end.tzinfo is None:
            raise Rejected("booking times must carry a UTC offset")
        ref = _ref(key or _derived_key("booking", contact_id, booking.start.isoformat()))
        entry = {"summary": booking.title, "description": _with_ref(booking.description, ref),
                 "start_at": booking.start.isoformat(), "end_at": booking.end.isoformat()}

        def created() -> dict:
            matter_id = self._open_matter(contact_id)
            return {"calendar_owner": {"id": self._config.calendar_id or self._user_calendar()},
                    "attendees": [{"type": "Contact", "id": int(contact_id)}],
                    **({"matter": {"id": matter_id}} if matter_id else {})}
        return self._upsert("calendar_entries", existing_id, entry, created, ref=(ref, "description", [{}]))

    # --- contacts -------------------------------------------------------------------------------

    def _contact_by_phone(self, phone: str) -> dict | None:
        for variant in _search_variants(phone):
            for candidate in self._each("contacts", {"query": variant, "fields": CONTACT_FIELDS}):
                if any(_same_number(each.get("number"), phone) for each in candidate.get("phone_numbers") or []):
                    return candidate
        return None

    def _fill_contact(self, record: dict, contact: ContactRecord) -> str | None:
        """Add what the contact lacks; the contact's id, or None when Clio no longer has it."""
        for _ in range(2):
            changes = _contact_changes(record, contact)
            if not changes:
                return str(record["id"])
            try:
                self._call("PATCH", f"contacts/{record['id']}", action=f"update contact {record['id']}",
                           json={"data": changes}, headers={"If-Match": record["etag"]})
                return str(record["id"])
            except Rejected as exc:
                if exc.status == 404:
                    return None
                if exc.status != 412:
                    raise
            record = self._read("contacts", record["id"], CONTACT_FIELDS)
            if record is None:
                return None
        raise Transient(f"Clio contact {record['id']} kept changing while textback updated it")

    def _submit_lead(self, contact: ContactRecord) -> None:
        lead = {"from_first": contact.first_name or "Caller",
                "from_last": contact.last_name or _national(contact.phone),
                "from_phone": contact.phone, "from_email": contact.email,
                "from_message": f"{contact.source} from {contact.phone}", "referring_url": contact.source,
                "from_source": LEAD_SOURCE}
        body = {"inbox_lead_token": self._config.grow_inbox_token.get_secret_value(),
                "inbox_lead": {k: v for k, v in lead.items() if v}}
        with _vendor_errors("submit Grow inbox lead"):
            response = self._http.post(self._config.grow_base_url + "/inbox_leads", json=body,
                                       headers={"Accept": "application/json"})
        if response.status_code >= 400:
            raise _error_for(response, "submit Grow inbox lead")

    # --- lookups (cached where Clio's answer does not change) -------------------------------------

    def _open_matter(self, contact_id: str) -> int | None:
        open_ids = [m["id"] for m in self._each("matters", {"client_id": contact_id, "fields": "id,status"})
                    if m.get("status") != "Closed"]
        return open_ids[-1] if open_ids else None

    def _note_owner(self, contact_id: str) -> dict:
        if matter_id := self._open_matter(contact_id):
            return {"type": "Matter", "matter": {"id": matter_id}}
        return {"type": "Contact", "contact": {"id": int(contact_id)}}

    def check_access(self) -> str:
        """A read-only call that proves the token (config check --online); also checks calendar_id exists."""
        user = self._me()
        if self._config.calendar_id is not None:
            self._call("GET", f"calendars/{self._config.calendar_id}", action="read the configured calendar",
                       params={"fields": "id"})
        return f"token accepted (user {user})"

    def _me(self) -> int:
        if self._user_id is None:
            self._user_id = self._call("GET", "users/who_am_i", action="read the token's user",
                                       params={"fields": "id"}).json()["data"]["id"]
        return self._user_id

    def _user_calendar(self) -> int:
        if self._own_calendar is None:
            owned = [c["id"] for c in self._each("calendars", {"fields": "id,type,permission"})
                     if c.get("type") == "UserCalendar" and c.get("permission") == "owner"]
            if not owned:
                raise Rejected("the Clio user has no calendar of their own; set calendar_id")
            self._own_calendar = owned[0]
        return self._own_calendar

    def _practice_area(self, opportunity: Opportunity) -> int | None:
        text = f"{opportunity.name} {opportunity.description}".lower()
        name = next((area for matter_type, area in self._config.practice_areas.items()
                     if re.search(rf"(?<![\w-]){re.escape(matter_type.lower())}(?![\w-])", text)), None)
        if name is None:
            return None
        if self._practice_area_ids is None:
            self._practice_area_ids = {a["name"]: a["id"] for a in self._each("practice_areas", {"fields": "id,name"})}
        if name not in self._practice_area_ids:
            raise Rejected(f"Clio has no practice area named {name!r}; add it in Clio or fix practice_areas")
        return self._practice_area_ids[name]

    # --- webhooks (two-way sync) -----------------------------------------------------------------

    def create_webhook(self, *, url: str, model: str, fields: str, events: list[str]) -> dict:
        """Register a webhook; Clio then POSTs `url` with X-Hook-Secret, and it is live once echoed."""
        made = self._call("POST", "webhooks", action="create webhook", params={"fields": "id,status,expires_at"},
                          json={"data": {"url": url, "model": model, "fields": fields, "events": events}})
        data = made.json()["data"]
        return {"webhook_id": str(data["id"]), "expires_at": _clio_time(data.get("expires_at"))}

    def renew_webhook(self, *, webhook_id: str, expires_at: datetime) -> datetime | None:
        made = self._call("PATCH", f"webhooks/{webhook_id}", action="renew webhook", params={"fields": "id,expires_at"},
                          json={"data": {"expires_at": expires_at.isoformat()}})
        return _clio_time(made.json()["data"].get("expires_at"))

    def delete_webhook(self, *, webhook_id: str) -> None:
        try:
            self._call("DELETE", f"webhooks/{webhook_id}", action="delete webhook")
        except Rejected as exc:
            if exc.status != 404:
                raise

    # --- HTTP -------------------------------------------------------------------------------------

    def _upsert(self, kind: str, existing_id: str | None, fields: dict, on_create: Callable[[], dict], *,
                ref: tuple[str, str, list[dict]]) -> str:
        """Update `fields` of the record we made, known by id or found by its ref, or create it (with what only
        a new one needs) when Clio has none. `ref` is (token, the field it is in, the index filters to try)."""
        for known in (existing_id, self._find_by_ref(kind, *ref)):
            if known and self._patched(kind, known, fields):
                return known
        return self._create(kind, {**on_create(), **fields})

    def _patched(self, kind: str, record_id: str, fields: dict) -> bool:
        try:
            self._call("PATCH", f"{kind}/{record_id}", action=f"update {kind} {record_id}", json={"data": fields})
            return True
        except Rejected as exc:
            if exc.status != 404:
                raise
        return False

    def _find_by_ref(self, kind: str, token: str, field: str, filters: list[dict]) -> str | None:
        for narrowed in filters:
            for candidate in self._each(kind, {"query": token, "fields": f"id,{field}", **narrowed}):
                if token in (candidate.get(field) or ""):
                    return str(candidate["id"])
        return None

    def _create(self, kind: str, data: dict) -> str:
        created = self._call("POST", kind, action=f"create {kind}", json={"data": data}, params={"fields": "id"})
        return str(created.json()["data"]["id"])

    def _read(self, kind: str, record_id: Any, fields: str) -> dict | None:
        try:
            return self._call("GET", f"{kind}/{record_id}", action=f"read {kind} {record_id}",
                              params={"fields": fields}).json()["data"]
        except Rejected as exc:
            if exc.status == 404:
                return None
            raise

    def _each(self, kind: str, params: dict[str, Any]) -> Iterator[dict]:
        """Every record an index returns, following Clio's cursor pages (`order=id(asc)`, no offset)."""
        url: str | None = kind
        query: dict[str, Any] | None = {**params, "order": "id(asc)", "limit": PAGE_LIMIT}
        while url:
            body = self._call("GET", url, action=f"list {kind}", params=query).json()
            yield from body["data"]
            url, query = (body.get("meta") or {}).get("paging", {}).get("next"), None

    def _call(self, method: str, path: str, *, action: str, params: dict | None = None, json: Any = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
        if self._token is None:
            raise AuthExpired("Clio is not connected: no access token or OAuth connection for this tenant")
        url = path if path.startswith(("http://", "https://")) else f"{self._api}/{path}.json"
        token = self._token()
        response = self._send(method, url, token, action=action, params=params, json=json, headers=headers)
        refresh = getattr(self._token, "refresh", None)
        if response.status_code == 401 and refresh is not None:
            # An access token can die before its stated expiry (revoked, rotated): refresh once, then retry.
            fresh = refresh(stale=token).access_token
            response = self._send(method, url, fresh, action=action, params=params, json=json, headers=headers)
        if response.status_code >= 400:
            raise _error_for(response, action)
        return response

    def quota(self, token: str) -> Quota:
        """Clio counts requests per access token, per minute; its headers say how many are left."""
        return Quota(connection_scope("clio", self._api, token), self._config.requests_per_minute, 60.0)

    def _send(self, method: str, url: str, token: str, *, action: str, params: dict | None, json: Any,
              headers: dict[str, str] | None) -> httpx.Response:
        quota = self.quota(token)
        with counted(self._meter, [quota]), _vendor_errors(action):
            response = self._http.request(method, url, params=params, json=json, headers={
                "Authorization": f"Bearer {token}", "Accept": "application/json", **(headers or {})})
        if response.status_code == 429:
            self._meter.refused(quota, parse_retry_after(response.headers.get("Retry-After")))
        else:
            self._meter.reported(quota, limit=_header_int(response, "X-RateLimit-Limit"),
                                 remaining=_header_int(response, "X-RateLimit-Remaining"),
                                 reset_at=_header_int(response, "X-RateLimit-Reset"))
        return response


@contextlib.contextmanager
def _vendor_errors(action: str) -> Iterator[None]:
    """Network failures are transient; HTTP answers are mapped by status in `_error_for`."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise Transient(f"Clio {action} failed: {exc!r}") from exc


def _header_int(response: httpx.Response, name: str) -> int | None:
    try:
        return int(response.headers[name])
    except (KeyError, ValueError):
        return None


def _error_for(response: httpx.Response, action: str) -> ConnectorError:
    return error_for_status(response.status_code,
                            f"Clio {action} failed with {response.status_code}: {_detail(response)}",
                            retry_after=parse_retry_after(response.headers.get("Retry-After")))


def _detail(response: httpx.Response) -> str:
    """Clio's `{"error": {"type", "message"}}`, or OAuth's `{"error", "error_description"}`."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"{error.get('type')}: {error.get('message')}"
    if isinstance(body, dict) and body.get("error_description"):
        return f"{error}: {body['error_description']}"
    return str(body)[:300]


# --- values -------------------------------------------------------------------------------------

def _clio_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _derived_key(kind: str, *identifying: str) -> str:
    """A key for a caller that gave none, from what identifies the record: the same record, the same key."""
    return f"textback:{kind}:" + "\x1f".join(identifying)


def _ref(key: str) -> str:
    """One search token for a key: letters and digits only, so Clio's full-text `query` matches it whole."""
    return "tb" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _with_ref(text: str, ref: str) -> str:
    return f"{text}\n\ntextback ref: {ref}" if text else f"textback ref: {ref}"


def _new_person(contact: ContactRecord) -> dict:
    # Clio requires a first or last name; until the caller gives one, the number stands in for it.
    placeholder = None if contact.first_name else _national(contact.phone)
    person: dict[str, Any] = {"type": "Person", "first_name": contact.first_name,
                              "last_name": contact.last_name or placeholder,
                              "phone_numbers": [{"name": "Mobile", "number": contact.phone, "default_number": True}]}
    if contact.email:
        person["email_addresses"] = [{"name": "Other", "address": contact.email, "default_email": True}]
    return {k: v for k, v in person.items() if v is not None}


def _contact_changes(record: dict, contact: ContactRecord) -> dict:
    changes: dict[str, Any] = {}
    placeholder = not record.get("first_name") and record.get("last_name") == _national(contact.phone)
    if placeholder and (contact.first_name or contact.last_name):
        changes.update(first_name=contact.first_name, last_name=contact.last_name)
    else:
        changes.update({name: value for name, value in (("first_name", contact.first_name),
                                                        ("last_name", contact.last_name))
                        if value and not record.get(name)})
    addresses = {(e.get("address") or "").lower() for e in record.get("email_addresses") or []}
    if contact.email and contact.email.lower() not in addresses:
        changes["email_addresses"] = [{"name": "Other", "address": contact.email, "default_email": not addresses}]
    if not any(_same_number(n.get("number"), contact.phone) for n in record.get("phone_numbers") or []):
        changes["phone_numbers"] = [{"name": "Mobile", "number": contact.phone,
                                     "default_number": not record.get("phone_numbers")}]
    return changes


def _parse(phone: str) -> phonenumbers.PhoneNumber:
    try:
        parsed = phonenumbers.parse(phone)
    except phonenumbers.NumberParseException as exc:
        raise Rejected(f"contact phone {phone!r} is not an E.164 number") from exc
    if not phone.startswith("+") or not phonenumbers.is_possible_number(parsed):
        raise Rejected(f"contact phone {phone!r} is not an E.164 number")
    return parsed


def _national(phone: str) -> str:
    return phonenumbers.format_number(_parse(phone), phonenumbers.PhoneNumberFormat.NATIONAL)


def _search_variants(phone: str) -> list[str]:
    """How staff are likely to have typed the number: E.164, national, international without the country code."""
    parsed = _parse(phone)
    international = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    local = international.removeprefix(f"+{parsed.country_code}").strip()
    return list(dict.fromkeys([phone, _national(phone), local]))


def _same_number(stored: str | None, e164: str) -> bool:
    """Whether a number as staff typed it is the E.164 number, read in that number's country."""
    if not stored:
        return False
    region = phonenumbers.region_code_for_country_code(_parse(e164).country_code)
    try:
        parsed = phonenumbers.parse(stored, region)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == e164

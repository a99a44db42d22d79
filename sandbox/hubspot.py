"""An in-memory HubSpot CRM (v3 objects, v4 default associations), served by `create_app`.

    sandbox = HubSpotSandbox({"pat-na1-test"})
    with serve(create_app(sandbox)) as served:
        client = HubSpot(access_token="pat-na1-test", host=served.url)

Object types: contacts, deals, notes, communications, meetings, each with the default
properties we use (`define_property` adds custom ones). Writes are validated as HubSpot
does: unknown or read-only properties, enumeration options, datetimes, required
properties and deal stages answer 400 VALIDATION_ERROR with HubSpot's error body, and a
contact email already in use answers 409 "Contact already exists. Existing ID: N".
Private-app bearer tokens only. Every answer except search carries the
X-HubSpot-RateLimit-* headers (HubSpot documents search as the exception); past
`burst_limit` requests in a rolling 10 s a token gets 429 with Retry-After.
`search_lag` delays a write's visibility to search, as HubSpot's search index does.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import phonenumbers
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from sandbox.common import Faults, IdSequence
from sandbox.hubspot_search import (
    DEFAULT_PROPERTIES,
    QUERY_PROPERTIES,
    SCHEMAS,
    HubSpotError,
    KindOf,
    PropertyDef,
    PropertyKind,
    SearchRequestError,
    bad_request,
    check_whole,
    clean_properties,
    created_property,
    iso,
    matches,
    modified_property,
    plan_search,
    sort_key,
)

OBJECT_TYPES = ("contacts", "deals", "notes", "communications", "meetings")
BATCH_LIMIT = 100
LIST_LIMIT = 100
WINDOW_SECONDS = 10
DEFAULT_PIPELINES = {"default": ("appointmentscheduled", "qualifiedtobuy", "presentationscheduled",
                                 "decisionmakerboughtin", "contractsent", "closedwon", "closedlost")}
# HUBSPOT_DEFINED default (unlabelled) association type ids, per direction.
ASSOCIATION_TYPE_IDS = {
    ("contacts", "deals"): 4, ("deals", "contacts"): 3,
    ("contacts", "notes"): 201, ("notes", "contacts"): 202,
    ("contacts", "meetings"): 199, ("meetings", "contacts"): 200,
    ("contacts", "communications"): 82, ("communications", "contacts"): 81,
}
_ALIASES = {"contact": "contacts", "0-1": "contacts", "deal": "deals", "0-3": "deals", "note": "notes",
            "0-46": "notes", "communication": "communications", "0-18": "communications",
            "meeting": "meetings", "0-47": "meetings"}


def _not_found() -> HubSpotError:
    return HubSpotError(404, "resource not found", "OBJECT_NOT_FOUND")


@dataclass
class _Record:
    id: str
    type: str
    properties: dict[str, str] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    updated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    searchable_from: float = 0.0
    archived_at: datetime | None = None


@dataclass(frozen=True)
class Admission:
    """The rate limiter's verdict on one request: headers to send, and the policy hit if refused."""

    headers: dict[str, str]
    policy: str | None = None
    retry_after: int | None = None


class HubSpotSandbox:
    """One HubSpot portal: CRM records, associations, tokens, rate budgets and scripted faults."""

    def __init__(self, tokens: set[str], *, burst_limit: int = 1000, daily_limit: int = 1_000_000,
                 search_lag: float = 0.0, default_region: str = "US") -> None:
        self.tokens = set(tokens)
        self.burst_limit = burst_limit
        self.daily_limit = daily_limit
        self.search_lag = search_lag
        self.default_region = default_region
        self.faults = Faults()
        self.pipelines: dict[str, tuple[str, ...]] = dict(DEFAULT_PIPELINES)
        self._schemas = {kind: {"hs_object_id": PropertyDef("number", read_only=True), **props}
                         for kind, props in SCHEMAS.items()}
        self._records: dict[str, dict[str, _Record]] = {kind: {} for kind in OBJECT_TYPES}
        self._links: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
        self._ids = IdSequence(1001)
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._daily: dict[str, int] = defaultdict(int)
        self._lock = threading.RLock()

    # --- inspection and seeding ----------------------------------------------------------

    def objects(self, object_type: str) -> list[dict]:
        """Every live record of a type, with all its properties, in id order."""
        kind = self._type(object_type)
        with self._lock:
            return [self._view(record, self._schemas[kind]) for record in self._live(kind)]

    def associations(self, from_type: str, from_id: str, to_type: str) -> list[str]:
        with self._lock:
            return sorted(self._links[(self._type(from_type), str(from_id), self._type(to_type))], key=int)

    def define_property(self, object_type: str, name: str, *, kind: PropertyKind = "string",
                        options: Iterable[str] = (), unique: bool = False) -> None:
        """Add a custom property, as a portal admin would."""
        with self._lock:
            self._schemas[self._type(object_type)][name] = PropertyDef(kind, tuple(options), unique=unique)

    # --- records -------------------------------------------------------------------------

    def create(self, object_type: str, properties: Any, associations: Any = None) -> dict:
        kind = self._type(object_type)
        with self._lock:
            record = self._insert(kind, *self._prepare_create(kind, properties, associations or [], set()))
            return self._view(record, None)

    def read(self, object_type: str, object_id: str, *, properties: list[str] | None = None,
             id_property: str | None = None, archived: bool = False) -> dict:
        kind = self._type(object_type)
        with self._lock:
            return self._view(self._find(kind, object_id, id_property, archived=archived), properties)

    def update(self, object_type: str, object_id: str, properties: Any, *, id_property: str | None = None) -> dict:
        kind = self._type(object_type)
        with self._lock:
            record = self._find(kind, object_id, id_property)
            self._apply(record, self._prepare_update(record, properties, set()))
            return self._view(record, None)

    def archive(self, object_type: str, object_id: str) -> None:
        kind = self._type(object_type)
        with self._lock:
            record = self._records[kind].get(str(object_id))
            if record is not None and record.archived_at is None:
                record.archived_at = datetime.now(timezone.utc)

    def page(self, object_type: str, *, limit: int, after: str | None, properties: list[str] | None,
             archived: bool, link: Callable[[str], str]) -> dict:
        kind = self._type(object_type)
        if not 0 < limit <= LIST_LIMIT:
            raise bad_request(f"limit must be between 1 and {LIST_LIMIT}")
        if after and not after.isdigit():
            raise bad_request(f"after must be a cursor returned in paging.next.after, not {after!r}")
        with self._lock:
            chosen = [record for record in self._records[kind].values()
                      if (record.archived_at is not None) == archived and int(record.id) >= int(after or 0)]
            chosen.sort(key=lambda record: int(record.id))
            body: dict[str, Any] = {"results": [self._view(record, properties) for record in chosen[:limit]]}
        if len(chosen) > limit:
            body["paging"] = {"next": {"after": chosen[limit].id, "link": link(chosen[limit].id)}}
        return body

    def search(self, object_type: str, body: dict) -> dict:
        kind = self._type(object_type)
        kind_of = self._kind_of(kind)
        try:
            plan = plan_search(body, kind_of)
        except SearchRequestError as exc:
            raise bad_request(str(exc)) from exc
        now = time.monotonic()
        with self._lock:
            found = [record for record in self._live(kind) if record.searchable_from <= now
                     and matches(plan, record.properties, kind_of, QUERY_PROPERTIES[kind])]
            by = sort_key(plan, kind_of)
            found.sort(key=lambda record: by(record.properties))
            answer: dict[str, Any] = {"total": len(found), "results": [
                self._view(record, plan.properties) for record in found[plan.offset:plan.offset + plan.limit]]}
        if plan.offset + plan.limit < len(found):
            answer["paging"] = {"next": {"after": str(plan.offset + plan.limit)}}
        return answer

    # --- batches (each validated as a whole before anything is written) -------------------

    def batch(self, object_type: str, operation: str, body: dict) -> tuple[int, dict | None]:
        kind = self._type(object_type)
        handlers = {"read": self._batch_read, "create": self._batch_create, "update": self._batch_update,
                    "upsert": self._batch_upsert, "archive": self._batch_archive}
        if operation not in handlers:
            raise _not_found()
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not all(isinstance(each, dict) for each in inputs):
            raise bad_request("`inputs` must be a list of objects")
        if len(inputs) > BATCH_LIMIT:
            raise bad_request(f"Batch input size {len(inputs)} exceeds the limit of {BATCH_LIMIT} inputs")
        started = iso(datetime.now(timezone.utc))
        with self._lock:
            status, results, errors = handlers[operation](kind, inputs, body)
        if status == 204:
            return status, None
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                                  "completedAt": iso(datetime.now(timezone.utc))}
        if errors:
            answer.update(numErrors=len(errors), errors=errors)
        return status, answer

    def _batch_read(self, kind: str, inputs: list[dict], body: dict) -> tuple[int, list, list]:
        found, missing = [], []
        for each in inputs:
            try:
                record = self._find(kind, each.get("id"), body.get("idProperty"))
                found.append(self._view(record, body.get("properties")))
            except HubSpotError:
                missing.append(str(each.get("id")))
        if not missing:
            return 200, found, []
        message = f"Could not get some {kind[:-1].upper()} objects, they may be deleted or not exist."
        return 207, found, [{"status": "error", "category": "OBJECT_NOT_FOUND", "message": message,
                             "context": {"ids": missing}, "errors": [], "links": {}}]

    def _batch_create(self, kind: str, inputs: list[dict], body: dict) -> tuple[int, list, list]:
        claimed: set[tuple[str, str]] = set()
        prepared = [self._prepare_create(kind, each.get("properties"), each.get("associations") or [], claimed)
                    for each in inputs]
        return 201, [self._view(self._insert(kind, *each), None) for each in prepared], []

    def _batch_update(self, kind: str, inputs: list[dict], body: dict) -> tuple[int, list, list]:
        claimed: set[tuple[str, str]] = set()
        targets = [self._find(kind, each.get("id"), each.get("idProperty")) for each in inputs]
        changes = [self._prepare_update(record, each.get("properties"), claimed)
                   for record, each in zip(targets, inputs)]
        for record, change in zip(targets, changes):
            self._apply(record, change)
        return 200, [self._view(record, None) for record in targets], []

    def _batch_upsert(self, kind: str, inputs: list[dict], body: dict) -> tuple[int, list, list]:
        claimed: set[tuple[str, str]] = set()
        plans: list[tuple[_Record | None, Any]] = []
        for each in inputs:
            id_property, value = each.get("idProperty"), str(each.get("id") or "")
            spec = self._schemas[kind].get(id_property or "")
            if spec is None or not spec.unique:
                raise bad_request(f"idProperty {id_property!r} is not a unique-value property of {kind}")
            holder = self._holder(kind, id_property, value)
            properties = {**(each.get("properties") or {}), id_property: value}
            if holder is None:
                plans.append((None, self._prepare_create(kind, properties, [], claimed)))
            else:
                record = self._records[kind][holder]
                plans.append((record, self._prepare_update(record, properties, claimed)))
        results = []
        for record, plan in plans:
            if record is None:
                results.append({**self._view(self._insert(kind, *plan), None), "new": True})
            else:
                self._apply(record, plan)
                results.append({**self._view(record, None), "new": False})
        return 200, results, []

    def _batch_archive(self, kind: str, inputs: list[dict], body: dict) -> tuple[int, list, list]:
        for each in inputs:
            self.archive(kind, str(each.get("id")))
        return 204, [], []

    # --- associations (v4) ---------------------------------------------------------------

    def associate_default(self, from_type: str, from_id: str, to_type: str, to_id: str) -> dict:
        source, target = self._type(from_type), self._type(to_type)
        if (source, target) not in ASSOCIATION_TYPE_IDS:
            raise bad_request(f"There is no default association from {source} to {target}")
        started = iso(datetime.now(timezone.utc))
        with self._lock:
            self._find(source, from_id, None)
            self._find(target, to_id, None)
            self._link(source, str(from_id), target, str(to_id))
        results = [{"from": {"id": str(a)}, "to": {"id": str(b)}, "associationSpec": {
            "associationCategory": "HUBSPOT_DEFINED", "associationTypeId": ASSOCIATION_TYPE_IDS[(x, y)]}}
            for a, x, b, y in ((from_id, source, to_id, target), (to_id, target, from_id, source))]
        return {"status": "COMPLETE", "results": results, "startedAt": started,
                "completedAt": iso(datetime.now(timezone.utc))}

    def association_page(self, from_type: str, from_id: str, to_type: str, *, limit: int, after: str | None) -> dict:
        source, target = self._type(from_type), self._type(to_type)
        with self._lock:
            self._find(source, from_id, None)
            linked = sorted(self._links[(source, str(from_id), target)].items(), key=lambda item: int(item[0]))
        chosen = [(to_id, type_id) for to_id, type_id in linked if int(to_id) >= int(after or 0)]
        body: dict[str, Any] = {"results": [
            {"toObjectId": int(to_id),
             "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None}]}
            for to_id, type_id in chosen[:limit]]}
        if len(chosen) > limit:
            body["paging"] = {"next": {"after": chosen[limit][0]}}
        return body

    # --- rate limits ---------------------------------------------------------------------

    def admit(self, token: str, *, search: bool = False) -> Admission:
        """Count one request against the token's budgets, or refuse it with the policy it hit."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent[token]
            while recent and now - recent[0] >= WINDOW_SECONDS:
                recent.popleft()
            policy, retry_after = None, None
            if self._daily[token] >= self.daily_limit:
                today = datetime.now(timezone.utc)
                midnight = (today + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
                policy, retry_after = "DAILY", math.ceil((midnight - today).total_seconds())
            elif len(recent) >= self.burst_limit:
                policy, retry_after = "TEN_SECONDLY_ROLLING", max(1, math.ceil(WINDOW_SECONDS - (now - recent[0])))
            else:
                recent.append(now)
                self._daily[token] += 1
            headers = {} if search else {
                "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
                "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - self._daily[token])),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(WINDOW_SECONDS * 1000),
                "X-HubSpot-RateLimit-Max": str(self.burst_limit),
                "X-HubSpot-RateLimit-Remaining": str(max(0, self.burst_limit - len(recent))),
            }
        return Admission(headers, policy, retry_after)

    # --- internals -----------------------------------------------------------------------

    def _type(self, object_type: str) -> str:
        kind = _ALIASES.get(object_type, object_type)
        if kind not in OBJECT_TYPES:
            raise bad_request(f"Unable to infer object type from: {object_type}")
        return kind

    def _kind_of(self, kind: str) -> KindOf:
        schema = self._schemas[kind]
        return lambda name: schema[name].kind if name in schema else None

    def _live(self, kind: str) -> list[_Record]:
        return sorted((r for r in self._records[kind].values() if r.archived_at is None), key=lambda r: int(r.id))

    def _find(self, kind: str, object_id: Any, id_property: str | None, *, archived: bool = False) -> _Record:
        key = str(object_id)
        if id_property and id_property != "hs_object_id":
            key = self._holder(kind, id_property, key) or ""
        record = self._records[kind].get(key)
        if record is None or (record.archived_at is not None) != archived:
            raise _not_found()
        return record

    def _holder(self, kind: str, name: str, value: str) -> str | None:
        for record in self._live(kind):
            if (record.properties.get(name) or "").lower() == value.lower():
                return record.id
        return None

    def _prepare_create(self, kind: str, properties: Any, associations: Any,
                        claimed: set[tuple[str, str]]) -> tuple[dict[str, str | None], list[tuple[str, str]]]:
        clean = clean_properties(self._schemas[kind], properties)
        if kind == "contacts" and not any(clean.values()):
            raise bad_request("A contact needs at least one property value")
        if kind == "deals":
            clean.setdefault("pipeline", "default")
        check_whole(kind, clean, self.pipelines)
        self._check_unique(kind, clean, None, claimed)
        return clean, self._creation_links(kind, associations)

    def _prepare_update(self, record: _Record, properties: Any, claimed: set[tuple[str, str]]) -> dict[str, str | None]:
        clean = clean_properties(self._schemas[record.type], properties)
        check_whole(record.type, {**record.properties, **clean}, self.pipelines)
        self._check_unique(record.type, clean, record.id, claimed)
        return clean

    def _check_unique(self, kind: str, clean: dict[str, str | None], own_id: str | None,
                      claimed: set[tuple[str, str]]) -> None:
        for name, value in clean.items():
            if value is None or not self._schemas[kind][name].unique:
                continue
            if (name, value.lower()) in claimed:
                raise bad_request(f"Duplicate {name} {value!r} in the batch inputs")
            claimed.add((name, value.lower()))
            holder = self._holder(kind, name, value)
            if holder is not None and holder != own_id:
                noun = "Contact" if kind == "contacts" else f"An object with this {name}"
                raise HubSpotError(409, f"{noun} already exists. Existing ID: {holder}", "CONFLICT")

    def _creation_links(self, kind: str, associations: Any) -> list[tuple[str, str]]:
        if not isinstance(associations, list):
            raise bad_request("`associations` must be a list")
        links = []
        for item in associations:
            to_id = str(((item or {}).get("to") or {}).get("id", ""))
            for spec in (item or {}).get("types") or []:
                target = next((to for (source, to), type_id in ASSOCIATION_TYPE_IDS.items()
                               if source == kind and type_id == spec.get("associationTypeId")), None)
                if spec.get("associationCategory") != "HUBSPOT_DEFINED" or target is None:
                    raise bad_request(f"{spec.get('associationCategory')} association type "
                                       f"{spec.get('associationTypeId')} is not valid from {kind}")
                if to_id not in {record.id for record in self._live(target)}:
                    raise bad_request(f"Cannot associate to {target} {to_id}: no such object")
                links.append((target, to_id))
        return links

    def _insert(self, kind: str, clean: dict[str, str | None], links: list[tuple[str, str]]) -> _Record:
        record = _Record(id=str(self._ids.next()), type=kind)
        self._records[kind][record.id] = record
        record.properties.update({"hs_object_id": record.id, created_property(kind): iso(record.created_at)})
        self._apply(record, clean)
        for target, to_id in links:
            self._link(kind, record.id, target, to_id)
        return record

    def _apply(self, record: _Record, clean: dict[str, str | None]) -> None:
        for name, value in clean.items():
            if value is None:
                record.properties.pop(name, None)
            else:
                record.properties[name] = value
        if record.type == "contacts":
            for source, target in (("phone", "hs_searchable_calculated_phone_number"),
                                   ("mobilephone", "hs_searchable_calculated_mobile_number")):
                digits = self._searchable_digits(record.properties.get(source))
                if digits:
                    record.properties[target] = digits
                else:
                    record.properties.pop(target, None)
        record.updated_at = datetime.now(timezone.utc)
        record.properties[modified_property(record.type)] = iso(record.updated_at)
        record.searchable_from = time.monotonic() + self.search_lag

    def _searchable_digits(self, phone: str | None) -> str | None:
        """HubSpot's calculated phone search key: the national number, without country code."""
        if not phone:
            return None
        try:
            digits = phonenumbers.national_significant_number(phonenumbers.parse(phone, self.default_region))
            return digits.lstrip("0") or None
        except phonenumbers.NumberParseException:
            return re.sub(r"\D", "", phone).lstrip("0") or None

    def _link(self, source: str, from_id: str, target: str, to_id: str) -> None:
        self._links[(source, from_id, target)][to_id] = ASSOCIATION_TYPE_IDS[(source, target)]
        self._links[(target, to_id, source)][from_id] = ASSOCIATION_TYPE_IDS[(target, source)]

    def _view(self, record: _Record, names: Iterable[str] | None) -> dict:
        kind = record.type
        wanted = ("hs_object_id", created_property(kind), modified_property(kind),
                  *(names if names is not None else DEFAULT_PROPERTIES.get(kind, ())))
        view: dict[str, Any] = {
            "id": record.id,
            "properties": {name: record.properties.get(name) for name in wanted if name in self._schemas[kind]},
            "createdAt": iso(record.created_at), "updatedAt": iso(record.updated_at),
            "archived": record.archived_at is not None,
        }
        if record.archived_at is not None:
            view["archivedAt"] = iso(record.archived_at)
        return view


# --- the HTTP face -------------------------------------------------------------------------

def create_app(sandbox: HubSpotSandbox) -> FastAPI:
    app = FastAPI(title="HubSpot sandbox")

    @app.exception_handler(HubSpotError)
    async def hubspot_error(request: Request, exc: HubSpotError) -> JSONResponse:
        return _error_response(exc)

    @app.middleware("http")
    async def gatekeeper(request: Request, call_next: Callable) -> Response:
        authorization = request.headers.get("authorization", "")
        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else None
        if token not in sandbox.tokens:
            return _error_response(HubSpotError(
                401, "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
                "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                "INVALID_AUTHENTICATION"))
        fault = sandbox.faults.take(request.url.path)
        if fault is not None:
            extra = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
            error = _rate_limited("TEN_SECONDLY_ROLLING") if fault["status"] == 429 else HubSpotError(
                fault["status"], "internal error", None)
            return _error_response(error, extra)
        admission = sandbox.admit(token, search=request.url.path.endswith("/search"))
        if admission.policy is not None:
            return _error_response(_rate_limited(admission.policy),
                                   {**admission.headers, "Retry-After": str(admission.retry_after)})
        response = await call_next(request)
        response.headers.update(admission.headers)
        return response

    @app.get("/crm/v3/objects/{object_type}")
    async def list_objects(object_type: str, request: Request) -> dict:
        query = request.query_params
        return sandbox.page(object_type, limit=_whole(query.get("limit"), 10), after=query.get("after"),
                            properties=_names(query.getlist("properties")), archived=_flag(query.get("archived")),
                            link=lambda after: str(request.url.include_query_params(after=after)))

    @app.post("/crm/v3/objects/{object_type}", status_code=201)
    async def create_object(object_type: str, request: Request) -> dict:
        body = await _body(request)
        return sandbox.create(object_type, body.get("properties"), body.get("associations") or [])

    @app.post("/crm/v3/objects/{object_type}/search")
    async def search_objects(object_type: str, request: Request) -> dict:
        return sandbox.search(object_type, await _body(request))

    @app.post("/crm/v3/objects/{object_type}/batch/{operation}")
    async def batch(object_type: str, operation: str, request: Request) -> Response:
        status, body = sandbox.batch(object_type, operation, await _body(request))
        return Response(status_code=204) if body is None else JSONResponse(body, status_code=status)

    @app.get("/crm/v3/objects/{object_type}/{object_id}")
    async def read_object(object_type: str, object_id: str, request: Request) -> dict:
        query = request.query_params
        return sandbox.read(object_type, object_id, properties=_names(query.getlist("properties")),
                            id_property=query.get("idProperty"), archived=_flag(query.get("archived")))

    @app.patch("/crm/v3/objects/{object_type}/{object_id}")
    async def update_object(object_type: str, object_id: str, request: Request) -> dict:
        body = await _body(request)
        return sandbox.update(object_type, object_id, body.get("properties"),
                              id_property=request.query_params.get("idProperty"))

    @app.delete("/crm/v3/objects/{object_type}/{object_id}", status_code=204)
    async def archive_object(object_type: str, object_id: str) -> Response:
        sandbox.archive(object_type, object_id)
        return Response(status_code=204)

    @app.put("/crm/v4/objects/{from_type}/{from_id}/associations/default/{to_type}/{to_id}")
    async def associate(from_type: str, from_id: str, to_type: str, to_id: str) -> dict:
        return sandbox.associate_default(from_type, from_id, to_type, to_id)

    @app.get("/crm/v4/objects/{from_type}/{from_id}/associations/{to_type}")
    async def list_associations(from_type: str, from_id: str, to_type: str, request: Request) -> dict:
        query = request.query_params
        return sandbox.association_page(from_type, from_id, to_type, limit=_whole(query.get("limit"), 500),
                                        after=query.get("after"))

    return app


def _rate_limited(policy: str) -> HubSpotError:
    return HubSpotError(429, f"You have reached your {policy.lower()} limit.", "RATE_LIMITS",
                        errorType="RATE_LIMIT", policyName=policy)


def _error_response(error: HubSpotError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body, status_code=error.status,
                        headers={"X-HubSpot-Correlation-Id": error.body["correlationId"], **(headers or {})})


async def _body(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("Invalid input JSON: the request body is not JSON") from None
    if not isinstance(body, dict):
        raise bad_request("Invalid input JSON: the request body must be a JSON object")
    return body


def _names(values: list[str]) -> list[str] | None:
    names = [name for value in values for name in value.split(",") if name]
    return names or None


def _flag(raw: str | None) -> bool:
    return (raw or "").lower() == "true"


def _whole(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"{raw!r} is not a whole number") from None

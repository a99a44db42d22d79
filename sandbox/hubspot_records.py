"""The records of one HubSpot portal: v3 objects, batches, search and v4 default associations.

Object types and their properties are sandbox.hubspot_properties'. Every write is validated as a
whole before anything is stored; a value a unique-value property already holds answers 409
"... already exists. Existing ID: N"; a record reaches search `search_lag` seconds after a write,
as HubSpot's index lags. Each write is told to `on_change` (how webhooks hear about it).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sandbox.common import IdSequence
from sandbox.hubspot_properties import (
    ASSOCIATION_TYPE_IDS,
    DEFAULT_PIPELINES,
    DEFAULT_PROPERTIES,
    OBJECT_ALIASES,
    OBJECT_TYPES,
    HubSpotError,
    PropertyDef,
    PropertyRegistry,
    bad_request,
    check_whole,
    clean_properties,
    created_property,
    iso,
    modified_property,
    not_found,
    searchable_digits,
)
from sandbox.hubspot_search import QUERY_PROPERTIES, KindOf, SearchRequestError, matches, plan_search, sort_key

Change = Callable[[str, str, str, dict, str], None]  # kind, creation|propertyChange|deletion, id, changed, source

BATCH_LIMIT = 100
ASSOCIATION_BATCH_LIMIT = 2000  # the v4 batch association endpoints take up to 2,000 inputs
LIST_LIMIT = 100
ASSOCIATION_PAGE = 500  # associations per id in one batch read answer


@dataclass
class _Record:
    id: str
    type: str
    properties: dict[str, str] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    updated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    searchable_from: float = 0.0
    archived_at: datetime | None = None


class HubSpotRecords:
    """CRM records and their associations; thread-safe. Views are plain dicts in HubSpot's shape."""

    def __init__(self, properties: PropertyRegistry, *, search_lag: float = 0.0, default_region: str = "US",
                 on_change: Change | None = None) -> None:
        self.properties = properties
        self.search_lag = search_lag
        self.default_region = default_region
        self.on_change = on_change or (lambda *change: None)
        self.pipelines: dict[str, tuple[str, ...]] = dict(DEFAULT_PIPELINES)
        self.batch_calls: list[tuple[str, str, int]] = []  # (operation, object type, inputs) of each batch call
        self._records: dict[str, dict[str, _Record]] = {kind: {} for kind in OBJECT_TYPES}
        self._links: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
        self._ids = IdSequence(1001)
        self._lock = threading.RLock()

    def objects(self, object_type: str) -> list[dict]:
        """Every live record of a type, with all its properties, in id order."""
        kind = self.kind(object_type)
        with self._lock:
            return [self._view(record, self._schema(kind)) for record in self._live(kind)]

    def associations(self, from_type: str, from_id: str, to_type: str) -> list[str]:
        with self._lock:
            return sorted(self._links[(self.kind(from_type), str(from_id), self.kind(to_type))], key=int)

    # --- records -------------------------------------------------------------------------

    def create(self, object_type: str, properties: Any, associations: Any = None, *, source: str = "CRM_UI") -> dict:
        kind = self.kind(object_type)
        with self._lock:
            record = self._insert(kind, *self._prepare_create(kind, properties, associations or [], set()), source)
            return self._view(record, None)

    def read(self, object_type: str, object_id: str, *, properties: list[str] | None = None,
             id_property: str | None = None, archived: bool = False) -> dict:
        kind = self.kind(object_type)
        with self._lock:
            return self._view(self._find(kind, object_id, id_property, archived=archived), properties)

    def update(self, object_type: str, object_id: str, properties: Any, *, id_property: str | None = None,
               source: str = "CRM_UI") -> dict:
        kind = self.kind(object_type)
        with self._lock:
            record = self._find(kind, object_id, id_property)
            self._apply(record, self._prepare_update(record, properties, set()), source)
            return self._view(record, None)

    def archive(self, object_type: str, object_id: str, *, source: str = "CRM_UI") -> None:
        kind = self.kind(object_type)
        with self._lock:
            record = self._records[kind].get(str(object_id))
            if record is not None and record.archived_at is None:
                record.archived_at = datetime.now(timezone.utc)
                self.on_change(kind, "deletion", record.id, {}, source)

    def page(self, object_type: str, *, limit: int, after: str | None, properties: list[str] | None,
             archived: bool, link: Callable[[str], str]) -> dict:
        kind = self.kind(object_type)
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
        kind = self.kind(object_type)
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

    def batch(self, object_type: str, operation: str, body: dict, *, source: str = "CRM_UI") -> tuple[int, dict | None]:
        kind = self.kind(object_type)
        handlers = {"read": self._batch_read, "create": self._batch_create, "update": self._batch_update,
                    "upsert": self._batch_upsert, "archive": self._batch_archive}
        if operation not in handlers:
            raise not_found()
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not all(isinstance(each, dict) for each in inputs):
            raise bad_request("`inputs` must be a list of objects")
        if len(inputs) > BATCH_LIMIT:
            raise bad_request(f"Batch input size {len(inputs)} exceeds the limit of {BATCH_LIMIT} inputs")
        self.batch_calls.append((operation, kind, len(inputs)))
        started = iso(datetime.now(timezone.utc))
        with self._lock:
            status, results, errors = handlers[operation](kind, inputs, body, source)
        if status == 204:
            return status, None
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                                  "completedAt": iso(datetime.now(timezone.utc))}
        if errors:
            answer.update(numErrors=len(errors), errors=errors)
        return status, answer

    def _batch_read(self, kind: str, inputs: list[dict], body: dict, source: str) -> tuple[int, list, list]:
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

    def _batch_create(self, kind: str, inputs: list[dict], body: dict, source: str) -> tuple[int, list, list]:
        claimed: set[tuple[str, str]] = set()
        prepared = [self._prepare_create(kind, each.get("properties"), each.get("associations") or [], claimed)
                    for each in inputs]
        return 201, [self._view(self._insert(kind, *each, source), None) for each in prepared], []

    def _batch_update(self, kind: str, inputs: list[dict], body: dict, source: str) -> tuple[int, list, list]:
        claimed: set[tuple[str, str]] = set()
        targets = [self._find(kind, each.get("id"), each.get("idProperty")) for each in inputs]
        changes = [self._prepare_update(record, each.get("properties"), claimed)
                   for record, each in zip(targets, inputs)]
        for record, change in zip(targets, changes):
            self._apply(record, change, source)
        return 200, [self._view(record, None) for record in targets], []

    def _batch_upsert(self, kind: str, inputs: list[dict], body: dict, source: str) -> tuple[int, list, list]:
        claimed: set[tuple[str, str]] = set()
        plans: list[tuple[_Record | None, Any]] = []
        for each in inputs:
            id_property, value = each.get("idProperty"), str(each.get("id") or "")
            spec = self._schema(kind).get(id_property or "")
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
                results.append({**self._view(self._insert(kind, *plan, source), None), "new": True})
            else:
                self._apply(record, plan, source)
                results.append({**self._view(record, None), "new": False})
        return 200, results, []

    def _batch_archive(self, kind: str, inputs: list[dict], body: dict, source: str) -> tuple[int, list, list]:
        for each in inputs:
            self.archive(kind, str(each.get("id")), source=source)
        return 204, [], []

    # --- associations (v4) ---------------------------------------------------------------

    def associate_default(self, from_type: str, from_id: str, to_type: str, to_id: str) -> dict:
        source, target = self.kind(from_type), self.kind(to_type)
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

    def associate_default_batch(self, from_type: str, to_type: str, inputs: list[dict]) -> tuple[int, dict]:
        """POST /crm/v4/associations/{from}/{to}/batch/associate/default: the default association for each
        {from: {id}, to: {id}} pair, answered in both directions as the single PUT is. Pairs naming a record
        that does not exist (or is archived) are left out and listed as errors in a 207, the rest are made."""
        source, target = self.kind(from_type), self.kind(to_type)
        if (source, target) not in ASSOCIATION_TYPE_IDS:
            raise bad_request(f"There is no default association from {source} to {target}")
        if len(inputs) > ASSOCIATION_BATCH_LIMIT:
            raise bad_request(f"Batch input size {len(inputs)} exceeds the limit of {ASSOCIATION_BATCH_LIMIT} inputs")
        self.batch_calls.append(("associate", source, len(inputs)))
        started = iso(datetime.now(timezone.utc))
        results, missing = [], []
        with self._lock:
            for each in inputs:
                from_id, to_id = str(each["from"]["id"]), str(each["to"]["id"])
                try:
                    self._find(source, from_id, None)
                    self._find(target, to_id, None)
                except HubSpotError:
                    missing.append(f"{from_id}->{to_id}")
                    continue
                self._link(source, from_id, target, to_id)
                results += [{"from": {"id": a}, "to": {"id": b}, "associationSpec": {
                    "associationCategory": "HUBSPOT_DEFINED", "associationTypeId": ASSOCIATION_TYPE_IDS[(x, y)]}}
                    for a, x, b, y in ((from_id, source, to_id, target), (to_id, target, from_id, source))]
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                                "completedAt": iso(datetime.now(timezone.utc))}
        if not missing:
            return 200, body
        body.update(numErrors=len(missing), errors=[{
            "status": "error", "category": "OBJECT_NOT_FOUND", "message": "No such object for these associations",
            "context": {"pairs": missing}, "errors": [], "links": {}}])
        return 207, body

    def association_batch_read(self, from_type: str, to_type: str, inputs: list[dict]) -> tuple[int, dict]:
        """POST /crm/v4/associations/{from}/{to}/batch/read: each {id, after}'s associated records of the type, a
        page of ASSOCIATION_PAGE per id. An id with none, or no such record, is an error of a 207 rather than a
        result (as users report of HubSpot; unverified in its reference, so textback reads both the same)."""
        source, target = self.kind(from_type), self.kind(to_type)
        if len(inputs) > ASSOCIATION_BATCH_LIMIT:
            raise bad_request(f"Batch input size {len(inputs)} exceeds the limit of {ASSOCIATION_BATCH_LIMIT} inputs")
        self.batch_calls.append(("read associations", target, len(inputs)))
        started = iso(datetime.now(timezone.utc))
        results, empty = [], []
        with self._lock:
            live = {record.id for record in self._live(source)}
            for each in inputs:
                from_id, after = str(each.get("id")), int(each.get("after") or 0)
                links = self._links[(source, from_id, target)].items() if from_id in live else ()
                linked = sorted((int(to_id), type_id) for to_id, type_id in links)
                chosen = [(to_id, type_id) for to_id, type_id in linked if to_id >= after]
                if not chosen:
                    empty.append(from_id)
                    continue
                result: dict[str, Any] = {"from": {"id": from_id}, "to": [
                    {"toObjectId": to_id, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": type_id,
                                                                "label": None}]}
                    for to_id, type_id in chosen[:ASSOCIATION_PAGE]]}
                if len(chosen) > ASSOCIATION_PAGE:
                    result["paging"] = {"next": {"after": str(chosen[ASSOCIATION_PAGE][0])}}
                results.append(result)
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                                "completedAt": iso(datetime.now(timezone.utc))}
        if not empty:
            return 200, body
        body.update(numErrors=len(empty), errors=[{
            "status": "error", "category": "OBJECT_NOT_FOUND",
            "message": f"No {target} is associated with {source} {each}",
            "context": {"fromObjectId": [each]}, "errors": [], "links": {}} for each in empty])
        return 207, body

    def association_page(self, from_type: str, from_id: str, to_type: str, *, limit: int, after: str | None) -> dict:
        source, target = self.kind(from_type), self.kind(to_type)
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

    # --- internals -----------------------------------------------------------------------

    def kind(self, object_type: str) -> str:
        kind = OBJECT_ALIASES.get(object_type, object_type)
        if kind not in OBJECT_TYPES:
            raise bad_request(f"Unable to infer object type from: {object_type}")
        return kind

    def _schema(self, kind: str) -> dict[str, PropertyDef]:
        return self.properties.schema(kind)

    def _kind_of(self, kind: str) -> KindOf:
        schema = self._schema(kind)
        return lambda name: schema[name].kind if name in schema else None

    def _live(self, kind: str) -> list[_Record]:
        return sorted((r for r in self._records[kind].values() if r.archived_at is None), key=lambda r: int(r.id))

    def _find(self, kind: str, object_id: Any, id_property: str | None, *, archived: bool = False) -> _Record:
        key = str(object_id)
        if id_property and id_property != "hs_object_id":
            spec = self._schema(kind).get(id_property)
            if spec is None or not spec.unique:
                raise bad_request(f"Unable to perform get/update by non-unique {kind} property {id_property}")
            key = self._holder(kind, id_property, key) or ""
        record = self._records[kind].get(key)
        if record is None or (record.archived_at is not None) != archived:
            raise not_found()
        return record

    def _holder(self, kind: str, name: str, value: str) -> str | None:
        for record in self._live(kind):
            if (record.properties.get(name) or "").lower() == value.lower():
                return record.id
        return None

    def _prepare_create(self, kind: str, properties: Any, associations: Any,
                        claimed: set[tuple[str, str]]) -> tuple[dict[str, str | None], list[tuple[str, str]]]:
        clean = clean_properties(self._schema(kind), properties)
        if kind == "contacts" and not any(clean.values()):
            raise bad_request("A contact needs at least one property value")
        if kind == "deals":
            clean.setdefault("pipeline", "default")
        check_whole(kind, clean, self.pipelines)
        self._check_unique(kind, clean, None, claimed)
        return clean, self._creation_links(kind, associations)

    def _prepare_update(self, record: _Record, properties: Any, claimed: set[tuple[str, str]]) -> dict[str, str | None]:
        clean = clean_properties(self._schema(record.type), properties)
        check_whole(record.type, {**record.properties, **clean}, self.pipelines)
        self._check_unique(record.type, clean, record.id, claimed)
        return clean

    def _check_unique(self, kind: str, clean: dict[str, str | None], own_id: str | None,
                      claimed: set[tuple[str, str]]) -> None:
        for name, value in clean.items():
            if value is None or not self._schema(kind)[name].unique:
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

    def _insert(self, kind: str, clean: dict[str, str | None], links: list[tuple[str, str]], source: str) -> _Record:
        record = _Record(id=str(self._ids.next()), type=kind)
        self._records[kind][record.id] = record
        record.properties.update({"hs_object_id": record.id, created_property(kind): iso(record.created_at)})
        self.on_change(kind, "creation", record.id, {}, source)
        self._apply(record, clean, source)
        for target, to_id in links:
            self._link(kind, record.id, target, to_id)
        return record

    def _apply(self, record: _Record, clean: dict[str, str | None], source: str) -> None:
        changed = {name: value for name, value in clean.items() if record.properties.get(name) != value}
        for name, value in clean.items():
            if value is None:
                record.properties.pop(name, None)
            else:
                record.properties[name] = value
        if record.type == "contacts":
            for typed, searchable in (("phone", "hs_searchable_calculated_phone_number"),
                                      ("mobilephone", "hs_searchable_calculated_mobile_number")):
                digits = searchable_digits(record.properties.get(typed), self.default_region)
                if digits:
                    record.properties[searchable] = digits
                else:
                    record.properties.pop(searchable, None)
        record.updated_at = datetime.now(timezone.utc)
        record.properties[modified_property(record.type)] = iso(record.updated_at)
        record.searchable_from = time.monotonic() + self.search_lag
        if changed:
            self.on_change(record.type, "propertyChange", record.id, changed, source)

    def _link(self, source: str, from_id: str, target: str, to_id: str) -> None:
        self._links[(source, from_id, target)][to_id] = ASSOCIATION_TYPE_IDS[(source, target)]
        self._links[(target, to_id, source)][from_id] = ASSOCIATION_TYPE_IDS[(target, source)]

    def _view(self, record: _Record, names: Iterable[str] | None) -> dict:
        kind = record.type
        wanted = ("hs_object_id", created_property(kind), modified_property(kind),
                  *(names if names is not None else DEFAULT_PROPERTIES.get(kind, ())))
        view: dict[str, Any] = {
            "id": record.id,
            "properties": {name: record.properties.get(name) for name in wanted if name in self._schema(kind)},
            "createdAt": iso(record.created_at), "updatedAt": iso(record.updated_at),
            "archived": record.archived_at is not None,
        }
        if record.archived_at is not None:
            view["archivedAt"] = iso(record.archived_at)
        return view



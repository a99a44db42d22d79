"""The records of one Clio Manage account, validated as Clio validates them.

Every write checks the whole record it would leave behind (required fields, enumerations,
references to records that exist) and answers 422 ValidationError otherwise. Lists a
record owns (a contact's phone numbers, a calendar entry's attendees) follow Clio's
nested-attribute rules: an item without `id` is added, one with `id` is changed, and one
with `_destroy` (`deleted` for communication parties) is removed. Each change bumps the
record's ETag and is reported to `on_change`, which is how webhooks hear about it.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from datetime import date, datetime, timezone
from typing import Any

from sandbox.clio_fields import SCHEMAS, ClioError, etag_for, invalid, not_found, now
from sandbox.clio_webhooks import prepare_webhook
from sandbox.common import IdSequence

Change = Callable[[str, str, dict | None, dict | None], None]  # kind, "created|updated|deleted", before, after

PHONE_NAMES = ("Work", "Home", "Mobile", "Fax", "Pager", "Skype", "Other")
EMAIL_NAMES = ("Work", "Home", "Other")
MATTER_STATUSES = ("Open", "Pending", "Closed")


class ClioStore:
    """Thread-safe records by kind; public methods return copies."""

    def __init__(self, *, on_change: Change | None = None) -> None:
        self._records: dict[str, dict[int, dict]] = {kind: {} for kind in SCHEMAS}
        self._ids = IdSequence(10_000_001)
        self._item_ids = IdSequence(50_000_001)
        self._matter_numbers = IdSequence(1)
        self._lock = threading.RLock()
        self.on_change = on_change

    # --- reads ------------------------------------------------------------------------

    def get(self, kind: str, record_id: Any) -> dict:
        with self._lock:
            return copy.deepcopy(self._find(kind, record_id))

    def all(self, kind: str) -> list[dict]:
        with self._lock:
            return copy.deepcopy(sorted(self._records[kind].values(), key=lambda r: r["id"]))

    def lookup(self, kind: str, record_id: Any) -> dict | None:
        """The stored record or None; the caller holds no lock, so only use it to render."""
        return self._records[kind].get(_int(record_id))

    # --- writes -----------------------------------------------------------------------

    def insert(self, kind: str, attrs: Mapping[str, Any]) -> dict:
        """Seed a record as-is (users, calendars, practice areas are set up in Clio's UI, not the API)."""
        with self._lock:
            record = self._new(kind)
            record.update(attrs)
            return copy.deepcopy(record)

    def create(self, kind: str, data: Any) -> dict:
        with self._lock:
            changes = _PREPARE[kind](self, _object(data), None)
            record = self._new(kind)
            record.update(changes)
            _FINISH.get(kind, _nothing)(self, record, None)
            after = copy.deepcopy(record)
        self._notify(kind, "created", None, after)
        return copy.deepcopy(after)

    def update(self, kind: str, record_id: Any, data: Any, *, if_match: str | None = None) -> dict:
        with self._lock:
            record = self._find(kind, record_id)
            if if_match is not None and if_match not in (record["etag"], "*"):
                raise ClioError(412, "PreconditionFailed",
                                "The resource has been modified since it was read; its ETag no longer matches")
            before = copy.deepcopy(record)
            merged = {**copy.deepcopy(record), **_PREPARE[kind](self, _object(data), record)}
            _FINISH.get(kind, _nothing)(self, merged, before)
            merged["_version"] += 1
            merged["etag"] = etag_for(kind, merged["id"], merged["_version"])
            merged["updated_at"] = now()
            record.clear()
            record.update(merged)
            after = copy.deepcopy(record)
        self._notify(kind, "updated", before, after)
        return copy.deepcopy(after)

    def set_state(self, kind: str, record_id: Any, **attrs: Any) -> None:
        """Change what Clio itself changes (a webhook's status), bypassing the API's validation."""
        with self._lock:
            record = self._find(kind, record_id)
            record.update(attrs, _version=record["_version"] + 1, updated_at=now())
            record["etag"] = etag_for(kind, record["id"], record["_version"])

    def delete(self, kind: str, record_id: Any) -> None:
        with self._lock:
            before = self._records[kind].pop(self._find(kind, record_id)["id"])
        self._notify(kind, "deleted", before, None)

    def _new(self, kind: str) -> dict:
        record_id, stamp = self._ids.next(), now()
        record = {"id": record_id, "_version": 1, "etag": etag_for(kind, record_id, 1),
                  "created_at": stamp, "updated_at": stamp}
        self._records[kind][record_id] = record
        return record

    def _find(self, kind: str, record_id: Any) -> dict:
        record = self._records[kind].get(_int(record_id))
        if record is None:
            raise not_found(kind, record_id)
        return record

    def reference(self, kind: str, value: Any, name: str, *, required: bool) -> int | None:
        if value is None:
            if required:
                raise invalid(f"{_human(name)} can't be blank")
            return None
        ref_id = _int(value.get("id")) if isinstance(value, dict) else None
        if ref_id is None or ref_id not in self._records[kind]:
            raise invalid(f"{_human(name)} must exist")
        return ref_id

    def _notify(self, kind: str, event: str, before: dict | None, after: dict | None) -> None:
        if self.on_change is not None:
            self.on_change(kind, event, before, after)

    def owned_items(self, current: list[dict], given: Any, name: str, fill: Callable[[dict, dict], None], *,
                    primary: str) -> list[dict]:
        """Apply Clio's nested-attribute rules to a list the record owns; the item last made default is the one."""
        if not isinstance(given, list) or not all(isinstance(each, dict) for each in given):
            raise invalid(f"{_human(name)} must be a list of objects")
        items = copy.deepcopy(current)
        for each in given:
            if each.get("id") is not None:
                item = next((i for i in items if i["id"] == _int(each["id"])), None)
                if item is None:
                    raise invalid(f"{_human(name)} {each['id']} does not belong to this record")
                if each.get("_destroy"):
                    items.remove(item)
                    continue
            else:
                stamp, item_id = now(), self._item_ids.next()
                item = {"id": item_id, "etag": etag_for(name, item_id, 1), "created_at": stamp, "updated_at": stamp}
                items.append(item)
            fill(item, each)
            if each.get(primary):
                for other in items:
                    other["primary"] = other is item
        return items


# --- per-resource rules ------------------------------------------------------------------

def _contact(store: ClioStore, data: dict, current: dict | None) -> dict:
    out: dict[str, Any] = {}
    if current is None:
        if data.get("type") not in ("Person", "Company"):
            raise invalid("Type must be Person or Company")
        out["type"] = data["type"]
    for name in ("first_name", "middle_name", "last_name", "title", "prefix", "name"):
        if name in data:
            out[name] = _text(data[name], name)
    if "phone_numbers" in data:
        out["phone_numbers"] = store.owned_items((current or {}).get("phone_numbers", []), data["phone_numbers"],
                                                 "phone_numbers", _phone_number, primary="default_number")
    if "email_addresses" in data:
        out["email_addresses"] = store.owned_items((current or {}).get("email_addresses", []),
                                                   data["email_addresses"], "email_addresses", _email_address,
                                                   primary="default_email")
    if "custom_field_values" in data:
        # Clio names the field by `custom_field: {id}`; the sandbox keys its values by the field's name.
        out["custom_field_values"] = store.owned_items((current or {}).get("custom_field_values", []),
                                                       data["custom_field_values"], "custom_field_values",
                                                       _custom_value, primary="_never")
    return out


def _custom_value(item: dict, given: dict) -> None:
    name = given.get("field_name") or item.get("field_name") or (given.get("custom_field") or {}).get("id")
    if not name:
        raise invalid("Custom field values need a field_name or custom_field")
    item["field_name"], item["value"] = str(name), given.get("value")


def _finish_contact(store: ClioStore, record: dict, before: dict | None) -> None:
    if record["type"] == "Person":
        parts = [record.get(n) for n in ("first_name", "middle_name", "last_name")]
        if not (record.get("first_name") or record.get("last_name")):
            raise invalid("First name or last name must be present")
        record["name"] = " ".join(p for p in parts if p)
    elif not record.get("name"):
        raise invalid("Name can't be blank")
    record.setdefault("is_client", False)
    for items, flag, value, target in (("phone_numbers", "primary", "number", "primary_phone_number"),
                                       ("email_addresses", "primary", "address", "primary_email_address")):
        listed = record.setdefault(items, [])
        if listed and not any(i[flag] for i in listed):
            listed[0][flag] = True
        record[target] = next((i[value] for i in listed if i[flag]), None)


def _phone_number(item: dict, given: dict) -> None:
    _labelled(item, given, value="number", names=PHONE_NAMES, primary="default_number", what="Phone number")


def _email_address(item: dict, given: dict) -> None:
    _labelled(item, given, value="address", names=EMAIL_NAMES, primary="default_email", what="Email address")


def _labelled(item: dict, given: dict, *, value: str, names: tuple[str, ...], primary: str, what: str) -> None:
    if value in given or value not in item:
        item[value] = _text(given.get(value), value)
        if not item[value]:
            raise invalid(f"{what} can't be blank")
    label = given.get("name", item.get("name", "Other"))
    if label not in names:
        raise invalid(f"{what} name must be one of {', '.join(names)}")
    item["name"] = label
    item["primary"] = bool(given.get(primary, item.get("primary", False)))
    item["updated_at"] = now()


def _matter(store: ClioStore, data: dict, current: dict | None) -> dict:
    out: dict[str, Any] = {}
    if current is None or "client" in data:
        out["client"] = store.reference("contacts", data.get("client"), "client", required=True)
    if current is None or "description" in data:
        out["description"] = _text(data.get("description"), "description")
        if not out["description"]:
            raise invalid("Description can't be blank")
    if "practice_area" in data:
        out["practice_area"] = store.reference("practice_areas", data["practice_area"], "practice_area", required=False)
    if "status" in data or current is None:
        raw = data.get("status") or "Open"
        status = next((s for s in MATTER_STATUSES if isinstance(raw, str) and raw.lower() == s.lower()), None)
        if status is None:
            raise invalid(f"Status must be one of {', '.join(MATTER_STATUSES)}")
        out["status"] = status
    if "billable" in data:
        out["billable"] = bool(data["billable"])
    return out


def _finish_matter(store: ClioStore, record: dict, before: dict | None) -> None:
    record.setdefault("billable", True)
    if before is None:
        record["number"] = store._matter_numbers.next()
    if before is None or before["status"] != record["status"]:
        record[f"{record['status'].lower()}_date"] = date.today()
    client = store.lookup("contacts", record["client"]) or {}
    record["display_number"] = f"{record['number']:05d}-{client.get('last_name') or client.get('name') or ''}"


def _communication(store: ClioStore, data: dict, current: dict | None) -> dict:
    out: dict[str, Any] = {}
    if current is None or "type" in data:
        if data.get("type") not in ("PhoneCommunication", "EmailCommunication"):
            raise invalid("Type must be PhoneCommunication or EmailCommunication")
        out["type"] = data["type"]
    for name in ("subject", "body"):
        if current is None or name in data:
            out[name] = _text(data.get(name), name)
            if out[name] is None:
                raise invalid(f"{_human(name)} can't be blank")
    if "date" in data or current is None:
        out["date"] = _date(data.get("date"), "date") or date.today()
    if "received_at" in data:
        out["received_at"] = _datetime(data["received_at"], "received_at")
    if "matter" in data:
        out["matter"] = store.reference("matters", data["matter"], "matter", required=False)
    for side in ("senders", "receivers"):
        if side in data:
            out[side] = _parties(store, (current or {}).get(side, []), data[side], side,
                                 {"Contact": "contacts", "User": "users"}, removed="deleted")
    return out


def _note(store: ClioStore, data: dict, current: dict | None) -> dict:
    out: dict[str, Any] = {}
    if current is None:
        if data.get("type") not in ("Contact", "Matter"):
            raise invalid("Type must be Contact or Matter")
        out["type"] = data["type"]
        owner = data["type"].lower()
        out[owner] = store.reference(f"{owner}s", data.get(owner), owner, required=True)
    for name in ("subject", "detail"):
        if name in data:
            out[name] = _text(data[name], name)
    if "detail_text_type" in data or current is None:
        out["detail_text_type"] = data.get("detail_text_type") or "plain_text"
        if out["detail_text_type"] not in ("plain_text", "rich_text"):
            raise invalid("Detail text type must be plain_text or rich_text")
    if "date" in data or current is None:
        out["date"] = _date(data.get("date"), "date") or date.today()
    return out


def _calendar_entry(store: ClioStore, data: dict, current: dict | None) -> dict:
    out: dict[str, Any] = {}
    for name in ("summary", "start_at", "end_at"):
        if current is None or name in data:
            value = _text(data.get(name), name) if name == "summary" else _datetime(data.get(name), name)
            if not value:
                raise invalid(f"{_human(name)} can't be blank")
            out[name] = value
    for name in ("description", "location"):
        if name in data:
            out[name] = _text(data[name], name)
    if "all_day" in data:
        out["all_day"] = bool(data["all_day"])
    if current is None or "calendar_owner" in data:
        out["calendar_owner"] = store.reference("calendars", data.get("calendar_owner"), "calendar_owner",
                                                required=True)
    if "matter" in data:
        out["matter"] = store.reference("matters", data["matter"], "matter", required=False)
    if "attendees" in data:
        out["attendees"] = _parties(store, (current or {}).get("attendees", []), data["attendees"], "attendees",
                                    {"Contact": "contacts", "Calendar": "calendars"}, removed="_destroy")
    return out


def _finish_calendar_entry(store: ClioStore, record: dict, before: dict | None) -> None:
    record.setdefault("all_day", False)
    if record["end_at"] < record["start_at"]:
        raise invalid("End at must be after start at")


def _parties(store: ClioStore, current: list[dict], given: Any, name: str, kinds: dict[str, str],
             *, removed: str) -> list[dict]:
    if not isinstance(given, list) or not all(isinstance(each, dict) for each in given):
        raise invalid(f"{_human(name)} must be a list of objects")
    parties = copy.deepcopy(current)
    for each in given:
        if each.get("type") not in kinds:
            raise invalid(f"{_human(name)} type must be one of {', '.join(kinds)}")
        key = (each["type"], _int(each.get("id")))
        parties = [p for p in parties if (p["type"], p["id"]) != key]
        if not each.get(removed):
            target = store.lookup(kinds[each["type"]], key[1])
            if target is None:
                raise invalid(f"{_human(name)} {each['type']} {each.get('id')} must exist")
            parties.append({"id": key[1], "type": each["type"], "name": target.get("name")})
    return parties


def _nothing(store: ClioStore, record: dict, before: dict | None) -> None:
    pass


_PREPARE: dict[str, Callable[[ClioStore, dict, dict | None], dict]] = {
    "contacts": _contact, "matters": _matter, "communications": _communication, "notes": _note,
    "calendar_entries": _calendar_entry, "webhooks": prepare_webhook,
}
_FINISH: dict[str, Callable[[ClioStore, dict, dict | None], None]] = {
    "contacts": _finish_contact, "matters": _finish_matter, "calendar_entries": _finish_calendar_entry,
}


# --- values ------------------------------------------------------------------------------

def _object(data: Any) -> dict:
    if not isinstance(data, dict):
        raise invalid("the request body must be {\"data\": {...}}")
    return data


def _text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise invalid(f"{_human(name)} must be a string")


def _date(value: Any, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise invalid(f"{_human(name)} must be an ISO-8601 date") from None


def _datetime(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{_human(name)} must be an ISO-8601 timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _human(name: str) -> str:
    return name.replace("_", " ").capitalize()

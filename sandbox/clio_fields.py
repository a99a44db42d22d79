"""What a Clio Manage v4 record looks like on the wire: its fields, `fields=` selection, and Clio's error shape.

Clio answers only `id` and `etag` unless `fields=` names more; nested resources take
their own list in braces (`client{id,name}`), one level deep, and answer their own
defaults when none is given. An unknown field, or braces inside braces, is 400.
Errors are `{"error": {"type": ..., "message": ...}}`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from fastapi.responses import JSONResponse

DEFAULT_FIELDS = ("id", "etag")


class ClioError(Exception):
    """A request Clio refuses, answered as `{"error": {"type", "message"}}`."""

    def __init__(self, status: int, type_: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"type": self.type, "message": self.message}}, status_code=self.status,
                            headers=self.headers)


def invalid(message: str) -> ClioError:
    return ClioError(422, "ValidationError", f"Validation failed: {message}")


def bad_argument(message: str) -> ClioError:
    return ClioError(400, "ArgumentError", message)


def not_found(kind: str, record_id: Any) -> ClioError:
    return ClioError(404, "RecordNotFound", f"Couldn't find {SCHEMAS[kind].model} with 'id'={record_id}")


@dataclass(frozen=True)
class Schema:
    """One resource: its plain fields, references to other resources, and lists of owned sub-objects."""

    model: str
    scalars: tuple[str, ...]
    refs: Mapping[str, str] = field(default_factory=dict)  # field -> referenced kind
    lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # field -> its items' fields

    def names(self) -> set[str]:
        return {*self.scalars, *self.refs, *self.lists}


_STAMPS = ("created_at", "updated_at")
_PARTY = ("id", "type", "name")
SCHEMAS: dict[str, Schema] = {
    "contacts": Schema("Contact", ("id", "etag", "name", "first_name", "middle_name", "last_name", "type", "title",
                                   "prefix", "primary_email_address", "primary_phone_number", "is_client", *_STAMPS),
                       lists={"phone_numbers": ("id", "etag", "number", "name", "primary", *_STAMPS),
                              "email_addresses": ("id", "etag", "address", "name", "primary", *_STAMPS),
                              "custom_field_values": ("id", "etag", "field_name", "value", *_STAMPS)}),
    "matters": Schema("Matter", ("id", "etag", "number", "display_number", "description", "status", "billable",
                                 "open_date", "pending_date", "close_date", *_STAMPS),
                      refs={"client": "contacts", "practice_area": "practice_areas"}),
    "practice_areas": Schema("PracticeArea", ("id", "etag", "name", "code", "category", *_STAMPS)),
    "communications": Schema("Communication", ("id", "etag", "subject", "body", "type", "date", "received_at",
                                               *_STAMPS),
                             refs={"matter": "matters"}, lists={"senders": _PARTY, "receivers": _PARTY}),
    "notes": Schema("Note", ("id", "etag", "type", "subject", "detail", "detail_text_type", "date", *_STAMPS),
                    refs={"contact": "contacts", "matter": "matters"}),
    "calendar_entries": Schema("CalendarEntry", ("id", "etag", "summary", "description", "location", "start_at",
                                                 "end_at", "all_day", *_STAMPS),
                               refs={"calendar_owner": "calendars", "matter": "matters"},
                               lists={"attendees": _PARTY}),
    "calendars": Schema("Calendar", ("id", "etag", "name", "color", "type", "permission", "visible", *_STAMPS)),
    "users": Schema("User", ("id", "etag", "name", "first_name", "last_name", "email", "enabled", *_STAMPS)),
    "webhooks": Schema("Webhook", ("id", "etag", "url", "fields", "shared_secret", "model", "status", "events",
                                   "expires_at", *_STAMPS)),
}

Selection = dict[str, tuple[str, ...] | None]  # field -> its nested selection (None: that resource's defaults)


def parse_fields(kind: str, raw: str | None) -> Selection:
    """`fields=` as {name: nested names or None}; 400 ArgumentError for anything Clio would refuse."""
    if not raw:
        return {name: None for name in DEFAULT_FIELDS}
    schema, chosen = SCHEMAS[kind], {}
    for name, nested in _split(raw):
        if name not in schema.names():
            raise bad_argument(f"Invalid field: {name!r} is not a field of {schema.model}")
        if nested is not None:
            if name not in schema.refs and name not in schema.lists:
                raise bad_argument(f"Invalid field: {name!r} is not a nested resource of {schema.model}")
            known = SCHEMAS[schema.refs[name]].names() if name in schema.refs else set(schema.lists[name])
            if unknown := [each for each in nested if each not in known]:
                raise bad_argument(f"Invalid field: {unknown[0]!r} is not a field of {name}")
        chosen[name] = nested
    return chosen


def _split(raw: str) -> list[tuple[str, tuple[str, ...] | None]]:
    parts, depth, start, out = [], 0, 0, []
    for i, char in enumerate(raw):
        if char == "{":
            depth += 1
            if depth > 1:
                raise bad_argument("Fields can only be requested one nested level deep")
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise bad_argument("Unbalanced braces in fields")
        elif char == "," and depth == 0:
            parts.append(raw[start:i])
            start = i + 1
    if depth:
        raise bad_argument("Unbalanced braces in fields")
    parts.append(raw[start:])
    for part in (p.strip() for p in parts):
        if not part:
            continue
        name, brace, rest = part.partition("{")
        nested = tuple(n.strip() for n in rest.rstrip("}").split(",") if n.strip()) if brace else None
        out.append((name.strip(), nested))
    return out


def render(kind: str, attrs: Mapping[str, Any], selection: Selection, lookup: Callable[[str, Any], Any]) -> dict:
    """The wire form of one record under a selection; `lookup(kind, id)` resolves references (None if gone)."""
    schema, out = SCHEMAS[kind], {}
    for name, nested in selection.items():
        value = attrs.get(name)
        if name in schema.refs:
            target = lookup(schema.refs[name], value) if value is not None else None
            out[name] = None if target is None else render(
                schema.refs[name], target, {n: None for n in nested or DEFAULT_FIELDS}, lookup)
        elif name in schema.lists:
            wanted = nested or tuple(n for n in DEFAULT_FIELDS if n in schema.lists[name]) or ("id",)
            out[name] = [{n: _wire(item.get(n)) for n in wanted} for item in value or []]
        else:
            out[name] = _wire(value)
    return out


def _wire(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (date, datetime)) else value


def etag_for(kind: str, record_id: int, version: int) -> str:
    return '"' + hashlib.md5(f"{kind}:{record_id}:{version}".encode()).hexdigest() + '"'


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)

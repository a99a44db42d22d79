"""Index actions: Clio's filters per resource and its two pagination methods.

Without `offset` and ordered `id(asc)` (the default for most resources), pages are cursor
pages: `meta.paging.next` is the same URL with an opaque `page_token`, and there is no
end to how far they go. With `offset`, or any other order, pages are offset pages, which
stop at 10,000 records (422 ArgumentError past that). `limit` is 1..200, default 200.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from sandbox.clio_fields import ClioError, bad_argument

MAX_LIMIT = 200
OFFSET_CAP = 10_000
_DEFAULT_ORDER = {"communications": "date(asc)"}
_ORDER_KEYS: dict[str, Callable[[dict], Any]] = {"id": lambda r: r["id"], "date": lambda r: (r.get("date"), r["id"]),
                                                 "start_at": lambda r: (r.get("start_at"), r["id"]),
                                                 "updated_at": lambda r: (r["updated_at"], r["id"])}
_ORDERS = {"communications": ("id", "date", "updated_at"), "calendar_entries": ("id", "start_at", "updated_at")}


class Query(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...

    def getlist(self, key: str) -> list[str]: ...

    def __contains__(self, key: object) -> bool: ...


def index_page(kind: str, records: list[dict], query: Query, *, render: Callable[[dict], dict],
               link: Callable[[dict[str, str]], str]) -> dict:
    """`{"data": [...], "meta": {"paging": {...}, "records": N}}` for one page of matching records."""
    limit = _whole(query.get("limit"), MAX_LIMIT, "limit")
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_argument(f"Limit can range between 1 and {MAX_LIMIT}")
    order = query.get("order") or _DEFAULT_ORDER.get(kind, "id(asc)")
    key, direction = _order(kind, order)
    chosen = sorted((r for r in records if _matches(kind, r, query)), key=key, reverse=direction == "desc")
    paging: dict[str, str] = {}
    if "offset" not in query and order == "id(asc)":
        after = _after(query.get("page_token"))
        remaining = [r for r in chosen if r["id"] > after]
        page = remaining[:limit]
        if len(remaining) > limit:
            paging["next"] = link({"page_token": _token(page[-1]["id"])})
    else:
        offset = _whole(query.get("offset"), 0, "offset")
        if offset < 0 or offset >= OFFSET_CAP:
            raise ClioError(422, "ArgumentError", f"Offset pagination is limited to {OFFSET_CAP} records; "
                                                  "use cursor pagination (order=id(asc), no offset) to go further")
        page = chosen[offset:offset + limit]
        if offset + limit < min(len(chosen), OFFSET_CAP):
            paging["next"] = link({"offset": str(offset + limit)})
        if offset:
            paging["previous"] = link({"offset": str(max(0, offset - limit))})
    return {"data": [render(r) for r in page], "meta": {"paging": paging, "records": len(chosen)}}


def _order(kind: str, order: str) -> tuple[Callable[[dict], Any], str]:
    name, _, rest = order.partition("(")
    direction = rest.rstrip(")")
    if name not in _ORDERS.get(kind, ("id", "updated_at")) or direction not in ("asc", "desc"):
        raise bad_argument(f"Invalid order: {order!r}")
    return _ORDER_KEYS[name], direction


def _matches(kind: str, record: dict, query: Query) -> bool:
    if (ids := query.getlist("ids[]")) and str(record["id"]) not in ids:
        return False
    for name, field in (("created_since", "created_at"), ("updated_since", "updated_at")):
        if (since := query.get(name)) and record[field] < _timestamp(since, name):
            return False
    return all(test(record, query.get(param)) for param, test in _FILTERS.get(kind, {}).items()
               if query.get(param) is not None)


def _text_query(*names: str, lists: tuple[tuple[str, str], ...] = ()) -> Callable[[dict, str], bool]:
    def test(record: dict, wanted: str) -> bool:
        haystack = [record.get(n) for n in names] + [i.get(f) for items, f in lists for i in record.get(items, [])]
        return any(wanted.lower() in str(value).lower() for value in haystack if value)
    return test


def _reference(name: str) -> Callable[[dict, str], bool]:
    return lambda record, wanted: str(record.get(name)) == wanted or (wanted == "null" and record.get(name) is None)


def _party(kind: str) -> Callable[[dict, str], bool]:
    return lambda record, wanted: any(p["type"] == kind and str(p["id"]) == wanted
                                      for p in record.get("senders", []) + record.get("receivers", []))


_FILTERS: dict[str, dict[str, Callable[[dict, str], bool]]] = {
    # Clio documents `query` as a wildcard search; the sandbox matches it as a case-insensitive substring.
    "contacts": {"query": _text_query("name", "first_name", "last_name", "title",
                                      lists=(("phone_numbers", "number"), ("email_addresses", "address"))),
                 "type": lambda r, wanted: r["type"] == wanted},
    "matters": {"client_id": _reference("client"), "practice_area_id": _reference("practice_area"),
                "status": lambda r, wanted: r["status"].lower() in wanted.lower().split(","),
                "query": _text_query("description", "display_number")},
    "communications": {"contact_id": _party("Contact"), "user_id": _party("User"), "matter_id": _reference("matter"),
                       "type": lambda r, wanted: r["type"] == wanted, "query": _text_query("subject", "body")},
    "notes": {"contact_id": _reference("contact"), "matter_id": _reference("matter"),
              "type": lambda r, wanted: r["type"] == wanted, "query": _text_query("subject", "detail")},
    "calendar_entries": {"calendar_id": _reference("calendar_owner"), "matter_id": _reference("matter"),
                         "query": _text_query("summary", "description")},
}


def _token(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode().rstrip("=")


def _after(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["after"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise bad_argument("Invalid page_token") from None


def _whole(raw: str | None, default: int, name: str) -> int:
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_argument(f"{name} must be an integer") from None


def _timestamp(raw: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_argument(f"{name} must be an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise bad_argument(f"{name} must include a UTC offset")
    return parsed

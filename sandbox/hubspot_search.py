"""How the HubSpot sandbox searches records (POST /crm/v3/objects/{type}/search), as documented.

filterGroups are ORed and the filters inside a group ANDed; at most 5 groups, 6 filters per
group and 18 in all; one sort; `limit` up to 200; `after` is an offset, and paging stops at
10,000 results (asking past it answers 400). String comparisons ignore case; CONTAINS_TOKEN
matches whole words and takes `*` wildcards.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.hubspot_properties import PropertyKind, parse_datetime

MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS = 18
MAX_LIMIT = 200
DEFAULT_LIMIT = 10
RESULT_CAP = 10_000

VALUE_OPERATORS = frozenset({"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"})
OPERATORS = VALUE_OPERATORS | {"BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"}
QUERY_PROPERTIES = {"contacts": ("firstname", "lastname", "email", "phone", "mobilephone", "company"),
                    "deals": ("dealname",), "notes": ("hs_note_body",),
                    "meetings": ("hs_meeting_title", "hs_meeting_body"), "communications": ("hs_communication_body",)}

KindOf = Callable[[str], PropertyKind | None]
"""The kind of a property, None if the object type has no such property."""


# --- search --------------------------------------------------------------------------------

class SearchRequestError(ValueError):
    """The search body is not one HubSpot accepts; the message says why."""


@dataclass(frozen=True)
class SearchPlan:
    filter_groups: list[list[dict[str, Any]]]
    sort_property: str | None
    descending: bool
    query: str | None
    limit: int
    offset: int
    properties: list[str] | None


def plan_search(body: Mapping[str, Any], kind_of: KindOf) -> SearchPlan:
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list) or len(groups) > MAX_GROUPS:
        raise SearchRequestError(f"filterGroups must be a list of at most {MAX_GROUPS} groups")
    filter_groups = [_checked_group(group, kind_of) for group in groups]
    if sum(len(group) for group in filter_groups) > MAX_FILTERS:
        raise SearchRequestError(f"a search may use at most {MAX_FILTERS} filters in all")
    sort_property, descending = _checked_sort(body.get("sorts") or [], kind_of)
    limit = _int(body.get("limit"), DEFAULT_LIMIT, "limit")
    if not 0 < limit <= MAX_LIMIT:
        raise SearchRequestError(f"limit must be between 1 and {MAX_LIMIT}")
    offset = _int(body.get("after"), 0, "after")
    if offset >= RESULT_CAP:
        raise SearchRequestError(f"search results are capped at {RESULT_CAP}; narrow the filters "
                                 "(for example hs_object_id GT the last id seen) instead of paging further")
    properties = body.get("properties")
    return SearchPlan(filter_groups, sort_property, descending, body.get("query") or None, limit, offset,
                      list(properties) if properties else None)


def matches(plan: SearchPlan, properties: Mapping[str, str | None], kind_of: KindOf,
            query_properties: tuple[str, ...]) -> bool:
    if plan.query and not _matches_query(plan.query, properties, query_properties):
        return False
    if not plan.filter_groups:
        return True
    return any(all(_passes(rule, properties, kind_of) for rule in group) for group in plan.filter_groups)


def sort_key(plan: SearchPlan, kind_of: KindOf) -> Callable[[Mapping[str, str | None]], tuple]:
    """Key for `sorted`; records without the sort property go last either way."""
    name = plan.sort_property or "hs_object_id"
    kind = kind_of(name) or "string"

    def key(properties: Mapping[str, str | None]) -> tuple:
        raw = properties.get(name)
        if raw is None:
            return (1, 0)
        value = _typed(raw, kind)
        if plan.descending:
            return (0, _Reversed(value))
        return (0, value)

    return key


class _Reversed:
    """Inverts the order of one value, so a descending sort still puts missing values last."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return other.value < self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and other.value == self.value


def _checked_group(group: Any, kind_of: KindOf) -> list[dict[str, Any]]:
    filters = group.get("filters") if isinstance(group, dict) else None
    if not isinstance(filters, list) or len(filters) > MAX_FILTERS_PER_GROUP:
        raise SearchRequestError(f"each filter group needs `filters`, at most {MAX_FILTERS_PER_GROUP} of them")
    for rule in filters:
        operator = rule.get("operator") if isinstance(rule, dict) else None
        if operator not in OPERATORS:
            raise SearchRequestError(f"unknown filter operator {operator!r}; use one of {', '.join(sorted(OPERATORS))}")
        if kind_of(rule.get("propertyName") or "") is None:
            raise SearchRequestError(f"there is no property {rule.get('propertyName')!r} to filter on")
        if operator in VALUE_OPERATORS and rule.get("value") is None:
            raise SearchRequestError(f"operator {operator} needs a `value`")
        if operator == "BETWEEN" and (rule.get("value") is None or rule.get("highValue") is None):
            raise SearchRequestError("operator BETWEEN needs `value` and `highValue`")
        if operator in ("IN", "NOT_IN") and not isinstance(rule.get("values"), list):
            raise SearchRequestError(f"operator {operator} needs a `values` list")
    return filters


def _checked_sort(sorts: Any, kind_of: KindOf) -> tuple[str | None, bool]:
    if not isinstance(sorts, list) or len(sorts) > 1:
        raise SearchRequestError("a search takes at most one sort")
    if not sorts:
        return None, False
    sort = sorts[0]
    if isinstance(sort, str):
        name, descending = sort.lstrip("-"), sort.startswith("-")
    elif isinstance(sort, dict):
        name, descending = sort.get("propertyName") or "", sort.get("direction") == "DESCENDING"
    else:
        raise SearchRequestError("a sort is a property name or {propertyName, direction}")
    if kind_of(name) is None:
        raise SearchRequestError(f"there is no property {name!r} to sort on")
    return name, descending


def _int(raw: Any, default: int, name: str) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise SearchRequestError(f"{name} must be a whole number") from None


def _passes(rule: Mapping[str, Any], properties: Mapping[str, str | None], kind_of: KindOf) -> bool:
    name, operator = rule["propertyName"], rule["operator"]
    raw = properties.get(name)
    if operator == "HAS_PROPERTY":
        return raw is not None
    if operator == "NOT_HAS_PROPERTY":
        return raw is None
    if operator in ("NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN"):
        positive = {"NEQ": "EQ", "NOT_IN": "IN", "NOT_CONTAINS_TOKEN": "CONTAINS_TOKEN"}[operator]
        return raw is None or not _passes({**rule, "operator": positive}, properties, kind_of)
    if raw is None:
        return False
    if operator == "CONTAINS_TOKEN":
        return _contains_token(raw, str(rule["value"]))
    kind = kind_of(name) or "string"
    value = _typed(raw, kind)
    if operator == "IN":
        return any(value == _typed(str(each), kind) for each in rule["values"])
    if operator == "BETWEEN":
        return _typed(str(rule["value"]), kind) <= value <= _typed(str(rule["highValue"]), kind)
    wanted = _typed(str(rule["value"]), kind)
    try:
        return {"EQ": value == wanted, "LT": value < wanted, "LTE": value <= wanted,
                "GT": value > wanted, "GTE": value >= wanted}[operator]
    except TypeError:
        return False


def _typed(raw: str, kind: str) -> Any:
    if kind == "number":
        try:
            return float(raw)
        except ValueError:
            return raw.lower()
    if kind in ("datetime", "date"):
        parsed = parse_datetime(raw)
        return parsed.timestamp() if parsed else raw.lower()
    return raw.lower()


def _contains_token(raw: str, pattern: str) -> bool:
    pattern = pattern.lower()
    text = raw.lower()
    tokens = re.findall(r"[\w@.+-]+", text) + re.findall(r"\w+", text)
    return fnmatch.fnmatchcase(text, pattern) or any(fnmatch.fnmatchcase(token, pattern) for token in tokens)


def _matches_query(query: str, properties: Mapping[str, str | None], query_properties: tuple[str, ...]) -> bool:
    needle = query.lower()
    return any(needle in (properties.get(name) or "").lower() for name in query_properties)

"""What HubSpot records may hold: the HubSpot sandbox's property definitions and value rules.

Each object type has a schema: HubSpot's default properties that textback uses, plus custom
ones a portal admin (`define`) or an app (`POST /crm/v3/properties/{objectType}`) adds. A write
is checked as HubSpot checks it: unknown and read-only properties, enumeration options,
datetimes, numbers, emails, required properties and deal stages; failures answer 400
VALIDATION_ERROR with HubSpot's body, whose `message` embeds the per-property details as JSON.

The properties API, as documented: a property needs name, label, type, fieldType and an
existing groupName; a name already taken answers 409; `hasUniqueValue` is allowed on at most
10 properties per object, and only on the object types in `unique_types` (HubSpot documents
contacts, companies, deals, tickets and custom objects; whether activities such as notes and
meetings allow it is not documented, so the sandbox refuses it there unless told otherwise).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal

import phonenumbers

OBJECT_TYPES = ("contacts", "deals", "notes", "communications", "meetings")
DEFAULT_PIPELINES = {"default": ("appointmentscheduled", "qualifiedtobuy", "presentationscheduled",
                                 "decisionmakerboughtin", "contractsent", "closedwon", "closedlost")}
# HUBSPOT_DEFINED default (unlabelled) association type ids, per direction.
ASSOCIATION_TYPE_IDS = {
    ("contacts", "deals"): 4, ("deals", "contacts"): 3,
    ("contacts", "notes"): 201, ("notes", "contacts"): 202,
    ("contacts", "meetings"): 199, ("meetings", "contacts"): 200,
    ("contacts", "communications"): 82, ("communications", "contacts"): 81,
    ("deals", "communications"): 86, ("communications", "deals"): 85,
    ("deals", "meetings"): 211, ("meetings", "deals"): 212,
    ("deals", "notes"): 213, ("notes", "deals"): 214,
}
OBJECT_ALIASES = {"contact": "contacts", "0-1": "contacts", "deal": "deals", "0-3": "deals", "note": "notes",
                  "0-46": "notes", "communication": "communications", "0-18": "communications",
                  "meeting": "meetings", "0-47": "meetings"}

PropertyKind = Literal["string", "enumeration", "datetime", "number", "bool", "date"]
UNIQUE_LIMIT = 10
FIELD_TYPES = {"string": {"text", "textarea", "file", "html", "phonenumber", "calculation_equation"},
               "number": {"number", "calculation_equation"}, "date": {"date"}, "datetime": {"date"},
               "bool": {"booleancheckbox", "calculation_equation"},
               "enumeration": {"booleancheckbox", "checkbox", "radio", "select", "calculation_equation"}}
DEFAULT_GROUPS = {"contacts": "contactinformation", "deals": "dealinformation", "notes": "noteinformation",
                  "meetings": "meetinginformation", "communications": "communicationinformation"}
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class HubSpotError(Exception):
    """An answer in HubSpot's error shape: {status, message, correlationId, category, ...}."""

    def __init__(self, status: int, message: str, category: str | None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), **extra}
        if category:
            self.body["category"] = category


def bad_request(message: str) -> HubSpotError:
    return HubSpotError(400, message, "VALIDATION_ERROR")


def not_found() -> HubSpotError:
    return HubSpotError(404, "resource not found", "OBJECT_NOT_FOUND")


def invalid_properties(problems: list[tuple[str, str, str]]) -> HubSpotError:
    """400 for (property name, error code, message) problems, in HubSpot's words."""
    details = [{"isValid": False, "message": text, "error": code, "name": name} for name, code, text in problems]
    return HubSpotError(400, "Property values were not valid: " + json.dumps(details, separators=(",", ":")),
                        "VALIDATION_ERROR",
                        errors=[{"message": text, "code": code, "context": {"propertyName": [name]}}
                                for name, code, text in problems])


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_datetime(value: str) -> datetime | None:
    """HubSpot datetime input: epoch milliseconds, or ISO 8601 (UTC when no offset is given)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return datetime.fromtimestamp(int(text) / 1000, timezone.utc)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class PropertyDef:
    kind: PropertyKind = "string"
    options: tuple[str, ...] = ()
    unique: bool = False
    read_only: bool = False
    max_length: int | None = None
    custom: bool = False
    label: str = ""
    group: str = ""
    field_type: str = ""
    created_at: datetime = _EPOCH


_TEXT = PropertyDef()
_DATETIME = PropertyDef("datetime")
_STAMP = PropertyDef("datetime", read_only=True)
_ACTIVITY = {"hs_timestamp": _DATETIME, "hs_createdate": _STAMP, "hs_lastmodifieddate": _STAMP,
             "hubspot_owner_id": _TEXT}
SCHEMAS: dict[str, dict[str, PropertyDef]] = {
    "contacts": {
        "email": PropertyDef(unique=True), "firstname": _TEXT, "lastname": _TEXT, "phone": _TEXT,
        "mobilephone": _TEXT, "company": _TEXT, "jobtitle": _TEXT, "hubspot_owner_id": _TEXT,
        "lifecyclestage": PropertyDef("enumeration", ("subscriber", "lead", "marketingqualifiedlead",
                                                      "salesqualifiedlead", "opportunity", "customer",
                                                      "evangelist", "other")),
        "hs_lead_status": PropertyDef("enumeration", ("NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED",
                                                      "ATTEMPTED_TO_CONTACT", "CONNECTED", "BAD_TIMING")),
        "createdate": _STAMP, "lastmodifieddate": _STAMP,
        "hs_searchable_calculated_phone_number": PropertyDef(read_only=True),
        "hs_searchable_calculated_mobile_number": PropertyDef(read_only=True),
    },
    "deals": {"dealname": _TEXT, "pipeline": _TEXT, "dealstage": _TEXT, "description": _TEXT,
              "amount": PropertyDef("number"), "closedate": _DATETIME, "hubspot_owner_id": _TEXT,
              "createdate": _STAMP, "hs_lastmodifieddate": _STAMP},
    "notes": {"hs_note_body": PropertyDef(max_length=65_536), **_ACTIVITY},
    "meetings": {"hs_meeting_title": _TEXT, "hs_meeting_body": _TEXT, "hs_internal_meeting_notes": _TEXT,
                 "hs_meeting_location": _TEXT, "hs_meeting_start_time": _DATETIME, "hs_meeting_end_time": _DATETIME,
                 "hs_meeting_outcome": PropertyDef("enumeration", ("SCHEDULED", "COMPLETED", "RESCHEDULED",
                                                                   "NO_SHOW", "CANCELED")), **_ACTIVITY},
    "communications": {
        "hs_communication_channel_type": PropertyDef("enumeration", ("SMS", "WHATS_APP", "LINKEDIN_MESSAGE")),
        "hs_communication_logged_from": PropertyDef("enumeration", ("CRM",)),
        "hs_communication_body": _TEXT, **_ACTIVITY},
}
REQUIRED = {"deals": ("dealname", "dealstage"), "notes": ("hs_timestamp",), "meetings": ("hs_timestamp",),
            "communications": ("hs_timestamp", "hs_communication_channel_type", "hs_communication_logged_from")}
DEFAULT_PROPERTIES = {"contacts": ("email", "firstname", "lastname"),
                      "deals": ("amount", "closedate", "dealname", "dealstage", "pipeline")}


def created_property(object_type: str) -> str:
    return "createdate" if object_type in ("contacts", "deals") else "hs_createdate"


def modified_property(object_type: str) -> str:
    return "lastmodifieddate" if object_type == "contacts" else "hs_lastmodifieddate"


class PropertyRegistry:
    """The property definitions and groups of one portal, per object type; thread-safe."""

    def __init__(self, *, unique_types: Iterable[str] = ("contacts", "deals")) -> None:
        self.unique_types = frozenset(unique_types)
        self._schemas = {kind: {"hs_object_id": PropertyDef("number", read_only=True), **props}
                         for kind, props in SCHEMAS.items()}
        self._groups: dict[str, dict[str, dict]] = {
            kind: {DEFAULT_GROUPS[kind]: {"name": DEFAULT_GROUPS[kind], "label": "Information", "displayOrder": -1,
                                          "archived": False}} for kind in SCHEMAS}
        self._lock = threading.Lock()

    def schema(self, kind: str) -> dict[str, PropertyDef]:
        with self._lock:
            return dict(self._schemas[kind])

    def define(self, kind: str, name: str, definition: PropertyDef) -> None:
        with self._lock:
            self._schemas[kind][name] = replace(definition, custom=True, created_at=datetime.now(timezone.utc))

    # --- the properties API -------------------------------------------------------------------

    def views(self, kind: str) -> list[dict]:
        with self._lock:
            return [self._view(kind, name, spec) for name, spec in self._schemas[kind].items()]

    def view(self, kind: str, name: str) -> dict:
        with self._lock:
            spec = self._schemas[kind].get(name)
            if spec is None:
                raise HubSpotError(404, f"Unable to find property {name}", "OBJECT_NOT_FOUND")
            return self._view(kind, name, spec)

    def create(self, kind: str, body: Mapping[str, Any]) -> dict:
        """A property from an already shape-checked PropertyCreate body, checked as HubSpot checks it."""
        name, kind_of, field_type = body["name"], body["type"], body["fieldType"]
        if not _NAME.fullmatch(name):
            raise bad_request(f"Property name {name!r} must start with a lowercase letter and contain only "
                              "lowercase letters, numbers and underscores")
        if field_type not in FIELD_TYPES[kind_of]:
            raise bad_request(f"fieldType {field_type} is not valid for a property of type {kind_of}; use one of "
                              f"{', '.join(sorted(FIELD_TYPES[kind_of]))}")
        unique = bool(body.get("hasUniqueValue"))
        options = tuple(option["value"] for option in body.get("options") or ())
        if kind_of == "enumeration" and not options:
            raise bad_request("An enumeration property needs options")
        with self._lock:
            schema = self._schemas[kind]
            if name in schema:
                raise HubSpotError(409, f"Property named '{name}' already exists.", "OBJECT_ALREADY_EXISTS")
            if body["groupName"] not in self._groups[kind]:
                raise bad_request(f"Property group {body['groupName']!r} does not exist for {kind}")
            if unique:
                self._check_unique_allowed(kind, kind_of)
            schema[name] = PropertyDef(kind_of, options, unique=unique, custom=True, label=body["label"],
                                       group=body["groupName"], field_type=field_type,
                                       created_at=datetime.now(timezone.utc))
            return self._view(kind, name, schema[name])

    def create_group(self, kind: str, body: Mapping[str, Any]) -> dict:
        with self._lock:
            if body["name"] in self._groups[kind]:
                raise HubSpotError(409, f"A property group named '{body['name']}' already exists.",
                                   "OBJECT_ALREADY_EXISTS")
            group = {"name": body["name"], "label": body["label"], "displayOrder": body.get("displayOrder", -1),
                     "archived": False}
            self._groups[kind][body["name"]] = group
            return dict(group)

    def _check_unique_allowed(self, kind: str, kind_of: str) -> None:
        if kind not in self.unique_types:
            raise bad_request(f"Unique value properties are not supported for {kind}")
        if kind_of not in ("string", "number"):
            raise bad_request("Only string and number properties can require unique values")
        if sum(spec.unique and spec.custom for spec in self._schemas[kind].values()) >= UNIQUE_LIMIT:
            raise bad_request(f"{kind} already has the maximum of {UNIQUE_LIMIT} unique value properties")

    def _view(self, kind: str, name: str, spec: PropertyDef) -> dict:
        return {"name": name, "label": spec.label or name.replace("_", " ").capitalize(), "type": spec.kind,
                "fieldType": spec.field_type or _default_field_type(spec.kind),
                "groupName": spec.group or DEFAULT_GROUPS[kind], "description": "", "displayOrder": -1,
                "options": [{"label": value, "value": value, "displayOrder": i, "hidden": False}
                            for i, value in enumerate(spec.options)],
                "hasUniqueValue": spec.unique, "hidden": False, "formField": False, "calculated": False,
                "externalOptions": False, "hubspotDefined": not spec.custom, "archived": False,
                "createdAt": iso(spec.created_at), "updatedAt": iso(spec.created_at),
                "modificationMetadata": {"archivable": spec.custom, "readOnlyDefinition": not spec.custom,
                                         "readOnlyValue": spec.read_only}}


def _default_field_type(kind: str) -> str:
    return {"enumeration": "select", "datetime": "date", "date": "date", "number": "number",
            "bool": "booleancheckbox"}.get(kind, "text")


# --- values ----------------------------------------------------------------------------------

def clean_properties(schema: Mapping[str, PropertyDef], given: Any) -> dict[str, str | None]:
    """The values to write (None clears one), normalized as HubSpot stores them; 400 if any is invalid."""
    if not isinstance(given, dict):
        raise bad_request("`properties` must be an object of property names to values")
    clean: dict[str, str | None] = {}
    problems: list[tuple[str, str, str]] = []
    for name, raw in given.items():
        spec = schema.get(name)
        if spec is None:
            problems.append((name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
        elif spec.read_only:
            problems.append((name, "READ_ONLY_VALUE", f'Property "{name}" is read-only'))
        elif raw is None or raw == "":
            clean[name] = None
        else:
            clean[name], problem = _normalized(name, spec, str(raw).lower() if isinstance(raw, bool) else str(raw))
            problems.extend([problem] if problem else [])
    if problems:
        raise invalid_properties(problems)
    return clean


def check_whole(object_type: str, merged: Mapping[str, str | None], pipelines: Mapping[str, tuple[str, ...]]) -> None:
    """Rules on a record's properties together: required ones, and a deal stage of its pipeline."""
    problems = [(name, "REQUIRED_PROPERTY", f'Property "{name}" is required')
                for name in REQUIRED.get(object_type, ()) if not merged.get(name)]
    if object_type == "deals" and merged.get("dealstage"):
        pipeline = merged.get("pipeline") or "default"
        stages = pipelines.get(pipeline)
        if stages is None:
            problems.append(("pipeline", "INVALID_OPTION",
                             f"{pipeline} was not one of the allowed options: [{', '.join(pipelines)}]"))
        elif merged["dealstage"] not in stages:
            problems.append(("dealstage", "INVALID_OPTION",
                             f"{merged['dealstage']} was not one of the allowed options: [{', '.join(stages)}]"))
    if problems:
        raise invalid_properties(problems)


def searchable_digits(phone: str | None, region: str) -> str | None:
    """HubSpot's calculated phone search key: the national number, without country code."""
    if not phone:
        return None
    try:
        digits = phonenumbers.national_significant_number(phonenumbers.parse(phone, region))
        return digits.lstrip("0") or None
    except phonenumbers.NumberParseException:
        return re.sub(r"\D", "", phone).lstrip("0") or None


def _normalized(name: str, spec: PropertyDef, text: str) -> tuple[str, tuple[str, str, str] | None]:
    if spec.kind == "enumeration" and text not in spec.options:
        return text, (name, "INVALID_OPTION", f"{text} was not one of the allowed options: [{', '.join(spec.options)}]")
    if spec.kind in ("datetime", "date"):
        moment = parse_datetime(text)
        if moment is None:
            return text, (name, "INVALID_DATE", f"{text} is not a valid date: use epoch milliseconds or ISO 8601")
        return iso(moment), None
    if spec.kind == "number":
        try:
            float(text)
        except ValueError:
            return text, (name, "INVALID_NUMBER", f"{text} is not a valid number")
    if spec.kind == "bool" and text not in ("true", "false"):
        return text, (name, "INVALID_BOOLEAN", f"{text} is not a valid boolean: use true or false")
    if spec.max_length is not None and len(text) > spec.max_length:
        return text, (name, "INVALID_LENGTH", f"{name} is longer than {spec.max_length} characters")
    if name == "email" and not _EMAIL.fullmatch(text):
        return text, (name, "INVALID_EMAIL", f"Email address {text} is invalid")
    return text, None

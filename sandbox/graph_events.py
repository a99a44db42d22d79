"""Outlook events as Graph stores and shows them, and Graph's error shape.

An event keeps its instants in UTC and the zone names it was written with
(originalStartTimeZone/originalEndTimeZone); `render` shows it in whichever zone the request
prefers. Writes accept the event properties below; an unknown property is refused the way
Graph's OData reader refuses it (400 RequestBodyRead), read-only ones are ignored.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fastapi.responses import JSONResponse

from sandbox import graph_time

SHOW_AS = ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown")
WRITABLE = ("subject", "body", "start", "end", "location", "locations", "showAs", "isAllDay", "sensitivity",
            "importance", "categories", "attendees", "reminderMinutesBeforeStart", "isReminderOn",
            "responseRequested", "allowNewTimeProposals", "transactionId", "isOnlineMeeting", "onlineMeetingProvider",
            "hideAttendees", "recurrence")
READ_ONLY = ("id", "@odata.etag", "@odata.type", "@odata.context", "createdDateTime", "lastModifiedDateTime", "changeKey",
             "iCalUId", "webLink", "bodyPreview", "hasAttachments", "isCancelled", "isOrganizer", "isDraft", "type",
             "seriesMasterId", "originalStartTimeZone", "originalEndTimeZone", "onlineMeeting", "onlineMeetingUrl",
             "organizer", "responseStatus", "originalStart")
SELECTABLE = frozenset(WRITABLE + READ_ONLY) - {"@odata.etag", "@odata.type", "@odata.context"}


class GraphError(Exception):
    """An answer in Graph's error shape: {"error": {"code", "message", "innerError": {...}}}."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self) -> JSONResponse:
        request_id = str(uuid.uuid4())
        inner = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": request_id,
                 "client-request-id": request_id}
        return JSONResponse({"error": {"code": self.code, "message": self.message, "innerError": inner}},
                            status_code=self.status, headers=self.headers | {"request-id": request_id})


def item_not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def new_id() -> str:
    """An Outlook-style item id: base64 of a store entry id."""
    return base64.urlsafe_b64encode(b"\x00\x00\x1b\x00" + secrets.token_bytes(66)).decode()


@dataclass
class GraphEvent:
    id: str
    user_id: str
    calendar_id: str
    organizer: str
    start: datetime
    end: datetime
    start_zone: str
    end_zone: str
    props: dict[str, Any]
    created: datetime
    modified: datetime
    version: int
    change_key: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(16)).decode())
    ical_uid: str = field(default_factory=lambda: "040000008200E00074C5B7101A82E008" + secrets.token_hex(28).upper())
    deleted: bool = False

    @property
    def show_as(self) -> str:
        return self.props.get("showAs", "busy")

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and start < self.end

    def render(self, zone_name: str, *, select: list[str] | None = None) -> dict:
        body = self.props.get("body") or {"contentType": "html", "content": ""}
        location = self.props.get("location") or {"displayName": ""}
        event = {
            "@odata.etag": f'W/"{self.change_key}"', "id": self.id,
            "createdDateTime": graph_time.iso_utc(self.created), "lastModifiedDateTime": graph_time.iso_utc(self.modified),
            "changeKey": self.change_key, "categories": self.props.get("categories", []),
            "transactionId": self.props.get("transactionId"),
            "originalStartTimeZone": self.start_zone, "originalEndTimeZone": self.end_zone,
            "iCalUId": self.ical_uid,
            "reminderMinutesBeforeStart": self.props.get("reminderMinutesBeforeStart", 15),
            "isReminderOn": self.props.get("isReminderOn", True), "hasAttachments": False,
            "subject": self.props.get("subject", ""), "bodyPreview": str(body.get("content", ""))[:255],
            "importance": self.props.get("importance", "normal"), "sensitivity": self.props.get("sensitivity", "normal"),
            "isAllDay": self.props.get("isAllDay", False), "isCancelled": False, "isOrganizer": True,
            "responseRequested": self.props.get("responseRequested", True), "seriesMasterId": None,
            "showAs": self.show_as, "type": "singleInstance",
            "webLink": f"https://outlook.office365.com/owa/?itemid={self.id}&exvsurl=1&path=/calendar/item",
            "onlineMeetingUrl": None, "isOnlineMeeting": self.props.get("isOnlineMeeting", False),
            "onlineMeetingProvider": self.props.get("onlineMeetingProvider", "unknown"),
            "allowNewTimeProposals": self.props.get("allowNewTimeProposals", True), "isDraft": False,
            "hideAttendees": self.props.get("hideAttendees", False),
            "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
            "body": body,
            "start": graph_time.write(self.start, zone_name), "end": graph_time.write(self.end, zone_name),
            "location": location, "locations": self.props.get("locations", [location] if location["displayName"] else []),
            "recurrence": self.props.get("recurrence"), "attendees": self.props.get("attendees", []),
            "organizer": {"emailAddress": {"name": self.organizer.split("@")[0], "address": self.organizer}},
            "onlineMeeting": None,
        }
        if event["transactionId"] is None:
            del event["transactionId"]  # Graph returns it only when an app has set it
        if select is None:
            return event
        return {key: value for key, value in event.items() if key in {"@odata.etag", "id", *select}}


def parse_select(value: str | None) -> list[str] | None:
    if not value:
        return None
    fields = [name.strip() for name in value.split(",") if name.strip()]
    for name in fields:
        if name not in SELECTABLE:
            raise GraphError(400, "RequestBroker--ParseUri",
                             f"Could not find a property named '{name}' on type 'microsoft.graph.event'.")
    return fields


def writable_changes(body: Any) -> dict[str, Any]:
    """The writable properties of a request body; read-only ones dropped, unknown ones refused."""
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
    for name in body:
        if name not in WRITABLE and name not in READ_ONLY and not name.startswith("@odata."):
            raise GraphError(400, "RequestBodyRead", f"The property '{name}' does not exist on type "
                             "'microsoft.graph.event'. Make sure to only use property names that are defined by the "
                             "type or mark the type as open type.")
    changes = {name: body[name] for name in WRITABLE if name in body}
    if "showAs" in changes and changes["showAs"] not in SHOW_AS:
        raise GraphError(400, "RequestBodyRead", f"Cannot convert the literal '{changes['showAs']}' to the expected "
                         "type 'microsoft.graph.freeBusyStatus'.")
    if "body" in changes and changes["body"] is not None:
        content_type = str(changes["body"].get("contentType", "text")).lower()
        changes["body"] = {"contentType": content_type, "content": changes["body"].get("content", "")}
    if isinstance(changes.get("location"), dict):
        changes["location"] = {"displayName": "", "locationType": "default", "uniqueIdType": "private"} | changes[
            "location"]
        changes["location"].setdefault("uniqueId", changes["location"]["displayName"])
    return changes


def read_times(changes: dict[str, Any], current: GraphEvent | None) -> tuple[datetime, datetime, str, str]:
    """The (start, end, start zone, end zone) a write leaves the event with."""
    try:
        if "start" in changes:
            start, start_zone = graph_time.read(changes["start"])
        elif current is not None:
            start, start_zone = current.start, current.start_zone
        else:
            raise GraphError(400, "ErrorPropertyValidationFailure", "At least one property failed validation: start.")
        if "end" in changes:
            end, end_zone = graph_time.read(changes["end"])
        elif current is not None:
            end, end_zone = current.end, current.end_zone
        else:
            raise GraphError(400, "ErrorPropertyValidationFailure", "At least one property failed validation: end.")
    except graph_time.UnsupportedZone as exc:
        raise GraphError(400, "TimeZoneNotSupportedException", "A valid TimeZone value must be specified. The "
                         f"following TimeZone value is not supported: '{exc.name}'.") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GraphError(400, "RequestBodyRead", "Cannot convert the literal to the expected type "
                         "'microsoft.graph.dateTimeTimeZone'.") from exc
    if end < start:
        raise GraphError(400, "ErrorInvalidRequest", "Your request can't be completed. The end time must be after the "
                         "start time.")
    if changes.get("isAllDay", current.props.get("isAllDay") if current else False):
        for moment, name in ((start, start_zone), (end, end_zone)):
            if moment.astimezone(graph_time.zone(name)).time() != datetime.min.time():
                raise GraphError(400, "ErrorPropertyValidationFailure", "At least one property failed validation: an "
                                 "all-day event starts and ends at midnight.")
    return start, end, start_zone, end_zone

"""Google Calendar v3 emulator: freeBusy and events, behind the OAuth token endpoint.

`create_app(sandbox)` serves `POST /token` (sandbox/google_oauth.py) and, under
`/calendar/v3/`, `freeBusy`, `calendars/{calendarId}/events[/{eventId}]` (list with pages and
sync tokens, insert, get, patch, update, delete), `calendars/{calendarId}/events/watch` and
`channels/stop` (sandbox/google_channels.py: notifications go out on `deliver_notifications`).
Every request is first checked against the discovery document the Google client ships
(sandbox/google_discovery.py), and `faults` scripts errors, late answers and dropped connections.

Access is by identity: an access token speaks for a service account, the user it
impersonates, or an authorized user; a calendar is visible only to its owners and the
identities it was shared with, and is `notFound` to everyone else, as on Google.
"""

from __future__ import annotations

import base64
import collections
import time as time_module
import re
import secrets
import threading
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response

from sandbox.common import Faults, inject_faults
from sandbox.google_channels import PushChannels
from sandbox.google_discovery import add_request_validation
from sandbox.google_oauth import (
    GoogleApiError,
    GoogleOAuth,
    add_google_api_errors,
    add_token_endpoint,
    bearer_identity,
)

# Google does not document the freeBusy span limit; ranges of about three months are refused.
FREE_BUSY_MAX_SPAN = timedelta(days=90)

GOOGLE_API = "https://www.googleapis.com"
_SCOPE = "https://www.googleapis.com/auth/"
# Per method, the scopes the bundled discovery document (calendar.v3.json) lists.
FREE_BUSY_SCOPES = {_SCOPE + s for s in ("calendar", "calendar.events.freebusy", "calendar.freebusy",
                                          "calendar.readonly")}
WRITE_SCOPES = {_SCOPE + s for s in ("calendar", "calendar.app.created", "calendar.events", "calendar.events.owned")}
READ_SCOPES = WRITE_SCOPES | {_SCOPE + s for s in ("calendar.readonly", "calendar.events.freebusy",
                                                   "calendar.events.readonly", "calendar.events.owned.readonly")}
_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
_WRITABLE = ("summary", "description", "location", "start", "end", "status", "transparency", "visibility",
             "attendees", "extendedProperties", "reminders", "colorId")
_NOT_WITH_SYNC_TOKEN = ("iCalUID", "orderBy", "privateExtendedProperty", "q", "sharedExtendedProperty",
                        "timeMin", "timeMax", "updatedMin")


def _not_found() -> GoogleApiError:
    return GoogleApiError(404, "notFound", "Not Found")


class _Calendar:
    def __init__(self, calendar_id: str, owners: set[str], time_zone: str) -> None:
        self.id, self.members, self.time_zone = calendar_id, owners, time_zone
        self.events: dict[str, dict] = {}
        self.versions: dict[str, int] = {}


class GoogleCalendarSandbox:
    """Thread-safe in-memory Google Calendar: calendars, events, sync tokens, plus the OAuth state."""

    def __init__(self, *, user_rate_limit: int | None = None) -> None:
        self.oauth = GoogleOAuth()
        self.faults = Faults()
        # Requests per second per user (the identity behind the token), as the project's per-user quota caps
        # them; past it Google answers 403 userRateLimitExceeded. None: no limit (the default).
        self.user_rate_limit = user_rate_limit
        self.rate_limited = 0
        self._recent: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self.channels = PushChannels()
        self._calendars: dict[str, _Calendar] = {}
        self._version = 0
        self._sync_tokens: dict[str, tuple[str, int]] = {}
        self._page_tokens: dict[str, tuple[str, int, int]] = {}
        self._lock = threading.RLock()

    # --- seeding and inspection ---------------------------------------------------------------

    def add_calendar(self, calendar_id: str, *, owners: list[str], time_zone: str = "UTC") -> None:
        with self._lock:
            self._calendars[calendar_id] = _Calendar(calendar_id, {calendar_id, *owners}, time_zone)

    def share(self, calendar_id: str, identity: str) -> None:
        with self._lock:
            self._calendars[calendar_id].members.add(identity)

    def add_busy(self, calendar_id: str, start: datetime, end: datetime, summary: str = "Busy") -> dict:
        """Seed an opaque (busy) event."""
        body = {"summary": summary, "start": {"dateTime": start.isoformat()}, "end": {"dateTime": end.isoformat()}}
        return self.insert_event(calendar_id, body, identity=calendar_id)

    def events(self, calendar_id: str) -> list[dict]:
        """Every event of the calendar, cancelled ones (status "cancelled") included."""
        with self._lock:
            return [dict(event) for event in self._calendars[calendar_id].events.values()]

    def remove_calendar(self, calendar_id: str) -> None:
        """Delete a calendar, as its owner may: its channels get a last `not_exists` message."""
        with self._lock:
            del self._calendars[calendar_id]
        self.channels.changed(calendar_id, state="not_exists")

    def deliver_notifications(self, http: httpx.Client) -> list[httpx.Response]:
        """POST the queued push notifications to their channels' addresses (see sandbox.google_channels)."""
        return self.channels.deliver(http)

    def expire_sync_tokens(self) -> None:
        """Invalidate every sync token, as Google does now and then: the next incremental list answers 410."""
        with self._lock:
            self._sync_tokens.clear()

    # --- the API ---------------------------------------------------------------------------------

    def free_busy(self, body: dict, *, identity: str) -> dict:
        time_min = _parse_time(body.get("timeMin"), "timeMin")
        time_max = _parse_time(body.get("timeMax"), "timeMax")
        if time_max <= time_min:
            raise GoogleApiError(400, "timeRangeEmpty", "The specified time range is empty.", domain="calendar",
                                 location="timeMax")
        if time_max - time_min > FREE_BUSY_MAX_SPAN:
            raise GoogleApiError(400, "timeRangeTooLong", "The requested time range is too long.", domain="calendar")
        zone = _zone(body.get("timeZone") or "UTC")
        calendars: dict[str, dict] = {}
        with self._lock:
            for item in body.get("items", []):
                calendar = self._visible(item.get("id", ""), identity)
                if calendar is None:
                    calendars[item.get("id", "")] = {"errors": [{"domain": "global", "reason": "notFound"}], "busy": []}
                    continue
                spans = sorted(
                    (max(start, time_min), min(end, time_max))
                    for event in calendar.events.values()
                    if event["status"] != "cancelled" and event.get("transparency") != "transparent"
                    for start, end in [_span(event, calendar.time_zone)]
                    if start < time_max and time_min < end
                )
                calendars[item["id"]] = {
                    "busy": [{"start": _rfc3339(s, zone), "end": _rfc3339(e, zone)} for s, e in _merge(spans)]
                }
        return {"kind": "calendar#freeBusy", "timeMin": _rfc3339(time_min), "timeMax": _rfc3339(time_max),
                "calendars": calendars}

    def list_events(self, calendar_id: str, params: dict[str, Any], *, identity: str) -> dict:
        with self._lock:
            calendar = self._require(calendar_id, identity)
            since = None
            if params.get("syncToken"):
                if clash := [name for name in _NOT_WITH_SYNC_TOKEN if params.get(name)]:
                    raise GoogleApiError(400, "invalid", f"{clash[0]} cannot be used together with syncToken.",
                                         location=clash[0])
                token = self._sync_tokens.get(params["syncToken"])
                if token is None or token[0] != calendar.id:
                    raise GoogleApiError(410, "fullSyncRequired",
                                         "Sync token is no longer valid, a full sync is required.",
                                         domain="calendar", location="syncToken")
                since = token[1]
            if params.get("orderBy") == "startTime" and not params.get("singleEvents"):
                raise GoogleApiError(400, "badRequest",
                                     "The requested ordering is not available for the particular query.")
            offset, snapshot = 0, self._version
            if params.get("pageToken"):
                page = self._page_tokens.get(params["pageToken"])
                if page is None or page[0] != calendar.id:
                    raise GoogleApiError(400, "invalid", "Invalid page token value.", location="pageToken")
                _, offset, snapshot = page
            items = self._matching(calendar, params, since)
            page_items = items[offset:offset + params["maxResults"]]
            answer = {"kind": "calendar#events", "etag": f'"p{snapshot:015d}"', "summary": calendar.id,
                      "updated": _rfc3339(datetime.now(timezone.utc)), "timeZone": calendar.time_zone,
                      "accessRole": "owner", "defaultReminders": [], "items": [dict(e) for e in page_items]}
            if offset + params["maxResults"] < len(items):
                token = secrets.token_urlsafe(24)
                self._page_tokens[token] = (calendar.id, offset + params["maxResults"], snapshot)
                answer["nextPageToken"] = token
            else:
                token = secrets.token_urlsafe(24)
                self._sync_tokens[token] = (calendar.id, snapshot)
                answer["nextSyncToken"] = token
            return answer

    def _matching(self, calendar: _Calendar, params: dict[str, Any], since: int | None) -> list[dict]:
        if since is not None:
            return [e for e in calendar.events.values() if calendar.versions[e["id"]] > since]
        time_min = _parse_time(params["timeMin"], "timeMin") if params.get("timeMin") else None
        time_max = _parse_time(params["timeMax"], "timeMax") if params.get("timeMax") else None
        items = []
        for event in calendar.events.values():
            start, end = _span(event, calendar.time_zone)
            if event["status"] == "cancelled" and not params.get("showDeleted"):
                continue
            if (time_min and end <= time_min) or (time_max and start >= time_max):
                continue
            items.append(event)
        if params.get("orderBy") == "startTime":
            items.sort(key=lambda e: _span(e, calendar.time_zone)[0])
        elif params.get("orderBy") == "updated":
            items.sort(key=lambda e: e["updated"])
        return items

    def insert_event(self, calendar_id: str, body: dict, *, identity: str) -> dict:
        with self._lock:
            calendar = self._require(calendar_id, identity)
            event_id = body.get("id") or secrets.token_hex(13)
            if not _EVENT_ID.fullmatch(event_id):
                raise GoogleApiError(400, "invalid", "Invalid resource id value.")
            if event_id in calendar.events:
                raise GoogleApiError(409, "duplicate", "The requested identifier already exists.")
            now = _rfc3339(datetime.now(timezone.utc))
            eid = base64.urlsafe_b64encode(f"{event_id} {calendar.id}".encode()).decode().rstrip("=")
            event = {"kind": "calendar#event", "id": event_id, "status": "confirmed",
                     "htmlLink": f"https://www.google.com/calendar/event?eid={eid}", "created": now, "updated": now,
                     "creator": {"email": identity}, "organizer": {"email": calendar.id, "self": True},
                     "iCalUID": body.get("iCalUID") or f"{event_id}@google.com", "sequence": 0,
                     "reminders": {"useDefault": True}, "eventType": "default"}
            return self._store(calendar, event, body)

    def watch_events(self, calendar_id: str, body: dict, *, identity: str, resource_uri: str) -> dict:
        with self._lock:
            calendar = self._require(calendar_id, identity)
        return self.channels.watch(calendar.id, body, resource_uri=resource_uri)

    def get_event(self, calendar_id: str, event_id: str, *, identity: str) -> dict:
        with self._lock:
            calendar = self._require(calendar_id, identity)
            if event_id not in calendar.events:
                raise _not_found()
            return dict(calendar.events[event_id])

    def update_event(self, calendar_id: str, event_id: str, body: dict, *, identity: str, replace: bool) -> dict:
        with self._lock:
            calendar = self._require(calendar_id, identity)
            current = calendar.events.get(event_id)
            if current is None:
                raise _not_found()
            if replace:
                event = {k: v for k, v in current.items() if k not in _WRITABLE} | {"status": "confirmed"}
                changes = body
            else:
                event, changes = dict(current), _merge_patch(current, body)
            event["updated"] = _rfc3339(datetime.now(timezone.utc))
            return self._store(calendar, event, changes)

    def delete_event(self, calendar_id: str, event_id: str, *, identity: str) -> None:
        with self._lock:
            calendar = self._require(calendar_id, identity)
            event = calendar.events.get(event_id)
            if event is None:
                raise _not_found()
            if event["status"] == "cancelled":
                raise GoogleApiError(410, "deleted", "Resource has been deleted")
            self._store(calendar, event | {"updated": _rfc3339(datetime.now(timezone.utc))}, {"status": "cancelled"})

    def _store(self, calendar: _Calendar, event: dict, body: dict) -> dict:
        event |= {key: body[key] for key in _WRITABLE if key in body}
        if event["status"] != "cancelled":
            if "start" not in event or "end" not in event:
                missing = "start" if "start" not in event else "end"
                raise GoogleApiError(400, "required", f"Missing {missing} time.")
            event["start"] = _normalise_time(event["start"], calendar.time_zone, "start")
            event["end"] = _normalise_time(event["end"], calendar.time_zone, "end")
            start, end = _span(event, calendar.time_zone)
            if end < start:
                raise GoogleApiError(400, "timeRangeEmpty", "The specified time range is empty.", domain="calendar")
        previous = calendar.events.get(event["id"])
        if previous and (previous["start"], previous["end"]) != (event["start"], event["end"]):
            event["sequence"] = previous["sequence"] + 1
        self._version += 1
        event["etag"] = f'"{3_000_000_000_000_000 + self._version}"'
        calendar.events[event["id"]] = event
        calendar.versions[event["id"]] = self._version
        self.channels.changed(calendar.id)
        return dict(event)

    def _visible(self, calendar_id: str, identity: str) -> _Calendar | None:
        calendar = self._calendars.get(identity if calendar_id == "primary" else calendar_id)
        return calendar if calendar is not None and identity in calendar.members else None

    def _require(self, calendar_id: str, identity: str) -> _Calendar:
        calendar = self._visible(calendar_id, identity)
        if calendar is None:
            raise _not_found()
        return calendar


    def admit(self, identity: str) -> None:
        """Count one request of `identity`; past its per-second limit, Google's 403 userRateLimitExceeded."""
        if self.user_rate_limit is None:
            return
        now = time_module.monotonic()
        with self._lock:
            recent = self._recent[identity]
            while recent and now - recent[0] >= 1:
                recent.popleft()
            if len(recent) >= self.user_rate_limit:
                self.rate_limited += 1
                raise GoogleApiError(403, "userRateLimitExceeded", "User Rate Limit Exceeded",
                                     domain="usageLimits", summary="User Rate Limit Exceeded")
            recent.append(now)


def create_app(sandbox: GoogleCalendarSandbox) -> FastAPI:
    app = FastAPI(title="Google Calendar sandbox")
    add_token_endpoint(app, sandbox.oauth)
    add_google_api_errors(app)

    add_request_validation(app)
    inject_faults(app, sandbox.faults, respond=_fault)

    def metered(scopes: set[str]):
        authenticated = bearer_identity(sandbox.oauth, scopes).dependency

        def identity(request: Request) -> str:
            who = authenticated(request)
            sandbox.admit(who)
            return who

        return Depends(identity)

    free_busy_reader = metered(FREE_BUSY_SCOPES)
    reader = metered(READ_SCOPES)
    writer = metered(WRITE_SCOPES)
    channel_owner = metered(READ_SCOPES | FREE_BUSY_SCOPES)
    base = "/calendar/v3"

    @app.post(f"{base}/freeBusy")
    async def free_busy(request: Request, identity: str = free_busy_reader) -> dict:
        return sandbox.free_busy(await _json(request), identity=identity)

    @app.get(f"{base}/calendars/{{calendar_id}}/events")
    def list_events(
        calendar_id: str, request: Request, identity: str = reader,
        maxResults: int = Query(250, ge=1, le=2500), singleEvents: bool = False, showDeleted: bool = False,
    ) -> dict:
        params = dict(request.query_params) | {"maxResults": maxResults, "singleEvents": singleEvents,
                                               "showDeleted": showDeleted}
        return sandbox.list_events(calendar_id, params, identity=identity)

    @app.post(f"{base}/calendars/{{calendar_id}}/events")
    async def insert_event(calendar_id: str, request: Request, identity: str = writer) -> dict:
        return sandbox.insert_event(calendar_id, await _json(request), identity=identity)

    @app.post(f"{base}/calendars/{{calendar_id}}/events/watch")
    async def watch_events(calendar_id: str, request: Request, identity: str = reader) -> dict:
        # The resource URI names what is watched, as the caller asked for it (Google keeps `alt=json`).
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1").removesuffix("/watch")
        resource_uri = f"{GOOGLE_API}{raw_path}?alt=json"
        return sandbox.watch_events(calendar_id, await _json(request), identity=identity, resource_uri=resource_uri)

    @app.post(f"{base}/channels/stop", status_code=204)
    async def stop_channel(request: Request, identity: str = channel_owner) -> Response:
        sandbox.channels.stop(await _json(request))
        return Response(status_code=204)

    @app.get(f"{base}/calendars/{{calendar_id}}/events/{{event_id}}")
    def get_event(calendar_id: str, event_id: str, identity: str = reader) -> dict:
        return sandbox.get_event(calendar_id, event_id, identity=identity)

    @app.patch(f"{base}/calendars/{{calendar_id}}/events/{{event_id}}")
    async def patch_event(calendar_id: str, event_id: str, request: Request, identity: str = writer) -> dict:
        return sandbox.update_event(calendar_id, event_id, await _json(request), identity=identity, replace=False)

    @app.put(f"{base}/calendars/{{calendar_id}}/events/{{event_id}}")
    async def update_event(calendar_id: str, event_id: str, request: Request, identity: str = writer) -> dict:
        return sandbox.update_event(calendar_id, event_id, await _json(request), identity=identity, replace=True)

    @app.delete(f"{base}/calendars/{{calendar_id}}/events/{{event_id}}", status_code=204)
    def delete_event(calendar_id: str, event_id: str, identity: str = writer) -> Response:
        sandbox.delete_event(calendar_id, event_id, identity=identity)
        return Response(status_code=204)

    return app


def _fault(fault: dict) -> Response:
    status = fault["status"]
    headers = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
    if status in (403, 429):
        return GoogleApiError(status, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits",
                              headers=headers).response()
    if status >= 500:
        return GoogleApiError(status, "backendError", "Backend Error", headers=headers).response()
    return GoogleApiError(status, "badRequest", "Bad Request", headers=headers).response()


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise GoogleApiError(400, "parseError", "Parse Error")
    return body


def _parse_time(value: Any, name: str) -> datetime:
    """An RFC 3339 timestamp with its mandatory offset."""
    if not value:
        raise GoogleApiError(400, "required", f"Missing {name} parameter.", location=name)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise GoogleApiError(400, "badRequest", "Bad Request", location=name)
    return parsed


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise GoogleApiError(400, "invalid", f"Invalid time zone definition: {name}") from exc


def _normalise_time(value: Any, calendar_zone: str, name: str) -> dict:
    """Echo a start/end as Google does: dateTime in the event's (or calendar's) zone, or an all-day date."""
    if not isinstance(value, dict) or not (value.get("dateTime") or value.get("date")):
        raise GoogleApiError(400, "required", f"Missing {name} time.")
    if value.get("date"):
        try:
            date.fromisoformat(value["date"])
        except ValueError as exc:
            raise GoogleApiError(400, "invalid", f"Invalid {name} time.") from exc
        return dict(value)
    zone = _zone(value.get("timeZone") or calendar_zone)
    try:
        moment = datetime.fromisoformat(value["dateTime"])
    except ValueError as exc:
        raise GoogleApiError(400, "invalid", f"Invalid {name} time.") from exc
    moment = moment.replace(tzinfo=zone) if moment.tzinfo is None else moment
    return {**value, "dateTime": _rfc3339(moment, zone)}


def _span(event: dict, calendar_zone: str) -> tuple[datetime, datetime]:
    def moment(value: dict) -> datetime:
        if value.get("date"):
            return datetime.combine(date.fromisoformat(value["date"]), time(), ZoneInfo(calendar_zone))
        return datetime.fromisoformat(value["dateTime"])
    return moment(event["start"]), moment(event["end"])


def _merge(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _merge_patch(current: dict, patch: dict) -> dict:
    """Patch semantics: nested objects merge, everything else (lists included) replaces."""
    merged = {}
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            merged[key] = {**current[key], **_merge_patch(current[key], value)}
        else:
            merged[key] = value
    return merged


def _rfc3339(moment: datetime, zone: ZoneInfo | timezone = timezone.utc) -> str:
    moment = moment.astimezone(zone)
    if moment.utcoffset() == timedelta(0):
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.isoformat(timespec="seconds")

"""Microsoft Graph v1.0, the Outlook calendar part, behind tokens of the identity emulator.

`create_app(graph)` serves, under `/v1.0/users/{id|UPN}` (app-only tokens) and `/v1.0/me`
(delegated tokens):

- `POST .../calendar/getSchedule`: free/busy of up to 20 mailboxes in the caller's tenant, from
  their default calendars, for under 62 days;
- `GET .../calendarView` (also under `/calendar` and `/calendars/{id}`) with startDateTime and
  endDateTime, `$select`, `$top` (default 10, at most 1000) and `@odata.nextLink` ($skip) pages;
- `GET .../calendarView/delta`: rounds of `@odata.nextLink` ($skiptoken) pages ending in an
  `@odata.deltaLink` ($deltatoken); later rounds send changes and `@removed` entries;
- `POST .../events` (also under `/calendar` and `/calendars/{id}`) honouring `transactionId`,
  and `GET/PATCH/DELETE .../events/{id}`;
- `/v1.0/subscriptions` (sandbox/graph_subscriptions.py).

Times are stored as instants with the zone they were written in, and answered in UTC unless
`Prefer: outlook.timezone` names another zone. Errors use Graph's shape (sandbox/graph_events.py):
401 InvalidAuthenticationToken, 403 ErrorAccessDenied, 404 ErrorInvalidUser/ErrorItemNotFound,
429 ApplicationThrottled with Retry-After, late answers and dropped connections through `faults`
(sandbox.common). App-only tokens need the Calendars.Read or Calendars.ReadWrite application
permission; delegated ones reach the user's own mailbox, and those shared with the user (`share`)
with Calendars.Read.Shared/ReadWrite.Shared.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox import graph_time
from sandbox.common import Faults
from sandbox.graph_events import (
    GraphError,
    GraphEvent,
    item_not_found,
    new_id,
    parse_select,
    read_times,
    writable_changes,
)
from sandbox.graph_routes import add_routes
from sandbox.graph_subscriptions import Subscriptions, parse_resource
from sandbox.microsoft_identity import AccessGrant, MicrosoftIdentity

READ = frozenset({"Calendars.Read", "Calendars.ReadWrite", "Calendars.ReadBasic"})
WRITE = frozenset({"Calendars.ReadWrite"})
# A delegated token reaches another user's shared calendars only with the .Shared permissions.
SHARED = {READ: frozenset({"Calendars.Read.Shared", "Calendars.ReadWrite.Shared"}),
          WRITE: frozenset({"Calendars.ReadWrite.Shared"})}
SCHEDULE_LIMIT = 20
SCHEDULE_SPAN = timedelta(days=62)
DEFAULT_PAGE, MAX_PAGE = 10, 1000
_AVAILABILITY = {"free": "0", "workingElsewhere": "0", "tentative": "1", "busy": "2", "oof": "3", "unknown": "0"}


@dataclass
class _Mailbox:
    tenant_id: str
    user_id: str
    upn: str
    default_calendar_id: str
    calendars: dict[str, str]  # id -> name
    shared_with: set[str] = field(default_factory=set)  # lowercased UPNs


@dataclass
class _DeltaRound:
    user_id: str
    calendar_id: str
    start: datetime
    end: datetime
    since: int | None
    upto: int
    offset: int = 0


class GraphSandbox:
    """Thread-safe in-memory Exchange Online mailboxes, calendars and events, plus subscriptions."""

    def __init__(self, identity: MicrosoftIdentity, *, webhook_http: httpx.Client | None = None) -> None:
        self.identity = identity
        self.faults = Faults()
        # Requests in flight at once per app (its token) and mailbox, as Graph's MailboxConcurrency limit counts
        # them; past it the answer is 429 ApplicationThrottled with Retry-After.
        self.mailbox_concurrency = MAILBOX_CONCURRENCY
        self.throttled = 0
        self._in_flight: dict[tuple[str, str], int] = {}
        self._flight_lock = threading.Lock()
        self.subscriptions = Subscriptions(http=webhook_http or httpx.Client(timeout=10.0))
        self._mailboxes: dict[str, _Mailbox] = {}
        self._events: dict[str, GraphEvent] = {}
        self._rounds: dict[str, _DeltaRound] = {}
        self._version = 0
        self._lock = threading.RLock()

    # --- seeding and inspection -----------------------------------------------------------------------

    def add_mailbox(self, tenant_id: str, upn: str) -> str:
        """A licensed user with a mailbox and its default calendar "Calendar"; answers the user id."""
        user_id = self.identity.add_user(tenant_id, upn)
        calendar_id = new_id()
        with self._lock:
            self._mailboxes.setdefault(user_id, _Mailbox(tenant_id, user_id, upn, calendar_id, {calendar_id: "Calendar"}))
        return user_id

    def add_calendar(self, upn: str, name: str) -> str:
        calendar_id = new_id()
        with self._lock:
            self._by_upn(upn).calendars[calendar_id] = name
        return calendar_id

    def default_calendar(self, upn: str) -> str:
        with self._lock:
            return self._by_upn(upn).default_calendar_id

    def share(self, owner: str, with_user: str) -> None:
        """Share `owner`'s calendars (read and write) with another user, for delegated access."""
        with self._lock:
            self._by_upn(owner).shared_with.add(with_user.lower())

    def add_event(self, upn: str, start: datetime, end: datetime, *, show_as: str = "busy", subject: str = "Busy",
                  calendar_id: str | None = None, time_zone: str = "UTC") -> dict:
        """An event the mailbox owner made in Outlook (it notifies subscriptions like any change)."""
        body = {"subject": subject, "showAs": show_as, "start": graph_time.write(start, time_zone),
                "end": graph_time.write(end, time_zone)}
        with self._lock:
            mailbox = self._by_upn(upn)
            return self._create(mailbox, calendar_id or mailbox.default_calendar_id, body).render("UTC")

    def remove_event(self, event_id: str) -> None:
        with self._lock:
            self._delete(self._events[event_id])

    def events(self, upn: str, calendar_id: str | None = None) -> list[dict]:
        """The mailbox's events (one calendar's, if given), in UTC, by start."""
        with self._lock:
            mailbox = self._by_upn(upn)
            found = [e for e in self._events.values() if e.user_id == mailbox.user_id and not e.deleted
                     and calendar_id in (None, e.calendar_id)]
            return [e.render("UTC") for e in sorted(found, key=lambda e: e.start)]

    def expire_delta_tokens(self) -> None:
        """Forget every delta and skip token, as Exchange does when its token cache overflows: the next call answers 410."""
        with self._lock:
            self._rounds.clear()

    def deliver_notifications(self, http: httpx.Client | None = None) -> int:
        """POST the queued change notifications; answers how many were taken."""
        return self.subscriptions.deliver(http)

    # --- the API ---------------------------------------------------------------------------------------

    def enter(self, authorization: str, path: str) -> tuple[str, str] | None:
        """Count a request in flight for its token and mailbox; None when the mailbox is at its limit."""
        parts = path.split("/")
        mailbox = parts[3].lower() if len(parts) > 3 and parts[2] == "users" else "me"
        key = (authorization, mailbox)
        with self._flight_lock:
            if self._in_flight.get(key, 0) >= self.mailbox_concurrency:
                self.throttled += 1
                return None
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        return key

    def leave(self, key: tuple[str, str]) -> None:
        with self._flight_lock:
            self._in_flight[key] -= 1

    def get_schedule(self, grant: AccessGrant, who: str | None, body: dict, *, zone: str) -> dict:
        fields = {key.lower(): value for key, value in body.items()}
        schedules = fields.get("schedules")
        if not isinstance(schedules, list) or not schedules:
            raise GraphError(400, "ErrorInvalidParameter", "The parameter 'Schedules' is required.")
        if len(schedules) > SCHEDULE_LIMIT:
            raise GraphError(400, "ErrorInvalidParameter", f"Schedules can contain at most {SCHEDULE_LIMIT} entries.")
        start, end = (self._time_field(fields, name) for name in ("starttime", "endtime"))
        if end <= start or end - start >= SCHEDULE_SPAN:
            raise GraphError(400, "ErrorInvalidParameter", "The time window must be positive and under 62 days.")
        interval = int(fields.get("availabilityviewinterval") or 30)
        if not 5 <= interval <= 1440:
            raise GraphError(400, "ErrorInvalidParameter", "availabilityViewInterval must be between 5 and 1440.")
        with self._lock:
            self._mailbox(grant, who, READ)
            return {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph."
                                      "scheduleInformation)",
                    "value": [self._schedule(grant.tenant_id, str(address), start, end, interval, zone)
                              for address in schedules]}

    def calendar_view(self, grant: AccessGrant, who: str | None, calendar: str | None, params: dict[str, str], *,
                      zone: str, link: str) -> dict:
        for unsupported in ("$filter", "$search", "$expand"):
            if unsupported in params:
                raise GraphError(400, "BadRequest", f"{unsupported} is not emulated by the Graph sandbox.")
        start, end = self._window(params)
        select = parse_select(params.get("$select"))
        top, skip = self._int(params, "$top", DEFAULT_PAGE, 1, MAX_PAGE), self._int(params, "$skip", 0, 0, None)
        with self._lock:
            mailbox = self._mailbox(grant, who, READ)
            calendar_id = self._calendar(mailbox, calendar)
            found = sorted((e for e in self._events.values() if e.calendar_id == calendar_id and not e.deleted
                            and e.overlaps(start, end)), key=lambda e: (e.start, e.id))
            answer: dict[str, Any] = {"value": [e.render(zone, select=select) for e in found[skip:skip + top]]}
        if skip + top < len(found):
            kept = {k: v for k, v in params.items() if k in ("startDateTime", "endDateTime", "$select", "$orderby")}
            answer["@odata.nextLink"] = f"{link}?{urlencode(kept | {'$top': top, '$skip': skip + top})}"
        return answer

    def calendar_view_delta(self, grant: AccessGrant, who: str | None, params: dict[str, str], *, zone: str,
                            page_size: int, link: str) -> dict:
        for unsupported in ("$select", "$filter", "$orderby", "$search", "$expand"):
            if unsupported in params:
                raise GraphError(400, "ErrorInvalidUrlQuery", f"The query parameter '{unsupported}' is not supported "
                                 "with change tracking over calendarView.")
        with self._lock:
            mailbox = self._mailbox(grant, who, READ)
            token = params.get("$skiptoken") or params.get("$deltatoken")
            if token:
                previous = self._rounds.get(token)
                if previous is None or previous.user_id != mailbox.user_id:
                    raise GraphError(410, "SyncStateNotFound", "The sync state generation is not found. The delta "
                                     "token is expired and data must be synchronized again.")
                round_ = previous if "$skiptoken" in params else _DeltaRound(
                    previous.user_id, previous.calendar_id, previous.start, previous.end, previous.upto, self._version)
            else:
                start, end = self._window(params)
                round_ = _DeltaRound(mailbox.user_id, mailbox.default_calendar_id, start, end, None, self._version)
            changes = self._delta_changes(round_)
            page = changes[round_.offset:round_.offset + page_size]
            following = dataclasses.replace(round_, offset=round_.offset + page_size)
            token = secrets.token_urlsafe(32)
            if following.offset < len(changes):
                self._rounds[token] = following
                state = {"@odata.nextLink": f"{link}?{urlencode({'$skiptoken': token})}"}
            else:
                self._rounds[token] = dataclasses.replace(round_, offset=0)
                state = {"@odata.deltaLink": f"{link}?{urlencode({'$deltatoken': token})}"}
            value = [event.render(zone) if not removed else
                     {"@odata.type": "#microsoft.graph.event", "id": event.id, "@removed": {"reason": "deleted"}}
                     for event, removed in page]
        return {"value": value} | state

    def create_event(self, grant: AccessGrant, who: str | None, calendar: str | None, body: Any) -> GraphEvent:
        changes = writable_changes(body)
        with self._lock:
            mailbox = self._mailbox(grant, who, WRITE)
            calendar_id = self._calendar(mailbox, calendar)
            transaction = changes.get("transactionId")
            if transaction:
                for event in self._events.values():
                    if event.user_id == mailbox.user_id and not event.deleted and \
                            event.props.get("transactionId") == transaction:
                        if event.calendar_id != calendar_id:
                            raise GraphError(409, "ErrorDuplicateTransactionId", "Your request can't be completed. "
                                             "The TransactionId specified in the request has already been used to "
                                             "create a different event.")
                        return event
            return self._create(mailbox, calendar_id, changes)

    def get_event(self, grant: AccessGrant, who: str | None, calendar: str | None, event_id: str) -> GraphEvent:
        with self._lock:
            return self._event(self._mailbox(grant, who, READ), calendar, event_id)

    def update_event(self, grant: AccessGrant, who: str | None, calendar: str | None, event_id: str,
                     body: Any) -> GraphEvent:
        changes = writable_changes(body)
        with self._lock:
            event = self._event(self._mailbox(grant, who, WRITE), calendar, event_id)
            if "transactionId" in changes and changes["transactionId"] != event.props.get("transactionId"):
                raise GraphError(400, "ErrorInvalidPropertySet", "The transactionId of an event cannot be changed.")
            event.start, event.end, event.start_zone, event.end_zone = read_times(changes, event)
            event.props |= {k: v for k, v in changes.items() if k not in ("start", "end")}
            self._touch(event, "updated")
            return event

    def delete_event(self, grant: AccessGrant, who: str | None, calendar: str | None, event_id: str) -> None:
        with self._lock:
            self._delete(self._event(self._mailbox(grant, who, WRITE), calendar, event_id))

    def create_subscription(self, grant: AccessGrant, body: Any) -> dict:
        if not isinstance(body, dict):
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        user, calendar, me = parse_resource(str(body.get("resource", "")))
        with self._lock:
            mailbox = self._mailbox(grant, None if me else user, READ)
            calendar_id = None if calendar is None else self._calendar(mailbox, None if calendar == "default" else calendar)
        creator = self.identity.add_user(grant.tenant_id, grant.user) if grant.user else grant.client_id
        # The handshake runs outside the lock: the receiver may well call Graph back while answering it.
        return self.subscriptions.create(body, tenant_id=grant.tenant_id, client_id=grant.client_id, creator=creator,
                                         user_id=mailbox.user_id, calendar_id=calendar_id)

    # --- internals (called with the lock held) ---------------------------------------------------------

    def _create(self, mailbox: _Mailbox, calendar_id: str, changes: dict) -> GraphEvent:
        start, end, start_zone, end_zone = read_times(changes, None)
        now = datetime.now(timezone.utc)
        event = GraphEvent(new_id(), mailbox.user_id, calendar_id, mailbox.upn, start, end, start_zone, end_zone,
                           {k: v for k, v in changes.items() if k not in ("start", "end")}, now, now, 0)
        self._events[event.id] = event
        self._touch(event, "created")
        return event

    def _delete(self, event: GraphEvent) -> None:
        event.deleted = True
        self._touch(event, "deleted")

    def _touch(self, event: GraphEvent, change_type: str) -> None:
        self._version += 1
        event.version, event.modified = self._version, datetime.now(timezone.utc)
        if change_type != "created":
            event.change_key = secrets.token_urlsafe(16)
        mailbox = self._mailboxes[event.user_id]
        self.subscriptions.changed(user_id=event.user_id, calendar_id=event.calendar_id,
                                   default_calendar_id=mailbox.default_calendar_id, event_id=event.id,
                                   change_type=change_type, change_key=event.change_key)

    def _delta_changes(self, round_: _DeltaRound) -> list[tuple[GraphEvent, bool]]:
        """(event, removed) pairs of a round, oldest change first."""
        events = sorted((e for e in self._events.values() if e.calendar_id == round_.calendar_id
                         and e.version <= round_.upto), key=lambda e: e.version)
        if round_.since is None:
            return [(e, False) for e in events if not e.deleted and e.overlaps(round_.start, round_.end)]
        return [(e, e.deleted or not e.overlaps(round_.start, round_.end)) for e in events if e.version > round_.since]

    def _schedule(self, tenant_id: str, address: str, start: datetime, end: datetime, interval: int, zone: str) -> dict:
        mailbox = next((m for m in self._mailboxes.values()
                        if m.tenant_id == tenant_id and m.upn.lower() == address.lower()), None)
        if mailbox is None:
            return {"scheduleId": address, "availabilityView": "", "scheduleItems": [],
                    "error": {"message": f"The recipient {address} could not be found.",
                              "responseCode": "ErrorMailRecipientNotFound"}}
        items = sorted((e for e in self._events.values() if e.calendar_id == mailbox.default_calendar_id
                        and not e.deleted and e.overlaps(start, end)), key=lambda e: e.start)
        slots = math.ceil((end - start) / timedelta(minutes=interval))
        view = []
        for slot in range(slots):
            slot_start = start + timedelta(minutes=interval * slot)
            slot_end = min(slot_start + timedelta(minutes=interval), end)
            view.append(max((_AVAILABILITY[e.show_as] for e in items if e.overlaps(slot_start, slot_end)), default="0"))
        return {
            "scheduleId": address, "availabilityView": "".join(view),
            "scheduleItems": [{"isPrivate": e.props.get("sensitivity") == "private", "status": e.show_as,
                               "subject": e.props.get("subject", ""),
                               "location": (e.props.get("location") or {}).get("displayName", ""),
                               "start": graph_time.write(e.start, zone), "end": graph_time.write(e.end, zone)}
                              for e in items],
            "workingHours": {"daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                             "startTime": "08:00:00.0000000", "endTime": "17:00:00.0000000",
                             "timeZone": {"name": "UTC"}},
        }

    def _mailbox(self, grant: AccessGrant, who: str | None, needs: frozenset[str]) -> _Mailbox:
        if who is None:
            if grant.user is None:
                raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            who = grant.user
        mailbox = self._mailboxes.get(who) or next(
            (m for m in self._mailboxes.values() if m.upn.lower() == who.lower()), None)
        if mailbox is None or mailbox.tenant_id != grant.tenant_id:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{who}' is invalid.")
        if grant.user is not None and grant.user.lower() != mailbox.upn.lower():
            needs = SHARED[needs] if grant.user.lower() in mailbox.shared_with else frozenset()
        if not grant.permissions & needs:
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return mailbox

    def _calendar(self, mailbox: _Mailbox, calendar: str | None) -> str:
        if calendar is None:
            return mailbox.default_calendar_id
        if calendar not in mailbox.calendars:
            raise item_not_found()
        return calendar

    def _event(self, mailbox: _Mailbox, calendar: str | None, event_id: str) -> GraphEvent:
        event = self._events.get(event_id)
        if event is None or event.deleted or event.user_id != mailbox.user_id or \
                (calendar is not None and event.calendar_id != self._calendar(mailbox, calendar)):
            raise item_not_found()
        return event

    def _by_upn(self, upn: str) -> _Mailbox:
        return next(m for m in self._mailboxes.values() if m.upn.lower() == upn.lower())

    @staticmethod
    def _window(params: dict[str, str]) -> tuple[datetime, datetime]:
        if not params.get("startDateTime") or not params.get("endDateTime"):
            raise GraphError(400, "ErrorInvalidParameter", "This request requires a time window specified by the "
                             "query string parameters StartDateTime and EndDateTime.")
        try:
            return graph_time.parse_instant(params["startDateTime"]), graph_time.parse_instant(params["endDateTime"])
        except ValueError as exc:
            raise GraphError(400, "ErrorInvalidParameter", "The value of StartDateTime or EndDateTime is not a "
                             "valid DateTime.") from exc

    @staticmethod
    def _time_field(fields: dict[str, Any], name: str) -> datetime:
        try:
            return graph_time.read(fields[name])[0]
        except graph_time.UnsupportedZone as exc:
            raise GraphError(400, "TimeZoneNotSupportedException", "A valid TimeZone value must be specified. The "
                             f"following TimeZone value is not supported: '{exc.name}'.") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GraphError(400, "ErrorInvalidParameter", f"The parameter '{name}' is required.") from exc

    @staticmethod
    def _int(params: dict[str, str], name: str, default: int, low: int, high: int | None) -> int:
        try:
            value = int(params.get(name, default))
        except ValueError as exc:
            raise GraphError(400, "BadRequest", f"Invalid value for {name}.") from exc
        if value < low:
            raise GraphError(400, "BadRequest", f"Invalid value for {name}.")
        return min(value, high) if high is not None else value


MAILBOX_CONCURRENCY = 4


def create_app(graph: GraphSandbox) -> FastAPI:
    app = FastAPI(title="Microsoft Graph sandbox")
    add_routes(app, graph)
    build = app.build_middleware_stack
    # Wrapped around the fault layer too, so a request counts as in flight until its answer has been
    # sent, a scripted late answer (faults.delay_next) included, as Graph counts it.
    app.build_middleware_stack = lambda: _MailboxConcurrency(build(), graph)  # type: ignore[method-assign]
    return app


class _MailboxConcurrency:
    def __init__(self, app: ASGIApp, graph: GraphSandbox) -> None:
        self.app, self.graph = app, graph

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization", "")
        key = self.graph.enter(authorization, scope["path"])
        if key is None:
            busy = GraphError(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.",
                              headers={"Retry-After": "1"}).response()
            await busy(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.graph.leave(key)

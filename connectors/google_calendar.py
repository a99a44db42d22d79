"""Google Calendar through google-api-python-client: live free/busy and idempotent event creation.

Credentials are the JSON of a service-account key (an extra `"subject"` key makes it
impersonate that Workspace user through domain-wide delegation) or an authorized_user
JSON. Either refreshes against the file's `token_uri`, which is how the sandbox stands in
for Google. Without credentials, an `oauth:` block names the client a person authorized
with `textback connect`, and the injected `token` (connectors/oauth.py) supplies the tokens.

Idempotency: the Google event id is derived from `EventRequest.key`, so a retried insert
answers 409 `duplicate` and we return the event the earlier attempt created.

Changes: `watch` opens a push channel (Google POSTs an empty notification to the address on each
change, with the token in X-Goog-Channel-Token), `unwatch` closes it, and `changes_since` reads
what changed since a cursor (Google's sync token). When Google answers 410 (the token expired or
was invalidated) `changes_since` starts again from scratch: it returns every event, with a new
cursor, and the caller must treat that list as a full snapshot rather than a delta.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Literal

import google.auth.credentials
import httplib2
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2 import service_account
from google.oauth2.credentials import Credentials as UserCredentials
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import HttpRequest
from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import (
    AuthExpired,
    ConnectorConfig,
    ConnectorError,
    RateLimited,
    Rejected,
    Secret,
    Transient,
    error_for_status,
    merged_busy,
    parse_retry_after,
    query_windows,
)
from connectors.oauth import OAuthApp, TokenProvider
from connectors.quota import Meter, Quota, Unmetered, connection_scope, counted
from core.models import BusyInterval, CreatedEvent, EventRequest

GOOGLE_API = "https://www.googleapis.com"
CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"
KEY_PROPERTY = "textback_key"
# Google does not document the longest freeBusy span; about three months is refused, so stay well under it.
FREE_BUSY_WINDOW = timedelta(days=60)
_RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"}
# A 403 for these means the token lacks a scope: reconnecting fixes it. Any other 403 (access level,
# organizer-only changes) is a refusal retries and re-auth cannot fix.
_REAUTH_REASONS = {"insufficientPermissions", "authError"}
_TRANSIENT_CALENDAR_REASONS = {"internalError", "backendError"}
_REQUIRED_FIELDS = {
    "service_account": ("client_email", "private_key", "token_uri"),
    "authorized_user": ("client_id", "client_secret", "refresh_token"),
}


class GoogleCalendarConfig(ConnectorConfig):
    type: Literal["google"]
    calendars: list[str] = Field(min_length=1)
    credentials: Secret | None = Field(
        None, description='Service-account key JSON (optionally with "subject" for domain-wide delegation) '
        "or authorized_user JSON"
    )
    oauth: OAuthApp | None = Field(None, description="instead of credentials: a Google account authorized "
                                   "with `textback connect`")
    base_url: str = GOOGLE_API
    requests_per_second: int = Field(default=10, gt=0, le=1000, description="requests per second per user: the "
                                     "Calendar API per-user quota of the Google Cloud project (its quota page "
                                     "shows it per minute)")

    @field_validator("credentials")
    @classmethod
    def _credentials_are_a_known_kind(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            credential_info(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _one_way_to_authorize(self) -> "GoogleCalendarConfig":
        if (self.credentials is None) == (self.oauth is None):
            raise ValueError("give exactly one of credentials (a service-account or authorized_user JSON) "
                             "and oauth (a Google account authorized with `textback connect`)")
        return self


def credential_info(text: str) -> dict[str, Any]:
    """The parsed credentials JSON; ValueError with a readable reason (never the secret) otherwise."""
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise ValueError("credentials must be JSON: a Google service-account key or an authorized_user file")
    kind = info.get("type")
    if kind not in _REQUIRED_FIELDS:
        raise ValueError(f'credentials JSON has type {kind!r}; expected "service_account" or "authorized_user"')
    if missing := [name for name in _REQUIRED_FIELDS[kind] if not info.get(name)]:
        raise ValueError(f"{kind} credentials lack {', '.join(missing)}")
    if kind == "authorized_user" and "subject" in info:
        raise ValueError('"subject" (domain-wide delegation) only applies to a service-account key')
    return info


def event_id_for(key: str) -> str:
    """The Google event id for an idempotency key: base32hex ([a-v0-9]) of its SHA-256, 52 characters."""
    return base64.b32hexencode(hashlib.sha256(key.encode()).digest()).decode().rstrip("=").lower()


class GoogleCalendar:
    """CalendarConnector over Google Calendar v3."""

    role: ClassVar[str] = "calendar"
    config_model: ClassVar[type[ConnectorConfig]] = GoogleCalendarConfig

    def __init__(self, config: GoogleCalendarConfig, *, http: httplib2.Http | None = None,
                 token: TokenProvider | None = None, meter: Meter | None = None) -> None:
        self.config = config
        self._meter = meter or Unmetered()
        self.quota = quota_for(config)
        if config.credentials is not None:
            credentials = _credentials(credential_info(config.credentials.get_secret_value()))
        elif token is not None:
            credentials = _StoredOAuthCredentials(token)
        else:
            raise ValueError("this calendar is authorized with `textback connect`; pass token=TokenProvider(...)")
        self._service = build(
            "calendar",
            "v3",
            http=AuthorizedHttp(credentials, http=http or httplib2.Http(timeout=30)),
            static_discovery=True,
            client_options={"api_endpoint": config.base_url.rstrip("/") + "/calendar/v3/"},
        )
        # httplib2.Http is not thread-safe, and one connector may serve several worker threads.
        self._lock = threading.Lock()

    def free_busy(self, *, calendars: list[str], start: datetime, end: datetime) -> dict[str, list[BusyInterval]]:
        busy: dict[str, list[BusyInterval]] = {calendar_id: [] for calendar_id in calendars}
        for window_start, window_end in query_windows(start, end, FREE_BUSY_WINDOW):
            body = {
                "timeMin": window_start.isoformat(),
                "timeMax": window_end.isoformat(),
                "timeZone": "UTC",
                "items": [{"id": calendar_id} for calendar_id in busy],
            }
            answer = self._execute(self._service.freebusy().query(body=body), action="free/busy query")
            for calendar_id, intervals in busy.items():
                entry = answer.get("calendars", {}).get(calendar_id)
                if entry is None:
                    raise Transient(f"free/busy query: Google sent no answer for calendar {calendar_id}")
                if entry.get("errors"):
                    raise _calendar_error(calendar_id, entry["errors"])
                intervals.extend(
                    BusyInterval(start=datetime.fromisoformat(b["start"]), end=datetime.fromisoformat(b["end"]))
                    for b in entry.get("busy", [])
                )
        return {calendar_id: merged_busy(intervals) for calendar_id, intervals in busy.items()}

    def create_event(self, event: EventRequest) -> CreatedEvent:
        event_id = event_id_for(event.key)
        body: dict[str, Any] = {
            "id": event_id,
            "summary": event.summary,
            "description": event.description,
            "start": {"dateTime": event.start.isoformat(), "timeZone": event.timezone},
            "end": {"dateTime": event.end.isoformat(), "timeZone": event.timezone},
            "extendedProperties": {"private": {KEY_PROPERTY: event.key}},
        }
        if event.location:
            body["location"] = event.location
        events = self._service.events()
        insert = events.insert(calendarId=event.calendar_id, body=body, sendUpdates="none")
        created = self._execute(insert, action="create event", tolerate=(409,))
        if created is None:
            created = self._earlier_attempt(event, body)
        return CreatedEvent(external_id=created["id"], calendar_id=event.calendar_id, link=created.get("htmlLink"))

    def update_event(self, *, calendar_id: str, external_id: str, start: datetime, end: datetime,
                     timezone: str) -> None:
        """Move the event (a patch: its summary, description and key stay as they are)."""
        body = {"start": {"dateTime": start.isoformat(), "timeZone": timezone},
                "end": {"dateTime": end.isoformat(), "timeZone": timezone}}
        patch = self._service.events().patch(calendarId=calendar_id, eventId=external_id, body=body,
                                             sendUpdates="none")
        self._execute(patch, action="move event")

    def cancel_event(self, *, calendar_id: str, external_id: str) -> None:
        """Delete the event; one already deleted (410) or gone (404) counts as done."""
        delete = self._service.events().delete(calendarId=calendar_id, eventId=external_id, sendUpdates="none")
        self._execute(delete, action="cancel event", tolerate=(404, 410))

    def watch(self, *, calendar_id: str, address: str, token: str, ttl_seconds: int) -> dict:
        """Open a push channel on the calendar's events.

        Returns `channel_id`, `resource_id` (both needed by `unwatch`), `resource_uri` and
        `expires_at` (aware UTC; Google may grant less than `ttl_seconds`, and never renews).
        """
        body = {"id": str(uuid.uuid4()), "type": "web_hook", "address": address, "token": token,
                "params": {"ttl": str(ttl_seconds)}}
        channel = self._execute(self._service.events().watch(calendarId=calendar_id, body=body), action="watch")
        return {"channel_id": channel["id"], "resource_id": channel["resourceId"],
                "resource_uri": channel.get("resourceUri"),
                "expires_at": datetime.fromtimestamp(int(channel["expiration"]) / 1000, timezone.utc)}

    def unwatch(self, *, channel_id: str, resource_id: str) -> None:
        """Close a push channel; one already closed or expired (404) counts as done."""
        stop = self._service.channels().stop(body={"id": channel_id, "resourceId": resource_id})
        self._execute(stop, action="unwatch", tolerate=(404,))

    def changes_since(self, *, calendar_id: str, cursor: str | None) -> tuple[list[dict], str]:
        """The events changed since `cursor` (cancelled ones have status "cancelled") and the next cursor.

        Without a cursor, or when Google refuses it with 410, this is a full sync: every event,
        cancelled ones Google still keeps included, so a caller applies both kinds of answer alike
        but must drop what it knows that a full sync no longer lists.
        """
        if cursor is not None:
            try:
                return self._events_pages(calendar_id, {"syncToken": cursor})
            except Rejected as exc:
                if exc.status != 410:
                    raise
        return self._events_pages(calendar_id, {"showDeleted": True})

    def changes_page(self, *, calendar_id: str, cursor: dict[str, str] | None) -> tuple[list[dict], dict[str, str]]:
        """One page of changes: the events on it and the cursor to store before asking for the next page.

        The cursor is `{"sync": token}` once a listing is complete, `{"page": token, ...}` in the middle of
        one (so a pull that stops after page 1 resumes at page 2), or None for a full sync. A sync token
        Google refuses with 410 starts a full sync of the calendar (cancelled events included).
        """
        cursor = cursor or {}
        params: dict[str, Any] = {"syncToken": cursor["sync"]} if cursor.get("sync") else {"showDeleted": True}
        if cursor.get("page"):
            params["pageToken"] = cursor["page"]
        request = self._service.events().list(calendarId=calendar_id, **params)
        try:
            page = self._execute(request, action="list changes")
        except Rejected as exc:
            if exc.status != 410 or not cursor.get("sync"):
                raise
            return self.changes_page(calendar_id=calendar_id, cursor=None)
        items = page.get("items", [])
        if page.get("nextPageToken"):
            return items, {k: v for k, v in {"sync": cursor.get("sync"), "page": page["nextPageToken"]}.items() if v}
        return items, {"sync": page["nextSyncToken"]}

    def _events_pages(self, calendar_id: str, params: dict[str, Any]) -> tuple[list[dict], str]:
        events, page_token = [], None
        while True:
            request = self._service.events().list(calendarId=calendar_id, pageToken=page_token, **params)
            page = self._execute(request, action="list changes")
            events.extend(page.get("items", []))
            page_token = page.get("nextPageToken")
            if page_token is None:
                return events, page["nextSyncToken"]

    def _earlier_attempt(self, event: EventRequest, body: dict[str, Any]) -> dict:
        """The event a previous attempt with the same key created; restored if it was cancelled since."""
        events = self._service.events()
        existing = self._execute(events.get(calendarId=event.calendar_id, eventId=body["id"]), action="create event")
        private = existing.get("extendedProperties", {}).get("private", {})
        if private.get(KEY_PROPERTY) != event.key:
            raise Rejected(f"create event: id {body['id']} is taken by an event that is not ours", status=409)
        if existing.get("status") != "cancelled":
            return existing
        restore = events.update(
            calendarId=event.calendar_id, eventId=body["id"], body=body | {"status": "confirmed"}, sendUpdates="none"
        )
        return self._execute(restore, action="create event")

    def _execute(self, request: HttpRequest, *, action: str, tolerate: tuple[int, ...] = ()) -> Any:
        """Run one API call; a status in `tolerate` returns None instead of raising."""
        with counted(self._meter, [self.quota]):
            try:
                with self._lock, _google_errors(action):
                    try:
                        return request.execute()
                    except HttpError as exc:
                        if exc.status_code in tolerate:
                            return None
                        raise
            except RateLimited as exc:
                self._meter.refused(self.quota, exc.retry_after)
                raise


def quota_for(config: GoogleCalendarConfig) -> Quota:
    """Google counts requests per user per project: the impersonated or authorized user, or the OAuth app's."""
    if config.credentials is not None:
        info = credential_info(config.credentials.get_secret_value())
        user = info.get("subject") or info.get("client_email") or info.get("client_id") or ""
    else:
        user = (config.oauth.client_id if config.oauth else "") + "|" + ",".join(config.calendars)
    return Quota(connection_scope("google", config.base_url, user), config.requests_per_second, 1.0)


def _credentials(info: dict[str, Any]) -> google.auth.credentials.Credentials:
    if info["type"] == "service_account":
        return service_account.Credentials.from_service_account_info(
            info, scopes=[CALENDAR_SCOPE], subject=info.get("subject")
        )
    user = UserCredentials.from_authorized_user_info(info)
    # from_authorized_user_info always sets Google's token endpoint; the file's own token_uri must win.
    return user.with_token_uri(info["token_uri"]) if info.get("token_uri") else user


class _StoredOAuthCredentials(google.auth.credentials.Credentials):
    """google-auth credentials over a TokenProvider: textback, not google-auth, refreshes and stores the tokens."""

    def __init__(self, token: TokenProvider) -> None:
        super().__init__()
        self._provider = token

    def refresh(self, request: Any) -> None:
        # Called when the token is about to expire or the API answered 401: either way this token is spent.
        tokens = self._provider.refresh(stale=self.token) if self.token else self._provider.current()
        self.token = tokens.access_token
        # google-auth compares expiry with naive UTC datetimes.
        self.expiry = tokens.expires_at.astimezone(timezone.utc).replace(tzinfo=None) if tokens.expires_at else None


@contextlib.contextmanager
def _google_errors(action: str) -> Iterator[None]:
    """Translate google-api-python-client, google-auth and transport failures into connectors.base errors."""
    try:
        yield
    except HttpError as exc:
        raise _from_http_error(exc, action) from exc
    except RefreshError as exc:
        if exc.retryable:
            raise Transient(f"{action}: token refresh failed: {exc.args[0]}") from exc
        raise AuthExpired(f"{action}: Google refused the credentials: {exc.args[0]}") from exc
    except (TransportError, httplib2.HttpLib2Error, OSError) as exc:
        raise Transient(f"{action}: {exc.__class__.__name__}: {exc}") from exc


def _from_http_error(exc: HttpError, action: str) -> ConnectorError:
    status = exc.status_code
    retry_after = parse_retry_after(exc.resp.get("retry-after"))
    message = f"{action}: Google answered {status} {exc.reason}"
    reasons = _reasons(exc.content)
    if status == 429 or (status == 403 and reasons & _RATE_LIMIT_REASONS):
        return RateLimited(message, retry_after=retry_after, status=status)
    if status == 403 and not reasons & _REAUTH_REASONS:
        return Rejected(f"{message} ({', '.join(sorted(reasons)) or 'forbidden'})", status=status)
    return error_for_status(status, message, retry_after=retry_after)


def _reasons(content: bytes) -> set[str]:
    try:
        errors = json.loads(content)["error"]["errors"]
        return {item["reason"] for item in errors}
    except (ValueError, KeyError, TypeError):
        return set()


def _calendar_error(calendar_id: str, errors: list[dict]) -> ConnectorError:
    reasons = {item.get("reason") for item in errors}
    if reasons & _TRANSIENT_CALENDAR_REASONS:
        return Transient(f"free/busy query: Google failed on calendar {calendar_id}: {sorted(reasons)}")
    if "notFound" in reasons:
        return Rejected(
            f"free/busy query: calendar {calendar_id} does not exist or is not shared with these credentials"
        )
    return Rejected(f"free/busy query: calendar {calendar_id}: {sorted(reasons)}")

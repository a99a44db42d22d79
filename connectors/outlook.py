"""Microsoft 365 (Outlook) calendars through Microsoft Graph: live free/busy and idempotent event creation.

Tokens come from msal's ConfidentialClientApplication, or from an injected token provider:

    mode: app         client credentials for `<base_url>/.default`: the app's admin-consented
                      application permission Calendars.ReadWrite, on every listed mailbox
    mode: delegated   a signed-in user's refresh token (`refresh_token`, or msal's cache once used)
                      for `<base_url>/Calendars.ReadWrite`: books into the user's own mailbox (others'
                      shared calendars would need Calendars.ReadWrite.Shared); free/busy of anyone
    token=...         any callable returning an access token (connectors.oauth.TokenProvider); if
                      it has `refresh(stale=...)`, that is called once when Graph answers 401

Scopes name `base_url`'s origin as the resource, so national clouds (graph.microsoft.us, ...) work
with their `login_url`. `calendars` are mailbox UPNs (or user ids); events go into each mailbox's default
calendar, which is also the one getSchedule reads.

Free/busy is `getSchedule` (20 mailboxes, under 62 days per call): every item that is not `free`
is busy (tentative, oof, workingElsewhere, unknown). Events are written as local wall-clock time
plus a time zone; Graph accepts only a fixed list of IANA names, so any other zone is written as
UTC (the same instant). Idempotency: `transactionId` is derived from `EventRequest.key`, and Graph
answers a retried create with the event the first attempt made.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import msal
import requests
from pydantic import Field, field_validator, model_validator

from connectors.base import (
    AuthExpired,
    ConnectorConfig,
    ConnectorError,
    RateLimited,
    Reference,
    Rejected,
    Secret,
    Transient,
    error_for_status,
    merged_busy,
    parse_retry_after,
    query_windows,
)
from connectors.quota import Concurrency, Meter, Unmetered, connection_scope
from core.calendar_sync import EventState
from core.models import BusyInterval, CreatedEvent, EventRequest

GRAPH_API = "https://graph.microsoft.com"
LOGIN_URL = "https://login.microsoftonline.com"
SCHEDULES_PER_CALL = 20
SCHEDULE_WINDOW = timedelta(days=60)  # getSchedule wants under 62 days
TRANSACTION_NAMESPACE = uuid.UUID("5f0c7c2e-3f57-4d0e-9a53-6a1f0d4b7e21")
_TIMEOUT = 30.0
# The IANA names Graph's dateTimeTimeZone accepts (besides Windows zone ids); other zones are written as UTC.
GRAPH_IANA_ZONES = frozenset("""
Etc/GMT+12 Etc/GMT+11 Pacific/Honolulu America/Anchorage America/Santa_Isabel America/Los_Angeles America/Phoenix
America/Chihuahua America/Denver America/Guatemala America/Chicago America/Mexico_City America/Regina America/Bogota
America/New_York America/Indiana/Indianapolis America/Caracas America/Asuncion America/Halifax America/Cuiaba
America/La_Paz America/Santiago America/St_Johns America/Sao_Paulo America/Argentina/Buenos_Aires America/Cayenne
America/Godthab America/Montevideo America/Bahia Etc/GMT+2 Atlantic/Azores Atlantic/Cape_Verde Africa/Casablanca
Etc/GMT Europe/London Atlantic/Reykjavik Europe/Berlin Europe/Budapest Europe/Paris Europe/Warsaw Africa/Lagos
Africa/Windhoek Europe/Bucharest Asia/Beirut Africa/Cairo Asia/Damascus Africa/Johannesburg Europe/Kyiv Europe/Kiev
Europe/Istanbul Asia/Jerusalem Asia/Amman Asia/Baghdad Europe/Kaliningrad Asia/Riyadh Africa/Nairobi Asia/Tehran
Asia/Dubai Asia/Baku Europe/Moscow Indian/Mauritius Asia/Tbilisi Asia/Yerevan Asia/Kabul Asia/Karachi Asia/Tashkent
Asia/Kolkata Asia/Colombo Asia/Kathmandu Asia/Almaty Asia/Dhaka Asia/Yekaterinburg Asia/Yangon Asia/Rangoon
Asia/Bangkok Asia/Novosibirsk Asia/Shanghai Asia/Krasnoyarsk Asia/Singapore Australia/Perth Asia/Taipei
Asia/Ulaanbaatar Asia/Irkutsk Asia/Tokyo Asia/Seoul Australia/Adelaide Australia/Darwin Australia/Brisbane
Australia/Sydney Pacific/Port_Moresby Australia/Hobart Asia/Yakutsk Pacific/Guadalcanal Asia/Vladivostok
Pacific/Auckland Etc/GMT-12 Pacific/Fiji Asia/Magadan Pacific/Tongatapu Pacific/Apia Pacific/Kiritimati UTC
""".split())
# Token-endpoint errors after which only a person (a new sign-in, a new client secret) can help.
_CREDENTIALS_DEAD = {"invalid_grant", "interaction_required", "consent_required", "login_required",
                     "invalid_client", "unauthorized_client"}


class OutlookConfig(ConnectorConfig):
    type: Literal["outlook"]
    mode: Literal["app", "delegated"] = "app"
    tenant_id: Reference = Field(min_length=1, description="the Entra directory (tenant) id or its domain")
    client_id: Reference = Field(min_length=1, description="the app registration's application (client) id")
    client_secret: Secret
    calendars: list[str] = Field(min_length=1, description="mailbox UPNs whose default calendars are read and booked")
    base_url: str = GRAPH_API
    login_url: str = LOGIN_URL
    refresh_token: Secret | None = Field(None, description="delegated mode: the signed-in user's refresh token")
    ca_bundle: str | None = Field(None, description="PEM file of the CAs to trust instead of the system's")
    concurrent_per_mailbox: int = Field(4, gt=0, le=100, description="requests in flight at once per mailbox "
                                        "(Graph's MailboxConcurrency limit for an app)")

    @field_validator("login_url", "base_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if urlsplit(value).scheme != "https" or not urlsplit(value).netloc:
            raise ValueError("must be an https:// URL (msal refuses anything else)")
        return value.rstrip("/")

    @field_validator("ca_bundle")
    @classmethod
    def _bundle_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _refresh_token_only_when_delegated(self) -> OutlookConfig:
        if self.mode == "app" and self.refresh_token is not None:
            raise ValueError("refresh_token applies to mode: delegated only; app mode uses the client secret")
        return self


def transaction_id_for(key: str) -> str:
    """The Graph transactionId for an idempotency key: a name-based UUID, the same for every retry."""
    return str(uuid.uuid5(TRANSACTION_NAMESPACE, key))


class OutlookCalendar:
    """CalendarConnector over Microsoft Graph v1.0."""

    role: ClassVar[str] = "calendar"
    config_model: ClassVar[type[ConnectorConfig]] = OutlookConfig

    def __init__(self, config: OutlookConfig, *, http: httpx.Client | None = None,
                 token: Callable[[], str] | None = None, msal_http_client: Any = None,
                 meter: Meter | None = None) -> None:
        self.config = config
        self._meter = meter or Unmetered()
        self._graph = config.base_url + "/v1.0"
        self._http = http or httpx.Client(timeout=_TIMEOUT, verify=_ssl_context(config.ca_bundle))
        self._session = None if token or msal_http_client else PinnedSession(config.ca_bundle)
        self._token = token or MsalTokens(config, http_client=msal_http_client or self._session)

    def close(self) -> None:
        """Drop pooled connections (the clients this connector made itself)."""
        self._http.close()
        if self._session is not None:
            self._session.close()

    def free_busy(self, *, calendars: list[str], start: datetime, end: datetime) -> dict[str, list[BusyInterval]]:
        busy: dict[str, list[BusyInterval]] = {calendar: [] for calendar in calendars}
        if not busy:
            return busy
        path = "/me/calendar/getSchedule" if self.config.mode == "delegated" else \
            f"/users/{_segment(calendars[0])}/calendar/getSchedule"
        mailboxes = list(busy)
        for window_start, window_end in query_windows(start, end, SCHEDULE_WINDOW):
            for first in range(0, len(mailboxes), SCHEDULES_PER_CALL):
                batch = mailboxes[first:first + SCHEDULES_PER_CALL]
                body = {"schedules": batch, "startTime": _utc_wall_clock(window_start),
                        "endTime": _utc_wall_clock(window_end), "availabilityViewInterval": 60}
                answer = self._call("POST", path, json=body, headers={"Prefer": 'outlook.timezone="UTC"'},
                                    action="free/busy query").json()
                schedules = {str(item.get("scheduleId", "")).lower(): item for item in answer.get("value", [])}
                for mailbox in batch:
                    busy[mailbox].extend(_busy_items(mailbox, schedules.get(mailbox.lower())))
        return {calendar: merged_busy(intervals) for calendar, intervals in busy.items()}

    def create_event(self, event: EventRequest) -> CreatedEvent:
        body: dict[str, Any] = {
            "subject": event.summary,
            "body": {"contentType": "text", "content": event.description},
            "start": _wall_clock(event.start, event.timezone),
            "end": _wall_clock(event.end, event.timezone),
            "showAs": "busy",
            "transactionId": transaction_id_for(event.key),
        }
        if event.location:
            body["location"] = {"displayName": event.location}
        created = self._call("POST", f"/users/{_segment(event.calendar_id)}/calendar/events", json=body,
                             action="create event").json()
        return CreatedEvent(external_id=created["id"], calendar_id=event.calendar_id, link=created.get("webLink"))

    def update_event(self, *, calendar_id: str, external_id: str, start: datetime, end: datetime,
                     timezone: str) -> None:
        """Move the event; one deleted in Outlook since is Rejected (404)."""
        body = {"start": _wall_clock(start, timezone), "end": _wall_clock(end, timezone)}
        self._call("PATCH", f"/users/{_segment(calendar_id)}/events/{_segment(external_id)}", json=body,
                   action="update event")

    def cancel_event(self, *, calendar_id: str, external_id: str) -> None:
        """Delete the event; one already gone (404) counts as done."""
        self._call("DELETE", f"/users/{_segment(calendar_id)}/events/{_segment(external_id)}",
                   action="cancel event", tolerate=(404,))

    def event_state(self, *, calendar_id: str, external_id: str) -> EventState:
        """The event as Outlook has it now; one deleted (404) or cancelled reads as cancelled."""
        response = self._call("GET", f"/users/{_segment(calendar_id)}/events/{_segment(external_id)}",
                              action="read event", tolerate=(404,),
                              headers={"Prefer": 'outlook.timezone="UTC"'})
        if response.status_code == 404:
            return EventState(calendar_id=calendar_id, event_id=external_id, cancelled=True)
        event = response.json()
        declined = (event.get("responseStatus") or {}).get("response") == "declined"
        return EventState(calendar_id=calendar_id, event_id=external_id,
                          cancelled=bool(event.get("isCancelled")) or declined,
                          start=_instant(event["start"]), end=_instant(event["end"]))

    def subscribe(self, *, calendar_id: str, notification_url: str, client_state: str,
                  expires_at: datetime) -> dict:
        """A Graph subscription on the mailbox's events (Graph validates the URL before it answers)."""
        body = {"changeType": "created,updated,deleted", "notificationUrl": notification_url,
                "lifecycleNotificationUrl": notification_url, "clientState": client_state,
                "resource": f"users/{calendar_id}/events",
                "expirationDateTime": expires_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")}
        made = self._call("POST", "/subscriptions", json=body, action="subscribe").json()
        return {"subscription_id": made["id"], "expires_at": _parse_utc(made["expirationDateTime"])}

    def renew(self, *, subscription_id: str, expires_at: datetime) -> datetime:
        body = {"expirationDateTime": expires_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")}
        made = self._call("PATCH", f"/subscriptions/{_segment(subscription_id)}", json=body, action="renew").json()
        return _parse_utc(made["expirationDateTime"])

    def unsubscribe(self, *, subscription_id: str) -> None:
        self._call("DELETE", f"/subscriptions/{_segment(subscription_id)}", action="unsubscribe", tolerate=(404,))

    def _call(self, method: str, path: str, *, action: str, json: Any = None, headers: dict[str, str] | None = None,
              tolerate: tuple[int, ...] = ()) -> httpx.Response:
        """One Graph request, holding one of its mailbox's concurrency slots; a 401 gets one more try with a
        fresh token when the provider can refresh."""
        with self._meter.hold(self.concurrency(path)):
            return self._request(method, path, action=action, json=json, headers=headers, tolerate=tolerate)

    def concurrency(self, path: str) -> Concurrency:
        """Graph throttles requests in flight per app per mailbox (MailboxConcurrency)."""
        mailbox = unquote(path.split("/")[2]) if path.startswith("/users/") else self.config.calendars[0]
        return Concurrency(connection_scope("graph", self._graph, self.config.tenant_id, self.config.client_id,
                                            mailbox.lower()), self.config.concurrent_per_mailbox)

    def _request(self, method: str, path: str, *, action: str, json: Any, headers: dict[str, str] | None,
                 tolerate: tuple[int, ...]) -> httpx.Response:
        refresh = getattr(self._token, "refresh", None)
        for attempt in (1, 2):
            token = self._token()
            try:
                response = self._http.request(method, self._graph + path, json=json,
                                              headers={"Authorization": f"Bearer {token}", **(headers or {})})
            except httpx.HTTPError as exc:
                raise Transient(f"{action}: {exc.__class__.__name__}: {exc}") from exc
            # Graph can refuse a token before it expires (revoked session, continuous access evaluation).
            if response.status_code == 401 and attempt == 1 and refresh is not None:
                refresh(stale=token)
                continue
            break
        if response.is_error and response.status_code not in tolerate:
            raise _graph_error(response, action)
        return response


class MsalTokens:
    """Graph access tokens from msal: client credentials in app mode, the refresh token in delegated mode."""

    def __init__(self, config: OutlookConfig, *, http_client: Any) -> None:
        self._config, self._http_client = config, http_client
        permission = ".default" if config.mode == "app" else "Calendars.ReadWrite"
        api = urlsplit(config.base_url)
        self._scopes = [f"{api.scheme}://{api.netloc}/{permission}"]
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            result = self._acquire(self._application())
        if "access_token" not in result:
            raise _token_error(result)
        return result["access_token"]

    def refresh(self, *, stale: str) -> None:
        """Forget `stale`, so that the next call fetches a new token."""
        with self._lock:
            if self._app is None:
                return
            cache = self._app.token_cache
            for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
                if item.get("secret") == stale:
                    cache.remove_at(item)

    def _application(self) -> msal.ConfidentialClientApplication:
        # Construction runs the authority's discovery over the network, so it waits for the first token.
        if self._app is None:
            config = self._config
            with _msal_errors("reach the Microsoft identity platform"):
                try:
                    self._app = msal.ConfidentialClientApplication(
                        config.client_id, client_credential=config.client_secret.get_secret_value(),
                        authority=f"{config.login_url}/{config.tenant_id}", http_client=self._http_client,
                        instance_discovery=False)
                except ValueError as exc:
                    raise AuthExpired(f"{config.login_url} does not know tenant {config.tenant_id}; check "
                                      f"tenant_id (and login_url for national clouds): {exc}") from exc
        return self._app

    def _acquire(self, app: msal.ConfidentialClientApplication) -> dict:
        with _msal_errors("get a Graph token"):
            if self._config.mode == "app":
                return app.acquire_token_for_client(scopes=self._scopes)
            accounts = app.get_accounts()
            if accounts:
                result = app.acquire_token_silent_with_error(self._scopes, account=accounts[0])
                if result:
                    return result
            if self._config.refresh_token is None:
                raise AuthExpired("delegated mode has no refresh token: sign the mailbox user in again")
            return app.acquire_token_by_refresh_token(self._config.refresh_token.get_secret_value(),
                                                      scopes=self._scopes)


class PinnedSession(requests.Session):
    """A requests session for msal that trusts `ca_bundle`, whatever REQUESTS_CA_BUNDLE says.

    requests lets REQUESTS_CA_BUNDLE override a Session's own `verify` (psf/requests#3829); only a
    per-request `verify` wins, so every request carries it. msal sets no timeout of its own.
    """

    def __init__(self, ca_bundle: str | None = None, *, timeout: float = _TIMEOUT) -> None:
        super().__init__()
        self._pinned_verify: str | bool = str(Path(ca_bundle).expanduser()) if ca_bundle else True
        self._timeout = timeout

    def request(self, method, url, **kwargs):  # type: ignore[override]
        if self._pinned_verify is not True:
            kwargs.setdefault("verify", self._pinned_verify)
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, **kwargs)


@contextlib.contextmanager
def _msal_errors(action: str) -> Iterator[None]:
    """Translate what msal raises (rather than returns) into connectors.base errors."""
    try:
        yield
    except ConnectorError:
        raise
    except (requests.RequestException, msal.exceptions.MsalServiceError, RuntimeError) as exc:
        raise Transient(f"{action}: {exc.__class__.__name__}: {exc}") from exc
    except ValueError as exc:  # a token endpoint answering something that is not JSON
        raise Transient(f"{action}: unreadable answer: {exc}") from exc


def _token_error(result: dict) -> ConnectorError:
    error = str(result.get("error", "unknown_error"))
    description = str(result.get("error_description", "")).split(" Trace ID:")[0]
    message = f"Microsoft refused the token request: {error}: {description}"
    if error in _CREDENTIALS_DEAD:
        return AuthExpired(message)
    if error == "temporarily_unavailable":
        return Transient(message)
    return Rejected(message)


def _graph_error(response: httpx.Response, action: str) -> ConnectorError:
    try:
        error = response.json()["error"]
        detail = f"{error.get('code')}: {error.get('message')}"
    except (ValueError, KeyError, TypeError, AttributeError):
        detail = response.reason_phrase
    message = f"{action}: Graph answered {response.status_code} {detail}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if response.status_code in (503, 504) and retry_after is not None:
        return RateLimited(message, retry_after=retry_after, status=response.status_code)
    return error_for_status(response.status_code, message, retry_after=retry_after)


def _busy_items(mailbox: str, schedule: dict | None) -> list[BusyInterval]:
    if schedule is None:
        raise Transient(f"free/busy query: Graph sent no schedule for {mailbox}")
    if schedule.get("error"):
        error = schedule["error"]
        raise Rejected(f"free/busy query: {mailbox}: {error.get('responseCode')}: {error.get('message')}")
    return [BusyInterval(start=_instant(item["start"]), end=_instant(item["end"]))
            for item in schedule.get("scheduleItems", []) if item.get("status") != "free"]


def _parse_utc(value: str) -> datetime:
    """Graph's DateTimeOffset ("2031-01-06T15:00:00.0000000Z"): up to 7 fraction digits, which Python reads 6 of."""
    text = value.removesuffix("Z").split("+")[0]
    whole, _, fraction = text.partition(".")
    moment = datetime.fromisoformat(whole + (f".{fraction[:6]}" if fraction else ""))
    return moment.replace(tzinfo=timezone.utc)


def _instant(value: dict) -> datetime:
    """A dateTimeTimeZone Graph sent back (in UTC, as asked) as an aware datetime."""
    try:
        zone = timezone.utc if value.get("timeZone", "UTC") == "UTC" else ZoneInfo(value["timeZone"])
        moment = datetime.fromisoformat(value["dateTime"])
    except (KeyError, ValueError, ZoneInfoNotFoundError) as exc:
        raise Transient(f"free/busy query: unreadable time {value!r}") from exc
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment


def _wall_clock(moment: datetime, zone_name: str) -> dict:
    """Local wall-clock time in the event's zone; UTC when Graph would not accept that zone's name."""
    if zone_name not in GRAPH_IANA_ZONES:
        return _utc_wall_clock(moment)
    return {"dateTime": moment.astimezone(ZoneInfo(zone_name)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": zone_name}


def _utc_wall_clock(moment: datetime) -> dict:
    return {"dateTime": moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


def _segment(value: str) -> str:
    return quote(value, safe="@")


def _ssl_context(ca_bundle: str | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=str(Path(ca_bundle).expanduser())) if ca_bundle else True

"""Graph change-notification subscriptions on Outlook events: the validation handshake and delivery.

Creating (or re-pointing) a subscription POSTs `notificationUrl?validationToken=<token>` with
`Content-Type: text/plain`; the endpoint must answer 200, text/plain, the URL-decoded token,
within 10 seconds, or the subscription is not made (400 ValidationError). Event changes queue
notifications; `deliver(http)` POSTs them, grouped per notification URL, in the documented
`{"value": [changeNotification...]}` shape. What a receiver does not take with a 2xx stays
queued, as Graph retries for up to 4 hours; notifications of a deleted or expired subscription
are dropped. Outlook event subscriptions live at most 10080 minutes; an expiry under 45 minutes
away is moved to 45 minutes.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import httpx

from sandbox import graph_time
from sandbox.graph_events import GraphError

MAX_LIFETIME = timedelta(minutes=10080)
MIN_LIFETIME = timedelta(minutes=45)
VALIDATION_TIMEOUT = 10.0
CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
_RESOURCE = re.compile(r"/?(?:(?P<me>me)|users/(?P<user>[^/]+))"
                       r"(?:(?P<default>/calendar)|/calendars/(?P<calendar>[^/]+))?/events", re.IGNORECASE)


@dataclass
class Subscription:
    id: str
    tenant_id: str
    client_id: str
    creator: str
    user_id: str
    calendar_id: str | None  # None: every calendar of the mailbox
    resource: str
    change_types: frozenset[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires: datetime

    def view(self) -> dict:
        return {"id": self.id, "resource": self.resource, "applicationId": self.client_id,
                "changeType": ",".join(sorted(self.change_types)), "clientState": self.client_state,
                "notificationUrl": self.notification_url, "notificationQueryOptions": None,
                "lifecycleNotificationUrl": self.lifecycle_url,
                "expirationDateTime": graph_time.iso_utc(self.expires), "creatorId": self.creator,
                "includeResourceData": False, "latestSupportedTlsVersion": "v1_2", "encryptionCertificate": None,
                "encryptionCertificateId": None, "notificationUrlAppId": None}


def parse_resource(resource: str) -> tuple[str | None, str | None, bool]:
    """(user id or UPN, or None for `me`; calendar id, "default" or None for all; the path is `me`) of an events resource."""
    match = _RESOURCE.fullmatch(resource.strip())
    if match is None:
        raise GraphError(400, "InvalidRequest", f"Resource '{resource}' is not supported; subscribe to "
                         "me/events, users/{id}/events or .../calendars/{id}/events.")
    calendar = "default" if match.group("default") else match.group("calendar")
    return match.group("user"), calendar, match.group("me") is not None


@dataclass
class Subscriptions:
    http: httpx.Client
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    _subscriptions: dict[str, Subscription] = field(default_factory=dict)
    _pending: list[tuple[str, dict]] = field(default_factory=list)  # (subscription id, notification)
    _removed: dict[str, Subscription] = field(default_factory=dict)  # ended by a subscriptionRemoved event
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def create(self, body: dict, *, tenant_id: str, client_id: str, creator: str, user_id: str,
               calendar_id: str | None) -> dict:
        change_types = frozenset(part.strip() for part in str(body.get("changeType", "")).split(",") if part.strip())
        if not change_types or not change_types <= CHANGE_TYPES:
            raise GraphError(400, "ValidationError", "changeType must be a comma-separated list of created, updated "
                             "and deleted.")
        client_state = body.get("clientState")
        if client_state is not None and len(str(client_state)) > 128:
            raise GraphError(400, "ValidationError", "clientState must be at most 128 characters.")
        subscription = Subscription(
            str(uuid.uuid4()), tenant_id, client_id, creator, user_id, calendar_id, str(body.get("resource")),
            change_types, self._checked_url(body.get("notificationUrl"), "notificationUrl"),
            self._checked_url(body["lifecycleNotificationUrl"], "lifecycleNotificationUrl")
            if body.get("lifecycleNotificationUrl") else None,
            client_state, self._expiry(body.get("expirationDateTime")))
        self._validate(subscription.notification_url)
        if subscription.lifecycle_url:
            self._validate(subscription.lifecycle_url)
        with self._lock:
            self._subscriptions[subscription.id] = subscription
        return subscription.view()

    def get(self, subscription_id: str, *, client_id: str) -> dict:
        return self._find(subscription_id, client_id).view()

    def list(self, *, client_id: str) -> list[dict]:
        with self._lock:
            return [s.view() for s in self._live() if s.client_id == client_id]

    def update(self, subscription_id: str, body: dict, *, client_id: str) -> dict:
        subscription = self._find(subscription_id, client_id)
        expires = self._expiry(body["expirationDateTime"]) if "expirationDateTime" in body else subscription.expires
        url = subscription.notification_url
        if body.get("notificationUrl") and body["notificationUrl"] != url:
            url = self._checked_url(body["notificationUrl"], "notificationUrl")
            self._validate(url)
        with self._lock:
            subscription.expires, subscription.notification_url = expires, url
        return subscription.view()

    def delete(self, subscription_id: str, *, client_id: str) -> None:
        self._find(subscription_id, client_id)
        with self._lock:
            self._subscriptions.pop(subscription_id, None)

    def changed(self, *, user_id: str, calendar_id: str, default_calendar_id: str, event_id: str, change_type: str,
                change_key: str) -> None:
        """Queue a notification for every live subscription watching this event change."""
        with self._lock:
            for subscription in self._live():
                watched = subscription.calendar_id in (None, calendar_id) or (
                    subscription.calendar_id == "default" and calendar_id == default_calendar_id)
                if subscription.user_id != user_id or not watched or change_type not in subscription.change_types:
                    continue
                resource = f"Users/{user_id}/Events/{event_id}"
                self._pending.append((subscription.id, {
                    "subscriptionId": subscription.id,
                    "subscriptionExpirationDateTime": graph_time.iso_utc(subscription.expires),
                    "changeType": change_type, "resource": resource,
                    "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": resource,
                                     "@odata.etag": f'W/"{change_key}"', "id": event_id},
                    "clientState": subscription.client_state, "tenantId": subscription.tenant_id,
                }))

    def lifecycle_event(self, subscription_id: str, event: str) -> None:
        """Queue a lifecycle notification (reauthorizationRequired, subscriptionRemoved, missed) to the
        subscription's lifecycleNotificationUrl, as Graph sends them; subscriptionRemoved also ends it."""
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(f"{event!r} is not a lifecycle event Graph sends for Outlook events")
        with self._lock:
            subscription = self._subscriptions[subscription_id]
            if subscription.lifecycle_url is None:
                return  # without a lifecycle URL Graph sends none
            self._pending.append((subscription.id, {
                "subscriptionId": subscription.id, "lifecycleEvent": event, "resource": subscription.resource,
                "subscriptionExpirationDateTime": graph_time.iso_utc(subscription.expires),
                "clientState": subscription.client_state, "tenantId": subscription.tenant_id,
            }))
            if event == "subscriptionRemoved":
                self._removed[subscription.id] = self._subscriptions.pop(subscription.id)

    def pending(self) -> list[dict]:
        with self._lock:
            return [notification for _, notification in self._pending]

    def deliver(self, http: httpx.Client | None = None) -> int:
        """POST queued notifications; answers how many receivers took (2xx)."""
        with self._lock:
            live = {s.id: s for s in self._live()}
            batches: dict[str, list[tuple[str, dict]]] = {}
            for subscription_id, notification in self._pending:
                if "lifecycleEvent" in notification:
                    # A removed subscription's last word still goes out, to its lifecycle URL.
                    subscription = live.get(subscription_id) or self._removed.get(subscription_id)
                    if subscription is not None and subscription.lifecycle_url:
                        batches.setdefault(subscription.lifecycle_url, []).append((subscription_id, notification))
                elif subscription_id in live:
                    batches.setdefault(live[subscription_id].notification_url, []).append((subscription_id, notification))
            self._pending = []
        delivered, failed = 0, []
        for url, batch in batches.items():
            try:
                answer = (http or self.http).post(url, json={"value": [n for _, n in batch]}, timeout=3.0)
                ok = 200 <= answer.status_code < 300
            except httpx.HTTPError:
                ok = False
            if ok:
                delivered += len(batch)
            else:
                failed.extend(batch)
        with self._lock:
            self._pending = failed + self._pending
        return delivered

    def _validate(self, url: str) -> None:
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        try:
            answer = self.http.post(url, params={"validationToken": token}, content=b"",
                                    headers={"Content-Type": "text/plain; charset=utf-8"}, timeout=VALIDATION_TIMEOUT)
        except httpx.HTTPError as exc:
            raise GraphError(400, "ValidationError", "Subscription validation request failed. Notification endpoint "
                             f"must respond with 200 OK to validation request. ({exc.__class__.__name__})") from exc
        if answer.status_code != 200:
            raise GraphError(400, "ValidationError", "Subscription validation request failed. Notification endpoint "
                             f"must respond with 200 OK to validation request. (It answered {answer.status_code}.)")
        if answer.text != token or not answer.headers.get("content-type", "").startswith("text/plain"):
            raise GraphError(400, "ValidationError", "Subscription validation request failed. Response must exactly "
                             "match validationToken query parameter.")

    def _checked_url(self, url: object, name: str) -> str:
        if not isinstance(url, str) or urlsplit(url).scheme != "https" or not urlsplit(url).netloc:
            raise GraphError(400, "ValidationError", f"{name} must be an absolute HTTPS URL.")
        return url

    def _expiry(self, value: object) -> datetime:
        now = self.clock()
        try:
            expires = graph_time.parse_instant(str(value))
        except ValueError as exc:
            raise GraphError(400, "InvalidRequest", "expirationDateTime is required and must be a DateTimeOffset.") from exc
        if expires <= now:
            raise GraphError(400, "InvalidRequest", "Subscription expiration date time must be in the future.")
        if expires > now + MAX_LIFETIME:
            raise GraphError(400, "InvalidRequest", f"Subscription expiration can only be "
                             f"{int(MAX_LIFETIME.total_seconds() // 60)} minutes in the future.")
        return max(expires, now + MIN_LIFETIME)

    def _find(self, subscription_id: str, client_id: str) -> Subscription:
        with self._lock:
            subscription = self._subscriptions.get(subscription_id)
            if subscription is None or subscription.client_id != client_id or subscription.expires <= self.clock():
                raise GraphError(404, "ResourceNotFound", f"The object '{subscription_id}' was not found.")
            return subscription

    def _live(self) -> list[Subscription]:
        now = self.clock()
        return [s for s in self._subscriptions.values() if s.expires > now]

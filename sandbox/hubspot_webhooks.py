"""Change events the HubSpot sandbox sends out, batched and signed as HubSpot's Webhooks API does.

    hubspot.webhooks.subscribe("https://app.example/hubspot/events", client_secret,
                               ["contact.creation", ("contact.propertyChange", "firstname")])
    ...writes...
    hubspot.deliver_webhooks(httpx.Client())   # POSTs what is pending, at most 100 events a request

Legacy CRM subscription types for contacts and deals: `{contact|deal}.creation`, `.deletion`
and `.propertyChange` (for one `propertyName`). A request body is a JSON array of events
`{eventId, subscriptionId, portalId, appId, occurredAt (ms), subscriptionType, attemptNumber,
objectId, changeSource, changeFlag | propertyName + propertyValue}`. Each request carries
`X-HubSpot-Request-Timestamp` (ms) and `X-HubSpot-Signature-v3` = base64(HMAC-SHA256(client
secret, method + URI + body + timestamp)), plus the v1 `X-HubSpot-Signature` (hex SHA-256 of
secret + body). A request answered with anything but 2xx (or not answered) is sent again by the
next `deliver` with `attemptNumber` raised, up to 10 attempts (HubSpot spreads its retries over
24 h; the sandbox retries only when told to deliver).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx

BATCH_LIMIT = 100
MAX_ATTEMPTS = 10
OBJECT_NAMES = {"contacts": "contact", "deals": "deal"}
_USER_AGENT = "HubSpot Connect 2.0 (http://dev.hubspot.com/) - WebhooksExecutorDaemon"


def signature_v3(client_secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    source = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(client_secret.encode(), source, hashlib.sha256).digest()).decode()


@dataclass
class _Target:
    url: str
    client_secret: str
    app_id: int
    subscriptions: dict[int, tuple[str, str | None]]
    pending: list[dict] = field(default_factory=list)


class HubSpotWebhooks:
    """The webhook targets of the apps installed in one portal, and the events waiting for them."""

    def __init__(self, portal_id: int, *, clock: Callable[[], float] = time.time) -> None:
        self.portal_id = portal_id
        self.clock = clock  # epoch seconds: occurredAt and X-HubSpot-Request-Timestamp (tests pin it)
        self._targets: list[_Target] = []
        self._ids = itertools.count(1)
        self._event_ids = itertools.count(1_000_001)
        self._lock = threading.Lock()

    def subscribe(self, target_url: str, client_secret: str,
                  subscriptions: Iterable[str | tuple[str, str]]) -> list[int]:
        """An app's target URL, secret and subscriptions; the subscription ids, in order."""
        chosen: dict[int, tuple[str, str | None]] = {}
        for each in subscriptions:
            kind, property_name = (each, None) if isinstance(each, str) else each
            obj, _, action = kind.partition(".")
            if obj not in OBJECT_NAMES.values() or action not in ("creation", "deletion", "propertyChange"):
                raise ValueError(f"{kind!r} is not a subscription type the sandbox sends")
            if (action == "propertyChange") != (property_name is not None):
                raise ValueError(f"{kind!r} needs a propertyName exactly when it is a propertyChange")
            chosen[next(self._ids)] = (kind, property_name)
        with self._lock:
            self._targets.append(_Target(target_url, client_secret, next(self._ids), chosen))
        return list(chosen)

    def record_changed(self, kind: str, event: str, object_id: str, changed: dict[str, str | None],
                       source: str) -> None:
        """Queue the events one write causes: `event` is creation, propertyChange or deletion."""
        obj = OBJECT_NAMES.get(kind)
        if obj is None:
            return
        occurred = int(self.clock() * 1000)
        with self._lock:
            for target in self._targets:
                for subscription_id, (wanted, property_name) in target.subscriptions.items():
                    if wanted == f"{obj}.{event}" and (property_name is None or property_name in changed):
                        target.pending.append(self._event(target, subscription_id, wanted, object_id, occurred,
                                                          source, property_name, changed))

    def pending(self) -> list[dict]:
        with self._lock:
            return [dict(event) for target in self._targets for event in target.pending]

    def deliver(self, http: httpx.Client) -> list[httpx.Response]:
        """POST every pending event, batched per target; keep the batches that were not accepted."""
        with self._lock:
            work = [(target, target.pending[i:i + BATCH_LIMIT])
                    for target in self._targets for i in range(0, len(target.pending), BATCH_LIMIT)]
            for target in self._targets:
                target.pending = []
        answers = []
        for target, batch in work:
            body = json.dumps(batch, separators=(",", ":")).encode()
            timestamp = str(int(self.clock() * 1000))
            try:
                answer = http.post(target.url, content=body, headers=self._headers(target, body, timestamp))
            except httpx.HTTPError:
                answer = None
            if answer is not None:
                answers.append(answer)
            if answer is None or not answer.is_success:
                retried = [{**event, "attemptNumber": event["attemptNumber"] + 1} for event in batch
                           if event["attemptNumber"] + 1 < MAX_ATTEMPTS]
                with self._lock:
                    target.pending[:0] = retried
        return answers

    def _event(self, target: _Target, subscription_id: int, kind: str, object_id: str, occurred: int, source: str,
               property_name: str | None, changed: dict[str, str | None]) -> dict:
        event = {"eventId": next(self._event_ids), "subscriptionId": subscription_id, "portalId": self.portal_id,
                 "appId": target.app_id, "occurredAt": occurred, "subscriptionType": kind, "attemptNumber": 0,
                 "objectId": int(object_id), "changeSource": source}
        if property_name is not None:
            event.update(propertyName=property_name, propertyValue=changed[property_name] or "")
        else:
            event["changeFlag"] = "CREATED" if kind.endswith("creation") else "DELETED"
        return event

    def _headers(self, target: _Target, body: bytes, timestamp: str) -> dict[str, str]:
        v1 = hashlib.sha256(target.client_secret.encode() + body).hexdigest()
        return {"Content-Type": "application/json", "User-Agent": _USER_AGENT,
                "X-HubSpot-Request-Timestamp": timestamp,
                "X-HubSpot-Signature-v3": signature_v3(target.client_secret, "POST", target.url, body, timestamp),
                "X-HubSpot-Signature": v1, "X-HubSpot-Signature-Version": "v1"}

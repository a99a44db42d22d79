"""Clio Manage webhooks: registration rules, the X-Hook-Secret handshake, and signed deliveries.

A webhook watches one model for some of its events and names the `fields` each delivery
carries (for `updated`, a change is delivered only when one of those fields changed). It
starts `pending`: Clio POSTs its URL with an `X-Hook-Secret` header, and the webhook is
`enabled` once the endpoint answers 200 echoing that header (or later calls
`PUT /webhooks/{id}/activate` with it). Deliveries are `{"data": {...}, "meta": {"event",
"webhook_id"}}` signed with `X-Hook-Signature`, the hex HMAC-SHA256 of the raw body keyed
with the shared secret. Webhooks expire: three days by default, at most 31 days ahead.

Nothing is sent until a test calls `deliver_webhooks(http)`, as Twilio's status callbacks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from sandbox.clio_fields import ClioError, Selection, invalid, now, parse_fields

log = logging.getLogger(__name__)

# model identifier -> the sandbox's record kind (None: accepted, but the sandbox keeps no such records)
MODELS: dict[str, str | None] = {
    "matter": "matters", "contact": "contacts", "communication": "communications",
    "calendar_entry": "calendar_entries", "activity": None, "bill": None, "task": None, "document": None,
    "folder": None, "clio_payments_payment": None,
}
LIFECYCLE = ("created", "updated", "deleted")
EVENTS = {"matter": (*LIFECYCLE, "matter_opened", "matter_pended", "matter_closed"),
          "clio_payments_payment": ("created", "updated")}
DEFAULT_LIFETIME = timedelta(days=3)
MAX_LIFETIME = timedelta(days=31)
MAX_FIELDS_LENGTH = 1000
_STATUS_EVENTS = {"Open": "matter_opened", "Pending": "matter_pended", "Closed": "matter_closed"}


def signature(secret: str, body: bytes) -> str:
    """X-Hook-Signature for a delivery body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def prepare_webhook(store: Any, data: dict, current: dict | None) -> dict:
    """Validate a webhook create/update body into stored attributes."""
    out: dict[str, Any] = {}
    if current is None:
        if data.get("model") not in MODELS:
            raise invalid(f"Model must be one of {', '.join(MODELS)}")
        out["model"] = data["model"]
    model = out.get("model") or current["model"]
    if current is None or "url" in data:
        url = data.get("url")
        if not isinstance(url, str) or not _acceptable_url(url):
            raise invalid("Url must be a valid https URL")
        out.update(url=url, status="pending", shared_secret=secrets.token_hex(32))
    if current is None or "fields" in data:
        fields = data.get("fields")
        if not isinstance(fields, str) or not fields or len(fields) > MAX_FIELDS_LENGTH:
            raise invalid(f"Fields must be given, at most {MAX_FIELDS_LENGTH} characters")
        if MODELS[model] is not None:
            try:
                parse_fields(MODELS[model], fields)
            except ClioError as exc:
                raise invalid(f"Fields {exc.message}") from None
        out["fields"] = fields
    if current is None or "events" in data:
        allowed = EVENTS.get(model, LIFECYCLE)
        events = data.get("events") or list(allowed)
        if not isinstance(events, list) or any(e not in allowed for e in events):
            raise invalid(f"Events must be some of {', '.join(allowed)}")
        out["events"] = events
    if current is None or "expires_at" in data:
        out["expires_at"] = _expiry(data.get("expires_at"))
    return out


def _acceptable_url(url: str) -> bool:
    parts = urlsplit(url)
    # Clio accepts https only; loopback http is allowed so tests can receive deliveries without TLS.
    return bool(parts.netloc) and (parts.scheme == "https" or (
        parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")))


def _expiry(raw: Any) -> datetime:
    if raw is None:
        return now() + DEFAULT_LIFETIME
    try:
        expires = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise invalid("Expires at must be an ISO-8601 timestamp") from None
    if expires.tzinfo is None or not now() < expires <= now() + MAX_LIFETIME:
        raise invalid("Expires at must be in the future and no more than 31 days from now")
    return expires


@dataclass(frozen=True)
class _Delivery:
    webhook_id: int
    url: str
    secret: str
    body: bytes | None  # None: the handshake


class WebhookDispatcher:
    """Queues handshakes and events as records change; `deliver` sends them."""

    def __init__(self, *, webhooks: Callable[[], list[dict]], render: Callable[[str, dict, Selection], dict],
                 activate: Callable[[int, str], bool]) -> None:
        self._webhooks, self._render, self._activate = webhooks, render, activate
        self._queue: deque[_Delivery] = deque()
        self._lock = threading.Lock()

    def record_changed(self, kind: str, event: str, before: dict | None, after: dict | None) -> None:
        if kind == "webhooks":
            if after is not None and (before is None or before["shared_secret"] != after["shared_secret"]):
                self._push(_Delivery(after["id"], after["url"], after["shared_secret"], None))
            return
        for hook in self._webhooks():
            if hook["status"] != "enabled" or hook["expires_at"] <= now() or MODELS[hook["model"]] != kind:
                continue
            selection = parse_fields(kind, hook["fields"])
            data = self._render(kind, after or before, selection)
            for each in self._events(hook, event, before, after, selection):
                body = json.dumps({"data": data, "meta": {"event": each, "webhook_id": hook["id"]}}).encode()
                self._push(_Delivery(hook["id"], hook["url"], hook["shared_secret"], body))

    def deliver(self, http: httpx.Client) -> list[httpx.Response]:
        """Send every queued handshake and event, oldest first; a handshake echoed back enables its webhook.

        An endpoint that cannot be reached loses that delivery: the sandbox does not retry.
        """
        responses = []
        while (item := self._pop()) is not None:
            try:
                response = self._send(http, item)
            except httpx.HTTPError:
                log.warning("Clio sandbox: webhook %s could not reach %s", item.webhook_id, item.url, exc_info=True)
                continue
            if item.body is None and response.status_code == 200 \
                    and response.headers.get("X-Hook-Secret") == item.secret:
                self._activate(item.webhook_id, item.secret)
            responses.append(response)
        return responses

    @staticmethod
    def _send(http: httpx.Client, item: _Delivery) -> httpx.Response:
        if item.body is None:
            return http.post(item.url, headers={"X-Hook-Secret": item.secret})
        return http.post(item.url, content=item.body, headers={
            "Content-Type": "application/json", "X-Hook-Signature": signature(item.secret, item.body)})

    def _events(self, hook: dict, event: str, before: dict | None, after: dict | None,
                selection: Selection) -> list[str]:
        kind, wanted = MODELS[hook["model"]], []
        if event == "updated":
            if self._render(kind, before, selection) != self._render(kind, after, selection):
                wanted.append("updated")
            if kind == "matters" and before["status"] != after["status"]:
                wanted.append(_STATUS_EVENTS[after["status"]])
        else:
            wanted.append(event)
        return [each for each in wanted if each in hook["events"]]

    def _push(self, delivery: _Delivery) -> None:
        with self._lock:
            self._queue.append(delivery)

    def _pop(self) -> _Delivery | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

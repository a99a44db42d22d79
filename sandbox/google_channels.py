"""Push notification channels of the Calendar emulator: `events.watch`, `channels.stop` and the POSTs.

A watch request (`{"id", "type": "web_hook", "address", "token", "params": {"ttl"}}`) opens a
channel on one calendar's events and answers the channel resource (`kind`, `id`, `resourceId`,
`resourceUri`, `token`, `expiration` in epoch milliseconds as a string). The resource id is the
same for every channel on that calendar, as it identifies the watched resource, not the channel.

Notifications are queued, not sent: a `sync` message when the channel opens, then `exists` for
every change to the calendar's events and `not_exists` when the calendar goes away. A test (or the
demo) sends them with `deliver(http)`, the way the Twilio emulator sends status callbacks. Each is
a POST with an empty body and the X-Goog-* headers; a 500, 502, 503 or 504 answer, or no answer,
leaves the message queued for the next delivery (Google retries those with backoff), anything
else is final. Messages of a channel that was stopped or has expired are dropped.
"""

from __future__ import annotations

import email.utils
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from sandbox.google_oauth import GoogleApiError

DEFAULT_TTL_SECONDS = 604_800  # a week: what Google grants an events channel that asks for nothing else
_RETRIED = {500, 502, 503, 504}
_TYPES = {"web_hook", "webhook"}  # both spellings, per the Channel schema's description


@dataclass
class _Channel:
    id: str
    calendar_id: str
    resource_id: str
    resource_uri: str
    address: str
    token: str | None
    expiration_ms: int
    message_number: int = 0
    stopped: bool = False

    def resource(self) -> dict:
        resource = {"kind": "api#channel", "id": self.id, "resourceId": self.resource_id,
                    "resourceUri": self.resource_uri, "expiration": str(self.expiration_ms)}
        return resource | ({"token": self.token} if self.token is not None else {})


@dataclass(frozen=True)
class _Message:
    channel: _Channel
    number: int
    state: str


class PushChannels:
    """Thread-safe channel registry and notification queue."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.allow_http = False  # Google only calls HTTPS addresses; a demo on plain loopback may relax it
        self._channels: dict[str, _Channel] = {}
        self._resource_ids: dict[str, str] = {}
        self._pending: deque[_Message] = deque()
        self._lock = threading.Lock()

    def watch(self, calendar_id: str, body: dict, *, resource_uri: str) -> dict:
        channel_id, address = body.get("id"), body.get("address")
        if not channel_id:
            raise GoogleApiError(400, "required", "Required channel id", location="id")
        if body.get("type") not in _TYPES:
            raise GoogleApiError(400, "push.channelTypeUnknown", f"Unknown channel type: {body.get('type')}")
        if not address:
            raise GoogleApiError(400, "required", "Required address", location="address")
        scheme = urlsplit(address).scheme
        if scheme != "https" and not (self.allow_http and scheme == "http"):
            raise GoogleApiError(400, "push.webhookUrlNotHttps", f"WebHook callback must be HTTPS: {address}")
        expiration_ms = _expiration_ms(body, now_ms=int(self.clock() * 1000))
        with self._lock:
            if channel_id in self._channels:
                raise GoogleApiError(400, "channelIdNotUnique", f"Channel id {channel_id} not unique")
            resource_id = self._resource_ids.setdefault(calendar_id, secrets.token_urlsafe(20))
            channel = _Channel(channel_id, calendar_id, resource_id, resource_uri, address, body.get("token"),
                               expiration_ms)
            self._channels[channel_id] = channel
            self._queue(channel, "sync")
            return channel.resource()

    def stop(self, body: dict) -> None:
        with self._lock:
            channel = self._channels.get(body.get("id") or "")
            if channel is None or channel.resource_id != body.get("resourceId"):
                raise GoogleApiError(404, "notFound", f"Channel '{body.get('id')}' not found for project")
            del self._channels[channel.id]
            channel.stopped = True

    def changed(self, calendar_id: str, *, state: str = "exists") -> None:
        """Queue a message for every live channel on the calendar."""
        now_ms = self.clock() * 1000
        with self._lock:
            for channel in list(self._channels.values()):
                if channel.expiration_ms <= now_ms:
                    del self._channels[channel.id]
                elif channel.calendar_id == calendar_id:
                    self._queue(channel, state)
                    if state == "not_exists":
                        del self._channels[channel.id]

    def channels(self) -> list[dict]:
        """The live channels, as watch answered them."""
        now_ms = self.clock() * 1000
        with self._lock:
            return [channel.resource() | {"address": channel.address} for channel in self._channels.values()
                    if channel.expiration_ms > now_ms]

    def deliver(self, http: httpx.Client) -> list[httpx.Response]:
        """POST every queued message once; what failed in a way Google retries stays queued."""
        with self._lock:
            messages, self._pending = list(self._pending), deque()
        responses, retry = [], []
        for message in messages:
            channel = message.channel
            if channel.stopped or channel.expiration_ms <= self.clock() * 1000:
                continue
            try:
                response = http.post(channel.address, content=b"", headers=_headers(message))
            except httpx.HTTPError:
                retry.append(message)
                continue
            responses.append(response)
            if response.status_code in _RETRIED:
                retry.append(message)
        with self._lock:
            self._pending.extendleft(reversed(retry))
        return responses

    def _queue(self, channel: _Channel, state: str) -> None:
        # Message numbers only ever grow; Google says they are not consecutive, so skip some.
        channel.message_number = 1 if state == "sync" else channel.message_number + secrets.randbelow(3) + 1
        self._pending.append(_Message(channel, channel.message_number, state))


def _expiration_ms(body: dict, *, now_ms: int) -> int:
    """`params.ttl` (seconds) if given, else `expiration` (epoch ms) if given, else a week from now."""
    ttl, expiration = (body.get("params") or {}).get("ttl"), body.get("expiration")
    try:
        if ttl is not None:
            chosen, where = now_ms + int(ttl) * 1000, "params.ttl"
        elif expiration is not None:
            chosen, where = int(expiration), "expiration"
        else:
            return now_ms + DEFAULT_TTL_SECONDS * 1000
    except (TypeError, ValueError):
        raise GoogleApiError(400, "invalid", "Invalid Value", location="params.ttl" if ttl else "expiration") from None
    if chosen <= now_ms:
        raise GoogleApiError(400, "invalid", "Invalid Value", location=where)
    return chosen


def _headers(message: _Message) -> dict[str, str]:
    channel = message.channel
    headers = {
        "X-Goog-Channel-ID": channel.id,
        "X-Goog-Channel-Expiration": email.utils.formatdate(channel.expiration_ms / 1000, usegmt=True),
        "X-Goog-Resource-ID": channel.resource_id,
        "X-Goog-Resource-URI": channel.resource_uri,
        "X-Goog-Resource-State": message.state,
        "X-Goog-Message-Number": str(message.number),
    }
    return headers | ({"X-Goog-Channel-Token": channel.token} if channel.token is not None else {})

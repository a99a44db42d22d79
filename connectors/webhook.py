"""A CRM that is any HTTPS endpoint receiving signed JSON events: Zapier, Make, n8n or an in-house service.

Each protocol call is one POST of one event to `url` (schema in docs/webhook-connector.md):

    upsert_contact      contact.upserted
    log_conversation    conversation.logged
    upsert_opportunity  opportunity.upserted
    record_booking      booking.recorded

Signing: `X-Textback-Timestamp: <unix seconds>` and
`X-Textback-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`.

Ids: a receiver that answers `{"id": "..."}` names the record and that id is returned; otherwise
the record id we sent is returned. Without an existing id it is derived from what identifies the
record (the caller's phone; the contact plus the conversation's first line; the deal's name; the
booking's start), so a retry after a lost answer names the same record; that record id already plays
the part of the protocol's `key`, so the key callers pass is not sent. Every event carries an
idempotency key derived from the record and its data: a retry sends the same key, a change a new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, field_validator

from connectors.base import (
    ConnectorConfig,
    Rejected,
    Secret,
    Transient,
    error_for_status,
    parse_retry_after,
)
from core.models import BookingRecord, ContactRecord, ConversationLog, Opportunity

SCHEMA_VERSION = 1
TIMESTAMP_HEADER = "X-Textback-Timestamp"
SIGNATURE_HEADER = "X-Textback-Signature"
MIN_SECRET_LENGTH = 16
_USER_AGENT = "textback-webhook/1"


class WebhookConfig(ConnectorConfig):
    type: Literal["webhook"]
    url: str = Field(description="where events are POSTed: https, or http on loopback for local testing")
    secret: Secret = Field(description="the shared signing secret, as env:NAME or file:PATH")
    timeout_seconds: float = Field(default=10, gt=0, le=60)
    base_url: None = Field(default=None, description="unused: events go to `url`")

    @field_validator("base_url", mode="before")
    @classmethod
    def _no_base_url(cls, value: Any) -> None:
        if value is not None:
            raise ValueError("the webhook connector has no base_url; put the endpoint in url")
        return None

    @field_validator("url")
    @classmethod
    def _https_unless_loopback(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("url must be an absolute https:// URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError("url must use https (plain http is allowed only for localhost/127.0.0.1)")
        return value

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"secret must be at least {MIN_SECRET_LENGTH} characters; "
                             "generate one with `openssl rand -hex 32`")
        return value


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Textback-Signature value for a body sent at `timestamp`."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


class WebhookCRM:
    """The CRMConnector that posts signed events to one endpoint.

    An injected `http` client is used as given, its timeouts included; without one the
    connector makes a client with `timeout_seconds` that never follows redirects.
    """

    role: ClassVar[str] = "crm"
    config_model: ClassVar[type[ConnectorConfig]] = WebhookConfig

    def __init__(self, config: WebhookConfig, *, http: httpx.Client | None = None) -> None:
        self._config = config
        self._http = http or httpx.Client(timeout=config.timeout_seconds, follow_redirects=False)

    def upsert_contact(self, contact: ContactRecord, *, existing_id: str | None = None) -> str:
        record_id = existing_id or "tb_contact_" + _digest("contact", contact.phone)
        return self._deliver("contact.upserted", record_id, {"contact": contact.model_dump(mode="json")})

    def log_conversation(self, *, contact_id: str, log: ConversationLog, existing_id: str | None = None,
                         key: str | None = None) -> str:
        started = log.lines[0].at.isoformat() if log.lines else ""
        record_id = existing_id or "tb_conversation_" + _digest("conversation", contact_id, log.title, started)
        conversation = {**log.model_dump(mode="json"), "text": log.as_text()}
        return self._deliver("conversation.logged", record_id, {"contact_id": contact_id,
                                                                "conversation": conversation})

    def upsert_opportunity(self, *, contact_id: str, opportunity: Opportunity, existing_id: str | None = None,
                           key: str | None = None) -> str:
        record_id = existing_id or "tb_opportunity_" + _digest("opportunity", contact_id, opportunity.name)
        return self._deliver("opportunity.upserted", record_id, {"contact_id": contact_id,
                                                                 "opportunity": opportunity.model_dump(mode="json")})

    def record_booking(self, *, contact_id: str, booking: BookingRecord, existing_id: str | None = None,
                       key: str | None = None) -> str:
        record_id = existing_id or "tb_booking_" + _digest("booking", contact_id, booking.start.isoformat())
        return self._deliver("booking.recorded", record_id, {"contact_id": contact_id,
                                                             "booking": booking.model_dump(mode="json")})

    def _deliver(self, event_type: str, record_id: str, data: dict[str, Any]) -> str:
        data = {"record_id": record_id, **data}
        key = f"{event_type}:{record_id}:{_digest(_canonical(data))}"
        event = {"id": "evt_" + _digest(key, length=32), "type": event_type, "version": SCHEMA_VERSION,
                 "idempotency_key": key, "occurred_at": _utc_now(), "data": data}
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT, "Idempotency-Key": key,
                   TIMESTAMP_HEADER: str(timestamp),
                   SIGNATURE_HEADER: signature(self._config.secret.get_secret_value(), timestamp, body)}
        with _delivery_errors(event_type):
            response = self._http.post(self._config.url, content=body, headers=headers)
        if not response.is_success:
            raise _error_for(response, event_type)
        return _answered_id(response) or record_id


@contextlib.contextmanager
def _delivery_errors(event_type: str) -> Iterator[None]:
    """Translate httpx's transport failures (timeouts, refused or reset connections) into Transient."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise Transient(f"webhook {event_type}: the receiver did not answer in time "
                        f"({exc.__class__.__name__})") from exc
    except httpx.TransportError as exc:
        raise Transient(f"webhook {event_type}: {exc.__class__.__name__}: {exc}") from exc


def _error_for(response: httpx.Response, event_type: str) -> Exception:
    status = response.status_code
    if response.is_redirect:
        return Rejected(f"webhook {event_type}: the receiver redirected to {response.headers.get('Location')!r}; "
                        "set url to the final address (redirects are not followed)", status=status)
    detail = response.text[:300].strip() or response.reason_phrase
    return error_for_status(status, f"webhook {event_type}: the receiver answered {status}: {detail}",
                            retry_after=parse_retry_after(response.headers.get("Retry-After")))


def _answered_id(response: httpx.Response) -> str | None:
    """The record id the receiver named, if it named one.

    Zapier's Catch Hook acknowledges every request with its own `id` next to a `request_id`:
    that id names the request, not a record, so such answers are ignored.
    """
    try:
        answer = response.json()
    except ValueError:
        return None
    if not isinstance(answer, dict) or "request_id" in answer:
        return None
    value = answer.get("id")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        return None
    return str(value)


def _digest(*parts: str, length: int = 24) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:length]


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

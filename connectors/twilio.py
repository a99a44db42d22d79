"""Twilio SMS (Programmable Messaging) and Lookup v2, through the official SDK.

The SDK talks HTTP through `_HttpxTransport`, a `twilio.http.HttpClient` on an
injected httpx.Client. Twilio's SDK builds absolute production URLs and its
`region`/`edge` options only change the host name, so a non-production
`base_url` is applied by rewriting the URL prefixes here.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from typing import ClassVar, Literal

import httpx
from pydantic import Field, field_validator
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client

from connectors.base import (
    Ambiguous,
    ConnectorConfig,
    ConnectorError,
    Reference,
    Rejected,
    Secret,
    Transient,
    error_for_status,
    parse_retry_after,
)
from core.models import OutboundSMS, SentSMS

PRODUCTION_URL = "https://api.twilio.com"
_TWILIO_HOSTS = ("https://api.twilio.com", "https://lookups.twilio.com")
UNSUBSCRIBED_RECIPIENT = 21610
# How many of the recipient's newest messages a reconciliation looks through (a caller gets a handful).
RECONCILE_LIMIT = 50


class TwilioConfig(ConnectorConfig):
    type: Literal["twilio"]
    account_sid: Reference = Field(description="AC followed by 32 hex digits, inline or as env:NAME")
    auth_token: Secret
    base_url: str = PRODUCTION_URL
    messaging_service_sid: Reference | None = Field(None, description="MG followed by 32 hex digits")

    @field_validator("account_sid")
    @classmethod
    def _account_sid(cls, value: str) -> str:
        return _sid(value, "AC", "the Account SID on the Twilio console's home page")

    @field_validator("messaging_service_sid")
    @classmethod
    def _service_sid(cls, value: str | None) -> str | None:
        return None if value is None else _sid(value, "MG", "the Messaging Service's SID")


def _sid(value: str, prefix: str, where: str) -> str:
    if not re.fullmatch(prefix + r"[0-9a-fA-F]{32}", value):
        shown = value[:2] + "…" if len(value) > 6 else value
        raise ValueError(f"is not a Twilio {prefix} SID (got {shown!r}, {len(value)} characters); "
                         f"use {where}: {prefix} followed by 32 hex digits")
    return value


class TwilioRejected(Rejected):
    """Twilio refused the request; `code` is its error code (21610: the recipient texted STOP)."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message, status=status)
        self.code = code


class _HttpxTransport(HttpClient):
    """The SDK's HTTP client interface implemented on httpx, pointed at `base_url`."""

    def __init__(self, http: httpx.Client, *, base_url: str) -> None:
        super().__init__(logger=logging.getLogger(__name__), is_async=False)
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._last = threading.local()

    def request(self, method: str, uri: str, params: dict | None = None, data: dict | None = None,
                headers: dict | None = None, auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False) -> Response:
        extra = {"timeout": timeout} if timeout is not None else {}
        answer = self._http.request(method, self._rewrite(uri), params=params, data=data, headers=headers,
                                    auth=auth, follow_redirects=allow_redirects, **extra)
        self._last.retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        return Response(answer.status_code, answer.text, answer.headers)

    def last_retry_after(self) -> float | None:
        """Retry-After of this thread's last answer: the SDK's exceptions drop the headers."""
        return getattr(self._last, "retry_after", None)

    def _rewrite(self, uri: str) -> str:
        if self._base_url == PRODUCTION_URL:
            return uri
        for host in _TWILIO_HOSTS:
            if uri.startswith(host):
                return self._base_url + uri[len(host):]
        return uri


class TwilioSMS:
    role: ClassVar[str] = "sms"
    config_model: ClassVar[type[ConnectorConfig]] = TwilioConfig

    def __init__(self, config: TwilioConfig, *, http: httpx.Client | None = None) -> None:
        self._config = config
        self._transport = _HttpxTransport(http or httpx.Client(timeout=15.0), base_url=config.base_url)
        self._client = Client(config.account_sid, config.auth_token.get_secret_value(), http_client=self._transport)

    def send(self, message: OutboundSMS) -> SentSMS:
        """Create the Message; Twilio has no idempotency key, so callers must not resend a sent one."""
        options = {"to": message.to, "from_": message.from_, "body": message.body}
        if message.status_callback:
            options["status_callback"] = message.status_callback
        if self._config.messaging_service_sid:
            options["messaging_service_sid"] = self._config.messaging_service_sid
        with self._translated_errors():
            created = self._client.messages.create(**options)
        return SentSMS(provider_id=created.sid, status=created.status)

    def find_sent(self, message: OutboundSMS, *, known_ids: frozenset[str] = frozenset(),
                  limit: int = RECONCILE_LIMIT) -> SentSMS | None:
        """Twilio has no idempotency key: after a send that got no answer, list the newest messages to this
        recipient from this sender and take the newest with the same body that we have not recorded."""
        with self._translated_errors():
            for found in self._client.messages.stream(to=message.to, from_=message.from_, limit=limit):
                if found.sid not in known_ids and (found.body or "") == message.body:
                    return SentSMS(provider_id=found.sid, status=found.status)
        return None

    def check_access(self) -> str:
        """A read-only call that proves the SID and token (config check --online)."""
        with self._translated_errors():
            self._client.messages.list(limit=1)
        return "credentials accepted (listed messages)"

    def auth_token_for_signatures(self) -> str:
        return self._config.auth_token.get_secret_value()

    def line_type(self, number: str) -> str | None:
        """Lookup v2 line type ("mobile", "landline", "nonFixedVoip", ...); None for an invalid number."""
        with self._translated_errors():
            found = self._client.lookups.v2.phone_numbers(number).fetch(fields="line_type_intelligence")
        if not found.valid or not found.line_type_intelligence:
            return None
        return found.line_type_intelligence.get("type")

    @contextlib.contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except TwilioRestException as exc:
            raise self._error(exc.status, f"Twilio {exc.code}: {exc.msg}", exc.code) from exc
        except TwilioServiceException as exc:
            raise self._error(exc.status, f"Twilio {exc.code}: {exc.detail or exc.title}", exc.code) from exc
        except TwilioException as exc:  # a list page that failed: ("Unable to fetch page", response)
            response = exc.args[1] if len(exc.args) > 1 else None
            status = getattr(response, "status_code", 502)
            raise self._error(status, f"Twilio: {exc.args[0]} (HTTP {status})", None) from exc
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise Transient(f"Twilio unreachable: {exc!r}") from exc  # the request never left: nothing happened
        except httpx.HTTPError as exc:
            # A read timeout or a connection dropped after the request was written: Twilio may have acted on it.
            raise Ambiguous(f"Twilio gave no answer: {exc!r}") from exc

    def _error(self, status: int, message: str, code: int | None) -> ConnectorError:
        error = error_for_status(status, message, retry_after=self._transport.last_retry_after())
        if isinstance(error, Rejected):
            return TwilioRejected(message, status=status, code=code)
        if isinstance(error, Transient) and status >= 500:
            return Ambiguous(message, status=status)  # a 5xx may come after Twilio accepted the message
        return error

"""An in-memory Twilio: the 2010-04-01 Messages resource and Lookup v2, served by `create_app`.

Outbound messages move queued -> sent -> delivered (or undelivered with an error
code) only when their status callbacks are delivered, so a test decides when
Twilio "reports back": `sandbox.deliver_status_callbacks(http)`, or
`TwilioSandbox(..., auto_deliver=True)` to have a background thread do it.
Inbound texts (see sandbox.phone) apply Twilio's default opt-out keywords. `faults` scripts
error answers, late answers and dropped connections (sandbox.common); `rotate_auth_token`
makes the old auth token answer 401.
"""

from __future__ import annotations

import base64
import binascii
import copy
import email.utils
import logging
import math
import secrets
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from urllib.parse import urlencode

import httpx
import phonenumbers
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from twilio.request_validator import RequestValidator

from sandbox.common import Faults, inject_faults

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
MAX_BODY = 1600
CARRIER_ERRORS = {
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}

_GSM7 = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
            "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM7_EXTENDED = set("^{}\\[~]|€\f")


class TwilioApiError(Exception):
    """A request Twilio answers with its error JSON."""

    def __init__(self, status: int, code: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self) -> JSONResponse:
        body = {"code": self.code, "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}", "status": self.status}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


@dataclass(frozen=True)
class _StatusStep:
    sid: str
    status: str
    callback_url: str | None
    error_code: int | None = None


def post_signed(http: httpx.Client, *, url: str, params: Mapping[str, str], auth_token: str) -> httpx.Response:
    """POST form params the way Twilio calls a webhook: signed over the exact URL and the params."""
    signature = RequestValidator(auth_token).compute_signature(url, dict(params))
    return http.post(url, data=dict(params), headers={"X-Twilio-Signature": signature})


class TwilioSandbox:
    """Accounts (SID -> auth token), their messages, opt-outs and per-number carrier behaviour."""

    def __init__(self, accounts: dict[str, str], *, messaging_services: dict[str, str] | None = None,
                 auto_deliver: bool = False) -> None:
        self.accounts = dict(accounts)
        self.messaging_services = dict(messaging_services or {})  # MG sid -> the sender it picks
        self.faults = Faults()
        self._lock = threading.Lock()
        self._messages: dict[str, dict] = {}
        self._opted_out: set[tuple[str, str]] = set()  # (our sender, recipient)
        self._undeliverable: dict[str, int] = {}
        self._line_types: dict[str, str] = {}
        self._pending: deque[_StatusStep] = deque()
        self._wakeup = threading.Event()
        self._closed = threading.Event()
        self._deliverer: threading.Thread | None = None
        if auto_deliver:
            self._deliverer = threading.Thread(target=self._deliver_forever, name="twilio-sandbox-callbacks", daemon=True)
            self._deliverer.start()

    # --- seeding and inspection --------------------------------------------------------

    def rotate_auth_token(self, account_sid: str) -> str:
        """Promote a new auth token, as the console's secondary-token promotion does; the old one answers 401."""
        token = secrets.token_hex(16)
        with self._lock:
            self.accounts[account_sid] = token
        return token

    def set_undeliverable(self, number: str, *, error_code: int = 30003) -> None:
        with self._lock:
            self._undeliverable[number] = error_code

    def set_line_type(self, number: str, line_type: str) -> None:
        with self._lock:
            self._line_types[number] = line_type

    def is_opted_out(self, *, sender: str, recipient: str) -> bool:
        with self._lock:
            return (sender, recipient) in self._opted_out

    def messages_to(self, number: str) -> list[dict]:
        return [m for m in self.all_messages() if m["to"] == number]

    def all_messages(self) -> list[dict]:
        """Every message, oldest first."""
        with self._lock:
            return copy.deepcopy(list(self._messages.values()))

    # --- the Messages resource ---------------------------------------------------------

    def create_message(self, account_sid: str, form: Mapping[str, str]) -> dict:
        to, from_, body = form.get("To", ""), form.get("From") or None, form.get("Body", "")
        service_sid = form.get("MessagingServiceSid") or None
        if not to:
            raise TwilioApiError(400, 21604, "A 'To' phone number is required.")
        if not _is_possible(to):
            raise TwilioApiError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not from_ and not service_sid:
            raise TwilioApiError(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message")
        if service_sid and service_sid not in self.messaging_services:
            raise TwilioApiError(400, 21705, f"The Messaging Service Sid {service_sid} is invalid.")
        if not body:
            raise TwilioApiError(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY:
            raise TwilioApiError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        sender = from_ or self.messaging_services[service_sid]
        with self._lock:
            if (sender, to) in self._opted_out:
                raise TwilioApiError(400, 21610, "Attempt to send to unsubscribed recipient")
            message = _message(account_sid=account_sid, to=to, from_=from_, body=body, direction="outbound-api",
                               status="queued" if from_ else "accepted", messaging_service_sid=service_sid)
            if not from_:
                # Twilio picks the sender from the service's pool after answering.
                message["num_segments"] = "0"
            self._messages[message["sid"]] = message
            callback = form.get("StatusCallback") or None
            failure = self._failure_code(to)
            self._pending.extend([
                _StatusStep(message["sid"], "queued", callback),
                _StatusStep(message["sid"], "sent", callback),
                _StatusStep(message["sid"], "undelivered" if failure else "delivered", callback, failure),
            ])
            self._wakeup.set()
            return copy.deepcopy(message)

    def get_message(self, account_sid: str, sid: str) -> dict:
        with self._lock:
            message = self._messages.get(sid)
            if message is None or message["account_sid"] != account_sid:
                raise TwilioApiError(404, 20404, f"The requested resource {_message_uri(account_sid, sid)} was not found")
            return copy.deepcopy(message)

    def list_messages(self, account_sid: str, *, to: str | None = None, from_: str | None = None) -> list[dict]:
        """The account's messages, newest first, as Twilio lists them."""
        with self._lock:
            found = [m for m in reversed(self._messages.values())
                     if m["account_sid"] == account_sid and (to is None or m["to"] == to)
                     and (from_ is None or m["from"] == from_)]
            return copy.deepcopy(found)

    def record_inbound(self, *, account_sid: str, from_: str, to: str, body: str,
                       message_sid: str | None = None) -> dict:
        """A text arriving at one of our numbers; opt-out keywords take effect before our webhook hears it."""
        keyword = body.strip().upper()
        with self._lock:
            if message_sid in self._messages:
                return copy.deepcopy(self._messages[message_sid])
            if keyword in OPT_OUT_KEYWORDS:
                self._opted_out.add((to, from_))
            elif keyword in OPT_IN_KEYWORDS:
                self._opted_out.discard((to, from_))
            message = _message(account_sid=account_sid, to=to, from_=from_, body=body, direction="inbound",
                               status="received", sid=message_sid)
            message["date_sent"] = message["date_created"]
            self._messages[message["sid"]] = message
            return copy.deepcopy(message)

    # --- status callbacks --------------------------------------------------------------

    def deliver_status_callbacks(self, http: httpx.Client) -> list[httpx.Response]:
        """Advance every pending message one status at a time, POSTing each to its StatusCallback."""
        responses = []
        while (step := self._advance()) is not None:
            url, params, token = step
            if url:
                responses.append(post_signed(http, url=url, params=params, auth_token=token))
        return responses

    def close(self) -> None:
        """Stop the auto-delivery thread, if any."""
        self._closed.set()
        self._wakeup.set()
        if self._deliverer is not None:
            self._deliverer.join(timeout=5)

    def _advance(self) -> tuple[str | None, dict[str, str], str] | None:
        with self._lock:
            if not self._pending:
                return None
            step = self._pending.popleft()
            message = self._messages[step.sid]
            now = _timestamp()
            message["status"], message["date_updated"] = step.status, now
            if message["from"] is None and step.status == "queued":
                message["from"] = self.messaging_services[message["messaging_service_sid"]]
                message["num_segments"] = str(_segments(message["body"]))
            if step.status == "sent":
                message["date_sent"] = now
            if step.error_code:
                message["error_code"] = step.error_code
                message["error_message"] = CARRIER_ERRORS.get(step.error_code, "Unknown error")
            params = {"MessageSid": step.sid, "SmsSid": step.sid, "AccountSid": message["account_sid"],
                      "From": message["from"], "To": message["to"], "MessageStatus": step.status,
                      "SmsStatus": step.status, "ApiVersion": API_VERSION}
            if message["messaging_service_sid"]:
                params["MessagingServiceSid"] = message["messaging_service_sid"]
            if step.error_code:
                params["ErrorCode"] = str(step.error_code)
            return step.callback_url, params, self.accounts[message["account_sid"]]

    def _failure_code(self, number: str) -> int | None:
        if number in self._undeliverable:
            return self._undeliverable[number]
        return 30006 if self._line_types.get(number) == "landline" else None

    def _deliver_forever(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._closed.is_set():
                self._wakeup.wait(timeout=0.5)
                self._wakeup.clear()
                try:
                    self.deliver_status_callbacks(http)
                except httpx.HTTPError:
                    log.warning("a status callback could not be delivered; Twilio does not retry it", exc_info=True)

    # --- Lookup v2 ---------------------------------------------------------------------

    def lookup(self, number: str, *, fields: str = "") -> dict:
        try:
            parsed = phonenumbers.parse(number, "US")
        except phonenumbers.NumberParseException:
            parsed = None
        reason = phonenumbers.is_possible_number_with_reason(parsed) if parsed else None
        valid = reason == phonenumbers.ValidationResult.IS_POSSIBLE
        e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) if parsed else number
        line_type = None
        if valid and "line_type_intelligence" in fields.split(","):
            with self._lock:
                kind = self._line_types.get(e164, "mobile")
            line_type = {"carrier_name": "Sandbox Wireless" if kind == "mobile" else "Sandbox Telecom",
                         "error_code": None, "mobile_country_code": "310", "mobile_network_code": "000", "type": kind}
        return {
            "calling_country_code": str(parsed.country_code) if parsed else None,
            "country_code": phonenumbers.region_code_for_number(parsed) if valid else None,
            "phone_number": e164,
            "national_format": phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL) if valid else None,
            "valid": valid,
            "validation_errors": [] if valid else [_VALIDATION_ERRORS.get(reason, "INVALID_BASE_NUMBER")],
            "caller_name": None, "sim_swap": None, "call_forwarding": None,
            "line_type_intelligence": line_type,
            "identity_match": None, "reassigned_number": None, "sms_pumping_risk": None,
            "phone_number_quality_score": None, "pre_fill": None,
            "url": f"https://lookups.twilio.com/v2/PhoneNumbers/{e164}",
        }


_VALIDATION_ERRORS = {
    phonenumbers.ValidationResult.TOO_SHORT: "TOO_SHORT",
    phonenumbers.ValidationResult.TOO_LONG: "TOO_LONG",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "INVALID_COUNTRY_CODE",
    phonenumbers.ValidationResult.INVALID_LENGTH: "INVALID_LENGTH",
}


def _message_uri(account_sid: str, sid: str) -> str:
    return f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"


def _message(*, account_sid: str, to: str, from_: str | None, body: str, direction: str, status: str,
             messaging_service_sid: str | None = None, sid: str | None = None) -> dict:
    sid = sid or "SM" + secrets.token_hex(16)
    now = _timestamp()
    return {
        "account_sid": account_sid, "api_version": API_VERSION, "body": body,
        "date_created": now, "date_sent": None, "date_updated": now, "direction": direction,
        "error_code": None, "error_message": None, "from": from_, "messaging_service_sid": messaging_service_sid,
        "num_media": "0", "num_segments": str(_segments(body)), "price": None, "price_unit": "USD",
        "sid": sid, "status": status, "to": to, "uri": _message_uri(account_sid, sid),
        "subresource_uris": {"media": _message_uri(account_sid, sid).replace(".json", "/Media.json"),
                             "feedback": _message_uri(account_sid, sid).replace(".json", "/Feedback.json")},
    }


def _segments(body: str) -> int:
    """SMS parts: GSM-7 fits 160 septets (153 when concatenated), anything else UCS-2 70 (67)."""
    if all(c in _GSM7 or c in _GSM7_EXTENDED for c in body):
        units, single, multi = sum(2 if c in _GSM7_EXTENDED else 1 for c in body), 160, 153
    else:
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def _is_possible(number: str) -> bool:
    if not number.startswith("+"):
        return False
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(number))
    except phonenumbers.NumberParseException:
        return False


def _timestamp() -> str:
    """Now in RFC 2822, as Twilio dates every resource."""
    return email.utils.format_datetime(datetime.now(timezone.utc).replace(microsecond=0))


# --- HTTP ------------------------------------------------------------------------------

def create_app(sandbox: TwilioSandbox) -> FastAPI:
    app = FastAPI(title="Twilio sandbox")

    @app.exception_handler(TwilioApiError)
    async def twilio_error(request: Request, exc: TwilioApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def not_found(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code != 404:
            return await http_exception_handler(request, exc)
        return TwilioApiError(404, 20404, f"The requested resource {request.url.path} was not found").response()

    inject_faults(app, sandbox.faults, respond=lambda fault: _fault(fault).response())

    @app.post("/2010-04-01/Accounts/{account_sid}/Messages.json", status_code=201)
    async def create_message(account_sid: str, request: Request) -> dict:
        _authenticate(sandbox, request, account_sid)
        form = await request.form()
        return sandbox.create_message(account_sid, {k: str(v) for k, v in form.items()})

    @app.get("/2010-04-01/Accounts/{account_sid}/Messages.json")
    def list_messages(account_sid: str, request: Request) -> dict:
        _authenticate(sandbox, request, account_sid)
        query = request.query_params
        records = sandbox.list_messages(account_sid, to=query.get("To"), from_=query.get("From"))
        return _page(account_sid, records, query)

    @app.get("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json")
    def fetch_message(account_sid: str, sid: str, request: Request) -> dict:
        _authenticate(sandbox, request, account_sid)
        return sandbox.get_message(account_sid, sid)

    @app.get("/v2/PhoneNumbers/{number}")
    def lookup(number: str, request: Request) -> dict:
        _authenticate(sandbox, request)
        return sandbox.lookup(number, fields=request.query_params.get("Fields", ""))

    return app


def _authenticate(sandbox: TwilioSandbox, request: Request, account_sid: str | None = None) -> None:
    failure = TwilioApiError(401, 20003, "Authenticate", headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        raise failure
    try:
        username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise failure from None
    token = sandbox.accounts.get(username)
    if token is None or not secrets.compare_digest(token, password) or account_sid not in (None, username):
        raise failure


def _fault(fault: dict) -> TwilioApiError:
    status = fault["status"]
    headers = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
    if status == 429:
        return TwilioApiError(429, 20429, "Too Many Requests", headers=headers)
    return TwilioApiError(status, 20000 + status if status in (500, 503) else 20500, HTTPStatus(status).phrase,
                          headers=headers)


def _page(account_sid: str, records: list[dict], query: Mapping[str, str]) -> dict:
    """One page of a newest-first list; PageToken pins the next page to the last sid seen, as Twilio does."""
    try:
        page_size = min(max(int(query.get("PageSize", 50)), 1), 1000)
        page = max(int(query.get("Page", 0)), 0)
    except ValueError:
        raise TwilioApiError(400, 20001, "Invalid paging parameters") from None
    start = page * page_size
    token = query.get("PageToken", "")
    if token.startswith("PA"):
        sids = [m["sid"] for m in records]
        start = sids.index(token[2:]) + 1 if token[2:] in sids else len(records)
    chunk = records[start:start + page_size]
    filters = {key: query[key] for key in ("To", "From") if query.get(key)}
    base = f"/{API_VERSION}/Accounts/{account_sid}/Messages.json"

    def uri(number: int, page_token: str | None = None) -> str:
        params = {**filters, "PageSize": page_size, "Page": number}
        if page_token:
            params["PageToken"] = page_token
        return f"{base}?{urlencode(params)}"

    has_more = start + page_size < len(records)
    return {
        "messages": chunk,
        "page": page, "page_size": page_size, "start": start, "end": start + max(len(chunk) - 1, 0),
        "uri": uri(page, token or None), "first_page_uri": uri(0),
        "next_page_uri": uri(page + 1, "PA" + chunk[-1]["sid"]) if has_more and chunk else None,
        "previous_page_uri": uri(page - 1) if page > 0 else None,
    }

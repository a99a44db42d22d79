"""A receiver of textback's signed webhook events, built the way docs/webhook-connector.md tells integrators to.

    receiver = WebhookReceiver("the-shared-secret-0123")
    with serve(create_app(receiver)) as served:
        crm = WebhookCRM(WebhookConfig(type="webhook", url=served.url + "/hooks/textback", secret=...))

It checks the signature and the timestamp (401 outside the five-minute window), validates the
event (422 with the reason), dedupes by idempotency key (a duplicate gets the first answer and
changes nothing), and keeps one record per record id, as a CRM behind a Zap would. With
`assign_ids` it answers `{"id": ...}` with ids of its own, as a receiver that creates records in
another system does. `faults` scripts failing answers (429 with Retry-After, 5xx, ...), late
answers and dropped connections (sandbox.common); `stall_next` makes it record an event and then
answer late, the way a slow endpoint loses an answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sandbox.common import Faults, IdSequence, inject_faults

TOLERANCE_SECONDS = 300
PATH = "/hooks/textback"
_E164 = re.compile(r"\+[1-9]\d{1,14}")
_REQUIRED = {
    "contact.upserted": ("contact", ("phone",)),
    "conversation.logged": ("conversation", ("title", "lines", "text")),
    "opportunity.upserted": ("opportunity", ("name",)),
    "booking.recorded": ("booking", ("title", "start", "end")),
}


def verify(secret: str, timestamp: str, signature: str, body: bytes, *, now: float) -> bool:
    """The recipe of docs/webhook-connector.md: fresh timestamp, then a constant-time HMAC comparison."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"v1={expected}", signature)


class EventRefused(Exception):
    def __init__(self, status: int, reason: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


@dataclass
class WebhookReceiver:
    """Thread-safe receiver state: the secret, the events accepted, the records they made."""

    secret: str
    assign_ids: bool = False
    clock: Callable[[], float] = time.time
    faults: Faults = field(default_factory=Faults)
    deliveries: int = 0
    events: list[dict] = field(default_factory=list)
    _answers: dict[str, dict] = field(default_factory=dict)
    _records: dict[str, dict[str, dict]] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)
    _ids: IdSequence = field(default_factory=lambda: IdSequence(501))
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def records(self, kind: str) -> list[dict]:
        """The records of one kind (contact, conversation, opportunity, booking) as last written."""
        with self._lock:
            return [dict(record) for record in self._records.get(kind, {}).values()]

    def stall_next(self, seconds: float, *, times: int = 1) -> None:
        """Record the next `times` events, then wait `seconds` before answering."""
        self.faults.delay_next("/", seconds=seconds, times=times)

    def receive(self, path: str, headers: dict[str, str], body: bytes) -> dict:
        """Check and apply one delivery (headers with lower-case names); the answer to send, or EventRefused."""
        with self._lock:
            self.deliveries += 1
        if fault := self.faults.take(path):
            retry_after = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
            raise EventRefused(fault["status"], f"scripted failure {fault['status']}", headers=retry_after)
        if not verify(self.secret, headers.get("x-textback-timestamp", ""), headers.get("x-textback-signature", ""),
                      body, now=self.clock()):
            raise EventRefused(401, "signature or timestamp does not verify")
        event = _parsed(body)
        with self._lock:
            key = event["idempotency_key"]
            if key in self._answers:
                return self._answers[key]
            self.events.append(event)
            answer = self._apply(event)
            self._answers[key] = answer
            return answer

    def _apply(self, event: dict) -> dict:
        kind, _ = _REQUIRED[event["type"]]
        data = event["data"]
        sent_id = str(data["record_id"])
        record_id = self._aliases.get(sent_id, sent_id)
        records = self._records.setdefault(kind, {})
        if record_id not in records and self.assign_ids and sent_id not in self._aliases:
            record_id = f"rcv-{self._ids.next()}"
            self._aliases[sent_id] = record_id
        records[record_id] = {"id": record_id, **data[kind],
                              **({"contact_id": data["contact_id"]} if "contact_id" in data else {})}
        return {"id": record_id} if self.assign_ids else {"received": True}


def _parsed(body: bytes) -> dict:
    try:
        event = json.loads(body)
    except ValueError:
        raise EventRefused(400, "body is not JSON") from None
    if not isinstance(event, dict):
        raise EventRefused(422, "the event must be a JSON object")
    for name in ("id", "type", "idempotency_key", "occurred_at", "data"):
        if not event.get(name):
            raise EventRefused(422, f"{name} is missing")
    if event["type"] not in _REQUIRED:
        raise EventRefused(422, f"unknown event type {event['type']!r}")
    kind, required = _REQUIRED[event["type"]]
    data = event["data"]
    if not isinstance(data, dict) or not data.get("record_id") or not isinstance(data.get(kind), dict):
        raise EventRefused(422, f"data.record_id and data.{kind} are required")
    if kind != "contact" and not data.get("contact_id"):
        raise EventRefused(422, "data.contact_id is required")
    if missing := [name for name in required if data[kind].get(name) in (None, "", [])]:
        raise EventRefused(422, f"data.{kind}.{missing[0]} is required")
    if kind == "contact" and not _E164.fullmatch(str(data["contact"]["phone"])):
        raise EventRefused(422, "data.contact.phone must be an E.164 number such as +15550100123")
    return event


def create_app(receiver: WebhookReceiver, *, path: str = PATH) -> FastAPI:
    app = FastAPI(title="textback webhook receiver")
    # Scripted error answers are taken in `receive`, after the delivery is counted.
    inject_faults(app, receiver.faults)

    @app.post(path)
    async def receive(request: Request) -> JSONResponse:
        try:
            answer = receiver.receive(request.url.path, dict(request.headers), await request.body())
        except EventRefused as exc:
            return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=exc.headers)
        return JSONResponse(answer)

    return app

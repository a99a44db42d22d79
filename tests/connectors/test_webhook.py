"""The webhook CRM connector against the receiver sandbox, over real HTTP through httpx."""

from __future__ import annotations

import itertools
import json
import re
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from connectors.base import AuthExpired, CRMConnector, RateLimited, Rejected, Transient
from connectors.registry import validate_connector
from connectors.webhook import WebhookConfig, WebhookCRM, signature
from core.models import BookingRecord, ContactRecord, ConversationLog, Direction, Opportunity, TranscriptLine
from sandbox.server import serve
from sandbox.webhook_receiver import PATH, WebhookReceiver, create_app

SECRET = "whsec-test-0123456789abcdef"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhook-connector.md"
START = datetime(2030, 3, 4, 15, 0, tzinfo=timezone.utc)
_numbers = itertools.count(1)


def new_phone() -> str:
    return f"+1555020{next(_numbers):04d}"


@pytest.fixture(scope="module")
def receiver() -> WebhookReceiver:
    return WebhookReceiver(SECRET)


@pytest.fixture(scope="module")
def url(receiver):
    with serve(create_app(receiver)) as served:
        yield served.url + PATH


def connector(url: str, *, secret: str = SECRET, timeout: float = 5, http: httpx.Client | None = None) -> WebhookCRM:
    return WebhookCRM(WebhookConfig(type="webhook", url=url, secret=SecretStr(secret), timeout_seconds=timeout),
                      http=http)


@pytest.fixture
def crm(url) -> WebhookCRM:
    return connector(url)


def last_event(receiver: WebhookReceiver) -> dict:
    return receiver.events[-1]


def record(receiver: WebhookReceiver, kind: str, record_id: str) -> dict:
    return next(each for each in receiver.records(kind) if each["id"] == record_id)


def transcript(*bodies: str) -> ConversationLog:
    return ConversationLog(title="textback conversation with +15550200000 (Smith & Lee Law)", lines=[
        TranscriptLine(at=START + timedelta(minutes=i), body=body,
                       direction=Direction.outbound if i % 2 == 0 else Direction.inbound)
        for i, body in enumerate(bodies)], answers={"matter": "car accident"})


def captured(answer: httpx.Response) -> tuple[list[httpx.Request], httpx.Client]:
    """A client whose every request is kept and answered with `answer`."""
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return answer
    return requests, httpx.Client(transport=httpx.MockTransport(handle))


# --- configuration ---------------------------------------------------------------------------

def test_the_connector_declares_its_role_config_and_protocol(crm):
    assert (WebhookCRM.role, WebhookCRM.config_model) == ("crm", WebhookConfig)
    assert isinstance(crm, CRMConnector)


def test_a_tenant_enables_it_through_the_registry_with_the_secret_from_the_environment(monkeypatch):
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)

    config = validate_connector("crm", {"type": "webhook", "url": "https://hooks.example.com/textback",
                                        "secret": "env:TEST_WEBHOOK_SECRET"})

    assert (config.secret.get_secret_value(), config.timeout_seconds, config.base_url) == (SECRET, 10, None)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/hook", "http://localhost/hook", "http://[::1]:9/hook",
                                 "https://hooks.zapier.com/hooks/catch/1/abc/"])
def test_https_is_required_except_on_loopback(url):
    assert WebhookConfig(type="webhook", url=url, secret=SecretStr(SECRET)).url == url


@pytest.mark.parametrize("settings, message", [
    ({"url": "http://hooks.example.com/textback"}, "must use https"),
    ({"url": "hooks.example.com/textback"}, "absolute https"),
    ({"secret": SecretStr("short-secret")}, "at least 16 characters"),
    ({"base_url": "https://hooks.example.com"}, "no base_url"),
    ({"timeout_seconds": 0}, "greater than 0"),
])
def test_a_mistaken_setting_is_refused_with_the_fix(settings, message):
    raw = {"type": "webhook", "url": "https://hooks.example.com/textback", "secret": SecretStr(SECRET), **settings}

    with pytest.raises(ValidationError, match=message):
        WebhookConfig.model_validate(raw)


def test_an_inline_secret_is_refused():
    with pytest.raises(ValidationError, match="inline secrets are not allowed"):
        WebhookConfig.model_validate({"type": "webhook", "url": "https://h.example.com", "secret": SECRET})


# --- events ----------------------------------------------------------------------------------

def test_a_new_caller_is_a_signed_contact_event_and_a_contact_record(crm, receiver):
    phone = new_phone()

    contact_id = crm.upsert_contact(ContactRecord(phone=phone, first_name="Rosa"))

    event = last_event(receiver)
    assert re.fullmatch(r"tb_contact_[0-9a-f]{24}", contact_id)
    assert (event["type"], event["version"], event["data"]["record_id"]) == ("contact.upserted", 1, contact_id)
    assert re.fullmatch(r"evt_[0-9a-f]{32}", event["id"])
    assert event["idempotency_key"].startswith(f"contact.upserted:{contact_id}:")
    assert datetime.fromisoformat(event["occurred_at"]).tzinfo is not None
    assert record(receiver, "contact", contact_id) == {
        "id": contact_id, "phone": phone, "first_name": "Rosa", "last_name": None, "email": None,
        "source": "Missed call text-back"}


def test_the_request_carries_the_documented_headers_and_signature():
    requests, http = captured(httpx.Response(200))
    crm = connector("https://hooks.example.com/textback", http=http)

    crm.upsert_contact(ContactRecord(phone=new_phone()))

    [request] = requests
    timestamp = request.headers["X-Textback-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 5
    assert request.headers["X-Textback-Signature"] == signature(SECRET, int(timestamp), request.content)
    assert request.headers["Idempotency-Key"] == json.loads(request.content)["idempotency_key"]
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "textback-webhook/1"


def test_the_same_caller_again_names_the_same_record_and_the_same_event(crm, receiver):
    phone = new_phone()
    first = crm.upsert_contact(ContactRecord(phone=phone))
    events = len(receiver.events)

    again = crm.upsert_contact(ContactRecord(phone=phone))

    assert again == first
    assert len(receiver.events) == events
    assert [c["id"] for c in receiver.records("contact") if c["phone"] == phone] == [first]


def test_changed_details_are_a_new_event_updating_the_same_record(crm, receiver):
    phone = new_phone()
    first = crm.upsert_contact(ContactRecord(phone=phone))
    first_key = last_event(receiver)["idempotency_key"]

    same = crm.upsert_contact(ContactRecord(phone=phone, last_name="Okafor"), existing_id=first)

    assert same == first
    assert last_event(receiver)["idempotency_key"] != first_key
    assert record(receiver, "contact", first)["last_name"] == "Okafor"


def test_a_conversation_is_logged_with_its_lines_and_text_and_grows_in_place(crm, receiver):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    log_id = crm.log_conversation(contact_id=contact_id, log=transcript("Sorry we missed your call"))

    same = crm.log_conversation(contact_id=contact_id, existing_id=log_id,
                                log=transcript("Sorry we missed your call", "car accident"))

    stored = record(receiver, "conversation", log_id)
    assert same == log_id and log_id.startswith("tb_conversation_")
    assert stored["contact_id"] == contact_id
    assert [line["direction"] for line in stored["lines"]] == ["outbound", "inbound"]
    assert stored["lines"][0]["at"] == "2030-03-04T15:00:00Z"
    assert "matter: car accident" in stored["text"] and stored["answers"] == {"matter": "car accident"}


def test_an_opportunity_and_a_booking_are_records_on_the_contact(crm, receiver):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    booking = BookingRecord(title="Consultation", start=START, end=START + timedelta(minutes=30))

    deal_id = crm.upsert_opportunity(contact_id=contact_id,
                                     opportunity=Opportunity(name="Car accident", stage="booked"))
    meeting_id = crm.record_booking(contact_id=contact_id, booking=booking)

    assert record(receiver, "opportunity", deal_id) | {"id": None} == {
        "id": None, "contact_id": contact_id, "name": "Car accident", "stage": "booked", "description": ""}
    assert record(receiver, "booking", meeting_id) | {"id": None} == {
        "id": None, "contact_id": contact_id, "title": "Consultation", "start": "2030-03-04T15:00:00Z",
        "end": "2030-03-04T15:30:00Z", "description": "", "cancelled": False}


def test_a_cancelled_booking_updates_the_same_record(crm, receiver):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    booking = BookingRecord(title="Consultation", start=START, end=START + timedelta(minutes=30))
    meeting_id = crm.record_booking(contact_id=contact_id, booking=booking)

    same = crm.record_booking(contact_id=contact_id, booking=booking.model_copy(update={"cancelled": True}))

    assert same == meeting_id and record(receiver, "booking", meeting_id)["cancelled"] is True


def test_ids_the_receiver_answers_are_returned_and_name_the_record_from_then_on():
    # Given a receiver that creates records elsewhere and answers their ids
    receiver = WebhookReceiver(SECRET, assign_ids=True)
    with serve(create_app(receiver)) as served:
        crm = connector(served.url + PATH)
        phone = new_phone()
        # When
        contact_id = crm.upsert_contact(ContactRecord(phone=phone))
        again = crm.upsert_contact(ContactRecord(phone=phone, first_name="Sam"))
        updated = crm.upsert_contact(ContactRecord(phone=phone, first_name="Samuel"), existing_id=contact_id)
        deal_id = crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="Will"))
    # Then
    assert contact_id.startswith("rcv-") and again == updated == contact_id
    assert receiver.records("contact") == [{"id": contact_id, "phone": phone, "first_name": "Samuel",
                                            "last_name": None, "email": None, "source": "Missed call text-back"}]
    assert receiver.events[-1]["data"]["contact_id"] == contact_id and deal_id.startswith("rcv-")


def test_zapiers_acknowledgement_id_names_a_request_not_a_record():
    zapier_ack = {"attempt": "0190-a", "id": "0190-b", "request_id": "0190-c", "status": "success"}
    _, http = captured(httpx.Response(200, json=zapier_ack))
    crm = connector("https://hooks.zapier.com/hooks/catch/123/abc/", http=http)

    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))

    assert contact_id.startswith("tb_contact_")


# --- failures --------------------------------------------------------------------------------

def test_an_answer_lost_to_the_timeout_is_transient_and_the_retry_is_a_duplicate(url, receiver):
    # Given a receiver that records the event but answers after the connector gave up
    crm = connector(url, timeout=0.3)
    receiver.stall_next(1.0)
    phone = new_phone()
    with pytest.raises(Transient, match="did not answer in time"):
        crm.upsert_contact(ContactRecord(phone=phone))
    events = len(receiver.events)
    # When the job is retried
    contact_id = crm.upsert_contact(ContactRecord(phone=phone))
    # Then the receiver recognised the same event: one event, one record
    assert len(receiver.events) == events
    assert [c["id"] for c in receiver.records("contact") if c["phone"] == phone] == [contact_id]


def test_a_429_is_rate_limited_with_the_receivers_retry_after(crm, receiver):
    receiver.faults.fail_next(PATH, status=429, retry_after=7)

    with pytest.raises(RateLimited) as raised:
        crm.upsert_contact(ContactRecord(phone=new_phone()))

    assert raised.value.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_is_transient_and_the_next_attempt_lands(crm, receiver, status):
    phone = new_phone()
    receiver.faults.fail_next(PATH, status=status)

    with pytest.raises(Transient) as raised:
        crm.upsert_contact(ContactRecord(phone=phone))

    assert raised.value.status == status
    assert crm.upsert_contact(ContactRecord(phone=phone)) in {c["id"] for c in receiver.records("contact")}


def test_a_wrong_secret_is_auth_expired_and_nothing_is_recorded(url, receiver):
    events = len(receiver.events)

    with pytest.raises(AuthExpired) as raised:
        connector(url, secret="not-the-receivers-secret").upsert_contact(ContactRecord(phone=new_phone()))

    assert raised.value.status == 401 and len(receiver.events) == events


def test_a_timestamp_outside_the_five_minute_window_is_refused():
    # Given a receiver whose clock is six minutes ahead of ours
    receiver = WebhookReceiver(SECRET, clock=lambda: time.time() + 360)
    with serve(create_app(receiver)) as served:
        # When / Then
        with pytest.raises(AuthExpired, match="signature or timestamp"):
            connector(served.url + PATH).upsert_contact(ContactRecord(phone=new_phone()))
    assert receiver.events == []


def test_an_event_the_receiver_finds_invalid_is_rejected_with_its_reason(crm, receiver):
    with pytest.raises(Rejected, match="E.164") as raised:
        crm.upsert_contact(ContactRecord(phone="555-0100"))

    assert raised.value.status == 422


def test_a_redirect_is_rejected_because_it_is_not_followed():
    _, http = captured(httpx.Response(308, headers={"Location": "https://new.example.com/hook"}))

    with pytest.raises(Rejected, match="new.example.com"):
        connector("https://old.example.com/hook", http=http).upsert_contact(ContactRecord(phone=new_phone()))


def test_an_unreachable_receiver_is_transient():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]

    with pytest.raises(Transient):
        connector(f"http://127.0.0.1:{port}{PATH}").upsert_contact(ContactRecord(phone=new_phone()))


# --- the documented recipe -------------------------------------------------------------------

def test_the_python_recipe_in_the_docs_verifies_a_real_delivery_and_nothing_else():
    # Given the recipe exactly as published, and one delivery as the connector sends it
    recipe = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(recipe, namespace)
    verified = namespace["textback_signature_ok"]
    requests, http = captured(httpx.Response(204))
    connector("https://hooks.example.com/textback", http=http).upsert_contact(ContactRecord(phone=new_phone()))
    [request] = requests
    timestamp, signed = request.headers["X-Textback-Timestamp"], request.headers["X-Textback-Signature"]
    # Then
    assert verified(SECRET, timestamp, signed, request.content)
    assert not verified(SECRET, timestamp, signed, request.content.replace(b"+1555", b"+1666"))
    assert not verified("another-secret-0123456789", timestamp, signed, request.content)
    stale = int(timestamp) - 301
    assert not verified(SECRET, str(stale), signature(SECRET, stale, request.content), request.content)

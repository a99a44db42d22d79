"""Two businesses on one deployment: a request for one never reads or changes the other's rows."""

from __future__ import annotations

import httpx
import pytest
import yaml
from sqlalchemy import select

from connectors.registry import validate_connector
from core.config import load_tenants
from core.store.tables import Conversation, Lead, Message
from sandbox.phone import SandboxPhone
from sync.embedded import Embedded
from webhooks.api_routes import hash_key

from .conftest import BUSINESS, CALENDAR, CALLER, tenant_yaml

RIVERA = "+15550009999"
KEY_A, KEY_B = "tbk_smith", "tbk_rivera"


@pytest.fixture
def two_tenants(tmp_path, stack, sqlite_db, monkeypatch):
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    smith = tenant_yaml(stack, api_key_sha256=hash_key(KEY_A))
    rivera = tenant_yaml(stack, id="rivera-law", name="Rivera Family Law", phone_numbers=[RIVERA],
                         forward_to=["+15550008888"], api_key_sha256=hash_key(KEY_B),
                         connectors=stack.connectors_yaml(calendars=[CALENDAR]))
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [smith, rivera]}, sort_keys=False))
    tenants = load_tenants(path, validate_connector=validate_connector)
    with Embedded(db=sqlite_db, tenants=tenants) as textback, httpx.Client(timeout=10) as http:
        phone = SandboxPhone(app_url=textback.url, auth_token=stack.auth_token, account_sid=stack.account_sid,
                             twilio=stack.twilio, http=http)
        yield textback, phone, http


def _miss_at_rivera(phone: SandboxPhone, textback) -> None:
    sid = "CA" + "2" * 32
    assert phone.ring(call_sid=sid, caller=CALLER, to=RIVERA).status_code == 200
    assert phone.dial_complete(call_sid=sid, caller=CALLER, to=RIVERA, dial_status="no-answer").status_code == 200
    textback.drain()


def _rivera_first_text(textback) -> Message:
    with textback.runtime.db.transaction() as s:
        return s.scalar(select(Message).where(Message.tenant_id == "rivera-law", Message.direction == "outbound"))


def _rivera_lead(textback) -> Lead:
    with textback.runtime.db.transaction() as s:
        return s.scalar(select(Lead).where(Lead.tenant_id == "rivera-law"))


def test_a_status_callback_from_one_tenants_number_cannot_touch_anothers_message(two_tenants):
    textback, phone, _ = two_tenants
    # Given: Rivera texted a caller back
    _miss_at_rivera(phone, textback)
    theirs = _rivera_first_text(textback)
    # When: a delivery report arrives for Rivera's message, but for Smith's number (sid and our marker both)
    for query in ("", f"?m={theirs.id}"):
        response = phone.signed_post(f"/twilio/sms/status{query}", {
            "MessageSid": theirs.provider_sid if not query else "SM" + "9" * 32, "MessageStatus": "undelivered",
            "ErrorCode": "21610", "From": BUSINESS, "To": CALLER})
        assert response.status_code == 204
    # Then: Rivera's message and lead are as they were
    after = _rivera_first_text(textback)
    assert (after.status, after.provider_sid, after.error_code) == (theirs.status, theirs.provider_sid, None)
    assert _rivera_lead(textback).opted_out_at is None


def test_a_status_callback_for_the_senders_own_message_is_applied(two_tenants):
    textback, phone, _ = two_tenants
    _miss_at_rivera(phone, textback)
    theirs = _rivera_first_text(textback)

    phone.signed_post(f"/twilio/sms/status?m={theirs.id}", {
        "MessageSid": theirs.provider_sid, "MessageStatus": "undelivered", "ErrorCode": "21610",
        "From": RIVERA, "To": CALLER})

    assert _rivera_lead(textback).opt_out_source == "carrier_21610"


def test_the_api_answers_401_without_a_key_before_looking_at_the_number(two_tenants):
    textback, _, http = two_tenants
    report = {"caller": CALLER, "occurred_at": "2026-12-01T10:00:00-05:00", "idempotency_key": "k"}

    def post(called: str, key: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return http.post(textback.url + "/api/v1/missed-calls", json={**report, "called": called}, headers=headers)

    unknown_without_key, customer_without_key = post("+15551230000", None), post(RIVERA, None)
    other_tenants_number, unknown_number = post(RIVERA, KEY_A), post("+15551230000", KEY_A)

    assert unknown_without_key.status_code == customer_without_key.status_code == 401
    assert unknown_without_key.json() == customer_without_key.json()
    assert other_tenants_number.status_code == unknown_number.status_code == 403
    assert other_tenants_number.json() == unknown_number.json()
    with textback.runtime.db.transaction() as s:
        assert s.scalars(select(Conversation)).all() == []


def test_a_key_of_one_tenant_cannot_take_over_anothers_conversation(two_tenants):
    textback, phone, http = two_tenants
    _miss_at_rivera(phone, textback)
    with textback.runtime.db.transaction() as s:
        rivera_conversation = s.scalar(select(Conversation.id).where(Conversation.tenant_id == "rivera-law"))

    def take(conversation_id: int, key: str) -> httpx.Response:
        return http.post(f"{textback.url}/api/v1/conversations/{conversation_id}/takeover",
                         headers={"Authorization": f"Bearer {key}"})

    foreign, missing, own = take(rivera_conversation, KEY_A), take(9999, KEY_A), take(rivera_conversation, KEY_B)

    assert foreign.status_code == missing.status_code == 404
    assert own.status_code == 200


def test_a_caller_of_both_businesses_is_two_leads_and_a_text_to_one_leaves_the_other_alone(two_tenants):
    textback, phone, _ = two_tenants
    _miss_at_rivera(phone, textback)
    with textback.runtime.db.transaction() as s:
        before = s.scalar(select(Conversation).where(Conversation.tenant_id == "rivera-law"))

    phone.text(caller=CALLER, to=BUSINESS, body="hi, I called earlier")
    textback.drain()

    with textback.runtime.db.transaction() as s:
        after = s.scalar(select(Conversation).where(Conversation.tenant_id == "rivera-law"))
        tenants_of_leads = sorted(s.scalars(select(Lead.tenant_id).where(Lead.phone == CALLER)))
    assert (after.step, after.answers, after.state) == (before.step, before.answers, before.state)
    assert tenants_of_leads == ["rivera-law", "smith-law"]

"""Forged, malformed and misaddressed Twilio requests are refused and leave no trace.

Missing, wrong, tampered and other-tenant signatures on every Twilio route are in the forgery matrix
(tests/webhooks/test_forgery.py); this module keeps the URL, routing and malformed-input cases."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from core.store.tables import Call, Lead, Message, OutboxRow
from sandbox.twilio import post_signed
from tests.webhooks.conftest import BUSINESS, CALLER

CALL = {"CallSid": "CA" + "5" * 32, "From": CALLER, "To": BUSINESS, "CallStatus": "ringing"}
DIAL = {**CALL, "DialCallStatus": "no-answer"}
SMS = {"MessageSid": "SM" + "5" * 32, "From": CALLER, "To": BUSINESS, "Body": "hi"}


def _rows(textback) -> int:
    with textback.runtime.db.transaction() as s:
        return sum(s.scalar(select(func.count()).select_from(t)) for t in (Call, Lead, Message, OutboxRow))


def test_a_signature_over_another_url_is_refused(textback, stack):
    with httpx.Client() as http:
        response = post_signed(http, url=textback.url + "/twilio/voice?x=1", params=CALL, auth_token=stack.auth_token)
    # Same body, signed for a different URL than the one requested.
    forged = httpx.post(textback.url + "/twilio/voice", data=CALL,
                        headers={"X-Twilio-Signature": response.request.headers["X-Twilio-Signature"]})

    assert response.status_code == 200
    assert forged.status_code == 403


def test_a_call_to_a_number_no_tenant_owns_gets_404_with_a_clear_body(textback, stack):
    with httpx.Client() as http:
        response = post_signed(http, url=textback.url + "/twilio/voice", params={**CALL, "To": "+15559999999"},
                               auth_token=stack.auth_token)

    assert response.status_code == 404
    assert "+15559999999" in response.json()["detail"]
    assert _rows(textback) == 0


def test_a_signed_request_missing_fields_gets_400_not_500(textback, stack):
    with httpx.Client() as http:
        response = post_signed(http, url=textback.url + "/twilio/voice/dial-complete",
                               params={"From": CALLER, "To": BUSINESS}, auth_token=stack.auth_token)

    assert response.status_code == 400
    assert "CallSid" in response.json()["detail"] and "DialCallStatus" in response.json()["detail"]
    assert _rows(textback) == 0


def test_an_inbound_text_from_a_non_number_gets_400(textback, stack):
    with httpx.Client() as http:
        response = post_signed(http, url=textback.url + "/twilio/sms", params={**SMS, "From": "not-a-number"},
                               auth_token=stack.auth_token)

    assert response.status_code == 400 and _rows(textback) == 0


def test_a_json_body_gets_415(textback):
    response = httpx.post(textback.url + "/twilio/sms", json=SMS)

    assert response.status_code == 415


def test_health_says_the_process_is_alive_and_readiness_checks_the_database(textback):
    health = httpx.get(textback.url + "/healthz")
    ready = httpx.get(textback.url + "/readyz")

    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "database": "ok", "tenants": 1}

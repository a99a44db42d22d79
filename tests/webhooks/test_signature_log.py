"""A rejected Twilio signature says which URL it was checked against and why it most likely failed."""

from __future__ import annotations

import logging

import httpx

from core.config import Settings
from sandbox.twilio import post_signed
from tests.webhooks.conftest import BUSINESS, CALLER
from webhooks.signature_log import SignatureFailures, likely_cause

CALL = {"CallSid": "CA" + "7" * 32, "From": CALLER, "To": BUSINESS, "CallStatus": "ringing"}


def test_a_server_told_the_wrong_public_url_logs_the_url_it_checked_and_the_fix(textback, stack, caplog):
    textback.runtime.settings = Settings(public_url="https://textback.example.com", redis_url="stub://")

    with caplog.at_level(logging.WARNING, logger="textback.signatures"), httpx.Client() as http:
        answer = post_signed(http, url=textback.url + "/twilio/voice", params=CALL, auth_token=stack.auth_token)

    assert answer.status_code == 403
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert ("rejected a Twilio webhook for tenant smith-law: the signature does not match the URL "
            "https://textback.example.com/twilio/voice") in record.getMessage()
    assert (f"TEXTBACK_PUBLIC_URL is https://textback.example.com but the request came to {textback.url}"
            in record.getMessage())


def test_an_unsigned_request_is_logged_as_not_from_twilio(textback, caplog):
    with caplog.at_level(logging.WARNING, logger="textback.signatures"):
        answer = httpx.post(textback.url + "/twilio/voice", data=CALL)

    assert answer.status_code == 403
    assert "has no X-Twilio-Signature: it did not come from Twilio" in caplog.records[0].getMessage()


def test_a_burst_of_failures_logs_once_a_minute_and_counts_the_rest(caplog):
    now = [0.0]
    failures = SignatureFailures(every=60, clock=lambda: now[0])
    report = dict(tenant_id="t", checked_url="https://a.example/twilio/sms", seen_url="https://a.example/twilio/sms",
                  signed=True)

    with caplog.at_level(logging.WARNING, logger="textback.signatures"):
        logged = [failures.report(**report) for _ in range(5)]
        now[0] = 61.0
        logged.append(failures.report(**report))

    assert logged == [True, False, False, False, False, True]
    assert "(4 more like it since the last warning)" in caplog.records[-1].getMessage()
    assert "another auth token" in caplog.records[0].getMessage()


def test_a_signature_over_the_right_host_points_at_the_token_or_a_rewriting_proxy():
    cause = likely_cause(checked_url="https://a.example/twilio/voice", seen_url="https://a.example/twilio/voice",
                         signed=True)

    assert "another auth token" in cause and "proxy" in cause

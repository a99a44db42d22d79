"""Structured logs: one JSON line per request with request id, tenant and call sid; no full numbers or tokens."""

from __future__ import annotations

import io
import json
import logging

import pytest

from sync.logs import configure_logging, mask
from tests.webhooks.conftest import CALLER, miss_a_call


@pytest.fixture
def captured():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(stream=stream, fmt="json")
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_a_missed_call_logs_json_lines_with_tenant_call_sid_and_request_id_and_no_full_number(
        captured, phone, textback, stack):
    # When a call is missed and the first text goes out
    response = miss_a_call(phone, call_sid="CA" + "7" * 32)
    textback.drain()
    # Then the webhook's line names the route, tenant, call sid and request id
    lines = [json.loads(line) for line in captured.getvalue().splitlines() if line.strip()]
    [dial] = [line for line in lines if line.get("route") == "/twilio/voice/dial-complete"]
    assert dial["tenant"] == "smith-law" and dial["call_sid"] == "CA" + "7" * 32 and dial["status"] == 200
    assert dial["request_id"] == response.headers["x-request-id"] and dial["level"] == "info"
    # And nothing logged carries the caller's full number, the account sid or a message body
    text = captured.getvalue()
    assert CALLER not in text and stack.account_sid not in text and "automated" not in text


def test_a_request_id_sent_by_the_caller_is_kept(captured, textback):
    import httpx

    answer = httpx.get(f"{textback.url}/healthz", headers={"X-Request-Id": "lb-1234"}, timeout=10)
    assert answer.headers["x-request-id"] == "lb-1234"
    assert any(json.loads(line).get("request_id") == "lb-1234" for line in captured.getvalue().splitlines())


def test_masking_keeps_the_last_four_digits_and_hides_tokens():
    assert mask("to +15550103333 and 5550001111") == "to …3333 and …1111"
    assert mask("Authorization: Bearer eyJhbGciOi.abc") == "Authorization: Bearer ***"
    assert mask("account AC0123456789abcdef0123456789abcdef") == "account AC***"
    assert mask("at 2031-03-03 14:00:05, 12 rows") == "at 2031-03-03 14:00:05, 12 rows"

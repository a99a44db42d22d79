"""TwilioSMS through the real Twilio SDK against the Twilio sandbox over HTTP."""

from __future__ import annotations

import itertools
import socket

import httpx
import pytest
from pydantic import ValidationError

from connectors.base import AuthExpired, RateLimited, Rejected, SMSProvider, Transient
from connectors.twilio import UNSUBSCRIBED_RECIPIENT, TwilioConfig, TwilioRejected, TwilioSMS
from core.models import OutboundSMS
from sandbox.server import serve
from sandbox.twilio import TwilioSandbox, create_app

SID = "AC" + "d4" * 16
TOKEN = "connector-auth-token"
SERVICE_SID = "MG" + "e5" * 16
OUR_NUMBER = "+15550101000"
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def twilio() -> TwilioSandbox:
    return TwilioSandbox({SID: TOKEN}, messaging_services={SERVICE_SID: OUR_NUMBER})


@pytest.fixture(scope="module")
def base_url(twilio):
    with serve(create_app(twilio)) as served:
        yield served.url


@pytest.fixture
def make_sms(monkeypatch, base_url):
    def make(*, token: str = TOKEN, url: str = base_url, **options) -> TwilioSMS:
        monkeypatch.setenv("TWILIO_TEST_TOKEN", token)
        config = TwilioConfig.model_validate({"type": "twilio", "account_sid": SID, "auth_token": "env:TWILIO_TEST_TOKEN",
                                              "base_url": url, **options})
        return TwilioSMS(config)
    return make


@pytest.fixture
def sms(make_sms) -> TwilioSMS:
    return make_sms()


@pytest.fixture
def caller() -> str:
    return f"+1555020{next(_numbers):04d}"


def test_sending_creates_the_message_at_twilio(sms, twilio, caller):
    # When
    sent = sms.send(OutboundSMS(to=caller, from_=OUR_NUMBER, body="Sorry we missed your call",
                                status_callback="https://textback.example/twilio/status"))
    # Then
    assert sent.status == "queued"
    [message] = twilio.messages_to(caller)
    assert message["sid"] == sent.provider_id
    assert (message["from"], message["body"]) == (OUR_NUMBER, "Sorry we missed your call")


def test_sending_through_a_configured_messaging_service_names_it(make_sms, twilio, caller):
    # Given
    sms = make_sms(messaging_service_sid=SERVICE_SID)
    # When
    sms.send(OutboundSMS(to=caller, from_=OUR_NUMBER, body="hi"))
    # Then
    assert twilio.messages_to(caller)[0]["messaging_service_sid"] == SERVICE_SID


def test_sending_the_same_message_twice_sends_two_because_twilio_has_no_idempotency_key(sms, twilio, caller):
    # Given
    message = OutboundSMS(to=caller, from_=OUR_NUMBER, body="hi")
    # When
    first, second = sms.send(message), sms.send(message)
    # Then deduplication is the caller's job
    assert first.provider_id != second.provider_id
    assert len(twilio.messages_to(caller)) == 2


def test_an_invalid_recipient_is_rejected_with_twilios_code(sms):
    with pytest.raises(TwilioRejected) as raised:
        sms.send(OutboundSMS(to="+1555", from_=OUR_NUMBER, body="hi"))
    assert (raised.value.code, raised.value.status) == (21211, 400)
    assert isinstance(raised.value, Rejected)


def test_an_opted_out_recipient_is_rejected_with_21610(sms, twilio, caller):
    # Given the caller texted STOP to our number
    twilio.record_inbound(account_sid=SID, from_=caller, to=OUR_NUMBER, body="STOP")
    # When / Then
    with pytest.raises(TwilioRejected) as raised:
        sms.send(OutboundSMS(to=caller, from_=OUR_NUMBER, body="Still interested?"))
    assert raised.value.code == UNSUBSCRIBED_RECIPIENT == 21610


def test_a_wrong_auth_token_is_auth_expired(make_sms, caller):
    sms = make_sms(token="revoked-token")
    with pytest.raises(AuthExpired) as raised:
        sms.send(OutboundSMS(to=caller, from_=OUR_NUMBER, body="hi"))
    assert raised.value.status == 401


def test_a_429_is_rate_limited_with_twilios_retry_after(sms, twilio, caller):
    # Given
    twilio.faults.fail_next("/2010-04-01", status=429, retry_after=12)
    # When / Then
    with pytest.raises(RateLimited) as raised:
        sms.send(OutboundSMS(to=caller, from_=OUR_NUMBER, body="hi"))
    assert raised.value.retry_after == 12.0


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_transient(sms, twilio, caller, status):
    twilio.faults.fail_next("/2010-04-01", status=status)
    with pytest.raises(Transient) as raised:
        sms.send(OutboundSMS(to=caller, from_=OUR_NUMBER, body="hi"))
    assert raised.value.status == status


@pytest.mark.parametrize("status, error", [(503, Transient), (429, RateLimited)])
def test_a_failed_lookup_of_sent_messages_is_a_connector_error(sms, twilio, caller, status, error):
    twilio.faults.fail_next("/2010-04-01", status=status, retry_after=3)
    with pytest.raises(error) as raised:
        sms.find_sent(OutboundSMS(to=caller, from_=OUR_NUMBER, body="hi"))
    assert raised.value.status == status


def test_an_unreachable_twilio_is_transient(make_sms, caller):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    sms = make_sms(url=f"http://127.0.0.1:{port}")
    with pytest.raises(Transient):
        sms.send(OutboundSMS(to=caller, from_=OUR_NUMBER, body="hi"))


def test_line_type_comes_from_lookup(sms, twilio, caller):
    # Given
    twilio.set_line_type("+15550109999", "landline")
    # Then
    assert sms.line_type(caller) == "mobile"
    assert sms.line_type("+15550109999") == "landline"


def test_line_type_of_an_invalid_number_is_none(sms):
    assert sms.line_type("+1555") is None


def test_a_rate_limited_lookup_is_rate_limited(sms, twilio, caller):
    twilio.faults.fail_next("/v2/PhoneNumbers", status=429, retry_after=2)
    with pytest.raises(RateLimited) as raised:
        sms.line_type(caller)
    assert raised.value.retry_after == 2.0


def test_production_requests_go_to_twilios_own_hosts(monkeypatch):
    # Given an httpx client that records where requests go
    seen: list[str] = []

    def twilio_cloud(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.scheme}://{request.url.host}{request.url.path}")
        if request.url.host == "lookups.twilio.com":
            return httpx.Response(200, json={"valid": True, "line_type_intelligence": {"type": "mobile"}})
        return httpx.Response(201, json={"sid": "SM" + "0" * 32, "status": "queued"})

    monkeypatch.setenv("TWILIO_TEST_TOKEN", TOKEN)
    config = TwilioConfig(type="twilio", account_sid=SID, auth_token="env:TWILIO_TEST_TOKEN")
    sms = TwilioSMS(config, http=httpx.Client(transport=httpx.MockTransport(twilio_cloud)))
    # When
    sms.send(OutboundSMS(to="+15550100001", from_=OUR_NUMBER, body="hi"))
    sms.line_type("+15550100001")
    # Then
    assert seen == [f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json",
                    "https://lookups.twilio.com/v2/PhoneNumbers/+15550100001"]


def test_the_config_refuses_an_inline_auth_token():
    with pytest.raises(ValidationError):
        TwilioConfig(type="twilio", account_sid=SID, auth_token="a-real-token-pasted-inline")


def test_the_connector_is_an_sms_provider_that_shares_its_signing_token(sms):
    assert isinstance(sms, SMSProvider)
    assert (TwilioSMS.role, TwilioSMS.config_model) == ("sms", TwilioConfig)
    assert sms.auth_token_for_signatures() == TOKEN


def test_a_problem_details_error_is_mapped_like_a_classic_one(monkeypatch):
    # Given Twilio answers in the RFC 9457 shape its newer APIs use
    def twilio_cloud(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"type": "https://www.twilio.com/docs/errors/21211", "title": "Invalid 'To'",
                                         "status": 400, "code": 21211, "detail": "The 'To' number is not valid."})

    monkeypatch.setenv("TWILIO_TEST_TOKEN", TOKEN)
    config = TwilioConfig(type="twilio", account_sid=SID, auth_token="env:TWILIO_TEST_TOKEN")
    sms = TwilioSMS(config, http=httpx.Client(transport=httpx.MockTransport(twilio_cloud)))
    # When / Then
    with pytest.raises(TwilioRejected) as raised:
        sms.send(OutboundSMS(to="+15550100001", from_=OUR_NUMBER, body="hi"))
    assert (raised.value.code, raised.value.status) == (21211, 400)

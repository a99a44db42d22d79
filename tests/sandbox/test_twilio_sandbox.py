"""The Twilio sandbox over real HTTP, and the sandbox phone against a small app that checks signatures."""

from __future__ import annotations

import email.utils
import itertools
import re
import time

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from twilio.request_validator import RequestValidator

from sandbox.phone import SandboxPhone
from sandbox.server import serve
from sandbox.twilio import TwilioSandbox, create_app

SID = "AC" + "a1" * 16
TOKEN = "sandbox-auth-token"
OTHER_SID = "AC" + "b2" * 16
SERVICE_SID = "MG" + "c3" * 16
OUR_NUMBER = "+15550001000"
SERVICE_NUMBER = "+15550002000"
_numbers = itertools.count(1)


class WebhookReceiver:
    """Stands in for our app: answers 403 to a bad Twilio signature, records the rest."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str]]] = []
        self.app = FastAPI()
        self.app.add_api_route("/{path:path}", self._receive, methods=["POST"])

    async def _receive(self, request: Request) -> Response:
        params = {key: str(value) for key, value in (await request.form()).items()}
        signature = request.headers.get("X-Twilio-Signature", "")
        if not RequestValidator(TOKEN).validate(str(request.url), params, signature):
            return Response(status_code=403)
        self.received.append((request.url.path, params))
        return Response("<Response/>", media_type="text/xml")

    def callbacks_for(self, message_sid: str) -> list[dict[str, str]]:
        return [p for path, p in self.received if path == "/status" and p["MessageSid"] == message_sid]


@pytest.fixture(scope="module")
def twilio() -> TwilioSandbox:
    return TwilioSandbox({SID: TOKEN, OTHER_SID: "other-token"}, messaging_services={SERVICE_SID: SERVICE_NUMBER})


@pytest.fixture(scope="module")
def api(twilio):
    with serve(create_app(twilio)) as served, httpx.Client(base_url=served.url, auth=(SID, TOKEN)) as client:
        yield client


@pytest.fixture(scope="module")
def receiver():
    receiver = WebhookReceiver()
    with serve(receiver.app) as served:
        receiver.url = served.url
        yield receiver


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=5) as client:
        yield client


@pytest.fixture
def caller() -> str:
    return f"+1555{next(_numbers):07d}"


@pytest.fixture
def phone(twilio, receiver, http) -> SandboxPhone:
    return SandboxPhone(app_url=receiver.url, auth_token=TOKEN, account_sid=SID, twilio=twilio, http=http)


def send(api: httpx.Client, **form: str) -> httpx.Response:
    return api.post(f"/2010-04-01/Accounts/{SID}/Messages.json", data=form)


# --- Messages ----------------------------------------------------------------------------

def test_a_created_message_is_answered_with_twilios_message_json(api, caller):
    # When
    answer = send(api, To=caller, From=OUR_NUMBER, Body="Sorry we missed you!")
    # Then
    assert answer.status_code == 201
    message = answer.json()
    assert re.fullmatch(r"SM[0-9a-f]{32}", message["sid"])
    assert (message["to"], message["from"], message["body"]) == (caller, OUR_NUMBER, "Sorry we missed you!")
    assert (message["status"], message["direction"], message["num_segments"]) == ("queued", "outbound-api", "1")
    assert email.utils.parsedate_to_datetime(message["date_created"]).tzinfo is not None
    assert message["uri"] == f"/2010-04-01/Accounts/{SID}/Messages/{message['sid']}.json"
    assert message["error_code"] is None


@pytest.mark.parametrize(("body", "segments"), [("x" * 160, "1"), ("x" * 161, "2"), ("é" * 160, "1"),
                                                 ("ą" * 70, "1"), ("ą" * 71, "2")])
def test_segments_are_counted_as_gsm7_or_ucs2(api, caller, body, segments):
    assert send(api, To=caller, From=OUR_NUMBER, Body=body).json()["num_segments"] == segments


def test_a_message_is_fetched_by_sid_and_an_unknown_sid_answers_20404(api, caller):
    # Given
    sid = send(api, To=caller, From=OUR_NUMBER, Body="hello").json()["sid"]
    # When
    found = api.get(f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json")
    missing = api.get(f"/2010-04-01/Accounts/{SID}/Messages/SM{'0' * 32}.json")
    # Then
    assert found.status_code == 200 and found.json()["body"] == "hello"
    assert missing.status_code == 404 and missing.json()["code"] == 20404


def test_listing_pages_newest_first_following_next_page_uri(api, caller):
    # Given five messages to one caller
    sids = [send(api, To=caller, From=OUR_NUMBER, Body=f"message {i}").json()["sid"] for i in range(5)]
    # When the list is read two at a time
    pages, uri = [], f"/2010-04-01/Accounts/{SID}/Messages.json?To=%2B{caller[1:]}&PageSize=2"
    while uri:
        page = api.get(uri).json()
        pages.append([m["sid"] for m in page["messages"]])
        uri = page["next_page_uri"]
    # Then every message comes once, newest first, in pages of two
    assert pages == [sids[4:2:-1], sids[2:0:-1], sids[0:1]]


def test_a_page_token_holds_its_place_when_newer_messages_arrive(api, caller):
    # Given the first page has been read
    sids = [send(api, To=caller, From=OUR_NUMBER, Body=f"m{i}").json()["sid"] for i in range(3)]
    first = api.get(f"/2010-04-01/Accounts/{SID}/Messages.json", params={"To": caller, "PageSize": 2}).json()
    # When a new message arrives before the next page is read
    send(api, To=caller, From=OUR_NUMBER, Body="newer")
    second = api.get(first["next_page_uri"]).json()
    # Then the next page continues where the first stopped
    assert [m["sid"] for m in second["messages"]] == [sids[0]]
    assert second["next_page_uri"] is None


def test_listing_filters_by_sender(api, caller):
    # Given
    send(api, To=caller, From=OUR_NUMBER, Body="one")
    send(api, To=caller, From="+15550009999", Body="two")
    # When
    page = api.get(f"/2010-04-01/Accounts/{SID}/Messages.json", params={"To": caller, "From": "+15550009999"})
    # Then
    assert [m["body"] for m in page.json()["messages"]] == ["two"]


@pytest.mark.parametrize("auth", [None, (SID, "wrong-token"), (OTHER_SID, "other-token")],
                         ids=["no credentials", "wrong token", "another account's credentials"])
def test_bad_credentials_answer_401_with_twilio_error_20003(api, caller, auth):
    # When
    answer = httpx.post(f"{api.base_url}/2010-04-01/Accounts/{SID}/Messages.json", auth=auth,
                        data={"To": caller, "From": OUR_NUMBER, "Body": "hi"})
    # Then
    assert answer.status_code == 401
    assert answer.json() == {"code": 20003, "message": "Authenticate",
                             "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}


@pytest.mark.parametrize(("form", "code"), [
    ({"From": OUR_NUMBER, "Body": "hi"}, 21604),
    ({"To": "+1555", "From": OUR_NUMBER, "Body": "hi"}, 21211),
    ({"To": "5551234567", "From": OUR_NUMBER, "Body": "hi"}, 21211),
    ({"To": "+15551230000", "From": OUR_NUMBER}, 21602),
    ({"To": "+15551230000", "Body": "hi"}, 21603),
    ({"To": "+15551230000", "MessagingServiceSid": "MG" + "0" * 32, "Body": "hi"}, 21705),
    ({"To": "+15551230000", "From": OUR_NUMBER, "Body": "x" * 1601}, 21617),
], ids=["missing To", "short To", "To not E.164", "missing Body", "no sender", "unknown service", "body too long"])
def test_invalid_messages_answer_400_with_the_twilio_code(api, form, code):
    # When
    answer = send(api, **form)
    # Then
    assert answer.status_code == 400
    assert answer.json()["code"] == code
    assert answer.json()["more_info"] == f"https://www.twilio.com/docs/errors/{code}"


def test_a_scripted_429_answers_twilio_20429_with_retry_after(api, twilio, caller):
    # Given
    twilio.faults.fail_next(f"/2010-04-01/Accounts/{SID}/Messages", status=429, retry_after=7)
    # When
    limited = send(api, To=caller, From=OUR_NUMBER, Body="hi")
    # Then the fault is used once
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert limited.json()["code"] == 20429
    assert send(api, To=caller, From=OUR_NUMBER, Body="hi").status_code == 201


def test_a_scripted_503_answers_a_server_error(api, twilio, caller):
    twilio.faults.fail_next("/2010-04-01", status=503)
    answer = send(api, To=caller, From=OUR_NUMBER, Body="hi")
    assert (answer.status_code, answer.json()["code"]) == (503, 20503)


def test_a_messaging_service_send_is_accepted_then_gets_the_services_sender(api, twilio, caller, http):
    # When
    created = send(api, To=caller, MessagingServiceSid=SERVICE_SID, Body="hi").json()
    twilio.deliver_status_callbacks(http)
    # Then
    assert (created["status"], created["from"], created["num_segments"]) == ("accepted", None, "0")
    assert twilio.messages_to(caller)[-1]["from"] == SERVICE_NUMBER


# --- status callbacks --------------------------------------------------------------------

def test_status_callbacks_are_signed_and_walk_queued_sent_delivered(api, twilio, receiver, http, caller):
    # Given
    sid = send(api, To=caller, From=OUR_NUMBER, Body="hi", StatusCallback=f"{receiver.url}/status").json()["sid"]
    # When
    answers = twilio.deliver_status_callbacks(http)
    # Then our app accepted every signature and heard each status in order
    assert answers and all(a.status_code == 200 for a in answers)
    callbacks = receiver.callbacks_for(sid)
    assert [c["MessageStatus"] for c in callbacks] == ["queued", "sent", "delivered"]
    assert {k: callbacks[-1][k] for k in ("AccountSid", "From", "To")} == {"AccountSid": SID, "From": OUR_NUMBER,
                                                                            "To": caller}
    assert "ErrorCode" not in callbacks[-1]
    fetched = api.get(f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json").json()
    assert fetched["status"] == "delivered" and fetched["date_sent"] is not None


def test_a_message_stays_queued_until_callbacks_are_delivered(api, twilio, caller, http):
    # Given
    sid = send(api, To=caller, From=OUR_NUMBER, Body="hi").json()["sid"]
    # Then
    assert twilio.messages_to(caller)[0]["status"] == "queued"
    twilio.deliver_status_callbacks(http)
    assert api.get(f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json").json()["status"] == "delivered"


def test_delivering_callbacks_again_posts_nothing_new(api, twilio, receiver, http, caller):
    # Given
    sid = send(api, To=caller, From=OUR_NUMBER, Body="hi", StatusCallback=f"{receiver.url}/status").json()["sid"]
    twilio.deliver_status_callbacks(http)
    # When
    again = twilio.deliver_status_callbacks(http)
    # Then
    assert again == []
    assert len(receiver.callbacks_for(sid)) == 3


@pytest.mark.parametrize(("seed", "error_code"), [
    (lambda twilio, number: twilio.set_undeliverable(number, error_code=30005), 30005),
    (lambda twilio, number: twilio.set_undeliverable(number), 30003),
    (lambda twilio, number: twilio.set_line_type(number, "landline"), 30006),
], ids=["unknown handset", "unreachable by default", "landline"])
def test_an_undeliverable_number_ends_undelivered_with_its_error_code(api, twilio, receiver, http, caller,
                                                                     seed, error_code):
    # Given
    seed(twilio, caller)
    sid = send(api, To=caller, From=OUR_NUMBER, Body="hi", StatusCallback=f"{receiver.url}/status").json()["sid"]
    # When
    twilio.deliver_status_callbacks(http)
    # Then
    last = receiver.callbacks_for(sid)[-1]
    assert (last["MessageStatus"], last["ErrorCode"]) == ("undelivered", str(error_code))
    message = twilio.messages_to(caller)[0]
    assert (message["status"], message["error_code"]) == ("undelivered", error_code)


def test_auto_delivery_posts_callbacks_from_a_background_thread(receiver, caller):
    # Given
    twilio = TwilioSandbox({SID: TOKEN}, auto_deliver=True)
    try:
        with serve(create_app(twilio)) as served:
            # When
            sid = httpx.post(f"{served.url}/2010-04-01/Accounts/{SID}/Messages.json", auth=(SID, TOKEN),
                             data={"To": caller, "From": OUR_NUMBER, "Body": "hi",
                                   "StatusCallback": f"{receiver.url}/status"}).json()["sid"]
            deadline = time.monotonic() + 5
            while len(receiver.callbacks_for(sid)) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        twilio.close()
    # Then
    assert [c["MessageStatus"] for c in receiver.callbacks_for(sid)] == ["queued", "sent", "delivered"]


# --- Lookup v2 ---------------------------------------------------------------------------

def test_lookup_reports_mobile_unless_told_otherwise(api, twilio, caller):
    # Given
    twilio.set_line_type("+15550003000", "landline")
    # When
    mobile = api.get(f"/v2/PhoneNumbers/{caller}", params={"Fields": "line_type_intelligence"}).json()
    landline = api.get("/v2/PhoneNumbers/%2B15550003000", params={"Fields": "line_type_intelligence"}).json()
    # Then
    assert (mobile["valid"], mobile["phone_number"]) == (True, caller)
    assert mobile["line_type_intelligence"]["type"] == "mobile"
    assert landline["line_type_intelligence"]["type"] == "landline"


def test_lookup_of_an_invalid_number_answers_valid_false_without_line_type(api):
    found = api.get("/v2/PhoneNumbers/+1555", params={"Fields": "line_type_intelligence"}).json()
    assert (found["valid"], found["validation_errors"], found["line_type_intelligence"]) == (False, ["TOO_SHORT"], None)


def test_lookup_needs_credentials(api):
    assert httpx.get(f"{api.base_url}/v2/PhoneNumbers/+15551230000").status_code == 401


# --- the sandbox phone -------------------------------------------------------------------

def test_a_ring_posts_a_signed_inbound_call_to_our_voice_webhook(phone, receiver, caller):
    # When
    answer = phone.ring(call_sid="CA" + "1" * 32, caller=caller, to=OUR_NUMBER)
    # Then
    assert answer.status_code == 200
    path, params = receiver.received[-1]
    assert path == "/twilio/voice"
    assert params | {"CallSid": "CA" + "1" * 32, "AccountSid": SID, "From": caller, "To": OUR_NUMBER,
                     "CallStatus": "ringing", "Direction": "inbound"} == params


def test_a_dial_outcome_posts_the_dial_status_and_answered_by(phone, receiver, caller):
    # When
    answer = phone.dial_complete(call_sid="CA" + "2" * 32, caller=caller, to=OUR_NUMBER, dial_status="completed",
                                 duration=12, answered_by="machine_start")
    # Then
    assert answer.status_code == 200
    path, params = receiver.received[-1]
    assert path == "/twilio/voice/dial-complete"
    assert params | {"DialCallStatus": "completed", "DialCallDuration": "12", "AnsweredBy": "machine_start"} == params
    assert re.fullmatch(r"CA[0-9a-f]{32}", params["DialCallSid"])


def test_a_dial_without_answer_sends_no_answered_by(phone, receiver, caller):
    phone.dial_complete(call_sid="CA" + "3" * 32, caller=caller, to=OUR_NUMBER, dial_status="no-answer")
    _, params = receiver.received[-1]
    assert params["DialCallStatus"] == "no-answer" and "AnsweredBy" not in params


def test_a_text_posts_a_signed_sms_and_is_recorded_as_inbound(phone, twilio, receiver, caller):
    # When
    answer = phone.text(caller=caller, to=OUR_NUMBER, body="Is Friday free?")
    # Then
    assert answer.status_code == 200
    path, params = receiver.received[-1]
    assert path == "/twilio/sms"
    assert re.fullmatch(r"SM[0-9a-f]{32}", params["MessageSid"])
    assert params | {"From": caller, "To": OUR_NUMBER, "Body": "Is Friday free?", "NumMedia": "0"} == params
    inbound = twilio.messages_to(OUR_NUMBER)[-1]
    assert (inbound["sid"], inbound["direction"], inbound["status"]) == (params["MessageSid"], "inbound", "received")


def test_a_retried_text_with_the_same_sid_is_recorded_once(phone, twilio, caller):
    # When
    phone.text(caller=caller, to=OUR_NUMBER, body="hello", message_sid="SM" + "4" * 32)
    phone.text(caller=caller, to=OUR_NUMBER, body="hello", message_sid="SM" + "4" * 32)
    # Then
    assert [m["sid"] for m in twilio.all_messages()].count("SM" + "4" * 32) == 1


@pytest.mark.parametrize("keyword", ["STOP", "stop", " Unsubscribe ", "QUIT", "OPTOUT"])
def test_a_stop_keyword_opts_the_caller_out_of_that_number(phone, api, caller, keyword):
    # When
    phone.text(caller=caller, to=OUR_NUMBER, body=keyword)
    # Then that number can no longer text the caller, another can
    refused = send(api, To=caller, From=OUR_NUMBER, Body="Still there?")
    assert (refused.status_code, refused.json()["code"]) == (400, 21610)
    assert send(api, To=caller, From="+15550004000", Body="hi").status_code == 201


def test_start_resubscribes_an_opted_out_caller(phone, api, twilio, caller):
    # Given
    phone.text(caller=caller, to=OUR_NUMBER, body="STOP")
    # When
    phone.text(caller=caller, to=OUR_NUMBER, body="START")
    # Then
    assert not twilio.is_opted_out(sender=OUR_NUMBER, recipient=caller)
    assert send(api, To=caller, From=OUR_NUMBER, Body="Welcome back").status_code == 201


def test_an_opt_out_covers_sends_through_a_messaging_service_using_that_number(phone, api, caller):
    phone.text(caller=caller, to=SERVICE_NUMBER, body="STOP")
    refused = send(api, To=caller, MessagingServiceSid=SERVICE_SID, Body="hi")
    assert refused.json()["code"] == 21610


def test_a_phone_with_the_wrong_token_is_refused_by_a_validating_app(twilio, receiver, http, caller):
    # Given
    impostor = SandboxPhone(app_url=receiver.url, auth_token="not-the-token", account_sid=SID, twilio=twilio, http=http)
    # When
    answer = impostor.signed_post("/twilio/voice", {"CallSid": "CA" + "5" * 32, "From": caller, "To": OUR_NUMBER})
    # Then
    assert answer.status_code == 403

"""Scripted faults (sandbox.common) in every emulator, seen through the real connectors and SDKs.

Each emulator answers late (`delay_next`) and drops connections (`drop_next`); a client with a
shorter timeout, or a dropped connection, is a Transient failure of the connector. Error answers
(`fail_next`) and expired or revoked credentials are covered next to each connector's own tests;
the two credentials added here (Twilio's rotated auth token, a deleted OpenAI key) are tested here.
"""

from __future__ import annotations

import itertools
import json
import time
from datetime import datetime, timedelta, timezone

import httplib2
import httpx
import pytest
from pydantic import SecretStr

from connectors.base import Ambiguous, AuthExpired, ConnectorError, Transient
from connectors.chat_completions import ChatUnavailable, HttpChatCompletions
from connectors.clio import ClioConfig, ClioCRM
from connectors.google_calendar import GoogleCalendar, GoogleCalendarConfig
from connectors.outlook import OutlookCalendar, OutlookConfig
from connectors.twilio import TwilioConfig, TwilioSMS
from connectors.webhook import WebhookConfig, WebhookCRM
from core.engine.interpreters.settings import InterpreterSettings
from core.models import ContactRecord, OutboundSMS
from sandbox import clio, google_calendar, llm, twilio, webhook_receiver
from sandbox.graph_stack import MicrosoftStack
from sandbox.server import serve

SID, TOKEN, OUR_NUMBER = "AC" + "f6" * 16, "faults-auth-token", "+15550101999"
MONDAY = datetime(2030, 6, 3, tzinfo=timezone.utc)
_numbers = itertools.count(1)


def caller() -> str:
    return f"+1555030{next(_numbers):04d}"


# --- Twilio, and what every emulator shares ------------------------------------------------------

@pytest.fixture(scope="module")
def twilio_sandbox():
    sandbox = twilio.TwilioSandbox({SID: TOKEN})
    with serve(twilio.create_app(sandbox)) as served:
        yield sandbox, served.url


def sms(url: str, *, token: str = TOKEN, timeout: float = 5) -> TwilioSMS:
    config = TwilioConfig(type="twilio", account_sid=SID, auth_token=SecretStr(token), base_url=url)
    return TwilioSMS(config, http=httpx.Client(timeout=timeout))


def text(to: str) -> OutboundSMS:
    return OutboundSMS(to=to, from_=OUR_NUMBER, body="Sorry we missed your call")


def test_a_dropped_connection_gets_no_answer_at_all(twilio_sandbox):
    # Given
    sandbox, url = twilio_sandbox
    sandbox.faults.drop_next("/2010-04-01")
    # When / Then: no status line, no headers
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        httpx.get(f"{url}/2010-04-01/Accounts/{SID}/Messages.json", auth=(SID, TOKEN))


def test_a_dropped_send_is_ambiguous_so_the_sender_looks_before_it_sends_again(twilio_sandbox):
    # Given
    sandbox, url = twilio_sandbox
    to = caller()
    sandbox.faults.drop_next("/2010-04-01")
    # When / Then: no answer after the request went out may mean it was taken; here Twilio never saw it
    with pytest.raises(Ambiguous, match="Twilio gave no answer"):
        sms(url).send(text(to))
    assert sandbox.messages_to(to) == []
    assert sms(url).find_sent(text(to), known_ids=frozenset()) is None


def test_a_send_dropped_after_twilio_took_it_is_ambiguous_and_found_at_twilio(twilio_sandbox):
    # Given: Twilio handles the request, then the connection closes before the answer
    sandbox, url = twilio_sandbox
    to = caller()
    sandbox.faults.drop_after_next("/2010-04-01")
    # When / Then: the sender cannot tell, but the message is at Twilio, so the retry finds it instead of resending
    with pytest.raises(Ambiguous, match="Twilio gave no answer"):
        sms(url).send(text(to))
    [taken] = sandbox.messages_to(to)
    assert sms(url).find_sent(text(to), known_ids=frozenset()).provider_id == taken["sid"]


def test_a_random_share_of_faults_fails_about_that_share_of_requests_and_counts_them(twilio_sandbox):
    # Given: a quarter of requests fail in some way, drawn from a fixed seed
    sandbox, url = twilio_sandbox
    sandbox.faults.random_share(0.25, seed=7, delay_seconds=0.01)
    outcomes = []
    try:
        with httpx.Client(auth=(SID, TOKEN), timeout=5) as http:
            for _ in range(200):
                try:
                    outcomes.append(http.get(f"{url}/2010-04-01/Accounts/{SID}/Messages.json").status_code)
                except httpx.RemoteProtocolError:
                    outcomes.append("dropped")
    finally:
        sandbox.faults.clear()
    # Then: roughly that share failed (status faults and drops; late answers still succeed), each one counted
    failed = sum(1 for o in outcomes if o != 200)
    served = sum(sandbox.faults.served.values())
    assert 10 <= failed <= 70 and served >= failed
    assert {o for o in outcomes if o != 200} <= {429, 500, 502, 503, "dropped"}
    assert httpx.get(f"{url}/2010-04-01/Accounts/{SID}/Messages.json", auth=(SID, TOKEN)).status_code == 200


def test_a_send_answered_too_late_is_found_at_twilio_instead_of_sent_again(twilio_sandbox):
    # Given: Twilio takes the message but answers after the client gave up
    sandbox, url = twilio_sandbox
    to = caller()
    sandbox.faults.delay_next("/2010-04-01", seconds=1.0)
    with pytest.raises(Ambiguous):
        sms(url, timeout=0.3).send(text(to))
    # When
    found = sms(url).find_sent(text(to), known_ids=frozenset())
    # Then: the one message Twilio has, and not a message we already recorded
    [at_twilio] = sandbox.messages_to(to)
    assert found is not None and found.provider_id == at_twilio["sid"]
    assert sms(url).find_sent(text(to), known_ids=frozenset({at_twilio["sid"]})) is None


def test_a_late_answer_times_the_connector_out_although_twilio_sent_the_text(twilio_sandbox):
    # Given
    sandbox, url = twilio_sandbox
    to = caller()
    sandbox.faults.delay_next("/2010-04-01", seconds=1.0)
    # When / Then: the ambiguous failure a retry must survive
    with pytest.raises(Transient, match="Timeout"):
        sms(url, timeout=0.3).send(text(to))
    assert len(sandbox.messages_to(to)) == 1


def test_a_late_answer_within_the_timeout_is_an_ordinary_answer(twilio_sandbox):
    # Given
    sandbox, url = twilio_sandbox
    sandbox.faults.delay_next("/2010-04-01", seconds=0.3)
    # When
    started = time.monotonic()
    sent = sms(url).send(text(caller()))
    # Then
    assert sent.provider_id.startswith("SM") and time.monotonic() - started >= 0.3


def test_faults_of_every_kind_come_in_the_order_they_were_scripted(twilio_sandbox):
    # Given
    sandbox, url = twilio_sandbox
    sandbox.faults.fail_next("/2010-04-01", status=503)
    sandbox.faults.drop_next("/2010-04-01")
    sandbox.faults.fail_next("/2010-04-01", status=429, retry_after=4)
    connector = sms(url)

    def outcome() -> str:
        try:
            return connector.send(text(caller())).status
        except ConnectorError as exc:
            return f"{type(exc).__name__} {exc.status}"

    # When
    outcomes = [outcome() for _ in range(4)]
    # Then
    assert outcomes == ["Ambiguous 503", "Ambiguous None", "RateLimited 429", "queued"]  # Ambiguous is Transient


def test_a_rotated_auth_token_is_auth_expired(twilio_sandbox):
    # Given
    sandbox, url = twilio_sandbox
    account = "AC" + "a7" * 16
    sandbox.accounts[account] = "first-token"
    config = TwilioConfig(type="twilio", account_sid=account, auth_token=SecretStr("first-token"), base_url=url)
    # When
    new_token = sandbox.rotate_auth_token(account)
    # Then
    with pytest.raises(AuthExpired):
        TwilioSMS(config).send(text(caller()))
    renewed = config.model_copy(update={"auth_token": SecretStr(new_token)})
    assert TwilioSMS(renewed).send(text(caller())).status == "queued"


# --- Google Calendar ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def google():
    sandbox = google_calendar.GoogleCalendarSandbox()
    with serve(google_calendar.create_app(sandbox)) as served:
        user = sandbox.oauth.new_authorized_user(token_uri=served.url + "/token", email="staff@clinic.example")
        sandbox.add_calendar("staff@clinic.example", owners=[])
        config = GoogleCalendarConfig(type="google", calendars=["staff@clinic.example"], base_url=served.url,
                                      credentials=SecretStr(json.dumps(user)))
        yield sandbox, config


def free_busy(calendar) -> dict:
    return calendar.free_busy(calendars=["staff@clinic.example"], start=MONDAY, end=MONDAY + timedelta(hours=8))


def test_google_connections_dropped_twice_are_transient(google):
    # Given: httplib2 reconnects once by itself when a connection closes without an answer
    sandbox, config = google
    calendar = GoogleCalendar(config, http=httplib2.Http(timeout=5))
    free_busy(calendar)
    sandbox.faults.drop_next("/calendar/v3/freeBusy", times=2)
    # When / Then
    with pytest.raises(Transient, match="RemoteDisconnected"):
        free_busy(calendar)
    assert free_busy(calendar) == {"staff@clinic.example": []}


def test_a_late_google_answer_is_transient(google):
    # Given
    sandbox, config = google
    calendar = GoogleCalendar(config, http=httplib2.Http(timeout=0.3))
    free_busy(calendar)
    sandbox.faults.delay_next("/calendar/v3/freeBusy", seconds=1.0)
    # When / Then
    with pytest.raises(Transient, match="timed out"):
        free_busy(calendar)


# --- Clio ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clio_sandbox():
    sandbox = clio.ClioSandbox(rate_limit=100_000)
    with serve(clio.create_app(sandbox)) as served:
        yield sandbox, served.url


def clio_crm(sandbox: clio.ClioSandbox, url: str, *, timeout: float = 5) -> ClioCRM:
    config = ClioConfig(type="clio", access_token=SecretStr(sandbox.issue_token()), base_url=url)
    return ClioCRM(config, http=httpx.Client(timeout=timeout))


@pytest.mark.parametrize("script", ["drop", "delay"])
def test_a_dropped_or_late_clio_answer_is_transient(clio_sandbox, script):
    # Given
    sandbox, url = clio_sandbox
    crm = clio_crm(sandbox, url, timeout=0.3)
    if script == "drop":
        sandbox.faults.drop_next("/api/v4/contacts")
    else:
        sandbox.faults.delay_next("/api/v4/contacts", seconds=1.0)
    # When / Then
    with pytest.raises(Transient):
        crm.upsert_contact(ContactRecord(phone=caller(), first_name="Dana"))


# --- Microsoft identity and Graph ---------------------------------------------------------------

@pytest.fixture(scope="module")
def ms():
    with MicrosoftStack.start() as stack:
        yield stack


def outlook(ms: MicrosoftStack, *, timeout: float = 5) -> tuple[OutlookCalendar, str]:
    app = ms.identity.new_app()
    mailbox = f"staff{next(_numbers)}@contoso.com"
    ms.graph.add_mailbox(app.tenant_id, mailbox)
    config = OutlookConfig(type="outlook", tenant_id=app.tenant_id, client_id=app.client_id,
                           client_secret=SecretStr(app.client_secret), calendars=[mailbox], **ms.connector_urls())
    return OutlookCalendar(config, http=httpx.Client(timeout=timeout, verify=ms.ca.ssl_context())), mailbox


@pytest.mark.parametrize("script", ["drop", "delay"])
def test_a_dropped_or_late_graph_answer_is_transient(ms, script):
    # Given: a token already held, so only Graph is called
    calendar, mailbox = outlook(ms, timeout=0.3)
    calendar.free_busy(calendars=[mailbox], start=MONDAY, end=MONDAY + timedelta(hours=8))
    if script == "drop":
        ms.graph.faults.drop_next("/v1.0/users/")
    else:
        ms.graph.faults.delay_next("/v1.0/users/", seconds=1.0)
    # When / Then
    with pytest.raises(Transient):
        calendar.free_busy(calendars=[mailbox], start=MONDAY, end=MONDAY + timedelta(hours=8))


def test_a_dropped_token_request_is_transient(ms):
    # Given: msal, not the connector, talks to the identity platform (with no timeout of its own)
    calendar, mailbox = outlook(ms)
    ms.identity.faults.drop_next("/")
    # When / Then
    with pytest.raises(Transient):
        calendar.free_busy(calendars=[mailbox], start=MONDAY, end=MONDAY + timedelta(hours=8))


def test_a_late_token_endpoint_times_a_client_out(ms):
    # Given
    app = ms.identity.new_app()
    ms.identity.faults.delay_next(f"/{app.tenant_id}/oauth2/v2.0/token", seconds=1.0)
    form = {"grant_type": "client_credentials", "client_id": app.client_id, "client_secret": app.client_secret,
            "scope": ms.api.url + "/.default"}
    # When / Then
    with httpx.Client(verify=ms.ca.ssl_context(), timeout=0.3) as http, pytest.raises(httpx.ReadTimeout):
        http.post(f"{ms.login.url}/{app.tenant_id}/oauth2/v2.0/token", data=form)


# --- the OpenAI-compatible LLM ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def chat():
    sandbox = llm.LLMSandbox(api_keys={"sk-faults"}, models={"sandbox-model"})
    with serve(llm.create_app(sandbox)) as served:
        settings = InterpreterSettings(type="llm", base_url=served.url + "/v1", model="sandbox-model",
                                       api_key=SecretStr("sk-faults"), timeout_seconds=0.3)
        with httpx.Client() as http:
            yield sandbox, HttpChatCompletions(settings, http=http)


BODY = {"model": "sandbox-model", "messages": [{"role": "user", "content": "hello"}]}


@pytest.mark.parametrize("script", ["drop", "delay"])
def test_a_dropped_or_late_completion_is_unavailable(chat, script):
    # Given
    sandbox, client = chat
    if script == "drop":
        sandbox.faults.drop_next("/v1/chat/completions")
    else:
        sandbox.faults.delay_next("/v1/chat/completions", seconds=1.0)
    # When / Then
    with pytest.raises(ChatUnavailable):
        client.create(body=BODY, timeout=0.3)
    assert client.create(body=BODY, timeout=0.3)["object"] == "chat.completion"


def test_a_revoked_api_key_is_refused(chat):
    # Given
    sandbox, client = chat
    sandbox.revoke_api_key("sk-faults")
    try:
        # When / Then
        with pytest.raises(ChatUnavailable, match="HTTP 401"):
            client.create(body=BODY, timeout=0.3)
    finally:
        sandbox.api_keys.add("sk-faults")


# --- the webhook receiver --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def receiver():
    sandbox = webhook_receiver.WebhookReceiver("faults-secret-0123456789")
    with serve(webhook_receiver.create_app(sandbox)) as served:
        yield sandbox, served.url + webhook_receiver.PATH


@pytest.mark.parametrize("script", ["drop", "delay"])
def test_a_dropped_or_late_webhook_delivery_is_transient(receiver, script):
    # Given
    sandbox, url = receiver
    crm = WebhookCRM(WebhookConfig(type="webhook", url=url, secret=SecretStr(sandbox.secret), timeout_seconds=0.3))
    if script == "drop":
        sandbox.faults.drop_next(webhook_receiver.PATH)
    else:
        sandbox.faults.delay_next(webhook_receiver.PATH, seconds=1.0)
    phone = caller()
    # When / Then
    with pytest.raises(Transient):
        crm.upsert_contact(ContactRecord(phone=phone))
    # Then: a late answer was still received and recorded; a dropped one never arrived
    recorded = [record for record in sandbox.records("contact") if record["phone"] == phone]
    assert len(recorded) == (1 if script == "delay" else 0)

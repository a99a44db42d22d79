"""One harness per connector for the contract suites: the served emulator, a built connector, small adapters.

Adding a connector to a suite is one entry in CRM_HARNESSES or CALENDAR_HARNESSES: a function
that takes the pytest request (for its emulator fixture and finalizers) and returns a harness.

Timeouts: the webhook receiver can answer late (`stall_next`); the other emulators cannot, so
their harnesses point a connector at a loopback port that never answers:
- Google, Clio and Outlook: the connector takes an injected client with a 0.3 s timeout
  (`httplib2.Http`, `httpx.Client`), and the port completes the TCP handshake but never
  answers (not even the TLS handshake, for Outlook), so the call times out;
- HubSpot: the connector passes its own (5 s connect, 30 s read) timeout on every SDK call, which
  an injected client cannot shorten, so the port's listen queue is kept full and connecting
  times out after the 5 s.
"""

from __future__ import annotations

import itertools
import json
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import httplib2
import httpx
import pytest
from pydantic import SecretStr

from connectors.base import CalendarConnector, CRMConnector
from connectors.clio import ClioConfig, ClioCRM
from connectors.google_calendar import GoogleCalendar, GoogleCalendarConfig
from connectors.hubspot import HubSpotConfig, HubSpotCRM
from connectors.outlook import OutlookCalendar, OutlookConfig
from connectors.webhook import WebhookConfig, WebhookCRM
from sandbox.clio import ClioSandbox
from sandbox.clio import create_app as clio_app
from sandbox.google_calendar import GoogleCalendarSandbox
from sandbox.google_calendar import create_app as google_app
from sandbox.graph_stack import MicrosoftStack
from sandbox.hubspot import HubSpotSandbox
from sandbox.hubspot import create_app as hubspot_app
from sandbox.server import serve
from sandbox.webhook_receiver import PATH, WebhookReceiver
from sandbox.webhook_receiver import create_app as receiver_app

_ids = itertools.count(1)


@dataclass
class CRMHarness:
    connector: CRMConnector
    fail_next: Callable[..., None]  # fail_next(status, retry_after=None): the vendor answers the next contact call so
    revoke: Callable[[], None]  # the credentials `connector` uses stop working
    count: Callable[[str], int]  # live records of a kind: contact, conversation, opportunity, booking
    timing_out: Callable[[], CRMConnector]  # a connector whose next call gets no answer in time
    known_gaps: dict[str, str] = field(default_factory=dict)  # test name -> why this connector fails it today


@dataclass
class CalendarHarness:
    connector: CalendarConnector
    calendar_id: str  # a fresh calendar the connector may read and write
    fail_next: Callable[..., None]  # fail_next(status, retry_after=None): the vendor answers the next call so
    revoke: Callable[[], None]
    event_ids: Callable[[], list[str]]  # the ids of the calendar's live (not cancelled) events
    timing_out: Callable[[], CalendarConnector]


# --- ports that never answer -----------------------------------------------------------------

def silent_url(request: pytest.FixtureRequest) -> str:
    """A loopback URL whose port completes the handshake (the kernel queues it) and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    request.addfinalizer(listener.close)
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def unconnectable_url(request: pytest.FixtureRequest) -> str:
    """A loopback URL whose listen queue is full, so connecting hangs until the client's connect timeout."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    held = [listener]
    request.addfinalizer(lambda: [each.close() for each in held])
    while True:
        filler = socket.socket()
        filler.settimeout(0.2)
        held.append(filler)
        try:
            filler.connect(listener.getsockname())
        except OSError:
            return f"http://127.0.0.1:{listener.getsockname()[1]}"
        if len(held) > 16:
            pytest.skip("this kernel completes connections beyond the listen backlog")


# --- CRM harnesses ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hubspot_served():
    sandbox = HubSpotSandbox(set())
    with serve(hubspot_app(sandbox)) as served:
        yield sandbox, served.url


def hubspot(request: pytest.FixtureRequest) -> CRMHarness:
    sandbox, url = request.getfixturevalue("hubspot_served")
    token = "pat-na1-" + secrets.token_hex(8)
    sandbox.tokens.add(token)
    kinds = {"contact": "contacts", "conversation": "notes", "opportunity": "deals", "booking": "meetings"}

    def connector(base_url: str) -> HubSpotCRM:
        return HubSpotCRM(HubSpotConfig(type="hubspot", access_token=SecretStr(token), base_url=base_url))

    return CRMHarness(
        connector=connector(url),
        fail_next=lambda status, retry_after=None: sandbox.faults.fail_next(
            "/crm/v3/objects/contacts", status=status, retry_after=retry_after),
        revoke=lambda: sandbox.tokens.discard(token),
        count=lambda kind: len(sandbox.objects(kinds[kind])),
        timing_out=lambda: connector(unconnectable_url(request)),
    )


@pytest.fixture(scope="module")
def webhook_served():
    receiver = WebhookReceiver("contract-secret-" + secrets.token_hex(8))
    with serve(receiver_app(receiver)) as served:
        yield receiver, served.url + PATH


def webhook(request: pytest.FixtureRequest) -> CRMHarness:
    receiver, url = request.getfixturevalue("webhook_served")
    secret = receiver.secret

    def connector(timeout: float = 5) -> WebhookCRM:
        return WebhookCRM(WebhookConfig(type="webhook", url=url, secret=SecretStr(secret), timeout_seconds=timeout))

    def revoke() -> None:
        receiver.secret = "rotated-by-the-receiver-" + secrets.token_hex(8)
        request.addfinalizer(lambda: setattr(receiver, "secret", secret))

    def timing_out() -> WebhookCRM:
        receiver.stall_next(1.0)
        return connector(timeout=0.3)

    return CRMHarness(
        connector=connector(),
        fail_next=lambda status, retry_after=None: receiver.faults.fail_next(PATH, status=status,
                                                                              retry_after=retry_after),
        revoke=revoke,
        count=lambda kind: len(receiver.records(kind)),
        timing_out=timing_out,
    )


@pytest.fixture(scope="module")
def clio_served():
    sandbox = ClioSandbox(rate_limit=100_000)
    with serve(clio_app(sandbox)) as served:
        yield sandbox, served.url


def clio(request: pytest.FixtureRequest) -> CRMHarness:
    sandbox, url = request.getfixturevalue("clio_served")
    token = sandbox.issue_token()
    kinds = {"contact": "contacts", "conversation": "communications", "opportunity": "matters",
             "booking": "calendar_entries"}

    def connector(base_url: str, *, timeout: float = 5) -> ClioCRM:
        return ClioCRM(ClioConfig(type="clio", access_token=SecretStr(token), base_url=base_url),
                       http=httpx.Client(timeout=timeout))

    return CRMHarness(
        connector=connector(url),
        fail_next=lambda status, retry_after=None: sandbox.faults.fail_next(
            "/api/v4/contacts", status=status, retry_after=retry_after),
        revoke=lambda: sandbox.oauth.deauthorize(token),
        count=lambda kind: len(sandbox.records(kinds[kind])),
        timing_out=lambda: connector(silent_url(request), timeout=0.3),
    )


CRM_HARNESSES: dict[str, Callable[[pytest.FixtureRequest], CRMHarness]] = {
    "clio": clio,
    "hubspot": hubspot,
    "webhook": webhook,
}


@pytest.fixture(params=sorted(CRM_HARNESSES))
def crm(request) -> CRMHarness:
    harness = CRM_HARNESSES[request.param](request)
    if reason := harness.known_gaps.get(request.node.originalname):
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
    return harness


# --- calendar harnesses ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def google_served():
    sandbox = GoogleCalendarSandbox()
    with serve(google_app(sandbox)) as served:
        yield sandbox, served.url


def google(request: pytest.FixtureRequest) -> CalendarHarness:
    sandbox, url = request.getfixturevalue("google_served")
    calendar_id = f"staff{next(_ids)}@clinic.example"
    sandbox.add_calendar(calendar_id, owners=[])
    user = sandbox.oauth.new_authorized_user(token_uri=url + "/token", email=calendar_id)

    def connector(base_url: str, *, timeout: float = 5) -> GoogleCalendar:
        config = GoogleCalendarConfig(type="google", calendars=[calendar_id], base_url=base_url,
                                      credentials=SecretStr(json.dumps(user)))
        return GoogleCalendar(config, http=httplib2.Http(timeout=timeout))

    return CalendarHarness(
        connector=connector(url),
        calendar_id=calendar_id,
        fail_next=lambda status, retry_after=None: sandbox.faults.fail_next(
            "/calendar/v3/", status=status, retry_after=retry_after),
        revoke=lambda: sandbox.oauth.revoke(user["refresh_token"]),
        event_ids=lambda: [e["id"] for e in sandbox.events(calendar_id) if e["status"] != "cancelled"],
        timing_out=lambda: connector(silent_url(request), timeout=0.3),
    )


@pytest.fixture(scope="module")
def microsoft_served():
    with MicrosoftStack.start() as stack:
        yield stack


def outlook(request: pytest.FixtureRequest) -> CalendarHarness:
    ms = request.getfixturevalue("microsoft_served")
    app = ms.identity.new_app()
    mailbox = f"staff{next(_ids)}@contoso.com"
    ms.graph.add_mailbox(app.tenant_id, mailbox)

    def connector(base_url: str, *, timeout: float = 5) -> OutlookCalendar:
        config = OutlookConfig(type="outlook", tenant_id=app.tenant_id, client_id=app.client_id,
                               client_secret=SecretStr(app.client_secret), calendars=[mailbox],
                               **{**ms.connector_urls(), "base_url": base_url})
        return OutlookCalendar(config, http=httpx.Client(timeout=timeout, verify=ms.ca.ssl_context()))

    def revoke() -> None:
        ms.identity.expire_client_secret(app.client_id)
        ms.identity.expire_access_tokens()

    def timing_out() -> OutlookCalendar:
        silent = silent_url(request).replace("http://", "https://")
        ms.identity.add_resource(silent)
        return connector(silent, timeout=0.3)

    return CalendarHarness(
        connector=connector(ms.api.url),
        calendar_id=mailbox,
        fail_next=lambda status, retry_after=None: ms.graph.faults.fail_next(
            "/v1.0/users/", status=status, retry_after=retry_after),
        revoke=revoke,
        event_ids=lambda: [e["id"] for e in ms.graph.events(mailbox)],
        timing_out=timing_out,
    )


CALENDAR_HARNESSES: dict[str, Callable[[pytest.FixtureRequest], CalendarHarness]] = {
    "google": google,
    "outlook": outlook,
}


@pytest.fixture(params=sorted(CALENDAR_HARNESSES))
def calendar(request) -> CalendarHarness:
    return CALENDAR_HARNESSES[request.param](request)

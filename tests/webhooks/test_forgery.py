"""Forgery (issue 14 item 5): every entry point that authenticates, against every way to fake its proof.

One matrix. Each entry point has a genuine request (accepted, so the refusals below are about the proof and
nothing else), and each forgery changes exactly one thing about it: the proof missing, wrong, stale (where the
vendor puts a time in it or the secret expires), signed over another body, or signed with another tenant's
secret. Every forgery is answered 401 or 403 as the vendor's contract says (the admin pages answer a missing
session with the sign-in redirect, and the takeover API any conversation not yours with 404, on purpose), and
leaves no trace: the row count of every table is unchanged, nothing was handed to the job queue, and the
sandbox Twilio sent nothing.

Two tenants share the deployment: smith-law (A, the target) and rivera-law (B, whose own secrets are valid
somewhere, which is what makes "signed for another tenant" a real attack). The world is built once per module;
a forgery changes nothing, so the cases can share it, and each one measures its own before and after.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

import httpx
import pytest
import yaml
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from connectors.registry import validate_connector
from core import admin_accounts
from core.config import load_tenants
from core.store.db import Database
from core.store.migrate import upgrade
from core.store.sync_state import digest
from core.store.tables import Base, Conversation, Lead, SyncSubscription
from sandbox.hubspot_webhooks import signature_v3
from sandbox.stack import SandboxStack
from sync.embedded import Embedded
from tests.webhooks.conftest import BUSINESS, CALENDAR, CALLER, tenant_yaml
from tests.webhooks.policy_support import Clock
from tests.webhooks.two_way_support import MONDAY_10AM
from webhooks.admin.routes import LOGIN_CSRF_COOKIE, SESSION_COOKIE
from webhooks.api_routes import hash_key

RIVERA = "+15550009999"
KEY_A, KEY_B = "tbk_smith_key_for_forgery_tests", "tbk_rivera_key_for_forgery_tests"
HUBSPOT_A, HUBSPOT_B = "hubspot-app-secret-of-smith", "hubspot-app-secret-of-rivera"
TWILIO_B = "rivera-twilio-auth-token-0000000"
CLIO_A, CLIO_B = "clio-signing-secret-of-smith", "clio-signing-secret-of-rivera"
GOOGLE_A, GOOGLE_B = "google-channel-token-of-smith", "google-channel-token-of-rivera"
GRAPH_A, GRAPH_B = "graph-client-state-of-smith", "graph-client-state-of-rivera"
PASSWORD = "correct horse battery staple"


class Recorded:
    """The Runtime's dispatcher, noting every outbox id a request hands to the queue (the relay keeps its own
    reference to the inner dispatcher, so only what requests enqueue is noted)."""

    def __init__(self, inner) -> None:
        self.inner, self.ids = inner, []

    def dispatch(self, outbox_ids, *, due=None) -> None:
        self.ids.extend(outbox_ids)
        self.inner.dispatch(outbox_ids, due=due)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@dataclass
class World:
    textback: Embedded
    stack: SandboxStack
    clock: Clock
    dispatched: Recorded
    portal_a: int
    portal_b: int
    conversation_a: int
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)  # who -> (session token, csrf token)

    @property
    def url(self) -> str:
        return self.textback.url

    def row_counts(self) -> dict[str, int]:
        with self.textback.runtime.db.transaction() as s:
            return {t.name: s.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


def _tenants(stack: SandboxStack, portal_a: int) -> list[dict]:
    smith = tenant_yaml(stack, api_key_sha256=hash_key(KEY_A))
    smith["connectors"]["crm"] |= {"webhook_secret": "env:HUBSPOT_APP_SECRET", "portal_id": portal_a}
    rivera = tenant_yaml(stack, id="rivera-law", name="Rivera Family Law", phone_numbers=[RIVERA],
                         forward_to=["+15550008888"], api_key_sha256=hash_key(KEY_B))
    rivera["connectors"]["sms"] |= {"auth_token": "env:RIVERA_TWILIO_TOKEN"}
    rivera["connectors"]["crm"] |= {"webhook_secret": "env:RIVERA_HUBSPOT_SECRET", "portal_id": portal_a + 1}
    return [smith, rivera]


def _subscriptions(clock: Clock) -> list[SyncSubscription]:
    week = clock() + timedelta(days=7)
    return [
        SyncSubscription(tenant_id="smith-law", provider="google", resource=CALENDAR, external_id="chan-a",
                         resource_id="res-a", secret_sha256=digest(GOOGLE_A), status="active", expires_at=week),
        SyncSubscription(tenant_id="smith-law", provider="google", resource=CALENDAR, external_id="chan-a-old",
                         resource_id="res-a", secret_sha256=digest(GOOGLE_A), status="active",
                         expires_at=clock() - timedelta(minutes=1)),
        SyncSubscription(tenant_id="rivera-law", provider="google", resource=CALENDAR, external_id="chan-b",
                         resource_id="res-b", secret_sha256=digest(GOOGLE_B), status="active", expires_at=week),
        SyncSubscription(tenant_id="smith-law", provider="microsoft", resource=CALENDAR, external_id="sub-a",
                         secret_sha256=digest(GRAPH_A), status="active", expires_at=week),
        SyncSubscription(tenant_id="smith-law", provider="microsoft", resource=CALENDAR, external_id="sub-a-old",
                         secret_sha256=digest(GRAPH_A), status="stopped", expires_at=week),
        SyncSubscription(tenant_id="rivera-law", provider="microsoft", resource=CALENDAR, external_id="sub-b",
                         secret_sha256=digest(GRAPH_B), status="active", expires_at=week),
        SyncSubscription(tenant_id="smith-law", provider="clio", resource="contact", external_id="hook-a",
                         signing_secret=CLIO_A, path_token="path-a", status="active", expires_at=week),
        SyncSubscription(tenant_id="rivera-law", provider="clio", resource="contact", external_id="hook-b",
                         signing_secret=CLIO_B, path_token="path-b", status="active", expires_at=week),
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("forgery")
    with SandboxStack.start(calendars=(CALENDAR,)) as stack, pytest.MonkeyPatch.context() as env:
        for name, value in stack.env.items():
            env.setenv(name, value)
        env.setenv("HUBSPOT_APP_SECRET", HUBSPOT_A)
        env.setenv("RIVERA_HUBSPOT_SECRET", HUBSPOT_B)
        env.setenv("RIVERA_TWILIO_TOKEN", TWILIO_B)
        portal_a = stack.hubspot.webhooks.portal_id
        path = folder / "tenants.yaml"
        path.write_text(yaml.safe_dump({"tenants": _tenants(stack, portal_a)}, sort_keys=False))
        db = Database(f"sqlite:///{folder / 'textback.db'}")
        upgrade(db.engine)
        clock = Clock()
        clock.set(MONDAY_10AM)
        tenants = load_tenants(path, validate_connector=validate_connector)
        # No relay beyond its first pass: anything queued during a case is the request's doing.
        with Embedded(db=db, tenants=tenants, clock=clock, relay_interval=3600) as textback:
            dispatched = Recorded(textback.runtime.dispatcher)
            textback.runtime.dispatcher = dispatched
            with db.transaction() as s:
                s.add_all(_subscriptions(clock))
                lead = Lead(tenant_id="smith-law", phone=CALLER)
                s.add(lead)
                s.flush()
                conversation = Conversation(tenant_id="smith-law", lead_id=lead.id, business_number=BUSINESS,
                                            playbook="law", state="asking", step="matter_type")
                s.add(conversation)
                for who, tenant in (("a", "smith-law"), ("b", "rivera-law")):
                    admin_accounts.add_user(s, email=f"{who}@example.com", password=PASSWORD, tenant_id=tenant,
                                            agency=False)
                s.flush()
                sessions = {}
                for who, email, when in (("a", "a@example.com", clock()), ("b", "b@example.com", clock()),
                                         ("a-expired", "a@example.com", clock() - timedelta(hours=13))):
                    token = admin_accounts.sign_in(s, email=email, password=PASSWORD, now=when)
                    found = admin_accounts.viewer(s, token=token, now=when)
                    sessions[who] = (token, found.csrf_token)
                conversation_id = conversation.id
            yield World(textback=textback, stack=stack, clock=clock, dispatched=dispatched, portal_a=portal_a,
                        portal_b=portal_a + 1, conversation_a=conversation_id, sessions=sessions)
        db.dispose()


# --- how each entry point is called, genuinely --------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One HTTP request, described so a forgery can be made from the genuine one by changing one part."""

    path: str
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)


TWILIO_FORMS = {
    "/twilio/voice": {"CallSid": "CA" + "7" * 32, "From": CALLER, "To": BUSINESS, "CallStatus": "ringing"},
    "/twilio/voice/dial-complete": {"CallSid": "CA" + "7" * 32, "From": CALLER, "To": BUSINESS,
                                    "DialCallStatus": "completed", "DialCallDuration": "95"},
    "/twilio/sms": {"MessageSid": "SM" + "7" * 32, "From": CALLER, "To": BUSINESS, "Body": "hello"},
    "/twilio/sms/status": {"MessageSid": "SM" + "8" * 32, "MessageStatus": "delivered", "From": BUSINESS,
                           "To": CALLER},
}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


def _twilio(w: World, path: str, *, token: str | None = None, form: dict | None = None,
            signed_form: dict | None = None, signature: str | None = None) -> Call:
    form = form or TWILIO_FORMS[path]
    token = token or w.stack.auth_token
    if signature is None:
        signature = RequestValidator(token).compute_signature(w.url + path, signed_form or form)
    headers = FORM | ({"X-Twilio-Signature": signature} if signature else {})
    return Call(path, httpx.QueryParams(form).__str__().encode(), headers)


def _hubspot_events(portal: int, value: str = "Ann") -> bytes:
    return json.dumps([{"eventId": 11, "subscriptionId": 1, "portalId": portal, "occurredAt": 1,
                        "subscriptionType": "contact.propertyChange", "attemptNumber": 0, "objectId": 51,
                        "propertyName": "firstname", "propertyValue": value}]).encode()


def _hubspot(w: World, *, secret: str = HUBSPOT_A, portal: int | None = None, age: timedelta = timedelta(),
             signed_body: bytes | None = None, signature: bool = True) -> Call:
    body = _hubspot_events(portal or w.portal_a)
    timestamp = str(int((w.clock() - age).timestamp() * 1000))
    signed = signature_v3(secret, "POST", w.url + "/webhooks/hubspot", signed_body or body, timestamp)
    headers = JSON | ({"X-HubSpot-Request-Timestamp": timestamp, "X-HubSpot-Signature-v3": signed} if signature else {})
    return Call("/webhooks/hubspot", body, headers)


CLIO_BODY = json.dumps({"data": {"id": 51, "etag": "\"1\""}, "meta": {"event": "updated"}}).encode()


def _clio(w: World, *, path_token: str = "path-a", secret: str | None = CLIO_A, signed_body: bytes | None = None,
          signature: str | None = None) -> Call:
    if signature is None and secret is not None:
        signature = hmac.new(secret.encode(), signed_body or CLIO_BODY, hashlib.sha256).hexdigest()
    return Call(f"/webhooks/clio/{path_token}", CLIO_BODY, JSON | ({"X-Hook-Signature": signature} if signature else {}))


def _google(w: World, *, channel: str = "chan-a", token: str | None = GOOGLE_A, resource: str = "res-a") -> Call:
    headers = {"X-Goog-Channel-ID": channel, "X-Goog-Resource-ID": resource, "X-Goog-Resource-State": "sync",
               "X-Goog-Message-Number": "1", "X-Goog-Resource-URI": f"https://www.googleapis.com/calendar/v3/{CALENDAR}"}
    return Call("/webhooks/google", b"", headers | ({"X-Goog-Channel-Token": token} if token is not None else {}))


def _graph(w: World, *, subscription: str = "sub-a", client_state: str | None = GRAPH_A) -> Call:
    notification = {"subscriptionId": subscription, "changeType": "updated", "resource": "me/events/x",
                    "resourceData": {"id": "AAMk-forgery", "@odata.etag": "W/\"1\""}}
    if client_state is not None:
        notification["clientState"] = client_state
    return Call("/webhooks/microsoft", json.dumps({"value": [notification]}).encode(), JSON)


def _api(w: World, *, key: str | None = KEY_A, scheme: str = "Bearer", called: str = BUSINESS) -> Call:
    report = {"caller": "+15550104444", "called": called, "occurred_at": "2031-06-02T10:00:00-04:00",
              "idempotency_key": "forgery-1"}
    return Call("/api/v1/missed-calls", json.dumps(report).encode(),
                JSON | ({"Authorization": f"{scheme} {key}"} if key is not None else {}))


def _takeover(w: World, *, key: str | None = KEY_A) -> Call:
    return Call(f"/api/v1/conversations/{w.conversation_a}/takeover", b"",
                {"Authorization": f"Bearer {key}"} if key is not None else {})


def _login(w: World, *, form_csrf: str | None = "tok-1", cookie_csrf: str | None = "tok-1",
           password: str = PASSWORD) -> Call:
    form = {"email": "a@example.com", "password": password} | ({"csrf": form_csrf} if form_csrf else {})
    return Call("/admin/login", httpx.QueryParams(form).__str__().encode(), FORM,
                {LOGIN_CSRF_COOKIE: cookie_csrf} if cookie_csrf else {})


def _admin_reply(w: World, *, session: str | None = "a", csrf_of: str | None = "a", cookie: str | None = None) -> Call:
    token = cookie if cookie is not None else (w.sessions[session][0] if session else None)
    form = {"body": "We will call you at 3."} | ({"csrf": w.sessions[csrf_of][1]} if csrf_of else {})
    return Call(f"/admin/conversations/{w.conversation_a}/reply", httpx.QueryParams(form).__str__().encode(), FORM,
                {SESSION_COOKIE: token} if token else {})


def _replace(call: Call, header: str, value: str) -> Call:
    return Call(call.path, call.content, call.headers | {header: value}, call.cookies)


def _replace_form(call: Call, name: str, value: str) -> Call:
    form = dict(httpx.QueryParams(call.content.decode())) | {name: value}
    return Call(call.path, httpx.QueryParams(form).__str__().encode(), call.headers, call.cookies)


def _post(w: World, call: Call) -> httpx.Response:
    with httpx.Client(base_url=w.url, timeout=20, cookies=call.cookies) as http:
        # Header values go as latin-1 bytes, as a client may send them (httpx refuses str beyond ASCII).
        headers = {k: v.encode("latin-1") if not v.isascii() else v for k, v in call.headers.items()}
        return http.post(call.path, content=call.content, headers=headers)


# --- the matrix ----------------------------------------------------------------------------------------------

SIGN_IN_REDIRECT = 303  # the admin pages send a browser without a live session to /admin/login

FORGERIES: dict[str, tuple[Callable[[World], Call], int]] = {}
for path in TWILIO_FORMS:
    other = {**TWILIO_FORMS[path], "From" if path != "/twilio/sms/status" else "To": "+15550106666"}
    FORGERIES |= {
        f"{path} missing": (lambda w, p=path: _twilio(w, p, signature=""), 403),
        f"{path} wrong": (lambda w, p=path: _twilio(w, p, token="not-the-auth-token"), 403),
        f"{path} tampered": (lambda w, p=path, o=other: _twilio(w, p, signed_form=o), 403),
        f"{path} other tenant": (lambda w, p=path: _twilio(w, p, token=TWILIO_B), 403),
    }
FORGERIES |= {
    "hubspot missing": (lambda w: _hubspot(w, signature=False), 401),
    "hubspot wrong": (lambda w: _hubspot(w, secret="not-the-app-secret"), 403),
    "hubspot stale": (lambda w: _hubspot(w, age=timedelta(minutes=6)), 403),
    "hubspot from the future": (lambda w: _hubspot(w, age=-timedelta(minutes=6)), 403),
    "hubspot tampered": (lambda w: _hubspot(w, signed_body=_hubspot_events(w.portal_a, "Bob")), 403),
    "hubspot other tenant": (lambda w: _hubspot(w, secret=HUBSPOT_B), 403),
    "clio missing": (lambda w: _clio(w, secret=None), 401),
    "clio wrong": (lambda w: _clio(w, secret="not-the-signing-secret"), 403),
    "clio tampered": (lambda w: _clio(w, signed_body=CLIO_BODY.replace(b"51", b"52")), 403),
    "clio other tenant": (lambda w: _clio(w, secret=CLIO_B), 403),
    "clio unknown path": (lambda w: _clio(w, path_token="guessed"), 403),
    "google missing": (lambda w: _google(w, token=None), 401),
    "google wrong": (lambda w: _google(w, token="guess"), 403),
    "google stale": (lambda w: _google(w, channel="chan-a-old"), 403),
    "google tampered": (lambda w: _google(w, resource="res-b"), 403),
    "google other tenant": (lambda w: _google(w, token=GOOGLE_B), 403),
    "microsoft missing": (lambda w: _graph(w, client_state=None), 403),
    "microsoft wrong": (lambda w: _graph(w, client_state="guess"), 403),
    "microsoft stale": (lambda w: _graph(w, subscription="sub-a-old"), 403),
    "microsoft other tenant": (lambda w: _graph(w, client_state=GRAPH_B), 403),
    "api missing": (lambda w: _api(w, key=None), 401),
    "api not bearer": (lambda w: _api(w, scheme="Basic"), 401),
    "api wrong": (lambda w: _api(w, key="tbk_guess"), 403),
    "api other tenant": (lambda w: _api(w, key=KEY_B), 403),
    "takeover missing": (lambda w: _takeover(w, key=None), 401),
    "takeover wrong": (lambda w: _takeover(w, key="tbk_guess"), 404),
    "takeover other tenant": (lambda w: _takeover(w, key=KEY_B), 404),
    "admin login missing csrf": (lambda w: _login(w, form_csrf=None), 403),
    "admin login wrong csrf": (lambda w: _login(w, form_csrf="tok-2"), 403),
    "admin login csrf without its cookie": (lambda w: _login(w, cookie_csrf=None), 403),
    "admin session missing": (lambda w: _admin_reply(w, session=None), SIGN_IN_REDIRECT),
    "admin session wrong": (lambda w: _admin_reply(w, cookie="guessed-session-token"), SIGN_IN_REDIRECT),
    "admin session stale": (lambda w: _admin_reply(w, session="a-expired", csrf_of="a-expired"), SIGN_IN_REDIRECT),
    "admin csrf missing": (lambda w: _admin_reply(w, csrf_of=None), 403),
    "admin csrf other tenant": (lambda w: _admin_reply(w, csrf_of="b"), 403),
}
# Proofs that are not ASCII: a plain compare_digest raises TypeError on them (a 500); they are forgeries like any.
NOT_ASCII = "signatur\u00e9"
FORGERIES |= {
    "hubspot not ascii": (lambda w: _replace(_hubspot(w), "X-HubSpot-Signature-v3", NOT_ASCII), 403),
    "hubspot timestamp not a number": (lambda w: _replace(_hubspot(w), "X-HubSpot-Request-Timestamp", "\u00b2"), 403),
    "hubspot timestamp out of range": (lambda w: _replace(_hubspot(w), "X-HubSpot-Request-Timestamp", "9" * 40), 403),
    "clio not ascii": (lambda w: _clio(w, signature=NOT_ASCII), 403),
    "google not ascii": (lambda w: _google(w, token=NOT_ASCII), 403),
    "microsoft not ascii": (lambda w: _graph(w, client_state=NOT_ASCII), 403),
    "api not ascii": (lambda w: _api(w, key=NOT_ASCII), 403),
    "admin login csrf not ascii": (lambda w: _login(w, form_csrf=NOT_ASCII), 403),
    "admin csrf not ascii": (lambda w: _replace_form(_admin_reply(w), "csrf", NOT_ASCII), 403),
    "/twilio/sms not ascii": (lambda w: _twilio(w, "/twilio/sms", signature=NOT_ASCII), 403),
}

GENUINE: dict[str, tuple[Callable[[World], Call], int]] = {
    **{path: (lambda w, p=path: _twilio(w, p), 204 if path == "/twilio/sms/status" else 200) for path in TWILIO_FORMS},
    "hubspot": (_hubspot, 204),
    "clio": (_clio, 200),
    "google": (_google, 200),
    "microsoft": (_graph, 202),
    "api": (_api, 202),
    "takeover": (_takeover, 200),
    "admin login": (_login, 303),
    "admin reply": (_admin_reply, 303),
}


@pytest.mark.parametrize("case", sorted(FORGERIES))
def test_a_forged_request_is_refused_and_leaves_no_trace(world, case):
    # Given: the world at rest
    build, status = FORGERIES[case]
    world.textback.drain()
    counts, queued, sent = world.row_counts(), len(world.dispatched.ids), len(world.stack.twilio.all_messages())
    # When
    answer = _post(world, build(world))
    # Then
    assert answer.status_code == status, (case, answer.status_code, answer.text[:300])
    if status == SIGN_IN_REDIRECT:
        assert answer.headers["location"] == "/admin/login"
    assert world.row_counts() == counts, case
    assert world.dispatched.ids[queued:] == [], case
    assert len(world.stack.twilio.all_messages()) == sent, case


def test_a_wrong_admin_password_signs_nobody_in_and_stores_nothing(world):
    counts = world.row_counts()

    answer = _post(world, _login(world, password="not the password"))

    assert (answer.status_code, answer.headers["location"]) == (303, "/admin/login?failed=1")
    assert SESSION_COOKIE not in answer.cookies and world.row_counts() == counts


@pytest.mark.parametrize("entry", list(GENUINE))
def test_the_genuine_request_each_forgery_was_made_from_is_accepted(world, entry):
    build, status = GENUINE[entry]

    answer = _post(world, build(world))
    world.textback.drain()

    assert answer.status_code == status, (entry, answer.status_code, answer.text[:300])

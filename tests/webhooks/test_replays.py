"""Replays and reordering (issue 14 item 4): every webhook family sent 3× and shuffled changes nothing more.

Each test captures the genuine requests of one family (built and signed as the vendor does, or captured from
the sandbox vendor itself by handing it a client that records instead of sending), then sends each of them
three times in an order shuffled by a seeded random, and counts the effect where it lands: texts at the
sandbox Twilio, records in the sandbox CRM, and rows in our outbox. One text per call, one job per vendor
event, one text to the caller for one staff change, and the state the vendor's last word says.
(The chaos run, tests/sync/test_chaos.py, replays dial-complete and inbound SMS under load as well.)
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import func, select

from core.outbox import Kind
from core.store.tables import Call, Message, OptOutEvent
from sandbox.hubspot_webhooks import signature_v3
from sandbox.stack import SandboxStack
from tests.webhooks.conftest import BUSINESS, CALENDAR, CALLER, miss_a_call, texts_to
from tests.webhooks.test_booking_flow import say
from tests.webhooks.test_forgery import _twilio
from tests.webhooks.test_two_way_clio import hook, staff_tick
from tests.webhooks.test_two_way_crm import DO_NOT_TEXT, contact_id, hubspot, staff_set  # noqa: F401  (fixture)
from tests.webhooks.test_two_way_outlook import graph, https_app, outlook, subscribe  # noqa: F401  (fixtures)
from tests.webhooks.two_way_support import (  # noqa: F401  (fixtures)
    HUBSPOT_APP_SECRET, OWNER_ID, book, booking_now, clock, lead_now, messages, move_in_google, rows, run,
    textback, two_way_tenant, write_tenants,
)
from webhooks.api_routes import hash_key

TIMES, SEED = 3, 14
API_KEY = "tbk_smith_key_for_replay_tests"
OTHER_CALLER = "+15550104444"


@pytest.fixture
def vendors() -> str:
    """The tenant's CRM + calendar; a test that needs the other pair parametrizes this name."""
    return "hubspot+google"


@pytest.fixture
def tenants_path(tmp_path, stack, monkeypatch, vendors):
    tenant = two_way_tenant(stack, api_key_sha256=hash_key(API_KEY))
    if vendors == "clio+outlook":
        tenant["connectors"]["crm"] = stack.connectors_yaml(calendars=[], crm="clio")["crm"] | {
            "do_not_text_field": "Do not text"}
        tenant["connectors"]["calendar"] = stack.connectors_yaml(calendars=[CALENDAR], calendar="outlook")["calendar"]
    return write_tenants(tmp_path, stack, monkeypatch, tenant)


# --- the helper: genuine requests, each sent TIMES times, shuffled ------------------------------------------

def replay(textback, requests: list[httpx.Request], *, times: int = TIMES, seed: int = SEED) -> list[int]:
    """Send each request `times` times to textback, all of them in one seeded shuffle; the status codes."""
    copies = [request for request in requests for _ in range(times)]
    random.Random(seed).shuffle(copies)
    with httpx.Client(base_url=textback.url, timeout=20) as http:
        return [http.post(r.url.raw_path.decode(), content=r.content,
                          headers={k: v for k, v in r.headers.items() if k.lower() not in ("host", "content-length")}
                          ).status_code for r in copies]


def recorder() -> tuple[httpx.Client, list[httpx.Request]]:
    """A client a sandbox vendor can deliver its webhooks through: it keeps them, and answers as textback would."""
    kept: list[httpx.Request] = []

    def keep(request: httpx.Request) -> httpx.Response:
        request.read()
        kept.append(request)
        return httpx.Response(202 if request.url.path == "/webhooks/microsoft" else 200)

    return httpx.Client(transport=httpx.MockTransport(keep)), kept


def twilio_request(textback, stack, path: str, form: dict) -> httpx.Request:
    call = _twilio(SimpleNamespace(url=textback.url, stack=stack), path, form=form)
    return httpx.Request("POST", textback.url + call.path, content=call.content, headers=call.headers)


def count(textback, model, *where) -> int:
    with textback.runtime.db.transaction() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def contacts_for(stack, number: str) -> int:
    return sum(1 for c in stack.hubspot.objects("contacts") if c["properties"].get("phone") == number)


# --- Twilio ---------------------------------------------------------------------------------------------------

def test_two_calls_voice_and_dial_complete_replayed_and_shuffled_text_each_caller_once(textback, stack):
    # Given: the four genuine webhooks of two missed calls (ringing, then no answer)
    calls = {CALLER: "CA" + "a" * 32, OTHER_CALLER: "CA" + "b" * 32}
    requests = []
    for caller, sid in calls.items():
        call = {"CallSid": sid, "From": caller, "To": BUSINESS, "AccountSid": stack.account_sid}
        requests += [twilio_request(textback, stack, "/twilio/voice", call | {"CallStatus": "ringing"}),
                     twilio_request(textback, stack, "/twilio/voice/dial-complete",
                                    call | {"CallStatus": "in-progress", "DialCallStatus": "no-answer"})]
    # When: each sent 3×, dial-completes before their ringing among them
    statuses = replay(textback, requests)
    textback.drain()
    # Then: every request answered, two calls, one text and one CRM contact per caller
    assert set(statuses) == {200}
    assert count(textback, Call) == 2
    for caller in calls:
        assert len(texts_to(stack, caller)) == 1, texts_to(stack, caller)
        assert contacts_for(stack, caller) == 1
    assert len(rows(textback, Kind.send_sms)) == 2


def test_an_inbound_text_replayed_gets_one_reply(phone, textback, stack):
    # Given: a texted caller, and their answer
    miss_a_call(phone)
    textback.drain()
    first = twilio_request(textback, stack, "/twilio/sms", {"MessageSid": "SM" + "c" * 32, "From": CALLER,
                                                           "To": BUSINESS, "Body": "It's about my divorce"})
    # When
    assert set(replay(textback, [first])) == {200}
    textback.drain()
    # Then: the caller's text is kept once and answered once
    assert count(textback, Message, Message.direction == "inbound") == 1
    assert len(texts_to(stack)) == 2


def test_delivery_reports_replayed_and_out_of_order_leave_each_text_in_its_furthest_state(phone, textback, stack):
    # Given: two texted callers; the second one's carrier cannot deliver (Twilio reports undelivered, 30003)
    stack.twilio.set_undeliverable(OTHER_CALLER)
    miss_a_call(phone)
    miss_a_call(phone, call_sid="CA" + "2" * 32, caller=OTHER_CALLER)
    textback.drain()
    client, reports = recorder()
    with client:
        stack.twilio.deliver_status_callbacks(client)
    delivered = next(r for r in reports if b"MessageStatus=delivered" in r.content)
    # and a `failed` for the delivered text, as a reordered or confused report would say (signed by Twilio)
    form = dict(httpx.QueryParams(delivered.content.decode())) | {"MessageStatus": "failed", "ErrorCode": "30005"}
    late_failure = httpx.Request("POST", str(delivered.url), data=form, headers={
        "X-Twilio-Signature": _signature(stack, str(delivered.url), form)})
    # When: every report (queued, sent, delivered / failed) 3×, shuffled, so `delivered` often beats `sent`
    assert set(replay(textback, reports + [late_failure])) == {204}
    # Then: the delivered text stays delivered whenever the failure came, and the other is one failure
    ours = _outbound_statuses(textback)
    assert ours == {CALLER: ["delivered"], OTHER_CALLER: ["undelivered"]}, ours
    assert count(textback, Message, Message.status.in_(("failed", "undelivered"))) == 1
    assert lead_now(textback, OTHER_CALLER).undeliverable_code == 30003


def _signature(stack, url: str, form: dict) -> str:
    from twilio.request_validator import RequestValidator

    return RequestValidator(stack.auth_token).compute_signature(url, form)


def _outbound_statuses(textback) -> dict[str, list[str]]:
    from core.store.tables import Lead

    with textback.runtime.db.transaction() as s:
        found: dict[str, list[str]] = {}
        for phone_number, status in s.execute(select(Lead.phone, Message.status).join(
                Lead, Lead.id == Message.lead_id).where(Message.direction == "outbound").order_by(Message.id)):
            found.setdefault(phone_number, []).append(status)
    return found


# --- the missed-calls API -------------------------------------------------------------------------------------

def test_missed_call_reports_replayed_and_shuffled_text_each_caller_once(textback, stack):
    # Given: two reports of the other phone system, each with its idempotency key
    def report(caller: str, key: str) -> httpx.Request:
        return httpx.Request("POST", textback.url + "/api/v1/missed-calls", json={
            "caller": caller, "called": BUSINESS, "occurred_at": "2031-06-02T09:58:00-04:00",
            "idempotency_key": key}, headers={"Authorization": f"Bearer {API_KEY}"})
    # When
    statuses = replay(textback, [report(CALLER, "pbx-call-1"), report(OTHER_CALLER, "pbx-call-2")])
    textback.drain()
    # Then
    assert set(statuses) == {202}
    assert count(textback, Call) == 2
    for caller in (CALLER, OTHER_CALLER):
        assert len(texts_to(stack, caller)) == 1 and contacts_for(stack, caller) == 1


# --- the two-way sync: HubSpot, Google --------------------------------------------------------------------------

def test_hubspot_events_replayed_and_shuffled_across_batches_are_applied_once_in_time_order(
        phone, textback, stack, clock, hubspot):
    # Given: a pushed contact, and three staff changes a second apart: do-not-text ticked, an owner, unticked
    miss_a_call(phone)
    textback.drain()
    contact = contact_id(textback)
    for change in ({DO_NOT_TEXT: "true"}, {"hubspot_owner_id": OWNER_ID}, {DO_NOT_TEXT: "false"}):
        clock.advance(seconds=1)
        staff_set(stack, contact, **change)
    client, batches = recorder()
    with client:
        hubspot.deliver_webhooks(client)
    [batch] = batches
    events = json.loads(batch.content)
    assert len(events) == 3
    # When: HubSpot's batch 3×, and its events again in other batches (the last change first)
    regrouped = [_signed_batch(textback, clock, group) for group in ([events[2]], [events[1], events[0]], [events[0]], [events[2], events[1]])]
    assert set(replay(textback, [batch, *regrouped])) == {204}
    textback.drain()
    # Then: one job per event, and the last change stands: not do-not-text, owned
    assert len(rows(textback, Kind.crm_contact_changed)) == 3
    lead = lead_now(textback)
    assert (lead.do_not_text, lead.crm_owner_id) == (False, OWNER_ID)
    assert count(textback, OptOutEvent, OptOutEvent.source == "crm") <= 2  # ticked and unticked, at most once each
    assert contacts_for(stack, CALLER) == 1


def _signed_batch(textback, clock, events: list[dict]) -> httpx.Request:
    body = json.dumps(events).encode()
    url, timestamp = textback.url + "/webhooks/hubspot", str(int(clock().timestamp() * 1000))
    return httpx.Request("POST", url, content=body, headers={
        "Content-Type": "application/json", "X-HubSpot-Request-Timestamp": timestamp,
        "X-HubSpot-Signature-v3": signature_v3(HUBSPOT_APP_SECRET, "POST", url, body, timestamp)})


def test_google_notifications_replayed_with_their_message_numbers_out_of_order_move_the_booking_once(
        phone, textback, stack):
    # Given: a booked caller and a live channel
    booking = book(phone, textback, stack)
    run(textback, Kind.watch_calendars, {}, key="watch:replays")
    with httpx.Client(timeout=10) as http:
        stack.google.deliver_notifications(http)  # the channel's `sync` handshake
    new_start = booking.start_at + timedelta(days=1)
    # When: staff move the event, then rename it (two notifications), delivered 3× each, the later ones first
    move_in_google(stack, booking.external_event_id, new_start)
    _rename_in_google(stack, booking.external_event_id)
    client, notifications = recorder()
    with client:
        stack.google.deliver_notifications(client)
    numbers = [int(n.headers["X-Goog-Message-Number"]) for n in notifications]
    assert len(set(numbers)) == len(numbers) >= 2
    assert set(replay(textback, notifications[::-1])) == {200}
    textback.drain()
    # Then: one pull per message number, the booking moved, and the caller told once
    assert len(rows(textback, Kind.calendar_pull)) == len(numbers)
    assert booking_now(textback, booking.id).start_at == new_start
    assert len([t for t in texts_to(stack) if "has been moved to" in t]) == 1
    assert len(messages(textback, "calendar_change")) == 1


def _rename_in_google(stack, event_id: str) -> None:
    from tests.webhooks.two_way_support import google_staff

    with google_staff(stack) as staff:
        assert staff.patch(f"/events/{event_id}", json={"summary": "Consultation (moved by staff)"}).status_code == 200


# --- the two-way sync: Clio, Microsoft Graph --------------------------------------------------------------------

@pytest.mark.parametrize("vendors", ["clio+outlook"])
def test_a_clio_delivery_replayed_is_applied_once(phone, textback, stack, vendors):
    # Given: a pushed contact and a live Clio webhook
    miss_a_call(phone)
    textback.drain()
    run(textback, Kind.watch_crm, {}, key="watch:clio")
    with httpx.Client(timeout=10) as http:
        stack.clio.deliver_webhooks(http)  # the secret handshake
    assert hook(textback).status == "active"
    with textback.runtime.db.transaction() as s:
        from core.store.tables import ExternalId

        contact = s.scalar(select(ExternalId.external_id).where(ExternalId.local_kind == "lead"))
    # When: staff tick "do not text", and Clio's delivery arrives 3×
    staff_tick(stack, contact, True)
    client, deliveries = recorder()
    with client:
        stack.clio.deliver_webhooks(client)
    assert len(deliveries) == 1
    assert set(replay(textback, deliveries)) == {200}
    textback.drain()
    # Then: one job, one opt-out event, and the lead is not texted again
    assert len(rows(textback, Kind.crm_contact_changed)) == 1
    assert count(textback, OptOutEvent, OptOutEvent.source == "crm") == 1
    assert lead_now(textback).do_not_text
    sent = len(texts_to(stack))
    say(phone, textback, "its about my divorce")
    assert len(texts_to(stack)) == sent


@pytest.mark.parametrize("vendors", ["clio+outlook"])
def test_a_graph_change_notification_replayed_moves_the_booking_and_texts_the_caller_once(
        phone, textback, stack, graph, https_app, vendors):
    # Given: a booked caller and a live Graph subscription
    booking = book(phone, textback, stack)
    subscribe(textback, https_app)
    new_start = booking.start_at + timedelta(hours=2)
    # When: staff move the event in Outlook, and Graph's notification arrives 3×
    outlook(textback).update_event(calendar_id=CALENDAR, external_id=booking.external_event_id, start=new_start,
                                   end=new_start + timedelta(minutes=30), timezone="America/New_York")
    client, notifications = recorder()
    with client:
        assert graph.deliver_notifications(client) >= 1
    assert set(replay(textback, notifications)) == {202}
    textback.drain()
    # Then: one job for the change, the booking moved, and the caller told once
    assert len(rows(textback, Kind.calendar_event_changed)) == len(
        [n for r in notifications for n in json.loads(r.content)["value"]])
    assert booking_now(textback, booking.id).start_at == new_start
    assert len(messages(textback, "calendar_change")) == 1
    assert len([t for t in texts_to(stack) if "has been moved to" in t]) == 1

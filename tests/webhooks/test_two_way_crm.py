"""Staff change a contact in HubSpot: v3-signed webhook → do-not-text, owner → what textback does next."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from core.outbox import Kind
from core.store.tables import Booking, Conversation, OptOutEvent, OutboxRow
from sandbox.hubspot_webhooks import signature_v3
from tests.webhooks.conftest import BUSINESS, CALLER, miss_a_call, texts_to
from tests.webhooks.test_booking_flow import offered_times, say
from sandbox.stack import SandboxStack
from tests.webhooks.conftest import CALENDAR
from tests.webhooks.two_way_support import (  # noqa: F401  (fixtures)
    HUBSPOT_APP_SECRET, OWNER_CALENDAR, OWNER_ID, OWNER_PHONE, clock, lead_now, rows, run, textback, two_way_tenant, write_tenants,
)

DO_NOT_TEXT = "textback_do_not_text"


@pytest.fixture
def stack():
    with SandboxStack.start(calendars=(CALENDAR, OWNER_CALENDAR)) as stack:
        yield stack


@pytest.fixture
def tenants_path(tmp_path, stack, monkeypatch):
    """The firm books into the intake calendar, except for leads whose CRM owner has a calendar of their own."""
    tenant = two_way_tenant(stack)
    tenant["connectors"]["calendar"]["calendars"] = [CALENDAR, OWNER_CALENDAR]
    tenant["booking"] |= {"routes": {"matter_type": {"family": [CALENDAR]}},
                          "owner_calendars": {OWNER_ID: OWNER_CALENDAR}}
    return write_tenants(tmp_path, stack, monkeypatch, tenant)


@pytest.fixture
def hubspot(stack, textback):
    """The portal's app subscribed to the contact properties staff change, pointed at textback."""
    stack.hubspot.define_property("contacts", DO_NOT_TEXT, kind="bool")
    stack.hubspot.webhooks.subscribe(textback.url + "/webhooks/hubspot", HUBSPOT_APP_SECRET,
                                     [("contact.propertyChange", DO_NOT_TEXT),
                                      ("contact.propertyChange", "hubspot_owner_id")])
    return stack.hubspot


def contact_id(textback) -> str:
    from core.store.tables import ExternalId

    with textback.runtime.db.transaction() as s:
        return s.scalar(select(ExternalId.external_id).where(ExternalId.local_kind == "lead"))


def staff_set(stack, contact: str, **properties: str) -> None:
    """A staff member edits the contact (HubSpot's CRM API, as HubSpot's own UI does)."""
    answer = httpx.patch(f"{stack.servers['hubspot'].url}/crm/v3/objects/contacts/{contact}",
                         headers={"Authorization": f"Bearer {stack.env['HUBSPOT_TOKEN']}"},
                         json={"properties": properties}, timeout=10)
    assert answer.status_code == 200, answer.text


def deliver(hubspot) -> list[httpx.Response]:
    with httpx.Client(timeout=10) as http:
        return hubspot.deliver_webhooks(http)


def staff_change(textback, stack, hubspot, **properties: str) -> list[httpx.Response]:
    """Staff edit the caller's contact in HubSpot; HubSpot's webhook reaches textback, which applies it."""
    staff_set(stack, contact_id(textback), **properties)
    answers = deliver(hubspot)
    textback.drain()
    return answers


def test_a_contact_marked_do_not_text_in_hubspot_gets_no_more_texts_and_its_conversation_closes(
        phone, textback, stack, hubspot):
    # Given: a caller in the middle of the qualification questions, pushed to HubSpot as a contact
    miss_a_call(phone)
    textback.drain()
    sent_before = len(texts_to(stack))
    # When: staff tick "do not text" on the contact, and HubSpot's webhook arrives
    assert [a.status_code for a in staff_change(textback, stack, hubspot, **{DO_NOT_TEXT: "true"})] == [204]
    # Then: the lead is do-not-text, the conversation is closed, and a reply from the caller gets no text
    assert lead_now(textback).do_not_text
    with textback.runtime.db.transaction() as s:
        assert s.scalar(select(Conversation.outcome)) == "do_not_text"
        assert s.scalar(select(OptOutEvent.source)) == "crm"
    say(phone, textback, "It's about my divorce")
    assert len(texts_to(stack)) == sent_before
    # And when staff clear it, the lead may be texted again
    staff_change(textback, stack, hubspot, **{DO_NOT_TEXT: "false"})
    assert not lead_now(textback).do_not_text


def test_an_owner_assigned_in_hubspot_gets_the_handoffs_of_that_lead(phone, textback, stack, hubspot):
    # Given
    miss_a_call(phone)
    textback.drain()
    # When: staff assign the contact to an owner whose phone is in the tenant's owner_phones
    staff_change(textback, stack, hubspot, hubspot_owner_id=OWNER_ID)
    say(phone, textback, "Can I talk to a real person please")
    # Then: the owner is told, not the general handoff list
    assert lead_now(textback).crm_owner_id == OWNER_ID
    [notice] = texts_to(stack, OWNER_PHONE)
    assert CALLER in notice
    assert texts_to(stack, "+15550108888") == []


def test_an_owner_assigned_in_hubspot_gets_the_booking_on_their_calendar(phone, textback, stack, hubspot):
    # Given: a family-law caller, who would be routed to the intake calendar
    miss_a_call(phone)
    textback.drain()
    # When: staff assign the contact to an owner with a calendar of their own, then the caller books
    staff_change(textback, stack, hubspot, hubspot_owner_id=OWNER_ID)
    offered_times(phone, textback, stack)
    say(phone, textback, "1")
    # Then: the appointment is on the owner's calendar (the CRM's owner beats the answers' routing)
    with textback.runtime.db.transaction() as s:
        assert s.scalar(select(Booking.calendar_id).where(Booking.status == "confirmed")) == OWNER_CALENDAR
    assert [e["status"] for e in stack.google.events(OWNER_CALENDAR)] == ["confirmed"]


# --- the endpoint refuses what HubSpot did not sign -------------------------------------------------

def post(textback, body: bytes, headers: dict) -> httpx.Response:
    return httpx.post(textback.url + "/webhooks/hubspot", content=body,
                      headers={"Content-Type": "application/json", **headers}, timeout=10)


def signed(textback, clock, body: bytes, *, secret: str = HUBSPOT_APP_SECRET, age: timedelta = timedelta()) -> dict:
    timestamp = str(int((clock() - age).timestamp() * 1000))
    return {"X-HubSpot-Request-Timestamp": timestamp,
            "X-HubSpot-Signature-v3": signature_v3(secret, "POST", textback.url + "/webhooks/hubspot", body, timestamp)}


def events_body(stack, contact: str = "51", value: str = "true", event_id: int = 7) -> bytes:
    return json.dumps([{"eventId": event_id, "subscriptionId": 1, "portalId": stack.hubspot.webhooks.portal_id,
                        "occurredAt": 1, "subscriptionType": "contact.propertyChange", "attemptNumber": 0,
                        "objectId": int(contact), "propertyName": DO_NOT_TEXT, "propertyValue": value}]).encode()


def outbox_count(textback) -> int:
    with textback.runtime.db.transaction() as s:
        return s.scalar(select(func.count()).select_from(OutboxRow))


@pytest.mark.parametrize("case, status", [("unsigned", 401), ("wrong secret", 403), ("stale", 403),
                                          ("tampered body", 403), ("v1 only", 403)])
def test_a_hubspot_request_that_hubspot_did_not_sign_now_is_refused_and_stores_nothing(
        textback, stack, clock, case, status):
    # Given
    body, before = events_body(stack), outbox_count(textback)
    headers = {
        "unsigned": {},
        "wrong secret": signed(textback, clock, body, secret="not-the-secret"),
        "stale": signed(textback, clock, body, age=timedelta(minutes=6)),
        "tampered body": signed(textback, clock, events_body(stack, value="false")),
        "v1 only": {"X-HubSpot-Signature": "0" * 64, "X-HubSpot-Signature-Version": "v1"},
    }[case]
    # When
    answer = post(textback, body, headers)
    # Then
    assert answer.status_code == status, answer.text
    assert outbox_count(textback) == before


def test_a_replayed_hubspot_request_is_accepted_but_changes_nothing_more(textback, stack, clock):
    # Given
    body = events_body(stack)
    headers = signed(textback, clock, body)
    assert post(textback, body, headers).status_code == 204
    textback.drain()
    after_first = outbox_count(textback)
    # When: the same request again (HubSpot's retry, or an attacker replaying inside the window)
    again = post(textback, body, headers)
    # Then
    assert again.status_code == 204 and outbox_count(textback) == after_first
    assert len(rows(textback, Kind.crm_contact_changed)) == 1


def test_malformed_json_that_is_signed_is_a_400(textback, clock):
    body = b'{"not": "a list"}'
    assert post(textback, body, signed(textback, clock, body)).status_code == 400


def test_events_in_one_batch_apply_in_time_order_whatever_order_they_arrive_in(textback, stack, clock, phone,
                                                                                hubspot):
    # Given: a pushed contact
    miss_a_call(phone)
    textback.drain()
    contact = contact_id(textback)
    later = json.loads(events_body(stack, contact, "false", event_id=12))[0] | {"occurredAt": 2000}
    earlier = json.loads(events_body(stack, contact, "true", event_id=11))[0] | {"occurredAt": 1000}
    body = json.dumps([later, earlier, earlier]).encode()
    # When
    assert post(textback, body, signed(textback, clock, body)).status_code == 204
    textback.drain()
    # Then: the last change wins (cleared), and the duplicate was dropped: one job per event, in time order
    assert not lead_now(textback).do_not_text
    assert [job.payload["changes"] for job in rows(textback, Kind.crm_contact_changed)] == [
        {"do_not_text": "true"}, {"do_not_text": "false"}]


def test_a_caller_who_texts_stop_is_marked_do_not_text_in_hubspot_and_start_clears_it(phone, textback, stack):
    # Given: a caller pushed to HubSpot (the portal has no do-not-text property yet)
    miss_a_call(phone)
    textback.drain()
    contact = contact_id(textback)
    # When
    say(phone, textback, "STOP")
    # Then: textback created the property and ticked it, so staff see what the caller asked
    assert _property(stack, contact) == "true"
    # And START clears it
    say(phone, textback, "START")
    assert _property(stack, contact) == "false"


def _property(stack, contact: str) -> str | None:
    answer = httpx.get(f"{stack.servers['hubspot'].url}/crm/v3/objects/contacts/{contact}",
                       params={"properties": DO_NOT_TEXT},
                       headers={"Authorization": f"Bearer {stack.env['HUBSPOT_TOKEN']}"}, timeout=10)
    return answer.json()["properties"].get(DO_NOT_TEXT)


def test_a_pull_catches_a_do_not_text_whose_webhook_never_came_and_resumes_from_its_cursor(phone, textback, stack):
    from core.store.tables import SyncCursor

    # Given: no webhook subscription at all (HubSpot gave up on us), and staff tick do-not-text
    stack.hubspot.define_property("contacts", DO_NOT_TEXT, kind="bool")
    miss_a_call(phone)
    textback.drain()
    staff_set(stack, contact_id(textback), **{DO_NOT_TEXT: "true"})
    # When: the timer's pull runs
    run(textback, Kind.crm_pull, {}, key="crm-pull:1")
    # Then
    assert lead_now(textback).do_not_text
    with textback.runtime.db.transaction() as s:
        assert '"since"' in s.scalar(select(SyncCursor.cursor).where(SyncCursor.scope == "contacts"))
    # And the next pull starts from the cursor and sees the change staff make next
    staff_set(stack, contact_id(textback), **{DO_NOT_TEXT: "false"}, hubspot_owner_id=OWNER_ID)
    run(textback, Kind.crm_pull, {}, key="crm-pull:2")
    lead = lead_now(textback)
    assert (lead.do_not_text, lead.crm_owner_id) == (False, OWNER_ID)

"""Helpers for the two-way sync tests: staff acting in the sandbox vendors over their own HTTP APIs."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
from sqlalchemy import select

from core.outbox import Kind, Pending
from core.store.tables import Booking, Lead, Message, OutboxRow
from tests.webhooks.conftest import CALENDAR, CALLER, texts_to
from tests.webhooks.test_booking_flow import offered_times, say

TENANT = "smith-law"


def book(phone, textback, stack, caller: str = CALLER, call_sid: str = "CA" + "1" * 32) -> Booking:
    offered_times(phone, textback, stack, caller=caller, call_sid=call_sid)
    say(phone, textback, "the first one works", caller=caller)
    assert texts_to(stack, caller)[-1].startswith("You're booked with"), texts_to(stack, caller)[-1]
    with textback.runtime.db.transaction() as s:
        booking = s.scalar(select(Booking).join(Lead, Lead.id == Booking.lead_id).where(Lead.phone == caller))
        s.expunge(booking)
    return booking


def run(textback, kind: Kind, payload: dict, key: str) -> None:
    """Queue one job as the scheduler would, and let the worker run it and what it causes."""
    pending = Pending()
    with textback.runtime.db.transaction() as s:
        pending.add(s, tenant_id=TENANT, kind=kind, key=key, payload=payload)
    textback.runtime.dispatch(pending.ids)
    textback.drain()


def google_staff(stack) -> httpx.Client:
    """An HTTP client signed in to Google as the calendar's owner (a staff member)."""
    base = stack.servers["google"].url
    user = stack.google.oauth.new_authorized_user(token_uri=f"{base}/token", email=CALENDAR)
    token = httpx.post(f"{base}/token", data={"grant_type": "refresh_token", "client_id": user["client_id"],
                                              "client_secret": user["client_secret"],
                                              "refresh_token": user["refresh_token"]}).json()["access_token"]
    return httpx.Client(base_url=f"{base}/calendar/v3/calendars/{CALENDAR}",
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)


def move_in_google(stack, event_id: str, start: datetime, minutes: int = 30) -> None:
    with google_staff(stack) as staff:
        answer = staff.patch(f"/events/{event_id}", json={
            "start": {"dateTime": start.isoformat()}, "end": {"dateTime": (start + timedelta(minutes=minutes)).isoformat()}})
        assert answer.status_code == 200, answer.text


def delete_in_google(stack, event_id: str) -> None:
    with google_staff(stack) as staff:
        assert staff.delete(f"/events/{event_id}").status_code == 204


def booking_now(textback, booking_id: int) -> Booking:
    with textback.runtime.db.transaction() as s:
        booking = s.get(Booking, booking_id)
        s.expunge(booking)
    return booking


def lead_now(textback, phone: str = CALLER) -> Lead:
    with textback.runtime.db.transaction() as s:
        lead = s.scalar(select(Lead).where(Lead.phone == phone))
        s.expunge(lead)
    return lead


def rows(textback, kind: Kind) -> list[OutboxRow]:
    with textback.runtime.db.transaction() as s:
        found = list(s.scalars(select(OutboxRow).where(OutboxRow.kind == kind.value).order_by(OutboxRow.id)))
        s.expunge_all()
    return found


def messages(textback, purpose: str) -> list[Message]:
    with textback.runtime.db.transaction() as s:
        found = list(s.scalars(select(Message).where(Message.purpose == purpose)))
        s.expunge_all()
    return found


# --- fixtures (imported by the two-way test modules) ------------------------------------------------

import pytest  # noqa: E402
import yaml  # noqa: E402

from connectors.registry import validate_connector  # noqa: E402
from core.config import load_tenants  # noqa: E402
from sync.embedded import Embedded  # noqa: E402
from tests.webhooks.conftest import tenant_yaml  # noqa: E402
from tests.webhooks.policy_support import Clock  # noqa: E402

# A Monday morning in New York, inside business hours and the caller's texting window.
MONDAY_10AM = datetime.fromisoformat("2031-06-02T14:00:00+00:00")
HUBSPOT_APP_SECRET = "hubspot-app-client-secret-for-tests"
OWNER_ID, OWNER_PHONE, OWNER_CALENDAR = "4242", "+15550107777", "owner@smithlaw.example"


@pytest.fixture
def clock(stack) -> Clock:
    """One pinned clock for textback and the sandboxes' notification timestamps and channel expiries."""
    clock = Clock()
    clock.set(MONDAY_10AM)
    stack.google.channels.clock = lambda: clock().timestamp()
    stack.google.channels.allow_http = True  # textback is served on plain loopback in tests
    stack.hubspot.webhooks.clock = lambda: clock().timestamp()
    return clock


def two_way_tenant(stack, **overrides) -> dict:
    tenant = tenant_yaml(stack, **overrides)
    tenant["connectors"]["crm"] |= {"webhook_secret": "env:HUBSPOT_APP_SECRET",
                                    "portal_id": stack.hubspot.webhooks.portal_id}
    tenant["handoff_to"] = ["+15550108888"]
    tenant["two_way"] = {"owner_phones": {OWNER_ID: OWNER_PHONE}}
    return tenant


def write_tenants(tmp_path, stack, monkeypatch, tenant: dict):
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HUBSPOT_APP_SECRET", HUBSPOT_APP_SECRET)
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [tenant]}, sort_keys=False))
    return path


@pytest.fixture
def tenants_path(tmp_path, stack, monkeypatch):
    return write_tenants(tmp_path, stack, monkeypatch, two_way_tenant(stack))


@pytest.fixture
def textback(sqlite_db, tenants_path, clock):
    tenants = load_tenants(tenants_path, validate_connector=validate_connector)
    with Embedded(db=sqlite_db, tenants=tenants, clock=clock) as embedded:
        yield embedded

"""Staff change a booked appointment in Outlook: Graph subscription (validated over HTTPS) → booking, caller."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from core.outbox import Kind
from core.store.tables import OutboxRow, SyncSubscription
from sandbox.tls import serve_tls
from tests.webhooks.conftest import CALENDAR, texts_to
from tests.webhooks.two_way_support import (  # noqa: F401  (fixtures)
    book, booking_now, clock, messages, rows, run, textback, two_way_tenant, write_tenants,
)
from webhooks.app import create_app


@pytest.fixture
def tenants_path(tmp_path, stack, monkeypatch):
    tenant = two_way_tenant(stack)
    tenant["connectors"]["calendar"] = stack.connectors_yaml(calendars=[CALENDAR], calendar="outlook")["calendar"]
    return write_tenants(tmp_path, stack, monkeypatch, tenant)


@pytest.fixture
def graph(stack, clock):
    stack.microsoft.graph.subscriptions.clock = clock
    return stack.microsoft.graph


@pytest.fixture
def https_app(textback, stack):
    """textback's app also served over HTTPS (Graph calls only HTTPS endpoints); subscriptions point there."""
    with serve_tls(create_app(textback.runtime), ca=stack.microsoft.ca) as served:
        yield served.url


def subscribe(textback, https_app) -> None:
    """Run the upkeep job with the public URL Graph will call (the booking flow used the plain one)."""
    plain, textback.runtime.settings.public_url = textback.runtime.settings.public_url, https_app
    try:
        run(textback, Kind.watch_calendars, {}, key="watch:outlook")
    finally:
        textback.runtime.settings.public_url = plain


def outlook(textback):
    return textback.runtime.calendar(textback.runtime.tenants.get("smith-law"))


def test_upkeep_subscribes_once_graph_has_validated_the_endpoint(textback, graph, https_app):
    # When
    subscribe(textback, https_app)
    # Then: Graph's validation request was echoed, and the subscription is stored with its clientState hashed
    with textback.runtime.db.transaction() as s:
        [held] = s.scalars(select(SyncSubscription)).all()
        assert (held.provider, held.resource, held.status) == ("microsoft", CALENDAR, "active")
    [live] = graph.subscriptions.list(client_id=textback.runtime.tenants.get("smith-law").connectors["calendar"].client_id)
    assert live["id"] == held.external_id and live["lifecycleNotificationUrl"].startswith("https://")


def test_staff_moving_the_event_in_outlook_moves_the_booking_and_texts_the_caller(
        phone, textback, stack, graph, https_app):
    # Given
    booking = book(phone, textback, stack)
    subscribe(textback, https_app)
    new_start = booking.start_at + timedelta(hours=2)
    # When: staff move the event (Graph's API), and Graph notifies us
    outlook(textback).update_event(calendar_id=CALENDAR, external_id=booking.external_event_id, start=new_start,
                                   end=new_start + timedelta(minutes=30), timezone="America/New_York")
    assert graph.deliver_notifications() == 1
    textback.drain()
    # Then
    assert booking_now(textback, booking.id).start_at == new_start
    assert len(messages(textback, "calendar_change")) == 1 and "has been moved to" in texts_to(stack)[-1]


def test_staff_deleting_the_event_in_outlook_cancels_the_booking_and_offers_new_times(
        phone, textback, stack, graph, https_app):
    # Given
    booking = book(phone, textback, stack)
    subscribe(textback, https_app)
    # When
    outlook(textback).cancel_event(calendar_id=CALENDAR, external_id=booking.external_event_id)
    graph.deliver_notifications()
    textback.drain()
    # Then
    assert booking_now(textback, booking.id).status == "cancelled"
    assert "has been cancelled by our team" in texts_to(stack)[-2] and "1)" in texts_to(stack)[-1]


def test_a_missed_lifecycle_notification_rereads_the_booked_events_and_renews(
        phone, textback, stack, graph, https_app):
    # Given: a move made while no subscription was listening (as when Graph loses notifications)
    booking = book(phone, textback, stack)
    outlook(textback).update_event(calendar_id=CALENDAR, external_id=booking.external_event_id,
                                   start=booking.start_at + timedelta(hours=1),
                                   end=booking.end_at + timedelta(hours=1), timezone="UTC")
    subscribe(textback, https_app)
    with textback.runtime.db.transaction() as s:
        subscription_id = s.scalar(select(SyncSubscription.external_id))
    # When: Graph says it missed notifications
    graph.subscriptions.lifecycle_event(subscription_id, "missed")
    assert graph.deliver_notifications() == 1
    textback.drain()
    # Then: the booked event was read again and the move applied
    assert booking_now(textback, booking.id).start_at == booking.start_at + timedelta(hours=1)
    assert [r.status for r in rows(textback, Kind.calendar_pull)] == ["done"]


def test_a_subscription_graph_removed_is_replaced(textback, graph, https_app):
    # Given
    subscribe(textback, https_app)
    with textback.runtime.db.transaction() as s:
        old = s.scalar(select(SyncSubscription.external_id))
    # When
    plain, textback.runtime.settings.public_url = textback.runtime.settings.public_url, https_app
    try:
        graph.subscriptions.lifecycle_event(old, "subscriptionRemoved")
        graph.deliver_notifications()
        textback.drain()
    finally:
        textback.runtime.settings.public_url = plain
    # Then
    with textback.runtime.db.transaction() as s:
        statuses = dict(s.execute(select(SyncSubscription.external_id, SyncSubscription.status)).all())
    assert statuses[old] == "stopped" and list(statuses.values()).count("active") == 1


def test_graph_validation_is_echoed_as_plain_text_and_forged_notifications_are_refused(textback, graph, https_app):
    # Given
    subscribe(textback, https_app)
    with textback.runtime.db.transaction() as s:
        subscription_id = s.scalar(select(SyncSubscription.external_id))
        before = s.scalar(select(func.count()).select_from(OutboxRow))
    url = textback.url + "/webhooks/microsoft"
    # When / Then: the handshake
    echo = httpx.post(url, params={"validationToken": "Validation: token 1 & 2"}, content=b"")
    assert (echo.status_code, echo.text, echo.headers["content-type"].split(";")[0]) == \
        (200, "Validation: token 1 & 2", "text/plain")
    # And a notification with a wrong clientState, or for a subscription we never made, is 403
    for forged in ({"subscriptionId": subscription_id, "clientState": "guess"},
                   {"subscriptionId": "not-ours", "clientState": "x"}):
        body = {"value": [forged | {"changeType": "updated", "resourceData": {"id": "AAMk1"}}]}
        assert httpx.post(url, json=body).status_code == 403
    assert httpx.post(url, content=b"not json").status_code == 400
    with textback.runtime.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(OutboxRow)) == before

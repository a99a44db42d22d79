"""Staff change a booked appointment in Google Calendar: push channel → pull → booking, CRM, caller."""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
from zoneinfo import ZoneInfo

from sqlalchemy import select

from core.booking import label

from core.outbox import Kind
from core.store.tables import OutboxRow, SyncCursor, SyncSubscription
from sync.runtime import Runtime
from sync.runner import run_job
from tests.webhooks.conftest import CALENDAR, CALLER, texts_to
from tests.webhooks.test_booking_flow import say
from tests.webhooks.two_way_support import (  # noqa: F401  (fixtures)
    book, booking_now, clock, delete_in_google, messages, move_in_google, rows, run, tenants_path, textback,
)


def watch(textback) -> None:
    run(textback, Kind.watch_calendars, {}, key="watch:test")


def deliver(stack) -> list[httpx.Response]:
    with httpx.Client(timeout=10) as http:
        return stack.google.deliver_notifications(http)


def test_upkeep_opens_one_channel_per_calendar_and_its_handshake_is_answered(phone, textback, stack):
    # When
    watch(textback)
    answers = deliver(stack)
    # Then: the channel is stored (token hashed), and the `sync` message got a 200
    with textback.runtime.db.transaction() as s:
        [channel] = s.scalars(select(SyncSubscription)).all()
        assert (channel.provider, channel.resource, channel.status) == ("google", CALENDAR, "active")
        assert len(channel.secret_sha256) == 64
    assert [a.status_code for a in answers] == [200]
    assert [c["id"] for c in stack.google.channels.channels()] == [channel.external_id]


def test_staff_moving_the_booked_event_moves_the_booking_and_texts_the_caller_the_new_time_once(
        phone, textback, stack):
    # Given: a booked caller and a live channel
    booking = book(phone, textback, stack)
    watch(textback)
    deliver(stack)
    new_start = booking.start_at + timedelta(days=1, hours=2)
    # When: staff drag the event to the next day in Google Calendar, and Google notifies us (twice, as it may)
    move_in_google(stack, booking.external_event_id, new_start)
    assert {a.status_code for a in deliver(stack)} == {200}
    textback.drain()
    # Then: the booking has the calendar's time, the caller is told once, and the CRM meeting follows
    assert booking_now(textback, booking.id).start_at == new_start
    [moved] = [t for t in texts_to(stack) if "has been moved to" in t]
    assert "Smith & Lee Law's automated assistant" in moved
    assert label(new_start, ZoneInfo("America/New_York")) in moved
    assert len(rows(textback, Kind.crm_record_booking)) == 2
    # And a second pull with nothing new changes nothing
    run(textback, Kind.calendar_pull, {"calendar_id": CALENDAR}, key="pull:again")
    assert len([t for t in texts_to(stack) if "has been moved to" in t]) == 1


def test_staff_deleting_the_booked_event_cancels_it_tells_the_caller_and_offers_new_times(phone, textback, stack):
    # Given
    booking = book(phone, textback, stack)
    watch(textback)
    deliver(stack)
    # When
    delete_in_google(stack, booking.external_event_id)
    deliver(stack)
    textback.drain()
    # Then
    assert booking_now(textback, booking.id).status == "cancelled"
    cancelled, offer = texts_to(stack)[-2:]
    assert "has been cancelled by our team" in cancelled
    assert "1)" in offer and "2)" in offer
    # And the caller can book again by picking a time
    say(phone, textback, "2")
    assert texts_to(stack)[-1].startswith("You're booked with")


def test_textbacks_own_move_echoed_back_by_the_channel_changes_nothing(phone, textback, stack):
    # Given: a booked caller, who moves the appointment by text (textback patches the event itself)
    booking = book(phone, textback, stack)
    watch(textback)
    deliver(stack)
    say(phone, textback, "can we move it?")
    say(phone, textback, "2")
    texts_before = texts_to(stack)
    # When: Google tells us about the change we made
    deliver(stack)
    textback.drain()
    # Then: no text, no cancellation: the booking already has the event's time
    assert texts_to(stack) == texts_before
    assert booking_now(textback, booking.id).status == "confirmed"
    assert rows(textback, Kind.calendar_pull), "the notification was taken and pulled"
    assert not messages(textback, "calendar_change")


def test_a_pull_that_dies_after_its_first_page_resumes_at_the_second_without_loss_or_duplicates(
        phone, textback, stack, clock):
    # Given: 260 other events far ahead (Google pages 250 at a time) and a booked appointment listed after them
    far = clock() + timedelta(days=400)
    for day in range(260):
        stack.google.add_busy(CALENDAR, far + timedelta(days=day), far + timedelta(days=day, hours=1))
    booking = book(phone, textback, stack)
    move_in_google(stack, booking.external_event_id, booking.start_at + timedelta(hours=3))
    # When: the first pull (a full sync) stops after page 1, as a worker that dies would
    crashing = Runtime(settings=textback.runtime.settings, db=textback.runtime.db, tenants=textback.runtime.tenants,
                       clock=clock, connector_factory=_dies_after_one_page)
    run_pull_once(textback, crashing)
    with textback.runtime.db.transaction() as s:
        stored = s.scalar(select(SyncCursor.cursor))
    assert stored is not None and '"page"' in stored
    assert booking_now(textback, booking.id).start_at == booking.start_at  # page 2 not applied yet
    # And the retry runs in a healthy worker
    textback.runtime.dispatch([r.id for r in rows(textback, Kind.calendar_pull)])
    textback.drain()
    # Then: the move on page 2 is applied once, and the cursor is a sync token
    assert booking_now(textback, booking.id).start_at == booking.start_at + timedelta(hours=3)
    assert len(messages(textback, "calendar_change")) == 1
    with textback.runtime.db.transaction() as s:
        assert '"sync"' in s.scalar(select(SyncCursor.cursor))


def test_a_sync_token_google_no_longer_accepts_410_starts_a_full_sync_that_still_sees_the_change(
        phone, textback, stack):
    # Given: a first pull stored a sync token, then Google forgot its tokens
    booking = book(phone, textback, stack)
    run(textback, Kind.calendar_pull, {"calendar_id": CALENDAR}, key="pull:1")
    stack.google.expire_sync_tokens()
    move_in_google(stack, booking.external_event_id, booking.start_at + timedelta(hours=4))
    # When
    run(textback, Kind.calendar_pull, {"calendar_id": CALENDAR}, key="pull:2")
    # Then
    assert booking_now(textback, booking.id).start_at == booking.start_at + timedelta(hours=4)
    assert [r.status for r in rows(textback, Kind.calendar_pull)] == ["done", "done"]


def run_pull_once(textback, runtime: Runtime) -> None:
    from core.outbox import Pending

    pending = Pending()
    with runtime.db.transaction() as s:
        row_id = pending.add(s, tenant_id="smith-law", kind=Kind.calendar_pull, key="pull:crash",
                             payload={"calendar_id": CALENDAR})
    try:
        run_job(runtime, row_id)
    except ConnectionResetError:
        pass
    else:
        raise AssertionError("the pull should have died after page 1")


def _dies_after_one_page(config, **injected):
    from connectors.google_calendar import GoogleCalendar

    class DiesAfterOnePage(GoogleCalendar):
        pages = 0

        def changes_page(self, **kwargs):
            DiesAfterOnePage.pages += 1
            if DiesAfterOnePage.pages > 1:
                raise ConnectionResetError("the worker died")
            return super().changes_page(**kwargs)

    from connectors import registry

    return DiesAfterOnePage(config, **injected) if config.type == "google" else registry.build(config, **injected)


# --- the endpoint refuses what is not from a channel we opened ----------------------------------------

def channel_headers(stack, **changes) -> dict:
    [channel] = stack.google.channels.channels()
    headers = {"X-Goog-Channel-ID": channel["id"], "X-Goog-Channel-Token": channel["token"],
               "X-Goog-Resource-ID": channel["resourceId"], "X-Goog-Resource-URI": channel["resourceUri"],
               "X-Goog-Resource-State": "exists", "X-Goog-Message-Number": "41"}
    return {k: v for k, v in (headers | changes).items() if v is not None}


def outbox_count(textback) -> int:
    from sqlalchemy import func

    from core.store.tables import OutboxRow

    with textback.runtime.db.transaction() as s:
        return s.scalar(select(func.count()).select_from(OutboxRow))


def test_a_genuine_google_notification_replayed_is_taken_once(textback, stack):
    # Given
    watch(textback)
    headers, before = channel_headers(stack), outbox_count(textback)
    # When
    first = httpx.post(textback.url + "/webhooks/google", headers=headers)
    again = httpx.post(textback.url + "/webhooks/google", headers=headers)
    # Then
    assert (first.status_code, again.status_code) == (200, 200)
    assert outbox_count(textback) == before + 1


def test_google_notifications_without_the_channel_token_are_401_and_with_a_wrong_one_403_storing_nothing(
        textback, stack, clock):
    # Given
    watch(textback)
    before, genuine = outbox_count(textback), channel_headers(stack, **{"X-Goog-Message-Number": "50"})
    cases = {
        "no token": (channel_headers(stack, **{"X-Goog-Channel-Token": None}), 401),
        "wrong token": (channel_headers(stack, **{"X-Goog-Channel-Token": "guess"}), 403),
        "unknown channel": (channel_headers(stack, **{"X-Goog-Channel-ID": "made-up"}), 403),
        "other resource": (channel_headers(stack, **{"X-Goog-Resource-ID": "another"}), 403),
        "bad state": (channel_headers(stack, **{"X-Goog-Resource-State": "changed"}), 400),
    }
    # When / Then
    for name, (headers, status) in cases.items():
        assert httpx.post(textback.url + "/webhooks/google", headers=headers).status_code == status, name
    # And a genuine notification for a channel past its expiry is refused too (stale)
    clock.advance(days=8)
    assert httpx.post(textback.url + "/webhooks/google", headers=genuine).status_code == 403
    assert outbox_count(textback) == before


def test_upkeep_renews_a_channel_about_to_expire_and_stops_the_old_one(textback, stack, clock):
    # Given: a channel six and a half days old (Google gives a week and never renews)
    watch(textback)
    [old] = stack.google.channels.channels()
    clock.advance(days=6, hours=12)
    # When
    run(textback, Kind.watch_calendars, {}, key="watch:later")
    # Then: a new channel is open and the old one is stopped at Google and here
    [new] = stack.google.channels.channels()
    assert new["id"] != old["id"]
    with textback.runtime.db.transaction() as s:
        statuses = {c.external_id: c.status for c in s.scalars(select(SyncSubscription))}
    assert statuses == {old["id"]: "stopped", new["id"]: "active"}


def test_sync_status_prints_the_hubspot_url_to_paste_and_the_channels_held(textback, tenants_path, monkeypatch):
    from typer.testing import CliRunner

    from webhooks.cli import app

    # Given
    watch(textback)
    monkeypatch.setenv("TEXTBACK_CONFIG", str(tenants_path))
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", textback.runtime.db.url)
    monkeypatch.setenv("TEXTBACK_PUBLIC_URL", "https://textback.example.com")
    # When
    result = CliRunner().invoke(app, ["sync", "status"])
    # Then
    assert result.exit_code == 0, result.output
    assert "paste https://textback.example.com/webhooks/hubspot" in result.output
    assert f"google    {CALENDAR}" in result.output and "active" in result.output


def test_on_postgresql_a_staff_move_pushed_by_google_reaches_the_caller_and_a_replay_changes_nothing(
        postgres_db, tenants_path, clock, stack):
    from connectors.registry import validate_connector
    from core.config import load_tenants
    from sandbox.phone import SandboxPhone
    from sync.embedded import Embedded

    tenants = load_tenants(tenants_path, validate_connector=validate_connector)
    with Embedded(db=postgres_db, tenants=tenants, clock=clock) as pg, httpx.Client(timeout=10) as http:
        phone = SandboxPhone(app_url=pg.url, auth_token=stack.auth_token, account_sid=stack.account_sid,
                             twilio=stack.twilio, http=http)
        # Given
        booking = book(phone, pg, stack)
        watch(pg)
        deliver(stack)
        # When
        move_in_google(stack, booking.external_event_id, booking.start_at + timedelta(hours=5))
        deliver(stack)
        pg.drain()
        run(pg, Kind.calendar_pull, {"calendar_id": CALENDAR}, key="pull:pg-again")
        # Then
        assert booking_now(pg, booking.id).start_at == booking.start_at + timedelta(hours=5)
        assert len(messages(pg, "calendar_change")) == 1
        with pg.runtime.db.transaction() as s:
            assert '"sync"' in s.scalar(select(SyncCursor.cursor))


def test_staff_moving_one_booking_onto_anothers_start_leaves_ours_as_it_was_and_texts_nobody(phone, textback, stack):
    # Given: two callers booked at different times
    first = book(phone, textback, stack)
    second = book(phone, textback, stack, caller="+15550104444", call_sid="CA" + "2" * 32)
    assert first.start_at != second.start_at
    # When: staff drag the first event onto the second one's start
    move_in_google(stack, first.external_event_id, second.start_at)
    run(textback, Kind.calendar_pull, {"calendar_id": CALENDAR}, key="pull:clash")
    # Then: the pull finished, the first booking is unchanged, and no one was texted about it
    assert [r.status for r in rows(textback, Kind.calendar_pull)] == ["done"]
    assert booking_now(textback, first.id).start_at == first.start_at
    assert not messages(textback, "calendar_change")


def test_with_a_plain_http_public_url_upkeep_warns_once_opens_no_channel_and_the_pull_still_moves_the_booking(
        phone, textback, stack, caplog):
    # Given: Google refusing push to an http address, as it does, and a booked caller
    stack.google.channels.allow_http = False
    assert textback.runtime.settings.public_url.startswith("http://")
    booking = book(phone, textback, stack)
    # When: the hourly upkeep runs twice
    with caplog.at_level(logging.INFO):
        run(textback, Kind.watch_calendars, {}, key="watch:http:1")
        run(textback, Kind.watch_calendars, {}, key="watch:http:2")
    # Then: one clear warning, no channel, no error logged, no row failed or dead
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "push needs an https TEXTBACK_PUBLIC_URL" in warnings[0]
    assert "pulled on the timer instead" in warnings[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.status for r in rows(textback, Kind.watch_calendars)] == ["done", "done"]
    with textback.runtime.db.transaction() as s:
        assert s.scalars(select(SyncSubscription)).all() == []
        assert not s.scalars(select(OutboxRow).where(OutboxRow.status.in_(("failed", "dead")))).all()
    assert stack.google.channels.channels() == []
    # And a staff move is still applied by the timer's pull
    new_start = booking.start_at + timedelta(days=1)
    move_in_google(stack, booking.external_event_id, new_start)
    run(textback, Kind.calendar_pull, {"calendar_id": CALENDAR}, key="pull:http")
    assert booking_now(textback, booking.id).start_at == new_start

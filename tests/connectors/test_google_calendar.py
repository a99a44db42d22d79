"""GoogleCalendar through google-api-python-client and google-auth against the Google sandbox over HTTP."""

from __future__ import annotations

import itertools
import json
import socket
from datetime import datetime, timedelta, timezone

import httplib2
import pytest
from pydantic import ValidationError

from connectors.base import AuthExpired, CalendarConnector, RateLimited, Rejected, Transient
from connectors.google_calendar import KEY_PROPERTY, GoogleCalendar, GoogleCalendarConfig, event_id_for
from core.models import BusyInterval, EventRequest
from sandbox.google_calendar import GoogleCalendarSandbox, create_app
from sandbox.server import serve

BOT = "textback@tenant-project.iam.gserviceaccount.com"
MONDAY = datetime(2030, 6, 3, tzinfo=timezone.utc)
_calendars = itertools.count(1)


@pytest.fixture(scope="module")
def google() -> GoogleCalendarSandbox:
    return GoogleCalendarSandbox()


@pytest.fixture(scope="module")
def base_url(google):
    with serve(create_app(google)) as served:
        yield served.url


@pytest.fixture(scope="module")
def service_account(google, base_url) -> dict:
    return google.oauth.new_service_account(BOT, token_uri=base_url + "/token")


@pytest.fixture
def make_calendar(monkeypatch, base_url):
    def make(credentials: dict, *, url: str = base_url) -> GoogleCalendar:
        monkeypatch.setenv("GOOGLE_TEST_CREDENTIALS", json.dumps(credentials))
        config = GoogleCalendarConfig.model_validate(
            {"type": "google", "calendars": ["staff@example.com"], "credentials": "env:GOOGLE_TEST_CREDENTIALS",
             "base_url": url}
        )
        return GoogleCalendar(config, http=httplib2.Http(timeout=5))
    return make


@pytest.fixture
def calendar(make_calendar, service_account) -> GoogleCalendar:
    return make_calendar(service_account)


@pytest.fixture
def staff(google) -> str:
    """A fresh staff calendar shared with the service account."""
    calendar_id = f"staff{next(_calendars)}@example.com"
    google.add_calendar(calendar_id, owners=[BOT])
    return calendar_id


def booking(calendar_id: str, *, key: str = "booking-1", hours: int = 10) -> EventRequest:
    return EventRequest(key=key, calendar_id=calendar_id, start=MONDAY + timedelta(hours=hours),
                        end=MONDAY + timedelta(hours=hours, minutes=30), timezone="America/Chicago",
                        summary="Consultation: Dana Caller", description="Booked by text", location="Main office")


def test_the_connector_implements_the_calendar_protocol(calendar):
    assert isinstance(calendar, CalendarConnector)
    assert GoogleCalendar.role == "calendar" and GoogleCalendar.config_model is GoogleCalendarConfig


def test_free_busy_reports_the_busy_events_of_each_calendar_through_a_service_account(calendar, google, staff):
    # Given
    other = f"other{next(_calendars)}@example.com"
    google.add_calendar(other, owners=[BOT])
    google.add_busy(staff, MONDAY + timedelta(hours=9), MONDAY + timedelta(hours=10))
    google.add_busy(other, MONDAY + timedelta(hours=13), MONDAY + timedelta(hours=14))
    # When
    busy = calendar.free_busy(calendars=[staff, other], start=MONDAY, end=MONDAY + timedelta(days=1))
    # Then
    assert busy == {
        staff: [BusyInterval(start=MONDAY + timedelta(hours=9), end=MONDAY + timedelta(hours=10))],
        other: [BusyInterval(start=MONDAY + timedelta(hours=13), end=MONDAY + timedelta(hours=14))],
    }


def test_free_busy_ignores_events_marked_free(calendar, google, staff):
    # Given
    google.insert_event(staff, {"summary": "Lunch (free)", "transparency": "transparent",
                                "start": {"dateTime": (MONDAY + timedelta(hours=12)).isoformat()},
                                "end": {"dateTime": (MONDAY + timedelta(hours=13)).isoformat()}}, identity=staff)
    # When
    busy = calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))
    # Then
    assert busy == {staff: []}


def test_a_range_longer_than_googles_limit_is_queried_in_windows_and_stitched(calendar, google, staff):
    # Given: busy near both ends of five months, and one block straddling a window seam (day 60)
    google.add_busy(staff, MONDAY + timedelta(days=1), MONDAY + timedelta(days=1, hours=1))
    google.add_busy(staff, MONDAY + timedelta(days=59, hours=23), MONDAY + timedelta(days=60, hours=1))
    google.add_busy(staff, MONDAY + timedelta(days=140), MONDAY + timedelta(days=140, hours=2))
    # When
    busy = calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=150))
    # Then
    assert busy[staff] == [
        BusyInterval(start=MONDAY + timedelta(days=1), end=MONDAY + timedelta(days=1, hours=1)),
        BusyInterval(start=MONDAY + timedelta(days=59, hours=23), end=MONDAY + timedelta(days=60, hours=1)),
        BusyInterval(start=MONDAY + timedelta(days=140), end=MONDAY + timedelta(days=140, hours=2)),
    ]


def test_a_calendar_not_shared_with_the_credentials_is_rejected(calendar, google):
    # Given
    google.add_calendar("private@example.com", owners=["someone-else@example.com"])
    # When / Then
    with pytest.raises(Rejected, match="not shared"):
        calendar.free_busy(calendars=["private@example.com"], start=MONDAY, end=MONDAY + timedelta(days=1))


def test_creating_an_event_derives_its_id_from_the_key_and_keeps_the_key(calendar, google, staff):
    # When
    created = calendar.create_event(booking(staff, key="tenant-a/lead-42/slot-1"))
    # Then
    [event] = google.events(staff)
    assert created.external_id == event["id"] == event_id_for("tenant-a/lead-42/slot-1")
    assert created.calendar_id == staff and created.link == event["htmlLink"]
    assert event["extendedProperties"]["private"][KEY_PROPERTY] == "tenant-a/lead-42/slot-1"
    assert event["summary"] == "Consultation: Dana Caller" and event["location"] == "Main office"
    assert event["start"] == {"dateTime": "2030-06-03T05:00:00-05:00", "timeZone": "America/Chicago"}


def test_creating_the_same_key_twice_yields_one_event(calendar, google, staff):
    # Given
    first = calendar.create_event(booking(staff))
    # When
    second = calendar.create_event(booking(staff))
    # Then
    assert second == first
    assert len(google.events(staff)) == 1


def test_creating_a_key_again_after_it_was_cancelled_restores_the_event(calendar, google, staff):
    # Given
    created = calendar.create_event(booking(staff))
    calendar.cancel_event(calendar_id=staff, external_id=created.external_id)
    # When
    again = calendar.create_event(booking(staff))
    # Then
    assert again.external_id == created.external_id
    assert [event["status"] for event in google.events(staff)] == ["confirmed"]


def test_an_id_taken_by_someone_elses_event_is_rejected(calendar, google, staff):
    # Given
    google.insert_event(staff, {"id": event_id_for("booking-1"), "summary": "Not ours",
                                "start": {"dateTime": MONDAY.isoformat()},
                                "end": {"dateTime": (MONDAY + timedelta(hours=1)).isoformat()}}, identity=staff)
    # When / Then
    with pytest.raises(Rejected, match="not ours"):
        calendar.create_event(booking(staff))


def test_cancelling_twice_or_cancelling_an_unknown_event_succeeds(calendar, google, staff):
    # Given
    created = calendar.create_event(booking(staff))
    # When
    calendar.cancel_event(calendar_id=staff, external_id=created.external_id)
    calendar.cancel_event(calendar_id=staff, external_id=created.external_id)
    calendar.cancel_event(calendar_id=staff, external_id="neverexisted")
    # Then
    assert [event["status"] for event in google.events(staff)] == ["cancelled"]


def test_moving_an_event_changes_its_time_and_keeps_its_id_key_and_free_busy_follows(calendar, google, staff):
    # Given
    created = calendar.create_event(booking(staff, hours=10))
    later = MONDAY + timedelta(hours=15)
    # When
    calendar.update_event(calendar_id=staff, external_id=created.external_id, start=later,
                          end=later + timedelta(minutes=30), timezone="America/Chicago")
    calendar.update_event(calendar_id=staff, external_id=created.external_id, start=later,
                          end=later + timedelta(minutes=30), timezone="America/Chicago")
    # Then
    [event] = google.events(staff)
    assert event["id"] == created.external_id and event["summary"] == "Consultation: Dana Caller"
    assert event["extendedProperties"]["private"][KEY_PROPERTY] == "booking-1"
    assert event["start"] == {"dateTime": "2030-06-03T10:00:00-05:00", "timeZone": "America/Chicago"}
    assert calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1)) == {
        staff: [BusyInterval(start=later, end=later + timedelta(minutes=30))]}


def test_moving_an_event_that_does_not_exist_is_rejected(calendar, staff):
    # When / Then
    with pytest.raises(Rejected) as raised:
        calendar.update_event(calendar_id=staff, external_id="neverexisted", start=MONDAY,
                              end=MONDAY + timedelta(minutes=30), timezone="UTC")
    assert raised.value.status == 404


def test_an_event_google_refuses_is_rejected(calendar, staff):
    # Given: an end before its start
    backwards = booking(staff).model_copy(update={"end": MONDAY})
    # When / Then
    with pytest.raises(Rejected) as raised:
        calendar.create_event(backwards)
    assert raised.value.status == 400


def test_the_authorized_user_path_refreshes_through_the_token_endpoint(make_calendar, google, base_url):
    # Given
    user = google.oauth.new_authorized_user(token_uri=base_url + "/token", email="owner@clinic.example")
    google.add_calendar("owner@clinic.example", owners=[])
    google.add_busy("owner@clinic.example", MONDAY + timedelta(hours=8), MONDAY + timedelta(hours=9))
    calendar = make_calendar(user)
    # When
    busy = calendar.free_busy(calendars=["owner@clinic.example"], start=MONDAY, end=MONDAY + timedelta(days=1))
    created = calendar.create_event(booking("owner@clinic.example", hours=15))
    # Then
    assert busy["owner@clinic.example"] == [
        BusyInterval(start=MONDAY + timedelta(hours=8), end=MONDAY + timedelta(hours=9))
    ]
    assert google.events("owner@clinic.example")[-1]["id"] == created.external_id


def test_a_revoked_refresh_token_is_auth_expired(make_calendar, google, base_url, staff):
    # Given
    user = google.oauth.new_authorized_user(token_uri=base_url + "/token", email="leaver@clinic.example")
    google.share(staff, "leaver@clinic.example")
    calendar = make_calendar(user)
    calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))
    # When
    google.oauth.revoke(user["refresh_token"])
    # Then
    with pytest.raises(AuthExpired, match="invalid_grant"):
        calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))


def test_domain_wide_delegation_acts_as_the_subject(make_calendar, google, base_url):
    # Given: a Workspace user's calendar, shared with nobody, and a key allowed to impersonate
    delegate = google.oauth.new_service_account("dwd@tenant-project.iam.gserviceaccount.com",
                                                token_uri=base_url + "/token", domain_wide_delegation=True)
    google.add_calendar("dr.lee@clinic.example", owners=[])
    google.add_busy("dr.lee@clinic.example", MONDAY + timedelta(hours=11), MONDAY + timedelta(hours=12))
    calendar = make_calendar(delegate | {"subject": "dr.lee@clinic.example"})
    # When
    busy = calendar.free_busy(calendars=["dr.lee@clinic.example"], start=MONDAY, end=MONDAY + timedelta(days=1))
    # Then
    assert busy["dr.lee@clinic.example"] == [
        BusyInterval(start=MONDAY + timedelta(hours=11), end=MONDAY + timedelta(hours=12))
    ]


def test_impersonating_without_delegation_is_auth_expired(make_calendar, service_account, staff):
    # Given
    calendar = make_calendar(service_account | {"subject": "dr.lee@clinic.example"})
    # When / Then
    with pytest.raises(AuthExpired, match="unauthorized_client"):
        calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))


def test_an_expired_access_token_is_refreshed_without_the_caller_noticing(calendar, google, staff):
    # Given
    calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))
    google.oauth.expire_access_tokens()
    # When
    created = calendar.create_event(booking(staff))
    # Then
    assert google.events(staff)[0]["id"] == created.external_id


@pytest.mark.parametrize("status", [429, 403])
def test_rate_limit_answers_are_rate_limited_with_retry_after(calendar, google, staff, status):
    # Given
    google.faults.fail_next("/calendar/v3/freeBusy", status=status, retry_after=7)
    # When / Then
    with pytest.raises(RateLimited) as raised:
        calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))
    assert raised.value.retry_after == 7.0 and raised.value.status == status


def test_a_server_error_is_transient(calendar, google, staff):
    # Given
    google.faults.fail_next(f"/calendar/v3/calendars/{staff}/events", status=503)
    # When / Then
    with pytest.raises(Transient):
        calendar.create_event(booking(staff))


def test_an_unreachable_api_is_transient(make_calendar, service_account, staff):
    # Given: a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    calendar = make_calendar(service_account, url=closed)
    # When / Then
    with pytest.raises(Transient):
        calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ("not json", "must be JSON"),
        ('{"type": "external_account"}', "expected \"service_account\" or \"authorized_user\""),
        ('{"type": "service_account", "client_email": "x@y"}',
         "service_account credentials lack private_key, token_uri"),
        ('{"type": "authorized_user", "client_id": "a", "client_secret": "b", "refresh_token": "c", "subject": "d"}',
         "only applies to a service-account key"),
    ],
)
def test_unusable_credentials_are_refused_when_the_config_loads(monkeypatch, credentials, message):
    # Given
    monkeypatch.setenv("GOOGLE_TEST_CREDENTIALS", credentials)
    # When / Then
    with pytest.raises(ValidationError, match=message):
        GoogleCalendarConfig.model_validate(
            {"type": "google", "calendars": ["a@example.com"], "credentials": "env:GOOGLE_TEST_CREDENTIALS"}
        )


def test_a_config_needs_at_least_one_calendar_and_defaults_to_google(monkeypatch, service_account):
    # Given
    monkeypatch.setenv("GOOGLE_TEST_CREDENTIALS", json.dumps(service_account))
    raw = {"type": "google", "credentials": "env:GOOGLE_TEST_CREDENTIALS"}
    # When / Then
    with pytest.raises(ValidationError, match="calendars"):
        GoogleCalendarConfig.model_validate(raw | {"calendars": []})
    config = GoogleCalendarConfig.model_validate(raw | {"calendars": ["a@example.com"]})
    assert config.base_url == "https://www.googleapis.com"


# --- push channels and changes ------------------------------------------------------------------

def test_watching_opens_a_push_channel_that_unwatching_closes(calendar, google, staff):
    # When
    channel = calendar.watch(calendar_id=staff, address="https://textback.example/google/push", token="tenant=7",
                             ttl_seconds=3600)
    # Then
    [opened] = [c for c in google.channels.channels() if c["id"] == channel["channel_id"]]
    assert opened["resourceId"] == channel["resource_id"] and opened["token"] == "tenant=7"
    assert opened["address"] == "https://textback.example/google/push"
    assert channel["resource_uri"].endswith(f"/calendars/{staff.replace('@', '%40')}/events?alt=json")
    assert timedelta(minutes=59) < channel["expires_at"] - datetime.now(timezone.utc) <= timedelta(hours=1)
    # When: closed twice, the second time Google no longer knows it
    calendar.unwatch(channel_id=channel["channel_id"], resource_id=channel["resource_id"])
    calendar.unwatch(channel_id=channel["channel_id"], resource_id=channel["resource_id"])
    # Then
    assert channel["channel_id"] not in {c["id"] for c in google.channels.channels()}


def test_watching_a_plain_http_address_is_rejected(calendar, staff):
    # When / Then: Google only calls HTTPS endpoints
    with pytest.raises(Rejected, match="400"):
        calendar.watch(calendar_id=staff, address="http://textback.example/google/push", token="t", ttl_seconds=60)


def test_changes_since_nothing_is_every_event_with_a_cursor_for_the_next_call(calendar, google, staff):
    # Given
    kept = google.add_busy(staff, MONDAY + timedelta(hours=9), MONDAY + timedelta(hours=10))
    gone = google.add_busy(staff, MONDAY + timedelta(hours=11), MONDAY + timedelta(hours=12))
    google.delete_event(staff, gone["id"], identity=staff)
    # When
    events, cursor = calendar.changes_since(calendar_id=staff, cursor=None)
    # Then
    assert {(e["id"], e["status"]) for e in events} == {(kept["id"], "confirmed"), (gone["id"], "cancelled")}
    assert cursor


def test_changes_since_a_cursor_are_only_what_changed_after_it(calendar, google, staff):
    # Given
    first = google.add_busy(staff, MONDAY + timedelta(hours=9), MONDAY + timedelta(hours=10))
    _, cursor = calendar.changes_since(calendar_id=staff, cursor=None)
    moved = google.update_event(staff, first["id"], {"start": {"dateTime": (MONDAY + timedelta(hours=14)).isoformat()},
                                                     "end": {"dateTime": (MONDAY + timedelta(hours=15)).isoformat()}},
                                identity=staff, replace=False)
    added = google.add_busy(staff, MONDAY + timedelta(hours=16), MONDAY + timedelta(hours=17))
    # When
    events, next_cursor = calendar.changes_since(calendar_id=staff, cursor=cursor)
    nothing, _ = calendar.changes_since(calendar_id=staff, cursor=next_cursor)
    # Then
    assert {(e["id"], e["start"]["dateTime"]) for e in events} == {
        (moved["id"], moved["start"]["dateTime"]), (added["id"], added["start"]["dateTime"])}
    assert nothing == []


def test_a_cursor_google_no_longer_honours_starts_a_full_sync(calendar, google, staff):
    # Given
    event = google.add_busy(staff, MONDAY + timedelta(hours=9), MONDAY + timedelta(hours=10))
    _, cursor = calendar.changes_since(calendar_id=staff, cursor=None)
    google.expire_sync_tokens()
    # When: Google answers 410 to the stale token
    events, fresh = calendar.changes_since(calendar_id=staff, cursor=cursor)
    # Then
    assert [e["id"] for e in events] == [event["id"]] and fresh != cursor
    assert calendar.changes_since(calendar_id=staff, cursor=fresh)[0] == []


def test_changes_are_read_across_pages(calendar, google, staff):
    # Given: more events than Google's default page of 250
    for hour in range(260):
        google.add_busy(staff, MONDAY + timedelta(hours=hour), MONDAY + timedelta(hours=hour, minutes=30))
    # When
    events, cursor = calendar.changes_since(calendar_id=staff, cursor=None)
    # Then
    assert len({e["id"] for e in events}) == 260 and cursor

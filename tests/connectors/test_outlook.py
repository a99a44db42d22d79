"""OutlookCalendar through msal and httpx against the Microsoft identity and Graph sandboxes over HTTPS."""

from __future__ import annotations

import itertools
import socket
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import requests
from pydantic import ValidationError

from connectors.base import AuthExpired, CalendarConnector, RateLimited, Rejected, Transient
from connectors.outlook import OutlookCalendar, OutlookConfig, PinnedSession, transaction_id_for
from connectors.registry import validate_connector
from core.models import BusyInterval, EventRequest
from sandbox.graph_stack import MicrosoftStack

MONDAY = datetime(2030, 6, 3, tzinfo=timezone.utc)
_people = itertools.count(1)


@pytest.fixture(scope="module")
def ms():
    with MicrosoftStack.start() as stack:
        yield stack


@pytest.fixture(scope="module")
def app(ms):
    return ms.identity.new_app()


@pytest.fixture
def staff(ms, app) -> str:
    upn = f"staff{next(_people)}@contoso.com"
    ms.graph.add_mailbox(app.tenant_id, upn)
    return upn


@pytest.fixture
def make_calendar(ms, app, monkeypatch):
    def make(*, credentials=None, secret: str | None = None, token=None, **fields) -> OutlookCalendar:
        credentials = credentials or app
        monkeypatch.setenv("OUTLOOK_TEST_SECRET", secret or credentials.client_secret)
        raw = {"type": "outlook", "tenant_id": credentials.tenant_id, "client_id": credentials.client_id,
               "client_secret": "env:OUTLOOK_TEST_SECRET", "calendars": ["staff@contoso.com"],
               **ms.connector_urls()} | fields
        return OutlookCalendar(OutlookConfig.model_validate(raw), token=token)
    return make


@pytest.fixture
def calendar(make_calendar) -> OutlookCalendar:
    return make_calendar()


def delegated(make_calendar, ms, refresh_token: str, monkeypatch) -> OutlookCalendar:
    monkeypatch.setenv("OUTLOOK_TEST_REFRESH", refresh_token)
    return make_calendar(mode="delegated", refresh_token="env:OUTLOOK_TEST_REFRESH")


def booking(calendar_id: str, *, key: str = "booking-1", hours: int = 15, zone: str = "America/Chicago") -> EventRequest:
    return EventRequest(key=key, calendar_id=calendar_id, start=MONDAY + timedelta(hours=hours),
                        end=MONDAY + timedelta(hours=hours, minutes=30), timezone=zone,
                        summary="Consultation: Dana Caller", description="Booked by text", location="Main office")


def hours(start: float, end: float) -> BusyInterval:
    return BusyInterval(start=MONDAY + timedelta(hours=start), end=MONDAY + timedelta(hours=end))


# --- shape and configuration ------------------------------------------------------------------------------

def test_the_connector_implements_the_calendar_protocol_and_is_registered(calendar, ms, app):
    # When
    config = validate_connector("calendar", {"type": "outlook", "tenant_id": app.tenant_id, "client_id": app.client_id,
                                             "client_secret": "env:OUTLOOK_TEST_SECRET", "calendars": ["a@b.com"]})
    # Then
    assert isinstance(calendar, CalendarConnector)
    assert OutlookCalendar.role == "calendar" and OutlookCalendar.config_model is OutlookConfig
    assert isinstance(config, OutlookConfig)
    assert (config.mode, config.base_url, config.login_url) == ("app", "https://graph.microsoft.com",
                                                               "https://login.microsoftonline.com")


@pytest.mark.parametrize("fields, complaint", [
    ({"client_secret": "s3cret-inline"}, "inline secrets are not allowed"),
    ({"refresh_token": "env:OUTLOOK_TEST_SECRET"}, "delegated only"),
    ({"login_url": "http://127.0.0.1:1"}, "https://"),
    ({"calendars": []}, "at least 1"),
    ({"ca_bundle": "/nonexistent/ca.pem"}, "no such file"),
])
def test_a_config_that_cannot_work_is_refused_with_the_reason(monkeypatch, fields, complaint):
    # Given
    monkeypatch.setenv("OUTLOOK_TEST_SECRET", "secret")
    raw = {"type": "outlook", "tenant_id": "t", "client_id": "c", "client_secret": "env:OUTLOOK_TEST_SECRET",
           "calendars": ["a@b.com"]} | fields
    # When / Then
    with pytest.raises(ValidationError, match=complaint):
        OutlookConfig.model_validate(raw)


# --- free/busy --------------------------------------------------------------------------------------------

def test_every_status_but_free_counts_as_busy(calendar, ms, staff):
    # Given
    for start, show_as in ((9, "busy"), (10, "tentative"), (11, "oof"), (12, "workingElsewhere"), (13, "free"),
                           (14, "unknown")):
        ms.graph.add_event(staff, MONDAY + timedelta(hours=start), MONDAY + timedelta(hours=start, minutes=30),
                           show_as=show_as)
    # When
    busy = calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))
    # Then
    assert busy == {staff: [hours(9, 9.5), hours(10, 10.5), hours(11, 11.5), hours(12, 12.5), hours(14, 14.5)]}


def test_free_busy_reads_each_mailbox_and_joins_overlapping_events(calendar, ms, app, staff):
    # Given
    other = f"other{next(_people)}@contoso.com"
    ms.graph.add_mailbox(app.tenant_id, other)
    ms.graph.add_event(staff, MONDAY + timedelta(hours=9), MONDAY + timedelta(hours=10))
    ms.graph.add_event(staff, MONDAY + timedelta(hours=9, minutes=30), MONDAY + timedelta(hours=11))
    ms.graph.add_event(other, MONDAY + timedelta(hours=13), MONDAY + timedelta(hours=14), time_zone="Europe/Paris")
    # When
    busy = calendar.free_busy(calendars=[staff, other], start=MONDAY, end=MONDAY + timedelta(days=1))
    # Then
    assert busy == {staff: [hours(9, 11)], other: [hours(13, 14)]}


def test_a_long_range_and_many_mailboxes_are_split_into_calls_graph_accepts(calendar, ms, app, staff):
    # Given: more mailboxes than one getSchedule takes, and busy time on both sides of the 60-day seam
    crowd = [staff] + [f"crowd{next(_people)}@contoso.com" for _ in range(21)]
    for upn in crowd[1:]:
        ms.graph.add_mailbox(app.tenant_id, upn)
    ms.graph.add_event(crowd[-1], MONDAY + timedelta(days=59, hours=23), MONDAY + timedelta(days=60, hours=1))
    ms.graph.add_event(staff, MONDAY + timedelta(days=100), MONDAY + timedelta(days=100, hours=1))
    # When
    busy = calendar.free_busy(calendars=crowd, start=MONDAY, end=MONDAY + timedelta(days=120))
    # Then
    assert busy[crowd[-1]] == [BusyInterval(start=MONDAY + timedelta(days=59, hours=23),
                                            end=MONDAY + timedelta(days=60, hours=1))]
    assert busy[staff] == [BusyInterval(start=MONDAY + timedelta(days=100), end=MONDAY + timedelta(days=100, hours=1))]
    assert all(busy[upn] == [] for upn in crowd[1:-1])


def test_a_mailbox_graph_does_not_know_is_rejected(calendar, staff):
    # When / Then
    with pytest.raises(Rejected, match="ErrorMailRecipientNotFound"):
        calendar.free_busy(calendars=[staff, "nobody@contoso.com"], start=MONDAY, end=MONDAY + timedelta(days=1))


# --- events -----------------------------------------------------------------------------------------------

def test_an_event_is_written_as_local_wall_clock_time_in_the_booking_zone(calendar, ms, staff):
    # When
    created = calendar.create_event(booking(staff))
    # Then
    [event] = ms.graph.events(staff)
    assert created.external_id == event["id"] and created.calendar_id == staff
    assert created.link == event["webLink"]
    assert event["originalStartTimeZone"] == "America/Chicago"
    assert event["start"] == {"dateTime": "2030-06-03T15:00:00.0000000", "timeZone": "UTC"}
    assert event["transactionId"] == transaction_id_for("booking-1")
    assert (event["subject"], event["location"]["displayName"], event["showAs"]) == (
        "Consultation: Dana Caller", "Main office", "busy")
    assert event["body"] == {"contentType": "text", "content": "Booked by text"}


def test_creating_the_same_key_twice_yields_one_event(calendar, ms, staff):
    # Given
    first = calendar.create_event(booking(staff))
    # When
    second = calendar.create_event(booking(staff))
    # Then
    assert second == first
    assert len(ms.graph.events(staff)) == 1


def test_a_zone_graph_does_not_accept_is_written_as_the_same_instant_in_utc(calendar, ms, staff):
    # When: America/Detroit is a real zone but not on Graph's list
    calendar.create_event(booking(staff, zone="America/Detroit"))
    # Then
    [event] = ms.graph.events(staff)
    assert event["originalStartTimeZone"] == "UTC"
    assert event["start"]["dateTime"] == "2030-06-03T15:00:00.0000000"


def test_an_event_can_be_moved_and_cancelled_and_cancelling_twice_is_fine(calendar, ms, staff):
    # Given
    created = calendar.create_event(booking(staff))
    # When
    calendar.update_event(calendar_id=staff, external_id=created.external_id, start=MONDAY + timedelta(hours=17),
                          end=MONDAY + timedelta(hours=18), timezone="America/New_York")
    # Then
    [event] = ms.graph.events(staff)
    assert (event["start"]["dateTime"], event["end"]["dateTime"]) == ("2030-06-03T17:00:00.0000000",
                                                                     "2030-06-03T18:00:00.0000000")
    assert event["originalStartTimeZone"] == "America/New_York"
    # When
    calendar.cancel_event(calendar_id=staff, external_id=created.external_id)
    calendar.cancel_event(calendar_id=staff, external_id=created.external_id)
    # Then
    assert ms.graph.events(staff) == []
    with pytest.raises(Rejected, match="ErrorItemNotFound"):
        calendar.update_event(calendar_id=staff, external_id=created.external_id, start=MONDAY, end=MONDAY,
                              timezone="UTC")


# --- delegated mode ---------------------------------------------------------------------------------------

def test_delegated_mode_reads_through_me_and_books_with_the_users_refresh_token(make_calendar, ms, app, staff,
                                                                                 monkeypatch):
    # Given
    ms.graph.add_event(staff, MONDAY + timedelta(hours=9), MONDAY + timedelta(hours=10), show_as="oof")
    calendar = delegated(make_calendar, ms, ms.identity.sign_in(app, staff, resource=ms.api.url), monkeypatch)
    # When
    busy = calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))
    created = calendar.create_event(booking(staff))
    # Then
    assert busy == {staff: [hours(9, 10)]}
    assert [e["id"] for e in ms.graph.events(staff)][-1] == created.external_id


def test_a_revoked_refresh_token_is_auth_expired(make_calendar, ms, app, staff, monkeypatch):
    # Given
    calendar = delegated(make_calendar, ms, ms.identity.sign_in(app, staff, resource=ms.api.url), monkeypatch)
    calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))
    ms.identity.revoke(app.tenant_id, staff)
    ms.identity.expire_access_tokens()
    # When / Then
    with pytest.raises(AuthExpired, match="invalid_grant: AADSTS50173"):
        calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))


def test_a_refresh_token_idle_for_ninety_days_is_auth_expired(make_calendar, ms, app, staff, monkeypatch):
    # Given
    refresh_token = ms.identity.sign_in(app, staff, resource=ms.api.url)
    ms.identity.expire_inactive(refresh_token)
    calendar = delegated(make_calendar, ms, refresh_token, monkeypatch)
    # When / Then
    with pytest.raises(AuthExpired, match="AADSTS700082"):
        calendar.create_event(booking(staff))


def test_delegated_mode_without_a_refresh_token_asks_for_a_sign_in(make_calendar, staff):
    # Given
    calendar = make_calendar(mode="delegated")
    # When / Then
    with pytest.raises(AuthExpired, match="sign the mailbox user in"):
        calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))


def test_an_injected_token_provider_replaces_msal_and_is_refreshed_once_on_401(make_calendar, ms, app, staff):
    # Given: a provider whose first token Graph no longer honours, and a client secret msal would fail with
    grant = httpx.post(f"{ms.login.url}/{app.tenant_id}/oauth2/v2.0/token", verify=ms.ca.ssl_context(), data={
        "grant_type": "client_credentials", "client_id": app.client_id, "client_secret": app.client_secret,
        "scope": f"{ms.api.url}/.default"}).json()

    class Provider:
        def __init__(self) -> None:
            self.tokens, self.refreshed = ["stale-token", grant["access_token"]], []

        def __call__(self) -> str:
            return self.tokens[0]

        def refresh(self, *, stale: str) -> None:
            self.refreshed.append(stale)
            self.tokens.pop(0)

    provider = Provider()
    calendar = make_calendar(secret="not-the-secret", token=provider)
    # When
    busy = calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))
    # Then
    assert busy == {staff: []}
    assert provider.refreshed == ["stale-token"]


# --- credentials and failures ------------------------------------------------------------------------------

def test_a_wrong_client_secret_is_auth_expired(make_calendar, staff):
    # When / Then
    with pytest.raises(AuthExpired, match="invalid_client: AADSTS7000215"):
        make_calendar(secret="not-the-secret").free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(1))


def test_an_expired_client_secret_is_auth_expired(make_calendar, ms, staff):
    # Given
    other_app = ms.identity.new_app()
    ms.identity.expire_client_secret(other_app.client_id)
    # When / Then
    with pytest.raises(AuthExpired, match="AADSTS7000222"):
        make_calendar(credentials=other_app).free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(1))


def test_an_unknown_tenant_is_auth_expired(make_calendar, staff):
    # When / Then
    with pytest.raises(AuthExpired, match="does not know tenant nowhere.example"):
        make_calendar(tenant_id="nowhere.example").free_busy(calendars=[staff], start=MONDAY,
                                                            end=MONDAY + timedelta(1))


def test_graph_throttling_is_rate_limited_with_its_retry_after(calendar, ms, staff):
    # Given
    ms.graph.faults.fail_next("/v1.0/users/", status=429, retry_after=7)
    # When / Then
    with pytest.raises(RateLimited) as caught:
        calendar.create_event(booking(staff))
    assert caught.value.retry_after == 7 and "ApplicationThrottled" in str(caught.value)
    assert ms.graph.events(staff) == []


@pytest.mark.parametrize("status", [500, 503, 504])
def test_graph_server_errors_are_transient(calendar, ms, staff, status):
    # Given
    ms.graph.faults.fail_next("/v1.0/users/", status=status)
    # When / Then
    with pytest.raises(Transient):
        calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))


def test_a_503_with_retry_after_is_rate_limited(calendar, ms, staff):
    # Given
    ms.graph.faults.fail_next("/v1.0/users/", status=503, retry_after=30)
    # When / Then
    with pytest.raises(RateLimited) as caught:
        calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))
    assert caught.value.retry_after == 30 and caught.value.status == 503


def test_one_401_is_retried_with_a_fresh_token_and_a_second_is_auth_expired(calendar, ms, staff):
    # Given
    ms.graph.faults.fail_next("/v1.0/users/", status=401)
    # When
    assert calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1)) == {staff: []}
    # Given
    ms.graph.faults.fail_next("/v1.0/users/", status=401, times=2)
    # When / Then
    with pytest.raises(AuthExpired, match="InvalidAuthenticationToken"):
        calendar.free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))


def test_an_unreachable_graph_is_transient(make_calendar, ms, staff):
    # Given: a port nobody listens on, which the identity platform would issue tokens for
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{sock.getsockname()[1]}"
    ms.identity.add_resource(dead)
    # When / Then
    with pytest.raises(Transient):
        make_calendar(base_url=dead).free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))


def test_an_overloaded_token_endpoint_is_transient(make_calendar, ms, staff):
    # Given
    other_app = ms.identity.new_app()
    ms.identity.faults.fail_next(f"/{other_app.tenant_id}/oauth2/v2.0/token", status=503)
    # When / Then
    with pytest.raises(Transient):
        make_calendar(credentials=other_app).free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(1))


# --- trust ----------------------------------------------------------------------------------------------------

def test_the_configured_ca_bundle_is_trusted_even_when_requests_ca_bundle_points_elsewhere(make_calendar, staff,
                                                                                          monkeypatch):
    # Given: the process-wide bundle does not hold the sandbox CA
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    # When
    busy = make_calendar().free_busy(calendars=[staff], start=MONDAY, end=MONDAY + timedelta(days=1))
    # Then
    assert busy == {staff: []}


def test_a_plain_session_verify_loses_to_requests_ca_bundle_which_is_why_the_bundle_is_pinned(ms, app, monkeypatch):
    # Given
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    discovery = f"{ms.login.url}/{app.tenant_id}/v2.0/.well-known/openid-configuration"
    plain = requests.Session()
    plain.verify = ms.ca.bundle
    # When / Then
    with pytest.raises(requests.exceptions.SSLError):
        plain.get(discovery, timeout=5)
    assert PinnedSession(ms.ca.bundle).get(discovery).status_code == 200

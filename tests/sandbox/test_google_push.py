"""The Google sandbox's push channels over real HTTP: events.watch, channels.stop, and notifications over HTTPS."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from sandbox.common import Faults
from sandbox.google_calendar import GoogleCalendarSandbox, create_app
from sandbox.server import serve
from sandbox.tls import TestCA, serve_tls

MONDAY = datetime(2030, 6, 3, tzinfo=timezone.utc)
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def google() -> GoogleCalendarSandbox:
    return GoogleCalendarSandbox()


@pytest.fixture(scope="module")
def http(google):
    with serve(create_app(google)) as served, httpx.Client(base_url=served.url, timeout=5) as client:
        yield client


@pytest.fixture
def staff(google, http) -> tuple[str, dict]:
    """A fresh calendar, and the Authorization header of its owner."""
    email = f"staff{next(_ids)}@clinic.example"
    google.add_calendar(email, owners=[])
    user = google.oauth.new_authorized_user(token_uri=f"{http.base_url}token", email=email)
    answer = http.post("/token", data={"grant_type": "refresh_token", "client_id": user["client_id"],
                                       "client_secret": user["client_secret"], "refresh_token": user["refresh_token"]})
    return email, {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def receiver(ca):
    """An HTTPS endpoint that keeps every notification's X-Goog-* headers and body."""
    state = {"received": [], "faults": Faults()}
    api = FastAPI()

    @api.post("/google/push")
    async def push(request: Request) -> Response:
        if fault := state["faults"].take("/google/push"):
            return Response(status_code=fault["status"])
        state["received"].append(({k.lower(): v for k, v in request.headers.items() if k.lower().startswith("x-goog")},
                                   await request.body()))
        return Response(status_code=200)

    with serve_tls(api, ca=ca) as served, httpx.Client(verify=ca.ssl_context(), timeout=5) as client:
        state["url"], state["http"] = served.url + "/google/push", client
        yield state


def watch(http, calendar: str, auth: dict, receiver: dict, **fields) -> httpx.Response:
    body = {"id": f"channel-{next(_ids)}", "type": "web_hook", "address": receiver["url"], "token": "tenant=7",
            "params": {"ttl": "3600"}} | fields
    return http.post(f"/calendar/v3/calendars/{calendar}/events/watch", headers=auth, json=body)


def insert(http, calendar: str, auth: dict, hours: int) -> dict:
    body = {"summary": "Busy", "start": {"dateTime": (MONDAY + timedelta(hours=hours)).isoformat()},
            "end": {"dateTime": (MONDAY + timedelta(hours=hours + 1)).isoformat()}}
    return http.post(f"/calendar/v3/calendars/{calendar}/events", headers=auth, json=body).json()


def mine(receiver: dict, channel_id: str) -> list[dict]:
    return [headers for headers, _ in receiver["received"] if headers["x-goog-channel-id"] == channel_id]


def test_a_watch_answers_the_channel_with_its_resource_and_expiration(http, staff, receiver):
    # Given
    calendar, auth = staff
    # When
    answer = watch(http, calendar, auth, receiver)
    # Then
    channel = answer.json()
    assert answer.status_code == 200 and channel["kind"] == "api#channel" and channel["token"] == "tenant=7"
    assert channel["resourceUri"] == f"https://www.googleapis.com/calendar/v3/calendars/{calendar}/events?alt=json"
    expires = datetime.fromtimestamp(int(channel["expiration"]) / 1000, timezone.utc)
    assert timedelta(minutes=59) < expires - datetime.now(timezone.utc) <= timedelta(hours=1)
    assert watch(http, calendar, auth, receiver).json()["resourceId"] == channel["resourceId"]


def test_the_channel_says_sync_first_then_exists_for_each_change(google, http, staff, receiver):
    # Given
    calendar, auth = staff
    channel = watch(http, calendar, auth, receiver).json()
    event = insert(http, calendar, auth, 9)
    http.delete(f"/calendar/v3/calendars/{calendar}/events/{event['id']}", headers=auth)
    # When
    google.deliver_notifications(receiver["http"])
    # Then
    sync, created, deleted = mine(receiver, channel["id"])
    assert [h["x-goog-resource-state"] for h in (sync, created, deleted)] == ["sync", "exists", "exists"]
    assert sync["x-goog-message-number"] == "1"
    assert 1 < int(created["x-goog-message-number"]) < int(deleted["x-goog-message-number"])
    assert created["x-goog-channel-token"] == "tenant=7" and created["x-goog-resource-id"] == channel["resourceId"]
    assert created["x-goog-resource-uri"] == channel["resourceUri"]
    expiration = parsedate_to_datetime(created["x-goog-channel-expiration"])
    assert int(expiration.timestamp()) == int(channel["expiration"]) // 1000
    assert {body for headers, body in receiver["received"] if headers["x-goog-channel-id"] == channel["id"]} == {b""}


def test_a_stopped_channel_hears_nothing_more(google, http, staff, receiver):
    # Given
    calendar, auth = staff
    channel = watch(http, calendar, auth, receiver).json()
    google.deliver_notifications(receiver["http"])
    # When
    stopped = http.post("/calendar/v3/channels/stop", headers=auth,
                        json={"id": channel["id"], "resourceId": channel["resourceId"]})
    insert(http, calendar, auth, 10)
    google.deliver_notifications(receiver["http"])
    again = http.post("/calendar/v3/channels/stop", headers=auth,
                      json={"id": channel["id"], "resourceId": channel["resourceId"]})
    # Then
    assert stopped.status_code == 204 and stopped.content == b""
    assert [h["x-goog-resource-state"] for h in mine(receiver, channel["id"])] == ["sync"]
    assert again.status_code == 404 and again.json()["error"]["errors"][0]["reason"] == "notFound"


def test_a_failing_endpoint_gets_the_message_again_and_an_expired_channel_gets_nothing(google, http, staff,
                                                                                          receiver):
    # Given
    calendar, auth = staff
    channel = watch(http, calendar, auth, receiver).json()
    receiver["faults"].fail_next("/google/push", status=503)
    # When
    google.deliver_notifications(receiver["http"])
    google.deliver_notifications(receiver["http"])
    real_clock = google.channels.clock
    google.channels.clock = lambda: real_clock() + 7200
    try:
        insert(http, calendar, auth, 11)
        late = google.deliver_notifications(receiver["http"])
    finally:
        google.channels.clock = real_clock
    # Then
    assert [h["x-goog-resource-state"] for h in mine(receiver, channel["id"])] == ["sync"]
    assert not [r for r in late if r.request.headers["x-goog-channel-id"] == channel["id"]]


def test_a_deleted_calendar_sends_not_exists_and_closes_its_channels(google, http, staff, receiver):
    # Given
    calendar, auth = staff
    channel = watch(http, calendar, auth, receiver).json()
    # When
    google.remove_calendar(calendar)
    google.deliver_notifications(receiver["http"])
    # Then
    assert [h["x-goog-resource-state"] for h in mine(receiver, channel["id"])] == ["sync", "not_exists"]
    assert channel["id"] not in {c["id"] for c in google.channels.channels()}


@pytest.mark.parametrize(("fields", "reason"), [
    ({"address": "http://127.0.0.1:9/push"}, "push.webhookUrlNotHttps"),
    ({"type": "carrier_pigeon"}, "push.channelTypeUnknown"),
    ({"params": {"ttl": "-5"}}, "invalid"),
])
def test_a_watch_google_would_refuse_is_refused(http, staff, receiver, fields, reason):
    # Given
    calendar, auth = staff
    # When
    answer = watch(http, calendar, auth, receiver, **fields)
    # Then
    assert answer.status_code == 400 and answer.json()["error"]["errors"][0]["reason"] == reason


def test_channel_ids_are_unique_and_a_calendar_not_shared_cannot_be_watched(http, staff, receiver, google):
    # Given
    calendar, auth = staff
    other = f"other{next(_ids)}@clinic.example"
    google.add_calendar(other, owners=[])
    first = watch(http, calendar, auth, receiver).json()
    # When
    duplicate = watch(http, calendar, auth, receiver, id=first["id"])
    hidden = watch(http, other, auth, receiver)
    # Then
    assert duplicate.status_code == 400 and duplicate.json()["error"]["errors"][0]["reason"] == "channelIdNotUnique"
    assert hidden.status_code == 404

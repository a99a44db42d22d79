"""The Google sandbox speaks Google's token endpoint and Calendar v3 wire protocol over real HTTP."""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from google.auth import crypt, jwt

from sandbox.google_calendar import GoogleCalendarSandbox, create_app
from sandbox.google_oauth import CALENDAR_SCOPE, GOOGLE_TOKEN_URI, JWT_BEARER_GRANT
from sandbox.server import serve

BOT = "bot@sandbox-project.iam.gserviceaccount.com"
MONDAY = datetime(2030, 6, 3, tzinfo=timezone.utc)
_calendars = itertools.count(1)


@pytest.fixture(scope="module")
def google() -> GoogleCalendarSandbox:
    return GoogleCalendarSandbox()


@pytest.fixture(scope="module")
def http(google):
    with serve(create_app(google)) as served, httpx.Client(base_url=served.url, timeout=5) as client:
        yield client


@pytest.fixture(scope="module")
def key(google, http) -> dict:
    return google.oauth.new_service_account(BOT, token_uri=f"{http.base_url}token")


def assertion(key: dict, **claims) -> str:
    now = int(time.time())
    payload = {"iss": key["client_email"], "aud": GOOGLE_TOKEN_URI, "iat": now, "exp": now + 3600,
               "scope": CALENDAR_SCOPE} | claims
    return jwt.encode(crypt.RSASigner.from_service_account_info(key), payload).decode()


def token_for(http: httpx.Client, key: dict, **claims) -> httpx.Response:
    return http.post("/token", data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion(key, **claims)})


@pytest.fixture(scope="module")
def auth(http, key) -> dict:
    return {"Authorization": f"Bearer {token_for(http, key).json()['access_token']}"}


@pytest.fixture
def staff(google) -> str:
    calendar_id = f"staff{next(_calendars)}@example.com"
    google.add_calendar(calendar_id, owners=[BOT])
    return calendar_id


def at(hours: float) -> str:
    return (MONDAY + timedelta(hours=hours)).isoformat()


def event_body(start: float, end: float, **fields) -> dict:
    return {"summary": "Appointment", "start": {"dateTime": at(start)}, "end": {"dateTime": at(end)}} | fields


def free_busy(http, auth, *ids: str, hours: float = 24) -> httpx.Response:
    return http.post("/calendar/v3/freeBusy", headers=auth,
                     json={"timeMin": at(0), "timeMax": at(hours), "items": [{"id": i} for i in ids]})


# --- token endpoint ------------------------------------------------------------------------------

def test_a_signed_service_account_assertion_earns_a_bearer_token(http, key):
    # When
    answer = token_for(http, key)
    # Then
    assert answer.status_code == 200
    assert answer.json()["token_type"] == "Bearer" and answer.json()["expires_in"] == 3599
    assert answer.json()["access_token"].startswith("ya29.")


def test_an_assertion_signed_with_another_key_is_an_invalid_grant(google, http, key):
    # Given
    impostor = google.oauth.new_service_account("impostor@sandbox-project.iam.gserviceaccount.com", token_uri="x")
    # When
    answer = http.post("/token", data={"grant_type": JWT_BEARER_GRANT,
                                       "assertion": assertion(impostor, iss=key["client_email"])})
    # Then
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"exp": int(time.time()) - 10, "iat": int(time.time()) - 3610}, "invalid_grant"),
        ({"aud": "https://elsewhere.example/token"}, "invalid_grant"),
        ({"scope": ""}, "invalid_scope"),
        ({"iss": "ghost@sandbox-project.iam.gserviceaccount.com"}, "invalid_grant"),
    ],
)
def test_stale_misaddressed_scopeless_or_unknown_assertions_are_refused(http, key, claims, error):
    # When
    answer = token_for(http, key, **claims)
    # Then
    assert answer.status_code == 400 and answer.json()["error"] == error


def test_impersonation_needs_domain_wide_delegation(http, key):
    # When
    answer = token_for(http, key, sub="dr.lee@clinic.example")
    # Then
    assert answer.status_code == 401 and answer.json()["error"] == "unauthorized_client"


def test_refresh_token_grant_issues_tokens_until_revoked(google, http):
    # Given
    user = google.oauth.new_authorized_user(token_uri="unused")
    form = {"grant_type": "refresh_token", "client_id": user["client_id"], "client_secret": user["client_secret"],
            "refresh_token": user["refresh_token"]}
    # When
    granted = http.post("/token", data=form)
    google.oauth.revoke(user["refresh_token"])
    refused = http.post("/token", data=form)
    # Then
    assert granted.status_code == 200 and granted.json()["scope"] == CALENDAR_SCOPE
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    assert google.oauth.grant_for(granted.json()["access_token"]) is None


def test_an_unknown_client_or_wrong_secret_is_an_invalid_client(google, http):
    # Given
    user = google.oauth.new_authorized_user(token_uri="unused")
    form = {"grant_type": "refresh_token", "refresh_token": user["refresh_token"]}
    # When
    unknown = http.post("/token", data=form | {"client_id": "nobody", "client_secret": "x"})
    wrong = http.post("/token", data=form | {"client_id": user["client_id"], "client_secret": "wrong"})
    # Then
    assert (unknown.status_code, unknown.json()["error"]) == (401, "invalid_client")
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")


# --- Calendar auth ----------------------------------------------------------------------------------

def test_calls_without_or_with_a_bad_token_answer_googles_401(http, staff):
    # When
    missing = http.get(f"/calendar/v3/calendars/{staff}/events")
    invalid = http.get(f"/calendar/v3/calendars/{staff}/events", headers={"Authorization": "Bearer ya29.nope"})
    # Then
    assert missing.status_code == invalid.status_code == 401
    error = invalid.json()["error"]
    assert error["status"] == "UNAUTHENTICATED" and error["message"].startswith("Request had invalid authentication")
    assert error["errors"][0] == {"domain": "global", "reason": "authError", "message": "Invalid Credentials",
                                  "locationType": "header", "location": "Authorization"}
    assert missing.json()["error"]["errors"][0]["reason"] == "required"


def test_a_token_without_a_calendar_scope_is_forbidden(http, key, staff):
    # Given
    token = token_for(http, key, scope="https://www.googleapis.com/auth/drive").json()["access_token"]
    # When
    answer = http.get(f"/calendar/v3/calendars/{staff}/events", headers={"Authorization": f"Bearer {token}"})
    # Then
    assert answer.status_code == 403 and answer.json()["error"]["errors"][0]["reason"] == "insufficientPermissions"


def test_a_calendar_not_shared_with_the_caller_is_not_found(google, http, auth):
    # Given
    google.add_calendar("hidden@example.com", owners=["someone@example.com"])
    # When
    answer = http.get("/calendar/v3/calendars/hidden@example.com/events", headers=auth)
    # Then
    assert answer.status_code == 404 and answer.json()["error"]["errors"][0]["reason"] == "notFound"


# --- freeBusy ------------------------------------------------------------------------------------------

def test_free_busy_merges_busy_events_and_skips_free_and_cancelled_ones(google, http, auth, staff):
    # Given
    google.add_busy(staff, MONDAY + timedelta(hours=9), MONDAY + timedelta(hours=10))
    google.add_busy(staff, MONDAY + timedelta(hours=9, minutes=30), MONDAY + timedelta(hours=11))
    google.insert_event(staff, event_body(12, 13, transparency="transparent"), identity=staff)
    cancelled = google.add_busy(staff, MONDAY + timedelta(hours=15), MONDAY + timedelta(hours=16))
    google.delete_event(staff, cancelled["id"], identity=staff)
    # When
    answer = free_busy(http, auth, staff, "ghost@example.com")
    # Then
    assert answer.status_code == 200
    assert answer.json()["kind"] == "calendar#freeBusy"
    assert answer.json()["calendars"] == {
        staff: {"busy": [{"start": "2030-06-03T09:00:00.000Z", "end": "2030-06-03T11:00:00.000Z"}]},
        "ghost@example.com": {"errors": [{"domain": "global", "reason": "notFound"}], "busy": []},
    }


@pytest.mark.parametrize(("hours", "reason"), [(24 * 91, "timeRangeTooLong"), (0, "timeRangeEmpty")])
def test_free_busy_refuses_ranges_too_long_or_empty(http, auth, staff, hours, reason):
    # When
    answer = free_busy(http, auth, staff, hours=hours)
    # Then
    assert answer.status_code == 400 and answer.json()["error"]["errors"][0]["reason"] == reason


# --- events -----------------------------------------------------------------------------------------------

def test_insert_accepts_a_base32hex_id_once(http, auth, staff):
    # When
    created = http.post(f"/calendar/v3/calendars/{staff}/events", headers=auth, json=event_body(9, 10, id="abc0123v"))
    again = http.post(f"/calendar/v3/calendars/{staff}/events", headers=auth, json=event_body(9, 10, id="abc0123v"))
    # Then
    assert created.status_code == 200
    assert created.json()["kind"] == "calendar#event" and created.json()["id"] == "abc0123v"
    assert created.json()["status"] == "confirmed" and created.json()["iCalUID"] == "abc0123v@google.com"
    assert again.status_code == 409
    assert again.json()["error"]["errors"][0] == {"domain": "global", "reason": "duplicate",
                                                  "message": "The requested identifier already exists."}


@pytest.mark.parametrize("event_id", ["abc", "has-dash-123", "UPPERCASE1", "wxyz12345"])
def test_insert_refuses_ids_outside_base32hex(http, auth, staff, event_id):
    # When
    answer = http.post(f"/calendar/v3/calendars/{staff}/events", headers=auth, json=event_body(9, 10, id=event_id))
    # Then
    assert answer.status_code == 400 and answer.json()["error"]["errors"][0]["reason"] == "invalid"


def test_patch_merges_put_replaces_and_moving_an_event_bumps_its_sequence(http, auth, staff):
    # Given
    url = f"/calendar/v3/calendars/{staff}/events/evt00001"
    http.post(f"/calendar/v3/calendars/{staff}/events", headers=auth,
              json=event_body(9, 10, id="evt00001", description="first", location="Room 1"))
    # When
    patched = http.patch(url, headers=auth, json={"description": "second"}).json()
    replaced = http.put(url, headers=auth, json=event_body(11, 12)).json()
    # Then
    assert (patched["description"], patched["location"], patched["sequence"]) == ("second", "Room 1", 0)
    assert "description" not in replaced and "location" not in replaced
    assert replaced["sequence"] == 1 and replaced["etag"] != patched["etag"]


def test_deleting_twice_answers_gone_and_unknown_events_are_not_found(http, auth, staff):
    # Given
    http.post(f"/calendar/v3/calendars/{staff}/events", headers=auth, json=event_body(9, 10, id="evt00002"))
    url = f"/calendar/v3/calendars/{staff}/events/evt00002"
    # When
    first, second = http.delete(url, headers=auth), http.delete(url, headers=auth)
    unknown = http.delete(f"/calendar/v3/calendars/{staff}/events/nosuchevent", headers=auth)
    # Then
    assert first.status_code == 204
    assert second.status_code == 410 and second.json()["error"]["errors"][0]["reason"] == "deleted"
    assert unknown.status_code == 404
    assert http.get(url, headers=auth).json()["status"] == "cancelled"


def test_list_pages_and_only_the_last_page_carries_a_sync_token(google, http, auth, staff):
    # Given
    for hour in range(5):
        google.add_busy(staff, MONDAY + timedelta(hours=hour), MONDAY + timedelta(hours=hour, minutes=30))
    url = f"/calendar/v3/calendars/{staff}/events"
    # When
    pages, params = [], {"maxResults": 2, "singleEvents": "true", "orderBy": "startTime"}
    while True:
        pages.append(http.get(url, headers=auth, params=params).json())
        if "nextPageToken" not in pages[-1]:
            break
        params = params | {"pageToken": pages[-1]["nextPageToken"]}
    # Then
    assert [len(page["items"]) for page in pages] == [2, 2, 1]
    assert ["nextSyncToken" in page for page in pages] == [False, False, True]
    starts = [item["start"]["dateTime"] for page in pages for item in page["items"]]
    assert starts == sorted(starts)


def test_a_sync_token_returns_only_changes_including_deletions(google, http, auth, staff):
    # Given
    kept = google.add_busy(staff, MONDAY, MONDAY + timedelta(hours=1))
    doomed = google.add_busy(staff, MONDAY + timedelta(hours=2), MONDAY + timedelta(hours=3))
    url = f"/calendar/v3/calendars/{staff}/events"
    sync_token = http.get(url, headers=auth).json()["nextSyncToken"]
    # When
    google.delete_event(staff, doomed["id"], identity=staff)
    added = google.add_busy(staff, MONDAY + timedelta(hours=4), MONDAY + timedelta(hours=5))
    changes = http.get(url, headers=auth, params={"syncToken": sync_token}).json()
    # Then
    assert {(item["id"], item["status"]) for item in changes["items"]} == {
        (doomed["id"], "cancelled"), (added["id"], "confirmed")
    }
    assert kept["id"] not in {item["id"] for item in changes["items"]} and changes["nextSyncToken"]


def test_an_expired_sync_token_demands_a_full_sync(google, http, auth, staff):
    # Given
    url = f"/calendar/v3/calendars/{staff}/events"
    sync_token = http.get(url, headers=auth).json()["nextSyncToken"]
    google.expire_sync_tokens()
    # When
    answer = http.get(url, headers=auth, params={"syncToken": sync_token})
    # Then
    assert answer.status_code == 410 and answer.json()["error"]["errors"][0]["reason"] == "fullSyncRequired"


@pytest.mark.parametrize(
    "params",
    [{"syncToken": "whatever", "timeMin": "2030-06-03T00:00:00Z"}, {"orderBy": "startTime"}, {"maxResults": 0}],
)
def test_list_refuses_invalid_parameter_combinations(http, auth, staff, params):
    # When
    answer = http.get(f"/calendar/v3/calendars/{staff}/events", headers=auth, params=params)
    # Then
    assert answer.status_code == 400 and answer.json()["error"]["code"] == 400


def test_list_filters_by_time_window(google, http, auth, staff):
    # Given
    early = google.add_busy(staff, MONDAY + timedelta(hours=1), MONDAY + timedelta(hours=2))
    google.add_busy(staff, MONDAY + timedelta(hours=5), MONDAY + timedelta(hours=6))
    # When
    answer = http.get(f"/calendar/v3/calendars/{staff}/events", headers=auth,
                      params={"timeMin": at(0), "timeMax": at(2)})
    # Then
    assert [item["id"] for item in answer.json()["items"]] == [early["id"]]


# --- faults -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "reason"), [(429, "rateLimitExceeded"), (403, "rateLimitExceeded"),
                                                (503, "backendError")])
def test_scripted_faults_answer_in_googles_shape(google, http, auth, staff, status, reason):
    # Given
    google.faults.fail_next("/calendar/v3/freeBusy", status=status, retry_after=3)
    # When
    failed, recovered = free_busy(http, auth, staff), free_busy(http, auth, staff)
    # Then
    assert failed.status_code == status and failed.headers["Retry-After"] == "3"
    assert failed.json()["error"]["errors"][0]["reason"] == reason
    assert recovered.status_code == 200

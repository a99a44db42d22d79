"""Requests to the Google sandbox are checked against the discovery document google-api-python-client ships."""

from __future__ import annotations

import itertools

import httpx
import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from sandbox.google_calendar import GoogleCalendarSandbox, create_app
from sandbox.google_discovery import Discovery
from sandbox.server import serve

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def google() -> GoogleCalendarSandbox:
    return GoogleCalendarSandbox()


@pytest.fixture(scope="module")
def served(google):
    with serve(create_app(google)) as served:
        yield served


@pytest.fixture(scope="module")
def http(served):
    with httpx.Client(base_url=served.url, timeout=5) as client:
        yield client


@pytest.fixture
def staff(google, http) -> tuple[str, str]:
    """A fresh calendar and an access token of its owner."""
    email = f"staff{next(_ids)}@clinic.example"
    google.add_calendar(email, owners=[])
    user = google.oauth.new_authorized_user(token_uri=f"{http.base_url}token", email=email)
    answer = http.post("/token", data={"grant_type": "refresh_token", "client_id": user["client_id"],
                                       "client_secret": user["client_secret"], "refresh_token": user["refresh_token"]})
    return email, answer.json()["access_token"]


def first_error(answer: httpx.Response) -> tuple[int, dict, str]:
    error = answer.json()["error"]
    assert error["code"] == answer.status_code and error["status"] == "INVALID_ARGUMENT"
    return answer.status_code, error["errors"][0], error["message"]


def test_the_document_is_the_one_the_google_client_ships():
    # When
    methods = {method.id for method in Discovery.calendar().methods}
    # Then
    assert {"calendar.events.list", "calendar.events.watch", "calendar.channels.stop",
            "calendar.freebusy.query"} <= methods


def test_a_query_parameter_the_method_does_not_take_is_refused(http, staff):
    # Given
    calendar, token = staff
    # When
    answer = http.get(f"/calendar/v3/calendars/{calendar}/events", params={"startMin": "2030-01-01T00:00:00Z"},
                      headers={"Authorization": f"Bearer {token}"})
    # Then
    status, error, message = first_error(answer)
    assert status == 400 and error["reason"] == "invalid" and error["location"] == "startMin"
    assert message == ('Invalid JSON payload received. Unknown name "startMin": Cannot bind query parameter. '
                       "Field 'startMin' could not be found in request message.")


def test_a_required_query_parameter_left_out_is_refused_before_anything_else(http, staff):
    # Given: quickAdd needs `text`, which the sandbox does not even serve
    calendar, token = staff
    # When
    answer = http.post(f"/calendar/v3/calendars/{calendar}/events/quickAdd",
                       headers={"Authorization": f"Bearer {token}"})
    # Then
    status, error, message = first_error(answer)
    assert (status, error["reason"], error["location"], message) == (400, "required", "text",
                                                                     "Required parameter: text")


@pytest.mark.parametrize("params", [
    {"orderBy": "start"},  # not in the enum
    {"singleEvents": "yes"},  # not a boolean
    {"maxResults": "0"},  # under the minimum
    {"maxResults": "ten"},  # not an integer
    {"timeMin": "next monday"},  # not a date-time
    [("q", "a"), ("q", "b")],  # repeated, and not a repeated parameter
])
def test_a_value_of_the_wrong_type_or_outside_the_enum_is_an_invalid_value(http, staff, params):
    # Given
    calendar, token = staff
    # When
    answer = http.get(f"/calendar/v3/calendars/{calendar}/events", params=params,
                      headers={"Authorization": f"Bearer {token}"})
    # Then
    status, error, message = first_error(answer)
    assert (status, error["reason"], message) == (400, "invalid", "Invalid Value")


def test_repeated_parameters_and_system_parameters_are_taken(http, staff):
    # Given
    calendar, token = staff
    params = [("eventTypes", "default"), ("eventTypes", "focusTime"), ("alt", "json"), ("prettyPrint", "false")]
    # When
    answer = http.get(f"/calendar/v3/calendars/{calendar}/events", params=params,
                      headers={"Authorization": f"Bearer {token}"})
    # Then
    assert answer.status_code == 200


@pytest.mark.parametrize(("body", "message"), [
    ({"summary": "x", "colour": "1"}, "Invalid JSON payload received. Unknown name \"colour\" at 'resource': "
                                      "Cannot find field."),
    ({"start": {"dateTime": "2030-06-03T09:00:00Z", "zone": "UTC"}},
     "Invalid JSON payload received. Unknown name \"zone\" at 'resource.start': Cannot find field."),
    ({"attendees": [{"email": "a@example.com", "mail": "b"}]},
     "Invalid JSON payload received. Unknown name \"mail\" at 'resource.attendees[0]': Cannot find field."),
    ({"summary": 5}, "Invalid value at 'resource.summary' (TYPE_STRING), 5"),
    ({"guestsCanModify": "yes"}, "Invalid value at 'resource.guestsCanModify' (TYPE_BOOL), \"yes\""),
    ({"start": "2030-06-03T09:00:00Z"}, "Invalid value at 'resource.start' (TYPE_MESSAGE), \"2030-06-03T09:00:00Z\""),
])
def test_a_body_field_the_schema_does_not_have_or_of_the_wrong_type_is_refused(http, staff, body, message):
    # Given
    calendar, token = staff
    # When
    answer = http.post(f"/calendar/v3/calendars/{calendar}/events", json=body,
                       headers={"Authorization": f"Bearer {token}"})
    # Then
    status, error, top = first_error(answer)
    assert (status, error["reason"], top) == (400, "invalid", message)


def test_a_connector_bug_in_a_body_built_through_the_real_client_is_a_400_not_a_silent_success(served, staff):
    # Given: the client checks parameters itself, but sends whatever body it is given
    calendar, token = staff
    service = build("calendar", "v3", credentials=Credentials(token), static_discovery=True,
                    client_options={"api_endpoint": served.url + "/calendar/v3/"})
    body = {"summary": "Consultation", "startTime": "2030-06-03T09:00:00Z", "endTime": "2030-06-03T10:00:00Z"}
    # When / Then
    with pytest.raises(HttpError) as refused:
        service.events().insert(calendarId=calendar, body=body).execute()
    assert refused.value.status_code == 400 and 'Unknown name "startTime"' in refused.value.reason


def test_a_path_no_method_has_is_left_to_the_routes(http):
    # When
    answer = http.get("/calendar/v3/calendars/x/nothing/here")
    # Then
    assert answer.status_code == 404

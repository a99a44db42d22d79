"""What every calendar connector promises the booking flow, checked against each one's emulator (see conftest.py)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from connectors.base import AuthExpired, RateLimited, Rejected, Transient
from core.models import BusyInterval, EventRequest

MONDAY = datetime(2030, 6, 3, tzinfo=timezone.utc)
_keys = itertools.count(1)


def booking(calendar_id: str, *, hours: int = 10, minutes: int = 30) -> EventRequest:
    return EventRequest(key=f"contract/booking-{next(_keys)}", calendar_id=calendar_id,
                        start=MONDAY + timedelta(hours=hours), end=MONDAY + timedelta(hours=hours, minutes=minutes),
                        timezone="America/Chicago", summary="Consultation: Dana Caller", description="Booked by text")


def test_creating_an_event_puts_one_event_in_the_calendar(calendar):
    created = calendar.connector.create_event(booking(calendar.calendar_id))

    assert created.calendar_id == calendar.calendar_id
    assert calendar.event_ids() == [created.external_id]


def test_free_busy_finds_the_existing_event(calendar):
    calendar.connector.create_event(booking(calendar.calendar_id, hours=13))

    busy = calendar.connector.free_busy(calendars=[calendar.calendar_id], start=MONDAY, end=MONDAY + timedelta(days=1))

    assert busy == {calendar.calendar_id: [
        BusyInterval(start=MONDAY + timedelta(hours=13), end=MONDAY + timedelta(hours=13, minutes=30))]}


def test_creating_the_same_key_again_yields_the_first_event(calendar):
    request = booking(calendar.calendar_id)
    first = calendar.connector.create_event(request)

    again = calendar.connector.create_event(request)

    assert again.external_id == first.external_id and calendar.event_ids() == [first.external_id]


def test_a_429_is_rate_limited_with_retry_after_and_the_retry_lands_once(calendar):
    request = booking(calendar.calendar_id)
    calendar.fail_next(429, retry_after=3)

    with pytest.raises(RateLimited) as raised:
        calendar.connector.create_event(request)
    created = calendar.connector.create_event(request)

    assert raised.value.retry_after == 3.0 and calendar.event_ids() == [created.external_id]


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_transient_and_the_retry_lands_once(calendar, status):
    request = booking(calendar.calendar_id)
    calendar.fail_next(status)

    with pytest.raises(Transient) as raised:
        calendar.connector.create_event(request)
    created = calendar.connector.create_event(request)

    assert raised.value.status == status and calendar.event_ids() == [created.external_id]


def test_a_calendar_that_does_not_answer_in_time_is_transient(calendar):
    with pytest.raises(Transient, match="time"):
        calendar.timing_out().free_busy(calendars=[calendar.calendar_id], start=MONDAY, end=MONDAY + timedelta(days=1))


def test_revoked_credentials_are_auth_expired(calendar):
    window = {"calendars": [calendar.calendar_id], "start": MONDAY, "end": MONDAY + timedelta(days=1)}
    calendar.connector.free_busy(**window)
    calendar.revoke()

    with pytest.raises(AuthExpired):
        calendar.connector.free_busy(**window)


def test_an_event_that_ends_before_it_starts_is_rejected_and_nothing_is_created(calendar):
    with pytest.raises(Rejected):
        calendar.connector.create_event(booking(calendar.calendar_id, minutes=-30))

    assert calendar.event_ids() == []

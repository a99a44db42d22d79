"""Google Calendar's per-user quota: counted before each request, and a 403 userRateLimitExceeded shrinks it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import httplib2
import pytest

from connectors.base import RateLimited
from connectors.google_calendar import GoogleCalendar, GoogleCalendarConfig
from connectors.quota import OverQuota
from sandbox.google_calendar import GoogleCalendarSandbox, create_app
from sandbox.server import serve
from sync.quotas import LocalMeter

BOT = "textback@quota-project.iam.gserviceaccount.com"
STAFF = "staff@example.com"
START = datetime(2031, 3, 4, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def google():
    sandbox = GoogleCalendarSandbox(user_rate_limit=3)
    sandbox.add_calendar(STAFF, owners=[BOT])
    with serve(create_app(sandbox)) as served:
        yield sandbox, served.url


def calendar(google, monkeypatch, meter, *, per_second: int) -> GoogleCalendar:
    sandbox, url = google
    monkeypatch.setenv("GOOGLE_QUOTA_CREDENTIALS", json.dumps(sandbox.oauth.new_service_account(
        BOT, token_uri=url + "/token")))
    config = GoogleCalendarConfig.model_validate({"type": "google", "calendars": [STAFF], "base_url": url,
                                                  "credentials": "env:GOOGLE_QUOTA_CREDENTIALS",
                                                  "requests_per_second": per_second})
    return GoogleCalendar(config, http=httplib2.Http(timeout=5), meter=meter)


def ask(connector: GoogleCalendar, times: int) -> None:
    for _ in range(times):
        connector.free_busy(calendars=[STAFF], start=START, end=START + timedelta(hours=8))


def test_requests_past_the_per_user_quota_wait_for_their_slot_instead_of_being_refused(google, monkeypatch):
    connector = calendar(google, monkeypatch, LocalMeter(), per_second=3)

    with pytest.raises(OverQuota) as held:
        ask(connector, 10)

    assert google[0].rate_limited == 0 and 0 < held.value.retry_after <= 1.2


def test_a_quota_set_higher_than_the_projects_shrinks_at_the_first_refusal(google, monkeypatch):
    meter = LocalMeter()
    connector = calendar(google, monkeypatch, meter, per_second=10)

    with pytest.raises(RateLimited) as refused:
        ask(connector, 10)

    assert not isinstance(refused.value, OverQuota) and google[0].rate_limited == 1
    assert meter.limit(connector.quota) == 8

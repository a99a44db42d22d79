"""Graph's MailboxConcurrency: at most four requests in flight per app and mailbox, the fifth waits its turn."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from connectors.base import RateLimited
from connectors.outlook import OutlookCalendar, OutlookConfig
from connectors.quota import OverQuota
from sandbox.graph_stack import MicrosoftStack
from sync.quotas import LocalMeter

STAFF = "intake@contoso.com"
START = datetime(2031, 3, 4, 14, 0, tzinfo=timezone.utc)


@pytest.fixture
def ms():
    with MicrosoftStack.start() as stack:
        yield stack


def outlook(ms, monkeypatch, meter=None) -> OutlookCalendar:
    app = ms.identity.new_app()
    ms.graph.add_mailbox(app.tenant_id, STAFF)
    monkeypatch.setenv("OUTLOOK_CONCURRENCY_SECRET", app.client_secret)
    config = OutlookConfig.model_validate({"type": "outlook", "tenant_id": app.tenant_id, "client_id": app.client_id,
                                           "client_secret": "env:OUTLOOK_CONCURRENCY_SECRET", "calendars": [STAFF],
                                           **ms.connector_urls()})
    return OutlookCalendar(config, meter=meter)


def six_at_once(ms, calendar: OutlookCalendar) -> list[BaseException]:
    calendar.free_busy(calendars=[STAFF], start=START, end=START + timedelta(hours=8))  # token fetched once
    ms.graph.faults.delay_next("/v1.0/users", seconds=1.0, times=6)
    failures: list[BaseException] = []
    start = threading.Barrier(6)

    def ask() -> None:
        start.wait()
        try:
            calendar.free_busy(calendars=[STAFF], start=START, end=START + timedelta(hours=8))
        except RateLimited as exc:
            failures.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def test_the_sandbox_throttles_a_fifth_request_in_flight_for_one_mailbox(ms, monkeypatch):
    failures = six_at_once(ms, outlook(ms, monkeypatch))

    assert ms.graph.throttled == 2 and len(failures) == 2


def test_with_the_meter_the_fifth_request_waits_for_a_slot_and_graph_throttles_nothing(ms, monkeypatch):
    failures = six_at_once(ms, outlook(ms, monkeypatch, meter=LocalMeter()))

    assert ms.graph.throttled == 0
    assert len(failures) == 2 and all(isinstance(each, OverQuota) for each in failures)

"""bench/chaos.py at CI size: real `textback serve` + `textback worker` processes, SIGKILLed mid-run,
vendors failing a share of requests, every webhook replayed out of order — nothing lost, nothing twice."""

from __future__ import annotations

import shutil

import pytest

from bench import chaos

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def test_sixty_missed_calls_through_worker_kills_a_web_kill_faults_and_replays_end_exactly_once(tmp_path):
    # Given / When: 60 missed calls, a quarter texting through to a booking, the worker SIGKILLed twice and the
    # web process once, 20% of vendor requests failing, then every webhook sent 3 more times, shuffled
    report = chaos.run(calls=60, book_share=0.25, worker_kills=2, web_kills=1, fault_share=0.2, replay=3,
                       store="sqlite", seed=14, threads=8, rate=20, timeout=240, claim_seconds=10, workdir=tmp_path)
    # Then: every caller texted and in the CRM once, every booking once in calendar and CRM, no row stuck
    assert report.worker_kills == 2 and report.web_kills == 1 and report.replays > 3 * 60
    assert report.counts["faults"] > 0
    assert (report.counts["lost"], report.counts["duplicated"], report.counts["stuck"]) == (0, 0, 0), report.problems
    assert report.counts["contacts"] == 60 and report.booked == report.counts["events"] == report.counts["meetings"]
    assert report.booked == report.bookers, report.problems
    assert report.counts["secrets_in_logs"] == []
    assert not [p for p in report.problems if "dead rows" not in p], report.problems


def test_the_broker_gone_for_seconds_and_the_database_cut_off_mid_run_lose_and_duplicate_nothing(tmp_path):
    # Given / When: 40 missed calls on PostgreSQL, a fifth texting through to a booking; mid-run the redis-server
    # is stopped for 5 s (it comes back empty: every queued message is gone) and every connection to PostgreSQL
    # is reset and refused for 3 s; the worker is SIGKILLed once as well
    report = chaos.run(calls=40, book_share=0.2, worker_kills=1, web_kills=0, fault_share=0.0, replay=0,
                       store="postgres", seed=3, threads=8, rate=8, timeout=240, claim_seconds=10,
                       workdir=tmp_path, redis_outage=5, database_outage=3)
    # Then: both outages happened, and the end state is the same as without them
    assert report.outages == ["redis 5 s", "database 3 s"] or report.outages == ["database 3 s", "redis 5 s"]
    assert (report.counts["lost"], report.counts["duplicated"], report.counts["stuck"]) == (0, 0, 0), report.problems
    assert report.counts["contacts"] == 40 and report.booked == report.bookers == report.counts["events"]
    assert report.counts["secrets_in_logs"] == []

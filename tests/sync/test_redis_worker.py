"""The outbox on a real Redis broker with a real Dramatiq worker: retries, Retry-After, dead letters."""

from __future__ import annotations

import time
from datetime import timedelta

import dramatiq
import pytest
from sqlalchemy import select

from connectors.registry import validate_connector
from core import textback as core_textback
from core.config import Settings, load_tenants
from core.outbox import Pending
from core.store.tables import Message, OutboxRow
from sync import actors
from sync.broker import make_broker
from sync.redis_broker import queues_lost
from sync.runtime import Runtime
from sync.worker import Worker
from tests.webhooks.conftest import BUSINESS, CALLER, texts_to


@pytest.fixture
def redis_runtime(redis_url, sqlite_db, tenants_path):
    broker = make_broker(redis_url)
    actors.bind(broker)
    runtime = Runtime(settings=Settings(database_url=sqlite_db.url, redis_url=redis_url),
                      db=sqlite_db, tenants=load_tenants(tenants_path, validate_connector=validate_connector))
    runtime.dispatcher = actors.DramatiqDispatcher(runtime)
    actors.configure(runtime)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    yield runtime
    worker.stop()
    broker.close()


def _miss_a_call(runtime: Runtime, call_sid: str = "CA" + "7" * 32) -> None:
    pending = Pending()
    with runtime.db.transaction() as s:
        core_textback.dial_completed(s, tenant=runtime.tenants.get("smith-law"), call_sid=call_sid, caller=CALLER,
                                     called=BUSINESS, dial_status="no-answer", now=runtime.now(), pending=pending)
    runtime.dispatch(pending.ids)


def _wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _rows(runtime: Runtime) -> list[OutboxRow]:
    with runtime.db.transaction() as s:
        return list(s.scalars(select(OutboxRow).order_by(OutboxRow.id)))


def test_a_missed_call_is_texted_through_redis(redis_runtime, stack):
    _miss_a_call(redis_runtime)

    _wait_for(lambda: all(r.status == "done" for r in _rows(redis_runtime) if r.kind != "followup"))
    assert len(texts_to(stack)) == 1
    [followup] = [r for r in _rows(redis_runtime) if r.kind == "followup"]
    assert followup.status == "pending" and followup.not_before > redis_runtime.now()


def test_a_429_with_retry_after_is_retried_after_the_delay_and_sent_once(redis_runtime, stack):
    stack.twilio.faults.fail_next("/2010-04-01", status=429, retry_after=1)
    started = time.monotonic()

    _miss_a_call(redis_runtime)

    _wait_for(lambda: len(texts_to(stack)) == 1)
    assert time.monotonic() - started >= 0.9
    sms_row = next(r for r in _rows(redis_runtime) if r.kind == "send_sms")
    _wait_for(lambda: next(r for r in _rows(redis_runtime) if r.id == sms_row.id).status == "done")
    assert next(r for r in _rows(redis_runtime) if r.id == sms_row.id).attempts == 2


def test_an_outage_delays_the_text_and_never_drops_it(redis_runtime, stack):
    stack.twilio.faults.fail_next("/2010-04-01", status=503, times=2)

    _miss_a_call(redis_runtime)

    def recorded() -> str | None:
        with redis_runtime.db.transaction() as s:
            return s.scalar(select(Message.status).where(Message.direction == "outbound"))

    # The second 503 may hit the send or the reconciling lookup; either way one text, recorded as sent.
    _wait_for(lambda: len(texts_to(stack)) == 1 and recorded() in {"queued", "sent"}, timeout=30)
    time.sleep(0.3)
    assert len(texts_to(stack)) == 1


def test_a_rejected_send_fails_the_row_without_retrying(redis_runtime, stack):
    stack.twilio.faults.fail_next("/2010-04-01", status=400)

    _miss_a_call(redis_runtime)

    _wait_for(lambda: any(r.status == "failed" for r in _rows(redis_runtime)))
    failed = next(r for r in _rows(redis_runtime) if r.status == "failed")
    assert failed.kind == "send_sms" and failed.attempts == 1 and "rejected" in failed.last_error
    assert texts_to(stack) == []


def test_a_redis_restarted_empty_loses_no_text_the_relay_enqueues_its_rows_again_at_once(redis_url, sqlite_db,
                                                                                        tenants_path, stack):
    # Given: a missed call's text queued on Redis while no worker runs, and Redis then restarted empty
    broker = make_broker(redis_url)
    actors.bind(broker)
    runtime = Runtime(settings=Settings(database_url=sqlite_db.url, redis_url=redis_url),
                      db=sqlite_db, tenants=load_tenants(tenants_path, validate_connector=validate_connector))
    runtime.dispatcher = actors.DramatiqDispatcher(runtime)
    queues_lost(broker).remember()  # the broker's memory marker, as a worker's first relay pass sets it
    _miss_a_call(runtime)
    runtime.dispatcher.close()  # the "enqueued" notes are written
    assert all(row.enqueued_at is not None for row in _rows(runtime))
    broker.client.flushdb()

    # When: a worker starts (its relay's first pass)
    runtime.dispatcher = None
    worker = Worker(runtime, broker, threads=2, relay_interval=0.2, relay_grace=timedelta(0),
                    worker_timeout_ms=100).start()
    try:
        # Then: the text goes out now, once, not when the 15-minute staleness rule would catch it
        _wait_for(lambda: len(texts_to(stack)) == 1)
        time.sleep(0.5)
        assert len(texts_to(stack)) == 1
    finally:
        worker.stop()
        broker.close()


def test_the_news_that_redis_lost_its_queues_survives_a_worker_killed_before_it_acted(redis_url):
    # Given: the broker's memory marker, as a running deployment has it
    broker = make_broker(redis_url)
    queues_lost(broker).remember()
    assert queues_lost(broker)() is False

    # When: Redis comes back empty, and the worker whose relay sees it first is killed before it acts
    broker.client.flushdb()
    assert queues_lost(broker)() is True

    # Then: the next worker's relay still sees it (the marker is set only once the rows are forgotten)
    assert queues_lost(broker)() is True
    queues_lost(broker).remember()
    assert queues_lost(broker)() is False
    broker.close()

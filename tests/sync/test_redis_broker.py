"""The Redis broker wakes idle consumers on enqueue, so a quiet worker picks a text up at once."""

from __future__ import annotations

import threading
import time

import dramatiq
import redis

from sync.broker import make_broker
from sync.redis_broker import WAKE_BACKLOG

IDLE_TIMEOUT_MS = 10_000  # Dramatiq's stock consumer backs off towards this between empty polls


def _actor(broker, seen: list, done: threading.Event):
    @dramatiq.actor(broker=broker, queue_name="wake-test", max_retries=0)
    def note(value: int) -> None:
        seen.append((value, time.monotonic()))
        done.set()

    return note


def _worker(broker) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=IDLE_TIMEOUT_MS)
    worker.start()
    return worker


def test_an_idle_consumer_is_woken_by_the_enqueue_not_by_its_next_poll(redis_url):
    broker = make_broker(redis_url)
    seen, done = [], threading.Event()
    note = _actor(broker, seen, done)
    worker = _worker(broker)
    try:
        for idle in (3, 6):  # long enough for a polling consumer to back off to seconds between fetches
            time.sleep(idle)
            done.clear()
            sent = time.monotonic()
            note.send(idle)
            assert done.wait(timeout=IDLE_TIMEOUT_MS / 1000 + 5), "the message was never processed"
            # Woken, not polled: far sooner than the seconds a backed-off poll waits (generous for a busy box).
            assert seen[-1][1] - sent < 1.0, f"picked up {seen[-1][1] - sent:.2f} s after {idle} s idle"
    finally:
        worker.stop()
        broker.close()


def test_a_backlog_is_delivered_once_each_and_the_wake_list_stays_bounded(redis_url):
    broker = make_broker(redis_url)
    seen, done = [], threading.Event()
    note = _actor(broker, seen, done)
    count = WAKE_BACKLOG + 50
    for value in range(count):  # more tokens than the list keeps, and nobody consuming yet
        note.send(value)
    client = redis.Redis.from_url(redis_url)
    assert client.llen(broker.wake_key("wake-test")) == WAKE_BACKLOG

    worker = _worker(broker)
    try:
        deadline = time.monotonic() + 60
        while len(seen) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # nothing more arrives: no message is delivered twice
        assert sorted(value for value, _ in seen) == list(range(count))
    finally:
        worker.stop()
        client.close()
        broker.close()


def test_many_messages_go_to_redis_in_one_round_trip_and_survive_a_redis_that_forgot_its_scripts(redis_url):
    """enqueue_many: every message stored (delayed ones in the delay queue, due ones woken), a Redis restarted
    without the dispatch script reloads it, and nothing is stored twice."""
    broker = make_broker(redis_url)
    seen, done = [], threading.Event()
    note = _actor(broker, seen, done)
    client = redis.Redis.from_url(redis_url)
    commands: list[str] = []
    original = broker.client.connection_pool.get_connection

    def counting(*args, **kwargs):
        connection = original(*args, **kwargs)
        commands.append("connection")
        return connection

    try:
        client.script_flush()  # as a restarted Redis: the script the broker registered is gone
        broker.client.connection_pool.get_connection = counting
        broker.enqueue_many([(note.message(n), None) for n in range(5)] + [(note.message(99), 60_000)])
        broker.client.connection_pool.get_connection = original
        assert client.llen(f"{broker.namespace}:wake-test") == 5
        assert client.llen(f"{broker.namespace}:wake-test.DQ") == 1
        assert client.llen(broker.wake_key("wake-test")) >= 5  # a token per message due now (the retry adds more)
        assert len(commands) == 3  # the pipeline, the reload after NOSCRIPT, the pipeline again: not one per message

        commands.clear()
        tokens = client.llen(broker.wake_key("wake-test"))
        broker.client.connection_pool.get_connection = counting
        broker.enqueue_many([(note.message(n), None) for n in (5, 6)])
        broker.client.connection_pool.get_connection = original
        assert len(commands) == 1  # the script is known now: one round trip for both
        assert client.llen(f"{broker.namespace}:wake-test") == 7
        assert client.llen(broker.wake_key("wake-test")) == tokens + 2

        worker = _worker(broker)
        try:
            deadline = time.monotonic() + 30
            while len(seen) < 7 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            assert sorted(value for value, _ in seen) == [0, 1, 2, 3, 4, 5, 6]  # the delayed one is not due for a minute
        finally:
            worker.stop()
    finally:
        client.close()
        broker.close()

"""Dramatiq actors. Thin: take an id, call sync.runner, let the declared retries do the rest.

Retries are declared here: any exception is retried with exponential backoff (1 s doubling to
10 min, MAX_RETRIES times), a RateLimited one after its Retry-After, a record held by another job
soon and without using up the retries; when they run out the row is dead with its last error.
A job whose connection is at its request budget (OverQuota, before anything was sent) is queued
again for its slot with a broker delay: no worker thread waits, and no retry is used up.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

import dramatiq
from dramatiq.brokers.stub import StubBroker

from connectors.base import ConnectorError, RateLimited
from connectors.quota import OverQuota
from sync.locks import RecordBusy
from sync.runner import run_job, mark_dead
from sync.runtime import Runtime

log = logging.getLogger(__name__)

MAX_RETRIES = 10
# Jobs waiting for one connection's next slot wake spread over this much, not all in the same millisecond.
THROTTLE_JITTER_MS = 250
# A job whose record another job is writing runs again this much later (a fresh message, not a retry).
BUSY_DELAY_MS = (200, 800)


def _retry_when(retries: int, exception: BaseException) -> bool:
    return retries < MAX_RETRIES

if dramatiq.broker.global_broker is None:
    # Actors must be declared on some broker at import; bind() moves them to the real one.
    dramatiq.set_broker(StubBroker())

_runtime: Runtime | None = None


def configure(runtime: Runtime) -> None:
    global _runtime
    _runtime = runtime


def current_runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("sync.actors.configure(runtime) was not called in this process")
    return _runtime


@dramatiq.actor(queue_name="outbox")
def outbox_exhausted(message_data: dict, retry_info: dict) -> None:
    """Retries exhausted: the row becomes a visible dead letter (replay with `textback outbox replay`)."""
    mark_dead(current_runtime(), message_data["args"][0], f"gave up after {retry_info.get('retries')} tries")


@dramatiq.actor(queue_name="outbox", retry_when=_retry_when, min_backoff=1_000, max_backoff=600_000,
                on_retry_exhausted=outbox_exhausted.actor_name)
def run_outbox(outbox_id: int) -> None:
    try:
        run_job(current_runtime(), outbox_id)
    except RecordBusy as exc:
        # Waiting for another job's lock is neither a failed attempt nor a retry (run_job gave its claim
        # back), however long a batch holding many records takes: a fresh message for shortly after.
        log.info("outbox %s waits: %s", outbox_id, exc)
        run_outbox.send_with_options(args=(outbox_id,), delay=random.randint(*BUSY_DELAY_MS))
    except OverQuota as exc:
        # The request over budget was not sent: a fresh message for when the budget has a slot; retries untouched.
        delay_ms = max(1, int(exc.retry_after * 1000)) + random.randint(0, THROTTLE_JITTER_MS)
        log.debug("outbox %s waits %d ms for its slot: %s", outbox_id, delay_ms, exc)
        run_outbox.send_with_options(args=(outbox_id,), delay=delay_ms)
    except RateLimited as exc:
        delay_ms = int((exc.retry_after if exc.retry_after is not None else 1.0) * 1000)
        raise dramatiq.Retry(str(exc), delay=max(delay_ms, 100)) from exc
    except ConnectorError as exc:
        # An expected failure (a vendor outage): one line, then the declared backoff. Anything else is a bug
        # and propagates with its traceback; it is retried and dead-lettered all the same.
        log.warning("outbox %s will be retried: %s: %s", outbox_id, type(exc).__name__, exc)
        raise dramatiq.Retry(str(exc)) from exc


ACTORS = (run_outbox, outbox_exhausted)


def bind(broker: dramatiq.Broker) -> None:
    """Make `broker` carry our actors (the process-wide broker is chosen at run time, not import time)."""
    dramatiq.set_broker(broker)
    for actor in ACTORS:
        actor.broker = broker
        broker.declare_actor(actor)


BROKER_DELAY_LIMIT = timedelta(minutes=10)
MARK_EVERY = 0.5  # seconds between the web process's and worker's batched "enqueued" notes


def _enqueue(broker: dramatiq.Broker, messages: list) -> None:
    """All in one round trip where the broker can (sync/redis_broker.py), else one by one."""
    if not messages:
        return
    if hasattr(broker, "enqueue_many"):
        broker.enqueue_many(messages)
        return
    for message, delay in messages:
        broker.enqueue(message, delay=delay)


class DramatiqDispatcher:
    """Hands committed outbox rows to the queue and notes when, so the relay leaves them alone.

    Rows due later go out with a broker delay (`delay_later_rows`), or are left to the relay,
    which sends them once due; the relay also re-sends them if a delayed delivery is lost. Rows due more
    than BROKER_DELAY_LIMIT ahead (the follow-up a first text schedules hours ahead) are always left to the
    relay: a Dramatiq worker holds every delayed message it fetched in memory until its time, and each
    one cost the worker a Redis round trip and a mark on the hot path of the first text.

    With `mark_every` (seconds), the notes are written by one UPDATE per interval for all the rows
    enqueued meanwhile, not one transaction per request (the web process under load). The relay's grace
    (10 s) is far longer than the interval; a note lost with the process only costs a duplicate enqueue,
    which the claim turns into a no-op.
    """

    def __init__(self, runtime: Runtime, *, delay_later_rows: bool = True, mark_every: float | None = None) -> None:
        from sync.relay import EnqueuedMarks

        self.runtime = runtime
        self.delay_later_rows = delay_later_rows
        self.marks = EnqueuedMarks(runtime, interval=mark_every) if mark_every else None

    def dispatch(self, outbox_ids: list[int], *, due: dict[int, datetime | None] | None = None) -> None:
        from sync.relay import due_times, mark_enqueued

        now, sent, messages = self.runtime.now(), [], []
        due = due if due is not None and set(outbox_ids) <= due.keys() else due_times(self.runtime, outbox_ids)
        for outbox_id in outbox_ids:
            not_before = due.get(outbox_id)
            delay_ms = int((not_before - now).total_seconds() * 1000) if not_before else 0
            if delay_ms > 0 and (not self.delay_later_rows or not_before - now > BROKER_DELAY_LIMIT):
                continue
            messages.append((run_outbox.message_with_options(args=(outbox_id,)), delay_ms if delay_ms > 0 else None))
            sent.append(outbox_id)
        _enqueue(run_outbox.broker, messages)
        if self.marks is not None:
            self.marks.add(sent)
        else:
            mark_enqueued(self.runtime, sent)

    def close(self) -> None:
        if self.marks is not None:
            self.marks.close()

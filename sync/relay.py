"""Re-enqueue outbox rows that were committed but never handed to the queue, or whose job was lost.

A pass picks up pending rows that are due and not claimed by a live worker, and that were
- never enqueued (the broker was down at commit, or the process died first) for `grace`, or
- claimed by a worker whose claim expired (it died mid-job), or
- enqueued longer than `stale_after` ago without running (the broker lost the message).
When the broker says it lost every message it held (a Redis restarted empty: `queues_lost`), the
pending rows' enqueued marks are forgotten at once, so each goes out again when due instead of
`stale_after` later; a second delivery of a row that did run is a no-op at its claim.
A row claimed MAX_ATTEMPTS times is dead instead ("claimed N times"), so no row loops for ever.
Each worker runs a pass at start and then every `relay_interval` seconds (TEXTBACK_RELAY_INTERVAL).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update

from core.jobs import OutboxStatus
from core.outbox import Dispatcher
from core.store.tables import OutboxRow
from sync.runner import MAX_ATTEMPTS, mark_dead
from sync.runtime import Runtime

log = logging.getLogger(__name__)


def relay_pending(
    runtime: Runtime, dispatcher: Dispatcher, *, grace: timedelta = timedelta(seconds=10),
    stale_after: timedelta = timedelta(minutes=15), limit: int = 500,
) -> list[int]:
    """Dispatch pending rows never enqueued after `grace`, or enqueued longer than `stale_after` ago."""
    now = runtime.now()
    with runtime.db.transaction() as session:
        rows = session.execute(
            select(OutboxRow.id, OutboxRow.attempts, OutboxRow.claimed_until).where(
                OutboxRow.status == OutboxStatus.pending,
                or_(OutboxRow.not_before.is_(None), OutboxRow.not_before <= now),
                or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now),
                or_(and_(OutboxRow.enqueued_at.is_(None), OutboxRow.created_at <= now - grace),
                    OutboxRow.claimed_until < now,
                    OutboxRow.enqueued_at <= now - stale_after),
            ).order_by(OutboxRow.id).limit(limit)
        ).all()
    ids = []
    for outbox_id, attempts, claimed_until in rows:
        if claimed_until is not None and attempts >= MAX_ATTEMPTS:
            mark_dead(runtime, outbox_id, f"claimed {attempts} times by workers that stopped before finishing it")
        else:
            ids.append(outbox_id)
    if ids:
        log.info("relay: re-enqueueing %d outbox rows", len(ids))
        dispatcher.dispatch(ids)
    return ids


def due_times(runtime: Runtime, outbox_ids: list[int]) -> dict[int, datetime | None]:
    if not outbox_ids:
        return {}
    with runtime.db.transaction() as session:
        rows = session.execute(select(OutboxRow.id, OutboxRow.not_before).where(OutboxRow.id.in_(outbox_ids)))
        found = dict(rows.all())
    return {i: found.get(i) for i in outbox_ids}


def mark_enqueued(runtime: Runtime, outbox_ids: list[int]) -> None:
    if not outbox_ids:
        return
    # Rows another transaction holds (a claim, a batch taking its companions) are passed over, not waited
    # for: that one changes them anyway, and waiting while it waits for one of ours is a deadlock. A row
    # passed over keeps no mark, so at worst the relay enqueues it again, which its claim makes harmless.
    free = (select(OutboxRow.id).where(OutboxRow.id.in_(sorted(set(outbox_ids)))).order_by(OutboxRow.id)
            .with_for_update(skip_locked=True))
    with runtime.db.transaction() as session:
        session.execute(update(OutboxRow).where(OutboxRow.id.in_(free.scalar_subquery()))
                        .values(enqueued_at=runtime.now()))


class EnqueuedMarks:
    """Notes which rows went to the broker, in one UPDATE every `interval` seconds for all of them."""

    def __init__(self, runtime: Runtime, *, interval: float) -> None:
        self.runtime, self.interval = runtime, interval
        self._ids: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, outbox_ids: list[int]) -> None:
        if not outbox_ids:
            return
        if self._stop.is_set():  # closed: nobody will write them later
            mark_enqueued(self.runtime, outbox_ids)
            return
        with self._lock:
            self._ids.extend(outbox_ids)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="outbox-enqueued-marks", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        with self._lock:
            ids, self._ids = self._ids, []
        if ids:
            try:
                mark_enqueued(self.runtime, ids)
            except Exception:  # noqa: BLE001 (the database is down: the relay re-enqueues them, harmlessly)
                log.warning("could not note %d enqueued outbox rows; the relay may enqueue them again", len(ids),
                            exc_info=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()


def forget_enqueued(runtime: Runtime) -> int:
    """The broker lost its messages: every pending row counts as never enqueued (the relay sends it when due)."""
    with runtime.db.transaction() as session:
        return session.execute(update(OutboxRow).where(OutboxRow.status == OutboxStatus.pending,
                                                       OutboxRow.enqueued_at.is_not(None))
                               .values(enqueued_at=None)).rowcount


class RelayThread(threading.Thread):
    """Runs the relay every `interval` seconds until stopped (one per worker process is enough)."""

    def __init__(self, runtime: Runtime, dispatcher: Dispatcher, *, interval: float = 5.0,
                 grace: timedelta = timedelta(seconds=10), queues_lost: Callable[[], bool] = lambda: False) -> None:
        super().__init__(name="outbox-relay", daemon=True)
        self.runtime, self.dispatcher, self.interval, self.grace = runtime, dispatcher, interval, grace
        self.queues_lost = queues_lost
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:  # a pass at start: a row left behind by a crash goes out now, not a period later
            try:
                if self.queues_lost():
                    forgotten = forget_enqueued(self.runtime)
                    remember = getattr(self.queues_lost, "remember", None)
                    if remember is not None:
                        remember()  # only now: a process that dies before this leaves the news for the next pass
                    log.warning("the job queue lost the messages it held (restarted empty?); %d pending outbox "
                                "rows are enqueued again", forgotten)
                relay_pending(self.runtime, self.dispatcher, grace=self.grace)
            except Exception as exc:  # the database or the broker is down: try again next period
                log.warning("relay pass failed (%s: %s); trying again in %gs", type(exc).__name__, exc, self.interval)
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop_event.set()

"""Re-enqueue outbox rows that were committed but never handed to the queue (or whose job was lost)."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update

from core.outbox import Dispatcher
from core.store.tables import OutboxRow
from sync.runtime import Runtime

log = logging.getLogger(__name__)


def relay_pending(
    runtime: Runtime, dispatcher: Dispatcher, *, grace: timedelta = timedelta(seconds=10),
    stale_after: timedelta = timedelta(minutes=15), limit: int = 500,
) -> list[int]:
    """Dispatch pending rows never enqueued after `grace`, or enqueued longer than `stale_after` ago."""
    now = runtime.now()
    with runtime.db.transaction() as session:
        ids = list(session.scalars(
            select(OutboxRow.id).where(
                OutboxRow.status == "pending",
                or_(OutboxRow.not_before.is_(None), OutboxRow.not_before <= now),
                or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now),
                or_(and_(OutboxRow.enqueued_at.is_(None), OutboxRow.created_at <= now - grace),
                    OutboxRow.enqueued_at <= now - stale_after),
            ).order_by(OutboxRow.id).limit(limit)
        ))
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
    with runtime.db.transaction() as session:
        session.execute(update(OutboxRow).where(OutboxRow.id.in_(outbox_ids)).values(enqueued_at=runtime.now()))


class RelayThread(threading.Thread):
    """Runs the relay every `interval` seconds until stopped (one per worker process is enough)."""

    def __init__(self, runtime: Runtime, dispatcher: Dispatcher, *, interval: float = 30.0) -> None:
        super().__init__(name="outbox-relay", daemon=True)
        self.runtime, self.dispatcher, self.interval = runtime, dispatcher, interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                relay_pending(self.runtime, self.dispatcher)
            except Exception:
                log.exception("relay pass failed; trying again in %.0fs", self.interval)

    def stop(self) -> None:
        self._stop_event.set()

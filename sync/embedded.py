"""textback in one process: the web app on loopback and an in-process Dramatiq worker on a StubBroker.

This is the embedded default the demo runs on (no Redis needed), and what the
end-to-end tests drive. The code paths are the production ones; only the
broker is in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import dramatiq
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import func, or_, select

from connectors import registry
from core.config import Settings, TenantDirectory
from core.store.db import Database
from core.store.tables import OutboxRow
from sandbox.server import ServedApp, free_port
from sync import actors
from sync.relay import RelayThread
from sync.runtime import Runtime
from webhooks.app import create_app


class Embedded:
    def __init__(self, *, db: Database, tenants: TenantDirectory, connector_factory=registry.build,
                 clock: Callable[[], datetime] | None = None, worker_threads: int = 2,
                 relay_interval: float = 5.0) -> None:
        port = free_port("127.0.0.1")
        settings = Settings(database_url=db.url, public_url=f"http://127.0.0.1:{port}", redis_url="stub://",
                            config=tenants.source or "tenants.yaml")
        kwargs = {"clock": clock} if clock else {}
        self.runtime = Runtime(settings=settings, db=db, tenants=tenants, connector_factory=connector_factory, **kwargs)
        self.broker = StubBroker()
        actors.bind(self.broker)
        actors.configure(self.runtime)
        # In memory, rows due later wait in the database for the relay, not in the broker's delay queue.
        self.runtime.dispatcher = actors.DramatiqDispatcher(self.runtime, delay_later_rows=False)
        self.worker = dramatiq.Worker(self.broker, worker_threads=worker_threads, worker_timeout=50)
        self.relay = RelayThread(self.runtime, self.runtime.dispatcher, interval=relay_interval)
        self.server = ServedApp(create_app(self.runtime), port=port)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> "Embedded":
        self.worker.start()
        self.relay.start()
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        self.relay.stop()
        self.worker.stop()
        self.runtime.close()

    def __enter__(self) -> "Embedded":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def drain(self, *, timeout: float = 30.0) -> None:
        """Wait until every dispatched outbox row that is due has run (follow-ups, retries included)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
            if "outbox" in self.broker.queues:
                self.broker.join("outbox", timeout=remaining_ms, fail_fast=False)
            self.worker.join()
            if self.pending_dispatched() == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.pending_dispatched()} outbox rows still pending after {timeout}s")
            time.sleep(0.02)

    def pending_dispatched(self) -> int:
        """Rows handed to the queue and due now (rows deferred to later are not waited for)."""
        now = self.runtime.now()
        with self.runtime.db.transaction() as session:
            return session.scalar(select(func.count()).select_from(OutboxRow).where(
                OutboxRow.status == "pending", OutboxRow.enqueued_at.is_not(None),
                or_(OutboxRow.not_before.is_(None), OutboxRow.not_before <= now)))

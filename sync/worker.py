"""A worker process: a Dramatiq worker for the outbox plus the relay, on the broker the settings name."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import timedelta

import dramatiq

from sync import actors
from sync.broker import make_broker
from sync.redis_broker import queues_lost
from sync.relay import RelayThread
from sync.two_way_timer import TwoWayTimer
from sync.runtime import Runtime

log = logging.getLogger(__name__)


class Worker:
    """The outbox worker and its relay; `start()` runs a relay pass at once, then every `relay_interval` s."""

    def __init__(self, runtime: Runtime, broker: dramatiq.Broker, *, threads: int = 8,
                 relay_interval: float = 5.0, relay_grace: timedelta = timedelta(seconds=10),
                 worker_timeout_ms: int = 1000, two_way: bool = False) -> None:
        self.runtime, self.broker = runtime, broker
        actors.bind(broker)
        actors.configure(runtime)
        if runtime.dispatcher is None:
            runtime.dispatcher = actors.DramatiqDispatcher(runtime, mark_every=actors.MARK_EVERY)
        self.worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=worker_timeout_ms)
        self.relay = RelayThread(runtime, runtime.dispatcher, interval=relay_interval, grace=relay_grace,
                                 queues_lost=queues_lost(broker))
        # Pulls and subscription upkeep (README "Two-way sync"); off where a caller drives them itself.
        self.timer = TwoWayTimer(runtime, runtime.dispatcher) if two_way else None

    def start(self) -> "Worker":
        self.worker.start()
        self.relay.start()
        if self.timer is not None:
            self.timer.start()
        return self

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.stop()
        self.relay.stop()
        self.worker.stop()
        close = getattr(self.runtime.dispatcher, "close", None)
        if close is not None:
            close()


def run_worker(make_runtime: Callable[[], Runtime], broker_url: str, *, threads: int, relay_interval: float,
               echo: Callable[[str], None] = print) -> None:
    """Run until SIGINT/SIGTERM."""
    broker = make_broker(broker_url)
    actors.bind(broker)
    runtime = make_runtime()
    runtime.warm(("sms",))  # the first text of each tenant does not pay for building its SMS connector
    worker = Worker(runtime, broker, threads=threads, relay_interval=relay_interval, two_way=True).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    echo(f"worker running ({threads} threads, relay every {relay_interval:g}s); Ctrl-C to stop")
    stop.wait()
    worker.stop()
    runtime.close()

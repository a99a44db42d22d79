"""Small pieces every emulator shares: ids, clocks, fault injection."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field


class IdSequence:
    """Thread-safe monotonically increasing ids (HubSpot-like numeric strings)."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._counter)


@dataclass
class Faults:
    """Scripted failures for tests: the next N requests matching a path prefix fail.

    `fail_next("/v3/calendars", status=429, times=2, retry_after=1)` makes the
    next two matching requests answer 429 with Retry-After: 1.
    """

    _queue: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, path_prefix: str, *, status: int, times: int = 1, retry_after: int | None = None) -> None:
        with self._lock:
            for _ in range(times):
                self._queue.append({"prefix": path_prefix, "status": status, "retry_after": retry_after})

    def take(self, path: str) -> dict | None:
        with self._lock:
            for i, fault in enumerate(self._queue):
                if path.startswith(fault["prefix"]):
                    return self._queue.pop(i)
        return None

"""One job at a time per CRM record, across threads and worker processes.

Two pushes for one new caller running at once could each find no contact (CRM search
indexes lag) and create two. Dramatiq's ConcurrentRateLimiter with a limit of one is
the mutex: on Redis when the broker is Redis (every worker shares it), in process
memory otherwise (the embedded single box). A job that finds the record locked raises
RecordBusy, retried soon and logged at INFO: contention is expected, not an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dramatiq.rate_limits import ConcurrentRateLimiter
from dramatiq.rate_limits.backend import RateLimiterBackend
from dramatiq.rate_limits.backends import StubBackend

from connectors.base import Transient

# Longer than any one push takes; a lock whose holder died expires by itself.
LOCK_TTL_MS = 120_000


class RecordBusy(Transient):
    """Another job holds the record's lock: expected under load, retried soon (sync/actors.py)."""


class RecordLocks:
    def __init__(self, backend: RateLimiterBackend | None = None) -> None:
        self.backend = backend or StubBackend()

    @classmethod
    def for_broker_url(cls, url: str) -> "RecordLocks":
        if url.startswith(("redis://", "rediss://", "unix://")):
            from dramatiq.rate_limits.backends import RedisBackend

            return cls(RedisBackend(url=url))
        return cls()

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        mutex = ConcurrentRateLimiter(self.backend, f"textback:{key}", limit=1, ttl=LOCK_TTL_MS)
        with mutex.acquire(raise_on_failure=False) as acquired:
            if not acquired:
                raise RecordBusy(f"{key} is being written by another job")
            yield

"""One job at a time per CRM record, across threads and worker processes.

Two pushes for one new caller running at once could each find no contact (CRM search
indexes lag) and create two. Each record has a mutex: a key holding its holder's token,
set only if free and deleted only by its holder, with a TTL so that a lock whose holder
died frees itself. On Redis when the broker is Redis (every worker shares it), in process
memory otherwise (the embedded single box). A job that finds the record locked raises
RecordBusy, retried soon and logged at INFO: contention is expected, not an error.

A batch (sync/crm_batch.py) takes the locks of up to a hundred callers at once with
`hold_all`: one round trip to Redis to take them all and one to free them, where a lock
at a time (Dramatiq's ConcurrentRateLimiter, used before) cost four to six round trips
per record, a tenth of a worker thread's time under a backlog (bench/crm_push.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Protocol

from connectors.base import Transient

# Longer than any one push takes; a lock whose holder died expires by itself.
LOCK_TTL_MS = 120_000
PREFIX = "textback:"


class RecordBusy(Transient):
    """Another job holds the record's lock: expected under load, retried soon (sync/actors.py)."""


class LockStore(Protocol):
    def acquire(self, keys: Sequence[str], token: str, ttl_ms: int) -> list[bool]:
        """Take each free key for `token`; which ones were taken (a key named twice is taken once)."""

    def release(self, keys: Sequence[str], token: str) -> None:
        """Free the keys `token` still holds."""


# "0" is a free lock as Dramatiq's ConcurrentRateLimiter left it (its release decrements the key to 0).
_ACQUIRE = """
local taken = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if (not holder) or holder == '0' then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    taken[i] = 1
  else
    taken[i] = 0
  end
end
return taken
"""

_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 1
"""


class RedisLockStore:
    """Locks in Redis, taken and freed many at a time in one script each (a single Redis, not a cluster:
    the keys of one batch live in different slots)."""

    def __init__(self, client) -> None:
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    def acquire(self, keys: Sequence[str], token: str, ttl_ms: int) -> list[bool]:
        return [bool(n) for n in self._acquire(keys=list(keys), args=[token, ttl_ms])] if keys else []

    def release(self, keys: Sequence[str], token: str) -> None:
        if keys:
            self._release(keys=list(keys), args=[token])


class MemoryLockStore:
    """Locks in this process (the embedded box: one process, every worker a thread of it)."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self._holders: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, keys: Sequence[str], token: str, ttl_ms: int) -> list[bool]:
        now, taken = self.clock(), []
        with self._lock:
            for key in keys:
                holder = self._holders.get(key)
                free = holder is None or holder[1] <= now
                if free:
                    self._holders[key] = (token, now + ttl_ms / 1000)
                taken.append(free)
        return taken

    def release(self, keys: Sequence[str], token: str) -> None:
        with self._lock:
            for key in keys:
                if self._holders.get(key, ("", 0.0))[0] == token:
                    del self._holders[key]


class RecordLocks:
    def __init__(self, store: LockStore | None = None) -> None:
        self.store = store or MemoryLockStore()

    @classmethod
    def for_broker_url(cls, url: str) -> "RecordLocks":
        if url.startswith(("redis://", "rediss://", "unix://")):
            import redis

            return cls(RedisLockStore(redis.Redis.from_url(url)))
        return cls()

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self.hold_all([key]) as [taken]:
            if not taken:
                raise RecordBusy(f"{key} is being written by another job")
            yield

    @contextlib.contextmanager
    def hold_all(self, keys: Sequence[str]) -> Iterator[list[bool]]:
        """Every free lock of `keys` at once; yields which were taken (in order), and frees them after."""
        token, taken = self.take(keys)
        try:
            yield taken
        finally:
            self.free([key for key, got in zip(keys, taken) if got], token)

    def take(self, keys: Sequence[str]) -> tuple[str, list[bool]]:
        """Every free lock of `keys` at once, for a holder that frees them itself (some sooner than others):
        the holder's token, and which were taken. Free them with `free(keys, token)`."""
        token = uuid.uuid4().hex
        return token, self.store.acquire([PREFIX + key for key in keys], token, LOCK_TTL_MS)

    def free(self, keys: Sequence[str], token: str) -> None:
        self.store.release([PREFIX + key for key in keys], token)

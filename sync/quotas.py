"""The meter connectors count their requests on (connectors/quota.py): in Redis, shared by every worker.

Each quota is a sliding-window log, the way HubSpot counts ("rolling 10 s"): a sorted set of the
times of the requests sent in the last window. A request is let through when the window holds
fewer than the budget, else the caller learns when the oldest entry leaves it (OverQuota), and the
job is re-scheduled for then. A sliding window is never looser than a vendor's fixed window (Clio's
minute), so one meter fits both. Times come from the Redis server, one clock for every box.

The window is padded by WINDOW_PAD: a request counted here reaches the vendor a few milliseconds
later, and two requests a full window apart here must not land inside one window there. When its
answer comes (`answered`), the request's entry moves to that moment: the vendor counted it at some
instant before, so a request slow to leave (a busy box, a new TLS connection) cannot let the next
window's first request land in the vendor's same window.

A 429 all the same shrinks the budget to SHRINK of what it was and holds every request of that
connection for Retry-After; the shrink lasts RECOVER_WINDOWS windows after the last 429, then the
declared budget applies again. The budget shrinks at most once per window (a burst of 429s is one
signal, not many) and never below MIN_SHARE of the declared one: a vendor failing requests at random
with 429s (the chaos run's faults) must not starve the connection to one request a minute. A vendor that reports its own count (Clio) lowers the budget to its
stated limit, and an exhausted window holds requests until the vendor's reset.

A concurrency limit (`hold`) is Dramatiq's ConcurrentRateLimiter on the same Redis: a slot per
request in flight, freed when it ends or, if its worker died, after HOLD_TTL_MS.

    textback:quota:<scope>        sorted set: one member per request in the window
    textback:quota:<scope>:state  hash: limit (shrunk or adopted), blocked_until (ms)
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

from connectors.quota import Concurrency, OverQuota, Quota

# A request waiting for a slot of a concurrency limit tries again this much later.
HOLD_RETRY = 0.25
# Longer than any request takes; a slot whose holder died frees itself.
HOLD_TTL_MS = 120_000
SHRINK = 0.8
MIN_SHARE = 0.25  # a budget never shrinks below this share of the declared one
RECOVER_WINDOWS = 10
WINDOW_PAD = 0.03  # of the window, at least MIN_PAD_MS
MIN_PAD_MS = 150
# Adopted vendor limits are re-read from every answer; one that stops being reported lapses after this.
ADOPTED_TTL_MS = 3_600_000


def padded_window_ms(quota: Quota) -> int:
    return quota.window_ms + max(MIN_PAD_MS, int(quota.window_ms * WINDOW_PAD))


def _recover_ms(quota: Quota) -> int:
    return max(60_000, RECOVER_WINDOWS * quota.window_ms)


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_TAKE = _NOW + """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[2], 'limit', 'blocked_until')
if state[1] then limit = math.min(limit, tonumber(state[1])) end
if state[2] and tonumber(state[2]) > now then return tonumber(state[2]) - now end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window * 2)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""

_ANSWERED = _NOW + """
redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
return 1
"""

_REFUSED = _NOW + """
local declared = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], 'limit') or declared)
local shrunk_at = tonumber(redis.call('HGET', KEYS[1], 'shrunk_at') or 0)
if now - shrunk_at >= tonumber(ARGV[5]) then
  local floor = math.max(1, math.ceil(declared * tonumber(ARGV[6])))
  redis.call('HSET', KEYS[1], 'limit', math.max(floor, math.floor(math.min(current, declared) * tonumber(ARGV[4]))),
             'shrunk_at', now)
end
local hold = now + tonumber(ARGV[2])
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked_until') or 0)
if hold > blocked then redis.call('HSET', KEYS[1], 'blocked_until', hold) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

_REPORTED = _NOW + """
local declared = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local remaining = tonumber(ARGV[3])
local reset = tonumber(ARGV[4])
if limit > 0 then
  local current = tonumber(redis.call('HGET', KEYS[1], 'limit') or declared)
  if limit < current then redis.call('HSET', KEYS[1], 'limit', limit) end
end
if remaining == 0 and reset > now then
  local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked_until') or 0)
  if reset > blocked then redis.call('HSET', KEYS[1], 'blocked_until', reset) end
end
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5])) end
return 1
"""


class RedisMeter:
    """Quotas counted in Redis, so every thread, process and box of one connection shares its budget."""

    def __init__(self, client) -> None:
        self.client = client
        self._take = client.register_script(_TAKE)
        self._answered = client.register_script(_ANSWERED)
        self._refused = client.register_script(_REFUSED)
        self._reported = client.register_script(_REPORTED)
        self._backend = None

    @classmethod
    def for_url(cls, url: str) -> "RedisMeter":
        import redis

        return cls(redis.Redis.from_url(url))

    def take(self, quota: Quota) -> str:
        ticket = uuid.uuid4().hex
        wait_ms = int(self._take(keys=_keys(quota), args=[quota.requests, padded_window_ms(quota), ticket]))
        if wait_ms > 0:
            raise OverQuota(quota, wait_ms / 1000)
        return ticket

    def answered(self, quota: Quota, ticket: str | None) -> None:
        if ticket is not None:
            self._answered(keys=_keys(quota)[:1], args=[ticket])

    def refused(self, quota: Quota, retry_after: float | None) -> None:
        hold_ms = int((retry_after if retry_after is not None else quota.seconds) * 1000)
        self._refused(keys=_keys(quota)[1:], args=[quota.requests, hold_ms, _recover_ms(quota), SHRINK,
                                                   quota.window_ms, MIN_SHARE])

    def reported(self, quota: Quota, *, limit: int | None, remaining: int | None, reset_at: float | None) -> None:
        reset_ms = int(reset_at * 1000) + MIN_PAD_MS if reset_at else 0
        self._reported(keys=_keys(quota)[1:], args=[quota.requests, limit or 0,
                                                    -1 if remaining is None else remaining, reset_ms,
                                                    ADOPTED_TTL_MS])

    @contextlib.contextmanager
    def hold(self, concurrency: Concurrency) -> Iterator[None]:
        from dramatiq.rate_limits import ConcurrentRateLimiter
        from dramatiq.rate_limits.backends import RedisBackend

        if self._backend is None:
            self._backend = RedisBackend(client=self.client)
        slots = ConcurrentRateLimiter(self._backend, f"textback:quota:{concurrency.scope}:in-flight",
                                      limit=concurrency.limit, ttl=HOLD_TTL_MS)
        with slots.acquire(raise_on_failure=False) as acquired:
            if not acquired:
                raise OverQuota(concurrency, HOLD_RETRY)
            yield

    def limit(self, quota: Quota) -> int:
        """The budget in force now (the declared one unless a 429 or the vendor lowered it)."""
        adopted = self.client.hget(_keys(quota)[1], "limit")
        return min(quota.requests, int(adopted)) if adopted is not None else quota.requests


def _keys(quota: Quota) -> list[str]:
    return [f"textback:quota:{quota.scope}", f"textback:quota:{quota.scope}:state"]


class LocalMeter:
    """The same rules in process memory, for the embedded single box (one process holds every worker)."""

    def __init__(self, clock=time.monotonic, wall=time.time) -> None:
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self._sent: dict[str, dict[int, float]] = defaultdict(dict)  # scope -> ticket -> counted at
        self._tickets = itertools.count(1)
        self._limit: dict[str, tuple[int, float]] = {}  # scope -> (limit, lapses at)
        self._blocked: dict[str, float] = {}
        self._shrunk_at: dict[str, float] = {}
        self._in_flight: dict[str, int] = defaultdict(int)

    def take(self, quota: Quota) -> int:
        now, window = self._clock(), padded_window_ms(quota) / 1000
        with self._lock:
            blocked = self._blocked.get(quota.scope, 0.0)
            if blocked > now:
                raise OverQuota(quota, blocked - now)
            limit = self._limit_now(quota, now)
            sent = self._sent[quota.scope]
            for ticket in [ticket for ticket, at in sent.items() if at <= now - window]:
                del sent[ticket]
            if len(sent) < limit:
                ticket = next(self._tickets)
                sent[ticket] = now
                return ticket
            wait = sorted(sent.values())[len(sent) - limit] + window - now
        raise OverQuota(quota, max(wait, 0.001))

    def answered(self, quota: Quota, ticket: int | None) -> None:
        now = self._clock()
        with self._lock:
            sent = self._sent[quota.scope]
            if ticket in sent:
                sent[ticket] = now

    def refused(self, quota: Quota, retry_after: float | None) -> None:
        now = self._clock()
        with self._lock:
            if now - self._shrunk_at.get(quota.scope, -math.inf) >= quota.seconds:
                floor = max(1, math.ceil(quota.requests * MIN_SHARE))
                shrunk = max(floor, math.floor(self._limit_now(quota, now) * SHRINK))
                self._limit[quota.scope] = (shrunk, now + _recover_ms(quota) / 1000)
                self._shrunk_at[quota.scope] = now
            hold = now + (retry_after if retry_after is not None else quota.seconds)
            self._blocked[quota.scope] = max(self._blocked.get(quota.scope, 0.0), hold)

    def reported(self, quota: Quota, *, limit: int | None, remaining: int | None, reset_at: float | None) -> None:
        now = self._clock()
        with self._lock:
            if limit and limit < self._limit_now(quota, now):
                self._limit[quota.scope] = (limit, now + ADOPTED_TTL_MS / 1000)
            if remaining == 0 and reset_at:
                hold = now + max(0.0, reset_at - self._wall()) + MIN_PAD_MS / 1000
                self._blocked[quota.scope] = max(self._blocked.get(quota.scope, 0.0), hold)

    @contextlib.contextmanager
    def hold(self, concurrency: Concurrency) -> Iterator[None]:
        with self._lock:
            if self._in_flight[concurrency.scope] >= concurrency.limit:
                raise OverQuota(concurrency, HOLD_RETRY)
            self._in_flight[concurrency.scope] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[concurrency.scope] -= 1

    def limit(self, quota: Quota) -> int:
        with self._lock:
            return self._limit_now(quota, self._clock())

    def _limit_now(self, quota: Quota, now: float) -> int:
        limit, lapses = self._limit.get(quota.scope, (quota.requests, math.inf))
        if lapses <= now:
            del self._limit[quota.scope]
            return quota.requests
        return min(limit, quota.requests)


def meter_for_url(url: str) -> RedisMeter | LocalMeter:
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisMeter.for_url(url)
    return LocalMeter()

"""Request budgets a connector declares, and the meter every worker counts them on.

A vendor limits how often one connection may call it (HubSpot: 100 or 190 requests per rolling
10 s per app and portal, search 5 per second; Clio: a per-minute limit per token, reported in
X-RateLimit-* headers; Graph: concurrent requests per mailbox; Google: requests per user per
second). Each connector declares its budgets as `Quota`s scoped to the connection and asks the
injected `Meter` for a slot before every request:

    meter.take(quota)       a slot now (a ticket), or OverQuota(retry_after) before anything is sent:
                            the job is re-scheduled for its slot by the queue (no worker thread waits)
    meter.answered(quota, ticket)
                            the answer came: the request is counted from now on, because the vendor
                            saw it at some moment between the slot and the answer (a request slow to
                            leave must not let the next window's first one land in the vendor's same
                            window)
    with counted(meter, quotas):
                            both around one request
    meter.refused(quota,s)  a 429 came anyway (another app on the same portal, a lower plan than
                            declared): the budget shrinks and nothing is sent for s seconds
    meter.reported(quota, limit=, remaining=, reset_at=)
                            the vendor's own count (Clio's headers): its lower limit is adopted, and
                            an exhausted window blocks until its reset
    with meter.hold(concurrency):
                            one of a limited number of requests in flight at once (Graph's
                            MailboxConcurrency), or OverQuota when all are taken

The meter is shared by every worker (Redis, sync/quotas.py); `Unmetered` is for a connector built
without one (a script, a test of the connector alone).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Hashable, Protocol

from connectors.base import RateLimited


@dataclass(frozen=True)
class Quota:
    """At most `requests` calls in any `seconds`-long window, for the connection named by `scope`."""

    scope: str
    requests: int
    seconds: float

    @property
    def window_ms(self) -> int:
        return int(self.seconds * 1000)


@dataclass(frozen=True)
class Concurrency:
    """At most `limit` requests in flight at once for `scope` (Graph: per app per mailbox)."""

    scope: str
    limit: int


class OverQuota(RateLimited):
    """The connection's budget has no slot now; nothing was sent. Run the job again after `retry_after`."""

    def __init__(self, quota: Quota | Concurrency, retry_after: float) -> None:
        budget = (f"{quota.requests} requests per {quota.seconds:g} s" if isinstance(quota, Quota)
                  else f"{quota.limit} requests at once")
        super().__init__(f"{quota.scope} is at its budget of {budget}; next slot in {retry_after:.2f} s",
                         retry_after=retry_after, status=None)
        self.quota = quota


class Meter(Protocol):
    def take(self, quota: Quota) -> Hashable | None:
        """Count one request against the quota, or raise OverQuota when it has no slot now."""
        ...

    def answered(self, quota: Quota, ticket: Hashable | None) -> None:
        """The request `take` let through has its answer: count it from now."""
        ...

    def refused(self, quota: Quota, retry_after: float | None) -> None:
        """The vendor answered 429 all the same: shrink the budget and hold requests for `retry_after`."""
        ...

    def reported(self, quota: Quota, *, limit: int | None, remaining: int | None, reset_at: float | None) -> None:
        """The vendor's own count for the window (limit, remaining, reset as a unix time)."""
        ...

    def hold(self, concurrency: Concurrency) -> contextlib.AbstractContextManager[None]:
        """One of the scope's slots for the duration of the block, or OverQuota when all are in use."""
        ...


class Unmetered:
    """No shared budget: every request goes out, 429s are left to the retries."""

    def take(self, quota: Quota) -> None:
        return None

    def answered(self, quota: Quota, ticket: Hashable | None) -> None:
        return None

    def refused(self, quota: Quota, retry_after: float | None) -> None:
        return None

    def reported(self, quota: Quota, *, limit: int | None, remaining: int | None, reset_at: float | None) -> None:
        return None

    def hold(self, concurrency: Concurrency) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


# Requests the job in progress (in this thread) has sent; None outside a job (sync/runner.py opens one).
_SENT_IN_JOB: ContextVar[int | None] = ContextVar("requests_sent_in_job", default=None)
# How long a job that has already sent requests waits in its thread for the next slot, in all; and how many
# threads of one process may wait so at once (the others stay free for the callers' texts).
MID_JOB_WAIT = 5.0
MID_JOB_WAITERS = 2
_waiters = threading.BoundedSemaphore(MID_JOB_WAITERS)


@contextlib.contextmanager
def job_requests() -> Iterator[None]:
    """The requests of one job. Its first request over budget raises OverQuota (the job goes back to the
    queue, no thread waits); once it has sent one, a later one waits for its slot, up to MID_JOB_WAIT in
    all, and at most MID_JOB_WAITERS threads of a process at once (the rest stay free for the callers'
    texts). Giving up mid-job wasted the slots already spent: with a budget shrunk by 429s (Clio at 150 a
    minute in bench/chaos.py) shared by hundreds of jobs of four requests each, every job took a slot or
    two and went back to the queue, and almost none finished."""
    token = _SENT_IN_JOB.set(0)
    try:
        yield
    finally:
        _SENT_IN_JOB.reset(token)


@contextlib.contextmanager
def counted(meter: Meter, quotas: Sequence[Quota]) -> Iterator[None]:
    """A slot of each quota (in order) for one request, counted again from the moment it is answered."""
    tickets = []
    try:
        for quota in quotas:
            tickets.append((quota, _take(meter, quota)))
        yield
    finally:
        for quota, ticket in tickets:
            meter.answered(quota, ticket)
        sent = _SENT_IN_JOB.get()
        if sent is not None and tickets:
            _SENT_IN_JOB.set(sent + 1)


def _take(meter: Meter, quota: Quota) -> Hashable | None:
    try:
        return meter.take(quota)
    except OverQuota as exc:
        if not _SENT_IN_JOB.get() or exc.retry_after > MID_JOB_WAIT or not _waiters.acquire(blocking=False):
            raise
        retry_after = exc.retry_after
    try:
        waited = 0.0
        while True:
            pause = max(retry_after, 0.01)
            time.sleep(pause)  # the meter's own clock decides the slot; this only paces the asking
            waited += pause
            try:
                return meter.take(quota)
            except OverQuota as again:
                if waited + again.retry_after > MID_JOB_WAIT:
                    raise
                retry_after = again.retry_after
    finally:
        _waiters.release()


def connection_scope(vendor: str, *identifying: str) -> str:
    """A stable name for one connection's budget that does not reveal its credentials."""
    return f"{vendor}:" + hashlib.sha256("\x1f".join(identifying).encode()).hexdigest()[:16]

"""Small pieces every emulator shares: ids, clocks, fault injection.

Faults are scripted per path prefix and served in the order they were scripted:

    faults.fail_next("/v3/calendars", status=429, retry_after=1)  # an error answer, in the vendor's shape
    faults.delay_next("/v3/calendars", seconds=5)  # handled normally, answered 5 s late
    faults.drop_next("/v3/calendars")              # the connection closes with no HTTP answer at all
    faults.drop_after_next("/v3/calendars")        # handled, then the connection closes unanswered
    faults.random_share(0.3, seed=1)               # besides the script: 30% of all requests fail somehow

`inject_faults(app, faults, respond=...)` wires all three into an emulator in one line. A delayed
request is handled before the wait, so a client that times out has still caused the change, the
case that tests idempotent retries; a dropped one never reaches the handler.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATUS, DELAY, DROP, DROP_AFTER = "status", "delay", "drop", "drop_after"


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
    _share: float = 0.0
    _delay: float = 1.5
    _random: random.Random = field(default_factory=random.Random)
    served: collections.Counter = field(default_factory=collections.Counter)

    def fail_next(self, path_prefix: str, *, status: int, times: int = 1, retry_after: int | None = None) -> None:
        self._script(path_prefix, times, kind=STATUS, status=status, retry_after=retry_after)

    def delay_next(self, path_prefix: str, *, seconds: float, times: int = 1) -> None:
        """Hold the answer to the next `times` matching requests back for `seconds`, then answer normally."""
        self._script(path_prefix, times, kind=DELAY, seconds=seconds)

    def drop_next(self, path_prefix: str, *, times: int = 1) -> None:
        """Close the connection of the next `times` matching requests without any HTTP answer."""
        self._script(path_prefix, times, kind=DROP)

    def drop_after_next(self, path_prefix: str, *, times: int = 1) -> None:
        """Handle the next `times` matching requests, then close their connections before the answer."""
        self._script(path_prefix, times, kind=DROP_AFTER)

    def random_share(self, share: float, *, seed: int | None = None, delay_seconds: float = 1.5) -> None:
        """Besides scripted faults, fail about `share` of all requests, each in one way drawn at random:
        429 with Retry-After: 1, 500, 502, 503, an answer `delay_seconds` late, a connection dropped
        before the request is handled or after. `served` counts them by kind (and status)."""
        with self._lock:
            self._share, self._delay = share, delay_seconds
            self._random.seed(seed)

    def clear(self) -> None:
        """Forget every scripted fault not yet served, and stop failing a random share."""
        with self._lock:
            self._queue.clear()
            self._share = 0.0

    def take(self, path: str, *, kinds: Collection[str] = (STATUS,)) -> dict | None:
        """Remove and return the first fault scripted for `path` if it is one of `kinds`, else None.

        Only the first matching fault is considered, so faults of different kinds taken at different
        layers of an emulator still happen in the order they were scripted.
        """
        with self._lock:
            for i, fault in enumerate(self._queue):
                if path.startswith(fault["prefix"]):
                    return self._queue.pop(i) if fault["kind"] in kinds else None
            return self._drawn(path, kinds) if self._share else None

    def _drawn(self, path: str, kinds: Collection[str]) -> dict | None:
        # The outer layer (delays, drops) and the emulator's own layer (status answers) each ask; each
        # draws among every kind and keeps only its own, so a request fails at most about `share` of the time.
        if self._random.random() >= self._share:
            return None
        kind = self._random.choice((STATUS, STATUS, STATUS, DELAY, DROP, DROP_AFTER))
        if kind not in kinds:
            return None
        status = self._random.choice((429, 500, 502, 503)) if kind == STATUS else None
        self.served[f"{kind} {status}" if status else kind] += 1
        return {"prefix": path, "kind": kind, "status": status, "retry_after": 1 if status == 429 else None,
                "seconds": self._delay}

    def _script(self, path_prefix: str, times: int, **fault: Any) -> None:
        entry = {"prefix": path_prefix, "status": None, "retry_after": None, "seconds": 0.0} | fault
        with self._lock:
            self._queue.extend(dict(entry) for _ in range(times))


def inject_faults(app: Starlette, faults: Faults, *, respond: Callable[[dict], Response] | None = None) -> None:
    """Serve `faults` on `app`, outside every middleware and route it has or will have.

    With `respond`, status faults are answered with `respond(fault)` (the vendor's error body) before
    anything else runs; without it, they are left for the emulator to `take()` where it chooses
    (after authentication, say), and only delays and drops are served here.
    """
    kinds = (STATUS, DELAY, DROP, DROP_AFTER) if respond else (DELAY, DROP, DROP_AFTER)
    build = app.build_middleware_stack
    # Starlette builds its middleware stack on the first request; wrapping the built stack is the only
    # place that sees the server's own `send`, and with it the connection a drop has to close.
    app.build_middleware_stack = lambda: _FaultInjector(build(), faults, kinds, respond)  # type: ignore[method-assign]


class _FaultInjector:
    def __init__(self, app: ASGIApp, faults: Faults, kinds: Collection[str],
                 respond: Callable[[dict], Response] | None) -> None:
        self.app, self.faults, self.kinds, self.respond = app, faults, kinds, respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fault = self.faults.take(scope["path"], kinds=self.kinds) if scope["type"] == "http" else None
        if fault is None:
            await self.app(scope, receive, send)
        elif fault["kind"] == DROP:
            await _drop_connection(receive, send)
        elif fault["kind"] == DROP_AFTER:
            await self.app(scope, receive, _dropping(send))
        elif fault["kind"] == DELAY:
            await self.app(scope, receive, _late(send, fault["seconds"]))
        else:
            await self.respond(fault)(scope, receive, send)


def _late(send: Send, seconds: float) -> Send:
    async def late_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            await asyncio.sleep(seconds)
        await send(message)
    return late_send


def _dropping(send: Send) -> Send:
    """A `send` that closes the connection where the answer would start: the request was handled."""
    dropped = False

    async def dropping_send(message: Message) -> None:
        nonlocal dropped
        if not dropped:
            dropped = True
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is None:
                raise RuntimeError("dropping a connection needs the app served by uvicorn (sandbox.server.serve)")
            transport.abort()
    return dropping_send


async def _drop_connection(receive: Receive, send: Send) -> None:
    # ASGI has no way to abort a connection. uvicorn's `send` is a method of the request cycle, which
    # holds the asyncio transport; aborting it before any response bytes means the client reads EOF
    # where the status line should be (httpx: RemoteProtocolError "Server disconnected ...").
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("dropping a connection needs the app served by uvicorn (sandbox.server.serve)")
    transport.abort()
    while (await receive())["type"] != "http.disconnect":
        pass

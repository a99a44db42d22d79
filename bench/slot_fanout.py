"""Availability fan-out: free/busy over 1, 5 and 10 staff calendars when every vendor request takes 100 ms.

A slot offer asks the tenant's calendar connector for the busy times of every staff calendar. With the
sandbox holding each answer back by `--latency` (default 100 ms), one round trip costs at least that; a
connector that asked calendar by calendar would cost N of them. Google's freeBusy.query and Graph's
getSchedule take many calendars per request, so the connectors ask once per query window. This measures
that through the real connectors (google-api-python-client, msal + httpx) against the sandbox. Run:

    .venv/bin/python -m bench.slot_fanout

Its last line reads `slot_fanout: 10 calendars = X× one round trip (google), Y× (outlook)`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import datetime, timedelta, timezone

from connectors import registry
from connectors.registry import validate_connector
from sandbox.stack import SandboxStack

CALENDARS = tuple(f"staff{i}@fanout.example" for i in range(10))
HORIZON = timedelta(days=14)  # the booking horizon a slot offer looks over


def timed(call, repeat: int) -> float:
    """Median wall time of `call` in ms."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the sandbox holds each answer")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    start = datetime(2031, 3, 3, 13, 0, tzinfo=timezone.utc)
    rows = []
    with SandboxStack.start(calendars=CALENDARS) as stack:
        os.environ.update(stack.env)
        vendors = {"google": (stack.google.faults, "/"), "outlook": (stack.microsoft.graph.faults, "/v1.0")}
        for name, (faults, prefix) in vendors.items():
            block = stack.connectors_yaml(calendars=list(CALENDARS), calendar=name)["calendar"]
            connector = registry.build(validate_connector("calendar", block))
            connector.free_busy(calendars=[CALENDARS[0]], start=start, end=start + HORIZON)  # tokens, discovery
            faults.delay_next(prefix, seconds=args.latency, times=10_000)
            one_trip = timed(lambda: connector.free_busy(calendars=[CALENDARS[0]], start=start,
                                                         end=start + timedelta(hours=1)), args.repeat)
            for count in (1, 5, 10):
                took = timed(lambda: connector.free_busy(calendars=list(CALENDARS[:count]), start=start,
                                                         end=start + HORIZON), args.repeat)
                rows.append((name, count, took, one_trip))
                print(f"{name:<8} {count:>2} calendars: {took:6.0f} ms = {took / one_trip:.2f}× one round trip "
                      f"({one_trip:.0f} ms)", flush=True)
            faults.clear()
            close = getattr(connector, "close", None)
            if close:
                close()
    ten = {name: took / trip for name, count, took, trip in rows if count == 10}
    print(f"slot_fanout: 10 calendars = {ten['google']:.2f}× one round trip (google), {ten['outlook']:.2f}× (outlook)")


if __name__ == "__main__":
    main()

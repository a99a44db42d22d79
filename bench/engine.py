"""Conversation turns per second per core with the rules interpreter, and the turn-time distribution.

    .venv/bin/python -m bench.engine [--seconds 10] [--processes 1]

The corpus is the scripted conversations in tests/core/engine/scripts (all four
verticals: answers, corrections, out-of-order replies, vague, hostile and
advice-seeking replies, injection attempts, emergencies, booking by text). Each
process replays them in a loop, timing every `advance()` call; the booking side
is simulated between turns as in the tests. With several processes the total is
divided by the process count, so the figure stays per core.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import statistics
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from core.engine.conversation import Action, Phase, State, advance, opening
from core.engine.playbook import Playbook, playbook_for

SCRIPTS = Path(__file__).resolve().parent.parent / "tests" / "core" / "engine" / "scripts"
NOW = datetime(2025, 3, 4, 10, 0, tzinfo=ZoneInfo("America/New_York"))
OFFERED = [{"calendar_id": "c", "start": f"2025-03-0{d}T{h}:00:00-05:00", "end": f"2025-03-0{d}T{h}:30:00-05:00",
            "label": label} for d, h, label in ((5, 10, "Wed Mar 5, 10:00 AM"), (5, 14, "Wed Mar 5, 2:00 PM"),
                                                 (6, 15, "Thu Mar 6, 3:00 PM"))]

Conversation = tuple[Playbook, State, list[str]]


def corpus() -> list[Conversation]:
    conversations = []
    for path in sorted(SCRIPTS.glob("*.yaml")):
        script = yaml.safe_load(path.read_text())
        for item in script["conversations"]:
            playbook = playbook_for(script["vertical"], item.get("override"))
            state = opening(playbook)[0]
            if "start" in item:
                state = State(phase=Phase(item["start"]["phase"]), answers=dict(item["start"].get("answers", {})))
            conversations.append((playbook, state, [turn["say"] for turn in item["turns"]]))
    return conversations


def replay(conversations: list[Conversation], seconds: float) -> list[int]:
    """Turn times in nanoseconds, replaying the corpus until `seconds` have passed."""
    timings: list[int] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for playbook, state, says in conversations:
            for said in says:
                started = time.perf_counter_ns()
                turn = advance(playbook, state, said, business="Smith & Lee", now=NOW)
                timings.append(time.perf_counter_ns() - started)
                state = turn.state
                if turn.action in (Action.offer_slots, Action.reschedule):
                    state = replace(state, phase=Phase.choosing, offered=OFFERED)
                elif turn.action is Action.book_slot:
                    state = replace(state, phase=Phase.booked, offered=[])
    return timings


def _worker(seconds: float) -> list[int]:
    conversations = corpus()
    replay(conversations, 0.5)  # warm-up: imports (dateparser), compiled lexicons, caches
    return replay(conversations, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        started = time.perf_counter()
        results = pool.map(_worker, [args.seconds] * args.processes)
        wall = time.perf_counter() - started
    timings = sorted(t for result in results for t in result)
    busy_seconds = sum(sum(result) for result in results) / 1e9
    per_core = len(timings) / busy_seconds
    quantiles = statistics.quantiles(timings, n=100)
    print(f"python {platform.python_version()} on {_cpu()}, {args.processes} process(es), {wall:.1f} s wall")
    print(f"turns: {len(timings)} over {len(corpus())} scripted conversations, replayed")
    print(f"turns per second per core: {per_core:,.0f}")
    print(f"turn time: p50 {quantiles[49] / 1e3:.0f} us, p99 {quantiles[98] / 1e3:.0f} us, "
          f"max {timings[-1] / 1e3:.0f} us")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()

"""How well replies are understood: the labelled caller-reply corpus, per vertical, with the misses listed.

    .venv/bin/python -m bench.understanding                    # rules interpreter
    .venv/bin/python -m bench.understanding --interpreter llm  # llm interpreter against the sandbox model
    .venv/bin/python -m bench.understanding --holdout          # replies written after tuning, never tuned on

The corpus is tests/core/engine/corpus/*.yaml: replies written the way people
text (typos, their own words, several answers at once, urgency and danger at
any step), each labelled with the value it must give the question asked, the
answers it gives other questions, and its intents. A reply is correct when all
three match exactly (intents compared on `WATCHED`). With `--interpreter llm`
the sandbox model answers either nothing (`--model empty`) or, adversarially,
an invented value for every question with no signals (`--model wrong`): the
validation and the rules' safety signals must keep the result as good.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from core.engine.interpreters import RULES
from core.engine.interpreters.base import Context, Interpreter, Reading, Signal
from core.engine.playbook import load_playbook

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "core" / "engine" / "corpus"
HOLDOUT = CORPUS.parent / "holdout"  # written after the tuning, never tuned on
NOW = datetime(2025, 3, 4, 10, 0, tzinfo=ZoneInfo("America/New_York"))  # a Tuesday, as in the engine tests
WATCHED = frozenset({Signal.emergency, Signal.urgent, Signal.human, Signal.withdraw, Signal.advice})


@dataclass(frozen=True)
class Case:
    vertical: str
    step: str
    say: str
    value: str | None
    others: dict[str, str]
    signals: frozenset[Signal]

    @classmethod
    def of(cls, vertical: str, raw: dict[str, Any]) -> "Case":
        return cls(vertical=vertical, step=raw["step"], say=raw["say"],
                   value=None if raw.get("value") is None else str(raw["value"]),
                   others={k: str(v) for k, v in (raw.get("others") or {}).items()},
                   signals=frozenset(Signal(s) for s in raw.get("signals", [])))


@dataclass
class Score:
    vertical: str
    total: int = 0
    correct: int = 0
    misses: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.correct / self.total if self.total else 0.0


def corpus(folder: Path = CORPUS) -> list[Case]:
    cases = []
    for path in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        cases += [Case.of(data["vertical"], raw) for raw in data["replies"]]
    return cases


def understood(case: Case, reading: Reading) -> tuple[bool, str]:
    """Whether the reading is what the label says, and what it got, for the misses list."""
    step = load_playbook(case.vertical).step(case.step)
    value = reading.value
    if value is None and reading.has(Signal.unsure) and step.unknown_ok:
        value = "unknown"  # the engine stores this for a question where "I don't know" is fine
    signals = reading.signals & WATCHED
    ok = value == case.value and dict(reading.others) == case.others and signals == case.signals
    got = f"value={value!r} others={dict(reading.others)} signals={sorted(s.value for s in signals)}"
    return ok, got


def read(case: Case, interpreter: Interpreter) -> Reading:
    playbook = load_playbook(case.vertical)
    context = Context(playbook=playbook, phase="asking", step=playbook.step(case.step), answers={}, offered=[],
                      now=NOW)
    return interpreter.read(case.say, context)


def score(interpreter: Interpreter = RULES, folder: Path = CORPUS) -> dict[str, Score]:
    scores: dict[str, Score] = {}
    for case in corpus(folder):
        tally = scores.setdefault(case.vertical, Score(case.vertical))
        ok, got = understood(case, read(case, interpreter))
        tally.total += 1
        tally.correct += ok
        if not ok:
            want = f"value={case.value!r} others={case.others} signals={sorted(s.value for s in case.signals)}"
            tally.misses.append(f"{case.vertical}/{case.step}: {case.say!r}: wanted {want}; got {got}")
    return scores


def wrong_model(body: dict[str, Any]) -> str:
    """A sandbox model that invents a value for every question and reports no signals."""
    system = body["messages"][0]["content"]
    steps = [part.split(" (")[0].strip() for part in system.split("Other questions")[-1].split(":", 1)[-1].split("|")]
    return json.dumps({"value": "definitely-not-an-option", "pick": 7, "window": None, "signals": [],
                       "others": [{"step": s, "value": "invented"} for s in steps if s]})


@contextmanager
def sandbox_llm(model: str) -> Iterator[Interpreter]:
    import httpx

    from connectors.chat_completions import HttpChatCompletions
    from core.engine.interpreters.llm import LLMInterpreter
    from core.engine.interpreters.settings import InterpreterSettings
    from sandbox.llm import LLMSandbox, create_app
    from sandbox.server import serve

    llm = LLMSandbox(api_keys={os.environ.get("TEXTBACK_BENCH_LLM_KEY", "sk-bench")}, models={"sandbox-model"},
                     responder=wrong_model if model == "wrong" else None)
    os.environ.setdefault("TEXTBACK_BENCH_LLM_KEY", "sk-bench")  # keys are references, never inline
    with serve(create_app(llm)) as served, httpx.Client() as http:
        settings = InterpreterSettings(type="llm", base_url=served.url + "/v1", model="sandbox-model",
                                       api_key="env:TEXTBACK_BENCH_LLM_KEY", timeout_seconds=5)
        yield LLMInterpreter(settings, chat=HttpChatCompletions(settings, http=http), fallback=RULES)


def report(scores: dict[str, Score]) -> str:
    lines = ["| vertical | replies | correct | rate |", "|---|---|---|---|"]
    for s in scores.values():
        lines.append(f"| {s.vertical} | {s.total} | {s.correct} | {s.rate:.1%} |")
    total, correct = sum(s.total for s in scores.values()), sum(s.correct for s in scores.values())
    lines.append(f"| all | {total} | {correct} | {correct / total:.1%} |")
    misses = [m for s in scores.values() for m in s.misses]
    lines += ["", f"Misses ({len(misses)}):", *[f"- {m}" for m in misses]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interpreter", choices=["rules", "llm"], default="rules")
    parser.add_argument("--model", choices=["empty", "wrong"], default="empty", help="the sandbox model, for llm")
    parser.add_argument("--holdout", action="store_true", help="the held-out replies instead of the corpus")
    args = parser.parse_args()
    folder = HOLDOUT if args.holdout else CORPUS
    if args.interpreter == "rules":
        print(report(score(RULES, folder)))
        return
    with sandbox_llm(args.model) as llm:
        print(report(score(llm, folder)))


if __name__ == "__main__":
    main()

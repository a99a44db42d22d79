"""Scripted conversations per vertical (tests/core/engine/scripts/*.yaml), run through the rules interpreter.

Each turn says something and states what must follow: the step asked next, the phase, the action, the pick,
the outcome, answers, handoff reason and urgency, words the reply must (or must not) contain. Between turns
the booking side is simulated: an offer (or a reschedule) puts the standard three times on the table, and a
booking confirms. Every reply of every turn must also pass the outbound guardrails and never echo the caller.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.engine import guardrails
from core.engine.conversation import Action, Phase, State, Turn, advance, opening
from core.engine.playbook import playbook_for
from tests.core.engine.conftest import BUSINESS, NOW, OFFERED

SCRIPTS = Path(__file__).parent / "scripts"
TURN_KEYS = {"say", "step", "phase", "action", "choice", "outcome", "answers", "absent", "reply", "not_reply",
             "no_reply", "reason", "urgency", "window_start"}


def _conversations() -> list[Any]:
    cases = []
    for path in sorted(SCRIPTS.glob("*.yaml")):
        script = yaml.safe_load(path.read_text())
        for conversation in script["conversations"]:
            cases.append(pytest.param(script["vertical"], conversation, id=f"{path.stem}: {conversation['name']}"))
    return cases


def test_every_vertical_has_at_least_25_scripted_conversations():
    for path in sorted(SCRIPTS.glob("*.yaml")):
        assert len(yaml.safe_load(path.read_text())["conversations"]) >= 25, path.name
    assert {p.stem for p in SCRIPTS.glob("*.yaml")} == {"law", "medical", "home_services", "real_estate"}


@pytest.mark.parametrize(("vertical", "conversation"), _conversations())
def test_scripted_conversation(vertical: str, conversation: dict):
    playbook = playbook_for(vertical, conversation.get("override"))
    state, _ = opening(playbook)
    if "start" in conversation:
        start = conversation["start"]
        state = State(phase=Phase(start["phase"]), step=start.get("step"), answers=dict(start.get("answers", {})),
                      offered=OFFERED if start["phase"] == "choosing" else [])
    for number, expected in enumerate(conversation["turns"], start=1):
        assert set(expected) <= TURN_KEYS, f"turn {number}: unknown keys {set(expected) - TURN_KEYS}"
        turn = advance(playbook, state, expected["say"], business=BUSINESS, now=NOW)
        _check(turn, expected, where=f"turn {number} ({expected['say']!r})", facts=playbook.fact_texts())
        state = _booking_side(turn)


def _booking_side(turn: Turn) -> State:
    if turn.action in (Action.offer_slots, Action.reschedule):
        return replace(turn.state, phase=Phase.choosing, offered=list(OFFERED))
    if turn.action is Action.book_slot:
        return replace(turn.state, phase=Phase.booked, offered=[])
    return turn.state


def _check(turn: Turn, expected: dict, *, where: str, facts: list[str]) -> None:
    said = " | ".join(turn.replies)
    context = f"{where}: replies {said!r}, state {turn.state}, action {turn.action}, outcome {turn.outcome}"
    for reply in turn.replies:
        assert reply.strip(), context
        assert guardrails.screen(reply.replace(BUSINESS, ""), facts=facts) == [], context
        assert len(expected["say"]) < 16 or expected["say"].lower() not in reply.lower(), f"echoed the caller: {context}"
    if turn.action is None:  # silence is only right once a booked caller was told they are all set
        assert turn.replies or expected.get("no_reply"), f"no reply and nothing to do: {context}"
    if "step" in expected:
        assert turn.state.step == expected["step"], context
    if "phase" in expected:
        assert turn.state.phase.value == expected["phase"], context
    if "action" in expected:
        assert (turn.action.value if turn.action else "none") == expected["action"], context
    if "choice" in expected:
        assert turn.choice == expected["choice"], context
    if "outcome" in expected:
        assert (turn.outcome.value if turn.outcome else "none") == expected["outcome"], context
    for key, value in expected.get("answers", {}).items():
        assert turn.state.answers.get(key) == value, f"answer {key}: {context}"
    for key in expected.get("absent", []):
        assert key not in turn.state.answers, f"answer {key} should be absent: {context}"
    for text in _listed(expected.get("reply")):
        assert text.lower() in said.lower(), f"expected {text!r}: {context}"
    for text in _listed(expected.get("not_reply")):
        assert text.lower() not in said.lower(), f"did not expect {text!r}: {context}"
    if expected.get("no_reply"):
        assert turn.replies == [], context
    if "reason" in expected:
        assert turn.handoff is not None and turn.handoff.reason == expected["reason"], context
    if "urgency" in expected:
        assert turn.handoff is not None and turn.handoff.urgency == expected["urgency"], context
    if "window_start" in expected:
        assert turn.state.answers["preferred_window"]["start"].startswith(expected["window_start"]), context


def _listed(value: Any) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)

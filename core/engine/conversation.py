"""The conversation state machine: pure, no I/O.

    asking ──answer──▶ asking … ──last answer──▶ offering (needs free/busy)
    offering ──slots found──▶ choosing ──"2"──▶ booking ──event created──▶ booked
                └─ none ─▶ handoff            └─ "none" ─▶ handoff

The engine never sends anything itself: it returns the replies (rendered from
the playbook's templates) and the action the sync layer must carry out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from core.engine.playbook import Playbook, number_choice


class Phase(str, enum.Enum):
    asking = "asking"
    offering = "offering"
    choosing = "choosing"
    booking = "booking"
    booked = "booked"
    handoff = "handoff"
    opted_out = "opted_out"


OPEN_PHASES = frozenset({Phase.asking, Phase.offering, Phase.choosing, Phase.booking})


class Action(str, enum.Enum):
    offer_slots = "offer_slots"
    book_slot = "book_slot"


@dataclass(frozen=True)
class State:
    phase: Phase
    step: str | None = None
    answers: dict[str, str] = field(default_factory=dict)
    offered: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Turn:
    state: State
    replies: list[str]
    action: Action | None = None
    choice: int | None = None  # 0-based index into state.offered for book_slot


def opening(playbook: Playbook) -> tuple[State, str]:
    """The state a new conversation starts in and the question the first text asks."""
    first = playbook.steps[0]
    return State(phase=Phase.asking, step=first.id), f"{playbook.intro} {first.ask}".strip()


def advance(playbook: Playbook, state: State, text: str, *, business: str) -> Turn:
    """One inbound message in, the next state plus what to say and do."""
    if state.phase is Phase.asking:
        return _answer(playbook, state, text)
    if state.phase is Phase.choosing:
        return _choose(playbook, state, text, business=business)
    if state.phase in (Phase.offering, Phase.booking):
        return Turn(state, [playbook.booking_wait])
    return Turn(state, [playbook.closed.format(business=business)])


def _answer(playbook: Playbook, state: State, text: str) -> Turn:
    step = playbook.step(state.step)
    value = step.interpret(text)
    if value is None:
        return Turn(state, [step.reask])
    answers = {**state.answers, step.id: value}
    following = playbook.after(step.id)
    if following is not None:
        return Turn(replace(state, step=following.id, answers=answers), [following.ask])
    return Turn(replace(state, phase=Phase.offering, step=None, answers=answers), [], Action.offer_slots)


def _choose(playbook: Playbook, state: State, text: str, *, business: str) -> Turn:
    words = text.lower().split()
    if any(w.strip(".,!") in {"none", "neither", "nope"} for w in words):
        return Turn(replace(state, phase=Phase.handoff, offered=[]), [playbook.declined.format(business=business)])
    index = number_choice(text, len(state.offered))
    if index is None:
        return Turn(state, [playbook.slot_reask.format(slots=slot_list(state.offered))])
    return Turn(replace(state, phase=Phase.booking), [], Action.book_slot, choice=index - 1)


def slot_list(offered: list[dict[str, Any]]) -> str:
    return ", ".join(f"{i}) {slot['label']}" for i, slot in enumerate(offered, start=1))

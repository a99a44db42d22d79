"""The engine's values: phases, actions, the conversation state and one turn's result.

Re-exported by core/engine/conversation.py, whose docstring is the contract.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class Phase(str, enum.Enum):
    asking = "asking"
    offering = "offering"
    choosing = "choosing"
    booking = "booking"
    booked = "booked"
    handoff = "handoff"
    closed = "closed"  # not a fit, or the caller no longer needs anything
    opted_out = "opted_out"


OPEN_PHASES = frozenset({Phase.asking, Phase.offering, Phase.choosing, Phase.booking})


class Action(str, enum.Enum):
    offer_slots = "offer_slots"
    book_slot = "book_slot"
    handoff = "handoff"
    reschedule = "reschedule"
    cancel_booking = "cancel_booking"
    relay = "relay"  # after a handoff: the caller's text goes to staff (and the CRM log), the bot stays quiet


class Outcome(str, enum.Enum):
    qualified = "qualified"
    not_fit = "not_fit"
    needs_human = "needs_human"
    withdrawn = "withdrawn"


@dataclass(frozen=True)
class State:
    phase: Phase
    step: str | None = None
    answers: dict[str, Any] = field(default_factory=dict)
    offered: list[dict[str, Any]] = field(default_factory=list)
    misses: int = 0  # unclear replies in a row to the current question; after a handoff, texts relayed since

    @classmethod
    def from_row(cls, *, phase: str, step: str | None, answers: Mapping[str, Any],
                 offered: Iterable[dict[str, Any]]) -> "State":
        """Read the state stored on a conversation row (see `step_column`)."""
        step_id, _, misses = (step or "").partition("#")
        return cls(phase=Phase(phase), step=step_id or None, answers=dict(answers), offered=list(offered),
                   misses=int(misses) if misses.isdigit() else 0)

    def step_column(self) -> str | None:
        """`conversations.step`: the step id, with `#n` after n unclear replies (kept out of the answers,
        which go to the CRM and the calendar event); after a handoff, `#n` alone counts the texts relayed."""
        if self.step is None:
            return f"#{self.misses}" if self.misses else None
        return f"{self.step}#{self.misses}" if self.misses else self.step


@dataclass(frozen=True)
class Handoff:
    reason: str  # emergency | urgent | asked_for_person | unanswerable_question | hostile | not_understood |
    #              declined_times | unsafe_reply | a playbook rule's reason
    urgency: str  # emergency | urgent | normal
    summary: str  # for staff and the CRM: answers, urgency, last message (transcript reference added on store)


@dataclass(frozen=True)
class Turn:
    state: State
    replies: list[str]
    action: Action | None = None
    choice: int | None = None  # book_slot: 0-based index into state.offered
    outcome: Outcome | None = None
    handoff: Handoff | None = None  # set with Action.handoff


def slot_list(offered: list[dict[str, Any]]) -> str:
    return ", ".join(f"{i}) {slot['label']}" for i, slot in enumerate(offered, start=1))

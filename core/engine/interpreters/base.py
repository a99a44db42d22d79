"""The interpreter protocol: a caller's reply in, a `Reading` out. Interpreters never write what the caller reads.

    class Interpreter(Protocol):
        name: str
        def read(self, text: str, context: Context) -> Reading: ...

`rules` (default, offline, deterministic) and `llm` (an OpenAI-compatible
endpoint, falling back to `rules`) both implement it. A Reading holds the value
for the question being asked, values for other questions the caller answered
ahead of time, a picked offered slot, a stated date/time window, and signals
(emergency, asks for a person, asks for advice, ...). What to do with it is the
engine's decision (core/engine/conversation.py).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from core.engine.playbook import Playbook, Step


class Signal(str, enum.Enum):
    emergency = "emergency"  # the playbook's emergency rule: tell them to call 911 and hand off
    urgent = "urgent"  # the playbook's urgency lexicon: flagged for staff
    human = "human"  # asks for a person
    bot_question = "bot_question"  # "is this a bot?": answered truthfully
    advice = "advice"  # asks for legal/clinical/financial advice
    price = "price"  # asks what something costs
    question = "question"  # asks something else
    hostile = "hostile"
    injection = "injection"  # tries to instruct the assistant; never changes behaviour
    reschedule = "reschedule"  # wants to move the appointment
    cancel_booking = "cancel_booking"  # wants to cancel the appointment (in words; bare CANCEL is an opt-out)
    decline = "decline"  # none of the offered times work
    withdraw = "withdraw"  # no longer needs anything
    unsure = "unsure"  # "I don't know"
    correction = "correction"  # "actually ...": may change an earlier answer
    health_details = "health_details"  # volunteered health information (sensitive playbooks discourage it)
    anytime = "anytime"  # any time works
    asap = "asap"  # as soon as possible


@dataclass(frozen=True)
class Window:
    """A stated time window in the caller's zone; `label` is how staff read it."""

    start: datetime
    end: datetime
    label: str
    day_stated: bool = True  # False: only a time of day ("after 5"), matched against offered times by clock

    def as_answer(self) -> dict[str, str]:
        """The documented `preferred_window` answer: {"start": ISO-8601, "end": ISO-8601}, with UTC offsets."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass(frozen=True)
class Reading:
    value: str | None = None  # the answer to the question being asked
    others: Mapping[str, str] = field(default_factory=dict)  # answers to other steps in the same reply
    signals: frozenset[Signal] = frozenset()
    pick: int | None = None  # 0-based index into the offered slots
    window: Window | None = None
    fact: str | None = None  # the topic of a business-approved fact the caller asks about

    def has(self, *signals: Signal) -> bool:
        return any(s in self.signals for s in signals)


@dataclass(frozen=True)
class Context:
    """What the engine is waiting for when the reply arrives."""

    playbook: Playbook
    phase: str  # core.engine.conversation.Phase value
    step: Step | None  # the question being answered, when asking
    answers: Mapping[str, Any]
    offered: Sequence[Mapping[str, Any]]  # offered slots, when choosing
    now: datetime  # aware, in the caller's time zone


class Interpreter(Protocol):
    name: str

    def read(self, text: str, context: Context) -> Reading:
        """Extract values and signals from one reply; never raises for what a caller types."""
        ...

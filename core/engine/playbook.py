"""Playbooks are data: YAML shipped in core/engine/playbooks/, one per vertical."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

PLAYBOOKS = Path(__file__).parent / "playbooks"


class Option(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    value: str
    label: str
    words: list[str] = []


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    ask: str
    kind: Literal["choice", "yes_no"]
    options: list[Option] = []
    reask: str

    def interpret(self, text: str) -> str | None:
        """The answer's value, or None when the reply does not answer this step."""
        if self.kind == "yes_no":
            return yes_no(text)
        return choice(text, self.options)


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    intro: str = ""  # said once, before the first question (e.g. "I can't give legal advice")
    steps: list[Step] = Field(min_length=1)
    offer: str
    no_slots: str
    slot_reask: str
    declined: str
    booking_wait: str
    slot_taken: str
    closed: str

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    def after(self, step_id: str) -> Step | None:
        ids = [s.id for s in self.steps]
        index = ids.index(step_id) + 1
        return self.steps[index] if index < len(self.steps) else None


@cache
def load_playbook(name: str) -> Playbook:
    return Playbook.model_validate(yaml.safe_load((PLAYBOOKS / f"{name}.yaml").read_text()))


_WORD = re.compile(r"[a-z0-9]+")
_ORDINALS = {"first": 1, "one": 1, "1st": 1, "second": 2, "two": 2, "2nd": 2, "third": 3, "three": 3, "3rd": 3,
             "fourth": 4, "four": 4, "4th": 4, "fifth": 5, "five": 5, "5th": 5}
_YES = {"yes", "y", "yeah", "yep", "yup", "sure", "correct", "true", "ya"}
_NO = {"no", "n", "nope", "nah", "not", "none", "false"}


def number_choice(text: str, count: int) -> int | None:
    """A 1-based pick from a numbered list: "2", "#2", "the second one", "option 3"."""
    words = _WORD.findall(text.lower())
    picks = {int(w) for w in words if w.isdigit()} | {_ORDINALS[w] for w in words if w in _ORDINALS}
    picks = {p for p in picks if 1 <= p <= count}
    return picks.pop() if len(picks) == 1 else None


def choice(text: str, options: list[Option]) -> str | None:
    index = number_choice(text, len(options))
    if index is not None:
        return options[index - 1].value
    lowered = " " + " ".join(_WORD.findall(text.lower())) + " "
    hits = {o.value for o in options for w in [o.label.lower(), *o.words] if f" {w} " in lowered}
    return hits.pop() if len(hits) == 1 else None


def yes_no(text: str) -> str | None:
    words = set(_WORD.findall(text.lower()))
    said_yes, said_no = bool(words & _YES), bool(words & _NO)
    if said_yes == said_no:
        return None
    return "yes" if said_yes else "no"

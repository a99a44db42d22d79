"""Playbooks are data: YAML shipped in core/engine/playbooks/, one per vertical, overridable per tenant.

A playbook is a list of steps (one question each, the slot type it fills, its
validation, its re-ask and its transition guard `when`), qualification rules
(not a fit / needs a person), an emergency rule, an urgency lexicon, facts the
business has approved for the assistant to state, and every sentence the
assistant may say. Every text is checked by the guardrails when the playbook
loads, so a tenant override cannot make the assistant promise, price or advise.
"""

from __future__ import annotations

import copy
import json
import string
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, model_validator

from core.engine import guardrails
from core.engine.interpreters.text import normalise, words

PLAYBOOKS = Path(__file__).parent / "playbooks"
BETTER_TIME = "better_time"  # the built-in step asked after "none of those work"

SlotKind = Literal["choice", "yes_no", "text", "place", "window", "name", "caller_name", "money"]
T = TypeVar("T")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def phrases(values: Iterable[str]) -> tuple[str, ...]:
    """Lexicon phrases in the form replies are matched in: lower case, punctuation as spaces ("pre-approved")."""
    return tuple(dict.fromkeys(" ".join(words(normalise(v))) for v in values if words(normalise(v))))


Phrases = Annotated[tuple[str, ...], AfterValidator(phrases)]


def _answer_values(raw: Any) -> Any:
    """YAML reads an unquoted yes/no as a boolean; a condition on a yes/no answer means the strings."""
    if not isinstance(raw, dict):
        return raw
    return {key: [("yes" if v else "no") if isinstance(v, bool) else v for v in (vs if isinstance(vs, list) else [vs])]
            for key, vs in raw.items()}


Conditions = Annotated[dict[str, list[str]], BeforeValidator(_answer_values)]


class Option(_Frozen):
    value: str
    label: str
    words: Phrases = ()  # what callers say for it (and its label); word boundaries, plain suffixes allowed
    min: float | None = None  # money bands: the band holds amounts in [min, max)
    max: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _phrases(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "label" in raw:
            raw = {**raw, "words": [*raw.get("words", []), str(raw["label"])]}
        return raw


class ServiceArea(_Frozen):
    zips: list[str] = []
    zip_prefixes: list[str] = []
    cities: list[str] = []

    def covers(self, place: str) -> bool:
        """Whether a place answer (a ZIP code or a city) is inside; an undefined area covers everything."""
        if not self.defined:
            return True
        return self.covers_zip(place) if place.isdigit() else self.covers_city(place)

    def covers_zip(self, zip_code: str) -> bool:
        return zip_code in self.zips or any(zip_code.startswith(p) for p in self.zip_prefixes)

    def covers_city(self, city: str) -> bool:
        return city.lower() in {c.lower() for c in self.cities}

    @property
    def defined(self) -> bool:
        return bool(self.zips or self.zip_prefixes or self.cities)


class Step(_Frozen):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str  # how staff see this answer in the handoff summary and the CRM
    ask: str
    kind: SlotKind
    reask: str
    options: list[Option] = []
    when: Conditions = {}  # asked only when these earlier answers hold (the step's transition guard)
    required: bool = False  # not understood twice: a required step goes to a person, any other keeps the words
    unknown_ok: bool = False  # "I don't know" is a fine answer, stored as "unknown"
    yes_words: Phrases = ()  # yes_no: phrases that mean yes here, also when said before the question
    no_words: Phrases = ()
    area: ServiceArea | None = None  # place: the business's service area
    unit: int = 1  # money: a bare number below 10,000 counts in these units ("450" -> 450,000 with 1000)


    @model_validator(mode="after")
    def _shape(self) -> "Step":
        if self.kind in ("choice", "money") and not self.options:
            raise ValueError(f"step {self.id}: a {self.kind} step needs options")
        if self.kind == "money" and any(o.min is None and o.max is None for o in self.options):
            raise ValueError(f"step {self.id}: every money band needs min and/or max")
        return self

    def option(self, value: str) -> Option | None:
        return next((o for o in self.options if o.value == value), None)

    def shown(self, value: str) -> str:
        option = self.option(value)
        return option.label if option else value


class Rule(_Frozen):
    """When every listed answer matches (and the place is outside the area, if named), the caller is
    not a fit or needs a person."""

    when: Conditions = {}
    outside_area: str | None = None  # a place step: fires when its answer is outside that step's area
    outcome: Literal["not_fit", "needs_human"]
    reason: str
    reply: str | None = None  # defaults to the playbook's not_fit / needs_human text

    @model_validator(mode="after")
    def _has_condition(self) -> "Rule":
        if not self.when and not self.outside_area:
            raise ValueError(f"rule {self.reason!r} needs `when` answers or `outside_area`")
        return self

    def matches(self, answers: Mapping[str, Any], steps: list["Step"]) -> bool:
        if not all(str(answers.get(k)) in values for k, values in self.when.items()):
            return False
        if self.outside_area is None:
            return True
        step = next(s for s in steps if s.id == self.outside_area)
        value = answers.get(step.id)
        return value not in (None, "unknown") and step.area is not None and not step.area.covers(str(value))


class Emergency(_Frozen):
    words: Phrases = Field(min_length=1)
    reply: str



class Fact(_Frozen):
    """Something the business has approved the assistant to say ("Consultations are free")."""

    topic: str
    words: Phrases = Field(min_length=1)
    answer: str



_SLOT_TEXTS = frozenset({"offer", "slot_reask", "slot_taken", "which_slot"})


class Playbook(_Frozen):
    id: str
    intro: str = ""  # said once, before the first question
    steps: list[Step] = Field(min_length=1)
    rules: list[Rule] = []
    emergency: Emergency | None = None
    urgent_words: Phrases = ()  # urgent in the caller's words, at any step: told someone is on it, priority handoff
    urgent_if_soon: Phrases = ()  # urgent when said with today/tomorrow ("court", "closing"): "hearing is tomorrow"
    facts: list[Fact] = []
    sensitive: bool = False  # health data: the assistant never asks for details and discourages sending them
    advice_words: Phrases = ()  # vertical phrasing of advice-seeking, on top of the guardrails' own


    offer: str
    no_slots: str
    slot_reask: str
    declined: str
    booking_wait: str
    slot_taken: str
    closed: str
    not_fit: str = "Thanks for reaching out. {business} can't help with this one, so please look for another provider."
    needs_human: str = "Thanks. A member of the {business} team will contact you personally."
    no_advice: str = "I can't give advice by text, but the {business} team can go over your situation with you."
    no_prices: str = "I can't quote prices by text; the {business} team will go over costs with you."
    bot_disclosure: str = ("I'm the automated text assistant for {business}, not a person. "
                           "A member of the team can take over anytime; just ask.")
    holding: str = "Good question. I've passed it to the {business} team and someone will get back to you."
    hostile: str = "I'm sorry for the frustration. I've asked a member of the {business} team to contact you directly."
    updated: str = "Thanks, I've updated that."
    urgent_reply: str = ("Thanks for telling me. I've marked this urgent for the {business} team, and someone "
                         "will be on it as soon as possible.")
    relayed: str = "Thanks, I've passed that on. The {business} team has your messages and will reply here."
    better_time: str = "No problem. What day or time would work better for you?"
    better_time_reask: str = "Please tell me a day or time that suits you, for example \"Thursday afternoon\"."
    which_slot: str = "Which of these times suits you: {slots}? Reply with the number."
    booked: str = ("You're all set. If you need to change it, just tell me, for example \"can we move it?\" "
                   "or \"I need to cancel my appointment\".")
    withdrawn: str = "No problem, I've stopped here. If you need {business} later, just reply or call."
    privacy: str = "For your privacy, please don't send health details by text; the team will go over them with you."

    _memo: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "Playbook":
        ids = [s.id for s in self.steps]
        if len(set(ids)) != len(ids) or BETTER_TIME in ids:
            raise ValueError(f"playbook {self.id}: step ids must be unique and not {BETTER_TIME!r}")
        for step in self.steps:
            earlier = ids[:ids.index(step.id)]
            for key in step.when:
                if key not in earlier:
                    raise ValueError(f"playbook {self.id}: step {step.id} depends on {key!r}, "
                                     "which is not an earlier step")
        for rule in self.rules:
            for key in [*rule.when, *([rule.outside_area] if rule.outside_area else [])]:
                if key not in ids and key != "urgency":
                    raise ValueError(f"playbook {self.id}: a rule names {key!r}, which is not a step")
        for name, text in self.texts():
            # Questions are also shown by other code (first message, follow-ups) that fills no fields.
            allowed = set() if name == "intro" or name.endswith((".ask", ".reask")) else {"business"}
            allowed |= {"slots"} if name in _SLOT_TEXTS else set()
            used = {f for _, f, _, _ in string.Formatter().parse(text) if f}
            if used - allowed:
                raise ValueError(f"playbook {self.id}: {name} uses {sorted(used - allowed)}; allowed: {sorted(allowed)}")
            problems = guardrails.screen(text.replace("{business}", "the business"), facts=self.fact_texts())
            if problems:
                raise ValueError(f"playbook {self.id}: {name} breaks the guardrails ({'; '.join(problems)})")
            if self.sensitive and name.endswith((".ask", ".reask")) and guardrails.asks_health_details(text):
                raise ValueError(f"playbook {self.id}: {name} asks for health details, which are never asked by SMS")
        return self

    def texts(self) -> list[tuple[str, str]]:
        """Every sentence this playbook can say, named for error messages."""
        out = [(name, value) for name, value in self if isinstance(value, str) and name != "id"]
        out += [(f"{s.id}.{attr}", getattr(s, attr)) for s in self.steps for attr in ("ask", "reask")]
        out += [(f"rule {r.reason}", r.reply) for r in self.rules if r.reply]
        out += [("emergency.reply", self.emergency.reply)] if self.emergency else []
        return out

    def fact_texts(self) -> list[str]:
        return [f.answer for f in self.facts]

    def rule_for(self, answers: Mapping[str, Any]) -> Rule | None:
        """The first qualification rule the answers so far trigger."""
        return next((r for r in self.rules if r.matches(answers, self.steps)), None)

    def step(self, step_id: str) -> Step:
        if step_id == BETTER_TIME:
            return Step(id=BETTER_TIME, label="Better time", ask=self.better_time, kind="window",
                        reask=self.better_time_reask)
        return next(s for s in self.steps if s.id == step_id)

    def memo(self, key: str, build: Callable[[], T]) -> T:
        """Per-playbook cache for compiled matchers (playbooks are immutable)."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def merged(self, override: Mapping[str, Any]) -> "Playbook":
        """This playbook with a tenant's override: top-level keys replace, `steps` patch steps by id."""
        base = self.model_dump(exclude_none=True)
        raw = copy.deepcopy(dict(override))
        patches = {s["id"]: s for s in raw.pop("steps", [])}
        unknown = set(patches) - {s["id"] for s in base["steps"]}
        if unknown:
            raise ValueError(f"playbook override patches unknown step(s) {sorted(unknown)}; "
                             f"steps are {[s['id'] for s in base['steps']]}")
        base["steps"] = [{**step, **patches.get(step["id"], {})} for step in base["steps"]]
        return Playbook.model_validate({**base, **raw})


@cache
def load_playbook(name: str) -> Playbook:
    return Playbook.model_validate(yaml.safe_load((PLAYBOOKS / f"{name}.yaml").read_text()))


_overridden: dict[tuple[str, str], Playbook] = {}


def playbook_for(name: str, override: Mapping[str, Any] | None = None) -> Playbook:
    """The shipped playbook `name`, with a tenant's override applied (validated, cached)."""
    if not override:
        return load_playbook(name)
    key = (name, json.dumps(override, sort_keys=True, default=str))
    if key not in _overridden:
        _overridden[key] = load_playbook(name).merged(override)
    return _overridden[key]

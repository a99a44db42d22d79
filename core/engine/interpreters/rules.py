"""The default interpreter: offline and deterministic (keyword and pattern sets per slot type).

A reply is read for the question being asked and, strictly, for the playbook's
other questions, so "it's a divorce and my court date is Monday" answers two
questions at once. A reply that tries to instruct the assistant is read as
nothing at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.engine import guardrails
from core.engine.interpreters import slots
from core.engine.interpreters.base import Context, Reading, Signal, Window
from core.engine.interpreters.names import caller_name
from core.engine.interpreters.spelling import Speller
from core.engine.interpreters.text import (NO, NO_PHRASES, UNSURE_PHRASES, YES, YES_PHRASES, normalise, ordinal_pick,
                                           padded, said_any, said_phrases, said_plainly, unsure, words, yes_no)
from core.engine.interpreters.when import anytime, asap, mentions_time, read_window
from core.engine.playbook import BETTER_TIME, Playbook, Step

RESCHEDULE = re.compile(
    r"\b(?:re-?schedul\w*|move\s+(?:it|my|the|our|that)\b|change\s+(?:the|my|our)\s+(?:time|appointment|appt|day|date|"
    r"booking|consult\w*|visit|showing)|(?:a\s+)?different\s+(?:time|day|date)|push\s+(?:it|my\s+\w+|the\s+\w+)\s+back|"
    r"postpone\w*|can'?t\s+make\s+it|cannot\s+make\s+it|won'?t\s+(?:be\s+able\s+to\s+)?make\s+it|another\s+(?:time|day))")
CANCEL = re.compile(
    r"\bcancel\w*\b.{0,30}\b(?:appointment|appt|consult\w*|booking|visit|meeting|showing|estimate|it|that|this)\b"
    r"|\b(?:need|want|have|going|like|gotta|got)\s+to\s+cancel\b|\bplease\s+cancel\b"
    r"|\b(?:won'?t|don'?t|no\s+longer)\s+need\s+(?:the|my|an|our)\s+(?:appointment|appt|visit|consult\w*|showing)")
WITHDRAW = re.compile(
    r"\b(?:never\s?mind|nvm|no\s+longer\s+need|don'?t\s+need\s+(?:it|this|help|anything|you)\s+(?:anymore|any\s+more)|"
    r"found\s+(?:someone|somebody|another|a\s+different)|already\s+(?:handled|taken\s+care|fixed|found|resolved|"
    r"hired|booked\s+(?:with|elsewhere))|not\s+interested|changed\s+my\s+mind|all\s+set\s+(?:now|thanks))")
DECLINE = re.compile(
    r"^(?:no|nope|nah|neither|none)\b|\bnone\s+(?:of\s+(?:those|them|these|the\s+times)|work|works)\b|\bneither\b"
    r"|\b(?:those|these|they)\s+(?:times\s+)?(?:don'?t|do\s+not|won'?t)\s+work\b|\bcan'?t\s+do\s+(?:any|those|them)\b"
    r"|\b(?:other|different|later|earlier|more)\s+(?:times|options|days)\b|\bnot\s+(?:those|these|any)\b"
    r"|\banything\s+(?:else|later|earlier|other)\b|\b(?:later|earlier)\s+(?:in\s+the\s+)?(?:week|day)\b")
FREE_FORM = frozenset({"place", "name", "caller_name", "text"})
_PICKS = re.compile(r"\b(?:option|number|choice|#)\s*\d+\b|^\s*#?\d{1,2}\s*(?:[.):,-]|$)")  # "option 1" is no 1 PM
# Said with a deadline word ("court", "closing"), these make it urgent: "my hearing is tomorrow".
SOON = ("today", "tonight", "tomorrow", "tmrw", "tmr", "tomorow", "tommorow", "tommorrow", "this morning",
        "this afternoon", "in the morning", "first thing", "in an hour", "in a few hours", "in 2 days", "in two days")
# Everyday words the speller must not bend toward a lexicon word ("heating" is not "hearing").
COMMON = ("heating", "heater", "there", "where", "their", "other", "about", "house", "these", "those", "think",
          "thing", "things", "right", "night", "still", "should", "would", "could", "really", "maybe", "called",
          "calling", "please", "thanks", "sorry", "number", "phone", "lawyer", "attorney", "doctor", "office",
          "appointment", "morning", "afternoon", "evening", "monday", "tuesday", "wednesday", "thursday", "friday",
          "saturday", "sunday", "week", "month", "hello", "water", "basement", "kitchen", "bathroom", "roof",
          "sister", "mother", "father", "brother", "husband", "family", "friend", "wants", "going", "being",
          "getting", "having", "looking", "needs", "needed", "married", "started", "little", "weekend", "weekday",
          "weekends", "tonight", "sooner", "earlier", "later", "evening", "evenings", "noon", "lunch", "works",
          "anytime", "whenever", "works", "booked", "again", "first", "second", "third", "fourth", "fifth", "option",
          "times", "which", "while", "since", "every", "never", "other", "today", "yesterday", "thank", "great",
          "sounds", "perfect", "cancel", "change", "charge", "charges", "move", "moved", "schedule")
CORRECTION = re.compile(r"\b(?:actually|sorry|i\s+meant|i\s+mean|correction|wait|oops|my\s+bad|change\s+my\s+answer|"
                        r"instead|scratch\s+that|not\s+\w+(?:\s+\w+)?,?\s+(?:but|it'?s|its))\b")


@dataclass(frozen=True)
class _Lexicon:
    """A playbook's phrase lists, prepared once."""

    emergency: tuple[str, ...]
    urgent: tuple[str, ...]
    urgent_if_soon: tuple[str, ...]
    advice: tuple[str, ...]
    facts: tuple[tuple[str, tuple[str, ...]], ...]
    speller: Speller

    @classmethod
    def of(cls, playbook: Playbook) -> "_Lexicon":
        emergency = tuple(playbook.emergency.words) if playbook.emergency else ()
        facts = tuple((f.topic, tuple(f.words)) for f in playbook.facts)
        lexicons = [emergency, playbook.urgent_words, playbook.urgent_if_soon, SOON, playbook.advice_words,
                    *(p for _, p in facts), YES, NO, YES_PHRASES, NO_PHRASES, UNSURE_PHRASES, COMMON]
        for step in playbook.steps:
            lexicons += [step.yes_words, step.no_words, *(o.words for o in step.options)]
        return cls(emergency=emergency, urgent=tuple(playbook.urgent_words),
                   urgent_if_soon=tuple(playbook.urgent_if_soon), advice=tuple(playbook.advice_words), facts=facts,
                   speller=Speller(w for lexicon in lexicons for phrase in lexicon for w in words(phrase)))


class RulesInterpreter:
    name = "rules"

    def read(self, text: str, context: Context) -> Reading:
        said = normalise(text)
        if guardrails.injection(said):
            return Reading(signals=frozenset({Signal.injection}))
        lexicon = context.playbook.memo("rules", lambda: _Lexicon.of(context.playbook))
        said = lexicon.speller.text(said)
        pad = padded(said)
        signals = self._signals(said, pad, lexicon, context)
        value: str | None = None
        others: dict[str, str] = {}
        pick: int | None = None
        window: Window | None = None
        choosing = context.phase == "choosing" or (context.step is not None and context.step.id == BETTER_TIME)
        if choosing:  # after "none of those", the earlier offers still stand
            pick, window = self._pick(said, context)
            if pick is None and DECLINE.search(said):
                signals.add(Signal.decline)
            if context.step is not None and window is not None:
                value = window.label
        elif context.phase == "asking" and context.step is not None:
            value, window = read_step(context.step, said, context, strict=False, original=text)
            if Signal.emergency in signals and context.step.kind in FREE_FORM:
                value = None  # "now I smell gas" is not a place or a name
            others = self._others(said, context, correcting=Signal.correction in signals, original=text)
        elif context.phase == "booked":
            window = read_window(said, context.now)
        if value is None and not others and pick is None and window is None and guardrails.is_question(said) \
                and not signals & {Signal.advice, Signal.price, Signal.bot_question, Signal.human}:
            signals.add(Signal.question)
        if value is not None and guardrails.is_question(said) and context.step and context.step.kind in ("text", "name", "caller_name"):
            value = None  # a question typed where a name or description was asked is not the answer
            signals.add(Signal.question)
        fact = next((topic for topic, phrases in lexicon.facts if said_any(pad, phrases)), None)
        return Reading(value=value, others=others, signals=frozenset(signals), pick=pick, window=window, fact=fact)

    def _signals(self, said: str, pad: str, lexicon: _Lexicon, context: Context) -> set[Signal]:
        found: set[Signal] = set()
        if said_any(pad, lexicon.emergency):
            found.add(Signal.emergency)
        if said_plainly(pad, lexicon.urgent) or (said_plainly(pad, lexicon.urgent_if_soon) and said_any(pad, SOON)):
            found.add(Signal.urgent)
        if guardrails.asks_if_bot(said):  # "am I texting a real person?" is a question, not a request
            found.add(Signal.bot_question)
        elif guardrails.wants_human(said):
            found.add(Signal.human)
        if guardrails.seeks_advice(said) or said_any(pad, lexicon.advice):
            found.add(Signal.advice)
        elif guardrails.asks_price(said):
            found.add(Signal.price)
        if guardrails.hostile(said):
            found.add(Signal.hostile)
        if CANCEL.search(said):
            found.add(Signal.cancel_booking)
        elif RESCHEDULE.search(said):
            found.add(Signal.reschedule)
        elif WITHDRAW.search(said):
            found.add(Signal.withdraw)
        if unsure(pad):
            found.add(Signal.unsure)
        if CORRECTION.search(said):
            found.add(Signal.correction)
        if context.playbook.sensitive and guardrails.shares_health_details(said):
            found.add(Signal.health_details)
        if anytime(said):
            found.add(Signal.anytime)
        if asap(said):
            found.add(Signal.asap)
        return found

    def _others(self, said: str, context: Context, *, correcting: bool, original: str) -> dict[str, str]:
        """Strict readings for the other questions: unanswered ones, and answered ones when correcting."""
        found = {}
        unsure_said = unsure(padded(said))
        for step in context.playbook.steps:
            if step is context.step or (step.id in context.answers and not correcting):
                continue
            if unsure_said and step.kind == "choice":
                continue  # "not sure yet" to one question does not answer another
            value, _ = read_step(step, said, context, strict=True, original=original)
            if value is not None and value != context.answers.get(step.id):
                found[step.id] = value
        return found

    def _pick(self, said: str, context: Context) -> tuple[int | None, Window | None]:
        count = len(context.offered)
        tokens = words(said)
        if not mentions_time(said) and (len(tokens) <= 4 or re.search(r"\b(?:option|number|#)\s*\d", said)):
            index = ordinal_pick(tokens, count)
            if index is not None:
                return index - 1, None
        return None, read_window(said, context.now)


def read_step(step: Step, said: str, context: Context, *, strict: bool,
              original: str | None = None) -> tuple[str | None, Window | None]:
    """The value a (normalised, spelling-corrected) reply gives this step; `strict` for questions not asked yet.
    `original` is the reply as typed, for names."""
    kind = step.kind
    if kind == "choice":
        return slots.choice(said, step, strict=strict), None
    if kind == "yes_no":
        if strict:
            return _hinted(said, step), None
        return yes_no(said, yes_words=step.yes_words, no_words=step.no_words), None
    if kind == "place":
        return slots.place(said, step, strict=strict), None
    if kind == "name":
        return (None if strict else slots.name(said)), None  # another person's name is never guessed ahead
    if kind == "caller_name":
        return caller_name(original or said, strict=strict), None
    if kind == "money":
        return slots.money(said, step, strict=strict), None
    if kind == "window":
        return _window_value(said, context, strict=strict)
    return (None if strict else slots.free_text(said)), None


def _hinted(said: str, step: Step) -> str | None:
    """A yes/no answered ahead of its question by the step's own hints; "no court date" is a no, not a yes."""
    pad = padded(said)
    noes = said_phrases(pad, step.no_words)
    yeses = [y for y in said_phrases(pad, step.yes_words) if not any(y in n for n in noes)]
    noes = [n for n in noes if not any(n in y for y in yeses)]
    return None if bool(yeses) == bool(noes) else ("yes" if yeses else "no")


def _window_value(said: str, context: Context, *, strict: bool) -> tuple[str | None, Window | None]:
    window = read_window(_PICKS.sub(" ", said) if strict else said, context.now)
    if window is not None:
        return window.label, window
    if strict:
        return None, None
    if asap(said):
        return "as soon as possible", None
    if anytime(said):
        return "any time", None
    return None, None

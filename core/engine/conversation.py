"""The conversation state machine: pure, no I/O (the `llm` interpreter, when a tenant picks it, is the one exception).

    asking ──answer──▶ asking … ──qualified──▶ offering ──slots found──▶ choosing ──"2"──▶ booking ──▶ booked
      │ rule: not a fit ─▶ closed          (booking side)            │ "none of those" ─▶ asking(better_time)
      │ rule/emergency/person ─▶ handoff                              │ "tomorrow afternoon" ─▶ offering (window)
    booked ──"can we move it?"──▶ offering (Action.reschedule)   booked ──"I need to cancel my appointment"──▶
                                                                        booked (Action.cancel_booking)

`advance(playbook, state, text, *, business, interpreter=None, now=None) -> Turn`
reads one inbound text and returns the next state, the replies (rendered from
the playbook's texts, never from a model) and at most one action for the
caller of the engine (core/inbound.py `_step`) to carry out:

- `offer_slots`: find and text open times. `state.answers["preferred_window"]`,
  when present, is the caller's window `{"start": ISO-8601, "end": ISO-8601}`
  with UTC offsets (core/booking.py reads it). Phase becomes `offering`.
- `book_slot`: hold and book `state.offered[turn.choice]` (0-based). Phase `booking`.
- `handoff`: a person must take over (emergency, asked for a person, a question
  the assistant cannot answer, hostile, not understood, a playbook rule).
  `turn.handoff` has reason, urgency and the summary for staff and the CRM. The
  phase becomes `handoff`, except that a booked conversation stays `booked`
  (the appointment stands). When `turn.replies` is empty the caller has not
  been told anything yet: the tenant's `handoff_caller` template says it.
- `relay`: the conversation was handed to a person. The caller's text goes to
  staff (`turn.handoff.summary` is the text, `urgency` flags it) and to the CRM
  log; the caller reads one acknowledgement (`relayed`) at most, and the safety
  text once if they describe a danger. Nothing else restarts the questions.
- `reschedule`: a booked caller wants another time. Phase becomes `offering`;
  the confirmed booking stays until its replacement is booked.
  `preferred_window` is set when they said when ("can we move it to Friday?").
- `cancel_booking`: a booked caller asked in words to cancel the appointment.
  The phase stays `booked` and nothing is said: the booking side cancels the
  event, then confirms. A whole-message CANCEL never gets here: it is a carrier
  opt-out keyword, handled before the engine (core/engine/keywords.py).

Without an action, `turn.replies` is the whole answer (empty for a booked
caller's second "thanks": the same text is never sent twice): the next question, a
re-ask (once, then the caller's words are kept or a person takes over), a truthful "I'm an automated assistant", a refusal to advise or quote, a
fact the business approved, or, for a caller who is not a fit or no longer needs
anything, a courteous close (phase `closed`). After "none of those work" the
built-in step `better_time` asks when suits them; its answer is a window
(`offer_slots`) or a number from the earlier offer (`book_slot`).

`turn.outcome` (qualified | not_fit | needs_human | withdrawn) is the
qualification result when this turn decided one. `State.step_column()` /
`State.from_row()` store the state on the conversation row. Every reply passes
the guardrails (core/engine/guardrails.py) before it leaves; interpreters are
described in core/engine/interpreters/base.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from core.engine import guardrails
from core.engine.interpreters import RULES
from core.engine.interpreters.base import Context, Interpreter, Reading, Signal
from core.engine.interpreters.slots import free_text
from core.engine.interpreters.when import offered_in
from core.engine.playbook import BETTER_TIME, Playbook, Step
from core.engine.state import (
    OPEN_PHASES,
    Action,
    Handoff,
    Outcome,
    Phase,
    State,
    Turn,
    slot_list,
)
from core.engine.summary import handoff_summary

__all__ = ["OPEN_PHASES", "Action", "Handoff", "Outcome", "Phase", "State", "Turn", "advance",
           "opening", "slot_list"]

MAX_REASKS = 1  # one shorter re-ask; a second miss keeps the caller's words (optional step) or hands off
MAX_SLOT_REASKS = 2  # picking among offered times: the list is repeated, the caller is one reply from booked
URGENT_PHASES = frozenset({Phase.asking, Phase.offering, Phase.choosing, Phase.booking})


def opening(playbook: Playbook) -> tuple[State, str]:
    """The state a new conversation starts in and the question the first text asks."""
    first = playbook.steps[0]
    return State(phase=Phase.asking, step=first.id), f"{playbook.intro} {first.ask}".strip()


def advance(playbook: Playbook, state: State, text: str, *, business: str, interpreter: Interpreter | None = None,
            now: datetime | None = None) -> Turn:
    """One inbound message in, the next state plus what to say and do. `now` is aware, in the caller's zone."""
    now = now or datetime.now(timezone.utc)
    asking = state.phase is Phase.asking and state.step is not None
    if asking and state.step != BETTER_TIME and all(s.id != state.step for s in playbook.steps):
        # The playbook was edited while this caller was mid-conversation and their question is gone: ask the
        # next one it still has, or let a person take over when none is left.
        resumed = next_step(playbook, state.answers)
        if resumed is None:
            return _Decision(playbook, state, Reading(), business=business, said=text, now=now).handoff(
                "playbook_changed", [])
        state = replace(state, step=resumed.id, misses=0)
    context = Context(playbook=playbook, phase=state.phase.value, step=playbook.step(state.step) if asking else None,
                      answers=state.answers, offered=state.offered, now=now)
    reading = (interpreter or RULES).read(text, context)
    turn = _Decision(playbook, state, reading, business=business, said=text, now=now).run()
    return _screened(playbook, turn, business=business, said=text)


class _Decision:
    def __init__(self, playbook: Playbook, state: State, reading: Reading, *, business: str, said: str,
                 now: datetime) -> None:
        self.playbook, self.state, self.reading = playbook, state, reading
        self.business, self.said, self.now = business, said, now

    def run(self) -> Turn:
        phase, r = self.state.phase, self.reading
        if phase is Phase.handoff:
            return self.relay()
        if r.has(Signal.emergency) and self.playbook.emergency is not None and phase is not Phase.opted_out:
            answers = {**self.state.answers, "urgency": "emergency"}
            return self.handoff("emergency", [self.say(self.playbook.emergency.reply)], answers)
        if r.has(Signal.urgent) and phase in URGENT_PHASES and (phase is not Phase.asking or self.state.step == BETTER_TIME):
            return self.urgent(dict(self.state.answers))  # while asking, asking() keeps this message's answers first
        if phase is Phase.asking:
            return self.better_time() if self.state.step == BETTER_TIME else self.asking()
        if phase is Phase.choosing:
            return self.choosing()
        if phase is Phase.booked:
            return self.booked()
        if phase in (Phase.offering, Phase.booking):
            if r.has(Signal.human):
                return self.handoff("asked_for_person", [])
            return Turn(self.state, [self.say(self.playbook.booking_wait)])
        return Turn(self.state, [self.say(self.playbook.closed)])

    # --- qualification -------------------------------------------------------------------

    def asking(self) -> Turn:
        step, r = self.playbook.step(self.state.step), self.reading
        if r.has(Signal.injection):
            return self.miss(step)
        if r.has(Signal.human):
            return self.handoff("asked_for_person", [])
        if r.has(Signal.withdraw, Signal.cancel_booking) and not r.has(Signal.correction):
            return self.close(Outcome.withdrawn, self.playbook.withdrawn)
        answers = dict(self.state.answers)
        updated = False
        for step_id, value in r.others.items():
            if step_id in answers:
                if not r.has(Signal.correction):
                    continue
                updated = True
            answers[step_id] = value
        progressed = bool(r.others)
        if r.value is not None:
            answers[step.id], progressed = r.value, True
            if step.kind == "window" and r.window is not None:
                answers["preferred_window"] = r.window.as_answer()
        elif r.has(Signal.unsure) and step.unknown_ok:
            answers[step.id], progressed = "unknown", True
        if r.has(Signal.urgent):
            return self.urgent(_applicable(self.playbook, answers))
        notes = self.notes(updated=updated)
        if not progressed and not notes:
            if r.has(Signal.hostile):
                return self.handoff("hostile", [self.say(self.playbook.hostile)], answers)
            if r.has(Signal.question):
                return self.handoff("unanswerable_question", [self.say(self.playbook.holding)], answers)
            return self.miss(step)
        return self.proceed(answers, notes, current=step if not progressed else None)

    def proceed(self, answers: dict[str, Any], notes: list[str], *, current: Step | None = None) -> Turn:
        """Apply the rules, then ask the next question or go to the offer."""
        answers = _applicable(self.playbook, answers)
        rule = self.playbook.rule_for(answers)
        if rule is not None:
            if rule.outcome == "not_fit":
                return self.close(Outcome.not_fit, rule.reply or self.playbook.not_fit, answers)
            return self.handoff(rule.reason, [self.say(rule.reply or self.playbook.needs_human)], answers)
        following = next_step(self.playbook, answers)
        if following is not None:
            misses = self.state.misses if current is not None and following.id == current.id else 0
            state = replace(self.state, step=following.id, answers=answers, misses=misses)
            return Turn(state, [self.join(notes, following.ask)])
        state = replace(self.state, phase=Phase.offering, step=None, answers=answers, misses=0, offered=[])
        return Turn(state, [self.join(notes)] if notes else [], Action.offer_slots, outcome=Outcome.qualified)

    def miss(self, step: Step) -> Turn:
        """Re-ask once; then an optional step keeps the caller's own words (the CRM reads them) and moves on,
        and a required one goes to a person with what was said."""
        misses = self.state.misses + 1
        if misses <= MAX_REASKS:
            return Turn(replace(self.state, misses=misses), [self.say(step.reask)])
        if step.required:
            return self.handoff("not_understood", [])
        words = free_text(self.said) if not self.reading.has(Signal.injection, Signal.unsure) else None
        kept = words or "unknown"
        return self.proceed({**self.state.answers, step.id: kept}, [])

    def notes(self, *, updated: bool = False) -> list[str]:
        """What to say before the next question: truthful disclosure, no advice, facts, privacy."""
        r, pb = self.reading, self.playbook
        said = []
        if r.has(Signal.bot_question):
            said.append(pb.bot_disclosure)
        if r.has(Signal.advice):
            said.append(pb.no_advice)
        elif r.fact is not None:
            said.append(next(f.answer for f in pb.facts if f.topic == r.fact))
        elif r.has(Signal.price):
            said.append(pb.no_prices)
        if r.has(Signal.health_details):
            said.append(pb.privacy)
        if updated:
            said.append(pb.updated)
        return [self.say(s) for s in said]

    # --- booking by text -----------------------------------------------------------------

    def choosing(self) -> Turn:
        r, offered = self.reading, self.state.offered
        if r.has(Signal.human):
            return self.handoff("asked_for_person", [])
        if r.pick is not None and 0 <= r.pick < len(offered) and not r.has(Signal.injection):
            return Turn(replace(self.state, phase=Phase.booking, misses=0), [], Action.book_slot, choice=r.pick)
        if r.window is not None:
            hits = offered_in(r.window, offered, self.now.tzinfo)
            if len(hits) == 1 and not r.has(Signal.decline):
                return Turn(replace(self.state, phase=Phase.booking, misses=0), [], Action.book_slot, choice=hits[0])
            if len(hits) > 1 and not r.has(Signal.decline):
                narrowed = [offered[i] for i in hits]  # "the afternoon one" next picks among these
                return Turn(replace(self.state, offered=narrowed, misses=0),
                            [self.say(self.playbook.which_slot, slots=slot_list(narrowed))])
            return self.offer_in(r.window.as_answer())
        if r.has(Signal.decline):
            return Turn(replace(self.state, phase=Phase.asking, step=BETTER_TIME, misses=0),
                        [self.say(self.playbook.better_time)])
        if r.has(Signal.withdraw, Signal.cancel_booking):
            return self.close(Outcome.withdrawn, self.playbook.withdrawn)
        notes = self.notes()
        if notes:
            return Turn(self.state, [self.join(notes, self.playbook.slot_reask, slots=slot_list(offered))])
        if r.has(Signal.hostile):
            return self.handoff("hostile", [self.say(self.playbook.hostile)])
        if r.has(Signal.question):
            return self.handoff("unanswerable_question", [self.say(self.playbook.holding)])
        if self.state.misses + 1 > MAX_SLOT_REASKS:
            return self.handoff("declined_times", [self.say(self.playbook.declined)])
        return Turn(replace(self.state, misses=self.state.misses + 1),
                    [self.say(self.playbook.slot_reask, slots=slot_list(offered))])

    def better_time(self) -> Turn:
        r = self.reading
        if r.has(Signal.human):
            return self.handoff("asked_for_person", [])
        if r.pick is not None and 0 <= r.pick < len(self.state.offered):
            return Turn(replace(self.state, phase=Phase.booking, step=None, misses=0), [], Action.book_slot,
                        choice=r.pick)
        if r.window is not None:
            return self.offer_in(r.window.as_answer())
        if r.has(Signal.anytime, Signal.asap) and self.state.offered:
            after = max(datetime.fromisoformat(s["end"]) for s in self.state.offered)
            return self.offer_in({"start": after.isoformat(), "end": (after + timedelta(days=14)).isoformat()})
        if r.has(Signal.decline, Signal.withdraw):
            return self.handoff("declined_times", [self.say(self.playbook.declined)])
        notes = self.notes()
        if notes:
            return Turn(self.state, [self.join(notes, self.playbook.better_time_reask)])
        if self.state.misses + 1 > MAX_SLOT_REASKS:
            return self.handoff("declined_times", [self.say(self.playbook.declined)])
        return Turn(replace(self.state, misses=self.state.misses + 1), [self.say(self.playbook.better_time_reask)])

    def offer_in(self, window: dict[str, str]) -> Turn:
        answers = {**self.state.answers, "preferred_window": window}
        state = replace(self.state, phase=Phase.offering, step=None, answers=answers, offered=[], misses=0)
        return Turn(state, [], Action.offer_slots)

    def booked(self) -> Turn:
        r = self.reading
        if r.has(Signal.injection):
            return Turn(self.state, [self.say(self.playbook.booked)])
        if r.has(Signal.cancel_booking):
            return Turn(self.state, [], Action.cancel_booking)
        if r.has(Signal.reschedule):
            answers = dict(self.state.answers)
            answers.pop("preferred_window", None)
            if r.window is not None:
                answers["preferred_window"] = r.window.as_answer()
            return Turn(replace(self.state, phase=Phase.offering, answers=answers, offered=[], misses=0), [],
                        Action.reschedule)
        if r.has(Signal.human):
            return self.handoff("asked_for_person", [])
        notes = self.notes()
        if notes:
            return Turn(self.state, [self.join(notes)])
        if r.has(Signal.question, Signal.hostile):
            return self.handoff("booked_question", [self.say(self.playbook.holding)])
        if self.state.misses:  # "thanks", "ok", "see you then": told once, the same text is not sent again
            return Turn(self.state, [])
        return Turn(replace(self.state, misses=1), [self.say(self.playbook.booked)])

    # --- endings -------------------------------------------------------------------------

    def urgent(self, answers: dict[str, Any]) -> Turn:
        """Urgent in the caller's words, at any step: they are told someone is on it, staff get a priority handoff."""
        if answers.get("urgency") != "emergency":
            answers["urgency"] = "urgent"
        return self.handoff("urgent", [self.say(self.playbook.urgent_reply)], answers)

    def relay(self) -> Turn:
        """After a handoff the bot is quiet: staff get every text; the caller reads one acknowledgement at most,
        and the safety text once if they describe a danger."""
        r, answers = self.reading, dict(self.state.answers)
        replies: list[str] = []
        if r.has(Signal.emergency) and self.playbook.emergency is not None and answers.get("urgency") != "emergency":
            answers["urgency"] = "emergency"
            replies.append(self.say(self.playbook.emergency.reply))
        elif self.state.misses == 0:
            replies.append(self.say(self.playbook.relayed))
        urgency = ("emergency" if r.has(Signal.emergency) else "urgent" if r.has(Signal.urgent)
                   else str(answers.get("urgency", "normal")))
        state = replace(self.state, answers=answers, misses=self.state.misses + 1)
        return Turn(state, replies, Action.relay,
                    handoff=Handoff(reason="caller_message", urgency=urgency, summary=" ".join(self.said.split())))

    def handoff(self, reason: str, replies: list[str], answers: dict[str, Any] | None = None) -> Turn:
        answers = dict(self.state.answers if answers is None else answers)
        urgency = str(answers.get("urgency", "normal"))
        summary = handoff_summary(self.playbook, answers, reason=reason, urgency=urgency, last_message=self.said)
        phase = Phase.booked if self.state.phase is Phase.booked else Phase.handoff
        state = replace(self.state, phase=phase, answers=answers, misses=0)
        return Turn(state, replies, Action.handoff, outcome=Outcome.needs_human,
                    handoff=Handoff(reason=reason, urgency=urgency, summary=summary))

    def close(self, outcome: Outcome, text: str, answers: dict[str, Any] | None = None) -> Turn:
        state = replace(self.state, phase=Phase.closed, answers=dict(self.state.answers if answers is None else answers),
                        offered=[], misses=0)
        return Turn(state, [self.say(text)], outcome=outcome)

    def say(self, text: str, **fields: str) -> str:
        return text.format(business=self.business, **fields)

    def join(self, notes: list[str], question: str | None = None, **fields: str) -> str:
        return " ".join([*notes, *([self.say(question, **fields)] if question else [])])


def next_step(playbook: Playbook, answers: dict[str, Any]) -> Step | None:
    """The first question not answered yet whose transition guard (`when`) holds."""
    return next((s for s in playbook.steps if s.id not in answers and _guard(s, answers)), None)


def _guard(step: Step, answers: dict[str, Any]) -> bool:
    return all(str(answers.get(k)) in values for k, values in step.when.items())


def _applicable(playbook: Playbook, answers: dict[str, Any]) -> dict[str, Any]:
    """Drop answers to questions whose guard no longer holds (an earlier answer was corrected)."""
    dropped = {s.id for s in playbook.steps if s.id in answers and not _guard(s, answers)}
    return {k: v for k, v in answers.items() if k not in dropped}


def _screened(playbook: Playbook, turn: Turn, *, business: str, said: str) -> Turn:
    """The last guardrail: a reply that would advise, promise, price or pose as human is never sent."""
    facts = playbook.fact_texts()
    if not any(guardrails.screen(text.replace(business, ""), facts=facts) for text in turn.replies):
        return turn
    summary = handoff_summary(playbook, turn.state.answers, reason="unsafe_reply", urgency="normal", last_message=said)
    phase = Phase.booked if turn.state.phase is Phase.booked else Phase.handoff
    return Turn(replace(turn.state, phase=phase), [playbook.holding.format(business=business)], Action.handoff,
                outcome=Outcome.needs_human, handoff=Handoff("unsafe_reply", "normal", summary))

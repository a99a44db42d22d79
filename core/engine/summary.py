"""The handoff summary: what the person who takes over needs to know, in two or three lines."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from core.engine import guardrails
from core.engine.playbook import Playbook


def headline(playbook: Playbook, answers: Mapping[str, Any]) -> str | None:
    """The first answer as staff read it ("Family/divorce"): what a deal or matter is about, in its name."""
    step = next((step for step in playbook.steps if step.id in answers), None)
    return step.shown(str(answers[step.id])) if step is not None else None


def answer_lines(answers: Mapping[str, Any]) -> list[str]:
    """The caller's answers as "question id: value", for CRM records and calendar events.

    Structured working values (a preferred window, say) are left out: they are not answers a person reads.
    """
    return [f"{key}: {value}" for key, value in answers.items() if not isinstance(value, dict | list)]


REASONS = {
    "emergency": "the caller described an emergency",
    "asked_for_person": "the caller asked for a person",
    "unanswerable_question": "the caller asked something the assistant cannot answer",
    "hostile": "the caller is upset",
    "not_understood": "the assistant could not understand the replies",
    "declined_times": "none of the offered times suit the caller",
    "unsafe_reply": "the assistant had no safe reply",
    "booked_question": "a booked caller has a question",
}


def handoff_summary(playbook: Playbook, answers: Mapping[str, Any], *, reason: str, urgency: str,
                    last_message: str) -> str:
    """"Needs a person: ... Urgency: ... Answers: Matter type: Family/divorce; ... Last message: "..."."""
    shown = [f"{step.label}: {step.shown(str(answers[step.id]))}" for step in playbook.steps if step.id in answers]
    window = answers.get("preferred_window")
    if isinstance(window, Mapping) and "start" in window:
        shown.append(f"Preferred time: from {_readable(window['start'])} to {_readable(window['end'])}")
    said = " ".join(last_message.split())
    if playbook.sensitive and guardrails.shares_health_details(said):
        quoted = "withheld here (health details); see the transcript"
    else:
        quoted = f"\"{said[:157]}...\"" if len(said) > 160 else f"\"{said}\""
    return (f"Needs a person: {REASONS.get(reason, reason)}. Urgency: {urgency}. "
            f"Answers: {'; '.join(shown) if shown else 'none yet'}. Last message: {quoted}.")


def _readable(iso: str) -> str:
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return f"{moment:%a %b} {moment.day}, {moment.hour % 12 or 12}:{moment.minute:02d} {'AM' if moment.hour < 12 else 'PM'}"

"""What textback says in each situation, per tenant, with merge fields checked at config load.

The playbook (core/engine) owns the questions; these templates own the
situational messages. Every first message must name the business and say it is
automated: a tenant file that removes either is rejected.
"""

from __future__ import annotations

import re
import string
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

SITUATIONS: dict[str, frozenset[str]] = {
    "first_in_hours": frozenset({"business", "question", "first_name"}),
    "first_after_hours": frozenset({"business", "question", "first_name", "opens"}),
    "followup": frozenset({"business", "question", "first_name"}),
    "handoff_caller": frozenset({"business", "contact", "first_name"}),
    "handoff_staff": frozenset({"business", "caller", "summary", "conversation_id"}),
    "booking_confirmation": frozenset({"business", "slot", "timezone", "location", "first_name"}),
    "help": frozenset({"business", "contact"}),
    "opt_out_confirmation": frozenset({"business", "appointment_note"}),
    "booking_moved": frozenset({"business", "slot", "timezone", "location", "contact", "first_name"}),
    "booking_cancelled": frozenset({"business", "slot", "timezone", "contact", "first_name"}),
}

FIRST_MESSAGES = ("first_in_hours", "first_after_hours")

DEFAULTS: dict[str, str] = {
    "first_in_hours": "Hi, this is the automated text assistant for {business}. Sorry we missed your call. "
                      "{question} Reply STOP to opt out.",
    "first_after_hours": "Hi, this is the automated text assistant for {business}. Sorry we missed your call; "
                         "we're closed now and open {opens}. {question} Reply STOP to opt out.",
    "followup": "Hi again from {business}'s automated assistant. {question} Reply STOP to opt out.",
    "handoff_caller": "Thanks. A member of the {business} team will get back to you personally. "
                      "If it's urgent, call {contact}.",
    "handoff_staff": "textback: {caller} needs a person at {business}. {summary} "
                     "Reply \"#{conversation_id} your message\" to text them from the business number.",
    "booking_confirmation": "You're booked with {business} on {slot} ({timezone}).{location} "
                            "If you need to change it, call us back at this number.",
    "help": "{business}: automated assistant for missed calls. For help call {contact}. "
            "Msg & data rates may apply. Reply STOP to opt out.",
    "opt_out_confirmation": "You're unsubscribed from {business} texts and will get no more messages."
                            "{appointment_note} Reply START to resubscribe.",
    "booking_moved": "{business}'s automated assistant: your appointment has been moved to {slot} ({timezone})."
                     "{location} If that time doesn't suit you, call {contact}.",
    "booking_cancelled": "{business}'s automated assistant: your appointment on {slot} ({timezone}) has been "
                         "cancelled by our team. We'll text you some new times; or call {contact}.",
}

_AUTOMATED = re.compile(r"\bautomated\b", re.I)


def merge_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


class Templates(BaseModel):
    """Per-tenant overrides; any situation left out uses the default wording."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_in_hours: str = DEFAULTS["first_in_hours"]
    first_after_hours: str = DEFAULTS["first_after_hours"]
    followup: str = DEFAULTS["followup"]
    handoff_caller: str = DEFAULTS["handoff_caller"]
    handoff_staff: str = DEFAULTS["handoff_staff"]
    booking_confirmation: str = DEFAULTS["booking_confirmation"]
    help: str = DEFAULTS["help"]
    opt_out_confirmation: str = DEFAULTS["opt_out_confirmation"]
    booking_moved: str = DEFAULTS["booking_moved"]
    booking_cancelled: str = DEFAULTS["booking_cancelled"]

    @model_validator(mode="before")
    @classmethod
    def _check(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        for situation, text in raw.items():
            if situation not in SITUATIONS or not isinstance(text, str):
                continue  # pydantic reports unknown keys and wrong types itself
            try:
                used = merge_fields(text)
            except ValueError as exc:
                raise ValueError(f"templates.{situation}: {exc}; write merge fields as {{business}}") from exc
            unknown = used - SITUATIONS[situation]
            if unknown:
                raise ValueError(f"templates.{situation} uses unknown merge field(s) "
                                 f"{', '.join('{' + u + '}' for u in sorted(unknown))}; "
                                 f"allowed here: {', '.join('{' + a + '}' for a in sorted(SITUATIONS[situation]))}")
            if situation in FIRST_MESSAGES and ("business" not in used or not _AUTOMATED.search(text)):
                raise ValueError(f"templates.{situation} must name the business with {{business}} and say the "
                                 "message is automated (the word \"automated\"); callers must know who is texting")
            if situation in FIRST_MESSAGES and "STOP" not in text:
                raise ValueError(f"templates.{situation} must tell the caller how to opt out (\"Reply STOP to opt out\")")
        return raw

    def render(self, situation: str, **fields: str) -> str:
        template = getattr(self, situation)
        values = {name: "" for name in SITUATIONS[situation]} | {k: v for k, v in fields.items() if v is not None}
        return " ".join(template.format(**values).split())


# --- SMS segments ----------------------------------------------------------------------

_GSM7 = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
            "¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM7_EXTENDED = set("^{}\\[~]|€\f")


def segments(text: str) -> tuple[str, int]:
    """("GSM-7" | "UCS-2", number of SMS segments) as carriers count them."""
    if all(c in _GSM7 or c in _GSM7_EXTENDED for c in text):
        units = sum(2 if c in _GSM7_EXTENDED else 1 for c in text)
        return "GSM-7", 1 if units <= 160 else -(-units // 153)
    units = sum(2 if ord(c) > 0xFFFF else 1 for c in text)
    return "UCS-2", 1 if units <= 70 else -(-units // 67)

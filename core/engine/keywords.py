"""Carrier keywords, matched on the whole message, case- and punctuation-insensitive.

A whole-message CANCEL is an opt-out (carriers and Twilio treat it so), never a
booking cancellation.
"""

from __future__ import annotations

import enum
import re


class Keyword(str, enum.Enum):
    stop = "stop"
    start = "start"
    help = "help"


STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP", "INFO"})

_STRIP = re.compile(r"[^A-Z]")


def keyword(body: str) -> Keyword | None:
    """The carrier keyword the whole message is, or None.

    YES counts as START only for a sender who is opted out; for anyone else it
    is an answer to the playbook's question, which the caller decides.
    """
    word = _STRIP.sub("", body.upper())
    if word in STOP_WORDS:
        return Keyword.stop
    if word in HELP_WORDS:
        return Keyword.help
    if word in START_WORDS:
        return Keyword.start
    return None


# Consent can be revoked "through any reasonable means" (FCC), not only by keyword.
_REVOCATIONS = re.compile(
    r"\b(?:stop|quit|cease)\s+(?:texting|messaging|contacting|sending|txting)\b"
    r"|\b(?:don'?t|do\s+not|dont|never)\s+(?:text|message|txt|contact|msg)\s+me\b"
    r"|\b(?:remove|unsubscribe)\s+me\b|\btake\s+me\s+off\b"
    r"|\bwrong\s+(?:number|person|#)\b"
    r"|\bno\s+more\s+(?:texts|messages|txts)\b"
    r"|\bleave\s+me\s+alone\b"
    r"|\blose\s+(?:this|my)\s+number\b"
    r"|\bopt\s*-?\s*out\b",
    re.I,
)


def revokes_consent(body: str) -> bool:
    """A free-text message that withdraws consent: "stop texting me please", "wrong number", "remove me"."""
    return bool(_REVOCATIONS.search(body.replace("’", "'")))

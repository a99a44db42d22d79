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

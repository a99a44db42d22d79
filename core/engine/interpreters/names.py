"""The caller's own name: "this is Maria Lopez", "Maria", "it's Dr. Lopez's office", "skip".

Read from the original text (not the spelling-corrected one: names are not
misspellings of the playbook's words). Asked, a short reply that looks like a
name is one; not asked yet, only "my name is ..." / "this is ..." count, so
"I'm new" or "this is urgent" never become a name.
"""

from __future__ import annotations

import re

from core.engine.interpreters.text import normalise, padded, unsure

_SKIP = re.compile(r"^(?:skip|pass|no\s*thanks?|n/?a|rather\s+not|i'?d\s+rather\s+not|prefer\s+not|none|no|nope|"
                   r"not\s+(?:now|telling|comfortable))\b", re.I)
_LEAD = re.compile(
    r"^(?:(?:hi|hey|hello|yes|yeah|sure|ok|okay|oh|um|uh|so)[\s,!.]+)*"
    r"(?:(?:my\s+name\s+is|my\s+name'?s|name\s+is|name'?s|this\s+is|it'?s|its|i'?m|im|i\s+am|call\s+me|"
    r"you\s+can\s+call\s+me|calling\s+from|i'?m\s+calling\s+from|it'?s\s+me,?)\s+)?", re.I)
_STRICT = re.compile(r"\b(?:[Mm]y\s+name\s+is|[Mm]y\s+name'?s)\s+([A-Za-z][a-z'.-]+(?:\s+[A-Z][a-z'.-]+)?)"
                     r"|\b[Tt]his\s+is\s+([A-Z][a-z'.-]+(?:\s+[A-Z][a-z'.-]+)?)")  # "This is Maria Lopez": capitalised
_TAIL = re.compile(r"\s*(?:,|\bhere\b|\bspeaking\b|\bthanks?\b|\bthank\s+you\b|\bfrom\b.*$|[.!]+$).*$", re.I)
_NAME = re.compile(r"^[a-z][a-z'.&-]*(?:\s+[a-z&][a-z'.&-]*){0,4}$", re.I)
NOT_NAMES = frozenset({
    "i", "you", "we", "what", "why", "how", "who", "need", "want", "is", "are", "do", "does", "can", "have", "talk",
    "call", "please", "don't", "dont", "know", "sure", "idea", "help", "yes", "okay", "ok", "hello", "hi", "thanks",
    "new", "urgent", "about", "a", "an", "the", "my", "not", "it", "that", "this", "there", "here", "just", "looking",
    "calling", "interested", "wondering", "trying", "sorry", "fine", "good", "great", "busy", "confused", "waiting",
    "divorce", "client", "patient", "appointment", "question", "emergency", "ready", "done", "back", "home", "still",
    "weird", "crazy", "bot", "robot", "real", "person", "human", "serious", "afraid", "scared", "worried",
    "after", "before", "at", "later", "tomorrow", "today", "tonight", "anytime", "asap", "now", "soon", "when",
    "if", "on", "in", "to", "idk", "dunno", "lol", "hmm", "huh", "um", "uh", "for", "and", "or", "but", "again", "right", "away", "whenever", "maybe", "skip",
})
_TITLES = {"dr": "Dr.", "dr.": "Dr.", "mr": "Mr.", "mr.": "Mr.", "mrs": "Mrs.", "mrs.": "Mrs.", "ms": "Ms.",
           "ms.": "Ms."}


def caller_name(text: str, *, strict: bool = False) -> str | None:
    """The caller's name as they gave it, title-cased; "none" when they would rather not say; else None."""
    said = " ".join(text.replace("’", "'").split()).strip(" .!?")
    if strict:
        match = _STRICT.search(said)
        return _shaped(match.group(1) or match.group(2)) if match else None
    if _SKIP.match(said):
        return "none"
    if unsure(padded(normalise(said))):
        return None
    return _shaped(_TAIL.sub("", _LEAD.sub("", said, count=1)))


def _shaped(raw: str) -> str | None:
    name = raw.strip(" ,.")
    if not name or not _NAME.match(name) or len(name.split()) > 4:
        return None
    if any(word.lower().strip(".") in NOT_NAMES for word in name.split()):
        return None
    return " ".join(_TITLES.get(w.lower(), w if w.isupper() and len(w) > 2 else w[:1].upper() + w[1:].lower())
                    for w in name.split())


def split_name(name: str) -> tuple[str, str | None]:
    """First and last name for a CRM contact: "Maria Lopez" → (Maria, Lopez); an office or a title keeps it whole."""
    parts = name.split()
    if len(parts) in (2, 3) and not parts[0].endswith(".") and not any("'" in p for p in parts):
        return parts[0], " ".join(parts[1:])
    return name, None

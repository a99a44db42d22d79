"""One reader per slot type: choice, ZIP/city, name, money band, free text. Each returns a value or None.

`strict=True` is used for questions the caller was not asked yet (out-of-order
answers): bare numbers and loose text then mean nothing, only unmistakable
words, ZIP codes and amounts count.
"""

from __future__ import annotations

import re

from core.engine.interpreters.text import negated, ordinal_pick, padded, said_phrases, unsure, words
from core.engine.playbook import Option, Step

_ZIP = re.compile(r"(?<![\d$])(\d{5})(?:-\d{4})?(?!\d|[,.]\d|k\b)")
_CITY = re.compile(r"^(?:(?:it'?s|i'?m|we'?re|i live|we live|we are|i am|located|live|in|at|near|around|the|somewhere|"
                   r"probably|mostly|looking|looking in|area|the area|thinking)\s+)*([a-z][a-z .'-]{1,40}?)(?:,?\s+([a-z]{2}))?\.?$")
_PICK_CONTEXT = re.compile(r"\b(?:option|number|choice|#)\s*\d|^\s*#?\d{1,2}\s*(?:[.):,-]|$)")
_AMOUNT = re.compile(r"(\$)?\s?(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s*(k|m|mil|million|thousand|grand)?\b")
_NAME_LEAD = re.compile(
    r"^(?:(?:their|his|her|the|other|party|person|company|opposing|side|name|names|is|it'?s|its|was|called|"
    r"my|ex|wife|husband|spouse|landlord|employer|boss|neighbor|neighbour|former|business|partner|against|"
    r"suing|sued|vs|v|with|it|this|that|i|think|believe|guy|lady|named)\b[\s,:.-]*)+", re.I)
_NAME = re.compile(r"^[a-z][a-z'.&-]*(?:\s+[a-z&][a-z'.&-]*){0,5}$", re.I)
_NONE = re.compile(r"^(?:no(?:ne|body|\s+one|pe)?|nobody|n/?a|not\s+applicable|there\s+isn'?t|no\s+other\s+party|"
                   r"just\s+me|nothing|there'?s\s+(?:nobody|no\s*one|none|nothing|no\s+other)|theres\s+(?:nobody|no\s*one))\b")
_NOT_NAMES = frozenset({"i", "you", "we", "what", "why", "how", "who", "need", "want", "is", "are", "do", "does",
                        "can", "have", "talk", "call", "please", "don't", "dont", "know", "sure", "idea", "help",
                        "yes", "okay", "ok", "hello", "hi", "thanks"})
_RANGE = re.compile(r"(\d+(?:\.\d+)?)\s*(-|to|and)\s*(\$?\s?\d+(?:\.\d+)?)\s*(k|m|mil|million|thousand|grand)\b")
_FILLER = frozenset({"hi", "hello", "hey", "ok", "okay", "k", "yes", "no", "what", "huh", "?", "thanks", "thank you",
                     "lol", "hmm", "um", "uh", "sure"})


def choice(text: str, step: Step, *, strict: bool = False) -> str | None:
    """An option's value from its number ("2", "the second one") or its words ("it's about my divorce")."""
    tokens = words(text)
    if not strict and (len(tokens) <= 3 or _PICK_CONTEXT.search(text)):
        index = ordinal_pick(tokens, len(step.options))
        if index is not None:
            return step.options[index - 1].value
    return option_by_words(text, step.options)


def option_by_words(text: str, options: list[Option]) -> str | None:
    """The one option whose words the caller used, skipping negated ones ("not criminal, it's family")."""
    pad = padded(text)
    tokens = words(text)
    scores: dict[str, int] = {}
    for option in options:
        for phrase in said_phrases(pad, option.words):
            if not _negated_phrase(tokens, phrase):
                scores[option.value] = max(scores.get(option.value, 0), len(phrase))
    if not scores:
        return None
    best = max(scores.values())
    winners = [value for value, score in scores.items() if score == best]
    return winners[0] if len(winners) == 1 else None


def _negated_phrase(tokens: list[str], phrase: str) -> bool:
    first = phrase.split()[0]
    return any(negated(tokens, i) for i, t in enumerate(tokens) if t.startswith(first))


def zip_code(text: str) -> str | None:
    match = _ZIP.search(text)
    return match.group(1) if match else None


def place(text: str, step: Step, *, strict: bool = False) -> str | None:
    """A ZIP code, or (when asked) a city or area name; the service-area check is a qualification rule."""
    found = zip_code(text)
    if found or strict:
        return found
    if unsure(padded(text)):
        return None
    match = _CITY.match(text.strip(" .!"))
    if match is None or len(words(match.group(1))) > 4 or match.group(1).strip() in _FILLER:
        return None
    city = match.group(1).strip().title()
    area = step.area
    if area is not None and area.defined and area.cities and not area.covers_city(city):
        return None  # an unknown name: ask again for the ZIP, which the area check can decide
    return city


def name(text: str, *, strict: bool = False) -> str | None:
    """A person's or company's name ("Jane Doe", "his name is Mark Lee", "Acme Insurance"); "none" for nobody."""
    said = text.strip(" .!?")
    if strict:
        match = re.search(r"\bmy name is ([a-z][a-z'-]+(?: [a-z][a-z'-]+)?)", said)
        return match.group(1).title() if match else None
    if _NONE.match(said):
        return "none"
    if unsure(padded(said)):
        return None
    cleaned = _NAME_LEAD.sub("", said).strip(" ,.")
    if not cleaned or not _NAME.match(cleaned) or any(c.isdigit() for c in cleaned):
        return None
    if any(w in _NOT_NAMES for w in cleaned.lower().split()):
        return None
    return " ".join(w if w.isupper() and len(w) > 1 else w.capitalize() for w in cleaned.split())


def money(text: str, step: Step, *, strict: bool = False) -> str | None:
    """The band an amount falls in ("$450k", "around 450,000", "1.2m"), or a band's number/words when asked."""
    worded = option_by_words(text, step.options)  # "under 300" is the band's own wording, not 300k
    if worded is not None:
        return worded
    amount = _amount(text, step.unit, strict=strict)
    if amount is not None:
        for option in step.options:
            if (option.min is None or amount >= option.min) and (option.max is None or amount < option.max):
                return option.value
    if strict:
        return None
    return choice(text, step)


def _amount(text: str, unit: int, *, strict: bool) -> float | None:
    text = _RANGE.sub(r"\1\4 \2 \3\4", text)  # "400-500k" is 400k to 500k
    amounts, scaled = [], []
    for match in _AMOUNT.finditer(text):
        dollar, digits, scale = match.group(1), match.group(2), match.group(3)
        if strict and not (dollar or scale):
            continue
        if not dollar and not scale and len(words(text)) <= 2 and float(digits.replace(",", "")) < 10:
            continue  # "2" answers which band, it is not two dollars
        value = float(digits.replace(",", ""))
        if scale in ("k", "thousand", "grand"):
            value *= 1_000
        elif scale in ("m", "mil", "million"):
            value *= 1_000_000
        elif value < 10_000:
            value *= unit
        (scaled if dollar or scale else amounts).append(value)
    chosen = scaled or amounts
    if not chosen:
        return None
    return sum(chosen) / len(chosen)  # "between 400 and 500k": the middle of the range


def free_text(text: str) -> str | None:
    said = " ".join(text.split()).strip()
    if unsure(padded(said.lower())):
        return None
    if len(words(said.lower())) == 0 or said.lower().strip(" .!?") in _FILLER:
        return None
    return said[:200]

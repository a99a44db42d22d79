"""Text primitives every slot reader shares: normalising, words, phrases, numbers, yes/no with negation."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'"})
_SUFFIX_GROUP = "s|es|ed|d|ing|er|ers"

ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
            "fifth": 5, "5th": 5, "sixth": 6, "6th": 6, "last": -1}
CARDINALS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}

YES = frozenset({"yes", "y", "yeah", "yea", "yep", "yup", "ya", "yah", "sure", "correct", "absolutely", "definitely",
                 "affirmative", "certainly", "true", "yess", "yesss"})
NO = frozenset({"no", "n", "nope", "nah", "nay", "negative", "false", "nothing", "none", "never", "noo", "nooo"})
NEGATORS = frozenset({"not", "no", "don't", "dont", "doesn't", "doesnt", "isn't", "isnt", "aren't", "arent",
                      "wasn't", "wasnt", "haven't", "havent", "hasn't", "hasnt", "won't", "wont", "never",
                      "didn't", "didnt", "can't", "cant", "neither", "nor", "without"})
YES_PHRASES = ("i do", "i am", "i have", "there is", "there are", "i think so", "it is", "we do", "we have",
               "yes please", "that's right", "thats right", "of course", "for sure", "i guess so", "probably")
NO_PHRASES = ("i don't", "i dont", "i do not", "i'm not", "im not", "i am not", "there isn't", "there is not",
              "there's no", "theres no", "not really", "not yet", "not at all", "i haven't", "i have not",
              "no thanks", "no thank you", "probably not", "i don't think so", "i dont think so", "we don't",
              "we do not", "not that i know", "nothing like that", "none that i know", "not that i remember",
              "not that i recall", "dont think so", "don't think so", "not as far as i know")
UNSURE_PHRASES = ("not sure", "unsure", "don't know", "dont know", "do not know", "idk", "no idea", "dunno",
                  "maybe", "can't remember", "cant remember", "not certain", "no clue", "hard to say")


def normalise(text: str) -> str:
    """Lower case, straight apostrophes, single spaces."""
    return " ".join(text.translate(_APOSTROPHES).lower().split())


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def padded(text: str) -> str:
    """' word word ' for phrase matching on word boundaries."""
    return " " + " ".join(words(text)) + " "


def has_phrase(padded_text: str, phrases: Iterable[str]) -> bool:
    return any(f" {p} " in padded_text for p in phrases)


@functools.lru_cache(maxsize=4096)
def phrase_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern for a lexicon: any phrase, a plain suffix allowed on its last word ("leak" ~ "leaking"),
    longest phrases first so a match names the most specific one. Matched against `padded` text."""
    alternatives = []
    for phrase in sorted(set(phrases), key=len, reverse=True):
        stem = re.escape(phrase)
        alternatives.append(f"{stem}(?:{_SUFFIX_GROUP})?")
        if phrase.endswith("e"):
            alternatives.append(f"{re.escape(phrase[:-1])}ing")
    return re.compile(f" ({'|'.join(alternatives) or '(?!)'})(?= )")


def said_any(padded_text: str, phrases: tuple[str, ...]) -> bool:
    return bool(phrases) and phrase_pattern(phrases).search(padded_text) is not None


def said_plainly(padded_text: str, phrases: tuple[str, ...]) -> bool:
    """A phrase said and not negated: "urgent" yes, "not urgent" / "isn't really urgent" no."""
    if not phrases:
        return False
    tokens = padded_text.split()
    for match in phrase_pattern(phrases).finditer(padded_text):
        if not negated(tokens, padded_text[:match.start() + 1].count(" ") - 1):
            return True
    return False


def said_phrases(padded_text: str, phrases: tuple[str, ...]) -> list[str]:
    return [m.group(1) for m in phrase_pattern(phrases).finditer(padded_text)] if phrases else []


def negated(tokens: list[str], index: int) -> bool:
    """The word at `index` is negated by one of the two words before it ("not criminal", "isn't really urgent")."""
    return any(t in NEGATORS for t in tokens[max(0, index - 2):index])


def unsure(padded_text: str) -> bool:
    return has_phrase(padded_text, UNSURE_PHRASES)


def yes_no(text: str, *, yes_words: tuple[str, ...] = (), no_words: tuple[str, ...] = ()) -> str | None:
    """"yes" / "no" from a reply, reading negation ("not really", "I don't think so"); None when unclear.

    `yes_words`/`no_words` are the step's own hints ("court date" means yes to "is there a deadline?").
    """
    text = normalise(text)
    pad = padded(text)
    if unsure(pad):
        return None
    said_no = has_phrase(pad, NO_PHRASES) or said_any(pad, no_words)
    hinted_yes = said_any(pad, yes_words)
    if hinted_yes and not said_no:  # "yes we have no hot water": the "no" belongs to the yes hint
        for phrase in said_phrases(pad, yes_words):
            pad = pad.replace(f" {phrase} ", " ")
        text = pad.strip()
    said_yes = False
    tokens = words(text)
    for i, token in enumerate(tokens):
        if token in NO:
            said_no = True
        elif token in YES:
            if negated(tokens, i):
                said_no = True
            else:
                said_yes = True
    if not said_no:
        said_yes = said_yes or has_phrase(pad, YES_PHRASES) or hinted_yes
    if said_yes == said_no:
        return None
    return "yes" if said_yes else "no"


def ordinal_pick(tokens: list[str], count: int) -> int | None:
    """A 1-based pick from "the second one", "first", "last", "#2", "option 3", or a bare "2"."""
    picks: set[int] = set()
    ordinal_said = any(t in ORDINALS for t in tokens)  # "the second one": "one" is not a pick then
    for i, token in enumerate(tokens):
        if token in ORDINALS:
            picks.add(count if ORDINALS[token] == -1 else ORDINALS[token])
        elif token.isdecimal() and len(token) <= 2:  # isdigit() also passes "²", which int() refuses
            picks.add(int(token))
        elif token in CARDINALS and not ordinal_said and (len(tokens) <= 3 or (i and tokens[i - 1] in {"option", "number", "choice"})):
            picks.add(CARDINALS[token])
    picks = {p for p in picks if 1 <= p <= count}
    return picks.pop() if len(picks) == 1 else None

"""Misspelt words read as the playbook's own ("divorse" → divorce, "flodding" → flooding, "brethe" → breathe).

Before any phrase is matched, each word of five letters or more that is not in the
playbook's vocabulary (the words of its options, yes/no hints and lexicons) is
compared with that vocabulary by rapidfuzz. A
close one (OSA similarity ≥ 0.8, one slip in five letters, a swapped pair
counting as one; same first letter; length within one; not merely another
ending of the same word) takes its place; then every reader matches exactly as
before, with stems, negation and the longest phrase
winning. Short words are left alone: "dui", "will" and "sale" are too close to
everyday words to guess at. Corrections are cached per playbook.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rapidfuzz import process
from rapidfuzz.distance import OSA

_LETTERS = re.compile(r"(?<!['a-z])[a-z]+(?!['a-z])")  # whole words: "don't" and "it's" are left alone
MIN_LETTERS = 5
CUTOFF = 0.8  # OSA similarity: one slip (a wrong, missing, extra or swapped letter) in five letters
ENDINGS = ("s", "es", "ed", "d", "ing", "er", "ers")


class Speller:
    def __init__(self, vocabulary: Iterable[str]) -> None:
        self.known = frozenset(vocabulary)
        self.candidates = tuple(sorted(w for w in self.known if len(w) >= MIN_LETTERS - 1 and w.isalpha()))
        self._seen: dict[str, str] = {}

    def word(self, token: str) -> str:
        """The vocabulary word a caller's token misspells, or the token itself."""
        if len(token) < MIN_LETTERS or token in self.known or not token.isalpha():
            return token
        fixed = self._seen.get(token)
        if fixed is None:
            fixed = token
            hit = process.extractOne(token, self.candidates, scorer=OSA.normalized_similarity, score_cutoff=CUTOFF)
            if hit is not None and _typo_of(token, hit[0]):
                fixed = hit[0]
            if len(self._seen) < 50_000:
                self._seen[token] = fixed
        return fixed

    def text(self, said: str) -> str:
        """A normalised reply with its misspellings of the vocabulary corrected, word by word
        ("pre-aproved" → "pre-approved")."""
        return _LETTERS.sub(lambda m: self.word(m.group(0)), said)


def _typo_of(token: str, known: str) -> bool:
    """Close enough to be a slip of the thumb, and not the same word with another ending ("charge" is not
    "charged", "mornings" is "morning" already): those the phrase matcher reads on its own."""
    if known[0] != token[0] or abs(len(known) - len(token)) > 1:
        return False
    longer, shorter = (known, token) if len(known) > len(token) else (token, known)
    return not (longer.startswith(shorter) and longer[len(shorter):] in ENDINGS)

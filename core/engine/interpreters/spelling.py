"""Misspelt words read as the playbook's own ("divorse" → divorce, "flodding" → flooding, "brethe" → breathe).

Before any phrase is matched, each word of five letters or more that is not in the
playbook's vocabulary (the words of its options, yes/no hints and lexicons) is
compared with that vocabulary by rapidfuzz. A close one (normalised Indel
similarity ≥ 85, same first letter, length within one, not merely another
ending of the same word) takes its place; then every
reader matches exactly as before, with stems, negation and the longest phrase
winning. Short words are left alone: "dui", "will" and "sale" are too close to
everyday words to guess at. Corrections are cached per playbook.
"""

from __future__ import annotations

from collections.abc import Iterable

from rapidfuzz import fuzz, process

MIN_LETTERS = 5
CUTOFF = 85.0


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
            hit = process.extractOne(token, self.candidates, scorer=fuzz.ratio, score_cutoff=CUTOFF)
            if hit is not None and _typo_of(token, hit[0]):
                fixed = hit[0]
            if len(self._seen) < 50_000:
                self._seen[token] = fixed
        return fixed

    def text(self, said: str) -> str:
        """A normalised reply with its misspellings of the vocabulary corrected, word by word."""
        out, changed = [], False
        for token in said.split(" "):
            core = token.strip(".,!?;:()\"'")
            fixed = self.word(core) if core else core
            if fixed != core:
                changed = True
                token = token.replace(core, fixed)
            out.append(token)
        return " ".join(out) if changed else said


def _typo_of(token: str, known: str) -> bool:
    """Close enough to be a slip of the thumb, and not the same word with another ending ("charge" is not
    "charged", "mornings" is "morning" already): those the phrase matcher reads on its own."""
    if known[0] != token[0] or abs(len(known) - len(token)) > 1:
        return False
    return not (known.startswith(token) or token.startswith(known))

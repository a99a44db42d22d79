"""The labelled caller-reply corpus (tests/core/engine/corpus/): how people really text, read by both interpreters.

bench/understanding.py scores it and prints the misses; bench/RESULTS.md records the figures.
"""

from __future__ import annotations

import pytest

from bench.understanding import HOLDOUT, WATCHED, corpus, read, sandbox_llm, score
from core.engine.interpreters import RULES

TARGET = 0.95


def test_the_corpus_holds_at_least_300_replies_across_the_four_verticals():
    cases = corpus()
    assert len(cases) >= 300
    assert {c.vertical for c in cases} == {"law", "medical", "home_services", "real_estate"}
    assert all(sum(c.vertical == v for c in cases) >= 75 for v in {c.vertical for c in cases})
    assert sum(bool(c.others) for c in cases) >= 20, "several answers in one message"
    assert sum(bool(c.signals & {s for s in WATCHED if s.value in ("urgent", "emergency")}) for c in cases) >= 50


def test_the_rules_interpreter_understands_at_least_95_percent_in_every_vertical():
    for vertical, tally in score(RULES).items():
        assert tally.rate >= TARGET, f"{vertical}: {tally.rate:.1%}\n" + "\n".join(tally.misses)


def test_every_danger_and_every_urgency_in_the_corpus_is_caught():
    for case in corpus():
        if case.signals & {s for s in WATCHED if s.value in ("urgent", "emergency")}:
            reading = read(case, RULES)
            assert case.signals <= reading.signals, case


@pytest.mark.parametrize("model", ["empty", "wrong"])
def test_the_llm_interpreter_keeps_the_same_guarantees_whatever_the_sandbox_model_answers(model):
    # Given a model that says nothing, or one that invents a value for every question and drops every signal
    with sandbox_llm(model) as llm:
        # When the corpus is read through it over real HTTP
        scores = score(llm)
    # Then validation and the rules' safety signals keep the result as good as the rules alone
    rules = score(RULES)
    for vertical, tally in scores.items():
        assert tally.rate >= TARGET, f"{model} {vertical}: {tally.rate:.1%}\n" + "\n".join(tally.misses)
        assert tally.correct >= rules[vertical].correct, vertical


def test_replies_written_after_the_tuning_are_still_mostly_understood():
    # The held-out replies were never tuned on; this guards against regressions, the figure is in bench/RESULTS.md
    scores = score(RULES, HOLDOUT)
    correct, total = sum(s.correct for s in scores.values()), sum(s.total for s in scores.values())
    assert total >= 50 and correct / total >= 0.85, "\n".join(m for s in scores.values() for m in s.misses)

"""Whole conversations through the real webhooks, per vertical, answered the way people text.

A caller who answers every question in their own words reaches a slot offer without one re-ask; urgency and
danger said at the first, second or last question get the right text and a priority handoff; a caller who
keeps texting after a handoff reads one acknowledgement and staff read every message.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from core.engine.playbook import load_playbook
from tests.webhooks.conftest import CALLER
from tests.webhooks.policy_support import world

DANA = "+15550007777"
TUESDAY = datetime(2031, 3, 4, 15, 0, tzinfo=timezone.utc)  # 10:00 in New York, inside the tenant's hours

IN_WORDS = {
    "law": ["It's about my divorse", "nope nothing scheduled", "no, I'm a new client", "this is Maria Lopez",
            "my husband Mark Doyle"],
    "medical": ["annual physcial", "yes I've been seen there before", "no rush", "any time works"],
    "home_services": ["the kitchen sink is leaking", "we're in 10001", "nope not urgent", "in the next few weeks"],
    "real_estate": ["looking to buy a house", "Springfield", "around 450k", "in a couple months",
                    "yes, pre-aproved"],
}
URGENT = {"law": "I got arrested last night", "medical": "the pain is getting worse",
          "home_services": "the basement is flooding", "real_estate": "our closing is tomorrow and the lender fell through"}
DANGER = {"law": "he is threatening to kill me", "medical": "my chest hurts and I cant breathe",
          "home_services": "I smell gas in the kitchen", "real_estate": "someone broke in to the house"}
SAFETY = {"law": "call 911", "medical": "call 911", "home_services": "leave the building", "real_estate": "call 911"}


@pytest.fixture(params=sorted(IN_WORDS))
def vertical(request):
    return request.param


@pytest.fixture
def w(vertical, stack, sqlite_db, tmp_path, monkeypatch):
    with world(stack=stack, db=sqlite_db, tmp_path=tmp_path, monkeypatch=monkeypatch, vertical=vertical,
               handoff_to=[DANA]) as w:
        w.clock.set(TUESDAY)
        yield w


def reasks(vertical: str) -> list[str]:
    return [step.reask for step in load_playbook(vertical).steps]


def caller(n: int) -> str:
    return f"+1555010{4000 + n}"


def test_a_caller_who_answers_everything_in_words_gets_times_without_a_single_reask(w, vertical):
    w.miss()
    for answer in IN_WORDS[vertical]:
        w.text(answer)
    texts = w.texts()
    assert not any(text in reasks(vertical) for text in texts), texts
    assert "Reply with the number of the time" in texts[-1], texts
    assert w.texts(DANA) == []


@pytest.mark.parametrize("position", ["first", "second", "last"])
def test_urgency_and_danger_are_heard_at_any_step(w, vertical, position):
    answers = IN_WORDS[vertical]
    before = {"first": [], "second": answers[:1], "last": answers[:-1]}[position]
    for n, (kind, said) in enumerate([("urgent", URGENT[vertical]), ("danger", DANGER[vertical])]):
        number = caller(n)
        w.miss(caller=number, sid=f"CA{n:032d}")
        for answer in before:
            w.text(answer, caller=number)
        w.text(said, caller=number)
        reply = w.texts(number)[-1]
        if kind == "urgent":
            assert load_playbook(vertical).urgent_reply.split("{business}")[0] in reply, reply
        else:
            assert SAFETY[vertical] in reply, reply
        notice = w.texts(DANA)[-1]
        assert number in notice and f"Urgency: {'urgent' if kind == 'urgent' else 'emergency'}" in notice, notice


def test_a_caller_who_keeps_texting_after_a_handoff_reads_one_acknowledgement_and_staff_read_everything(w):
    w.miss()
    w.text("can I just talk to a person")
    handed_off = len(w.texts())
    later = ["ok", "hello??", "are you there", "please call me after 5", "its about my case", "thanks", "hello"]
    for body in later:
        w.text(body)
    after = w.texts()[handed_off:]
    assert len(after) == 1, after
    relayed = w.texts(DANA)[1:]
    assert [body for body in later if any(f'"{body}"' in r for r in relayed)] == later
    assert len(set(w.texts())) == len(w.texts()), "no identical texts to the caller"
    assert CALLER in relayed[0]


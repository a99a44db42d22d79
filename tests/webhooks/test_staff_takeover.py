"""Handoff to a person and staff replies through the business number."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.store.tables import Conversation
from tests.webhooks.conftest import BUSINESS, CALLER, STAFF
from tests.webhooks.policy_support import world

DANA = "+15550007777"


@pytest.fixture
def w(stack, sqlite_db, tmp_path, monkeypatch):
    with world(stack=stack, db=sqlite_db, tmp_path=tmp_path, monkeypatch=monkeypatch, handoff_to=[DANA]) as w:
        yield w


def _conversation(w) -> Conversation:
    with w.textback.runtime.db.transaction() as s:
        return s.scalar(select(Conversation))


def test_a_caller_asking_for_a_person_is_handed_off_and_staff_get_a_one_line_summary(w):
    w.miss()

    w.text("Can I talk to a real person please")

    [notice] = w.texts(DANA)
    conversation = _conversation(w)
    assert conversation.state == "handoff" and conversation.handoff_summary
    assert CALLER in notice and f'"#{conversation.id} your message"' in notice
    assert w.stack.twilio.messages_to(DANA)[0]["from"] == BUSINESS


def test_a_staff_reply_through_the_business_number_reaches_the_caller_and_pauses_the_bot(w):
    w.miss()
    conversation_id = _conversation(w).id

    w.text(f"#{conversation_id} Hi, this is Dana from Smith & Lee. Can I call you at 3?", caller=STAFF)
    w.text("1")

    texts = w.texts()
    assert texts[-1] == "Hi, this is Dana from Smith & Lee. Can I call you at 3?"
    assert len(texts) == 2  # the opener and Dana's message; the bot stays quiet after the takeover
    assert _conversation(w).paused is True
    assert w.stack.twilio.messages_to(CALLER)[-1]["from"] == BUSINESS


def test_a_retried_staff_message_is_relayed_once(w):
    w.miss()
    conversation_id = _conversation(w).id

    for _ in range(2):
        w.phone.text(caller=STAFF, to=BUSINESS, body=f"#{conversation_id} On my way", message_sid="SM" + "7" * 32)
    w.textback.drain()

    assert w.texts().count("On my way") == 1


def test_a_staff_text_that_is_not_a_command_gets_the_usage_line_and_reaches_no_caller(w):
    w.miss()

    w.text("who is this?", caller=STAFF)

    assert w.texts(STAFF)[-1].startswith("textback: to answer a caller")
    assert len(w.texts()) == 1


def test_staff_cannot_text_a_caller_who_opted_out(w):
    w.miss()
    conversation_id = _conversation(w).id
    w.text("stop texting me")

    w.text(f"#{conversation_id} Sorry to bother you", caller=STAFF)

    assert "opted out" in w.texts(STAFF)[-1]
    assert "Sorry to bother you" not in w.texts()


def test_only_a_resume_command_gives_the_conversation_back_to_the_bot_which_asks_its_question_again(w):
    # Given a caller handed to staff, and staff who replied
    w.miss()
    w.text("can I talk to a person")
    conversation_id = _conversation(w).id
    w.text(f"#{conversation_id} Hi, Dana here. What is it about?", caller=STAFF)
    w.text("a divorce")
    assert _conversation(w).paused is True and w.texts()[-1] == "Hi, Dana here. What is it about?"
    # When staff hand it back
    w.text(f"#{conversation_id} resume", caller=STAFF)
    # Then the bot asks the question it was on, and goes on from the caller's answer
    row = _conversation(w)
    assert row.paused is False and row.state == "asking"
    assert w.texts()[-1].startswith("What is your call about?")
    w.text("divorce")
    assert "court date" in w.texts()[-1]
    assert "the bot has conversation" in w.texts(STAFF)[-1]

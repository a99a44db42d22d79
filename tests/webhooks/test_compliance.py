"""Opt-outs, HELP, carrier errors, follow-ups and takeovers: STOP always works, nothing is sent twice."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from core.store.tables import Conversation, OptOutEvent
from tests.webhooks.conftest import BUSINESS, CALLER
from tests.webhooks.policy_support import world


@pytest.fixture
def make_world(stack, sqlite_db, tmp_path, monkeypatch):
    def make(**overrides):
        return world(stack=stack, db=sqlite_db, tmp_path=tmp_path, monkeypatch=monkeypatch, **overrides)
    return make


def _first_sid(w) -> str:
    return w.stack.twilio.messages_to(CALLER)[0]["sid"]


@pytest.mark.parametrize("body", ["STOP", "stop", "Stop.", "STOPALL", "unsubscribe", "CANCEL", "end", "Quit!",
                                  "revoke", "OPTOUT", "opt out"])
def test_every_carrier_stop_word_opts_out_and_nothing_more_is_sent(make_world, body):
    with make_world() as w:
        w.miss()

        w.text(body)
        w.text("1")
        w.later(hours=30)  # the follow-up would have been due
        w.miss(sid="CA" + "9" * 32)

        assert len(w.texts()) == 1  # the carrier confirms keywords itself; textback sends nothing more
        assert w.lead().opted_out_at is not None and w.lead().opt_out_source == "sms_keyword"
        assert w.skip_reasons() == [None, "opted_out"]


@pytest.mark.parametrize("body", ["Stop texting me please", "please don't text me", "Wrong number",
                                  "remove me from this", "no more messages"])
def test_a_free_text_revocation_opts_out_with_one_confirmation_and_a_later_call_sends_nothing(make_world, body):
    with make_world() as w:
        w.miss()

        w.text(body)
        w.text("why are you still here")
        w.miss(sid="CA" + "9" * 32)

        texts = w.texts()
        assert len(texts) == 2
        assert texts[1].startswith("You're unsubscribed from Smith & Lee Law texts")
        assert w.lead().opt_out_source == "sms_phrase"
        assert w.skip_reasons() == [None, "opted_out"]


def test_an_opt_out_is_stored_with_time_and_source_and_reaches_the_crm(make_world):
    with make_world() as w:
        w.miss()
        w.text("stop texting me")

        with w.textback.runtime.db.transaction() as s:
            [event] = s.scalars(select(OptOutEvent)).all()
        assert (event.action, event.source, event.detail) == ("opt_out", "sms_phrase", "stop texting me")
        [note] = w.stack.hubspot.objects("notes")
        assert "Outcome: opted_out" in note["properties"]["hs_note_body"]


def test_start_resubscribes_and_a_later_missed_call_is_texted_again(make_world):
    with make_world(missed_call={"cooldown_hours": 0}) as w:
        w.miss()
        w.text("STOP")

        w.text("START")
        w.miss(sid="CA" + "8" * 32)

        assert len(w.texts()) == 2 and w.lead().opted_out_at is None


def test_yes_from_someone_not_opted_out_is_an_answer_not_a_keyword(make_world):
    with make_world() as w:
        w.miss()
        w.text("1")

        w.text("yes")

        assert w.lead().opted_out_at is None
        assert len(w.texts()) >= 3


@pytest.mark.parametrize("body", ["HELP", "help", "Info"])
def test_help_answers_with_the_business_contact_rates_and_stop_instructions(make_world, body):
    with make_world(contact="(555) 000-1111") as w:
        w.miss()

        w.text(body)

        help_text = w.texts()[-1]
        for part in ("Smith & Lee Law", "(555) 000-1111", "Msg & data rates may apply", "STOP"):
            assert part in help_text


def test_a_21610_delivery_report_marks_the_number_opted_out(make_world):
    with make_world() as w:
        w.miss()

        w.phone.signed_post("/twilio/sms/status", {"MessageSid": _first_sid(w), "MessageStatus": "undelivered",
                                                   "ErrorCode": "21610", "To": BUSINESS, "From": CALLER})
        w.textback.drain()
        w.text("1")

        assert w.lead().opt_out_source == "carrier_21610"
        assert len(w.texts()) == 1


@pytest.mark.parametrize("code", [30007, 30003, 30005, 30006, 21635])
def test_carrier_errors_that_stop_sends_are_recorded_by_code(make_world, code):
    with make_world(missed_call={"cooldown_hours": 0}) as w:
        w.miss()

        w.phone.signed_post("/twilio/sms/status", {"MessageSid": _first_sid(w), "MessageStatus": "undelivered",
                                                   "ErrorCode": str(code), "To": BUSINESS, "From": CALLER})
        w.textback.drain()
        with w.textback.runtime.db.transaction() as s:
            s.scalar(select(Conversation)).state = "handoff"
        w.miss(sid="CA" + "7" * 32)

        assert w.lead().undeliverable_code == code
        assert w.skip_reasons() == [None, "undeliverable"]
        assert w.outbound()[0].error_code == code


def test_a_caller_who_does_not_reply_gets_one_follow_up_and_no_more(make_world):
    with make_world(followups={"max": 1, "after_hours": 4}) as w:
        w.clock.set(w.clock().replace(hour=15, minute=0))  # 10:00 in New York, inside everyone's window
        w.miss()

        w.later(hours=4, minutes=1)
        w.later(hours=30)

        texts = w.texts()
        assert len(texts) == 2 and "Hi again" in texts[1]


def test_a_caller_who_replied_gets_no_follow_up(make_world):
    with make_world(followups={"max": 2, "after_hours": 4}) as w:
        w.clock.set(w.clock().replace(hour=15, minute=0))
        w.miss()
        w.text("1")
        sent = len(w.texts())

        w.later(hours=9)

        assert len(w.texts()) == sent


def test_a_takeover_pauses_the_bot_for_that_conversation(make_world):
    import hashlib

    with make_world(api_key_sha256=hashlib.sha256(b"tbk_k").hexdigest()) as w:
        w.miss()
        with w.textback.runtime.db.transaction() as s:
            conversation_id = s.scalar(select(Conversation.id))

        response = httpx.post(f"{w.textback.url}/api/v1/conversations/{conversation_id}/takeover",
                              headers={"Authorization": "Bearer tbk_k"}, params={"by": "Dana"})
        w.textback.drain()
        w.text("1")
        w.later(hours=30)

        assert response.status_code == 200 and response.json()["paused"] is True
        assert len(w.texts()) == 1

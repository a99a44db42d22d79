"""The delivery contract end to end: texts at most once, every failure visible, no caller left in silence."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from connectors import registry
from connectors.twilio import TwilioSMS
from core.store.tables import Conversation, Message, OutboxRow
from sync import actors
from sync.relay import relay_pending
from sync.runner import CLAIM, MAX_ATTEMPTS
from tests.webhooks.conftest import CALLER
from tests.webhooks.policy_support import world

DANA = "+15550007777"
MESSAGES = "/2010-04-01/Accounts"


class BrokenCRM:
    """A CRM plugin with a bug: every call raises something that is not a ConnectorError."""

    def __init__(self) -> None:
        self.calls = 0

    def upsert_contact(self, contact, *, existing_id=None) -> str:
        self.calls += 1
        raise RuntimeError("boom: the plugin has a bug")


def impatient_twilio(config, **injected):
    """Twilio through the real SDK on an HTTP client that gives up after half a second."""
    if config.type == "twilio":
        return TwilioSMS(config, http=httpx.Client(timeout=0.5))
    return registry.build(config, **injected)


@pytest.fixture
def make_world(stack, sqlite_db, tmp_path, monkeypatch):
    def make(**overrides):
        return world(stack=stack, db=sqlite_db, tmp_path=tmp_path, monkeypatch=monkeypatch, **overrides)
    return make


@pytest.fixture
def quick_retries(monkeypatch):
    """Retries as declared, only fewer and faster, so a test sees them run out."""
    monkeypatch.setattr(actors, "MAX_RETRIES", 2)
    monkeypatch.setitem(actors.run_outbox.options, "min_backoff", 10)
    monkeypatch.setitem(actors.run_outbox.options, "max_backoff", 50)


def test_twilio_answering_slower_than_the_client_waits_still_sends_the_text_exactly_once(make_world, monkeypatch):
    # Given: Twilio will take the next message but answer after the client has given up
    with make_world(connector_factory=impatient_twilio) as w:
        w.stack.twilio.faults.delay_next(MESSAGES, seconds=1.5)
        # When: a call is missed, and the send times out and is retried
        w.miss()
        w.textback.drain(timeout=30)
        # Then: one message at Twilio, and ours is sent with Twilio's sid
        at_twilio = w.stack.twilio.messages_to(CALLER)
        [ours] = w.outbound()
        [row] = w.rows("send_sms")
    assert len(at_twilio) == 1
    assert ours.provider_sid == at_twilio[0]["sid"] and ours.status != "sending"
    assert row.status == "done" and row.attempts == 2


def test_a_send_that_never_reached_twilio_is_sent_on_the_retry(make_world):
    # Given: the connection to Twilio drops before any answer, and Twilio never saw the request
    with make_world() as w:
        w.stack.twilio.faults.drop_next(MESSAGES)
        # When
        w.miss()
        w.textback.drain(timeout=30)
        at_twilio = w.stack.twilio.messages_to(CALLER)
        [ours] = w.outbound()
    # Then: the retry looked, found nothing, and sent it once
    assert len(at_twilio) == 1 and ours.provider_sid == at_twilio[0]["sid"]


def test_a_job_that_raises_a_plain_runtime_error_is_retried_then_dead_with_its_error(make_world, quick_retries):
    broken = BrokenCRM()

    def factory(config, **injected):
        return broken if config.type == "hubspot" else registry.build(config, **injected)

    with make_world(connector_factory=factory) as w:
        # When: the lead's CRM push hits the plugin's bug every time
        w.miss()
        w.textback.drain(timeout=30)
        [row] = w.rows("crm_sync_lead")
        texts = w.texts()
    # Then: tried 1 + 2 times, then dead, with the error that killed it; the caller's text was not held up
    assert row.status == "dead" and row.attempts == 3 and broken.calls == 3
    assert "RuntimeError" in row.last_error and "boom" in row.last_error and "gave up after" in row.last_error
    assert len(texts) == 1


def test_a_row_whose_worker_died_holding_it_is_run_again_by_the_relay_when_the_claim_expires(make_world):
    with make_world() as w:
        w.clock.set(w.clock())
        # Given: a worker claimed the first text and died before sending it
        w.textback.runtime.dispatcher, dispatcher = None, w.textback.runtime.dispatcher
        w.miss()
        w.textback.runtime.dispatcher = dispatcher
        [row] = w.rows("send_sms")
        with w.textback.runtime.db.transaction() as s:
            claimed = s.get(OutboxRow, row.id)
            claimed.claimed_until, claimed.attempts, claimed.enqueued_at = w.clock() + CLAIM, 1, w.clock()
        # When: a relay pass inside the claim, then one after it expired
        inside = relay_pending(w.textback.runtime, dispatcher, grace=timedelta(0))
        w.later(seconds=CLAIM.total_seconds() + 1)
        [row] = w.rows("send_sms")
    # Then: left alone while claimed, sent once the claim expired
    assert row.id not in inside
    assert row.status == "done" and row.attempts == 2 and len(w.texts()) == 1


def test_a_row_claimed_too_often_by_dying_workers_is_dead_not_looping(make_world):
    with make_world() as w:
        w.clock.set(w.clock())
        w.textback.runtime.dispatcher, dispatcher = None, w.textback.runtime.dispatcher
        w.miss()
        w.textback.runtime.dispatcher = dispatcher
        [row] = w.rows("send_sms")
        with w.textback.runtime.db.transaction() as s:
            claimed = s.get(OutboxRow, row.id)
            claimed.claimed_until, claimed.attempts = w.clock() - timedelta(seconds=1), MAX_ATTEMPTS
        # When
        relay_pending(w.textback.runtime, dispatcher, grace=timedelta(0))
        [row] = w.rows("send_sms")
    # Then
    assert row.status == "dead" and f"claimed {MAX_ATTEMPTS} times" in row.last_error
    assert w.texts() == []


def test_a_finished_row_shows_no_stale_error(make_world):
    with make_world() as w:
        # Given: Twilio fails once with a 503 before taking the text
        w.stack.twilio.faults.fail_next(MESSAGES, status=503)
        w.miss()
        w.textback.drain(timeout=30)
        [row] = w.rows("send_sms")
    # Then: done after a retry, and the error it got on the way is gone
    assert row.status == "done" and row.attempts == 2 and row.last_error is None


def test_free_busy_refused_for_good_hands_the_caller_to_staff_with_the_reason(make_world, stack):
    # Given: the tenant's calendar id does not exist at Google (or is not shared with textback)
    with make_world(handoff_to=[DANA], connectors={"calendar": stack.connectors_yaml(
            calendars=["nobody@nowhere.example"])["calendar"]}) as w:
        # When: the caller qualifies and times are looked up
        w.miss()
        for reply in ("1", "no", "no", "Maria Lopez", "none"):
            w.text(reply)
        [offer] = w.rows("offer_slots")
        with w.textback.runtime.db.transaction() as s:
            state = s.scalar(select(Conversation.state))
        caller_last, staff = w.texts()[-1], w.texts(DANA)
    # Then: the caller hears a person will call, staff hear why, the row shows the refusal
    assert "will contact you" in caller_last
    assert len(staff) == 1 and "nobody@nowhere.example" in staff[0]
    assert state == "handoff" and offer.status == "failed" and "rejected" in offer.last_error


def test_every_outbound_message_ends_with_a_provider_sid_or_a_reason(make_world):
    with make_world() as w:
        w.miss()
        w.text("1")
        with w.textback.runtime.db.transaction() as s:
            unsent = s.scalars(select(Message).where(Message.direction == "outbound",
                                                     Message.provider_sid.is_(None))).all()
    assert [m.status for m in unsent] == []

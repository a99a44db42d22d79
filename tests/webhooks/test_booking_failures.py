"""When no time can be booked, the slot is freed and a person takes over: staff are told, the caller is told."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.store.tables import Booking, Conversation, OutboxRow
from tests.webhooks.conftest import CALENDAR
from tests.webhooks.policy_support import world

DANA = "+15550007777"


@pytest.fixture
def w(stack, sqlite_db, tmp_path, monkeypatch):
    with world(stack=stack, db=sqlite_db, tmp_path=tmp_path, monkeypatch=monkeypatch, handoff_to=[DANA]) as w:
        yield w


def _qualify(w) -> None:
    w.miss()
    for reply in ("1", "no", "no", "Maria Lopez", "none"):
        w.text(reply)


def test_a_calendar_that_refuses_the_event_frees_the_slot_and_hands_the_caller_over(w):
    _qualify(w)
    w.stack.google.faults.fail_next(f"/calendar/v3/calendars/{CALENDAR}/events", status=400)

    w.text("2")

    assert "will contact you" in w.texts()[-1]
    [notice] = w.texts(DANA)
    assert "no time could be booked" in notice
    with w.textback.runtime.db.transaction() as s:
        assert s.scalar(select(Booking.status)) == "released"
        assert s.scalar(select(Conversation.state)) == "handoff"
        failed = s.scalar(select(OutboxRow).where(OutboxRow.kind == "book_slot"))
    assert failed.status == "failed" and "rejected" in failed.last_error
    assert [e for e in w.stack.google.events(CALENDAR) if e.get("status") != "cancelled"] == []


def test_a_fully_booked_calendar_hands_the_qualified_caller_to_staff(w):
    from datetime import timedelta

    now = w.clock()
    w.stack.google.add_busy(CALENDAR, now, now + timedelta(days=30), summary="Trial month")

    _qualify(w)

    assert "couldn't find an open time" in w.texts()[-1]
    assert len(w.texts(DANA)) == 1

"""No double booking: conversations confirming the same or overlapping slots at once get exactly one event.

Each race runs the real book_slot outbox rows on two threads released together by a barrier,
against the Google sandbox, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
from datetime import datetime

import pytest

from connectors import registry
from core.outbox import Kind
from core.store.tables import Booking, Conversation
from sync.runtime import Runtime
from tests.sync.test_scheduling import (CALENDAR, at, bookings, choose, conversation, execute, live_events,
                                        make_runtime, offered, outbox_row, run, texts)

CALLERS = [f"+1555010{n:04d}" for n in range(1, 20)]


@pytest.fixture
def runtime(any_db, stack, tmp_path, monkeypatch) -> Runtime:
    return make_runtime(any_db, stack, tmp_path, monkeypatch)


def offer_to(runtime: Runtime, phone: str, **answers) -> int:
    conversation_id = conversation(runtime, phone, **answers)
    assert run(runtime, Kind.offer_slots, {"conversation_id": conversation_id}) == "done"
    return conversation_id


def book_slot_row(runtime: Runtime, conversation_id: int, number: int) -> int:
    return outbox_row(runtime, Kind.book_slot,
                      {"conversation_id": conversation_id, "slot": choose(runtime, conversation_id, number)})


def at_once(runtime: Runtime, row_ids: list[int]) -> None:
    """Execute the rows on one thread each, all released at the same instant."""
    barrier, failures = threading.Barrier(len(row_ids)), []

    def work(row_id: int) -> None:
        barrier.wait()
        try:
            execute(runtime, row_id)
        except Exception as exc:  # noqa: BLE001  (re-raised on the test's thread below)
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(row_id,)) for row_id in row_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures


def state(runtime: Runtime, conversation_id: int) -> str:
    with runtime.db.transaction() as s:
        return s.get(Conversation, conversation_id).state


def pairs(slots: list[dict]) -> set[tuple[str, datetime]]:
    return {(slot["calendar_id"], datetime.fromisoformat(slot["start"])) for slot in slots}


def all_live_events(stack) -> list[dict]:
    return live_events(stack, CALENDAR) + live_events(stack, "partner@smithlaw.example")


def test_two_callers_confirming_the_same_slot_at_once_get_one_event_and_the_other_is_offered_new_slots(
        runtime, stack):
    callers = iter(CALLERS)
    for round_ in range(1, 4):
        # Given: two callers offered the same times, both pick the first
        first, second = offer_to(runtime, next(callers)), offer_to(runtime, next(callers))
        assert offered(runtime, first) == offered(runtime, second)
        contested = offered(runtime, first)[0]
        # When: both confirmations run at the same instant
        at_once(runtime, [book_slot_row(runtime, first, 1), book_slot_row(runtime, second, 1)])
        # Then: one event at that time; the winner is booked, the loser is offered new times without it
        assert len(all_live_events(stack)) == round_
        assert [e for e in all_live_events(stack)
                if datetime.fromisoformat(e["start"]["dateTime"]) == datetime.fromisoformat(contested["start"])]
        winner, loser = (first, second) if state(runtime, first) == "booked" else (second, first)
        assert (state(runtime, winner), state(runtime, loser)) == ("booked", "choosing")
        assert texts(runtime, winner)[-1].startswith("You're booked with Smith & Lee Law")
        assert texts(runtime, loser)[-1].startswith("Sorry, that time was just taken. Here are the next open times")
        assert pairs([contested]) & pairs(offered(runtime, loser)) == set()
    assert sorted(b.status for b in bookings(runtime)) == ["confirmed"] * 3


def test_two_callers_confirming_overlapping_slots_at_once_get_one_event(any_db, stack, tmp_path, monkeypatch):
    # Given: hour-long appointments; one caller asked for 10-11, the other for 10:30-11:30
    runtime = make_runtime(any_db, stack, tmp_path, monkeypatch, duration_minutes=60)
    ten = offer_to(runtime, CALLERS[0], preferred_window={"start": at(10).isoformat(), "end": at(11).isoformat()})
    half_past = offer_to(runtime, CALLERS[1],
                         preferred_window={"start": at(10, 30).isoformat(), "end": at(11, 30).isoformat()})
    assert offered(runtime, ten)[0]["calendar_id"] == offered(runtime, half_past)[0]["calendar_id"] == CALENDAR
    # When
    at_once(runtime, [book_slot_row(runtime, ten, 1), book_slot_row(runtime, half_past, 1)])
    # Then
    [event] = all_live_events(stack)
    [booking] = bookings(runtime)
    assert booking.status == "confirmed" and booking.external_event_id == event["id"]
    loser = half_past if booking.conversation_id == ten else ten
    assert state(runtime, loser) == "choosing"
    assert texts(runtime, loser)[-1].startswith("Sorry, that time was just taken")


class CreateWaits:
    """The real calendar connector, except that create_event waits until the test lets it go."""

    def __init__(self, inner) -> None:
        self.inner, self.creating, self.proceed = inner, threading.Event(), threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def create_event(self, event):
        self.creating.set()
        assert self.proceed.wait(30)
        return self.inner.create_event(event)


def test_a_caller_picking_the_slot_while_its_event_is_being_created_is_offered_new_slots(
        any_db, stack, tmp_path, monkeypatch):
    # Given: the first caller's event is being created (held, re-checked, waiting on the calendar)
    slow: list[CreateWaits] = []

    def factory(config, **injected):
        connector = registry.build(config, **injected)
        if config.type == "google":
            slow.append(CreateWaits(connector))
            return slow[-1]
        return connector

    runtime = make_runtime(any_db, stack, tmp_path, monkeypatch, connector_factory=factory)
    first, second = offer_to(runtime, CALLERS[0]), offer_to(runtime, CALLERS[1])
    first_row, second_row = book_slot_row(runtime, first, 1), book_slot_row(runtime, second, 1)
    creating = threading.Thread(target=execute, args=(runtime, first_row))
    creating.start()
    assert slow[0].creating.wait(30)
    with runtime.db.transaction() as s:
        held = s.query(Booking).one()
        assert held.status == "creating" and held.external_event_id is None
    # When: the second caller confirms the same slot in that window
    execute(runtime, second_row)
    slow[0].proceed.set()
    creating.join(timeout=30)
    # Then
    assert len(all_live_events(stack)) == 1
    assert (state(runtime, first), state(runtime, second)) == ("booked", "choosing")
    assert offered(runtime, first) == []
    assert (held.calendar_id, held.start_at) not in pairs(offered(runtime, second))

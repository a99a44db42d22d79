"""The scheduling handlers run from outbox rows against the Google sandbox: offer, book, move, cancel."""

from __future__ import annotations

import itertools
import json
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import select

from connectors import registry
from connectors.base import Transient
from connectors.quota import OverQuota
from connectors.registry import validate_connector
from core.config import Settings, load_tenants
from core.outbox import Kind, Pending
from core.store.repo import lead_for
from core.store.tables import Booking, Conversation, Message, OutboxRow
from sync.runner import run_job
from sync.runtime import Runtime
from tests.webhooks.conftest import CALENDAR, CALLER, tenant_yaml

PARTNER = "partner@smithlaw.example"
NOW = datetime(2030, 6, 3, 12, 0, tzinfo=timezone.utc)  # Monday 08:00 in New York; the tenant opens at 08:00
_keys = itertools.count(1)


def at(hour: int, minute: int = 0, *, day: int = 3) -> datetime:
    """A time on the tenant's clock, as offers carry it."""
    return datetime(2030, 6, day, tzinfo=ZoneInfo("America/New_York")) + timedelta(hours=hour, minutes=minute)


def make_runtime(db, stack, tmp_path, monkeypatch, *, connector_factory=registry.build, **booking) -> Runtime:
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    bot = json.loads(stack.env["GOOGLE_CREDENTIALS_JSON"])["client_email"]
    stack.google.add_calendar(PARTNER, owners=[bot])
    tenant = tenant_yaml(stack, booking={"duration_minutes": 30, "min_notice_minutes": 60,
                                         "location": "12 Main St, Springfield", **booking},
                         connectors=stack.connectors_yaml(calendars=[CALENDAR, PARTNER]))
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [tenant]}, sort_keys=False))
    tenants = load_tenants(path, validate_connector=validate_connector)
    return Runtime(settings=Settings(database_url=db.url, config=path), db=db, tenants=tenants, clock=lambda: NOW,
                   connector_factory=connector_factory)


@pytest.fixture
def runtime(sqlite_db, stack, tmp_path, monkeypatch) -> Runtime:
    return make_runtime(sqlite_db, stack, tmp_path, monkeypatch)


def conversation(runtime: Runtime, phone: str = CALLER, *, state: str = "offering", **answers) -> int:
    with runtime.db.transaction() as s:
        lead = lead_for(s, tenant_id="smith-law", phone=phone)
        row = Conversation(tenant_id="smith-law", lead_id=lead.id, business_number="+15550001111", playbook="law",
                           state=state, answers={"matter_type": "family", **answers}, offered_slots=[])
        s.add(row)
        s.flush()
        return row.id


def execute(runtime: Runtime, outbox_id: int) -> None:
    """Run the row as a worker would: a row over its connection's request budget is queued again for its slot
    (sync/actors.py), here by waiting that long and running it again."""
    while True:
        try:
            return run_job(runtime, outbox_id)
        except OverQuota as exc:
            time.sleep(exc.retry_after)


def outbox_row(runtime: Runtime, kind: Kind, payload: dict) -> int:
    with runtime.db.transaction() as s:
        return Pending().add(s, tenant_id="smith-law", kind=kind, key=f"test:{next(_keys)}", payload=payload)


def run(runtime: Runtime, kind: Kind, payload: dict) -> str:
    """Write the outbox row and execute it as a worker would; its final status."""
    row_id = outbox_row(runtime, kind, payload)
    execute(runtime, row_id)
    with runtime.db.transaction() as s:
        return s.get(OutboxRow, row_id).status


def choose(runtime: Runtime, conversation_id: int, number: int) -> dict:
    """What the engine does on "2": the conversation is booking and a book_slot row carries the offered slot."""
    with runtime.db.transaction() as s:
        row = s.get(Conversation, conversation_id)
        row.state = "booking"
        return row.offered_slots[number - 1]


def book(runtime: Runtime, conversation_id: int, number: int) -> dict:
    slot = choose(runtime, conversation_id, number)
    assert run(runtime, Kind.book_slot, {"conversation_id": conversation_id, "slot": slot}) == "done"
    return slot


def offered(runtime: Runtime, conversation_id: int) -> list[dict]:
    with runtime.db.transaction() as s:
        return s.get(Conversation, conversation_id).offered_slots


def texts(runtime: Runtime, conversation_id: int) -> list[str]:
    with runtime.db.transaction() as s:
        return list(s.scalars(select(Message.body).where(Message.conversation_id == conversation_id)
                              .order_by(Message.id)))


def bookings(runtime: Runtime) -> list[Booking]:
    with runtime.db.transaction() as s:
        return list(s.scalars(select(Booking).order_by(Booking.id)))


def live_events(stack, calendar: str = CALENDAR) -> list[dict]:
    return [event for event in stack.google.events(calendar) if event["status"] != "cancelled"]


def crm_booking_keys(runtime: Runtime) -> list[str]:
    with runtime.db.transaction() as s:
        return list(s.scalars(select(OutboxRow.idempotency_key).where(OutboxRow.kind == "crm_record_booking")))


# --- offering ---------------------------------------------------------------------------------

def test_three_slots_are_offered_from_live_free_busy_across_the_staff_calendars(runtime, stack):
    # Given: the intake calendar is busy all morning
    stack.google.add_busy(CALENDAR, at(8), at(12))
    conversation_id = conversation(runtime, matter_type="estate")
    # When
    assert run(runtime, Kind.offer_slots, {"conversation_id": conversation_id}) == "done"
    # Then: the partner's calendar fills the morning
    slots = offered(runtime, conversation_id)
    assert [(s["calendar_id"], s["start"]) for s in slots] == [
        (PARTNER, at(9).isoformat()), (PARTNER, at(11).isoformat()), (CALENDAR, at(13).isoformat())]
    assert "1) Mon Jun 3, 9:00 AM, 2) Mon Jun 3, 11:00 AM, 3) Mon Jun 3, 1:00 PM" in texts(runtime, conversation_id)[-1]


def test_slots_are_offered_only_from_the_calendars_routed_for_the_matter(sqlite_db, stack, tmp_path, monkeypatch):
    # Given
    runtime = make_runtime(sqlite_db, stack, tmp_path, monkeypatch, routes={"matter_type": {"family": [PARTNER]}})
    conversation_id = conversation(runtime, matter_type="family")
    # When
    run(runtime, Kind.offer_slots, {"conversation_id": conversation_id})
    # Then
    assert {slot["calendar_id"] for slot in offered(runtime, conversation_id)} == {PARTNER}


def test_a_lead_owned_in_the_crm_is_offered_its_owners_calendar(sqlite_db, stack, tmp_path, monkeypatch):
    # Given
    runtime = make_runtime(sqlite_db, stack, tmp_path, monkeypatch, routes={"matter_type": {"family": [PARTNER]}},
                           owner_calendars={"hubspot-owner-9": CALENDAR})
    conversation_id = conversation(runtime, matter_type="family", owner_id="hubspot-owner-9")
    # When
    run(runtime, Kind.offer_slots, {"conversation_id": conversation_id})
    # Then
    assert {slot["calendar_id"] for slot in offered(runtime, conversation_id)} == {CALENDAR}


def test_slots_are_offered_inside_the_callers_window(runtime):
    # Given: "tomorrow afternoon"
    window = {"start": at(12, day=4).isoformat(), "end": at(17, day=4).isoformat()}
    conversation_id = conversation(runtime, preferred_window=window)
    # When
    run(runtime, Kind.offer_slots, {"conversation_id": conversation_id})
    # Then
    assert [slot["start"] for slot in offered(runtime, conversation_id)] == [
        at(12, day=4).isoformat(), at(14, day=4).isoformat(), at(16, day=4).isoformat()]
    assert "Nothing is open" not in texts(runtime, conversation_id)[-1]


def test_when_nothing_is_free_in_the_window_the_caller_is_told_and_offered_the_nearest(runtime, stack):
    # Given: both calendars are busy on Tuesday afternoon, which is when the caller asked for
    for calendar in (CALENDAR, PARTNER):
        stack.google.add_busy(calendar, at(12, day=4), at(18, day=4))
    window = {"start": at(13, day=4).isoformat(), "end": at(16, day=4).isoformat()}
    conversation_id = conversation(runtime, preferred_window=window)
    # When
    run(runtime, Kind.offer_slots, {"conversation_id": conversation_id})
    # Then
    assert texts(runtime, conversation_id)[-1].startswith("Nothing is open in the time you asked for")
    assert [slot["start"] for slot in offered(runtime, conversation_id)] == [
        at(9, 30, day=4).isoformat(), at(11, 30, day=4).isoformat(), at(18, day=4).isoformat()]


# --- booking ----------------------------------------------------------------------------------

def test_the_chosen_slot_becomes_a_calendar_event_and_then_a_confirmed_booking(runtime, stack):
    # Given
    conversation_id = conversation(runtime)
    run(runtime, Kind.offer_slots, {"conversation_id": conversation_id})
    # When
    slot = book(runtime, conversation_id, 2)
    # Then
    [event] = live_events(stack, slot["calendar_id"])
    [booking] = bookings(runtime)
    assert booking.status == "confirmed" and booking.external_event_id == event["id"]
    assert booking.start_at == datetime.fromisoformat(slot["start"])
    assert "matter_type: family" in event["description"] and event["location"] == "12 Main St, Springfield"
    confirmation = texts(runtime, conversation_id)[-1]
    assert "Mon Jun 3, 11:00 AM (America/New_York)" in confirmation and "12 Main St" in confirmation
    assert crm_booking_keys(runtime) == [f"crm-booking:{booking.id}"]


def test_a_slot_that_turned_busy_since_it_was_offered_is_released_and_new_slots_are_offered(runtime, stack):
    # Given: staff put a meeting on the first offered slot after it was offered
    conversation_id = conversation(runtime)
    run(runtime, Kind.offer_slots, {"conversation_id": conversation_id})
    first = offered(runtime, conversation_id)[0]
    stack.google.add_busy(first["calendar_id"], at(9), at(10))
    # When
    book(runtime, conversation_id, 1)
    # Then
    assert [b.status for b in bookings(runtime)] == ["released"]
    assert texts(runtime, conversation_id)[-1].startswith("Sorry, that time was just taken")
    assert first["start"] not in [slot["start"] for slot in offered(runtime, conversation_id)
                                  if slot["calendar_id"] == first["calendar_id"]]


def test_a_booking_retried_after_the_calendar_failed_creates_one_event(runtime, stack):
    # Given: Google fails the first insert
    conversation_id = conversation(runtime)
    run(runtime, Kind.offer_slots, {"conversation_id": conversation_id})
    slot = choose(runtime, conversation_id, 1)
    stack.google.faults.fail_next(f"/calendar/v3/calendars/{slot['calendar_id']}/events", status=503)
    row_id = outbox_row(runtime, Kind.book_slot, {"conversation_id": conversation_id, "slot": slot})
    with pytest.raises(Transient):
        execute(runtime, row_id)
    assert [b.status for b in bookings(runtime)] == ["creating"]
    # When
    execute(runtime, row_id)
    # Then
    assert len(live_events(stack, slot["calendar_id"])) == 1
    assert [b.status for b in bookings(runtime)] == ["confirmed"]


def test_a_replayed_booking_row_sends_nothing_more(runtime, stack):
    conversation_id = conversation(runtime)
    run(runtime, Kind.offer_slots, {"conversation_id": conversation_id})
    slot = book(runtime, conversation_id, 1)
    before = texts(runtime, conversation_id)

    run(runtime, Kind.book_slot, {"conversation_id": conversation_id, "slot": slot})

    assert texts(runtime, conversation_id) == before and len(live_events(stack, slot["calendar_id"])) == 1


# --- moving -----------------------------------------------------------------------------------

def booked(runtime: Runtime, number: int = 1) -> tuple[int, dict]:
    conversation_id = conversation(runtime)
    run(runtime, Kind.offer_slots, {"conversation_id": conversation_id})
    return conversation_id, book(runtime, conversation_id, number)


def reschedule(runtime: Runtime, conversation_id: int) -> None:
    """What the engine does on "can we move it?": the conversation is offering and a reschedule row is written."""
    with runtime.db.transaction() as s:
        s.get(Conversation, conversation_id).state = "offering"
    assert run(runtime, Kind.reschedule_booking, {"conversation_id": conversation_id}) == "done"


def test_a_reschedule_offers_new_times_that_say_which_booking_they_move(runtime):
    # Given
    conversation_id, _ = booked(runtime)
    [booking] = bookings(runtime)
    # When
    reschedule(runtime, conversation_id)
    # Then
    slots = offered(runtime, conversation_id)
    assert len(slots) == 3 and all(slot["moves"] == booking.id for slot in slots)
    assert texts(runtime, conversation_id)[-1].startswith("Sure, let's move your appointment on Mon Jun 3, 9:00 AM.")


def test_moving_to_a_time_on_the_same_calendar_moves_the_event_and_keeps_one_booking(runtime, stack):
    # Given
    conversation_id, first = booked(runtime)
    [before] = bookings(runtime)
    reschedule(runtime, conversation_id)
    same_calendar = next(i for i, s in enumerate(offered(runtime, conversation_id), 1)
                         if s["calendar_id"] == first["calendar_id"])
    # When
    slot = book(runtime, conversation_id, same_calendar)
    # Then
    [event] = live_events(stack, first["calendar_id"])
    [after] = bookings(runtime)
    assert after.id == before.id and after.status == "confirmed" and after.external_event_id == event["id"]
    assert after.start_at == datetime.fromisoformat(slot["start"]) and slot["start"] != first["start"]
    assert datetime.fromisoformat(event["start"]["dateTime"]) == after.start_at
    assert texts(runtime, conversation_id)[-1].startswith("You're booked with Smith & Lee Law")
    assert crm_booking_keys(runtime) == [f"crm-booking:{after.id}",
                                         f"crm-booking:{after.id}:{after.start_at.isoformat()}"]


def test_a_move_onto_the_appointments_own_time_keeps_it_and_offers_other_times(runtime, stack):
    # Given: a stale or forged choice that names the booked slot itself
    conversation_id, first = booked(runtime)
    [booking] = bookings(runtime)
    reschedule(runtime, conversation_id)
    with runtime.db.transaction() as s:
        s.get(Conversation, conversation_id).state = "booking"
    # When
    run(runtime, Kind.book_slot, {"conversation_id": conversation_id, "slot": {**first, "moves": booking.id}})
    # Then
    [kept] = bookings(runtime)
    assert (kept.status, kept.start_at, kept.external_event_id) == ("confirmed", booking.start_at,
                                                                    booking.external_event_id)
    assert len(live_events(stack, first["calendar_id"])) == 1
    assert texts(runtime, conversation_id)[-1].startswith("Sorry, that time was just taken")
    assert all(slot["moves"] == booking.id for slot in offered(runtime, conversation_id))


def test_moving_to_another_staff_calendar_creates_the_new_event_and_cancels_the_old(runtime, stack):
    # Given: the booking is on the intake calendar; later the intake calendar fills up
    conversation_id, first = booked(runtime)
    stack.google.add_busy(first["calendar_id"], at(10), at(20, day=10))
    reschedule(runtime, conversation_id)
    # When
    slot = book(runtime, conversation_id, 1)
    # Then
    other = PARTNER if first["calendar_id"] == CALENDAR else CALENDAR
    assert slot["calendar_id"] == other
    assert [e["summary"] for e in live_events(stack, first["calendar_id"])] == ["Busy"]
    [event] = live_events(stack, other)
    [booking] = bookings(runtime)
    assert (booking.calendar_id, booking.external_event_id, booking.status) == (other, event["id"], "confirmed")


def test_a_reschedule_with_no_other_open_time_keeps_the_appointment_and_says_so(runtime, stack):
    # Given: everything after the booked 9:00 is busy on both calendars for the whole horizon
    conversation_id, first = booked(runtime)
    for calendar in (CALENDAR, PARTNER):
        stack.google.add_busy(calendar, at(9, 30), at(9, 30, day=20))
    stack.google.add_busy(PARTNER, at(8), at(9, 30))
    # When
    reschedule(runtime, conversation_id)
    # Then
    assert texts(runtime, conversation_id)[-1] == (
        "I couldn't find another open time, so your appointment on Mon Jun 3, 9:00 AM stays as it is. "
        "To change it, call +15550001111.")
    [booking] = bookings(runtime)
    assert booking.status == "confirmed" and len(live_events(stack, first["calendar_id"])) == 2
    with runtime.db.transaction() as s:
        assert s.get(Conversation, conversation_id).state == "booked"


def test_a_replayed_reschedule_row_offers_once(runtime):
    conversation_id, _ = booked(runtime)
    reschedule(runtime, conversation_id)
    before = texts(runtime, conversation_id)

    run(runtime, Kind.reschedule_booking, {"conversation_id": conversation_id})

    assert texts(runtime, conversation_id) == before


def test_a_reschedule_with_no_upcoming_appointment_offers_to_book_one(runtime):
    conversation_id = conversation(runtime, state="booked")

    reschedule(runtime, conversation_id)

    assert texts(runtime, conversation_id)[-1].startswith("I don't see an upcoming appointment for this number, so")
    assert all("moves" not in slot for slot in offered(runtime, conversation_id))


# --- cancelling -------------------------------------------------------------------------------

def test_cancelling_removes_the_event_and_tells_the_caller_and_the_crm(runtime, stack):
    # Given
    conversation_id, slot = booked(runtime)
    [booking] = bookings(runtime)
    # When
    assert run(runtime, Kind.cancel_booking, {"conversation_id": conversation_id}) == "done"
    # Then
    assert live_events(stack, slot["calendar_id"]) == []
    assert [b.status for b in bookings(runtime)] == ["cancelled"]
    assert texts(runtime, conversation_id)[-1].startswith(
        "Your appointment with Smith & Lee Law on Mon Jun 3, 9:00 AM (America/New_York) is cancelled.")
    assert f"crm-booking:{booking.id}:cancelled" in crm_booking_keys(runtime)
    with runtime.db.transaction() as s:
        closed = s.get(Conversation, conversation_id)
        assert (closed.state, closed.outcome) == ("closed", "cancelled")


def test_a_replayed_cancellation_of_a_named_booking_sends_nothing_more(runtime, stack):
    conversation_id, _ = booked(runtime)
    [booking] = bookings(runtime)
    run(runtime, Kind.cancel_booking, {"conversation_id": conversation_id, "booking_id": booking.id})
    before = texts(runtime, conversation_id)

    run(runtime, Kind.cancel_booking, {"conversation_id": conversation_id, "booking_id": booking.id})

    assert texts(runtime, conversation_id) == before


def test_cancelling_with_no_upcoming_appointment_says_so(runtime):
    conversation_id = conversation(runtime, state="booked")

    run(runtime, Kind.cancel_booking, {"conversation_id": conversation_id})

    assert texts(runtime, conversation_id) == [
        "I don't see an upcoming appointment for this number. If you need help, call +15550001111."]


def test_a_cancelled_slot_can_be_offered_and_booked_again(runtime, stack):
    conversation_id, slot = booked(runtime)
    run(runtime, Kind.cancel_booking, {"conversation_id": conversation_id})
    other = conversation(runtime, "+15550104444")

    run(runtime, Kind.offer_slots, {"conversation_id": other})

    assert offered(runtime, other)[0]["start"] == slot["start"]
    assert book(runtime, other, 1)["start"] == slot["start"]
    assert [b.status for b in bookings(runtime)] == ["cancelled", "confirmed"]

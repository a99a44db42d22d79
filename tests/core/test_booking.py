"""Slot finding (hours, notice, buffer, spread, the caller's window, routing) and the booking records around it."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from core import appointments
from core.booking import calendars_for, find_slots, preferred_window
from core.config import BookingSettings, OpeningHours, Tenant
from core.models import BusyInterval, Slot
from core.outbox import Pending
from core.store.repo import lead_for
from core.store.tables import Booking, Conversation, Message

NY = ZoneInfo("America/New_York")
NOW = datetime(2030, 6, 3, 8, 0, tzinfo=NY)  # a Monday, before opening
HOURS = OpeningHours.model_validate({day: "09:00-17:00" for day in ("mon", "tue", "wed", "thu", "fri")})
STAFF, PARTNER = "staff@firm.example", "partner@firm.example"


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2030, 6, day, hour, minute, tzinfo=NY)


def slots(busy=None, *, calendars=(STAFF,), window=None, **settings) -> list[Slot]:
    booking = BookingSettings(**{"min_notice_minutes": 60, **settings})
    return find_slots(busy=busy or {}, calendars=list(calendars), hours=HOURS, zone=NY, settings=booking, now=NOW,
                      window=window)


def starts(found: list[Slot]) -> list[datetime]:
    return [slot.start for slot in found]


# --- slot finding -----------------------------------------------------------------------------

def test_the_first_offers_start_at_opening_and_are_spread_two_hours_apart():
    assert starts(slots()) == [at(3, 9), at(3, 11), at(3, 13)]


def test_minimum_notice_pushes_the_first_offer_later():
    assert starts(slots(min_notice_minutes=180))[0] == at(3, 11)


def test_busy_time_and_the_buffer_around_it_are_avoided():
    # Given: a meeting 9:00-10:15 and a 20-minute buffer
    busy = {STAFF: [BusyInterval(start=at(3, 9), end=at(3, 10, 15))]}
    # When
    found = slots(busy, buffer_minutes=20)
    # Then: 10:30 would start 15 minutes after the meeting; 11:00 is the first with 20 free
    assert starts(found)[0] == at(3, 11)


def test_an_appointment_never_runs_past_closing():
    found = slots({STAFF: [BusyInterval(start=at(3, 9), end=at(3, 16))]}, duration_minutes=60)
    assert starts(found)[0] == at(3, 16) and found[0].end == at(3, 17)
    assert starts(found)[1] == at(4, 9)


def test_the_second_calendar_is_used_when_the_first_is_busy():
    busy = {STAFF: [BusyInterval(start=at(3, 9), end=at(3, 10))]}
    found = slots(busy, calendars=(STAFF, PARTNER))
    assert found[0] == Slot(calendar_id=PARTNER, start=at(3, 9), end=at(3, 9, 30))


def test_only_slots_inside_the_callers_window_are_offered():
    # Given: "tomorrow afternoon"
    window = (at(4, 12), at(4, 17))
    # When
    found = slots(window=window)
    # Then
    assert starts(found) == [at(4, 12), at(4, 14), at(4, 16)]


def test_a_narrow_window_still_offers_more_than_one_time():
    # Given: "Tuesday at 3", read as 3-4 pm
    found = slots(window=(at(4, 15), at(4, 16)))
    assert starts(found) == [at(4, 15), at(4, 15, 30)]


def test_when_nothing_fits_the_window_the_nearest_free_slots_are_offered_in_time_order():
    # Given: Tuesday afternoon is fully booked
    busy = {STAFF: [BusyInterval(start=at(4, 12), end=at(4, 17))]}
    # When
    found = slots(busy, window=(at(4, 13), at(4, 15)))
    # Then: 11:30 ends an hour before the window, 9:30 is the nearest two hours from it, then Wednesday
    assert starts(found) == [at(4, 9, 30), at(4, 11, 30), at(5, 9)]


def test_the_window_is_read_from_the_answers_with_its_offset_and_a_bare_time_is_in_the_tenants_zone():
    aware = {"preferred_window": {"start": "2030-06-04T16:00:00+00:00", "end": "2030-06-04T21:00:00+00:00"}}
    bare = {"preferred_window": {"start": "2030-06-04T12:00:00", "end": "2030-06-04T17:00:00"}}
    assert preferred_window(aware, NY) == (at(4, 12), at(4, 17))
    assert preferred_window(bare, NY) == (at(4, 12), at(4, 17))


@pytest.mark.parametrize("answers", [{}, {"preferred_window": "afternoon"}, {"preferred_window": {"start": "soon"}},
                                     {"preferred_window": {"start": "2030-06-04T17:00", "end": "2030-06-04T12:00"}}])
def test_a_missing_or_unreadable_window_is_no_window(answers):
    assert preferred_window(answers, NY) is None


# --- routing ----------------------------------------------------------------------------------

ROUTED = BookingSettings(routes={"matter_type": {"family": [PARTNER], "criminal": [STAFF, PARTNER]}},
                         owner_calendars={"owner-7": STAFF})


@pytest.mark.parametrize(("answers", "expected"), [
    ({"matter_type": "family"}, [PARTNER]),
    ({"matter_type": "criminal"}, [STAFF, PARTNER]),
    ({"matter_type": "estate"}, [STAFF, PARTNER, "intake@firm.example"]),
    ({}, [STAFF, PARTNER, "intake@firm.example"]),
    ({"matter_type": "family", "owner_id": "owner-7"}, [STAFF]),
    ({"matter_type": "family", "owner_id": "owner-unknown"}, [PARTNER]),
])
def test_slots_are_routed_by_owner_first_then_by_answer_else_every_calendar(answers, expected):
    configured = [STAFF, PARTNER, "intake@firm.example"]
    assert calendars_for(settings=ROUTED, answers=answers, configured=configured) == expected


def test_a_routed_calendar_the_connector_does_not_list_is_dropped(caplog):
    settings = BookingSettings(routes={"matter_type": {"family": ["gone@firm.example", PARTNER]}})
    assert calendars_for(settings=settings, answers={"matter_type": "family"}, configured=[STAFF, PARTNER]) == [PARTNER]
    assert "gone@firm.example" in caplog.text


# --- holds, confirmations, notes ---------------------------------------------------------------

@pytest.fixture
def tenant() -> Tenant:
    return Tenant(id="t1", name="Smith & Lee Law", vertical="law", timezone="America/New_York",
                  phone_numbers=["+15550001111"], missed_call={"mode": "forwarded"}, contact="(555) 000-1111",
                  hours={"mon": "09:00-17:00"}, booking={"location": "12 Main St"})


def _conversation(session, phone: str) -> Conversation:
    lead = lead_for(session, tenant_id="t1", phone=phone)
    conversation = Conversation(tenant_id="t1", lead_id=lead.id, business_number="+15550001111", playbook="law",
                                state="booking", answers={}, offered_slots=[])
    session.add(conversation)
    session.flush()
    return conversation


def _slot(start: datetime, minutes: int = 60, calendar: str = STAFF) -> Slot:
    return Slot(calendar_id=calendar, start=start, end=start + timedelta(minutes=minutes))


def test_two_callers_cannot_hold_overlapping_slots_on_one_calendar_even_with_different_starts(any_db):
    with any_db.transaction() as s:
        first = appointments.hold(s, conversation=_conversation(s, "+15550100001"), slot=_slot(at(4, 10)))
        overlapping = appointments.hold(s, conversation=_conversation(s, "+15550100002"), slot=_slot(at(4, 10, 30)))
        other_calendar = appointments.hold(s, conversation=_conversation(s, "+15550100003"),
                                           slot=_slot(at(4, 10, 30), calendar=PARTNER))
    assert first is not None and overlapping is None and other_calendar is not None
    with any_db.transaction() as s:
        assert s.scalars(select(Booking.start_at).where(Booking.calendar_id == STAFF)).all() == [at(4, 10)]


def test_an_overlapping_hold_made_while_another_is_uncommitted_waits_for_it_and_then_fails(any_db):
    # Given: two callers; the first holds 10:00 in a transaction that stays open until the second is done
    with any_db.transaction() as s:
        first_id, second_id = _conversation(s, "+15550100001").id, _conversation(s, "+15550100002").id
    first_held, second_done, results = threading.Event(), threading.Event(), {}

    def hold_first() -> None:
        with any_db.transaction() as s:
            results["first"] = appointments.hold(s, conversation=s.get(Conversation, first_id), slot=_slot(at(4, 10)))
            first_held.set()
            second_done.wait(1.0)  # a second hold that does not wait for this one finishes well within this

    def hold_second() -> None:
        first_held.wait(10)
        with any_db.transaction() as s:
            results["second"] = appointments.hold(s, conversation=s.get(Conversation, second_id),
                                                  slot=_slot(at(4, 10, 30)))
        second_done.set()

    # When
    threads = [threading.Thread(target=hold_first), threading.Thread(target=hold_second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Then
    assert results["first"] is not None and results["second"] is None


def test_a_hold_keeps_the_buffer_clear_of_other_bookings(any_db):
    with any_db.transaction() as s:
        appointments.hold(s, conversation=_conversation(s, "+15550100001"), slot=_slot(at(4, 10)), buffer_minutes=15)
        adjacent = appointments.hold(s, conversation=_conversation(s, "+15550100002"), slot=_slot(at(4, 11)),
                                     buffer_minutes=15)
        after_buffer = appointments.hold(s, conversation=_conversation(s, "+15550100003"),
                                         slot=_slot(at(4, 11, 15)), buffer_minutes=15)
    assert adjacent is None and after_buffer is not None


def test_the_same_conversation_holding_its_slot_again_gets_the_same_booking(any_db):
    with any_db.transaction() as s:
        conversation = _conversation(s, "+15550100001")
        first = appointments.hold(s, conversation=conversation, slot=_slot(at(4, 10)))
        again = appointments.hold(s, conversation=conversation, slot=_slot(at(4, 10)))
    assert again.id == first.id


def _confirmed(any_db, tenant, *, link: str | None = None) -> tuple[int, str]:
    with any_db.transaction() as s:
        conversation = _conversation(s, "+15550100001")
        booking = appointments.hold(s, conversation=conversation, slot=_slot(at(4, 10)))
        appointments.confirm(s, tenant=tenant, booking=booking, external_event_id="evt1", link=link, pending=Pending())
        text = s.scalar(select(Message.body).where(Message.conversation_id == conversation.id))
        return conversation.lead_id, text


def test_the_confirmation_says_date_time_time_zone_and_location(any_db, tenant):
    _, text = _confirmed(any_db, tenant, link="https://meet.example/abc")
    assert "Smith & Lee Law" in text and "Tue Jun 4, 10:00 AM" in text and "America/New_York" in text
    assert "Location: 12 Main St." in text and "meet.example" not in text


def test_without_a_location_the_confirmation_gives_the_events_link(any_db, tenant):
    _, text = _confirmed(any_db, tenant.model_copy(update={"booking": BookingSettings()}),
                         link="https://meet.example/abc")
    assert "Link: https://meet.example/abc" in text and "Location" not in text


def test_the_opt_out_note_names_the_upcoming_appointment_and_how_to_cancel_it(any_db, tenant):
    lead_id, _ = _confirmed(any_db, tenant)
    with any_db.transaction() as s:
        note = appointments.active_booking_note(s, lead_id, tenant, now=NOW)
        after_it = appointments.active_booking_note(s, lead_id, tenant, now=at(4, 11))
    assert note == (" Your appointment on Tue Jun 4, 10:00 AM (America/New_York) is still booked; "
                    "to cancel it, call (555) 000-1111.")
    assert after_it == ""


def test_a_cancelled_or_merely_held_booking_gives_no_opt_out_note(any_db, tenant):
    lead_id, _ = _confirmed(any_db, tenant)
    with any_db.transaction() as s:
        s.scalar(select(Booking)).status = "cancelled"
        held = appointments.hold(s, conversation=_conversation(s, "+15550100001"), slot=_slot(at(5, 10)))
        assert held is not None
        assert appointments.active_booking_note(s, lead_id, tenant, now=NOW) == ""

"""Booking by text end to end: the real webhooks, the engine, the in-process worker and the sandbox vendors."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from core.store.tables import Booking, Conversation, Lead
from tests.webhooks.conftest import BUSINESS, CALENDAR, CALLER, miss_a_call, texts_to

OTHER_CALLER = "+15550104444"
# What a caller says to each of the law playbook's questions, found by a phrase of the question.
ANSWERS = {"What is your call about": "It's about my divorce", "court date or deadline": "no",
           "worked with our firm before": "no", "What's your name": "Maria Lopez", "other person or company": "none"}


def offered_times(phone, textback, stack, caller: str = CALLER, call_sid: str = "CA" + "1" * 32) -> str:
    """Miss the caller's call and answer every question; the text that offers times."""
    miss_a_call(phone, caller=caller, call_sid=call_sid)
    textback.drain()
    for _ in range(len(ANSWERS) + 1):
        last = texts_to(stack, caller)[-1]
        if "1)" in last and "2)" in last:
            return last
        answer = next((a for question, a in ANSWERS.items() if question in last), None)
        assert answer is not None, f"no scripted answer for {last!r}"
        phone.text(caller=caller, to=BUSINESS, body=answer)
        textback.drain()
    raise AssertionError(f"never offered times; last text: {texts_to(stack, caller)[-1]!r}")


def say(phone, textback, body: str, caller: str = CALLER) -> None:
    phone.text(caller=caller, to=BUSINESS, body=body)
    textback.drain()


def live_events(stack) -> list[dict]:
    return [event for event in stack.google.events(CALENDAR) if event["status"] != "cancelled"]


def bookings(textback) -> list[Booking]:
    with textback.runtime.db.transaction() as s:
        return list(s.scalars(select(Booking).order_by(Booking.id)))


def test_two_callers_who_pick_the_same_time_at_once_get_one_event_and_the_second_gets_new_times(
        phone, textback, stack):
    # Given: two callers offered the same times
    first_offer = offered_times(phone, textback, stack)
    second_offer = offered_times(phone, textback, stack, caller=OTHER_CALLER, call_sid="CA" + "2" * 32)
    assert first_offer.split(": ", 1)[1] == second_offer.split(": ", 1)[1]
    # When: both reply "1" before either booking has run
    phone.text(caller=CALLER, to=BUSINESS, body="1")
    phone.text(caller=OTHER_CALLER, to=BUSINESS, body="1")
    textback.drain()
    # Then: one event; one caller is booked, the other is told the time was taken and offered new ones
    [event] = live_events(stack)
    [booking] = bookings(textback)
    assert booking.status == "confirmed" and booking.external_event_id == event["id"]
    lasts = {texts_to(stack, CALLER)[-1], texts_to(stack, OTHER_CALLER)[-1]}
    assert len([t for t in lasts if t.startswith("You're booked with Smith & Lee Law")]) == 1
    [taken] = [t for t in lasts if t.startswith("Sorry, that time was just taken")]
    assert "1)" in taken
    # And when the second caller picks one of the new times, both are booked at different times
    loser = CALLER if texts_to(stack, CALLER)[-1] == taken else OTHER_CALLER
    say(phone, textback, "1", caller=loser)
    assert texts_to(stack, loser)[-1].startswith("You're booked with Smith & Lee Law")
    assert len(live_events(stack)) == 2 and len({b.start_at for b in bookings(textback)}) == 2


def test_a_booked_caller_moves_the_appointment_by_text(phone, textback, stack):
    # Given
    offered_times(phone, textback, stack)
    say(phone, textback, "1")
    [before] = bookings(textback)
    # When
    say(phone, textback, "Something came up, can we move it?")
    offer = texts_to(stack)[-1]
    say(phone, textback, "2")
    # Then: the same event and booking, at the new time, confirmed by text
    assert offer.startswith("Sure, let's move your appointment on") and "1)" in offer
    [event] = live_events(stack)
    [after] = bookings(textback)
    assert (after.id, after.external_event_id, after.status) == (before.id, before.external_event_id, "confirmed")
    assert after.start_at != before.start_at
    assert datetime.fromisoformat(event["start"]["dateTime"]) == after.start_at
    assert texts_to(stack)[-1].startswith("You're booked with Smith & Lee Law")
    [meeting] = stack.hubspot.objects("meetings")
    assert meeting["properties"]["hs_meeting_start_time"].startswith(after.start_at.strftime("%Y-%m-%dT%H:%M"))


def test_a_booked_caller_cancels_the_appointment_by_text(phone, textback, stack):
    # Given
    offered_times(phone, textback, stack)
    say(phone, textback, "1")
    # When
    say(phone, textback, "I need to cancel my appointment")
    # Then
    assert live_events(stack) == []
    assert [b.status for b in bookings(textback)] == ["cancelled"]
    assert "is cancelled" in texts_to(stack)[-1]
    with textback.runtime.db.transaction() as s:
        assert s.scalar(select(Conversation.outcome)) == "cancelled"


def test_a_whole_message_cancel_is_an_opt_out_and_leaves_the_appointment_booked(phone, textback, stack):
    # Given
    offered_times(phone, textback, stack)
    say(phone, textback, "1")
    sent = len(texts_to(stack))
    # When
    say(phone, textback, "CANCEL")
    # Then: opted out, nothing more texted by us, the appointment stands
    with textback.runtime.db.transaction() as s:
        assert s.scalar(select(Lead.opted_out_at)) is not None
    assert len(texts_to(stack)) == sent
    [booking] = bookings(textback)
    assert booking.status == "confirmed" and len(live_events(stack)) == 1


def test_a_caller_can_move_the_appointment_away_and_back_to_its_first_time(phone, textback, stack):
    # Given: booked at the first offered time, then moved to another
    offered_times(phone, textback, stack)
    say(phone, textback, "1")
    [first] = bookings(textback)
    say(phone, textback, "can we move it?")
    say(phone, textback, "2")
    # When: moved again, back to the time it started at (free again, so offered first)
    say(phone, textback, "can we move it again?")
    with textback.runtime.db.transaction() as s:
        assert datetime.fromisoformat(s.scalar(select(Conversation.offered_slots))[0]["start"]) == first.start_at
    say(phone, textback, "1")
    # Then
    [event] = live_events(stack)
    [booking] = bookings(textback)
    assert booking.start_at == first.start_at and booking.external_event_id == event["id"]
    assert texts_to(stack)[-1].startswith("You're booked with Smith & Lee Law")


def test_an_opt_out_confirmation_tells_a_booked_caller_how_to_cancel_the_appointment(phone, textback, stack):
    # Given
    offered_times(phone, textback, stack)
    say(phone, textback, "1")
    # When: a free-text opt-out, which textback confirms itself
    say(phone, textback, "please stop texting me")
    # Then
    confirmation = texts_to(stack)[-1]
    assert confirmation.startswith("You're unsubscribed from Smith & Lee Law texts")
    assert "is still booked; to cancel it, call" in confirmation
    assert [b.status for b in bookings(textback)] == ["confirmed"] and len(live_events(stack)) == 1


class CountingCRM:
    """The real HubSpot connector, counting the contact writes that reach it."""

    def __init__(self, crm) -> None:
        self.crm, self.contact_upserts = crm, 0

    def upsert_contact(self, contact, *, existing_id=None):
        self.contact_upserts += 1
        return self.crm.upsert_contact(contact, existing_id=existing_id)

    def __getattr__(self, name):
        return getattr(self.crm, name)


def test_one_booked_lead_writes_its_crm_contact_once_and_the_booking_side_in_one_job(sqlite_db, tenants_path, stack):
    from connectors import registry
    from connectors.registry import validate_connector
    from core.config import load_tenants
    from core.store.tables import OutboxRow
    from sandbox.phone import SandboxPhone
    from sync.embedded import Embedded
    import httpx

    counted: list[CountingCRM] = []

    def factory(config, **injected):
        built = registry.build(config, **injected)
        if config.type == "hubspot":
            counted.append(CountingCRM(built))
            return counted[-1]
        return built

    tenants = load_tenants(tenants_path, validate_connector=validate_connector)
    with Embedded(db=sqlite_db, tenants=tenants, connector_factory=factory) as textback, \
            httpx.Client(timeout=10) as http:
        phone = SandboxPhone(app_url=textback.url, auth_token=stack.auth_token, account_sid=stack.account_sid,
                             twilio=stack.twilio, http=http)
        # Given / When: a caller is texted back, qualifies and books
        offered_times(phone, textback, stack)
        say(phone, textback, "1")
        with textback.runtime.db.transaction() as s:
            kinds = list(s.scalars(select(OutboxRow.kind).where(OutboxRow.kind.like("crm_%"))))
            unfinished = list(s.scalars(select(OutboxRow.kind).where(OutboxRow.status != "done",
                                                                     OutboxRow.kind != "followup")))
    # Then: the contact is written when the call is missed and once more when the caller gives their name;
    # the booking side writes it no more; one CRM job for the booking, every row done; HubSpot has it all once
    assert [c.contact_upserts for c in counted] == [2]
    assert sorted(kinds) == ["crm_record_booking", "crm_sync_lead", "crm_sync_lead"]
    assert stack.hubspot.objects("contacts")[0]["properties"]["firstname"] == "Maria"
    assert unfinished == []
    assert len(stack.hubspot.objects("contacts")) == 1
    assert len(stack.hubspot.objects("deals")) == 1 and len(stack.hubspot.objects("meetings")) == 1
    assert len(stack.hubspot.objects("notes")) == 1  # the transcript


def test_a_taken_time_whose_new_offer_fails_once_still_offers_new_times_on_the_retry(phone, textback, stack):
    # Given: the first caller has booked the time the second caller is about to pick (found by bench/chaos.py)
    offered_times(phone, textback, stack)
    offered_times(phone, textback, stack, caller=OTHER_CALLER, call_sid="CA" + "2" * 32)
    say(phone, textback, "1")
    assert len(live_events(stack)) == 1
    # When: the second caller picks it too, and Google's free/busy for the new offer answers 503 once
    stack.google.faults.fail_next("/calendar/v3/freeBusy", status=503)
    say(phone, textback, "the first one please", caller=OTHER_CALLER)
    # Then: the retry still tells them it was taken and offers new times; one event, one booking
    last = texts_to(stack, OTHER_CALLER)[-1]
    assert "1)" in last and "2)" in last, last
    with textback.runtime.db.transaction() as s:
        states = {c.lead_id: c.state for c in s.scalars(select(Conversation))}
    assert sorted(states.values()) == ["booked", "choosing"]
    assert len(live_events(stack)) == 1 and [b.status for b in bookings(textback)] == ["confirmed"]

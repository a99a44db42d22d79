"""A missed call through the real webhooks, the in-process worker and the sandbox vendors."""

from __future__ import annotations

from sqlalchemy import func, select

from core.store.tables import Booking, Call, Conversation, Lead, Message, OutboxRow
from tests.webhooks.conftest import BUSINESS, CALENDAR, CALLER, STAFF, miss_a_call, texts_to


def _count(textback, table) -> int:
    with textback.runtime.db.transaction() as s:
        return s.scalar(select(func.count()).select_from(table))


def test_the_voice_webhook_rings_the_staff_with_a_dial_action(phone, textback):
    response = phone.ring(call_sid="CA" + "a" * 32, caller=CALLER, to=BUSINESS)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    assert '<Dial action="/twilio/voice/dial-complete" method="POST" timeout="18">' in response.text
    assert f'<Number machineDetection="Enable">{STAFF}</Number>' in response.text


def test_a_missed_call_gets_one_text_naming_the_business_and_saying_it_is_automated(phone, textback, stack):
    response = miss_a_call(phone)
    textback.drain()

    assert response.status_code == 200 and "<Hangup />" in response.text
    [text] = texts_to(stack)
    assert "Smith & Lee Law" in text and "automated" in text and "STOP" in text
    [sent] = stack.twilio.messages_to(CALLER)
    assert sent["from"] == BUSINESS


def test_the_caller_becomes_a_hubspot_contact(phone, textback, stack):
    miss_a_call(phone)
    textback.drain()

    [contact] = stack.hubspot.objects("contacts")
    assert contact["properties"]["phone"] == CALLER


def test_an_answered_call_sends_nothing(phone, textback, stack):
    miss_a_call(phone, status="completed", duration=95, answered_by="human")
    textback.drain()

    assert texts_to(stack) == []
    with textback.runtime.db.transaction() as s:
        assert s.scalar(select(Call.status)) == "answered"


def test_a_retried_dial_complete_webhook_changes_nothing_and_texts_once(phone, textback, stack):
    sid = "CA" + "2" * 32
    miss_a_call(phone, call_sid=sid)
    textback.drain()
    before = (_count(textback, Call), _count(textback, Message), _count(textback, OutboxRow))

    again = phone.dial_complete(call_sid=sid, caller=CALLER, to=BUSINESS, dial_status="no-answer")
    textback.drain()

    assert again.status_code == 200
    assert (_count(textback, Call), _count(textback, Message), _count(textback, OutboxRow)) == before
    assert len(texts_to(stack)) == 1


def test_two_missed_calls_within_the_cooldown_text_once(phone, textback, stack):
    miss_a_call(phone, call_sid="CA" + "3" * 32)
    textback.drain()
    phone.text(caller=CALLER, to=BUSINESS, body="stop")  # closes the conversation, so only cooldown could skip
    phone.text(caller=CALLER, to=BUSINESS, body="start")
    miss_a_call(phone, call_sid="CA" + "4" * 32)
    textback.drain()

    assert len(texts_to(stack)) == 1
    with textback.runtime.db.transaction() as s:
        assert s.scalars(select(Call.skip_reason).order_by(Call.id)).all() == [None, "cooldown"]


def test_a_staff_number_calling_in_is_not_texted(phone, textback, stack):
    miss_a_call(phone, caller=STAFF)
    textback.drain()

    assert texts_to(stack, STAFF) == []
    with textback.runtime.db.transaction() as s:
        assert s.scalar(select(Call.skip_reason)) == "internal_number"


def test_the_full_path_books_an_event_in_google_and_a_meeting_in_hubspot(phone, textback, stack):
    miss_a_call(phone)
    textback.drain()

    phone.text(caller=CALLER, to=BUSINESS, body="It's about my divorce")
    textback.drain()
    assert "court date" in texts_to(stack)[-1]

    phone.text(caller=CALLER, to=BUSINESS, body="no")
    phone.text(caller=CALLER, to=BUSINESS, body="No, I'm new")
    phone.text(caller=CALLER, to=BUSINESS, body="this is Maria Lopez")
    phone.text(caller=CALLER, to=BUSINESS, body="Jordan Smith")
    textback.drain()
    offer = texts_to(stack)[-1]
    assert "1)" in offer and "2)" in offer and "3)" in offer

    phone.text(caller=CALLER, to=BUSINESS, body="2")
    textback.drain()
    confirmation = texts_to(stack)[-1]
    assert confirmation.startswith("You're booked with Smith & Lee Law")
    assert "America/New_York" in confirmation and "12 Main St" in confirmation

    with textback.runtime.db.transaction() as s:
        booking = s.scalar(select(Booking))
        conversation = s.scalar(select(Conversation))
    assert booking.status == "confirmed" and conversation.state == "booked"
    assert {k: conversation.answers[k] for k in ("matter_type", "deadline", "existing_client", "other_party")} == {
        "matter_type": "family", "deadline": "no", "existing_client": "no", "other_party": "Jordan Smith"}
    [event] = [e for e in stack.google.events(CALENDAR) if e["status"] != "cancelled"]
    assert event["id"] == booking.external_event_id
    assert event["start"]["dateTime"].startswith(booking.start_at.astimezone(
        textback.runtime.tenants.get("smith-law").zone).strftime("%Y-%m-%dT%H:%M"))
    [meeting] = stack.hubspot.objects("meetings")
    [deal] = stack.hubspot.objects("deals")
    [contact] = stack.hubspot.objects("contacts")
    # the name the caller gave is on the CRM contact and the calendar event, not only their number
    assert (contact["properties"]["firstname"], contact["properties"]["lastname"]) == ("Maria", "Lopez")
    assert "Maria Lopez" in event.get("summary", "") + event.get("description", "")
    assert stack.hubspot.associations("meetings", meeting["id"], "contacts") == [contact["id"]]
    assert stack.hubspot.associations("deals", deal["id"], "contacts") == [contact["id"]]
    notes = stack.hubspot.objects("notes")
    assert len(notes) == 1
    assert "about my divorce" in notes[0]["properties"]["hs_note_body"]
    assert "booked with Smith" in notes[0]["properties"]["hs_note_body"]


def test_offered_slots_avoid_busy_time_in_the_staff_calendar(phone, textback, stack):
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    stack.google.add_busy(CALENDAR, now, now + timedelta(days=2), summary="Trial")
    miss_a_call(phone)
    textback.drain()
    for reply in ("1", "no", "no", "Maria Lopez", "none"):
        phone.text(caller=CALLER, to=BUSINESS, body=reply)
    textback.drain()

    with textback.runtime.db.transaction() as s:
        offered = s.scalar(select(Conversation.offered_slots))
    assert len(offered) == 3
    assert all(datetime.fromisoformat(slot["start"]) >= now + timedelta(days=2) for slot in offered)


def test_stop_opts_out_and_nothing_more_is_sent(phone, textback, stack):
    miss_a_call(phone)
    textback.drain()

    phone.text(caller=CALLER, to=BUSINESS, body="Stop.")
    phone.text(caller=CALLER, to=BUSINESS, body="1")
    miss_a_call(phone, call_sid="CA" + "9" * 32)
    textback.drain()

    assert len(texts_to(stack)) == 1
    with textback.runtime.db.transaction() as s:
        lead = s.scalar(select(Lead))
        assert lead.opted_out_at is not None and lead.opt_out_source == "sms_keyword"
        assert s.scalar(select(Conversation.state)) == "opted_out"
        assert s.scalars(select(Call.skip_reason).order_by(Call.id)).all() == [None, "opted_out"]

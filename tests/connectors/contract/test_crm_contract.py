"""What every CRM connector promises the sync layer, checked against each one's emulator (see conftest.py)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from connectors.base import AuthExpired, RateLimited, Rejected, Transient
from core.models import BookingRecord, ContactRecord, ConversationLog, Direction, Opportunity, TranscriptLine

START = datetime(2030, 4, 1, 15, 0, tzinfo=timezone.utc)
_numbers = itertools.count(1)


def new_phone() -> str:
    return f"+1555030{next(_numbers):04d}"


def transcript(*bodies: str) -> ConversationLog:
    return ConversationLog(title="textback conversation", lines=[
        TranscriptLine(at=START + timedelta(minutes=i), body=body,
                       direction=Direction.outbound if i % 2 == 0 else Direction.inbound)
        for i, body in enumerate(bodies)])


BOOKING = BookingRecord(title="Consultation", start=START, end=START + timedelta(minutes=30))


def test_a_new_caller_becomes_one_contact(crm):
    before = crm.count("contact")

    contact_id = crm.connector.upsert_contact(ContactRecord(phone=new_phone(), first_name="Ada"))

    assert contact_id and crm.count("contact") == before + 1


def test_a_known_caller_is_found_instead_of_created_again(crm):
    phone = new_phone()
    first = crm.connector.upsert_contact(ContactRecord(phone=phone))
    before = crm.count("contact")

    again = crm.connector.upsert_contact(ContactRecord(phone=phone, last_name="Lovelace"))

    assert again == first and crm.count("contact") == before


def test_replaying_each_write_with_its_existing_id_keeps_one_record(crm):
    # Given every kind of record written once
    contact_id = crm.connector.upsert_contact(ContactRecord(phone=new_phone()))
    log_id = crm.connector.log_conversation(contact_id=contact_id, log=transcript("Sorry we missed you"))
    deal_id = crm.connector.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="Crown"))
    meeting_id = crm.connector.record_booking(contact_id=contact_id, booking=BOOKING)
    counts = {kind: crm.count(kind) for kind in ("contact", "conversation", "opportunity", "booking")}
    # When each is written again through the id the first write returned
    again = [crm.connector.upsert_contact(ContactRecord(phone=new_phone()), existing_id=contact_id),
             crm.connector.log_conversation(contact_id=contact_id, existing_id=log_id,
                                            log=transcript("Sorry we missed you", "A crown")),
             crm.connector.upsert_opportunity(contact_id=contact_id, existing_id=deal_id,
                                              opportunity=Opportunity(name="Crown", description="urgent")),
             crm.connector.record_booking(contact_id=contact_id, existing_id=meeting_id, booking=BOOKING)]
    # Then
    assert again == [contact_id, log_id, deal_id, meeting_id]
    assert {kind: crm.count(kind) for kind in counts} == counts


def test_a_write_replayed_after_its_answer_was_lost_keeps_one_record(crm):
    # Given each kind of record written once, its id never stored (the answer was lost)
    contact_id = crm.connector.upsert_contact(ContactRecord(phone=new_phone()))
    writes = [lambda: crm.connector.log_conversation(contact_id=contact_id, log=transcript("Sorry we missed you")),
              lambda: crm.connector.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="Bridge")),
              lambda: crm.connector.record_booking(contact_id=contact_id, booking=BOOKING)]
    first = [write() for write in writes]
    counts = {kind: crm.count(kind) for kind in ("conversation", "opportunity", "booking")}
    # When the job runs again without an existing id
    again = [write() for write in writes]
    # Then
    assert again == first
    assert {kind: crm.count(kind) for kind in counts} == counts


def test_a_429_is_rate_limited_with_retry_after_and_the_retry_lands_once(crm):
    phone, before = new_phone(), crm.count("contact")
    crm.fail_next(429, retry_after=3)

    with pytest.raises(RateLimited) as raised:
        crm.connector.upsert_contact(ContactRecord(phone=phone))
    contact_id = crm.connector.upsert_contact(ContactRecord(phone=phone))

    assert raised.value.retry_after == 3.0
    assert contact_id and crm.count("contact") == before + 1


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_transient_and_the_retry_lands_once(crm, status):
    phone, before = new_phone(), crm.count("contact")
    crm.fail_next(status)

    with pytest.raises(Transient) as raised:
        crm.connector.upsert_contact(ContactRecord(phone=phone))
    contact_id = crm.connector.upsert_contact(ContactRecord(phone=phone))

    assert raised.value.status == status
    assert contact_id and crm.count("contact") == before + 1


def test_a_crm_that_does_not_answer_in_time_is_transient(crm):
    with pytest.raises(Transient, match="time"):
        crm.timing_out().upsert_contact(ContactRecord(phone=new_phone()))


def test_revoked_credentials_are_auth_expired(crm):
    crm.connector.upsert_contact(ContactRecord(phone=new_phone()))
    crm.revoke()

    with pytest.raises(AuthExpired):
        crm.connector.upsert_contact(ContactRecord(phone=new_phone()))


def test_a_phone_that_is_not_e164_is_rejected_and_nothing_is_created(crm):
    before = crm.count("contact")

    with pytest.raises(Rejected):
        crm.connector.upsert_contact(ContactRecord(phone="555-0100"))

    assert crm.count("contact") == before

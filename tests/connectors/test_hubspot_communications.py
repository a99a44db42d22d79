"""Each text as a HubSpot Communication, and the deal's associations, against the sandbox over real HTTP."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import SecretStr

from connectors.base import ActivityLog, Transient
from connectors.hubspot import HubSpotConfig, HubSpotCRM
from core.models import BookingRecord, ContactRecord, ConversationLog, Direction, Opportunity, TranscriptLine
from sandbox.hubspot import HubSpotSandbox, create_app
from sandbox.server import serve

TOKEN = "pat-na1-communications-test"
START = datetime(2030, 3, 4, 15, 0, tzinfo=timezone.utc)
_numbers = itertools.count(1)
_keys = itertools.count(1)


@pytest.fixture(scope="module", params=["plain key", "unique key"])
def hubspot(request) -> HubSpotSandbox:
    # An account may or may not take unique-value properties on communications: both must hold.
    unique = ("contacts", "deals", "communications") if request.param == "unique key" else ("contacts", "deals")
    return HubSpotSandbox({TOKEN}, search_limit=None, unique_types=unique)


@pytest.fixture(scope="module")
def url(hubspot):
    with serve(create_app(hubspot)) as served:
        yield served.url


@pytest.fixture
def crm(url) -> HubSpotCRM:
    return HubSpotCRM(HubSpotConfig(type="hubspot", access_token=SecretStr(TOKEN), base_url=url))


@pytest.fixture
def contact(crm) -> str:
    return crm.upsert_contact(ContactRecord(phone=f"+1555020{next(_numbers):04d}"))


def texts(count: int, *, first: int = 0) -> list[TranscriptLine]:
    """`count` texts, caller and textback in turn, each with its own message key."""
    run = next(_keys)
    return [TranscriptLine(at=START + timedelta(minutes=n), body=f"text {n}", key=f"textback:t:message:{run}-{n}",
                           direction=Direction.inbound if n % 2 else Direction.outbound)
            for n in range(first, first + count)]


def communications_of(hubspot: HubSpotSandbox, contact_id: str) -> list[dict]:
    ids = set(hubspot.associations("contacts", contact_id, "communications"))
    return [each for each in hubspot.objects("communications") if each["id"] in ids]


def creates(hubspot: HubSpotSandbox) -> list[int]:
    return [inputs for operation, kind, inputs in hubspot.batch_calls
            if (operation, kind) == ("create", "communications")]


def test_the_connector_offers_the_activity_log(crm):
    assert isinstance(crm, ActivityLog)


def test_each_text_becomes_an_sms_communication_on_the_contact_and_the_deal(crm, hubspot, contact):
    # Given: a deal for the caller, and a staff reply among the texts
    deal = crm.upsert_opportunity(contact_id=contact, opportunity=Opportunity(name="Divorce: Maria"))
    lines = texts(2) + [TranscriptLine(at=START + timedelta(minutes=5), direction=Direction.outbound,
                                       body="Maria, I can call at 4", key=f"textback:t:message:staff-{contact}",
                                       by_staff=True)]
    # When
    made = crm.log_messages(contact_id=contact, lines=lines, opportunity_id=deal)
    # Then: one communication per text, keyed, dated and signed as a HubSpot user reads them
    assert sorted(made) == sorted(line.key for line in lines)
    stored = {each["id"]: each["properties"] for each in hubspot.objects("communications")}
    bodies = [stored[made[line.key]]["hs_communication_body"] for line in lines]
    assert bodies == ["textback (automated): text 0", "Caller: text 1", "Staff via textback: Maria, I can call at 4"]
    first = stored[made[lines[0].key]]
    assert (first["hs_communication_channel_type"], first["hs_communication_logged_from"]) == ("SMS", "CRM")
    assert first["hs_timestamp"] == "2030-03-04T15:00:00.000Z"
    for record_id in made.values():
        assert hubspot.associations("communications", record_id, "contacts") == [contact]
        assert hubspot.associations("communications", record_id, "deals") == [deal]
    assert sorted(hubspot.associations("deals", deal, "communications"), key=int) == sorted(made.values(), key=int)


def test_a_retry_after_a_lost_answer_creates_no_communication_twice(crm, hubspot, contact):
    # Given: HubSpot creates the communications, then the connection drops before the answer
    lines = texts(3)
    hubspot.faults.drop_after_next("/crm/v3/objects/communications/batch/create")
    with pytest.raises(Transient):
        crm.log_messages(contact_id=contact, lines=lines)
    assert len(communications_of(hubspot, contact)) == 3
    # When: the job runs again
    made = crm.log_messages(contact_id=contact, lines=lines)
    # Then: it finds the three by their keys and creates none
    assert len(communications_of(hubspot, contact)) == 3
    assert sorted(made.values()) == sorted(each["id"] for each in communications_of(hubspot, contact))


def test_a_longer_conversation_logged_again_creates_only_its_new_texts(crm, hubspot, contact):
    # Given: four texts logged
    lines = texts(4)
    first = crm.log_messages(contact_id=contact, lines=lines)
    before = sum(creates(hubspot))
    # When: the conversation went on and all six texts are logged again
    more = lines + [line.model_copy(update={"key": line.key + "-later"}) for line in texts(2, first=4)]
    second = crm.log_messages(contact_id=contact, lines=more)
    # Then: two more were created, the first four kept their records
    assert sum(creates(hubspot)) - before == 2
    assert len(communications_of(hubspot, contact)) == 6
    assert {key: second[key] for key in first} == first


def test_a_transcript_of_150_texts_is_created_in_two_batch_calls_of_at_most_100(crm, hubspot, contact):
    # Given
    before = len(creates(hubspot))
    # When
    made = crm.log_messages(contact_id=contact, lines=texts(150))
    # Then
    assert creates(hubspot)[before:] == [100, 50]
    assert len(made) == 150 and len(communications_of(hubspot, contact)) == 150


def test_records_written_before_the_deal_are_associated_with_it_afterwards(crm, hubspot, contact):
    # Given: the note, two texts and the meeting exist before the deal
    note = crm.log_conversation(contact_id=contact, log=ConversationLog(title="Missed call", lines=texts(1)))
    made = crm.log_messages(contact_id=contact, lines=texts(2))
    meeting = crm.record_booking(contact_id=contact, booking=BookingRecord(
        title="Consultation", start=START, end=START + timedelta(minutes=30)))
    gone = crm.log_messages(contact_id=contact, lines=texts(1))
    hubspot.archive("communications", next(iter(gone.values())))  # a staff member deleted one since
    deal = crm.upsert_opportunity(contact_id=contact, opportunity=Opportunity(name="Divorce: Maria"))
    # When
    crm.link_to_opportunity(opportunity_id=deal, activities=[("transcript", note), ("booking", meeting)] + [
        ("message", record_id) for record_id in [*made.values(), *gone.values()]])
    # Then: each live one is on the deal, in both directions; the deleted one is skipped
    assert hubspot.associations("deals", deal, "notes") == [note]
    assert hubspot.associations("deals", deal, "meetings") == [meeting]
    assert sorted(hubspot.associations("deals", deal, "communications")) == sorted(made.values())
    assert hubspot.associations("meetings", meeting, "deals") == [deal]
    assert hubspot.associations("notes", note, "deals") == [deal]

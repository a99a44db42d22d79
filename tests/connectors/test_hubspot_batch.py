"""Many callers at once through HubSpot's batch endpoints: contacts (one search, one update, one create and its
read-back), and transcripts and deals created once by their keys."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pydantic import SecretStr

from connectors.base import KeyedNote, KeyedOpportunity
from connectors.hubspot import BATCH_LIMIT, HubSpotConfig, HubSpotCRM
from core.models import ContactRecord, ConversationLog, Direction, Opportunity, TranscriptLine
from sandbox.hubspot import HubSpotSandbox, create_app
from sandbox.server import serve

TOKEN = "pat-na1-batch-test"
AT = datetime(2026, 3, 10, 15, 0, tzinfo=timezone.utc)


@pytest.fixture
def hubspot() -> HubSpotSandbox:
    return HubSpotSandbox({TOKEN})


@pytest.fixture
def crm(hubspot):
    with serve(create_app(hubspot)) as served:
        yield HubSpotCRM(HubSpotConfig(type="hubspot", access_token=SecretStr(TOKEN), base_url=served.url))


def test_a_backlog_of_callers_costs_four_requests_not_eighty(crm, hubspot):
    # Given: staff typed one caller in by hand, in their own format
    staff_made = hubspot.create("contacts", {"phone": "(555) 010-7002", "firstname": "Ana"})["id"]
    callers = [ContactRecord(phone=f"+1555010{7000 + n:04d}", first_name="Bo" if n == 5 else None,
                             last_name="Ruiz" if n == 2 else None) for n in range(40)]
    before = hubspot.access.admitted

    # When
    ids = crm.upsert_contacts(callers)

    # Then: staff's contact is the caller's, the other 39 are new, one each, and it took four requests
    assert hubspot.access.admitted - before == 4
    assert ids[2] == staff_made and len(set(ids)) == 40
    contacts = {c["id"]: c["properties"] for c in hubspot.objects("contacts")}
    assert len(contacts) == 40
    assert contacts[staff_made]["firstname"] == "Ana" and contacts[staff_made]["lastname"] == "Ruiz"
    assert contacts[ids[5]]["firstname"] == "Bo" and contacts[ids[5]]["hs_lead_status"] == "NEW"
    assert [contacts[contact_id]["phone"] for contact_id in ids if contact_id != staff_made] == \
        [c.phone for c in callers if c.phone != "+15550107002"]


def test_a_batch_is_at_most_the_vendors_hundred_inputs(crm):
    with pytest.raises(ValueError):
        crm.upsert_contacts([ContactRecord(phone=f"+1555011{n:04d}") for n in range(BATCH_LIMIT + 1)])


def _notes(hubspot, count: int) -> list[KeyedNote]:
    contacts = [hubspot.create("contacts", {"phone": f"+1555012{n:04d}", "firstname": "Ana"})["id"]
                for n in range(count)]
    deal = hubspot.create("deals", {"dealname": "Family: Ana", "pipeline": "default",
                                    "dealstage": "appointmentscheduled"})["id"]
    return [KeyedNote(key=f"textback:smith-law:conversation:{n}:20260310T150000", contact_id=contact_id,
                      opportunity_id=deal if n % 2 else None,
                      log=ConversationLog(title=f"textback conversation {n}", summary="Outcome: qualified", answers={},
                                          lines=[TranscriptLine(at=AT, direction=Direction.inbound, body="Hi")]))
            for n, contact_id in enumerate(contacts)]


def test_120_transcripts_are_two_batch_creates_and_a_second_call_creates_none(crm, hubspot):
    # Given: 120 callers' transcripts, half of them with a deal already
    notes = _notes(hubspot, 120)

    # When: written, then written again (as a retry whose first answer was lost would)
    first = crm.log_conversations(notes)
    again = crm.log_conversations(notes)

    # Then: 100 + 20 in two creates, each tied to its contact (and deal); the second call found them all
    assert [c for c in hubspot.batch_calls if c[0] == "create"] == [("create", "notes", 100), ("create", "notes", 20)]
    assert again == first and len(set(first.values())) == 120 == len(hubspot.objects("notes"))
    for note in notes:
        assert hubspot.associations("notes", first[note.key], "contacts") == [note.contact_id]
        assert hubspot.associations("notes", first[note.key], "deals") == ([note.opportunity_id] if note.opportunity_id
                                                                          else [])


def test_a_batch_of_deals_is_created_once_by_its_keys(crm, hubspot):
    contact = hubspot.create("contacts", {"phone": "+15550130000", "firstname": "Bo"})["id"]
    deals = [KeyedOpportunity(key=f"textback:smith-law:opportunity:{n}:20260310T150000", contact_id=contact,
                              opportunity=Opportunity(name=f"Family: Bo {n}", stage="qualified", description="d"))
             for n in range(3)]

    first = crm.upsert_opportunities(deals)
    assert crm.upsert_opportunities(deals) == first and len(hubspot.objects("deals")) == 3
    assert sorted(hubspot.associations("contacts", contact, "deals")) == sorted(first.values())

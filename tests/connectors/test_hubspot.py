"""The HubSpot connector against the HubSpot sandbox, over real HTTP through the official SDK."""

from __future__ import annotations

import itertools
import socket
import time
from datetime import datetime, timedelta, timezone

import pytest
from hubspot import HubSpot
from pydantic import SecretStr, ValidationError

from connectors.base import AuthExpired, CRMConnector, RateLimited, Rejected, Transient
from connectors.hubspot import SEARCH_PAGE, HubSpotConfig, HubSpotCRM
from core.models import BookingRecord, ContactRecord, ConversationLog, Direction, Opportunity, TranscriptLine
from sandbox.hubspot import HubSpotSandbox, create_app
from sandbox.server import serve

TOKEN = "pat-na1-connector-test"
_numbers = itertools.count(1)
START = datetime(2030, 3, 4, 15, 0, tzinfo=timezone.utc)


def new_phone() -> str:
    return f"+1555010{next(_numbers):04d}"


@pytest.fixture(scope="module")
def hubspot() -> HubSpotSandbox:
    # These tests search back to back; the 5-per-second search limit is tested in test_hubspot_access.py.
    return HubSpotSandbox({TOKEN}, search_limit=None)


@pytest.fixture(scope="module")
def url(hubspot):
    with serve(create_app(hubspot)) as served:
        yield served.url


def connector(url: str, *, token: str = TOKEN, **settings: str) -> HubSpotCRM:
    return HubSpotCRM(HubSpotConfig(type="hubspot", access_token=SecretStr(token), base_url=url, **settings))


@pytest.fixture
def crm(url) -> HubSpotCRM:
    return connector(url)


def record(hubspot: HubSpotSandbox, object_type: str, object_id: str) -> dict:
    return next(each["properties"] for each in hubspot.objects(object_type) if each["id"] == object_id)


def transcript(*bodies: str) -> ConversationLog:
    return ConversationLog(title="Missed call from +1 555 010", lines=[
        TranscriptLine(at=START + timedelta(minutes=i), direction=Direction.inbound if i % 2 else Direction.outbound,
                       body=body) for i, body in enumerate(bodies)])


# --- contacts --------------------------------------------------------------------------------

def test_the_connector_declares_its_role_config_and_protocol(crm):
    assert (HubSpotCRM.role, HubSpotCRM.config_model) == ("crm", HubSpotConfig)
    assert isinstance(crm, CRMConnector)
    assert HubSpotConfig(type="hubspot", access_token=SecretStr("x")).base_url == "https://api.hubapi.com"
    with pytest.raises(ValidationError):
        HubSpotConfig.model_validate({"type": "hubspot", "access_token": "pat-na1-inline-secret"})


def test_an_injected_sdk_client_is_the_one_used(url, hubspot):
    crm = HubSpotCRM(HubSpotConfig(type="hubspot", access_token=SecretStr("unused"), base_url="http://127.0.0.1:9"),
                     client=HubSpot(access_token=TOKEN, host=url))

    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))

    assert record(hubspot, "contacts", contact_id)["lifecyclestage"] == "lead"


def test_a_new_caller_becomes_a_lead_contact_with_their_phone(crm, hubspot):
    phone = new_phone()

    contact_id = crm.upsert_contact(ContactRecord(phone=phone, first_name="Rosa"))

    stored = record(hubspot, "contacts", contact_id)
    assert (stored["phone"], stored["firstname"]) == (phone, "Rosa")
    assert (stored["lifecyclestage"], stored["hs_lead_status"]) == ("lead", "NEW")


def test_a_second_upsert_for_the_same_phone_finds_the_existing_contact(crm, hubspot):
    phone = new_phone()
    first = crm.upsert_contact(ContactRecord(phone=phone))

    second = crm.upsert_contact(ContactRecord(phone=phone, first_name="Sam", last_name="Okafor"))

    assert second == first
    assert [c["id"] for c in hubspot.objects("contacts") if c["properties"]["phone"] == phone] == [first]
    assert record(hubspot, "contacts", first)["lastname"] == "Okafor"


def test_a_number_staff_typed_in_national_format_is_found_by_the_callers_e164_number(crm, hubspot):
    phone = new_phone()
    national = f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}"
    typed_by_staff = hubspot.create("contacts", {"firstname": "Tess", "mobilephone": national})["id"]

    assert crm.upsert_contact(ContactRecord(phone=phone)) == typed_by_staff


def test_the_same_national_digits_in_another_country_are_not_the_caller(crm, hubspot):
    phone = new_phone()
    hubspot.create("contacts", {"firstname": "Uma", "phone": "+44 " + phone[2:]})

    contact_id = crm.upsert_contact(ContactRecord(phone=phone))

    assert record(hubspot, "contacts", contact_id)["phone"] == phone


def test_updating_a_known_contact_leaves_the_stage_staff_set_alone(crm, hubspot):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    hubspot.update("contacts", contact_id, {"lifecyclestage": "customer"})

    same = crm.upsert_contact(ContactRecord(phone="+15550100000", first_name="Vic"), existing_id=contact_id)

    stored = record(hubspot, "contacts", contact_id)
    assert same == contact_id
    assert (stored["firstname"], stored["lifecyclestage"]) == ("Vic", "customer")


def test_an_email_already_on_another_contact_adds_the_caller_as_its_mobile(crm, hubspot):
    email = f"wen{next(_numbers)}@example.com"
    known = hubspot.create("contacts", {"email": email, "phone": "+1 212 555 0100"})["id"]
    phone = new_phone()

    contact_id = crm.upsert_contact(ContactRecord(phone=phone, email=email, first_name="Wen"))

    stored = record(hubspot, "contacts", known)
    assert contact_id == known
    assert (stored["phone"], stored["mobilephone"], stored["firstname"]) == ("+1 212 555 0100", phone, "Wen")


def test_a_contact_staff_deleted_is_created_again_instead_of_failing_every_retry(crm, hubspot):
    phone = new_phone()
    deleted = crm.upsert_contact(ContactRecord(phone=phone))
    hubspot.archive("contacts", deleted)

    again = crm.upsert_contact(ContactRecord(phone=phone, first_name="Xia"), existing_id=deleted)

    stored = record(hubspot, "contacts", again)
    assert again != deleted
    assert (stored["phone"], stored["firstname"]) == (phone, "Xia")


def test_the_lead_source_goes_to_the_configured_custom_property(url, hubspot):
    hubspot.define_property("contacts", "lead_source_detail")
    crm = connector(url, source_property="lead_source_detail")

    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone(), source="Missed call text-back"))

    assert record(hubspot, "contacts", contact_id)["lead_source_detail"] == "Missed call text-back"


def test_a_phone_that_is_not_e164_is_rejected_before_calling_hubspot(crm):
    with pytest.raises(Rejected, match="E.164"):
        crm.upsert_contact(ContactRecord(phone="555-0100"))


# --- notes, deals, meetings ------------------------------------------------------------------

def test_a_conversation_is_a_note_on_the_contact_updated_in_place_as_it_grows(crm, hubspot):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    note_id = crm.log_conversation(contact_id=contact_id, log=transcript("Sorry we missed you!"))

    same = crm.log_conversation(contact_id=contact_id, existing_id=note_id,
                                log=transcript("Sorry we missed you!", "Need a crown <urgent> & soon"))

    note = record(hubspot, "notes", note_id)
    assert same == note_id
    assert hubspot.associations("contacts", contact_id, "notes") == [note_id]
    assert "Need a crown &lt;urgent&gt; &amp; soon" in note["hs_note_body"]
    assert note["hs_note_body"].count("<br>") >= 2
    assert note["hs_timestamp"] == "2030-03-04T15:00:00.000Z"


def test_an_oversized_transcript_is_cut_to_hubspots_note_limit(crm, hubspot):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))

    note_id = crm.log_conversation(contact_id=contact_id, log=transcript(*["x" * 1000] * 80))

    body = record(hubspot, "notes", note_id)["hs_note_body"]
    assert len(body) <= 65_536 and body.endswith("exceeded HubSpot's note size]")


def test_a_qualified_lead_is_a_deal_in_the_configured_pipeline_on_the_contact(url, hubspot):
    crm = connector(url, deal_stage="qualifiedtobuy")
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    deal_id = crm.upsert_opportunity(contact_id=contact_id,
                                     opportunity=Opportunity(name="Invisalign", description="v1"))
    hubspot.update("deals", deal_id, {"dealstage": "contractsent"})

    same = crm.upsert_opportunity(contact_id=contact_id, existing_id=deal_id,
                                  opportunity=Opportunity(name="Invisalign consult", description="v2"))

    deal = record(hubspot, "deals", deal_id)
    assert same == deal_id
    assert (deal["dealname"], deal["description"], deal["pipeline"]) == ("Invisalign consult", "v2", "default")
    assert deal["dealstage"] == "contractsent"
    assert hubspot.associations("deals", deal_id, "contacts") == [contact_id]


def test_a_deal_staff_deleted_is_created_again_on_the_contact(crm, hubspot):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    deleted = crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="Bridge"))
    hubspot.archive("deals", deleted)

    again = crm.upsert_opportunity(contact_id=contact_id, existing_id=deleted, opportunity=Opportunity(name="Bridge"))

    assert again != deleted
    assert again in hubspot.associations("contacts", contact_id, "deals")


def test_a_booking_is_a_scheduled_meeting_on_the_contact_moved_in_place(crm, hubspot):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    booking = BookingRecord(title="New patient exam", start=START, end=START + timedelta(minutes=45),
                            description="Dr. Ruiz")
    meeting_id = crm.record_booking(contact_id=contact_id, booking=booking)

    moved = crm.record_booking(contact_id=contact_id, existing_id=meeting_id,
                               booking=booking.model_copy(update={"start": START + timedelta(days=1),
                                                                  "end": START + timedelta(days=1, minutes=45)}))

    meeting = record(hubspot, "meetings", meeting_id)
    assert moved == meeting_id
    assert (meeting["hs_meeting_title"], meeting["hs_meeting_outcome"]) == ("New patient exam", "SCHEDULED")
    assert (meeting["hs_meeting_start_time"], meeting["hs_meeting_end_time"]) == (
        "2030-03-05T15:00:00.000Z", "2030-03-05T15:45:00.000Z")
    assert hubspot.associations("contacts", contact_id, "meetings") == [meeting_id]


# --- failures --------------------------------------------------------------------------------

def test_a_token_hubspot_does_not_know_raises_auth_expired(url):
    with pytest.raises(AuthExpired) as raised:
        connector(url, token="pat-na1-revoked").upsert_contact(ContactRecord(phone=new_phone()))

    assert raised.value.status == 401


def test_a_429_raises_rate_limited_with_hubspots_retry_after(crm, hubspot):
    hubspot.faults.fail_next("/crm/v3/objects/contacts/search", status=429, retry_after=9)

    with pytest.raises(RateLimited) as raised:
        crm.upsert_contact(ContactRecord(phone=new_phone()))

    assert raised.value.retry_after == 9.0


def test_a_5xx_raises_transient_once_because_the_sdk_does_not_retry_it(crm, hubspot):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    hubspot.faults.fail_next("/crm/v3/objects/notes", status=502)

    with pytest.raises(Transient) as raised:
        crm.log_conversation(contact_id=contact_id, log=transcript("hello"))

    assert raised.value.status == 502
    assert crm.log_conversation(contact_id=contact_id, log=transcript("hello"))


def test_a_value_hubspot_refuses_raises_rejected(url):
    crm = connector(url, deal_stage="not-a-stage")
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))

    with pytest.raises(Rejected) as raised:
        crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="Veneers"))

    assert raised.value.status == 400 and "dealstage" in str(raised.value)


def test_an_unreachable_hubspot_raises_transient():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]

    with pytest.raises(Transient):
        connector(f"http://127.0.0.1:{port}").upsert_contact(ContactRecord(phone=new_phone()))


# --- creates that are found again by their key ---------------------------------------------------

def lost_answer(hubspot: HubSpotSandbox, url: str, path: str) -> HubSpotCRM:
    """A connector whose next call to `path` reaches HubSpot, is carried out, and is answered too late."""
    hubspot.faults.delay_next(path, seconds=1.0)
    return connector(url, timeout_seconds=0.3)


def test_the_key_property_is_created_once_unique_on_deals_and_plain_on_activities(crm, hubspot):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="Implant"), key="k-deal-1")
    crm.log_conversation(contact_id=contact_id, log=transcript("hi"), key="k-note-1")
    crm.record_booking(contact_id=contact_id, key="k-meeting-1",
                       booking=BookingRecord(title="Exam", start=START, end=START + timedelta(minutes=30)))

    unique = {kind: hubspot.properties.view(kind, "textback_key")["hasUniqueValue"]
              for kind in ("deals", "notes", "meetings")}
    assert unique == {"deals": True, "notes": False, "meetings": False}
    assert hubspot.properties.view("deals", "textback_key")["groupName"] == "textback"


def test_a_deal_whose_create_answer_was_lost_is_found_by_its_key_on_retry(url, hubspot):
    crm = connector(url)
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="warm-up"), key="k-warm-up")

    with pytest.raises(Transient, match="timed out|time"):
        lost_answer(hubspot, url, "/crm/v3/objects/deals").upsert_opportunity(
            contact_id=contact_id, opportunity=Opportunity(name="Bridge"), key="k-deal-lost")
    again = crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="Bridge", description="v2"),
                                   key="k-deal-lost")

    bridges = [d for d in hubspot.objects("deals") if d["properties"].get("textback_key") == "k-deal-lost"]
    assert [d["id"] for d in bridges] == [again] and bridges[0]["properties"]["description"] == "v2"


def test_a_note_whose_create_answer_was_lost_is_found_among_the_contacts_notes_despite_search_lag(url):
    lagging = HubSpotSandbox({TOKEN}, search_lag=60)
    with serve(create_app(lagging)) as served:
        crm = connector(served.url)
        contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
        crm.log_conversation(contact_id=contact_id, log=transcript("an earlier conversation"), key="k-earlier")
        with pytest.raises(Transient):
            lost_answer(lagging, served.url, "/crm/v3/objects/notes").log_conversation(
                contact_id=contact_id, log=transcript("hello"), key="k-note-lost")
        again = crm.log_conversation(contact_id=contact_id, log=transcript("hello", "again"), key="k-note-lost")

        notes = lagging.associations("contacts", contact_id, "notes")
        assert len(notes) == 2 and again in notes
        assert "again" in record(lagging, "notes", again)["hs_note_body"]


def test_a_key_another_writer_took_between_lookup_and_create_resolves_to_that_record(crm, hubspot):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    first = crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="Race"), key="race-key")
    # The lookup misses (as if the other writer had not finished yet); the create then hits the unique value.
    hubspot.faults.fail_next("/crm/v3/objects/deals/race-key", status=404)

    second = crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="Race 2"), key="race-key")

    assert second == first and record(hubspot, "deals", first)["dealname"] == "Race 2"


def test_a_hubspot_that_holds_its_answer_past_timeout_seconds_is_transient_without_waiting_longer(url, hubspot):
    hubspot.faults.delay_next("/crm/v3/objects/contacts/search", seconds=3)
    started = datetime.now(timezone.utc)

    with pytest.raises(Transient):
        connector(url, timeout_seconds=0.5).upsert_contact(ContactRecord(phone=new_phone()))

    assert datetime.now(timezone.utc) - started < timedelta(seconds=2)
    assert HubSpotConfig(type="hubspot", access_token=SecretStr("x")).timeout_seconds == 10


def test_a_dropped_connection_is_transient(crm, hubspot):
    hubspot.faults.drop_next("/crm/v3/objects/contacts/search")

    with pytest.raises(Transient):
        crm.upsert_contact(ContactRecord(phone=new_phone()))


def test_a_properties_api_failure_is_mapped_like_any_other():
    fresh = HubSpotSandbox({TOKEN})
    with serve(create_app(fresh)) as served:
        crm = connector(served.url)
        contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
        fresh.faults.fail_next("/crm/v3/properties/deals", status=503)
        with pytest.raises(Transient) as raised:
            crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="x"))

    assert raised.value.status == 503 and "textback_key" in str(raised.value)


def test_the_contact_pull_reads_past_searchs_10000_cap_by_moving_its_window():
    # Given: a portal with more changed contacts than search will page through
    portal = HubSpotSandbox({TOKEN})
    for n in range(10_150):
        portal.create("contacts", {"phone": f"+1555{n:07d}", "hubspot_owner_id": str(n)})
    with serve(create_app(portal)) as served:
        crm = connector(served.url)
        # When: pages are pulled until the last one, the cursor carried between them as the job stores it
        seen, cursor, last_page, pages = set(), None, False, 0
        while not last_page:
            try:
                contacts, cursor, last_page = crm.contacts_changed(cursor=cursor)
            except RateLimited as exc:  # search's 5 per second: wait for the slot, as the queued job would
                time.sleep(exc.retry_after or 0.2)
                continue
            seen.update(contact_id for contact_id, _ in contacts)
            pages += 1
            assert int(cursor.get("after") or 0) < 10_000
    # Then: every contact was read, and the owner values came with them
    assert len(seen) == 10_150 and pages > 10_150 // SEARCH_PAGE
    assert contacts[-1][1]["owner_id"] is not None

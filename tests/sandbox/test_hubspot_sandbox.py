"""The HubSpot sandbox over real HTTP, driven through the official hubspot-api-client."""

from __future__ import annotations

import itertools
import json
import time

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.objects import (
    ApiException,
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchReadInputSimplePublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputForCreate,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectId,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from urllib3.util.retry import Retry

from sandbox.hubspot import HubSpotSandbox, create_app
from sandbox.server import serve

TOKEN = "pat-na1-sandbox-test"
RATE_HEADERS = ("X-HubSpot-RateLimit-Daily", "X-HubSpot-RateLimit-Daily-Remaining",
                "X-HubSpot-RateLimit-Interval-Milliseconds", "X-HubSpot-RateLimit-Max", "X-HubSpot-RateLimit-Remaining")
_serial = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_serial)}x{time.monotonic_ns() % 100_000}"


def client_for(url: str, token: str | None = TOKEN) -> HubSpot:
    return HubSpot(access_token=token, host=url, retry=Retry(total=0, redirect=False))


def error_body(exc: ApiException) -> dict:
    return json.loads(exc.body)


@pytest.fixture(scope="module")
def hubspot() -> HubSpotSandbox:
    # These tests search back to back; the 5-per-second search limit is tested in test_hubspot_access.py.
    return HubSpotSandbox({TOKEN}, search_limit=None)


@pytest.fixture(scope="module")
def url(hubspot):
    with serve(create_app(hubspot)) as served:
        yield served.url


@pytest.fixture(scope="module")
def client(url) -> HubSpot:
    return client_for(url)


@pytest.fixture(scope="module")
def objects(client):
    return client.crm.objects.basic_api


@pytest.fixture(scope="module")
def search(client):
    return client.crm.objects.search_api


@pytest.fixture(scope="module")
def batch(client):
    return client.crm.objects.batch_api


def create(objects, object_type: str, associations: list | None = None, **properties: str):
    return objects.create(object_type, SimplePublicObjectInputForCreate(properties=properties,
                                                                        associations=associations or []))


def to_contact(contact_id: str, type_id: int) -> list[dict]:
    return [{"to": {"id": contact_id},
             "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]}]


def where(*groups: list[tuple[str, str, str | None]], **request) -> PublicObjectSearchRequest:
    return PublicObjectSearchRequest(filter_groups=[
        {"filters": [{"propertyName": name, "operator": operator, **({"value": value} if value is not None else {})}
                     for name, operator, value in group]} for group in groups], **request)


# --- records ---------------------------------------------------------------------------------

def test_a_created_contact_reads_back_with_its_id_and_hubspot_timestamps(objects):
    created = create(objects, "contacts", firstname="Ada", lastname="Lovelace", email=f"{unique('ada')}@example.com")

    read = objects.get_by_id("contacts", created.id, properties=["firstname", "email"])

    assert read.properties["hs_object_id"] == created.id
    assert read.properties["firstname"] == "Ada"
    assert read.properties["createdate"].endswith("Z") and read.properties["lastmodifieddate"]
    assert read.created_at == created.created_at and read.archived is False


def test_a_phone_only_contact_is_accepted_and_its_phone_kept_as_typed_with_searchable_digits(objects, hubspot):
    created = create(objects, "contacts", phone="+1 (555) 010-7788")

    stored = next(c for c in hubspot.objects("contacts") if c["id"] == created.id)

    assert stored["properties"]["phone"] == "+1 (555) 010-7788"
    assert stored["properties"]["hs_searchable_calculated_phone_number"] == "5550107788"


def test_a_contact_without_any_property_value_is_a_validation_error(objects):
    with pytest.raises(ApiException) as raised:
        create(objects, "contacts")

    assert raised.value.status == 400
    assert error_body(raised.value)["category"] == "VALIDATION_ERROR"


def test_a_second_contact_with_the_same_email_conflicts_and_names_the_existing_id(objects):
    email = f"{unique('dup')}@example.com"
    first = create(objects, "contacts", email=email)

    with pytest.raises(ApiException) as raised:
        create(objects, "contacts", email=email.upper())

    assert raised.value.status == 409
    body = error_body(raised.value)
    assert body["category"] == "CONFLICT"
    assert body["message"] == f"Contact already exists. Existing ID: {first.id}"


def test_an_unknown_property_is_rejected_with_hubspots_validation_body(objects):
    with pytest.raises(ApiException) as raised:
        create(objects, "contacts", firstname="Bo", favourite_colour="teal")

    body = error_body(raised.value)
    assert raised.value.status == 400 and body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith("Property values were not valid: ")
    details = json.loads(body["message"].removeprefix("Property values were not valid: "))
    assert details == [{"isValid": False, "message": 'Property "favourite_colour" does not exist',
                        "error": "PROPERTY_DOESNT_EXIST", "name": "favourite_colour"}]
    assert body["errors"][0]["context"] == {"propertyName": ["favourite_colour"]}


def test_a_deal_stage_outside_its_pipeline_and_a_bad_enumeration_are_invalid_options(objects):
    with pytest.raises(ApiException) as stage:
        create(objects, "deals", dealname="Smile makeover", pipeline="default", dealstage="won-somehow")
    with pytest.raises(ApiException) as lifecycle:
        create(objects, "contacts", firstname="Cy", lifecyclestage="Lead")

    assert '"error":"INVALID_OPTION","name":"dealstage"' in error_body(stage.value)["message"]
    assert '"error":"INVALID_OPTION","name":"lifecyclestage"' in error_body(lifecycle.value)["message"]


def test_notes_need_hs_timestamp_and_take_epoch_milliseconds_or_iso_8601(objects):
    with pytest.raises(ApiException) as missing:
        create(objects, "notes", hs_note_body="no time")

    from_millis = create(objects, "notes", hs_note_body="ms", hs_timestamp="1700000000000")
    read = objects.get_by_id("notes", from_millis.id, properties=["hs_timestamp"])

    assert '"name":"hs_timestamp"' in error_body(missing.value)["message"]
    assert read.properties["hs_timestamp"] == "2023-11-14T22:13:20.000Z"


def test_reading_an_unknown_id_answers_404_in_hubspots_error_shape(objects):
    with pytest.raises(ApiException) as raised:
        objects.get_by_id("contacts", "999999999")

    assert raised.value.status == 404
    assert error_body(raised.value)["status"] == "error" and error_body(raised.value)["correlationId"]


def test_patch_changes_properties_and_delete_archives_the_record(objects):
    created = create(objects, "contacts", firstname="Dee")

    objects.update("contacts", created.id, SimplePublicObjectInput(properties={"firstname": "Dana", "lastname": "Ng"}))
    updated = objects.get_by_id("contacts", created.id, properties=["firstname", "lastname"])
    objects.archive("contacts", created.id)

    assert (updated.properties["firstname"], updated.properties["lastname"]) == ("Dana", "Ng")
    with pytest.raises(ApiException) as gone:
        objects.get_by_id("contacts", created.id)
    assert gone.value.status == 404
    assert objects.get_by_id("contacts", created.id, archived=True).archived is True


def test_listing_pages_through_every_record_with_the_after_cursor(objects):
    name = unique("page")
    made = {create(objects, "deals", dealname=name, dealstage="appointmentscheduled").id for _ in range(5)}

    seen, after, links = [], None, []
    while True:
        page = objects.get_page("deals", limit=2, after=after, properties=["dealname"])
        seen += [deal.id for deal in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
        links.append(page.paging.next.link)

    assert made <= set(seen) and len(seen) == len(set(seen))
    assert all("after=" in link for link in links)


def test_a_list_limit_above_100_is_rejected(objects):
    with pytest.raises(ApiException) as raised:
        objects.get_page("contacts", limit=101)

    assert raised.value.status == 400


# --- search ----------------------------------------------------------------------------------

def test_search_ors_filter_groups_ands_filters_sorts_and_pages(objects, search):
    tag = unique("tag")
    for first, last in (("Ann", tag), ("Bea", tag), ("Cal", tag), ("Ann", "Other")):
        create(objects, "contacts", firstname=first, lastname=last)

    first_page = search.do_search("contacts", where(
        [("lastname", "EQ", tag), ("firstname", "NEQ", "Bea")], [("lastname", "EQ", tag), ("firstname", "EQ", "Bea")],
        sorts=[{"propertyName": "firstname", "direction": "DESCENDING"}], properties=["firstname"], limit=2))
    second_page = search.do_search("contacts", where(
        [("lastname", "EQ", tag)], sorts=[{"propertyName": "firstname", "direction": "DESCENDING"}],
        properties=["firstname"], limit=2, after=first_page.paging.next.after))

    assert first_page.total == 3
    assert [c.properties["firstname"] for c in first_page.results] == ["Cal", "Bea"]
    assert [c.properties["firstname"] for c in second_page.results] == ["Ann"] and second_page.paging is None


def test_search_compares_datetimes_matches_tokens_with_wildcards_and_checks_presence(objects, search):
    domain = f"{unique('clinic')}.example"
    early = create(objects, "meetings", hs_timestamp="2030-01-01T09:00:00Z", hs_meeting_title=f"Checkup {domain}")
    late = create(objects, "meetings", hs_timestamp="2030-01-02T09:00:00Z", hs_meeting_title=f"Cleaning {domain}",
                  hs_meeting_outcome="SCHEDULED")
    with_email = create(objects, "contacts", email=f"someone@{domain}")

    after_noon = search.do_search("meetings", where(
        [("hs_timestamp", "GT", "1893502800000"), ("hs_meeting_title", "CONTAINS_TOKEN", domain)]))
    scheduled = search.do_search("meetings", where(
        [("hs_meeting_outcome", "HAS_PROPERTY", None), ("hs_meeting_title", "CONTAINS_TOKEN", domain)]))
    by_domain = search.do_search("contacts", where([("email", "CONTAINS_TOKEN", f"*@{domain}")]))

    assert [m.id for m in after_noon.results] == [late.id]
    assert [m.id for m in scheduled.results] == [late.id]
    assert [c.id for c in by_domain.results] == [with_email.id]
    assert early.id not in {m.id for m in after_noon.results}


def test_search_refuses_paging_past_10000_results_and_limits_above_200(search):
    with pytest.raises(ApiException) as past_cap:
        search.do_search("contacts", where(after="10000"))
    with pytest.raises(ApiException) as too_many:
        search.do_search("contacts", where(limit=201))

    assert past_cap.value.status == too_many.value.status == 400
    assert "10000" in error_body(past_cap.value)["message"]


def test_search_answers_carry_no_rate_limit_headers_but_other_answers_do(objects, search):
    listed = objects.get_page_with_http_info("contacts", limit=1)
    searched = search.do_search_with_http_info("contacts", where(limit=1))

    assert all(listed[2].get(header) for header in RATE_HEADERS)
    assert not any(searched[2].get(header) for header in RATE_HEADERS)
    assert listed[2]["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"


def test_a_fresh_write_reaches_search_only_after_the_index_lag():
    lagging = HubSpotSandbox({TOKEN}, search_lag=0.3)
    with serve(create_app(lagging)) as served:
        client = client_for(served.url)
        create(client.crm.objects.basic_api, "contacts", firstname="Lag")
        request = where([("firstname", "EQ", "Lag")])

        right_away = client.crm.objects.search_api.do_search("contacts", request).total
        time.sleep(0.35)
        later = client.crm.objects.search_api.do_search("contacts", request).total

    assert (right_away, later) == (0, 1)


# --- batches ---------------------------------------------------------------------------------

def test_batch_create_read_and_update_round_trip(batch):
    tag = unique("batch")
    created = batch.create("contacts", BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
        SimplePublicObjectBatchInputForCreate(properties={"firstname": name, "lastname": tag})
        for name in ("Eli", "Fay")]))
    ids = [c.id for c in created.results]

    batch.update("contacts", BatchInputSimplePublicObjectBatchInput(inputs=[
        SimplePublicObjectBatchInput(id=ids[0], properties={"jobtitle": "Dentist"})]))
    read = batch.read("contacts", BatchReadInputSimplePublicObjectId(
        inputs=[SimplePublicObjectId(id=i) for i in ids], properties=["firstname", "jobtitle"],
        properties_with_history=[]))

    assert created.status == "COMPLETE" and created.started_at and created.completed_at
    assert {c.id: c.properties["jobtitle"] for c in read.results} == {ids[0]: "Dentist", ids[1]: None}


def test_batch_read_of_a_missing_id_answers_207_with_its_error(objects, batch):
    present = create(objects, "contacts", firstname="Gil")

    read = batch.read("contacts", BatchReadInputSimplePublicObjectId(
        inputs=[SimplePublicObjectId(id=present.id), SimplePublicObjectId(id="424242")],
        properties=[], properties_with_history=[]))

    assert [c.id for c in read.results] == [present.id]
    assert read.num_errors == 1 and read.errors[0].context == {"ids": ["424242"]}


def test_batch_upsert_by_email_creates_the_new_and_updates_the_known(objects, batch):
    known_email, new_email = f"{unique('known')}@example.com", f"{unique('new')}@example.com"
    known = create(objects, "contacts", email=known_email, firstname="Old")

    upserted = batch.upsert("contacts", BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
        SimplePublicObjectBatchInputUpsert(id=known_email, id_property="email", properties={"firstname": "New"}),
        SimplePublicObjectBatchInputUpsert(id=new_email, id_property="email", properties={"firstname": "Hal"})]))

    by_new = {result.new: result for result in upserted.results}
    assert by_new[False].id == known.id
    assert objects.get_by_id("contacts", known.id, properties=["firstname"]).properties["firstname"] == "New"
    assert by_new[True].properties["email"] == new_email


def test_batch_upsert_refuses_a_property_that_is_not_unique(batch):
    with pytest.raises(ApiException) as raised:
        batch.upsert("contacts", BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
            SimplePublicObjectBatchInputUpsert(id="+15550109999", id_property="phone",
                                               properties={"firstname": "Ida"})]))

    assert raised.value.status == 400


def test_a_batch_of_more_than_100_inputs_is_rejected_whole(batch, hubspot):
    before = len(hubspot.objects("contacts"))

    with pytest.raises(ApiException) as raised:
        batch.create("contacts", BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
            SimplePublicObjectBatchInputForCreate(properties={"firstname": f"N{i}"}) for i in range(101)]))

    assert raised.value.status == 400 and len(hubspot.objects("contacts")) == before


# --- associations ----------------------------------------------------------------------------

def test_associations_given_at_creation_are_recorded_in_both_directions(objects, client, hubspot):
    contact = create(objects, "contacts", firstname="Jo")
    note = create(objects, "notes", associations=to_contact(contact.id, 202), hs_note_body="hi",
                  hs_timestamp="2030-01-01T00:00:00Z")

    listed = client.crm.associations.v4.basic_api.get_page("contacts", contact.id, "notes")

    assert hubspot.associations("notes", note.id, "contacts") == [contact.id]
    assert [(a.to_object_id, a.association_types[0].type_id) for a in listed.results] == [(note.id, 201)]


def test_an_association_type_that_does_not_fit_the_pair_is_rejected(objects):
    contact = create(objects, "contacts", firstname="Kit")

    with pytest.raises(ApiException) as raised:
        create(objects, "deals", associations=to_contact(contact.id, 202), dealname="Wrong", dealstage="closedwon")

    assert raised.value.status == 400


def test_a_default_association_made_with_v4_shows_on_both_records(objects, client, hubspot):
    contact = create(objects, "contacts", firstname="Lu")
    deal = create(objects, "deals", dealname="Implant", dealstage="qualifiedtobuy")

    made = client.crm.associations.v4.basic_api.create_default("deals", deal.id, "contacts", contact.id)

    assert {(r._from.id, r.to.id, r.association_spec.association_type_id) for r in made.results} == {
        (deal.id, contact.id, 3), (contact.id, deal.id, 4)}
    assert hubspot.associations("contacts", contact.id, "deals") == [deal.id]


# --- auth, rate limits and faults ------------------------------------------------------------

def test_a_request_without_a_token_answers_401_invalid_authentication(url):
    with pytest.raises(ApiException) as raised:
        client_for(url, token=None).crm.objects.basic_api.get_page("contacts")

    body = error_body(raised.value)
    assert raised.value.status == 401 and body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found.") and body["correlationId"]


def test_an_unknown_token_answers_401(url):
    with pytest.raises(ApiException) as raised:
        client_for(url, token="pat-na1-revoked").crm.objects.basic_api.get_page("contacts")

    assert raised.value.status == 401


def test_a_token_over_its_ten_second_budget_gets_429_with_retry_after():
    tight = HubSpotSandbox({TOKEN}, burst_limit=3)
    with serve(create_app(tight)) as served:
        objects = client_for(served.url).crm.objects.basic_api
        remaining = [objects.get_page_with_http_info("contacts")[2]["X-HubSpot-RateLimit-Remaining"] for _ in range(3)]
        with pytest.raises(ApiException) as raised:
            objects.get_page("contacts")

    body = error_body(raised.value)
    assert remaining == ["2", "1", "0"]
    assert raised.value.status == 429 and body["message"] == "You have reached your ten_secondly_rolling limit."
    assert body["policyName"] == "TEN_SECONDLY_ROLLING" and body["errorType"] == "RATE_LIMIT" and body["requestId"]
    assert 1 <= int(raised.value.headers["Retry-After"]) <= 10


def test_scripted_faults_answer_429_with_retry_after_then_5xx_then_recover(objects, hubspot):
    hubspot.faults.fail_next("/crm/v3/objects/contacts", status=429, retry_after=7)
    hubspot.faults.fail_next("/crm/v3/objects/contacts", status=503)

    with pytest.raises(ApiException) as limited:
        objects.get_page("contacts")
    with pytest.raises(ApiException) as unavailable:
        objects.get_page("contacts")
    recovered = objects.get_page("contacts", limit=1)

    assert (limited.value.status, limited.value.headers["Retry-After"]) == (429, "7")
    assert unavailable.value.status == 503
    assert recovered.results is not None


def test_records_are_associated_with_a_deal_at_creation_and_in_a_v4_batch_and_refused_for_unknown_pairs(
        objects, hubspot, url):
    # Given: a deal, and a communication created on it with HubSpot's communication-to-deal type (85)
    deal = create(objects, "deals", dealname=unique("Deal"), dealstage="appointmentscheduled").id
    texted = create(objects, "communications", [{"to": {"id": deal}, "types": [
        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 85}]}], hs_communication_channel_type="SMS",
        hs_communication_logged_from="CRM", hs_timestamp="2030-03-04T15:00:00Z").id
    note = create(objects, "notes", hs_note_body="transcript", hs_timestamp="2030-03-04T15:00:00Z").id
    # When: the note is associated with the deal in a v4 batch call
    answer = httpx.post(f"{url}/crm/v4/associations/notes/deals/batch/associate/default",
                        headers={"Authorization": f"Bearer {TOKEN}"}, json={"inputs": [
                            {"from": {"id": note}, "to": {"id": deal}}]})
    # Then: both directions carry HubSpot's default type ids
    assert answer.status_code == 200
    assert {(r["from"]["id"], r["associationSpec"]["associationTypeId"]) for r in answer.json()["results"]} == {
        (note, 214), (deal, 213)}
    assert hubspot.associations("deals", deal, "communications") == [texted]
    assert hubspot.associations("deals", deal, "notes") == [note]
    # And a pair with a record that does not exist is listed as an error; an unknown pair of types is a 400
    missing = httpx.post(f"{url}/crm/v4/associations/meetings/deals/batch/associate/default",
                         headers={"Authorization": f"Bearer {TOKEN}"},
                         json={"inputs": [{"from": {"id": "999999"}, "to": {"id": deal}}]})
    assert missing.status_code == 207 and missing.json()["numErrors"] == 1
    unknown = httpx.post(f"{url}/crm/v4/associations/notes/meetings/batch/associate/default",
                         headers={"Authorization": f"Bearer {TOKEN}"},
                         json={"inputs": [{"from": {"id": note}, "to": {"id": deal}}]})
    assert unknown.status_code == 400


def test_a_v4_batch_read_lists_each_records_associations_and_names_those_with_none_as_errors(objects, url):
    # Given: a contact with two notes, and one with none
    talked = create(objects, "contacts", phone="+15550140001", firstname="Ana").id
    quiet = create(objects, "contacts", phone="+15550140002", firstname="Bo").id
    notes = [create(objects, "notes", [{"to": {"id": talked}, "types": [
        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}], hs_note_body=f"transcript {n}",
        hs_timestamp="2030-03-04T15:00:00Z").id for n in range(2)]

    # When
    answer = httpx.post(f"{url}/crm/v4/associations/contacts/notes/batch/read",
                        headers={"Authorization": f"Bearer {TOKEN}"}, json={"inputs": [{"id": talked}, {"id": quiet}]})

    # Then: the first contact's notes with the contact-to-note type; the second is an error of a 207
    assert answer.status_code == 207
    [result] = answer.json()["results"]
    assert result["from"]["id"] == talked
    assert sorted(str(to["toObjectId"]) for to in result["to"]) == sorted(notes)
    assert {to["associationTypes"][0]["typeId"] for to in result["to"]} == {201}
    assert answer.json()["numErrors"] == 1 and quiet in answer.json()["errors"][0]["message"]

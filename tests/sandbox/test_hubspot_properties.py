"""What the HubSpot sandbox accepts: the properties API, unique-value properties, and request bodies checked
against hubspot-api-client's request models."""

from __future__ import annotations

import itertools
import json

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.objects import ApiException, SimplePublicObjectInput, SimplePublicObjectInputForCreate
from hubspot.crm.properties import ApiException as PropertiesApiException
from hubspot.crm.properties import PropertyCreate, PropertyGroupCreate
from urllib3.util.retry import Retry

from sandbox.hubspot import HubSpotSandbox, create_app
from sandbox.server import serve

TOKEN = "pat-na1-properties-test"
_serial = itertools.count(1)


@pytest.fixture(scope="module")
def hubspot() -> HubSpotSandbox:
    return HubSpotSandbox({TOKEN})


@pytest.fixture(scope="module")
def url(hubspot):
    with serve(create_app(hubspot)) as served:
        yield served.url


@pytest.fixture(scope="module")
def client(url) -> HubSpot:
    return HubSpot(access_token=TOKEN, host=url, retry=Retry(total=0, redirect=False))


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def key_property(name: str, *, unique: bool, group: str = "textback") -> PropertyCreate:
    return PropertyCreate(name=name, label=name, type="string", field_type="text", group_name=group,
                          has_unique_value=unique)


def ensure_group(client: HubSpot, object_type: str) -> None:
    try:
        client.crm.properties.groups_api.create(object_type, PropertyGroupCreate(name="textback", label="textback"))
    except PropertiesApiException as exc:
        assert exc.status == 409


def new_name() -> str:
    return f"ref_{next(_serial)}"


# --- the properties API -----------------------------------------------------------------------

def test_a_property_created_through_the_api_reads_back_and_a_second_create_conflicts(client):
    ensure_group(client, "deals")
    name = new_name()
    created = client.crm.properties.core_api.create("deals", key_property(name, unique=True))

    read = client.crm.properties.core_api.get_by_name("deals", name)
    with pytest.raises(PropertiesApiException) as again:
        client.crm.properties.core_api.create("deals", key_property(name, unique=True))

    assert (created.name, read.group_name, read.has_unique_value, read.hubspot_defined) == (name, "textback", True,
                                                                                            False)
    assert again.value.status == 409 and json.loads(again.value.body)["category"] == "OBJECT_ALREADY_EXISTS"


def test_a_property_needs_an_existing_group_and_a_field_type_that_fits_its_type(client):
    with pytest.raises(PropertiesApiException) as no_group:
        client.crm.properties.core_api.create("deals", key_property(new_name(), unique=False, group="nowhere"))
    with pytest.raises(PropertiesApiException) as misfit:
        client.crm.properties.core_api.create("deals", PropertyCreate(
            name=new_name(), label="n", type="number", field_type="text", group_name="dealinformation"))

    assert no_group.value.status == 400 and misfit.value.status == 400
    assert "does not exist" in json.loads(no_group.value.body)["message"]


def test_an_unknown_property_answers_404(client):
    with pytest.raises(PropertiesApiException) as raised:
        client.crm.properties.core_api.get_by_name("notes", "no_such_property")

    assert raised.value.status == 404


def test_notes_take_custom_properties_but_not_unique_ones_unless_the_portal_allows_them(client, url):
    ensure_group(client, "notes")
    name = new_name()
    with pytest.raises(PropertiesApiException) as refused:
        client.crm.properties.core_api.create("notes", key_property(name, unique=True))
    plain = client.crm.properties.core_api.create("notes", key_property(name, unique=False))

    assert refused.value.status == 400 and plain.has_unique_value is False
    assert HubSpotSandbox(set(), unique_types=["notes"]).properties.unique_types == frozenset({"notes"})


def test_a_unique_value_is_held_by_one_record_and_reads_by_id_property(client, hubspot):
    ensure_group(client, "deals")
    name = new_name()
    client.crm.properties.core_api.create("deals", key_property(name, unique=True))
    objects = client.crm.objects.basic_api
    deal = objects.create("deals", SimplePublicObjectInputForCreate(properties={
        "dealname": "Crown", "dealstage": "appointmentscheduled", name: "key-1"}, associations=[]))

    with pytest.raises(ApiException) as taken:
        objects.create("deals", SimplePublicObjectInputForCreate(properties={
            "dealname": "Crown again", "dealstage": "appointmentscheduled", name: "key-1"}, associations=[]))
    by_key = objects.get_by_id("deals", "key-1", id_property=name)
    with pytest.raises(ApiException) as not_unique:
        objects.get_by_id("deals", "Crown", id_property="dealname")

    assert taken.value.status == 409 and f"Existing ID: {deal.id}" in json.loads(taken.value.body)["message"]
    assert by_key.id == deal.id
    assert not_unique.value.status == 400


# --- request bodies against the SDK's request models --------------------------------------------

@pytest.mark.parametrize("body, says", [
    ({"properties": {"firstname": "Ada"}, "associatons": []}, 'Unrecognized field "associatons"'),
    ({"properties": ["firstname", "Ada"]},
     "`java.util.LinkedHashMap<java.lang.String,java.lang.String>` from Array value (token `JsonToken.START_ARRAY`)"),
    ({"associations": []}, "some of required attributes are not set [properties]"),
    ({"properties": {"firstname": "Ada"}, "associations": [{"to": {"id": "1"}, "types": [
        {"associationCategory": "HUBSPOT_DEFINDE", "associationTypeId": 1}]}]}, "not one of the values accepted"),
])
def test_a_create_body_that_does_not_fit_the_sdk_model_is_a_400_in_hubspots_words(http, body, says):
    answer = http.post("/crm/v3/objects/contacts", json=body)

    error = answer.json()
    assert answer.status_code == 400 and error["status"] == "error" and error["correlationId"]
    assert error["message"].startswith("Invalid input JSON on line 1, column ") and says in error["message"]


@pytest.mark.parametrize("path, body, says", [
    ("/crm/v3/objects/contacts/search", {"filterGroups": [{"filters": [{"propertyName": "email",
                                                                         "operator": "EQUALS", "value": "a"}]}]},
     "not one of the values accepted"),
    ("/crm/v3/objects/contacts/search", {"limit": "ten"}, "Cannot deserialize value of type `int`"),
    ("/crm/v3/objects/contacts/batch/upsert", {"inputs": [{"idProperty": "email", "properties": {}}]},
     "not set [id]"),
    ("/crm/v3/properties/deals", {"name": "x", "label": "x", "type": "text", "fieldType": "text",
                                  "groupName": "dealinformation"}, "not one of the values accepted"),
    ("/crm/v3/objects/contacts", b"{not json", "Unexpected character"),
])
def test_other_bodies_are_checked_against_their_models_too(http, path, body, says):
    answer = http.post(path, **({"content": body} if isinstance(body, bytes) else {"json": body}))

    assert answer.status_code == 400 and says in answer.json()["message"]


def test_what_the_sdk_sends_passes_including_sort_objects_and_numeric_property_values(client, http):
    contact = client.crm.objects.basic_api.create("contacts", SimplePublicObjectInputForCreate(
        properties={"firstname": "Num"}, associations=[]))
    client.crm.objects.basic_api.update("contacts", contact.id, SimplePublicObjectInput(properties={"lastname": "N"}))

    searched = http.post("/crm/v3/objects/contacts/search", json={
        "sorts": [{"propertyName": "createdate", "direction": "DESCENDING"}], "limit": 1})
    numeric = http.post("/crm/v3/objects/deals", json={"properties": {"dealname": "Amount", "amount": 1200,
                                                                      "dealstage": "appointmentscheduled"}})

    assert searched.status_code == 200 and numeric.status_code == 201
    assert numeric.json()["properties"]["amount"] == "1200"

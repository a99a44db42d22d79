"""Change events out of the HubSpot sandbox: batched, v3-signed, checked with the SDK's own signature validator."""

from __future__ import annotations

import json

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.objects import SimplePublicObjectInput, SimplePublicObjectInputForCreate
from hubspot.utils.signature import Signature
from urllib3.util.retry import Retry

from sandbox.hubspot import HubSpotSandbox, create_app
from sandbox.server import serve

TOKEN = "pat-na1-webhooks-test"
TARGET = "https://textback.example/hubspot/events?tenant=acme"
SECRET = "client-secret-of-the-app"


class Receiver:
    """An httpx transport that records what the sandbox delivers and answers with the scripted statuses."""

    def __init__(self, *statuses: int) -> None:
        self.requests: list[httpx.Request] = []
        self.statuses = list(statuses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.statuses.pop(0) if self.statuses else 204)

    def events(self) -> list[dict]:
        return [event for request in self.requests for event in json.loads(request.content)]


@pytest.fixture
def hubspot() -> HubSpotSandbox:
    return HubSpotSandbox({TOKEN})


@pytest.fixture
def objects(hubspot):
    with serve(create_app(hubspot)) as served:
        yield HubSpot(access_token=TOKEN, host=served.url, retry=Retry(total=0)).crm.objects.basic_api


def test_an_api_write_is_delivered_as_creation_and_property_change_events_signed_v3(hubspot, objects):
    creation, renamed = hubspot.webhooks.subscribe(TARGET, SECRET, ["contact.creation",
                                                                    ("contact.propertyChange", "firstname")])
    receiver = Receiver()

    contact = objects.create("contacts", SimplePublicObjectInputForCreate(properties={"firstname": "Ada"},
                                                                          associations=[]))
    objects.update("contacts", contact.id, SimplePublicObjectInput(properties={"firstname": "Ada", "lastname": "L"}))
    hubspot.deliver_webhooks(httpx.Client(transport=httpx.MockTransport(receiver)))

    [request] = receiver.requests
    assert Signature.is_valid(signature=request.headers["X-HubSpot-Signature-v3"], client_secret=SECRET,
                              request_body=request.content.decode(), http_uri=TARGET, http_method="POST",
                              signature_version="v3", timestamp=request.headers["X-HubSpot-Request-Timestamp"])
    assert Signature.is_valid(signature=request.headers["X-HubSpot-Signature"], client_secret=SECRET,
                              request_body=request.content.decode(), signature_version="v1")
    events = receiver.events()
    assert [(e["subscriptionId"], e["subscriptionType"], e["objectId"]) for e in events] == [
        (creation, "contact.creation", int(contact.id)), (renamed, "contact.propertyChange", int(contact.id))]
    assert events[0]["changeFlag"] == "CREATED" and events[1]["propertyValue"] == "Ada"
    assert {e["portalId"] for e in events} == {hubspot.webhooks.portal_id}
    assert all(e["attemptNumber"] == 0 and e["changeSource"] == "INTEGRATION" and e["occurredAt"] for e in events)
    assert hubspot.webhooks.pending() == []


def test_events_go_out_at_most_100_to_a_request(hubspot):
    hubspot.webhooks.subscribe(TARGET, SECRET, ["deal.creation"])
    receiver = Receiver()
    for n in range(150):
        hubspot.create("deals", {"dealname": f"Deal {n}", "dealstage": "appointmentscheduled"})

    hubspot.deliver_webhooks(httpx.Client(transport=httpx.MockTransport(receiver)))

    assert [len(json.loads(request.content)) for request in receiver.requests] == [100, 50]
    assert {e["changeSource"] for e in receiver.events()} == {"CRM_UI"}


def test_a_batch_the_target_refused_is_sent_again_with_a_higher_attempt_number(hubspot):
    hubspot.webhooks.subscribe(TARGET, SECRET, ["contact.deletion"])
    contact = hubspot.create("contacts", {"firstname": "Gone"})
    hubspot.archive("contacts", contact["id"])
    receiver = Receiver(503)
    http = httpx.Client(transport=httpx.MockTransport(receiver))

    first, second = hubspot.deliver_webhooks(http), hubspot.deliver_webhooks(http)

    assert [answer.status_code for answer in first + second] == [503, 204]
    assert [(e["subscriptionType"], e["attemptNumber"], e["changeFlag"]) for e in receiver.events()] == [
        ("contact.deletion", 0, "DELETED"), ("contact.deletion", 1, "DELETED")]
    assert hubspot.deliver_webhooks(http) == []


def test_a_property_change_subscription_needs_its_property_name(hubspot):
    with pytest.raises(ValueError, match="propertyName"):
        hubspot.webhooks.subscribe(TARGET, SECRET, ["contact.propertyChange"])

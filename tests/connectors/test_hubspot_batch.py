"""Many new callers at once through HubSpot's batch endpoints: one search, one update, one create and its read-back."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from connectors.hubspot import BATCH_LIMIT, HubSpotConfig, HubSpotCRM
from core.models import ContactRecord
from sandbox.hubspot import HubSpotSandbox, create_app
from sandbox.server import serve

TOKEN = "pat-na1-batch-test"


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

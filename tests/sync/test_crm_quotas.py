"""CRM pushes at the vendor's quota, never past it: real Redis, a real Dramatiq worker, the sandbox's own limits."""

from __future__ import annotations

import time

import dramatiq
import httpx
import pytest
import yaml
from sqlalchemy import select

from connectors.clio import ClioConfig, ClioCRM
from connectors.quota import OverQuota
from connectors.registry import validate_connector
from core import textback as core_textback
from core.config import Settings, load_tenants
from core.models import ContactRecord
from core.outbox import Kind, Pending
from core.store.repo import lead_for
from core.store.tables import Conversation, OutboxRow
from sync import actors
from sync.broker import make_broker
from sync.quotas import RedisMeter
from sync.runtime import Runtime
from tests.webhooks.conftest import BUSINESS, tenant_yaml

BUDGET = 24  # requests per 10 s: small, so the test fills it within seconds


@pytest.fixture
def busy_portal(redis_url, sqlite_db, stack, tmp_path, monkeypatch):
    """A HubSpot portal allowing BUDGET requests per 10 s, one tenant on it, four worker threads on Redis."""
    stack.hubspot.access.burst_limit = BUDGET
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    tenant = tenant_yaml(stack)
    tenant["connectors"]["crm"]["requests_per_10s"] = BUDGET
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [tenant]}, sort_keys=False))
    broker = make_broker(redis_url)
    actors.bind(broker)
    runtime = Runtime(settings=Settings(database_url=sqlite_db.url, redis_url=redis_url), db=sqlite_db,
                      tenants=load_tenants(path, validate_connector=validate_connector),
                      meter=RedisMeter.for_url(redis_url))
    runtime.dispatcher = actors.DramatiqDispatcher(runtime)
    actors.configure(runtime)
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    yield runtime
    worker.stop()
    broker.close()
    runtime.close()


def _miss_calls(runtime: Runtime, count: int) -> None:
    tenant = runtime.tenants.get("smith-law")
    for n in range(count):
        pending = Pending()
        with runtime.db.transaction() as s:
            core_textback.dial_completed(s, tenant=tenant, call_sid=f"CA{n:032d}", caller=f"+1555020{n:04d}",
                                         called=BUSINESS, dial_status="no-answer", now=runtime.now(), pending=pending)
        runtime.dispatch(pending.ids)


PUSHES = (Kind.crm_sync_lead, Kind.crm_log_conversation, Kind.crm_upsert_opportunity)


def _write_leads(runtime: Runtime, count: int) -> list[int]:
    """Leads with a finished conversation each, and their three CRM pushes."""
    pending = Pending()
    with runtime.db.transaction() as session:
        for n in range(count):
            lead = lead_for(session, tenant_id="smith-law", phone=f"+1555020{n:04d}")
            conversation = Conversation(tenant_id="smith-law", lead_id=lead.id, business_number=BUSINESS,
                                        playbook="law", state="closed", outcome="qualified",
                                        answers={"matter_type": "family"})
            session.add(conversation)
            session.flush()
            for kind, payload in zip(PUSHES, ({"lead_id": lead.id}, {"conversation_id": conversation.id},
                                             {"conversation_id": conversation.id})):
                pending.add(session, tenant_id="smith-law", kind=kind, key=f"{kind}:{n}", payload=payload)
    return pending.ids


def _crm_rows(runtime: Runtime, kinds=(Kind.crm_sync_lead,)) -> list[OutboxRow]:
    with runtime.db.transaction() as s:
        return list(s.scalars(select(OutboxRow).where(OutboxRow.kind.in_([k.value for k in kinds]))))


def _wait_until_done(runtime: Runtime, count: int, timeout: float, kinds=(Kind.crm_sync_lead,)) -> list[OutboxRow]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _crm_rows(runtime, kinds)
        if len(rows) == count and all(row.status == "done" for row in rows):
            return rows
        time.sleep(0.2)
    left = [(row.id, row.kind, row.status, row.attempts, row.last_error) for row in rows if row.status != "done"]
    raise AssertionError(f"{len(left)} CRM rows not done in {timeout} s: {left[:20]}")


def test_four_workers_sharing_one_hubspot_connection_never_receive_a_429(busy_portal, stack):
    # Given: leads whose contacts, transcripts and deals need more requests than one 10-second budget, even with
    # their pushes coalesced into batch calls (sync/crm_batch.py)
    leads = 30
    ids = _write_leads(busy_portal, leads)

    # When: four worker threads push them all
    started = time.monotonic()
    busy_portal.dispatch(ids)
    rows = _wait_until_done(busy_portal, len(ids), timeout=90, kinds=PUSHES)
    elapsed = time.monotonic() - started

    # Then: HubSpot refused nothing, each lead is one contact, one note and one deal, and waiting for slots
    # used up no retries
    assert stack.hubspot.access.refused == []
    assert stack.hubspot.access.admitted > BUDGET and elapsed > 10  # the budget, not the workers, set the pace
    contacts = stack.hubspot.objects("contacts")
    assert len(contacts) == leads and len({c["properties"]["phone"] for c in contacts}) == leads
    assert len(stack.hubspot.objects("notes")) == leads and len(stack.hubspot.objects("deals")) == leads
    assert all(row.last_error is None for row in rows)


def test_a_429_that_happens_anyway_shrinks_the_budget_and_the_lead_is_pushed_once(busy_portal, stack):
    # Given: another app on the portal spends its budget, so HubSpot answers the next call with 429
    stack.hubspot.faults.fail_next("/crm/v3/objects/contacts", status=429, retry_after=1)

    # When
    _miss_calls(busy_portal, 1)
    [row] = _wait_until_done(busy_portal, 1, timeout=30)

    # Then: the budget shrank by a fifth, and the lead became one contact on the retry
    crm = busy_portal.crm(busy_portal.tenants.get("smith-law"))
    assert busy_portal.meter.limit(crm.quotas.requests) == int(BUDGET * 0.8)
    assert len(stack.hubspot.objects("contacts")) == 1 and row.attempts == 2


def test_a_backlog_of_contact_pushes_goes_out_in_batches_of_at_most_100_with_one_contact_per_lead(busy_portal, stack):
    # Given: 230 callers' contact pushes waiting (an outage just ended), on a budget of 24 requests per 10 s
    tenant = busy_portal.tenants.get("smith-law")
    pending = Pending()
    with busy_portal.db.transaction() as session:
        for n in range(230):
            lead = lead_for(session, tenant_id="smith-law", phone=f"+1555040{n:04d}")
            pending.add(session, tenant_id=tenant.id, kind=Kind.crm_sync_lead, key=f"backlog:{n}",
                        payload={"lead_id": lead.id})

    # When: the workers get them
    busy_portal.dispatch(pending.ids)
    rows = _wait_until_done(busy_portal, 230, timeout=60)

    # Then: one contact per caller, written by batch calls of at most 100 inputs, within the budget
    contacts = stack.hubspot.objects("contacts")
    assert len(contacts) == 230 and len({c["properties"]["phone"] for c in contacts}) == 230
    creates = [inputs for operation, kind, inputs in stack.hubspot.batch_calls if operation == "create"]
    assert sum(creates) >= 200 and max(creates) <= 100  # a job that found no one waiting ran alone
    assert stack.hubspot.access.admitted < 2 * BUDGET and stack.hubspot.access.refused == []
    assert all(row.status == "done" and row.attempts <= 1 for row in rows)


def test_a_clio_budget_adapts_to_its_headers_and_waits_for_the_reset_instead_of_a_429(redis_url, stack, monkeypatch):
    # Given: a Clio account allowing 3 requests a minute, configured as if it allowed 100
    stack.clio.rate_limit = 3
    monkeypatch.setenv("CLIO_TOKEN", stack.env["CLIO_TOKEN"])
    meter = RedisMeter.for_url(redis_url)
    config = ClioConfig(type="clio", access_token="env:CLIO_TOKEN", base_url=stack.servers["clio"].url,
                        requests_per_minute=100)
    with httpx.Client(timeout=10) as http:
        crm = ClioCRM(config, http=http, meter=meter)
        quota = crm.quota(stack.env["CLIO_TOKEN"])
        # When: requests go out until the meter stops them
        with pytest.raises(OverQuota) as held:
            for n in range(10):
                crm.upsert_contact(ContactRecord(phone=f"+1555030{n:04d}", first_name="Ana"))

    # Then: the meter took Clio's limit from its headers and stopped at the window's end, before any 429
    assert meter.limit(quota) == 3
    assert stack.clio.rate_limited == 0
    assert 0 < held.value.retry_after <= 62  # the reset is a whole second, plus a margin

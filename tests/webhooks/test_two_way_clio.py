"""Staff tick "do not text" on a contact in Clio: a webhook (secret handshake, signed deliveries) → no more texts."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from core.outbox import Kind
from core.store.tables import ExternalId, OutboxRow, SyncSubscription
from tests.webhooks.conftest import miss_a_call, texts_to
from tests.webhooks.test_booking_flow import say
from tests.webhooks.two_way_support import (  # noqa: F401  (fixtures)
    clock, lead_now, run, textback, two_way_tenant, write_tenants,
)

FIELD = "Do not text"


@pytest.fixture
def tenants_path(tmp_path, stack, monkeypatch):
    tenant = two_way_tenant(stack)
    tenant["connectors"]["crm"] = stack.connectors_yaml(calendars=[], crm="clio")["crm"] | {"do_not_text_field": FIELD}
    return write_tenants(tmp_path, stack, monkeypatch, tenant)


def deliver(stack) -> list[httpx.Response]:
    with httpx.Client(timeout=10) as http:
        return stack.clio.deliver_webhooks(http)


def hook(textback) -> SyncSubscription:
    with textback.runtime.db.transaction() as s:
        row = s.scalar(select(SyncSubscription).where(SyncSubscription.provider == "clio"))
        s.expunge(row)
    return row


def staff_tick(stack, contact_id: str, value: bool) -> None:
    """Set the checkbox as Clio's API does: a value the contact already has is updated by its id."""
    url = f"{stack.servers['clio'].url}/api/v4/contacts/{contact_id}.json"
    auth = {"Authorization": f"Bearer {stack.env['CLIO_TOKEN']}"}
    current = httpx.get(url, params={"fields": "custom_field_values{id,field_name}"}, headers=auth).json()["data"]
    known = next((v["id"] for v in current.get("custom_field_values") or [] if v["field_name"] == FIELD), None)
    item = {"field_name": FIELD, "value": value} | ({"id": known} if known else {})
    answer = httpx.patch(url, headers=auth, json={"data": {"custom_field_values": [item]}}, timeout=10)
    assert answer.status_code == 200, answer.text


def test_the_webhook_is_live_once_its_secret_handshake_is_echoed(textback, stack):
    # When
    run(textback, Kind.watch_crm, {}, key="watch:clio")
    [handshake] = deliver(stack)
    # Then
    assert handshake.status_code == 200 and handshake.headers["X-Hook-Secret"]
    row = hook(textback)
    assert (row.status, row.signing_secret) == ("active", handshake.headers["X-Hook-Secret"])
    [listed] = httpx.get(f"{stack.servers['clio'].url}/api/v4/webhooks.json", params={"fields": "id,status"},
                         headers={"Authorization": f"Bearer {stack.env['CLIO_TOKEN']}"}).json()["data"]
    assert (str(listed["id"]), listed["status"]) == (row.external_id, "enabled")


def test_a_contact_staff_mark_do_not_text_in_clio_gets_no_more_texts(phone, textback, stack):
    # Given: a caller in conversation, pushed to Clio, and a live webhook
    miss_a_call(phone)
    textback.drain()
    run(textback, Kind.watch_crm, {}, key="watch:clio")
    deliver(stack)
    with textback.runtime.db.transaction() as s:
        contact = s.scalar(select(ExternalId.external_id).where(ExternalId.local_kind == "lead"))
    sent = len(texts_to(stack))
    # When
    staff_tick(stack, contact, True)
    assert [a.status_code for a in deliver(stack)] == [200]
    textback.drain()
    # Then
    assert lead_now(textback).do_not_text
    say(phone, textback, "its about my divorce")
    assert len(texts_to(stack)) == sent
    # And unticking it lifts it
    staff_tick(stack, contact, False)
    deliver(stack)
    textback.drain()
    assert not lead_now(textback).do_not_text


def test_clio_requests_that_are_not_signed_with_the_handshake_secret_are_refused(textback, stack):
    # Given
    run(textback, Kind.watch_crm, {}, key="watch:clio")
    deliver(stack)
    row = hook(textback)
    url = f"{textback.url}/webhooks/clio/{row.path_token}"
    body = b'{"data": {"id": 1, "custom_field_values": [{"field_name": "Do not text", "value": true}]}, "meta": {}}'
    with textback.runtime.db.transaction() as s:
        before = s.scalar(select(func.count()).select_from(OutboxRow))
    # When / Then
    assert httpx.post(url, content=body).status_code == 401
    assert httpx.post(url, content=body, headers={"X-Hook-Signature": "00" * 32}).status_code == 403
    assert httpx.post(f"{textback.url}/webhooks/clio/not-a-token", content=body,
                      headers={"X-Hook-Signature": "00" * 32}).status_code == 403
    # A second handshake cannot swap the secret
    assert httpx.post(url, headers={"X-Hook-Secret": "attacker-secret"}).status_code == 403
    assert hook(textback).signing_secret == row.signing_secret
    with textback.runtime.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(OutboxRow)) == before

"""Input PostgreSQL cannot store is made storable where it enters; the request is answered as usual.

Found by the fuzz and schemathesis runs on PostgreSQL, each a 500 there and not on SQLite: NUL and lone
surrogates in text, Twilio fields longer than their columns, API idempotency keys longer than a CallSid,
row ids beyond INTEGER.

PostgreSQL refuses U+0000 in text columns and in query parameters, and UTF-8 has no encoding for a lone
surrogate (JSON can carry one: "\\ud800"). Kept as they come, either is a 500 on PostgreSQL, though SQLite
stores them happily. At the edge (the Twilio form, the API's JSON, the vendor webhooks' JSON and paths, the
admin forms) NUL is dropped and a lone surrogate becomes U+FFFD, and the rest of the text is kept.
"""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select

from connectors.registry import validate_connector
from core.config import load_tenants
from core.storable import storable, storable_tree
from core.store.tables import Call, Conversation, Message
from sandbox.hubspot_webhooks import signature_v3
from sandbox.phone import SandboxPhone
from sync.embedded import Embedded
from tests.webhooks.conftest import BUSINESS, CALLER, miss_a_call
from tests.webhooks.two_way_support import HUBSPOT_APP_SECRET, clock, two_way_tenant, write_tenants  # noqa: F401
from webhooks.api_routes import hash_key

API_KEY = "tbk_nul_byte_tests"

TIMEOUT = 30  # a loaded CI box with PostgreSQL busy answers slowly; never a reason to fail


@pytest.fixture
def tenants_path(tmp_path, stack, monkeypatch):
    return write_tenants(tmp_path, stack, monkeypatch, two_way_tenant(stack, api_key_sha256=hash_key(API_KEY)))


@pytest.fixture
def pg(postgres_db, tenants_path, clock):
    tenants = load_tenants(tenants_path, validate_connector=validate_connector)
    with Embedded(db=postgres_db, tenants=tenants, clock=clock) as embedded:
        yield embedded


@pytest.fixture
def pg_phone(pg, stack):
    with httpx.Client(timeout=TIMEOUT) as http:
        yield SandboxPhone(app_url=pg.url, auth_token=stack.auth_token, account_sid=stack.account_sid,
                           twilio=stack.twilio, http=http)


def inbound_bodies(pg) -> list[str]:
    with pg.runtime.db.transaction() as s:
        return list(s.scalars(select(Message.body).where(Message.direction == "inbound").order_by(Message.id)))


def test_a_text_with_nul_bytes_is_answered_and_kept_without_them_on_postgresql(pg, pg_phone):
    # Given: a caller was texted back after a missed call
    assert miss_a_call(pg_phone, caller=CALLER).status_code == 200
    pg.drain()
    # When: they answer with NUL bytes inside their text
    answer = pg_phone.text(caller=CALLER, to=BUSINESS, body="It's about my di\x00vorce\x00")
    pg.drain()
    # Then: Twilio gets its TwiML, the rest of the text is stored, and the conversation moved on
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/xml")
    assert inbound_bodies(pg) == ["It's about my divorce"]
    with pg.runtime.db.transaction() as s:
        assert s.scalar(select(Conversation.answers)) != {}


def test_a_call_whose_fields_carry_nul_bytes_is_recorded_on_postgresql(pg, pg_phone):
    sid = "CA" + "3" * 31
    answer = pg_phone.signed_post("/twilio/voice", {"CallSid": sid[:10] + "\x00" + sid[10:] + "3", "From": CALLER,
                                                    "To": BUSINESS, "CallStatus": "ringing\x00"})

    assert answer.status_code == 200, answer.text
    with pg.runtime.db.transaction() as s:
        assert s.scalar(select(Call.call_sid)) == sid + "3"


def test_an_api_report_with_nul_and_lone_surrogates_is_accepted_on_postgresql(pg):
    report = {"caller": "+1555010\u00003333", "called": BUSINESS, "occurred_at": "2031-06-02T10:00:00-04:00",
              "idempotency_key": "crm-\u0000call-\ud800-7"}
    # json.dumps keeps them as \\u escapes, as a client's JSON would carry them
    answer = httpx.post(timeout=TIMEOUT, url=pg.url + "/api/v1/missed-calls", content=json.dumps(report),
                        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})

    assert answer.status_code == 202, answer.text
    assert answer.json()["texted"] is True


def test_vendor_webhooks_with_nul_bytes_are_refused_or_taken_never_a_500_on_postgresql(pg, clock, stack):
    # A Graph notification naming a subscription with a NUL in its id: not ours
    graph = httpx.post(timeout=TIMEOUT, url=pg.url + "/webhooks/microsoft",
                       content=json.dumps({"value": [{"subscriptionId": "sub\u0000", "clientState": "x\u0000"}]}),
                       headers={"Content-Type": "application/json"})
    # A Clio delivery to a path with a NUL in it: no URL of ours has one
    clio = httpx.post(timeout=TIMEOUT, url=pg.url + "/webhooks/clio/path%00token", content=b"{}")
    # A signed HubSpot event whose object id carries a NUL
    body = json.dumps([{"eventId": 9, "portalId": stack.hubspot.webhooks.portal_id, "occurredAt": 1,
                        "subscriptionType": "contact.propertyChange", "objectId": "51\u0000",
                        "propertyName": "textback_do_not_text", "propertyValue": "true\u0000"}]).encode()
    timestamp = str(int(clock().timestamp() * 1000))
    hubspot = httpx.post(timeout=TIMEOUT, url=pg.url + "/webhooks/hubspot", content=body, headers={
        "Content-Type": "application/json", "X-HubSpot-Request-Timestamp": timestamp,
        "X-HubSpot-Signature-v3": signature_v3(HUBSPOT_APP_SECRET, "POST", pg.url + "/webhooks/hubspot", body,
                                               timestamp)})

    assert (graph.status_code, clio.status_code, hubspot.status_code) == (403, 400, 204)


def test_the_admin_sign_in_with_a_nul_in_the_email_is_a_failed_sign_in_on_postgresql(pg):
    with httpx.Client(base_url=pg.url, timeout=TIMEOUT) as http:
        http.get("/admin/login")
        answer = http.post("/admin/login", data={"email": "staff\x00@example.com", "password": "x" * 12,
                                                 "csrf": http.cookies.get("textback_login_csrf")})

    assert (answer.status_code, answer.headers["location"]) == (303, "/admin/login?failed=1")


@pytest.mark.parametrize("raw, kept", [("a\x00b", "ab"), ("\x00", ""), ("ok", "ok"), ("\ud800x", "\ufffdx"),
                                       ("é😀\t\n", "é😀\t\n"), ("\udfff\ud83d", "\ufffd\ufffd")])
def test_storable_drops_nul_and_mends_lone_surrogates_and_keeps_everything_else(raw, kept):
    assert storable(raw) == kept
    assert storable_tree({"k\x00": [raw, 1, None, {"x": raw}]}) == {"k": [kept, 1, None, {"x": kept}]}


def test_a_long_idempotency_key_is_kept_as_a_digest_and_a_retry_with_it_is_a_duplicate_on_postgresql(pg):
    report = {"caller": "+15550104444", "called": BUSINESS, "occurred_at": "2031-06-02T10:00:00-04:00",
              "idempotency_key": "k" * 100}
    headers = {"Authorization": f"Bearer {API_KEY}"}

    first = httpx.post(timeout=TIMEOUT, url=pg.url + "/api/v1/missed-calls", json=report, headers=headers)
    again = httpx.post(timeout=TIMEOUT, url=pg.url + "/api/v1/missed-calls", json=report, headers=headers)

    assert (first.status_code, again.status_code) == (202, 202), first.text
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    with pg.runtime.db.transaction() as s:
        assert len(s.scalar(select(Call.call_sid))) <= 64


def test_an_api_report_with_a_caller_longer_than_any_number_is_a_422_naming_the_field_on_postgresql(pg):
    # Found by test_api_schema.py at 2,000 examples: a 60-character caller reached the 32-character column (a 500).
    report = {"caller": "Ω≈ç√∫˜µ≤≥÷åß∂ƒ©˙∆˚¬…¯˘¿ÅÍÎÏ˝ÓÔÒÚÆ☃Œ„´‰ˇÁ¨ˆØ∏”’`⁄€‹›ﬁﬂ‡°·‚—±", "called": BUSINESS,
              "occurred_at": "0255-10-23T14:18:03.0Z", "idempotency_key": "Ã2v;"}

    answer = httpx.post(timeout=TIMEOUT, url=pg.url + "/api/v1/missed-calls", json=report,
                        headers={"Authorization": f"Bearer {API_KEY}"})

    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "caller"], answer.text
    with pg.runtime.db.transaction() as s:
        assert s.scalar(select(Call.id)) is None


def test_twilio_fields_longer_than_their_columns_are_clipped_or_refused_on_postgresql(pg, pg_phone):
    ring = pg_phone.signed_post("/twilio/voice", {"CallSid": "CA" + "4" * 32, "From": "client:" + "a" * 60,
                                                  "To": BUSINESS, "CallStatus": "ringing"})
    long_sid = pg_phone.signed_post("/twilio/voice", {"CallSid": "CA" + "4" * 80, "From": CALLER, "To": BUSINESS})

    assert ring.status_code == 200 and long_sid.status_code == 400
    with pg.runtime.db.transaction() as s:
        assert s.scalar(select(Call.from_number)) == ("client:" + "a" * 60)[:32]


def test_a_row_id_beyond_postgresqls_integer_is_a_422(pg):
    answer = httpx.post(f"{pg.url}/api/v1/conversations/{2**40}/takeover", timeout=TIMEOUT,
                        headers={"Authorization": f"Bearer {API_KEY}"})

    assert answer.status_code == 422

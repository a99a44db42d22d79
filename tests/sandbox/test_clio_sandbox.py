"""The Clio sandbox over real HTTP, driven with httpx as any Clio client would."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from sandbox.clio import ClioSandbox, create_app
from sandbox.server import serve

_serial = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_serial)}"


@pytest.fixture(scope="module")
def clio() -> ClioSandbox:
    return ClioSandbox(rate_limit=100_000)


@pytest.fixture(scope="module")
def url(clio):
    with serve(create_app(clio)) as served:
        yield served.url


@pytest.fixture(scope="module")
def api(clio, url) -> httpx.Client:
    with httpx.Client(base_url=url + "/api/v4", headers={"Authorization": f"Bearer {clio.issue_token()}"}) as client:
        yield client


class Receiver:
    """An endpoint Clio's webhooks are pointed at: records requests, echoes handshakes when told to."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.echo = True
        self.app = FastAPI()
        self._lock = threading.Lock()

        @self.app.post("/clio")
        async def hook(request: Request) -> Response:
            with self._lock:
                self.requests.append((dict(request.headers), await request.body()))
            secret = request.headers.get("x-hook-secret")
            return Response(status_code=200, headers={"X-Hook-Secret": secret} if secret and self.echo else {})


@pytest.fixture
def hooked():
    """A Clio of its own, so webhooks registered by one test hear nothing of another's records."""
    clio = ClioSandbox()
    with serve(create_app(clio)) as served, httpx.Client(
            base_url=served.url + "/api/v4", headers={"Authorization": f"Bearer {clio.issue_token()}"}) as api:
        yield clio, api


@pytest.fixture
def receiver():
    hooks = Receiver()
    with serve(hooks.app) as served:
        hooks.url = served.url + "/clio"
        yield hooks


def person(api: httpx.Client, *, query: str = "", **data) -> dict:
    response = api.post(f"/contacts.json{query}", json={"data": {"type": "Person", **data}})
    assert response.status_code == 201, response.text
    return response.json()["data"]


# --- auth and versions ---------------------------------------------------------------------------

def test_a_call_without_a_token_answers_401_with_clios_invalid_token_body(url):
    response = httpx.get(url + "/api/v4/contacts.json")

    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token", "error_description": (
        "The access token provided is expired, revoked, malformed or invalid for other reasons.")}


def test_an_expired_token_answers_401_like_an_unknown_one(url):
    clio = ClioSandbox()
    token = clio.issue_token()
    clio.oauth.expire_access_tokens()
    with serve(create_app(clio)) as served:
        response = httpx.get(served.url + "/api/v4/users/who_am_i.json", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401 and response.json()["error"] == "invalid_token"


def test_an_unsupported_api_version_answers_410_gone(api):
    assert api.get("/contacts.json", headers={"X-API-VERSION": "3.0.0"}).status_code == 410
    assert api.get("/contacts.json").headers["X-API-VERSION"] == "4.0.9"


def test_who_am_i_is_the_user_the_token_belongs_to(api, clio):
    data = api.get("/users/who_am_i.json", params={"fields": "id,name,email"}).json()["data"]

    assert data == {"id": clio.user["id"], "name": "Sandbox Attorney", "email": "attorney@example.com"}


# --- fields --------------------------------------------------------------------------------------

def test_records_answer_only_id_and_etag_unless_fields_names_more(api):
    created = person(api, first_name="Ada", last_name="Lovelace")

    plain = api.get(f"/contacts/{created['id']}.json").json()["data"]
    chosen = api.get(f"/contacts/{created['id']}.json", params={"fields": "id,name,type"}).json()["data"]

    assert set(created) == set(plain) == {"id", "etag"}
    assert chosen == {"id": created["id"], "name": "Ada Lovelace", "type": "Person"}


def test_nested_resources_answer_the_fields_in_braces_or_their_defaults(api):
    contact = person(api, last_name="Babbage", phone_numbers=[{"number": "(555) 010-7001", "name": "Work"}],
                     query="?fields=id,phone_numbers{number,name,primary}")
    matter = api.post("/matters.json", params={"fields": "id,client{name},practice_area"},
                      json={"data": {"client": {"id": contact["id"]}, "description": "Engine"}}).json()["data"]

    assert contact["phone_numbers"] == [{"number": "(555) 010-7001", "name": "Work", "primary": True}]
    assert matter["client"] == {"name": "Babbage"} and matter["practice_area"] is None
    client = api.get(f"/matters/{matter['id']}.json", params={"fields": "client"}).json()["data"]["client"]
    assert set(client) == {"id", "etag"}


@pytest.mark.parametrize("fields", ["id,favourite_colour", "client{id,client{id}}", "name{first}"])
def test_a_field_clio_does_not_have_is_a_400_argument_error(api, fields):
    response = api.get("/matters.json", params={"fields": fields})

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "ArgumentError"


# --- pagination ----------------------------------------------------------------------------------

def test_cursor_pages_follow_meta_paging_next_until_it_is_absent(api):
    surname = unique("Pager")
    made = [person(api, last_name=surname)["id"] for _ in range(5)]

    seen, page_url, params = [], "/contacts.json", {"query": surname, "limit": 2, "order": "id(asc)"}
    while page_url:
        body = api.get(page_url, params=params).json()
        seen += [each["id"] for each in body["data"]]
        page_url, params = body["meta"]["paging"].get("next"), None
        if page_url:
            assert "page_token" in parse_qs(urlsplit(page_url).query)

    assert seen == made


def test_a_limit_over_200_is_refused(api):
    assert api.get("/contacts.json", params={"limit": 201}).status_code == 400


def test_offset_pages_stop_at_ten_thousand_records(api):
    response = api.get("/contacts.json", params={"offset": 10_000})

    assert response.status_code == 422 and response.json()["error"]["type"] == "ArgumentError"


def test_contact_query_matches_the_number_as_staff_typed_it(api):
    typed = person(api, first_name="Grace", phone_numbers=[{"number": "(555) 010-7002", "name": "Mobile"}])

    def found(text: str) -> list[int]:
        return [c["id"] for c in api.get("/contacts.json", params={"query": text}).json()["data"]]

    assert typed["id"] in found("(555) 010-7002") and typed["id"] in found("010-7002")
    assert typed["id"] not in found("+15550107002")


# --- validation and ETags ----------------------------------------------------------------------

def test_a_person_without_any_name_is_a_422_validation_error(api):
    response = api.post("/contacts.json", json={"data": {"type": "Person", "phone_numbers": [{"number": "1"}]}})

    assert response.status_code == 422
    assert response.json() == {"error": {"type": "ValidationError",
                                         "message": "Validation failed: First name or last name must be present"}}


def test_a_matter_needs_a_client_that_exists_and_keeps_status_in_clios_case(api, clio):
    area = clio.add_practice_area(unique("Family "))
    contact = person(api, last_name="Hopper")

    missing = api.post("/matters.json", json={"data": {"client": {"id": 1}, "description": "x"}})
    made = api.post("/matters.json", params={"fields": "id,status,display_number,practice_area{name}"}, json={
        "data": {"client": {"id": contact["id"]}, "description": "Custody", "status": "pending",
                 "practice_area": {"id": area["id"]}}}).json()["data"]

    assert missing.status_code == 422 and "Client" in missing.json()["error"]["message"]
    assert made["status"] == "Pending" and made["display_number"].endswith("-Hopper")
    assert made["practice_area"] == {"name": area["name"]}


def test_a_calendar_entry_must_end_after_it_starts_on_a_calendar_that_exists(api, clio):
    start = datetime(2030, 3, 4, 10, tzinfo=timezone(timedelta(hours=-5)))
    entry = {"summary": "Consult", "start_at": start.isoformat(), "end_at": (start - timedelta(hours=1)).isoformat(),
             "calendar_owner": {"id": clio.user["calendar_id"]}}

    backwards = api.post("/calendar_entries.json", json={"data": entry})
    nowhere = api.post("/calendar_entries.json", json={"data": {**entry, "end_at": start.isoformat(),
                                                                "calendar_owner": {"id": 42}}})

    assert backwards.status_code == nowhere.status_code == 422


def test_single_records_carry_an_etag_that_guards_patches(api):
    contact = person(api, first_name="Kathleen")
    path = f"/contacts/{contact['id']}.json"

    shown = api.get(path)
    unchanged = api.get(path, headers={"If-None-Match": shown.headers["ETag"]})
    patched = api.patch(path, json={"data": {"last_name": "Booth"}}, headers={"If-Match": shown.headers["ETag"]})
    stale = api.patch(path, json={"data": {"last_name": "Britten"}}, headers={"If-Match": shown.headers["ETag"]})

    assert shown.headers["ETag"] == contact["etag"] and shown.headers["Last-Modified"]
    assert unchanged.status_code == 304
    assert patched.status_code == 200 and patched.json()["data"]["etag"] != contact["etag"]
    assert stale.status_code == 412


# --- rate limits and faults ---------------------------------------------------------------------

def test_past_the_per_minute_limit_a_token_gets_429_with_retry_after():
    clio = ClioSandbox(rate_limit=3)
    with serve(create_app(clio)) as served:
        headers = {"Authorization": f"Bearer {clio.issue_token()}"}
        answers = [httpx.get(served.url + "/api/v4/contacts.json", headers=headers) for _ in range(4)]

    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["X-RateLimit-Limit"] == "3" for a in answers)
    refused = answers[-1]
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "RateLimited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert int(refused.headers["X-RateLimit-Reset"]) >= datetime.now(timezone.utc).timestamp()


def test_scripted_faults_answer_in_clios_error_shape(api, clio):
    clio.faults.fail_next("/api/v4/matters", status=429, retry_after=7)
    clio.faults.fail_next("/api/v4/matters", status=503)

    limited, broken, fine = (api.get("/matters.json") for _ in range(3))

    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")
    assert broken.status_code == 503 and "error" in broken.json()
    assert fine.status_code == 200


# --- OAuth -----------------------------------------------------------------------------------------

def test_the_authorization_code_flow_issues_tokens_that_refresh_and_deauthorize(url, clio):
    client_id, secret = clio.new_client(redirect_uris=("https://textback.example/clio/callback",))

    redirect = httpx.get(url + "/oauth/authorize", params={
        "response_type": "code", "client_id": client_id, "state": "s-1",
        "redirect_uri": "https://textback.example/clio/callback"})
    answer = parse_qs(urlsplit(redirect.headers["location"]).query)
    form = {"client_id": client_id, "client_secret": secret, "redirect_uri": "https://textback.example/clio/callback"}
    tokens = httpx.post(url + "/oauth/token", data={**form, "grant_type": "authorization_code",
                                                    "code": answer["code"][0]}).json()
    reused = httpx.post(url + "/oauth/token", data={**form, "grant_type": "authorization_code",
                                                    "code": answer["code"][0]})
    refreshed = httpx.post(url + "/oauth/token", data={**form, "grant_type": "refresh_token",
                                                       "refresh_token": tokens["refresh_token"]}).json()

    assert redirect.status_code == 302 and answer["state"] == ["s-1"]
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 30 * 24 * 3600
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    bearer = {"Authorization": f"Bearer {refreshed['access_token']}"}
    assert httpx.get(url + "/api/v4/users/who_am_i.json", headers=bearer).status_code == 200

    assert httpx.post(url + "/oauth/deauthorize", headers=bearer).status_code == 200
    assert httpx.get(url + "/api/v4/users/who_am_i.json", headers=bearer).status_code == 401
    again = httpx.post(url + "/oauth/token", data={**form, "grant_type": "refresh_token",
                                                   "refresh_token": tokens["refresh_token"]})
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_the_token_endpoint_refuses_a_wrong_secret_and_authorize_a_foreign_redirect(url, clio):
    client_id, _ = clio.new_client(redirect_uris=("https://textback.example/cb",))

    wrong = httpx.post(url + "/oauth/token", data={"client_id": client_id, "client_secret": "nope",
                                                   "grant_type": "refresh_token", "refresh_token": "x"})
    foreign = httpx.get(url + "/oauth/authorize", params={"response_type": "code", "client_id": client_id,
                                                         "redirect_uri": "https://evil.example/cb"})

    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert foreign.status_code == 400 and "location" not in foreign.headers


# --- webhooks --------------------------------------------------------------------------------------

def test_a_webhook_is_enabled_by_the_handshake_and_then_delivers_signed_events(hooked, receiver):
    clio, api = hooked
    hook = api.post("/webhooks.json", params={"fields": "id,status,shared_secret,expires_at"}, json={"data": {
        "url": receiver.url, "model": "contact", "fields": "id,name", "events": ["created"]}}).json()["data"]

    with httpx.Client() as http:
        clio.deliver_webhooks(http)
        contact = person(api, first_name="Margaret", last_name="Hamilton")
        clio.deliver_webhooks(http)

    (handshake, _), (headers, body) = receiver.requests
    assert hook["status"] == "pending" and handshake["x-hook-secret"] == hook["shared_secret"]
    assert api.get(f"/webhooks/{hook['id']}.json", params={"fields": "status"}).json()["data"]["status"] == "enabled"
    expected = hmac.new(hook["shared_secret"].encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-hook-signature"] == expected
    assert json.loads(body) == {"data": {"id": contact["id"], "name": "Margaret Hamilton"},
                                "meta": {"event": "created", "webhook_id": hook["id"]}}
    expires = datetime.fromisoformat(hook["expires_at"])
    assert timedelta(days=2, hours=23) < expires - datetime.now(timezone.utc) <= timedelta(days=3)


def test_an_unconfirmed_webhook_stays_pending_until_activated_with_its_secret(hooked, receiver):
    clio, api = hooked
    receiver.echo = False
    hook = api.post("/webhooks.json", params={"fields": "id,shared_secret"}, json={"data": {
        "url": receiver.url, "model": "contact", "fields": "id"}}).json()["data"]
    with httpx.Client() as http:
        clio.deliver_webhooks(http)
        person(api, first_name="Unheard")
        clio.deliver_webhooks(http)

    wrong = api.put(f"/webhooks/{hook['id']}/activate", headers={"X-Hook-Secret": "guess"})
    right = api.put(f"/webhooks/{hook['id']}/activate", headers={"X-Hook-Secret": hook["shared_secret"]})

    assert len(receiver.requests) == 1
    assert wrong.status_code == 422 and right.status_code == 204
    assert clio.record("webhooks", hook["id"])["status"] == "enabled"


def test_matter_webhooks_hear_watched_changes_and_status_events(hooked, receiver):
    clio, api = hooked
    contact = person(api, last_name="Liskov")
    matter = api.post("/matters.json", json={"data": {"client": {"id": contact["id"]}, "description": "Lease",
                                                      "status": "Pending"}}).json()["data"]
    api.post("/webhooks.json", json={"data": {"url": receiver.url, "model": "matter", "fields": "id,status",
                                              "events": ["updated", "matter_opened"]}})
    with httpx.Client() as http:
        clio.deliver_webhooks(http)
        api.patch(f"/matters/{matter['id']}.json", json={"data": {"description": "Lease dispute"}})
        api.patch(f"/matters/{matter['id']}.json", json={"data": {"status": "Open"}})
        clio.deliver_webhooks(http)

    events = [json.loads(body)["meta"]["event"] for _, body in receiver.requests[1:]]
    assert events == ["updated", "matter_opened"]


@pytest.mark.parametrize("change", [{"url": "http://hooks.example/clio"},
                                    {"expires_at": (datetime.now(timezone.utc) + timedelta(days=32)).isoformat()},
                                    {"model": "invoice"}, {"fields": "id,nope"}])
def test_a_webhook_clio_would_refuse_is_a_422(api, change):
    hook = {"url": "https://hooks.example/clio", "model": "contact", "fields": "id", **change}

    assert api.post("/webhooks.json", json={"data": hook}).status_code == 422


# --- Clio Grow lead inbox ---------------------------------------------------------------------------

def test_the_grow_lead_inbox_takes_a_lead_for_a_known_inbox_token(url, clio):
    inbox = clio.new_grow_inbox()
    lead = {"from_first": "Ida", "from_last": "Rhodes", "from_message": "Missed call", "from_phone": "+15550107003",
            "referring_url": "textback", "from_source": "textback"}

    taken = httpx.post(url + "/inbox_leads", json={"inbox_lead_token": inbox, "inbox_lead": lead})
    incomplete = httpx.post(url + "/inbox_leads", json={"inbox_lead_token": inbox, "inbox_lead": {"from_first": "A"}})
    stranger = httpx.post(url + "/inbox_leads", json={"inbox_lead_token": "unknown", "inbox_lead": lead})

    assert taken.status_code == 201
    assert [(x["from_first"], x["from_phone"]) for x in clio.inbox_leads(inbox)] == [("Ida", "+15550107003")]
    assert incomplete.status_code == 422 and stranger.status_code == 401

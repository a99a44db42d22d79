"""The Microsoft sandbox speaks the identity platform's v2.0 endpoints (to msal) and Graph's calendar API over HTTPS."""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import secrets
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlsplit

import httpx
import msal
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from connectors.outlook import PinnedSession
from sandbox.common import Faults
from sandbox.graph_stack import MicrosoftStack
from sandbox.tls import serve_tls

MONDAY = datetime(2030, 6, 3, tzinfo=timezone.utc)
REDIRECT = "http://localhost:8400/callback"
_people = itertools.count(1)


@pytest.fixture(scope="module")
def ms():
    with MicrosoftStack.start() as stack:
        yield stack


@pytest.fixture(scope="module")
def app(ms):
    return ms.identity.new_app(redirect_uris=[REDIRECT])


@pytest.fixture(scope="module")
def msal_app(ms, app) -> msal.ConfidentialClientApplication:
    return confidential(ms, app)


@pytest.fixture(scope="module")
def http(ms):
    with httpx.Client(base_url=ms.api.url, verify=ms.ca.ssl_context(), timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def auth(ms, msal_app) -> dict:
    token = msal_app.acquire_token_for_client(scopes=[f"{ms.api.url}/.default"])["access_token"]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def staff(ms, app) -> str:
    upn = f"staff{next(_people)}@contoso.com"
    ms.graph.add_mailbox(app.tenant_id, upn)
    return upn


def confidential(ms, app, *, secret: str | None = None) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(app.client_id, client_credential=secret or app.client_secret,
                                              authority=f"{ms.login.url}/{app.tenant_id}", instance_discovery=False,
                                              http_client=PinnedSession(ms.ca.bundle))


def sign_in(ms, client: msal.ConfidentialClientApplication, user: str,
            permissions: tuple[str, ...] = ("Calendars.ReadWrite",)) -> dict:
    """The browser part of the authorization-code flow: open the authorize URL, read the form it would post back."""
    flow = client.initiate_auth_code_flow([f"{ms.api.url}/{p}" for p in permissions], redirect_uri=REDIRECT,
                                          login_hint=user, response_mode="form_post")
    page = httpx.get(flow["auth_uri"], verify=ms.ca.ssl_context())
    assert f'action="{REDIRECT}"' in page.text
    return client.acquire_token_by_auth_code_flow(flow, dict(re.findall(r'name="(\w+)" value="([^"]*)"', page.text)))


def token_request(ms, tenant: str, **form) -> httpx.Response:
    return httpx.post(f"{ms.login.url}/{tenant}/oauth2/v2.0/token", data=form, verify=ms.ca.ssl_context())


def at(hours: float, zone: str = "UTC") -> dict:
    return {"dateTime": (MONDAY + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": zone}


def window(days: float = 1) -> dict:
    return {"startDateTime": MONDAY.isoformat(), "endDateTime": (MONDAY + timedelta(days=days)).isoformat()}


# --- the identity platform ---------------------------------------------------------------------------------

def test_discovery_names_the_tenants_endpoints_under_its_guid_or_domain(ms, app):
    # Given
    domain_tenant = ms.identity.new_tenant("fourthcoffee.onmicrosoft.com")
    # When
    by_guid = httpx.get(f"{ms.login.url}/{app.tenant_id}/v2.0/.well-known/openid-configuration",
                        verify=ms.ca.ssl_context()).json()
    by_domain = httpx.get(f"{ms.login.url}/fourthcoffee.onmicrosoft.com/v2.0/.well-known/openid-configuration",
                          verify=ms.ca.ssl_context()).json()
    # Then
    assert by_guid["token_endpoint"] == f"{ms.login.url}/{app.tenant_id}/oauth2/v2.0/token"
    assert by_guid["issuer"] == f"{ms.login.url}/{app.tenant_id}/v2.0"
    assert by_domain["issuer"] == f"{ms.login.url}/{domain_tenant}/v2.0"


def test_an_unknown_tenant_is_refused_with_aadsts90002(ms):
    # When
    answer = httpx.get(f"{ms.login.url}/nowhere.example/v2.0/.well-known/openid-configuration",
                       verify=ms.ca.ssl_context())
    # Then
    assert answer.status_code == 400
    assert answer.json()["error_codes"] == [90002]


def test_msal_gets_an_app_only_token_with_client_credentials(ms, msal_app):
    # When
    result = msal_app.acquire_token_for_client(scopes=[f"{ms.api.url}/.default"])
    # Then
    assert result["token_type"] == "Bearer" and result["expires_in"] > 3000
    grant = ms.identity.grant_for(result["access_token"])
    assert grant.user is None and "Calendars.ReadWrite" in grant.permissions


def test_a_wrong_client_secret_is_invalid_client_with_entras_error_shape(ms, app):
    # When
    result = confidential(ms, app, secret="not-the-secret").acquire_token_for_client(
        scopes=[f"{ms.api.url}/.default"])
    # Then
    assert result["error"] == "invalid_client" and result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert {"timestamp", "trace_id", "correlation_id", "error_uri"} <= set(result)


def test_client_credentials_need_a_single_default_scope(ms, app):
    # When
    answer = token_request(ms, app.tenant_id, grant_type="client_credentials", client_id=app.client_id,
                           client_secret=app.client_secret, scope=f"{ms.api.url}/Calendars.Read")
    # Then
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_scope" and answer.json()["error_codes"] == [1002012]


def test_the_authorization_code_flow_with_pkce_yields_user_tokens_through_msal(ms, app, staff):
    # Given
    client = confidential(ms, app)
    # When
    result = sign_in(ms, client, staff)
    # Then
    assert {"access_token", "refresh_token", "id_token", "client_info"} <= set(result)
    assert result["id_token_claims"]["preferred_username"] == staff
    assert ms.identity.grant_for(result["access_token"]).user == staff
    [account] = client.get_accounts()
    assert account["username"] == staff
    silent = client.acquire_token_silent_with_error([f"{ms.api.url}/Calendars.ReadWrite"], account=account)
    assert silent["token_source"] == "cache"


def test_the_id_token_is_signed_with_the_published_key(ms, app, staff):
    # Given
    id_token = sign_in(ms, confidential(ms, app), staff)["id_token"]
    [key] = httpx.get(f"{ms.login.url}/{app.tenant_id}/discovery/v2.0/keys", verify=ms.ca.ssl_context()).json()["keys"]
    number = int.from_bytes(base64.urlsafe_b64decode(key["n"] + "=="), "big")
    public = rsa.RSAPublicNumbers(int.from_bytes(base64.urlsafe_b64decode(key["e"] + "=="), "big"), number).public_key()
    signed, _, signature = id_token.rpartition(".")
    # When / Then (raises if the signature is wrong)
    public.verify(base64.urlsafe_b64decode(signature + "=="), signed.encode(), padding.PKCS1v15(), hashes.SHA256())


def test_a_code_verifier_that_does_not_match_the_challenge_is_refused(ms, app, staff):
    # Given
    verifier = secrets.token_urlsafe(40)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    authorize = httpx.get(f"{ms.login.url}/{app.tenant_id}/oauth2/v2.0/authorize", verify=ms.ca.ssl_context(), params={
        "client_id": app.client_id, "response_type": "code", "redirect_uri": REDIRECT, "login_hint": staff,
        "scope": "offline_access Calendars.ReadWrite", "state": "s1", "code_challenge": challenge,
        "code_challenge_method": "S256"})
    query = dict(parse_qsl(urlsplit(authorize.headers["location"]).query))
    form = {"grant_type": "authorization_code", "client_id": app.client_id, "client_secret": app.client_secret,
            "code": query["code"], "redirect_uri": REDIRECT}
    # When
    wrong = token_request(ms, app.tenant_id, **form, code_verifier="not-the-verifier")
    right = token_request(ms, app.tenant_id, **form, code_verifier=verifier)
    again = token_request(ms, app.tenant_id, **form, code_verifier=verifier)
    # Then
    assert query["state"] == "s1"
    assert wrong.json()["error_codes"] == [501481]
    assert right.status_code == 200 and "refresh_token" in right.json()
    assert again.json()["error"] == "invalid_grant" and again.json()["error_codes"] == [54005]


def test_revoked_and_idle_refresh_tokens_are_invalid_grant(ms, app, staff):
    # Given
    client = confidential(ms, app)
    idle, revoked = (ms.identity.sign_in(app, staff, resource=ms.api.url) for _ in range(2))
    ms.identity.expire_inactive(idle)
    scopes = [f"{ms.api.url}/Calendars.ReadWrite"]
    fresh = client.acquire_token_by_refresh_token(revoked, scopes=scopes)
    # When
    after_idle = client.acquire_token_by_refresh_token(idle, scopes=scopes)
    ms.identity.revoke(app.tenant_id, staff)
    after_revoke = client.acquire_token_by_refresh_token(fresh["refresh_token"], scopes=scopes)
    # Then
    assert "access_token" in fresh and fresh["refresh_token"] != revoked
    assert after_idle["error"] == "invalid_grant" and after_idle["error_codes"] == [700082]
    assert after_revoke["error"] == "invalid_grant" and after_revoke["error_codes"] == [50173]


# --- Graph: tokens, permissions, mailboxes -------------------------------------------------------------------

@pytest.mark.parametrize("header, message", [(None, "Access token is empty."),
                                             ("Bearer made-up", "Access token has expired or is not yet valid.")])
def test_graph_refuses_a_missing_or_unknown_token(http, staff, header, message):
    # When
    answer = http.get(f"/v1.0/users/{staff}/calendarView", params=window(),
                      headers={"Authorization": header} if header else {})
    # Then
    assert answer.status_code == 401 and "WWW-Authenticate" in answer.headers
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert answer.json()["error"]["message"] == message
    assert {"date", "request-id", "client-request-id"} == set(answer.json()["error"]["innerError"])


def test_an_app_only_token_cannot_use_me_nor_unknown_users(http, auth):
    # When
    me = http.get("/v1.0/me/calendarView", params=window(), headers=auth)
    stranger = http.get("/v1.0/users/nobody@contoso.com/calendarView", params=window(), headers=auth)
    # Then
    assert me.status_code == 400 and "only valid with delegated" in me.json()["error"]["message"]
    assert stranger.status_code == 404 and stranger.json()["error"]["code"] == "ErrorInvalidUser"


def test_an_app_without_a_calendar_permission_is_denied(ms, http, staff):
    # Given
    powerless = ms.identity.new_app(application_permissions=())
    ms.graph.add_mailbox(powerless.tenant_id, "boss@tailspin.com")
    token = confidential(ms, powerless).acquire_token_for_client(scopes=[f"{ms.api.url}/.default"])["access_token"]
    # When
    answer = http.get("/v1.0/users/boss@tailspin.com/calendarView", params=window(),
                      headers={"Authorization": f"Bearer {token}"})
    # Then
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "ErrorAccessDenied"


def test_a_delegated_token_reaches_its_own_mailbox_and_shared_ones_with_the_shared_permission(ms, app, http, staff):
    # Given
    colleague, boss = f"colleague{next(_people)}@contoso.com", f"boss{next(_people)}@contoso.com"
    for upn in (colleague, boss):
        ms.graph.add_mailbox(app.tenant_id, upn)
    ms.graph.share(colleague, staff)
    plain = {"Authorization": f"Bearer {sign_in(ms, confidential(ms, app), staff)['access_token']}"}
    token = sign_in(ms, confidential(ms, app), staff, ("Calendars.ReadWrite", "Calendars.Read.Shared"))["access_token"]
    user = {"Authorization": f"Bearer {token}"}
    # When
    own = http.get("/v1.0/me/calendarView", params=window(), headers=user)
    shared = http.get(f"/v1.0/users/{colleague}/calendarView", params=window(), headers=user)
    shared_without_permission = http.get(f"/v1.0/users/{colleague}/calendarView", params=window(), headers=plain)
    private = http.get(f"/v1.0/users/{boss}/calendarView", params=window(), headers=user)
    # Then
    assert (own.status_code, shared.status_code, shared_without_permission.status_code, private.status_code) == (
        200, 200, 403, 403)


# --- Graph: getSchedule and calendarView ---------------------------------------------------------------------

def test_get_schedule_lists_every_item_with_its_status_in_the_preferred_zone(ms, http, auth, staff):
    # Given
    ms.graph.add_event(staff, MONDAY + timedelta(hours=16), MONDAY + timedelta(hours=17), show_as="tentative")
    ms.graph.add_event(staff, MONDAY + timedelta(hours=18), MONDAY + timedelta(hours=19), show_as="free")
    ms.graph.add_event(staff, MONDAY + timedelta(hours=17), MONDAY + timedelta(hours=18), show_as="oof",
                       calendar_id=ms.graph.add_calendar(staff, "Side calendar"))
    # When
    answer = http.post(f"/v1.0/users/{staff}/calendar/getSchedule",
                       headers=auth | {"Prefer": 'outlook.timezone="Pacific Standard Time"'},
                       json={"schedules": [staff, "nobody@contoso.com"], "startTime": at(15), "endTime": at(20),
                             "availabilityViewInterval": 60})
    # Then
    [mine, unknown] = answer.json()["value"]
    assert [(item["status"], item["start"]) for item in mine["scheduleItems"]] == [
        ("tentative", {"dateTime": "2030-06-03T09:00:00.0000000", "timeZone": "Pacific Standard Time"}),
        ("free", {"dateTime": "2030-06-03T11:00:00.0000000", "timeZone": "Pacific Standard Time"})]
    assert mine["availabilityView"] == "01000"
    assert unknown["error"]["responseCode"] == "ErrorMailRecipientNotFound" and unknown["scheduleItems"] == []


def test_get_schedule_refuses_62_days_or_more(http, auth, staff):
    # When
    answer = http.post(f"/v1.0/users/{staff}/calendar/getSchedule", headers=auth,
                       json={"schedules": [staff], "startTime": at(0), "endTime": at(24 * 62)})
    # Then
    assert answer.status_code == 400


def test_calendar_view_pages_with_next_links_and_honours_select(ms, http, auth, staff):
    # Given
    for hour in range(5):
        ms.graph.add_event(staff, MONDAY + timedelta(hours=hour), MONDAY + timedelta(hours=hour, minutes=30),
                           subject=f"Meeting {hour}")
    # When
    pages, url, params = [], f"/v1.0/users/{staff}/calendarView", window() | {"$top": 2, "$select": "subject,start"}
    while url:
        page = http.get(url, params=params, headers=auth).json()
        pages.append(page["value"])
        url, params = page.get("@odata.nextLink"), None
    # Then
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [event["subject"] for page in pages for event in page] == [f"Meeting {h}" for h in range(5)]
    assert set(pages[0][0]) == {"@odata.etag", "id", "subject", "start"}


def test_calendar_view_needs_a_time_window(http, auth, staff):
    # When
    answer = http.get(f"/v1.0/users/{staff}/calendarView", headers=auth)
    # Then
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "ErrorInvalidParameter"


def test_throttling_answers_429_with_retry_after_in_graphs_error_shape(ms, http, auth, staff):
    # Given
    ms.graph.faults.fail_next("/v1.0/users/", status=429, retry_after=3)
    # When
    answer = http.get(f"/v1.0/users/{staff}/calendarView", params=window(), headers=auth)
    # Then
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "3"
    assert answer.json()["error"]["code"] == "ApplicationThrottled"


# --- Graph: events -----------------------------------------------------------------------------------------

def test_an_event_keeps_its_zone_and_answers_in_utc_or_the_preferred_zone(http, auth, staff):
    # Given
    created = http.post(f"/v1.0/users/{staff}/calendar/events", headers=auth,
                        json={"subject": "Consult", "start": at(10, "America/Chicago"), "end": at(11, "America/Chicago")})
    event_url = f"/v1.0/users/{staff}/events/{created.json()['id']}"
    # When
    in_utc = http.get(event_url, headers=auth).json()
    in_pacific = http.get(event_url, headers=auth | {"Prefer": 'outlook.timezone="Pacific Standard Time"'}).json()
    # Then
    assert created.status_code == 201
    assert in_utc["start"] == {"dateTime": "2030-06-03T15:00:00.0000000", "timeZone": "UTC"}
    assert in_pacific["start"] == {"dateTime": "2030-06-03T08:00:00.0000000", "timeZone": "Pacific Standard Time"}
    assert in_utc["originalStartTimeZone"] == "America/Chicago" and "transactionId" not in in_utc


def test_a_zone_graph_does_not_know_and_an_unknown_property_are_refused(http, auth, staff):
    # When
    zone = http.post(f"/v1.0/users/{staff}/events", headers=auth,
                     json={"start": at(10, "America/Detroit"), "end": at(11, "America/Detroit")})
    unknown = http.post(f"/v1.0/users/{staff}/events", headers=auth,
                        json={"start": at(10), "end": at(11), "summary": "Google's name for subject"})
    # Then
    assert zone.status_code == 400 and zone.json()["error"]["code"] == "TimeZoneNotSupportedException"
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "RequestBodyRead"


def test_a_repeated_transaction_id_answers_the_event_it_first_created(ms, http, auth, staff):
    # Given
    body = {"subject": "Consult", "start": at(10), "end": at(11), "transactionId": "7E163156-7762-4BEB-A1C6"}
    first = http.post(f"/v1.0/users/{staff}/calendar/events", headers=auth, json=body).json()
    # When
    again = http.post(f"/v1.0/users/{staff}/calendar/events", headers=auth, json=body)
    elsewhere = http.post(f"/v1.0/users/{staff}/calendars/{ms.graph.add_calendar(staff, 'Other')}/events",
                          headers=auth, json=body)
    # Then
    assert again.status_code == 201 and again.json()["id"] == first["id"]
    assert first["transactionId"] == "7E163156-7762-4BEB-A1C6"
    assert elsewhere.status_code == 409 and elsewhere.json()["error"]["code"] == "ErrorDuplicateTransactionId"
    assert len(ms.graph.events(staff)) == 1


def test_an_event_can_be_patched_and_deleted_and_is_then_not_found(ms, http, auth, staff):
    # Given
    event_id = http.post(f"/v1.0/users/{staff}/events", headers=auth,
                         json={"subject": "Consult", "start": at(10), "end": at(11)}).json()["id"]
    url = f"/v1.0/users/{staff}/events/{event_id}"
    # When
    patched = http.patch(url, headers=auth, json={"start": at(12), "end": at(13), "showAs": "tentative"})
    deleted = http.delete(url, headers=auth)
    # Then
    assert patched.json()["start"]["dateTime"] == "2030-06-03T12:00:00.0000000"
    assert patched.json()["showAs"] == "tentative" and patched.json()["subject"] == "Consult"
    assert deleted.status_code == 204
    assert http.get(url, headers=auth).json()["error"]["code"] == "ErrorItemNotFound"
    assert http.delete(url, headers=auth).status_code == 404


# --- Graph: delta --------------------------------------------------------------------------------------------

def test_delta_sends_the_window_in_pages_then_only_changes_and_removals(ms, http, auth, staff):
    # Given
    kept, moved, removed = (ms.graph.add_event(staff, MONDAY + timedelta(hours=h), MONDAY + timedelta(hours=h + 1))
                            for h in (9, 11, 13))
    url, params, seen = f"/v1.0/users/{staff}/calendarView/delta", window(), []
    while True:
        page = http.get(url, params=params, headers=auth | {"Prefer": "odata.maxpagesize=2"}).json()
        seen += [event["id"] for event in page["value"]]
        if "@odata.deltaLink" in page:
            break
        url, params = page["@odata.nextLink"], None
    delta_link = page["@odata.deltaLink"]
    # When
    http.patch(f"/v1.0/users/{staff}/events/{moved['id']}", headers=auth, json={"start": at(30), "end": at(31)})
    ms.graph.remove_event(removed["id"])
    added = ms.graph.add_event(staff, MONDAY + timedelta(hours=15), MONDAY + timedelta(hours=16))
    changes = http.get(delta_link, headers=auth).json()
    # Then
    assert sorted(seen) == sorted([kept["id"], moved["id"], removed["id"]])
    assert [(c["id"], c.get("@removed")) for c in changes["value"]] == [
        (moved["id"], {"reason": "deleted"}), (removed["id"], {"reason": "deleted"}), (added["id"], None)]
    assert "@odata.deltaLink" in changes


def test_an_expired_delta_token_answers_410(ms, http, auth, staff):
    # Given
    delta_link = http.get(f"/v1.0/users/{staff}/calendarView/delta", params=window(), headers=auth).json()[
        "@odata.deltaLink"]
    ms.graph.expire_delta_tokens()
    # When
    answer = http.get(delta_link, headers=auth)
    # Then
    assert answer.status_code == 410 and answer.json()["error"]["code"] == "SyncStateNotFound"


# --- Graph: subscriptions --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def receiver(ms):
    """A notification endpoint done the documented way: echo the validation token, take notifications with 202."""
    state = {"validations": [], "notifications": [], "echo": True, "faults": Faults()}
    api = FastAPI()

    @api.post("/notify")
    async def notify(request: Request):
        if "validationToken" in request.query_params:
            token = request.query_params["validationToken"]
            state["validations"].append((token, request.headers.get("content-type")))
            return PlainTextResponse(token if state["echo"] else "something else")
        if fault := state["faults"].take("/notify"):
            return JSONResponse({}, status_code=fault["status"])
        state["notifications"].extend((await request.json())["value"])
        return JSONResponse({}, status_code=202)

    with serve_tls(api, ca=ms.ca) as served:
        state["url"] = served.url + "/notify"
        yield state


def subscribe(http, auth, staff, receiver, **fields) -> httpx.Response:
    expiry = datetime.now(timezone.utc) + timedelta(hours=24)
    return http.post("/v1.0/subscriptions", headers=auth, json={
        "changeType": "created,updated,deleted", "notificationUrl": receiver["url"],
        "resource": f"users/{staff}/events", "expirationDateTime": expiry.isoformat(), "clientState": "s3cr3t"} | fields)


def test_a_subscription_is_made_only_after_the_endpoint_echoes_the_validation_token(http, auth, staff, receiver):
    # When
    created = subscribe(http, auth, staff, receiver,
                        expirationDateTime=(datetime.now(timezone.utc) + timedelta(minutes=10)).isoformat())
    # Then
    token, content_type = receiver["validations"][-1]
    assert token.startswith("Validation: Testing client application reachability") and content_type.startswith(
        "text/plain")
    assert created.status_code == 201 and created.json()["clientState"] == "s3cr3t"
    expires = datetime.fromisoformat(created.json()["expirationDateTime"])
    assert expires >= datetime.now(timezone.utc) + timedelta(minutes=44)


def test_no_subscription_without_the_echo_nor_for_a_plain_http_url(http, auth, staff, receiver):
    # Given
    receiver["echo"] = False
    # When
    wrong_echo = subscribe(http, auth, staff, receiver)
    receiver["echo"] = True
    plain_http = subscribe(http, auth, staff, receiver, notificationUrl="http://127.0.0.1:9/notify")
    too_long = subscribe(http, auth, staff, receiver,
                         expirationDateTime=(datetime.now(timezone.utc) + timedelta(days=8)).isoformat())
    # Then
    assert wrong_echo.status_code == 400 and "exactly match validationToken" in wrong_echo.json()["error"]["message"]
    assert plain_http.status_code == 400 and too_long.status_code == 400


def test_event_changes_reach_the_endpoint_as_change_notifications(ms, http, auth, staff, receiver):
    # Given
    subscription = subscribe(http, auth, staff, receiver).json()
    event = ms.graph.add_event(staff, MONDAY, MONDAY + timedelta(hours=1))
    http.delete(f"/v1.0/users/{staff}/events/{event['id']}", headers=auth)
    receiver["faults"].fail_next("/notify", status=503)
    # When
    first_try = ms.graph.deliver_notifications()
    second_try = ms.graph.deliver_notifications()
    # Then
    assert (first_try, second_try) == (0, 2)
    mine = [n for n in receiver["notifications"] if n["subscriptionId"] == subscription["id"]]
    assert [(n["changeType"], n["resourceData"]["id"], n["clientState"]) for n in mine] == [
        ("created", event["id"], "s3cr3t"), ("deleted", event["id"], "s3cr3t")]
    assert mine[0]["resource"].endswith(f"/Events/{event['id']}") and mine[0]["tenantId"]


def test_a_subscription_can_be_renewed_and_deleted(http, auth, staff, receiver):
    # Given
    subscription_id = subscribe(http, auth, staff, receiver).json()["id"]
    later = datetime.now(timezone.utc) + timedelta(days=2)
    # When
    renewed = http.patch(f"/v1.0/subscriptions/{subscription_id}", headers=auth,
                         json={"expirationDateTime": later.isoformat()})
    deleted = http.delete(f"/v1.0/subscriptions/{subscription_id}", headers=auth)
    # Then
    assert abs(datetime.fromisoformat(renewed.json()["expirationDateTime"]) - later) < timedelta(seconds=1)
    assert deleted.status_code == 204
    assert http.get(f"/v1.0/subscriptions/{subscription_id}", headers=auth).status_code == 404


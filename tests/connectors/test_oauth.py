"""OAuth connections: the authorization-code flow, encrypted storage and token refresh, against the sandboxes."""

from __future__ import annotations

import base64
import hashlib
import threading
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import httplib2
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from connectors.base import AuthExpired, RateLimited, Transient
from connectors.google_calendar import GoogleCalendar, GoogleCalendarConfig
from connectors.oauth import CLIO, GOOGLE, MICROSOFT, GrantRefused, OAuthApp, OAuthClient, TokenProvider, uses_oauth
from connectors.outlook import OutlookCalendar, OutlookConfig
from connectors.oauth_flow import ConnectError, authorization_request, connect
from core.store import connections
from core.store.connections import SecretKeyError, TokenCipher, TokenSet, new_key
from core.store.tables import Connection, OutboxRow
from sandbox.clio import ClioSandbox
from sandbox.clio import create_app as create_clio_app
from sandbox.google_calendar import GoogleCalendarSandbox, create_app
from sandbox.graph_stack import MicrosoftStack
from sandbox.microsoft_identity import MicrosoftIdentity
from sandbox.microsoft_identity import create_app as create_identity_app
from sandbox.server import free_port, serve

CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"
STAFF = "staff@smithlaw.example"


@pytest.fixture(scope="module")
def google() -> GoogleCalendarSandbox:
    sandbox = GoogleCalendarSandbox()
    sandbox.oauth.consenting_user = STAFF
    return sandbox


@pytest.fixture(scope="module")
def google_url(google):
    with serve(create_app(google)) as served:
        yield served.url


@pytest.fixture(scope="module")
def google_app(google, google_url) -> OAuthApp:
    installed = google.oauth.new_client()["installed"]
    return OAuthApp(client_id=installed["client_id"], client_secret=SecretStr(installed["client_secret"]),
                    login_url=google_url)


@pytest.fixture
def token_requests() -> list[str]:
    return []


@pytest.fixture
def counted_http(token_requests):
    with httpx.Client(timeout=5, event_hooks={"request": [lambda request: token_requests.append(request.url.path)]}) \
            as http:
        yield http


@pytest.fixture
def google_client(google_app, counted_http) -> OAuthClient:
    return OAuthClient(GOOGLE, google_app, http=counted_http)


@pytest.fixture
def cipher() -> TokenCipher:
    return TokenCipher([new_key()])


@pytest.fixture(scope="module")
def browser():
    """The person's browser: follows the vendor's redirect to the local listener."""
    with httpx.Client(timeout=5, follow_redirects=True) as client:
        yield client


def sign_in(browser: httpx.Client):
    return lambda url: browser.get(url)


def stored(db, *, role: str = "calendar") -> Connection | None:
    with db.transaction() as session:
        return connections.find(session, tenant_id="smith-law", role=role)


def connect_google(db, cipher, client, browser):
    return connect(client=client, tenant_id="smith-law", role="calendar", db=db, cipher=cipher,
                   open_url=sign_in(browser), timeout=10)


# --- providers --------------------------------------------------------------------------------

def test_the_google_authorize_url_asks_for_offline_access_with_consent_state_and_a_pkce_s256_challenge(google_client):
    # When
    request = authorization_request(google_client, redirect_uri="http://127.0.0.1:8765/callback")
    # Then
    url = urlsplit(request.url)
    query = {key: values[0] for key, values in parse_qs(url.query).items()}
    assert url.path == "/o/oauth2/v2/auth"
    assert query["response_type"] == "code" and query["redirect_uri"] == "http://127.0.0.1:8765/callback"
    assert query["access_type"] == "offline" and query["prompt"] == "consent"
    assert CALENDAR_SCOPE in query["scope"].split() and query["state"] == request.state
    digest = hashlib.sha256(request.code_verifier.encode()).digest()
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == base64.urlsafe_b64encode(digest).decode().rstrip("=")


def test_production_endpoints_are_the_vendors_own_and_follow_the_clio_region_and_the_microsoft_directory():
    app = OAuthApp(client_id="app")

    assert OAuthClient(GOOGLE, app).token_endpoint == "https://oauth2.googleapis.com/token"
    assert OAuthClient(GOOGLE, app).authorize_endpoint == "https://accounts.google.com/o/oauth2/v2/auth"
    eu = OAuthClient(CLIO, app, base_url="https://eu.app.clio.com/api/v4")
    assert (eu.authorize_endpoint, eu.token_endpoint) == ("https://eu.app.clio.com/oauth/authorize",
                                                          "https://eu.app.clio.com/oauth/token")
    contoso = OAuthClient(MICROSOFT, app.model_copy(update={"entra_tenant": "contoso.onmicrosoft.com"}))
    assert contoso.token_endpoint == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    assert "offline_access" in contoso.scopes
    us_gov = OAuthClient(MICROSOFT, app.model_copy(update={"login_url": "https://login.microsoftonline.us"}))
    assert us_gov.authorize_endpoint == "https://login.microsoftonline.us/organizations/oauth2/v2.0/authorize"


def test_clio_is_asked_without_pkce_or_scopes_since_its_portal_fixes_them():
    request = authorization_request(OAuthClient(CLIO, OAuthApp(client_id="app")), redirect_uri="http://127.0.0.1:1/cb")

    query = parse_qs(urlsplit(request.url).query)
    assert request.code_verifier is None and "code_challenge" not in query and "scope" not in query


# --- encryption at rest ---------------------------------------------------------------------------

def test_without_a_key_the_error_says_how_to_make_one():
    with pytest.raises(SecretKeyError, match="textback connectors new-key"):
        TokenCipher.from_secret(None)
    with pytest.raises(SecretKeyError, match="not a Fernet key"):
        TokenCipher.from_secret(SecretStr("hunter2"))


def test_a_new_key_prepended_still_opens_old_rows_and_rotation_moves_them_to_the_new_key():
    # Given
    old, new = new_key(), new_key()
    tokens = TokenSet("ya29.access", "1//refresh", datetime(2030, 1, 1, tzinfo=timezone.utc))
    blob = TokenCipher([old]).encrypt(tokens)
    rotating = TokenCipher.from_secret(SecretStr(f"{new},{old}"))
    # When
    rotated = rotating.rotate(blob)
    # Then
    assert rotating.decrypt(blob) == tokens
    assert TokenCipher([new]).decrypt(rotated) == tokens
    with pytest.raises(SecretKeyError, match="not in TEXTBACK_SECRET_KEYS"):
        TokenCipher([new]).decrypt(blob)


# --- the flow ---------------------------------------------------------------------------------------

def test_connecting_stores_the_granted_tokens_encrypted_with_the_account_and_scopes(any_db, cipher, google_client,
                                                                                   browser, google):
    # When
    connected = connect_google(any_db, cipher, google_client, browser)
    # Then
    row = stored(any_db)
    tokens = cipher.decrypt(row.token_blob)
    assert (row.provider, row.status, row.account_label) == ("google", "active", STAFF)
    assert connected.account_label == STAFF and CALENDAR_SCOPE in row.scopes
    assert tokens.refresh_token in google.oauth.refresh_tokens_of(STAFF)
    assert tokens.access_token not in row.token_blob and tokens.refresh_token not in row.token_blob
    assert row.expires_at == tokens.expires_at and row.expires_at > datetime.now(timezone.utc) + timedelta(minutes=55)


def test_a_callback_carrying_another_state_is_refused_and_nothing_is_stored(sqlite_db, cipher, google_client, browser):
    # Given: something other than the vendor calls the listener first, with a code of its own
    def forged(url: str) -> None:
        redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
        browser.get(redirect_uri, params={"code": "4/0attacker", "state": "guessed"})

    # When / Then
    with pytest.raises(ConnectError, match="state does not match"):
        connect(client=google_client, tenant_id="smith-law", role="calendar", db=sqlite_db, cipher=cipher,
                open_url=forged, timeout=10)
    assert stored(sqlite_db) is None


def test_a_declined_consent_stores_nothing_and_says_what_google_answered(sqlite_db, cipher, google_client, browser,
                                                                       google):
    google.oauth.decline_consent = True
    try:
        with pytest.raises(ConnectError, match="access_denied"):
            connect_google(sqlite_db, cipher, google_client, browser)
    finally:
        google.oauth.decline_consent = False
    assert stored(sqlite_db) is None


def test_nobody_opening_the_url_times_out_with_what_to_do(sqlite_db, cipher, google_client):
    with pytest.raises(ConnectError, match="no answer from the browser within 0s"):
        connect(client=google_client, tenant_id="smith-law", role="calendar", db=sqlite_db, cipher=cipher,
                open_url=lambda url: None, timeout=0.2)


@pytest.mark.parametrize(("verifier", "answer"), [(None, "Missing code verifier"),
                                                   ("not-the-verifier", "Invalid code verifier")])
def test_an_authorization_code_is_worthless_without_its_pkce_verifier(google_client, browser, verifier, answer):
    # Given: the code a redirect carried, seen by someone without the verifier
    request = authorization_request(google_client, redirect_uri="http://127.0.0.1:9/callback")
    location = browser.get(request.url, follow_redirects=False).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    # When / Then
    with pytest.raises(GrantRefused, match=answer):
        google_client.exchange_code(code, redirect_uri=request.redirect_uri, code_verifier=verifier)


def test_googles_authorize_page_refuses_an_unknown_client_and_a_redirect_off_this_machine(google_app, google_url,
                                                                                       browser):
    query = {"response_type": "code", "scope": CALENDAR_SCOPE, "state": "s",
             "client_id": google_app.client_id, "redirect_uri": "http://127.0.0.1:9/callback"}

    unknown = browser.get(google_url + "/o/oauth2/v2/auth", params=query | {"client_id": "nobody"})
    elsewhere = browser.get(google_url + "/o/oauth2/v2/auth", params=query | {"redirect_uri": "https://evil.example/"})

    assert unknown.status_code == 401 and "invalid_client" in unknown.text
    assert elsewhere.status_code == 400 and "redirect_uri_mismatch" in elsewhere.text


def test_google_sends_a_refresh_token_again_only_when_consent_is_prompted(google, google_url, browser):
    # Given: a user who consented once already
    installed = google.oauth.new_client()["installed"]
    query = {"client_id": installed["client_id"], "response_type": "code", "scope": CALENDAR_SCOPE,
             "access_type": "offline", "redirect_uri": "http://127.0.0.1:9/callback"}

    def refresh_token_granted(**extra: str) -> bool:
        location = browser.get(google_url + "/o/oauth2/v2/auth", params=query | extra,
                               follow_redirects=False).headers["Location"]
        code = parse_qs(urlsplit(location).query)["code"][0]
        answer = httpx.post(google_url + "/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": query["redirect_uri"],
            "client_id": installed["client_id"], "client_secret": installed["client_secret"]}).json()
        return "refresh_token" in answer

    assert refresh_token_granted()
    # When / Then: why textback always asks with prompt=consent
    assert not refresh_token_granted()
    assert refresh_token_granted(prompt="consent")


def test_connecting_again_sets_the_tenants_parked_jobs_back_to_pending(sqlite_db, cipher, google_client, browser):
    # Given
    with sqlite_db.transaction() as session:
        session.add_all([
            OutboxRow(tenant_id="smith-law", kind="offer_slots", idempotency_key="a", status="parked", attempts=1),
            OutboxRow(tenant_id="other-firm", kind="offer_slots", idempotency_key="b", status="parked", attempts=1),
        ])
    # When
    connected = connect_google(sqlite_db, cipher, google_client, browser)
    # Then
    with sqlite_db.transaction() as session:
        statuses = dict(session.execute(select(OutboxRow.tenant_id, OutboxRow.status)).all())
    assert connected.unparked == 1
    assert statuses == {"smith-law": "pending", "other-firm": "parked"}


# --- the token provider ------------------------------------------------------------------------------

def provider_at(db, cipher, app: OAuthApp, http: httpx.Client, now: datetime) -> TokenProvider:
    """A provider, and the client it refreshes with, whose clock stands still at `now`."""
    frozen = OAuthClient(GOOGLE, app, http=http, clock=lambda: now)
    return TokenProvider(db=db, cipher=cipher, client=frozen, tenant_id="smith-law", role="calendar",
                         clock=lambda: now)


def test_a_token_valid_for_more_than_a_minute_is_served_without_asking_google(
        sqlite_db, cipher, google_client, browser, google_app, counted_http, token_requests):
    # Given
    connect_google(sqlite_db, cipher, google_client, browser)
    granted = cipher.decrypt(stored(sqlite_db).token_blob)
    token_requests.clear()
    provider = provider_at(sqlite_db, cipher, google_app, counted_http, granted.expires_at - timedelta(seconds=61))
    # When
    first, again = provider(), provider()
    # Then
    assert first == again == granted.access_token
    assert token_requests == []


def test_a_token_expiring_within_a_minute_is_refreshed_once_for_all_threads_and_stored(
        any_db, cipher, google_client, browser, google_app, counted_http, token_requests):
    # Given
    connect_google(any_db, cipher, google_client, browser)
    granted = cipher.decrypt(stored(any_db).token_blob)
    token_requests.clear()
    provider = provider_at(any_db, cipher, google_app, counted_http, granted.expires_at - timedelta(seconds=59))
    # When
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(provider())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then
    kept = cipher.decrypt(stored(any_db).token_blob)
    assert token_requests == ["/token"]
    assert set(tokens) == {kept.access_token} and kept.access_token != granted.access_token
    assert kept.refresh_token == granted.refresh_token  # Google keeps the refresh token; nothing to rotate


def test_a_token_the_api_refused_is_replaced_even_when_it_looks_fresh(sqlite_db, cipher, google_client, browser):
    connect_google(sqlite_db, cipher, google_client, browser)
    provider = TokenProvider(db=sqlite_db, cipher=cipher, client=google_client, tenant_id="smith-law", role="calendar")
    refused = provider()

    assert provider.refresh(stale=refused).access_token != refused


def test_a_tenant_never_connected_gets_auth_expired_naming_the_command(sqlite_db, cipher, google_client):
    provider = TokenProvider(db=sqlite_db, cipher=cipher, client=google_client, tenant_id="smith-law", role="calendar")

    with pytest.raises(AuthExpired, match="run `textback connect smith-law calendar`"):
        provider()


# --- end to end ------------------------------------------------------------------------------------

def test_authorize_store_refresh_revoke_then_reconnect_against_the_google_sandbox(
        any_db, cipher, google_client, browser, google, token_requests):
    # Given: the staff member connects their Google account
    connect_google(any_db, cipher, google_client, browser)
    provider = TokenProvider(db=any_db, cipher=cipher, client=google_client, tenant_id="smith-law", role="calendar")
    refreshed = provider.refresh(stale=provider())
    assert google.oauth.grant_for(refreshed.access_token).identity == STAFF
    # When: they remove textback's access in their Google account
    for refresh_token in google.oauth.refresh_tokens_of(STAFF):
        google.oauth.revoke(refresh_token)
    # Then: the next refresh is refused, the connection needs re-auth, and later calls do not ask Google again
    with pytest.raises(GrantRefused, match="invalid_grant"):
        provider.refresh(stale=refreshed.access_token)
    assert stored(any_db).status == "needs_reauth"
    token_requests.clear()
    with pytest.raises(AuthExpired, match="needs re-authorization"):
        provider()
    assert token_requests == []
    # When: they connect again
    with any_db.transaction() as session:
        session.add(OutboxRow(tenant_id="smith-law", kind="offer_slots", idempotency_key="parked-1", status="parked"))
    connected = connect_google(any_db, cipher, google_client, browser)
    # Then: the connection is active, the parked job is pending again, and tokens flow
    assert stored(any_db).status == "active" and connected.unparked == 1
    assert google.oauth.grant_for(provider()).identity == STAFF


def test_a_google_calendar_authorized_with_connect_reads_free_busy_and_recovers_from_a_stale_token(
        sqlite_db, cipher, google_client, google_app, google_url, browser, google):
    # Given
    google.add_calendar(STAFF, owners=[])
    connect_google(sqlite_db, cipher, google_client, browser)
    config = GoogleCalendarConfig(type="google", calendars=[STAFF], oauth=google_app, base_url=google_url)
    provider = TokenProvider(db=sqlite_db, cipher=cipher, client=google_client, tenant_id="smith-law", role="calendar")
    calendar = GoogleCalendar(config, http=httplib2.Http(timeout=5), token=provider)
    start = datetime(2030, 6, 3, tzinfo=timezone.utc)
    google.add_busy(STAFF, start + timedelta(hours=9), start + timedelta(hours=10))
    # When: Google forgets every access token it issued, so the stored one answers 401
    google.oauth.expire_access_tokens()
    busy = calendar.free_busy(calendars=[STAFF], start=start, end=start + timedelta(days=1))
    # Then
    assert [(b.start.hour, b.end.hour) for b in busy[STAFF]] == [(9, 10)]
    # When: the staff member revokes textback's access
    for refresh_token in google.oauth.refresh_tokens_of(STAFF):
        google.oauth.revoke(refresh_token)
    # Then
    with pytest.raises(AuthExpired):
        calendar.free_busy(calendars=[STAFF], start=start, end=start + timedelta(days=1))
    assert stored(sqlite_db).status == "needs_reauth"


def test_a_google_calendar_config_takes_credentials_or_oauth_but_not_both(google_app):
    with pytest.raises(ValueError, match="exactly one of credentials"):
        GoogleCalendarConfig(type="google", calendars=["a@example.com"])
    with pytest.raises(ValueError, match="exactly one of credentials"):
        GoogleCalendarConfig(type="google", calendars=["a@example.com"], oauth=google_app,
                             credentials=SecretStr('{"type": "authorized_user", "client_id": "a", '
                                                   '"client_secret": "b", "refresh_token": "c"}'))


# --- Clio ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clio() -> ClioSandbox:
    return ClioSandbox()


@pytest.fixture(scope="module")
def clio_url(clio):
    with serve(create_clio_app(clio)) as served:
        yield served.url


@pytest.fixture
def clio_client(clio, clio_url) -> OAuthClient:
    client_id, secret = clio.new_client()
    return OAuthClient(CLIO, OAuthApp(client_id=client_id, client_secret=SecretStr(secret)), base_url=clio_url)


def test_clio_connect_refresh_deauthorize_and_needs_reauth_against_the_clio_sandbox(sqlite_db, cipher, clio_client,
                                                                                    clio_url, browser, clio):
    # Given: a Clio user authorizes textback in their region
    connected = connect(client=clio_client, tenant_id="smith-law", role="crm", db=sqlite_db, cipher=cipher,
                        open_url=sign_in(browser), timeout=10)
    provider = TokenProvider(db=sqlite_db, cipher=cipher, client=clio_client, tenant_id="smith-law", role="crm")
    # Then: the token opens the API, and a refresh keeps Clio's refresh token, which does not expire
    assert connected.provider == "clio" and stored(sqlite_db, role="crm").status == "active"
    me = httpx.get(clio_url + "/api/v4/users/who_am_i.json", headers={"Authorization": f"Bearer {provider()}"})
    assert me.status_code == 200
    granted = cipher.decrypt(stored(sqlite_db, role="crm").token_blob)
    refreshed = provider.refresh(stale=granted.access_token)
    assert refreshed.access_token != granted.access_token and refreshed.refresh_token == granted.refresh_token
    # When: the firm deauthorizes the app
    httpx.post(clio_url + "/oauth/deauthorize", headers={"Authorization": f"Bearer {refreshed.access_token}"})
    # Then
    with pytest.raises(GrantRefused, match="invalid_grant"):
        provider.refresh(stale=refreshed.access_token)
    assert stored(sqlite_db, role="crm").status == "needs_reauth"


# --- Microsoft -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def identity() -> MicrosoftIdentity:
    return MicrosoftIdentity()


@pytest.fixture(scope="module")
def login_url(identity):
    with serve(create_identity_app(identity)) as served:
        yield served.url


@pytest.fixture
def microsoft(identity, login_url) -> tuple[OAuthClient, int, str]:
    """A client registered with the redirect URI of a known free port, and the user who will sign in."""
    port = free_port("127.0.0.1")
    registered = identity.new_app(redirect_uris=[f"http://127.0.0.1:{port}/callback"])
    user = "staff@contoso.onmicrosoft.com"
    identity.add_user(registered.tenant_id, user)
    app = OAuthApp(client_id=registered.client_id, client_secret=SecretStr(registered.client_secret),
                   login_url=login_url, entra_tenant=registered.tenant_id)
    return OAuthClient(MICROSOFT, app), port, user


def connect_microsoft(db, cipher, microsoft, browser):
    client, port, _ = microsoft
    return connect(client=client, tenant_id="smith-law", role="calendar", db=db, cipher=cipher,
                   open_url=sign_in(browser), port=port, timeout=10)


def test_microsoft_connect_stores_the_user_and_every_refresh_keeps_the_rotated_refresh_token(
        sqlite_db, cipher, microsoft, browser, identity):
    # Given
    client, _, user = microsoft
    connected = connect_microsoft(sqlite_db, cipher, microsoft, browser)
    granted = cipher.decrypt(stored(sqlite_db).token_blob)
    provider = TokenProvider(db=sqlite_db, cipher=cipher, client=client, tenant_id="smith-law", role="calendar")
    # When
    refreshed = provider.refresh(stale=granted.access_token)
    # Then
    assert connected.provider == "microsoft" and connected.account_label == user
    assert "https://graph.microsoft.com/Calendars.ReadWrite" in connected.scopes
    assert refreshed.refresh_token != granted.refresh_token
    assert cipher.decrypt(stored(sqlite_db).token_blob).refresh_token == refreshed.refresh_token
    assert identity.grant_for(refreshed.access_token).user == user


@pytest.mark.parametrize("break_it", ["inactive for 90 days", "sessions revoked"])
def test_a_microsoft_refresh_token_that_expired_or_was_revoked_marks_the_connection_needs_reauth(
        sqlite_db, cipher, microsoft, browser, identity, break_it):
    # Given
    client, _, user = microsoft
    connect_microsoft(sqlite_db, cipher, microsoft, browser)
    granted = cipher.decrypt(stored(sqlite_db).token_blob)
    if break_it == "inactive for 90 days":
        identity.expire_inactive(granted.refresh_token)
    else:
        identity.revoke(client.app.entra_tenant, user)
    provider = TokenProvider(db=sqlite_db, cipher=cipher, client=client, tenant_id="smith-law", role="calendar")
    # When / Then
    with pytest.raises(GrantRefused, match="AADSTS700082" if break_it == "inactive for 90 days" else "AADSTS50173"):
        provider.refresh(stale=granted.access_token)
    assert stored(sqlite_db).status == "needs_reauth"


def test_an_expired_microsoft_client_secret_parks_without_blaming_the_connection(sqlite_db, cipher, microsoft, browser,
                                                                                identity):
    client, _, _ = microsoft
    connect_microsoft(sqlite_db, cipher, microsoft, browser)
    granted = cipher.decrypt(stored(sqlite_db).token_blob)
    identity.expire_client_secret(client.app.client_id)
    provider = TokenProvider(db=sqlite_db, cipher=cipher, client=client, tenant_id="smith-law", role="calendar")

    with pytest.raises(AuthExpired, match="AADSTS7000222.*check the oauth client_id and client_secret"):
        provider.refresh(stale=granted.access_token)
    assert stored(sqlite_db).status == "active"


@pytest.mark.parametrize(("status", "error"), [(503, Transient), (429, RateLimited)])
def test_a_token_endpoint_that_is_down_or_throttling_is_retried_later_and_the_connection_stays_active(
        sqlite_db, cipher, microsoft, browser, identity, status, error):
    # Given
    client, _, _ = microsoft
    connect_microsoft(sqlite_db, cipher, microsoft, browser)
    granted = cipher.decrypt(stored(sqlite_db).token_blob)
    identity.faults.fail_next(f"/{client.app.entra_tenant}/oauth2/v2.0/token", status=status, retry_after=7)
    provider = TokenProvider(db=sqlite_db, cipher=cipher, client=client, tenant_id="smith-law", role="calendar")
    # When / Then
    with pytest.raises(error) as raised:
        provider.refresh(stale=granted.access_token)
    assert stored(sqlite_db).status == "active"
    assert cipher.decrypt(stored(sqlite_db).token_blob) == granted
    if error is RateLimited:
        assert raised.value.retry_after == 7


def test_an_outlook_calendar_in_delegated_mode_without_a_refresh_token_is_connected_and_reads_free_busy(
        sqlite_db, cipher, browser):
    with MicrosoftStack.start() as ms:
        # Given: an app registration allowing the listener's redirect URI, and the staff mailbox
        port = free_port("127.0.0.1")
        registered = ms.identity.new_app(redirect_uris=[f"http://127.0.0.1:{port}/callback"])
        upn = "staff@contoso.com"
        ms.graph.add_mailbox(registered.tenant_id, upn)
        ms.identity.add_user(registered.tenant_id, upn)
        start = datetime(2030, 6, 3, tzinfo=timezone.utc)
        ms.graph.add_event(upn, start + timedelta(hours=14), start + timedelta(hours=15))
        config = OutlookConfig(type="outlook", mode="delegated", tenant_id=registered.tenant_id,
                               client_id=registered.client_id, client_secret=SecretStr(registered.client_secret),
                               calendars=[upn], **ms.connector_urls())
        # When
        with httpx.Client(timeout=5, follow_redirects=True, verify=ms.ca.ssl_context()) as tls:
            client = OAuthClient.for_config(config, http=tls)
            connected = connect(client=client, tenant_id="smith-law", role="calendar", db=sqlite_db, cipher=cipher,
                                open_url=sign_in(tls), port=port, timeout=10)
            provider = TokenProvider(db=sqlite_db, cipher=cipher, client=client, tenant_id="smith-law",
                                     role="calendar")
            calendar = OutlookCalendar(config, token=provider, http=tls)
            ms.identity.expire_access_tokens()
            busy = calendar.free_busy(calendars=[upn], start=start, end=start + timedelta(days=1))
    # Then
    assert connected.account_label == upn and uses_oauth(config)
    assert [(b.start.hour, b.end.hour) for b in busy[upn]] == [(14, 15)]

"""Who may call the HubSpot sandbox and how often: OAuth tokens through the SDK's OAuth API, rate limits by tier."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.objects import ApiException
from hubspot.oauth import ApiException as OAuthApiException
from urllib3.util.retry import Retry

from sandbox.hubspot import HubSpotSandbox, create_app
from sandbox.server import serve

TOKEN = "pat-na1-access-test"
REDIRECT = "https://textback.example/oauth/hubspot"


@pytest.fixture(scope="module")
def hubspot() -> HubSpotSandbox:
    return HubSpotSandbox({TOKEN})


@pytest.fixture(scope="module")
def url(hubspot):
    with serve(create_app(hubspot)) as served:
        yield served.url


def sdk(url: str, token: str | None = None) -> HubSpot:
    return HubSpot(access_token=token, host=url, retry=Retry(total=0, redirect=False))


def authorization_code(url: str, client_id: str) -> str:
    consent = httpx.get(url + "/oauth/authorize", params={"client_id": client_id, "redirect_uri": REDIRECT,
                                                          "scope": "crm.objects.contacts.write", "state": "s1"})
    assert consent.status_code == 302
    sent_back = parse_qs(urlsplit(consent.headers["location"]).query)
    assert sent_back["state"] == ["s1"]
    return sent_back["code"][0]


@pytest.fixture
def app(hubspot) -> tuple[str, str]:
    return hubspot.access.new_app(redirect_uris=[REDIRECT])


def tokens_for(url: str, app: tuple[str, str]):
    client_id, secret = app
    return sdk(url).oauth.tokens_api.create(grant_type="authorization_code", code=authorization_code(url, client_id),
                                            redirect_uri=REDIRECT, client_id=client_id, client_secret=secret)


def oauth_error(raised: pytest.ExceptionInfo) -> dict:
    return json.loads(raised.value.body)


# --- OAuth ------------------------------------------------------------------------------------

def test_an_authorization_code_buys_a_half_hour_bearer_token_that_reads_the_crm(url, app):
    tokens = tokens_for(url, app)

    page, status, headers = sdk(url, tokens.access_token).crm.objects.basic_api.get_page_with_http_info("contacts")

    assert (tokens.token_type, tokens.expires_in) == ("bearer", 1800) and tokens.refresh_token
    assert status == 200 and page.results is not None
    assert headers["X-HubSpot-RateLimit-Max"] == "110" and "X-HubSpot-RateLimit-Daily" not in headers


def test_a_code_works_once(url, app):
    client_id, secret = app
    code = authorization_code(url, client_id)
    tokens_api = sdk(url).oauth.tokens_api
    tokens_api.create(grant_type="authorization_code", code=code, redirect_uri=REDIRECT, client_id=client_id,
                      client_secret=secret)

    with pytest.raises(OAuthApiException) as raised:
        tokens_api.create(grant_type="authorization_code", code=code, redirect_uri=REDIRECT, client_id=client_id,
                          client_secret=secret)

    assert raised.value.status == 400 and oauth_error(raised)["status"] == "BAD_AUTH_CODE"


def test_a_refresh_gives_a_new_access_token_and_keeps_the_refresh_token(url, app):
    first = tokens_for(url, app)

    again = sdk(url).oauth.tokens_api.create(grant_type="refresh_token", refresh_token=first.refresh_token,
                                             client_id=app[0], client_secret=app[1])

    assert again.access_token != first.access_token and again.refresh_token == first.refresh_token
    assert sdk(url, again.access_token).crm.objects.basic_api.get_page("contacts").results is not None


@pytest.mark.parametrize("change, status", [({"refresh_token": "not-issued"}, "BAD_REFRESH_TOKEN"),
                                            ({"client_secret": "wrong"}, "BAD_CLIENT_SECRET"),
                                            ({"grant_type": "password"}, "BAD_GRANT_TYPE")])
def test_a_bad_refresh_request_answers_400_naming_what_was_wrong(url, app, change, status):
    form = {"grant_type": "refresh_token", "refresh_token": tokens_for(url, app).refresh_token,
            "client_id": app[0], "client_secret": app[1]} | change

    with pytest.raises(OAuthApiException) as raised:
        sdk(url).oauth.tokens_api.create(**form)

    body = oauth_error(raised)
    assert raised.value.status == 400 and body["status"] == status and body["message"] and body["correlationId"]


def test_an_expired_access_token_answers_401_expired_authentication(url, app, hubspot):
    tokens = tokens_for(url, app)
    hubspot.access.expire_access_tokens()

    with pytest.raises(ApiException) as raised:
        sdk(url, tokens.access_token).crm.objects.basic_api.get_page("contacts")

    body = json.loads(raised.value.body)
    assert raised.value.status == 401 and body["category"] == "EXPIRED_AUTHENTICATION"
    assert body["message"].startswith("The OAuth token used to make this call expired")


# --- rate limits ------------------------------------------------------------------------------

@pytest.mark.parametrize("tier, per_ten_seconds, per_day", [("starter", "100", "250000"),
                                                            ("professional", "190", "625000"),
                                                            ("enterprise", "190", "1000000")])
def test_a_private_app_gets_its_tiers_limits_in_the_documented_headers(tier, per_ten_seconds, per_day):
    with serve(create_app(HubSpotSandbox({TOKEN}, tier=tier))) as served:
        headers = sdk(served.url, TOKEN).crm.objects.basic_api.get_page_with_http_info("contacts")[2]

    assert (headers["X-HubSpot-RateLimit-Max"], headers["X-HubSpot-RateLimit-Remaining"]) == (
        per_ten_seconds, str(int(per_ten_seconds) - 1))
    assert (headers["X-HubSpot-RateLimit-Daily"], headers["X-HubSpot-RateLimit-Daily-Remaining"]) == (
        per_day, str(int(per_day) - 1))
    assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"


def test_private_apps_share_the_portals_daily_budget_and_then_get_429_daily():
    other = "pat-na1-second-app"
    with serve(create_app(HubSpotSandbox({TOKEN, other}, daily_limit=3))) as served:
        for token in (TOKEN, other, TOKEN):
            sdk(served.url, token).crm.objects.basic_api.get_page("contacts")
        with pytest.raises(ApiException) as raised:
            sdk(served.url, other).crm.objects.basic_api.get_page("contacts")

    body = json.loads(raised.value.body)
    assert raised.value.status == 429 and (body["policyName"], body["errorType"]) == ("DAILY", "RATE_LIMIT")
    assert body["message"] == "You have reached your daily limit." and int(raised.value.headers["Retry-After"]) > 0

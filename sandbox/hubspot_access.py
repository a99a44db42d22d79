"""Who may call the HubSpot sandbox, and how often: private-app tokens, OAuth apps, rate limits.

Private apps authenticate with a static token (`tokens`, a set tests add to and remove from).
OAuth apps (`new_app`) get a code from `GET /oauth/authorize` (the sandbox skips HubSpot's
consent page and redirects at once) and trade it at `POST /oauth/v1/token` (form-encoded,
`grant_type` authorization_code or refresh_token) for
`{token_type: "bearer", access_token, refresh_token, expires_in: 1800}`; a refresh answers a
new access token and the same refresh token. Codes are single-use. Token errors answer 400
`{status: "BAD_REFRESH_TOKEN" | "BAD_AUTH_CODE" | ..., message, correlationId}`; an expired
access token answers 401 EXPIRED_AUTHENTICATION with how long ago it expired.

Rate limits, as HubSpot documents them: a private app may make 100 requests per rolling 10 s
on Free/Starter and 190 on Professional/Enterprise (`tier`), with a daily budget per portal
(250,000 / 625,000 / 1,000,000) shared by its private apps; an OAuth app gets 110 per 10 s in
each portal and no daily limit. Answers carry X-HubSpot-RateLimit-Interval-Milliseconds, -Max
and -Remaining, and for private apps -Daily and -Daily-Remaining; search answers carry none. Search has a limit
of its own besides, 5 requests per second per token (policy SECONDLY), and counts against the
10-second budget too. `refused` lists the policy of every 429 answered, for tests and benchmarks.
Past a budget the answer is 429 `{status, message, errorType: "RATE_LIMIT", correlationId,
policyName: "TEN_SECONDLY_ROLLING" | "DAILY", requestId}` with Retry-After.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal
from urllib.parse import urlencode

from sandbox.hubspot_properties import HubSpotError

Tier = Literal["starter", "professional", "enterprise"]
TIERS: dict[str, tuple[int, int]] = {"starter": (100, 250_000), "professional": (190, 625_000),
                                     "enterprise": (190, 1_000_000)}
OAUTH_BURST = 110
SEARCH_PER_SECOND = 5
WINDOW_SECONDS = 10
ACCESS_TOKEN_LIFETIME = 1800
NO_CREDENTIALS = ("Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
                  "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview")


@dataclass(frozen=True)
class Caller:
    """Whom a bearer token speaks for: the budget it is counted against, and whether it is OAuth."""

    budget: str
    oauth: bool


@dataclass(frozen=True)
class Admission:
    """The rate limiter's verdict on one request: headers to send, and the policy hit if refused."""

    headers: dict[str, str]
    policy: str | None = None
    retry_after: int | None = None


@dataclass
class _App:
    secret: str
    redirect_uris: tuple[str, ...]


class HubSpotAccess:
    """Credentials and rate budgets of one portal; thread-safe."""

    def __init__(self, tokens: Iterable[str], *, tier: Tier = "enterprise", burst_limit: int | None = None,
                 daily_limit: int | None = None, search_limit: int | None = SEARCH_PER_SECOND,
                 clock: Callable[[], float] = time.time) -> None:
        self.tokens = set(tokens)
        self.burst_limit = burst_limit or TIERS[tier][0]
        self.daily_limit = daily_limit or TIERS[tier][1]
        self.oauth_burst_limit = OAUTH_BURST
        self.clock = clock
        self._apps: dict[str, _App] = {}
        self._codes: dict[str, tuple[str, str]] = {}
        self._access: dict[str, tuple[str, float]] = {}
        self._refresh: dict[str, str] = {}
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self.search_limit = search_limit  # None: unlimited (tests of other behaviour that search in bursts)
        self._searches: dict[str, deque[float]] = defaultdict(deque)
        self.refused: list[str] = []  # the policy of every 429 the limits answered, in order
        self._daily = 0
        self.admitted = 0  # requests answered within the limits
        self.admitted_by: Counter[str] = Counter()  # the same, by route ("POST /crm/v3/objects/notes/batch/create")
        self._lock = threading.Lock()

    # --- OAuth ---------------------------------------------------------------------------------

    def new_app(self, *, redirect_uris: Iterable[str] = ("http://localhost/oauth-callback",)) -> tuple[str, str]:
        """A public app: (client id, client secret)."""
        client_id, secret = str(uuid.uuid4()), str(uuid.uuid4())
        with self._lock:
            self._apps[client_id] = _App(secret, tuple(redirect_uris))
        return client_id, secret

    def authorize(self, query: Mapping[str, str]) -> str:
        """Where HubSpot sends the browser after the user installs the app: redirect_uri?code=..."""
        with self._lock:
            app = self._apps.get(query.get("client_id", ""))
            redirect_uri = query.get("redirect_uri", "")
            if app is None or redirect_uri not in app.redirect_uris:
                raise _oauth_error("BAD_CLIENT_ID" if app is None else "BAD_REDIRECT_URI",
                                   "unknown client_id" if app is None else "redirect_uri is not one of the app's")
            code = secrets.token_urlsafe(24)
            self._codes[code] = (query["client_id"], redirect_uri)
        state = {"state": query["state"]} if query.get("state") else {}
        return f"{redirect_uri}?{urlencode({'code': code, **state})}"

    def exchange(self, form: Mapping[str, str]) -> dict:
        """POST /oauth/v1/token."""
        grant = form.get("grant_type")
        with self._lock:
            app = self._apps.get(form.get("client_id", ""))
            if grant not in ("authorization_code", "refresh_token"):
                raise _oauth_error("BAD_GRANT_TYPE", "grant_type must be authorization_code or refresh_token")
            if app is None:
                raise _oauth_error("BAD_CLIENT_ID", "missing or invalid client id")
            if not secrets.compare_digest(app.secret, form.get("client_secret", "")):
                raise _oauth_error("BAD_CLIENT_SECRET", "missing or invalid client secret")
            if grant == "authorization_code":
                refresh = self._redeem(form, app)
            else:
                refresh = form.get("refresh_token", "")
                if self._refresh.get(refresh) != form["client_id"]:
                    raise _oauth_error("BAD_REFRESH_TOKEN", "missing or invalid refresh token")
            access = "CO" + secrets.token_urlsafe(32)
            self._access[access] = (form["client_id"], self.clock() + ACCESS_TOKEN_LIFETIME)
        return {"token_type": "bearer", "refresh_token": refresh, "access_token": access,
                "expires_in": ACCESS_TOKEN_LIFETIME}

    def expire_access_tokens(self) -> None:
        """Let every OAuth access token run out, as half an hour would."""
        with self._lock:
            self._access = {token: (client, self.clock() - 1) for token, (client, _) in self._access.items()}

    def revoke(self, refresh_token: str) -> None:
        """The user uninstalled the app: its refresh token and the access tokens of the app die."""
        with self._lock:
            client = self._refresh.pop(refresh_token, None)
            self._access = {t: grant for t, grant in self._access.items() if grant[0] != client}

    def _redeem(self, form: Mapping[str, str], app: _App) -> str:
        issued = self._codes.pop(form.get("code", ""), None)
        if issued is None or issued[0] != form["client_id"]:
            raise _oauth_error("BAD_AUTH_CODE", "missing or unknown auth code")
        if form.get("redirect_uri") != issued[1]:
            raise _oauth_error("BAD_REDIRECT_URI", "redirect_uri does not match the one the code was issued to")
        refresh = str(uuid.uuid4())
        self._refresh[refresh] = form["client_id"]
        return refresh

    # --- every API request ----------------------------------------------------------------------

    def identify(self, authorization: str) -> Caller:
        """The caller a request's Authorization header names; 401 in HubSpot's shape otherwise."""
        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        with self._lock:
            if token and token in self.tokens:
                return Caller(budget="private:" + token, oauth=False)
            grant = self._access.get(token)
        if grant is None:
            raise HubSpotError(401, NO_CREDENTIALS, "INVALID_AUTHENTICATION")
        overdue = self.clock() - grant[1]
        if overdue >= 0:
            raise HubSpotError(401, f"The OAuth token used to make this call expired {math.ceil(overdue)} second(s) "
                               "ago.", "EXPIRED_AUTHENTICATION")
        return Caller(budget="oauth:" + grant[0], oauth=True)

    def admit(self, caller: Caller, *, search: bool = False, route: str = "") -> Admission:
        """Count one request against the caller's budgets, or refuse it with the policy it hit."""
        now = time.monotonic()
        limit = self.oauth_burst_limit if caller.oauth else self.burst_limit
        with self._lock:
            recent = self._recent[caller.budget]
            while recent and now - recent[0] >= WINDOW_SECONDS:
                recent.popleft()
            searches = self._searches[caller.budget]
            while searches and now - searches[0] >= 1:
                searches.popleft()
            policy, retry_after = None, None
            if not caller.oauth and self._daily >= self.daily_limit:
                policy, retry_after = "DAILY", _seconds_to_midnight()
            elif len(recent) >= limit:
                policy, retry_after = "TEN_SECONDLY_ROLLING", max(1, math.ceil(WINDOW_SECONDS - (now - recent[0])))
            elif search and self.search_limit is not None and len(searches) >= self.search_limit:
                policy, retry_after = "SECONDLY", 1
            else:
                recent.append(now)
                if search:
                    searches.append(now)
                self._daily += 0 if caller.oauth else 1
                self.admitted += 1
                self.admitted_by[route] += 1
            if policy is not None:
                self.refused.append(policy)
            headers = {} if search else {
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(WINDOW_SECONDS * 1000),
                "X-HubSpot-RateLimit-Max": str(limit),
                "X-HubSpot-RateLimit-Remaining": str(max(0, limit - len(recent))),
            }
            if not (search or caller.oauth):
                headers.update({"X-HubSpot-RateLimit-Daily": str(self.daily_limit),
                                "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - self._daily))})
        return Admission(headers, policy, retry_after)


def rate_limited(policy: str) -> HubSpotError:
    return HubSpotError(429, f"You have reached your {policy.lower()} limit.", None, errorType="RATE_LIMIT",
                        policyName=policy, requestId=str(uuid.uuid4()))


def _oauth_error(status: str, message: str) -> HubSpotError:
    error = HubSpotError(400, message, None)
    error.body["status"] = status
    return error


def _seconds_to_midnight() -> int:
    today = datetime.now(timezone.utc)
    midnight = (today + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return math.ceil((midnight - today).total_seconds())

"""OAuth 2.0 for connectors whose vendor account is authorized by a person: Clio, Google, Microsoft.

A connector config opts in with an `oauth:` block (the client textback is registered as), or,
for Outlook, with delegated mode and no configured refresh token:

    crm:      {type: clio,    oauth: {client_id: ..., client_secret: env:CLIO_CLIENT_SECRET}}
    calendar: {type: google,  calendars: [...], oauth: {client_id: ..., client_secret: env:GOOGLE_CLIENT_SECRET}}
    calendar: {type: outlook, mode: delegated, tenant_id: ..., client_id: ..., client_secret: env:..., calendars: [...]}

`textback connect <tenant> <role>` runs the authorization-code flow (oauth_flow.py) and
stores the tokens encrypted (core/store/connections.py). A `TokenProvider` then hands the
connector a fresh access token: it refreshes under a lock when the token expires within a
minute, keeps a rotated refresh token, and when the vendor refuses the refresh token
(revoked, expired, AADSTS700082 after 90 idle days, consent withdrawn) it marks the
connection needs_reauth and raises `GrantRefused`, an AuthExpired, so the job is parked.

Connectors with config-only credentials (HubSpot private-app tokens, Google service
accounts with domain-wide delegation, Twilio) need none of this.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import (
    AuthExpired,
    ConnectorError,
    Rejected,
    Secret,
    Transient,
    error_for_status,
    parse_retry_after,
)
from core.store import connections
from core.store.connections import SecretKeyError, TokenCipher, TokenSet
from core.store.db import Database

GOOGLE_AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
MICROSOFT_LOGIN_URL = "https://login.microsoftonline.com"
CLIO_URL = "https://app.clio.com"
REFRESH_MARGIN = timedelta(seconds=60)
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Answers meaning this grant is dead and only a person can authorize again; invalid_client is not one
# of them: it means textback's own client id or secret is wrong, which reconnecting cannot fix.
_GRANT_DEAD = {"invalid_grant", "interaction_required", "consent_required", "login_required", "invalid_scope"}


class OAuthApp(BaseModel):
    """The `oauth:` block of a connector config."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1)
    client_secret: Secret | None = Field(None, description="omit for a public client (PKCE only)")
    scopes: list[str] | None = Field(None, description="default: what the connector needs")
    login_url: str | None = Field(None, description="where the vendor's authorize/token endpoints live: "
                                  "a national cloud, a Clio region, or the sandbox")
    entra_tenant: str = Field("organizations", description="Microsoft only: the directory id or domain, "
                              "`organizations` or `common`")


class GrantRefused(AuthExpired):
    """The vendor refused the grant (refresh token revoked or expired, code reused): a person must reconnect."""

    def __init__(self, message: str, *, error: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.error = error


@dataclass(frozen=True)
class Provider:
    """How one vendor speaks OAuth: where its endpoints are and what it expects."""

    name: str
    endpoints: Callable[[OAuthApp, str | None], tuple[str, str]]  # (authorize, token) for app and connector base_url
    pkce: bool
    default_scopes: tuple[str, ...] = ()
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    scope_in_token_requests: bool = False


def _google_endpoints(app: OAuthApp, base_url: str | None) -> tuple[str, str]:
    if app.login_url:
        root = app.login_url.rstrip("/")
        return root + "/o/oauth2/v2/auth", root + "/token"
    return GOOGLE_AUTHORIZE_URL, GOOGLE_TOKEN_URL


def _microsoft_endpoints(app: OAuthApp, base_url: str | None) -> tuple[str, str]:
    root = f"{(app.login_url or MICROSOFT_LOGIN_URL).rstrip('/')}/{app.entra_tenant}/oauth2/v2.0"
    return root + "/authorize", root + "/token"


def _clio_endpoints(app: OAuthApp, base_url: str | None) -> tuple[str, str]:
    # A Clio account lives in one region (app., eu.app., ca.app., au.app.) and authorizes there only.
    parts = urlsplit(app.login_url or base_url or CLIO_URL)
    root = f"{parts.scheme}://{parts.netloc}"
    return root + "/oauth/authorize", root + "/oauth/token"


GOOGLE = Provider(
    "google", _google_endpoints, pkce=True,
    default_scopes=("openid", "email", "https://www.googleapis.com/auth/calendar"),
    # offline: a refresh token at all; consent: Google sends one again on every re-authorization.
    authorize_params={"access_type": "offline", "prompt": "consent", "include_granted_scopes": "true"},
)
MICROSOFT = Provider(
    "microsoft", _microsoft_endpoints, pkce=True,
    default_scopes=("offline_access", "openid", "profile", "https://graph.microsoft.com/Calendars.ReadWrite"),
    authorize_params={"prompt": "select_account"},
    scope_in_token_requests=True,
)
# Clio grants the scopes chosen in its developer portal and documents no PKCE support.
CLIO = Provider("clio", _clio_endpoints, pkce=False)
PROVIDERS = {"google": GOOGLE, "outlook": MICROSOFT, "clio": CLIO}  # by connector type


def oauth_app(config: BaseModel) -> OAuthApp | None:
    """The OAuth client a connector config authorizes through `textback connect`; None for config-only credentials."""
    if getattr(config, "type", None) not in PROVIDERS:
        return None
    if getattr(config, "oauth", None) is not None:
        return config.oauth
    if config.type == "outlook" and config.mode == "delegated" and config.refresh_token is None:
        # The outlook config names its app registration itself, and its Graph scope follows base_url.
        return OAuthApp(client_id=config.client_id, client_secret=config.client_secret, login_url=config.login_url,
                        entra_tenant=config.tenant_id,
                        scopes=["offline_access", "openid", "profile", f"{config.base_url}/Calendars.ReadWrite"])
    return None


def uses_oauth(config: BaseModel) -> bool:
    """True when the connector config authorizes through `textback connect` rather than a configured secret."""
    return oauth_app(config) is not None


@dataclass(frozen=True)
class Grant:
    """A token endpoint's answer."""

    tokens: TokenSet
    scopes: list[str]
    account_label: str | None


class OAuthClient:
    """The token endpoint of one vendor, as the client in a connector's `oauth:` block."""

    def __init__(self, provider: Provider, app: OAuthApp, *, base_url: str | None = None,
                 http: httpx.Client | None = None, clock: Callable[[], datetime] | None = None) -> None:
        self.provider, self.app = provider, app
        self.authorize_endpoint, self.token_endpoint = provider.endpoints(app, base_url)
        self.scopes = list(app.scopes if app.scopes is not None else provider.default_scopes)
        self._http = http or httpx.Client(timeout=_TIMEOUT)
        self._clock = clock or (lambda: datetime.now(timezone.utc))

    @classmethod
    def for_config(cls, config: BaseModel, *, http: httpx.Client | None = None) -> "OAuthClient":
        app = oauth_app(config)
        if app is None:
            raise ValueError(f"the {config.type} connector is configured with credentials, not OAuth")
        ca_bundle = getattr(config, "ca_bundle", None)
        http = http or httpx.Client(timeout=_TIMEOUT, verify=ssl.create_default_context(cafile=ca_bundle)
                                    if ca_bundle else True)
        return cls(PROVIDERS[config.type], app, base_url=getattr(config, "base_url", None), http=http)

    def authorize_url(self, *, redirect_uri: str, state: str, code_challenge: str | None) -> str:
        params = {"client_id": self.app.client_id, "response_type": "code", "redirect_uri": redirect_uri,
                  "state": state, **self.provider.authorize_params}
        if self.scopes:
            params["scope"] = " ".join(self.scopes)
        if code_challenge:
            params |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
        return f"{self.authorize_endpoint}?{urlencode(params)}"

    def exchange_code(self, code: str, *, redirect_uri: str, code_verifier: str | None) -> Grant:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            form["code_verifier"] = code_verifier
        if self.provider.scope_in_token_requests and self.scopes:
            form["scope"] = " ".join(self.scopes)
        return self._token_request(form, action="exchange the authorization code")

    def refresh(self, refresh_token: str) -> Grant:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if self.provider.scope_in_token_requests and self.scopes:
            form["scope"] = " ".join(self.scopes)
        return self._token_request(form, action="refresh the access token")

    def _token_request(self, form: dict[str, str], *, action: str) -> Grant:
        form["client_id"] = self.app.client_id
        if self.app.client_secret is not None:
            form["client_secret"] = self.app.client_secret.get_secret_value()
        now = self._clock()
        try:
            answer = self._http.post(self.token_endpoint, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise Transient(f"{self.provider.name}: {action}: {exc.__class__.__name__}: {exc}") from exc
        if answer.status_code != 200:
            raise _token_error(answer, f"{self.provider.name}: {action}")
        try:
            body = answer.json()
            access_token = body["access_token"]
        except (ValueError, KeyError, TypeError) as exc:
            raise Transient(f"{self.provider.name}: {action}: the token endpoint sent no access token") from exc
        expires_in = body.get("expires_in")
        tokens = TokenSet(access_token, body.get("refresh_token"),
                          now + timedelta(seconds=int(expires_in)) if expires_in else None)
        scopes = body["scope"].split() if isinstance(body.get("scope"), str) else self.scopes
        return Grant(tokens, scopes, _account_label(body.get("id_token")))


def _token_error(answer: httpx.Response, action: str) -> ConnectorError:
    try:
        body = answer.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    description = body.get("error_description", "") if isinstance(body, dict) else ""
    message = f"{action}: the token endpoint answered {answer.status_code} {error or answer.reason_phrase}" + (
        f": {description}" if description else "")
    if error in _GRANT_DEAD:
        return GrantRefused(message, error=error, status=answer.status_code)
    if error in ("invalid_client", "unauthorized_client"):
        return AuthExpired(message + "; check the oauth client_id and client_secret in the tenants file",
                           status=answer.status_code)
    if answer.status_code in (400, 401):
        return Rejected(message, status=answer.status_code)
    retry_after = parse_retry_after(answer.headers.get("Retry-After"))
    return error_for_status(answer.status_code, message, retry_after=retry_after)


def _account_label(id_token: Any) -> str | None:
    """Who authorized, from the ID token's claims; shown to admins only, so its signature is not checked."""
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    if not isinstance(claims, dict):
        return None
    return claims.get("email") or claims.get("preferred_username") or claims.get("upn")


class TokenProvider:
    """A fresh access token for one tenant's connection: `token()` or `token.current()`.

    Shared by a connector's worker threads (an in-process lock) and by every worker box (the
    stored row is read, and locked on PostgreSQL, before a refresh), so a refresh token is
    spent once and a rotated one is never lost.
    """

    def __init__(self, *, db: Database, cipher: TokenCipher, client: OAuthClient, tenant_id: str, role: str,
                 clock: Callable[[], datetime] | None = None, margin: timedelta = REFRESH_MARGIN) -> None:
        self.tenant_id, self.role, self.margin = tenant_id, role, margin
        self._db, self._cipher, self._client = db, cipher, client
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._cached: TokenSet | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_config(cls, config: BaseModel, *, db: Database, secret_keys: SecretStr | None, tenant_id: str,
                   role: str, http: httpx.Client | None = None) -> "TokenProvider":
        return cls(db=db, cipher=TokenCipher.from_secret(secret_keys), client=OAuthClient.for_config(config, http=http),
                   tenant_id=tenant_id, role=role)

    def __call__(self) -> str:
        return self.current().access_token

    def current(self) -> TokenSet:
        cached = self._cached
        if cached is not None and not cached.expiring(self._clock(), margin=self.margin):
            return cached
        return self._renew(stale=None)

    def refresh(self, *, stale: str | None) -> TokenSet:
        """After the API refused `stale`: a new token, unless another thread or box has already replaced it."""
        return self._renew(stale=stale)

    def _renew(self, *, stale: str | None) -> TokenSet:
        with self._lock:
            try:
                tokens = self._fresh_tokens(stale=stale)
            except GrantRefused as exc:
                self._cached = None
                with self._db.transaction() as session:
                    connections.mark_needs_reauth(session, tenant_id=self.tenant_id, role=self.role,
                                                  reason=str(exc), now=self._clock())
                raise
            self._cached = tokens
            return tokens

    def _fresh_tokens(self, *, stale: str | None) -> TokenSet:
        """The stored tokens, refreshed first when spent or expiring; the row stays locked while the vendor answers."""
        now = self._clock()
        with self._db.transaction() as session:
            connection = connections.find(session, tenant_id=self.tenant_id, role=self.role, for_update=True)
            command = f"run `textback connect {self.tenant_id} {self.role}`"
            if connection is None:
                raise AuthExpired(f"{self.tenant_id} {self.role} is not connected yet; {command}")
            if connection.status == connections.NEEDS_REAUTH:
                raise AuthExpired(f"{self.tenant_id} {self.role} needs re-authorization "
                                  f"({connection.status_reason}); {command}")
            try:
                tokens = self._cipher.decrypt(connection.token_blob)
            except SecretKeyError as exc:
                raise AuthExpired(f"{self.tenant_id} {self.role}: {exc}") from exc
            if tokens.access_token != stale and not tokens.expiring(now, margin=self.margin):
                return tokens
            if not tokens.refresh_token:
                raise GrantRefused(f"{self._client.provider.name} granted no refresh token", error="invalid_grant")
            grant = self._client.refresh(tokens.refresh_token)
            tokens = TokenSet(grant.tokens.access_token, grant.tokens.refresh_token or tokens.refresh_token,
                              grant.tokens.expires_at)
            connections.save_tokens(session, connection, tokens, cipher=self._cipher, now=now)
            return tokens

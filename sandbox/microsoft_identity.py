"""The Microsoft identity platform (Entra ID v2.0 endpoints), as msal talks to it.

`create_app(identity)` serves, per tenant (its GUID or a domain it owns):

- `GET /{tenant}/v2.0/.well-known/openid-configuration` and `GET /{tenant}/discovery/v2.0/keys`;
- `GET /{tenant}/oauth2/v2.0/authorize`: signs the user in and consents at once, then redirects
  to the registered redirect_uri with `code` and `state`, or posts them there from an HTML form
  for response_mode=form_post (a PKCE S256 challenge is kept);
- `POST /{tenant}/oauth2/v2.0/token`: client_credentials (one `<resource>/.default` scope,
  application permissions as roles), authorization_code (PKCE verifier checked) and refresh_token
  (rotated on every use).

Refusals are answered as Entra answers them: `error`, `error_description` starting with the
AADSTS code, `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`; 400, or 401
for a bad client secret. Access tokens are opaque here (real ones are JWTs that only Graph reads);
ID tokens are RS256 JWTs signed with the key `keys` publishes.

msal refuses an http:// authority, so serve this with sandbox.tls. Tests seed it with
`new_app`, `add_user`, `sign_in`, and break it with `revoke`, `expire_inactive`,
`expire_client_secret`, `expire_access_tokens` and `faults` (error answers, late answers and
dropped connections, sandbox.common).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from sandbox.common import Faults, inject_faults

GRAPH_RESOURCE = "https://graph.microsoft.com"
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
ACCESS_TOKEN_LIFETIME = 3599
CODE_LIFETIME = 600
_NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


@dataclass(frozen=True)
class AppCredentials:
    """What an admin copies out of an app registration."""

    tenant_id: str
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class AccessGrant:
    """Who an access token speaks for: an app alone (`user` None, permissions are roles) or a signed-in user."""

    tenant_id: str
    client_id: str
    resource: str
    user: str | None
    permissions: frozenset[str]
    expires_at: float


class IdentityError(Exception):
    """A refusal, in the shape the token endpoint answers it."""

    def __init__(self, status: int, error: str, code: int, description: str, *, suberror: str | None = None) -> None:
        super().__init__(f"{error}: AADSTS{code}: {description}")
        self.status, self.error, self.code, self.description, self.suberror = status, error, code, description, suberror

    def body(self) -> dict:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        answer = {
            "error": self.error,
            "error_description": f"AADSTS{self.code}: {self.description} Trace ID: {trace} "
                                 f"Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [self.code], "timestamp": stamp, "trace_id": trace, "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        return answer | ({"suberror": self.suberror} if self.suberror else {})


@dataclass
class _App:
    tenant_id: str
    client_id: str
    secret: str
    redirect_uris: frozenset[str]
    roles: frozenset[str]
    delegated: frozenset[str]
    secret_expired: bool = False


@dataclass
class _Refresh:
    tenant_id: str
    client_id: str
    user: str
    resource: str
    scopes: frozenset[str]
    issued_at: float
    idle: bool = False


@dataclass
class _Code:
    tenant_id: str
    client_id: str
    user: str
    redirect_uri: str
    resource: str
    scopes: frozenset[str]
    oidc: frozenset[str]
    challenge: str | None
    nonce: str | None
    expires_at: float
    redeemed: bool = False


@dataclass
class MicrosoftIdentity:
    """Thread-safe in-memory directory: tenants, users, app registrations, codes and tokens."""

    clock: Callable[[], float] = time.time
    faults: Faults = field(default_factory=Faults)
    resources: set[str] = field(default_factory=lambda: {GRAPH_RESOURCE})
    _domains: dict[str, str] = field(default_factory=dict)  # lowercased domain or GUID -> tenant GUID
    _users: dict[tuple[str, str], str] = field(default_factory=dict)  # (tenant, lowercased UPN) -> object id
    _apps: dict[str, _App] = field(default_factory=dict)
    _codes: dict[str, _Code] = field(default_factory=dict)
    _refresh: dict[str, _Refresh] = field(default_factory=dict)
    _revoked_before: dict[tuple[str, str], float] = field(default_factory=dict)  # (tenant, UPN): sessions revoked
    _access: dict[str, AccessGrant] = field(default_factory=dict)
    _key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537,
                                                                                      key_size=2048))
    _key_id: str = field(default_factory=lambda: secrets.token_urlsafe(20))
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # --- seeding and breaking, for tests and the demo ---------------------------------------------

    def new_tenant(self, domain: str | None = None) -> str:
        """A directory reachable by its GUID and by `domain` (default: <first GUID block>.onmicrosoft.com)."""
        tenant_id = str(uuid.uuid4())
        with self._lock:
            self._domains[tenant_id] = tenant_id
            self._domains[(domain or f"{tenant_id[:8]}.onmicrosoft.com").lower()] = tenant_id
        return tenant_id

    def add_user(self, tenant_id: str, upn: str) -> str:
        """Add a user (idempotent); answers the user's object id."""
        with self._lock:
            return self._users.setdefault((tenant_id, upn.lower()), str(uuid.uuid4()))

    def user_id(self, tenant_id: str, upn: str) -> str | None:
        with self._lock:
            return self._users.get((tenant_id, upn.lower()))

    def add_resource(self, url: str) -> None:
        """Let tokens be issued for another API root, such as a Graph emulator on loopback."""
        with self._lock:
            self.resources.add(url.rstrip("/"))

    def new_app(self, *, tenant_id: str | None = None, redirect_uris: Iterable[str] = (),
                application_permissions: Iterable[str] = ("Calendars.ReadWrite",),
                delegated_permissions: Iterable[str] = ("Calendars.ReadWrite", "User.Read")) -> AppCredentials:
        """Register a confidential client in `tenant_id` (a new tenant if None), admin consent given."""
        tenant_id = tenant_id or self.new_tenant()
        client_id, secret = str(uuid.uuid4()), secrets.token_urlsafe(30)[:40]
        with self._lock:
            self._apps[client_id] = _App(tenant_id, client_id, secret, frozenset(redirect_uris),
                                         frozenset(application_permissions), frozenset(delegated_permissions))
        return AppCredentials(tenant_id, client_id, secret)

    def sign_in(self, app: AppCredentials, upn: str, *, resource: str = GRAPH_RESOURCE,
                scopes: Iterable[str] | None = None) -> str:
        """A refresh token as if `upn` had consented to `scopes` (default: all the app's delegated permissions)."""
        self.add_user(app.tenant_id, upn)
        with self._lock:
            registered = self._apps[app.client_id]
            granted = frozenset(scopes) if scopes is not None else registered.delegated
            return self._new_refresh(_Refresh(app.tenant_id, app.client_id, upn, resource.rstrip("/"), granted,
                                              self.clock()))

    def revoke(self, tenant_id: str, upn: str) -> None:
        """Revoke the user's sessions (Revoke-MgUserSignInSession): every refresh token issued so far dies."""
        with self._lock:
            self._revoked_before[(tenant_id, upn.lower())] = self.clock()

    def expire_inactive(self, refresh_token: str) -> None:
        """Make a refresh token look unused for 90 days."""
        with self._lock:
            self._refresh[refresh_token].idle = True

    def expire_client_secret(self, client_id: str) -> None:
        with self._lock:
            self._apps[client_id].secret_expired = True

    def expire_access_tokens(self) -> None:
        """Make every issued access token stale, so the next API call answers 401."""
        with self._lock:
            self._access.clear()

    # --- what API emulators call ------------------------------------------------------------------------

    def grant_for(self, access_token: str) -> AccessGrant | None:
        with self._lock:
            grant = self._access.get(access_token)
        return grant if grant is not None and grant.expires_at > self.clock() else None

    def tenant(self, name: str) -> str | None:
        with self._lock:
            return self._domains.get(name.lower())

    # --- the endpoints ------------------------------------------------------------------------------------

    def openid_configuration(self, tenant_id: str, *, base: str) -> dict:
        root = f"{base}/{tenant_id}"
        return {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{root}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
                                 "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
                                 "name", "tid", "ver", "at_hash", "c_hash", "email"],
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def keys(self) -> dict:
        numbers = self._key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "kid": self._key_id, "alg": "RS256",
                          "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                          "e": _b64(numbers.e.to_bytes(3, "big"))}]}

    def authorize(self, tenant_id: str, params: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """Sign in and consent at once; answers the redirect_uri and what to send it. IdentityError for a bad request."""
        with self._lock:
            app = self._app_in(tenant_id, params.get("client_id", ""))
            redirect_uri = params.get("redirect_uri", "")
            if redirect_uri not in app.redirect_uris:
                raise IdentityError(400, "invalid_request", 50011, f"The redirect URI '{redirect_uri}' specified in "
                                    f"the request does not match the redirect URIs configured for the application "
                                    f"'{app.client_id}'.")
            if params.get("response_type") != "code":
                raise IdentityError(400, "unsupported_response_type", 900144,
                                    "The request body must contain the following parameter: 'response_type'.")
            resource, scopes, oidc = self._parse_scopes(params.get("scope", ""), tenant_id)
            challenge = params.get("code_challenge")
            if challenge and params.get("code_challenge_method", "plain") != "S256":
                raise IdentityError(400, "invalid_request", 50148,
                                    "The code_challenge_method only supports S256 in this sandbox.")
            user = params.get("login_hint") or next(
                (upn for (tenant, upn) in self._users if tenant == tenant_id), None)
            if user is None:
                raise IdentityError(400, "invalid_request", 50034, "The user account does not exist in the directory.")
            self.add_user(tenant_id, user)
            granted = app.delegated if ".default" in scopes else scopes
            code = "1.A" + secrets.token_urlsafe(48)
            self._codes[code] = _Code(tenant_id, app.client_id, user, redirect_uri, resource, frozenset(granted), oidc,
                                      challenge, params.get("nonce"), self.clock() + CODE_LIFETIME)
        return redirect_uri, {"code": code} | ({"state": params["state"]} if "state" in params else {})

    def exchange(self, tenant_id: str, form: Mapping[str, str], *, basic_auth: tuple[str, str] | None,
                 base: str) -> dict:
        """Answer one token request; raises IdentityError for every refusal."""
        grant_type = form.get("grant_type", "")
        if not grant_type:
            raise IdentityError(400, "invalid_request", 900144,
                                "The request body must contain the following parameter: 'grant_type'.")
        with self._lock:
            app = self._authenticate(tenant_id, form, basic_auth)
            if grant_type == "client_credentials":
                return self._client_credentials(app, form)
            if grant_type == "authorization_code":
                return self._redeem_code(app, form, base=base)
            if grant_type == "refresh_token":
                return self._redeem_refresh(app, form, base=base)
        raise IdentityError(400, "unsupported_grant_type", 70003,
                            f"The app requested an unsupported grant type '{grant_type}'.")

    # --- grants -----------------------------------------------------------------------------------------------

    def _client_credentials(self, app: _App, form: Mapping[str, str]) -> dict:
        scope = form.get("scope", "").split()
        if not scope:
            raise IdentityError(400, "invalid_request", 900144,
                                "The request body must contain the following parameter: 'scope'.")
        if len(scope) != 1 or not scope[0].endswith("/.default"):
            raise IdentityError(400, "invalid_scope", 1002012,
                                f"The provided value for scope {' '.join(scope)} is not valid. Client credential "
                                "flows must have a scope value with /.default suffixed to the resource identifier "
                                "(application ID URI).")
        resource, _, _ = self._parse_scopes(scope[0], app.tenant_id)
        token = self._issue(AccessGrant(app.tenant_id, app.client_id, resource, None, app.roles,
                                        self.clock() + ACCESS_TOKEN_LIFETIME))
        return {"token_type": "Bearer", "expires_in": ACCESS_TOKEN_LIFETIME, "ext_expires_in": ACCESS_TOKEN_LIFETIME,
                "access_token": token}

    def _redeem_code(self, app: _App, form: Mapping[str, str], *, base: str) -> dict:
        code = self._codes.get(form.get("code", ""))
        if code is None or code.client_id != app.client_id:
            raise IdentityError(400, "invalid_grant", 70000, "The provided value for the 'code' parameter is not valid.")
        if code.redeemed:
            raise IdentityError(400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please "
                                "retry with a new valid code or use an existing refresh token.")
        if code.expires_at <= self.clock():
            raise IdentityError(400, "invalid_grant", 70008, "The provided authorization code or refresh token has "
                                "expired due to inactivity. Send a new interactive authorization request for this "
                                "user and resource.")
        if form.get("redirect_uri") != code.redirect_uri:
            raise IdentityError(400, "invalid_grant", 500117,
                                "The reply uri specified in the request isn't expected.")
        if code.challenge is not None:
            verifier = form.get("code_verifier", "")
            if _b64(hashlib.sha256(verifier.encode()).digest()) != code.challenge:
                raise IdentityError(400, "invalid_grant", 501481, "The Code_Verifier does not match the "
                                    "code_challenge supplied in the authorization request.")
        code.redeemed = True
        refresh = _Refresh(code.tenant_id, code.client_id, code.user, code.resource, code.scopes, self.clock())
        return self._user_tokens(refresh, code.scopes, code.oidc, nonce=code.nonce, base=base)

    def _redeem_refresh(self, app: _App, form: Mapping[str, str], *, base: str) -> dict:
        refresh = self._refresh.get(form.get("refresh_token", ""))
        if refresh is None or refresh.client_id != app.client_id:
            raise IdentityError(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        revoked = self._revoked_before.get((refresh.tenant_id, refresh.user.lower()))
        if revoked is not None and refresh.issued_at <= revoked:
            raise IdentityError(400, "invalid_grant", 50173, "The provided grant has expired due to it being revoked, "
                                "a fresh auth token is needed. The user might have changed or reset their password. "
                                f"The grant was issued on '{_stamp(refresh.issued_at)}' and the TokensValidFrom date "
                                f"(before which tokens are not valid) for this user is '{_stamp(revoked)}'.")
        if refresh.idle:
            raise IdentityError(400, "invalid_grant", 700082, "The refresh token has expired due to inactivity. The "
                                f"token was issued on {_stamp(refresh.issued_at)} and was inactive for 90.00:00:00.")
        resource, requested, oidc = self._parse_scopes(form.get("scope", ""), app.tenant_id, default=refresh.resource)
        if resource != refresh.resource:
            raise IdentityError(400, "invalid_grant", 65001, f"The user or administrator has not consented to use the "
                                f"application with ID '{app.client_id}'. Send an interactive authorization request "
                                "for this user and resource.", suberror="consent_required")
        wanted = refresh.scopes if not requested or ".default" in requested else requested
        if not wanted <= refresh.scopes:
            raise IdentityError(400, "invalid_grant", 65001, f"The user or administrator has not consented to use the "
                                f"application with ID '{app.client_id}' for {sorted(wanted - refresh.scopes)}.",
                                suberror="consent_required")
        return self._user_tokens(refresh, wanted, oidc, nonce=None, base=base)

    def _user_tokens(self, refresh: _Refresh, scopes: frozenset[str], oidc: frozenset[str], *, nonce: str | None,
                     base: str) -> dict:
        user_id = self.add_user(refresh.tenant_id, refresh.user)
        token = self._issue(AccessGrant(refresh.tenant_id, refresh.client_id, refresh.resource, refresh.user, scopes,
                                        self.clock() + ACCESS_TOKEN_LIFETIME))
        qualified = sorted(f"{refresh.resource}/{scope}" for scope in scopes)
        answer = {"token_type": "Bearer", "scope": " ".join(qualified + sorted(oidc)),
                  "expires_in": ACCESS_TOKEN_LIFETIME, "ext_expires_in": ACCESS_TOKEN_LIFETIME, "access_token": token,
                  "client_info": _b64(json.dumps({"uid": user_id, "utid": refresh.tenant_id}).encode())}
        if "offline_access" in oidc:
            answer["refresh_token"] = self._new_refresh(_Refresh(refresh.tenant_id, refresh.client_id, refresh.user,
                                                                 refresh.resource, refresh.scopes, refresh.issued_at))
        if "openid" in oidc:
            answer["id_token"] = self._id_token(refresh, user_id, nonce=nonce, base=base)
        return answer

    # --- helpers ------------------------------------------------------------------------------------------------

    def _authenticate(self, tenant_id: str, form: Mapping[str, str], basic_auth: tuple[str, str] | None) -> _App:
        client_id, secret = basic_auth or (form.get("client_id", ""), form.get("client_secret"))
        if not client_id:
            raise IdentityError(400, "invalid_request", 900144,
                                "The request body must contain the following parameter: 'client_id'.")
        app = self._app_in(tenant_id, client_id)
        if secret is None:
            raise IdentityError(401, "invalid_client", 7000218, "The request body must contain the following "
                                "parameter: 'client_assertion' or 'client_secret'.")
        if not secrets.compare_digest(secret, app.secret):
            raise IdentityError(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret "
                                "being sent in the request is the client secret value, not the client secret ID, "
                                f"for a secret added to app '{client_id}'.")
        if app.secret_expired:
            raise IdentityError(401, "invalid_client", 7000222, f"The provided client secret keys for app "
                                f"'{client_id}' are expired. Visit the Azure portal to create new keys for your app.")
        return app

    def _app_in(self, tenant_id: str, client_id: str) -> _App:
        app = self._apps.get(client_id)
        if app is None or app.tenant_id != tenant_id:
            raise IdentityError(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was "
                                f"not found in the directory '{tenant_id}'. This can happen if the application has not "
                                "been installed by the administrator of the tenant or consented to by any user in the "
                                "tenant. You may have sent your authentication request to the wrong tenant.")
        return app

    def _parse_scopes(self, scope: str, tenant_id: str, *, default: str | None = None
                      ) -> tuple[str, frozenset[str], frozenset[str]]:
        """(resource, its permissions, the OIDC scopes) of a space-separated scope list."""
        resources, permissions, oidc = set(), set(), set()
        for item in scope.split():
            if item in OIDC_SCOPES:
                oidc.add(item)
                continue
            resource, _, permission = item.rpartition("/") if "/" in item else (GRAPH_RESOURCE, "", item)
            resources.add(resource.rstrip("/"))
            permissions.add(permission)
        if len(resources) > 1:
            raise IdentityError(400, "invalid_scope", 28000, "Provided value for the input parameter scope is not "
                                "valid because it contains more than one resource.")
        resource = resources.pop() if resources else (default or GRAPH_RESOURCE)
        if resource not in self.resources:
            raise IdentityError(400, "invalid_resource", 500011, f"The resource principal named {resource} was not "
                                f"found in the tenant named {tenant_id}. This can happen if the application has not "
                                "been installed by the administrator of the tenant or consented to by any user in the "
                                "tenant. You might have sent your authentication request to the wrong tenant.")
        return resource, frozenset(permissions), frozenset(oidc)

    def _issue(self, grant: AccessGrant) -> str:
        token = "EwB" + secrets.token_urlsafe(60)
        self._access[token] = grant
        return token

    def _new_refresh(self, refresh: _Refresh) -> str:
        token = "1.AR" + secrets.token_urlsafe(90)
        self._refresh[token] = refresh
        return token

    def _id_token(self, refresh: _Refresh, user_id: str, *, nonce: str | None, base: str) -> str:
        now = int(self.clock())
        claims = {"aud": refresh.client_id, "iss": f"{base}/{refresh.tenant_id}/v2.0", "iat": now, "nbf": now,
                  "exp": now + 3600, "name": refresh.user.split("@")[0], "oid": user_id,
                  "preferred_username": refresh.user, "sub": _b64(hashlib.sha256(
                      f"{user_id}:{refresh.client_id}".encode()).digest()), "tid": refresh.tenant_id, "ver": "2.0"}
        if nonce:
            claims["nonce"] = nonce
        header = _b64(json.dumps({"typ": "JWT", "alg": "RS256", "kid": self._key_id}).encode())
        signed = f"{header}.{_b64(json.dumps(claims).encode())}"
        signature = self._key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signed}.{_b64(signature)}"


def _fault(fault: dict) -> JSONResponse:
    headers = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
    error = IdentityError(fault["status"], "temporarily_unavailable", 90055 if fault["status"] == 429 else 50001,
                          "The service is temporarily unavailable. Please retry later.")
    return JSONResponse(error.body(), status_code=fault["status"], headers=headers | _NO_STORE)


def create_app(identity: MicrosoftIdentity) -> FastAPI:
    app = FastAPI(title="Microsoft identity platform sandbox")

    inject_faults(app, identity.faults, respond=_fault)

    def known(tenant: str) -> str:
        tenant_id = identity.tenant(tenant)
        if tenant_id is None:
            raise IdentityError(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check to make sure you "
                                "have the correct tenant ID and are signing into the correct cloud.")
        return tenant_id

    @app.exception_handler(IdentityError)
    async def refused(request: Request, exc: IdentityError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=_NO_STORE)

    @app.get("/{tenant}/v2.0/.well-known/openid-configuration")
    def openid_configuration(tenant: str, request: Request) -> dict:
        return identity.openid_configuration(known(tenant), base=_base(request))

    @app.get("/{tenant}/discovery/v2.0/keys")
    def keys(tenant: str) -> dict:
        known(tenant)
        return identity.keys()

    @app.get("/{tenant}/oauth2/v2.0/authorize")
    def authorize(tenant: str, request: Request):
        try:
            redirect_uri, answer = identity.authorize(known(tenant), dict(request.query_params))
        except IdentityError as exc:
            # The browser gets a sign-in error page, not JSON.
            return HTMLResponse(f"<h1>Sign in</h1><p>{html.escape(str(exc))}</p>", status_code=exc.status)
        if request.query_params.get("response_mode") == "form_post":
            fields = "".join(f'<input type="hidden" name="{name}" value="{html.escape(value)}"/>'
                             for name, value in answer.items())
            return HTMLResponse(f'<html><body onload="document.forms[0].submit()"><form method="POST" '
                                f'action="{html.escape(redirect_uri)}">{fields}</form></body></html>')
        return RedirectResponse(f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(answer)}",
                                status_code=302)

    @app.post("/{tenant}/oauth2/v2.0/token")
    async def token(tenant: str, request: Request) -> JSONResponse:
        form = {key: str(value) for key, value in (await request.form()).items()}
        answer = identity.exchange(known(tenant), form, basic_auth=_basic_auth(request.headers.get("Authorization")),
                                   base=_base(request))
        return JSONResponse(answer, headers=_NO_STORE)

    return app


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(value).decode().partition(":")
    except ValueError:
        return None
    return client_id, secret


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")

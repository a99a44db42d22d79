"""Google's OAuth 2.0 token endpoint (`POST /token`), and the bearer-token side of Google APIs.

Three grants are served, for the kinds of credential textback accepts:

- the service-account JWT bearer grant (RFC 7523): the assertion is an RS256 JWT
  signed with the key of a service account this sandbox created;
- the refresh-token grant, for an authorized_user JSON (client id, secret, refresh token)
  and for tokens `textback connect` obtained;
- the authorization-code grant behind `GET /o/oauth2/v2/auth`, as for a Desktop-app client:
  any loopback redirect URI, PKCE (S256 or plain) checked on exchange, a refresh token only
  with access_type=offline on first consent or prompt=consent, an ID token with `openid`.
  `consenting_user` is who the "browser" is signed in as; consent is given at once, or
  refused (`decline_consent`).

Every access token maps to an identity (the service account's email, the subject it
impersonates through domain-wide delegation, or the authorized user's email) and its
scopes; the Calendar emulator checks both. Errors are answered as Google answers them:
`{"error": "invalid_grant", "error_description": "..."}` with 400, an unknown client 401.

The API side (`bearer_identity`, `GoogleApiError`, `add_google_api_errors`) is what any
Google API emulator needs: who is calling, with which scopes, and Google's JSON error shape.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
AUTHORIZE_PATH = "/o/oauth2/v2/auth"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_SHORT_SCOPES = {"email": "https://www.googleapis.com/auth/userinfo.email",
                 "profile": "https://www.googleapis.com/auth/userinfo.profile"}
ACCESS_TOKEN_LIFETIME = 3599
_MAX_ASSERTION_LIFETIME = 3600
_CLOCK_SKEW = 300
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_EXPECTED = ("Expected OAuth 2 access token, login cookie or other valid authentication credential. "
             "See https://developers.google.com/identity/sign-in/web/devconsole-project.")


@dataclass(frozen=True)
class AccessGrant:
    """Who an access token speaks for, and what it may do."""

    identity: str
    scopes: frozenset[str]
    expires_at: float
    refresh_token: str | None = None


class TokenError(Exception):
    """A token-endpoint refusal, in the shape Google answers it."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description


@dataclass
class _ServiceAccount:
    email: str
    key_id: str
    public_key: rsa.RSAPublicKey
    domain_wide_delegation: bool


@dataclass
class _RefreshGrant:
    client_id: str
    identity: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class _AuthorizationCode:
    client_id: str
    redirect_uri: str
    identity: str
    scopes: frozenset[str]
    offline: bool
    challenge: str | None
    challenge_method: str


class AuthorizationPageError(Exception):
    """An authorization request Google answers with an error page, not a redirect (the client is not trusted)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status, self.error, self.description = status, error, description


@dataclass
class GoogleOAuth:
    """In-memory token endpoint state: service accounts, OAuth clients, grants and tokens."""

    clock: Callable[[], float] = time.time
    consenting_user: str = "owner@example.com"
    decline_consent: bool = False
    _codes: dict[str, _AuthorizationCode] = field(default_factory=dict)
    _consented: set[tuple[str, str]] = field(default_factory=set)
    _id_key: rsa.RSAPrivateKey | None = None
    _service_accounts: dict[str, _ServiceAccount] = field(default_factory=dict)
    _clients: dict[str, str] = field(default_factory=dict)
    _refresh_grants: dict[str, _RefreshGrant] = field(default_factory=dict)
    _access: dict[str, AccessGrant] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # --- seeding, for tests and the demo ------------------------------------------------

    def new_service_account(self, email: str, *, token_uri: str, domain_wide_delegation: bool = False) -> dict:
        """A service-account key JSON as the Cloud console downloads it, with a fresh RSA key."""
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = secrets.token_hex(20)
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        with self._lock:
            self._service_accounts[email] = _ServiceAccount(
                email, key_id, private_key.public_key(), domain_wide_delegation
            )
        project = email.split("@", 1)[-1].split(".", 1)[0]
        return {
            "type": "service_account",
            "project_id": project,
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": str(secrets.randbelow(10**21)).zfill(21),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/" + urllib.parse.quote(email),
            "universe_domain": "googleapis.com",
        }

    def new_authorized_user(
        self, *, token_uri: str, email: str = "owner@example.com", scopes: Iterable[str] = (CALENDAR_SCOPE,)
    ) -> dict:
        """An authorized_user JSON: a consented user's refresh token under a new OAuth client."""
        client_id = f"{secrets.randbelow(10**12):012d}-{secrets.token_hex(16)}.apps.googleusercontent.com"
        client_secret = "GOCSPX-" + secrets.token_urlsafe(21)
        refresh_token = "1//0" + secrets.token_urlsafe(48)
        with self._lock:
            self._clients[client_id] = client_secret
            self._refresh_grants[refresh_token] = _RefreshGrant(client_id, email, frozenset(scopes))
        return {
            "type": "authorized_user",
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
            "token_uri": token_uri,
            "universe_domain": "googleapis.com",
        }

    def new_client(self) -> dict:
        """A Desktop-app OAuth client, as the Cloud console downloads its JSON."""
        client_id = f"{secrets.randbelow(10**12):012d}-{secrets.token_hex(16)}.apps.googleusercontent.com"
        client_secret = "GOCSPX-" + secrets.token_urlsafe(21)
        with self._lock:
            self._clients[client_id] = client_secret
        return {"installed": {"client_id": client_id, "client_secret": client_secret,
                              "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": GOOGLE_TOKEN_URI,
                              "redirect_uris": ["http://localhost"]}}

    def refresh_tokens_of(self, identity: str) -> list[str]:
        with self._lock:
            return [token for token, grant in self._refresh_grants.items() if grant.identity == identity]

    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token and the access tokens minted from it, as the user's 'remove access' does."""
        with self._lock:
            self._refresh_grants.pop(refresh_token, None)
            self._access = {t: g for t, g in self._access.items() if g.refresh_token != refresh_token}

    def expire_access_tokens(self) -> None:
        """Make every issued access token stale, so the next API call answers 401."""
        with self._lock:
            self._access.clear()

    # --- what the emulators call ----------------------------------------------------------

    def grant_for(self, access_token: str) -> AccessGrant | None:
        with self._lock:
            grant = self._access.get(access_token)
        if grant is None or grant.expires_at <= self.clock():
            return None
        return grant

    def authorize(self, params: Mapping[str, str]) -> str:
        """The redirect (with `code` or `error`) for one authorization request, consented to at once."""
        with self._lock:
            known = params.get("client_id", "") in self._clients
        if not known:
            raise AuthorizationPageError(401, "invalid_client", "The OAuth client was not found.")
        redirect_uri = params.get("redirect_uri", "")
        target = urllib.parse.urlsplit(redirect_uri)
        if target.scheme != "http" or target.hostname not in _LOOPBACK:
            raise AuthorizationPageError(400, "redirect_uri_mismatch", "You can't sign in to this app because it "
                                         "doesn't comply with Google's OAuth 2.0 policy.")
        scopes = frozenset(_SHORT_SCOPES.get(s, s) for s in params.get("scope", "").split())
        if not scopes:
            raise AuthorizationPageError(400, "invalid_request", "Missing required parameter: scope")
        method = params.get("code_challenge_method", "plain")
        if method not in ("plain", "S256"):
            raise AuthorizationPageError(400, "invalid_request", "Invalid code_challenge_method value.")
        answer = {"state": params["state"]} if "state" in params else {}
        if params.get("response_type") != "code":
            answer |= {"error": "unsupported_response_type"}
        elif self.decline_consent:
            answer |= {"error": "access_denied"}
        else:
            code = "4/0" + secrets.token_urlsafe(48)
            client_id, identity = params["client_id"], self.consenting_user
            prompt = set(params.get("prompt", "").split())
            with self._lock:
                first_consent = (client_id, identity) not in self._consented
                self._consented.add((client_id, identity))
                self._codes[code] = _AuthorizationCode(
                    client_id, redirect_uri, identity, scopes,
                    offline=params.get("access_type") == "offline" and (first_consent or "consent" in prompt),
                    challenge=params.get("code_challenge"), challenge_method=method)
            answer |= {"code": code, "scope": " ".join(sorted(scopes)), "authuser": "0", "prompt": "consent"}
        return f"{redirect_uri}{'&' if target.query else '?'}{urllib.parse.urlencode(answer)}"

    def exchange(self, form: Mapping[str, str], *, token_uri: str) -> dict:
        """Answer one token request; raises TokenError for every refusal."""
        grant_type = form.get("grant_type", "")
        if grant_type == "authorization_code":
            return self._redeem(form)
        if grant_type == JWT_BEARER_GRANT:
            identity, scopes = self._verify_assertion(form.get("assertion", ""), token_uri=token_uri)
            return self._issue(identity, scopes, refresh_token=None)
        if grant_type == "refresh_token":
            grant = self._check_refresh(form)
            requested = frozenset(form.get("scope", "").split()) or grant.scopes
            if not requested <= grant.scopes:
                raise TokenError(400, "invalid_scope", "Some requested scopes were invalid.")
            return self._issue(grant.identity, requested, refresh_token=form["refresh_token"]) | {
                "scope": " ".join(sorted(requested))
            }
        if not grant_type:
            raise TokenError(400, "invalid_request", "Missing required parameter: grant_type")
        raise TokenError(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _issue(self, identity: str, scopes: frozenset[str], *, refresh_token: str | None) -> dict:
        token = "ya29." + secrets.token_urlsafe(48)
        with self._lock:
            self._access[token] = AccessGrant(identity, scopes, self.clock() + ACCESS_TOKEN_LIFETIME, refresh_token)
        return {"access_token": token, "expires_in": ACCESS_TOKEN_LIFETIME, "token_type": "Bearer"}

    def _redeem(self, form: Mapping[str, str]) -> dict:
        self._check_client(form)
        with self._lock:
            code = self._codes.pop(form.get("code", ""), None)  # single use, even when refused below
        if code is None or code.client_id != form["client_id"]:
            raise TokenError(400, "invalid_grant", "Bad Request")
        if form.get("redirect_uri") != code.redirect_uri:
            raise TokenError(400, "redirect_uri_mismatch", "Bad Request")
        verifier = form.get("code_verifier")
        if code.challenge is None and verifier:
            raise TokenError(400, "invalid_grant", "code_verifier or verifier is not needed.")
        if code.challenge is not None:
            if not verifier:
                raise TokenError(400, "invalid_grant", "Missing code verifier.")
            if not secrets.compare_digest(_challenge(verifier, code.challenge_method), code.challenge):
                raise TokenError(400, "invalid_grant", "Invalid code verifier.")
        refresh_token = "1//0" + secrets.token_urlsafe(48) if code.offline else None
        if refresh_token:
            with self._lock:
                self._refresh_grants[refresh_token] = _RefreshGrant(code.client_id, code.identity, code.scopes)
        answer = self._issue(code.identity, code.scopes, refresh_token=refresh_token)
        answer |= {"scope": " ".join(sorted(code.scopes))}
        if refresh_token:
            answer["refresh_token"] = refresh_token
        if "openid" in code.scopes:
            answer["id_token"] = self._id_token(code)
        return answer

    def _id_token(self, code: _AuthorizationCode) -> str:
        with self._lock:
            if self._id_key is None:
                self._id_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key = self._id_key
        now = int(self.clock())
        claims = {"iss": "https://accounts.google.com", "azp": code.client_id, "aud": code.client_id,
                  "sub": str(int(hashlib.sha256(code.identity.encode()).hexdigest()[:15], 16)),
                  "iat": now, "exp": now + ACCESS_TOKEN_LIFETIME + 1}
        if _SHORT_SCOPES["email"] in code.scopes:
            claims |= {"email": code.identity, "email_verified": True}
        signed = ".".join(_b64encode(json.dumps(part).encode()) for part in ({"alg": "RS256", "typ": "JWT"}, claims))
        return f"{signed}.{_b64encode(key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256()))}"

    def _check_client(self, form: Mapping[str, str]) -> None:
        with self._lock:
            secret = self._clients.get(form.get("client_id", ""))
        if secret is None:
            raise TokenError(401, "invalid_client", "The OAuth client was not found.")
        if not secrets.compare_digest(secret, form.get("client_secret", "")):
            raise TokenError(401, "invalid_client", "Unauthorized")

    def _check_refresh(self, form: Mapping[str, str]) -> _RefreshGrant:
        self._check_client(form)
        client_id = form["client_id"]
        with self._lock:
            grant = self._refresh_grants.get(form.get("refresh_token", ""))
        if grant is None or grant.client_id != client_id:
            raise TokenError(400, "invalid_grant", "Token has been expired or revoked.")
        return grant

    def _verify_assertion(self, assertion: str, *, token_uri: str) -> tuple[str, frozenset[str]]:
        try:
            header_part, payload_part, signature_part = assertion.split(".")
            header = json.loads(_b64decode(header_part))
            payload = json.loads(_b64decode(payload_part))
            signature = _b64decode(signature_part)
            if not isinstance(header, dict) or not isinstance(payload, dict):
                raise ValueError("not a JWT")
        except (ValueError, binascii.Error) as exc:
            raise TokenError(400, "invalid_grant", "Invalid JWT: malformed assertion.") from exc
        with self._lock:
            account = self._service_accounts.get(payload.get("iss", ""))
        if account is None:
            raise TokenError(400, "invalid_grant", "Invalid grant: account not found")
        if header.get("alg") != "RS256" or not _signature_holds(account.public_key, assertion, signature):
            raise TokenError(400, "invalid_grant", "Invalid JWT Signature.")
        # google-auth always sends Google's own endpoint as the audience, whatever token_uri says.
        if payload.get("aud") not in (GOOGLE_TOKEN_URI, token_uri):
            raise TokenError(400, "invalid_grant", "Invalid JWT: Failed audience check.")
        now = self.clock()
        iat, exp = payload.get("iat", 0), payload.get("exp", 0)
        if not (iat - _CLOCK_SKEW <= now < exp) or exp - iat > _MAX_ASSERTION_LIFETIME:
            raise TokenError(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                "Check your iat and exp values in the JWT claim.",
            )
        scopes = frozenset(payload.get("scope", "").split())
        if not scopes:
            raise TokenError(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        subject = payload.get("sub")
        if subject and subject != account.email and not account.domain_wide_delegation:
            raise TokenError(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, "
                "or client not authorized for any of the scopes requested.",
            )
        return subject or account.email, scopes


def add_token_endpoint(app: FastAPI, oauth: GoogleOAuth) -> None:
    """Mount `POST /token` and the authorization endpoint `GET /o/oauth2/v2/auth` on an emulator app."""

    @app.get(AUTHORIZE_PATH)
    async def authorize(request: Request) -> Response:
        try:
            return RedirectResponse(oauth.authorize(dict(request.query_params)), status_code=302)
        except AuthorizationPageError as exc:
            page = f"<!doctype html><title>Error {exc.status}: {exc.error}</title><p>{html.escape(exc.description)}"
            return HTMLResponse(page, status_code=exc.status)

    @app.post("/token")
    async def token(request: Request) -> JSONResponse:
        form = {key: str(value) for key, value in (await request.form()).items()}
        try:
            answer = oauth.exchange(form, token_uri=str(request.url))
        except TokenError as exc:
            return JSONResponse({"error": exc.error, "error_description": exc.description}, status_code=exc.status)
        return JSONResponse(answer, headers={"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"})


# --- the API side ---------------------------------------------------------------------------

class GoogleApiError(Exception):
    """An API error answered in Google's JSON shape: `{"error": {"errors": [...], "code", "message"}}`."""

    def __init__(self, status: int, reason: str, message: str, *, domain: str = "global",
                 location: str | None = None, summary: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.domain = status, reason, message, domain
        self.location, self.summary, self.headers = location, summary or message, headers or {}

    def body(self) -> dict:
        item = {"domain": self.domain, "reason": self.reason, "message": self.message}
        if self.location:
            item |= {"locationType": "header" if self.status == 401 else "parameter", "location": self.location}
        error = {"errors": [item], "code": self.status, "message": self.summary}
        if self.status in _STATUS:
            error["status"] = _STATUS[self.status]
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def add_google_api_errors(app: FastAPI) -> None:
    """Answer GoogleApiError, and FastAPI's own parameter validation, in Google's error shape."""

    @app.exception_handler(GoogleApiError)
    async def google_error(request: Request, exc: GoogleApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = ".".join(str(part) for part in exc.errors()[0]["loc"][1:])
        return GoogleApiError(400, "invalid", f"Invalid value for: {where}", location=where).response()


def bearer_identity(oauth: GoogleOAuth, scopes: set[str]) -> Any:
    """A FastAPI dependency: the identity behind `Authorization: Bearer`, holding one of `scopes`."""

    def identity(request: Request) -> str:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        grant = oauth.grant_for(token) if scheme.lower() == "bearer" and token else None
        if grant is None:
            raise _unauthenticated(missing=not token)
        if not grant.scopes & scopes:
            raise GoogleApiError(403, "insufficientPermissions", "Insufficient Permission",
                                 summary="Request had insufficient authentication scopes.")
        return grant.identity

    return Depends(identity)


def _unauthenticated(*, missing: bool) -> GoogleApiError:
    if missing:
        summary = "Request is missing required authentication credential."
        reason, message = "required", "Login Required."
    else:
        summary = "Request had invalid authentication credentials."
        reason, message = "authError", "Invalid Credentials"
    return GoogleApiError(
        401, reason, message, location="Authorization", summary=f"{summary} {_EXPECTED}",
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
    )


def _signature_holds(public_key: rsa.RSAPublicKey, assertion: str, signature: bytes) -> bool:
    signed_part = assertion.rsplit(".", 1)[0].encode()
    try:
        public_key.verify(signature, signed_part, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _challenge(verifier: str, method: str) -> str:
    if method == "plain":
        return verifier
    return _b64encode(hashlib.sha256(verifier.encode("ascii")).digest())


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

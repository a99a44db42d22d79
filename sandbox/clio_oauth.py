"""Clio's OAuth 2.0 server: `/oauth/authorize`, `/oauth/token`, `/oauth/deauthorize`, and bearer checks.

The authorization-code grant only, as Clio offers it. Authorize approves at once (there is
no user to click "Allow") and redirects to `redirect_uri?code=...&state=...`. The token
endpoint exchanges a code (single use, ten minutes) or a refresh token for
`{"token_type": "bearer", "access_token", "expires_in", "refresh_token"}`. Manage access
tokens live 30 days and refresh tokens until revoked (Clio's FAQ); a refresh answers a new
access token and keeps the same refresh token. Deauthorize revokes the grant behind a
token. A missing, unknown, expired or revoked token answers 401 with
`{"error": "invalid_token", "error_description": ...}`.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi.responses import JSONResponse

ACCESS_TOKEN_LIFETIME = 30 * 24 * 3600
CODE_LIFETIME = 600
INVALID_TOKEN = "The access token provided is expired, revoked, malformed or invalid for other reasons."


class OAuthError(Exception):
    """A refusal in the OAuth 2.0 shape: `{"error", "error_description"}`."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status, self.error, self.description = status, error, description

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "error_description": self.description}, status_code=self.status)


@dataclass
class _Grant:
    client_id: str
    user_id: int
    refresh_token: str
    revoked: bool = False


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    user_id: int
    expires_at: float


@dataclass
class _Access:
    grant: _Grant | None
    user_id: int
    expires_at: float


@dataclass
class ClioOAuth:
    """Developer applications, authorization codes, grants and tokens of one Clio region."""

    default_user: Callable[[], int]
    access_token_lifetime: int = ACCESS_TOKEN_LIFETIME
    clock: Callable[[], float] = time.time
    _clients: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    _codes: dict[str, _Code] = field(default_factory=dict)
    _grants: dict[str, _Grant] = field(default_factory=dict)
    _access: dict[str, _Access] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def new_client(self, *, redirect_uris: tuple[str, ...] = ()) -> tuple[str, str]:
        """A developer application's (app key, app secret); redirect URIs restrict authorize, none means any."""
        client_id, secret = secrets.token_urlsafe(30), secrets.token_urlsafe(30)
        with self._lock:
            self._clients[client_id] = (secret, tuple(redirect_uris))
        return client_id, secret

    def issue_token(self, *, user_id: int | None = None) -> str:
        """An access token for a user without going through OAuth (for config-only tests and the demo)."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._access[token] = _Access(None, user_id or self.default_user(),
                                          self.clock() + self.access_token_lifetime)
        return token

    def expire_access_tokens(self) -> None:
        """Make every access token stale, as 30 days passing would."""
        with self._lock:
            for access in self._access.values():
                access.expires_at = 0

    def user_for(self, token: str | None) -> int | None:
        """Whose data a bearer token opens, or None when it is unknown, expired or revoked."""
        with self._lock:
            access = self._access.get(token or "")
            if access is None or access.expires_at <= self.clock() or (access.grant and access.grant.revoked):
                return None
            return access.user_id

    def authorize(self, params: Mapping[str, str]) -> str:
        """The URL the user's browser is sent back to; OAuthError when there is nowhere safe to send it."""
        client_id, redirect_uri = params.get("client_id", ""), params.get("redirect_uri", "")
        with self._lock:
            client = self._clients.get(client_id)
        if client is None:
            raise OAuthError(401, "invalid_client", "Client authentication failed due to unknown client.")
        if not redirect_uri or (client[1] and redirect_uri not in client[1]):
            raise OAuthError(400, "invalid_redirect_uri",
                             "The requested redirect uri is malformed or doesn't match client redirect URI.")
        answer = {"state": params["state"]} if "state" in params else {}
        if params.get("response_type") != "code":
            return _with_query(redirect_uri, {"error": "unsupported_response_type", **answer})
        code = secrets.token_urlsafe(20)
        with self._lock:
            self._codes[code] = _Code(client_id, redirect_uri, self.default_user(), self.clock() + CODE_LIFETIME)
        return _with_query(redirect_uri, {"code": code, **answer})

    def token(self, form: Mapping[str, str]) -> dict:
        client_id = form.get("client_id", "")
        with self._lock:
            client = self._clients.get(client_id)
        if client is None or not secrets.compare_digest(client[0], form.get("client_secret", "")):
            raise OAuthError(401, "invalid_client", "Client authentication failed due to unknown client, no client "
                                                    "authentication included, or unsupported authentication method.")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._redeem(client_id, form)
        if grant_type == "refresh_token":
            with self._lock:
                grant = self._grants.get(form.get("refresh_token", ""))
            if grant is None or grant.revoked or grant.client_id != client_id:
                raise OAuthError(400, "invalid_grant", _INVALID_GRANT)
            return self._issue(grant) | {"refresh_token": grant.refresh_token}
        raise OAuthError(400, "unsupported_grant_type",
                         "The authorization grant type is not supported by the authorization server.")

    def deauthorize(self, token: str | None) -> None:
        with self._lock:
            access = self._access.pop(token or "", None)
            if access is None:
                raise OAuthError(401, "invalid_token", INVALID_TOKEN)
            if access.grant is not None:
                access.grant.revoked = True

    def _redeem(self, client_id: str, form: Mapping[str, str]) -> dict:
        with self._lock:
            code = self._codes.pop(form.get("code", ""), None)
        if code is None or code.client_id != client_id or code.expires_at <= self.clock():
            raise OAuthError(400, "invalid_grant", _INVALID_GRANT)
        if form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError(400, "invalid_grant", _INVALID_GRANT)
        grant = _Grant(client_id, code.user_id, secrets.token_urlsafe(32))
        with self._lock:
            self._grants[grant.refresh_token] = grant
        return self._issue(grant) | {"refresh_token": grant.refresh_token}

    def _issue(self, grant: _Grant) -> dict:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._access[token] = _Access(grant, grant.user_id, self.clock() + self.access_token_lifetime)
        return {"token_type": "bearer", "access_token": token, "expires_in": self.access_token_lifetime}


_INVALID_GRANT = ("The provided authorization grant is invalid, expired, revoked, does not match the redirection URI "
                  "used in the authorization request, or was issued to another client.")


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))

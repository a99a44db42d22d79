"""The authorization-code flow `textback connect` runs, with a redirect listener on loopback.

    1. listen on http://127.0.0.1:<port>/callback (the redirect URI registered with the vendor);
    2. send the person to the authorize URL, carrying a random `state` and, where the vendor
       supports it, a PKCE S256 challenge;
    3. the vendor redirects the browser to the listener with `code` and `state`;
    4. refuse a callback whose state is not ours, exchange the code (with the PKCE verifier),
       and store the tokens encrypted; the tenant's parked jobs go back to pending.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit

from connectors.oauth import OAuthClient
from core import constant_time
from core.store import connections
from core.store.connections import TokenCipher
from core.store.db import Database

CALLBACK_PATH = "/callback"


class ConnectError(Exception):
    """The authorization did not complete: declined, timed out, or a callback that was not ours."""


def pkce_pair() -> tuple[str, str]:
    """A PKCE (RFC 7636) code verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode().rstrip("=")
    return verifier, challenge


@dataclass(frozen=True)
class AuthorizationRequest:
    url: str
    state: str
    redirect_uri: str
    code_verifier: str | None


def authorization_request(client: OAuthClient, *, redirect_uri: str) -> AuthorizationRequest:
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair() if client.provider.pkce else (None, None)
    url = client.authorize_url(redirect_uri=redirect_uri, state=state, code_challenge=challenge)
    return AuthorizationRequest(url, state, redirect_uri, verifier)


class RedirectListener:
    """Receives the vendor's redirect once, on 127.0.0.1 only: `with RedirectListener(port=0) as listener:`."""

    def __init__(self, *, port: int = 0) -> None:
        self._received = threading.Event()
        self._claimed = False
        self._claim_lock = threading.Lock()
        self._params: dict[str, str] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="oauth-redirect", daemon=True)

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{CALLBACK_PATH}"

    def __enter__(self) -> "RedirectListener":
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait(self, *, timeout: float) -> dict[str, str]:
        if not self._received.wait(timeout):
            raise ConnectError(f"no answer from the browser within {timeout:.0f}s; run the command again "
                               "and open the URL it prints")
        return self._params

    def _claim(self) -> bool:
        """Only the first callback counts; a second one (a reload, another tab) finds nothing here."""
        with self._claim_lock:
            first, self._claimed = not self._claimed, True
            return first

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        listener = self

        class Callback(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != CALLBACK_PATH or not listener._claim():
                    self.send_error(404)
                    return
                params = dict(parse_qsl(url.query))
                ok = "code" in params and "error" not in params
                page = ("textback is connected; you can close this window." if ok else
                        "textback was not connected: " + html.escape(params.get("error_description")
                                                                    or params.get("error", "no code was sent")))
                body = f"<!doctype html><title>textback</title><p>{page}</p>".encode()
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                listener._params = params
                listener._received.set()

            def log_message(self, format: str, *args: object) -> None:
                """Silent: the query string carries the authorization code."""

        return Callback


@dataclass(frozen=True)
class Connected:
    tenant_id: str
    role: str
    provider: str
    account_label: str | None
    scopes: list[str]
    expires_at: datetime | None
    unparked: int


def connect(
    *, client: OAuthClient, tenant_id: str, role: str, db: Database, cipher: TokenCipher,
    open_url: Callable[[str], object], port: int = 0, timeout: float = 300.0,
    clock: Callable[[], datetime] | None = None,
) -> Connected:
    """Authorize one tenant's vendor account for `role` and store it; `open_url` shows the person the URL."""
    with RedirectListener(port=port) as listener:
        request = authorization_request(client, redirect_uri=listener.redirect_uri)
        open_url(request.url)
        params = listener.wait(timeout=timeout)
    if not constant_time.equal(params.get("state"), request.state):
        raise ConnectError("the callback's state does not match this authorization (a stale or forged "
                           "redirect); nothing was stored, run the command again")
    if "error" in params or "code" not in params:
        reason = params.get("error_description") or params.get("error") or "no authorization code was sent"
        raise ConnectError(f"{client.provider.name} did not authorize textback: {reason}")
    grant = client.exchange_code(params["code"], redirect_uri=request.redirect_uri, code_verifier=request.code_verifier)
    now = (clock or (lambda: datetime.now(timezone.utc)))()
    with db.transaction() as session:
        unparked = connections.store(
            session, tenant_id=tenant_id, role=role, provider=client.provider.name, tokens=grant.tokens,
            scopes=grant.scopes, account_label=grant.account_label, cipher=cipher, now=now)
    return Connected(tenant_id, role, client.provider.name, grant.account_label, grant.scopes,
                     grant.tokens.expires_at, unparked)

"""An in-memory Clio Manage account (API v4, OAuth, webhooks) and a Clio Grow lead inbox, served by `create_app`.

    clio = ClioSandbox()
    with serve(create_app(clio)) as served:
        token = clio.issue_token()            # or the OAuth code flow against served.url + "/oauth/..."
        httpx.get(served.url + "/api/v4/contacts.json", headers={"Authorization": f"Bearer {token}"})

Resources under `/api/v4/` (with or without the `.json` suffix): contacts, matters,
practice_areas, communications, notes, calendar_entries, calendars, users (and
`users/who_am_i`), webhooks. Bodies are `{"data": {...}}`; answers are `{"data": ...}` with
only the `fields=` asked for (default `id,etag`), single records carry `ETag` and
`Last-Modified` (If-None-Match answers 304, a stale If-Match on PATCH 412), and lists page
as sandbox.clio_index describes. Every authenticated answer carries X-RateLimit-Limit,
-Remaining and -Reset for a fixed 60 s window per token; past `rate_limit` requests the
answer is 429 with Retry-After. `faults` scripts 429/5xx answers, late answers and dropped
connections by path prefix (sandbox.common). The Grow
lead inbox is `POST /inbox_leads`, on the same server for convenience.
"""

from __future__ import annotations

import email.utils
import math
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from sandbox.clio_fields import SCHEMAS, ClioError, Selection, bad_argument, invalid, parse_fields, render
from sandbox.clio_index import index_page
from sandbox.clio_oauth import ACCESS_TOKEN_LIFETIME, INVALID_TOKEN, ClioOAuth, OAuthError
from sandbox.clio_store import ClioStore
from sandbox.clio_webhooks import WebhookDispatcher
from sandbox.common import Faults, inject_faults

API = "/api/v4"
API_VERSION = "4.0.9"
SUPPORTED_VERSIONS = frozenset({"4.0.4", "4.0.5", "4.0.6", "4.0.7", "4.0.8", "4.0.9", "4.0.10"})
WINDOW_SECONDS = 60
WRITABLE = frozenset({"contacts", "matters", "communications", "notes", "calendar_entries", "webhooks"})
GROW_REQUIRED = ("from_first", "from_last", "from_message", "referring_url", "from_source")


class ClioSandbox:
    """One Clio account: its users, calendars, practice areas, records, OAuth apps, webhooks and lead inbox."""

    def __init__(self, *, rate_limit: int = 50, access_token_lifetime: int = ACCESS_TOKEN_LIFETIME,
                 clock: Callable[[], float] = time.time) -> None:
        self.rate_limit = rate_limit
        self.rate_limited = 0  # how many requests the rate limit refused with 429
        self.clock = clock
        self.faults = Faults()
        self.store = ClioStore(on_change=self._changed)
        self.webhooks = WebhookDispatcher(webhooks=lambda: self.store.all("webhooks"), render=self.render,
                                          activate=self.activate_webhook)
        self.user = self.add_user("Sandbox Attorney", email="attorney@example.com")
        self.oauth = ClioOAuth(default_user=lambda: self.user["id"], access_token_lifetime=access_token_lifetime,
                               clock=clock)
        self._windows: dict[str, tuple[float, int]] = {}
        self._inboxes: dict[str, list[dict]] = {}
        self._lock = threading.Lock()

    # --- seeding and inspection ------------------------------------------------------------

    def add_user(self, name: str, *, email: str) -> dict:
        """A firm member and their own calendar (`user["calendar_id"]`)."""
        first, _, last = name.partition(" ")
        user = self.store.insert("users", {"name": name, "first_name": first, "last_name": last, "email": email,
                                           "enabled": True})
        calendar = self.add_calendar(name, type_="UserCalendar")
        return {**user, "calendar_id": calendar["id"]}

    def add_calendar(self, name: str, *, type_: str = "AdhocCalendar", permission: str = "owner") -> dict:
        return self.store.insert("calendars", {"name": name, "type": type_, "permission": permission,
                                               "color": "#0070E0", "visible": True})

    def add_practice_area(self, name: str, *, code: str | None = None, category: str | None = None) -> dict:
        return self.store.insert("practice_areas", {"name": name, "code": code, "category": category})

    def records(self, kind: str) -> list[dict]:
        """Every stored record of a kind in id order, references as ids, for assertions."""
        return [{k: v for k, v in record.items() if k != "_version"} for record in self.store.all(kind)]

    def record(self, kind: str, record_id: Any) -> dict:
        return next(r for r in self.records(kind) if str(r["id"]) == str(record_id))

    def new_client(self, *, redirect_uris: tuple[str, ...] = ()) -> tuple[str, str]:
        """A developer application: (client id, client secret)."""
        return self.oauth.new_client(redirect_uris=redirect_uris)

    def issue_token(self, *, user_id: int | None = None) -> str:
        """An access token without the OAuth dance (config-only tests, the demo)."""
        return self.oauth.issue_token(user_id=user_id)

    def new_grow_inbox(self) -> str:
        """A Clio Grow account's inbox token."""
        token = secrets.token_hex(20)
        with self._lock:
            self._inboxes[token] = []
        return token

    def inbox_leads(self, inbox_token: str) -> list[dict]:
        with self._lock:
            return [dict(lead) for lead in self._inboxes[inbox_token]]

    def deliver_webhooks(self, http: httpx.Client) -> list[httpx.Response]:
        """Send pending webhook handshakes and events over `http`; see sandbox.clio_webhooks."""
        return self.webhooks.deliver(http)

    # --- what the routes use ------------------------------------------------------------------

    def render(self, kind: str, record: dict, selection: Selection) -> dict:
        return render(kind, record, selection, self.store.lookup)

    def admit(self, token: str) -> tuple[dict[str, str], int | None]:
        """Rate-limit headers for this request, and the Retry-After seconds when it is refused."""
        moment = self.clock()
        with self._lock:
            start, count = self._windows.get(token, (moment, 0))
            if moment >= start + WINDOW_SECONDS:
                start, count = moment, 0
            refused = count >= self.rate_limit
            if not refused:
                count += 1
            else:
                self.rate_limited += 1
            self._windows[token] = (start, count)
        headers = {"X-RateLimit-Limit": str(self.rate_limit), "X-RateLimit-Remaining": str(self.rate_limit - count),
                   "X-RateLimit-Reset": str(math.ceil(start + WINDOW_SECONDS))}
        return headers, max(1, math.ceil(start + WINDOW_SECONDS - moment)) if refused else None

    def submit_inbox_lead(self, body: Any) -> dict:
        token = body.get("inbox_lead_token") if isinstance(body, dict) else None
        with self._lock:
            inbox = self._inboxes.get(token or "")
        if inbox is None:
            raise ClioError(401, "Unauthorized", "Invalid inbox_lead_token")
        lead = body.get("inbox_lead")
        if not isinstance(lead, dict) or (missing := [n for n in GROW_REQUIRED if not lead.get(n)]):
            raise invalid(f"inbox_lead needs {', '.join(missing if isinstance(lead, dict) else GROW_REQUIRED)}")
        stored = {"id": secrets.randbelow(10**9), **{k: lead.get(k) for k in (*GROW_REQUIRED, "from_email",
                                                                              "from_phone")}}
        with self._lock:
            inbox.append(stored)
        return stored

    def _changed(self, kind: str, event: str, before: dict | None, after: dict | None) -> None:
        self.webhooks.record_changed(kind, event, before, after)

    def activate_webhook(self, webhook_id: Any, secret: str) -> bool:
        """Enable a webhook whose handshake secret came back; False when it is not that webhook's secret (or gone)."""
        hook = self.store.lookup("webhooks", webhook_id)
        if hook is None or not secrets.compare_digest(hook["shared_secret"], secret):
            return False
        self.store.set_state("webhooks", webhook_id, status="enabled")
        return True


# --- HTTP -------------------------------------------------------------------------------------

def create_app(sandbox: ClioSandbox) -> FastAPI:
    app = FastAPI(title="Clio sandbox")

    # Scripted error answers are taken in the gatekeeper, after authentication and the rate limit.
    inject_faults(app, sandbox.faults)

    @app.exception_handler(ClioError)
    async def clio_error(request: Request, exc: ClioError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(OAuthError)
    async def oauth_error(request: Request, exc: OAuthError) -> JSONResponse:
        return exc.response()

    @app.middleware("http")
    async def gatekeeper(request: Request, call_next: Callable) -> Response:
        path = request.url.path
        if path.endswith(".json"):
            request.scope["path"] = path = path.removesuffix(".json")
        if not path.startswith(API + "/"):
            fault = sandbox.faults.take(path)
            return _fault(fault) if fault else await call_next(request)
        version = request.headers.get("X-API-VERSION")
        if version is not None and version not in SUPPORTED_VERSIONS:
            return ClioError(410, "Gone", f"API version {version!r} is invalid or no longer supported").response()
        token = _bearer(request)
        request.state.user_id = sandbox.oauth.user_for(token)
        if request.state.user_id is None:
            return OAuthError(401, "invalid_token", INVALID_TOKEN).response()
        headers, retry_after = sandbox.admit(token)
        if retry_after is not None:
            return ClioError(429, "RateLimited", f"Rate limit exceeded. Retry in {retry_after} seconds.",
                             headers={**headers, "Retry-After": str(retry_after)}).response()
        fault = sandbox.faults.take(path)
        response = _fault(fault) if fault else await call_next(request)
        response.headers.update(headers)
        if response.status_code < 400:
            response.headers["X-API-VERSION"] = version or API_VERSION
        return response

    @app.get("/oauth/authorize")
    async def authorize(request: Request) -> RedirectResponse:
        return RedirectResponse(sandbox.oauth.authorize(request.query_params), status_code=302)

    @app.post("/oauth/token")
    async def token(request: Request) -> JSONResponse:
        form = {k: str(v) for k, v in (await request.form()).items()}
        return JSONResponse(sandbox.oauth.token(form), headers={"Cache-Control": "no-store"})

    @app.post("/oauth/deauthorize")
    async def deauthorize(request: Request) -> Response:
        sandbox.oauth.deauthorize(_bearer(request) or str((await request.form()).get("token", "")))
        return Response(status_code=200)

    @app.post("/inbox_leads", status_code=201)
    async def inbox_lead(request: Request) -> dict:
        if "application/json" not in request.headers.get("content-type", ""):
            raise ClioError(415, "UnsupportedMediaType", "Content-Type must be application/json")
        return {"inbox_lead": sandbox.submit_inbox_lead(await _json(request))}

    @app.get(API + "/users/who_am_i")
    async def who_am_i(request: Request) -> Response:
        return _single(request, sandbox, "users", sandbox.store.get("users", request.state.user_id))

    @app.put(API + "/webhooks/{webhook_id}/activate", status_code=204)
    async def activate(webhook_id: str, request: Request) -> Response:
        sandbox.store.get("webhooks", webhook_id)
        if not sandbox.activate_webhook(webhook_id, request.headers.get("X-Hook-Secret", "")):
            raise invalid("X-Hook-Secret does not match the webhook's shared secret")
        return Response(status_code=204)

    @app.get(API + "/{resource}")
    async def index(resource: str, request: Request) -> dict:
        kind = _kind(resource)
        selection = parse_fields(kind, request.query_params.get("fields"))
        return index_page(kind, sandbox.store.all(kind), request.query_params,
                          render=lambda record: sandbox.render(kind, record, selection),
                          link=lambda params: str(_without_paging(request).include_query_params(**params)))

    @app.post(API + "/{resource}", status_code=201)
    async def create(resource: str, request: Request) -> Response:
        kind = _kind(resource, write=True)
        selection = parse_fields(kind, request.query_params.get("fields"))
        record = sandbox.store.create(kind, (await _json(request)).get("data"))
        return _single(request, sandbox, kind, record, selection=selection, status=201)

    @app.get(API + "/{resource}/{record_id}")
    async def show(resource: str, record_id: str, request: Request) -> Response:
        kind = _kind(resource)
        return _single(request, sandbox, kind, sandbox.store.get(kind, record_id))

    @app.patch(API + "/{resource}/{record_id}")
    async def update(resource: str, record_id: str, request: Request) -> Response:
        kind = _kind(resource, write=True)
        selection = parse_fields(kind, request.query_params.get("fields"))
        record = sandbox.store.update(kind, record_id, (await _json(request)).get("data"),
                                      if_match=request.headers.get("If-Match"))
        return _single(request, sandbox, kind, record, selection=selection)

    @app.delete(API + "/{resource}/{record_id}", status_code=204)
    async def destroy(resource: str, record_id: str) -> Response:
        sandbox.store.delete(_kind(resource, write=True), record_id)
        return Response(status_code=204)

    return app


def _single(request: Request, sandbox: ClioSandbox, kind: str, record: dict, *, selection: Selection | None = None,
            status: int = 200) -> Response:
    headers = {"ETag": record["etag"], "Last-Modified": email.utils.format_datetime(record["updated_at"], usegmt=True)}
    if status == 200 and request.method == "GET" and request.headers.get("If-None-Match") == record["etag"]:
        return Response(status_code=304, headers=headers)
    chosen = selection or parse_fields(kind, request.query_params.get("fields"))
    return JSONResponse({"data": sandbox.render(kind, record, chosen)}, status_code=status, headers=headers)


def _kind(resource: str, *, write: bool = False) -> str:
    if resource not in SCHEMAS or (write and resource not in WRITABLE):
        raise ClioError(404, "NotFound", f"No route matches /api/v4/{resource}")
    return resource


def _without_paging(request: Request):
    return request.url.remove_query_params(["page_token", "offset"])


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise bad_argument("The request body must be JSON") from None
    if not isinstance(body, dict):
        raise bad_argument("The request body must be a JSON object")
    return body


def _fault(fault: dict) -> JSONResponse:
    status = fault["status"]
    headers = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
    if status == 429:
        return ClioError(429, "RateLimited", "Rate limit exceeded.", headers=headers).response()
    return ClioError(status, "InternalServerError", "We're sorry, but something went wrong.",
                     headers=headers).response()

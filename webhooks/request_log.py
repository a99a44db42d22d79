"""Every request timed for /metrics and logged as one line with its request id (echoed as X-Request-Id);
a URL with a NUL in its path or query refused with 400 (none of ours has one, and PostgreSQL cannot look
one up).

Plain ASGI middleware: Starlette's `@app.middleware("http")` runs each request through an extra task and
memory stream per middleware, which cost the webhooks about a millisecond of CPU apiece under load.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync import logs, metrics

access = logging.getLogger("textback.access")


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = _request_id(scope)
        token = logs.request_id.set(rid)
        status = 500  # what the server answers when the app raises

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-Id", rid)
            await send(message)

        try:
            if "\x00" in scope["path"] or b"%00" in scope["query_string"].lower():
                await JSONResponse({"detail": "the URL contains a NUL character (%00)"},
                                   status_code=400)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            _log(scope, status, time.perf_counter() - started)
            logs.request_id.reset(token)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            incoming = value.decode("latin-1")
            if incoming.isascii() and 0 < len(incoming) <= 64:
                return incoming
            break
    return uuid.uuid4().hex


def _log(scope: Scope, status: int, seconds: float) -> None:
    route = getattr(scope.get("route"), "path", "unmatched")
    method = scope["method"]
    metrics.WEBHOOK_SECONDS.labels(route, method, str(status)).observe(seconds)
    state = scope.get("state") or {}
    tenant_token = logs.tenant.set(state.get("tenant_id"))
    sid_token = logs.call_sid.set(state.get("call_sid"))
    try:
        access.info("%s %s %s", method, route, status,
                    extra={"route": route, "method": method, "status": status, "ms": round(seconds * 1000, 1)})
    finally:
        logs.tenant.reset(tenant_token)
        logs.call_sid.reset(sid_token)

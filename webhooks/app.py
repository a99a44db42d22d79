"""The FastAPI application: Twilio webhooks, the API, health, readiness and /metrics.

Outages answer as the delivery contract says (README "How it works"): with the job queue down a
webhook still answers (its rows are committed; the relay sends them later); with the database down
it answers 503 with Retry-After, so Twilio and API clients retry, never 200 with nothing stored.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError, TimeoutError as PoolTimeout

from core.storable import storable_tree
from sync import metrics
from sync.runtime import Runtime
from webhooks import admin, api_routes, sync_routes, twilio_routes
from webhooks.request_log import RequestLog
from webhooks.signature_log import SignatureFailures

log = logging.getLogger(__name__)

DATABASE_RETRY_AFTER = "5"


def create_app(runtime: Runtime, *, broker_ping=None) -> FastAPI:
    """`broker_ping()` raises when the job queue is unreachable (readiness); None: no broker to check."""
    app = FastAPI(title="textback", version="0.1.0")
    app.state.runtime = runtime
    app.state.signature_failures = SignatureFailures()  # rejected signatures, logged with their URL
    app.include_router(twilio_routes.router)
    app.include_router(api_routes.router)
    app.include_router(sync_routes.router)
    app.include_router(admin.router)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own 422, with the input it echoes made encodable: a lone surrogate in a JSON body would
        make the default handler's response a UnicodeEncodeError (a 500)."""
        return JSONResponse({"detail": storable_tree(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(admin.routes.SignInRequired)
    async def sign_in_first(request: Request, exc: Exception) -> Response:
        return RedirectResponse("/admin/login", status_code=303)

    app.add_middleware(RequestLog)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics(request: Request) -> Response:
        """Prometheus text format; the outbox depth is read from the database now."""
        body, content_type = metrics.scrape(request.app.state.runtime.db)
        return Response(body, media_type=content_type)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return _database_down(request, exc)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated or isinstance(exc, OperationalError):
            return _database_down(request, exc)
        raise exc

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """The process is alive (no dependency checked: a load balancer must not restart us for Redis)."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    def readyz(request: Request) -> JSONResponse:
        """The database and the job queue answer; 503 with what is down otherwise."""
        checks: dict[str, str] = {}
        try:
            with request.app.state.runtime.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # readiness must answer, not raise
            checks["database"] = type(exc).__name__
        if broker_ping is not None:
            try:
                broker_ping()
                checks["broker"] = "ok"
            except Exception as exc:
                checks["broker"] = type(exc).__name__
        ready = all(v == "ok" for v in checks.values())
        body = {"status": "ok" if ready else "unavailable", **checks,
                "tenants": len(request.app.state.runtime.tenants.tenants)}
        return JSONResponse(body, status_code=200 if ready else 503)

    return app


def _database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unreachable while serving %s %s: %s", request.method, request.url.path,
                type(exc).__name__)
    return JSONResponse({"detail": "the database is unavailable; retry shortly"}, status_code=503,
                        headers={"Retry-After": DATABASE_RETRY_AFTER})

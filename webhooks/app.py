"""The FastAPI application: Twilio webhooks, the API, health and readiness.

Outages answer as the delivery contract says (README "How it works"): with the job queue down a
webhook still answers (its rows are committed; the relay sends them later); with the database down
it answers 503 with Retry-After, so Twilio and API clients retry, never 200 with nothing stored.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError, TimeoutError as PoolTimeout

from sync.runtime import Runtime
from webhooks import api_routes, sync_routes, twilio_routes

log = logging.getLogger(__name__)

DATABASE_RETRY_AFTER = "5"


def create_app(runtime: Runtime, *, broker_ping=None) -> FastAPI:
    """`broker_ping()` raises when the job queue is unreachable (readiness); None: no broker to check."""
    app = FastAPI(title="textback", version="0.1.0")
    app.state.runtime = runtime
    app.include_router(twilio_routes.router)
    app.include_router(api_routes.router)
    app.include_router(sync_routes.router)

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

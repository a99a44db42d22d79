"""The FastAPI application: Twilio webhooks and health."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from sync.runtime import Runtime
from webhooks import api_routes, twilio_routes


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="textback", version="0.1.0")
    app.state.runtime = runtime
    app.include_router(twilio_routes.router)
    app.include_router(api_routes.router)

    @app.get("/healthz")
    def healthz(request: Request) -> JSONResponse:
        try:
            with request.app.state.runtime.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # health must answer, not raise
            return JSONResponse({"status": "error", "database": str(exc.__class__.__name__)}, status_code=503)
        return JSONResponse({"status": "ok", "tenants": len(request.app.state.runtime.tenants.tenants)})

    return app

"""`textback serve` and `textback worker`: the two long-running processes of a deployment."""

from __future__ import annotations

import logging
from typing import Optional

import typer

from core import redact
from core.config import Settings
from webhooks.cli_errors import EXIT_USAGE, CommandFailed, broker_unreachable

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _configure_logging() -> None:
    """JSON lines by default (TEXTBACK_LOG_FORMAT=text for the human format), numbers and secrets masked;
    chatty libraries (alembic's set-up lines, httpx URLs with account ids) kept at WARNING (sync/logs.py)."""
    from sync.logs import configure_logging

    configure_logging()


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(worker)


def serve(host: str = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0: every interface)"),
          port: int = typer.Option(8000, help="port to listen on"),
          workers: int = typer.Option(1, min=1, help="web processes sharing the port (one per CPU core the web "
                                                     "may use; see the README's production section)")) -> None:
    """Run the web app (Twilio webhooks); pair it with `textback worker`. Prints the URLs to give Twilio."""
    import uvicorn

    _configure_logging()
    runtime = runtime_for(Settings())
    require_schema(runtime)  # refused here, once, before any process starts
    for line in webhook_urls(runtime, listening=f"http://{host}:{port}"):
        typer.echo(line)
    options = dict(host=host, port=port, proxy_headers=True, log_config=None,
                   access_log=False)  # our JSON lines (sync/logs.py) carry the access log
    if workers == 1:
        uvicorn.run(serving_app(runtime), **options)
        return
    runtime.close()
    runtime.db.dispose()
    # Each process builds its own runtime (database pool, broker connection, connectors) in the factory.
    uvicorn.run("webhooks.cli_serve:serving_app", factory=True, workers=workers, **options)


def serving_app(runtime=None):
    """The web app of one `serve` process, on the broker of TEXTBACK_REDIS_URL; with `--workers`, uvicorn
    calls this in every process it starts."""
    from contextlib import asynccontextmanager

    from sync import actors
    from sync.broker import make_broker, ping_for
    from webhooks.app import create_app

    if runtime is None:
        _configure_logging()
        runtime = runtime_for(Settings())
    broker = make_broker(runtime.settings.redis_url)
    actors.bind(broker)
    runtime.dispatcher = actors.DramatiqDispatcher(runtime, mark_every=actors.MARK_EVERY)
    app = create_app(runtime, broker_ping=ping_for(broker))
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app):
        runtime.warm(("sms",))  # every webhook's signature check asks the tenant's SMS connector for its secret
        async with inner(app) as state:
            yield state
        runtime.dispatcher.close()  # writes the last batch of "enqueued" notes

    app.router.lifespan_context = lifespan
    return app


def worker(threads: int = typer.Option(8, help="worker threads in this process"),
           relay_interval: Optional[float] = typer.Option(
               None, help="seconds between outbox relay passes (default TEXTBACK_RELAY_INTERVAL, 5)")) -> None:
    """Run a Dramatiq worker for the outbox against TEXTBACK_REDIS_URL, plus the outbox relay."""
    from sync.broker import make_broker, ping_for
    from sync.worker import run_worker

    _configure_logging()
    settings = Settings()
    ping = ping_for(make_broker(settings.redis_url))
    if ping is not None:
        try:
            ping()
        except Exception as exc:  # the broker's own error types differ (redis, pika)
            raise broker_unreachable(exc, settings.redis_url) from exc

    def make_runtime():
        runtime = runtime_for(settings)
        require_schema(runtime)
        return runtime

    run_worker(make_runtime, settings.redis_url, threads=threads,
               relay_interval=relay_interval if relay_interval is not None else settings.relay_interval,
               echo=typer.echo)


def webhook_urls(runtime, *, listening: str) -> list[str]:
    """What to paste into the Twilio console, per tenant number: signatures are checked against these."""
    public = runtime.settings.public_url
    lines = [f"textback listening on {listening}; public URL (TEXTBACK_PUBLIC_URL) {public}"]
    if public.startswith("http://127.0.0.1") or public.startswith("http://localhost"):
        lines.append("  note: Twilio cannot reach a loopback URL; set TEXTBACK_PUBLIC_URL to the https URL "
                     "your proxy or tunnel serves")
    for tenant in runtime.tenants:
        for number in tenant.phone_numbers:
            lines.append(f"  {number} ({tenant.id}): voice webhook POST {public}/twilio/voice, "
                         f"messaging webhook POST {public}/twilio/sms")
    lines.append(f"  status callbacks go to {public}/twilio/sms/status (set by textback on each message)")
    return lines


def runtime_for(settings: Settings, **kwargs):
    from sync.runtime import Runtime

    runtime = Runtime.from_settings(settings, **kwargs)
    _require_token_key(runtime)
    return runtime


def _require_token_key(runtime) -> None:
    """Fail at start, not inside a job, when OAuth connections exist but their tokens cannot be decrypted."""
    from connectors.oauth import uses_oauth
    from core.store.connections import SecretKeyError, TokenCipher

    if any(uses_oauth(config) for tenant in runtime.tenants for config in tenant.connectors.values()):
        try:
            TokenCipher.from_secret(runtime.settings.secret_keys)
        except SecretKeyError as exc:
            raise CommandFailed(str(exc), exit_code=EXIT_USAGE) from exc


def require_schema(runtime) -> None:
    from core.store.migrate import pending

    if pending(runtime.db.engine):
        raise CommandFailed(f"the database at {redact.mask_url(runtime.settings.database_url)} is not at the newest "
                            "schema; run `textback db upgrade` first", exit_code=EXIT_USAGE)

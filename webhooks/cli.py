"""The `textback` command."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from core.config import ConfigError, Settings, load_tenants
from core.templates import segments
from webhooks import cli_connect, cli_import

app = typer.Typer(help="textback: missed-call text-back, qualification and booking.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
config_app = typer.Typer(help="The tenants file.", no_args_is_help=True)
outbox_app = typer.Typer(help="Durable jobs: inspect and replay.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(outbox_app, name="outbox")
cli_connect.register(app)  # `connect`, `connectors list | rotate-keys | new-key`
cli_import.register(app)  # `import TENANT FILE`


def _runtime(settings: Settings, **kwargs):
    from connectors.registry import validate_connector  # noqa: F401  (connectors load via entry points)
    from sync.runtime import Runtime

    try:
        runtime = Runtime.from_settings(settings, **kwargs)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
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
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from exc


def _require_schema(runtime) -> None:
    from core.store.migrate import pending

    if pending(runtime.db.engine):
        typer.echo(f"the database at {runtime.settings.database_url} is not at the newest schema; "
                   "run `textback db upgrade` first", err=True)
        raise typer.Exit(2)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest revision (run before serve/worker; safe to repeat)."""
    from core.store.db import Database
    from core.store.migrate import upgrade

    settings = Settings()
    upgrade(Database(settings.database_url).engine)
    typer.echo(f"database at {settings.database_url} is at the newest schema")


@config_app.command("check")
def config_check(path: Optional[Path] = typer.Argument(None, help="tenants YAML (default: TEXTBACK_CONFIG)")) -> None:
    """Validate a tenants file and print what is enabled per tenant."""
    from connectors.registry import validate_connector

    path = path or Settings().config
    try:
        tenants = load_tenants(path, validate_connector=validate_connector)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        typer.echo(f"{len(exc.problems)} problem(s) in {path}", err=True)
        raise typer.Exit(1) from exc
    for tenant in tenants:
        typer.echo(f"{tenant.id}: {tenant.name} ({tenant.vertical.value}, {tenant.timezone})")
        typer.echo(f"  numbers: {', '.join(tenant.phone_numbers)}; missed calls: {tenant.missed_call.mode}"
                   + (f", ringing {', '.join(tenant.forward_to)} for {tenant.missed_call.ring_seconds}s"
                      if tenant.missed_call.mode == "dial" else ""))
        for role in ("sms", "crm", "calendar"):
            config = tenant.connectors.get(role)
            typer.echo(f"  {role:<9}{config.type + ' at ' + (config.base_url or 'default URL') if config else 'not enabled'}")
        for situation, text in sample_messages(tenant).items():
            encoding, count = segments(text)
            typer.echo(f"  template {situation:<21} {count} segment(s), {encoding}, {len(text)} chars")
    typer.echo(f"{path}: OK, {len(tenants.tenants)} tenant(s)")


def sample_messages(tenant) -> dict[str, str]:
    """Each template rendered with realistic values, to count SMS segments."""
    from core.engine.conversation import opening
    from core.templates import SITUATIONS

    _, question = opening(tenant.conversation_playbook())
    samples = {"business": tenant.name, "question": question, "opens": "tomorrow at 9:00 AM",
               "slot": "Tue Dec 1, 10:00 AM", "timezone": tenant.timezone, "first_name": "",
               "location": f" Location: {tenant.booking.location}." if tenant.booking.location else "",
               "contact": tenant.contact or tenant.phone_numbers[0], "caller": "+15550100000",
               "summary": "Family law, court date this week.", "conversation_id": "1234", "appointment_note": ""}
    return {s: tenant.templates.render(s, **samples) for s in SITUATIONS}


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the web app (Twilio webhooks); pair it with `textback worker`."""
    import uvicorn

    from sync import actors
    from sync.broker import make_broker, ping_for
    from webhooks.app import create_app

    settings = Settings()
    broker = make_broker(settings.redis_url)
    actors.bind(broker)
    runtime = _runtime(settings)
    runtime.dispatcher = actors.DramatiqDispatcher(runtime)
    _require_schema(runtime)
    uvicorn.run(create_app(runtime, broker_ping=ping_for(broker)), host=host, port=port, proxy_headers=True)


@app.command()
def worker(threads: int = typer.Option(8, help="worker threads in this process"),
           relay_interval: Optional[float] = typer.Option(
               None, help="seconds between outbox relay passes (default TEXTBACK_RELAY_INTERVAL, 5)")) -> None:
    """Run a Dramatiq worker for the outbox against TEXTBACK_REDIS_URL, plus the outbox relay."""
    from sync.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()

    def make_runtime():
        runtime = _runtime(settings)
        _require_schema(runtime)
        return runtime

    run_worker(make_runtime, settings.redis_url, threads=threads,
               relay_interval=relay_interval if relay_interval is not None else settings.relay_interval,
               echo=typer.echo)


def _statuses(values: list[str]) -> tuple:
    from core.jobs import OutboxStatus

    known = [status.value for status in OutboxStatus]
    bad = [value for value in values if value not in known]
    if bad:
        raise typer.BadParameter(f"{', '.join(bad)} is not a status; use one of {', '.join(known)}",
                                 param_hint="--status")
    return tuple(OutboxStatus(value) for value in values)


@outbox_app.command("list")
def outbox_list(
    status: list[str] = typer.Option(["failed", "dead", "parked"], "--status", "-s",
                                     help="pending | done | failed | dead | parked (repeatable)"),
    tenant: Optional[str] = typer.Option(None, "--tenant", "-t", help="only this tenant's rows"),
    kind: Optional[str] = typer.Option(None, "--kind", "-k", help="only this job kind, e.g. send_sms"),
    limit: int = typer.Option(100, "--limit", "-n", min=1, help="show at most this many (oldest first)"),
) -> None:
    """List outbox rows: failed, dead and parked by default, with tenant, kind, age, attempts and error."""
    from core.store.db import Database
    from core.store.outbox_admin import RowFilter, human_age, list_rows

    settings = Settings()
    db = Database(settings.database_url)
    with db.transaction() as session:
        views, total = list_rows(session, RowFilter(statuses=_statuses(status), tenant_id=tenant, kind=kind),
                                 now=db.clock(), limit=limit)
    if views:
        typer.echo(f"{'id':>6}  {'tenant':<20} {'kind':<22} {'status':<8} {'age':>5} {'tries':>5}  error")
    for view in views:
        error = " ".join(view.error.split())
        typer.echo(f"{view.id:>6}  {view.tenant_id:<20} {view.kind:<22} {view.status:<8} "
                   f"{human_age(view.age):>5} {view.attempts:>5}  {error[:160]}")
    shown = f" (showing the oldest {len(views)})" if total > len(views) else ""
    typer.echo(f"{total} {'/'.join(status)} row(s){shown}")


@outbox_app.command("replay")
def outbox_replay(
    row_id: list[int] = typer.Option([], "--id", help="replay this row (repeatable)"),
    status: list[str] = typer.Option(["dead"], "--status", "-s", help="failed | dead | parked (repeatable)"),
    tenant: Optional[str] = typer.Option(None, "--tenant", "-t", help="only this tenant's rows"),
    kind: Optional[str] = typer.Option(None, "--kind", "-k", help="only this job kind"),
    every: bool = typer.Option(False, "--all", help="replay every matching row of every tenant"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print what would be replayed, change nothing"),
) -> None:
    """Put failed/dead/parked rows back to pending; the next relay pass (within seconds) enqueues them."""
    from core.store.db import Database
    from core.store.outbox_admin import REPLAYABLE, RowFilter, replay

    statuses = _statuses(status)
    if not set(statuses) <= REPLAYABLE:
        raise typer.BadParameter("only failed, dead or parked rows can be replayed", param_hint="--status")
    if not (row_id or tenant or every):
        raise typer.BadParameter("say which rows: --id N, --tenant T, or --all (try --dry-run first)")
    db = Database(Settings().database_url)
    with db.transaction() as session:
        ids = replay(session, RowFilter(statuses=statuses, tenant_id=tenant, kind=kind, ids=tuple(row_id)),
                     dry_run=dry_run)
    listed = ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")
    verb = "would be set" if dry_run else "set"
    typer.echo(f"{len(ids)} row(s) {verb} back to pending{': ' + listed if ids else ''}")


@app.command("apikey")
def apikey(tenant_id: str = typer.Argument(..., help="the tenant the key is for")) -> None:
    """Make an API key for POST /api/v1/missed-calls; prints the key once and the hash for the tenants file."""
    import secrets

    from webhooks.api_routes import hash_key

    key = "tbk_" + secrets.token_urlsafe(32)
    typer.echo(f"API key for {tenant_id} (shown once; give it to the phone system): {key}")
    typer.echo(f"add to tenant {tenant_id} in the tenants file:  api_key_sha256: {hash_key(key)}")


@app.command()
def sandbox(host: str = "127.0.0.1", port: int = typer.Option(8900, help="first port; vendors take consecutive ones")) -> None:
    """Serve the vendor emulators (Twilio, HubSpot, Google Calendar) standalone until Ctrl-C."""
    from sandbox.stack import SandboxStack

    with SandboxStack.start(first_port=port) as stack:
        for line in stack.describe():
            typer.echo(line)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()


@app.command()
def demo(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Play a missed call end to end against the sandbox and print the story (exit 0 only if it booked)."""
    from webhooks.demo import run_demo

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    sys.exit(run_demo(echo=typer.echo))


if __name__ == "__main__":
    app()

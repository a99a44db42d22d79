"""`textback config check [PATH] [--online]`: the tenants file, every problem at once, and what each tenant has.

Offline it validates the file (core/tenants_file.py). `--online` then builds each tenant's connectors
and asks each vendor, through the real connector, whether the credentials work and every configured
calendar or mailbox exists (connectors/checks.py): what fails later in a job fails here instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from core.config import ConfigError, Settings, load_tenants
from core.templates import segments
from webhooks.cli_errors import EXIT_PROBLEMS

config_app = typer.Typer(help="The tenants file.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


@config_app.command("check")
def config_check(
    path: Optional[Path] = typer.Argument(None, metavar="PATH", help="tenants YAML (default: TEXTBACK_CONFIG)"),
    online: bool = typer.Option(False, "--online", help="also check credentials and calendars with each vendor"),
) -> None:
    """Validate a tenants file and print what is enabled per tenant (exit 1 if anything is wrong)."""
    from connectors.registry import validate_connector

    path = path or Settings().config
    try:
        tenants = load_tenants(path, validate_connector=validate_connector)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(problem.with_excerpt(), err=True)
        typer.echo(f"{len(exc.problems)} problem(s) in {path}", err=True)
        raise typer.Exit(EXIT_PROBLEMS) from exc
    for tenant in tenants:
        _describe(tenant)
    if online and not _online(tenants):
        raise typer.Exit(EXIT_PROBLEMS)
    typer.echo(f"{path}: OK, {len(tenants.tenants)} tenant(s)" + (", every connector answered" if online else ""))


def _describe(tenant) -> None:
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


def _online(tenants) -> bool:
    from connectors.checks import check_tenant
    from core.store.db import Database
    from sync.runtime import Runtime

    settings = Settings()
    runtime = Runtime(settings=settings, tenants=tenants, db=Database(settings.database_url))  # OAuth tokens
    ok = True
    try:
        for tenant in tenants:
            for result in check_tenant(runtime, tenant):
                ok = ok and result.ok
                typer.echo(f"{tenant.id} {result.role}: {'ok' if result.ok else 'FAILED'} — {result.detail}",
                           err=not result.ok)
    finally:
        runtime.close()
    return ok


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

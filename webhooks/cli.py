"""The `textback` command: the app, its global options, and the small commands.

Argument names are the same everywhere: a tenant is the `TENANT` argument when the command is about
one tenant (`apikey TENANT`, `connect TENANT ROLE`) and `--tenant/-t TENANT` when it filters; a
path is an argument; every command takes `-h`. Exit codes are listed in webhooks/cli_errors.py.
Each topic's commands live in their own module with a `register(app)`; this file adds one line each.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as installed_version
from typing import Optional

import typer

from core import redact
from core.config import Settings
from webhooks import cli_admin, cli_config, cli_connect, cli_import, cli_outbox, cli_report, cli_sandbox, cli_serve, cli_sync
from webhooks.cli_errors import EXIT_USAGE, CommandFailed, FriendlyGroup

app = typer.Typer(cls=FriendlyGroup, help="textback: missed-call text-back, qualification and booking.",
                  no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]},
                  pretty_exceptions_show_locals=False)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")
cli_config.register(app)    # `config check [--online]`
cli_outbox.register(app)    # `outbox list | replay`
cli_serve.register(app)     # `serve`, `worker`
cli_sandbox.register(app)   # `sandbox`, `simulate call | sms`, `demo`
cli_connect.register(app)   # `connect`, `connectors list | rotate-keys | new-key`
cli_report.register(app)    # `report`
cli_admin.register(app)     # `admin add-user`
cli_sync.register(app)      # `sync status`
cli_import.register(app)    # `import TENANT FILE`


def package_version() -> str:
    try:
        return installed_version("textback")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"textback {package_version()}")
        raise typer.Exit()


@app.callback()
def main(_version: Optional[bool] = typer.Option(None, "--version", "-V", callback=_show_version, is_eager=True,
                                                 help="print the version and exit")) -> None:
    """textback: missed-call text-back, qualification and booking."""
    redact.install()  # every log line of every command is redacted from here on


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest revision (run before serve/worker; safe to repeat)."""
    from core.store.db import Database
    from core.store.migrate import upgrade

    settings = Settings()
    upgrade(Database(settings.database_url).engine)
    typer.echo(f"database at {redact.mask_url(settings.database_url)} is at the newest schema")


@app.command("apikey")
def apikey(tenant_id: str = typer.Argument(..., metavar="TENANT", help="tenant id from the tenants file")) -> None:
    """Make an API key for POST /api/v1/missed-calls; prints the key once and the hash for the tenants file."""
    import secrets

    from core.config import load_tenants
    from webhooks.api_routes import hash_key

    settings = Settings()
    tenants = load_tenants(settings.config)
    if tenants.get(tenant_id) is None:
        known = ", ".join(t.id for t in tenants) or "none"
        raise CommandFailed(f"no tenant {tenant_id!r} in {settings.config}; its tenants are: {known}",
                            exit_code=EXIT_USAGE)
    key = "tbk_" + secrets.token_urlsafe(32)
    typer.echo(f"API key for {tenant_id} (shown once; give it to the phone system): {key}")
    typer.echo(f"add to tenant {tenant_id} in the tenants file:  api_key_sha256: {hash_key(key)}")


if __name__ == "__main__":
    app()

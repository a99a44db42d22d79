"""`textback connect` and `textback connectors ...`: authorize vendor accounts, see their state, rotate keys.

Reconnecting a connection that needed re-authorization sets the tenant's parked jobs back
to pending; the worker's relay runs them on its next pass, so nothing is dropped.
"""

from __future__ import annotations

import webbrowser
from datetime import datetime
from typing import NoReturn

import typer

from core.config import ConfigError, Settings, TenantDirectory, load_tenants
from core.store import connections
from core.store.connections import SecretKeyError, TokenCipher
from core.store.db import Database

ROLES = ("sms", "crm", "calendar")
DEFAULT_PORT = 8765  # Clio matches redirect URIs exactly: register http://127.0.0.1:8765/callback

connectors_app = typer.Typer(help="Vendor accounts per tenant: how each is authorized and whether it works.",
                             no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("connect")(connect)
    app.add_typer(connectors_app, name="connectors")


def connect(
    tenant_id: str = typer.Argument(..., metavar="TENANT", help="tenant id from the tenants file"),
    role: str = typer.Argument(..., metavar="ROLE", help="crm | calendar"),
    port: int = typer.Option(DEFAULT_PORT, help="loopback port of the redirect listener (0: any free port; "
                             "the vendor app must allow http://127.0.0.1:<port>/callback)"),
    no_browser: bool = typer.Option(False, "--no-browser", help="only print the URL (open it anywhere that "
                                    "can reach this machine's 127.0.0.1, e.g. through an SSH tunnel)"),
    timeout: float = typer.Option(300.0, help="seconds to wait for the browser"),
) -> None:
    """Authorize a tenant's Clio, Google or Microsoft account (OAuth) and store its tokens encrypted."""
    from connectors.base import ConnectorError
    from connectors.oauth import PROVIDERS, OAuthClient, uses_oauth
    from connectors.oauth_flow import ConnectError
    from connectors.oauth_flow import connect as run_flow

    settings = Settings()
    tenant = _tenants(settings).get(tenant_id)
    if tenant is None:
        _fail(f"no tenant {tenant_id!r} in {settings.config}")
    config = tenant.connectors.get(role)
    if config is None:
        _fail(f"tenant {tenant_id} has no {role} connector; add connectors.{role} to {settings.config}")
    if not uses_oauth(config):
        how = ("give it an `oauth:` block (client_id, client_secret) to authorize an account instead"
               if config.type in PROVIDERS else "it authorizes with the credentials in the tenants file only")
        _fail(f"{tenant_id} {role} is {config.type} with credentials in the tenants file; nothing to connect: {how}")
    cipher = _cipher(settings)
    db = _database(settings)

    def open_url(url: str) -> None:
        typer.echo(f"Open this URL in a browser signed in to the account to connect:\n\n  {url}\n")
        if not no_browser:
            webbrowser.open(url)
        typer.echo(f"waiting up to {timeout:.0f}s for the authorization ...")

    try:
        connected = run_flow(client=OAuthClient.for_config(config), tenant_id=tenant_id, role=role, db=db,
                             cipher=cipher, open_url=open_url, port=port, timeout=timeout)
    except OSError as exc:
        _fail(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); pass another --port the vendor app allows")
    except (ConnectError, ConnectorError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"connected {tenant_id} {role} to {connected.provider}"
               + (f" as {connected.account_label}" if connected.account_label else "")
               + (f"; access token valid until {_when(connected.expires_at)}" if connected.expires_at else ""))
    if connected.unparked:
        typer.echo(f"{connected.unparked} parked job(s) set back to pending; the worker's relay runs them next")


@connectors_app.command("list")
def connectors_list() -> None:
    """Per tenant and role: connector type, how it is authorized, and whether it needs re-authorization."""
    from connectors.oauth import uses_oauth

    settings = Settings()
    tenants = _tenants(settings)
    db = _database(settings)
    with db.transaction() as session:
        stored = {(c.tenant_id, c.role): c for c in connections.everything(session)}
    typer.echo(f"{'TENANT':<20} {'ROLE':<9} {'TYPE':<9} {'AUTH':<12} {'STATUS':<14} {'EXPIRES':<21} ACCOUNT")
    for tenant in tenants:
        for role, config in sorted(tenant.connectors.items(), key=lambda item: ROLES.index(item[0])):
            row = stored.pop((tenant.id, role), None)
            if not uses_oauth(config):
                _line(tenant.id, role, config.type, "config-only", "-", None, None)
            elif row is None:
                _line(tenant.id, role, config.type, "oauth", "not connected", None, None)
                typer.echo(f"{'':<20} run `textback connect {tenant.id} {role}`")
            else:
                _row(row, config.type)
    for row in stored.values():
        _row(row, f"{row.provider}?")
        typer.echo(f"{'':<20} stored, but {row.tenant_id} {row.role} is not an OAuth connector in {settings.config}")


@connectors_app.command("rotate-keys")
def rotate_keys() -> None:
    """Re-encrypt every stored token under the newest key in TEXTBACK_SECRET_KEYS (then drop the old ones)."""
    settings = Settings()
    cipher = _cipher(settings)
    db = _database(settings)
    try:
        with db.transaction() as session:
            count = connections.rotate_keys(session, cipher=cipher)
    except SecretKeyError as exc:
        _fail(f"{exc}; nothing was changed")
    typer.echo(f"{count} connection(s) re-encrypted under the newest key; older keys can now be removed")


@connectors_app.command("new-key")
def new_key() -> None:
    """Print a new encryption key for TEXTBACK_SECRET_KEYS (prepend it to rotate)."""
    typer.echo(connections.new_key())


def _row(row: connections.Connection, kind: str) -> None:
    _line(row.tenant_id, row.role, kind, "oauth", row.status, row.expires_at, row.account_label)
    if row.status == connections.NEEDS_REAUTH:
        typer.echo(f"{'':<20} {row.status_reason}")
        typer.echo(f"{'':<20} run `textback connect {row.tenant_id} {row.role}`; its parked jobs resume after")


def _line(tenant_id: str, role: str, kind: str, auth: str, status: str, expires: datetime | None,
          account: str | None) -> None:
    typer.echo(f"{tenant_id:<20} {role:<9} {kind:<9} {auth:<12} {status:<14} {_when(expires):<21} {account or '-'}")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def _tenants(settings: Settings) -> TenantDirectory:
    from connectors.registry import validate_connector

    try:
        return load_tenants(settings.config, validate_connector=validate_connector)
    except ConfigError as exc:
        _fail(str(exc))


def _cipher(settings: Settings) -> TokenCipher:
    try:
        return TokenCipher.from_secret(settings.secret_keys)
    except SecretKeyError as exc:
        _fail(str(exc))


def _database(settings: Settings) -> Database:
    from core.store.migrate import pending

    db = Database(settings.database_url)
    if pending(db.engine):
        _fail(f"the database at {settings.database_url} is not at the newest schema; run `textback db upgrade` first")
    return db


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(2)

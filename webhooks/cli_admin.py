"""`textback admin add-user EMAIL (--tenant T | --agency)`: accounts for the /admin web app."""

from __future__ import annotations

from typing import Optional

import typer

from core.config import Settings

admin_app = typer.Typer(help="Accounts for the /admin web app.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")


@admin_app.command("add-user")
def add_user(
    email: str = typer.Argument(..., help="the address the person signs in with"),
    tenant: Optional[str] = typer.Option(None, "--tenant", "-t", help="a user of this business only"),
    agency: bool = typer.Option(False, "--agency", help="an agency admin: sees every business"),
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True,
                                 envvar="TEXTBACK_ADMIN_PASSWORD", help="asked for when not given "
                                 "(or TEXTBACK_ADMIN_PASSWORD)"),
) -> None:
    """Create an admin account; the password is stored only as an argon2id hash."""
    from core.admin_accounts import AccountError
    from core.admin_accounts import add_user as create
    from core.store.db import Database

    settings = Settings()
    if tenant is not None:
        from connectors.registry import validate_connector
        from core.config import ConfigError, load_tenants

        try:
            known = [t.id for t in load_tenants(settings.config, validate_connector=validate_connector)]
        except (ConfigError, OSError) as exc:
            typer.echo(f"cannot check --tenant against {settings.config}: {exc}", err=True)
            raise typer.Exit(2) from exc
        if tenant not in known:
            typer.echo(f"no tenant {tenant!r} in {settings.config}; tenants: {', '.join(known)}", err=True)
            raise typer.Exit(2)
    db = Database(settings.database_url)
    try:
        with db.transaction() as session:
            user = create(session, email=email, password=password, tenant_id=tenant, agency=agency)
            scope = "every business (agency)" if user.agency else user.tenant_id
    except AccountError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    finally:
        db.dispose()
    typer.echo(f"added {user.email}: sees {scope}; sign in at {settings.public_url}/admin")

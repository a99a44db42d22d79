"""`textback sync status`: what to paste into vendor settings, and how the push subscriptions and pulls stand."""

from __future__ import annotations

import typer
from sqlalchemy import select

from core.config import Settings
from core.store.tables import SyncCursor, SyncSubscription
from webhooks.cli_connect import _database, _tenants

sync_app = typer.Typer(help="Two-way sync: webhook URLs, push subscriptions, pull cursors.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(sync_app, name="sync")


@sync_app.command("status")
def sync_status() -> None:
    """Per tenant: the URL to paste for HubSpot webhooks, the subscriptions held, and when each feed was pulled."""
    settings = Settings()
    tenants, db = _tenants(settings), _database(settings)
    with db.transaction() as session:
        subscriptions = list(session.scalars(select(SyncSubscription).order_by(SyncSubscription.id)))
        cursors = list(session.scalars(select(SyncCursor).order_by(SyncCursor.id)))
        session.expunge_all()
    for tenant in tenants:
        typer.echo(f"{tenant.id}:")
        crm = tenant.connectors.get("crm")
        if crm is not None and crm.type == "hubspot":
            signed = "signed with webhook_secret" if crm.webhook_secret else "set webhook_secret to accept them"
            typer.echo(f"  hubspot webhooks: paste {settings.public_url}/webhooks/hubspot as the app's target URL, "
                       f"subscribe to contact.propertyChange for {crm.do_not_text_property} and hubspot_owner_id "
                       f"({signed})")
        for held in (s for s in subscriptions if s.tenant_id == tenant.id):
            expires = held.expires_at.strftime("%Y-%m-%d %H:%M UTC") if held.expires_at else "-"
            typer.echo(f"  {held.provider:<9} {held.resource:<32} {held.status:<8} expires {expires}")
        for cursor in (c for c in cursors if c.tenant_id == tenant.id):
            typer.echo(f"  pulled {cursor.provider} {cursor.scope} at {cursor.updated_at:%Y-%m-%d %H:%M UTC}")
        if not any(s.tenant_id == tenant.id for s in subscriptions):
            typer.echo("  no push subscriptions yet: the worker opens them within the hour (watch_calendars)")

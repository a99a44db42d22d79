"""`textback connect` and `textback connectors ...` as an admin uses them, and what a reconnect does to parked jobs."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from connectors.oauth import OAuthClient
from connectors.oauth_flow import connect
from connectors.registry import validate_connector
from core.config import Settings, load_tenants
from core.store import connections
from core.store.connections import TokenCipher, TokenSet, new_key
from core.store.tables import OutboxRow
from sandbox.phone import SandboxPhone
from sync.relay import relay_pending
from webhooks.cli import app
from sync.embedded import Embedded

from .conftest import BUSINESS, CALENDAR, CALLER, miss_a_call, tenant_yaml, texts_to

STAFF_PHONE = "+15550004444"

runner = CliRunner()
TEXTBACK = Path(sys.executable).with_name("textback")


@pytest.fixture
def secret_key(monkeypatch) -> str:
    key = new_key()
    monkeypatch.setenv("TEXTBACK_SECRET_KEYS", key)
    return key


@pytest.fixture
def oauth_tenants(stack, tenants_path, sqlite_db, secret_key, monkeypatch) -> Path:
    """The tenant's calendar is a Google account a person authorizes with `textback connect`."""
    installed = stack.google.oauth.new_client()["installed"]
    stack.google.oauth.consenting_user = CALENDAR
    monkeypatch.setenv("GOOGLE_CLIENT_SECRET", installed["client_secret"])
    google = stack.servers["google"].url
    connectors = stack.connectors_yaml(calendars=[CALENDAR])
    connectors["calendar"] = {"type": "google", "calendars": [CALENDAR], "base_url": google, "oauth": {
        "client_id": installed["client_id"], "client_secret": "env:GOOGLE_CLIENT_SECRET", "login_url": google}}
    tenants_path.write_text(yaml.safe_dump({"tenants": [tenant_yaml(stack, connectors=connectors)]}, sort_keys=False))
    monkeypatch.setenv("TEXTBACK_CONFIG", str(tenants_path))
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", sqlite_db.url)
    return tenants_path


def connect_calendar(db, tenants_path: Path, browser: httpx.Client):
    config = load_tenants(tenants_path, validate_connector=validate_connector).get("smith-law").connectors["calendar"]
    return connect(client=OAuthClient.for_config(config), tenant_id="smith-law", role="calendar", db=db,
                   cipher=TokenCipher.from_secret(Settings().secret_keys),
                   open_url=browser.get, timeout=10)


def reach_the_slot_offer(phone: SandboxPhone, textback: Embedded) -> None:
    """Miss a call and answer the playbook's questions (its business, not this file's) until slots are wanted."""
    miss_a_call(phone)
    textback.drain()
    for reply in ("1", "no", "no", "no", "no"):
        phone.text(caller=CALLER, to=BUSINESS, body=reply)
        textback.drain()
        with textback.runtime.db.transaction() as session:
            if session.scalar(select(OutboxRow.id).where(OutboxRow.kind == "offer_slots")):
                return
    raise AssertionError("the conversation never asked for slots")


@pytest.fixture
def browser():
    with httpx.Client(timeout=10, follow_redirects=True) as client:
        yield client


def test_connect_prints_the_url_waits_for_the_browser_and_stores_the_account(oauth_tenants, sqlite_db, browser,
                                                                            stack):
    # Given: the admin runs the command
    command = subprocess.Popen([str(TEXTBACK), "connect", "smith-law", "calendar", "--no-browser", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        url = next(line.strip() for line in command.stdout if line.strip().startswith("http"))
        # When: they open the printed URL, signed in to the staff Google account
        page = browser.get(url)
        output, errors = command.communicate(timeout=30)
    finally:
        command.kill()
    # Then
    assert page.status_code == 200 and "connected" in page.text
    assert command.returncode == 0, errors
    assert f"connected smith-law calendar to google as {CALENDAR}" in output
    with sqlite_db.transaction() as session:
        row = connections.find(session, tenant_id="smith-law", role="calendar")
    assert row.status == "active" and row.account_label == CALENDAR


def test_connectors_list_shows_type_auth_kind_status_and_what_to_run(oauth_tenants, sqlite_db, browser):
    # Given
    result = runner.invoke(app, ["connectors", "list"])
    assert result.exit_code == 0, result.output
    assert "not connected" in result.output and "run `textback connect smith-law calendar`" in result.output
    connect_calendar(sqlite_db, oauth_tenants, browser)
    # When
    result = runner.invoke(app, ["connectors", "list"])
    # Then
    lines = {line.split()[1]: line.split() for line in result.output.splitlines()[1:] if line.startswith("smith-law")}
    assert lines["sms"][2:5] == ["twilio", "config-only", "-"]
    assert lines["crm"][2:5] == ["hubspot", "config-only", "-"]
    assert lines["calendar"][2:5] == ["google", "oauth", "active"] and lines["calendar"][-1] == CALENDAR
    # When: Google refuses the refresh token
    with sqlite_db.transaction() as session:
        connections.mark_needs_reauth(session, tenant_id="smith-law", role="calendar", now=datetime.now(timezone.utc),
                                      reason="google: invalid_grant: Token has been expired or revoked.")
    result = runner.invoke(app, ["connectors", "list"])
    # Then
    assert "needs_reauth" in result.output and "Token has been expired or revoked." in result.output


def test_connect_refuses_a_connector_whose_credentials_live_in_the_tenants_file(oauth_tenants):
    result = runner.invoke(app, ["connect", "smith-law", "crm"])

    assert result.exit_code == 2
    assert "smith-law crm is hubspot with credentials in the tenants file; nothing to connect" in result.output


def test_connect_without_an_encryption_key_says_how_to_make_one(oauth_tenants, monkeypatch):
    monkeypatch.delenv("TEXTBACK_SECRET_KEYS")

    result = runner.invoke(app, ["connect", "smith-law", "calendar", "--no-browser"])

    assert result.exit_code == 2 and "textback connectors new-key" in result.output


def test_rotate_keys_moves_every_stored_token_to_the_newest_key(oauth_tenants, sqlite_db, secret_key, monkeypatch):
    # Given: a row written under the current key, then a new key prepended
    tokens = TokenSet("ya29.a", "1//r", datetime(2030, 1, 1, tzinfo=timezone.utc))
    with sqlite_db.transaction() as session:
        connections.store(session, tenant_id="smith-law", role="calendar", provider="google", tokens=tokens,
                          scopes=[], account_label=None, cipher=TokenCipher([secret_key]), now=tokens.expires_at)
    newest = new_key()
    monkeypatch.setenv("TEXTBACK_SECRET_KEYS", f"{newest},{secret_key}")
    # When
    result = runner.invoke(app, ["connectors", "rotate-keys"])
    # Then
    assert result.exit_code == 0 and "1 connection(s) re-encrypted" in result.output
    with sqlite_db.transaction() as session:
        blob = connections.find(session, tenant_id="smith-law", role="calendar").token_blob
    assert TokenCipher([newest]).decrypt(blob) == tokens


def test_a_revoked_google_connection_hands_the_caller_to_staff_at_once_and_a_reconnect_unparks_the_row(
        oauth_tenants, sqlite_db, browser, stack):
    # Given: the calendar was connected, then the staff member removed textback's access in Google
    raw = yaml.safe_load(oauth_tenants.read_text())
    raw["tenants"][0]["handoff_to"] = [STAFF_PHONE]
    oauth_tenants.write_text(yaml.safe_dump(raw, sort_keys=False))
    connect_calendar(sqlite_db, oauth_tenants, browser)
    for refresh_token in stack.google.oauth.refresh_tokens_of(CALENDAR):
        stack.google.oauth.revoke(refresh_token)
    tenants = load_tenants(oauth_tenants, validate_connector=validate_connector)
    with Embedded(db=sqlite_db, tenants=tenants) as textback, httpx.Client(timeout=10) as http:
        phone = SandboxPhone(app_url=textback.url, auth_token=stack.auth_token, account_sid=stack.account_sid,
                             twilio=stack.twilio, http=http)
        # When: a caller answers the playbook's questions up to where slots are offered
        reach_the_slot_offer(phone, textback)
        # Then: the caller is not left waiting: a person will call; staff are told why; the row is parked
        assert "will contact you to schedule" in texts_to(stack)[-1]
        assert "re-authorising" in texts_to(stack, STAFF_PHONE)[-1]
        with sqlite_db.transaction() as session:
            parked = session.scalars(select(OutboxRow.kind).where(OutboxRow.status == "parked")).all()
            connection = connections.find(session, tenant_id="smith-law", role="calendar")
        assert parked == ["offer_slots"] and connection.status == "needs_reauth"
        # When: the admin connects the calendar again and the relay makes its next pass
        texts_before = len(texts_to(stack))
        connected = connect_calendar(sqlite_db, oauth_tenants, browser)
        relay_pending(textback.runtime, textback.runtime.dispatcher, grace=timedelta(0))
        textback.drain()
        with sqlite_db.transaction() as session:
            statuses = session.scalars(select(OutboxRow.status).where(OutboxRow.kind == "offer_slots")).all()
    # Then: the row ran again and is done, and the caller, already promised a call, is not texted again
    assert connected.unparked == 1 and statuses == ["done"]
    assert len(texts_to(stack)) == texts_before


def test_a_consent_without_the_calendar_scope_parks_the_offer_and_flags_the_connection(oauth_tenants, sqlite_db,
                                                                                      browser, stack):
    # Given: the staff member unticked calendar access on Google's consent screen
    raw = yaml.safe_load(oauth_tenants.read_text())
    raw["tenants"][0]["connectors"]["calendar"]["oauth"]["scopes"] = ["openid", "email"]
    oauth_tenants.write_text(yaml.safe_dump(raw, sort_keys=False))
    connect_calendar(sqlite_db, oauth_tenants, browser)
    tenants = load_tenants(oauth_tenants, validate_connector=validate_connector)
    with Embedded(db=sqlite_db, tenants=tenants) as textback, httpx.Client(timeout=10) as http:
        phone = SandboxPhone(app_url=textback.url, auth_token=stack.auth_token, account_sid=stack.account_sid,
                             twilio=stack.twilio, http=http)
        # When: Google answers the free/busy query 403 insufficientPermissions
        reach_the_slot_offer(phone, textback)
    # Then: the job is parked, not failed, and the connection asks for a new consent
    with sqlite_db.transaction() as session:
        offer = session.scalar(select(OutboxRow).where(OutboxRow.kind == "offer_slots"))
        connection = connections.find(session, tenant_id="smith-law", role="calendar")
    assert offer.status == "parked" and "403" in offer.last_error
    assert connection.status == "needs_reauth" and "insufficient authentication scopes" in connection.status_reason

"""`textback simulate` plays the caller against a running server: signed webhooks, the texts read back
from the sandbox's Twilio API, and a booking at the end, as a newcomer following the README sees it."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from connectors.registry import validate_connector
from core.config import load_tenants
from core.store.tables import Booking
from sandbox.stack import SandboxStack
from sync.embedded import Embedded
from webhooks.cli import app
from webhooks.demo import SCRIPT, sandbox_tenants
from webhooks.simulate import spoken

runner = CliRunner()
NOW = datetime(2031, 3, 4, 14, 0, tzinfo=timezone.utc)  # a Tuesday, 9 am in New York
CALLER = "+15550107777"


@pytest.fixture
def workbench(tmp_path, sqlite_db, monkeypatch):
    """What `textback sandbox` starts and writes, with `serve` + `worker` (embedded) running against it."""
    with SandboxStack.start(calendars=("intake@smithlee.example", "consults@riveralaw.example")) as stack:
        for name, value in stack.env.items():
            monkeypatch.setenv(name, value)
        path = tmp_path / "sandbox-tenants.yaml"
        path.write_text(yaml.safe_dump({"tenants": sandbox_tenants(stack)}, sort_keys=False))
        tenants = load_tenants(path, validate_connector=validate_connector)
        with Embedded(db=sqlite_db, tenants=tenants, clock=lambda: NOW, relay_interval=0.2) as server:
            monkeypatch.setenv("TEXTBACK_CONFIG", str(path))
            monkeypatch.setenv("TEXTBACK_PUBLIC_URL", server.url)
            yield stack, server


def test_a_simulated_missed_call_gets_the_first_text_and_the_replies_book_a_slot(workbench):
    stack, server = workbench

    call = runner.invoke(app, ["simulate", "call", "--to", "+15550001111", "--from", CALLER])

    assert call.exit_code == 0, call.output
    lines = call.output.splitlines()
    assert lines[0] == f"{CALLER} calls Smith & Lee Law at +15550001111"
    assert lines[1] == "  textback answers the call: rings +15550002222 for 18 seconds"
    assert lines[2].startswith("  nobody picks up; the caller hears: ")
    assert lines[3].startswith("🤖 Smith & Lee Law: ") and "automated" in lines[3].lower()
    for reply in SCRIPT:
        answer = runner.invoke(app, ["simulate", "sms", reply, "--to", "+15550001111", "--from", CALLER])
        assert answer.exit_code == 0, answer.output
        assert "🤖 Smith & Lee Law: " in answer.output
    server.drain()
    with server.runtime.db.transaction() as session:
        booking = session.scalar(select(Booking).where(Booking.status == "confirmed"))
    assert booking is not None and booking.tenant_id == "smith-lee-law"
    assert [e["id"] for e in stack.google.events("intake@smithlee.example")
            if e.get("extendedProperties", {}).get("private", {}).get("textback_key")] == [booking.external_event_id]


def test_simulating_a_number_no_tenant_has_lists_the_numbers_and_exits_3(workbench):
    result = runner.invoke(app, ["simulate", "call", "--to", "+15559990000"])

    assert result.exit_code == 3
    assert "no tenant has the number +15559990000" in result.output and "+15550004444" in result.output


def test_simulating_against_the_wrong_public_url_explains_the_signature_trap(workbench, monkeypatch):
    _, server = workbench

    result = runner.invoke(app, ["simulate", "call", "--to", "+15550001111", "--url",
                                 server.url.replace("127.0.0.1", "localhost")])

    assert result.exit_code == 3
    assert "refused the signature" in result.output and "TEXTBACK_PUBLIC_URL" in result.output


def test_an_answered_call_sends_no_text(workbench):
    result = runner.invoke(app, ["simulate", "call", "--to", "+15550001111", "--from", "+15550108888",
                                 "--status", "completed", "--wait", "0.5"])

    assert result.exit_code == 0, result.output
    assert "the dial ends: completed" in result.output and "🤖" not in result.output


def test_twiml_reads_as_plain_words():
    twiml = ('<Response><Say>Sorry we missed you.</Say><Dial timeout="18"><Number>+15550002222</Number></Dial>'
             '<Hangup/></Response>')

    assert spoken(twiml) == "“Sorry we missed you.”, then rings +15550002222 for 18 seconds, then hangs up"

"""`textback import TENANT FILE`: a phone log checked whole, pushed to the CRM once, and nobody texted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select
from typer.testing import CliRunner

from core.store.db import Database
from core.store.migrate import upgrade
from core.store.tables import Call, Lead, OutboxRow
from sandbox.server import serve
from sandbox.webhook_receiver import PATH, WebhookReceiver, create_app
from tests.webhooks.conftest import BUSINESS, tenant_yaml
from webhooks.cli import app

runner = CliRunner()

TWILIO_EXPORT = """\
Call Sid,From,To,Direction,Status,Start Time,Duration,Caller Name,Notes
CA00000000000000000000000000000001,+15550104001,+15550001111,inbound,no-answer,2024-03-04 15:02:11 UTC,0,Ana Ruiz,asked about a divorce
CA00000000000000000000000000000002,(555) 010-4002,+15550001111,inbound,busy,2024-03-04 16:10:00 UTC,0,,
CA00000000000000000000000000000003,+15550104003,+15550001111,inbound,completed,2024-03-05 09:00:00 UTC,95,Bo Li,
CA00000000000000000000000000000004,+15550001111,+15550104004,outbound-dial,no-answer,2024-03-05 10:00:00 UTC,0,,
CA00000000000000000000000000000005,anonymous,+15550001111,inbound,no-answer,2024-03-05 11:00:00 UTC,0,,
CA00000000000000000000000000000006,555.010.4001,+15550001111,inbound,canceled,"Mar 6, 2024 8:15 AM",0,,
"""


@pytest.fixture
def env(tmp_path, stack, monkeypatch):
    """The CLI's settings: a migrated SQLite file, the tenants file pointed at the sandbox, no broker."""
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    url = f"sqlite:///{tmp_path / 'import.db'}"
    upgrade(Database(url).engine)
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", url)
    monkeypatch.setenv("TEXTBACK_REDIS_URL", "stub://")
    return tmp_path, url


def _tenants(tmp_path: Path, tenant: dict, monkeypatch) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [tenant]}, sort_keys=False))
    monkeypatch.setenv("TEXTBACK_CONFIG", str(path))


def _count(url: str, model) -> int:
    with Database(url).transaction() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_twilio_call_log_export_is_imported_as_it_is_and_nobody_is_texted(env, stack, monkeypatch):
    tmp_path, url = env
    _tenants(tmp_path, tenant_yaml(stack), monkeypatch)
    log = tmp_path / "calls.csv"
    log.write_text(TWILIO_EXPORT)

    result = runner.invoke(app, ["import", "smith-law", str(log), "--no-progress"])

    assert result.exit_code == 0, result.output
    assert "3 missed call(s) to import" in result.output
    assert "1 answered calls" in result.output and "1 outbound calls" in result.output
    assert "1 withheld caller ids" in result.output
    # Two callers (the first called twice, written two ways) are two contacts, the first with her name and notes
    contacts = {c["properties"]["phone"]: c["properties"] for c in stack.hubspot.objects("contacts")}
    assert set(contacts) == {"+15550104001", "+15550104002"}
    assert contacts["+15550104001"]["firstname"] == "Ana" and contacts["+15550104001"]["lastname"] == "Ruiz"
    assert any("asked about a divorce" in note["properties"]["hs_note_body"] for note in stack.hubspot.objects("notes"))
    assert stack.twilio.messages_to("+15550104001") == [] and stack.twilio.messages_to("+15550104002") == []
    assert _count(url, Call) == 3 and _count(url, Lead) == 2

    again = runner.invoke(app, ["import", "smith-law", str(log)])  # with the progress bar this time

    assert again.exit_code == 0, again.output
    assert "recorded 0 new call(s); 3 were imported before" in again.output
    assert len(stack.hubspot.objects("contacts")) == 2


def test_bad_lines_are_all_reported_with_their_numbers_and_nothing_is_imported(env, stack, monkeypatch):
    tmp_path, url = env
    _tenants(tmp_path, tenant_yaml(stack), monkeypatch)
    log = tmp_path / "calls.csv"
    log.write_text("caller,time,name\n"
                   "+15550104001,2024-03-04 15:02,Ana\n"
                   "call me maybe,2024-03-04 15:02,\n"
                   "+15550104002,last tuesdayish at noonish?,\n"
                   "+15550104003,2999-01-01 10:00,\n"
                   "+15550104004,,Bo\n")

    result = runner.invoke(app, ["import", "smith-law", str(log), "--no-progress"])

    assert result.exit_code == 1
    assert f"{log}:line 3: caller 'call me maybe' is not a phone number" in result.output
    assert f"{log}:line 4: time 'last tuesdayish at noonish?' is not a date and time" in result.output
    assert f"{log}:line 5: time '2999-01-01 10:00' is in the future" in result.output
    assert f"{log}:line 6: no time" in result.output
    assert "4 bad line(s); nothing was imported" in result.output
    assert _count(url, Call) == 0 and _count(url, OutboxRow) == 0 and stack.hubspot.objects("contacts") == []


def test_a_file_without_a_caller_column_names_the_columns_it_accepts(env, stack, monkeypatch):
    tmp_path, _ = env
    _tenants(tmp_path, tenant_yaml(stack), monkeypatch)
    log = tmp_path / "calls.csv"
    log.write_text("who,when\n+15550104001,2024-03-04\n")

    result = runner.invoke(app, ["import", "smith-law", str(log), "--no-progress"])

    assert result.exit_code == 1
    assert "line 1: no caller column; name one of: caller, from, phone" in result.output


def test_an_import_of_1000_rows_killed_halfway_and_run_again_ends_with_1000_records(env, stack, monkeypatch):
    # Given: a tenant whose CRM is a signed webhook, and a log of 1,000 missed calls from 1,000 callers
    tmp_path, url = env
    receiver = WebhookReceiver("s3cret-for-import")
    monkeypatch.setenv("IMPORT_HOOK_SECRET", receiver.secret)
    with serve(create_app(receiver)) as served:
        tenant = tenant_yaml(stack)
        tenant["connectors"]["crm"] = {"type": "webhook", "url": served.url + PATH, "secret": "env:IMPORT_HOOK_SECRET"}
        _tenants(tmp_path, tenant, monkeypatch)
        log = tmp_path / "calls.csv"
        log.write_text("caller,time\n" + "".join(f"+1555020{n:04d},2024-05-{1 + n % 28:02d} 10:{n % 60:02d}\n"
                                                 for n in range(1000)))
        command = [str(Path(sys.executable).parent / "textback"), "import", "smith-law", str(log), "--no-progress"]

        # When: the import is killed once about half the callers are pushed, then run again
        first = subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while len(receiver.records("contact")) < 500 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first.kill()
        first.wait()
        halfway = len(receiver.records("contact"))
        second = subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, timeout=300)

        # Then: every caller is one record, none twice, and all 1,000 jobs are done
        assert 0 < halfway < 1000
        assert second.returncode == 0, second.stdout + second.stderr
        contacts = receiver.records("contact")
        assert len(contacts) == 1000 and len({c["phone"] for c in contacts}) == 1000
        assert sum(e["type"] == "contact.upserted" for e in receiver.events) == 1000
    with Database(url).transaction() as session:
        statuses = session.execute(select(OutboxRow.status, func.count()).group_by(OutboxRow.status)).all()
    assert statuses == [("done", 1000)]

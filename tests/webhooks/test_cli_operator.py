"""The command as an operator meets it in the first hour: versions, help, exit codes, and one-paragraph
errors (never a traceback, never a password) for a missing database, a stopped broker or a bad tenant."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.store.db import normalized_url
from tests.conftest import POSTGRES_URL, _need
from webhooks.cli import app
from webhooks.cli_serve import webhook_urls

runner = CliRunner()
TEXTBACK = str(Path(sys.executable).with_name("textback"))


def flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([TEXTBACK, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_version_and_short_help_work_for_the_app_and_for_subcommands():
    assert runner.invoke(app, ["--version"]).output.startswith("textback ")
    assert "Usage: textback outbox list" in flat(runner.invoke(app, ["outbox", "list", "-h"], prog_name="textback").output)

    completed = run("-h")

    assert completed.returncode == 0 and "config" in completed.stdout and "simulate" in completed.stdout


def test_apikey_for_a_tenant_the_file_does_not_have_fails_and_lists_the_tenants(tenants_path, monkeypatch):
    monkeypatch.setenv("TEXTBACK_CONFIG", str(tenants_path))

    result = runner.invoke(app, ["apikey", "no-such-tenant"])

    assert result.exit_code == 2
    assert "no tenant 'no-such-tenant'" in result.output and "smith-law" in result.output
    assert "tbk_" not in result.output


def test_apikey_for_a_known_tenant_prints_the_key_and_its_hash(tenants_path, monkeypatch):
    monkeypatch.setenv("TEXTBACK_CONFIG", str(tenants_path))

    result = runner.invoke(app, ["apikey", "smith-law"])

    assert result.exit_code == 0 and "tbk_" in result.output and "api_key_sha256: " in result.output


def test_a_missing_postgresql_database_is_one_paragraph_with_the_fix_and_no_password():
    _need(POSTGRES_URL, 5432, "PostgreSQL")
    url = POSTGRES_URL.rsplit("/", 1)[0].replace("postgres@", "postgres:hunter2-secret@") + "/textback_missing_p10"

    completed = run("db", "upgrade", env={"TEXTBACK_DATABASE_URL": url})

    assert completed.returncode == 3
    assert "Traceback" not in completed.stderr and len(completed.stderr.strip().splitlines()) == 1
    assert 'database "textback_missing_p10" does not exist' in completed.stderr
    assert "createdb" in completed.stderr
    assert "hunter2-secret" not in completed.stderr + completed.stdout and "postgres:***@" in completed.stderr


def test_an_unreachable_postgresql_server_says_so(tmp_path):
    completed = run("outbox", "list", env={"TEXTBACK_DATABASE_URL": "postgresql://textback:pw@127.0.0.1:1/textback"})

    assert completed.returncode == 3 and "Traceback" not in completed.stderr
    assert "Is PostgreSQL running" in completed.stderr and ":pw@" not in completed.stderr


def test_postgres_scheme_urls_are_accepted():
    assert normalized_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalized_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalized_url("sqlite:///x.db") == "sqlite:///x.db"


def test_db_upgrade_through_a_postgres_scheme_url_migrates(postgres_db, monkeypatch):
    url = postgres_db.url.replace("postgresql://", "postgres://")
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", url)

    result = runner.invoke(app, ["db", "upgrade"])

    assert result.exit_code == 0, result.output
    assert "is at the newest schema" in result.output


def test_db_upgrade_prints_the_url_with_its_password_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    assert "newest schema" in runner.invoke(app, ["db", "upgrade"]).output
    _need(POSTGRES_URL, 5432, "PostgreSQL")

    completed = run("db", "upgrade", env={"TEXTBACK_DATABASE_URL": "postgresql://postgres:s3cr3t-pw@127.0.0.1:5432/x_p10_absent"})

    assert "s3cr3t-pw" not in completed.stdout + completed.stderr


def test_a_worker_with_redis_down_exits_3_with_one_paragraph(tmp_path):
    completed = run("worker", env={"TEXTBACK_REDIS_URL": "redis://:brokerpw@127.0.0.1:1/0"})

    assert completed.returncode == 3, completed.stderr
    assert "Traceback" not in completed.stderr
    assert "cannot reach the job queue at redis://:***@127.0.0.1:1/0" in completed.stderr
    assert "brokerpw" not in completed.stderr


def test_an_invalid_tenants_file_stops_serve_with_its_problems_and_exit_2(tmp_path):
    broken = tmp_path / "tenants.yaml"
    broken.write_text("tenants:\n  - id: x\n    vertical: law\n    vertical: medical\n")

    completed = run("serve", env={"TEXTBACK_CONFIG": str(broken), "TEXTBACK_REDIS_URL": "stub://",
                                  "TEXTBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"})

    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert f"{broken}:4:5: tenants.0.vertical: is written twice (first on line 3)" in completed.stderr


def test_config_check_as_a_subprocess_shows_the_caret_under_an_unclosed_quote(tmp_path):
    broken = tmp_path / "tenants.yaml"
    broken.write_text('tenants:\n  - id: smith-law\n    name: "Smith & Lee\n    vertical: law\n')

    completed = run("config", "check", str(broken))

    assert completed.returncode == 1
    assert completed.stderr.splitlines()[:3] == [
        f"{broken}:3:11: not valid YAML: while scanning a quoted scalar found unexpected end of stream — "
        "the quote opened here is never closed; close it on the same line",
        '        name: "Smith & Lee',
        "              ^"]


def test_outbox_list_refuses_an_unknown_kind_and_an_unreadable_since(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")

    bad_kind = runner.invoke(app, ["outbox", "list", "--kind", "send_fax"])
    bad_since = runner.invoke(app, ["outbox", "list", "--since", "last tuesday"])

    assert bad_kind.exit_code == 2 and "send_fax is not a job kind" in flat(bad_kind.output)
    assert bad_since.exit_code == 2 and "neither a span" in flat(bad_since.output)


def test_serve_lists_the_webhook_urls_for_every_tenant_number(textback):
    textback.runtime.settings.public_url = "https://textback.example.com"

    lines = webhook_urls(textback.runtime, listening="http://127.0.0.1:8000")

    assert lines[0] == ("textback listening on http://127.0.0.1:8000; public URL (TEXTBACK_PUBLIC_URL) "
                        "https://textback.example.com")
    assert ("  +15550001111 (smith-law): voice webhook POST https://textback.example.com/twilio/voice, "
            "messaging webhook POST https://textback.example.com/twilio/sms") in lines


@pytest.mark.parametrize("calendars,ok", [(["staff@smithlaw.example"], True), (["nobody@smithlaw.example"], False)])
def test_config_check_online_asks_each_vendor_and_catches_a_calendar_that_does_not_exist(
        stack, tmp_path, monkeypatch, calendars, ok):
    import yaml

    from tests.webhooks.conftest import tenant_yaml

    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    path = tmp_path / "tenants.yaml"
    tenant = tenant_yaml(stack)
    tenant["connectors"]["calendar"]["calendars"] = calendars
    path.write_text(yaml.safe_dump({"tenants": [tenant]}))

    result = runner.invoke(app, ["config", "check", str(path), "--online"])

    assert "smith-law sms: ok — twilio: credentials accepted" in result.output
    assert "smith-law crm: ok — hubspot: token accepted" in result.output
    if ok:
        assert result.exit_code == 0 and "every connector answered" in result.output
    else:
        assert result.exit_code == 1
        assert ("smith-law calendar: FAILED — google: Rejected: free/busy query: calendar nobody@smithlaw.example "
                "does not exist or is not shared") in result.output


def test_an_invalid_environment_variable_is_named_with_its_value():
    completed = run("outbox", "list", env={"TEXTBACK_RELAY_INTERVAL": "soon"})

    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert "TEXTBACK_RELAY_INTERVAL: Input should be a valid number" in completed.stderr
    assert "(got 'soon')" in completed.stderr


def test_serve_with_two_web_processes_stores_every_signed_missed_call_once_and_stops_on_sigterm(
        tmp_path, tenants_path, stack, redis_url):
    import signal
    import socket
    import time

    import httpx
    from sqlalchemy import create_engine, func, select

    from core.store.tables import Call, OutboxRow
    from sandbox.twilio import post_signed
    from tests.webhooks.conftest import BUSINESS

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    env = {**os.environ, "TEXTBACK_CONFIG": str(tenants_path), "TEXTBACK_DATABASE_URL": database,
           "TEXTBACK_REDIS_URL": redis_url, "TEXTBACK_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    assert subprocess.run([TEXTBACK, "db", "upgrade"], env=env, capture_output=True, timeout=60).returncode == 0
    serve = subprocess.Popen([TEXTBACK, "serve", "--port", str(port), "--workers", "2"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        with httpx.Client(timeout=30) as http:  # a new connection per request: either process may take it
            answers = [post_signed(http, url=url + "/twilio/voice/dial-complete", auth_token=stack.auth_token,
                                   params={"CallSid": f"CA{n:032x}", "From": f"+1555010{n:04d}", "To": BUSINESS,
                                           "DialCallStatus": "no-answer"},
                                   ) for n in range(20)]
            again = post_signed(http, url=url + "/twilio/voice/dial-complete", auth_token=stack.auth_token,
                                params={"CallSid": f"CA{0:032x}", "From": "+15550100000", "To": BUSINESS,
                                        "DialCallStatus": "no-answer"})
    finally:
        serve.send_signal(signal.SIGTERM)
        _, errors = serve.communicate(timeout=30)

    assert [a.status_code for a in answers] == [200] * 20 and again.status_code == 200, errors[-2000:]
    assert all("<Say>" in a.text for a in answers)
    assert serve.returncode == 0, errors[-2000:]
    assert len({line for line in errors.splitlines() if "Started server process" in line}) == 2
    engine = create_engine(database)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Call)) == 20
        assert connection.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.kind == "send_sms")) == 20
    engine.dispose()

"""No secret in what the `textback` command prints (issue 14 item 8), over an operator's whole first run.

The commands run as the operator runs them (the installed console script, one process each) with real
secrets in the environment: the vendor tokens and keys the tenants file names (Twilio auth token, HubSpot
and Clio tokens, the Google service-account key, the Microsoft client secret), the token encryption keys,
and database and broker URLs with passwords. Not one of those values, nor a line of the multi-line Google
key, appears in stdout or stderr of any command. `textback sandbox` is checked against the secrets it makes
itself: they belong in its env file (mode 0600), not on the terminal. The demo's own secrets are checked
value by value, in its output and its DEBUG log, by tests/webhooks/test_demo.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.conftest import POSTGRES_URL, _need

TEXTBACK = str(Path(sys.executable).with_name("textback"))
DB_PASSWORD = "db-pass-Zq81xv"  # trust auth ignores it, so the URL works and still carries a password
REDIS_PASSWORD = "redis-pass-Kd02ra"


def _pieces(secrets: dict[str, str]) -> dict[str, str]:
    """Each value, and each long line of a multi-line one (a PEM key is printed a line at a time)."""
    found = {}
    for name, value in secrets.items():
        found[name] = value
        for number, line in enumerate(value.splitlines()):
            if len(line.strip()) > 20:
                found[f"{name} line {number + 1}"] = line.strip()
    return found


def _leaks(output: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, piece in _pieces(secrets).items() if piece in output]


@pytest.fixture
def operator_env(postgres_db, stack, tenants_path, tmp_path):
    _need(POSTGRES_URL, 5432, "PostgreSQL")
    database = postgres_db.url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)
    assert DB_PASSWORD in database
    secrets = {**stack.env, "TEXTBACK_SECRET_KEYS": Fernet.generate_key().decode(),
               "TEXTBACK_DATABASE_URL": database, "TEXTBACK_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/10"}
    env = {**os.environ, **secrets, "TEXTBACK_CONFIG": str(tenants_path), "COLUMNS": "200"}
    return env, {**secrets, "database password": DB_PASSWORD, "redis password": REDIS_PASSWORD}


def test_an_operators_first_run_prints_no_secret_it_was_given(operator_env, tenants_path):
    env, secrets = operator_env
    commands = [["db", "upgrade"], ["config", "check", str(tenants_path)],
                ["config", "check", str(tenants_path), "--online"], ["connectors", "list"],
                ["demo", "--verbose"], ["outbox", "list"], ["report"], ["sync", "status"]]
    printed = {}
    for command in commands:
        # When
        done = subprocess.run([TEXTBACK, *command], capture_output=True, text=True, timeout=300, env=env)
        # Then: it worked (so it printed what it prints), and showed no secret
        name = " ".join(command[:2])
        assert done.returncode == 0, (name, done.stdout[-1500:], done.stderr[-1500:])
        printed[name] = done.stdout + done.stderr
        assert _leaks(printed[name], secrets) == [], name
    assert "***" in printed["db upgrade"]  # the URL is shown, its password masked
    assert "booked" in printed["report"] and "HTTP Request" in printed["demo --verbose"]  # real output was checked


def test_the_sandbox_keeps_the_secrets_it_makes_in_its_env_file_and_off_the_terminal(tmp_path):
    tenants, env_file = tmp_path / "sandbox-tenants.yaml", tmp_path / "sandbox.env"
    sandbox = subprocess.Popen([TEXTBACK, "sandbox", "--port", "0", "--tenants-file", str(tenants),
                                "--env-file", str(env_file)], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not env_file.exists() and time.monotonic() < deadline and sandbox.poll() is None:
            time.sleep(0.1)
        assert env_file.exists(), "the sandbox did not start"
        time.sleep(0.5)  # its listing follows the files
    finally:
        sandbox.send_signal(signal.SIGTERM)
        out, err = sandbox.communicate(timeout=30)
    made = dict(line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines()
                if line.startswith("export "))
    made = {name: value.strip("'") for name, value in made.items()}

    assert sandbox.returncode == 0 and len(made) >= 5
    assert _leaks(out + err, made) == []

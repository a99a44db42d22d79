"""The README's promises: its example tenants file validates and its commands are what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from connectors.registry import validate_connector
from core.config import load_tenants

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_example_tenants_file_in_the_readme_validates(tmp_path, monkeypatch):
    [example] = [block for block in re.findall(r"```yaml\n(.*?)```", README, re.S) if "tenants:" in block]
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "x")
    monkeypatch.setenv("HUBSPOT_TOKEN", "pat-x")
    monkeypatch.setenv("GOOGLE_CREDENTIALS_JSON", '{"type": "authorized_user", "client_id": "c", '
                       '"client_secret": "s", "refresh_token": "r", "token_uri": "https://oauth2.googleapis.com/token"}')
    path = tmp_path / "tenants.yaml"
    path.write_text(example)

    tenants = load_tenants(path, validate_connector=validate_connector)

    [tenant] = tenants.tenants
    assert set(tenant.connectors) == {"sms", "crm", "calendar"}
    assert yaml.safe_load(example)["tenants"][0]["id"] == tenant.id


def test_ci_runs_the_readme_test_command():
    [command] = [line for line in README.splitlines() if line.endswith(".venv/bin/pytest")]

    assert command in (ROOT / ".ci" / "run").read_text()

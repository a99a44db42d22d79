"""`textback demo` stores its outcomes in TEXTBACK_DATABASE_URL, and `textback report` shows them."""

from __future__ import annotations

import json
import re

import httpx
from typer.testing import CliRunner

from core.config import Settings
from sandbox.server import serve
from sync.runtime import Runtime
from webhooks import demo_files
from webhooks.app import create_app
from webhooks.cli import app
from webhooks.demo import run_demo


def test_the_demo_writes_to_the_configured_database_and_the_report_shows_both_bookings(tmp_path, monkeypatch):
    # Given TEXTBACK_DATABASE_URL names a fresh database
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", url)
    lines: list[str] = []
    # When the demo runs
    assert run_demo(echo=lines.append) == 0, "\n".join(lines)
    assert any(url in line and "textback report" in line for line in lines)
    # Then the report of that database shows its two missed calls carried to two bookings
    result = CliRunner().invoke(app, ["report", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["funnel"] == {"missed": 2, "texted": 2, "replied": 2, "qualified": 2, "booked": 2}
    assert set(data["tenants"]) == {"smith-lee-law", "rivera-family-law"}
    assert data["total"]["seconds_to_first_text"]["count"] == 2
    assert sum(data["total"]["bookings_by_calendar"].values()) == 2
    # And a second run on the same database says so instead of failing on the cooldown
    again: list[str] = []
    assert run_demo(echo=again.append) == 2
    assert "already holds a demo run" in again[-1]


def test_after_the_demo_serve_with_the_tenants_file_it_left_shows_its_outcomes_in_admin(tmp_path, monkeypatch):
    # Given: the demo ran on a database file, and left its tenants file beside it
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", url)
    lines: list[str] = []
    assert run_demo(echo=lines.append) == 0, "\n".join(lines)
    kept = tmp_path / demo_files.TENANTS_NAME
    assert any(f"export TEXTBACK_CONFIG={kept}" in line for line in lines)
    assert oct((tmp_path / demo_files.SECRETS_NAME / "TWILIO_AUTH_TOKEN").stat().st_mode & 0o777) == "0o600"
    for name in ("TWILIO_AUTH_TOKEN", "HUBSPOT_TOKEN", "CLIO_TOKEN", "GOOGLE_CREDENTIALS_JSON"):
        monkeypatch.delenv(name, raising=False)  # the demo's environment is gone; the file stands alone
    monkeypatch.setenv("TEXTBACK_CONFIG", str(kept))
    assert CliRunner().invoke(app, ["config", "check"]).exit_code == 0

    # When: an agency admin is added and the app is served as `textback serve` serves it
    result = CliRunner().invoke(app, ["admin", "add-user", "owner@agency.example", "--agency"],
                                env={"TEXTBACK_ADMIN_PASSWORD": "demo-password-1"})
    assert result.exit_code == 0, result.output
    runtime = Runtime.from_settings(Settings(redis_url="stub://"))
    with serve(create_app(runtime)) as served, httpx.Client(base_url=served.url, follow_redirects=True) as http:
        login = http.get("/admin/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
        dashboard = http.post("/admin/login", data={"csrf": csrf, "email": "owner@agency.example",
                                                    "password": "demo-password-1"})
        conversations = http.get("/admin/conversations")
    runtime.close()

    # Then: the dashboard shows the demo's funnel, and both firms' booked conversations are listed
    assert "Funnel: missed 2, texted 2, replied 2, qualified 2, booked 2" in dashboard.text
    assert "smith-lee-law" in conversations.text and "rivera-family-law" in conversations.text
    assert conversations.text.count("booked") >= 2

"""`textback demo` stores its outcomes in TEXTBACK_DATABASE_URL, and `textback report` shows them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

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

"""The `textback` command as an admin uses it."""

from __future__ import annotations

from typer.testing import CliRunner

from webhooks.cli import app

runner = CliRunner()


def test_config_check_prints_what_each_tenant_has_enabled(tenants_path):
    result = runner.invoke(app, ["config", "check", str(tenants_path)])

    assert result.exit_code == 0, result.output
    assert "smith-law: Smith & Lee Law (law, America/New_York)" in result.output
    assert "crm      hubspot at http://127.0.0.1:" in result.output
    assert "OK, 1 tenant(s)" in result.output


def test_config_check_reports_every_problem_with_file_and_line_and_fails(tenants_path):
    tenants_path.write_text(tenants_path.read_text().replace("vertical: law", "vertical: lawyers")
                            .replace("America/New_York", "Mars/Olympus"))

    result = runner.invoke(app, ["config", "check", str(tenants_path)])

    assert result.exit_code == 1
    assert f"{tenants_path}:4:13: tenants.0.vertical" in result.output
    assert f"{tenants_path}:5:13: tenants.0.timezone: unknown time zone 'Mars/Olympus'" in result.output
    assert "2 problem(s)" in result.output


def test_db_upgrade_creates_the_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.db'}")

    result = runner.invoke(app, ["db", "upgrade"])

    assert result.exit_code == 0 and "newest schema" in result.output
    assert (tmp_path / "fresh.db").exists()

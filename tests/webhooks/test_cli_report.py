"""`textback report`: the seeded funnel as a table, CSV and JSON; bad options are clear errors."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from core.store.db import Database
from core.store.migrate import upgrade
from tests.core.report_seed import seed_known_report
from webhooks.cli import app

runner = CliRunner()


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'report.db'}"
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", url)
    db = Database(url)
    upgrade(db.engine)
    seed_known_report(db)
    db.dispose()
    return url


def test_json_report_for_march_has_the_seeded_funnel_per_tenant_and_in_total(seeded):
    result = runner.invoke(app, ["report", "--since", "2031-03-01", "--until", "2031-04-01", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["funnel"] == {"missed": 9, "texted": 6, "replied": 5, "qualified": 3, "booked": 2}
    assert data["tenants"]["beta"]["funnel"] == {"missed": 3, "texted": 2, "replied": 2, "qualified": 1, "booked": 1}
    assert data["since"].startswith("2031-03-01T00:00:00")


def test_one_tenant_as_csv_is_a_row_for_it_and_one_for_the_total(seeded):
    result = runner.invoke(app, ["report", "-t", "alpha", "--since", "2031-03-01", "-f", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [(r["tenant"], r["missed"], r["booked"], r["first_text_p50_s"]) for r in rows] == [
        ("alpha", "6", "1", "20.0"), ("(all tenants)", "6", "1", "20.0")]
    assert rows[0]["skip_reasons"] == "cooldown=1; opted_out=1"


def test_the_table_names_each_tenant_and_the_skip_reasons(seeded):
    result = runner.invoke(app, ["report", "--since", "2031-03-01"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and "beta" in result.output and "all tenants" in result.output
    assert "cooldown: 1" in result.output and "invalid_number: 1" in result.output


def test_one_row_per_call_lists_each_outcome(seeded):
    result = runner.invoke(app, ["report", "--calls", "--since", "2031-03-01", "-f", "json"])
    assert result.exit_code == 0, result.output
    calls = json.loads(result.output)
    assert len(calls) == 9
    assert sorted(c["sync_status"] for c in calls).count("dead") == 1
    assert sum(c["booked"] for c in calls) == 2


def test_an_unknown_tenant_or_a_bad_date_is_a_clear_error(seeded):
    unknown = runner.invoke(app, ["report", "--tenant", "alpah"])
    assert unknown.exit_code == 2 and "alpah" in unknown.output and "alpha, beta" in unknown.output
    bad = runner.invoke(app, ["report", "--since", "last tuesday"])
    assert bad.exit_code == 2 and "is not a date" in bad.output
    backwards = runner.invoke(app, ["report", "--since", "2031-04-01", "--until", "2031-03-01"])
    assert backwards.exit_code == 2 and "--until must be after --since" in " ".join(backwards.output.split())


def test_the_schema_is_printed_and_matches_the_documented_file(seeded):
    from pathlib import Path

    result = runner.invoke(app, ["report", "--schema"])
    assert result.exit_code == 0
    documented = Path(__file__).parents[2] / "docs" / "report.schema.json"
    assert json.loads(result.output) == json.loads(documented.read_text())
    assert "funnel" in json.loads(result.output)["required"]

"""The demo as a newcomer reads it: a business story in plain words that ends with the funnel, and
not one of the credentials it used anywhere in its output or its logs (even at DEBUG)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from core import redact
from webhooks.demo import run_demo

SECRET_SHAPES = re.compile(r"AC[0-9a-f]{32}|pat-na1-[0-9a-f]{8,}|-----BEGIN PRIVATE KEY-----")


def test_the_demo_tells_a_story_ends_with_the_funnel_and_shows_no_secret_in_output_or_logs(caplog):
    redact.install()  # as `textback` does for every command
    lines: list[str] = []
    used: dict[str, str] = {}

    with caplog.at_level(logging.DEBUG):
        code = run_demo(echo=lines.append, on_start=lambda stack: used.update(stack.env))

    output = "\n".join(lines)
    logs = "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records)
    assert code == 0, output
    assert "📞 Maria Lopez (+15550103333) calls Smith & Lee Law at +15550001111." in output
    assert "textback rings +15550002222 for 18 seconds: nobody picks up." in output
    assert "<Dial" not in output and "DialCallStatus" not in output and "matter_type:" not in output
    assert "deal 1002 on that contact: Family/divorce: Maria Lopez" in output
    assert re.search(r"📅 Outlook consults@riveralaw\.example: .* (AM|PM) \(America/New_York\)", output)
    assert re.search(r"^2 missed calls → 2 texted → 2 replied → 2 qualified → 2 booked, first text within "
                     r"\d+\.\d\d s of the missed call$", output, re.M)
    assert len(used) == 6 and caplog.records
    for name, value in used.items():
        for piece in [value] + [line for line in value.splitlines() if len(line) > 20]:
            assert piece not in output, f"{name} printed by the demo"
            assert piece not in logs, f"{name} in the demo's log"
    assert not SECRET_SHAPES.search(output + logs)


def test_the_demo_as_a_command_exits_0_and_its_verbose_log_has_no_secret_shapes(tmp_path):
    textback = str(Path(sys.executable).with_name("textback"))

    completed = subprocess.run([textback, "demo", "--verbose"], capture_output=True, text=True, timeout=240,
                               env={**os.environ, "TEXTBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"})

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "HTTP Request" in completed.stderr  # the log is there, redacted
    assert not SECRET_SHAPES.search(completed.stdout + completed.stderr)
    assert "Traceback" not in completed.stderr

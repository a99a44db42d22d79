"""`textback sandbox` as a newcomer runs it: a tenants file and env file that `config check --online`
accepts as written, every emulator listed, and nothing left in the temp directory after Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

TEXTBACK = str(Path(sys.executable).with_name("textback"))


def _exports(env_file: Path) -> dict[str, str]:
    """The `export NAME=value` lines, read by a real shell as the README says (`. ./sandbox.env`)."""
    printed = subprocess.run(["sh", "-c", f". {env_file} && env -0"], capture_output=True, timeout=10).stdout
    return dict(item.split("=", 1) for item in printed.decode().split("\0") if "=" in item)


def test_the_sandbox_writes_files_config_check_online_accepts_and_cleans_up_on_sigterm(tmp_path):
    tenants, env_file = tmp_path / "sandbox-tenants.yaml", tmp_path / "sandbox.env"
    sandbox = subprocess.Popen([TEXTBACK, "sandbox", "--port", "0", "--tenants-file", str(tenants),
                                "--env-file", str(env_file)], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not env_file.exists() and time.monotonic() < deadline and sandbox.poll() is None:
            time.sleep(0.1)
        assert env_file.exists(), sandbox.stderr.read() if sandbox.poll() is not None else "sandbox did not start"
        time.sleep(0.3)  # the listing follows the files

        checked = subprocess.run([TEXTBACK, "config", "check", str(tenants), "--online"], capture_output=True,
                                 text=True, timeout=120, env={**_exports(env_file),
                                                              "TEXTBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    finally:
        sandbox.send_signal(signal.SIGTERM)
        out, _ = sandbox.communicate(timeout=30)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 tenant(s), every connector answered" in checked.stdout
    assert "rivera-family-law calendar: ok — outlook" in checked.stdout
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    for vendor in ("Twilio", "HubSpot CRM", "Google Calendar", "Clio Manage", "Microsoft identity", "Microsoft Graph"):
        assert vendor in out
    [ca_folder] = re.findall(r"CA bundle (\S+)/ca\.pem", out)
    assert sandbox.returncode == 0
    assert not os.path.exists(ca_folder)

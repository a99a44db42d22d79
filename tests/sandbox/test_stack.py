"""The whole sandbox at once: every emulator listed, on the host and ports asked, nothing left on disk."""

from __future__ import annotations

import socket
from pathlib import Path

from sandbox.server import free_port
from sandbox.stack import SandboxStack


def test_the_stack_lists_all_six_emulators_on_consecutive_ports_and_removes_its_ca_folder():
    first = free_port("127.0.0.1")
    while True:  # six consecutive free ports from `first`
        if all(_free(first + i) for i in range(6)):
            break
        first = free_port("127.0.0.1")

    with SandboxStack.start(first_port=first, host="127.0.0.1") as stack:
        described = "\n".join(stack.describe())
        ca_folder = Path(stack.microsoft.ca.bundle).parent
        assert ca_folder.is_dir()
        urls = [server.url for server in stack.servers.values()] + [stack.microsoft.login.url, stack.microsoft.api.url]
        exports = stack.export_lines()

    assert [int(url.rsplit(":", 1)[1]) for url in urls] == list(range(first, first + 6))
    for name in ("Twilio", "HubSpot", "Google Calendar", "Clio", "Microsoft identity", "Microsoft Graph"):
        assert name in described
    assert any(line.startswith("export TWILIO_AUTH_TOKEN=") for line in exports)
    assert not ca_folder.exists()


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

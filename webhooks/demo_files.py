"""What the demo leaves behind for `textback serve` and the admin pages: the tenants file it ran with.

The demo's tenants name their secrets `env:NAME`, set only while the demo runs. Written for later,
each secret goes to a file of its own (mode 0600) and the tenants file names it `file:PATH` (the
sandbox's TLS authority, `ca_bundle`, is kept beside them), so
`TEXTBACK_CONFIG=<that file> textback serve` loads the same two businesses, and `/admin` shows the
demo's conversations. The sandbox's credentials are made up for one run and open nothing once it
has stopped; its vendors are gone too, so a connection test on those pages reports them unreachable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url

TENANTS_NAME = "textback-demo-tenants.yaml"
SECRETS_NAME = "textback-demo-secrets"


def place_for(database_url: str) -> Path:
    """Beside a SQLite database file; the working directory for any other database."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).expanduser().resolve().parent
    return Path.cwd()


def write_tenants(tenants: list[dict], env: dict[str, str], directory: Path) -> Path:
    """The tenants file with every `env:NAME` secret moved to a file; answers the tenants file's path."""
    secrets = directory / SECRETS_NAME
    secrets.mkdir(mode=0o700, parents=True, exist_ok=True)

    def to_file(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {name: to_file(each, name) for name, each in value.items()}
        if key == "ca_bundle":  # the sandbox's TLS authority lives in a directory removed when it stops
            kept = secrets / "sandbox-ca.pem"
            kept.write_bytes(Path(value).read_bytes())
            return str(kept)
        if isinstance(value, list):
            return [to_file(each) for each in value]
        if isinstance(value, str) and value.startswith("env:") and value[4:] in env:
            path = secrets / value[4:]
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(env[value[4:]])
            return f"file:{path}"
        return value

    path = directory / TENANTS_NAME
    path.write_text("# Written by `textback demo` for `textback serve` (TEXTBACK_CONFIG) and /admin; the sandbox\n"
                    "# it pointed at has stopped, so its connectors no longer answer.\n"
                    + yaml.safe_dump({"tenants": to_file(tenants)}, sort_keys=False))
    return path

"""Secrets in configuration: `env:NAME` or `file:PATH`, resolved at load, never written inline.

The tenants file is shared with agencies and committed to repositories, so an
inline secret is refused outright.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr


class SecretReferenceError(ValueError):
    pass


def resolve_secret_ref(value: Any) -> Any:
    """Resolve `env:NAME` or `file:PATH`; refuse inline secrets.

    Secrets never live in the tenants file: it is shared with agencies and
    committed to repositories.
    """
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise SecretReferenceError("expected a secret reference such as env:NAME or file:/path")
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise SecretReferenceError(f"environment variable {name} is not set; export it or point to a file with file:/path")
        return os.environ[name]
    if value.startswith("file:"):
        path = Path(value[5:]).expanduser()
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise SecretReferenceError(f"cannot read secret file {path}: {exc.strerror}") from exc
    raise SecretReferenceError("inline secrets are not allowed; write env:NAME or file:/path instead")


Secret = Annotated[SecretStr, BeforeValidator(resolve_secret_ref)]

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
    if is_reference(value):
        return _resolved(value)
    raise SecretReferenceError("inline secrets are not allowed; write env:NAME or file:/path instead")


def resolve_reference(value: Any) -> Any:
    """An id that may be written inline or, like a secret, as `env:NAME` / `file:PATH` (account SIDs,
    client ids: a deployment keeps them next to the secrets). Other values pass through unchanged."""
    return _resolved(value) if isinstance(value, str) and is_reference(value) else value


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and (value.startswith("env:") or value.startswith("file:"))


def _resolved(value: str) -> str:
    if value.startswith("env:"):
        name = value[4:].strip()
        if not name:
            raise SecretReferenceError("env: needs a variable name, e.g. env:TWILIO_AUTH_TOKEN")
        if name not in os.environ:
            raise SecretReferenceError(f"environment variable {name} is not set; export it or point to a file with file:/path")
        resolved = os.environ[name].strip()
        if not resolved:
            raise SecretReferenceError(f"environment variable {name} is set but empty; export its value")
        return resolved
    path = Path(value[5:].strip()).expanduser()
    try:
        resolved = path.read_text().strip()
    except OSError as exc:
        raise SecretReferenceError(f"cannot read secret file {path}: {exc.strerror}") from exc
    if not resolved:
        raise SecretReferenceError(f"secret file {path} is empty; write the value into it")
    return resolved


Secret = Annotated[SecretStr, BeforeValidator(resolve_secret_ref)]
Reference = Annotated[str, BeforeValidator(resolve_reference)]

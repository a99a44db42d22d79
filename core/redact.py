"""Keep secrets out of what textback prints and logs.

Two layers: `mask_url` hides the password of a database or broker URL wherever one is shown, and
`install` puts a record factory in front of `logging` that rewrites every log record's message
before any handler sees it (uvicorn's, Dramatiq's, httpx's, ours): registered secret values become
`***` and Twilio account SIDs in vendor URLs (httpx logs `.../Accounts/AC…/Messages.json`) keep only
their last four characters.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

_SID = re.compile(r"\b(AC|MG|SK)[0-9a-fA-F]{28}([0-9a-fA-F]{4})\b")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_MIN_SECRET = 6  # shorter values would redact ordinary words

_lock = threading.Lock()
_secrets: set[str] = set()
_longest_first: tuple[str, ...] = ()  # _secrets ordered once per registration, not once per log record
_installed = False


def mask_url(url: str) -> str:
    """`postgresql://textback:pw@db/textback` → `postgresql://textback:***@db/textback`."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(url))


def redact(text: str) -> str:
    """`text` with every registered secret, URL password, bearer token and account SID hidden."""
    for value in _longest_first:
        if value in text:
            text = text.replace(value, "***")
    text = mask_url(text)
    text = _BEARER.sub(r"\1***", text)
    return _SID.sub(lambda m: f"{m[1]}…{m[2]}", text)


def register(*values: Any) -> None:
    """Remember secret values (str or SecretStr) so that no log line or CLI output shows them."""
    global _longest_first
    with _lock:
        for value in values:
            raw = value.get_secret_value() if isinstance(value, SecretStr) else value
            if isinstance(raw, str) and len(raw.strip()) >= _MIN_SECRET:
                _secrets.add(raw.strip())
                _secrets.update(line.strip() for line in raw.splitlines() if len(line.strip()) >= 24)
        _longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def register_models(models: Iterable[Any]) -> None:
    """Register every SecretStr found in pydantic models (tenants, their connector configs), recursively."""
    for model in models:
        register(*_secret_values(model))


def _secret_values(value: Any) -> Iterable[SecretStr]:
    if isinstance(value, SecretStr):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secret_values(getattr(value, name, None))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secret_values(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _secret_values(item)


def install() -> None:
    """Redact every log record of this process from now on (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)

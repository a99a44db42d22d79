"""Structured logs: one JSON object per line, with the request id, tenant and call sid of the work at hand.

`configure_logging()` is called once by `textback serve` and `textback worker`
(`TEXTBACK_LOG_FORMAT=text` for the human format). Every record passes `Redact`: phone numbers keep
only their last four digits, Twilio account/auth ids and bearer tokens are masked, whatever the
message says; code never logs message bodies. Third-party loggers that are chatty or print URLs
carrying account ids (alembic, httpx, httpcore, twilio's HTTP client, Google's discovery cache) are
kept at WARNING.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
from datetime import datetime, timezone

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)
call_sid: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_sid", default=None)

QUIET = ("alembic", "httpx", "httpcore", "twilio.http_client", "googleapiclient.discovery_cache", "msal",
         "urllib3", "dramatiq.worker.ConsumerThread")
_PHONE = re.compile(r"\+\d{7,15}\b|\b\d{10,11}\b")  # E.164, or a bare national number
_SECRETS = re.compile(r"\b(AC|SK|MG)[0-9a-f]{32}\b|(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}|\bpat-[a-z0-9-]{8,}", re.I)


def mask(text: str) -> str:
    text = _PHONE.sub(lambda m: "…" + m.group(0)[-4:], text)
    return _SECRETS.sub(lambda m: (m.group(2) or (m.group(1) or "")) + "***", text)


class Redact(logging.Filter):
    """Masks numbers and secrets in the rendered message (args included), for every handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = mask(message), None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        for name, var in (("request_id", request_id), ("tenant", tenant), ("call_sid", call_sid)):
            value = var.get()
            if value:
                entry[name] = value
        for key in ("route", "method", "status", "ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["error"] = mask(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(*, level: int = logging.INFO, fmt: str | None = None, stream=None) -> logging.Handler:
    fmt = fmt or os.environ.get("TEXTBACK_LOG_FORMAT", "json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(Redact())
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    return handler

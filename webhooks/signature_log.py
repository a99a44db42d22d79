"""Say why a Twilio signature failed: the URL it was checked against and the most likely cause.

A wrong TEXTBACK_PUBLIC_URL is the common trap (Twilio signs the exact URL it called: scheme, host,
port, path, query), so the warning compares it with the address the request says it came to. Forged
or scanning traffic can repeat fast: one warning per tenant and cause per `every` seconds, with the
number suppressed in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

log = logging.getLogger("textback.signatures")


def likely_cause(*, checked_url: str, seen_url: str, signed: bool) -> str:
    if not signed:
        return "the request has no X-Twilio-Signature: it did not come from Twilio"
    checked, seen = urlsplit(checked_url), urlsplit(seen_url)
    if (checked.scheme, checked.netloc) != (seen.scheme, seen.netloc):
        return (f"TEXTBACK_PUBLIC_URL is {checked.scheme}://{checked.netloc} but the request came to "
                f"{seen.scheme}://{seen.netloc}; set TEXTBACK_PUBLIC_URL to exactly the URL configured in Twilio "
                "(behind a proxy, it must pass Host and X-Forwarded-Proto)")
    return ("the number's Twilio account has another auth token than the tenants file (rotated?), or a proxy "
            "changed the path or query")


class SignatureFailures:
    def __init__(self, *, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def report(self, *, tenant_id: str, checked_url: str, seen_url: str, signed: bool) -> bool:
        """Log the failure at WARNING unless one like it was logged in the last `every` s; True if logged."""
        cause = likely_cause(checked_url=checked_url, seen_url=seen_url, signed=signed)
        key, now = (tenant_id, cause), self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        more = f" ({suppressed} more like it since the last warning)" if suppressed else ""
        log.warning("rejected a Twilio webhook for tenant %s: the signature does not match the URL %s; likely "
                    "cause: %s%s", tenant_id, checked_url, cause, more)
        return True


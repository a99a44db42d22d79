"""Verifying the vendors' own push requests: HubSpot's signatures and Clio's hook signature.

Google channels and Graph subscriptions prove themselves with a secret we chose when subscribing
(channel token, clientState), checked against its stored hash in core/store/sync_state.py.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone

from hubspot.utils.signature import Signature

from core import constant_time

HUBSPOT_WINDOW = timedelta(minutes=5)  # HubSpot's documented limit on the age of a v3 request


class Unsigned(Exception):
    """No signature at all: 401."""


class Forged(Exception):
    """A signature that does not verify, or one too old to trust: 403."""


def check_hubspot(*, secret: str, versions: list[str], method: str, uri: str, body: bytes,
                  headers: dict[str, str], now: datetime) -> str:
    """The version that verified; Unsigned or Forged otherwise. v1/v2 only when the tenant allows them,
    since they carry no timestamp and a captured request could be replayed for ever."""
    v3, timestamp = headers.get("x-hubspot-signature-v3"), headers.get("x-hubspot-request-timestamp")
    legacy, legacy_version = headers.get("x-hubspot-signature"), headers.get("x-hubspot-signature-version", "v1")
    if v3 and "v3" in versions:
        if not timestamp or not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 15):
            raise Forged("X-HubSpot-Request-Timestamp is missing or not milliseconds")  # ("²" is a digit to isdigit)
        sent = datetime.fromtimestamp(int(timestamp) / 1000, timezone.utc)
        if abs(now - sent) > HUBSPOT_WINDOW:
            raise Forged(f"the request is {abs(now - sent).total_seconds():.0f} s old; HubSpot's limit is 300 s")
        expected = Signature.get_signature(secret, body.decode("utf-8", "replace"), "v3", uri, method, timestamp)
        if not constant_time.equal(v3, expected):
            raise Forged("X-HubSpot-Signature-v3 does not match")
        return "v3"
    if legacy and legacy_version in ("v1", "v2") and legacy_version in versions:
        expected = Signature.get_signature(secret, body.decode("utf-8", "replace"), legacy_version, uri, method)
        if not constant_time.equal(legacy, expected):
            raise Forged(f"X-HubSpot-Signature ({legacy_version}) does not match")
        return legacy_version
    if v3 or legacy:
        raise Forged(f"the signature versions sent are not accepted here (accepted: {', '.join(versions)})")
    raise Unsigned("no X-HubSpot-Signature-v3")


def clio_signature(secret: str, body: bytes) -> str:
    """Clio's X-Hook-Signature: hex HMAC-SHA256 of the raw body, keyed with the handshake's secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_clio(*, secret: str, body: bytes, signature: str | None) -> None:
    if not signature:
        raise Unsigned("no X-Hook-Signature")
    if not constant_time.equal(signature.strip().lower(), clio_signature(secret, body)):
        raise Forged("X-Hook-Signature does not match")

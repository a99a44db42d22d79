"""The one way textback compares a presented proof (signature, token, key, CSRF token) with the expected one.

`hmac.compare_digest` takes as long whatever the two values share, so timing tells an attacker nothing about
how close a guess was. Given two `str`, it raises TypeError when either has a character beyond ASCII, and
whatever a client sends in a header or a form field may: compared directly, a forged request with "é" in its
signature is a 500 instead of a 403. Both sides are compared here as UTF-8 bytes, which any text is.
tests/webhooks/test_constant_time.py fails if an auth module compares such values another way.
"""

from __future__ import annotations

import hmac


def equal(presented: str | bytes | None, expected: str | bytes | None) -> bool:
    """True only when both are given and equal; in time that does not depend on where they differ."""
    if presented is None or expected is None:
        return False
    return hmac.compare_digest(_bytes(presented), _bytes(expected))


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value

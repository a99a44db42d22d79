"""Connections: per tenant and role, the vendor account textback holds OAuth tokens for.

A connection is `active` until the vendor refuses its refresh token (revoked, expired,
consent withdrawn); then it is `needs_reauth` and every job that needs it is parked until
`textback connect` authorizes it again, which also sets the tenant's parked jobs back to
pending so that nothing is dropped.

Tokens are encrypted at rest with Fernet under the keys in TEXTBACK_SECRET_KEYS, newest
first. To rotate: prepend a new key (rows written under the older keys still decrypt), run
`textback connectors rotate-keys` (every row is re-encrypted under the newest key), then
drop the old key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.store.tables import Connection, OutboxRow

ACTIVE = "active"
NEEDS_REAUTH = "needs_reauth"
NEW_KEY_HINT = ("generate one with `textback connectors new-key` (or `python -c \"from cryptography.fernet import "
                "Fernet; print(Fernet.generate_key().decode())\"`) and export TEXTBACK_SECRET_KEYS=<key>")


class SecretKeyError(RuntimeError):
    """The encryption keys are missing, malformed, or do not open a stored row."""


@dataclass(frozen=True)
class TokenSet:
    """What a token endpoint granted; only ever stored encrypted."""

    access_token: str
    refresh_token: str | None
    expires_at: datetime | None

    def expiring(self, now: datetime, *, margin: timedelta) -> bool:
        return self.expires_at is not None and self.expires_at - margin <= now


class TokenCipher:
    """MultiFernet over the configured keys: encrypts with the newest, decrypts with any."""

    def __init__(self, keys: Sequence[str]) -> None:
        keys = [key.strip() for key in keys if key.strip()]
        if not keys:
            raise SecretKeyError(f"no encryption key is configured for stored OAuth tokens; {NEW_KEY_HINT}")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError as exc:
            raise SecretKeyError("TEXTBACK_SECRET_KEYS holds a value that is not a Fernet key (32 url-safe "
                                 f"base64-encoded bytes); {NEW_KEY_HINT}") from exc

    @classmethod
    def from_secret(cls, secret_keys: SecretStr | None) -> "TokenCipher":
        """From Settings.secret_keys: comma-separated, newest first."""
        return cls((secret_keys.get_secret_value() if secret_keys else "").split(","))

    def encrypt(self, tokens: TokenSet) -> str:
        payload = {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token,
                   "expires_at": tokens.expires_at.isoformat() if tokens.expires_at else None}
        return self._fernet.encrypt(json.dumps(payload).encode()).decode()

    def decrypt(self, blob: str) -> TokenSet:
        try:
            payload = json.loads(self._fernet.decrypt(blob.encode()))
        except InvalidToken as exc:
            raise SecretKeyError("a stored token was encrypted with a key that is not in TEXTBACK_SECRET_KEYS; "
                                 "put the old key back (after the new one) and run `textback connectors "
                                 "rotate-keys`") from exc
        expires_at = payload["expires_at"]
        return TokenSet(payload["access_token"], payload["refresh_token"],
                        datetime.fromisoformat(expires_at) if expires_at else None)

    def rotate(self, blob: str) -> str:
        try:
            return self._fernet.rotate(blob.encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyError("a stored token does not open with any key in TEXTBACK_SECRET_KEYS; "
                                 "add the key it was written with and run rotate-keys again") from exc


def new_key() -> str:
    return Fernet.generate_key().decode()


def find(session: Session, *, tenant_id: str, role: str, for_update: bool = False) -> Connection | None:
    """The tenant's connection for `role`; `for_update` locks the row (PostgreSQL) while a refresh runs."""
    query = select(Connection).where(Connection.tenant_id == tenant_id, Connection.role == role)
    return session.scalar(query.with_for_update() if for_update else query)


def store(
    session: Session, *, tenant_id: str, role: str, provider: str, tokens: TokenSet, scopes: list[str],
    account_label: str | None, cipher: TokenCipher, now: datetime,
) -> int:
    """Save a fresh authorization as the active connection; returns how many parked jobs it set back to pending."""
    connection = find(session, tenant_id=tenant_id, role=role)
    if connection is None:
        connection = Connection(tenant_id=tenant_id, role=role, created_at=now)
        session.add(connection)
    connection.provider, connection.scopes, connection.account_label = provider, scopes, account_label
    connection.status, connection.status_reason = ACTIVE, None
    connection.token_blob, connection.expires_at = cipher.encrypt(tokens), tokens.expires_at
    connection.updated_at = now
    session.flush()
    return unpark(session, tenant_id=tenant_id)


def save_tokens(session: Session, connection: Connection, tokens: TokenSet, *, cipher: TokenCipher,
                now: datetime) -> None:
    """Keep a refreshed token set (and a rotated refresh token) on the connection."""
    connection.token_blob, connection.expires_at, connection.updated_at = cipher.encrypt(tokens), tokens.expires_at, now


def mark_needs_reauth(session: Session, *, tenant_id: str, role: str, reason: str, now: datetime) -> bool:
    """Flag an active connection for re-authorization, keeping the first reason; False when nothing changed."""
    changed = session.execute(
        update(Connection).where(Connection.tenant_id == tenant_id, Connection.role == role,
                                 Connection.status == ACTIVE)
        .values(status=NEEDS_REAUTH, status_reason=reason[:2000], updated_at=now)
    ).rowcount
    return bool(changed)


def unpark(session: Session, *, tenant_id: str) -> int:
    """Parked jobs of the tenant back to pending, for the relay to enqueue on its next pass."""
    return session.execute(
        update(OutboxRow).where(OutboxRow.tenant_id == tenant_id, OutboxRow.status == "parked")
        .values(status="pending", attempts=0, enqueued_at=None, claimed_until=None, done_at=None)
    ).rowcount


def everything(session: Session) -> list[Connection]:
    return list(session.scalars(select(Connection).order_by(Connection.tenant_id, Connection.role)))


def rotate_keys(session: Session, *, cipher: TokenCipher) -> int:
    """Re-encrypt every stored token set under the newest key; returns the number of rows."""
    connections = everything(session)
    for connection in connections:
        connection.token_blob = cipher.rotate(connection.token_blob)
    return len(connections)

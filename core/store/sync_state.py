"""The two-way sync's own records: push subscriptions held at vendors, and pull cursors per feed."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import constant_time
from core.store.tables import SyncCursor, SyncSubscription


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()  # JSON may carry lone surrogates


def secret_matches(subscription: SyncSubscription, presented: str | None) -> bool:
    """Constant-time check of the token/clientState a notification carries against the stored hash."""
    if not presented or not subscription.secret_sha256:
        return False
    return constant_time.equal(digest(presented), subscription.secret_sha256)


def subscription(session: Session, *, provider: str, external_id: str) -> SyncSubscription | None:
    return session.scalar(select(SyncSubscription).where(
        SyncSubscription.provider == provider, SyncSubscription.external_id == external_id))


def by_path_token(session: Session, token: str) -> SyncSubscription | None:
    return session.scalar(select(SyncSubscription).where(SyncSubscription.path_token == token))


def live_subscriptions(session: Session, *, tenant_id: str, provider: str) -> list[SyncSubscription]:
    return list(session.scalars(select(SyncSubscription).where(
        SyncSubscription.tenant_id == tenant_id, SyncSubscription.provider == provider,
        SyncSubscription.status.in_(("pending", "active"))).order_by(SyncSubscription.id)))


def read_cursor(session: Session, *, tenant_id: str, provider: str, scope: str) -> dict | None:
    row = _cursor_row(session, tenant_id, provider, scope)
    return json.loads(row.cursor) if row is not None and row.cursor else None


def save_cursor(session: Session, *, tenant_id: str, provider: str, scope: str, cursor: dict | None,
                now: datetime) -> None:
    row = _cursor_row(session, tenant_id, provider, scope)
    if row is None:
        row = SyncCursor(tenant_id=tenant_id, provider=provider, scope=scope)
        session.add(row)
    row.cursor, row.updated_at = (json.dumps(cursor, sort_keys=True) if cursor else None), now


def _cursor_row(session: Session, tenant_id: str, provider: str, scope: str) -> SyncCursor | None:
    return session.scalar(select(SyncCursor).where(
        SyncCursor.tenant_id == tenant_id, SyncCursor.provider == provider, SyncCursor.scope == scope))

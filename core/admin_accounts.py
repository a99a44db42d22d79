"""Admin accounts, sessions and what each user may see.

Passwords are hashed with argon2id (argon2-cffi's defaults); a browser session is a random
token in an HttpOnly cookie whose SHA-256 is stored with the user and a CSRF token, for
`SESSION_HOURS`. An agency admin sees every tenant of this deployment; a business user only
their own, and another tenant's records answer as if they did not exist.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.store.tables import AdminSession, AdminUser

SESSION_HOURS = 12
MIN_PASSWORD = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_hasher = PasswordHasher()
# Verified against when the email is unknown, so a wrong email costs the same time as a wrong password.
_DUMMY = _hasher.hash("not a password of anyone")


class AccountError(ValueError):
    """A user that cannot be created as asked (bad email, short password, taken email)."""


@dataclass(frozen=True)
class Viewer:
    """The signed-in user, as the pages need them."""

    user_id: int
    email: str
    agency: bool
    tenant_id: str | None
    csrf_token: str

    def tenants(self, known: list[str]) -> list[str]:
        return list(known) if self.agency else [t for t in known if t == self.tenant_id]

    def may_see(self, tenant_id: str) -> bool:
        return self.agency or tenant_id == self.tenant_id


def add_user(session: Session, *, email: str, password: str, tenant_id: str | None, agency: bool) -> AdminUser:
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise AccountError(f"{email!r} is not an email address")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password needs at least {MIN_PASSWORD} characters")
    if agency == (tenant_id is not None):
        raise AccountError("say either --agency or --tenant T")
    if session.scalar(select(AdminUser.id).where(AdminUser.email == email)) is not None:
        raise AccountError(f"{email} already has an account")
    user = AdminUser(email=email, password_hash=_hasher.hash(password), tenant_id=tenant_id, agency=agency)
    session.add(user)
    session.flush()
    return user


def sign_in(session: Session, *, email: str, password: str, now: datetime) -> str | None:
    """A new session token for the right email and password; None otherwise (the same for both mistakes)."""
    user = session.scalar(select(AdminUser).where(AdminUser.email == email.strip().lower()))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    token = secrets.token_urlsafe(32)
    session.execute(delete(AdminSession).where(AdminSession.user_id == user.id, AdminSession.expires_at < now))
    session.add(AdminSession(token_sha256=_sha256(token), user_id=user.id, csrf_token=secrets.token_urlsafe(32),
                             expires_at=now + timedelta(hours=SESSION_HOURS), created_at=now))
    return token


def viewer(session: Session, *, token: str | None, now: datetime) -> Viewer | None:
    if not token:
        return None
    row = session.execute(select(AdminSession, AdminUser).join(AdminUser, AdminUser.id == AdminSession.user_id)
                          .where(AdminSession.token_sha256 == _sha256(token))).first()
    if row is None or row.AdminSession.expires_at <= now:
        return None
    user = row.AdminUser
    return Viewer(user.id, user.email, user.agency, user.tenant_id, row.AdminSession.csrf_token)


def sign_out(session: Session, *, token: str) -> None:
    session.execute(delete(AdminSession).where(AdminSession.token_sha256 == _sha256(token)))


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()

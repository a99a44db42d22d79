"""Shared fixtures: real databases (SQLite, PostgreSQL), a real Redis, and the sandbox vendors over HTTP."""

from __future__ import annotations

import os
import secrets
import socket
from urllib.parse import urlparse

import pytest
from sqlalchemy import create_engine, text

from core.store.db import Database
from core.store.migrate import upgrade

POSTGRES_URL = os.environ.get("TEXTBACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEXTBACK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _need(url: str, port: int, what: str) -> None:
    if not _reachable(url, port):
        if IN_CI:
            pytest.fail(f"{what} is not reachable at {url}; .ci/run should have started it")
        pytest.skip(f"{what} is not running at {url} (start it, or CI will)")


@pytest.fixture
def sqlite_db(tmp_path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'textback.db'}")
    upgrade(db.engine)
    yield db
    db.dispose()


@pytest.fixture
def postgres_db() -> Database:
    _need(POSTGRES_URL, 5432, "PostgreSQL")
    name = "textback_test_" + secrets.token_hex(4)
    admin = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    db = Database(url)
    upgrade(db.engine)
    yield db
    db.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request) -> Database:
    """The same test on both backends the product supports."""
    return request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "postgres_db")


@pytest.fixture
def redis_url() -> str:
    _need(REDIS_URL, 6379, "Redis")
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()

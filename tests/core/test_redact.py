"""Secrets never reach output or logs: URL passwords masked, registered values and SIDs redacted."""

from __future__ import annotations

import logging

from pydantic import BaseModel, SecretStr

from core import redact


class _Config(BaseModel):
    token: SecretStr
    nested: dict[str, SecretStr] = {}


def test_database_and_broker_urls_keep_everything_but_the_password():
    assert redact.mask_url("postgresql://textback:pa55@db.internal:5432/textback") == \
        "postgresql://textback:***@db.internal:5432/textback"
    assert redact.mask_url("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact.mask_url("sqlite:///textback.db") == "sqlite:///textback.db"


def test_registered_secrets_bearer_tokens_and_account_sids_are_redacted_from_text():
    redact.register_models([_Config(token=SecretStr("tok-registered-123"),
                                    nested={"k": SecretStr("nested-secret-456")})])
    sid = "AC" + "0123456789abcdef" * 2

    text = redact.redact(f"GET /Accounts/{sid}/Messages.json with tok-registered-123, nested-secret-456 and "
                         "Authorization: Bearer abcdefghijklmnop")

    assert text == ("GET /Accounts/AC…cdef/Messages.json with ***, *** and Authorization: Bearer ***")


def test_installed_redaction_rewrites_log_records_before_any_handler_sees_them(caplog):
    redact.install()
    redact.register("worker-visible-secret")

    with caplog.at_level(logging.INFO):
        logging.getLogger("tests.redact").info("calling with %s", "worker-visible-secret")
        try:
            raise RuntimeError("failed with worker-visible-secret")
        except RuntimeError:
            logging.getLogger("tests.redact").exception("boom")

    assert caplog.records[0].getMessage() == "calling with ***"
    assert "worker-visible-secret" not in caplog.text
    assert "failed with ***" in (caplog.records[1].exc_text or "")


def test_short_values_are_not_registered_so_ordinary_words_survive():
    redact.register("abc", "")

    assert redact.redact("abc def") == "abc def"

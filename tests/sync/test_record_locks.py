"""CRM writes about one caller run one at a time, across workers; a locked record is retried, not lost."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from connectors.base import Transient
from core.store.tables import OutboxRow
from sync.locks import RecordLocks
from tests.webhooks.conftest import CALLER, miss_a_call, texts_to


def _crm_rows(textback) -> list[OutboxRow]:
    with textback.runtime.db.transaction() as s:
        return list(s.scalars(select(OutboxRow).where(OutboxRow.kind == "crm_sync_lead")))


def test_a_crm_push_waits_while_another_job_writes_the_same_caller_and_then_lands_once(phone, textback, stack):
    with textback.runtime.locks.hold("crm:smith-law:lead:1"):
        miss_a_call(phone)
        deadline = time.monotonic() + 10
        while not texts_to(stack, CALLER) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(texts_to(stack, CALLER)) == 1  # the caller's text does not wait for the CRM
        [row] = _crm_rows(textback)
        assert row.status == "pending" and "being written by another job" in row.last_error
        assert row.attempts == 0  # waiting for the lock is not a failed attempt
        assert stack.hubspot.objects("contacts") == []

    textback.drain()

    assert [r.status for r in _crm_rows(textback)] == ["done"]
    assert len(stack.hubspot.objects("contacts")) == 1


def test_the_lock_is_shared_through_redis_between_workers(redis_url):
    first, second = RecordLocks.for_broker_url(redis_url), RecordLocks.for_broker_url(redis_url)

    with first.hold("crm:t:lead:7"):
        with pytest.raises(Transient, match="being written by another job"):
            with second.hold("crm:t:lead:7"):
                pass
        with second.hold("crm:t:lead:8"):
            pass

    with second.hold("crm:t:lead:7"):
        pass

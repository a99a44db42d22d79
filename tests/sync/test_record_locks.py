"""CRM writes about one caller run one at a time, across workers; a locked record is retried, not lost."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from connectors.base import Transient
from core.store.tables import OutboxRow
from sync.locks import LOCK_TTL_MS, PREFIX, MemoryLockStore, RecordLocks
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


@pytest.mark.parametrize("where", ["redis", "memory"])
def test_a_batch_takes_the_free_locks_of_many_callers_at_once_and_frees_only_its_own(where, redis_url):
    if where == "redis":
        batch, single = RecordLocks.for_broker_url(redis_url), RecordLocks.for_broker_url(redis_url)
    else:
        batch = single = RecordLocks()

    with single.hold("crm:t:lead:2"):
        with batch.hold_all(["crm:t:lead:1", "crm:t:lead:2", "crm:t:lead:3", "crm:t:lead:1"]) as taken:
            assert taken == [True, False, True, False]  # 2 is held; 1 named twice is taken once
            for key in ("crm:t:lead:1", "crm:t:lead:3"):
                with pytest.raises(Transient, match="being written by another job"):
                    with single.hold(key):
                        pass
        # the batch freed 1 and 3, not the single job's 2
        with pytest.raises(Transient):
            with batch.hold("crm:t:lead:2"):
                pass
        with single.hold("crm:t:lead:1"), single.hold("crm:t:lead:3"):
            pass

    with batch.hold_all([]) as taken:
        assert taken == []


def test_a_lock_left_by_a_dead_holder_frees_itself_after_its_ttl():
    now = [100.0]
    locks = RecordLocks(MemoryLockStore(clock=lambda: now[0]))
    locks.store.acquire([PREFIX + "crm:t:lead:9"], "dead-worker", LOCK_TTL_MS)

    with pytest.raises(Transient):
        with locks.hold("crm:t:lead:9"):
            pass
    now[0] += LOCK_TTL_MS / 1000
    with locks.hold("crm:t:lead:9"):
        pass


def test_a_lock_freed_by_an_earlier_version_counts_as_free(redis_url):
    import redis

    redis.Redis.from_url(redis_url).set(PREFIX + "crm:t:lead:11", "0", px=LOCK_TTL_MS)  # Dramatiq's released mutex
    with RecordLocks.for_broker_url(redis_url).hold("crm:t:lead:11"):
        pass

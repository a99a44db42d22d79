"""Request budgets shared in Redis: every worker of one connection counts on the same window."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from connectors.quota import Concurrency, OverQuota, Quota, counted
from sync.quotas import LocalMeter, RedisMeter


@pytest.fixture
def meters(redis_url):
    """Four meters on four Redis connections, as four worker processes would have."""
    clients = [redis.Redis.from_url(redis_url) for _ in range(4)]
    yield [RedisMeter(client) for client in clients]
    for client in clients:
        client.close()


def test_four_workers_share_one_budget_and_learn_when_the_next_slot_frees(meters):
    # Given: a connection allowed 12 requests per 2 s, and four workers asking at once
    quota = Quota("vendor:test", 12, 2.0)
    granted, refused = [], []

    def ask(meter):
        for _ in range(6):
            try:
                meter.take(quota)
                granted.append(time.monotonic())
            except OverQuota as exc:
                refused.append(exc.retry_after)

    # When
    threads = [threading.Thread(target=ask, args=(meter,)) for meter in meters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then: 12 slots in all, and the other 12 asks are told to come back within the window
    assert len(granted) == 12 and len(refused) == 12
    assert all(0 < wait <= 2.2 for wait in refused)


def test_a_slot_frees_once_its_window_has_passed(meters):
    quota = Quota("vendor:window", 2, 0.5)
    meters[0].take(quota)
    meters[1].take(quota)
    with pytest.raises(OverQuota) as over:
        meters[2].take(quota)

    time.sleep(over.value.retry_after + 0.02)

    meters[3].take(quota)  # no OverQuota: the first request left the window


def test_a_429_shrinks_the_budget_and_holds_every_worker_for_retry_after(meters):
    quota = Quota("vendor:shrink", 100, 10.0)

    meters[0].refused(quota, 1.0)

    assert meters[1].limit(quota) == 80
    with pytest.raises(OverQuota) as held:
        meters[2].take(quota)
    assert 0.5 < held.value.retry_after <= 1.0
    meters[0].refused(quota, 0.0)
    assert meters[3].limit(quota) == 80  # a second 429 in the same window is the same signal


def test_a_429_in_a_later_window_shrinks_again_but_never_below_a_quarter_of_the_budget(meters):
    quota = Quota("vendor:shrink-windows", 100, 0.2)
    limits = []
    for _ in range(8):
        meters[0].refused(quota, 0.0)
        limits.append(meters[1].limit(quota))
        time.sleep(0.25)

    assert limits[:3] == [80, 64, 51] and limits[-1] == 25


def test_the_vendors_lower_limit_is_adopted_and_an_exhausted_window_waits_for_its_reset(meters):
    quota = Quota("clio:headers", 200, 60.0)
    reset_at = time.time() + 3

    meters[0].reported(quota, limit=50, remaining=0, reset_at=reset_at)

    assert meters[1].limit(quota) == 50
    with pytest.raises(OverQuota) as held:
        meters[2].take(quota)
    assert 2 < held.value.retry_after <= 3.5


def test_the_in_process_meter_keeps_the_same_rules():
    meter, quota = LocalMeter(), Quota("vendor:local", 3, 1.0)
    for _ in range(3):
        meter.take(quota)
    with pytest.raises(OverQuota):
        meter.take(quota)
    meter.refused(quota, 0.0)
    assert meter.limit(quota) == 2
    meter.refused(quota, 0.0)
    assert meter.limit(quota) == 2  # once per window
    meter.reported(quota, limit=1, remaining=None, reset_at=None)
    assert meter.limit(quota) == 1


def test_a_concurrency_limit_is_shared_by_every_worker_and_frees_when_a_request_ends(meters):
    slots = Concurrency("graph:mailbox", 2)
    with meters[0].hold(slots), meters[1].hold(slots):
        with pytest.raises(OverQuota):
            with meters[2].hold(slots):
                pass
    with meters[3].hold(slots):
        pass  # both slots were given back


def _slow_request_then_ask_again(meter, quota) -> float:
    """One request answered 0.4 s after its slot; how long the next ask, once refused, must wait."""
    with counted(meter, [quota]):
        time.sleep(0.4)  # a busy box, a new TLS connection: the vendor saw it at some moment in here
    with pytest.raises(OverQuota) as over:
        meter.take(quota)
    return over.value.retry_after


def test_a_request_is_counted_from_its_answer_so_a_slow_one_cannot_share_the_vendors_next_window(meters):
    quota = Quota("vendor:answered", 1, 1.0)

    wait = _slow_request_then_ask_again(meters[0], quota)

    assert wait > 1.0  # the full window from the answer (1.15 s padded), not 0.75 s from the slot


def test_the_in_process_meter_counts_from_the_answer_too():
    quota = Quota("vendor:answered-local", 1, 1.0)

    wait = _slow_request_then_ask_again(LocalMeter(), quota)

    assert wait > 1.0


def test_a_job_that_has_sent_a_request_waits_for_its_next_slot_instead_of_giving_up(meters):
    # Given: a budget of 2 requests per 0.6 s, already spent, and a job of three requests
    from connectors.quota import job_requests

    quota, meter = Quota("vendor:midjob", 2, 0.6), meters[0]
    sent = []
    with job_requests():
        with counted(meter, [quota]):
            sent.append("first")
        with counted(meter, [quota]):
            sent.append("second")
        # When: its third request finds the window full
        started = time.monotonic()
        with counted(meter, [quota]):
            sent.append("third")

    # Then: it waited in its thread for the slot (the window's age), and every request went out
    assert sent == ["first", "second", "third"] and 0.2 < time.monotonic() - started < 3


def test_the_first_request_of_a_job_and_any_request_outside_a_job_never_wait(meters):
    from connectors.quota import job_requests

    quota, meter = Quota("vendor:firstreq", 1, 30.0), meters[1]
    with counted(meter, [quota]):
        pass
    started = time.monotonic()
    with pytest.raises(OverQuota):
        with counted(meter, [quota]):
            pass  # outside a job
    with pytest.raises(OverQuota), job_requests():
        with counted(meter, [quota]):
            pass  # a job's first request: back to the queue, no thread held
    assert time.monotonic() - started < 1


def test_a_job_whose_next_slot_is_further_than_the_wait_bound_gives_up_and_goes_back_to_the_queue(meters):
    from connectors.quota import MID_JOB_WAIT, job_requests

    quota, meter = Quota("vendor:farslot", 1, MID_JOB_WAIT * 4), meters[2]
    started = time.monotonic()
    with pytest.raises(OverQuota), job_requests():
        with counted(meter, [quota]):
            pass
        with counted(meter, [quota]):
            pass
    assert time.monotonic() - started < 1  # the slot is 20 s away: no point holding the thread


def test_at_most_two_threads_of_a_process_wait_mid_job_so_the_others_stay_free_for_texts(meters):
    from connectors.quota import MID_JOB_WAITERS, job_requests

    quota, meter = Quota("vendor:waiters", 3, 2.5), meters[3]
    ends: list[str] = []
    go = threading.Barrier(MID_JOB_WAITERS + 1)

    def job():
        with job_requests():
            with counted(meter, [quota]):
                pass  # three jobs spend the window's three slots
            go.wait()
            try:
                with counted(meter, [quota]):
                    ends.append("waited and sent")
            except OverQuota:
                ends.append("back to the queue")

    threads = [threading.Thread(target=job) for _ in range(MID_JOB_WAITERS + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(ends) == ["back to the queue"] + ["waited and sent"] * MID_JOB_WAITERS

"""The cap on concurrent Mailchimp connections: per process without Redis, global with Redis."""

import multiprocessing
import threading
import time
import uuid

import pytest
from django.conf import settings

from connectors.mailchimp.client import MailchimpClient
from connectors.mailchimp.errors import MailchimpTransientError
from connectors.mailchimp.limiter import LocalConnectionLimiter, RedisConnectionLimiter, build_limiter, limiter_key

from .conftest import API_KEY
from .limiter_worker import hold_slots

needs_redis = pytest.mark.skipif(
    not settings.REDIS_URL, reason="REDIS_URL is not set: the cross-process limiter needs a real Redis"
)


def wait_for(condition, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)


def test_every_client_request_holds_a_slot(mailchimp_emulator):
    client = MailchimpClient(
        api_key=API_KEY, api_url=mailchimp_emulator.api_url, limiter=LocalConnectionLimiter(limit=2, acquire_timeout=30)
    )
    mailchimp_emulator.hold()
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(client.ping())) for _ in range(5)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: mailchimp_emulator.stats()["in_flight"] == 2)
    finally:
        mailchimp_emulator.release()
        for thread in threads:
            thread.join(timeout=30)
    assert len(results) == 5
    assert mailchimp_emulator.stats()["max_in_flight"] == 2
    assert mailchimp_emulator.stats()["rejected_for_concurrency"] == 0


def test_local_limiter_gives_up_after_its_bounded_wait():
    limiter = LocalConnectionLimiter(limit=1, acquire_timeout=0.05)
    with limiter.slot(), pytest.raises(MailchimpTransientError, match="no free Mailchimp connection slot"):
        with limiter.slot():
            pass
    with limiter.slot():  # released again
        pass


def test_without_redis_the_limiter_is_process_local():
    limiter = build_limiter(redis_url="", api_key=API_KEY, limit=10, request_timeout=10)
    assert isinstance(limiter, LocalConnectionLimiter) and limiter.limit == 10


def test_an_unreachable_redis_is_a_transient_error():
    limiter = RedisConnectionLimiter(redis_url="redis://127.0.0.1:1/0", key="k", limit=1, acquire_timeout=1)
    with pytest.raises(MailchimpTransientError, match="limiter"):
        limiter.try_acquire()


def test_the_redis_key_names_the_account_without_the_api_key():
    key = limiter_key(api_key=API_KEY)
    assert API_KEY not in key and key == limiter_key(api_key=API_KEY) != limiter_key(api_key="other-us1")


@pytest.mark.broker
@needs_redis
def test_redis_limiter_refuses_beyond_the_limit_until_a_lease_is_released():
    key = f"test:mailchimp:connections:{uuid.uuid4().hex}"
    limiter = RedisConnectionLimiter(redis_url=settings.REDIS_URL, key=key, limit=3, lease_seconds=30)
    leases = [limiter.try_acquire() for _ in range(3)]
    assert all(leases) and limiter.held() == 3
    assert limiter.try_acquire() is None
    limiter.release(leases[0])
    fourth = limiter.try_acquire()
    assert fourth is not None
    for lease in [*leases[1:], fourth]:
        limiter.release(lease)
    assert limiter.held() == 0


@pytest.mark.broker
@needs_redis
def test_a_dead_holders_lease_expires():
    key = f"test:mailchimp:connections:{uuid.uuid4().hex}"
    dead = RedisConnectionLimiter(redis_url=settings.REDIS_URL, key=key, limit=1, lease_seconds=0.2)
    assert dead.try_acquire() is not None  # and never released: the worker "died"
    survivor = RedisConnectionLimiter(redis_url=settings.REDIS_URL, key=key, limit=1, acquire_timeout=10)
    with survivor.slot():
        assert survivor.held() == 1


@pytest.mark.broker
@needs_redis
def test_the_cap_holds_across_processes():
    import redis

    key = f"test:mailchimp:connections:{uuid.uuid4().hex}"
    processes_count, rounds, limit = 6, 15, 3
    context = multiprocessing.get_context("spawn")  # no fork of a process with server threads
    barrier = context.Barrier(processes_count)
    processes = [
        context.Process(target=hold_slots, args=(settings.REDIS_URL, key, limit, rounds, barrier))
        for _ in range(processes_count)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * processes_count

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        assert int(client.get(f"{key}:total")) == processes_count * rounds
        assert int(client.get(f"{key}:holders")) == 0
        assert 1 <= int(client.get(f"{key}:max")) <= limit
    finally:
        client.delete(f"{key}:total", f"{key}:holders", f"{key}:max", key)

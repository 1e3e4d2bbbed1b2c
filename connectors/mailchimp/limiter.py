"""At most MAILCHIMP_MAX_CONNECTIONS requests in flight per Mailchimp account, across every process and
machine (Mailchimp answers 429 to the 11th simultaneous connection).

With Redis: a semaphore kept as a sorted set of lease ids scored by their expiry. A Lua script drops
expired leases and takes a free slot atomically, so a worker that dies mid-request frees its slot when
its lease runs out. Without Redis (the embedded default) the cap is per process.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from .errors import MailchimpTransientError

logger = logging.getLogger(__name__)

# KEYS[1]: the sorted set. ARGV: limit, lease length in ms, lease id. Redis's own clock scores the
# leases, so machines with skewed clocks still agree on what has expired.
_ACQUIRE_SCRIPT = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) >= limit then
  return 0
end
redis.call('ZADD', key, now + lease_ms, ARGV[3])
if redis.call('PTTL', key) < lease_ms then
  redis.call('PEXPIRE', key, lease_ms)
end
return 1
"""


class ConnectionLimiter(Protocol):
    limit: int

    def slot(self) -> AbstractContextManager[None]:
        """Hold one connection slot for the duration of the block."""


def limiter_key(*, api_key: str, prefix: str = "partnerlink:mailchimp:connections") -> str:
    """One key per Mailchimp account, named by a digest so the key itself never lands in Redis."""
    digest = hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]
    return f"{prefix}:{digest}"


class LocalConnectionLimiter:
    """The cap within one process: for the embedded setup without Redis, and for tests."""

    def __init__(self, *, limit: int, acquire_timeout: float = 30.0) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.acquire_timeout = acquire_timeout
        self._semaphore = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._semaphore.acquire(timeout=self.acquire_timeout):
            raise MailchimpTransientError(
                f"no free Mailchimp connection slot within {self.acquire_timeout:g} s (limit {self.limit})"
            )
        try:
            yield
        finally:
            self._semaphore.release()


class RedisConnectionLimiter:
    """The cap across processes and machines. `lease_seconds` must outlast the longest request (the
    client's timeout) so a live request never loses its slot; it bounds how long a dead worker's slot stays taken.
    """

    def __init__(
        self,
        *,
        redis_url: str,
        key: str,
        limit: int,
        lease_seconds: float = 60.0,
        acquire_timeout: float = 30.0,
    ) -> None:
        import redis  # only needed when REDIS_URL is set

        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.key = key
        self.lease_seconds = lease_seconds
        self.acquire_timeout = acquire_timeout
        self._redis_errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self._acquire = self._redis.register_script(_ACQUIRE_SCRIPT)

    def try_acquire(self) -> str | None:
        """A lease id when a slot was free, else None. Never waits."""
        lease_id = uuid.uuid4().hex
        lease_ms = max(1, int(self.lease_seconds * 1000))
        try:
            taken = self._acquire(keys=[self.key], args=[self.limit, lease_ms, lease_id])
        except self._redis_errors as exc:
            raise MailchimpTransientError(f"the Mailchimp connection limiter (Redis) is unavailable: {exc}") from exc
        return lease_id if taken == 1 else None

    def release(self, lease_id: str) -> None:
        try:
            self._redis.zrem(self.key, lease_id)
        except self._redis_errors as exc:
            # The lease expires on its own; losing the release only delays the next caller.
            logger.warning("Could not release a Mailchimp connection lease, it will expire: %s", exc)

    def held(self) -> int:
        """Leases currently held (expired ones included until the next acquire sweeps them)."""
        return int(self._redis.zcard(self.key))

    @contextmanager
    def slot(self) -> Iterator[None]:
        lease_id = self._wait_for_lease()
        try:
            yield
        finally:
            self.release(lease_id)

    def _wait_for_lease(self) -> str:
        deadline = time.monotonic() + self.acquire_timeout
        pause = 0.005
        while True:
            lease_id = self.try_acquire()
            if lease_id is not None:
                return lease_id
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MailchimpTransientError(
                    f"no free Mailchimp connection slot within {self.acquire_timeout:g} s (limit {self.limit})"
                )
            # Jitter keeps waiting workers from retrying in lockstep.
            time.sleep(min(remaining, pause * (0.5 + random.random())))
            pause = min(pause * 2, 0.1)


def build_limiter(
    *,
    redis_url: str,
    api_key: str,
    limit: int,
    request_timeout: float,
) -> LocalConnectionLimiter | RedisConnectionLimiter:
    """Redis when there is one, else process-local. Leases outlast a request's connect plus read timeout."""
    acquire_timeout = max(30.0, 3 * request_timeout)
    if not redis_url:
        return LocalConnectionLimiter(limit=limit, acquire_timeout=acquire_timeout)
    return RedisConnectionLimiter(
        redis_url=redis_url,
        key=limiter_key(api_key=api_key),
        limit=limit,
        lease_seconds=max(30.0, 4 * request_timeout),
        acquire_timeout=acquire_timeout,
    )

"""Run in separate OS processes by test_limiter.py: hold connection slots and record how many holders
there were at once, in Redis itself, so the count spans processes."""

import time

import redis

from connectors.mailchimp.limiter import RedisConnectionLimiter

# Increment the holder count and raise the recorded maximum, atomically.
_ENTER = """
local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
redis.call('INCR', KEYS[3])
return now
"""


def hold_slots(redis_url: str, key: str, limit: int, rounds: int, barrier) -> None:
    limiter = RedisConnectionLimiter(redis_url=redis_url, key=key, limit=limit, lease_seconds=30, acquire_timeout=60)
    client = redis.Redis.from_url(redis_url)
    enter = client.register_script(_ENTER)
    barrier.wait(timeout=60)  # start together, so the processes really compete
    for _ in range(rounds):
        with limiter.slot():
            enter(keys=[f"{key}:holders", f"{key}:max", f"{key}:total"])
            time.sleep(0.003)  # hold the slot like a short request would
            client.decr(f"{key}:holders")

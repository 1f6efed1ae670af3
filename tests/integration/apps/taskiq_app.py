"""A small taskiq application on taskiq-redis's `RedisStreamBroker` (Redis Streams: XADD to
send, XREADGROUP in a consumer group to receive, XACK once the result is saved, XAUTOCLAIM of
entries idle at a dead consumer), unmodified taskiq, for tests/integration/test_apps_streams.py;
its own worker runs it (`taskiq worker taskiq_app:broker`, PYTHONPATH = this folder).

Rules of this file: the Redis URL comes from APPS_TASKIQ_URL (one phalanx node, or a
redis-server); the task talks to Redis with a plain redis-py asyncio client; nothing
phalanx-specific. The broker's settings are ordinary ones, shortened for a test: a consumer's
unacked entries are reclaimed after APPS_TASKIQ_IDLE_MS (taskiq-redis's default is 10 minutes).
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from taskiq_redis import RedisStreamBroker

URL = os.environ.get("APPS_TASKIQ_URL", "redis://127.0.0.1:6379/0")
STREAM = "apps:taskiq:stream"
#: Every execution of a task appends its number here (twice = it ran twice).
DONE_KEY = "apps:taskiq:done"

broker = RedisStreamBroker(
    URL,
    queue_name=STREAM,
    consumer_group_name="apps",
    consumer_id="0",  # the group reads the stream from its start: tasks sent before it exists
    xread_block=1000,
    xread_count=10,
    idle_timeout=int(os.environ.get("APPS_TASKIQ_IDLE_MS", "5000")),
    unacknowledged_lock_timeout=2.0,
    socket_timeout=5.0,
)
_redis = aioredis.Redis.from_url(URL, socket_timeout=5.0)


@broker.task(task_name="record")
async def record(number: int) -> int:
    """Append `number` to DONE_KEY and return it. A Redis error (the store failing over) is
    retried here, as an application does for a transient error; a retry after an unknown
    outcome may append twice (a duplicate, counted by the test)."""
    for attempt in range(60):
        try:
            await _redis.rpush(DONE_KEY, number)
            break
        except RedisError:
            if attempt == 59:
                raise
            await asyncio.sleep(0.25)
    await asyncio.sleep(float(os.environ.get("APPS_TASKIQ_TASK_DELAY", "0")))
    return number

"""A small Celery application (Redis broker AND Redis result backend), unmodified Celery, for
tests/integration/test_apps_celery.py; its own worker runs it
(`celery -A celery_app worker --pool=solo`, PYTHONPATH = this folder).

Rules of this file: the broker/backend URL comes from APPS_CELERY_URL (one phalanx node); the
task talks to Redis with a plain redis-py client; nothing phalanx-specific.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

URL = os.environ.get("APPS_CELERY_URL", "redis://127.0.0.1:6379/0")
#: Every execution of a task appends its number here (twice = it ran twice).
DONE_KEY = "apps:celery:done"

app = Celery("celery_app", broker=URL, backend=URL)
app.conf.update(
    task_acks_late=True,  # at-least-once: a task lost with its worker is delivered again
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    # A task reserved by a worker that died (kombu's unacked hash) is delivered again once its
    # visibility timeout passes: Celery's default is one hour, which is longer than this test.
    broker_transport_options={"visibility_timeout": 10},
)
_redis = redis.Redis.from_url(URL)


@app.task(autoretry_for=(redis.RedisError,), retry_backoff=0.5, max_retries=20)
def record(number: int) -> int:
    """Append `number` to DONE_KEY and return it (stored by the result backend); a Redis error
    makes Celery retry the task (its own mechanism)."""
    _redis.rpush(DONE_KEY, number)
    time.sleep(float(os.environ.get("APPS_CELERY_TASK_DELAY", "0")))
    return number

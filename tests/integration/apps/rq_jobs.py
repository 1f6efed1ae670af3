"""The job functions RQ's own worker imports (`rq worker --path tests/integration/apps`) in
tests/integration/test_apps_rq.py: an ordinary application module, nothing phalanx-specific.

Rules of this file: jobs only talk to Redis through the connection RQ hands them
(`get_current_job().connection`); the per-job delay comes from the environment so the test can
land a kill -9 in the middle of a run.
"""

from __future__ import annotations

import os
import time

from rq import get_current_job

#: Every execution of a job appends its number here (twice = RQ ran it twice).
DONE_KEY = "apps:rq:done"


def record(number: int) -> int:
    """Append `number` to DONE_KEY, sleep a little, return `number` (RQ stores the result)."""
    job = get_current_job()
    assert job is not None
    job.connection.rpush(DONE_KEY, number)
    time.sleep(float(os.environ.get("APPS_RQ_JOB_DELAY", "0.01")))
    return number

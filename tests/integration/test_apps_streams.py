"""taskiq, unmodified, with taskiq-redis's `RedisStreamBroker` (Redis Streams: XADD to send;
XGROUP CREATE, XREADGROUP in a consumer group, XACK once the result is saved; XAUTOCLAIM, under
a SET NX lock in a MULTI with a Lua release, to reclaim entries idle at a dead consumer) and its
own worker processes (`taskiq worker taskiq_app:broker --workers 2`), against a real 3-node
phalanx cluster through one node (proxy mode): N tasks all run; then a produce/consume job
while the shard's leader is killed with kill -9 mid-run and restarted, and one worker process
is killed with kill -9 too (its unacked entries must be reclaimed by the survivors): every task
runs at least once (duplicates counted and reported), none is lost, and the consumer group ends
with nothing pending.

Why taskiq + taskiq-redis (issue 17, item 6): Python users consume Redis Streams mostly through a
task queue rather than raw XREADGROUP loops. taskiq is the async task queue with a Streams broker
in wide use (taskiq 0.13.0 and taskiq-redis 1.2.4 on PyPI, pinned in the dev extra); its
`RedisStreamBroker` is the textbook consumer-group pattern: one consumer per worker process,
ack after the result is saved (at-least-once), XAUTOCLAIM for a dead worker's entries. RQ 3
writes results to streams but keeps its queues in lists (tests/integration/test_apps_rq.py);
Celery/kombu has no streams transport; arq and SAQ use lists and sorted sets; FastStream's
Redis stream subscriber and walrus's ConsumerGroup were the other candidates (less used for
this, and walrus is a thin wrapper).

The app is tests/integration/apps/taskiq_app.py (idle time before a reclaim: 5 s instead of the
default 10 minutes). The worker's process manager restarts a dead worker process itself; how
often that happened is reported. `PHALANX_APP_JOBS=N` runs longer versions. The same flow
runs against a real redis-server (the control test).

Found by these tests: redis-py 8's asyncio client speaks RESP3 (HELLO 3), and Redis 7 answers
XREAD/XREADGROUP with a MAP under RESP3 (stream -> entries); phalanx answered the RESP2 array,
so redis-py failed parsing it ('list' object has no attribute 'items') and every taskiq worker
died at its first read. Fixed in server/front/replies.py (XREAD/XREADGROUP maps, XINFO maps;
the queue benchmark hit it at the same time), checked on the wire against redis-server in
tests/server/test_resp3.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from integration_harness import LocalCluster, shard_primary, wait_until

pytest.importorskip("taskiq_redis")
from taskiq.exceptions import SendTaskError

from phalanx.ops.ports import free_port

APPS = Path(__file__).parent / "apps"
STREAM = "apps:taskiq:stream"
DONE_KEY = "apps:taskiq:done"
GROUP = "apps"
JOBS = int(os.environ.get("PHALANX_APP_JOBS", "0"))


def _app(url: str) -> ModuleType:
    """The application module, imported with the target's URL (as the worker does)."""
    os.environ["APPS_TASKIQ_URL"] = url
    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    sys.modules.pop("taskiq_app", None)
    import taskiq_app

    return taskiq_app


@dataclass
class _Target:
    """Where the application runs: a URL (a phalanx node or a redis-server), a plain client
    of it, and a folder for the workers' logs."""

    url: str
    r: redis.Redis
    log_dir: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc), deepest last."""
    found: list[int] = []
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return found
    for child in (int(x) for x in text.split()):
        found.append(child)
        found.extend(_children(child))
    return found


def _start_workers(t: _Target, name: str, delay: float = 0.0) -> subprocess.Popen[bytes]:
    log = open(t.log_dir / f"taskiq-{name}.log", "ab")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "taskiq"), "worker", "taskiq_app:broker",
         "--workers", "2", "--shutdown-timeout", "2"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "APPS_TASKIQ_URL": t.url, "PYTHONPATH": str(APPS),
             "APPS_TASKIQ_TASK_DELAY": str(delay), "PYTHONUNBUFFERED": "1"})
    t.workers.append(proc)
    return proc


def _stop_workers(t: _Target) -> None:
    """SIGKILL every worker process we started and their children, by pid."""
    for proc in t.workers:
        for pid in [proc.pid, *_children(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)


def _logs(t: _Target, lines: int = 40) -> str:
    out = []
    for path in sorted(t.log_dir.glob("taskiq-*.log")):
        text = path.read_text(errors="replace").splitlines()
        out.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
    return "\n".join(out)


def _restarts(t: _Target) -> int:
    """How often the worker's process manager restarted a dead worker process."""
    return sum(path.read_text(errors="replace").count("is dead. Scheduling reload")
               for path in t.log_dir.glob("taskiq-*.log"))


async def _send(app: ModuleType, numbers: range, errors: list[str],
                pause_s: float = 0.0) -> None:
    """Send one task per number (`record.kiq`, an XADD), retrying a send that failed (the
    producer's own retry: after an unknown outcome it may send twice, a duplicate)."""
    await app.broker.startup()
    try:
        for number in numbers:
            for attempt in range(120):
                try:
                    await app.record.kiq(number)
                    break
                except (redis.RedisError, SendTaskError) as error:
                    # taskiq wraps the broker's error: SendTaskError from the RedisError.
                    cause = error.__cause__ or error
                    errors.append(f"{number}: {type(cause).__name__}: {str(cause)[:80]}")
                    if attempt == 119:
                        raise
                    await asyncio.sleep(0.25)
            if pause_s:
                await asyncio.sleep(pause_s)
    finally:
        await app.broker.shutdown()


def _done(r: redis.Redis) -> Counter[int]:
    """Executions per task number (the trickle's -1 tasks left out)."""
    return Counter(n for n in (int(x) for x in r.lrange(DONE_KEY, 0, -1)) if n >= 0)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pending(r: redis.Redis) -> int:
    return int(r.xpending(STREAM, GROUP)["pending"])


def _summary(t: _Target, count: int) -> dict[str, Any]:
    done = _done(t.r)
    return {"jobs": count, "completed": sum(1 for n in range(count) if done[n] > 0),
            "executions": sum(done.values()),
            "duplicates": sum(v - 1 for v in done.values() if v > 1),
            "lost": [n for n in range(count) if done[n] == 0],
            "stream_length": int(t.r.xlen(STREAM)), "pending": _pending(t.r),
            "worker_restarts": _restarts(t)}


def _run_all(t: _Target, count: int) -> dict[str, Any]:
    """Send `count` tasks, run the workers: every task ran once, nothing left pending."""
    app = _app(t.url)
    errors: list[str] = []
    asyncio.run(_send(app, range(count), errors))
    _start_workers(t, "w0")
    try:
        wait_until(lambda: len(_done(t.r)) >= count and _pending(t.r) == 0,
                   60 + count * 0.2, "every task done and acked", interval=0.2)
    except AssertionError:
        print(_logs(t))
        raise
    finally:
        _stop_workers(t)
    s = _summary(t, count)
    print(f"taskiq on {t.url}: {s}, send errors {errors}")
    assert s["lost"] == [] and s["completed"] == count, (s, _logs(t))
    assert s["duplicates"] == 0 and s["pending"] == 0 and errors == [], s
    assert s["stream_length"] == count, s
    return s


async def _trickle(app: ModuleType, finished: Callable[[], bool], timeout_s: float,
                   errors: list[str]) -> int:
    """Send a no-op task (number -1) every 0.5 s until `finished()`: a live system keeps
    receiving tasks, and taskiq-redis runs its XAUTOCLAIM only after an XREADGROUP that
    returned messages (redis_broker.py: `if not fetched: continue`), so without new messages a
    dead worker's entries would wait for the next one. Returns how many it sent."""
    await app.broker.startup()
    sent = 0
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not await asyncio.to_thread(finished):
            try:
                await app.record.kiq(-1)
                sent += 1
            except (redis.RedisError, SendTaskError) as error:
                errors.append(f"trickle: {type(error).__name__}: {str(error)[:80]}")
            await asyncio.sleep(0.5)
    finally:
        await app.broker.shutdown()
    return sent


def _through_faults(t: _Target, count: int, kill_leader: Callable[[], None] | None) -> None:
    """The produce/consume job through faults: half the tasks sent before the workers start,
    the rest while they run, then a trickle of no-op tasks (see `_trickle`); after a quarter is
    done one worker process is killed with kill -9 (its unacked entries must be reclaimed by
    the survivors' XAUTOCLAIM) and `kill_leader` runs (kill -9 of the shard's leader and its
    restart, when given). Every task runs at least once and the group ends with nothing
    pending."""
    app = _app(t.url)
    errors: list[str] = []
    asyncio.run(_send(app, range(count // 2), errors))
    manager = _start_workers(t, "w0", delay=0.03)
    events: dict[str, Any] = {}

    def nemesis() -> None:
        wait_until(lambda: len(_done(t.r)) >= count // 4, 120, "a quarter of the tasks done",
                   interval=0.1)
        workers = _children(manager.pid)
        victim = workers[-1]
        os.kill(victim, signal.SIGKILL)
        events["worker_killed"] = victim
        with contextlib.suppress(redis.RedisError):  # what each consumer held (reported)
            events["pending_at_kill"] = {
                _text(c["name"]): int(c["pending"]) for c in t.r.xpending(STREAM, GROUP)["consumers"]}
        if kill_leader is not None:
            events["leader_killed_at_done"] = len(_done(t.r))
            kill_leader()
        events["done"] = 1

    thread = threading.Thread(target=nemesis, daemon=True)
    thread.start()
    try:
        # Sent over ~7 s: the producer keeps sending through the leader's kill and restart.
        asyncio.run(_send(app, range(count // 2, count), errors, pause_s=0.1))

        def finished() -> bool:
            with contextlib.suppress(redis.RedisError):
                return ("done" in events and len(_done(t.r)) >= count
                        and _pending(t.r) == 0)
            return False

        events["trickle"] = asyncio.run(_trickle(app, finished, 120 + count * 0.3, errors))
        wait_until(finished, 30, "every task done and acked", interval=0.2)
    except BaseException:
        # What was missing (a task never done, entries still pending, the nemesis not done):
        # printed before the workers' logs, which the report may cut.
        with contextlib.suppress(Exception):
            print(f"taskiq through faults FAILED: events {events}, {_summary(t, count)}, "
                  f"{len(errors)} send errors {errors[-10:]}")
        print(_logs(t))
        raise
    finally:
        thread.join(60)
        _stop_workers(t)
    s = _summary(t, count)
    print(f"taskiq through faults on {t.url}: {s}, events {events}, "
          f"{len(errors)} send errors {errors[:5]}")
    assert "worker_killed" in events, "the nemesis did not run"
    assert s["lost"] == [] and s["completed"] == count, (s, _logs(t))
    assert s["pending"] == 0, s
    assert s["stream_length"] >= count, s
    assert s["worker_restarts"] >= 1, s  # the killed worker process was started again


def _redis_server(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("no redis-server")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port


def _ping(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.ConnectionError:
        return False


@pytest.mark.timeout(240)
def test_taskiq_control_against_redis_server(tmp_path: Path) -> None:
    """Proves the flow itself is right: against a real redis-server 7, N tasks each run once;
    then a worker process killed mid-run: its entries are reclaimed, every task runs."""
    proc, port = _redis_server(tmp_path)
    t = _Target(f"redis://127.0.0.1:{port}/0", redis.Redis(port=port, protocol=2), tmp_path)
    try:
        wait_until(lambda: _ping(t.r), 10, "redis-server up")
        _run_all(t, JOBS or 100)
        t.r.flushall()
        t.workers.clear()
        _through_faults(t, JOBS or 150, None)
    finally:
        _stop_workers(t)
        proc.kill()
        proc.wait(10)


def _phalanx_target(c: LocalCluster) -> tuple[_Target, Any]:
    """A follower of the one data shard (proxy mode), and the shard's leader."""
    leader = shard_primary(c, 1)
    via = next(n for n in c.nodes if n.id != leader.id)
    return _Target(f"redis://{via.resp}/0", c.client(via, decode_responses=False, timeout=30),
                   c.root), leader


@pytest.mark.timeout(240)
def test_taskiq_tasks_complete(cluster: Any) -> None:
    """Proves: taskiq's own workers, through a follower (proxy mode), run every task once,
    ack every one (nothing pending in the group), the stream holds every message."""
    t, _ = _phalanx_target(cluster(3))
    try:
        _run_all(t, JOBS or 100)
    finally:
        _stop_workers(t)


@pytest.mark.timeout(300)
def test_taskiq_tasks_survive_a_leader_kill(cluster: Any) -> None:
    """Proves: a produce/consume job through a kill -9 of the shard's leader (restarted 2 s
    later) and a kill -9 of one worker process: every task runs at least once (duplicates
    counted), none is lost, the group ends with nothing pending."""
    c: LocalCluster = cluster(3)
    t, leader = _phalanx_target(c)

    def kill_leader() -> None:
        c.kill(leader)
        time.sleep(2.0)
        c.restart(leader)

    try:
        _through_faults(t, JOBS or 150, kill_leader)
    finally:
        _stop_workers(t)

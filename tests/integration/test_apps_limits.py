"""`limits` (the rate-limiting library), unmodified, with its Redis storage, against a real
3-node phalanx cluster: several caller processes (threads inside each), one per node (proxy
mode), hit one limit far more often than it allows; the cluster never admits more than the
limit in the window, for the fixed-window, moving-window and sliding-window-counter strategies
(all three run Lua scripts: EVALSHA of scripts the library registers), also while the shard's
leader is killed with kill -9 and restarted (a call that fails counts as not admitted).

The window (10 minutes) outlasts every run, so "never more than the limit per window" is "never
more than the limit in total". Callers are tests/integration/apps/limits_caller.py.
`PHALANX_APP_JOBS=N` makes each thread do N calls instead of the default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from integration_harness import LocalCluster, NodeRef, shard_primary

pytest.importorskip("limits")

CALLER = Path(__file__).parent / "apps" / "limits_caller.py"
CALLS = int(os.environ.get("PHALANX_APP_JOBS", "0"))
STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]


def _start(node: NodeRef, strategy: str, limit: str, key: str, calls: int, threads: int,
           pause: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CALLER), f"redis://{node.resp}/0", strategy, limit, key,
         str(calls), str(threads), str(pause)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def _collect(procs: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"caller failed ({proc.returncode}): {err[-2000:]}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _total(results: list[dict[str, Any]], field: str) -> int:
    return sum(int(r[field]) for r in results)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_limit_never_exceeded(cluster: Any, strategy: str) -> None:
    """Proves: 3 processes x 3 threads, one process per node, make 9 x calls hits of one key
    against "40 per 10 minutes": exactly 40 are admitted (never more), no call fails."""
    c: LocalCluster = cluster(3)
    limit, calls = 40, CALLS or 15
    procs = [_start(node, strategy, f"{limit}/10 minutes", f"apps-{strategy}", calls, 3, 0.0)
             for node in c.nodes]
    results = _collect(procs, timeout=120)
    admitted = _total(results, "admitted")
    print(f"limits {strategy}: calls {9 * calls}, admitted {admitted}, limit {limit}, "
          f"results {results}")
    assert admitted <= limit, results
    assert _total(results, "failed") == 0, results
    assert admitted == limit, results


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_limit_never_exceeded_through_a_leader_kill(cluster: Any, strategy: str) -> None:
    """Proves: the same callers, pacing their calls, while the shard's leader is killed with
    kill -9 and restarted mid-run: never more than the limit admitted (failed calls count as
    not admitted; processes through the killed node fail while it is down)."""
    c: LocalCluster = cluster(3)
    limit, calls = 150, CALLS or 50
    leader = shard_primary(c, 1)
    procs = [_start(node, strategy, f"{limit}/10 minutes", f"apps-{strategy}", calls, 2, 0.1)
             for node in c.nodes]
    nemesis_done: list[str] = []

    def nemesis() -> None:
        time.sleep(1.0)
        c.kill(leader)
        time.sleep(1.0)
        c.restart(leader)
        nemesis_done.append("ok")

    thread = threading.Thread(target=nemesis, daemon=True)
    thread.start()
    results = _collect(procs, timeout=180)
    thread.join(120)
    admitted = _total(results, "admitted")
    print(f"limits {strategy} through a leader kill: calls {6 * calls}, admitted {admitted}, "
          f"limit {limit}, failed {_total(results, 'failed')}, results {results}")
    assert nemesis_done == ["ok"]
    assert admitted <= limit, results

"""Active-active regions, measured (issue 18, docs/active-active.md).

    .venv/bin/python benchmarks/bench_active_active.py --rounds 3 --writes 1000 \
        --output /tmp/aa.json

Two local regions of 3 nodes (`ops/regions.py`, strong keys at home in dc1). Per round, the
three write paths back to back, order rotating: sequential INCRs (one redis-py client, no
pipeline) on an active-active key in dc1, on a strong key in dc1 (its home) and on a strong key
from dc2 (forwarded to dc1 over the region link). Then:
- catch-up: the time from the last acknowledged INCR of a burst in dc1 until dc2 reads the
  whole total (replication lag at rest);
- heal: both regions write during a cut (fault rules), the link heals, the time until every
  node of both regions reads the model's total;
- region loss (RPO): dc1 takes INCRs as fast as one client pipelining 50 at a time can send
  them, every dc1 node is
  killed (SIGKILL) at once, and dc2 is read once its link has given up: the increments dc1
  acknowledged that dc2 never got are the RPO, in writes and in seconds of dc1's rate.

Rules of this file: a measurement, not a test (no threshold); the load average is recorded;
every process is killed and every directory removed even when a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from phalanx.ops import admin, launcher
from phalanx.ops.regions import plan_regions


def _client(entry: Any) -> redis.Redis:
    host, _, port = entry.resp.rpartition(":")
    return redis.Redis(host=host, port=int(port), socket_timeout=10, protocol=2,
                       decode_responses=True)


def _wait(predicate: Any, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if predicate():
                return time.monotonic() - started
        except redis.RedisError:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"not within {timeout} s")


def _rate(client: redis.Redis, key: str, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        client.incr(key)
    return count / (time.perf_counter() - started)


def _set_cut(clusters: dict[str, Any], cut: bool) -> None:
    for name, cluster in clusters.items():
        others = [other for other in clusters if other != name]
        for entry in cluster.nodes:
            if cut:
                admin.admin_request(entry.admin, "/faults", method="PUT",
                                    body={"drop_to": others}, timeout=5.0)
            else:
                admin.admin_request(entry.admin, "/faults", method="DELETE", timeout=5.0)


def run(rounds: int, writes: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="phalanx-bench-aa-"))
    processes: list[Any] = []
    out: dict[str, Any] = {"load_before": os.getloadavg()[0], "rounds": []}
    try:
        plans = plan_regions(root, random.Random(), regions=2, prefixes="aa:",
                             strong_home="dc1",
                             overrides={"enable_fault_injection": True, "aa_poll_ms": 50})
        clusters = {}
        for name, plan in plans.items():
            cluster, _leader, started = launcher.start_local_cluster(root / name, plan,
                                                                     timeout=60)
            processes += started.values()
            clusters[name] = cluster
        one, two = _client(clusters["dc1"].nodes[0]), _client(clusters["dc2"].nodes[0])
        paths = {"active-active (dc1)": (one, "aa:rate"),
                 "strong at home (dc1)": (one, "strong:rate"),
                 "strong forwarded (dc2 -> dc1)": (two, "strong:rate2")}
        names = list(paths)
        for number in range(rounds):
            order = names[number % 3:] + names[:number % 3]
            measured = {name: _rate(*paths[name], writes) for name in order}
            # Catch-up at rest: a burst in dc1, then the time until dc2 has all of it.
            total = int(one.get("aa:burst") or 0)
            for _ in range(writes):
                total = int(one.incr("aa:burst"))
            catch_up = _wait(lambda total=total: int(two.get("aa:burst") or 0) == total, 60)
            # A cut with writes on both sides, then the heal.
            _set_cut(clusters, True)
            expected = int(one.get("aa:cut") or 0)
            for _ in range(writes):
                one.incr("aa:cut")
                two.incr("aa:cut")
                expected += 2
            _set_cut(clusters, False)
            everyone = [_client(e) for c in clusters.values() for e in c.nodes]
            heal = _wait(lambda expected=expected, everyone=everyone: all(
                int(c.get("aa:cut") or 0) == expected for c in everyone), 120)
            entry = {"round": number, "order": order, "ops_per_s": measured,
                     "catch_up_s": round(catch_up, 4), "heal_converge_s": round(heal, 4),
                     "backlog_per_side": writes, "load": os.getloadavg()[0]}
            print(json.dumps(entry), flush=True)
            out["rounds"].append(entry)
        # Region loss: dc1 writes flat out, then every dc1 node is killed at once.
        acked = 0
        started_at = time.perf_counter()
        deadline = started_at + 2.0
        while time.perf_counter() < deadline:
            pipe = one.pipeline(transaction=False)
            for _ in range(50):
                pipe.incr("aa:loss")
            acked = max(int(value) for value in pipe.execute())
        rate = acked / (time.perf_counter() - started_at)
        for entry in clusters["dc1"].nodes:
            os.kill(entry.pid, signal.SIGKILL)
        time.sleep(2.0)  # dc2's link finds dc1 gone; nothing more can arrive
        received = int(two.get("aa:loss") or 0)
        out["region_loss"] = {"acknowledged_in_dc1": acked, "in_dc2_after_loss": received,
                              "rpo_writes": acked - received,
                              "rpo_seconds_at_dc1_rate": round((acked - received) / rate, 4),
                              "dc1_rate_ops_per_s": round(rate, 1)}
        print(json.dumps(out["region_loss"]), flush=True)
        for name in names:
            out.setdefault("median_ops_per_s", {})[name] = round(statistics.median(
                r["ops_per_s"][name] for r in out["rounds"]), 1)
        out["load_after"] = os.getloadavg()[0]
        return out
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--output", default="")
    options = parser.parse_args()
    result = run(options.rounds, options.writes)
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))
    if options.output:
        Path(options.output).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())

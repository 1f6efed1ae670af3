"""The `pipelines` section of `phalanx bench` (issue 15, lever 5): pipelined SET (100 commands
per pipeline, redis-benchmark -P 100) through a FOLLOWER of the shard vs through its LEADER,
interleaved in the same run (leader, follower, leader, follower, ...), on one 3-node cluster.

A follower forwards every write to the leader over its peer link, as PHALANX.FWD with the
client's session; a pipeline goes as a pipeline (many commands in flight on the link). The
figure is the ratio of the medians (follower / leader); the load average is recorded with
each run. Also runnable alone: `python benchmarks/bench_pipelines.py [--repeats N]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import resp_bench as rb  # (same directory)
from bench_ratios import higher

PIPELINE = 100
CLIENTS = 4
REQUESTS = 40_000
QUICK_REQUESTS = 5_000


def _one(target: str, host: str, port: int, requests: int, repeat: int,
         timeout: float) -> dict[str, Any]:
    load = os.getloadavg()[0]
    ok, metrics, error, elapsed = rb.run_benchmark(host, port, "SET", PIPELINE, CLIENTS,
                                                   requests, 100_000, timeout)
    rb.log(f"pipelines: repeat {repeat} {target:<9} SET -P {PIPELINE} c={CLIENTS} "
           f"n={requests}: {metrics.get('rps', 0):,.0f} ops/s"
           f"{'' if ok else ' FAILED: ' + error} [{elapsed:.1f} s, load {load:.1f}]")
    return {"target": target, "ok": ok, "error": error, "load_1m": round(load, 2),
            "rps": metrics.get("rps") if ok else None, "elapsed_s": round(elapsed, 2)}


def pipelines_section(resolve: Callable[[], tuple[tuple[str, int], tuple[str, int]]],
                      repeats: int, requests: int, timeout: float = 300.0) -> dict[str, Any]:
    """Runs the interleaved measurement; returns the runs, the medians and the ratio.
    `resolve()` gives (leader address, a follower's address), asked again before each run
    (an election under load must not swap the two)."""
    runs = []
    for repeat in range(1, repeats + 1):
        leader, follower = resolve()
        order = [("leader", leader), ("follower", follower)]
        if repeat % 2 == 0:
            order.reverse()  # neither always goes first
        for target, (host, port) in order:
            runs.append({**_one(target, host, port, requests, repeat, timeout),
                         "repeat": repeat})
    medians: dict[str, float | None] = {}
    for target in ("leader", "follower"):
        rps = [r["rps"] for r in runs if r["target"] == target and r["rps"]]
        medians[target] = statistics.median(rps) if rps else None
    ratio = (medians["follower"] / medians["leader"]
             if medians["follower"] and medians["leader"] else None)
    return {"pipeline": PIPELINE, "clients": CLIENTS, "requests": requests, "runs": runs,
            "leader_rps_median": medians["leader"], "follower_rps_median": medians["follower"],
            "follower_vs_leader": ratio}


def markdown(section: dict[str, Any]) -> list[str]:
    """The section's lines in RESULTS.md."""
    ratio = section.get("follower_vs_leader")
    loads = [r["load_1m"] for r in section["runs"]]
    failures = [r["error"] for r in section["runs"] if not r["ok"]]
    lines = ["## Pipelined SET through a follower (issue 15, lever 5)", "",
             f"redis-benchmark -t set -P {section['pipeline']} -c {section['clients']} "
             f"-n {section['requests']}, through the shard's leader and through a follower "
             f"(which forwards every command to the leader; many in flight per link), "
             f"interleaved; load average {min(loads):.1f}-{max(loads):.1f}.", "",
             "| through | median ops/s | runs |", "|---|---|---|"]
    for target in ("leader", "follower"):
        rps = [r["rps"] for r in section["runs"] if r["target"] == target and r["rps"]]
        shown = f"{section[f'{target}_rps_median']:,.0f}" if rps else "failed"
        lines.append(f"| {target} | {shown} | {', '.join(f'{x:,.0f}' for x in rps)} |")
    lines += ["", f"Follower / leader: **{higher(ratio)}** (goal >= 0.8x; 0.06x before "
                  f"pipelined forwarding)." if ratio is not None else "Follower / leader: n/a."]
    if failures:
        lines.append(f"Failed runs: {failures}")
    return [*lines, ""]


def addresses(cluster: rb.Phalanx) -> tuple[tuple[str, int], tuple[str, int]]:
    """(the shard leader's RESP address, a follower's), as the nodes say now."""
    import bench_sections as more

    leader = more.shard_leader(cluster)
    follower = sorted((e for e in more.entries(cluster) if e.id != leader.id),
                      key=lambda e: e.id)[0]
    return more.hostport(leader.resp), more.hostport(follower.resp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=REQUESTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phalanx-pipelines-") as root:
        cluster = rb.Phalanx(Path(root) / "cluster")
        try:
            cluster.start(3, timeout=60)
            section = pipelines_section(lambda: addresses(cluster), args.repeats,
                                        args.requests)
        finally:
            cluster.stop()
    print("\n".join(markdown(section)))


if __name__ == "__main__":
    main()

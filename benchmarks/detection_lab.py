"""Failure-detection lab (issue 15, lever 8): SIGSTOP gaps and spurious elections per timing.

For each timing profile (heartbeat / election ticks), interleaved per round so the machine's drift
spreads over all of them: a fresh 3-node cluster, then
- `--stops N` SIGSTOPs of the leader (the bench's open-loop writer through a survivor, the same
  code as `phalanx bench --only sigstop`), each while a background redis-benchmark SET load at
  `--load-clients` runs against the cluster's nodes (0: idle);
- a quiet watch of `--watch-s` seconds (half idle, half under the same load) counting elections:
  every node's Raft term before and after (a term moves only when a real election starts), and
  each node's leader changes.

    python benchmarks/detection_lab.py --profiles 5/50,5/25,3/20 --rounds 2 --stops 3

Prints one line per measurement and a summary; writes JSON with `--output`. Every process it
starts is stopped by pid, also on errors; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import phalanx_bench as pb  # noqa: E402
import resp_bench as rb  # noqa: E402


def parse_profile(text: str) -> tuple[int, int]:
    heartbeat, _, election = text.partition("/")
    return int(heartbeat), int(election)


class Load:
    """redis-benchmark SET against every node (followers forward), restarted until stopped,
    each run bounded by the bench's run timeout."""

    def __init__(self, cluster: rb.Phalanx, clients: int, log_path: Path) -> None:
        self.cluster = cluster
        self.clients = clients
        self.log_path = log_path
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        if self.clients <= 0:
            return
        per_node = max(1, self.clients // len(self.cluster.nodes))
        with open(self.log_path, "ab") as handle:
            for node in self.cluster.nodes:
                host, port = self.cluster.address(node["id"])
                self.processes.append(subprocess.Popen(
                    ["timeout", "600", "redis-benchmark", "-h", host, "-p", str(port), "-t",
                     "set", "-c", str(per_node), "-n", "100000000", "-r", "100000", "-q", "-l"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=handle,
                    start_new_session=True))

    def stop(self) -> None:
        for process in self.processes:
            rb.stop_process(process, grace=2.0)
        self.processes.clear()


def terms(cluster: rb.Phalanx) -> dict[str, tuple[int, int]]:
    """node -> (term, leader changes) from each node's admin /status."""
    from phalanx.ops import admin, cluster_file

    out = {}
    for status in admin.query_status(cluster_file.read_cluster_file(cluster.data_dir).nodes,
                                     timeout=2.0):
        raw = status.status or {}
        out[status.entry.id] = (int(raw.get("term") or 0), int(raw.get("leader_changes") or 0))
    return out


def one_profile(root: Path, profile: tuple[int, int], args: argparse.Namespace,
                round_: int) -> dict[str, Any]:
    heartbeat, election = profile
    label = f"{heartbeat}/{election}"
    directory = Path(tempfile.mkdtemp(prefix=f"detect-{heartbeat}-{election}-", dir=root))
    cluster = rb.Phalanx(directory / "cluster")
    overrides = {"heartbeat_ticks": heartbeat, "election_ticks": election}
    overrides.update(dict(item.split("=", 1) for item in args.extra) if args.extra else {})
    settings = pb.Settings(sigstop_tries=args.stops)
    result: dict[str, Any] = {"profile": label, "round": round_, "gaps_ms": [],
                              "watch": {}}
    load = Load(cluster, args.load_clients, directory / "load.log")
    try:
        cluster.start(3, timeout=60, overrides=overrides)
        time.sleep(1.0)
        if args.stops:
            load.start()
            time.sleep(1.0)
            gaps = pb.phalanx_failover(cluster, settings, how="stop")
            load.stop()
            result["gaps_ms"] = [g.get("gap_ms") for g in gaps]
        if args.watch_s > 0:
            pb.wait_for(lambda: pb.phalanx_converged(cluster), 60, "converged", poll=0.2)
            before = terms(cluster)
            time.sleep(args.watch_s / 2)
            idle = terms(cluster)
            load.start()
            time.sleep(args.watch_s / 2)
            load.stop()
            after = terms(cluster)
            result["watch"] = {
                "seconds": args.watch_s,
                "term_before": max(t for t, _ in before.values()),
                "term_after_idle": max(t for t, _ in idle.values()),
                "term_after_load": max(t for t, _ in after.values()),
                "leader_changes": {n: after[n][1] - before[n][1] for n in after if n in before},
            }
    finally:
        load.stop()
        cluster.stop()
    pb.log(f"round {round_} profile {label}: gaps {result['gaps_ms']} watch {result['watch']} "
           f"load {os.getloadavg()[0]:.1f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", default="5/50,5/25",
                        help="comma-separated heartbeat/election ticks (10 ms ticks)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--stops", type=int, default=3)
    parser.add_argument("--load-clients", type=int, default=30)
    parser.add_argument("--watch-s", type=float, default=0.0)
    parser.add_argument("--extra", action="append", default=[],
                        help="more node overrides, name=value (strings)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    profiles = [parse_profile(p) for p in args.profiles.split(",") if p]
    root = Path(tempfile.mkdtemp(prefix="phalanx-detect-"))
    results = []
    try:
        for round_ in range(1, args.rounds + 1):
            order = profiles[round_ - 1:] + profiles[:round_ - 1]
            for profile in order:
                results.append(one_profile(root, profile, args, round_))
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["rm", "-rf", str(root)], check=False, timeout=60)
    summary = {}
    for profile in profiles:
        label = f"{profile[0]}/{profile[1]}"
        gaps = [g for r in results if r["profile"] == label for g in r["gaps_ms"] if g]
        terms_moved = [r["watch"].get("term_after_load", 0) - r["watch"].get("term_before", 0)
                       for r in results if r["profile"] == label and r["watch"]]
        summary[label] = {"gaps_ms": gaps,
                          "median_gap_ms": statistics.median(gaps) if gaps else None,
                          "elections_in_watch": terms_moved}
        print(f"{label}: median gap {summary[label]['median_gap_ms']} ms of {len(gaps)} "
              f"{sorted(gaps)}; elections during watch {terms_moved}")
    if args.output:
        args.output.write_text(json.dumps({"results": results, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()

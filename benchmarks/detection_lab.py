"""Failure-detection lab (issue 15, lever 8): SIGSTOP gaps and spurious elections per timing.

For each timing profile (heartbeat / election ticks, optionally "+spread": the election
timeout's random range, `election_spread_ticks`), interleaved per round so the machine's drift
spreads over all of them: a fresh 3-node cluster, then
- `--stops-idle N` SIGSTOPs of the leader without load, then `--stops N` under a background
  redis-benchmark SET load of `--load-clients` against every node (the bench's open-loop
  writer through a survivor, the same code as `phalanx bench --only sigstop`);
- a watch of `--idle-s` seconds idle and `--load-s` under the same load (or `--watch-s`, half
  each) counting spurious elections: every Raft term of any group that began while nothing
  was injected (docs/failure-detection.md defines them), and each node's leader changes;
- with `--stall-watch MS`, every node reports what held its loop longer than MS
  (server/stall_watch.py) and the lab counts those stalls of 250/350/500 ms or more, split
  into "starved" (the loop thread mostly waiting for a CPU) and "on_cpu" (our code).

    python benchmarks/detection_lab.py --profiles 5/50,5/35,5/25 --stops-idle 3 --stops 3 \
        --idle-s 20 --load-s 240 --stall-watch 100
    python benchmarks/detection_lab.py --profiles 5/50,5/50+10 --stops 0 --load-s 3600  # 1 h

Prints one line per measurement and a summary; writes JSON with `--output` (after every
cluster). Every process it starts is stopped by pid, also on errors; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_common as common  # noqa: E402
import phalanx_bench as pb  # noqa: E402
import resp_bench as rb  # noqa: E402
from bench_failover import phalanx_failover  # noqa: E402


def parse_profile(text: str) -> tuple[int, int, int]:
    """"H/E" or "H/E+S": heartbeat ticks, minimum election ticks, and the spread of the
    election timeout's random range (0: E, i.e. [E, 2E), Raft §5.2)."""
    heartbeat, _, rest = text.partition("/")
    election, _, spread = rest.partition("+")
    return int(heartbeat), int(election), int(spread or 0)


def label_of(profile: tuple[int, int, int]) -> str:
    heartbeat, election, spread = profile
    return f"{heartbeat}/{election}" + (f"+{spread}" if spread else "")


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
    """node -> (term, leader changes) of its default shard, from each node's admin /status."""
    return {node: (group_terms["default"], changes)
            for node, (group_terms, changes) in group_terms_of(cluster).items()}


def group_terms_of(cluster: rb.Phalanx) -> dict[str, tuple[dict[str, int], int]]:
    """node -> ({group: term, "default": the default shard's term}, leader changes of its
    default shard), from each node's admin /status."""
    from phalanx.ops import admin, cluster_file

    out = {}
    for status in admin.query_status(cluster_file.read_cluster_file(cluster.data_dir).nodes,
                                     timeout=2.0):
        raw = status.status or {}
        local = raw.get("local") or {}
        group_terms = {str(g): int(v.get("term") or 0) for g, v in local.items()
                       if isinstance(v, dict)}
        group_terms["default"] = int(raw.get("term") or 0)
        out[status.entry.id] = (group_terms, int(raw.get("leader_changes") or 0))
    return out


def elections(before: dict[str, tuple[dict[str, int], int]],
              after: dict[str, tuple[dict[str, int], int]]) -> dict[str, int]:
    """group -> how many terms began between two readings (the highest term any node reports:
    every election, even a lost one, starts a new term; with PreVote a node that only
    pre-votes does not)."""
    def highest(reading: dict[str, tuple[dict[str, int], int]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for group_terms, _ in reading.values():
            for group, term in group_terms.items():
                if group != "default":
                    out[group] = max(out.get(group, 0), term)
        return out

    low, high = highest(before), highest(after)
    return {group: high[group] - low.get(group, high[group]) for group in sorted(high)}


def watch_seconds(args: argparse.Namespace) -> tuple[float, float]:
    """(idle, under load) seconds of the election watch: `--idle-s`/`--load-s`, else half of
    `--watch-s` each."""
    if args.idle_s is not None or args.load_s is not None:
        return float(args.idle_s or 0.0), float(args.load_s or 0.0)
    return args.watch_s / 2, args.watch_s / 2


_HELD = re.compile(r"loop held (\d+) ms; over the last (\d+) ms the loop thread was on a CPU "
                   r"(\d+) ms, waiting for a CPU (\d+) ms")


def stall_summary(lines: list[str]) -> dict[str, Any]:
    """The stall watch's reports, counted: how many loop stalls reached 250 / 350 / 500 ms, and
    of those how many were mostly the machine's (the loop thread runnable but waiting for a
    CPU more than half the watched time) rather than our code on a CPU."""
    out: dict[str, Any] = {}
    for line in lines:
        match = _HELD.search(line)
        if match is None:
            continue
        held, watched, _on_cpu, waiting = (int(g) for g in match.groups())
        starved = waiting * 2 > watched
        for floor in (100, 250, 350, 500):
            if held >= floor:
                key = f">={floor}ms"
                item = out.setdefault(key, {"stalls": 0, "starved": 0, "on_cpu": 0})
                item["stalls"] += 1
                item["starved" if starved else "on_cpu"] += 1
        out["longest_ms"] = max(out.get("longest_ms", 0), held)
    return out


STALL_MARKERS = ("stall watch:", "event loop stalled")


def stall_lines(directory: Path) -> list[str]:
    """The nodes' log lines about loop stalls (the ticker's warning, the stall watch's report)."""
    lines = []
    for log_file in sorted(directory.glob("**/node.log")):
        with contextlib.suppress(OSError):
            for line in log_file.read_text(errors="replace").splitlines():
                if any(marker in line for marker in STALL_MARKERS):
                    lines.append(f"{log_file.parent.name}: {line}")
    return lines


def one_profile(root: Path, profile: tuple[int, int, int], args: argparse.Namespace,
                round_: int) -> dict[str, Any]:
    heartbeat, election, spread = profile
    label = label_of(profile)
    directory = Path(tempfile.mkdtemp(prefix=f"detect-{heartbeat}-{election}-{spread}-",
                                      dir=root))
    cluster = rb.Phalanx(directory / "cluster")
    overrides: dict[str, Any] = {"heartbeat_ticks": heartbeat, "election_ticks": election}
    if spread:
        overrides["election_spread_ticks"] = spread
    for item in args.extra:
        name, _, value = item.partition("=")
        overrides[name] = json.loads(value) if value[:1].isdigit() or value in (
            "true", "false") else value
    result: dict[str, Any] = {"profile": label, "round": round_, "gaps_ms": [],
                              "gaps_idle_ms": [], "watch": {}}
    load = Load(cluster, args.load_clients, directory / "load.log")
    idle_s, load_s = watch_seconds(args)
    try:
        cluster.start(3, timeout=60, overrides=overrides)
        time.sleep(1.0)
        if args.stops_idle:
            gaps = phalanx_failover(cluster, pb.Settings(sigstop_tries=args.stops_idle),
                                       how="stop")
            result["gaps_idle_ms"] = [g.get("gap_ms") for g in gaps]
        if args.stops:
            load.start()
            time.sleep(1.0)
            gaps = phalanx_failover(cluster, pb.Settings(sigstop_tries=args.stops),
                                       how="stop")
            load.stop()
            result["gaps_ms"] = [g.get("gap_ms") for g in gaps]
        if idle_s + load_s > 0:
            common.wait_for(lambda: common.phalanx_converged(cluster), 60, "converged", poll=0.2)
            stalls_before = len(stall_lines(directory))
            before = group_terms_of(cluster)
            time.sleep(idle_s)
            idle = group_terms_of(cluster)
            stalls_idle = len(stall_lines(directory))
            load.start()
            time.sleep(load_s)
            after = group_terms_of(cluster)
            load.stop()
            stalls = stall_lines(directory)
            result["watch"] = {
                "idle_s": idle_s,
                "load_s": load_s,
                "term_before": max(t["default"] for t, _ in before.values()),
                "term_after_idle": max(t["default"] for t, _ in idle.values()),
                "term_after_load": max(t["default"] for t, _ in after.values()),
                # Spurious elections (docs/failure-detection.md): every term that began while
                # no fault was injected, per group (group 0 is the placement driver).
                "elections_idle": elections(before, idle),
                "elections_load": elections(idle, after),
                "leader_changes": {n: after[n][1] - before[n][1] for n in after if n in before},
                "stall_lines_idle": stalls_idle - stalls_before,
                "stall_lines_load": len(stalls) - stalls_idle,
                "stalls_load": stall_summary(stalls[stalls_idle:]),
            }
        result["stall_lines"] = stall_lines(directory)
    finally:
        load.stop()
        cluster.stop()
    common.log(f"round {round_} profile {label}: gaps {result['gaps_ms']} watch {result['watch']} "
           f"load {os.getloadavg()[0]:.1f}")
    long_ones = [line for line in result.get("stall_lines", [])
                 if (m := _HELD.search(line)) is not None and int(m.group(1)) >= 250]
    for line in long_ones[:args.show_stalls]:
        common.log(f"  {line[:1200]}")
    return result


def summarise(profiles: list[tuple[int, int, int]],
              results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per profile: SIGSTOP gaps idle and under load (medians), spurious elections idle and
    under load (every group), and those under load per 10 minutes of load."""
    summary = {}
    for profile in profiles:
        label = label_of(profile)
        mine = [r for r in results if r["profile"] == label]
        gaps = sorted(g for r in mine for g in r["gaps_ms"] if g)
        gaps_idle = sorted(g for r in mine for g in r.get("gaps_idle_ms", []) if g)
        watched = [r["watch"] for r in mine if r["watch"]]
        idle = sum(sum(w["elections_idle"].values()) for w in watched)
        loaded = sum(sum(w["elections_load"].values()) for w in watched)
        load_s = sum(w["load_s"] for w in watched)
        summary[label] = {
            "gaps_idle_ms": gaps_idle,
            "median_gap_idle_ms": statistics.median(gaps_idle) if gaps_idle else None,
            "gaps_load_ms": gaps,
            "median_gap_load_ms": statistics.median(gaps) if gaps else None,
            "elections_idle": idle, "elections_load": loaded, "load_s": load_s,
            "elections_per_10min_load": round(loaded * 600 / load_s, 2) if load_s else None,
        }
        print(f"{label}: SIGSTOP gap median idle {summary[label]['median_gap_idle_ms']} ms "
              f"{gaps_idle}, under load {summary[label]['median_gap_load_ms']} ms {gaps}; "
              f"spurious elections idle {idle}, under load {loaded} in {load_s:.0f} s "
              f"({summary[label]['elections_per_10min_load']} per 10 min)")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", default="5/50,5/25",
                        help="comma-separated heartbeat/election[+spread] ticks (10 ms ticks; "
                             "spread: the election timeout's random range, default election)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--stops", type=int, default=3,
                        help="SIGSTOPs of the leader under the load")
    parser.add_argument("--stops-idle", type=int, default=0,
                        help="SIGSTOPs of the leader without load (before those under load)")
    parser.add_argument("--load-clients", type=int, default=30)
    parser.add_argument("--watch-s", type=float, default=0.0,
                        help="election watch: half idle, half under load")
    parser.add_argument("--idle-s", type=float, default=None,
                        help="election watch, idle part (overrides --watch-s)")
    parser.add_argument("--load-s", type=float, default=None,
                        help="election watch, under load (overrides --watch-s)")
    parser.add_argument("--stall-watch", type=float, default=0.0,
                        help="ms: every node logs what held its loop that long (the stall "
                             "watch, PHALANX_STALL_WATCH_MS); 0 = off")
    parser.add_argument("--extra", action="append", default=[],
                        help="more node overrides, name=value (numbers and true/false as such)")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--show-stalls", type=int, default=20,
                        help="print at most this many stall log lines per cluster")
    args = parser.parse_args()
    profiles = [parse_profile(p) for p in args.profiles.split(",") if p]
    if args.stall_watch > 0:
        os.environ["PHALANX_STALL_WATCH_MS"] = str(args.stall_watch)
    root = Path(tempfile.mkdtemp(prefix="phalanx-detect-"))
    results = []
    try:
        for round_ in range(1, args.rounds + 1):
            order = profiles[round_ - 1:] + profiles[:round_ - 1]
            for profile in order:
                results.append(one_profile(root, profile, args, round_))
                if args.output:  # after every cluster: a long run stopped half-way keeps its data
                    args.output.write_text(json.dumps({"results": results}, indent=1))
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["rm", "-rf", str(root)], check=False, timeout=60)
    summary = summarise(profiles, results)
    if args.output:
        args.output.write_text(json.dumps({"results": results, "summary": summary}, indent=1))

if __name__ == "__main__":
    main()

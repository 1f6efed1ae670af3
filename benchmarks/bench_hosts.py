"""`phalanx bench --only hosts`: K node processes per host (issue 15 lever 9, docs/hosts.md).

The same three hosts run K = 1 node process each (3 nodes) and then K = 2 each (6 nodes, laid
out as `phalanx up --nodes 6 --nodes-per-host 2`: hosts h1..h3, one zone per host). Both
clusters have the same shard count (default 6), so with K = 2 the preferred leaders put one
shard's leader on every node, and with K = 1 two on each node. The load is SET with slot-routed
clients (`redis-benchmark --cluster`: each key goes straight to its shard's leader, as in the
scale section), 50 clients, random keys. Before measuring, the section waits (bounded) until
the shards' leaders sit on min(shards, nodes) nodes, then runs a warm-up.

The runs alternate in one session (K1 K2, then K2 K1, ...) because the shared machine's load
drifts over minutes. Each run records the 1-minute load average and the CPU all the nodes spent
per SET (from /proc), and each run has a fresh cluster. The ratio is median(K = 2) / median
(K = 1). K = 2 pays only where cores are free: on a 2-core machine the second process per host
has no core of its own, and the row says what it measured.

Rules of this file:
- A measurement, not a test: no threshold. A failed run is reported in its row, and the others
  go on. Every cluster is stopped by pid (`bench_sections.stop_cluster`), even on failure.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bench_sections as more
from bench_common import log
from bench_ratios import higher

if TYPE_CHECKING:
    from bench_common import Processes
    from phalanx_bench import Settings

HOSTS = 3
CLIENTS = 50
#: How long to wait for the shards' leaders to spread over the nodes before measuring anyway.
SPREAD_TIMEOUT_S = 90.0


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _leader_nodes(cluster: Any) -> int:
    """On how many nodes the data shards' leaders are (CLUSTER SLOTS of the first node)."""
    import redis

    host, port = more.hostport(more.entries(cluster)[0].resp)
    slots = redis.Redis(host=host, port=port, socket_timeout=5).execute_command(
        "CLUSTER", "SLOTS")
    covered = sum(int(item[1]) - int(item[0]) + 1 for item in slots)
    if covered != 16384:
        return 0
    return len({(item[2][0], int(item[2][1])) for item in slots})


def _wait_spread(cluster: Any, want: int) -> int:
    deadline = time.monotonic() + SPREAD_TIMEOUT_S
    seen = 0
    while time.monotonic() < deadline:
        try:
            seen = _leader_nodes(cluster)
        except Exception:  # not ready yet (a node still electing)
            seen = 0
        if seen >= want:
            return seen
        time.sleep(0.5)
    return seen


def run_one(processes: Processes, settings: Settings, per_host: int, round_number: int
            ) -> dict[str, Any]:
    nodes = HOSTS * per_host
    shards = settings.hosts_shards
    row: dict[str, Any] = {"k": per_host, "hosts": HOSTS, "nodes": nodes, "shards": shards,
                           "clients": CLIENTS, "requests": settings.hosts_requests,
                           "round": round_number}
    cluster = None
    try:
        began = time.monotonic()
        cluster = more.start_cluster(processes, f"hosts-k{per_host}-r{round_number}", nodes,
                                     {"shards": shards}, nodes_per_host=per_host)
        row["leader_nodes"] = _wait_spread(cluster, min(shards, nodes))
        row["startup_s"] = round(time.monotonic() - began, 1)
        warm = more.routed_set(cluster, CLIENTS, min(2000, settings.hosts_requests),
                               settings.keyspace, settings.run_timeout_s)
        if "routed_error" in warm:
            raise RuntimeError(f"warm-up: {warm['routed_error']}")
        pids = [e.pid for e in more.entries(cluster) if e.pid]
        row["load_1m"] = round(os.getloadavg()[0], 2)
        cpu_before = _cpu_seconds(pids)
        measured = more.routed_set(cluster, CLIENTS, settings.hosts_requests,
                                   settings.keyspace, settings.run_timeout_s)
        if "routed_error" in measured:
            raise RuntimeError(measured["routed_error"])
        row["cpu_us_per_set"] = round((_cpu_seconds(pids) - cpu_before)
                                      / settings.hosts_requests * 1e6)
        row.update(rps=measured["routed_rps"], p50_ms=measured["routed_p50_ms"],
                   routed_leader_nodes=measured["routed_leader_nodes"], error="")
        log(f"hosts K={per_host} ({nodes} nodes, {shards} shards, leaders on "
            f"{row['leader_nodes']} nodes) round {round_number}: {row['rps']:,.0f} SET/s, "
            f"{row['cpu_us_per_set']} us CPU/SET [load {row['load_1m']}]")
    except Exception as error:  # a run's failure is reported, the section goes on
        row["error"] = f"{type(error).__name__}: {error}"[:300]
        log(f"hosts K={per_host} round {round_number}: FAILED {row['error']}")
    finally:
        if cluster is not None:
            more.stop_cluster(processes, cluster)
    return row


def hosts_section(processes: Processes, settings: Settings) -> dict[str, Any]:
    runs = []
    for round_number in range(1, settings.hosts_rounds + 1):
        order = (1, 2) if round_number % 2 else (2, 1)  # ABBA: the load drifts
        for per_host in order:
            runs.append(run_one(processes, settings, per_host, round_number))
    out: dict[str, Any] = {"hosts": HOSTS, "shards": settings.hosts_shards, "clients": CLIENTS,
                           "requests": settings.hosts_requests,
                           "rounds": settings.hosts_rounds, "cpu_count": os.cpu_count(),
                           "runs": runs}
    medians = {}
    for per_host in (1, 2):
        good = [r["rps"] for r in runs if r["k"] == per_host and not r["error"]]
        if good:
            medians[per_host] = statistics.median(good)
            out[f"k{per_host}_rps_median"] = medians[per_host]
            out[f"k{per_host}_cpu_us_per_set_median"] = statistics.median(
                r["cpu_us_per_set"] for r in runs if r["k"] == per_host and not r["error"])
    if len(medians) == 2:
        out["k2_vs_k1"] = medians[2] / medians[1]
        # Each round's own ratio (its two runs were back to back).
        out["round_ratios"] = [
            k2["rps"] / k1["rps"]
            for number in range(1, settings.hosts_rounds + 1)
            for k1 in [r for r in runs if r["round"] == number and r["k"] == 1 and not r["error"]]
            for k2 in [r for r in runs if r["round"] == number and r["k"] == 2 and not r["error"]]]
    else:
        out["error"] = "; ".join(r["error"] for r in runs if r["error"])[:300] or "no run"
    loads = [r["load_1m"] for r in runs if "load_1m" in r]
    out["load_1m"] = loads
    return out


def markdown(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    lines = ["", "## Nodes per host (issue 15 lever 9)", "",
             f"{section['hosts']} hosts with K = 1 node process each ({section['hosts']} "
             f"nodes) vs K = 2 each ({2 * section['hosts']} nodes, `phalanx up --nodes-per-host "
             f"2`), {section['shards']} shards either way. SET, {section['clients']} slot-routed "
             f"clients (`redis-benchmark --cluster`), {section['requests']:,} requests per run, "
             f"a fresh cluster per run, the runs alternating (K1 K2, K2 K1, ...). CPU = what "
             f"all the nodes spent per SET. This machine has {section['cpu_count']} CPUs: K = 2 "
             "can pay only where a core is free for the second process of each host.", "",
             "| round | K | nodes | shards' leaders on | SET/s | p50 ms | CPU us/SET | load 1 min "
             "| error |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for run in section.get("runs", []):
        lines.append(f"| {run['round']} | {run['k']} | {run['nodes']} | "
                     f"{run.get('leader_nodes', '-')} nodes | "
                     f"{run['rps']:,.0f} | {run['p50_ms']} | {run['cpu_us_per_set']} | "
                     f"{run['load_1m']} | |" if not run.get("error") else
                     f"| {run['round']} | {run['k']} | {run['nodes']} | - | - | - | - | "
                     f"{run.get('load_1m', '-')} | {run['error']} |")
    if "k2_vs_k1" in section:
        lines += ["", f"K = 2 / K = 1: **{higher(section['k2_vs_k1'], 3)}** (medians "
                  f"{section['k2_rps_median']:,.0f} vs {section['k1_rps_median']:,.0f} SET/s; "
                  f"per round {', '.join(higher(r, 3) for r in section['round_ratios'])}); "
                  f"CPU per SET {section['k2_cpu_us_per_set_median']:g} vs "
                  f"{section['k1_cpu_us_per_set_median']:g} us."]
    else:
        lines += ["", f"**not measured: {section.get('error')}**"]
    return lines

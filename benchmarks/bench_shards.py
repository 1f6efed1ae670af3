"""Shard scaling and the log engine, A/B in one run (issue 15 lever 1).

    .venv/bin/python benchmarks/bench_shards.py --rounds 2 --shards 1,3,9 \
        --engines wal,node --requests 20000 --output /tmp/shards.json

For each round and shard count, each engine back to back (the order alternating: wal node,
node wal, ...): a fresh 3-node cluster (`storage_engine`, `shards`), then SET with
`redis-benchmark --cluster` (slot-routed: each key goes straight to its shard's leader), 50
clients, random keys. Then, with the same load running again, `strace -c -e
trace=fdatasync,fsync` on every thread of every node but the event loop's, for a fixed time:
fdatasync calls per second on each node and per committed entry (strace slows the traced
threads, so the rate under strace is only used for the ratio; with many writer threads handing
work to each other it slows them until little commits). `--perf` counts the same syscalls with
`perf stat` (kernel tracepoints, no ptrace) DURING the measured load: fdatasync per second on
each node and per SET. Also the CPU the nodes spent per SET (/proc), which depends less on the
shared machine's load than the throughput does.

Rules of this file:
- A measurement, not a test: no threshold. Prints one JSON line per run and a summary of
  medians and ratios; the load average is recorded with every run.
- Every cluster is stopped (and its directory deleted) even when a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import resp_bench as rb


def _resp(cluster: rb.Phalanx) -> list[tuple[str, int]]:
    return [cluster.address(node["id"]) for node in cluster.nodes]


def _wait_leaders(cluster: rb.Phalanx, shards: int, timeout: float = 60) -> tuple[str, int]:
    """Until CLUSTER SLOTS on the first node covers all 16384 slots with known leaders;
    returns the RESP address of the first range's leader."""
    import redis

    host, port = _resp(cluster)[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            slots = redis.Redis(host=host, port=port, socket_timeout=2).execute_command(
                "CLUSTER", "SLOTS")
            covered = sum(int(item[1]) - int(item[0]) + 1 for item in slots)
            leaders = {(item[2][0], int(item[2][1])) for item in slots}
            spread = len(leaders) >= min(shards, len(cluster.nodes)) or \
                time.monotonic() > deadline - timeout / 2
            if covered == 16384 and len(slots) >= shards and spread:
                # (leaders spread over the nodes, as the preferred leaders place them; after
                # half the timeout, whatever the placement is)
                leader = slots[0][2]
                name = leader[0].decode() if isinstance(leader[0], bytes) else str(leader[0])
                return name, int(leader[1])
        except Exception:  # not ready yet
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{shards} shards not all led after {timeout} s")


def _leader_nodes(cluster: rb.Phalanx) -> int:
    """On how many nodes the data shards' leaders are."""
    import redis

    host, port = _resp(cluster)[0]
    slots = redis.Redis(host=host, port=port, socket_timeout=2).execute_command("CLUSTER", "SLOTS")
    return len({(item[2][0], int(item[2][1])) for item in slots})


def _perf_start(pids: list[int]) -> list[tuple[int, str, subprocess.Popen[bytes]]]:
    """`perf stat` of the fdatasync and fsync syscalls of each node (kernel tracepoints: no
    ptrace, so the nodes run at full speed, unlike under strace)."""
    started = []
    for pid in pids:
        handle, name = tempfile.mkstemp(prefix=f"perf-{pid}-", suffix=".csv")
        os.close(handle)
        started.append((pid, name, subprocess.Popen(
            ["perf", "stat", "-x,", "-o", name, "-e",
             "syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync", "-p", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    time.sleep(0.5)
    return started


def _perf_stop(started: list[tuple[int, str, subprocess.Popen[bytes]]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for number, (_pid, name, process) in enumerate(started, 1):
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        total = 0
        for line in Path(name).read_text().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[0].strip().isdigit():
                total += int(fields[0])
        os.unlink(name)
        counts[f"n{number}"] = total
    return counts


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _idle_cpu(cluster: rb.Phalanx, seconds: float) -> float:
    """CPU used by all the nodes together while no client writes, in % of one core (the cost
    of idle groups: heartbeats, ticks, the map's liveness)."""
    pids = [process.pid for process in cluster.processes.values()]
    before, began = _cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)
    return round(100 * (_cpu_seconds(pids) - before) / (time.monotonic() - began), 1)


def _load_argv(target: tuple[str, int], shards: int, clients: int, requests: int,
               keyspace: int) -> list[str]:
    """redis-benchmark SET, slot-routed: `--cluster` (it refuses a one-master cluster, so
    one shard is driven at its leader directly: the same routing)."""
    host, port = target
    return ["redis-benchmark", *(["--cluster"] if shards > 1 else []), "-h", host, "-p",
            str(port), "-t", "set", "-c", str(clients), "-n", str(requests), "-r",
            str(keyspace)]


def _set_load(target: tuple[str, int], shards: int, clients: int, requests: int,
              keyspace: int, timeout: float) -> dict[str, float]:
    argv = [*_load_argv(target, shards, clients, requests, keyspace), "--csv"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    metrics = rb.parse_csv(done.stdout, "SET")
    errors = [line for line in (done.stdout + done.stderr).splitlines()
              if "error" in line.lower()]
    if done.returncode != 0 or metrics is None or errors:
        raise RuntimeError(f"redis-benchmark failed: {(errors or [done.stderr[-300:]])[0]}")
    return metrics


def _committed(cluster: rb.Phalanx) -> int:
    """Sum over the data shards of the highest commit index any node reports."""
    import urllib.request

    best: dict[str, int] = {}
    for node in cluster.nodes:
        with urllib.request.urlopen(f"http://{node['admin']}/status", timeout=5) as reply:
            local = json.loads(reply.read()).get("local", {})
        for shard, state in local.items():
            if shard != "0":
                best[shard] = max(best.get(shard, 0), int(state.get("commit_index", 0)))
    return sum(best.values())


def _strace_syncs(cluster: rb.Phalanx, target: tuple[str, int], shards: int, seconds: float,
                  clients: int, keyspace: int) -> dict[str, Any]:
    """fdatasync+fsync calls per second on each node while SET load runs (strace -c -f)."""
    tracers = []
    for node_id, process in cluster.processes.items():
        handle, name = tempfile.mkstemp(prefix=f"strace-{node_id}-", suffix=".txt")
        os.close(handle)
        # Every thread but the main one (the event loop): the fsyncs happen on the stores'
        # writer threads, and tracing the loop's thousands of syscalls would slow the node
        # until nothing commits.
        threads = [f"-p{tid}" for tid in os.listdir(f"/proc/{process.pid}/task")
                   if int(tid) != process.pid]
        tracers.append((node_id, name, subprocess.Popen(
            ["strace", "-c", "-e", "trace=fdatasync,fsync", "-o", name, *threads],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    time.sleep(1.0)  # strace attached to every thread
    committed = _committed(cluster)
    load = subprocess.Popen(_load_argv(target, shards, clients, 100_000_000, keyspace),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    began = time.monotonic()
    time.sleep(seconds)
    load.kill()
    elapsed = time.monotonic() - began
    load.wait()
    entries = _committed(cluster) - committed
    per_node: dict[str, float] = {}
    for node_id, path, tracer in tracers:
        tracer.send_signal(signal.SIGINT)
        try:
            tracer.wait(timeout=20)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()
        text = Path(path).read_text()
        os.unlink(path)
        calls = sum(int(match.group(1)) for match in re.finditer(
            r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(?:fdatasync|fsync)\s*$", text,
            re.MULTILINE))
        per_node[node_id] = round(calls / elapsed, 1)
    return {"syncs_per_s": per_node, "seconds": round(elapsed, 1),
            "entries_under_strace": entries,
            "syncs_per_entry": {node: round(rate * elapsed / max(entries, 1), 3)
                                for node, rate in per_node.items()}}


def run_one(root: Path, engine: str, shards: int, args: argparse.Namespace,
            trace: bool = True) -> dict[str, Any]:
    row: dict[str, Any] = {"engine": engine, "shards": shards, "clients": args.clients,
                           "requests": args.requests}
    cluster = rb.Phalanx(root / f"{engine}-{shards}")
    cluster.data_dir.mkdir(parents=True)
    try:
        cluster.start(3, timeout=120, overrides={"shards": shards, "storage_engine": engine})
        target = _wait_leaders(cluster, shards)
        row["leader_nodes"] = _leader_nodes(cluster)
        if args.idle_seconds > 0:
            row["idle_cpu_percent"] = _idle_cpu(cluster, args.idle_seconds)
        _set_load(target, shards, args.clients, 2000, args.keyspace, 120)  # warm up
        row["load_1m"] = round(os.getloadavg()[0], 2)
        pids = [process.pid for process in cluster.processes.values()]
        counters = _perf_start(pids) if args.perf else []
        cpu_before = _cpu_seconds(pids)
        began = time.monotonic()
        metrics = _set_load(target, shards, args.clients, args.requests, args.keyspace, 600)
        if counters:
            syncs = _perf_stop(counters)
            elapsed = time.monotonic() - began
            row["perf_fdatasync_per_s"] = {node: round(count / elapsed, 1)
                                           for node, count in syncs.items()}
            row["perf_fdatasync_per_set"] = round(sum(syncs.values()) / args.requests, 4)
        # CPU the three nodes spent per SET: the work done, whatever share of the shared
        # cores the nodes got (the throughput depends on the machine's load, this less so).
        row["cpu_us_per_set"] = round((_cpu_seconds(pids) - cpu_before) / args.requests * 1e6)
        row.update(rps=metrics["rps"], p50_ms=metrics["p50_latency_ms"],
                   p99_ms=metrics["p99_latency_ms"])
        if args.strace_seconds > 0 and trace:
            row.update(_strace_syncs(cluster, target, shards, args.strace_seconds,
                                     args.clients, args.keyspace))
    except Exception as error:  # a failed run is reported, the others go on
        row["error"] = f"{type(error).__name__}: {error}"[:300]
    finally:
        cluster.stop()
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shards", default="1,3,9")
    parser.add_argument("--engines", default="wal,node")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--keyspace", type=int, default=100000)
    parser.add_argument("--strace-seconds", type=float, default=5.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--strace-first-round-only", action="store_true")
    parser.add_argument("--perf", action="store_true",
                        help="count fdatasync/fsync with perf stat during the measured load")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    shard_counts = [int(s) for s in args.shards.split(",")]
    engines = args.engines.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="phalanx-shards-") as root:
        turn = 0
        for round_number in range(args.rounds):
            for shards in shard_counts:
                # engines back to back per shard count, the order alternating (ABBA...): the
                # machine's load drifts over minutes
                order = engines if turn % 2 == 0 else list(reversed(engines))
                turn += 1
                for engine in order:
                    row = run_one(Path(root), engine, shards, args,
                                  trace=round_number == 0 or not args.strace_first_round_only)
                    row["round"] = round_number + 1
                    rows.append(row)
    summary: dict[str, Any] = {}
    for engine in engines:
        for shards in shard_counts:
            good = [r for r in rows if r["engine"] == engine and r["shards"] == shards
                    and "rps" in r]
            if good:
                summary[f"{engine} {shards} shards"] = {
                    "rps_median": statistics.median(r["rps"] for r in good),
                    "runs": [r["rps"] for r in good],
                    "loads": [r["load_1m"] for r in good],
                    "syncs_per_s": [r.get("syncs_per_s") for r in good],
                    "syncs_per_entry": [r.get("syncs_per_entry") for r in good],
                    "idle_cpu_percent": [r.get("idle_cpu_percent") for r in good],
                    "cpu_us_per_set_median": statistics.median(r["cpu_us_per_set"]
                                                               for r in good),
                    "cpu_us_per_set": [r["cpu_us_per_set"] for r in good],
                    "perf_fdatasync_per_set": [r.get("perf_fdatasync_per_set") for r in good],
                    "perf_fdatasync_per_s": [r.get("perf_fdatasync_per_s") for r in good]}
    for engine in engines:
        base = summary.get(f"{engine} 1 shards")
        for shards in shard_counts:
            row = summary.get(f"{engine} {shards} shards")
            if base and row:
                row["vs_1_shard"] = row["rps_median"] / base["rps_median"]
    if len(engines) == 2:
        for shards in shard_counts:
            a, b = (summary.get(f"{engine} {shards} shards") for engine in engines)
            if a and b:
                summary[f"{engines[1]}/{engines[0]} {shards} shards"] = round(
                    b["rps_median"] / a["rps_median"], 3)
    print(json.dumps(summary, indent=1))
    if args.output:
        args.output.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()

"""`phalanx bench`: phalanx and every installed peer, side by side, in one run (issue 7, slice 1).

What it measures (see benchmarks/README.md, "phalanx bench", for how to read it):
- writes: redis-benchmark SET against the leader of a 3-node phalanx cluster (node defaults:
  fsync per Raft batch, quorum commit) vs one redis-server with `appendonly yes`,
  `appendfsync always`, at 1 and 50 clients (and 256 in a full run);
- reads: redis-benchmark GET at 50 clients, phalanx leader (linearizable ReadIndex reads) vs the
  same redis-server;
- commands: LPUSH, LPOP, ZADD, EVALSHA at 50 clients, the same two targets
  (benchmarks/bench_commands.py);
- failover: client-visible write gap after kill -9 of the phalanx leader (an open-loop writer
  through a surviving node), and after kill -9 of a Redis Sentinel master (1 master, 2 replicas,
  3 sentinels, down-after-milliseconds 1000; the writer asks a sentinel for the master after an
  error), when `redis-sentinel` is installed;
- etcd, PySyncObj: not measured yet; reported as skipped with how to install them.

Runs alternate: for each repeat every target runs once, in an order that rotates per repeat, so
slow drift of a shared machine spreads over all targets. Medians, min and max over the repeats,
and phalanx/peer ratios, go to `RESULTS.md` and `results.json` in the output directory.

Rules it keeps: every process it starts is stopped by pid (phalanx through `phalanx down`, then
any survivor naming our temporary directory), also on errors, Ctrl-C and SIGTERM; every external
call has a timeout; no number is a pass/fail threshold.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import resp_bench as rb  # noqa: E402  (same directory; shares the process and parsing helpers)
from bench_queue import QueueSettings  # noqa: E402  (the queue section's settings, issue 17)

SECTIONS = ("writes", "reads", "commands", "pipelines", "failover", "sigstop", "etcd",
            "pysyncobj", "latency", "scale", "recovery", "memory", "bulk", "soak", "queue",
            "partition", "hosts")
#: Sections that start their own clusters (benchmarks/bench_sections.py, bench_queue.py, and
#: the modules of SECTION_MODULES), run before the rest.
ISOLATED = ("scale", "recovery", "memory", "bulk", "soak", "queue", "partition", "hosts")
#: Sections in a module of their own, each on clusters of its own: name -> (module, function).
#: `function(processes, settings)` returns the section's dict, stored as `doc[name]`;
#: `module.markdown(doc[name])` gives its lines in RESULTS.md. A new section registers here
#: (and in SECTIONS, ISOLATED and the CLI's --only default), and adds its goal row to
#: bench_goals.ROWS.
SECTION_MODULES: dict[str, tuple[str, str]] = {
    "bulk": ("bench_bulk", "bulk_section"),
    "hosts": ("bench_hosts", "hosts_section"),
}

#: Peers this suite knows about: name -> (how to detect it, how to install it, measured here?).
PEERS: dict[str, dict[str, Any]] = {
    "redis-server": {"binary": "redis-server", "install": "apt-get install redis-server",
                     "measured": True},
    "redis-benchmark": {"binary": "redis-benchmark", "install": "apt-get install redis-tools",
                        "measured": True},
    "redis-sentinel": {"binary": "redis-sentinel", "install": "apt-get install redis-sentinel",
                       "measured": True},
    "etcd": {"binary": "etcd", "install": "apt-get install etcd-server etcd-client golang-go "
             "golang-etcd-server-dev", "measured": True},
    "etcdctl": {"binary": "etcdctl", "install": "apt-get install etcd-client", "measured": True},
    "go": {"binary": "go", "install": "apt-get install golang-go golang-etcd-server-dev",
           "measured": True},
    "pysyncobj": {"module": "pysyncobj", "install": "pip install pysyncobj", "measured": True},
}


@dataclass
class Settings:
    repeats: int = 3
    set_requests: dict[int, int] = field(default_factory=lambda: {1: 1000, 50: 10000,
                                                                  256: 10000})
    get_requests: int = 20000
    read_clients: int = 50
    keyspace: int = 100000
    failover_tries: int = 5
    sigstop_tries: int = 3
    pysyncobj_requests: dict[int, int] = field(default_factory=lambda: {1: 150, 16: 1000})
    etcd_requests: dict[int, int] = field(default_factory=lambda: {1: 1000, 50: 10000,
                                                                   256: 10000})
    writer_interval_s: float = 0.005
    writer_timeout_s: float = 0.5
    run_timeout_s: float = 90.0
    #: pipelines (issue 15, lever 5): SET requests per run, 100 per pipeline, through the
    #: leader and through a follower (benchmarks/bench_pipelines.py).
    pipeline_requests: int = 40000
    #: commands (issue 13): LPUSH/LPOP/ZADD/EVALSHA, requests per run and clients.
    command_requests: int = 10000
    command_clients: int = 50
    only: tuple[str, ...] = SECTIONS
    #: Peers to treat as not installed (the smoke test uses this to see the "skipped" path).
    assume_missing: frozenset[str] = frozenset()
    quick: bool = False
    #: Peer mutual TLS on every phalanx cluster (a test CA and certificates in this directory).
    peer_tls_dir: str | None = None
    #: reads: also GET through a follower (ReadIndex via the leader) and on a --lease-reads
    #: cluster; the keyspace is loaded first everywhere, so every GET hits.
    read_variants: bool = True
    #: latency: fixed rates (requests/s) and seconds per open-loop run.
    latency_rates: tuple[float, ...] = (500.0, 2000.0)
    latency_seconds: float = 10.0
    #: scale: (nodes, shards) per row, SET requests per row (split over the nodes).
    scale_configs: tuple[tuple[int, int], ...] = ((3, 1), (3, 3), (3, 9), (6, 1), (6, 3),
                                                  (6, 9))
    scale_requests: int = 10000
    #: recovery: data sizes (keys), SET requests per size; memory: keys.
    recovery_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    recovery_set_requests: int = 20000
    memory_keys: int = 1_000_000
    #: Snapshot cadence of the recovery/memory cluster (None: the node defaults, 20000/2000).
    snapshot_every_entries: int | None = None
    snapshot_keep_entries: int = 2000
    #: recovery: also wipe a follower's shard data and time its catch-up by snapshot; how
    #: long it may take before the data section stops.
    recovery_wipe: bool = True
    wipe_timeout_s: float = 300.0
    #: soak: seconds, mixed SET/GET rate, keys, RSS/disk sample interval.
    soak_seconds: float = 120.0
    soak_rate: float = 500.0
    soak_keys: int = 10000
    soak_sample_s: float = 10.0
    #: bulk (issue 15): keys loaded in 1,000-SET pipelines into an idle cluster, and a bound
    #: on the load's time (the row then says how far it got).
    bulk_keys: int = 1_000_000
    bulk_timeout_s: float = 900.0
    #: hosts (issue 15 lever 9, benchmarks/bench_hosts.py): 3 hosts x K=1 vs x K=2 node
    #: processes, alternating rounds, SET requests per run, shards of both clusters.
    hosts_rounds: int = 2
    hosts_requests: int = 20000
    hosts_shards: int = 6
    #: queue (issue 17): phalanx streams vs RabbitMQ quorum queues vs redis-server streams.
    queue: QueueSettings = field(default_factory=QueueSettings)

    @classmethod
    def quick_settings(cls) -> Settings:
        return cls(repeats=1, set_requests={1: 300, 50: 3000}, get_requests=5000,
                   failover_tries=1, sigstop_tries=1, etcd_requests={1: 300, 50: 3000},
                   pysyncobj_requests={1: 50, 16: 300},
                   run_timeout_s=30.0, quick=True, keyspace=20000, command_requests=2000,
                   pipeline_requests=3000,
                   latency_rates=(500.0,), latency_seconds=2.0,
                   scale_configs=((3, 1), (3, 9)), scale_requests=3000,
                   recovery_sizes=(10_000,), recovery_set_requests=3000, memory_keys=10_000,
                   snapshot_every_entries=500, snapshot_keep_entries=50, wipe_timeout_s=10.0,
                   soak_seconds=10.0, soak_sample_s=2.0, soak_keys=2000,
                   bulk_keys=20_000, bulk_timeout_s=120.0,
                   hosts_rounds=1, hosts_requests=3000,
                   queue=QueueSettings.quick())

    def sections(self) -> set[str]:
        return set(self.only)


def log(message: str) -> None:
    rb.log(message)


def installed(peer: str, settings: Settings) -> bool:
    if peer in settings.assume_missing:
        return False
    spec = PEERS[peer]
    if "binary" in spec:
        return shutil.which(spec["binary"]) is not None
    import importlib.util

    return importlib.util.find_spec(spec["module"]) is not None


def skip_note(peer: str, settings: Settings) -> str:
    spec = PEERS[peer]
    if not installed(peer, settings):
        return f"skipped: not installed ({spec['install']})"
    return "skipped: installed, but not measured by this version of the suite"


# --------------------------------------------------------------------------- processes


class Processes:
    """Everything started for one run; `close()` stops it all by pid."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.children: list[subprocess.Popen[bytes]] = []
        self.cluster: rb.Phalanx | None = None
        #: Clusters of the isolated sections and the lease-reads cluster (stopped by close()).
        self.extra_clusters: list[rb.Phalanx] = []
        self.notes: list[str] = []

    def spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as handle:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=handle,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append(process)
        return process

    def close(self) -> None:
        if self.cluster is not None:
            self.notes += self.cluster.stop()
        for cluster in list(self.extra_clusters):
            self.notes += cluster.stop()
        self.extra_clusters.clear()
        for process in self.children:
            rb.stop_process(process, grace=3.0)
        self.notes.append(f"stopped {len(self.children)} child process(es) by pid")
        # Anything left that names our directory (e.g. a node restarted by `phalanx restart`).
        for pid in rb.pids_mentioning(str(self.root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                self.notes.append(f"killed leftover pid {pid}")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def resp_command(host: str, port: int, *args: str, timeout: float = 1.0) -> bytes:
    """One RESP command on a fresh connection; the raw first reply (enough for our checks)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.settimeout(timeout)
        connection.sendall(payload)
        data = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                return data
            data += chunk
            if _complete(data):
                return data


def _complete(data: bytes) -> bool:
    """Whether `data` holds one whole RESP2 reply (simple types, bulk, flat/nested arrays)."""
    def parse(position: int) -> int | None:
        end = data.find(b"\r\n", position)
        if end < 0:
            return None
        kind, head = data[position:position + 1], data[position + 1:end]
        if kind in (b"+", b"-", b":"):
            return end + 2
        if kind == b"$":
            size = int(head)
            if size < 0:
                return end + 2
            stop = end + 2 + size + 2
            return stop if len(data) >= stop else None
        if kind == b"*":
            count = int(head)
            cursor: int | None = end + 2
            for _ in range(max(count, 0)):
                assert cursor is not None
                cursor = parse(cursor)
                if cursor is None:
                    return None
            return cursor
        return end + 2
    try:
        return parse(0) is not None
    except (ValueError, AssertionError):
        return False


def bulk_strings(reply: bytes) -> list[str]:
    """The bulk strings of a flat array reply (e.g. get-master-addr-by-name)."""
    lines = reply.split(b"\r\n")
    return [lines[i + 1].decode() for i, line in enumerate(lines[:-1])
            if line.startswith(b"$") and line != b"$-1"]


# --------------------------------------------------------------------------- throughput


def run_load(target: str, host: str, port: int, test: str, clients: int, requests: int,
             repeat: int, settings: Settings) -> dict[str, Any]:
    load = os.getloadavg()[0]
    ok, metrics, error, elapsed = rb.run_benchmark(host, port, test, 1, clients, requests,
                                                   settings.keyspace, settings.run_timeout_s)
    shown = (f"{metrics['rps']:>9,.0f} ops/s p50 {metrics['p50_latency_ms']:.2f} ms p99 "
             f"{metrics['p99_latency_ms']:.2f} ms" if metrics else "")
    log(f"repeat {repeat} {target:<16} {test} c={clients:<3} n={requests}: {shown}"
        f"{'' if ok else ' FAILED: ' + error} [{elapsed:.1f} s, load {load:.1f}]")
    return {"target": target, "test": test, "clients": clients, "requests": requests,
            "repeat": repeat, "ok": ok, "error": error, "elapsed_s": round(elapsed, 2),
            "load_1m": round(load, 2), "metrics": metrics}


def phalanx_leader(cluster: rb.Phalanx) -> tuple[str, str, int]:
    def find() -> str | None:
        leaders = [n for n, role in cluster.roles().items() if role == "leader"]
        return sorted(leaders)[0] if leaders else None
    node = wait_for(find, 30, "a phalanx leader", poll=0.2)
    host, port = cluster.address(node)
    return node, host, port


def throughput_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(r["test"], r["clients"]) for r in runs}, key=lambda k: (k[0] != "SET", k[1]))
    for test, clients in keys:
        for target in ("phalanx", "phalanx-follower", "phalanx-lease", "redis-aof-always",
                       "etcd", "pysyncobj"):
            chosen = [r for r in runs if (r["target"], r["test"], r["clients"])
                      == (target, test, clients)]
            if not chosen:
                continue
            good = [r for r in chosen if r["ok"]]
            row: dict[str, Any] = {"target": target, "test": test, "clients": clients,
                                   "runs": len(chosen), "ok_runs": len(good),
                                   "failures": [r["error"] for r in chosen if not r["ok"]]}
            if good:
                rps = [r["metrics"]["rps"] for r in good]
                row.update(rps_median=statistics.median(rps), rps_min=min(rps),
                           rps_max=max(rps),
                           p50_ms=statistics.median(r["metrics"]["p50_latency_ms"] for r in good),
                           p99_ms=statistics.median(r["metrics"]["p99_latency_ms"] for r in good))
            rows.append(row)
    by_key = {(r["target"], r["test"], r["clients"]): r for r in rows}
    for row in rows:
        other = by_key.get(("redis-aof-always", row["test"], row["clients"]))
        if row["target"].startswith("phalanx") and other and row.get("rps_median") and \
                other.get("rps_median"):
            row["vs_redis_aof_always"] = row["rps_median"] / other["rps_median"]
        etcd = by_key.get(("etcd", row["test"], row["clients"]))
        if row["target"] == "phalanx" and etcd and row.get("rps_median") and \
                etcd.get("rps_median"):
            row["vs_etcd"] = row["rps_median"] / etcd["rps_median"]
            row["p50_vs_etcd"] = row["p50_ms"] / etcd["p50_ms"] if etcd["p50_ms"] else None
        syncobj = by_key.get(("pysyncobj", row["test"], row["clients"]))
        if row["target"] == "phalanx" and syncobj and row.get("rps_median") and \
                syncobj.get("rps_median"):
            row["vs_pysyncobj"] = row["rps_median"] / syncobj["rps_median"]
    return rows


# --------------------------------------------------------------------------- failover


class GapWriter:
    """Open-loop writer: every `interval_s` one SET in its own thread on a fresh connection
    (socket timeout `timeout_s`) to the address `resolve()` returns; records (start, end, ok).

    Open loop, because a closed-loop writer is in phase with the fault: its request in flight at
    the fault hangs a whole socket timeout, so it would measure the timeout, not the failover.
    `resolve()` is asked again after every error (a Sentinel client asks a sentinel).
    """

    def __init__(self, resolve: Callable[[], tuple[str, int] | None], interval_s: float,
                 timeout_s: float, tag: str) -> None:
        self.resolve = resolve
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.tag = tag
        self.address: tuple[str, int] | None = None
        self.stale = True
        self.events: list[tuple[float, float, bool]] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.sender = threading.Thread(target=self._loop, daemon=True)
        self.workers: list[threading.Thread] = []

    def start(self) -> GapWriter:
        self.sender.start()
        return self

    def _loop(self) -> None:
        sequence = 0
        while not self.stop_event.wait(self.interval_s):
            sequence += 1
            worker = threading.Thread(target=self._one, args=(sequence,), daemon=True)
            worker.start()
            self.workers = [w for w in self.workers if w.is_alive()] + [worker]

    def _one(self, sequence: int) -> None:
        began = time.monotonic()
        ok = False
        try:
            if self.stale or self.address is None:
                address = self.resolve()
                if address is not None:
                    self.address, self.stale = address, False
            if self.address is not None:
                reply = resp_command(self.address[0], self.address[1], "SET",
                                     f"gap:{self.tag}:{sequence}", "x", timeout=self.timeout_s)
                ok = reply.startswith(b"+OK")
        except (OSError, ValueError):
            ok = False
        if not ok:
            self.stale = True
        ended = time.monotonic()
        with self.lock:
            self.events.append((began, ended, ok))

    def successes(self) -> int:
        with self.lock:
            return sum(1 for *_, ok in self.events if ok)

    def first_success_after(self, moment: float) -> float | None:
        with self.lock:
            ends = [end for began, end, ok in self.events if ok and began > moment]
        return min(ends) if ends else None

    def last_success_before(self, moment: float) -> float | None:
        with self.lock:
            ends = [end for _b, end, ok in self.events if ok and end <= moment]
        return max(ends) if ends else None

    def close(self) -> None:
        self.stop_event.set()
        self.sender.join(10)
        for worker in list(self.workers):
            worker.join(self.timeout_s + 5)


class ExternalWriter:
    """The same open-loop writer, run by another program (the Go etcd client, a PySyncObj node):
    it prints one line per write, "<start unix ns> <end unix ns> <0|1>", until its stdin closes.
    Same interface as GapWriter."""

    def __init__(self, argv: list[str], processes: Processes, log_path: Path) -> None:
        self.offset = time.monotonic() - time.time()
        self.events: list[tuple[float, float, bool]] = []
        self.lock = threading.Lock()
        with open(log_path, "ab") as handle:
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=handle, start_new_session=True)
        processes.children.append(self.process)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            parts = raw.split()
            if len(parts) != 3:
                continue
            with contextlib.suppress(ValueError), self.lock:
                self.events.append((int(parts[0]) / 1e9 + self.offset,
                                    int(parts[1]) / 1e9 + self.offset, parts[2] == b"1"))

    successes = GapWriter.successes
    first_success_after = GapWriter.first_success_after
    last_success_before = GapWriter.last_success_before

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(5)


def measure_gap(resolve: Callable[[], tuple[str, int] | None], fault: Callable[[], None],
                settings: Settings, tag: str, recover_timeout_s: float = 30.0) -> dict[str, Any]:
    writer = GapWriter(resolve, settings.writer_interval_s, settings.writer_timeout_s, tag).start()
    return measure_gap_with(writer, fault, tag, recover_timeout_s)


class Fault:
    """A fault applied at most once, remembering whether it was. When no write succeeded
    before it (a loaded machine), `measure_gap` never applies it: a kill -9 try then applies
    it after the failed try (`ensure`), so the restart that follows finds the process gone
    instead of aborting the whole run waiting for it to exit."""

    def __init__(self, apply: Callable[[], None]) -> None:
        self.apply, self.done = apply, False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.apply()

    def ensure(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self()


def measure_gap_with(writer: GapWriter | ExternalWriter, fault: Callable[[], None], tag: str,
                     recover_timeout_s: float = 30.0) -> dict[str, Any]:
    try:
        wait_for(lambda: writer.successes() >= 20, 30, f"{tag}: writes before the fault")
        faulted_at = time.monotonic()
        fault()
        first = wait_for(lambda: writer.first_success_after(faulted_at), recover_timeout_s,
                         f"{tag}: a write after the fault")
        last = writer.last_success_before(faulted_at)
    finally:
        writer.close()
    return {"gap_ms": round((first - (last if last is not None else faulted_at)) * 1000, 1),
            "after_fault_ms": round((first - faulted_at) * 1000, 1)}


def phalanx_converged(cluster: rb.Phalanx) -> bool:
    """Every node answers and they all name the same leader."""
    from phalanx.ops import admin, cluster_file

    states = admin.query_status(cluster_file.read_cluster_file(cluster.data_dir).nodes)
    return all(s.reachable for s in states) and len(
        {s.leader if s.role != "leader" else s.entry.id for s in states}) == 1


def phalanx_failover(cluster: rb.Phalanx, settings: Settings,
                     how: str = "kill") -> list[dict[str, Any]]:
    """kill -9 (`how="kill"`: then `phalanx restart`) or SIGSTOP (`how="stop"`: then SIGCONT,
    and the old leader rejoins as a follower) of the leader, writes through a surviving node."""
    from phalanx.ops import cluster_file, launcher

    results = []
    tries = settings.failover_tries if how == "kill" else settings.sigstop_tries
    for attempt in range(1, tries + 1):
        leader, _host, _port = phalanx_leader(cluster)
        survivor = sorted(n["id"] for n in cluster.nodes if n["id"] != leader)[0]
        survivor_address = cluster.address(survivor)
        pid = cluster_file.read_cluster_file(cluster.data_dir).node(leader).pid
        assert pid is not None and launcher.is_our_node(pid), f"{leader} pid {pid} not running"

        fault = Fault(lambda pid=pid: os.kill(pid, signal.SIGKILL if how == "kill"
                                              else signal.SIGSTOP))
        try:
            gap = measure_gap(lambda where=survivor_address: where, fault, settings,
                              f"phalanx-{how}{attempt}")
            gap.update(ok=True, error="")
        except RuntimeError as error:
            gap = {"ok": False, "error": str(error)}
        finally:
            if how == "stop":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        gap.update(try_=attempt, killed=leader, via=survivor)
        log(f"failover phalanx try {attempt}: {FAULTS[how]} {leader}, writes via {survivor}: "
            f"{gap.get('gap_ms', '-')} ms gap {gap['error']}")
        if how == "kill" and float(gap.get("gap_ms") or 0) > OUTLIER_GAP_MS:
            keep_outlier_logs(cluster, f"kill{attempt}-{leader}")
        results.append(gap)
        if how == "stop":
            wait_for(lambda: phalanx_converged(cluster), 60, "the phalanx cluster to converge",
                     poll=0.2)
            continue
        fault.ensure()
        wait_for(lambda pid=pid: not launcher.pid_alive(pid), 10, f"{leader} to exit")
        done = subprocess.run([sys.executable, "-m", "phalanx", "restart", leader, "--data-dir",
                               str(cluster.data_dir), "--wait", "--timeout", "60"],
                              capture_output=True, text=True, timeout=90, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"phalanx restart {leader} failed: {done.stdout} {done.stderr}")
        wait_for(lambda: phalanx_converged(cluster), 60, "the phalanx cluster to converge",
                 poll=0.2)
    return results


FAULTS = {"kill": "kill -9", "stop": "SIGSTOP"}
OUTLIER_GAP_MS = 500.0
"""A kill -9 gap above this (the fast failover usually takes ~50-200 ms) keeps the node logs."""


def keep_outlier_logs(cluster: rb.Phalanx, tag: str) -> None:
    """Copy every node's log of a slow kill -9 failover to /tmp for diagnosis (the bench's work
    directory is removed at the end)."""
    target = Path(tempfile.gettempdir()) / "phalanx-failover-outliers" / (
        time.strftime("%Y%m%dT%H%M%S") + "-" + tag)
    target.mkdir(parents=True, exist_ok=True)
    for node_log in Path(cluster.data_dir).glob("*/node.log"):
        shutil.copy(node_log, target / f"{node_log.parent.name}.log")
    log(f"  slow failover: node logs kept in {target}")


class Sentinels:
    """1 redis master + 2 replicas + 3 sentinels on 127.0.0.1, data under `root`."""

    NAME = "mymaster"

    def __init__(self, root: Path, processes: Processes) -> None:
        self.root = root
        self.processes = processes
        self.servers: dict[int, tuple[list[str], subprocess.Popen[bytes]]] = {}
        self.sentinel_ports: list[int] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ports = [rb.free_port() for _ in range(3)]
        for index, port in enumerate(ports):
            directory = self.root / f"redis-{port}"
            directory.mkdir()
            argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir",
                    str(directory), "--save", "", "--appendonly", "no", "--protected-mode", "no",
                    "--daemonize", "no"]
            if index > 0:
                argv += ["--replicaof", "127.0.0.1", str(ports[0])]
            self.servers[port] = (argv, self.processes.spawn(argv, directory / "redis.log"))
        for port in ports:
            wait_for(lambda port=port: rb.ping("127.0.0.1", port), 15, f"redis :{port}")
        for _ in range(3):
            port = rb.free_port()
            directory = self.root / f"sentinel-{port}"
            directory.mkdir()
            config = directory / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {directory}\n"
                f"sentinel monitor {self.NAME} 127.0.0.1 {ports[0]} 2\n"
                f"sentinel down-after-milliseconds {self.NAME} 1000\n"
                f"sentinel failover-timeout {self.NAME} 10000\n"
                f"sentinel parallel-syncs {self.NAME} 1\n")
            self.processes.spawn(["redis-sentinel", str(config)], directory / "sentinel.log")
            self.sentinel_ports.append(port)
        wait_for(self.ready, 30, "sentinels to see 2 replicas and 2 other sentinels", poll=0.2)

    def master(self) -> tuple[str, int] | None:
        for port in self.sentinel_ports:
            with contextlib.suppress(OSError, ValueError):
                parts = bulk_strings(resp_command("127.0.0.1", port, "SENTINEL",
                                                  "get-master-addr-by-name", self.NAME,
                                                  timeout=0.3))
                if len(parts) == 2:
                    return parts[0], int(parts[1])
        return None

    def ready(self) -> bool:
        """Every sentinel knows the master, both replicas (link up) and the other sentinels."""
        for port in self.sentinel_ports:
            try:
                fields = bulk_strings(resp_command("127.0.0.1", port, "SENTINEL", "master",
                                                   self.NAME))
            except (OSError, ValueError):
                return False
            info = dict(zip(fields[::2], fields[1::2], strict=False))
            if info.get("num-slaves") != "2" or info.get("num-other-sentinels") != "2" or \
                    "down" in info.get("flags", "") or "failover" in info.get("flags", ""):
                return False
        master = self.master()
        if master is None:
            return False
        try:
            replication = resp_command(master[0], master[1], "INFO", "replication").decode()
        except OSError:
            return False
        return "connected_slaves:2" in replication and replication.count("state=online") == 2

    def kill_master(self) -> tuple[int, Callable[[], None]]:
        master = self.master()
        assert master is not None
        _argv, process = self.servers[master[1]]
        return master[1], process.kill

    def restart(self, port: int) -> None:
        argv, process = self.servers[port]
        process.wait(timeout=10)
        # Back as a plain server: the sentinels turn it into a replica of the new master.
        argv = list(argv)
        if "--replicaof" in argv:
            at = argv.index("--replicaof")
            del argv[at:at + 3]
        directory = Path(argv[argv.index("--dir") + 1])
        self.servers[port] = (argv, self.processes.spawn(argv, directory / "redis.log"))


def sentinel_failover(sentinels: Sentinels, settings: Settings,
                      how: str = "kill") -> list[dict[str, Any]]:
    """kill -9 (then restart as a plain server) or SIGSTOP (then SIGCONT) of the master; the
    sentinels turn the old master into a replica of the new one."""
    if not sentinels.sentinel_ports:
        sentinels.start()
    results = []
    tries = settings.failover_tries if how == "kill" else settings.sigstop_tries
    for attempt in range(1, tries + 1):
        wait_for(sentinels.ready, 60, "sentinel setup to heal", poll=0.2)
        port, kill = sentinels.kill_master()
        pid = sentinels.servers[port][1].pid

        def apply(kill: Callable[[], None] = kill, pid: int = pid) -> None:
            if how == "kill":
                kill()
            else:
                os.kill(pid, signal.SIGSTOP)

        fault = Fault(apply)

        try:
            gap = measure_gap(sentinels.master, fault, settings, f"sentinel-{how}{attempt}",
                              recover_timeout_s=60)
            gap.update(ok=True, error="")
        except RuntimeError as error:
            gap = {"ok": False, "error": str(error)}
        finally:
            if how == "stop":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        gap.update(try_=attempt, killed=f"127.0.0.1:{port}")
        log(f"failover sentinel try {attempt}: {FAULTS[how]} master :{port}: "
            f"{gap.get('gap_ms', '-')} ms gap {gap['error']}")
        results.append(gap)
        if how == "kill":
            fault.ensure()
            sentinels.restart(port)
    return results


# --------------------------------------------------------------------------- etcd

#: etcd timing profiles: name -> extra flags (etcd's defaults: heartbeat 100 ms, election 1000 ms).
ETCD_PROFILES = {"etcd": [], "etcd-fast": ["--heartbeat-interval", "50",
                                          "--election-timeout", "250"]}
ETCD_LOAD_SOURCE = HERE / "etcd_load" / "main.go"


def build_etcd_load(root: Path) -> Path:
    """Build benchmarks/etcd_load/main.go against Debian's clientv3, offline, GOPATH mode."""
    binary = root / "etcd_load"
    environment = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode")
    environment.setdefault("GOCACHE", str(Path.home() / ".cache" / "go-build"))
    done = subprocess.run(["go", "build", "-o", str(binary), str(ETCD_LOAD_SOURCE)],
                          capture_output=True, text=True, timeout=600, check=False,
                          env=environment, cwd=str(ETCD_LOAD_SOURCE.parent))
    if done.returncode != 0:
        raise RuntimeError(f"go build etcd_load failed: {(done.stdout + done.stderr)[-800:]}")
    return binary


class Etcd:
    """A 3-member etcd cluster on 127.0.0.1 (free ports, data under `root`)."""

    def __init__(self, root: Path, processes: Processes, profile: str) -> None:
        self.root = root
        self.processes = processes
        self.profile = profile
        self.members: list[dict[str, Any]] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for index in range(3):
            self.members.append({"name": f"m{index}", "client": rb.free_port(),
                                 "peer": rb.free_port(), "dir": self.root / f"m{index}"})
        initial = ",".join(f"{m['name']}=http://127.0.0.1:{m['peer']}" for m in self.members)
        for member in self.members:
            client, peer = f"http://127.0.0.1:{member['client']}", \
                f"http://127.0.0.1:{member['peer']}"
            member["argv"] = [
                "etcd", "--name", member["name"], "--data-dir", str(member["dir"]),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"bench-{self.profile}-{os.getpid()}",
                "--log-level", "warn", *ETCD_PROFILES[self.profile]]
            self.spawn(member)
        wait_for(self.leader, 60, f"{self.profile}: a leader", poll=0.2)

    def spawn(self, member: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        member["process"] = self.processes.spawn(member["argv"],
                                                 self.root / f"{member['name']}.log")

    def endpoint(self, member: dict[str, Any]) -> str:
        return f"127.0.0.1:{member['client']}"

    def term(self) -> int:
        """The highest Raft term a live member reports (0 when none answers)."""
        endpoints = ",".join(self.endpoint(m) for m in self.members
                             if m["process"].poll() is None)
        try:
            done = subprocess.run(["etcdctl", "--endpoints", endpoints, "--command-timeout",
                                   "1s", "--dial-timeout", "1s", "endpoint", "status", "-w",
                                   "json"], capture_output=True, text=True, timeout=10,
                                  check=False, env=dict(os.environ, ETCDCTL_API="3"))
            return max((int(st["Status"].get("raft_term", 0))
                        for st in json.loads(done.stdout or "[]")), default=0)
        except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
            return 0

    def leader(self) -> dict[str, Any] | None:
        """The member every live member names as leader, or None."""
        endpoints = ",".join(self.endpoint(m) for m in self.members
                             if m["process"].poll() is None)
        try:
            done = subprocess.run(["etcdctl", "--endpoints", endpoints, "--command-timeout",
                                   "1s", "--dial-timeout", "1s", "endpoint", "status", "-w",
                                   "json"], capture_output=True, text=True, timeout=10,
                                  check=False, env=dict(os.environ, ETCDCTL_API="3"))
            statuses = json.loads(done.stdout or "[]")
        except (subprocess.TimeoutExpired, ValueError):
            return None
        if len(statuses) != sum(1 for m in self.members if m["process"].poll() is None):
            return None
        leaders = {st["Status"]["leader"] for st in statuses}
        if len(leaders) != 1 or 0 in leaders:
            return None
        leader_id = leaders.pop()
        for st in statuses:
            if st["Status"]["header"]["member_id"] == leader_id:
                for member in self.members:
                    if st["Endpoint"].endswith(f":{member['client']}"):
                        return member
        return None


def run_etcd_load(binary: Path, etcd: Etcd, clients: int, requests: int, repeat: int,
                  settings: Settings) -> dict[str, Any]:
    """etcd_load against the leader's endpoint; a run dict like run_load's."""
    load = os.getloadavg()[0]
    leader = wait_for(etcd.leader, 30, "an etcd leader", poll=0.2)
    argv = [str(binary), "-mode", "load", "-endpoints", etcd.endpoint(leader), "-n",
            str(requests), "-c", str(clients), "-keyspace", str(settings.keyspace)]
    began = time.monotonic()
    ok, error, metrics = False, "", {}
    try:
        done = subprocess.run(argv, capture_output=True, text=True,
                              timeout=settings.run_timeout_s, check=False)
        result = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
        if done.returncode != 0 or not result:
            error = f"exit {done.returncode}: {done.stderr[-300:]}"
        elif result.get("errors"):
            error = f"{result['errors']} failed puts"
        else:
            ok = True
        if result:
            metrics = {"rps": float(result["rps"]), "p50_latency_ms": float(result["p50_ms"]),
                       "p99_latency_ms": float(result["p99_ms"])}
    except subprocess.TimeoutExpired:
        error = f"timed out after {settings.run_timeout_s:g} s"
    except ValueError as problem:
        error = f"unreadable output: {problem}"
    elapsed = time.monotonic() - began
    shown = (f"{metrics['rps']:>9,.0f} ops/s p50 {metrics['p50_latency_ms']:.2f} ms p99 "
             f"{metrics['p99_latency_ms']:.2f} ms" if metrics else "")
    log(f"repeat {repeat} {'etcd':<16} SET c={clients:<3} n={requests}: {shown}"
        f"{'' if ok else ' FAILED: ' + error} [{elapsed:.1f} s, load {load:.1f}]")
    return {"target": "etcd", "test": "SET", "clients": clients, "requests": requests,
            "repeat": repeat, "ok": ok, "error": error, "elapsed_s": round(elapsed, 2),
            "load_1m": round(load, 2), "metrics": metrics}


def etcd_failover(binary: Path, etcd: Etcd, settings: Settings,
                  how: str = "kill") -> list[dict[str, Any]]:
    """kill -9 (then start it again on its data dir) or SIGSTOP (then SIGCONT) of the etcd
    leader; the Go writer puts through the two other members."""
    results = []
    tries = settings.failover_tries if how == "kill" else settings.sigstop_tries
    for attempt in range(1, tries + 1):
        leader = wait_for(etcd.leader, 60, f"{etcd.profile}: a leader", poll=0.2)
        term_before = etcd.term()
        survivors = [etcd.endpoint(m) for m in etcd.members if m is not leader]
        process = leader["process"]
        writer = ExternalWriter(
            [str(binary), "-mode", "gap", "-endpoints", ",".join(survivors), "-interval",
             f"{settings.writer_interval_s * 1000:g}ms", "-timeout",
             f"{settings.writer_timeout_s * 1000:g}ms"],
            etcd.processes, etcd.root / "writer.log")

        fault = Fault(lambda pid=process.pid: os.kill(pid, signal.SIGKILL if how == "kill"
                                                      else signal.SIGSTOP))

        tag = f"{etcd.profile}-{how}{attempt}"
        try:
            gap = measure_gap_with(writer, fault, tag)
            gap.update(ok=True, error="")
        except RuntimeError as error:
            gap = {"ok": False, "error": str(error)}
        finally:
            if how == "stop":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)
        gap.update(try_=attempt, killed=leader["name"])
        if how == "kill":
            fault.ensure()
            process.wait(timeout=10)
            etcd.spawn(leader)
        # Healed: all three members answer and agree on a leader.
        wait_for(etcd.leader, 60, f"{etcd.profile} to heal", poll=0.2)
        term_after = etcd.term()
        if gap.get("ok") and term_before and term_after and term_after <= term_before:
            # No election followed the fault: the member hit had lost its leadership between
            # the look-up and the fault (a loaded machine), so the gap is not a failover's.
            gap.update(ok=False, error=f"no election followed (raft term stayed "
                                       f"{term_before}): {leader['name']} was not the leader "
                                       f"at the fault; its {gap.get('gap_ms')} ms not counted")
        log(f"failover {etcd.profile} try {attempt}: {FAULTS[how]} leader {leader['name']}: "
            f"{gap.get('gap_ms', '-')} ms gap {gap['error']}")
        results.append(gap)
    return results


# --------------------------------------------------------------------------- PySyncObj

PYSYNCOBJ_NODE = HERE / "pysyncobj_node.py"


class PySyncObjCluster:
    """3 PySyncObj nodes (benchmarks/pysyncobj_node.py) on 127.0.0.1, each in its own process,
    with a control port for commands (status, load, gap)."""

    def __init__(self, root: Path, processes: Processes) -> None:
        self.root = root
        self.processes = processes
        self.nodes: list[dict[str, Any]] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        raft = [f"127.0.0.1:{rb.free_port()}" for _ in range(3)]
        for index, address in enumerate(raft):
            node = {"name": f"s{index}", "raft": address, "control": rb.free_port()}
            node["argv"] = [sys.executable, str(PYSYNCOBJ_NODE), address,
                            ",".join(a for a in raft if a != address), str(node["control"]),
                            str(self.root)]
            self.nodes.append(node)
            self.spawn(node)
        wait_for(self.leader, 60, "a PySyncObj leader", poll=0.2)

    def spawn(self, node: dict[str, Any]) -> None:
        node["process"] = self.processes.spawn(node["argv"], self.root / f"{node['name']}.log")

    def command(self, node: dict[str, Any], line: str, timeout: float) -> dict[str, Any]:
        with socket.create_connection(("127.0.0.1", node["control"]), timeout=timeout) as c:
            c.settimeout(timeout)
            c.sendall(line.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
        return dict(json.loads(data))

    def leader(self) -> dict[str, Any] | None:
        """The node every live node names as leader, or None."""
        named = set()
        for node in self.nodes:
            if node["process"].poll() is not None:
                continue
            try:
                named.add(self.command(node, "status", 2.0).get("leader"))
            except (OSError, ValueError):
                return None
        if len(named) != 1 or None in named:
            return None
        leader = named.pop()
        return next((n for n in self.nodes if n["raft"] == leader), None)


class SocketWriter(ExternalWriter):
    """ExternalWriter reading the event lines from a connection (a PySyncObj node's `gap`)."""

    def __init__(self, address: tuple[str, int], command: str) -> None:
        self.offset = time.monotonic() - time.time()
        self.events = []
        self.lock = threading.Lock()
        self.connection = socket.create_connection(address, timeout=5)
        self.connection.settimeout(None)
        self.connection.sendall(command.encode() + b"\n")
        self.reader = threading.Thread(target=self._read_socket, daemon=True)
        self.reader.start()

    def _read_socket(self) -> None:
        with contextlib.suppress(OSError), self.connection.makefile("rb") as lines:
            for raw in lines:
                parts = raw.split()
                if len(parts) == 3:
                    with contextlib.suppress(ValueError), self.lock:
                        self.events.append((int(parts[0]) / 1e9 + self.offset,
                                            int(parts[1]) / 1e9 + self.offset, parts[2] == b"1"))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()
        self.reader.join(5)


def run_pysyncobj_load(cluster: PySyncObjCluster, threads: int, requests: int, repeat: int,
                       settings: Settings) -> dict[str, Any]:
    """`load` inside the leader's process (PySyncObj's clients are in-process threads)."""
    load = os.getloadavg()[0]
    began = time.monotonic()
    ok, error, metrics = False, "", {}
    try:
        leader = wait_for(cluster.leader, 30, "a PySyncObj leader", poll=0.2)
        result = cluster.command(leader, f"load {threads} {requests}", settings.run_timeout_s)
        metrics = {"rps": float(result["rps"]), "p50_latency_ms": float(result["p50_ms"]),
                   "p99_latency_ms": float(result["p99_ms"])}
        ok = not result.get("errors")
        error = "" if ok else f"{result['errors']} failed writes"
    except (OSError, ValueError, KeyError, RuntimeError) as problem:
        error = f"{type(problem).__name__}: {problem}"
    elapsed = time.monotonic() - began
    shown = (f"{metrics['rps']:>9,.0f} ops/s p50 {metrics['p50_latency_ms']:.2f} ms p99 "
             f"{metrics['p99_latency_ms']:.2f} ms" if metrics else "")
    log(f"repeat {repeat} {'pysyncobj':<16} SET c={threads:<3} n={requests}: {shown}"
        f"{'' if ok else ' FAILED: ' + error} [{elapsed:.1f} s, load {load:.1f}]")
    return {"target": "pysyncobj", "test": "SET", "clients": threads, "requests": requests,
            "repeat": repeat, "ok": ok, "error": error, "elapsed_s": round(elapsed, 2),
            "load_1m": round(load, 2), "metrics": metrics}


def pysyncobj_failover(cluster: PySyncObjCluster, settings: Settings,
                       how: str = "kill") -> list[dict[str, Any]]:
    """kill -9 (then start it again: its log is in memory, it catches up from the leader) or
    SIGSTOP (then SIGCONT) of the leader; the writer runs inside a surviving node."""
    results = []
    tries = settings.failover_tries if how == "kill" else settings.sigstop_tries
    for attempt in range(1, tries + 1):
        leader = wait_for(cluster.leader, 60, "a PySyncObj leader", poll=0.2)
        survivor = next(n for n in cluster.nodes if n is not leader)
        process = leader["process"]

        fault = Fault(lambda pid=process.pid: os.kill(pid, signal.SIGKILL if how == "kill"
                                                      else signal.SIGSTOP))

        try:
            writer = SocketWriter(("127.0.0.1", survivor["control"]),
                                  f"gap {settings.writer_interval_s * 1000:g} "
                                  f"{settings.writer_timeout_s * 1000:g}")
            gap = measure_gap_with(writer, fault, f"pysyncobj-{how}{attempt}")
            gap.update(ok=True, error="")
        except (RuntimeError, OSError) as error:
            gap = {"ok": False, "error": str(error)}
        finally:
            if how == "stop":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)
        gap.update(try_=attempt, killed=leader["name"], via=survivor["name"])
        log(f"failover pysyncobj try {attempt}: {FAULTS[how]} leader {leader['name']}: "
            f"{gap.get('gap_ms', '-')} ms gap {gap['error']}")
        results.append(gap)
        if how == "kill":
            fault.ensure()
            process.wait(timeout=10)
            cluster.spawn(leader)
        wait_for(cluster.leader, 60, "PySyncObj to heal", poll=0.2)
    return results


def gap_summary(key: str, tries: list[dict[str, Any]]) -> dict[str, Any]:
    """`key` is "<target>|<fault>" (fault: kill, stop)."""
    target, how = key.split("|")
    gaps = [t["gap_ms"] for t in tries if t.get("ok")]
    return {"target": target, "fault": FAULTS[how], "tries": len(tries), "ok_tries": len(gaps),
            "median_ms": statistics.median(gaps) if gaps else None,
            "min_ms": min(gaps) if gaps else None, "max_ms": max(gaps) if gaps else None,
            "gaps_ms": gaps, "failures": [t["error"] for t in tries if not t.get("ok")]}


# --------------------------------------------------------------------------- the run


def run_suite(settings: Settings, output_dir: Path) -> dict[str, Any]:
    """Run the selected sections; write RESULTS.md and results.json into `output_dir`."""
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="phalanx-bench-"))
    if settings.peer_tls_dir:
        rb.NODE_OVERRIDES["peer_tls_dir"] = str(Path(settings.peer_tls_dir).absolute())
    machine = rb.machine_description(root)
    machine["kernel"] = os.uname().release
    log(f"machine: {machine['cpu_count']} CPUs, kernel {machine['kernel']}, python "
        f"{machine['python']}, load {machine['load_average_start']}; work dir {root}")
    sections = settings.sections()
    skipped: dict[str, str] = {}
    for peer in ("redis-server", "redis-benchmark", "redis-sentinel"):
        if not installed(peer, settings):
            skipped[peer] = skip_note(peer, settings)
            log(f"{peer}: {skipped[peer]}")
    want_etcd = "etcd" in sections and bool({"writes", "failover", "sigstop", "latency"}
                                              & sections)
    missing_etcd = [p for p in ("etcd", "etcdctl", "go") if not installed(p, settings)]
    if "etcd" not in sections:
        skipped["etcd"] = "skipped: not selected (--only)"
    elif missing_etcd:
        skipped["etcd"] = (f"skipped: not installed ({', '.join(missing_etcd)}; "
                           f"{PEERS['etcd']['install']})")
        want_etcd = False
    want_pysyncobj = "pysyncobj" in sections and bool({"writes", "failover", "sigstop"}
                                                       & sections)
    if "pysyncobj" not in sections:
        skipped["pysyncobj"] = "skipped: not selected (--only)"
    elif not installed("pysyncobj", settings):
        skipped["pysyncobj"] = skip_note("pysyncobj", settings)
        want_pysyncobj = False
    for peer in ("etcd", "pysyncobj"):
        if peer in skipped:
            log(f"{peer}: {skipped[peer]}")
    have_redis = "redis-server" not in skipped
    have_benchmark = "redis-benchmark" not in skipped
    have_sentinel = have_redis and "redis-sentinel" not in skipped
    runs: list[dict[str, Any]] = []
    failover: dict[str, list[dict[str, Any]]] = {}
    more_out: dict[str, Any] = {}
    processes = Processes(root)
    interrupted = ""

    def on_sigterm(*_: object) -> None:
        raise rb.Stop()

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main else None
    walls: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(name: str) -> Any:
        """Adds the block's wall time to walls[name] (README: what a full run costs)."""
        began = time.monotonic()
        try:
            yield
        finally:
            walls[name] = round(walls.get(name, 0.0) + time.monotonic() - began, 1)

    try:
        import importlib

        import bench_sections as more

        # The sections with their own clusters first, while nothing else runs.
        if "scale" in sections:
            if have_benchmark:
                with timed("scale"):
                    more_out["scale"] = more.scale_section(processes, settings)
            else:
                skipped["scale"] = "skipped: redis-benchmark not installed"
        if {"recovery", "memory"} & sections:
            if have_redis and have_benchmark:
                with timed("recovery/memory"):
                    more_out["data"] = more.data_section(processes, settings,
                                                         "recovery" in sections,
                                                         "memory" in sections)
            else:
                skipped["recovery/memory"] = "skipped: redis-server/redis-benchmark not installed"
        for name, (module, function) in SECTION_MODULES.items():
            if name in sections:
                with timed(name):
                    more_out[name] = getattr(importlib.import_module(module), function)(
                        processes, settings)
        if "soak" in sections:
            with timed("soak"):
                more_out["soak"] = more.soak_section(processes, settings)
        if "queue" in sections:
            import bench_queue

            with timed("queue"):
                more_out["queue"] = bench_queue.queue_section(processes, settings)
        if "partition" in sections:
            import bench_partition

            with timed("partition"):
                more_out["partition"] = bench_partition.partition_section(settings)
        shared_began = time.monotonic()
        cluster = None
        if {"writes", "reads", "commands", "pipelines", "failover", "sigstop",
                "latency"} & sections:
            cluster = rb.Phalanx(root / "phalanx")
            processes.cluster = cluster
            cluster.data_dir.mkdir()
            cluster.start(3, timeout=90)
            log(f"phalanx up: {', '.join(n['id'] + '@' + n['resp'] for n in cluster.nodes)}")
        redis_aof = None
        if have_redis and {"writes", "reads", "commands", "latency"} & sections:
            redis_aof = rb.start_redis("redis-aof-always", root,
                                       ["--save", "", "--appendonly", "yes",
                                        "--appendfsync", "always"])
            processes.children.append(redis_aof.process)
        etcd_binary: Path | None = None
        etcds: dict[str, Etcd] = {}
        if want_etcd:
            try:
                log("etcd: building benchmarks/etcd_load (go, GOPATH mode, offline) ...")
                etcd_binary = build_etcd_load(root)
                for profile in ETCD_PROFILES:
                    etcds[profile] = Etcd(root / profile, processes, profile)
                    etcds[profile].start()
                    log(f"{profile} up: " + ", ".join(etcds[profile].endpoint(m)
                                                      for m in etcds[profile].members))
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as error:
                skipped["etcd"] = f"skipped: {error}"
                log(f"etcd: {skipped['etcd']}")
                etcd_binary = None
        pysyncobj: PySyncObjCluster | None = None
        if want_pysyncobj:
            try:
                pysyncobj = PySyncObjCluster(root / "pysyncobj", processes)
                pysyncobj.start()
                log("pysyncobj up: " + ", ".join(n["raft"] for n in pysyncobj.nodes))
            except (RuntimeError, OSError) as error:
                skipped["pysyncobj"] = f"skipped: {error}"
                log(f"pysyncobj: {skipped['pysyncobj']}")
                pysyncobj = None
        lease: rb.Phalanx | None = None
        if "reads" in sections and settings.read_variants and have_benchmark:
            # Every GET hits: the keyspace is loaded into every read target first.
            assert cluster is not None
            lease = more.start_cluster(processes, "phalanx-lease", 3, {"lease_reads": True})
            log("phalanx-lease up (--lease-reads); loading "
                f"{settings.keyspace:,} keys into the read targets ...")
            for who in (cluster, lease):
                host, port = more.hostport(more.shard_leader(who).resp)
                more.load_keys(host, port, 0, settings.keyspace)
            if redis_aof is not None:
                more.load_keys(redis_aof.host, redis_aof.port, 0, settings.keyspace,
                               batch=5000)
        if cluster is not None or redis_aof is not None or etcds or pysyncobj is not None:
            walls["shared cluster and peers: start, load keys"] = round(
                time.monotonic() - shared_began, 1)
        plan: list[tuple[str, int, int]] = []
        if "writes" in sections:
            set_requests = dict(settings.set_requests)
            if pysyncobj is not None:  # the same client counts as PySyncObj's threads
                for threads in settings.pysyncobj_requests:
                    set_requests.setdefault(threads, max(settings.pysyncobj_requests[threads],
                                                         1000))
            plan += [("SET", clients, n) for clients, n in sorted(set_requests.items())]
        if "reads" in sections:
            plan.append(("GET", settings.read_clients, settings.get_requests))
        if "writes" not in sections:
            extra = ({**(settings.etcd_requests if etcd_binary is not None else {}),
                      **(settings.pysyncobj_requests if pysyncobj is not None else {})})
            plan += [("SET", clients, n) for clients, n in sorted(extra.items())]
        if plan and not have_benchmark:
            log("writes/reads: skipped (redis-benchmark not installed)")
        elif plan:
            shared_began = time.monotonic()
            targets = ((["phalanx"] + (["redis-aof-always"] if redis_aof else []))
                       if {"writes", "reads"} & sections else [])
            targets += ["phalanx-follower", "phalanx-lease"] if lease is not None else []
            targets += ["etcd"] if etcd_binary is not None else []
            targets += ["pysyncobj"] if pysyncobj is not None else []
            for repeat in range(1, settings.repeats + 1):
                shift = (repeat - 1) % len(targets)
                order = targets[shift:] + targets[:shift]
                for test, clients, requests in plan:
                    for target in order:
                        if target == "etcd":
                            if test != "SET" or clients not in settings.etcd_requests:
                                continue
                            assert etcd_binary is not None
                            runs.append(run_etcd_load(etcd_binary, etcds["etcd"], clients,
                                                      settings.etcd_requests[clients], repeat,
                                                      settings))
                            continue
                        if target == "pysyncobj":
                            if test != "SET" or clients not in settings.pysyncobj_requests:
                                continue
                            assert pysyncobj is not None
                            runs.append(run_pysyncobj_load(pysyncobj, clients,
                                                           settings.pysyncobj_requests[clients],
                                                           repeat, settings))
                            continue
                        if target in ("phalanx-follower", "phalanx-lease"):
                            if test != "GET":
                                continue
                            assert cluster is not None and lease is not None
                            if target == "phalanx-lease":
                                host, port = more.hostport(more.shard_leader(lease).resp)
                            else:
                                leader = more.shard_leader(cluster).id
                                host, port = more.hostport(next(
                                    e for e in more.entries(cluster) if e.id != leader).resp)
                        elif target == "phalanx":
                            assert cluster is not None
                            _node, host, port = phalanx_leader(cluster)
                        else:
                            assert redis_aof is not None
                            host, port = redis_aof.host, redis_aof.port
                        runs.append(run_load(target, host, port, test, clients, requests,
                                             repeat, settings))
            walls["writes/reads (+ etcd, pysyncobj)"] = round(time.monotonic() - shared_began, 1)
        if lease is not None:
            more.stop_cluster(processes, lease)
        if "commands" in sections:
            if have_benchmark:
                with timed("commands"):
                    more_out["commands"] = commands_section(cluster, redis_aof, settings)
            else:
                skipped["commands"] = "skipped: redis-benchmark not installed"
        if "pipelines" in sections:
            if have_benchmark and cluster is not None:
                import bench_pipelines

                phalanx = cluster
                with timed("pipelines"):
                    more_out["pipelines"] = bench_pipelines.pipelines_section(
                        lambda: bench_pipelines.addresses(phalanx), settings.repeats,
                        settings.pipeline_requests, settings.run_timeout_s)
            else:
                skipped["pipelines"] = "skipped: redis-benchmark not installed"
        if "latency" in sections:
            with timed("latency"):
                more_out["latency"] = more.latency_section(
                    latency_targets(cluster, redis_aof, etcd_binary, etcds, settings), settings)
        sentinels = Sentinels(root / "sentinel", processes)
        for how, section in (("kill", "failover"), ("stop", "sigstop")):
            if section not in sections:
                continue
            section_began = time.monotonic()
            if cluster is not None:
                failover[f"phalanx|{how}"] = phalanx_failover(cluster, settings, how)
            if etcd_binary is not None:
                for profile, etcd in etcds.items():
                    failover[f"{profile}|{how}"] = etcd_failover(etcd_binary, etcd, settings,
                                                                 how)
            if pysyncobj is not None:
                failover[f"pysyncobj|{how}"] = pysyncobj_failover(pysyncobj, settings, how)
            if have_sentinel:
                failover[f"redis-sentinel|{how}"] = sentinel_failover(sentinels, settings, how)
            walls[section] = round(time.monotonic() - section_began, 1)
    except KeyboardInterrupt:
        interrupted = "interrupted (Ctrl-C)"
    except rb.Stop:
        interrupted = "interrupted (SIGTERM)"
    except Exception as error:
        interrupted = f"aborted: {type(error).__name__}: {error}"
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            log("stopping everything started ...")
            processes.close()
            shutil.rmtree(root, ignore_errors=True)
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
    if interrupted:
        log(interrupted)
    wall = time.monotonic() - began
    document = {
        "started_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine, "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "settings": {"repeats": settings.repeats, "quick": settings.quick,
                     "set_requests": settings.set_requests, "get_requests": settings.get_requests,
                     "read_clients": settings.read_clients, "keyspace": settings.keyspace,
                     "command_requests": settings.command_requests,
                     "command_clients": settings.command_clients,
                     "failover_tries": settings.failover_tries,
                     "sigstop_tries": settings.sigstop_tries,
                     "etcd_requests": settings.etcd_requests,
                     "pysyncobj_requests": settings.pysyncobj_requests,
                     "writer_interval_ms": settings.writer_interval_s * 1000,
                     "writer_timeout_ms": settings.writer_timeout_s * 1000,
                     "only": list(settings.only),
                     "latency_rates": list(settings.latency_rates),
                     "latency_seconds": settings.latency_seconds,
                     "scale_configs": [list(c) for c in settings.scale_configs],
                     "scale_requests": settings.scale_requests,
                     "recovery_sizes": list(settings.recovery_sizes),
                     "recovery_set_requests": settings.recovery_set_requests,
                     "memory_keys": settings.memory_keys,
                     "snapshot_every_entries": settings.snapshot_every_entries,
                     "soak_seconds": settings.soak_seconds, "soak_rate": settings.soak_rate,
                     "soak_keys": settings.soak_keys, "soak_sample_s": settings.soak_sample_s,
                     "bulk_keys": settings.bulk_keys, "bulk_timeout_s": settings.bulk_timeout_s,
                     "hosts_rounds": settings.hosts_rounds,
                     "hosts_requests": settings.hosts_requests,
                     "hosts_shards": settings.hosts_shards},
        "wall_s": round(wall, 1), "incomplete": interrupted, "skipped": skipped,
        "work_dir": str(root),
        "throughput": throughput_rows(runs),
        "failover": [gap_summary(t, tries) for t, tries in failover.items()],
        "runs": runs, "failover_tries": failover, "cleanup": processes.notes,
        "latency": more_out.get("latency", []), "scale": more_out.get("scale", []),
        "data": more_out.get("data"), "recovery_measured": "recovery" in sections,
        "memory_measured": "memory" in sections, "soak": more_out.get("soak"),
        "commands": more_out.get("commands"), "queue": more_out.get("queue"),
        "pipelines": more_out.get("pipelines"), "partition": more_out.get("partition"),
        "section_wall_s": walls,
        **{name: more_out.get(name) for name in SECTION_MODULES},
    }
    document["failover_ratio"] = _failover_ratio(document["failover"])
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (output_dir / "RESULTS.md").write_text(markdown(document))
    return document


def commands_section(cluster: rb.Phalanx | None, redis_aof: rb.RedisServer | None,
                     settings: Settings) -> dict[str, Any]:
    """The `commands` section (benchmarks/bench_commands.py) on the shared cluster's leader and
    on redis-aof-always."""
    import bench_commands

    addresses: dict[str, Callable[[], tuple[str, int]]] = {}
    if cluster is not None:
        def on_phalanx(cluster: rb.Phalanx = cluster) -> tuple[str, int]:
            _node, host, port = phalanx_leader(cluster)
            return host, port
        addresses["phalanx"] = on_phalanx
    if redis_aof is not None:
        def on_redis(redis_aof: rb.RedisServer = redis_aof) -> tuple[str, int]:
            return redis_aof.host, redis_aof.port
        addresses["redis-aof-always"] = on_redis
    return bench_commands.commands_section(addresses, settings)


def latency_targets(cluster: rb.Phalanx | None, redis_aof: rb.RedisServer | None,
                    etcd_binary: Path | None, etcds: dict[str, Etcd],
                    settings: Settings) -> dict[str, Callable[[str, float, float], Any]]:
    """name -> run(test, rate, seconds) for the latency section."""
    import bench_sections as more

    targets: dict[str, Callable[[str, float, float], Any]] = {}
    if cluster is not None:
        def on_phalanx(test: str, rate: float, seconds: float) -> Any:
            assert cluster is not None
            _node, host, port = phalanx_leader(cluster)
            return more.openloop(host, port, test.lower(), rate, seconds, settings.keyspace)
        targets["phalanx"] = on_phalanx
    if redis_aof is not None:
        def on_redis(test: str, rate: float, seconds: float) -> Any:
            assert redis_aof is not None
            return more.openloop(redis_aof.host, redis_aof.port, test.lower(), rate, seconds,
                                 settings.keyspace)
        targets["redis-aof-always"] = on_redis
    if etcd_binary is not None and "etcd" in etcds:
        def on_etcd(test: str, rate: float, seconds: float) -> Any:
            assert etcd_binary is not None
            leader = wait_for(etcds["etcd"].leader, 30, "an etcd leader", poll=0.2)
            return more.etcd_rate(etcd_binary, etcds["etcd"].endpoint(leader),
                                  "put" if test == "SET" else "get", rate, seconds,
                                  settings.keyspace)
        targets["etcd"] = on_etcd
    return targets


def _failover_ratio(rows: list[dict[str, Any]]) -> dict[str, float]:
    """"<peer> <fault>" -> phalanx median gap / the peer's median gap, same fault."""
    by = {(r["target"], r["fault"]): r for r in rows}
    ratios = {}
    for (target, fault), row in by.items():
        ours = by.get(("phalanx", fault), {}).get("median_ms")
        if target != "phalanx" and ours and row.get("median_ms"):
            ratios[f"{target} {fault}"] = float(ours) / float(row["median_ms"])
    return ratios


def markdown(doc: dict[str, Any]) -> str:
    import importlib

    import bench_goals

    m, s = doc["machine"], doc["settings"]
    load = " / ".join(f"{x:.2f}" for x in m["load_average_start"])
    load_end = " / ".join(f"{x:.2f}" for x in doc["load_average_end"])
    lines = [
        "# phalanx bench", "",
        "Generated by `phalanx bench`" + (" --quick" if s["quick"] else "")
        + f" on {doc['started_utc']}. Measurements, not thresholds: see "
        "benchmarks/README.md for how to read them.", "",
        *bench_goals.markdown(doc),
        "## Machine", "",
        f"- CPUs: {m['cpu_count']} ({m.get('affinity_cpus')} usable), {m['cpu_model']}",
        f"- kernel: {m['kernel']} ({m['platform']})",
        f"- Python {m['python']}; {m['redis_server']}; {m['redis_benchmark']}; phalanx "
        f"{m['phalanx']} (git {m['git_commit']})",
        f"- load average at start: {load}; at end: {load_end}",
        f"- data on: {m['data_filesystem']}",
        f"- wall time: {doc['wall_s']:.0f} s; {s['repeats']} repeat(s), targets alternating "
        "(order rotates per repeat)"
        + ("; per section: " + ", ".join(f"{k} {int(v)} s"
                                          for k, v in doc["section_wall_s"].items())
           if doc.get("section_wall_s") else ""), "",
        "Everything (3 phalanx nodes, redis, redis-benchmark, the etcd and PySyncObj clusters, "
        "the load generators, the failover writers) shares these cores, and the machine is "
        "shared with other work: expect tens of percent of noise; compare ratios, look at "
        "min-max." + (f" Highest 1-minute load average seen at the start of a throughput run: "
                      f"{max(r['load_1m'] for r in doc['runs']):.1f} on "
                      f"{m['cpu_count']} CPUs." if doc["runs"] else ""), "",
    ]
    if doc["incomplete"]:
        lines += [f"**Incomplete run: {doc['incomplete']}**", ""]
    lines += ["## Throughput and latency (redis-benchmark, no pipelining)", "",
              "phalanx: 3 nodes, fsync per Raft batch, quorum commit, linearizable ReadIndex "
              "reads, redis-benchmark against the leader. redis-aof-always: one redis-server, "
              "`appendonly yes`, `appendfsync always`, no replication.", "",
              "etcd: 3 members (3.4, default timing), benchmarks/etcd_load (Go, etcd's clientv3 "
              "gRPC client, one connection per client up to 64) putting 3-byte values against "
              "the leader. pysyncobj: 3 PySyncObj nodes (each its own process, default "
              "SyncObjConf: in-memory log, nothing fsynced; autoTick every 50 ms, so one "
              "synchronous write waits ~2 ticks), synchronous `set` calls from that many "
              "threads inside the leader's process (PySyncObj clients are in-process).", "",
              "| test | clients | target | median ops/s (min-max) | p50 ms | p99 ms "
              "| phalanx / redis-aof | phalanx / etcd (ops/s; p50) | phalanx / pysyncobj |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for row in doc["throughput"]:
        if "rps_median" in row:
            shown = f"{row['rps_median']:,.0f} ({row['rps_min']:,.0f}-{row['rps_max']:,.0f})"
            p50, p99 = f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}"
        else:
            shown, p50, p99 = "failed", "-", "-"
        if row["ok_runs"] < row["runs"]:
            shown += f" [{row['runs'] - row['ok_runs']}/{row['runs']} failed]"
        ratio = f"{row['vs_redis_aof_always']:.2f}x" if "vs_redis_aof_always" in row else ""
        vs_etcd = ""
        if "vs_etcd" in row:
            vs_etcd = f"{row['vs_etcd']:.2f}x"
            if row.get("p50_vs_etcd") is not None:
                vs_etcd += f"; p50 {row['p50_vs_etcd']:.2f}x"
        vs_syncobj = f"{row['vs_pysyncobj']:.2f}x" if "vs_pysyncobj" in row else ""
        lines.append(f"| {row['test']} | {row['clients']} | {row['target']} | {shown} | {p50} "
                     f"| {p99} | {ratio} | {vs_etcd} | {vs_syncobj} |")
    if not doc["throughput"]:
        lines.append("| (not measured) | | | | | | | | |")
    measured = sorted({(r["clients"], r["requests"]) for r in doc["runs"]
                       if r["target"] == "phalanx" and r["test"] == "SET"})
    requests = ", ".join(f"{c} clients: {n}" for c, n in (measured or s["set_requests"].items()))
    etcd_requests = ", ".join(f"{c} clients: {n}" for c, n in s["etcd_requests"].items())
    lines += ["", f"Requests per run: SET {requests}; GET {s['get_requests']} at "
              f"{s['read_clients']} clients; etcd puts {etcd_requests}; PySyncObj writes "
              + ", ".join(f"{c} threads: {n}" for c, n in s["pysyncobj_requests"].items())
              + "; keys random over "
              f"{s['keyspace']:,}."]
    failures = [(r, e) for r in doc["throughput"] for e in r["failures"]]
    lines += [f"- failed: {r['target']} {r['test']} c={r['clients']}: {e}" for r, e in failures]
    import bench_commands

    lines += bench_commands.markdown(doc)
    lines += ["", "## Failover: kill -9 and SIGSTOP of the leader / master", "",
              f"Client-visible write gap: an open-loop writer sends a write every "
              f"{s['writer_interval_ms']:g} ms ({s['writer_timeout_ms']:g} ms timeout each); "
              "the gap is from the last acknowledged write before the fault to the first "
              "acknowledged write after it. kill -9: the process dies and its sockets close "
              f"({s['failover_tries']} tries; then it is restarted on its data). SIGSTOP: the "
              "process hangs with its sockets open, as a stalled or partitioned leader would "
              f"({s['sigstop_tries']} tries; then SIGCONT and it rejoins as a follower/replica).",
              "",
              "- phalanx: a SET on a fresh connection through a surviving node (which forwards "
              "to the leader); default timing (10 ms ticks, election timeout 500 ms). After a "
              "kill -9 the followers campaign as soon as their connection to the leader resets "
              "(`leader_lost`); after SIGSTOP they wait for the election timeout.",
              "- etcd (3.4, 3 members): benchmarks/etcd_load in gap mode, clientv3 with the two "
              "other members as endpoints, a put in its own goroutine each interval. `etcd`: "
              "default timing (heartbeat 100 ms, election 1000 ms); `etcd-fast`: "
              "--heartbeat-interval 50 --election-timeout 250.",
              "- Redis Sentinel: 1 master + 2 replicas + 3 sentinels, down-after-milliseconds "
              "1000; a SET on a fresh connection, after an error the writer asks a sentinel "
              "for the master.",
              "- pysyncobj: the same open-loop writer inside a surviving node's process, a "
              "synchronous `set` per interval (forwarded to the leader); default timing "
              "(election timeout 0.4-1.4 s).", "",
              "| target | fault | tries | median gap ms | min ms | max ms | every gap ms |",
              "|---|---|---:|---:|---:|---:|---|"]
    for row in doc["failover"]:
        if row["median_ms"] is not None:
            lines.append(f"| {row['target']} | {row['fault']} | {row['ok_tries']}/{row['tries']} "
                         f"| {row['median_ms']:.0f} | {row['min_ms']:.0f} | {row['max_ms']:.0f} "
                         f"| {', '.join(f'{g:.0f}' for g in row['gaps_ms'])} |")
        else:
            lines.append(f"| {row['target']} | {row['fault']} | 0/{row['tries']} | failed "
                         "| | | |")
        lines += [f"- failed try: {row['target']} {row['fault']}: {e}" for e in row["failures"]]
    if not doc["failover"]:
        lines.append("| (not measured) | | | | | | |")
    if doc.get("failover_ratio"):
        lines += ["", "phalanx median gap / peer median gap, same fault (below 1 = phalanx "
                  "recovers faster): " + "; ".join(
                      f"vs {k}: {v:.2f}x" for k, v in doc["failover_ratio"].items()) + "."]
    import bench_sections as more

    lines += more.markdown(doc)
    if doc.get("pipelines"):
        import bench_pipelines

        lines += ["", *bench_pipelines.markdown(doc["pipelines"])]
    import bench_queue

    lines += bench_queue.markdown(doc)
    import bench_partition

    lines += bench_partition.markdown(doc.get("partition"))
    for name, (module, _function) in SECTION_MODULES.items():
        lines += importlib.import_module(module).markdown(doc.get(name))
    lines += ["", "## Peers not measured", ""]
    if doc["skipped"]:
        lines += [f"- {peer}: {note}" for peer, note in doc["skipped"].items()]
    else:
        lines.append("- none")
    return "\n".join(lines) + "\n"


def print_summary(doc: dict[str, Any]) -> None:
    print(markdown(doc))

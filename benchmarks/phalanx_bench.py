"""`phalanx bench`: phalanx and every installed peer, side by side, in one run (issue 7, slice 1).

What it measures (see benchmarks/README.md, "phalanx bench", for how to read it):
- writes: redis-benchmark SET against the leader of a 3-node phalanx cluster (node defaults:
  fsync per Raft batch, quorum commit) vs one redis-server with `appendonly yes`,
  `appendfsync always`, at 1 and 50 clients (and 256 in a full run);
- reads: redis-benchmark GET at 50 clients, phalanx leader (linearizable ReadIndex reads) vs the
  same redis-server;
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

SECTIONS = ("writes", "reads", "failover")

#: Peers this suite knows about: name -> (how to detect it, how to install it, measured here?).
PEERS: dict[str, dict[str, Any]] = {
    "redis-server": {"binary": "redis-server", "install": "apt-get install redis-server",
                     "measured": True},
    "redis-benchmark": {"binary": "redis-benchmark", "install": "apt-get install redis-tools",
                        "measured": True},
    "redis-sentinel": {"binary": "redis-sentinel", "install": "apt-get install redis-sentinel",
                       "measured": True},
    "etcd": {"binary": "etcd", "install": "apt-get install etcd-server", "measured": False},
    "pysyncobj": {"module": "pysyncobj", "install": "pip install pysyncobj", "measured": False},
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
    writer_interval_s: float = 0.005
    writer_timeout_s: float = 0.5
    run_timeout_s: float = 90.0
    only: tuple[str, ...] = SECTIONS
    #: Peers to treat as not installed (the smoke test uses this to see the "skipped" path).
    assume_missing: frozenset[str] = frozenset()
    quick: bool = False

    @classmethod
    def quick_settings(cls) -> Settings:
        return cls(repeats=1, set_requests={1: 300, 50: 3000}, get_requests=5000,
                   failover_tries=1, run_timeout_s=30.0, quick=True)


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
        for target in ("phalanx", "redis-aof-always"):
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
        if row["target"] == "phalanx" and other and row.get("rps_median") and \
                other.get("rps_median"):
            row["vs_redis_aof_always"] = row["rps_median"] / other["rps_median"]
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


def measure_gap(resolve: Callable[[], tuple[str, int] | None], fault: Callable[[], None],
                settings: Settings, tag: str, recover_timeout_s: float = 30.0) -> dict[str, Any]:
    writer = GapWriter(resolve, settings.writer_interval_s, settings.writer_timeout_s, tag).start()
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


def phalanx_failover(cluster: rb.Phalanx, settings: Settings) -> list[dict[str, Any]]:
    from phalanx.server import cluster as local

    results = []
    for attempt in range(1, settings.failover_tries + 1):
        leader, _host, _port = phalanx_leader(cluster)
        survivor = sorted(n["id"] for n in cluster.nodes if n["id"] != leader)[0]
        survivor_address = cluster.address(survivor)
        pid = local.read_cluster_file(cluster.data_dir).node(leader).pid
        assert pid is not None and local.is_our_node(pid), f"{leader} pid {pid} not running"

        def kill(pid: int = pid) -> None:
            os.kill(pid, signal.SIGKILL)

        try:
            gap = measure_gap(lambda where=survivor_address: where, kill, settings,
                              f"phalanx{attempt}")
            gap.update(ok=True, error="")
        except RuntimeError as error:
            gap = {"ok": False, "error": str(error)}
        gap.update(try_=attempt, killed=leader, via=survivor)
        log(f"failover phalanx try {attempt}: kill -9 {leader}, writes via {survivor}: "
            f"{gap.get('gap_ms', '-')} ms gap {gap['error']}")
        results.append(gap)
        wait_for(lambda pid=pid: not local.pid_alive(pid), 10, f"{leader} to exit")
        done = subprocess.run([sys.executable, "-m", "phalanx", "restart", leader, "--data-dir",
                               str(cluster.data_dir), "--wait", "--timeout", "60"],
                              capture_output=True, text=True, timeout=90, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"phalanx restart {leader} failed: {done.stdout} {done.stderr}")
        # Converged: every node up and naming the same leader.
        wait_for(lambda: len({s.leader if s.role != "leader" else s.entry.id for s in
                              local.query_status(local.read_cluster_file(cluster.data_dir).nodes)
                              if s.reachable}) == 1 and all(
                     s.reachable for s in
                     local.query_status(local.read_cluster_file(cluster.data_dir).nodes)),
                 60, "the phalanx cluster to converge", poll=0.2)
    return results


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


def sentinel_failover(root: Path, processes: Processes,
                      settings: Settings) -> list[dict[str, Any]]:
    sentinels = Sentinels(root, processes)
    sentinels.start()
    results = []
    for attempt in range(1, settings.failover_tries + 1):
        port, kill = sentinels.kill_master()
        try:
            gap = measure_gap(sentinels.master, kill, settings, f"sentinel{attempt}",
                              recover_timeout_s=60)
            gap.update(ok=True, error="")
        except RuntimeError as error:
            gap = {"ok": False, "error": str(error)}
        gap.update(try_=attempt, killed=f"127.0.0.1:{port}")
        log(f"failover sentinel try {attempt}: kill -9 master :{port}: "
            f"{gap.get('gap_ms', '-')} ms gap {gap['error']}")
        results.append(gap)
        sentinels.restart(port)
        if attempt < settings.failover_tries:
            wait_for(sentinels.ready, 60, "sentinel setup to heal", poll=0.2)
    return results


def gap_summary(target: str, tries: list[dict[str, Any]]) -> dict[str, Any]:
    gaps = [t["gap_ms"] for t in tries if t.get("ok")]
    return {"target": target, "tries": len(tries), "ok_tries": len(gaps),
            "median_ms": statistics.median(gaps) if gaps else None,
            "min_ms": min(gaps) if gaps else None, "max_ms": max(gaps) if gaps else None,
            "gaps_ms": gaps, "failures": [t["error"] for t in tries if not t.get("ok")]}


# --------------------------------------------------------------------------- the run


def run_suite(settings: Settings, output_dir: Path) -> dict[str, Any]:
    """Run the selected sections; write RESULTS.md and results.json into `output_dir`."""
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="phalanx-bench-"))
    machine = rb.machine_description(root)
    machine["kernel"] = os.uname().release
    log(f"machine: {machine['cpu_count']} CPUs, kernel {machine['kernel']}, python "
        f"{machine['python']}, load {machine['load_average_start']}; work dir {root}")
    skipped: dict[str, str] = {}
    for peer in ("etcd", "pysyncobj"):
        skipped[peer] = skip_note(peer, settings)
        log(f"{peer}: {skipped[peer]}")
    for peer in ("redis-server", "redis-benchmark", "redis-sentinel"):
        if not installed(peer, settings):
            skipped[peer] = skip_note(peer, settings)
            log(f"{peer}: {skipped[peer]}")
    have_redis = "redis-server" not in skipped
    have_benchmark = "redis-benchmark" not in skipped
    runs: list[dict[str, Any]] = []
    failover: dict[str, list[dict[str, Any]]] = {}
    processes = Processes(root)
    interrupted = ""

    def on_sigterm(*_: object) -> None:
        raise rb.Stop()

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main else None
    try:
        base, loopback = rb.pick_cluster_addresses(3, __import__("random").Random())
        cluster = rb.Phalanx(root / "phalanx", base, loopback)
        processes.cluster = cluster
        cluster.data_dir.mkdir()
        cluster.start(3, timeout=90)
        log(f"phalanx up: {', '.join(n['id'] + '@' + n['resp'] for n in cluster.nodes)}")
        redis_aof = None
        if have_redis:
            redis_aof = rb.start_redis("redis-aof-always", root,
                                       ["--save", "", "--appendonly", "yes",
                                        "--appendfsync", "always"])
            processes.children.append(redis_aof.process)
        plan: list[tuple[str, int, int]] = []
        if "writes" in settings.only:
            plan += [("SET", clients, n) for clients, n in settings.set_requests.items()]
        if "reads" in settings.only:
            plan.append(("GET", settings.read_clients, settings.get_requests))
        if plan and not have_benchmark:
            log("writes/reads: skipped (redis-benchmark not installed)")
        elif plan:
            targets = ["phalanx"] + (["redis-aof-always"] if redis_aof else [])
            for repeat in range(1, settings.repeats + 1):
                shift = (repeat - 1) % len(targets)
                order = targets[shift:] + targets[:shift]
                for test, clients, requests in plan:
                    for target in order:
                        if target == "phalanx":
                            _node, host, port = phalanx_leader(cluster)
                        else:
                            assert redis_aof is not None
                            host, port = redis_aof.host, redis_aof.port
                        runs.append(run_load(target, host, port, test, clients, requests,
                                             repeat, settings))
        if "failover" in settings.only:
            failover["phalanx"] = phalanx_failover(cluster, settings)
            if have_redis and "redis-sentinel" not in skipped:
                failover["redis-sentinel"] = sentinel_failover(root / "sentinel", processes,
                                                               settings)
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
                     "failover_tries": settings.failover_tries,
                     "writer_interval_ms": settings.writer_interval_s * 1000,
                     "writer_timeout_ms": settings.writer_timeout_s * 1000,
                     "only": list(settings.only)},
        "wall_s": round(wall, 1), "incomplete": interrupted, "skipped": skipped,
        "work_dir": str(root),
        "throughput": throughput_rows(runs),
        "failover": [gap_summary(t, tries) for t, tries in failover.items()],
        "runs": runs, "failover_tries": failover, "cleanup": processes.notes,
    }
    document["failover_ratio"] = _failover_ratio(document["failover"])
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (output_dir / "RESULTS.md").write_text(markdown(document))
    return document


def _failover_ratio(rows: list[dict[str, Any]]) -> float | None:
    by = {r["target"]: r for r in rows}
    if by.get("phalanx", {}).get("median_ms") and by.get("redis-sentinel", {}).get("median_ms"):
        return float(by["phalanx"]["median_ms"]) / float(by["redis-sentinel"]["median_ms"])
    return None


def markdown(doc: dict[str, Any]) -> str:
    m, s = doc["machine"], doc["settings"]
    load = " / ".join(f"{x:.2f}" for x in m["load_average_start"])
    load_end = " / ".join(f"{x:.2f}" for x in doc["load_average_end"])
    lines = [
        "# phalanx bench", "",
        "Generated by `phalanx bench`" + (" --quick" if s["quick"] else "")
        + f" on {doc['started_utc']}. Measurements, not thresholds: see "
        "benchmarks/README.md for how to read them.", "",
        "## Machine", "",
        f"- CPUs: {m['cpu_count']} ({m.get('affinity_cpus')} usable), {m['cpu_model']}",
        f"- kernel: {m['kernel']} ({m['platform']})",
        f"- Python {m['python']}; {m['redis_server']}; {m['redis_benchmark']}; phalanx "
        f"{m['phalanx']} (git {m['git_commit']})",
        f"- load average at start: {load}; at end: {load_end}",
        f"- data on: {m['data_filesystem']}",
        f"- wall time: {doc['wall_s']:.0f} s; {s['repeats']} repeat(s), targets alternating "
        "(order rotates per repeat)", "",
        "Everything (3 phalanx nodes, redis, redis-benchmark, the failover writer) shares these "
        "cores, and the machine is shared with other work: expect tens of percent of noise; "
        "compare ratios, look at min-max.", "",
    ]
    if doc["incomplete"]:
        lines += [f"**Incomplete run: {doc['incomplete']}**", ""]
    lines += ["## Throughput and latency (redis-benchmark, no pipelining)", "",
              "phalanx: 3 nodes, fsync per Raft batch, quorum commit, linearizable ReadIndex "
              "reads, redis-benchmark against the leader. redis-aof-always: one redis-server, "
              "`appendonly yes`, `appendfsync always`, no replication.", "",
              "| test | clients | target | median ops/s (min-max) | p50 ms | p99 ms "
              "| phalanx / redis-aof |",
              "|---|---:|---|---:|---:|---:|---:|"]
    for row in doc["throughput"]:
        if "rps_median" in row:
            shown = f"{row['rps_median']:,.0f} ({row['rps_min']:,.0f}-{row['rps_max']:,.0f})"
            p50, p99 = f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}"
        else:
            shown, p50, p99 = "failed", "-", "-"
        if row["ok_runs"] < row["runs"]:
            shown += f" [{row['runs'] - row['ok_runs']}/{row['runs']} failed]"
        ratio = f"{row['vs_redis_aof_always']:.2f}x" if "vs_redis_aof_always" in row else ""
        lines.append(f"| {row['test']} | {row['clients']} | {row['target']} | {shown} | {p50} "
                     f"| {p99} | {ratio} |")
    if not doc["throughput"]:
        lines.append("| (not measured) | | | | | | |")
    requests = ", ".join(f"{c} clients: {n}" for c, n in s["set_requests"].items())
    lines += ["", f"Requests per run: SET {requests}; GET {s['get_requests']} at "
              f"{s['read_clients']} clients; keys random over {s['keyspace']:,}."]
    failures = [(r, e) for r in doc["throughput"] for e in r["failures"]]
    lines += [f"- failed: {r['target']} {r['test']} c={r['clients']}: {e}" for r, e in failures]
    lines += ["", "## Failover: kill -9 of the leader / master", "",
              f"Client-visible write gap: an open-loop writer sends a SET every "
              f"{s['writer_interval_ms']:g} ms (fresh connection, {s['writer_timeout_ms']:g} ms "
              "timeout); the gap is from the last acknowledged write before the kill to the first "
              "acknowledged write after it. phalanx: writes go through a surviving node (which "
              "forwards to the leader); default timing (10 ms ticks, election timeout 500 ms). "
              "Redis Sentinel: 1 master + 2 replicas + 3 sentinels, down-after-milliseconds "
              "1000; after an error the writer asks a sentinel for the master. kill -9 closes "
              "the killed process's sockets and phalanx followers campaign as soon as their "
              "connection to the leader resets (`leader_lost`), so this is that fast path; a "
              "hung or partitioned leader (SIGSTOP; not measured yet) waits for the election "
              "timeout.", "",
              "| target | tries | median gap ms | min ms | max ms | every gap ms |",
              "|---|---:|---:|---:|---:|---|"]
    for row in doc["failover"]:
        if row["median_ms"] is not None:
            lines.append(f"| {row['target']} | {row['ok_tries']}/{row['tries']} | "
                         f"{row['median_ms']:.0f} | {row['min_ms']:.0f} | {row['max_ms']:.0f} | "
                         f"{', '.join(f'{g:.0f}' for g in row['gaps_ms'])} |")
        else:
            lines.append(f"| {row['target']} | 0/{row['tries']} | failed | | | |")
        lines += [f"- failed try: {row['target']}: {e}" for e in row["failures"]]
    if not doc["failover"]:
        lines.append("| (not measured) | | | | | |")
    if doc.get("failover_ratio") is not None:
        lines += ["", f"phalanx median gap / Sentinel median gap: {doc['failover_ratio']:.2f}x "
                  "(below 1 = phalanx recovers faster)."]
    lines += ["", "## Peers not measured", ""]
    if doc["skipped"]:
        lines += [f"- {peer}: {note}" for peer, note in doc["skipped"].items()]
    else:
        lines.append("- none")
    return "\n".join(lines) + "\n"


def print_summary(doc: dict[str, Any]) -> None:
    print(markdown(doc))

"""What every part of `phalanx bench` shares: the registry of the processes one run starts
(stopped by pid at the end), polling with a deadline, one RESP command on a fresh connection,
and the shared cluster's leader and convergence as its nodes report them.

Rules of this file: no section lives here, only helpers the suite (phalanx_bench.py) and its
sections (bench_*.py) call; it imports no other bench module but resp_bench, so any of them
can import it without a cycle.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import resp_bench as rb


def log(message: str) -> None:
    rb.log(message)



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


def phalanx_leader(cluster: rb.Phalanx) -> tuple[str, str, int]:
    def find() -> str | None:
        leaders = [n for n, role in cluster.roles().items() if role == "leader"]
        return sorted(leaders)[0] if leaders else None
    node = wait_for(find, 30, "a phalanx leader", poll=0.2)
    host, port = cluster.address(node)
    return node, host, port


def phalanx_converged(cluster: rb.Phalanx) -> bool:
    """Every node answers and they all name the same leader."""
    from phalanx.ops import admin, cluster_file

    states = admin.query_status(cluster_file.read_cluster_file(cluster.data_dir).nodes)
    return all(s.reachable for s in states) and len(
        {s.leader if s.role != "leader" else s.entry.id for s in states}) == 1


def load_record(target: str, test: str, clients: int, requests: int, repeat: int, ok: bool,
                error: str, metrics: dict[str, float], elapsed: float,
                load: float) -> dict[str, Any]:
    """One load run's record in results.json's "runs" (the same for every target: redis-benchmark
    runs, etcd_load, PySyncObj's in-process load), logged as one line."""
    shown = (f"{metrics['rps']:>9,.0f} ops/s p50 {metrics['p50_latency_ms']:.2f} ms p99 "
             f"{metrics['p99_latency_ms']:.2f} ms" if metrics else "")
    log(f"repeat {repeat} {target:<16} {test} c={clients:<3} n={requests}: {shown}"
        f"{'' if ok else ' FAILED: ' + error} [{elapsed:.1f} s, load {load:.1f}]")
    return {"target": target, "test": test, "clients": clients, "requests": requests,
            "repeat": repeat, "ok": ok, "error": error, "elapsed_s": round(elapsed, 2),
            "load_1m": round(load, 2), "metrics": metrics}


def throughput_cells(row: dict[str, Any]) -> tuple[str, str, str]:
    """A throughput row's "median ops/s (min-max)", p50 and p99 cells in RESULTS.md, with the
    failed runs counted (bench_report.py's table and bench_commands.py's)."""
    if "rps_median" in row:
        shown = f"{row['rps_median']:,.0f} ({row['rps_min']:,.0f}-{row['rps_max']:,.0f})"
        p50, p99 = f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}"
    else:
        shown, p50, p99 = "failed", "-", "-"
    if row["ok_runs"] < row["runs"]:
        shown += f" [{row['runs'] - row['ok_runs']}/{row['runs']} failed]"
    return shown, p50, p99


def mb(value: float | None) -> str:
    """Bytes as MB with one decimal in RESULTS.md ("-" when not measured)."""
    return "-" if value is None else f"{value / 1e6:.1f}"

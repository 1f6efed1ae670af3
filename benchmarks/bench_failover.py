"""The failover sections of `phalanx bench` (failover: kill -9, sigstop: SIGSTOP of the leader):
the client-visible write gap, measured by an open-loop writer (GapWriter in-process, or
ExternalWriter for a peer's own client), phalanx's tries, and the per-target summaries and
phalanx / peer ratios of results.json. The peers' tries are in bench_peers.py.

Rules of this file: every fault is applied by pid to a process this run started; every wait
has a deadline; a try that fails is recorded with its error, never retried into a success.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import resp_bench as rb
from bench_common import Processes, log, phalanx_converged, phalanx_leader, resp_command, wait_for

if TYPE_CHECKING:
    from phalanx_bench import Settings



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


def pid_fault(pid: int, how: str) -> Fault:
    """kill -9 (`how="kill"`) or SIGSTOP (`how="stop"`) of `pid`, applied at most once."""
    return Fault(lambda: os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP))


def gap_try(pid: int, how: str, measure: Callable[..., dict[str, Any]], *args: Any,
            errors: tuple[type[Exception], ...] = (RuntimeError,), **kwargs: Any) -> dict[str, Any]:
    """One failover try of any target: `measure(*args, **kwargs)`'s gap marked ok, or ok=False
    with the error (`errors`: what a failed try raises). After a SIGSTOP try `pid` gets its
    SIGCONT whatever happened."""
    try:
        gap = measure(*args, **kwargs)
        gap.update(ok=True, error="")
    except errors as error:
        gap = {"ok": False, "error": str(error)}
    finally:
        if how == "stop":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    return gap


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

        fault = pid_fault(pid, how)
        gap = gap_try(pid, how, measure_gap, lambda where=survivor_address: where, fault,
                      settings, f"phalanx-{how}{attempt}")
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


def gap_summary(key: str, tries: list[dict[str, Any]]) -> dict[str, Any]:
    """`key` is "<target>|<fault>" (fault: kill, stop)."""
    target, how = key.split("|")
    gaps = [t["gap_ms"] for t in tries if t.get("ok")]
    return {"target": target, "fault": FAULTS[how], "tries": len(tries), "ok_tries": len(gaps),
            "median_ms": statistics.median(gaps) if gaps else None,
            "min_ms": min(gaps) if gaps else None, "max_ms": max(gaps) if gaps else None,
            "gaps_ms": gaps, "failures": [t["error"] for t in tries if not t.get("ok")]}


def failover_ratio(rows: list[dict[str, Any]]) -> dict[str, float]:
    """"<peer> <fault>" -> phalanx median gap / the peer's median gap, same fault."""
    by = {(r["target"], r["fault"]): r for r in rows}
    ratios = {}
    for (target, fault), row in by.items():
        ours = by.get(("phalanx", fault), {}).get("median_ms")
        if target != "phalanx" and ours and row.get("median_ms"):
            ratios[f"{target} {fault}"] = float(ours) / float(row["median_ms"])
    return ratios

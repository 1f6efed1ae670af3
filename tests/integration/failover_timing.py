"""Client-visible failover time of a real local cluster: kill -9 and SIGSTOP of the leader.

A measurement, not a test assertion (the machine may be noisy). For each try, a writer sends a
SET every 20 ms (open loop, each on a fresh connection with a short socket timeout) to a
surviving node (a follower, which forwards to the leader); the leader is then killed (SIGKILL) or paused (SIGSTOP). The gap of a
try is the time from the last acknowledged write that finished before the fault to the first
acknowledged write after it; `after_fault_ms` is the time from the fault to that first write.
After each try the cluster is repaired (restart, or SIGCONT) and left to converge.

Usable three ways:
- `measure_failover(cluster, tries)` from a test or a benchmark (with an `integration_harness`
  `LocalCluster`);
- `run(tries)`, which starts and removes its own 3-node cluster;
- `python tests/integration/failover_timing.py --tries 10`, which prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
from integration_harness import LocalCluster, no_retry, wait_until

FAULTS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}


class _Writer:
    """An open-loop writer against one node: every `interval_s` a new SET on a fresh connection
    (socket timeout `timeout_s`), each in its own thread; records (start, end, ok) of every write.

    Open loop, because a closed-loop writer is in phase with the fault: its request in flight at
    the fault hangs for a whole socket timeout, so it would measure the timeout, not the failover.
    """

    def __init__(self, host: str, port: int, timeout_s: float, tag: str,
                 interval_s: float = 0.02) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.tag = tag
        self.events: list[tuple[float, float, bool]] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.sender = threading.Thread(target=self._send_loop, daemon=True,
                                       name=f"gap-writer-{tag}")
        self.workers: list[threading.Thread] = []

    def start(self) -> None:
        self.sender.start()

    def _send_loop(self) -> None:
        sequence = 0
        while not self.stop_event.wait(self.interval_s):
            sequence += 1
            worker = threading.Thread(target=self._one, args=(sequence,), daemon=True)
            worker.start()
            self.workers = [w for w in self.workers if w.is_alive()]
            self.workers.append(worker)

    def _one(self, sequence: int) -> None:
        began = time.monotonic()
        client: redis.Redis | None = None
        try:
            # (redis-py connects in the constructor of a single-connection client: a connect
            # that times out there is a failed write like any other, not a thread's crash.)
            client = redis.Redis(host=self.host, port=self.port, socket_timeout=self.timeout_s,
                                 socket_connect_timeout=self.timeout_s, retry=no_retry(),
                                 protocol=2, single_connection_client=True)
            ok = client.set(f"gap:{self.tag}:{sequence}", "x") is True
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            ok = False
        finally:
            if client is not None:
                client.close()
        ended = time.monotonic()
        with self.lock:
            self.events.append((began, ended, ok))

    def successes(self) -> int:
        with self.lock:
            return sum(1 for _b, _e, ok in self.events if ok)

    def first_success_after(self, moment: float) -> float | None:
        with self.lock:
            ends = [end for began, end, ok in self.events if ok and began > moment]
        return min(ends) if ends else None

    def last_success_before(self, moment: float) -> float | None:
        with self.lock:
            ends = [end for _began, end, ok in self.events if ok and end <= moment]
        return max(ends) if ends else None

    def close(self) -> None:
        self.stop_event.set()
        self.sender.join(30)
        for worker in self.workers:
            worker.join(self.timeout_s + 30)


def measure_once(cluster: LocalCluster, fault: str, *, writer_timeout_s: float = 0.5,
                 recover_timeout_s: float = 60.0, tag: str = "") -> dict[str, Any]:
    """One try: fault the leader, measure the client-visible write gap, repair the cluster."""
    sig = FAULTS[fault]
    cluster.wait_converged()
    leader = cluster.leader()
    survivor = cluster.others(leader)[0]
    writer = _Writer(survivor.host, survivor.port, writer_timeout_s, tag or fault)
    writer.start()
    try:
        wait_until(lambda: writer.successes() >= 20, 60, f"writes through {survivor.id}")
        faulted_at = time.monotonic()
        cluster.kill(leader, sig)
        first = wait_until(lambda: writer.first_success_after(faulted_at), recover_timeout_s,
                           f"a write through {survivor.id} after the {fault} of {leader.id}")
        last = writer.last_success_before(faulted_at)
    finally:
        writer.close()
        if sig == signal.SIGSTOP:
            cluster.kill(leader, signal.SIGCONT)
    new_leader = cluster.leader(among=cluster.others(leader)) if sig == signal.SIGKILL else None
    if sig == signal.SIGKILL:
        cluster.restart(leader)
    cluster.wait_converged()
    return {
        "fault": fault,
        "old_leader": leader.id,
        "new_leader": new_leader.id if new_leader else cluster.leader().id,
        "via": survivor.id,
        "gap_ms": round((first - (last if last is not None else faulted_at)) * 1000, 1),
        "after_fault_ms": round((first - faulted_at) * 1000, 1),
    }


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    gaps = [r["gap_ms"] for r in results]
    return {
        "tries": len(gaps),
        "median_ms": round(statistics.median(gaps), 1) if gaps else None,
        "worst_ms": max(gaps) if gaps else None,
        "best_ms": min(gaps) if gaps else None,
        "gaps_ms": gaps,
        "after_fault_ms": [r["after_fault_ms"] for r in results],
    }


def measure_failover(cluster: LocalCluster, tries: int, *, faults: tuple[str, ...] = ("kill",
                     "stop"), writer_timeout_s: float = 0.5) -> dict[str, Any]:
    """`tries` tries of each fault on `cluster`; fault -> summary (median, worst, every gap)."""
    summary: dict[str, Any] = {}
    for fault in faults:
        results = [measure_once(cluster, fault, writer_timeout_s=writer_timeout_s,
                                tag=f"{fault}{attempt}") for attempt in range(tries)]
        summary[fault] = summarize(results)
        summary[fault]["runs"] = results
    return summary


def run(tries: int, *, nodes: int = 3, writer_timeout_s: float = 0.5,
        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start a fresh local cluster, measure, stop it and remove its files."""
    with LocalCluster(nodes, overrides=overrides, name="failover-timing") as cluster:
        result = measure_failover(cluster, tries, writer_timeout_s=writer_timeout_s)
        result["config"] = {"nodes": nodes, "writer_timeout_s": writer_timeout_s,
                            "overrides": cluster.overrides}
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=10, help="tries per fault (default 10)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--writer-timeout", type=float, default=0.5,
                        help="client socket timeout of the writer, seconds")
    arguments = parser.parse_args(argv)
    result = run(arguments.tries, nodes=arguments.nodes, writer_timeout_s=arguments.writer_timeout)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

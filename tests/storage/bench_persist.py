"""Measure persist() of SqliteLogStore and WalLogStore (a measurement, not a test; not collected).

Usage: .venv/bin/python tests/storage/bench_persist.py [DIRECTORY] [SECONDS]

For each store and batch size (1 and 64 small 100-byte entries plus a hard state, one fsync per
batch) it runs persist() for SECONDS and prints the latency p50/p99, persists/second and
entries/second (over the time spent inside persist(); building the entries is not counted). The
last column is the CPU time of the calling thread per persist measured in a second run on
/dev/shm (tmpfs: the syscalls cost next to nothing there), i.e. the Python work the writer thread
does while holding the GIL against the event loop. Put DIRECTORY on the disk you care about: on
tmpfs an fsync costs nothing.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from phalanx.raft.types import Entry, HardState, Index, Term
from phalanx.storage.sqlite import SqliteLogStore
from phalanx.storage.wal import WalLogStore

STORES: dict[str, Callable[[Path], SqliteLogStore | WalLogStore]] = {
    "sqlite": SqliteLogStore,
    "wal": WalLogStore,
}


def measure(
    open_store: Callable[[Path], SqliteLogStore | WalLogStore],
    directory: Path,
    batch_size: int,
    seconds: float,
) -> dict[str, float]:
    latencies: list[float] = []
    with open_store(directory) as store:
        cpu = 0.0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            start = store.last_index() + 1
            entries = [
                Entry(term=Term(1), index=Index(i), data=b"v" * 100)
                for i in range(start, start + batch_size)
            ]
            hard_state = HardState(term=Term(1), commit=Index(start))
            cpu_before = time.thread_time()
            before = time.perf_counter()
            store.persist(entries, hard_state)
            latencies.append(time.perf_counter() - before)
            cpu += time.thread_time() - cpu_before
    latencies.sort()
    count = len(latencies)
    return {
        "p50_ms": latencies[count // 2] * 1e3,
        "p99_ms": latencies[min(count - 1, int(count * 0.99))] * 1e3,
        "persists_per_s": count / sum(latencies),
        "entries_per_s": count * batch_size / sum(latencies),
        "cpu_us": cpu / count * 1e6,
    }


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    print(
        f"{'store':<7} {'batch':>5} {'p50 ms':>8} {'p99 ms':>8} {'persists/s':>11} "
        f"{'entries/s':>10} {'CPU us/persist (tmpfs)':>23}"
    )
    with tempfile.TemporaryDirectory(prefix="phalanx-bench-", dir=root) as scratch:
        for batch_size in (1, 64):
            for name, open_store in STORES.items():
                result = measure(
                    open_store, Path(scratch) / f"{name}-{batch_size}", batch_size, seconds
                )
                cpu_us = result["cpu_us"]
                if Path("/dev/shm").is_dir():
                    with tempfile.TemporaryDirectory(dir="/dev/shm") as memory:
                        cpu_us = measure(open_store, Path(memory) / "s", batch_size, 1.0)["cpu_us"]
                print(
                    f"{name:<7} {batch_size:>5} {result['p50_ms']:8.3f} {result['p99_ms']:8.3f} "
                    f"{result['persists_per_s']:11.0f} {result['entries_per_s']:10.0f} "
                    f"{cpu_us:23.1f}"
                )


if __name__ == "__main__":
    main()

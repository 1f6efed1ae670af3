"""Measure SqliteLogStore.persist() throughput (a measurement, not a test; not collected).

Usage: .venv/bin/python tests/storage/bench_persist.py [DIRECTORY] [SECONDS]

Runs persist() with batches of 1 and 100 small (100-byte) entries plus a hard state, one fsync
per batch, and prints persists/second and entries/second. Put DIRECTORY on the disk you care
about: on tmpfs an fsync costs nothing.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from phalanx.raft.types import Entry, HardState, Index, Term
from phalanx.storage.sqlite import SqliteLogStore


def measure(directory: Path, batch_size: int, seconds: float) -> tuple[float, float]:
    with SqliteLogStore(directory) as store:
        persists = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            start = store.last_index() + 1
            entries = [
                Entry(term=Term(1), index=Index(i), data=b"v" * 100)
                for i in range(start, start + batch_size)
            ]
            store.persist(entries, HardState(term=Term(1), commit=Index(start)))
            persists += 1
        return persists / elapsed, persists * batch_size / elapsed


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    with tempfile.TemporaryDirectory(prefix="phalanx-bench-", dir=root) as scratch:
        for batch_size in (1, 100):
            rate, entry_rate = measure(Path(scratch) / f"batch-{batch_size}", batch_size, seconds)
            print(f"batch of {batch_size:>3}: {rate:8.0f} persists/s  {entry_rate:9.0f} entries/s")


if __name__ == "__main__":
    main()

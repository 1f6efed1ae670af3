"""Child process of the crash test: persist batches forever, print each acknowledged last index.

Usage: python crash_writer.py DIRECTORY TERM SEED

Each batch appends entries after the store's last index in term TERM (data from `entry_data`)
and sets the hard state, in one `persist()`. Only after `persist()` returns does the child print
the batch's last index, so every printed index is acknowledged as durable. Every few batches it
also takes a snapshot and compacts behind it, so crashes hit the snapshot-file path too.
"""

from __future__ import annotations

import random
import sys

from phalanx.raft.types import ConfState, Entry, HardState, Index, NodeId, Term
from phalanx.storage.sqlite import SqliteLogStore


def entry_data(term: int, index: int) -> bytes:
    """The payload the crash test expects at (`term`, `index`)."""
    return b"%d:%d:" % (term, index) + b"p" * (index % 50)


def snapshot_data(index: int) -> bytes:
    """The snapshot payload the crash test expects at `index`."""
    return b"snapshot-at-%d" % index * 100


def main() -> None:
    directory, term, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    store = SqliteLogStore(directory, ConfState(voters=(NodeId("n1"),)))
    print(f"ready {store.last_index()}", flush=True)
    batches = 0
    while True:
        start = store.last_index() + 1
        size = rng.choice((1, 1, 5, 20, 100))
        entries = [
            Entry(term=Term(term), index=Index(i), data=entry_data(term, i))
            for i in range(start, start + size)
        ]
        store.persist(entries, HardState(term=Term(term), vote=NodeId("n1"), commit=Index(start)))
        print(start + size - 1, flush=True)
        batches += 1
        if batches % 25 == 0:
            at = Index(start + size - 1 - rng.randrange(0, 10))
            store.create_snapshot(at, ConfState(voters=(NodeId("n1"),)), snapshot_data(at))
            store.compact(Index(at - rng.randrange(0, 5)))


if __name__ == "__main__":
    main()

"""Child process of the node log crash test: several groups of ONE node log persist batches from
their own threads (so frames carry several groups' ops: group commit); each acknowledged batch
is printed as "<group> <last index>" only after its `persist()` returned.

Usage: python nodelog_crash_writer.py ROOT TERM SEED GROUPS
"""

from __future__ import annotations

import random
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from crash_writer import entry_data, snapshot_data

from phalanx.raft.types import ConfState, Entry, HardState, Index, NodeId, Term
from phalanx.storage.nodelog import GroupStore, NodeLog


def _write_forever(store: GroupStore, name: int, term: int, seed: int,
                   output: threading.Lock) -> None:
    rng = random.Random(seed)
    batches = 0
    while True:
        start = store.last_index() + 1
        size = rng.choice((1, 1, 5, 20))
        entries = [Entry(term=Term(term), index=Index(i), data=entry_data(term, i))
                   for i in range(start, start + size)]
        store.persist(entries, HardState(term=Term(term), vote=NodeId("n1"),
                                         commit=Index(start)))
        with output:
            print(f"{name} {start + size - 1}", flush=True)
        batches += 1
        if batches % 25 == 0:
            at = Index(start + size - 1 - rng.randrange(0, 10))
            store.create_snapshot(at, ConfState(voters=(NodeId("n1"),)), snapshot_data(at))
            store.compact(Index(at - rng.randrange(0, 5)))


def main() -> None:
    root, term, seed, groups = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), \
        int(sys.argv[4])
    log = NodeLog(root / "log", root / "groups", segment_bytes=32768, confirm_delay=0.005)
    stores = [log.open_group(root / "groups" / str(name), ConfState(voters=(NodeId("n1"),)))
              for name in range(1, groups + 1)]
    print("ready " + " ".join(str(store.last_index()) for store in stores), flush=True)
    output = threading.Lock()
    threads = [threading.Thread(target=_write_forever, daemon=True,
                                args=(store, name, term, seed + name, output))
               for name, store in enumerate(stores, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()

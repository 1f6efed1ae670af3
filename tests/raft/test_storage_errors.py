"""A corrupt read from storage stops the replica; it is never mistaken for compaction.

Only `Compacted` means "those entries are gone, send the snapshot" (§7). A `Corrupt` read (a
checksum mismatch, an I/O error) must propagate to the application, which stops the replica,
instead of being treated as a compacted log (found by the simulator's faulty disks).
"""

from __future__ import annotations

import pytest

from phalanx.errors import Corrupt
from phalanx.raft import (
    AppendEntriesResponse,
    Entry,
    Index,
    MemoryStorage,
    RequestVoteResponse,
    Role,
)
from phalanx.testing.raft_harness import drive, log_storage, make_node


class FlakyStorage(MemoryStorage):
    """A MemoryStorage whose entry reads fail once `broken` is set."""

    broken = False

    def entries(self, low: Index, high: Index, max_size_bytes: int | None = None) -> list[Entry]:
        if self.broken:
            raise Corrupt(f"entries {low}..{high - 1} fail their checksum")
        return super().entries(low, high, max_size_bytes)


def test_a_corrupt_read_while_replicating_propagates() -> None:
    base = log_storage(["n1", "n2", "n3"], [1, 1, 1], commit=1)
    storage = FlakyStorage(base.snapshot().meta.conf_state)
    storage.append(base.entries(Index(1), Index(4)))
    storage.set_hard_state(base.initial_state()[0])
    raw, _ = make_node("n1", [], storage=storage)
    raw.campaign()
    drive(raw, storage)
    raw.step(RequestVoteResponse(source="n2", target="n1", term=raw.term, granted=True,
                                 pre_vote=True))
    drive(raw, storage)
    # Elected: the first probe carries only the new no-op (§5.3: next starts after our last
    # entry), which is not read back from storage.
    raw.step(RequestVoteResponse(source="n2", target="n1", term=raw.term, granted=True))
    assert raw.role is Role.LEADER
    drive(raw, storage)
    storage.broken = True
    with pytest.raises(Corrupt):
        # n2 holds none of it: the leader reads its log from index 1 to replicate it.
        raw.step(AppendEntriesResponse(source="n2", target="n1", term=raw.term, success=False,
                                       index=Index(3), reject_hint=Index(0)))

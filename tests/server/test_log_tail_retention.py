"""The log kept behind a snapshot is bounded in entries and in bytes (issue 15 lever 7).

`GroupSnapshots._kept_tail_start` picks the compaction index after a snapshot: at most
`snapshot_keep_entries` entries and at most `snapshot_keep_bytes` bytes of them stay (they stay
in memory: docs/memory.md). Driven here on the in-memory reference store, no node.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from phalanx.raft import ConfState, Entry, Index, MemoryStorage, NodeId, Term
from phalanx.raft.progress import ProgressState
from phalanx.server.config import ConfigError, NodeConfig, PeerConfig
from phalanx.server.group_snapshots import GroupSnapshots
from phalanx.storage import NodeLog


class _Store(MemoryStorage):
    """The reference store with `data_sizes` (as `AsyncLogStore` has: the node's stores)."""

    def data_sizes(self, low: Index, high: Index) -> list[int]:
        return [len(entry.data) for entry in self.entries(low, high)]


def _replica(sizes: list[int], keep_entries: int, keep_bytes: int,
             compacted_to: int = 0) -> SimpleNamespace:
    """A stand-in for a RaftGroup: its config and a store holding entries 1.. of `sizes`
    bytes (compacted up to `compacted_to`)."""
    store = _Store()
    store.append([Entry(term=Term(1), index=Index(i), data=b"x" * size)
                  for i, size in enumerate(sizes, start=1)])
    if compacted_to:
        store.create_snapshot(Index(compacted_to), ConfState(), b"")
        store.compact(Index(compacted_to))
    config = SimpleNamespace(snapshot_keep_entries=keep_entries, snapshot_keep_bytes=keep_bytes)
    raw = SimpleNamespace(is_leader=False, raft=SimpleNamespace(progress={}))
    return SimpleNamespace(config=config, store=store, raw=raw)


def _follower(match: int, state: ProgressState, active: bool = True) -> SimpleNamespace:
    return SimpleNamespace(match=match, state=state, recent_active=active)


def _start(replica: SimpleNamespace, applied: int) -> int:
    return GroupSnapshots._kept_tail_start(replica, applied)  # type: ignore[arg-type]


def test_small_entries_keep_the_entry_count() -> None:
    """100-byte entries: 50 of them are 5,000 bytes, under the byte bound: 50 kept."""
    replica = _replica([100] * 300, keep_entries=50, keep_bytes=1 << 20)
    assert _start(replica, 300) == 250
    assert _start(replica, 280) == 230


def test_big_entries_keep_at_most_the_byte_bound() -> None:
    """24 KB entries (a 1,000-key MSET): 2,000 of them would be ~48 MB; a 100 KB bound keeps
    the 4 newest (96 KB), the fifth would pass it."""
    replica = _replica([24_000] * 300, keep_entries=2000, keep_bytes=100_000)
    assert _start(replica, 300) == 296
    assert _start(replica, 100) == 96
    # Exactly at the bound: kept.
    assert _start(_replica([25_000] * 10, keep_entries=2000, keep_bytes=100_000), 10) == 6


def test_mixed_sizes_and_empty_entries() -> None:
    """No-ops (empty data) cost nothing: they are kept; the entry bound still applies."""
    sizes = [10_000] * 5 + [0] * 20 + [10_000] * 2
    replica = _replica(sizes, keep_entries=2000, keep_bytes=25_000)
    assert _start(replica, len(sizes)) == 5  # 20 no-ops and the 2 last big entries kept
    assert _start(_replica(sizes, keep_entries=10, keep_bytes=1 << 20), len(sizes)) == 17
    assert _start(_replica([1000] * 10, keep_entries=5, keep_bytes=0), 10) == 10


def test_a_log_compacted_past_the_bound_keeps_the_entry_bound() -> None:
    """When the log already starts after applied - keep_entries, nothing to walk: the entry
    bound is returned (the caller compacts only past the first index)."""
    replica = _replica([100] * 300, keep_entries=50, keep_bytes=1000, compacted_to=290)
    assert _start(replica, 300) == 250  # 291..300: 1,000 bytes, at the bound: all kept
    replica = _replica([100] * 300, keep_entries=5, keep_bytes=1000, compacted_to=298)
    assert _start(replica, 300) == 295


def test_a_leader_keeps_what_a_replicating_follower_needs() -> None:
    """On a leader, the byte bound stops at the match index of a live follower in REPLICATE
    (it gets entries, not a snapshot); a follower probing (down, restarting) or in SNAPSHOT,
    or one not recently active, holds nothing; the entry bound still applies."""
    replica = _replica([24_000] * 300, keep_entries=2000, keep_bytes=100_000)
    replica.raw.is_leader = True
    progress = replica.raw.raft.progress
    progress[1] = _follower(300, ProgressState.REPLICATE)  # the leader itself
    progress[2] = _follower(280, ProgressState.REPLICATE)
    progress[3] = _follower(10, ProgressState.PROBE)
    assert _start(replica, 300) == 280
    progress[2] = _follower(280, ProgressState.REPLICATE, active=False)
    assert _start(replica, 300) == 296
    progress[2] = _follower(150, ProgressState.SNAPSHOT)
    assert _start(replica, 300) == 296
    progress[2] = _follower(5, ProgressState.REPLICATE)
    assert _start(replica, 300) == 5
    replica.config.snapshot_keep_entries = 100
    assert _start(replica, 300) == 200


def test_keep_bytes_must_not_be_negative() -> None:
    peers = (PeerConfig(id="n1", resp="127.0.0.1:1", peer="127.0.0.1:2", admin="127.0.0.1:3"),)
    assert NodeConfig(id="n1", peers=peers, data_dir="d").snapshot_keep_bytes == 8 * 1024 * 1024
    with pytest.raises(ConfigError, match="snapshot_keep_bytes"):
        NodeConfig(id="n1", peers=peers, data_dir="d", snapshot_keep_bytes=-1)


def test_released_entries_are_measured_without_reading_them_back(tmp_path: Path) -> None:
    """On the node log's store, entries released from memory (`GroupStore.release`) count with
    their real sizes and are not read back from the file to be measured."""
    with NodeLog(tmp_path / "log", tmp_path / "groups", confirm_delay=0) as log:
        store = log.open_group(tmp_path / "groups" / "1", ConfState(voters=(NodeId("n1"),)))
        store.persist([Entry(term=Term(1), index=Index(i), data=b"x" * 24_000)
                       for i in range(1, 301)])
        store.release(Index(300))
        replica = _replica([], keep_entries=2000, keep_bytes=100_000)
        replica.store = store
        assert _start(replica, 300) == 296  # as test_big_entries_keep_at_most_the_byte_bound
        assert store.entries_read_back == 0

"""The storage seam of the Raft core: what the core reads, and the in-memory reference store.

Rules of this file:
- The core only *reads* storage (`LogReader`). The application writes it between `ready()` and
  `advance()`: append entries, set the hard state, apply snapshots (see `Ready`).
- `MemoryStorage` is the reference implementation for tests and the simulator. It is NOT durable
  and must never be used on the product path; durable stores live in `phalanx.storage` and pass
  the same contract suite.
- Index conventions (as etcd): the store holds a dummy position at `first_index() - 1` whose term
  is the snapshot's term; `entries(low, high)` returns [low, high).
"""

from __future__ import annotations

from typing import Protocol

from phalanx.errors import Compacted, Unavailable, require
from phalanx.raft.types import (
    ConfState,
    Entry,
    HardState,
    Index,
    Snapshot,
    SnapshotMeta,
    Term,
)


class LogReader(Protocol):
    """Read access to the persisted log, hard state and latest snapshot."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the configuration in force at the last snapshot/entry."""
        ...

    def entries(self, low: Index, high: Index, max_size_bytes: int | None = None) -> list[Entry]:
        """Entries [low, high). Raises `Compacted` if low < first_index(), `Unavailable` if
        high > last_index() + 1. At least one entry is returned even if it exceeds the size."""
        ...

    def term(self, index: Index) -> Term:
        """The term of the entry at `index`; valid for first_index()-1 .. last_index()."""
        ...

    def first_index(self) -> Index:
        """The index of the first entry still in the log (snapshot index + 1)."""
        ...

    def last_index(self) -> Index:
        """The index of the last persisted entry (the snapshot index if the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot."""
        ...


class LogWriter(LogReader, Protocol):
    """What the application uses to persist a `Ready`; durable stores implement this too."""

    def append(self, entries: list[Entry]) -> None:
        """Append entries, first truncating any persisted suffix they overwrite (§5.3)."""
        ...

    def set_hard_state(self, hard_state: HardState) -> None:
        """Persist term, vote and commit."""
        ...

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log by `snapshot` (a follower installing the leader's snapshot, §7)."""
        ...

    def create_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine taken at applied index `index`."""
        ...

    def compact(self, index: Index) -> None:
        """Discard entries up to and including `index` (which must be covered by a snapshot)."""
        ...


def entry_size_bytes(entry: Entry) -> int:
    """An estimate of an entry's size on the wire, used for batching limits."""
    return len(entry.data) + 24


def limit_size(entries: list[Entry], max_size_bytes: int | None) -> list[Entry]:
    """The longest prefix of `entries` within `max_size_bytes`, but never fewer than one entry."""
    if max_size_bytes is None or not entries:
        return entries
    total = 0
    for position, entry in enumerate(entries):
        total += entry_size_bytes(entry)
        if total > max_size_bytes and position > 0:
            return entries[:position]
    return entries


class MemoryStorage:
    """An in-memory `LogWriter` for tests and the simulator (not durable)."""

    __slots__ = ("_conf_state", "_entries", "_hard_state", "_snapshot")

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot(meta=SnapshotMeta(conf_state=conf_state or ConfState()))
        # _entries[0] is a dummy entry at the snapshot position.
        self._entries: list[Entry] = [Entry(term=Term(0), index=Index(0))]
        self._conf_state = conf_state or ConfState()

    # -- LogReader -------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf_state

    def _offset(self) -> int:
        return self._entries[0].index

    def first_index(self) -> Index:
        return Index(self._offset() + 1)

    def last_index(self) -> Index:
        return Index(self._offset() + len(self._entries) - 1)

    def term(self, index: Index) -> Term:
        offset = self._offset()
        if index < offset:
            raise Compacted(f"index {index} is compacted (first index {offset + 1})")
        if index - offset >= len(self._entries):
            raise Unavailable(f"index {index} is beyond the last index {self.last_index()}")
        return self._entries[index - offset].term

    def entries(self, low: Index, high: Index, max_size_bytes: int | None = None) -> list[Entry]:
        offset = self._offset()
        if low <= offset:
            raise Compacted(f"entries from {low} are compacted (first index {offset + 1})")
        if high > self.last_index() + 1:
            raise Unavailable(f"entries up to {high} are beyond the last index {self.last_index()}")
        return limit_size(self._entries[low - offset : high - offset], max_size_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- LogWriter -------------------------------------------------------------------------
    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        first = self.first_index()
        last_new = entries[-1].index
        if last_new < first:
            return  # everything is already compacted
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._offset()
        require(offset <= len(self._entries), f"missing log entries before {entries[0].index}")
        del self._entries[offset:]
        self._entries.extend(entries)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.meta.index <= self._snapshot.meta.index:
            return
        self._snapshot = snapshot
        self._entries = [Entry(term=snapshot.meta.term, index=snapshot.meta.index)]

    def create_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot:
        require(index <= self.last_index(), f"snapshot index {index} beyond last index")
        if index <= self._snapshot.meta.index:
            return self._snapshot
        self._snapshot = Snapshot(
            meta=SnapshotMeta(index=index, term=self.term(index), conf_state=conf_state), data=data
        )
        return self._snapshot

    def compact(self, index: Index) -> None:
        offset = self._offset()
        if index <= offset:
            return
        require(index <= self.last_index(), f"compact index {index} beyond last index")
        require(index <= self._snapshot.meta.index, "compacting past the latest snapshot")
        self._entries = self._entries[index - offset :]

"""The Raft log as the core sees it: persisted entries (through `LogReader`) plus an unstable tail.

Rules of this file:
- Entries the core has accepted but the application has not yet persisted live in `Unstable`
  (etcd `log_unstable.go`); `stable_to()` moves them to storage's responsibility after `advance`.
- Committed entries are never overwritten: trying to is an `InvariantViolation` (§5.4, Leader
  Completeness and State Machine Safety).
- `committed` only grows; `applied <= committed` always.
"""

from __future__ import annotations

from phalanx.errors import Compacted, Unavailable, require
from phalanx.raft.storage import LogReader, limit_size
from phalanx.raft.types import Entry, Index, Snapshot


class Unstable:
    """Entries and a snapshot that are not yet persisted; `offset` is the index of entries[0].

    Entries below `offset_in_progress` (and the snapshot while `snapshot_in_progress`) were
    handed to the application in a `Ready` whose write has not completed yet (etcd's
    `offsetInProgress`): they are not handed out again, but stay readable here until
    `stable_to` says they are durable. An overwrite below it rewinds it (the new entries must
    be written too; the store's write of them truncates the old ones).
    """

    __slots__ = ("entries", "offset", "offset_in_progress", "snapshot", "snapshot_in_progress")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset
        self.offset_in_progress = offset
        self.snapshot_in_progress = False

    def entries_to_persist(self) -> list[Entry]:
        """Entries not yet handed out for persistence."""
        return self.entries[self.offset_in_progress - self.offset:]

    def has_work(self) -> bool:
        """True if some entries or the snapshot still have to be handed out."""
        return (self.offset_in_progress < self.offset + len(self.entries)
                or (self.snapshot is not None and not self.snapshot_in_progress))

    def accept_in_progress(self) -> None:
        """Everything unstable was handed out in a Ready: do not hand it out again."""
        self.offset_in_progress = self.offset + len(self.entries)
        if self.snapshot is not None:
            self.snapshot_in_progress = True

    def last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def term(self, index: int) -> int | None:
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == index:
                return self.snapshot.meta.term
            return None
        last = self.last_index()
        if last is None or index > last:
            return None
        return self.entries[index - self.offset].term

    def truncate_and_append(self, entries: list[Entry]) -> None:
        first = entries[0].index
        if first == self.offset + len(self.entries):
            self.entries.extend(entries)
        elif first <= self.offset:
            # Replace everything unstable; storage's copy beyond `first` is superseded too.
            self.offset = first
            self.entries = list(entries)
        else:
            del self.entries[first - self.offset :]
            self.entries.extend(entries)
        # Entries from `first` on are new: they must be handed out (again).
        self.offset_in_progress = max(self.offset, min(self.offset_in_progress, first))

    def stable_to(self, index: int, term: int) -> None:
        entry_term = self.term(index)
        if entry_term is None or entry_term != term or index < self.offset:
            return  # the entries were replaced meanwhile; they will be persisted again
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1
        self.offset_in_progress = max(self.offset_in_progress, self.offset)

    def stable_snapshot_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None
            self.snapshot_in_progress = False

    def restore(self, snapshot: Snapshot) -> None:
        self.offset = snapshot.meta.index + 1
        self.offset_in_progress = self.offset
        self.entries = []
        self.snapshot = snapshot
        self.snapshot_in_progress = False


class RaftLog:
    """The replicated log: storage + unstable tail, with the commit and apply positions."""

    __slots__ = ("applied", "committed", "max_applying_bytes", "storage", "unstable")

    def __init__(self, storage: LogReader, max_applying_bytes: int) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1
        self.max_applying_bytes = max_applying_bytes

    # -- positions ---------------------------------------------------------------------------
    def first_index(self) -> int:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        last = self.unstable.last_index()
        if last is not None:
            return last
        return self.storage.last_index()

    def last_term(self) -> int:
        term = self.term_or_none(self.last_index())
        require(term is not None, "the last index has no term")
        return term if term is not None else 0

    def stable_last_index(self) -> int:
        """The last index the application has persisted."""
        if self.unstable.entries:
            return self.unstable.offset - 1
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot.meta.index - 1
        return self.storage.last_index()

    def term_or_none(self, index: int) -> int | None:
        """The term at `index`, or None if it was compacted or is beyond the log."""
        dummy = self.first_index() - 1
        if index < dummy or index > self.last_index():
            return None
        unstable_term = self.unstable.term(index)
        if unstable_term is not None:
            return unstable_term
        try:
            return self.storage.term(Index(index))
        except (Compacted, Unavailable):
            return None

    def match_term(self, index: int, term: int) -> bool:
        """True if the log holds an entry at `index` with `term` (§5.3 Log Matching)."""
        found = self.term_or_none(index)
        return found is not None and found == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """True if a log ending at (last_index, last_term) is at least as up to date (§5.4.1)."""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    # -- reading entries ---------------------------------------------------------------------
    def slice(self, low: int, high: int, max_size_bytes: int | None) -> list[Entry]:
        """Entries [low, high); raises `Compacted` if `low` is no longer in the log."""
        if low >= high:
            return []
        require(high <= self.last_index() + 1, f"slice [{low}, {high}) beyond the log")
        if low < self.first_index():
            raise Compacted(f"index {low} is compacted")
        result: list[Entry] = []
        unstable_offset = self.unstable.offset
        if low < unstable_offset:
            stored = self.storage.entries(
                Index(low), Index(min(high, unstable_offset)), max_size_bytes
            )
            if len(stored) < min(high, unstable_offset) - low:
                return stored  # limited by size
            result = stored
        if high > unstable_offset:
            start = max(low, unstable_offset)
            result = result + self.unstable.entries[start - unstable_offset : high - unstable_offset]
        return limit_size(result, max_size_bytes)

    def entries_from(self, low: int, max_size_bytes: int | None) -> list[Entry]:
        """Entries from `low` to the end, limited by size."""
        return self.slice(low, self.last_index() + 1, max_size_bytes)

    def snapshot(self) -> Snapshot:
        """The newest snapshot: the unstable one being installed, else storage's."""
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # -- appending ---------------------------------------------------------------------------
    def append(self, entries: list[Entry]) -> int:
        """Append entries (possibly replacing an uncommitted suffix); returns the last index."""
        if not entries:
            return self.last_index()
        require(
            entries[0].index - 1 >= self.committed,
            f"overwriting committed entry {entries[0].index} (committed {self.committed})",
        )
        self.unstable.truncate_and_append(entries)
        return self.last_index()

    def find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """The index of the first entry that is new or conflicts with the log, else 0 (§5.3)."""
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def maybe_append(
        self, prev_index: int, prev_term: int, leader_commit: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """The follower side of AppendEntries (§5.3, Figure 2, receiver rules 2-5).

        Returns the index of the last new entry, or None if the consistency check failed.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            require(
                conflict > self.committed,
                f"entry {conflict} conflicts with a committed entry (committed {self.committed})",
            )
            self.append(list(entries[conflict - entries[0].index :]))
        self.commit_to(min(leader_commit, last_new))
        return last_new

    # -- commit / apply / persist ------------------------------------------------------------
    def commit_to(self, index: int) -> None:
        """Raise the commit index (it never decreases)."""
        if index > self.committed:
            require(
                index <= self.last_index(),
                f"commit index {index} beyond the last index {self.last_index()}",
            )
            self.committed = index

    def has_next_committed(self) -> bool:
        """True if some committed entries are not applied yet."""
        return self.committed > self.applied and self.applied + 1 >= self.first_index()

    def next_committed_entries(self) -> list[Entry]:
        """Committed entries not yet applied, limited in size per Ready."""
        if not self.has_next_committed():
            return []
        return self.slice(self.applied + 1, self.committed + 1, self.max_applying_bytes)

    def applied_to(self, index: int) -> None:
        """Record that the application applied everything up to `index`."""
        if index <= 0:
            return
        require(
            self.committed >= index >= self.applied,
            f"applied {index} outside [{self.applied}, {self.committed}]",
        )
        self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snapshot_to(self, index: int) -> None:
        self.unstable.stable_snapshot_to(index)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot (§7, InstallSnapshot receiver rule 6-8)."""
        self.committed = snapshot.meta.index
        self.unstable.restore(snapshot)


__all__ = ["RaftLog", "Unstable"]

"""One group's face of the node log (`phalanx.storage.nodelog`): `GroupStore`, with the
interface and the semantics of `WalLogStore`, and the ops it queues.

Rules of this file:
- A `GroupStore` never writes a file of the log itself: each write builds one op and hands it
  to the node log (`GroupLog.submit`), which returns once the frame holding it is durable and
  the op's `apply` has changed this store's view (under the node log's IO lock).
- Its own directory holds its snapshot files (written before the op that references them,
  as the WAL store does) and its `LOCK`.
- Writes are serialised by `_write_lock` (one writer thread per store, `async_store`);
  reads take `_view_lock` and are served from memory, except entries the node released
  (`release`: applied, and held by every live follower): those keep their term in memory and
  their data only in the log file; a read of them (a lagging follower's catch-up, a segment
  rewrite) reads their frame back, CRC-checked, outside any lock (issue 15 lever 7: the log
  tail was ~29 MB of a 1M-key node's memory). `_released` and `_released_sizes` change with
  `_entries`, under `_view_lock`; `_locations` (which frame holds each entry) changes only
  under the log's `_io_lock` AND `_view_lock`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from phalanx.errors import (
    Compacted,
    Corrupt,
    InvariantViolation,
    StorageError,
    Unavailable,
    require,
)
from phalanx.raft.storage import entry_size_bytes, limit_size
from phalanx.raft.types import ConfState, Entry, HardState, Index, Snapshot, SnapshotMeta, Term
from phalanx.storage import nodelog_format as fmt
from phalanx.storage.io_errors import io_errors
from phalanx.storage.sqlite import (
    StoreView,
    encode_conf_state,
    snapshot_file_name,
    write_snapshot_file,
)

logger = logging.getLogger(__name__)


class GroupLog(Protocol):
    """What a `GroupStore` needs of its node log."""

    def submit(self, request: Request) -> None: ...

    def forget(self, key: int) -> None: ...

    def scrub(self, key: int) -> int: ...

    def read_frame(self, key: int, seq: int, position: int) -> list[Entry] | None: ...


#: How often a read of released entries looks their frames up again when a rewrite moved them
#: (and deleted the segment) between the look-up and the read.
_READ_ATTEMPTS = 8
#: `entry_size_bytes` of an entry without its data (the size limit of a read).
_ENTRY_OVERHEAD = entry_size_bytes(Entry(term=Term(0), index=Index(0)))


@dataclass(slots=True)
class Request:
    """One group's op, queued for the node log's next frame."""

    key: int
    op: tuple[object, ...]
    apply: Callable[[int, int], None]  # called with the frame's (segment seq, position)
    # once it is durable
    reclaim: bool = False
    done: bool = False
    error: BaseException | None = None
    lead: bool = False  # woken to write the next frame (see `NodeLog.submit`)
    event: threading.Event = field(default_factory=threading.Event)


class GroupStore(StoreView):
    """One group's log store inside a `NodeLog` (made by `NodeLog.open_group`). Same interface
    and semantics as `WalLogStore`; its writes go through the node log's group commit."""

    def __init__(self, log: GroupLog, key: int, entries: list[Entry], hard_state: HardState,
                 snapshot_meta: SnapshotMeta, runs: list[fmt.Run],
                 locations: fmt.Locations) -> None:
        self._log = log
        self._key = key
        self._view_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._entries = entries
        self._hard_state = hard_state
        self._snapshot = Snapshot(meta=snapshot_meta)
        self._runs = runs  # changed under the log's _io_lock only
        self._locations = locations
        #: Entries up to this index hold no data in memory (see the module rules) ...
        self._released: int = entries[0].index
        #: ... and these are their data sizes (`_released_sizes[i]`: entry offset + 1 + i).
        self._released_sizes = array("I")
        #: The last frame read back: (seq, position, its entries of this group).
        self._read_cache: tuple[int, int, list[Entry]] = (0, 0, [])
        #: Entries read back from the log file (for tests and the bench).
        self.entries_read_back = 0
        self._directory = Path()
        self._lock_fd = -1
        self._closed = True  # until `NodeLog.open_group` attaches it to its directory
        self._dropped = False

    # -- helpers -------------------------------------------------------------------------------
    @property
    def directory(self) -> Path:
        """The directory that holds this group's snapshot files and key."""
        return self._directory

    @property
    def key(self) -> int:
        """This group's key in the node log."""
        return self._key

    @property
    def node_log(self) -> GroupLog:
        return self._log

    def _snapshot_path(self, term: Term, index: Index) -> Path:
        return self._directory / snapshot_file_name(term, index)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"store {self._directory} is closed")

    @contextlib.contextmanager
    def _io_errors(self, action: str) -> Iterator[None]:
        with io_errors(self._directory, action):
            yield

    def _remove_stray_files(self) -> None:
        """Delete snapshot files the log does not reference (crash leftovers)."""
        keep = self._snapshot_path(self._snapshot.meta.term, self._snapshot.meta.index)
        for path in self._directory.glob("snapshot-*"):
            if path != keep and path.suffix in (".snap", ".tmp"):
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:  # harmless: retried on the next open
                    logger.warning("cannot delete stale snapshot file %s: %s", path, exc)

    def live_bytes_in(self, seq: int) -> tuple[int, int, int]:
        """(first, last, payload bytes) of this group's live entries in segment `seq`
        ((0, -1, 0) if none). Called under the log's `_io_lock`."""
        first, last = 0, -1
        for _, low, high in (run for run in self._runs if run[0] == seq):
            first = low if last < 0 else min(first, low)
            last = max(last, high)
        if last < 0:
            return 0, -1, 0
        with self._view_lock:
            offset = self._entries[0].index
            first = max(first, offset + 1)
            sizes = self._data_sizes(first, last + 1)
        return first, last, sum(sizes) + 16 * len(sizes)

    # -- released entries ----------------------------------------------------------------------
    def _data_sizes(self, low: int, high: int) -> list[int]:
        """The data sizes of entries `low..high-1` (all in the log). Under `_view_lock`."""
        offset = self._entries[0].index
        cut = max(low, min(high, self._released + 1))
        sizes = list(self._released_sizes[low - offset - 1:cut - offset - 1])
        sizes.extend(len(entry.data) for entry in self._entries[cut - offset:high - offset])
        return sizes

    def data_sizes(self, low: Index, high: Index) -> list[int]:
        """The data sizes of entries `low..high-1` without reading any back (the snapshot
        policy's byte bound); `Compacted`/`Unavailable` as `entries`."""
        with self._view_lock:
            self._check_range(low, high)
            return self._data_sizes(low, high)

    def release(self, index: Index) -> int:
        """Let entries up to `index` leave memory: their data stays only in the log file and
        is read back when asked for. The node calls this with entries it has applied and that
        every live follower holds (`server/group.py`): they are needed again only by a
        lagging follower's catch-up or a segment rewrite. Returns how many were released."""
        with self._view_lock:
            entries = self._entries
            offset = entries[0].index
            upto = min(index, entries[-1].index)
            released = self._released
            if upto <= released:
                return 0
            sizes = self._released_sizes
            for position in range(released + 1 - offset, upto + 1 - offset):
                entry = entries[position]
                sizes.append(len(entry.data))
                if entry.data:
                    entries[position] = Entry(term=entry.term, index=entry.index,
                                              type=entry.type)
            self._released = upto
            return upto - released

    def held_bytes(self) -> int:
        """Bytes of entry data this store holds in memory (for tests, status and the bench)."""
        with self._view_lock:
            return sum(len(entry.data) for entry in self._entries)

    def released_index(self) -> int:
        """The last entry released from memory (`release`)."""
        with self._view_lock:
            return self._released

    def _check_range(self, low: int, high: int) -> None:
        offset = self._entries[0].index
        last = self._entries[-1].index
        if low <= offset:
            raise Compacted(f"entries from {low} are compacted (first index {offset + 1})")
        if high > last + 1:
            raise Unavailable(f"entries up to {high} are beyond the last index {last}")

    def entries(self, low: Index, high: Index, max_size_bytes: int | None = None) -> list[Entry]:
        """As `StoreView.entries`; released entries are read back from their frames (their
        terms checked against the ones kept in memory)."""
        for _ in range(_READ_ATTEMPTS):
            with self._view_lock:
                self._check_range(low, high)
                offset = self._entries[0].index
                selected = self._entries[low - offset:high - offset]
                if not selected or low > self._released:
                    return limit_size(selected, max_size_bytes)
                cut = min(high, self._released + 1)  # entries low..cut-1 were released
                sizes = self._released_sizes[low - offset - 1:cut - offset - 1]
                limited = False
                if max_size_bytes is not None:
                    total = 0
                    for count, size in enumerate(sizes):
                        total += size + _ENTRY_OVERHEAD
                        if total > max_size_bytes and count > 0:
                            cut, limited = low + count, True
                            break
                records = self._locations.find(low, cut - 1)
            loaded = self._read_back(records)
            if loaded is None:
                continue  # a rewrite moved them meanwhile: look them up again
            for stub, entry in zip(selected, loaded, strict=False):
                if entry.term != stub.term or entry.index != stub.index:
                    raise Corrupt(f"{self._directory}: entry {stub.index} read back from the "
                                  f"log has term {entry.term}, the log's term is {stub.term}")
            self.entries_read_back += len(loaded)
            if limited:  # (the entries after `cut` are released too: never handed out as such)
                return limit_size(loaded, max_size_bytes)
            return limit_size(loaded + selected[len(loaded):], max_size_bytes)
        raise StorageError(f"{self._directory}: entries from {low} kept moving while read back")

    def _read_back(self, records: list[tuple[int, int, int, int]]) -> list[Entry] | None:
        """The entries of `records` ((first, last, seq, position) from `_locations.find`) read
        from their frames; None if a frame's segment is gone."""
        loaded: list[Entry] = []
        for first, last, seq, position in records:
            cached_seq, cached_position, frame_entries = self._read_cache
            if (cached_seq, cached_position) != (seq, position):
                found = self._log.read_frame(self._key, seq, position)
                if found is None:
                    return None
                frame_entries = found
                self._read_cache = (seq, position, frame_entries)
            start = frame_entries[0].index if frame_entries else 0
            chosen = frame_entries[first - start:last - start + 1]
            if first < start or len(chosen) != last - first + 1:
                raise Corrupt(f"{self._directory}: the frame at {seq}:{position} does not hold "
                              f"entries {first}..{last}")
            loaded.extend(chosen)
        return loaded

    def stored(self, first: int, last: int) -> list[Entry]:
        """Entries `first..last` with their data (read back if released): a rewrite's."""
        return self.entries(Index(first), Index(last + 1))

    def relocated(self, first: int, last: int, seq: int, position: int) -> None:
        """Entries `first..last` were copied to the frame at (`seq`, `position`) (a rewrite,
        under the log's `_io_lock`)."""
        with self._view_lock:
            self._locations.replace(first, last, seq, position)

    # -- writes --------------------------------------------------------------------------------
    def persist(
        self,
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
    ) -> None:
        """Durably write one Raft `Ready` (as `WalLogStore.persist`): `snapshot` (if newer)
        replaces the log (§7), `entries` overwrite any suffix they conflict with (§5.3),
        `hard_state` replaces the persisted one. One op in the node log's next frame."""
        with self._write_lock:
            self._check_open()
            install = snapshot is not None and snapshot.meta.index > self._snapshot.meta.index
            if install and snapshot is not None:
                offset, last = snapshot.meta.index, snapshot.meta.index
            else:
                offset, last = self._entries[0].index, self._entries[-1].index
            new_entries: Sequence[Entry] = entries
            if entries and entries[0].index <= offset:
                new_entries = [entry for entry in entries if entry.index > offset]
            if new_entries:
                first = new_entries[0].index
                require(first <= last + 1,
                        f"missing log entries before {first} (last index {last})")
                if [e.index for e in new_entries] != list(range(first,
                                                                first + len(new_entries))):
                    for previous, entry in itertools.pairwise(new_entries):
                        if entry.index != previous.index + 1:
                            raise InvariantViolation(
                                f"appended entries jump from {previous.index} to {entry.index}")
            if not (install or new_entries or hard_state is not None):
                return
            installed: tuple[int, int, str] | None = None
            snapshot_path: Path | None = None
            if install and snapshot is not None:
                meta = snapshot.meta
                installed = (meta.index, meta.term, encode_conf_state(meta.conf_state))
                with self._io_errors("write the snapshot file"):
                    snapshot_path = write_snapshot_file(self._directory, snapshot)
            op = (self._key, fmt.BATCH,
                  None if hard_state is None else (hard_state.term, hard_state.vote,
                                                   hard_state.commit),
                  installed, new_entries[0].index if new_entries else 0,
                  fmt.rows(new_entries))

            def apply(seq: int, position: int) -> None:
                with self._view_lock:
                    if install and snapshot is not None:
                        self._snapshot = Snapshot(meta=snapshot.meta)  # data stays on disk
                        self._entries = [Entry(term=snapshot.meta.term,
                                               index=snapshot.meta.index)]
                        self._runs.clear()
                        self._locations.clear()
                        self._released = snapshot.meta.index
                        del self._released_sizes[:]
                    if new_entries:
                        start = new_entries[0].index
                        offset = self._entries[0].index
                        del self._entries[start - offset:]
                        self._entries.extend(new_entries)
                        if start <= self._released:
                            self._released = start - 1
                            del self._released_sizes[start - offset - 1:]
                        self._locations.truncate(start)
                        self._locations.append(start, new_entries[-1].index, seq, position)
                    if hard_state is not None:
                        self._hard_state = hard_state
                if new_entries:
                    fmt.runs_truncate(self._runs, new_entries[0].index)
                    fmt.runs_append(self._runs, seq, new_entries[0].index,
                                    new_entries[-1].index)

            try:
                self._log.submit(Request(self._key, op, apply, reclaim=install))
            except BaseException:
                if snapshot_path is not None:
                    with contextlib.suppress(OSError):
                        snapshot_path.unlink(missing_ok=True)
                raise
            if install:
                self._remove_stray_files()

    def create_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot:
        with self._write_lock:
            self._check_open()
            require(index <= self._entries[-1].index, f"snapshot index {index} beyond last index")
            if index <= self._snapshot.meta.index:
                return self.snapshot()
            snapshot = Snapshot(
                meta=SnapshotMeta(index=index, term=self.term(index), conf_state=conf_state),
                data=data,
            )
            with self._io_errors("write the snapshot file"):
                path = write_snapshot_file(self._directory, snapshot)

            def apply(seq: int, position: int) -> None:
                with self._view_lock:
                    self._snapshot = Snapshot(meta=snapshot.meta)  # data stays on disk

            op = (self._key, fmt.SNAPSHOT, index, snapshot.meta.term,
                  encode_conf_state(conf_state))
            try:
                self._log.submit(Request(self._key, op, apply))
            except BaseException:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
                raise
            self._remove_stray_files()
            return snapshot

    def compact(self, index: Index) -> None:
        with self._write_lock:
            self._check_open()
            offset = self._entries[0].index
            if index <= offset:
                return
            require(index <= self._entries[-1].index, f"compact index {index} beyond last index")
            require(index <= self._snapshot.meta.index, "compacting past the latest snapshot")
            term = self._entries[index - offset].term

            def apply(seq: int, position: int) -> None:
                with self._view_lock:
                    offset = self._entries[0].index
                    self._entries = self._entries[index - offset:]
                    if index >= self._released:
                        self._released = index
                        del self._released_sizes[:]
                    else:
                        del self._released_sizes[:index - offset]
                    self._locations.compact(index)
                fmt.runs_compact(self._runs, index)

            self._log.submit(Request(self._key, (self._key, fmt.COMPACT, index, term), apply,
                                      reclaim=True))

    def drop(self) -> None:
        """Forget this group for good (its replica is deleted): a DROP op, then close. The
        caller deletes the directory afterwards."""
        with self._write_lock:
            if self._dropped:
                return
            self._check_open()

            def apply(seq: int, position: int) -> None:
                self._dropped = True
                self._log.forget(self._key)

            self._log.submit(Request(self._key, (self._key, fmt.DROP), apply, reclaim=True))
        self.close()

    def scrub(self) -> int:
        """Read back and verify the node log's frames (every segment; `Corrupt` at a bad frame
        that concerns this group or that names no group) and this group's snapshot file;
        returns the bytes verified. Other groups' bad frames are theirs to report."""
        self._check_open()
        verified = self._log.scrub(self._key)
        verified += self.verify_snapshot()
        return verified

    # -- lifecycle -----------------------------------------------------------------------------
    def attach(self, directory: Path, lock_fd: int) -> None:
        self._directory, self._lock_fd, self._closed = directory, lock_fd, False

    def close(self) -> None:
        """Release the directory (the group stays in the node log); idempotent."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            if self._lock_fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
                self._lock_fd = -1

    def __enter__(self) -> GroupStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GroupStore({str(self._directory)!r}, key={self._key:016x})"


__all__ = ["GroupLog", "GroupStore", "Request"]

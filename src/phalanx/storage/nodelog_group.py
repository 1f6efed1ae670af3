"""One group's face of the node log (`phalanx.storage.nodelog`): `GroupStore`, with the
interface and the semantics of `WalLogStore`, and the ops it queues.

Rules of this file:
- A `GroupStore` never writes a file of the log itself: each write builds one op and hands it
  to the node log (`GroupLog.submit`), which returns once the frame holding it is durable and
  the op's `apply` has changed this store's view (under the node log's IO lock).
- Its own directory holds its snapshot files (written before the op that references them,
  as the WAL store does) and its `LOCK`.
- Writes are serialised by `_write_lock` (one writer thread per store, `async_store`);
  reads take `_view_lock` and are served from memory.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from phalanx.errors import InvariantViolation, StorageError, require
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


@dataclass(slots=True)
class Request:
    """One group's op, queued for the node log's next frame."""

    key: int
    op: tuple[object, ...]
    apply: Callable[[int], None]  # called with the segment seq once the frame is durable
    reclaim: bool = False
    done: bool = False
    error: BaseException | None = None
    lead: bool = False  # woken to write the next frame (see `NodeLog.submit`)
    event: threading.Event = field(default_factory=threading.Event)


class GroupStore(StoreView):
    """One group's log store inside a `NodeLog` (made by `NodeLog.open_group`). Same interface
    and semantics as `WalLogStore`; its writes go through the node log's group commit."""

    def __init__(self, log: GroupLog, key: int, entries: list[Entry], hard_state: HardState,
                 snapshot_meta: SnapshotMeta, runs: list[fmt.Run]) -> None:
        self._log = log
        self._key = key
        self._view_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._entries = entries
        self._hard_state = hard_state
        self._snapshot = Snapshot(meta=snapshot_meta)
        self._runs = runs  # changed under the log's _io_lock only
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
        offset = self._entries[0].index
        first = max(first, offset + 1)
        size = sum(len(entry.data) + 16 for entry in self._entries[first - offset:
                                                                    last - offset + 1])
        return first, last, size

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

            def apply(seq: int) -> None:
                with self._view_lock:
                    if install and snapshot is not None:
                        self._snapshot = Snapshot(meta=snapshot.meta)  # data stays on disk
                        self._entries = [Entry(term=snapshot.meta.term,
                                               index=snapshot.meta.index)]
                        self._runs.clear()
                    if new_entries:
                        start = new_entries[0].index
                        del self._entries[start - self._entries[0].index:]
                        self._entries.extend(new_entries)
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

            def apply(seq: int) -> None:
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

            def apply(seq: int) -> None:
                with self._view_lock:
                    self._entries = self._entries[index - self._entries[0].index:]
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

            def apply(seq: int) -> None:
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

"""The durable Raft store of one group: log, hard state and snapshots on SQLite in WAL mode.

Why SQLite (WAL mode) rather than a hand-written segmented WAL with checksums:
- Durability: with `journal_mode=WAL` and `synchronous=FULL` every COMMIT fsyncs the WAL before
  returning, so a transaction that returned is on disk. One Raft Ready = one transaction = one
  fsync (group commit, see `persist`).
- Torn tails: SQLite's WAL frames carry checksums and salts; on open, recovery stops at the first
  frame that does not verify and ignores uncommitted frames. A crash (or power loss) at any instant
  leaves either the old or the new state of each transaction, never a mix. A hand-written segmented
  WAL would have to re-implement exactly this (frame CRCs, tail truncation, segment rotation,
  index rebuild) and be tested as hard; SQLite is the most tested storage engine there is.
- Free extras: atomic suffix truncation + append + hard-state update in one transaction,
  indexed lookups, `ENOSPC` reported as an error with the transaction rolled back.
- Cost: roughly one fsync per commit plus periodic checkpoints, which is the same price a custom
  WAL pays; the reads of the Raft core never touch SQLite (see the cache below).

What this module owns (one directory per Raft group, e.g. `data_dir/groups/<group_id>/`):
- `raft.db` (+ `-wal`, `-shm`): tables `meta(key, value)` (format, schema version, hard state,
  snapshot metadata with its conf state as JSON) and `entries(idx, term, type, data)`.
  As in `MemoryStorage`, the entry with the smallest index is a *dummy* whose index and term are
  the log's offset (`first_index() - 1`, the snapshot position after `apply_snapshot`).
- `snapshot-<term>-<index>.snap`: the payload of the latest snapshot behind a header with a
  CRC32 of the payload, checked on load (`Corrupt` on mismatch).
- `LOCK`: an exclusive `flock` so two processes never open the same store.

Rules of this file:
- Every write is one SQLite transaction; on any failure it is rolled back and `StorageError`
  (or `Corrupt`) is raised with a message naming the store and the cause. A failed write leaves
  both the database and the in-memory view at the last committed state.
- A snapshot file is written to `*.tmp`, fsynced, renamed and the directory fsynced BEFORE the
  transaction that references it commits; older snapshot files are deleted only after that
  commit. Files the database does not reference (crash leftovers) are deleted on open.
- Reads (`LogReader`) are served from memory: the whole log since the last compaction (the
  dummy included, so `term()` is a list lookup), the hard state and the latest snapshot. The
  database is the durable copy, read once on open. Compaction bounds the memory used.
- Threads: writes are serialised by `_write_lock` and may run on any one thread at a time (the
  node uses a dedicated writer thread, see `async_store`). The in-memory view is changed only
  after the transaction commits, by the writer, while holding `_view_lock`; every read takes
  `_view_lock`, so a reader on the event loop sees either the state before or after a write,
  never a half-applied one. Locks are held for list operations only, never across IO.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import sqlite3
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Final

from phalanx.errors import (
    Compacted,
    Corrupt,
    InvariantViolation,
    StorageError,
    Unavailable,
    require,
)
from phalanx.raft.storage import limit_size
from phalanx.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Index,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)
from phalanx.storage.io_errors import storage_error

logger = logging.getLogger(__name__)

DATABASE_NAME: Final = "raft.db"
LOCK_NAME: Final = "LOCK"
FORMAT_NAME: Final = "phalanx-raft-log"
SCHEMA_VERSION: Final = 1

SNAPSHOT_MAGIC: Final = b"PHXSNAP1"
# magic, term, index, payload length, CRC32 of the payload (big-endian).
SNAPSHOT_HEADER: Final = struct.Struct(">8sQQQI")

_SCHEMA: Final = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE entries ("
    " idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, type INTEGER NOT NULL, data BLOB NOT NULL)",
)
_CORRUPTION_CODES: Final = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def snapshot_file_name(term: Term, index: Index) -> str:
    """The file name of the snapshot taken at (`term`, `index`)."""
    return f"snapshot-{term}-{index}.snap"


def encode_conf_state(conf_state: ConfState) -> str:
    """A ConfState as canonical JSON (stored in the meta table)."""
    return json.dumps(
        {
            "voters": list(conf_state.voters),
            "learners": list(conf_state.learners),
            "voters_outgoing": list(conf_state.voters_outgoing),
            "learners_next": list(conf_state.learners_next),
            "auto_leave": conf_state.auto_leave,
        },
        sort_keys=True,
    )


def decode_conf_state(text: object) -> ConfState:
    """The inverse of `encode_conf_state`; raises `Corrupt` for anything else."""
    try:
        if not isinstance(text, str):
            raise TypeError(f"expected text, got {type(text).__name__}")
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise TypeError("expected a JSON object")

        def nodes(key: str) -> tuple[NodeId, ...]:
            value = raw[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"{key} must be a list of strings")
            return tuple(NodeId(v) for v in value)

        auto_leave = raw["auto_leave"]
        if not isinstance(auto_leave, bool):
            raise TypeError("auto_leave must be a boolean")
        return ConfState(
            voters=nodes("voters"),
            learners=nodes("learners"),
            voters_outgoing=nodes("voters_outgoing"),
            learners_next=nodes("learners_next"),
            auto_leave=auto_leave,
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise Corrupt(f"undecodable conf state {text!r}: {exc}") from exc


def _fsync_directory(directory: Path) -> None:
    """Make a create/rename/delete in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot_file(directory: Path, snapshot: Snapshot) -> Path:
    """Durably write `snapshot`'s payload: temp file, fsync, rename, directory fsync."""
    meta = snapshot.meta
    path = directory / snapshot_file_name(meta.term, meta.index)
    temporary = path.with_suffix(".tmp")
    header = SNAPSHOT_HEADER.pack(
        SNAPSHOT_MAGIC, meta.term, meta.index, len(snapshot.data), zlib.crc32(snapshot.data)
    )
    try:
        with open(temporary, "wb") as file:
            file.write(header)
            write_synced(file, snapshot.data)
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_directory(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
    return path


#: A big file (a snapshot) is written and fdatasync-ed this many bytes at a time.
SYNC_EVERY_BYTES = 16 * 1024 * 1024


def write_synced(file: BinaryIO, data: bytes) -> None:
    """Write `data` to `file` (then flushed), `SYNC_EVERY_BYTES` at a time, each piece
    fdatasync-ed. Never 1 GB of dirty pages then one fsync: on ext4 (data=ordered) every other
    fsync on the disk (this node's WAL, the other replicas') joins the journal commit that has
    to write those pages first, and waits seconds. Measured: a 1 GB snapshot written whole
    delayed the other replicas' acknowledgements past the election timeout (the leader
    stepped down: "quorum not active", six elections, docs/snapshots.md)."""
    with memoryview(data) as view:
        if len(view) <= SYNC_EVERY_BYTES:
            file.write(view)
            file.flush()
            return
        for start in range(0, len(view), SYNC_EVERY_BYTES):
            piece = view[start:start + SYNC_EVERY_BYTES]
            try:
                file.write(piece)
            finally:
                piece.release()
            file.flush()
            os.fdatasync(file.fileno())


def read_snapshot_file(path: Path, term: Term, index: Index) -> bytes:
    """The verified payload of the snapshot file at `path`; `Corrupt` if it does not check out.
    The payload is read straight into one bytes object after the header: never the whole file
    then a copy of its tail (a 1 GB snapshot was 2 GB of memory and a 1 GB copy holding the
    GIL, which stalls the event loop when a worker thread reads it)."""
    try:
        with open(path, "rb") as file:
            header = file.read(SNAPSHOT_HEADER.size)
            length = _check_snapshot_header(path, header, term, index)
            payload = file.read(length + 1)
    except FileNotFoundError as exc:
        raise Corrupt(f"snapshot file {path} referenced by the database is missing") from exc
    except OSError as exc:  # EIO: the disk failed (storage/io_errors.py)
        raise storage_error(path.parent, f"read the snapshot file {path.name}", exc) from exc
    if len(payload) != length:
        raise Corrupt(f"snapshot file {path} has {len(payload)} payload bytes, expected {length}")
    if zlib.crc32(payload) != _crc_of(header):
        raise Corrupt(f"snapshot file {path} fails its CRC32 checksum")
    return payload


def verify_snapshot_file(path: Path, term: Term, index: Index) -> int:
    """Check the snapshot file at `path` as `read_snapshot_file` does, reading it in chunks
    of `_VERIFY_CHUNK` bytes (memory: one chunk, whatever the snapshot's size); its payload
    length, or `Corrupt`."""
    try:
        with open(path, "rb") as file:
            header = file.read(SNAPSHOT_HEADER.size)
            length = _check_snapshot_header(path, header, term, index)
            checksum, seen = 0, 0
            while chunk := file.read(_VERIFY_CHUNK):
                checksum = zlib.crc32(chunk, checksum)
                seen += len(chunk)
    except FileNotFoundError as exc:
        raise Corrupt(f"snapshot file {path} referenced by the database is missing") from exc
    except OSError as exc:  # EIO: the disk failed (storage/io_errors.py)
        raise storage_error(path.parent, f"read the snapshot file {path.name}", exc) from exc
    if seen != length:
        raise Corrupt(f"snapshot file {path} has {seen} payload bytes, expected {length}")
    if checksum != _crc_of(header):
        raise Corrupt(f"snapshot file {path} fails its CRC32 checksum")
    return length


_VERIFY_CHUNK = 8 * 1024 * 1024


def _check_snapshot_header(path: Path, header: bytes, term: Term, index: Index) -> int:
    """The payload length a snapshot file's header announces; `Corrupt` if it is not the
    header of snapshot (term, index)."""
    if len(header) < SNAPSHOT_HEADER.size:
        raise Corrupt(f"snapshot file {path} is truncated ({len(header)} bytes)")
    magic, file_term, file_index, length, _checksum = SNAPSHOT_HEADER.unpack(header)
    if magic != SNAPSHOT_MAGIC:
        raise Corrupt(f"snapshot file {path} has a bad magic number {magic!r}")
    if (file_term, file_index) != (term, index):
        raise Corrupt(
            f"snapshot file {path} holds term {file_term} index {file_index}, "
            f"expected term {term} index {index}"
        )
    return int(length)


def _crc_of(header: bytes) -> int:
    return int(SNAPSHOT_HEADER.unpack(header)[4])


class StoreView:
    """The in-memory read side both log stores share (`SqliteLogStore`, `WalLogStore`): the
    entries since the last compaction (`_entries[0]` is the dummy entry at the compaction
    point), the persisted hard state, and the latest snapshot's metadata, all under
    `_view_lock`; a snapshot's data is read from its file when asked for. The writes that
    change the view (`persist`, ...) are each store's own."""

    _view_lock: threading.Lock
    _entries: list[Entry]
    _hard_state: HardState
    _snapshot: Snapshot

    def _snapshot_path(self, term: Term, index: Index) -> Path:
        raise NotImplementedError

    def persist(self, entries: Sequence[Entry] = (), hard_state: HardState | None = None,
                snapshot: Snapshot | None = None) -> None:
        raise NotImplementedError

    # -- LogReader -----------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        with self._view_lock:
            return self._hard_state, self._snapshot.meta.conf_state

    def first_index(self) -> Index:
        with self._view_lock:
            return Index(self._entries[0].index + 1)

    def last_index(self) -> Index:
        with self._view_lock:
            return self._entries[-1].index

    def term(self, index: Index) -> Term:
        with self._view_lock:
            offset = self._entries[0].index
            if index < offset:
                raise Compacted(f"index {index} is compacted (first index {offset + 1})")
            if index - offset >= len(self._entries):
                raise Unavailable(
                    f"index {index} is beyond the last index {self._entries[-1].index}"
                )
            return self._entries[index - offset].term

    def entries(self, low: Index, high: Index, max_size_bytes: int | None = None) -> list[Entry]:
        with self._view_lock:
            offset = self._entries[0].index
            last = self._entries[-1].index
            if low <= offset:
                raise Compacted(f"entries from {low} are compacted (first index {offset + 1})")
            if high > last + 1:
                raise Unavailable(f"entries up to {high} are beyond the last index {last}")
            selected = self._entries[low - offset : high - offset]
        return limit_size(selected, max_size_bytes)

    def data_sizes(self, low: Index, high: Index) -> list[int]:
        """The data sizes of entries `low..high-1` (the snapshot policy's byte bound; a store
        that keeps entries on disk answers without reading them back)."""
        return [len(entry.data) for entry in self.entries(low, high)]

    def hard_state(self) -> HardState:
        """The persisted hard state."""
        with self._view_lock:
            return self._hard_state

    # -- LogWriter -----------------------------------------------------------------------------
    def append(self, entries: list[Entry]) -> None:
        self.persist(entries=entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self.persist(hard_state=hard_state)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self.persist(snapshot=snapshot)

    def snapshot(self) -> Snapshot:
        """The latest snapshot, its data read (and verified) from its file: the store keeps
        only the metadata in memory (a node's snapshot is as large as its data set)."""
        while True:
            with self._view_lock:
                meta = self._snapshot.meta
            if meta.index == 0:
                return Snapshot(meta=meta)
            try:
                data = read_snapshot_file(self._snapshot_path(meta.term, meta.index),
                                          meta.term, meta.index)
            except Corrupt:
                with self._view_lock:
                    if self._snapshot.meta == meta:
                        raise
                continue  # a newer snapshot replaced the file meanwhile: read that one
            return Snapshot(meta=meta, data=data)

    def verify_snapshot(self) -> int:
        """Check the latest snapshot's file (CRC32, `verify_snapshot_file`) without holding its
        data in memory; its payload length (0: no snapshot). For the background scrub."""
        while True:
            with self._view_lock:
                meta = self._snapshot.meta
            if meta.index == 0:
                return 0
            try:
                return verify_snapshot_file(self._snapshot_path(meta.term, meta.index),
                                            meta.term, meta.index)
            except Corrupt:
                with self._view_lock:
                    if self._snapshot.meta == meta:
                        raise
                # a newer snapshot replaced the file meanwhile: check that one

    def snapshot_meta(self) -> SnapshotMeta:
        """The latest snapshot's metadata (cheap: no file read)."""
        with self._view_lock:
            return self._snapshot.meta


class SqliteLogStore(StoreView):
    """A durable `LogWriter` for one Raft group, kept in `directory`.

    `conf_state` is used only when the directory holds no store yet (bootstrap); an existing
    store keeps its own. Call `close()` when done (or use it as a context manager).
    """

    def __init__(self, directory: str | os.PathLike[str], conf_state: ConfState | None = None):
        self._directory = Path(directory)
        self._write_lock = threading.Lock()
        self._view_lock = threading.Lock()
        self._closed = False
        self._lock_fd = -1
        self._connection: sqlite3.Connection | None = None
        # The in-memory view (see the module rules); set by _load().
        self._entries: list[Entry] = []
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        try:
            self._make_directory()
            self._lock_directory()
            self._connection = self._connect()
            self._load(conf_state or ConfState())
            self._remove_stray_files()
        except BaseException:
            self._release()
            raise

    # -- opening -------------------------------------------------------------------------------
    def _make_directory(self) -> None:
        """Create the store's directory (and parents) durably: fsync each new entry's parent."""
        missing: list[Path] = []
        path = self._directory.absolute()
        while not path.exists():
            missing.append(path)
            path = path.parent
        with self._io_errors("create the store directory"):
            for created in reversed(missing):
                created.mkdir(exist_ok=True)
                _fsync_directory(created.parent)

    def _lock_directory(self) -> None:
        try:
            self._lock_fd = os.open(self._directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StorageError(f"store {self._directory} is already open elsewhere") from exc
        except OSError as exc:
            raise StorageError(f"cannot lock store {self._directory}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        path = self._directory / DATABASE_NAME
        with self._io_errors("open the database"):
            # isolation_level=None: we issue BEGIN/COMMIT ourselves. The connection is used by
            # one thread at a time (under _write_lock), but not always the opening thread.
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()
                if mode is None or str(mode[0]).lower() != "wal":
                    raise StorageError(f"store {self._directory}: cannot enable WAL mode ({mode})")
                connection.execute("PRAGMA synchronous=FULL")
                connection.execute("PRAGMA foreign_keys=OFF")
            except BaseException:
                connection.close()
                raise
            _fsync_directory(self._directory)
        return connection

    def _load(self, bootstrap_conf_state: ConfState) -> None:
        connection = self._db()
        with self._io_errors("read the database"):
            tables = {
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if not tables:
                self._initialize(bootstrap_conf_state)
            elif not {"meta", "entries"} <= tables:
                raise Corrupt(
                    f"store {self._directory}: {DATABASE_NAME} is not a phalanx Raft log "
                    f"(tables {sorted(tables)})"
                )
            meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
            rows = connection.execute("SELECT idx, term, type, data FROM entries ORDER BY idx")
            entries = [self._decode_entry(row) for row in rows]
        self._check_meta(meta)
        try:
            hard_state = HardState(
                term=Term(self._integer(meta, "hard_term")),
                vote=NodeId(self._text(meta, "hard_vote")),
                commit=Index(self._integer(meta, "hard_commit")),
            )
            snapshot_meta = SnapshotMeta(
                index=Index(self._integer(meta, "snapshot_index")),
                term=Term(self._integer(meta, "snapshot_term")),
                conf_state=decode_conf_state(meta.get("snapshot_conf")),
            )
        except Corrupt as exc:
            raise Corrupt(f"store {self._directory}: {exc}") from exc
        self._check_log(entries, snapshot_meta)
        if snapshot_meta.index > 0:
            verify_snapshot_file(  # verified at open; read again when asked for
                self._snapshot_path(snapshot_meta.term, snapshot_meta.index),
                snapshot_meta.term,
                snapshot_meta.index,
            )
        with self._view_lock:
            self._entries = entries
            self._hard_state = hard_state
            self._snapshot = Snapshot(meta=snapshot_meta)  # data stays on disk
        logger.info(
            "opened raft store %s: entries %d..%d, snapshot at %d, term %d",
            self._directory,
            entries[0].index + 1,
            entries[-1].index,
            snapshot_meta.index,
            hard_state.term,
        )

    def _initialize(self, conf_state: ConfState) -> None:
        rows: list[tuple[str, object]] = [
            ("format", FORMAT_NAME),
            ("schema_version", SCHEMA_VERSION),
            ("hard_term", 0),
            ("hard_vote", ""),
            ("hard_commit", 0),
            ("snapshot_index", 0),
            ("snapshot_term", 0),
            ("snapshot_conf", encode_conf_state(conf_state)),
        ]
        with self._transaction("initialize the store") as connection:
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows)
            connection.execute(
                "INSERT INTO entries (idx, term, type, data) VALUES (0, 0, ?, x'')",
                (int(EntryType.NORMAL),),
            )

    def _check_meta(self, meta: dict[str, object]) -> None:
        if meta.get("format") != FORMAT_NAME:
            raise Corrupt(
                f"store {self._directory}: {DATABASE_NAME} is not a phalanx Raft log "
                f"(format {meta.get('format')!r})"
            )
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise Corrupt(
                f"store {self._directory}: unsupported schema version {version!r} "
                f"(this build reads version {SCHEMA_VERSION})"
            )

    def _check_log(self, entries: list[Entry], snapshot_meta: SnapshotMeta) -> None:
        if not entries:
            raise Corrupt(f"store {self._directory}: the log has lost its dummy entry")
        for previous, entry in itertools.pairwise(entries):
            if entry.index != previous.index + 1:
                raise Corrupt(
                    f"store {self._directory}: the log has a gap between index "
                    f"{previous.index} and {entry.index}"
                )
            if entry.term < previous.term:
                raise Corrupt(
                    f"store {self._directory}: term goes down from {previous.term} to "
                    f"{entry.term} at index {entry.index}"
                )
        offset = entries[0].index
        if not offset <= snapshot_meta.index <= entries[-1].index:
            raise Corrupt(
                f"store {self._directory}: snapshot index {snapshot_meta.index} outside the log "
                f"{offset}..{entries[-1].index}"
            )
        if entries[snapshot_meta.index - offset].term != snapshot_meta.term:
            raise Corrupt(
                f"store {self._directory}: snapshot term {snapshot_meta.term} disagrees with the "
                f"log at index {snapshot_meta.index}"
            )

    def _decode_entry(self, row: tuple[object, ...]) -> Entry:
        index, term, entry_type, data = row
        if (
            not isinstance(index, int)
            or not isinstance(term, int)
            or not isinstance(entry_type, int)
            or not isinstance(data, bytes)
        ):
            raise Corrupt(f"store {self._directory}: malformed log row {row!r}")
        try:
            kind = EntryType(entry_type)
        except ValueError as exc:
            raise Corrupt(
                f"store {self._directory}: unknown entry type {entry_type} at index {index}"
            ) from exc
        return Entry(term=Term(term), index=Index(index), type=kind, data=data)

    @staticmethod
    def _integer(meta: dict[str, object], key: str) -> int:
        value = meta.get(key)
        if not isinstance(value, int) or value < 0:
            raise Corrupt(f"meta {key} is {value!r}, expected a non-negative integer")
        return value

    @staticmethod
    def _text(meta: dict[str, object], key: str) -> str:
        value = meta.get(key)
        if not isinstance(value, str):
            raise Corrupt(f"meta {key} is {value!r}, expected text")
        return value

    def _remove_stray_files(self) -> None:
        """Delete snapshot files the database does not reference (crash leftovers)."""
        keep = self._snapshot_path(self._snapshot.meta.term, self._snapshot.meta.index)
        for path in self._directory.glob("snapshot-*"):
            if path != keep and path.suffix in (".snap", ".tmp"):
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:  # harmless: retried on the next open
                    logger.warning("cannot delete stale snapshot file %s: %s", path, exc)

    # -- helpers -------------------------------------------------------------------------------
    @property
    def directory(self) -> Path:
        """The directory that holds this store."""
        return self._directory

    def _snapshot_path(self, term: Term, index: Index) -> Path:
        return self._directory / snapshot_file_name(term, index)

    def _db(self) -> sqlite3.Connection:
        if self._closed or self._connection is None:
            raise StorageError(f"store {self._directory} is closed")
        return self._connection

    @contextlib.contextmanager
    def _io_errors(self, action: str) -> Iterator[None]:
        """Translate SQLite and OS errors into the phalanx error tree."""
        try:
            yield
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", "")
            error = Corrupt if name in _CORRUPTION_CODES else StorageError
            raise error(f"store {self._directory}: cannot {action}: {exc} ({name})") from exc
        except OSError as exc:
            raise storage_error(self._directory, action, exc) from exc

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed (and fsynced) on success, rolled back on failure."""
        connection = self._db()
        with self._io_errors(action):
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                # After e.g. SQLITE_FULL the transaction may still be open; roll it back so the
                # database stays at its last committed state. If it already ended, this fails.
                with contextlib.suppress(sqlite3.Error):
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                raise

    def persist(
        self,
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
    ) -> None:
        """Durably write everything of one Raft `Ready` in ONE transaction (one fsync).

        In order: `snapshot` (if newer than ours) replaces the whole log (§7); `entries` are
        appended after truncating any suffix they overwrite (§5.3); `hard_state` (if given)
        replaces the persisted one. Returns once all of it is on disk; raises `StorageError`
        and changes nothing if any of it cannot be written.
        """
        with self._write_lock:
            self._db()
            install = snapshot is not None and snapshot.meta.index > self._snapshot.meta.index
            if install and snapshot is not None:
                offset, last = snapshot.meta.index, snapshot.meta.index
            else:
                offset, last = self._entries[0].index, self._entries[-1].index
            new_entries = [entry for entry in entries if entry.index > offset]
            if new_entries:
                require(
                    new_entries[0].index <= last + 1,
                    f"missing log entries before {new_entries[0].index} (last index {last})",
                )
                for previous, entry in itertools.pairwise(new_entries):
                    if entry.index != previous.index + 1:
                        raise InvariantViolation(
                            f"appended entries jump from {previous.index} to {entry.index}"
                        )
            if not (install or new_entries or hard_state is not None):
                return
            snapshot_path: Path | None = None
            if install and snapshot is not None:
                with self._io_errors("write the snapshot file"):
                    snapshot_path = write_snapshot_file(self._directory, snapshot)
            try:
                with self._transaction("persist a ready batch") as connection:
                    if install and snapshot is not None:
                        connection.execute("DELETE FROM entries")
                        connection.execute(
                            "INSERT INTO entries (idx, term, type, data) VALUES (?, ?, ?, x'')",
                            (snapshot.meta.index, snapshot.meta.term, int(EntryType.NORMAL)),
                        )
                        self._write_snapshot_meta(connection, snapshot.meta)
                    if new_entries:
                        connection.execute(
                            "DELETE FROM entries WHERE idx >= ?", (new_entries[0].index,)
                        )
                        connection.executemany(
                            "INSERT INTO entries (idx, term, type, data) VALUES (?, ?, ?, ?)",
                            [(e.index, e.term, int(e.type), e.data) for e in new_entries],
                        )
                    if hard_state is not None:
                        connection.executemany(
                            "UPDATE meta SET value = ? WHERE key = ?",
                            [
                                (hard_state.term, "hard_term"),
                                (hard_state.vote, "hard_vote"),
                                (hard_state.commit, "hard_commit"),
                            ],
                        )
            except BaseException:
                if snapshot_path is not None:
                    with contextlib.suppress(OSError):
                        snapshot_path.unlink(missing_ok=True)
                raise
            # Committed: now (and only now) the readers may see it.
            with self._view_lock:
                if install and snapshot is not None:
                    self._snapshot = Snapshot(meta=snapshot.meta)  # data stays on disk
                    self._entries = [Entry(term=snapshot.meta.term, index=snapshot.meta.index)]
                if new_entries:
                    del self._entries[new_entries[0].index - self._entries[0].index :]
                    self._entries.extend(new_entries)
                if hard_state is not None:
                    self._hard_state = hard_state
            if install:
                self._remove_stray_files()

    def create_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot:
        with self._write_lock:
            self._db()
            require(index <= self._entries[-1].index, f"snapshot index {index} beyond last index")
            if index <= self._snapshot.meta.index:
                return self.snapshot()
            snapshot = Snapshot(
                meta=SnapshotMeta(index=index, term=self.term(index), conf_state=conf_state),
                data=data,
            )
            with self._io_errors("write the snapshot file"):
                path = write_snapshot_file(self._directory, snapshot)
            try:
                with self._transaction("record a snapshot") as connection:
                    self._write_snapshot_meta(connection, snapshot.meta)
            except BaseException:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
                raise
            with self._view_lock:
                self._snapshot = Snapshot(meta=snapshot.meta)  # data stays on disk
            self._remove_stray_files()
            return snapshot

    def compact(self, index: Index) -> None:
        with self._write_lock:
            self._db()
            offset = self._entries[0].index
            if index <= offset:
                return
            require(index <= self._entries[-1].index, f"compact index {index} beyond last index")
            require(index <= self._snapshot.meta.index, "compacting past the latest snapshot")
            with self._transaction("compact the log") as connection:
                connection.execute("DELETE FROM entries WHERE idx < ?", (index,))
            with self._view_lock:
                self._entries = self._entries[index - offset :]

    @staticmethod
    def _write_snapshot_meta(connection: sqlite3.Connection, meta: SnapshotMeta) -> None:
        connection.executemany(
            "UPDATE meta SET value = ? WHERE key = ?",
            [
                (meta.index, "snapshot_index"),
                (meta.term, "snapshot_term"),
                (encode_conf_state(meta.conf_state), "snapshot_conf"),
            ],
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the database and release the directory lock; idempotent."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    def _release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = -1

    def __enter__(self) -> SqliteLogStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteLogStore({str(self._directory)!r})"

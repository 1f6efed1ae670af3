"""One write-ahead log for every Raft group of a node (issue 15, lever 1).

TiKV's raft-engine and CockroachDB keep one log per node, not one per Raft group: N groups on
a node then cost one stream of `fdatasync`s, not N. `NodeLog` is that log; `GroupStore`
(`phalanx.storage.nodelog_group`) is one group's face of it, with the interface and the
semantics of `WalLogStore` (the storage contract in `phalanx.testing.storage_contract` holds
per group).

Files:
- `data_dir/log/<seq as 16 hex digits>.log`: segments, `seq` = 1, 2, 3, ... without gaps, each
  a 16-byte header (magic `PHXNLOG1`, seq) then frames (`phalanx.storage.nodelog_format`); the
  first frame of a segment is a CHECKPOINT of every live group's state. `LOCK`: an exclusive
  `flock`, one process per log.
- `data_dir/groups/<id>/NODELOG`: the group's key in the log (a random 64-bit number, written
  durably AFTER the group's CREATE op is durable: a directory whose key the log does not know
  is `Corrupt`, never recreated empty), so a group directory deleted and made again (a replica
  rebuilt, a shard removed and re-added) never meets the old records: they belong to a key no
  directory names, and are garbage. The group's snapshot files stay in its directory
  (`snapshot-<term>-<index>.snap`, as the WAL store's), with its own `LOCK`.

Rules of this file:
- Group commit: a group's write (`persist`, `create_snapshot`, `compact`, `drop`) queues an op
  and waits; one thread at a time is the writer (`submit`: leader hand-off) and writes EVERY
  queued op, of every group, as one WRITE frame: one `pwrite`, one `fdatasync`, then applies
  each op to its group's in-memory view and wakes the waiters. Each group's writes stay serialised by its own
  `_write_lock` (and its one writer thread, `async_store`), so a frame holds at most one op per
  group and ops of one group are in the log in the order they were made.
- Every group's view changes only under `_io_lock`, right after the frame that holds the change
  is durable: so a CHECKPOINT (written under `_io_lock` when a segment is started) and a rewrite
  always see views that match the log up to that point. Readers take the group's `_view_lock`.
- A failed `pwrite`/`fdatasync` fails every op of that frame with `StorageError`, changes no
  view, and cuts the frame's bytes off (`ftruncate`) so the next frame goes in their place.
- Torn write versus corruption (s6 closing note, item 2): only the last frame can be torn by a
  crash (every earlier one was fdatasynced before the next was written). A bad frame followed
  by a valid one is corruption. So that an acknowledged frame is never the last one for long,
  the confirmer thread writes a CONFIRM frame (no payload, fdatasynced) once the log has been
  idle for `confirm_delay` seconds after a WRITE, and `close()` writes one too: a bad last WRITE
  frame with nothing valid after it is then a torn write (cut with a warning) and anything
  else is corruption. The one window left: a crash within `confirm_delay` + one fdatasync
  after the last acknowledged write AND that frame's bytes rotting; documented in
  docs/disk-faults.md.
- What a checksum failure damages: a frame whose header (and key table) is valid but whose
  payload fails its CRC damages the groups its key table names; a frame whose header is bad
  damages every group (it is unknown whose ops it held). A damaged group's later ops are
  ignored, `open_group` raises `Corrupt` for it (the node reports the replica damaged and
  rebuilds it from its peers) and the log forgets it; every other group opens. A segment that
  is missing or has a bad segment header makes the whole log unreadable: `NodeLog()` raises.
- Compaction is per group: a group's entries at or below its compaction point are garbage.
  Each group knows which segments hold the latest copy of its live entries (`runs`). The
  oldest segment is deleted once no live group has a run in it; if only groups holding less
  than half a segment of live entries there keep it, and at least `rewrite_after` segments
  exist, those entries are copied to the active segment (REWRITE ops, as raft-engine's
  rewrite of cold groups) and the segment deleted. Segments are deleted oldest first only, so
  the survivors are a suffix, and replay starts from the oldest one's CHECKPOINT.
- Snapshot files: written (temp, fsync, rename, directory fsync) BEFORE the op that references
  them; older ones deleted once that op is durable; unreferenced ones on open.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgpack  # type: ignore[import-untyped]

from phalanx.errors import Corrupt, StorageError, require
from phalanx.raft.types import ConfState, Entry, HardState, Index, SnapshotMeta, Term
from phalanx.storage import nodelog_format as fmt
from phalanx.storage.io_errors import io_errors
from phalanx.storage.nodelog_group import GroupStore, Request
from phalanx.storage.nodelog_replay import DECODE_ERRORS, Replay
from phalanx.storage.sqlite import (
    DATABASE_NAME,
    LOCK_NAME,
    snapshot_file_name,
    verify_snapshot_file,
)

logger = logging.getLogger(__name__)

KEY_FILE: Final = "NODELOG"
DEFAULT_SEGMENT_BYTES: Final = 64 << 20
DEFAULT_PREALLOCATE_BYTES: Final = 4 << 20
DEFAULT_CONFIRM_DELAY: Final = 0.02
_SEGMENT_PATTERN: Final = re.compile(r"^([0-9a-f]{16})\.log$")


def segment_file_name(seq: int) -> str:
    """The file name of segment number `seq`."""
    return f"{seq:016x}.log"


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_directory(directory: Path) -> None:
    missing: list[Path] = []
    path = directory.absolute()
    while not path.exists():
        missing.append(path)
        path = path.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
        _fsync_directory(created.parent)


def _lock(directory: Path) -> int:
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot lock store {directory}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise StorageError(f"store {directory} is already open elsewhere") from exc
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"cannot lock store {directory}: {exc}") from exc
    return fd


def read_group_key(directory: Path) -> int | None:
    """The key of the group whose directory this is, None if it has none (yet)."""
    try:
        text = (directory / KEY_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {directory / KEY_FILE}: {exc}") from exc
    try:
        return int(text, 16)
    except ValueError as exc:
        raise Corrupt(f"{directory / KEY_FILE} holds {text!r}, not a group key") from exc


def holds_group(directory: Path) -> bool:
    """True if `directory` is a group whose log lives in a node log."""
    return (directory / KEY_FILE).exists()


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path


class NodeLog:
    """The one write-ahead log of a node's Raft groups (see the module rules).

    `groups_root` (the node's `data_dir/groups`), when given, tells live keys from garbage at
    open: a key that no `groups_root/*/NODELOG` names belongs to a deleted replica.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        groups_root: str | os.PathLike[str] | None = None,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        preallocate_bytes: int = DEFAULT_PREALLOCATE_BYTES,
        confirm_delay: float = DEFAULT_CONFIRM_DELAY,
        rewrite_after: int = 3,
    ) -> None:
        require(segment_bytes > 0, "segment_bytes must be positive")
        require(preallocate_bytes >= 0, "preallocate_bytes must not be negative")
        require(rewrite_after >= 2, "rewrite_after must be at least 2")
        self._directory = Path(directory)
        self._segment_bytes = segment_bytes
        self._preallocate_bytes = preallocate_bytes
        self._confirm_delay = confirm_delay
        self._rewrite_after = rewrite_after
        self._io_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[Request] = []
        self._writing = False  # a thread is the writer (see `submit`)
        self._closed = False
        self._lock_fd = -1
        self._fd = -1
        self._position = 0
        self._allocated = 0
        self._segment_start = 0
        self._segments: list[_Segment] = []
        self._rotated = False  # a segment was started since the last `_reclaim`
        self._groups: dict[int, GroupStore] = {}
        #: Groups whose records did not check out at open (key -> why).
        self.damaged: dict[int, str] = {}
        #: `fdatasync` calls and WRITE frames since open (for tests and the bench).
        self.syncs = 0
        self.frames = 0
        self.rewritten_entries = 0
        self._unconfirmed = False
        self._last_write = 0.0
        self._confirm = threading.Condition()
        self._confirmer: threading.Thread | None = None
        try:
            with self._io_errors("create the log directory"):
                _make_directory(self._directory)
            self._lock_fd = _lock(self._directory)
            self._load(Path(groups_root) if groups_root is not None else None)
        except BaseException:
            self._release()
            raise
        if confirm_delay > 0:
            self._confirmer = threading.Thread(target=self._confirm_loop, daemon=True,
                                               name=f"phalanx-nodelog-confirm-{id(self):x}")
            self._confirmer.start()

    # -- opening -------------------------------------------------------------------------------
    def _list_segments(self) -> list[tuple[int, Path]]:
        found: list[tuple[int, Path]] = []
        with self._io_errors("list the log directory"):
            for path in self._directory.iterdir():
                if path.name.endswith(".log.tmp"):
                    path.unlink(missing_ok=True)  # a segment whose creation did not finish
                elif match := _SEGMENT_PATTERN.match(path.name):
                    found.append((int(match.group(1), 16), path))
        found.sort()
        for (previous, _), (seq, path) in itertools.pairwise(found):
            if seq != previous + 1:
                raise Corrupt(f"node log {self._directory}: segments {previous + 1}..{seq - 1} "
                              f"are missing (before {path.name})")
        return found

    def _load(self, groups_root: Path | None) -> None:
        found = self._list_segments()
        if not found:
            self._start_segment(1)
        else:
            self._replay(found)
        if groups_root is not None:
            live: set[int] = set()
            for path in groups_root.glob(f"*/{KEY_FILE}"):
                with contextlib.suppress(StorageError):
                    key = read_group_key(path.parent)
                    if key is not None:
                        live.add(key)
            for key in [k for k in self._groups if k not in live]:
                del self._groups[key]  # a deleted replica's records: garbage
            for key in [k for k in self.damaged if k not in live]:
                del self.damaged[key]
        logger.info("opened node log %s: %d group(s), %d damaged, %d segment(s)",
                    self._directory, len(self._groups), len(self.damaged), len(self._segments))

    def _replay(self, found: list[tuple[int, Path]]) -> None:
        replay = Replay()
        scan = fmt.Scan([], 0)
        for number, (seq, path) in enumerate(found):
            with self._io_errors(f"read segment {path.name}"):
                data = path.read_bytes()
            scan = replay.segment(seq, path, data, oldest=number == 0,
                                  last=number == len(found) - 1)
            self._segments.append(_Segment(seq, path))
        if scan.torn is not None:
            logger.warning("node log %s: cutting the torn tail of segment %s (%s): the crash "
                           "interrupted a write", self._directory, found[-1][1].name, scan.torn)
        for key, state in replay.states.items():
            try:
                log = state.finish()
            except Corrupt as exc:
                replay.damaged.setdefault(key, f"node log {self._directory}: {exc}")
                continue
            self._groups[key] = GroupStore(self, key, log, state.hard_state,
                                           state.snapshot_meta, state.runs, state.locations)
        self.damaged = replay.damaged
        for key, why in self.damaged.items():
            logger.error("node log %s: group %016x is damaged: %s", self._directory, key, why)
        frames = scan.frames
        self._segment_start = frames[0].end if frames else fmt.FILE_HEADER.size
        path = self._segments[-1].path
        with self._io_errors(f"open segment {path.name}"):
            self._fd = os.open(path, os.O_RDWR)
            size = os.fstat(self._fd).st_size
            if scan.torn is not None:
                os.ftruncate(self._fd, scan.end)  # the zeros are re-allocated on demand
                os.fsync(self._fd)
                size = scan.end
        self._position, self._allocated = scan.end, size

    # -- groups --------------------------------------------------------------------------------
    def open_group(self, directory: str | os.PathLike[str],
                   conf_state: ConfState | None = None) -> GroupStore:
        """Open (or create, bootstrapped with `conf_state`) the group whose directory this
        is. Raises `Corrupt` for a group the log found damaged at open."""
        path = Path(directory)
        with self._io_errors_at(path, "create the group directory"):
            _make_directory(path)
        lock_fd = _lock(path)
        try:
            if (path / DATABASE_NAME).exists() or any(path.glob("*.wal")):
                raise StorageError(f"store {path} holds a per-group log, not a node log group")
            key = read_group_key(path)
            with self._io_lock:
                self._check_open()
                if key is not None and key in self.damaged:
                    raise Corrupt(f"store {path}: {self.damaged[key]}")
                store = self._groups.get(key) if key is not None else None
            if store is None and key is not None:
                # The key is written only once the group's CREATE is durable: a log that
                # does not know it lost the group (or its damaged frames were reclaimed).
                # Never recreate it empty: that would be a wiped voter (§5.2).
                raise Corrupt(f"store {path}: the node log {self._directory} holds no record "
                              f"of group {key:016x}")
            if store is None:
                store = self._create_group(path, conf_state or ConfState())
            meta = store.snapshot_meta()
            if meta.index > 0:
                verify_snapshot_file(path / snapshot_file_name(meta.term, meta.index),
                                     meta.term, meta.index)
            store.attach(path, lock_fd)
            store._remove_stray_files()
            return store
        except BaseException:
            os.close(lock_fd)
            raise

    def _create_group(self, path: Path, conf_state: ConfState) -> GroupStore:
        """A new group: its CREATE op first (durable), THEN its key in its directory. A crash
        between the two leaves a directory without a key (a new group next time; the CREATE
        is garbage: no directory names its key)."""
        key = secrets.randbits(64) or 1
        meta = SnapshotMeta(conf_state=conf_state)
        store = GroupStore(self, key, [Entry(term=Term(0), index=Index(0))], HardState(), meta,
                           [], fmt.Locations())

        def apply(seq: int, position: int) -> None:
            self._groups[key] = store

        self.submit(Request(key, (key, fmt.CREATE, *fmt.create_fields(conf_state)), apply))
        temporary = path / (KEY_FILE + ".tmp")
        with self._io_errors_at(path, "write the group key"):
            with open(temporary, "w") as file:
                file.write(f"{key:016x}\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path / KEY_FILE)
            _fsync_directory(path)
        return store

    def forget(self, key: int) -> None:
        """Called under `_io_lock` by a DROP once durable."""
        self._groups.pop(key, None)

    def group_keys(self) -> list[int]:
        """The live groups' keys (for tests and tools)."""
        with self._io_lock:
            return sorted(self._groups)

    # -- the group commit ----------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        """Queue one op and return once it is durable and applied (raises `StorageError` if
        its frame could not be written).

        Leader hand-off: the first op queued while no frame is being written makes its thread
        the writer; every other thread waits on its own request's event. The writer writes
        everything queued by the time it holds `_io_lock` as one frame, wakes the waiters of
        that frame, and hands the writer's role to the oldest op queued meanwhile (its
        thread wakes as the next writer): nobody waits in line for a lock to learn that its
        op was written by someone else."""
        with self._queue_lock:
            self._queue.append(request)
            lead = not self._writing
            self._writing = True
        if not lead:
            request.event.wait()
            if not request.lead:
                if request.error is not None:
                    raise request.error
                return
        batch: list[Request] = []
        try:
            with self._io_lock:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._write_batch(batch)
        finally:
            with self._queue_lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._writing = False
                else:
                    successor.lead = True
            for written in batch:
                if written is not request:
                    written.event.set()
            if successor is not None:
                successor.event.set()
        if request.error is not None:
            raise request.error

    def _write_batch(self, batch: list[Request]) -> None:
        try:
            self._check_open()
            keys = sorted({request.key for request in batch})
            seq, position = self._append(
                fmt.frame(fmt.WRITE, keys, msgpack.packb([request.op for request in batch])),
                "write a frame")
        except BaseException as exc:
            for request in batch:
                request.error, request.done = exc, True
            return
        self.frames += 1
        reclaim = False
        for request in batch:
            try:
                request.apply(seq, position)
            except BaseException as exc:  # never expected: the op was checked before
                logger.exception("node log %s: applying an op failed", self._directory)
                request.error = exc
            request.done = True
            reclaim = reclaim or request.reclaim
        self._last_write = time.monotonic()
        if not self._unconfirmed:  # the confirmer sleeps until told (else it has a deadline)
            with self._confirm:
                self._unconfirmed = True
                self._confirm.notify()
        if reclaim or self._rotated:
            # (after a compaction, a drop, a snapshot install or a new segment: not after
            # every write, the holders' count walks their entries)
            self._rotated = False
            self._reclaim()

    def _append(self, record: bytes, action: str) -> tuple[int, int]:
        """Append one frame durably (rotating first if it does not fit); returns the seq of
        the segment it went to and its position there."""
        position = self._position
        if position + len(record) > self._segment_bytes and position > self._segment_start:
            self._start_segment(self._segments[-1].seq + 1)
            position = self._position
        end = position + len(record)
        fd = self._fd
        with self._io_errors(action):
            try:
                if end > self._allocated:
                    chunk = max(end - self._allocated, self._preallocate_bytes)
                    if self._preallocate(fd, self._allocated, chunk):
                        self._allocated += chunk
                    else:
                        self._allocated = end
                written = os.pwrite(fd, record, position)
                while written < len(record):  # short writes are rare on regular files
                    written += os.pwrite(fd, memoryview(record)[written:], position + written)
                self.syncs += 1
                os.fdatasync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, position)  # the next frame goes in their place
                self._allocated = position
                raise
        self._position = end
        return self._segments[-1].seq, position

    def _preallocate(self, fd: int, offset: int, length: int) -> bool:
        if not self._preallocate_bytes:
            return False
        try:
            os.posix_fallocate(fd, offset, length)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            logger.info("node log %s: no preallocation on this file system: %s",
                        self._directory, exc)
            self._preallocate_bytes = 0
            return False
        return True

    def _start_segment(self, seq: int) -> None:
        """Create segment `seq` (header + CHECKPOINT of every live group) and make it active."""
        path = self._directory / segment_file_name(seq)
        temporary = path.with_name(path.name + ".tmp")
        groups = sorted(self._groups.items())
        rows = []
        for key, group in groups:
            with group._view_lock:
                rows.append(fmt.checkpoint_row(key, group._hard_state, group._snapshot.meta,
                                               group._entries[0], group._entries[-1].index))
        head = fmt.FILE_HEADER.pack(fmt.SEGMENT_MAGIC, seq) + fmt.frame(
            fmt.CHECKPOINT, [key for key, _ in groups],
            msgpack.packb((fmt.FORMAT_VERSION, rows)))
        allocated = max(len(head), min(self._preallocate_bytes, self._segment_bytes))
        fd = -1
        renamed = False
        with self._io_errors(f"create segment {path.name}"):
            try:
                fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
                if not self._preallocate(fd, 0, allocated):
                    allocated = len(head)
                os.pwrite(fd, head, 0)
                os.fsync(fd)
                os.rename(temporary, path)
                renamed = True
                _fsync_directory(self._directory)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    (path if renamed else temporary).unlink(missing_ok=True)
                raise
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self._position, self._allocated = fd, len(head), allocated
        self._segment_start = len(head)
        self._segments.append(_Segment(seq, path))
        self._rotated = True

    def _reclaim(self) -> None:
        """Delete the oldest segments no live group needs; rewrite the few live entries that
        keep an old segment (see the module rules). Under `_io_lock`."""
        deleted = False
        for _ in range(len(self._segments)):
            if len(self._segments) <= 1:
                break
            oldest = self._segments[0]
            holders = [(group, *group.live_bytes_in(oldest.seq))
                       for group in self._groups.values()]
            holders = [holder for holder in holders if holder[2] >= 0]
            if holders:
                if len(self._segments) < self._rewrite_after or \
                        sum(size for *_, size in holders) > self._segment_bytes // 2:
                    break
                if not self._rewrite(holders):
                    break
            try:
                oldest.path.unlink(missing_ok=True)
            except OSError as exc:  # harmless: retried after the next compaction
                logger.warning("cannot delete old segment %s: %s", oldest.path, exc)
                break
            del self._segments[0]
            deleted = True
        if deleted:
            try:
                _fsync_directory(self._directory)
            except OSError as exc:
                logger.warning("cannot fsync %s after deleting segments: %s", self._directory,
                               exc)

    def _rewrite(self, holders: list[tuple[GroupStore, int, int, int]]) -> bool:
        ops = []
        try:
            for group, first, last, _ in holders:
                # (entries released from memory are read back from their frames here)
                ops.append((group.key, fmt.REWRITE, first, fmt.rows(group.stored(first, last))))
            seq, position = self._append(
                fmt.frame(fmt.WRITE, sorted(group.key for group, *_ in holders),
                          msgpack.packb(ops)), "rewrite live entries")
        except StorageError as exc:
            logger.warning("node log %s: cannot rewrite live entries: %s", self._directory, exc)
            return False
        for group, first, last, _ in holders:
            fmt.runs_replace(group._runs, seq, first, last)
            group.relocated(first, last, seq, position)
            self.rewritten_entries += last - first + 1
        self._unconfirmed, self._last_write = True, time.monotonic()
        return True

    # -- reading entries back ------------------------------------------------------------------
    def read_frame(self, key: int, seq: int, position: int) -> list[Entry] | None:
        """The entries of group `key`'s BATCH or REWRITE op in the WRITE frame at `position`
        of segment `seq` (its CRCs checked: `Corrupt` if they fail), or None if that segment
        is gone (a rewrite moved the entries and deleted it: look them up again). Lock-free:
        a frame of the log is never changed once written, only its segment deleted."""
        path = self._directory / segment_file_name(seq)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"node log {self._directory}: cannot open {path.name}: "
                               f"{exc}") from exc
        try:
            head = os.pread(fd, fmt.FRAME_HEADER.size, position)
            if len(head) == fmt.FRAME_HEADER.size:
                count, length = fmt.FRAME_HEADER.unpack(head)[3:5]
                head += os.pread(fd, count * fmt.KEY.size + length,
                                 position + fmt.FRAME_HEADER.size)
        except OSError as exc:
            raise StorageError(f"node log {self._directory}: cannot read {path.name}: "
                               f"{exc}") from exc
        finally:
            os.close(fd)
        where = f"segment {path}, frame at offset {position}"
        found = fmt.check_frame(head, 0)
        if found.problem or found.frame_type != fmt.WRITE or key not in found.keys:
            raise Corrupt(f"{where}: {found.problem or 'not a WRITE frame of this group'}")
        try:
            for op in msgpack.unpackb(found.payload, raw=False, use_list=True):
                if op[0] == key and op[1] == fmt.BATCH:
                    return fmt.decode_rows(op[4], op[5])
                if op[0] == key and op[1] == fmt.REWRITE:
                    return fmt.decode_rows(op[2], op[3])
        except DECODE_ERRORS as exc:
            raise Corrupt(f"{where}: malformed frame: {exc}") from exc
        raise Corrupt(f"{where}: no entries of group {key:016x}")

    # -- confirm frames (torn write versus corruption) ----------------------------------------
    def _confirm_loop(self) -> None:
        while True:
            with self._confirm:
                while not self._closed:
                    if not self._unconfirmed:
                        self._confirm.wait()
                        continue
                    remaining = self._last_write + self._confirm_delay - time.monotonic()
                    if remaining <= 0:
                        break
                    self._confirm.wait(remaining)
                if self._closed:
                    return
                seen = self._last_write
            with self._io_lock:
                if self._closed or not self._unconfirmed or self._last_write != seen:
                    continue
                self._write_confirm()

    def _write_confirm(self) -> None:
        """Under `_io_lock`: a CONFIRM frame after the last WRITE (see the module rules)."""
        try:
            self._append(fmt.frame(fmt.CONFIRM, (), b""), "confirm the last frame")
        except StorageError as exc:
            logger.warning("node log %s: %s", self._directory, exc)
            return
        self._unconfirmed = False

    # -- the scrub -----------------------------------------------------------------------------
    def scrub(self, key: int) -> int:
        """Verify every frame of every segment (the active one up to its write position);
        `Corrupt` at the first bad frame that concerns `key` or names no group."""
        with self._io_lock:
            self._check_open()
            segments = [(segment.seq, segment.path) for segment in self._segments]
            active_end = self._position
        verified = 0
        for number, (seq, path) in enumerate(segments):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # deleted meanwhile (compacted away)
            except OSError as exc:
                raise StorageError(f"node log {self._directory}: cannot read {path.name}: "
                                   f"{exc}") from exc
            if number == len(segments) - 1:
                data = data[:active_end]
            for found in fmt.scan_segment(str(path), data, seq, last=False).frames:
                if found.problem and (not found.header_ok or key in found.keys):
                    raise Corrupt(f"segment {path}, frame at offset {found.position}: "
                                  f"{found.problem}")
            verified += len(data)
        return verified

    # -- helpers -------------------------------------------------------------------------------
    @property
    def directory(self) -> Path:
        return self._directory

    def segment_paths(self) -> list[Path]:
        """The segment files in use, oldest first (for tests and tools)."""
        with self._io_lock:
            return [segment.path for segment in self._segments]

    def _check_open(self) -> None:
        if self._closed or self._fd < 0:
            raise StorageError(f"node log {self._directory} is closed")

    @contextlib.contextmanager
    def _io_errors(self, action: str) -> Iterator[None]:
        with self._io_errors_at(self._directory, action):
            yield

    @staticmethod
    @contextlib.contextmanager
    def _io_errors_at(directory: Path, action: str) -> Iterator[None]:
        with io_errors(directory, action):
            yield

    def close(self) -> None:
        """Confirm the last frame, close the log and every group store of it, and release
        the locks; idempotent."""
        with self._io_lock:
            if self._closed:
                return
            if self._unconfirmed and self._fd >= 0:
                self._write_confirm()
            with self._confirm:
                self._closed = True
                self._confirm.notify_all()
            self._release()
            groups = list(self._groups.values())
        for group in groups:  # their writes would fail now: release their directories
            group.close()
        if self._confirmer is not None and self._confirmer is not threading.current_thread():
            self._confirmer.join(timeout=5)

    def _release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> NodeLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NodeLog({str(self._directory)!r})"


__all__ = [
    "DEFAULT_CONFIRM_DELAY",
    "KEY_FILE",
    "GroupStore",
    "NodeLog",
    "holds_group",
    "read_group_key",
    "segment_file_name",
]

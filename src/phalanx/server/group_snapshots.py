"""A replica's snapshots (`RaftGroup`'s part that takes and restores them), issue 15 lever 4.

Rules of this file:
- A snapshot is taken in a background task, in slices of `snapshot_slice_ms` of the event
  loop, while the group keeps applying entries (the state is captured at its start: copy on
  write, kv/snapshot_stream.py); it is written to a file 8 MiB at a time by a worker thread and
  handed to the store mapped in memory, never joined into one buffer while holding the GIL.
- A snapshot is restored (installed) in slices too; the state changes only at its end.
- The policy (`snapshot_due`): enough entries or bytes of log since the last snapshot, and,
  past a floor, log in proportion to the last snapshot's size.
- The log kept behind a snapshot is bounded in entries and in bytes (`_kept_tail_start`:
  it stays in memory); the log after a snapshot a follower is fetching is kept
  (`_snapshot_floor`).
- Freed memory goes back to the system through `mallopt` (`limit_allocator_retention`), not
  `malloc_trim`, which holds the allocator's lock; `trim_heap` only at start-up, before the
  node serves and once its restart's committed entries are applied (`server/node.py`).
- Big files are unlinked (and unmapped) in a worker thread, never on the loop: the kernel frees
  a file's extents in the thread that drops its last link (1.5-2.6 s for 1 GB under load).
- Big files are written and fdatasync-ed in pieces (`_BUILD_WRITE_BYTES`), never left as 1 GB
  of dirty pages that every fsync on the disk then waits behind (docs/snapshots.md).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import mmap
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from phalanx.errors import Compacted, StorageError, Unavailable
from phalanx.raft import ConfState, GroupId, Index, RawNode, ReadyPipeline
from phalanx.raft.progress import ProgressState
from phalanx.server.config import NodeConfig
from phalanx.server.metrics import GroupMetrics
from phalanx.storage import AsyncLogStore
from phalanx.storage.io_errors import io_errors, storage_error

if TYPE_CHECKING:
    from phalanx.placement.shard import ShardMachine

logger = logging.getLogger("phalanx.server.group")


class GroupSnapshots:
    """The snapshot half of `server/group.py:RaftGroup` (a mixin: RaftGroup holds the
    state named below)."""

    group_id: GroupId
    config: NodeConfig
    store: AsyncLogStore
    raw: RawNode
    pipeline: ReadyPipeline
    metrics: GroupMetrics
    machine: Any
    shard: ShardMachine | None
    stopped: bool
    wake: Any
    _snapshotting: bool
    _snapshot_task: asyncio.Task[None] | None
    _log_bytes: int
    _log_bytes_at_snapshot: int
    _last_snapshot_bytes: int
    _released_to: int
    #: The lowest index of this replica's snapshots a follower is fetching (the node's
    #: `SnapshotSource.fetched_floor`), or None when nothing tells.
    fetched_floor: Callable[[int], int | None] | None = None

    @property
    def directory(self) -> Path:
        """The replica's directory (its store's, snapshot files included)."""
        return self.store.store.directory

    def stop_on_storage_failure(self, error: Exception) -> None:
        raise NotImplementedError

    async def _snapshot_now(self) -> None:
        """Wait for the snapshot being written, then take one at the applied index unless
        the last one is already there."""
        running = self._snapshot_task
        if running is not None:
            await asyncio.shield(running)
        if self.raw.applied > self.store.snapshot_meta().index and not self.pipeline.holding:
            self._start_snapshot()
            task = self._snapshot_task
            if task is not None:
                await asyncio.shield(task)

    def snapshot_due(self) -> bool:
        """The snapshot policy (see `NodeConfig.snapshot_every_entries`): enough entries or
        bytes of log since the last snapshot, and, past a floor, log in proportion to its
        size."""
        config = self.config
        entries = self.raw.applied - self.store.snapshot_meta().index
        if entries <= 0:
            return False
        log_bytes = self._log_bytes - self._log_bytes_at_snapshot
        last = self._last_snapshot_bytes
        proportion = (last * config.snapshot_log_percent // 100
                      if last >= config.snapshot_ratio_floor_bytes else 0)
        if log_bytes >= max(config.snapshot_every_bytes, proportion):
            return True
        return entries >= config.snapshot_every_entries and log_bytes >= proportion

    def _maybe_start_snapshot(self) -> None:
        if self._snapshot_task is None and not self.stopped and self.snapshot_due():
            self._start_snapshot()

    def _start_snapshot(self) -> None:
        """Start writing a snapshot of the state at the applied index (in slices of the
        event loop, while entries keep being applied), unless one is being written or the
        store is not ready for it."""
        if self._snapshot_task is not None:
            return
        applied = self.raw.applied
        if applied <= self.store.snapshot_meta().index:
            return  # nothing new (or a newer snapshot was just installed)
        if applied > self.store.last_index():
            return  # entries applied before our own write of them completed: next time
        if self.store.term(Index(applied)) != self.raw.term_at(applied):
            # The applied entry overwrote a stored one (§5.3) whose write has not run yet: a
            # snapshot now would take the old entry's term, and compacting would then drop
            # the overwrite. Next time.
            return
        # The state is captured now, at `applied` (the writer follows later changes: copy
        # on write, kv/snapshot_stream.py); the configuration is the one applied with it.
        frames = (self.shard.snapshot_frames() if self.shard is not None
                  else iter((self.machine.snapshot(),)))
        conf = self.raw.conf
        log_bytes = self._log_bytes
        self._snapshotting = True
        task = asyncio.ensure_future(self._take_snapshot(applied, conf, frames, log_bytes))
        self._snapshot_task = task
        task.add_done_callback(self._snapshot_done)

    def _snapshot_done(self, task: asyncio.Task[None]) -> None:
        self._snapshot_task = None
        self._snapshotting = False
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, StorageError):
            # A full or failing disk (ENOSPC, EIO), met by the snapshot file written here
            # (`_take_snapshot`: through `storage.io_errors`) or by the store: a storage failure
            # of this replica (docs/disk-faults.md), never a snapshot to retry for ever.
            self.stop_on_storage_failure(error)
        elif error is not None:
            logger.error("group %s: snapshot failed: %s: %s", self.group_id,
                         type(error).__name__, error)
        self.wake.set()

    async def _take_snapshot(self, applied: int, conf: ConfState, frames: Iterator[bytes],
                             log_bytes: int) -> None:
        """Write the snapshot's frames in slices of `snapshot_slice_ms` of the loop to a
        file (written by a worker thread, 8 MiB at a time), hand the store that file mapped
        in memory (never one big buffer built while holding the GIL: a 75 MB join stalled
        the loop for 100s of ms), compact, and log what it took."""
        started = time.perf_counter()
        budget = self.config.snapshot_slice_ms / 1000
        path = self.directory / f"building-snapshot-{applied}.tmp"
        # Every file operation of the replica's disk goes through the store's one error
        # mapping (`storage.io_errors`): ENOSPC or EIO here is the same storage failure of
        # this replica as in its log (the disk-full regression of session 7).
        with io_errors(self.directory, f"open the snapshot file {path.name}"):
            file = await asyncio.to_thread(open, path, "w+b")
        pending: list[bytes] = []
        pending_bytes = 0
        slices = 0
        written = False
        try:
            try:
                deadline = time.perf_counter() + budget
                for part in frames:
                    pending.append(part)
                    pending_bytes += len(part)
                    if pending_bytes >= _BUILD_WRITE_BYTES:
                        with io_errors(self.directory, f"write the snapshot file {path.name}"):
                            await asyncio.to_thread(_write_and_sync, file, pending)
                        pending, pending_bytes = [], 0
                        deadline = time.perf_counter() + budget
                    elif time.perf_counter() >= deadline:
                        slices += 1
                        await asyncio.sleep(0)
                        deadline = time.perf_counter() + budget
                    if self.stopped:
                        return
            finally:
                close = getattr(frames, "close", None)
                if close is not None:
                    close()
            with io_errors(self.directory, f"write the snapshot file {path.name}"):
                await asyncio.to_thread(file.writelines, pending)
                pending = []
                encoded = time.perf_counter()
                size = await asyncio.to_thread(_flush_size, file)
                mapped = await asyncio.to_thread(_map, file, size)
            try:
                # The store reads the data as a buffer (its length, CRC32, one write).
                await self.store.create_snapshot(Index(applied), conf, cast(bytes, mapped))
            finally:
                await asyncio.to_thread(mapped.close)
            written = True
        finally:
            try:
                await asyncio.to_thread(file.close)
            except OSError as error:
                # A close that flushes what a full disk refused fails again: the first error,
                # already on its way, is the one reported.
                if written:
                    raise storage_error(self.directory, f"close the snapshot file {path.name}",
                                        error) from error
            finally:
                # Never on the loop: unlinking a 1 GB file frees its extents in the caller
                # (measured 1.5-2.6 s of a stalled loop on every node after a 1 GB snapshot).
                await asyncio.to_thread(path.unlink, missing_ok=True)
        compact_to = min(self._kept_tail_start(applied), self._snapshot_floor())
        if compact_to > self.store.first_index() - 1:
            await self.store.compact(Index(compact_to))
        self._log_bytes_at_snapshot = log_bytes
        self._last_snapshot_bytes = size
        elapsed = time.perf_counter() - started
        self.metrics.snapshot_taken(elapsed)
        logger.info("group %s took a snapshot at index %s (%d bytes) in %.0f ms (%.0f ms "
                    "encoding in %d slices)", self.group_id, applied, size, elapsed * 1e3,
                    (encoded - started) * 1e3, slices + 1)

    def _kept_tail_start(self, applied: int) -> int:
        """Where to compact the log after a snapshot at `applied`: keep at most
        `snapshot_keep_entries` entries behind it and at most `snapshot_keep_bytes` bytes of
        them, whichever keeps fewer (issue 15 lever 7: the kept entries stay in memory; a
        follower further behind is sent the snapshot, dissertation §5.1). On a leader, the
        byte bound never drops entries a follower that is replicating (REPLICATE, recently
        active) still needs: a live follower a little behind gets entries, not a snapshot;
        the entry bound still holds."""
        config = self.config
        compact_to = applied - config.snapshot_keep_entries
        low = max(int(self.store.first_index()), compact_to + 1)
        if low > applied:
            return compact_to
        try:  # (sizes only: entries released from memory are not read back for this)
            kept = self.store.data_sizes(Index(low), Index(applied + 1))
        except (Compacted, Unavailable):
            return compact_to  # a snapshot installed meanwhile: the entry bound only
        by_bytes = compact_to
        size = 0
        for index in range(applied, low - 1, -1):
            size += kept[index - low]
            if size > config.snapshot_keep_bytes:
                by_bytes = index
                break
        if by_bytes > compact_to and self.raw.is_leader:
            for progress in self.raw.raft.progress.values():
                if progress.state is ProgressState.REPLICATE and progress.recent_active:
                    by_bytes = min(by_bytes, progress.match)
        return max(compact_to, by_bytes)

    def _release_log(self) -> None:
        """Entries this replica applied and every live follower holds leave memory: their
        data stays only in the node log's file (`GroupStore.release`; issue 15 lever 7, the
        log tail was ~29 MB of a node at 1M keys). On a leader, a follower that is
        replicating (REPLICATE, recently active) keeps its entries from `match` on in memory:
        it gets them from there; a follower that is down, probing or fetching a snapshot
        does not hold memory back, and if it needs released entries, they are read back
        from the file (the rare path). Cheap: called after each applied Ready and tick."""
        if not self.config.release_applied_log:
            return
        index = self.raw.applied
        if index <= self._released_to:
            return
        if self.raw.is_leader:
            for progress in self.raw.raft.progress.values():
                if progress.state is ProgressState.REPLICATE and progress.recent_active:
                    index = min(index, progress.match)
            if index <= self._released_to:
                return
        self.store.release(Index(index))
        self._released_to = index

    def _snapshot_floor(self) -> int:
        """The lowest snapshot index a follower is installing (fetching) from this leader:
        the log after it is kept, else the follower would need yet another snapshot once it
        installed that one (under steady writes, a big snapshot's fetch could never catch
        up). Unbounded when none is."""
        floor = 1 << 62
        hint = self.fetched_floor(self.group_id) if self.fetched_floor is not None else None
        if hint is not None:
            floor = hint
        if self.raw.is_leader:
            for progress in self.raw.raft.progress.values():
                if progress.state is ProgressState.SNAPSHOT and progress.pending_snapshot:
                    floor = min(floor, int(progress.pending_snapshot))
        return floor

    async def _restore(self, data: bytes) -> None:
        """Restore a snapshot, a frame per slice of `snapshot_slice_ms` of the loop (the
        state changes only at the end, once everything checked), then give memory back."""
        started = time.perf_counter()
        longest = 0.0  # the longest run of the loop without a yield, in seconds
        slices = 1
        steps = getattr(self.machine, "restore_steps", None)
        if steps is None:
            # A machine restored in one step (the placement driver's map: small) gets bytes;
            # a fetched snapshot's data is a view of a mapped file (server/snapshot_transfer.py).
            self.machine.restore(bytes(data))
            longest = time.perf_counter() - started
        else:
            budget = self.config.snapshot_slice_ms / 1000
            resumed = time.perf_counter()
            deadline = resumed + budget
            for _ in steps(data):
                now = time.perf_counter()
                if now >= deadline:
                    longest = max(longest, now - resumed)
                    await asyncio.sleep(0)
                    slices += 1
                    resumed = time.perf_counter()
                    deadline = resumed + budget
            longest = max(longest, time.perf_counter() - resumed)
        self._log_bytes_at_snapshot = self._log_bytes
        self._last_snapshot_bytes = len(data)
        logger.info("group %s installed a snapshot of %d bytes in %.0f ms (%d slices, longest "
                    "%.0f ms)", self.group_id, len(data), (time.perf_counter() - started) * 1e3,
                    slices, longest * 1e3)


#: How many bytes of a snapshot being built are written to its file at a time.
_BUILD_WRITE_BYTES = 8 * 1024 * 1024


def _write_and_sync(file: BinaryIO, parts: list[bytes]) -> None:
    """Write `parts` and fdatasync them: a snapshot being built never piles up as dirty pages
    that every other fsync on the disk then waits for (`storage.sqlite.write_synced`)."""
    file.writelines(parts)
    file.flush()
    os.fdatasync(file.fileno())


def _flush_size(file: BinaryIO) -> int:
    file.flush()
    return file.tell()


def _map(file: BinaryIO, size: int) -> mmap.mmap:
    """The file mapped read-only (never empty: a snapshot has at least its header)."""
    return mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ)


_LIBC: Any = None


def limit_allocator_retention() -> None:
    """Make glibc's malloc give big freed blocks back to the system at once (issue 15 lever 4:
    "malloc_trim after" a snapshot). Calling `malloc_trim(0)` after each snapshot was measured
    at 36-228 ms per call in a node under load, holding the allocator's lock: every malloc of
    the event loop's thread waited, the loop stalled, heartbeats went out late. Instead, blocks
    of 128 KiB and more are always mmap-ed (`M_MMAP_THRESHOLD`, which also stops glibc from
    raising that threshold after a big free: the dynamic threshold is what keeps a snapshot's
    freed buffers in the heap) and the heap's free top is trimmed past 1 MiB
    (`M_TRIM_THRESHOLD`). Nothing where there is no glibc."""
    libc = _glibc()
    if libc:
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024)


def trim_heap() -> bool:
    """Give the heap's free pages back to the system now (`malloc_trim(0)`: glibc releases
    every free page inside the heap, not only its top). For the few moments when a node has
    just freed a lot and is not serving yet: after opening its stores (the node log's replay,
    snapshot restores) and once the entries committed before a restart are applied (issue 15
    lever 7: a node restored from a snapshot kept ~46 MB of freed heap, docs/memory.md). Not
    while serving under load: the call holds the allocator's lock (36-228 ms measured).
    False where there is no glibc (nothing done)."""
    libc = _glibc()
    if not libc:
        return False
    libc.malloc_trim(0)
    return True


def _glibc() -> Any:
    """glibc through ctypes, or False where it cannot be loaded (another libc: no mallopt)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
            _LIBC.malloc_trim.restype = ctypes.c_int
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3



__all__ = ["GroupSnapshots", "limit_allocator_retention", "trim_heap"]

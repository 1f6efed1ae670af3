"""The asyncio face of a durable store: writes on a dedicated thread, reads inline.

Rules of this file:
- Each `AsyncLogStore` owns ONE `ThreadPoolExecutor(max_workers=1)`: every write of the store
  (persist, create_snapshot, compact, close) runs there, in submission order, so the event loop
  never waits for an fsync and writes never race each other.
- Reads (`LogReader`) are synchronous and served from the store's in-memory view; the Raft core
  calls them inline on the loop thread. The store changes that view only after a transaction has
  committed, atomically under its own lock (see `phalanx.storage.sqlite`), so a read on the loop
  never sees a half-applied write and never touches the disk.
- A write that fails raises `StorageError` from the `await`; the store is unchanged by it.
- Cancelling the awaiting task does not cancel a write already running on the thread: the write
  either commits or fails as a whole, and the view follows the database.
- A store with a `confirm()` (the WAL) gets one `confirm_delay` seconds after its last write,
  on the writer thread, if nothing was written meanwhile: the CONFIRM record that lets a
  corrupt last record be told from a torn one (`storage/wal.py`). A CONFIRM that fails (ENOSPC,
  EIO) has no caller to raise to: it goes to `on_failure` (the replica stops as for any failed
  write, `server/group.py`), or is logged when nobody set one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from phalanx.errors import StorageError
from phalanx.raft.types import ConfState, Entry, HardState, Index, Snapshot, SnapshotMeta, Term

_Result = TypeVar("_Result")

logger = logging.getLogger(__name__)


class DurableLogStore(Protocol):
    """What `AsyncLogStore` needs of a synchronous store (`SqliteLogStore`, `WalLogStore`)."""

    @property
    def directory(self) -> Path: ...

    def persist(self, entries: Sequence[Entry] = (), hard_state: HardState | None = None,
                snapshot: Snapshot | None = None) -> None: ...

    def create_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot: ...

    def compact(self, index: Index) -> None: ...

    def close(self) -> None: ...

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, low: Index, high: Index,
                max_size_bytes: int | None = None) -> list[Entry]: ...

    def term(self, index: Index) -> Term: ...

    def first_index(self) -> Index: ...

    def last_index(self) -> Index: ...

    def snapshot(self) -> Snapshot: ...

    def snapshot_meta(self) -> SnapshotMeta: ...


class AsyncLogStore:
    """Wraps a durable store: `await persist(...)` off the loop, `LogReader` calls inline."""

    def __init__(self, store: DurableLogStore, confirm_delay: float = 0.02) -> None:
        self._store = store
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"phalanx-store-{store.directory.name}"
        )
        self._closed = False
        self._confirm_delay = confirm_delay
        self._writes = 0  # writes started (the idle check of `_confirm_later`)
        self._confirm_timer: asyncio.TimerHandle | None = None
        #: Told of a write that failed with nobody awaiting it (a CONFIRM): the disk failed.
        self.on_failure: Callable[[StorageError], None] | None = None

    @property
    def store(self) -> DurableLogStore:
        """The synchronous store (a `LogReader` for the Raft core)."""
        return self._store

    async def _run(self, function: functools.partial[_Result]) -> _Result:
        if self._closed:
            raise StorageError(f"store {self._store.directory} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function)

    # -- writes (on the writer thread) ---------------------------------------------------------
    async def persist(
        self,
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist one Ready (snapshot, entries, hard state) in one transaction, one fsync."""
        self._writes += 1
        try:
            await self._run(functools.partial(self._store.persist, entries, hard_state,
                                              snapshot))
        finally:
            self._confirm_later()

    def _confirm_later(self) -> None:
        confirm = getattr(self._store, "confirm", None)
        if confirm is None or self._closed or self._confirm_delay <= 0:
            return
        if self._confirm_timer is not None:
            self._confirm_timer.cancel()
        writes = self._writes
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._confirm_timer = None
            if self._closed or self._writes != writes:
                return  # closed, or written since: that write's own timer confirms it
            future = loop.run_in_executor(self._executor, confirm)
            future.add_done_callback(self._confirm_done)

        self._confirm_timer = loop.call_later(self._confirm_delay, fire)

    def _confirm_done(self, future: asyncio.Future[object]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is None:
            return
        if not isinstance(error, StorageError):
            error = StorageError(f"store {self._store.directory}: cannot confirm the last "
                                 f"log record: {error}")
        if self.on_failure is not None:
            self.on_failure(error)
        else:
            logger.warning("cannot confirm the last log record: %s", error)

    async def create_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a state-machine snapshot taken at applied index `index`."""
        return await self._run(
            functools.partial(self._store.create_snapshot, index, conf_state, data)
        )

    async def compact(self, index: Index) -> None:
        """Discard entries up to and including `index` (covered by a snapshot)."""
        await self._run(functools.partial(self._store.compact, index))

    async def scrub(self) -> int:
        """Verify what the store holds on disk (`WalLogStore.scrub`), on the writer thread so
        that no write runs meanwhile; 0 for a store that cannot scrub (SQLite)."""
        scrub = getattr(self._store, "scrub", None)
        if scrub is None:
            return 0
        verified: int = await self._run(functools.partial(scrub))
        return verified

    async def drop(self) -> None:
        """The replica is deleted for good: a store inside the node log forgets it (a DROP
        op, so its entries stop holding segments); then as `close`. The caller deletes the
        directory."""
        drop = getattr(self._store, "drop", None)
        if drop is not None and not self._closed:
            try:
                await self._run(functools.partial(drop))
            except StorageError as error:  # the directory goes anyway: the key is garbage
                logger.warning("store %s: cannot record the drop: %s", self._store.directory,
                               error)
        await self.close()

    async def close(self) -> None:
        """Finish queued writes, close the store and stop the writer thread; idempotent."""
        if self._closed:
            return
        if self._confirm_timer is not None:
            self._confirm_timer.cancel()
            self._confirm_timer = None
        await self._run(functools.partial(self._store.close))
        self._closed = True
        self._executor.shutdown(wait=False)

    # -- reads (inline, from memory) -----------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._store.initial_state()

    def entries(self, low: Index, high: Index, max_size_bytes: int | None = None) -> list[Entry]:
        return self._store.entries(low, high, max_size_bytes)

    def release(self, index: Index) -> int:
        """Let durable entries up to `index` leave memory, where the store can keep them on
        disk only (`GroupStore.release`); 0 (nothing done) for the other stores. Cheap: on
        the loop."""
        release = getattr(self._store, "release", None)
        return 0 if release is None else int(release(index))

    def released(self) -> tuple[int, int] | None:
        """(the last entry released from memory, entries read back from the file since
        open), or None for a store that keeps every entry in memory."""
        released_index = getattr(self._store, "released_index", None)
        if released_index is None:
            return None
        return int(released_index()), int(getattr(self._store, "entries_read_back", 0))

    def data_sizes(self, low: Index, high: Index) -> list[int]:
        """The data sizes of entries `low..high-1`, without reading released ones back."""
        sizes = getattr(self._store, "data_sizes", None)
        if sizes is None:
            return [len(entry.data) for entry in self._store.entries(low, high)]
        return list(sizes(low, high))

    def term(self, index: Index) -> Term:
        return self._store.term(index)

    def first_index(self) -> Index:
        return self._store.first_index()

    def last_index(self) -> Index:
        return self._store.last_index()

    def snapshot(self) -> Snapshot:
        """The latest snapshot with its data (read from its file: use `snapshot_meta` when
        the metadata is enough)."""
        return self._store.snapshot()

    def snapshot_meta(self) -> SnapshotMeta:
        return self._store.snapshot_meta()

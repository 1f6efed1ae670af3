"""Snapshots of any size between replicas: the follower pulls the leader's snapshot file in
chunks (issue 16 §3; Raft paper §7 sends a snapshot in chunks with an offset, Figure 13).

How it goes:
- The Raft core sends InstallSnapshot with the snapshot's metadata only: the storage it reads
  is wrapped in `MetaOnlySnapshots`, so the core never reads the snapshot file (a 1 GB file
  read on the event loop, then one 1 GB frame the transport refuses, was the old way). The
  leader's group pins the file it offered (`SnapshotSource.pin`): an open descriptor keeps it
  readable even after a newer snapshot replaces it, for as long as a follower fetches it.
- The follower's group hands such an InstallSnapshot to `SnapshotFetcher.offer`. The fetcher
  pulls the file over a peer link (`PHALANX.SNAPSHOT`, a signed internal command on the
  leader's RESP port, `server/front/cluster_commands.py`), one chunk of
  `snapshot_chunk_bytes` in flight (flow control: the next chunk is asked for once the last
  is on disk), each chunk with its CRC32, appended to a spill file next to the group's store
  (memory: one chunk). A dropped connection (or a restart of the fetch) resumes at the bytes
  already on disk. The whole file is then checked (its header's term, index, length and
  CRC32, as `storage.sqlite.read_snapshot_file` does) and only then does the follower's core see the
  snapshot: the same InstallSnapshot, now with its data, as if the leader had sent it whole.
- The leader's core waits for the follower's answer to the snapshot as before; if the fetch
  fails (the leader changed, the file is gone), the core probes again after its snapshot
  timeout and offers the snapshot it then has.

Rules of this file:
- Nothing here blocks the event loop on the disk: reads and writes of chunks, the final
  check, and every unlink or last close of a snapshot file (the kernel frees a file's extents
  in the thread that drops its last link: seconds for 1 GB) run in a worker thread.
- A chunk whose CRC32 does not match is asked for again (at most `_MAX_BAD_CHUNKS` times in a
  row), never written; the spill file is deleted once the snapshot is handed over or given up.
- The spill file is the replica's disk: every operation on it goes through the stores' one
  error mapping (`storage.io_errors`), and a `StorageError` (ENOSPC, EIO) stops the replica
  (`stop_on_storage_failure`: reported, rebuilt, docs/disk-faults.md), never a fetch logged
  and offered again for ever while the replica stays a silent, lagging voter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from phalanx.errors import (
    Corrupt,
    LeaderUnreachable,
    PeerProtocolError,
    PhalanxError,
    StorageError,
)
from phalanx.raft import Index, InstallSnapshot, Snapshot
from phalanx.raft.storage import LogReader
from phalanx.raft.types import ConfState, Entry, HardState, SnapshotMeta, Term
from phalanx.resp import ErrorReply
from phalanx.server.config import NodeConfig
from phalanx.server.peer_link import LeaderLink, internal_signature
from phalanx.storage.io_errors import io_errors
from phalanx.storage.sqlite import (
    SNAPSHOT_HEADER,
    SNAPSHOT_MAGIC,
    SYNC_EVERY_BYTES,
    snapshot_file_name,
)


class FetchingGroup(Protocol):
    """What the fetcher needs of a replica (`server/group.py:RaftGroup`)."""

    stopped: bool

    @property
    def group_id(self) -> int: ...

    @property
    def directory(self) -> Path: ...

    @property
    def leader(self) -> str: ...

    def step(self, message: InstallSnapshot) -> None: ...

    def stop_on_storage_failure(self, error: Exception) -> None: ...

logger = logging.getLogger(__name__)

#: The internal command that reads a chunk of a snapshot file.
SNAPSHOT_COMMAND = b"PHALANX.SNAPSHOT"
#: The largest chunk a node serves (a client of the command asks for less).
MAX_CHUNK_BYTES = 16 * 1024 * 1024
#: How long a pinned snapshot file stays open after its last read.
_PIN_SECONDS = 120.0
_MAX_BAD_CHUNKS = 5
_SPILL_PREFIX = "fetching-snapshot-"  # never "snapshot-*": the stores sweep those


class NoSuchSnapshot(PhalanxError):
    """The asked snapshot file is not (or no longer) on this node."""


class MetaOnlySnapshots:
    """The durable store as the Raft core reads it, except that `snapshot()` returns the
    metadata only: the core puts it in an InstallSnapshot and the follower pulls the data
    (see the module docstring). Everything else is the store's."""

    def __init__(self, store: LogReader) -> None:
        self._store = store

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._store.initial_state()

    def entries(self, low: Index, high: Index, max_size_bytes: int | None = None
                ) -> list[Entry]:
        return self._store.entries(low, high, max_size_bytes)

    def term(self, index: Index) -> Term:
        return self._store.term(index)

    def first_index(self) -> Index:
        return self._store.first_index()

    def last_index(self) -> Index:
        return self._store.last_index()

    def snapshot(self) -> Snapshot:
        meta = getattr(self._store, "snapshot_meta", None)
        if meta is not None:
            return Snapshot(meta=meta())
        return Snapshot(meta=self._store.snapshot().meta)


@dataclass(slots=True)
class _Pinned:
    fd: int
    size: int
    used: float
    readers: int = 0
    #: When a follower last read a chunk of it (0: never).
    read_at: float = 0.0


class SnapshotSource:
    """The leader's side: serves chunks of its groups' snapshot files (`read`), from an open
    descriptor pinned when the snapshot is offered."""

    def __init__(self, directory_of: Callable[[int], Path | None]) -> None:
        self._directory_of = directory_of
        self._pinned: dict[tuple[int, int, int], _Pinned] = {}

    def pin(self, group_id: int, term: int, index: int) -> None:
        """Open the snapshot file (term, index) of a group now, so it stays readable."""
        with contextlib.suppress(NoSuchSnapshot, OSError):
            self._file(group_id, term, index)
        self.sweep()

    def _file(self, group_id: int, term: int, index: int) -> _Pinned:
        key = (group_id, term, index)
        pinned = self._pinned.get(key)
        if pinned is None:
            directory = self._directory_of(group_id)
            if directory is None:
                raise NoSuchSnapshot(f"no replica of group {group_id} here")
            path = directory / snapshot_file_name(Term(term), Index(index))
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError as error:
                raise NoSuchSnapshot(f"no snapshot {term}/{index} of group {group_id} "
                                     f"here") from error
            pinned = _Pinned(fd, os.fstat(fd).st_size, time.monotonic())
            self._pinned[key] = pinned
        pinned.used = time.monotonic()
        return pinned

    async def read(self, group_id: int, term: int, index: int, offset: int,
                   length: int) -> tuple[int, bytes]:
        """(file size, the bytes at [offset, offset + length)) of a snapshot file."""
        if offset < 0 or not 0 < length <= MAX_CHUNK_BYTES:
            raise NoSuchSnapshot(f"bad chunk request: offset {offset}, length {length}")
        pinned = self._file(group_id, term, index)
        pinned.readers += 1
        try:
            chunk = await asyncio.to_thread(os.pread, pinned.fd, length, offset)
        finally:
            pinned.readers -= 1
            pinned.used = pinned.read_at = time.monotonic()
        return pinned.size, chunk

    def fetched_floor(self, group_id: int, within: float = 30.0) -> int | None:
        """The lowest index of this group's snapshots a follower read a chunk of in the last
        `within` seconds (its leader keeps the log after it: the follower needs it once the
        snapshot is in), or None."""
        horizon = time.monotonic() - within
        indexes = [index for (group, _term, index), pinned in self._pinned.items()
                   if group == group_id and pinned.read_at >= horizon]
        return min(indexes) if indexes else None

    def sweep(self, idle: float = _PIN_SECONDS) -> None:
        """Close the files nobody read for `idle` seconds."""
        horizon = time.monotonic() - idle
        for key, pinned in list(self._pinned.items()):
            if pinned.used < horizon and not pinned.readers:
                del self._pinned[key]
                _close_off_loop(pinned.fd)

    def close(self) -> None:
        self.sweep(idle=-1.0)


def chunk_request(secret: str, group_id: int, term: int, index: int, offset: int,
                  length: int) -> list[bytes]:
    """The PHALANX.SNAPSHOT command for one chunk, signed under the cluster secret."""
    payload = f"{group_id} {term} {index} {offset} {length}".encode()
    arguments = [SNAPSHOT_COMMAND, payload]
    if secret:
        arguments.append(internal_signature(secret, payload))
    return arguments


def parse_chunk_request(payload: bytes) -> tuple[int, int, int, int, int]:
    """(group, term, index, offset, length) of a PHALANX.SNAPSHOT payload; ValueError if bad."""
    fields = payload.split()
    if len(fields) != 5:
        raise ValueError("PHALANX.SNAPSHOT takes 'group term index offset length'")
    group_id, term, index, offset, length = (int(item) for item in fields)
    return group_id, term, index, offset, length


@dataclass(slots=True)
class _Fetch:
    source: str
    term: int
    index: int
    task: asyncio.Task[None]
    started: float = field(default_factory=time.monotonic)


class SnapshotFetcher:
    """The follower's side: pulls offered snapshots, one fetch per group at a time."""

    def __init__(self, config: NodeConfig, resolve: Callable[[str], tuple[str, int] | None],
                 tls: ssl.SSLContext | None) -> None:
        self._config = config
        self._resolve = resolve
        self._tls = tls
        self._fetches: dict[int, _Fetch] = {}
        #: Finished fetches, for tests and /status: (group, index, bytes, seconds, resumes).
        self.finished: list[tuple[int, int, int, float, int]] = []

    def offer(self, group: FetchingGroup, message: InstallSnapshot) -> None:
        """The leader offers its snapshot (metadata only): fetch it unless already doing so
        (the leader re-offers while the fetch runs: ignored)."""
        current = self._fetches.get(group.group_id)
        if current is not None and not current.task.done():
            # Even a newer snapshot does not interrupt a fetch: the leader keeps the log
            # after the one being fetched (`SnapshotSource.fetched_floor`), and a big fetch
            # restarted at every newer snapshot might never end. A fetch whose leader changed
            # gives up by itself.
            return
        meta = message.snapshot.meta
        task = asyncio.ensure_future(self._fetch_or_stop(group, message))
        self._fetches[group.group_id] = _Fetch(message.source, meta.term, meta.index, task)
        task.add_done_callback(_log_failure)

    def fetching(self, group_id: int) -> bool:
        current = self._fetches.get(group_id)
        return current is not None and not current.task.done()

    async def close(self) -> None:
        for fetch in self._fetches.values():
            fetch.task.cancel()
        for fetch in self._fetches.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fetch.task
        self._fetches.clear()

    async def _fetch_or_stop(self, group: FetchingGroup, message: InstallSnapshot) -> None:
        """Fetch; a failure of the replica's own disk (the spill file) stops the replica."""
        try:
            await self._fetch(group, message)
        except StorageError as error:
            logger.error("group %s: snapshot fetch from %s: %s", group.group_id,
                         message.source, error)
            group.stop_on_storage_failure(error)

    async def _fetch(self, group: FetchingGroup, message: InstallSnapshot) -> None:
        meta: SnapshotMeta = message.snapshot.meta
        label = f"group {group.group_id}"
        directory = group.directory
        path = directory / f"{_SPILL_PREFIX}{meta.term}-{meta.index}.part"

        def prepare() -> int:  # in a thread: unlinking a stale 1 GB spill file takes seconds
            with io_errors(directory, f"prepare the snapshot spill file {path.name}"):
                _remove_stale_spills(directory, path)
                return path.stat().st_size if path.exists() else 0

        offset = await asyncio.to_thread(prepare)
        started = time.monotonic()
        chunk_bytes = min(self._config.snapshot_chunk_bytes, MAX_CHUNK_BYTES)
        total: int | None = None
        resumes = 0
        bad_chunks = 0
        unsynced = 0  # bytes written to the spill file since its last fdatasync
        link: LeaderLink | None = None
        connection: object = None  # the link's connection the last chunk came on
        backoff = 0.05
        logger.info("%s: fetching snapshot at index %s (term %s) from %s%s", label,
                    meta.index, meta.term, message.source,
                    f", resuming at byte {offset}" if offset else "")
        spill = f"write the snapshot spill file {path.name}"
        with io_errors(directory, spill):
            file = await asyncio.to_thread(open, path, "ab")
        try:
            while total is None or offset < total:
                if group.stopped or (group.leader and group.leader != message.source):
                    logger.info("%s: snapshot fetch from %s abandoned (leader now %s)", label,
                                message.source, group.leader or "unknown")
                    return
                try:
                    if link is None:
                        address = self._resolve(message.source)
                        if address is None:
                            raise LeaderUnreachable(f"no address for {message.source}")
                        link = LeaderLink(message.source, address[0], address[1],
                                          self._config.request_timeout_ms / 1000,
                                          self._config.requirepass, self._tls)
                    reply = await link.call(chunk_request(
                        self._config.cluster_secret, group.group_id, meta.term, meta.index,
                        offset, chunk_bytes))
                    current = link.connection
                    if connection is not None and current is not connection:
                        # The link found its connection dead (closed while idle between
                        # chunks) and dialled again before asking: resumed at `offset`.
                        resumes += 1
                        logger.warning("%s: snapshot fetch from %s: the connection broke at "
                                       "byte %d; resumed there on a new one", label,
                                       message.source, offset)
                    connection = current
                except (OSError, TimeoutError, LeaderUnreachable, PeerProtocolError) as error:
                    connection = None
                    if link is not None:
                        link.close()
                        link = None
                    resumes += 1
                    logger.warning("%s: snapshot fetch from %s: the connection broke at byte "
                                   "%d (%s); resuming there", label, message.source, offset,
                                   error)
                    await asyncio.sleep(backoff)
                    backoff = min(2.0, backoff * 2)
                    continue
                if isinstance(reply, ErrorReply):
                    logger.warning("%s: snapshot fetch from %s refused: %s", label,
                                   message.source, reply)
                    return
                size, chunk = _check_chunk(reply)
                if size is None:
                    bad_chunks += 1
                    if bad_chunks > _MAX_BAD_CHUNKS:
                        logger.error("%s: %d corrupt snapshot chunks in a row from %s; "
                                     "giving up", label, bad_chunks, message.source)
                        return
                    continue
                bad_chunks = 0
                backoff = 0.05
                if total is not None and size != total:
                    logger.warning("%s: the snapshot file at %s changed size; giving up",
                                   label, message.source)
                    return
                total = size
                if not chunk and offset < total:
                    logger.warning("%s: empty chunk at byte %d of %d", label, offset, total)
                    return
                unsynced += len(chunk)
                sync = unsynced >= SYNC_EVERY_BYTES
                if sync:
                    unsynced = 0
                with io_errors(directory, spill):
                    await asyncio.to_thread(_write_chunk, file, chunk, sync)
                offset += len(chunk)
            with io_errors(directory, spill):
                await asyncio.to_thread(_flush_and_close, file)
            with io_errors(directory, f"read the snapshot spill file {path.name}"):
                data = await asyncio.to_thread(_read_whole, path, meta)
        finally:
            if link is not None:
                link.close()
            try:
                if not file.closed:
                    await asyncio.to_thread(file.close)
            except OSError:
                # Only after a failure (else `_flush_and_close` closed it): a close that
                # flushes what a full disk refused fails again; the first error is reported.
                pass
            finally:
                if total is not None and offset >= total:
                    # done: a whole file that failed its check must not be resumed from (in a
                    # thread: unlinking a 1 GB file frees its extents in the caller, seconds)
                    await asyncio.to_thread(path.unlink, missing_ok=True)
        elapsed = time.monotonic() - started
        self.finished.append((group.group_id, meta.index, len(data), elapsed, resumes))
        logger.info("%s: fetched snapshot at index %s from %s: %d bytes in %.1f s "
                    "(%d resumes)", label, meta.index, message.source, len(data), elapsed,
                    resumes)
        group.step(InstallSnapshot(source=message.source, target=message.target,
                                   term=message.term, snapshot=Snapshot(meta=meta, data=data)))


def _check_chunk(reply: object) -> tuple[int | None, bytes]:
    """(file size, chunk) of a PHALANX.SNAPSHOT reply, or (None, b"") when its CRC32 or its
    shape is wrong."""
    if not isinstance(reply, list) or len(reply) != 3:
        return None, b""
    size, checksum, chunk = reply
    if not isinstance(size, int) or not isinstance(checksum, int) \
            or not isinstance(chunk, bytes) or zlib.crc32(chunk) != checksum:
        return None, b""
    return size, chunk


def _read_whole(path: Path, meta: SnapshotMeta) -> bytes:
    """The payload of a fetched snapshot file, checked as the store checks its own
    (`storage.sqlite.read_snapshot_file`: magic, term, index, length, CRC32), read straight
    into one bytes object (no copy of the payload while holding the GIL)."""
    with open(path, "rb") as file:
        header = file.read(SNAPSHOT_HEADER.size)
        if len(header) != SNAPSHOT_HEADER.size:
            raise Corrupt(f"fetched snapshot {path} is truncated")
        magic, term, index, length, checksum = SNAPSHOT_HEADER.unpack(header)
        if magic != SNAPSHOT_MAGIC or (term, index) != (meta.term, meta.index):
            raise Corrupt(f"fetched snapshot {path} is not snapshot {meta.term}/{meta.index}")
        payload = file.read(length + 1)
    if len(payload) != length or zlib.crc32(payload) != checksum:
        raise Corrupt(f"fetched snapshot {path} fails its length or CRC32 check")
    return payload


def _write_chunk(file: BinaryIO, chunk: bytes, sync: bool) -> None:
    """Append a chunk to the spill file; with `sync`, fdatasync what is written so far (every
    `SYNC_EVERY_BYTES`: a 1 GB fetch never piles up dirty pages that every other fsync on the
    disk then waits behind, `storage.sqlite.write_synced`)."""
    file.write(chunk)
    if sync:
        file.flush()
        os.fdatasync(file.fileno())


def _remove_stale_spills(directory: Path, keep: Path) -> None:
    for stale in directory.glob(f"{_SPILL_PREFIX}*"):
        if stale != keep:
            stale.unlink(missing_ok=True)


def _close_off_loop(fd: int) -> None:
    """Close a pinned snapshot file in a worker thread when a loop runs: if a newer snapshot
    replaced (unlinked) it, this close is its last link and the kernel frees its extents in
    the closing thread (seconds for 1 GB)."""
    def close() -> None:
        with contextlib.suppress(OSError):
            os.close(fd)

    try:
        asyncio.get_running_loop().run_in_executor(None, close)
    except RuntimeError:  # no running loop (shutdown): close here
        close()


def _flush_and_close(file: object) -> None:
    file.flush()  # type: ignore[attr-defined]
    os.fsync(file.fileno())  # type: ignore[attr-defined]
    file.close()  # type: ignore[attr-defined]


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        logger.error("snapshot fetch failed: %s: %s", type(error).__name__, error)


__all__ = ["MAX_CHUNK_BYTES", "SNAPSHOT_COMMAND", "MetaOnlySnapshots", "NoSuchSnapshot",
           "SnapshotFetcher", "SnapshotSource", "chunk_request", "parse_chunk_request"]

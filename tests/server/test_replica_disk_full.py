"""A replica's files OUTSIDE its log store on a real full disk (issue 16 §4; the disk-full
chaos regression of session 7).

Since snapshots are built into a file next to the store (`server/group_snapshots.py`) and a
follower fetches its leader's snapshot into a spill file (`server/snapshot_transfer.py`), a
full disk may be met there first. Every such file goes through the stores' one error mapping
(`storage/io_errors.py`): ENOSPC is a storage failure of that replica, worded "disk full",
which stops it (reported and rebuilt elsewhere: `server/consistency.py:disk_failed`), never
an error logged and retried for ever while the replica stays a silent, lagging voter.

The disk is a real tmpfs filled by a ballast file until the kernel says ENOSPC: needs root
(CI runs as root; elsewhere skipped).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phalanx.errors import StorageError
from phalanx.raft import ConfState, Entry, EntryType, HardState, Index, NodeId, Term
from phalanx.raft.messages import InstallSnapshot
from phalanx.raft.types import Snapshot, SnapshotMeta
from phalanx.resp import RespParser, encode
from phalanx.resp._types import NEED_DATA
from phalanx.server import group as group_module
from phalanx.server.config import NodeConfig, PeerConfig
from phalanx.server.consistency import disk_failed
from phalanx.server.group import RaftGroup
from phalanx.server.metrics import NodeMetrics
from phalanx.server.snapshot_transfer import (
    SnapshotFetcher,
    SnapshotSource,
    parse_chunk_request,
)
from phalanx.storage import AsyncLogStore, WalLogStore, open_log_store
from phalanx.storage.io_errors import io_errors, storage_error

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs (unmounted afterwards, whatever happens)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mount = tmp_path / "disk"
    mount.mkdir()
    completed = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                               capture_output=True, text=True, timeout=30, check=False)
    if completed.returncode != 0:
        pytest.skip(f"this kernel does not let the test mount a tmpfs: {completed.stderr}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30,
                       check=False)


def _fill(directory: Path) -> None:
    """Write a ballast file until the kernel refuses (ENOSPC): 0 bytes left."""
    block = b"\xa5" * (64 << 10)
    with open(directory / "ballast.fill", "ab", buffering=0) as ballast:
        try:
            for _ in range(1 << 14):  # bounded: 1 GiB, far past the 4 MiB disk
                if not ballast.write(block):
                    break
        except OSError as error:
            assert error.errno == 28, error
    assert shutil.disk_usage(directory).free == 0


def _config(tmp_path: Path) -> NodeConfig:
    peers = tuple(PeerConfig(id=n, peer=f"127.0.0.1:{1 + i}", resp=f"127.0.0.1:{11 + i}")
                  for i, n in enumerate(("n1", "n2", "n3")))
    return NodeConfig(id="n1", data_dir=str(tmp_path), peers=peers)


def test_the_one_mapping_words_a_full_disk_as_the_rebuild_expects(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"store .*: cannot write x: .*No space.*disk full"), \
            io_errors(tmp_path, "write x"):
        raise OSError(28, "No space left on device")
    error = storage_error(tmp_path, "read y", OSError(5, "Input/output error"))
    assert "disk full" not in str(error) and disk_failed(str(error))
    with pytest.raises(ValueError), io_errors(tmp_path, "anything"):  # OS errors only
        raise ValueError("not a disk error")


class _FetchingGroup:
    """The follower's replica as the fetcher sees it (`FetchingGroup`), its directory on the
    small disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.group_id = 1
        self.leader = "n1"
        self.stopped = False
        self.stopped_by: Exception | None = None
        self.installed: list[InstallSnapshot] = []

    def step(self, message: InstallSnapshot) -> None:
        self.installed.append(message)

    def stop_on_storage_failure(self, error: Exception) -> None:
        self.stopped = True
        self.stopped_by = error


async def _serve_chunks(source: SnapshotSource) -> tuple[asyncio.AbstractServer, int]:
    """A leader's RESP port as far as a snapshot fetch goes: CLIENT SETNAME, then
    PHALANX.SNAPSHOT answered from a real `SnapshotSource` (size, CRC32, chunk)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = RespParser()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.next_command()) is not NEED_DATA:
                    assert isinstance(command, list)
                    if command[0].upper() == b"CLIENT":
                        writer.write(encode(b"OK", 2))
                        continue
                    group, term, index, offset, length = parse_chunk_request(command[1])
                    size, chunk = await source.read(group, term, index, offset, length)
                    writer.write(encode([size, zlib.crc32(chunk), chunk], 2))
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_snapshot_fetched_onto_a_full_disk_stops_the_replica(tmp_path: Path,
                                                              small_disk: Path) -> None:
    """Proves: a follower whose disk is full when it must fetch its leader's snapshot stops
    that replica with a storage failure worded "disk full" (so it is rebuilt on another
    node), and the fetch does not go on; with room on the disk the same fetch installs."""
    leader_dir = tmp_path / "leader"
    store = WalLogStore(leader_dir, ConfState(voters=(NodeId("n1"),)))
    try:
        payload = os.urandom(600_000)  # 3 chunks of 256 KiB; never compressible
        store.persist([Entry(Term(1), Index(1), EntryType.NORMAL, b"x")],
                      HardState(Term(1), NodeId("n1"), Index(1)))
        snapshot = store.create_snapshot(Index(1), ConfState(voters=(NodeId("n1"),)), payload)
    finally:
        store.close()
    meta: SnapshotMeta = snapshot.meta
    config = dataclasses.replace(_config(tmp_path), snapshot_chunk_bytes=256 * 1024)

    async def fetch(directory: Path) -> _FetchingGroup:
        source = SnapshotSource(lambda group_id: leader_dir)
        server, port = await _serve_chunks(source)
        fetcher = SnapshotFetcher(config, lambda node: ("127.0.0.1", port), None)
        group = _FetchingGroup(directory)
        try:
            fetcher.offer(group, InstallSnapshot(source=NodeId("n1"), target=NodeId("n2"),
                                                 term=Term(1), snapshot=Snapshot(meta=meta)))
            for _ in range(600):  # bounded: 60 s
                if not fetcher.fetching(1):
                    break
                await asyncio.sleep(0.1)
            assert not fetcher.fetching(1), "the fetch neither ended nor stopped the replica"
        finally:
            await fetcher.close()
            server.close()
            await server.wait_closed()
            source.close()
        return group

    full = small_disk / "groups" / "1"
    full.mkdir(parents=True)
    _fill(small_disk)
    group = asyncio.run(fetch(full))
    assert group.stopped, "the replica kept running on a disk it cannot write"
    assert isinstance(group.stopped_by, StorageError)
    why = str(group.stopped_by)
    assert "disk full" in why and "spill file" in why and disk_failed(why), why
    assert not group.installed

    (small_disk / "ballast.fill").unlink()  # room again: the same fetch succeeds
    group = asyncio.run(fetch(full))
    assert not group.stopped, group.stopped_by
    assert len(group.installed) == 1 and group.installed[0].snapshot.data == payload
    assert not list(full.glob("fetching-snapshot-*")), "the spill file was left behind"


def test_a_snapshot_built_on_a_full_disk_stops_the_replica(tmp_path: Path,
                                                          small_disk: Path) -> None:
    """Proves: a replica that builds a snapshot (its file next to the store) on a full disk
    stops with a storage failure worded "disk full" (BGSAVE's caller sees the error too),
    and answers nothing more; the build file is not left behind."""
    directory = small_disk / "groups" / "1"
    conf = ConfState(voters=(NodeId("n1"),))
    store = AsyncLogStore(open_log_store(directory, conf, "wal"))
    group = RaftGroup(group_module.GroupId(1), _config(tmp_path), store, lambda messages: None,
                      NodeMetrics("n1", process_metrics=False).group("1"))

    async def scenario() -> None:
        task = asyncio.get_running_loop().create_task(group.run())
        try:
            group.raw.campaign()
            group.wake.set()
            for _ in range(600):  # bounded: 60 s
                if group.is_leader():
                    break
                await asyncio.sleep(0.1)
            assert group.is_leader()
            for i in range(20):
                await asyncio.wait_for(group.propose_command(b"SET", (b"k%d" % i, b"v" * 500)),
                                       30)
            _fill(small_disk)
            with pytest.raises(StorageError, match="disk full"):
                await asyncio.wait_for(group.save_snapshot(), 30)
            assert group.stopped and group.fatal_error is not None
            assert "disk full" in group.fatal_error and disk_failed(group.fatal_error)
            assert "cannot write the snapshot file" in group.fatal_error, group.fatal_error
            assert not list(directory.glob("building-snapshot-*"))
        finally:
            await group.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await store.close()

    asyncio.run(scenario())


def test_a_confirm_that_fails_stops_the_replica(tmp_path: Path) -> None:
    """Proves: the CONFIRM record written after an idle period has no caller to raise to: a
    failure there (the disk-fault injection's EIO, as the kernel's would be) goes to
    `on_failure`, which a replica sets to stop itself."""
    from phalanx.server.disk_faults import DiskFaults, FaultyLogStore

    faults = DiskFaults()
    inner = WalLogStore(tmp_path / "1", ConfState(voters=(NodeId("n1"),)))
    store = AsyncLogStore(FaultyLogStore(inner, faults, 1), confirm_delay=0.01)
    failures: list[Any] = []

    async def scenario() -> None:
        store.on_failure = failures.append
        await store.persist([Entry(Term(1), Index(1), EntryType.NORMAL, b"x")],
                            HardState(Term(1), NodeId("n1"), Index(1)))
        faults.arm({"shard": 1, "error": "EIO", "reads": False})
        # No write follows: only the CONFIRM, on the writer thread, meets the failed disk.
        for _ in range(500):  # bounded: 5 s for the CONFIRM after the idle delay
            if failures:
                break
            await asyncio.sleep(0.01)
        await store.close()

    asyncio.run(scenario())
    assert failures and isinstance(failures[0], StorageError), failures
    assert disk_failed(str(failures[0])), failures

"""WalLogStore beyond the shared contract: recovery, segments, torn tails, corruption, IO errors."""

from __future__ import annotations

import errno
import logging
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phalanx.errors import Corrupt, InvariantViolation, StorageError
from phalanx.raft.storage import LogWriter, MemoryStorage
from phalanx.raft.types import (
    ConfState,
    Entry,
    HardState,
    Index,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)
from phalanx.storage import AsyncLogStore, SqliteLogStore, WalLogStore
from phalanx.storage.wal import BATCH, CONFIRM, RECORD_HEADER, frame
from phalanx.testing.storage_contract import make_entries

sys.path.insert(0, str(Path(__file__).parent))
from crash_writer import entry_data, snapshot_data

WRITER = Path(__file__).with_name("crash_writer.py")


@pytest.fixture
def directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="phalanx-wal-") as root:
        yield Path(root) / "groups" / "7"


def _state(store: LogWriter) -> tuple[object, ...]:
    first, last = store.first_index(), store.last_index()
    return (
        store.initial_state(),
        first,
        last,
        store.term(Index(first - 1)),
        store.entries(first, Index(last + 1)),
        store.snapshot(),
    )


def _segments(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.wal"))


def _filled_store(directory: Path, **options: int) -> tuple[object, ...]:
    """A closed store with a few batches in it; returns its state."""
    with WalLogStore(directory, **options) as store:
        for start in range(1, 50, 7):
            store.persist(
                make_entries(start, start + 7, term=2, payload=b"f" * 30),
                HardState(term=Term(2), vote=NodeId("n1"), commit=Index(start)),
            )
        return _state(store)


# -- recovery against a model -----------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_random_history_reopens_to_the_model_state(directory: Path, seed: int) -> None:
    """Random appends, overwrites, hard states, snapshots, compactions and installs, with tiny
    segments: after every reopen the store reads exactly like the in-memory reference."""
    rng = random.Random(seed)
    model = MemoryStorage()
    store = WalLogStore(directory, segment_bytes=2048, preallocate_bytes=1024)
    term = 1
    try:
        for step in range(250):
            first, last = store.first_index(), store.last_index()
            action = rng.random()
            if action < 0.55:
                # Sometimes overwrites a suffix, never below the snapshot (Raft never does).
                lowest = max(first, last - 3, store.snapshot().meta.index + 1)
                start = rng.randint(lowest, last + 1)
                if rng.random() < 0.3:
                    term += 1
                batch = make_entries(
                    start, start + rng.randint(1, 6), term, b"x" * rng.randint(0, 80)
                )
                hard = HardState(term=Term(term), vote=NodeId(f"n{rng.randint(1, 3)}"))
                store.persist(batch, hard)
                model.append(batch)
                model.set_hard_state(hard)
            elif action < 0.7 and last >= first:
                at = Index(rng.randint(first, last))
                data = b"snap %d" % step
                store.create_snapshot(at, ConfState(voters=(NodeId("n1"),)), data)
                model.create_snapshot(at, ConfState(voters=(NodeId("n1"),)), data)
            elif action < 0.85:
                at = Index(rng.randint(first - 1, store.snapshot().meta.index))
                if at >= first:
                    store.compact(at)
                    model.compact(at)
            elif action < 0.9:
                at = Index(last + rng.randint(-2, 5))
                if at > store.snapshot().meta.index:
                    term += 1
                    meta = SnapshotMeta(index=at, term=Term(term), conf_state=ConfState())
                    incoming = Snapshot(meta=meta, data=b"installed %d" % step)
                    store.apply_snapshot(incoming)
                    model.apply_snapshot(incoming)
            else:
                store.close()
                store = WalLogStore(directory, segment_bytes=2048, preallocate_bytes=1024)
            assert _state(store) == _state(model), f"step {step}"
        assert len(_segments(directory)) < 40, "old segments are not deleted"
        store.close()
        store = WalLogStore(directory)
        assert _state(store) == _state(model)
    finally:
        store.close()


# -- segments -----------------------------------------------------------------------------------
def test_segments_rotate_and_old_ones_are_deleted_after_compaction(directory: Path) -> None:
    with WalLogStore(directory, segment_bytes=4096) as store:
        for start in range(1, 401, 10):
            store.append(make_entries(start, start + 10, term=1, payload=b"r" * 100))
        rotated = _segments(directory)
        assert len(rotated) >= 10, rotated
        assert store.segment_paths() == [directory / name for name in rotated]
        store.create_snapshot(Index(200), ConfState(), b"two hundred")
        assert _segments(directory) == rotated, "a snapshot alone deletes nothing"
        store.compact(Index(200))
        kept = _segments(directory)
        assert 1 < len(kept) < len(rotated) and kept == rotated[-len(kept) :]
        state = _state(store)
    with WalLogStore(directory, segment_bytes=4096) as store:
        assert _state(store) == state
        store.create_snapshot(Index(400), ConfState(), b"four hundred")
        store.compact(Index(400))  # everything before the active segment is obsolete
        assert _segments(directory) == [rotated[-1]]
        store.append(make_entries(401, 403, term=2))
        state = _state(store)
    with WalLogStore(directory) as store:
        assert _state(store) == state


def test_a_snapshot_install_lets_all_older_segments_go(directory: Path) -> None:
    with WalLogStore(directory, segment_bytes=2048) as store:
        for start in range(1, 100, 5):
            store.append(make_entries(start, start + 5, term=1, payload=b"i" * 50))
        assert len(_segments(directory)) > 2
        incoming = Snapshot(meta=SnapshotMeta(index=Index(500), term=Term(3)), data=b"image")
        store.persist(make_entries(501, 503, term=3), HardState(term=Term(3)), incoming)
        state = _state(store)
    assert len(_segments(directory)) == 1
    with WalLogStore(directory) as store:
        assert _state(store) == state


def test_a_missing_segment_is_corrupt(directory: Path) -> None:
    with WalLogStore(directory, segment_bytes=2048) as store:
        for start in range(1, 100, 5):
            store.append(make_entries(start, start + 5, term=1, payload=b"m" * 50))
    names = _segments(directory)
    (directory / names[0]).unlink()  # its entries are still needed: nothing compacted them
    with pytest.raises(Corrupt, match="deleted segments"):
        WalLogStore(directory)
    (directory / names[2]).unlink()
    with pytest.raises(Corrupt, match="missing"):
        WalLogStore(directory)


# -- the write path ------------------------------------------------------------------------------
def test_persist_is_one_write_and_one_fdatasync(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    with WalLogStore(directory) as store:
        store.append(make_entries(1, 4, term=1))
        real_pwrite, real_fdatasync = os.pwrite, os.fdatasync

        def pwrite(fd: int, data: bytes, offset: int) -> int:
            calls.append("pwrite")
            return real_pwrite(fd, data, offset)

        def fdatasync(fd: int) -> None:
            calls.append("fdatasync")
            real_fdatasync(fd)

        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        snapshot = Snapshot(meta=SnapshotMeta(index=Index(10), term=Term(2)), data=b"image")
        hard_state = HardState(term=Term(3), vote=NodeId("n2"), commit=Index(12))
        store.persist(make_entries(11, 111, term=3), hard_state, snapshot)
        assert calls == ["pwrite", "fdatasync"]
        store.persist([], None, None)
        store.persist([], None, Snapshot())  # the empty snapshot means "none"
        assert calls == ["pwrite", "fdatasync"], "nothing to write must not write"
        monkeypatch.undo()
        state = _state(store)
    with WalLogStore(directory) as store:
        assert _state(store) == state
        assert store.initial_state()[0] == hard_state


def test_rejected_appends_change_nothing(directory: Path) -> None:
    with WalLogStore(directory) as store:
        store.append(make_entries(1, 4, term=1))
        before = _state(store)
        with pytest.raises(InvariantViolation):
            store.append(make_entries(6, 8, term=1))
        jumping = [*make_entries(4, 6, term=1), *make_entries(7, 8, term=1)]
        with pytest.raises(InvariantViolation, match="jump from 5 to 7"):
            store.append(jumping)
        assert _state(store) == before
    with WalLogStore(directory) as store:
        assert _state(store) == before


# -- torn tails and corruption ---------------------------------------------------------------
def _active_end(directory: Path, **options: int) -> tuple[Path, int]:
    """The last segment and where its next record would go."""
    with WalLogStore(directory, **options) as store:
        return store.segment_paths()[-1], store._position


def _write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(data)


@pytest.mark.parametrize("preallocate", [0, 1 << 20], ids=["appended", "preallocated"])
@pytest.mark.parametrize("damage", ["half-header", "half-record", "bad-crc", "data-after-zeros"])
def test_torn_tail_is_cut_off(
    directory: Path, caplog: pytest.LogCaptureFixture, preallocate: int, damage: str
) -> None:
    state = _filled_store(directory, preallocate_bytes=preallocate)
    path, end = _active_end(directory, preallocate_bytes=preallocate)
    record = frame(BATCH, b"\x94\xc0\xc0\x00\x90" + b"z" * 200)
    torn = {
        "half-header": record[: RECORD_HEADER.size // 2],
        "half-record": record[: len(record) // 2],
        "bad-crc": record[:-1] + b"Z",
        "data-after-zeros": bytes(RECORD_HEADER.size) + record[RECORD_HEADER.size :],
    }[damage]
    _write_at(path, end, torn)
    with caplog.at_level(logging.WARNING, logger="phalanx.storage.wal"):
        store = WalLogStore(directory, preallocate_bytes=preallocate)
    with store:
        assert "torn tail" in caplog.text
        assert _state(store) == state
        store.append(make_entries(50, 52, term=3))  # written where the torn record was
        state = _state(store)
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="phalanx.storage.wal"),
        WalLogStore(directory) as store,
    ):
        assert _state(store) == state
    assert "torn tail" not in caplog.text, "the cut was not durable"


def _records(path: Path) -> list[tuple[int, int, int]]:
    """(offset, type, end) of every record of a segment."""
    found = []
    data = path.read_bytes()
    position = 16
    while position + RECORD_HEADER.size <= len(data):
        marker, kind, length, _ = RECORD_HEADER.unpack_from(data, position)
        if marker == 0:
            break
        end = position + RECORD_HEADER.size + length
        found.append((position, kind, end))
        position = end
    return found


def test_a_corrupt_last_record_is_not_taken_for_a_torn_one(directory: Path) -> None:
    """s6 closing note item 2: the last BATCH (acknowledged) rots after the CONFIRM behind it
    was written: opening raises Corrupt (the replica is rebuilt from its peers) instead of
    cutting acknowledged entries off as a torn tail."""
    _filled_store(directory)  # closing writes the CONFIRM
    (path,) = directory.glob("*.wal")
    records = _records(path)
    assert records[-1][1] == CONFIRM
    last_batch = [r for r in records if r[1] == BATCH][-1]
    _write_at(path, last_batch[2] - 2, b"\xff")
    with pytest.raises(Corrupt, match=r"CRC mismatch.*a valid record follows"):
        WalLogStore(directory)


def test_the_async_store_confirms_the_last_record_once_idle(directory: Path) -> None:
    import asyncio

    async def scenario() -> None:
        store = AsyncLogStore(WalLogStore(directory), confirm_delay=0.01)  # type: ignore[arg-type]
        await store.persist(make_entries(1, 4, term=1), HardState(term=Term(1)))
        path = WalLogStore.segment_paths(store.store)  # type: ignore[arg-type]
        deadline = time.monotonic() + 30
        while _records(path[-1])[-1][1] != CONFIRM and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert [kind for _, kind, _ in _records(path[-1])][-2:] == [BATCH, CONFIRM]
        store.store.close()  # no second CONFIRM at close: nothing was written since
        assert [kind for _, kind, _ in _records(path[-1])][-2:] == [BATCH, CONFIRM]
        await store.close()

    asyncio.run(scenario())


def test_bad_record_in_the_middle_is_corrupt(directory: Path) -> None:
    _filled_store(directory)
    (path,) = directory.glob("*.wal")
    blob = path.read_bytes().rstrip(b"\0")
    middle = blob.index(b"f" * 30, len(blob) // 2)
    _write_at(path, middle + 3, b"F")
    with pytest.raises(Corrupt, match=rf"{path.name}: bad record at offset \d+ \(CRC mismatch\)"):
        WalLogStore(directory)


def test_bad_tail_of_an_older_segment_is_corrupt(directory: Path) -> None:
    with WalLogStore(directory, segment_bytes=2048, preallocate_bytes=0) as store:
        for start in range(1, 100, 5):
            store.append(make_entries(start, start + 5, term=1, payload=b"o" * 50))
    first = directory / _segments(directory)[0]
    with open(first, "r+b") as file:
        file.truncate(first.stat().st_size - 5)  # a torn tail, but not in the last segment
    with pytest.raises(Corrupt, match=first.name):
        WalLogStore(directory)


def test_foreign_files_and_headers_are_corrupt(directory: Path) -> None:
    _filled_store(directory)
    (path,) = directory.glob("*.wal")
    _write_at(path, 0, b"NOTAWAL!")
    with pytest.raises(Corrupt, match="bad magic"):
        WalLogStore(directory)
    _write_at(path, 0, b"PHXWAL01" + (9).to_bytes(8, "little"))
    with pytest.raises(Corrupt, match="sequence number 9"):
        WalLogStore(directory)


def test_leftover_temp_segment_is_removed(directory: Path) -> None:
    state = _filled_store(directory)
    (directory / "0000000000000002.wal.tmp").write_bytes(b"half a segment")
    with WalLogStore(directory) as store:
        assert _state(store) == state
    assert not list(directory.glob("*.tmp"))


# -- opening ---------------------------------------------------------------------------------------
def test_second_open_of_the_same_directory_is_refused(directory: Path) -> None:
    with WalLogStore(directory), pytest.raises(StorageError, match="already open"):
        WalLogStore(directory)
    WalLogStore(directory).close()  # the lock is released on close


def test_a_sqlite_store_directory_is_refused(directory: Path) -> None:
    with SqliteLogStore(directory) as store:
        store.append(make_entries(1, 3, term=1))
    with pytest.raises(StorageError, match="SQLite"):
        WalLogStore(directory)


def test_bootstrap_conf_state_applies_only_to_a_new_store(directory: Path) -> None:
    first = ConfState(voters=(NodeId("n1"),))
    WalLogStore(directory, first).close()
    with WalLogStore(directory, ConfState(voters=(NodeId("other"),))) as store:
        assert store.initial_state()[1] == first


def test_closed_store_refuses_writes(directory: Path) -> None:
    store = WalLogStore(directory)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        store.append(make_entries(1, 2, term=1))


# -- IO errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("failing", ["pwrite", "fdatasync", "posix_fallocate"])
def test_io_error_raises_storage_error_and_changes_nothing(
    directory: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    with WalLogStore(directory, segment_bytes=4096, preallocate_bytes=1024) as store:
        store.append(make_entries(1, 11, term=1))
        store.set_hard_state(HardState(term=Term(1), commit=Index(5)))
        before = _state(store)

        def broken(*args: object) -> None:
            raise OSError(errno.ENOSPC if failing != "fdatasync" else errno.EIO, "simulated")

        monkeypatch.setattr(os, failing, broken)
        big = make_entries(11, 60, term=2, payload=b"z" * 100)  # needs allocation and rotation
        with pytest.raises(StorageError, match="simulated"):
            store.persist(big, HardState(term=Term(2), commit=Index(6)))
        if failing != "posix_fallocate":  # a small record fits the preallocated space
            with pytest.raises(StorageError, match="simulated"):
                store.create_snapshot(Index(5), ConfState(), b"five")
        assert _state(store) == before
        assert not list(directory.glob("snapshot-*")) and not list(directory.glob("*.tmp"))
        monkeypatch.undo()  # space freed: writes resume where the failed ones were
        store.append(make_entries(11, 13, term=1))
        after = _state(store)
    with WalLogStore(directory) as store:
        assert _state(store) == after


def _mount_tmpfs(target: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


@pytest.mark.parametrize("preallocate", [0, 256 << 10], ids=["appended", "preallocated"])
def test_real_full_disk_on_tmpfs(directory: Path, preallocate: int) -> None:
    directory.mkdir(parents=True)
    if not _mount_tmpfs(directory, "1m"):
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        store = WalLogStore(directory, segment_bytes=300_000, preallocate_bytes=preallocate)
        try:
            acknowledged = 0
            with pytest.raises(StorageError, match="full"):
                for start in range(1, 10_000, 10):
                    store.append(make_entries(start, start + 10, term=1, payload=b"q" * 2000))
                    acknowledged = start + 9
            assert acknowledged > 0 and store.last_index() == acknowledged
            before = _state(store)
            with pytest.raises(StorageError, match="full"):
                store.append(make_entries(acknowledged + 1, acknowledged + 50, 1, b"q" * 2000))
            assert _state(store) == before
        finally:
            store.close()
        with WalLogStore(directory) as reopened:
            assert _state(reopened) == before
    finally:
        subprocess.run(["umount", str(directory)], check=False)


# -- threads ---------------------------------------------------------------------------------------
def test_readers_never_see_a_half_applied_write(directory: Path) -> None:
    with WalLogStore(directory, segment_bytes=8192) as store:
        stop = threading.Event()
        problems: list[str] = []

        def read() -> None:
            while not stop.is_set():
                first, last = store.first_index(), store.last_index()
                try:
                    log = store.entries(first, Index(last + 1))
                except StorageError:
                    continue  # the log moved between the two calls; each call is atomic
                if [e.index for e in log] != list(range(first, last + 1)):
                    problems.append(f"torn read {first}..{last}")

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for term in range(1, 120):
                start = max(store.last_index() - 2, store.first_index())
                store.append(make_entries(start, start + 5, term=term))  # overwrites 3
                if term % 30 == 0:
                    store.create_snapshot(Index(start), ConfState(), b"")
                    store.compact(Index(start))
        finally:
            stop.set()
            reader.join()
        assert problems == []


def test_async_store_wraps_a_wal_store(directory: Path) -> None:
    import asyncio

    async def scenario() -> None:
        store = AsyncLogStore(WalLogStore(directory))  # type: ignore[arg-type]
        await asyncio.gather(
            *(
                store.persist(make_entries(i, i + 1, term=1), HardState(term=Term(1)))
                for i in range(1, 31)
            )
        )
        assert store.entries(Index(1), Index(31)) == make_entries(1, 31, term=1)
        await store.create_snapshot(Index(20), ConfState(), b"twenty")
        await store.compact(Index(20))
        await store.close()

    asyncio.run(scenario())
    with WalLogStore(directory) as store:
        assert (store.first_index(), store.last_index()) == (21, 30)


# -- crashes -----------------------------------------------------------------------------------
_CHILD = (
    "import functools, sys; sys.path.insert(0, {tests!r}); import crash_writer;"
    "from phalanx.storage.wal import WalLogStore;"
    "crash_writer.SqliteLogStore = functools.partial(WalLogStore, segment_bytes=32768);"
    "sys.argv = ['crash_writer', *sys.argv[1:]]; crash_writer.main()"
)


def test_sigkill_loses_no_acknowledged_batch(directory: Path) -> None:
    """crash_writer.py on a WalLogStore with small segments, killed at random instants."""
    rng = random.Random(int(os.environ.get("PHALANX_CRASH_SEED", time.time_ns() % 10**6)))
    acknowledged: dict[int, int] = {}
    child = _CHILD.format(tests=str(WRITER.parent))
    for round_number in range(1, 5):
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                child,
                str(directory),
                str(round_number),
                str(rng.randrange(10**9)),
            ],
            stdout=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            readable, _, _ = select.select([process.stdout], [], [], 20)
            assert readable, "crash writer did not start in time"
            ready = process.stdout.readline()
            assert ready.startswith(b"ready"), ready
            time.sleep(rng.uniform(0.05, 0.4))
            process.send_signal(signal.SIGKILL)
            output, _ = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=20)
        assert process.returncode == -signal.SIGKILL, f"writer died early: {process.returncode}"
        batch_start = int(ready.split()[1]) + 1
        lines = output.split(b"\n")[:-1]
        for line in lines:
            for index in range(batch_start, int(line) + 1):
                acknowledged[index] = round_number
            batch_start = int(line) + 1
        with WalLogStore(directory) as store:
            first, last = store.first_index(), store.last_index()
            log = {entry.index: entry for entry in store.entries(first, Index(last + 1))}
            snapshot = store.snapshot()
            for index, term in acknowledged.items():
                assert index <= last, f"acknowledged index {index} lost (last index {last})"
                if index >= first:
                    assert log[Index(index)] == Entry(
                        term=Term(term), index=Index(index), data=entry_data(term, index)
                    ), f"acknowledged entry {index} damaged"
                else:
                    assert index <= snapshot.meta.index, f"{index} compacted without snapshot"
            if not snapshot.empty:
                assert snapshot.data == snapshot_data(snapshot.meta.index)
            assert store.initial_state()[0].term >= max(acknowledged.values(), default=0)
    assert acknowledged, "no batch was ever acknowledged"
    assert len(_segments(directory)) >= 1

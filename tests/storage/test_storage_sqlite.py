"""SqliteLogStore beyond the shared contract: validation, corruption, full disks, threads."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from phalanx.errors import Corrupt, StorageError
from phalanx.raft.types import (
    ConfState,
    HardState,
    Index,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)
from phalanx.storage.async_store import AsyncLogStore
from phalanx.storage.sqlite import DATABASE_NAME, SqliteLogStore, snapshot_file_name
from phalanx.testing.storage_contract import make_entries


@pytest.fixture
def directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="phalanx-sqlite-") as root:
        yield Path(root) / "groups" / "7"


def _state(store: SqliteLogStore) -> tuple[object, ...]:
    first, last = store.first_index(), store.last_index()
    return (
        store.initial_state(),
        first,
        last,
        store.entries(first, Index(last + 1)),
        store.snapshot(),
    )


def _commits(store: SqliteLogStore) -> list[str]:
    """Record the SQL statements the store's connection runs from now on."""
    statements: list[str] = []
    connection = store._connection
    assert connection is not None
    connection.set_trace_callback(statements.append)
    return statements


# -- opening and validation ---------------------------------------------------------------------
def test_garbage_database_is_corrupt(directory: Path) -> None:
    directory.mkdir(parents=True)
    (directory / DATABASE_NAME).write_bytes(b"this is not a database" * 300)
    with pytest.raises(Corrupt, match="not a database"):
        SqliteLogStore(directory)


def test_foreign_sqlite_database_is_corrupt(directory: Path) -> None:
    directory.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(directory / DATABASE_NAME)) as connection:
        connection.execute("CREATE TABLE users (name TEXT)")
        connection.commit()
    with pytest.raises(Corrupt, match="not a phalanx Raft log"):
        SqliteLogStore(directory)


def test_unknown_schema_version_is_corrupt(directory: Path) -> None:
    SqliteLogStore(directory).close()
    with contextlib.closing(sqlite3.connect(directory / DATABASE_NAME)) as connection:
        connection.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
        connection.commit()
    with pytest.raises(Corrupt, match="unsupported schema version 99"):
        SqliteLogStore(directory)


def test_gap_in_the_log_is_corrupt(directory: Path) -> None:
    with SqliteLogStore(directory) as store:
        store.append(make_entries(1, 6, term=1))
    with contextlib.closing(sqlite3.connect(directory / DATABASE_NAME)) as connection:
        connection.execute("DELETE FROM entries WHERE idx = 3")
        connection.commit()
    with pytest.raises(Corrupt, match="gap between index 2 and 4"):
        SqliteLogStore(directory)


def test_bootstrap_conf_state_applies_only_to_a_new_store(directory: Path) -> None:
    first = ConfState(voters=(NodeId("n1"),))
    SqliteLogStore(directory, first).close()
    with SqliteLogStore(directory, ConfState(voters=(NodeId("other"),))) as store:
        assert store.initial_state()[1] == first


def test_second_open_of_the_same_directory_is_refused(directory: Path) -> None:
    with SqliteLogStore(directory), pytest.raises(StorageError, match="already open"):
        SqliteLogStore(directory)
    SqliteLogStore(directory).close()  # the lock is released on close


def test_closed_store_refuses_writes(directory: Path) -> None:
    store = SqliteLogStore(directory)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        store.append(make_entries(1, 2, term=1))


# -- snapshot files -----------------------------------------------------------------------------
def _store_with_snapshot(directory: Path) -> Path:
    with SqliteLogStore(directory) as store:
        store.append(make_entries(1, 11, term=2))
        store.create_snapshot(Index(8), ConfState(), b"payload" * 100)
    return directory / snapshot_file_name(Term(2), Index(8))


def test_snapshot_file_checksum_is_verified(directory: Path) -> None:
    path = _store_with_snapshot(directory)
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(Corrupt, match="CRC32"):
        SqliteLogStore(directory)


def test_truncated_or_missing_snapshot_file_is_corrupt(directory: Path) -> None:
    path = _store_with_snapshot(directory)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(Corrupt, match="payload bytes"):
        SqliteLogStore(directory)
    path.unlink()
    with pytest.raises(Corrupt, match="missing"):
        SqliteLogStore(directory)


def test_old_and_stray_snapshot_files_are_removed(directory: Path) -> None:
    with SqliteLogStore(directory) as store:
        store.append(make_entries(1, 11, term=1))
        store.create_snapshot(Index(3), ConfState(), b"three")
        store.create_snapshot(Index(5), ConfState(), b"five")
        assert sorted(p.name for p in directory.glob("snapshot-*")) == ["snapshot-1-5.snap"]
        incoming = Snapshot(meta=SnapshotMeta(index=Index(30), term=Term(4)), data=b"x")
        store.apply_snapshot(incoming)
        assert sorted(p.name for p in directory.glob("snapshot-*")) == ["snapshot-4-30.snap"]
    # Leftovers of a crash between the file rename and the commit, or inside the write.
    (directory / "snapshot-5-40.snap").write_bytes(b"orphan")
    (directory / "snapshot-5-41.tmp").write_bytes(b"half")
    with SqliteLogStore(directory) as store:
        assert store.snapshot() == incoming
    assert sorted(p.name for p in directory.glob("snapshot-*")) == ["snapshot-4-30.snap"]


# -- group commit -------------------------------------------------------------------------------
def test_persist_writes_one_ready_in_one_transaction(directory: Path) -> None:
    with SqliteLogStore(directory) as store:
        store.append(make_entries(1, 4, term=1))
        statements = _commits(store)
        snapshot = Snapshot(meta=SnapshotMeta(index=Index(10), term=Term(2)), data=b"image")
        hard_state = HardState(term=Term(3), vote=NodeId("n2"), commit=Index(12))
        entries = make_entries(11, 111, term=3)
        store.persist(entries, hard_state, snapshot)
        assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == [
            "BEGIN IMMEDIATE",
            "COMMIT",
        ]
        expected = _state(store)
        assert store.entries(Index(11), Index(111)) == entries
        assert store.initial_state()[0] == hard_state
    with SqliteLogStore(directory) as store:
        assert _state(store) == expected


def test_persist_with_nothing_to_write_runs_no_transaction(directory: Path) -> None:
    with SqliteLogStore(directory) as store:
        statements = _commits(store)
        store.persist([], None, None)
        store.persist([], None, Snapshot())  # the empty snapshot means "none"
        assert statements == []


# -- failures -----------------------------------------------------------------------------------
def test_full_database_raises_storage_error_and_rolls_back(directory: Path) -> None:
    with SqliteLogStore(directory) as store:
        store.append(make_entries(1, 11, term=1))
        store.set_hard_state(HardState(term=Term(1), commit=Index(5)))
        before = _state(store)
        connection = store._connection
        assert connection is not None
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages}")  # simulated full disk
        big = make_entries(6, 200, term=2, payload=b"z" * 4000)
        with pytest.raises(StorageError, match="full"):
            store.persist(big, HardState(term=Term(2), commit=Index(6)))
        assert _state(store) == before
        connection.execute("PRAGMA max_page_count = 1073741823")  # space freed: writes resume
        store.append(make_entries(11, 13, term=1))
        after = _state(store)
    with SqliteLogStore(directory) as store:
        assert _state(store) == after


def test_failed_snapshot_file_write_raises_and_leaves_no_trace(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SqliteLogStore(directory) as store:
        store.append(make_entries(1, 11, term=1))
        before = _state(store)

        def no_space(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", no_space)  # write_snapshot_file fsyncs
        with pytest.raises(StorageError, match="disk full"):
            store.create_snapshot(Index(5), ConfState(), b"image")
        with pytest.raises(StorageError, match="disk full"):
            store.apply_snapshot(Snapshot(meta=SnapshotMeta(index=Index(50), term=Term(3))))
        monkeypatch.undo()
        assert _state(store) == before
        assert list(directory.glob("snapshot-*")) == []


def _mount_tmpfs(target: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def test_real_full_disk_on_tmpfs(directory: Path) -> None:
    directory.mkdir(parents=True)
    if not _mount_tmpfs(directory, "1m"):
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        store = SqliteLogStore(directory)
        try:
            acknowledged = 0
            with pytest.raises(StorageError, match="full"):
                for start in range(1, 10_000, 10):
                    store.append(make_entries(start, start + 10, term=1, payload=b"q" * 2000))
                    acknowledged = start + 9
            assert store.last_index() == acknowledged
            before = _state(store)
        finally:
            store.close()
        with SqliteLogStore(directory) as reopened:
            assert _state(reopened) == before
    finally:
        subprocess.run(["umount", str(directory)], check=False)


# -- threads ------------------------------------------------------------------------------------
def test_readers_never_see_a_half_applied_write(directory: Path) -> None:
    with SqliteLogStore(directory) as store:
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
                if [e.term for e in log] != sorted(e.term for e in log):
                    problems.append(f"terms go down in {first}..{last}")

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for term in range(1, 150):
                start = max(store.last_index() - 2, store.first_index())
                store.append(make_entries(start, start + 5, term=term))  # overwrites 3
                if term % 30 == 0:
                    store.create_snapshot(Index(start), ConfState(), b"")
                    store.compact(Index(start))
        finally:
            stop.set()
            reader.join()
        assert problems == []


def test_async_store_persists_off_the_loop(directory: Path) -> None:
    writer_threads: set[str] = set()

    async def scenario() -> None:
        store = AsyncLogStore(SqliteLogStore(directory))
        original = store.store.persist

        def spying_persist(*args: object, **kwargs: object) -> None:
            writer_threads.add(threading.current_thread().name)
            original(*args, **kwargs)  # type: ignore[arg-type]

        store.store.persist = spying_persist  # type: ignore[method-assign]
        await asyncio.gather(
            *(
                store.persist(make_entries(i, i + 1, term=1), HardState(term=Term(1)))
                for i in range(1, 51)
            )
        )  # queued writes run in submission order on the one writer thread
        assert store.last_index() == 50
        assert store.entries(Index(1), Index(51)) == make_entries(1, 51, term=1)
        snapshot = await store.create_snapshot(Index(40), ConfState(), b"forty")
        assert store.snapshot() == snapshot
        await store.compact(Index(40))
        assert store.first_index() == 41
        await store.close()
        await store.close()
        with pytest.raises(StorageError, match="closed"):
            await store.persist(make_entries(51, 52, term=1))

    asyncio.run(scenario())
    assert len(writer_threads) == 1
    assert writer_threads.pop().startswith("phalanx-store-7")
    with SqliteLogStore(directory) as store:
        assert (store.first_index(), store.last_index()) == (41, 50)

"""The node log beyond the shared contract: group commit, per-group compaction and rewrite,
torn tails versus corruption (which groups a bad frame damages), the scrub, deleted groups,
the choice of engine for old data directories, and kill -9 of a multi-group writer."""

from __future__ import annotations

import logging
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phalanx.errors import Corrupt, StorageError
from phalanx.raft.types import ConfState, Entry, HardState, Index, NodeId, Term
from phalanx.storage import GroupStore, NodeLog, WalLogStore, open_log_store
from phalanx.storage import nodelog_format as fmt
from phalanx.testing.storage_contract import make_entries

sys.path.insert(0, str(Path(__file__).parent))
from crash_writer import entry_data, snapshot_data

WRITER = Path(__file__).with_name("nodelog_crash_writer.py")
VOTERS = ConfState(voters=(NodeId("n1"),))


@pytest.fixture
def root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="phalanx-nodelog-") as directory:
        yield Path(directory)


def _open(root: Path, **options: float) -> NodeLog:
    return NodeLog(root / "log", root / "groups", **options)  # type: ignore[arg-type]


def _group(log: NodeLog, root: Path, name: str) -> GroupStore:
    return log.open_group(root / "groups" / name, VOTERS)


def _fill(store: GroupStore, start: int, count: int, term: int = 1, size: int = 30) -> None:
    store.persist(make_entries(start, start + count, term, payload=b"f" * size),
                  HardState(term=Term(term), vote=NodeId("n1"), commit=Index(start)))


def _frames(path: Path) -> list[fmt.Frame]:
    data = path.read_bytes()
    seq = int(path.stem, 16)
    return fmt.scan_segment(str(path), data, seq, last=False).frames


def _flip(path: Path, position: int) -> None:
    with open(path, "r+b") as file:
        file.seek(position)
        byte = file.read(1)
        file.seek(position)
        file.write(bytes([byte[0] ^ 0xFF]))


# -- group commit ------------------------------------------------------------------------------
def test_concurrent_writes_of_many_groups_share_one_frame_and_one_fdatasync(root: Path) -> None:
    log = _open(root, confirm_delay=0)
    stores = [_group(log, root, str(n)) for n in range(1, 7)]
    syncs, frames = log.syncs, log.frames
    # Hold the log's IO lock while every group queues a write: the first writer to get it
    # then writes all six ops as one frame (what happens whenever writes meet an fdatasync).
    errors: list[BaseException] = []

    def write(store: GroupStore) -> None:
        try:
            _fill(store, 1, 3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with log._io_lock:
        threads = [threading.Thread(target=write, args=(store,)) for store in stores]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(log._queue) < len(stores) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(log._queue) == len(stores)
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert (log.syncs - syncs, log.frames - frames) == (1, 1)
    assert all(store.last_index() == 3 for store in stores)
    log.close()
    log = _open(root)
    assert [_group(log, root, str(n)).entries(Index(1), Index(4)) for n in range(1, 7)] == \
        [make_entries(1, 4, 1, payload=b"f" * 30)] * 6
    log.close()


# -- compaction per group ------------------------------------------------------------------------
def test_segments_are_deleted_only_when_no_group_needs_them(root: Path) -> None:
    log = _open(root, segment_bytes=4096, rewrite_after=1000, confirm_delay=0)
    busy, idle = _group(log, root, "1"), _group(log, root, "2")
    _fill(idle, 1, 2)
    for start in range(1, 400, 10):
        _fill(busy, start, 10)
    assert len(log.segment_paths()) > 3
    busy.create_snapshot(Index(400), VOTERS, b"s")
    busy.compact(Index(400))
    # The idle group's two entries keep the first segment, so every later one stays too.
    assert len(log.segment_paths()) > 3
    idle.create_snapshot(Index(2), VOTERS, b"t")
    idle.compact(Index(2))
    assert len(log.segment_paths()) == 1
    log.close()
    log = _open(root)
    assert (_group(log, root, "1").first_index(), _group(log, root, "2").first_index()) == (401, 3)
    log.close()


def test_a_lagging_group_is_rewritten_so_old_segments_go(root: Path) -> None:
    log = _open(root, segment_bytes=4096, rewrite_after=3, confirm_delay=0)
    busy, lagging = _group(log, root, "1"), _group(log, root, "2")
    _fill(lagging, 1, 3, size=10)
    for start in range(1, 2000, 10):
        _fill(busy, start, 10)
        if start % 100 == 1:
            busy.create_snapshot(Index(start + 9), VOTERS, b"s")
            busy.compact(Index(start + 9))
    assert len(log.segment_paths()) <= 4
    assert log.rewritten_entries >= 3
    log.close()
    log = _open(root)
    assert _group(log, root, "2").entries(Index(1), Index(4)) == \
        make_entries(1, 4, 1, payload=b"f" * 10)
    assert log.damaged == {}
    log.close()


def test_a_deleted_group_directory_is_garbage_and_a_dropped_group_is_forgotten(
        root: Path) -> None:
    log = _open(root, confirm_delay=0)
    kept, removed, dropped = (_group(log, root, name) for name in ("1", "2", "3"))
    for store in (kept, removed, dropped):
        _fill(store, 1, 5)
    dropped.drop()
    removed.close()
    log.close()
    (root / "groups" / "2" / "NODELOG").unlink()  # the replica's directory went away
    (root / "groups" / "2" / "LOCK").unlink()
    (root / "groups" / "2").rmdir()
    log = _open(root)
    assert log.group_keys() == [kept.key]
    again = _group(log, root, "2")  # a new replica with the same id starts empty
    assert (again.last_index(), again.initial_state()[1]) == (0, VOTERS)
    log.close()


def test_a_group_the_log_lost_is_corrupt_not_recreated_empty(root: Path) -> None:
    """A directory names a key the log does not know (its log was lost, or its damaged frames
    were reclaimed since): opening it raises Corrupt instead of starting an empty replica (a
    wiped voter). A directory without a key (a crash between the group's CREATE and its key
    file) is a new group."""
    log = _open(root, confirm_delay=0)
    _fill(_group(log, root, "1"), 1, 5)
    _group(log, root, "2")
    log.close()
    shutil.rmtree(root / "log")
    (root / "groups" / "2" / "NODELOG").unlink()
    log = _open(root)
    with pytest.raises(Corrupt, match="holds no record of group"):
        _group(log, root, "1")
    assert _group(log, root, "2").last_index() == 0
    log.close()


# -- torn writes versus corruption --------------------------------------------------------------
@pytest.mark.parametrize("damage", ["half-frame", "half-header", "bad-payload"])
def test_a_torn_last_frame_is_cut_and_nothing_acknowledged_is_lost(
        root: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    log = _open(root, confirm_delay=0, preallocate_bytes=0)
    store = _group(log, root, "1")
    _fill(store, 1, 10)
    log.close()  # confirms the last frame
    (path,) = (root / "log").glob("*.log")
    record = fmt.frame(fmt.WRITE, [store.key], b"\x91\x96" + b"z" * 100)
    torn = {"half-frame": record[: len(record) // 2],
            "half-header": record[:9],
            "bad-payload": record[:-1] + b"Z"}[damage]
    with open(path, "ab") as file:
        file.write(torn)
    with caplog.at_level(logging.WARNING, logger="phalanx.storage.nodelog"):
        log = _open(root)
    assert "torn tail" in caplog.text
    assert log.damaged == {}
    store = _group(log, root, "1")
    assert store.entries(Index(1), Index(11)) == make_entries(1, 11, 1, payload=b"f" * 30)
    _fill(store, 11, 2)  # written where the torn frame was
    log.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="phalanx.storage.nodelog"):
        log = _open(root)
    assert "torn tail" not in caplog.text, "the cut was not durable"
    assert _group(log, root, "1").last_index() == 12
    log.close()


def test_a_corrupt_last_write_is_not_taken_for_a_torn_one(root: Path) -> None:
    """s6 closing note item 2: the last acknowledged frame rots after the CONFIRM behind it
    was written; the group is damaged (rebuilt from peers), not silently cut back."""
    log = _open(root, confirm_delay=0.001)
    hit, other = _group(log, root, "1"), _group(log, root, "2")
    _fill(other, 1, 4)
    _fill(hit, 1, 4)
    deadline = time.monotonic() + 30
    while log._unconfirmed and time.monotonic() < deadline:
        time.sleep(0.002)
    assert not log._unconfirmed, "the confirmer wrote no CONFIRM frame"
    log.close()
    (path,) = (root / "log").glob("*.log")
    frames = _frames(path)
    assert frames[-1].frame_type == fmt.CONFIRM
    last_write = [f for f in frames if f.frame_type == fmt.WRITE][-1]
    assert last_write.keys == (hit.key,)
    _flip(path, last_write.end - 3)
    log = _open(root)
    assert set(log.damaged) == {hit.key}
    assert "payload CRC mismatch" in log.damaged[hit.key]
    with pytest.raises(Corrupt, match="payload CRC mismatch"):
        _group(log, root, "1")
    assert _group(log, root, "2").last_index() == 4  # the other group is untouched
    log.close()


def test_a_frame_with_a_bad_header_damages_every_group(root: Path) -> None:
    log = _open(root, confirm_delay=0)
    first, second = _group(log, root, "1"), _group(log, root, "2")
    _fill(first, 1, 4)
    _fill(second, 1, 4)
    _fill(first, 5, 4)
    log.close()
    (path,) = (root / "log").glob("*.log")
    writes = [f for f in _frames(path) if f.frame_type == fmt.WRITE]
    _flip(path, writes[-2].position + 2)  # its frame type: nobody can say whose ops it held
    log = _open(root)
    assert set(log.damaged) == {first.key, second.key}
    for name in ("1", "2"):
        with pytest.raises(Corrupt, match="bad frame header"):
            _group(log, root, name)
    log.close()


def test_the_scrub_reports_a_bad_frame_to_the_groups_it_concerns(root: Path) -> None:
    log = _open(root, confirm_delay=0)
    hit, other = _group(log, root, "1"), _group(log, root, "2")
    _fill(hit, 1, 4)
    _fill(other, 1, 4)
    _fill(hit, 5, 4)
    assert hit.scrub() > 0
    path = log.segment_paths()[-1]
    target = next(f for f in _frames(path) if f.frame_type == fmt.WRITE and f.keys == (hit.key,))
    _flip(path, target.end - 2)
    with pytest.raises(Corrupt, match="payload CRC mismatch"):
        hit.scrub()
    assert other.scrub() > 0
    log.close()


# -- engines and old data directories ------------------------------------------------------------
def test_old_per_group_stores_keep_their_engine_and_new_groups_join_the_node_log(
        root: Path) -> None:
    old = root / "groups" / "1"
    with WalLogStore(old, VOTERS) as store:
        store.append(make_entries(1, 6, 1))
    logs: list[NodeLog] = []

    def node_log() -> NodeLog:
        if not logs:
            logs.append(_open(root))
        return logs[0]

    kept = open_log_store(old, None, "node", node_log)
    new = open_log_store(root / "groups" / "2", VOTERS, "node", node_log)
    assert isinstance(kept, WalLogStore) and kept.last_index() == 5
    assert isinstance(new, GroupStore)
    kept.close()
    logs[0].close()
    # A node log group keeps living in the node log when the engine is set back to "wal".
    logs.clear()
    again = open_log_store(root / "groups" / "2", None, "wal", node_log)
    assert isinstance(again, GroupStore)
    with pytest.raises(StorageError, match="per-group log"):
        logs[0].open_group(old)
    logs[0].close()


# -- kill -9 of a writer with several groups ---------------------------------------------------
def test_sigkill_of_a_multi_group_writer_loses_no_acknowledged_batch(root: Path) -> None:
    rng = random.Random(int(os.environ.get("PHALANX_CRASH_SEED", time.time_ns() % 10**6)))
    groups = 4
    acknowledged: dict[int, dict[int, int]] = {name: {} for name in range(1, groups + 1)}
    for round_number in range(1, 5):
        process = subprocess.Popen(
            [sys.executable, str(WRITER), str(root), str(round_number),
             str(rng.randrange(10**9)), str(groups)],
            stdout=subprocess.PIPE)
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
        starts = {name: int(last) + 1 for name, last in enumerate(ready.split()[1:], 1)}
        for line in output.split(b"\n")[:-1]:
            name, last = (int(field) for field in line.split())
            for index in range(starts[name], last + 1):
                acknowledged[name][index] = round_number
            starts[name] = last + 1
        log = _open(root)
        assert log.damaged == {}
        for name in range(1, groups + 1):
            store = _group(log, root, str(name))
            first, last = store.first_index(), store.last_index()
            entries = {e.index: e for e in store.entries(first, Index(last + 1))}
            snapshot = store.snapshot()
            for index, term in acknowledged[name].items():
                assert index <= last, f"group {name}: acknowledged {index} lost (last {last})"
                if index >= first:
                    assert entries[Index(index)] == Entry(
                        term=Term(term), index=Index(index), data=entry_data(term, index))
                else:
                    assert index <= snapshot.meta.index
            if not snapshot.empty:
                assert snapshot.data == snapshot_data(snapshot.meta.index)
        log.close()
    assert all(acknowledged.values()), "a group never had a batch acknowledged"

"""Entries released from memory (`GroupStore.release`, issue 15 lever 7): their data stays
only in the node log's file and every read gives back exactly what was written, through
overwrites, compactions, segment rewrites, snapshot installs and a reopen; a released entry
whose frame rotted is `Corrupt`, never wrong data."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from phalanx.errors import Compacted, Corrupt
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
from phalanx.storage import GroupStore, NodeLog
from phalanx.storage import nodelog_format as fmt

VOTERS = ConfState(voters=(NodeId("n1"),))


@pytest.fixture
def root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="phalanx-release-") as directory:
        yield Path(directory)


def _open(root: Path, **options: float) -> NodeLog:
    return NodeLog(root / "log", root / "groups", **options)  # type: ignore[arg-type]


def _group(log: NodeLog, root: Path, name: str = "1") -> GroupStore:
    return log.open_group(root / "groups" / name, VOTERS)


def _entries(first: int, count: int, term: int, rng: random.Random) -> list[Entry]:
    return [Entry(term=Term(term), index=Index(index),
                  data=rng.randbytes(rng.choice((0, 1, 40, 700, 3000))))
            for index in range(first, first + count)]


def _persist(store: GroupStore, entries: list[Entry]) -> None:
    store.persist(entries, HardState(term=entries[-1].term, vote=NodeId("n1"),
                                     commit=Index(entries[0].index)))


def test_released_entries_leave_memory_and_read_back_exactly(root: Path) -> None:
    rng = random.Random(1)
    log = _open(root, confirm_delay=0)
    store = _group(log, root)
    written: list[Entry] = []
    for start in range(1, 200, 20):
        batch = _entries(start, 20, 1, rng)
        _persist(store, batch)
        written.extend(batch)
    held = store.held_bytes()
    assert held == sum(len(entry.data) for entry in written)
    assert store.release(Index(150)) == 150
    assert store.held_bytes() == sum(len(entry.data) for entry in written[150:])
    assert store.entries_read_back == 0
    assert store.entries(Index(1), Index(201)) == written
    assert store.entries_read_back == 150
    assert store.entries(Index(37), Index(151)) == written[36:150]
    assert store.term(Index(100)) == 1
    assert store.data_sizes(Index(1), Index(201)) == [len(entry.data) for entry in written]
    # A size-limited read gives what a store holding everything in memory gives.
    for limit in (0, 1, 700, 5000, 20_000, 10**9):
        expected: list[Entry] = []
        total = 0
        for entry in written[9:]:
            total += len(entry.data) + 24
            if total > limit and expected:
                break
            expected.append(entry)
        assert store.entries(Index(10), Index(201), limit) == expected, limit
    log.close()
    # A reopen replays everything into memory; releasing again works from the replayed frames.
    log = _open(root, confirm_delay=0)
    store = _group(log, root)
    assert store.entries(Index(1), Index(201)) == written
    store.release(Index(200))
    assert store.held_bytes() == 0
    assert store.entries(Index(1), Index(201)) == written
    log.close()


def test_overwrites_compactions_and_installs_around_released_entries(root: Path) -> None:
    rng = random.Random(2)
    log = _open(root, confirm_delay=0)
    store = _group(log, root)
    model = _entries(1, 60, 1, rng)
    _persist(store, model)
    store.release(Index(50))
    # A new leader's entries replace a suffix that was released (never committed ones in a
    # real log, but the store must not care): the released mark goes back below them.
    replacement = _entries(41, 30, 2, rng)
    _persist(store, replacement)
    model = model[:40] + replacement
    assert store.released_index() == 40
    assert store.entries(Index(1), Index(71)) == model
    store.release(Index(65))
    store.create_snapshot(Index(30), VOTERS, b"snapshot")
    store.compact(Index(30))
    with pytest.raises(Compacted):
        store.entries(Index(30), Index(31))
    assert store.entries(Index(31), Index(71)) == model[30:]
    store.create_snapshot(Index(68), VOTERS, b"snapshot")
    store.compact(Index(68))  # past everything released
    assert store.released_index() == 68
    assert store.entries(Index(69), Index(71)) == model[68:]
    store.persist(snapshot=Snapshot(meta=SnapshotMeta(index=Index(90), term=Term(3),
                                                      conf_state=VOTERS), data=b"installed"))
    assert store.released_index() == 90
    after = _entries(91, 10, 3, rng)
    _persist(store, after)
    store.release(Index(95))
    assert store.entries(Index(91), Index(101)) == after
    log.close()
    log = _open(root, confirm_delay=0)
    store = _group(log, root)
    assert store.entries(Index(91), Index(101)) == after
    log.close()


def test_released_entries_of_a_lagging_group_are_rewritten_from_the_file(root: Path) -> None:
    """The segment rewrite (`NodeLog._rewrite`) copies a lagging group's live entries out of
    an old segment: released ones are read back from their frames, and afterwards read from
    the copy (the old segment is gone)."""
    rng = random.Random(3)
    log = _open(root, segment_bytes=8192, rewrite_after=3, confirm_delay=0)
    busy, lagging = _group(log, root, "1"), _group(log, root, "2")
    kept = [Entry(term=Term(1), index=Index(index), data=rng.randbytes(300))
            for index in range(1, 7)]
    _persist(lagging, kept)
    lagging.release(Index(6))
    assert lagging.held_bytes() == 0
    first_segment = log.segment_paths()[0]
    for start in range(1, 2000, 10):
        _persist(busy, [Entry(term=Term(1), index=Index(index), data=b"b" * 200)
                        for index in range(start, start + 10)])
        busy.release(Index(start + 9))
        if start % 100 == 1:
            busy.create_snapshot(Index(start + 9), VOTERS, b"s")
            busy.compact(Index(start + 9))
    assert log.rewritten_entries >= 6
    assert first_segment not in log.segment_paths()
    assert lagging.entries(Index(1), Index(7)) == kept
    log.close()
    log = _open(root, confirm_delay=0)
    lagging = _group(log, root, "2")
    assert lagging.entries(Index(1), Index(7)) == kept
    assert log.damaged == {}
    log.close()


def test_a_released_entry_whose_frame_rotted_is_corrupt_not_wrong(root: Path) -> None:
    log = _open(root, confirm_delay=0)
    store = _group(log, root)
    rng = random.Random(4)
    _persist(store, _entries(1, 5, 1, rng))
    second = [Entry(term=Term(1), index=Index(6), data=b"x" * 500)]
    _persist(store, second)
    store.release(Index(6))
    path = log.segment_paths()[-1]
    data = path.read_bytes()
    frames = fmt.scan_segment(str(path), data, int(path.stem, 16), last=False).frames
    position = data.find(b"x" * 500, frames[-1].position)
    assert position > 0
    with open(path, "r+b") as file:
        file.seek(position + 100)
        file.write(b"y")
    assert len(store.entries(Index(1), Index(6))) == 5  # the other frame is intact
    with pytest.raises(Corrupt):
        store.entries(Index(6), Index(7))
    log.close()


@pytest.mark.parametrize("seed", range(6))
def test_random_operations_read_like_a_store_that_keeps_everything(root: Path,
                                                                   seed: int) -> None:
    """Random appends, overwrites, releases, compactions, snapshot installs and reopens, with
    small segments (rotations and rewrites): every read equals the model's."""
    rng = random.Random(seed)
    options = {"segment_bytes": 16384, "rewrite_after": 2, "confirm_delay": 0}
    log = _open(root, **options)
    stores = {name: _group(log, root, name) for name in ("a", "b")}
    models: dict[str, list[Entry]] = {name: [] for name in stores}
    offsets = {name: 0 for name in stores}
    terms = {name: 1 for name in stores}
    rewritten = read_back = 0
    for _ in range(160):
        name = rng.choice(("a", "a", "b"))
        store, model = stores[name], models[name]
        last = offsets[name] + len(model)
        action = rng.random()
        if action < 0.45 or not model:
            start = last + 1
            if model and rng.random() < 0.2:  # a new term overwrites a suffix
                start = rng.randint(offsets[name] + 1, last)
                terms[name] += 1
            batch = _entries(start, rng.randint(1, 8), terms[name], rng)
            _persist(store, batch)
            del model[start - offsets[name] - 1:]
            model.extend(batch)
        elif action < 0.7:
            store.release(Index(rng.randint(offsets[name], last)))
        elif action < 0.8:
            index = rng.randint(offsets[name] + 1, last)
            store.create_snapshot(Index(index), VOTERS, b"s")
            store.compact(Index(index))
            del model[:index - offsets[name]]
            offsets[name] = index
        elif action < 0.83:
            index = last + rng.randint(1, 5)
            terms[name] += 1
            store.persist(snapshot=Snapshot(meta=SnapshotMeta(
                index=Index(index), term=Term(terms[name]), conf_state=VOTERS), data=b"i"))
            model.clear()
            offsets[name] = index
        elif action < 0.88:
            rewritten += log.rewritten_entries
            read_back += sum(other.entries_read_back for other in stores.values())
            log.close()
            log = _open(root, **options)
            stores = {key: _group(log, root, key) for key in stores}
        else:
            if model:
                low = rng.randint(offsets[name] + 1, last)
                high = rng.randint(low, last) + 1
                got = store.entries(Index(low), Index(high))
                assert got == model[low - offsets[name] - 1:high - offsets[name] - 1]
        for key, other in stores.items():
            if models[key]:
                assert other.entries(Index(offsets[key] + 1),
                                     Index(offsets[key] + len(models[key]) + 1)) == models[key]
    assert log.damaged == {}
    rewritten += log.rewritten_entries
    read_back += sum(other.entries_read_back for other in stores.values())
    log.close()
    assert rewritten > 0 and read_back > 0  # the run did exercise both paths

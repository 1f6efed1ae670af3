"""The shared storage contract, run on the in-memory reference, the SQLite and the WAL store, and
on a group of the node log (one log shared by several groups: a neighbour group writes into the
same log between the contract's steps, and must be intact after every reopen)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from phalanx.raft.storage import LogWriter, MemoryStorage
from phalanx.raft.types import ConfState, Entry, HardState, Index, NodeId, Term
from phalanx.storage.nodelog import GroupStore, NodeLog
from phalanx.storage.sqlite import SqliteLogStore
from phalanx.storage.wal import WalLogStore
from phalanx.testing.storage_contract import CONTRACT, StoreHarness


class MemoryHarness:
    """MemoryStorage: reopening is the identity (it has nothing to recover from)."""

    def create(self, conf_state: ConfState | None = None) -> LogWriter:
        return MemoryStorage(conf_state)

    def reopen(self, store: LogWriter) -> LogWriter:
        return store

    def close_all(self) -> None:
        pass


class SqliteHarness:
    """SqliteLogStore in a temporary directory: reopening closes it and opens it from disk."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._open: list[SqliteLogStore | WalLogStore] = []

    def _open_store(self, directory: Path, conf_state: ConfState | None) -> LogWriter:
        store = SqliteLogStore(directory, conf_state)
        self._open.append(store)
        return store

    def create(self, conf_state: ConfState | None = None) -> LogWriter:
        return self._open_store(self._root / f"store-{len(self._open)}", conf_state)

    def reopen(self, store: LogWriter) -> LogWriter:
        if not isinstance(store, SqliteLogStore | WalLogStore):
            raise TypeError(f"not a durable store: {store!r}")
        store.close()
        return self._open_store(store.directory, None)

    def close_all(self) -> None:
        for store in self._open:
            store.close()


class WalHarness(SqliteHarness):
    """WalLogStore with tiny segments (so the contract rotates and deletes them) and without."""

    def __init__(self, root: Path, segment_bytes: int) -> None:
        super().__init__(root)
        self._segment_bytes = segment_bytes

    def _open_store(self, directory: Path, conf_state: ConfState | None) -> LogWriter:
        store = WalLogStore(directory, conf_state, segment_bytes=self._segment_bytes)
        self._open.append(store)
        return store


class NodeLogHarness:
    """Groups of one `NodeLog` (in `root/log`, groups in `root/groups/*`): reopening a group
    closes the whole log (a process restart) and opens it again. A neighbour group of the same
    log gets one more entry at every create and reopen; its log must survive each reopen."""

    def __init__(self, root: Path, segment_bytes: int) -> None:
        self._root = root
        self._segment_bytes = segment_bytes
        self._log = self._open_log()
        self._count = 0
        self._neighbour = self._log.open_group(root / "groups" / "neighbour", None)
        self._neighbour_last = 0

    def _open_log(self) -> NodeLog:
        return NodeLog(self._root / "log", self._root / "groups",
                       segment_bytes=self._segment_bytes, rewrite_after=2, confirm_delay=0.001)

    def _poke_neighbour(self) -> None:
        expected = self._neighbour_last
        if self._neighbour.last_index() != expected:
            raise AssertionError(f"neighbour group: last index {self._neighbour.last_index()}, "
                                 f"expected {expected}")
        index = expected + 1
        self._neighbour.persist([Entry(term=Term(1), index=Index(index), data=b"n" * 40)],
                                HardState(term=Term(1), vote=NodeId("a"), commit=Index(index)))
        self._neighbour_last = index

    def create(self, conf_state: ConfState | None = None) -> LogWriter:
        self._count += 1
        store = self._log.open_group(self._root / "groups" / f"store-{self._count}", conf_state)
        self._poke_neighbour()
        return store

    def reopen(self, store: LogWriter) -> LogWriter:
        if not isinstance(store, GroupStore):
            raise TypeError(f"not a node log group: {store!r}")
        store.close()
        self._neighbour.close()
        self._log.close()
        self._log = self._open_log()
        self._neighbour = self._log.open_group(self._root / "groups" / "neighbour", None)
        reopened = self._log.open_group(store.directory, None)
        self._poke_neighbour()
        return reopened

    def close_all(self) -> None:
        self._log.close()


@pytest.fixture(params=["memory", "sqlite", "wal", "wal-small-segments", "node",
                        "node-small-segments"])
def harness(request: pytest.FixtureRequest) -> Iterator[StoreHarness]:
    with tempfile.TemporaryDirectory(prefix="phalanx-contract-") as root:
        chosen: MemoryHarness | SqliteHarness | NodeLogHarness
        if request.param == "memory":
            chosen = MemoryHarness()
        elif request.param == "sqlite":
            chosen = SqliteHarness(Path(root))
        elif request.param == "node":
            chosen = NodeLogHarness(Path(root), segment_bytes=64 << 20)
        elif request.param == "node-small-segments":
            chosen = NodeLogHarness(Path(root), segment_bytes=400)
        elif request.param == "wal":
            chosen = WalHarness(Path(root), segment_bytes=64 << 20)
        else:
            chosen = WalHarness(Path(root), segment_bytes=300)
        try:
            yield chosen
        finally:
            chosen.close_all()


@pytest.mark.parametrize("check", CONTRACT, ids=[check.__name__ for check in CONTRACT])
def test_contract(harness: StoreHarness, check: Callable[[StoreHarness], None]) -> None:
    check(harness)

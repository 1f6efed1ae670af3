"""The shared storage contract, run on the in-memory reference, the SQLite and the WAL store."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from phalanx.raft.storage import LogWriter, MemoryStorage
from phalanx.raft.types import ConfState
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


@pytest.fixture(params=["memory", "sqlite", "wal", "wal-small-segments"])
def harness(request: pytest.FixtureRequest) -> Iterator[StoreHarness]:
    with tempfile.TemporaryDirectory(prefix="phalanx-contract-") as root:
        chosen: MemoryHarness | SqliteHarness
        if request.param == "memory":
            chosen = MemoryHarness()
        elif request.param == "sqlite":
            chosen = SqliteHarness(Path(root))
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

"""The shared storage contract, run against the in-memory reference and the SQLite store."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from phalanx.raft.storage import LogWriter, MemoryStorage
from phalanx.raft.types import ConfState
from phalanx.storage.sqlite import SqliteLogStore
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
        self._open: list[SqliteLogStore] = []

    def create(self, conf_state: ConfState | None = None) -> LogWriter:
        store = SqliteLogStore(self._root / f"store-{len(self._open)}", conf_state)
        self._open.append(store)
        return store

    def reopen(self, store: LogWriter) -> LogWriter:
        if not isinstance(store, SqliteLogStore):
            raise TypeError(f"not a SqliteLogStore: {store!r}")
        store.close()
        reopened = SqliteLogStore(store.directory)
        self._open.append(reopened)
        return reopened

    def close_all(self) -> None:
        for store in self._open:
            store.close()


@pytest.fixture(params=["memory", "sqlite"])
def harness(request: pytest.FixtureRequest) -> Iterator[StoreHarness]:
    with tempfile.TemporaryDirectory(prefix="phalanx-contract-") as root:
        chosen: MemoryHarness | SqliteHarness = (
            MemoryHarness() if request.param == "memory" else SqliteHarness(Path(root))
        )
        try:
            yield chosen
        finally:
            chosen.close_all()


@pytest.mark.parametrize("check", CONTRACT, ids=[check.__name__ for check in CONTRACT])
def test_contract(harness: StoreHarness, check: Callable[[StoreHarness], None]) -> None:
    check(harness)

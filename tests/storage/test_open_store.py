"""`open_log_store`: which format a group directory gets, and that a store keeps its format."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.errors import ConfigError
from phalanx.raft.types import ConfState, Entry, Index, NodeId, Term
from phalanx.storage import SqliteLogStore, WalLogStore, open_log_store

CONF = ConfState(voters=(NodeId("n1"),))


def _write_one(store: SqliteLogStore | WalLogStore) -> None:
    store.persist([Entry(term=Term(1), index=Index(1), data=b"x")])
    store.close()


def test_a_new_directory_gets_the_engine_asked_for(tmp_path: Path) -> None:
    wal = open_log_store(tmp_path / "a", CONF)
    assert isinstance(wal, WalLogStore)
    wal.close()
    sqlite = open_log_store(tmp_path / "b", CONF, "sqlite")
    assert isinstance(sqlite, SqliteLogStore)
    sqlite.close()


@pytest.mark.parametrize(("first", "then"), [("sqlite", "wal"), ("wal", "sqlite")])
def test_an_existing_store_keeps_its_format_and_its_entries(tmp_path: Path, first: str,
                                                            then: str) -> None:
    _write_one(open_log_store(tmp_path, CONF, first))
    reopened = open_log_store(tmp_path, CONF, then)
    try:
        assert type(reopened) is (SqliteLogStore if first == "sqlite" else WalLogStore)
        assert reopened.last_index() == 1
        assert reopened.entries(Index(1), Index(2))[0].data == b"x"
    finally:
        reopened.close()


def test_an_unknown_engine_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="storage engine 'rocks'"):
        open_log_store(tmp_path, CONF, "rocks")

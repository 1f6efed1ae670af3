"""The store's disk-fault injection (server/disk_faults.py): the rules it accepts, and a
wrapped real WAL store failing exactly the calls armed, with the OS's words for the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.errors import ConfigError, StorageError
from phalanx.raft import ConfState, Entry, EntryType, HardState, Index, NodeId, Term
from phalanx.server.consistency import disk_failed
from phalanx.server.disk_faults import DiskFaults, FaultyLogStore
from phalanx.server.meta_client import describe_reply
from phalanx.storage.wal import WalLogStore


def _entry(index: int) -> Entry:
    return Entry(Term(1), Index(index), EntryType.NORMAL, b"x" * 20)


@pytest.mark.parametrize("rules", [
    {}, {"shard": 0}, {"shard": "1"}, {"shard": True}, {"shard": 1, "error": "EPERM"},
    {"shard": 1, "reads": False, "writes": False}, {"shard": 1, "reads": "yes"},
    {"shard": 1, "when": "now"},
])
def test_bad_rules_are_refused(rules: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DiskFaults().arm(rules)


def test_armed_faults_fail_the_calls_they_name(tmp_path: Path) -> None:
    faults = DiskFaults()
    store = FaultyLogStore(WalLogStore(tmp_path / "1", ConfState(voters=(NodeId("n1"),))),
                           faults, 1)
    try:
        store.persist([_entry(1)], HardState(Term(1), NodeId("n1"), Index(1)))
        assert faults.arm({"shard": 2, "error": "EIO"}) == {
            "2": {"error": "EIO", "reads": True, "writes": True, "hits": 0}}
        store.persist([_entry(2)], HardState(Term(1), NodeId("n1"), Index(2)))  # shard 2 only
        faults.arm({"shard": 1, "error": "EIO", "reads": False})
        with pytest.raises(StorageError, match=r"Errno 5\] Input/output error") as failed:
            store.persist([_entry(3)], HardState(Term(1), NodeId("n1"), Index(3)))
        assert disk_failed(str(failed.value))
        assert [e.index for e in store.entries(Index(1), Index(3))] == [1, 2]  # reads work
        assert store.last_index() == 2  # the failed write wrote nothing
        faults.arm({"shard": 1, "error": "ENOSPC", "writes": False})
        with pytest.raises(StorageError, match=r"No space left on device.*disk full"):
            store.entries(Index(1), Index(3))
        with pytest.raises(StorageError):
            store.scrub()
        assert faults.to_json()["1"]["hits"] == 2  # type: ignore[index]
        faults.clear()
        assert store.scrub() > 0 and [e.index for e in store.entries(Index(1), Index(3))] == [1, 2]
    finally:
        store.close()


def test_only_a_failed_disk_is_relocated() -> None:
    assert disk_failed("storage failure: store x: cannot write: [Errno 28] No space left")
    assert not disk_failed("replica diverged: state digest at index 7 is a; a majority ...")
    assert not disk_failed("storage failure at open: Corrupt: bad record CRC in 1.wal")


def test_optional_methods_of_the_inner_store_pass_through(tmp_path: Path) -> None:
    """AsyncLogStore looks a store's optional methods up by name (the WAL's `confirm`): the
    wrapper has them exactly when the inner store does; `confirm` fails as a write does."""
    faults = DiskFaults()
    inner = WalLogStore(tmp_path / "1", ConfState(voters=(NodeId("n1"),)))
    store = FaultyLogStore(inner, faults, 1)
    try:
        assert (getattr(store, "confirm", None) is None) == (getattr(inner, "confirm", None)
                                                             is None)
        assert getattr(store, "no_such_method", None) is None
        confirm = getattr(store, "confirm", None)
        if confirm is not None:
            store.persist([_entry(1)], HardState(Term(1), NodeId("n1"), Index(1)))
            confirm()
            faults.arm({"shard": 1, "reads": False})
            with pytest.raises(StorageError):
                confirm()
    finally:
        store.close()


def test_a_shard_machine_s_bytes_ok_reads_as_ok() -> None:
    """A vote (`PHALANX.DIGEST`) is answered b"OK" by the shard machine: the proposer must read
    it as OK (it was `b'OK'`, so every committed vote was logged as refused and sent again)."""
    assert describe_reply(b"OK") == "OK"
    assert describe_reply("OK") == "OK"
    assert describe_reply(b"\xff") == "\ufffd"

"""The background scrub's store side (`WalLogStore.scrub`): everything on disk is read back and
verified; a byte flipped at rest in a segment (older or the active one) or in the snapshot file
is found while the store stays open."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.errors import Corrupt
from phalanx.raft import ConfState, Entry, EntryType, HardState, Index, NodeId, Term
from phalanx.storage.wal import WalLogStore


def _filled(directory: Path, *, segment_bytes: int = 4096) -> WalLogStore:
    store = WalLogStore(directory, ConfState(voters=(NodeId("n1"),)),
                        segment_bytes=segment_bytes)
    for index in range(1, 60):
        store.persist([Entry(Term(1), Index(index), EntryType.NORMAL, b"x" * 100)],
                      HardState(Term(1), NodeId("n1"), Index(index)))
    return store


def _flip(path: Path, position: int) -> None:
    with open(path, "r+b") as file:
        file.seek(position)
        byte = file.read(1)
        file.seek(position)
        file.write(bytes([byte[0] ^ 0xFF]))


def test_an_intact_store_scrubs_clean(tmp_path: Path) -> None:
    store = _filled(tmp_path)
    try:
        assert len(store.segment_paths()) > 1
        assert store.scrub() > 59 * 100
    finally:
        store.close()


@pytest.mark.parametrize("which", ["oldest", "active"])
def test_a_flipped_segment_byte_is_found_by_the_scrub(tmp_path: Path, which: str) -> None:
    store = _filled(tmp_path)
    try:
        segments = store.segment_paths()
        path = segments[0] if which == "oldest" else segments[-1]
        end = len(path.read_bytes().rstrip(b"\0"))
        _flip(path, 16 + (end - 16) // 2)
        with pytest.raises(Corrupt, match=path.name):
            store.scrub()
    finally:
        store.close()


def test_a_flipped_snapshot_byte_is_found_by_the_scrub(tmp_path: Path) -> None:
    store = _filled(tmp_path)
    try:
        store.create_snapshot(Index(50), ConfState(voters=(NodeId("n1"),)), b"state" * 200)
        assert store.scrub() > 1000
        (snapshot,) = tmp_path.glob("snapshot-*.snap")
        _flip(snapshot, snapshot.stat().st_size - 10)
        with pytest.raises(Corrupt, match="CRC32"):
            store.scrub()
    finally:
        store.close()

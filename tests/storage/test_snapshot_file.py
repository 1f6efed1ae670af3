"""Snapshot files (`storage.sqlite`): `read_snapshot_file` reads the payload without a copy of
the whole file, `verify_snapshot_file` checks it in bounded chunks (the open-time check and the
background scrub of a 1 GB snapshot must not hold 1-2 GB of memory); both refuse the same
damage: a flipped byte, a truncated or padded payload, another snapshot's header."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.errors import Corrupt
from phalanx.raft import ConfState, Index, NodeId, Snapshot, SnapshotMeta, Term
from phalanx.storage import sqlite
from phalanx.storage.sqlite import (
    SNAPSHOT_HEADER,
    read_snapshot_file,
    verify_snapshot_file,
    write_snapshot_file,
)

PAYLOAD = bytes(range(256)) * 1000 + b"tail"


def _written(directory: Path) -> Path:
    meta = SnapshotMeta(index=Index(7), term=Term(3), conf_state=ConfState(voters=(NodeId("n1"),)))
    return write_snapshot_file(directory, Snapshot(meta=meta, data=PAYLOAD))


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite, "_VERIFY_CHUNK", 4096)  # many chunks for a 256 KB payload


def test_an_intact_file_reads_and_verifies(tmp_path: Path) -> None:
    path = _written(tmp_path)
    assert read_snapshot_file(path, Term(3), Index(7)) == PAYLOAD
    assert verify_snapshot_file(path, Term(3), Index(7)) == len(PAYLOAD)


@pytest.mark.parametrize("damage", ["flip-first", "flip-last", "truncate", "pad", "header"])
def test_damage_is_refused_by_both(tmp_path: Path, damage: str) -> None:
    path = _written(tmp_path)
    blob = bytearray(path.read_bytes())
    if damage == "flip-first":
        blob[SNAPSHOT_HEADER.size] ^= 0xFF
    elif damage == "flip-last":
        blob[-1] ^= 0x01
    elif damage == "truncate":
        del blob[-5:]
    elif damage == "pad":
        blob += b"\0"
    else:
        del blob[SNAPSHOT_HEADER.size - 1:]
    path.write_bytes(bytes(blob))
    with pytest.raises(Corrupt):
        read_snapshot_file(path, Term(3), Index(7))
    with pytest.raises(Corrupt):
        verify_snapshot_file(path, Term(3), Index(7))


def test_another_snapshot_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = _written(tmp_path)
    for term, index in ((Term(3), Index(8)), (Term(2), Index(7))):
        with pytest.raises(Corrupt, match="expected term"):
            verify_snapshot_file(path, term, index)
        with pytest.raises(Corrupt, match="expected term"):
            read_snapshot_file(path, term, index)
    path.unlink()
    with pytest.raises(Corrupt, match="missing"):
        verify_snapshot_file(path, Term(3), Index(7))

"""Disk faults for the chaos lab: flip bytes in a stopped node's files, for real.

Rules of this file:
- Only a STOPPED node's files are touched (the nemesis kills it first): a disk that returned
  bad data is seen when the node reads its store again at restart.
- `corrupt_store` picks, from its own `random.Random`, one data shard's replica of the node
  (`groups/<id>/`, never the placement driver's group 0) and flips one byte either in the
  middle of the records of a WAL segment (valid records follow it, so the store cannot take it
  for the torn tail of a crash: `storage/wal.py` must call it `Corrupt`) or in the middle of
  the payload of the newest snapshot file (its CRC32 must catch it). A replica whose log lives
  in the node log (`storage/nodelog.py`) has a byte flipped in the payload of a frame of the
  node log that holds that replica's ops only (never the last frame: valid frames follow it).
  It returns what it did.
- Standard library and the node log's format module only; no import of `server` (the lab
  sees the system from outside).
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

from phalanx.storage import nodelog_format

#: The WAL segment header (magic + seq), before the first record (storage/wal.py).
_WAL_HEADER_BYTES = 16
#: The snapshot file header: magic, term, index, length, crc32 (storage/sqlite.py).
_SNAPSHOT_HEADER = struct.Struct(">8sQQQI")


class DiskFaultError(Exception):
    """The node has nothing to corrupt (no data shard replica on disk)."""


def _snapshot_index(path: Path) -> int:
    try:
        return int(_SNAPSHOT_HEADER.unpack_from(path.read_bytes())[2])
    except (OSError, struct.error):
        return -1


def corrupt_store(data_dir: str | Path, rng: random.Random, *, kind: str = "any") -> str:
    """Flip one byte of one data replica's WAL segment or snapshot file (see the rules);
    `kind` is "wal", "snapshot" or "any" (snapshot when one exists, half of the time)."""
    groups = Path(data_dir) / "groups"
    candidates = sorted((p for p in groups.glob("*") if p.is_dir() and p.name.isdigit()
                         and p.name != "0" and (any(p.glob("*.wal"))
                                                or (p / "NODELOG").exists())),
                        key=lambda p: int(p.name))
    if not candidates:
        raise DiskFaultError(f"no data shard replica under {groups}")
    group = rng.choice(candidates)
    snapshots = sorted(group.glob("snapshot-*.snap"), key=_snapshot_index)
    use_snapshot = kind == "snapshot" or (kind == "any" and snapshots and rng.random() < 0.5)
    if use_snapshot:
        if not snapshots:
            raise DiskFaultError(f"no snapshot file in {group}")
        path = snapshots[-1]
        data = bytearray(path.read_bytes())
        start = _SNAPSHOT_HEADER.size
        end = len(data)
    elif (group / "NODELOG").exists():
        return _corrupt_node_log(Path(data_dir), group)
    else:
        path = sorted(group.glob("*.wal"))[0]
        data = bytearray(path.read_bytes())
        start = _WAL_HEADER_BYTES
        end = len(data.rstrip(b"\0"))
    if end - start < 2:
        raise DiskFaultError(f"{path} holds nothing to corrupt")
    position = start + (end - start) // 2
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    return f"shard {group.name}: byte {position} of {path.name} flipped"


def _corrupt_node_log(data_dir: Path, group: Path) -> str:
    """Flip a byte in the middle of the payload of the middle frame that holds only this
    group's ops (and is not the log's last frame)."""
    key = int((group / "NODELOG").read_text().strip(), 16)
    found: list[tuple[Path, int, int]] = []  # (segment, payload start, payload end)
    for path in sorted((data_dir / "log").glob("*.log")):
        data = path.read_bytes()
        scan = nodelog_format.scan_segment(str(path), data, int(path.stem, 16), last=False)
        for frame in scan.frames:
            if not frame.problem and frame.keys == (key,) and frame.payload:
                found.append((path, frame.end - len(frame.payload), frame.end))
    if len(found) < 2:
        raise DiskFaultError(f"no frame of the node log holds only shard {group.name}'s ops")
    path, start, end = found[(len(found) - 1) // 2]
    position = start + (end - start) // 2
    with open(path, "r+b") as file:  # in place: a running node may be appending
        file.seek(position)
        byte = file.read(1)
        file.seek(position)
        file.write(bytes([byte[0] ^ 0xFF]))
    return f"shard {group.name}: byte {position} of node log segment {path.name} flipped"


__all__ = ["DiskFaultError", "corrupt_store"]

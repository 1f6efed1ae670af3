"""Replay of the node log (`phalanx.storage.nodelog`): the groups' states rebuilt from the
frames of its segments, and which groups a bad frame damaged.

Rules of this file:
- No file is opened here: `Replay.segment` gets a segment's bytes, in order, oldest first.
- A bad frame damages the groups its (CRC-checked) key table names, or every group known so
  far when its header is bad (and every group an op names later without having been created
  after that point). A damaged group's later ops and checkpoint rows are ignored.
- Only a structural fault raises `Corrupt` (a segment that does not start with exactly one
  checkpoint, an unsupported checkpoint, an op that is not a list): the log as a whole is
  unreadable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import msgpack  # type: ignore[import-untyped]

from phalanx.errors import Corrupt
from phalanx.storage import nodelog_format as fmt

DECODE_ERRORS: Final = (ValueError, TypeError, IndexError, KeyError, Corrupt,
                        msgpack.UnpackException)


class Replay:
    """The states of the groups as the frames replayed so far left them."""

    def __init__(self) -> None:
        self.states: dict[int, fmt.ReplayedGroup] = {}
        self.damaged: dict[int, str] = {}
        self.unknown_damaged = ""  # set once a frame naming no group was bad

    def damage(self, key: int, why: str) -> None:
        self.states.pop(key, None)
        self.damaged.setdefault(key, why)

    def segment(self, seq: int, path: Path, data: bytes, *, oldest: bool,
                last: bool) -> fmt.Scan:
        """Replay one segment's frames; returns its scan (where the next frame goes, and
        the torn tail of the last segment)."""
        scan = fmt.scan_segment(str(path), data, seq, last=last)
        for found in scan.frames:
            where = f"segment {path}, frame at offset {found.position}"
            if found.problem:
                why = f"{where}: {found.problem}"
                if found.header_ok:
                    for key in found.keys:
                        self.damage(key, why)
                else:
                    self.unknown_damaged = why
                    for key in list(self.states):
                        self.damage(key, why)
                continue
            first = found.position == fmt.FILE_HEADER.size
            if first != (found.frame_type == fmt.CHECKPOINT):
                raise Corrupt(f"{where}: a segment must start with exactly one checkpoint")
            if found.frame_type == fmt.CONFIRM:
                continue
            try:
                fields = msgpack.unpackb(found.payload, raw=False, use_list=True)
                if not isinstance(fields, list):
                    raise TypeError("the payload is not a list")
            except DECODE_ERRORS as exc:
                for key in found.keys:
                    self.damage(key, f"{where}: malformed frame: {exc}")
                continue
            if found.frame_type == fmt.CHECKPOINT:
                self._checkpoint(fields, oldest, where)
            else:
                self._write(seq, fields, where, found.position)
        return scan

    def _checkpoint(self, fields: list[object], oldest: bool, where: str) -> None:
        if len(fields) != 2 or fields[0] != fmt.FORMAT_VERSION or \
                not isinstance(fields[1], list):
            raise Corrupt(f"{where}: unsupported checkpoint (format {fields[:1]!r})")
        for row in fields[1]:
            try:
                key, group = fmt.ReplayedGroup.from_checkpoint(row)
            except DECODE_ERRORS as exc:
                raise Corrupt(f"{where}: malformed checkpoint row: {exc}") from exc
            if key in self.damaged:
                continue
            if oldest:
                self.states[key] = group
            elif key not in self.states or self.states[key].summary() != group.summary():
                self.damage(key, f"{where}: the checkpoint disagrees with the log before it")

    def _write(self, seq: int, ops: list[object], where: str, position: int) -> None:
        for op in ops:
            if not isinstance(op, list) or len(op) < 2 or not isinstance(op[0], int):
                raise Corrupt(f"{where}: malformed op {op!r:.80}")
            key, kind, fields = op[0], op[1], op[2:]
            if key in self.damaged:
                continue
            try:
                if kind == fmt.CREATE:
                    if key in self.states:
                        raise Corrupt(f"group {key:016x} created twice")
                    self.states[key] = fmt.created_group(fields)
                elif kind == fmt.DROP:
                    self.states.pop(key, None)
                elif key not in self.states:
                    self.damage(key, f"{where}: an op for a group the log does not hold"
                                + (f" (after {self.unknown_damaged})"
                                   if self.unknown_damaged else ""))
                else:
                    self.states[key].apply(seq, kind, fields, position)
            except DECODE_ERRORS as exc:
                self.damage(key, f"{where}: {exc}")


__all__ = ["DECODE_ERRORS", "Replay"]

"""The state machine of one data shard: the Redis data model plus the slots the shard owns.

Why ownership lives in the replicated state: routing uses each node's copy of the cluster map,
which lags. After a split, a write for a moved slot may still reach the old shard; if the old
shard applied it, the new shard (created from the split point) would never see it. So every
command's keys are checked against the owned slots AT APPLY TIME, in log order, on every
replica: a command for a slot this shard no longer owns is refused with `-TRYAGAIN` (certainly
not applied; the router retries with a newer map). The check is deterministic, so replicas agree.

A split is a log entry (`PHALANX.SPLIT first last new_shard`): every replica applies it at the
same index, removes the keys of those slots from its own data, and keeps them as the new shard's
initial snapshot (`SplitOff`); the node turns that into a new Raft group on the same replicas.
This is CockroachDB's split trigger, on Raft's log.

Rules of this file: pure (stdlib, `phalanx.kv`, this package); deterministic; snapshots are the
KV snapshot behind a small JSON header that carries the owned and moved-out slot ranges.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from phalanx.errors import Corrupt
from phalanx.kv import Error, KVStateMachine
from phalanx.kv.codec import decode_fields
from phalanx.placement.slots import SLOT_COUNT, command_keys, key_slot

SPLIT_COMMAND = b"PHALANX.SPLIT"
#: The Raft index (and term) of a shard's initial snapshot after a split.
SPLIT_SNAPSHOT_INDEX = 1
_MAGIC = b"PXSHARD1"
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class SplitOff:
    """A new shard cut out of this one by a split entry (see the module docstring)."""

    new_shard: int
    first_slot: int
    last_slot: int
    #: The new shard's initial state: a ShardMachine snapshot at SPLIT_SNAPSHOT_INDEX.
    snapshot: bytes
    #: The log index of the split entry in the old shard.
    index: int


def split_command(first_slot: int, last_slot: int, new_shard: int) -> tuple[bytes, ...]:
    """The arguments of the split entry (after the command name)."""
    return (str(first_slot).encode(), str(last_slot).encode(), str(new_shard).encode())


class ShardMachine:
    """KVStateMachine + owned slot ranges; the same interface the server's groups use."""

    def __init__(self, owned: tuple[tuple[int, int], ...] = ((0, SLOT_COUNT - 1),)) -> None:
        self.kv = KVStateMachine()
        self._owned: tuple[tuple[int, int], ...] = ()
        #: (first, last) -> new shard id, for the slots moved out by splits.
        self.moved: dict[tuple[int, int], int] = {}
        self._owner = bytearray(SLOT_COUNT)
        self._set_owned(owned)
        #: Splits applied since the server last collected them (`take_split_offs`).
        self.split_offs: list[SplitOff] = []

    def _set_owned(self, owned: tuple[tuple[int, int], ...]) -> None:
        self._owned = tuple(sorted(owned))
        table = bytearray(SLOT_COUNT)
        for first, last in self._owned:
            table[first:last + 1] = b"\x01" * (last - first + 1)
        self._owner = table

    @property
    def owned(self) -> tuple[tuple[int, int], ...]:
        return self._owned

    @property
    def key_count(self) -> int:
        return self.kv.key_count

    def owns(self, slot: int) -> bool:
        return bool(self._owner[slot])

    def refusal(self, name: bytes, args: tuple[bytes, ...] | list[bytes]) -> Error | None:
        """The -TRYAGAIN error if the command touches a slot this shard does not own."""
        for key in command_keys(name, args):
            slot = key_slot(key)
            if not self._owner[slot]:
                target = next((shard for (a, b), shard in self.moved.items() if a <= slot <= b),
                              None)
                where = f"shard {target}" if target is not None else "another shard"
                return Error(f"TRYAGAIN slot {slot} moved to {where}; retry")
        return None

    def apply(self, index: int, data: bytes) -> object:
        if data:
            try:
                name, args, _now, _client, _sequence = decode_fields(data)
            except Corrupt:
                return self.kv.apply(index, data)  # the KV machine answers a corrupt entry
            upper = name.upper()
            if upper == SPLIT_COMMAND:
                self.kv.apply(index, b"")
                return self._split(index, args)
            refused = self.refusal(upper, args)
            if refused is not None:
                self.kv.apply(index, b"")
                return refused
        return self.kv.apply(index, data)

    def read(self, name: bytes, args: tuple[bytes, ...], now_ms: int) -> object:
        refused = self.refusal(name, args)
        if refused is not None:
            return refused
        return self.kv.read(name, args, now_ms)

    def _split(self, index: int, args: tuple[bytes, ...]) -> object:
        try:
            first, last, new_shard = (int(arg) for arg in args)
        except ValueError:
            return Error("ERR PHALANX.SPLIT takes first_slot last_slot new_shard")
        if not 0 <= first <= last < SLOT_COUNT or new_shard < 1:
            return Error("ERR PHALANX.SPLIT: bad slot range or shard id")
        if not any(a <= first and last <= b for a, b in self._owned):
            return Error(f"ERR PHALANX.SPLIT: slots {first}-{last} are not all owned here")
        remaining: list[tuple[int, int]] = []
        for a, b in self._owned:
            if b < first or a > last:
                remaining.append((a, b))
                continue
            if a < first:
                remaining.append((a, first - 1))
            if b > last:
                remaining.append((last + 1, b))
        if not remaining:
            return Error("ERR PHALANX.SPLIT: the shard would keep no slot")
        kv_blob = self.kv.extract(lambda key: first <= key_slot(key) <= last,
                                  SPLIT_SNAPSHOT_INDEX)
        self._set_owned(tuple(remaining))
        self.moved[(first, last)] = new_shard
        child = _encode(((first, last),), {}, kv_blob)
        self.split_offs.append(SplitOff(new_shard, first, last, child, index))
        return "OK"

    def take_split_offs(self) -> list[SplitOff]:
        taken, self.split_offs = self.split_offs, []
        return taken

    def snapshot(self) -> bytes:
        return _encode(self._owned, self.moved, self.kv.snapshot())

    def restore(self, data: bytes) -> None:
        owned, moved, kv_blob = _decode(data)
        self.kv.restore(kv_blob)
        self._set_owned(owned)
        self.moved = moved


def _encode(owned: tuple[tuple[int, int], ...], moved: dict[tuple[int, int], int],
            kv_blob: bytes) -> bytes:
    header = json.dumps({"owned": [list(r) for r in owned],
                         "moved": [[a, b, shard] for (a, b), shard in sorted(moved.items())]},
                        separators=(",", ":")).encode()
    return _MAGIC + _LENGTH.pack(len(header)) + header + kv_blob


def _decode(data: bytes) -> tuple[tuple[tuple[int, int], ...], dict[tuple[int, int], int],
                                  bytes]:
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _LENGTH.size:
        raise Corrupt("shard snapshot: bad magic (not a phalanx shard snapshot)")
    start = len(_MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack_from(data, len(_MAGIC))
    try:
        header = json.loads(data[start:start + length])
        owned = tuple((int(a), int(b)) for a, b in header["owned"])
        moved = {(int(a), int(b)): int(shard) for a, b, shard in header["moved"]}
    except (ValueError, KeyError, TypeError) as error:
        raise Corrupt(f"shard snapshot: bad header: {error}") from error
    for first, last in owned:
        if not 0 <= first <= last < SLOT_COUNT:
            raise Corrupt(f"shard snapshot: bad slot range {first}-{last}")
    return owned, moved, data[start + length:]


__all__ = ["SPLIT_COMMAND", "SPLIT_SNAPSHOT_INDEX", "ShardMachine", "SplitOff", "split_command"]

"""One shard's active-active keys: their merged state, the outbox of local deltas, and the
positions this shard pulled every other region's shards to (docs/active-active.md).

- Local writes (`execute`) run a command of commands.py at a fresh hybrid-logical-clock stamp
  and append the key's delta to the OUTBOX with the next sequence number. The outbox is part
  of the replicated state (applied in log order, in snapshots), so every replica numbers the
  deltas alike and a new leader serves the same sequence. It is bounded (`outbox_max`): the
  oldest deltas go first, and a region asking for a sequence already dropped gets the full
  state of the shard's active-active keys instead (`pull`), which is as good (join).
- A region receiving (`merge`) joins the deltas (or full states) and records, in the same
  entry, the remote (region, shard) position it pulled up to: replication resumes from there
  after a leader change or a restart. Joins are idempotent, so a batch applied twice (an agent
  that retried) changes nothing: nothing is applied twice in effect, nothing is skipped.
- Deltas merged from other regions are not put in this outbox (regions pull from every other
  region directly: a full mesh, as Redis Enterprise's Active-Active).

Rules of this file: pure and deterministic (the clock is the entry's replicated `now_ms`);
snapshots are sorted msgpack.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

import msgpack  # type: ignore[import-untyped]

from phalanx.crdt.commands import READS, WRITES, check_arity, purge_expired
from phalanx.crdt.hlc import hlc_tick
from phalanx.crdt.types import KeyState, Plain, Stamp, Typed
from phalanx.errors import Corrupt
from phalanx.kv.replies import Error, Reply

#: Deltas a shard keeps for regions that have not pulled them (then: a full-state pull).
DEFAULT_OUTBOX_MAX = 100_000
_NOT_CONFIGURED = Error("ERR phalanx active-active: this cluster has no region name "
                        "(aa_region) configured")


@dataclass(frozen=True, slots=True)
class PullReply:
    """What a region pulling this shard gets: deltas (or the full state) up to `next_seq`."""

    full: bool
    next_seq: int
    #: (key, KeyState plain encoding).
    items: list[tuple[bytes, Plain]]
    #: This shard's latest clock.
    latest_hlc: int
    #: The sequence the sender's next delta will get (the puller's lag is head - position).
    head_seq: int
    #: A full state comes in pages: more keys after `cursor` (the last key of this page).
    more: bool = False
    cursor: bytes = b""

    def encode(self) -> list[object]:
        payload = msgpack.packb([[key, plain] for key, plain in self.items], use_bin_type=True)
        return [b"full" if self.full else b"delta", self.next_seq, payload, self.latest_hlc,
                self.head_seq, int(self.more), self.cursor]

    @staticmethod
    def decode(reply: object) -> PullReply:
        if not isinstance(reply, list) or len(reply) != 7 or reply[0] not in (b"full",
                                                                               b"delta"):
            raise Corrupt(f"active-active pull: bad reply {reply!r:.200}")
        next_seq, payload, latest, head, more, cursor = reply[1:]
        if not all(isinstance(n, int) for n in (next_seq, latest, head, more)) or not \
                isinstance(payload, bytes) or not isinstance(cursor, bytes):
            raise Corrupt("active-active pull: bad reply fields")
        return PullReply(reply[0] == b"full", next_seq, decode_items(payload), latest, head,
                         bool(more), cursor)


def decode_items(payload: bytes) -> list[tuple[bytes, Plain]]:
    """The (key, state) list of a pull reply or merge entry; raises Corrupt."""
    try:
        items = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise Corrupt(f"active-active items: {error}") from error
    if not isinstance(items, list) or not all(
            isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes)
            and isinstance(item[1], list) for item in items):
        raise Corrupt("active-active items: bad list")
    return [(item[0], item[1]) for item in items]


class ActiveActiveStore:
    """A shard's active-active keys (see the module docstring)."""

    __slots__ = (
        "_key_order",
        "_stamp",
        "first_seq",
        "hlc",
        "keys",
        "merged",
        "now",
        "outbox",
        "outbox_max",
        "positions",
        "region",
    )

    def __init__(self, region: str = "", outbox_max: int = DEFAULT_OUTBOX_MAX) -> None:
        #: This cluster's region id (the same on every node of the region: configuration).
        self.region = region
        self.outbox_max = outbox_max
        self.keys: dict[bytes, KeyState] = {}
        #: The shard's hybrid logical clock (hlc.py): the latest stamp made or merged.
        self.hlc = 0
        #: Local deltas (key, plain KeyState); the first has sequence `first_seq`.
        self.outbox: deque[tuple[bytes, Plain]] = deque()
        self.first_seq = 0
        #: (remote region, remote shard) -> the next sequence to pull from it.
        self.positions: dict[tuple[str, int], int] = {}
        #: Keys joined from other regions (a counter for metrics; not replicated meaning).
        self.merged = 0
        self._stamp: Stamp | None = None
        #: The time of the command being run (commands.py reads it).
        self.now = 0
        self._key_order: list[bytes] | None = None

    @property
    def next_seq(self) -> int:
        return self.first_seq + len(self.outbox)

    # -- used by commands.py -----------------------------------------------------------------
    def stamp(self) -> Stamp:
        """The stamp of the command being applied (one per command)."""
        assert self._stamp is not None, "stamp() outside execute()"
        return self._stamp

    def emit(self, key: bytes, type_name: str, delta: Typed) -> None:
        """Append a local delta to the outbox (dropping the oldest past `outbox_max`)."""
        self.outbox.append((key, [[type_name, delta.encode()]]))
        while len(self.outbox) > self.outbox_max:
            self.outbox.popleft()
            self.first_seq += 1

    # -- entries ---------------------------------------------------------------------------
    def execute(self, name: bytes, args: list[bytes], now_ms: int) -> Reply:
        """Apply a local command `name key args...` on an active-active key."""
        upper = name.upper()
        refused = check_arity(upper, len(args))
        if refused is not None:
            return refused
        self.now = now_ms
        write = WRITES.get(upper)
        if write is None:
            return READS[upper][0](self, args[0], args[1:])
        if not self.region:
            return _NOT_CONFIGURED
        self._stamp = (hlc_tick(self.hlc, now_ms), self.region)
        self.hlc = self._stamp[0]
        try:
            purge_expired(self, args[0])
            return write[0](self, args[0], args[1:])
        finally:
            self._stamp = None

    def read(self, name: bytes, args: list[bytes], now_ms: int = 0) -> Reply:
        """Answer a read command on an active-active key from the merged local state at
        `now_ms` (keys expired then are absent)."""
        upper = name.upper()
        refused = check_arity(upper, len(args))
        if refused is not None:
            return refused
        entry = READS.get(upper)
        if entry is None:
            return Error(f"ERR '{upper.decode().lower()}' is a write command; it must go "
                         "through the log")
        self.now = now_ms
        return entry[0](self, args[0], args[1:])

    def merge(self, region: str, shard: int, to_seq: int, full: bool,
              items: list[tuple[bytes, Plain]], owns: Callable[[bytes], bool],
              page: bool = False) -> Reply:
        """Join another region's deltas (or full state) for the keys this shard owns and record
        the position pulled to (not for a `page` of a full state that has more pages: the
        last page records the head the first page had). Returns how many keys were joined."""
        states = []
        for key, plain in items:
            if owns(key):
                states.append((key, KeyState.decode(plain)))  # all decoded before any change
        for key, state in states:
            mine = self.keys.get(key)
            if mine is None:
                mine = self.keys[key] = KeyState()
            mine.join(state)
            self.hlc = max(self.hlc, state.max_stamp()[0])  # HLC receive rule
        self.merged += len(states)
        where = (region, shard)
        if page:
            pass
        elif full:
            self.positions[where] = to_seq
        else:
            self.positions[where] = max(self.positions.get(where, 0), to_seq)
        return len(states)

    def pull(self, from_seq: int, max_items: int, owns: Callable[[bytes], bool],
             cursor: bytes = b"") -> PullReply:
        """Deltas from `from_seq` (at most `max_items`, only keys `owns` accepts), or a page of
        the full state when `from_seq` was dropped from the outbox (or is unknown here), or
        when `cursor` (the last key of the previous page) continues one: at most `max_items`
        keys after it, in key order. A full state merged page by page, then the deltas from
        the head the FIRST page reported, misses nothing: a key sent early and changed later
        has that change in a delta at or past that head."""
        next_seq = self.next_seq
        if cursor or not self.first_seq <= from_seq <= next_seq:
            keys = self._sorted_keys()
            start = bisect_right(keys, cursor) if cursor else 0
            index = start
            items: list[tuple[bytes, Plain]] = []
            while index < len(keys) and len(items) < max_items:
                key = keys[index]
                index += 1
                if owns(key):
                    items.append((key, self.keys[key].encode()))
            last = keys[index - 1] if index > start else cursor
            return PullReply(True, next_seq, items, self.hlc, next_seq, index < len(keys), last)
        chosen = list(islice(self.outbox, from_seq - self.first_seq,
                             from_seq - self.first_seq + max_items))
        delta_items = [(key, plain) for key, plain in chosen if owns(key)]
        return PullReply(False, from_seq + len(chosen), delta_items, self.hlc, next_seq)

    def _sorted_keys(self) -> list[bytes]:
        """The keys in order, sorted again only when keys came or went (pages of a full state
        in a row cost one sort)."""
        cached = self._key_order
        if cached is None or len(cached) != len(self.keys):
            cached = self._key_order = sorted(self.keys)
        return cached

    # -- snapshots -------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """The whole store as deterministic bytes (empty when nothing was ever written)."""
        if not self.keys and not self.outbox and not self.positions and not self.first_seq:
            return b""
        return bytes(msgpack.packb([
            1, self.hlc, self.first_seq,
            [[key, state.encode()] for key, state in sorted(self.keys.items())],
            [[key, plain] for key, plain in self.outbox],
            [[region, shard, seq] for (region, shard), seq in sorted(self.positions.items())],
        ], use_bin_type=True))

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's (empty bytes: an empty store); raises Corrupt."""
        if not data:
            self.keys, self.outbox, self.positions = {}, deque(), {}
            self._key_order = None
            self.hlc = self.first_seq = 0
            return
        try:
            version, hlc, first_seq, keys, outbox, positions = msgpack.unpackb(
                data, raw=False, strict_map_key=False)
            if version != 1:
                raise Corrupt(f"active-active snapshot: unknown version {version}")
            restored = {bytes(key): KeyState.decode(plain) for key, plain in keys}
            queue: deque[tuple[bytes, Plain]] = deque((bytes(key), plain)
                                                       for key, plain in outbox)
            where = {(str(region), int(shard)): int(seq) for region, shard, seq in positions}
        except (ValueError, TypeError, msgpack.UnpackException) as error:
            raise Corrupt(f"active-active snapshot: {error}") from error
        self.keys, self.outbox, self.positions = restored, queue, where
        self._key_order = None
        self.hlc, self.first_seq = int(hlc), int(first_seq)

    def extract(self, predicate: Callable[[bytes], bool]) -> bytes:
        """Remove the keys `predicate` accepts and return them as a new shard's snapshot (a
        split): it keeps this shard's positions (it has every delta merged before) and starts
        an empty outbox at sequence 1, so a region that asks from 0 takes the full state (the
        deltas of those keys before the split were in this shard's outbox)."""
        child = ActiveActiveStore(self.region, self.outbox_max)
        for key in [key for key in self.keys if predicate(key)]:
            child.keys[key] = self.keys.pop(key)
        self._key_order = None
        child.hlc = self.hlc
        child.first_seq = 1
        child.positions = dict(self.positions)
        return child.snapshot()

    def absorb(self, data: bytes) -> None:
        """Join another shard's store into this one (a merge of shards): its keys join ours;
        each position is the smaller of the two (re-pulling is harmless, skipping is not)."""
        other = ActiveActiveStore(self.region)
        other.restore(data)
        for key, state in other.keys.items():
            mine = self.keys.get(key)
            if mine is None:
                self.keys[key] = state
            else:
                mine.join(state)
        self.hlc = max(self.hlc, other.hlc)
        # The absorbed shard's outbox is gone: every region pulls this shard in full once.
        self.first_seq = self.next_seq + 1
        self.outbox.clear()
        for where in set(self.positions) | set(other.positions):
            self.positions[where] = min(self.positions.get(where, 0),
                                        other.positions.get(where, 0))

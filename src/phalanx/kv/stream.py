"""The stream value (Redis Streams): entries in id order, consumer groups, pending entries.

What this module holds:
- Stream ids as ONE integer, `ms << 64 | seq` (`make_id`, `id_ms`, `id_seq`, `format_id`,
  `parse_id`): integers compare in id order, are compact in memory and marshal fast.
- `Stream`: the entries (a `sortedcontainers.SortedDict` id -> the entry's fields packed in
  ONE bytes object, `pack_fields` / `unpack_fields`: compact in memory and in snapshots), the last
  generated id, the max deleted id, entries-added, and the consumer groups (`Group`), as Redis
  7.0's `stream` struct (t_stream.c). An empty stream is a value like any other (Redis keeps
  it: XDEL of every entry, MAXLEN 0, XGROUP CREATE ... MKSTREAM).
- `Group`: last-delivered id, entries-read (-1 = unknown, Redis's SCG_INVALID_ENTRIES_READ),
  the group's pending entries list (PEL: id -> `Nack`) and its consumers (`Consumer`, each
  with its own PEL as a sorted list of ids; a `Nack` names its consumer).
- `Stream.to_plain` / `Stream.from_plain`: the snapshot and DUMP form (plain marshal-able
  values, entries as two parallel lists: ids and packed fields), validated on the way in.

Rules of this module:
- Pure and deterministic (standard library and sortedcontainers only). Times (delivery times,
  consumer seen times) are the REPLICATED clock the state machine passes in (`now` of the
  handler), never a node's wall clock; so idle times and delivery counts mean the same on
  every replica and after a failover.
- Auto ids (`next_auto_id`) come from max(replicated clock, last id + 1), computed when the
  entry is APPLIED: the log carries `*`, every replica picks the same id, and no leader can
  issue an id at or below one already applied, whatever its clock says.
- Groups and consumers are reported in byte order of their names (Redis keeps them in a
  radix tree); entries and PELs in id order.
- Approximate trimming (`~`) removes whole "nodes" from the head, as Redis removes whole
  radix-tree nodes (stream-node-max-entries, 100 by default). phalanx's nodes are derived from
  the entries alone (consecutive runs of `NODE_ENTRIES` from the head, the last one shorter),
  so every replica, and one restored from a snapshot, trims the same entries; Redis's real
  nodes also depend on entry sizes and on earlier deletions, so counts may differ from a
  redis-server's.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from itertools import islice

from sortedcontainers import SortedDict, SortedList

SEQ_BITS = 64
SEQ_MASK = (1 << SEQ_BITS) - 1
UINT64_MAX = SEQ_MASK
MAX_ID = (1 << 128) - 1
"""18446744073709551615-18446744073709551615, the last possible id."""

NODE_ENTRIES = 100
"""Entries per radix-tree node in Redis (stream-node-max-entries): approximate trims remove
whole groups of this many entries."""

INVALID_ENTRIES_READ = -1
"""Redis's SCG_INVALID_ENTRIES_READ: a group whose read counter is unknown."""

_SPACE = b" \t\n\v\f\r"


def pack_fields(items: Sequence[bytes]) -> bytes:
    """An entry's field, value, ... as one bytes object: each item is its length (one byte
    below 255, else 255 and four bytes little endian) then its bytes."""
    parts: list[bytes] = []
    for item in items:
        size = len(item)
        parts.append(bytes((size,)) if size < 255 else b"\xff" + size.to_bytes(4, "little"))
        parts.append(item)
    return b"".join(parts)


def unpack_fields(blob: bytes) -> list[bytes]:
    """The items `pack_fields` packed; raises ValueError for a blob it cannot have written."""
    items: list[bytes] = []
    position = 0
    end = len(blob)
    while position < end:
        size = blob[position]
        position += 1
        if size == 255:
            size = int.from_bytes(blob[position:position + 4], "little")
            position += 4
        if position + size > end:
            raise ValueError("truncated stream entry")
        items.append(blob[position:position + size])
        position += size
    return items


def make_id(ms: int, seq: int) -> int:
    """The id `ms-seq` as one integer."""
    return ms << SEQ_BITS | seq


def id_ms(stream_id: int) -> int:
    """The milliseconds part of an id."""
    return stream_id >> SEQ_BITS


def format_id(stream_id: int) -> bytes:
    """`ms-seq` as Redis writes it."""
    return b"%d-%d" % (stream_id >> SEQ_BITS, stream_id & SEQ_MASK)


def _parse_u64(text: bytes) -> int | None:
    """Redis's string2ull: a canonical long long >= 0, else strtoull's forms (leading spaces,
    a sign, leading zeros) within 0..2**64-1."""
    if not text or len(text) > 127:
        return None
    stripped = text.lstrip(_SPACE)
    if not stripped:
        return None
    sign = stripped[:1]
    digits = stripped[1:] if sign in (b"+", b"-") else stripped
    if not digits.isdigit() or not digits.isascii():
        return None
    value = int(digits)
    if sign == b"-":
        if value == 0:
            return 0
        # strtoull negates; string2ll already refused a negative long long
        if value <= 2**63:
            return None
        value = (-value) % (2**64)
    if value > UINT64_MAX:
        return None
    return value


def parse_id(text: bytes, missing_seq: int = 0, strict: bool = False,
             allow_star_seq: bool = False) -> tuple[int, bool] | None:
    """Redis's streamGenericParseIDOrReply: (id, seq_given) or None for an invalid id.

    `-` is 0-0 and `+` the last id (refused when `strict`); `ms` alone takes `missing_seq`;
    `ms-*` (only with `allow_star_seq`, XADD) gives seq_given False and seq 0.
    """
    if len(text) > 127:
        return None
    if text == b"-" or text == b"+":
        if strict:
            return None
        return (0 if text == b"-" else MAX_ID), True
    ms_part, dash, seq_part = text.partition(b"-")
    ms = _parse_u64(ms_part)
    if ms is None:
        return None
    if not dash:
        return make_id(ms, missing_seq), True
    if allow_star_seq and seq_part == b"*":
        return make_id(ms, 0), False
    seq = _parse_u64(seq_part)
    if seq is None:
        return None
    return make_id(ms, seq), True


class Nack:
    """One pending entry of a group: who has it, when it was last delivered, how often."""

    __slots__ = ("consumer", "delivery_count", "delivery_time")

    def __init__(self, consumer: bytes, delivery_time: int, delivery_count: int) -> None:
        self.consumer = consumer
        self.delivery_time = delivery_time
        self.delivery_count = delivery_count


class Consumer:
    """A consumer of a group: when it was last seen and the ids pending for it."""

    __slots__ = ("pel", "seen_time")

    def __init__(self, seen_time: int) -> None:
        self.seen_time = seen_time
        self.pel: SortedList[int] = SortedList()


class Group:
    """A consumer group (Redis's streamCG)."""

    __slots__ = ("consumers", "entries_read", "last_id", "pel")

    def __init__(self, last_id: int, entries_read: int) -> None:
        self.last_id = last_id
        self.entries_read = entries_read
        self.pel: SortedDict[int, Nack] = SortedDict()
        """id -> Nack, in id order."""
        self.consumers: dict[bytes, Consumer] = {}

    def consumer(self, name: bytes, now: int, refresh: bool = True) -> Consumer:
        """The consumer `name`, created if missing; its seen time becomes `now` (Redis's
        streamLookupConsumer / streamCreateConsumer)."""
        found = self.consumers.get(name)
        if found is None:
            found = self.consumers[name] = Consumer(now)
        elif refresh:
            found.seen_time = now
        return found

    def add_pending(self, stream_id: int, consumer_name: bytes, consumer: Consumer,
                    now: int) -> None:
        """Deliver `stream_id` to a consumer: a new NACK, or an existing one reassigned with
        its count reset (Redis's streamReplyWithRange with a group)."""
        nack = self.pel.get(stream_id)
        if nack is None:
            self.pel[stream_id] = Nack(consumer_name, now, 1)
            consumer.pel.add(stream_id)
            return
        if nack.consumer != consumer_name:
            previous = self.consumers.get(nack.consumer)
            if previous is not None:
                previous.pel.discard(stream_id)
            consumer.pel.add(stream_id)
            nack.consumer = consumer_name
        nack.delivery_time = now
        nack.delivery_count = 1

    def remove_pending(self, stream_id: int) -> bool:
        """Forget a pending entry (XACK, or a claim of a deleted entry)."""
        nack = self.pel.pop(stream_id, None)
        if nack is None:
            return False
        owner = self.consumers.get(nack.consumer)
        if owner is not None:
            owner.pel.discard(stream_id)
        return True

    def copy(self) -> Group:
        """An independent copy."""
        twin = Group(self.last_id, self.entries_read)
        twin.pel = SortedDict((key, Nack(nack.consumer, nack.delivery_time,
                                         nack.delivery_count))
                              for key, nack in self.pel.items())
        for name, consumer in self.consumers.items():
            copied = twin.consumers[name] = Consumer(consumer.seen_time)
            copied.pel = SortedList(consumer.pel)
        return twin


class Stream:
    """A Redis stream (see the module docstring)."""

    __slots__ = ("entries", "entries_added", "groups", "last_id", "max_deleted_id")

    def __init__(self) -> None:
        self.entries: SortedDict[int, bytes] = SortedDict()
        """id -> the entry's packed field, value, ... (`pack_fields`), in id order."""
        self.last_id = 0
        self.max_deleted_id = 0
        self.entries_added = 0
        self.groups: dict[bytes, Group] = {}

    def __len__(self) -> int:
        return len(self.entries)

    # -- reading ---------------------------------------------------------------------------
    @property
    def first_id(self) -> int:
        """The first entry's id (0 when empty), Redis's recorded first id."""
        return self.entries.keys()[0] if self.entries else 0

    def last_entry_id(self) -> int:
        """The last entry's id (0 when empty), Redis's streamLastValidID."""
        return self.entries.keys()[-1] if self.entries else 0

    def range(self, start: int, end: int, reverse: bool = False,
              count: int = 0) -> Iterator[tuple[int, bytes]]:
        """(id, packed fields) for ids in [start, end], ascending (or descending), at most `count`
        (0 = all)."""
        if start > end:
            return iter(())
        entries = self.entries
        ids = entries.irange(start, end, reverse=reverse)
        if count:
            ids = islice(ids, count)
        return ((stream_id, entries[stream_id]) for stream_id in ids)

    def has_tombstones(self, start: int, end: int = MAX_ID) -> bool:
        """Redis's streamRangeHasTombstones: could [start, end] hold a deleted entry?"""
        if not self.entries or self.max_deleted_id == 0:
            return False
        return start <= self.max_deleted_id <= end

    def estimate_distance(self, stream_id: int) -> int:
        """Redis's streamEstimateDistanceFromFirstEverEntry: the entries-read counter of an
        id, or INVALID_ENTRIES_READ when it cannot be known."""
        if not self.entries_added:
            return 0
        if not self.entries and stream_id <= self.last_id:
            return self.entries_added
        if stream_id == self.last_id:
            return self.entries_added
        if stream_id > self.last_id:
            return INVALID_ENTRIES_READ
        first = self.first_id
        if self.max_deleted_id == 0 or self.max_deleted_id < first:
            if stream_id < first:
                return self.entries_added - len(self.entries)
            if stream_id == first:
                return self.entries_added - len(self.entries) + 1
        return INVALID_ENTRIES_READ

    def lag(self, group: Group) -> int | None:
        """Redis's streamReplyWithCGLag: entries not yet read by the group, None if unknown."""
        if not self.entries_added:
            return 0
        if group.entries_read != INVALID_ENTRIES_READ and not self.has_tombstones(
                group.last_id):
            return self.entries_added - group.entries_read
        entries_read = self.estimate_distance(group.last_id)
        if entries_read != INVALID_ENTRIES_READ:
            return self.entries_added - entries_read
        return None

    # -- writing ---------------------------------------------------------------------------
    def next_auto_id(self, now: int) -> int:
        """The id `*` gets at replicated time `now` (Redis's streamNextID, with the
        replicated clock for mstime()): (now, 0) if now is past the last id's ms, else the
        last id + 1. The caller checks the last id is not MAX_ID."""
        last = self.last_id
        if now > last >> SEQ_BITS:
            return now << SEQ_BITS
        if last & SEQ_MASK == SEQ_MASK:
            return (((last >> SEQ_BITS) + 1) << SEQ_BITS)
        return last + 1

    def append(self, stream_id: int, fields: Sequence[bytes]) -> None:
        """Add an entry whose id is above the last id (checked by the caller)."""
        self.entries[stream_id] = pack_fields(fields)
        self.last_id = stream_id
        self.entries_added += 1

    def delete(self, stream_id: int) -> bool:
        """XDEL of one id: True if it was there (the max deleted id follows)."""
        if self.entries.pop(stream_id, None) is None:
            return False
        if stream_id > self.max_deleted_id:
            self.max_deleted_id = stream_id
        return True

    def trim(self, maxlen: int | None, minid: int | None, approx: bool, limit: int) -> int:
        """Redis's streamTrim: remove entries from the head until at most `maxlen` remain
        (or none below `minid`); `approx` removes only whole nodes, at most `limit` entries
        (0 = no limit). Returns how many were removed."""
        entries = self.entries
        keys = entries.keys()
        if approx:
            # Whole nodes from the head: NODE_ENTRIES entries each, the last one possibly
            # shorter (Redis: remove a node while what remains is still >= maxlen, or while
            # its last id is below minid; stop before passing `limit`).
            excess = 0
            left = len(entries)
            while left:
                node = min(NODE_ENTRIES, left)
                if limit and excess + node > limit:
                    break
                if maxlen is not None:
                    if left - node < maxlen:
                        break
                elif keys[excess + node - 1] >= minid:  # type: ignore[operator]
                    break
                excess += node
                left -= node
        elif maxlen is not None:
            excess = len(entries) - maxlen
        else:
            assert minid is not None
            excess = entries.bisect_left(minid)
        if excess <= 0:
            return 0
        if excess == len(entries):
            entries.clear()
        else:
            for stream_id in list(islice(keys, excess)):
                del entries[stream_id]
        return excess

    def copy(self) -> Stream:
        """An independent copy (COPY, scripts' undo)."""
        twin = Stream()
        twin.entries = self.entries.copy()
        twin.last_id = self.last_id
        twin.max_deleted_id = self.max_deleted_id
        twin.entries_added = self.entries_added
        twin.groups = {name: group.copy() for name, group in self.groups.items()}
        return twin

    # -- the snapshot / DUMP form ----------------------------------------------------------
    def to_plain(self) -> tuple[object, ...]:
        """The stream as plain marshal-able values (deterministic):
        (ids, fields, last_id, max_deleted_id, entries_added, groups), ids a list of ints in
        order, fields a list of packed fields (bytes; `pack_fields`), groups [(name, last_id, entries_read,
        [id, consumer, delivery_time, delivery_count, ...], [consumer, seen_time, ...]), ...]
        in name order."""
        entries = self.entries
        groups: list[tuple[object, ...]] = []
        for name in sorted(self.groups):
            group = self.groups[name]
            pel: list[object] = []
            for stream_id, nack in group.pel.items():
                pel.extend((stream_id, nack.consumer, nack.delivery_time,
                            nack.delivery_count))
            consumers: list[object] = []
            for consumer_name in sorted(group.consumers):
                consumers.extend((consumer_name, group.consumers[consumer_name].seen_time))
            groups.append((name, group.last_id, group.entries_read, pel, consumers))
        ids = list(entries.keys())
        # map over the dict's own lookup: no Python frame per entry (a million entries)
        return (ids, list(map(entries.__getitem__, ids)), self.last_id,
                self.max_deleted_id, self.entries_added, groups)

    @classmethod
    def from_plain(cls, plain: object, check_fields: bool = True) -> Stream:
        """The inverse of `to_plain`; raises ValueError unless `to_plain` could have written
        it (ids strictly increasing and at most the last id, fields packed bytes (or, as
        written before packing, tuples of bytes: packed here),
        every pending entry's consumer known, ...). `check_fields` False skips unpacking every
        entry (for snapshots: checksummed, and written by `to_plain`)."""
        if type(plain) is not tuple or len(plain) != 6:
            raise ValueError("bad stream")
        ids, fields, last_id, max_deleted_id, entries_added, groups = plain
        if type(ids) is not list or type(fields) is not list or len(ids) != len(fields):
            raise ValueError("bad stream entries")
        for value in (last_id, max_deleted_id, entries_added):
            if type(value) is not int or not 0 <= value <= MAX_ID:
                raise ValueError("bad stream counters")
        # C-speed checks (map, set): a snapshot may hold millions of entries
        if not set(map(type, ids)) <= {int}:
            raise ValueError("bad stream id")
        if ids and (ids[0] <= 0 or ids[-1] > last_id
                    or not all(map(operator.lt, ids, islice(ids, 1, None)))):
            raise ValueError("stream ids out of order")
        kinds = set(map(type, fields))
        if kinds == {tuple}:  # the first format 4 snapshots: one tuple of items per entry
            for item in fields:
                if not item or len(item) % 2 or not all(type(part) is bytes for part in item):
                    raise ValueError("bad stream fields")
            fields = [pack_fields(item) for item in fields]
        elif not kinds <= {bytes} or not all(fields):
            raise ValueError("bad stream fields")
        elif check_fields:
            # Every entry unpacks into field, value pairs (a client's RESTORE payload must not
            # plant an entry XRANGE cannot read). A snapshot (checksummed, written by a
            # replica) skips this per-entry pass: a million entries restore faster.
            for blob in fields:
                items = unpack_fields(blob)
                if not items or len(items) % 2:
                    raise ValueError("bad stream fields")
        if entries_added < len(ids) or type(groups) is not list:
            raise ValueError("bad stream counters")
        stream = cls()
        stream.entries = SortedDict(zip(ids, fields, strict=True))
        stream.last_id = last_id
        stream.max_deleted_id = max_deleted_id
        stream.entries_added = entries_added
        for section in groups:
            name, group = _group_from_plain(section)
            if name in stream.groups:
                raise ValueError("repeated group")
            stream.groups[name] = group
        return stream


def _group_from_plain(section: object) -> tuple[bytes, Group]:
    if type(section) is not tuple or len(section) != 5:
        raise ValueError("bad group")
    name, last_id, entries_read, pel, consumers = section
    if (type(name) is not bytes or type(last_id) is not int or not 0 <= last_id <= MAX_ID
            or type(entries_read) is not int or entries_read < INVALID_ENTRIES_READ
            or type(pel) is not list or len(pel) % 4
            or type(consumers) is not list or len(consumers) % 2):
        raise ValueError("bad group")
    group = Group(last_id, entries_read)
    for position in range(0, len(consumers), 2):
        consumer_name, seen_time = consumers[position:position + 2]
        if type(consumer_name) is not bytes or type(seen_time) is not int \
                or consumer_name in group.consumers:
            raise ValueError("bad consumer")
        group.consumers[consumer_name] = Consumer(seen_time)
    previous = -1
    for position in range(0, len(pel), 4):
        stream_id, consumer_name, delivery_time, delivery_count = pel[position:position + 4]
        if (type(stream_id) is not int or not previous < stream_id <= MAX_ID
                or type(delivery_time) is not int or type(delivery_count) is not int
                or consumer_name not in group.consumers):
            raise ValueError("bad pending entry")
        previous = stream_id
        group.pel[stream_id] = Nack(consumer_name, delivery_time, delivery_count)
        group.consumers[consumer_name].pel.add(stream_id)
    return name, group

"""The replicated key-value state machine: the Redis data model every Raft replica applies.

Rules of this file:
- Deterministic: the state after applying a sequence of log entries, every reply, and the
  snapshot bytes depend only on those entries. No clocks, no randomness, no iteration over a
  set that reaches a reply or a snapshot unless sorted (SMEMBERS is sorted).
- Time is replicated: each command carries `now_ms`, stamped by the leader. The machine keeps a
  monotonic replicated clock (`max` of every applied `now_ms`), so a new leader whose clock lags
  cannot bring an expired key back. A key is logically absent once `clock >= expire_at`.
- Only `apply` mutates state. Read commands (through `apply` or `read`) treat expired keys as
  absent without deleting them; write commands delete an expired key they touch first. Expired
  keys are otherwise removed by the leader proposing `PHALANX.EXPIRE key expire_at` for what
  `expired_keys()` reports; that deletes only if the key still has exactly that expiry, so a
  racing SET (which clears or changes the TTL) survives.
- `apply` never raises for a bad command: garbage, unknown commands, wrong arity, wrong types
  all come back as `Error` replies with Redis's exact text. It raises `InvariantViolation` only
  for a broken caller contract (an index that does not advance).
- Idempotent retries: a command carrying (client_id, sequence) whose sequence equals the last
  one applied for that client gets the cached reply instead of running again; an older sequence
  gets an error. One outstanding write per client session (or retries of only the latest).
  The session table is bounded (least recently used client evicted) and part of the snapshot.
- Memory: one dict of key -> value (bytes, dict, set or deque); expiries in a second dict only
  for keys with a TTL. Auxiliary indexes (SCAN order, expiry heap) are built lazily, only on the
  replica that uses them, and are not part of the state.
- SCAN order is by a 64-bit BLAKE2b hash of the key, and the cursor is a hash value: it is
  valid on every replica (the order depends only on the key set) and keys present for the whole
  iteration are returned at least once, whatever is added or deleted meanwhile.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from hashlib import blake2b
from itertools import islice
from typing import NamedTuple

from phalanx.errors import Corrupt, require
from phalanx.kv.codec import decode_fields
from phalanx.kv.glob import glob_match
from phalanx.kv.numbers import (
    INT64_MAX,
    INT64_MIN,
    add_long_double,
    format_long_double,
    parse_int,
    parse_long_double,
)
from phalanx.kv.replies import (
    NOT_FLOAT,
    NOT_INTEGER,
    OK,
    OVERFLOW,
    SYNTAX_ERROR,
    WRONGTYPE,
    Error,
    Reply,
    arity_error,
)
from phalanx.kv.snapshot import Value, decode_snapshot, encode_snapshot

DEFAULT_MAX_SESSIONS = 100_000
EXPIRE_COMMAND = b"PHALANX.EXPIRE"
"""Internal command `PHALANX.EXPIRE key expire_at_ms`: delete key if its expiry is exactly that."""

_UINT64_MAX = 2**64 - 1
_SCAN_DEFAULT_COUNT = 10

Args = Sequence[bytes]
"""A command's arguments after its name."""

_TYPE_NAMES: dict[type, str] = {bytes: "string", dict: "hash", set: "set", deque: "list"}


def _scan_hash(key: bytes) -> int:
    """The SCAN position of a key: a 64-bit hash that is the same on every replica."""
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big")


def _error_text(data: bytes) -> str:
    """Client bytes made safe to echo inside a one-line error reply."""
    return data.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ")


def _invalid_expire(command: str) -> Error:
    return Error(f"ERR invalid expire time in '{command}' command")


class _ScanIndex:
    """Keys sorted by `_scan_hash`, plus the keys added since the sort (read-side cache only).

    Deleted keys stay in the sorted part until the next rebuild and are skipped when scanned.
    """

    __slots__ = ("added", "hashes", "keys", "removed")

    def __init__(self, keys: Sequence[bytes]) -> None:
        pairs = sorted([(_scan_hash(key), key) for key in keys])
        self.hashes = array("Q", [pair[0] for pair in pairs])
        self.keys = [pair[1] for pair in pairs]
        self.added: list[bytes] = []
        self.removed = 0

    def stale(self) -> bool:
        """True when enough changed since the sort that a rebuild is cheaper than merging."""
        return len(self.added) + self.removed > 256 + len(self.keys) // 8


class _Spec(NamedTuple):
    handler: Callable[[KVStateMachine, Args, int], Reply]
    arity: int  # Redis convention: counts the name; negative means "at least -arity"
    write: bool
    lower_name: str


class KVStateMachine:
    """The Redis data model as a deterministic Raft state machine (see the module rules)."""

    __slots__ = (
        "_applied_index",
        "_clock_ms",
        "_data",
        "_expires",
        "_expiry_heap",
        "_max_sessions",
        "_scan",
        "_sessions",
    )

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        require(max_sessions >= 1, "max_sessions must be at least 1")
        self._max_sessions = max_sessions
        self._data: dict[bytes, Value] = {}
        self._expires: dict[bytes, int] = {}
        self._sessions: dict[int, tuple[int, Reply]] = {}
        self._applied_index = 0
        self._clock_ms = 0
        self._expiry_heap: list[tuple[int, bytes]] | None = None
        self._scan: _ScanIndex | None = None

    # ------------------------------------------------------------------ public API

    @property
    def applied_index(self) -> int:
        """The index of the last log entry applied (0 before any)."""
        return self._applied_index

    @property
    def key_count(self) -> int:
        """Keys held, including expired keys whose deletion has not been applied yet."""
        return len(self._data)

    @property
    def clock_ms(self) -> int:
        """The replicated clock: the largest `now_ms` applied so far."""
        return self._clock_ms

    def apply(self, index: int, data: bytes) -> Reply:
        """Apply the committed log entry `index` carrying `data`; return the client's reply.

        Empty `data` (a leader's no-op entry) only advances the applied index.
        """
        require(index > self._applied_index,
                f"applied index must advance: {index} after {self._applied_index}")
        self._applied_index = index
        if not data:
            return None
        try:
            name, args, now, client_id, sequence = decode_fields(data)
        except Corrupt as exc:
            return Error(f"ERR corrupt command in log entry {index}: {exc}")
        if now > self._clock_ms:
            self._clock_ms = now
        else:
            now = self._clock_ms
        if client_id is None or sequence is None:
            return self._execute(name, args, now)
        session = self._sessions.get(client_id)
        if session is not None:
            if sequence == session[0]:
                return session[1]
            if sequence < session[0]:
                return Error(
                    f"ERR request {sequence} of client {client_id} was superseded by "
                    f"request {session[0]}; its reply is no longer cached"
                )
            del self._sessions[client_id]  # re-inserted below: most recently used last
        reply = self._execute(name, args, now)
        self._sessions[client_id] = (sequence, reply)
        if len(self._sessions) > self._max_sessions:
            del self._sessions[next(iter(self._sessions))]
        return reply

    def read(self, command_name: bytes | str, args: Sequence[bytes], now_ms: int) -> Reply:
        """Answer a read-only command from local state at `now_ms`, without mutating it.

        Used after ReadIndex (or under a lease). `now_ms` is the caller's notion of the
        current time; the replicated clock is never moved backwards by it.
        """
        name = command_name.encode() if isinstance(command_name, str) else command_name
        if is_known(name) and is_write(name):
            return Error(f"ERR '{_error_text(name).lower()}' is a write command; "
                         "it must go through the log")
        return self._execute(name, args, max(now_ms, self._clock_ms))

    def is_write(self, command_name: bytes | str) -> bool:
        """True when the command must go through the log (see the module-level `is_write`)."""
        return is_write(command_name)

    def expired_keys(self, now_ms: int, limit: int) -> list[tuple[bytes, int]]:
        """Up to `limit` keys logically expired at `now_ms`, earliest first, with their expiry.

        The leader proposes `PHALANX.EXPIRE key expire_at` for each (see `expire_command_args`).
        Reading only: the same keys are reported again until their deletion is applied.
        """
        heap = self._expiry_heap
        if heap is None:
            heap = [(when, key) for key, when in self._expires.items()]
            heapq.heapify(heap)
            self._expiry_heap = heap
        elif len(heap) > 2 * len(self._expires) + 1024:
            heap[:] = [(when, key) for key, when in self._expires.items()]
            heapq.heapify(heap)
        found: list[tuple[int, bytes]] = []
        expires = self._expires
        while heap and len(found) < limit and heap[0][0] <= now_ms:
            entry = heapq.heappop(heap)
            if expires.get(entry[1]) == entry[0] and (not found or found[-1] != entry):
                found.append(entry)
        for entry in found:
            heapq.heappush(heap, entry)
        return [(key, when) for when, key in found]

    def snapshot(self) -> bytes:
        """The whole state as deterministic bytes (see snapshot.py)."""
        return encode_snapshot(
            self._applied_index, self._clock_ms, self._data, self._expires, self._sessions
        )

    def extract(self, predicate: Callable[[bytes], bool], applied_index: int) -> bytes:
        """Remove every key for which `predicate(key)` is true and return them as a snapshot
        whose applied index is `applied_index` (a shard split: the new shard starts from it).

        Deterministic: replicas holding the same state extract byte-identical snapshots.
        Client sessions stay here (a retried request is answered by the shard that ran it).
        """
        moved = {key: value for key, value in self._data.items() if predicate(key)}
        moved_expires = {key: at for key, at in self._expires.items() if key in moved}
        for key in moved:
            self._delete(key)
        self._expiry_heap = None
        self._scan = None
        return encode_snapshot(applied_index, self._clock_ms, moved, moved_expires, {})

    def absorb(self, data: bytes) -> int:
        """Add every key of snapshot `data` (another shard's, merged into this one); keys
        already here are replaced. Returns how many keys came in; raises Corrupt if bad."""
        state = decode_snapshot(data)
        for key, value in state.data.items():
            if key in self._data:
                self._delete(key)
            self._data[key] = value
        self._expires.update(state.expires)
        self._expiry_heap = None
        self._scan = None
        return len(state.data)

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; raises Corrupt (state unchanged) if bad."""
        state = decode_snapshot(data)
        self._applied_index = state.applied_index
        self._clock_ms = state.clock_ms
        self._data = state.data
        self._expires = state.expires
        self._sessions = state.sessions
        self._expiry_heap = None
        self._scan = None

    # ------------------------------------------------------------------ dispatch

    def _execute(self, name: bytes, args: Args, now: int) -> Reply:
        spec = _COMMANDS.get(name) or _COMMANDS.get(name.upper())
        if spec is None:
            shown = "".join(f"'{_error_text(arg[:128])}' " for arg in args[:16])
            return Error(f"ERR unknown command '{_error_text(name[:128])}', "
                         f"with args beginning with: {shown}")
        handler, arity, _, lower_name = spec
        count = len(args) + 1
        if (arity > 0 and count != arity) or count < -arity:
            return arity_error(lower_name)
        try:
            return handler(self, args, now)
        except RecursionError:
            return Error("ERR pattern too complex")

    # ------------------------------------------------------------------ key helpers

    def _live(self, key: bytes, now: int) -> Value | None:
        """The value of `key` at `now`, or None if absent or expired. Never mutates."""
        value = self._data.get(key)
        if value is not None and self._expires:
            when = self._expires.get(key)
            if when is not None and now >= when:
                return None
        return value

    def _live_for_write(self, key: bytes, now: int) -> Value | None:
        """Like `_live`, but an expired key is deleted first (writes only)."""
        value = self._data.get(key)
        if value is not None and self._expires:
            when = self._expires.get(key)
            if when is not None and now >= when:
                self._delete(key)
                return None
        return value

    def _store(self, key: bytes, value: Value) -> None:
        """Put `value` at `key` (keeping any TTL)."""
        data = self._data
        if self._scan is not None and key not in data:
            self._scan.added.append(key)
        data[key] = value

    def _delete(self, key: bytes) -> None:
        del self._data[key]
        if self._expires:
            self._expires.pop(key, None)
        if self._scan is not None:
            self._scan.removed += 1

    def _set_expire(self, key: bytes, when: int) -> None:
        self._expires[key] = when
        if self._expiry_heap is not None:
            heapq.heappush(self._expiry_heap, (when, key))

    def _string(self, key: bytes, now: int) -> bytes | Error | None:
        value = self._live(key, now)
        if value is None or type(value) is bytes:
            return value
        return WRONGTYPE

    # ------------------------------------------------------------------ strings

    def _cmd_get(self, args: Args, now: int) -> Reply:
        return self._string(args[0], now)

    def _cmd_set(self, args: Args, now: int) -> Reply:
        key = args[0]
        if len(args) == 2:  # the hot path
            data = self._data
            if self._scan is not None and key not in data:
                self._scan.added.append(key)
            data[key] = args[1]
            if self._expires:
                self._expires.pop(key, None)
            return OK
        return self._set_generic(key, args[1], args[2:], now)

    def _set_generic(self, key: bytes, value: bytes, options: Args, now: int) -> Reply:
        nx = xx = get = keepttl = False
        unit_ms = 0  # 1000 for EX/EXAT, 1 for PX/PXAT
        relative = False
        expire_arg: bytes | None = None
        compare: bytes | None = None
        position = 0
        count = len(options)
        while position < count:
            option = options[position].upper()
            has_next = position + 1 < count
            if option == b"NX" and not xx and compare is None:
                nx = True
            elif option == b"XX" and not nx and compare is None:
                xx = True
            elif option == b"GET":
                get = True
            elif option == b"KEEPTTL" and expire_arg is None:
                keepttl = True
            elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and has_next and not keepttl and (
                expire_arg is None or (unit_ms, relative) == _EXPIRE_OPTIONS[option]
            ):
                unit_ms, relative = _EXPIRE_OPTIONS[option]
                position += 1
                expire_arg = options[position]
            elif option == b"IFEQ" and has_next and not nx and not xx:
                position += 1
                compare = options[position]
            else:
                return SYNTAX_ERROR
            position += 1
        expire_at: int | None = None
        if expire_arg is not None:
            amount = parse_int(expire_arg)
            if amount is None:
                return NOT_INTEGER
            if amount <= 0 or (unit_ms == 1000 and amount > INT64_MAX // 1000):
                return _invalid_expire("set")
            amount *= unit_ms
            if relative:
                amount += now
                if amount > INT64_MAX:
                    return _invalid_expire("set")
            expire_at = amount
        current = self._live_for_write(key, now)
        old: Reply = None
        if get:
            if current is not None and type(current) is not bytes:
                return WRONGTYPE
            old = current
        if compare is not None:
            if current is None:
                return old
            if type(current) is not bytes:
                return WRONGTYPE
            if current != compare:
                return old
        elif (nx and current is not None) or (xx and current is None):
            return old
        self._store(key, value)
        if expire_at is not None:
            # An absolute time in the past stores a logically absent key, as Redis 7 does
            # (DBSIZE counts it until a write touches it or the leader's sweep deletes it).
            self._set_expire(key, expire_at)
        elif not keepttl and self._expires:
            self._expires.pop(key, None)
        return old if get else OK

    def _cmd_setnx(self, args: Args, now: int) -> Reply:
        key = args[0]
        if self._live_for_write(key, now) is not None:
            return 0
        self._store(key, args[1])
        return 1

    def _cmd_getset(self, args: Args, now: int) -> Reply:
        key = args[0]
        current = self._live_for_write(key, now)
        if current is not None and type(current) is not bytes:
            return WRONGTYPE
        self._store(key, args[1])
        if self._expires:
            self._expires.pop(key, None)
        return current

    def _cmd_getdel(self, args: Args, now: int) -> Reply:
        key = args[0]
        current = self._live_for_write(key, now)
        if current is None:
            return None
        if type(current) is not bytes:
            return WRONGTYPE
        self._delete(key)
        return current

    def _cmd_mget(self, args: Args, now: int) -> Reply:
        replies: list[Reply] = []
        for key in args:
            value = self._live(key, now)
            replies.append(value if type(value) is bytes else None)
        return replies

    def _cmd_mset(self, args: Args, now: int) -> Reply:
        if len(args) % 2:
            return arity_error("mset")
        expires = self._expires
        for position in range(0, len(args), 2):
            key = args[position]
            self._store(key, args[position + 1])
            if expires:
                expires.pop(key, None)
        return OK

    def _cmd_append(self, args: Args, now: int) -> Reply:
        key = args[0]
        current = self._live_for_write(key, now)
        if current is None:
            self._store(key, args[1])
            return len(args[1])
        if type(current) is not bytes:
            return WRONGTYPE
        value = current + args[1]
        self._data[key] = value
        return len(value)

    def _cmd_strlen(self, args: Args, now: int) -> Reply:
        value = self._string(args[0], now)
        if isinstance(value, Error):
            return value
        return 0 if value is None else len(value)

    def _incr_by(self, key: bytes, increment: int, now: int) -> Reply:
        current = self._live_for_write(key, now)
        if current is None:
            old = 0
        elif type(current) is not bytes:
            return WRONGTYPE
        else:
            parsed = parse_int(current)
            if parsed is None:
                return NOT_INTEGER
            old = parsed
        result = old + increment
        if result > INT64_MAX or result < INT64_MIN:
            return OVERFLOW
        self._store(key, b"%d" % result)
        return result

    def _cmd_incr(self, args: Args, now: int) -> Reply:
        return self._incr_by(args[0], 1, now)

    def _cmd_decr(self, args: Args, now: int) -> Reply:
        return self._incr_by(args[0], -1, now)

    def _cmd_incrby(self, args: Args, now: int) -> Reply:
        increment = parse_int(args[1])
        if increment is None:
            return NOT_INTEGER
        return self._incr_by(args[0], increment, now)

    def _cmd_decrby(self, args: Args, now: int) -> Reply:
        decrement = parse_int(args[1])
        if decrement is None:
            return NOT_INTEGER
        if decrement == INT64_MIN:
            return Error("ERR decrement would overflow")
        return self._incr_by(args[0], -decrement, now)

    def _cmd_incrbyfloat(self, args: Args, now: int) -> Reply:
        key = args[0]
        current = self._live_for_write(key, now)
        if current is not None and type(current) is not bytes:
            return WRONGTYPE
        old = parse_long_double(current) if current is not None else parse_long_double(b"0")
        increment = parse_long_double(args[1])
        if old is None or increment is None:
            return NOT_FLOAT
        result = add_long_double(old, increment)
        if result is None:
            return Error("ERR increment would produce NaN or Infinity")
        text = format_long_double(result)
        self._store(key, text)
        return text

    # ------------------------------------------------------------------ keyspace

    def _cmd_del(self, args: Args, now: int) -> Reply:
        deleted = 0
        for key in args:
            if self._live_for_write(key, now) is not None:
                self._delete(key)
                deleted += 1
        return deleted

    def _cmd_exists(self, args: Args, now: int) -> Reply:
        return sum(1 for key in args if self._live(key, now) is not None)

    def _cmd_type(self, args: Args, now: int) -> Reply:
        value = self._live(args[0], now)
        return "none" if value is None else _TYPE_NAMES[type(value)]

    def _expire_generic(
        self, args: Args, now: int, base: int, unit_ms: int, name: str
    ) -> Reply:
        nx = xx = gt = lt = False
        for raw in args[2:]:
            option = raw.upper()
            if option == b"NX":
                nx = True
            elif option == b"XX":
                xx = True
            elif option == b"GT":
                gt = True
            elif option == b"LT":
                lt = True
            else:
                return Error(f"ERR Unsupported option {_error_text(raw)}")
        if nx and (xx or gt or lt):
            return Error("ERR NX and XX, GT or LT options at the same time are not compatible")
        if gt and lt:
            return Error("ERR GT and LT options at the same time are not compatible")
        when = parse_int(args[1])
        if when is None:
            return NOT_INTEGER
        if unit_ms == 1000:
            # C's LLONG_MIN / 1000 truncates toward zero.
            if when > INT64_MAX // 1000 or when < -(-INT64_MIN // 1000):
                return _invalid_expire(name)
            when *= 1000
        if when > INT64_MAX - base:
            return _invalid_expire(name)
        when += base
        key = args[0]
        if self._live_for_write(key, now) is None:
            return 0
        current = self._expires.get(key)
        if nx and current is not None:
            return 0
        if xx and current is None:
            return 0
        if gt and (current is None or when <= current):
            return 0
        if lt and current is not None and when >= current:
            return 0
        if when <= now:
            self._delete(key)
        else:
            self._set_expire(key, when)
        return 1

    def _cmd_expire(self, args: Args, now: int) -> Reply:
        return self._expire_generic(args, now, now, 1000, "expire")

    def _cmd_pexpire(self, args: Args, now: int) -> Reply:
        return self._expire_generic(args, now, now, 1, "pexpire")

    def _cmd_expireat(self, args: Args, now: int) -> Reply:
        return self._expire_generic(args, now, 0, 1000, "expireat")

    def _cmd_pexpireat(self, args: Args, now: int) -> Reply:
        return self._expire_generic(args, now, 0, 1, "pexpireat")

    def _ttl(self, key: bytes, now: int, milliseconds: bool) -> Reply:
        if self._live(key, now) is None:
            return -2
        when = self._expires.get(key)
        if when is None:
            return -1
        remaining = max(when - now, 0)
        return remaining if milliseconds else (remaining + 500) // 1000

    def _cmd_ttl(self, args: Args, now: int) -> Reply:
        return self._ttl(args[0], now, False)

    def _cmd_pttl(self, args: Args, now: int) -> Reply:
        return self._ttl(args[0], now, True)

    def _cmd_persist(self, args: Args, now: int) -> Reply:
        key = args[0]
        if self._live_for_write(key, now) is None or key not in self._expires:
            return 0
        del self._expires[key]
        return 1

    def _cmd_phalanx_expire(self, args: Args, now: int) -> Reply:
        key = args[0]
        when = parse_int(args[1])
        if when is None:
            return NOT_INTEGER
        if self._expires.get(key) != when or now < when:
            return 0
        self._delete(key)
        return 1

    def _cmd_keys(self, args: Args, now: int) -> Reply:
        pattern = args[0]
        match_all = pattern == b"*"
        expires = self._expires
        found: list[Reply] = []
        for key in self._data:
            if expires:
                when = expires.get(key)
                if when is not None and now >= when:
                    continue
            if match_all or glob_match(pattern, key):
                found.append(key)
        return found

    def _cmd_scan(self, args: Args, now: int) -> Reply:
        cursor = _parse_cursor(args[0])
        if cursor is None:
            return Error("ERR invalid cursor")
        count = _SCAN_DEFAULT_COUNT
        pattern: bytes | None = None
        type_name: bytes | None = None
        position = 1
        while position < len(args):
            option = args[position].upper()
            if position + 1 >= len(args):
                return SYNTAX_ERROR
            argument = args[position + 1]
            if option == b"COUNT":
                parsed = parse_int(argument)
                if parsed is None:
                    return NOT_INTEGER
                if parsed < 1:
                    return SYNTAX_ERROR
                count = parsed
            elif option == b"MATCH":
                pattern = None if argument == b"*" else argument
            elif option == b"TYPE":
                type_name = argument.lower()
            else:
                return SYNTAX_ERROR
            position += 2
        next_cursor, keys = self._scan_from(cursor, count, now)
        found: list[Reply] = []
        for key in keys:
            if pattern is not None and not glob_match(pattern, key):
                continue
            if type_name is not None and (
                _TYPE_NAMES[type(self._data[key])].encode() != type_name
            ):
                continue
            found.append(key)
        return [b"%d" % next_cursor, found]

    def _scan_from(self, cursor: int, count: int, now: int) -> tuple[int, list[bytes]]:
        """About `count` live keys in hash order from `cursor`, and the cursor after them."""
        index = self._scan
        if index is None or index.stale():
            index = self._scan = _ScanIndex(list(self._data))
        start = bisect_left(index.hashes, cursor)
        hashes, sorted_keys = index.hashes, index.keys
        sorted_part = ((hashes[i], sorted_keys[i]) for i in range(start, len(sorted_keys)))
        added = sorted(
            entry for entry in ((_scan_hash(key), key) for key in index.added)
            if entry[0] >= cursor
        )
        keys: list[bytes] = []
        seen: set[bytes] = set()
        last_hash = -1
        for entry_hash, key in heapq.merge(sorted_part, added):
            if len(keys) >= count and entry_hash != last_hash:
                return entry_hash, keys
            last_hash = entry_hash
            if key not in seen and self._live(key, now) is not None:
                seen.add(key)
                keys.append(key)
        return 0, keys

    def _cmd_dbsize(self, args: Args, now: int) -> Reply:
        return len(self._data)

    def _cmd_flushdb(self, args: Args, now: int) -> Reply:
        if len(args) > 1 or (args and args[0].upper() not in (b"SYNC", b"ASYNC")):
            return SYNTAX_ERROR
        self._data = {}
        self._expires = {}
        self._expiry_heap = None
        self._scan = None
        return OK

    # ------------------------------------------------------------------ hashes

    def _hash(self, key: bytes, now: int) -> dict[bytes, bytes] | Error | None:
        value = self._live(key, now)
        if value is None or type(value) is dict:
            return value
        return WRONGTYPE

    def _hash_for_write(self, key: bytes, now: int) -> dict[bytes, bytes] | Error | None:
        value = self._live_for_write(key, now)
        if value is None or type(value) is dict:
            return value
        return WRONGTYPE

    def _cmd_hset(self, args: Args, now: int) -> Reply:
        if len(args) % 2 == 0:
            return arity_error("hset")
        key = args[0]
        fields = self._hash_for_write(key, now)
        if isinstance(fields, Error):
            return fields
        if fields is None:
            fields = {}
            self._store(key, fields)
        before = len(fields)
        for position in range(1, len(args), 2):
            fields[args[position]] = args[position + 1]
        return len(fields) - before

    def _cmd_hget(self, args: Args, now: int) -> Reply:
        fields = self._hash(args[0], now)
        if fields is None or isinstance(fields, Error):
            return fields
        return fields.get(args[1])

    def _cmd_hdel(self, args: Args, now: int) -> Reply:
        key = args[0]
        fields = self._hash_for_write(key, now)
        if fields is None:
            return 0
        if isinstance(fields, Error):
            return fields
        deleted = 0
        for field in args[1:]:
            if fields.pop(field, None) is not None:
                deleted += 1
        if not fields:
            self._delete(key)
        return deleted

    def _cmd_hgetall(self, args: Args, now: int) -> Reply:
        fields = self._hash(args[0], now)
        if isinstance(fields, Error):
            return fields
        flat: list[Reply] = []
        if fields is not None:
            for field, value in fields.items():
                flat.append(field)
                flat.append(value)
        return flat

    def _cmd_hexists(self, args: Args, now: int) -> Reply:
        fields = self._hash(args[0], now)
        if isinstance(fields, Error):
            return fields
        return 1 if fields is not None and args[1] in fields else 0

    def _cmd_hlen(self, args: Args, now: int) -> Reply:
        fields = self._hash(args[0], now)
        if isinstance(fields, Error):
            return fields
        return 0 if fields is None else len(fields)

    def _cmd_hincrby(self, args: Args, now: int) -> Reply:
        increment = parse_int(args[2])
        if increment is None:
            return NOT_INTEGER
        key = args[0]
        fields = self._hash_for_write(key, now)
        if isinstance(fields, Error):
            return fields
        old = 0
        if fields is not None and args[1] in fields:
            parsed = parse_int(fields[args[1]])
            if parsed is None:
                return Error("ERR hash value is not an integer")
            old = parsed
        result = old + increment
        if result > INT64_MAX or result < INT64_MIN:
            return OVERFLOW
        if fields is None:
            fields = {}
            self._store(key, fields)
        fields[args[1]] = b"%d" % result
        return result

    # ------------------------------------------------------------------ sets

    def _set(self, key: bytes, now: int) -> set[bytes] | Error | None:
        value = self._live(key, now)
        if value is None or type(value) is set:
            return value
        return WRONGTYPE

    def _cmd_sadd(self, args: Args, now: int) -> Reply:
        key = args[0]
        value = self._live_for_write(key, now)
        if value is None:
            members: set[bytes] = set()
            self._store(key, members)
        elif type(value) is set:
            members = value
        else:
            return WRONGTYPE
        before = len(members)
        members.update(args[1:])
        return len(members) - before

    def _cmd_srem(self, args: Args, now: int) -> Reply:
        key = args[0]
        value = self._live_for_write(key, now)
        if value is None:
            return 0
        if type(value) is not set:
            return WRONGTYPE
        before = len(value)
        value.difference_update(args[1:])
        removed = before - len(value)
        if not value:
            self._delete(key)
        return removed

    def _cmd_smembers(self, args: Args, now: int) -> Reply:
        members = self._set(args[0], now)
        if isinstance(members, Error):
            return members
        if members is None:
            return []
        ordered: list[Reply] = [*sorted(members)]
        return ordered

    def _cmd_sismember(self, args: Args, now: int) -> Reply:
        members = self._set(args[0], now)
        if isinstance(members, Error):
            return members
        return 1 if members is not None and args[1] in members else 0

    def _cmd_scard(self, args: Args, now: int) -> Reply:
        members = self._set(args[0], now)
        if isinstance(members, Error):
            return members
        return 0 if members is None else len(members)

    # ------------------------------------------------------------------ lists

    def _list(self, key: bytes, now: int) -> deque[bytes] | Error | None:
        value = self._live(key, now)
        if value is None or type(value) is deque:
            return value
        return WRONGTYPE

    def _push(self, args: Args, now: int, left: bool) -> Reply:
        key = args[0]
        value = self._live_for_write(key, now)
        if value is None:
            items: deque[bytes] = deque()
            self._store(key, items)
        elif type(value) is deque:
            items = value
        else:
            return WRONGTYPE
        if left:
            items.extendleft(args[1:])
        else:
            items.extend(args[1:])
        return len(items)

    def _cmd_lpush(self, args: Args, now: int) -> Reply:
        return self._push(args, now, True)

    def _cmd_rpush(self, args: Args, now: int) -> Reply:
        return self._push(args, now, False)

    def _pop(self, args: Args, now: int, left: bool, name: str) -> Reply:
        if len(args) > 2:
            return arity_error(name)
        count: int | None = None
        if len(args) == 2:
            count = parse_int(args[1])
            if count is None:
                return NOT_INTEGER
            if count < 0:
                return Error("ERR value is out of range, must be positive")
        key = args[0]
        value = self._live_for_write(key, now)
        if value is None:
            return None
        if type(value) is not deque:
            return WRONGTYPE
        pop = value.popleft if left else value.pop
        if count is None:
            reply: Reply = pop()
        else:
            popped: list[Reply] = [pop() for _ in range(min(count, len(value)))]
            reply = popped
        if not value:
            self._delete(key)
        return reply

    def _cmd_lpop(self, args: Args, now: int) -> Reply:
        return self._pop(args, now, True, "lpop")

    def _cmd_rpop(self, args: Args, now: int) -> Reply:
        return self._pop(args, now, False, "rpop")

    def _cmd_lrange(self, args: Args, now: int) -> Reply:
        start = parse_int(args[1])
        stop = parse_int(args[2])
        if start is None or stop is None:
            return NOT_INTEGER
        items = self._list(args[0], now)
        if items is None:
            return []
        if isinstance(items, Error):
            return items
        length = len(items)
        if start < 0:
            start += length
        if stop < 0:
            stop += length
        start = max(start, 0)
        if start > stop or start >= length:
            return []
        stop = min(stop, length - 1)
        window: list[Reply] = [*islice(items, start, stop + 1)]
        return window

    def _cmd_llen(self, args: Args, now: int) -> Reply:
        items = self._list(args[0], now)
        if isinstance(items, Error):
            return items
        return 0 if items is None else len(items)


_EXPIRE_OPTIONS: dict[bytes, tuple[int, bool]] = {
    b"EX": (1000, True),
    b"PX": (1, True),
    b"EXAT": (1000, False),
    b"PXAT": (1, False),
}


def _parse_cursor(data: bytes) -> int | None:
    """A SCAN cursor as C's strtoul reads it (decimal, optional sign, wrapping "-n")."""
    if not data or data[0] in b" \t\n\v\f\r":
        return None
    sign = data[:1]
    digits = data[1:] if sign in (b"+", b"-") else data
    if not digits.isdigit():
        return None
    value = int(digits)
    if value > _UINT64_MAX:
        return None
    return (-value) % (2**64) if sign == b"-" else value


_Handler = Callable[[KVStateMachine, Args, int], Reply]

_TABLE: tuple[tuple[str, _Handler, int, bool], ...] = (
    # name, handler, arity (Redis convention), write
    ("get", KVStateMachine._cmd_get, 2, False),
    ("set", KVStateMachine._cmd_set, -3, True),
    ("setnx", KVStateMachine._cmd_setnx, 3, True),
    ("getset", KVStateMachine._cmd_getset, 3, True),
    ("getdel", KVStateMachine._cmd_getdel, 2, True),
    ("mget", KVStateMachine._cmd_mget, -2, False),
    ("mset", KVStateMachine._cmd_mset, -3, True),
    ("append", KVStateMachine._cmd_append, 3, True),
    ("strlen", KVStateMachine._cmd_strlen, 2, False),
    ("incr", KVStateMachine._cmd_incr, 2, True),
    ("decr", KVStateMachine._cmd_decr, 2, True),
    ("incrby", KVStateMachine._cmd_incrby, 3, True),
    ("decrby", KVStateMachine._cmd_decrby, 3, True),
    ("incrbyfloat", KVStateMachine._cmd_incrbyfloat, 3, True),
    ("del", KVStateMachine._cmd_del, -2, True),
    ("unlink", KVStateMachine._cmd_del, -2, True),
    ("exists", KVStateMachine._cmd_exists, -2, False),
    ("type", KVStateMachine._cmd_type, 2, False),
    ("expire", KVStateMachine._cmd_expire, -3, True),
    ("pexpire", KVStateMachine._cmd_pexpire, -3, True),
    ("expireat", KVStateMachine._cmd_expireat, -3, True),
    ("pexpireat", KVStateMachine._cmd_pexpireat, -3, True),
    ("ttl", KVStateMachine._cmd_ttl, 2, False),
    ("pttl", KVStateMachine._cmd_pttl, 2, False),
    ("persist", KVStateMachine._cmd_persist, 2, True),
    ("keys", KVStateMachine._cmd_keys, 2, False),
    ("scan", KVStateMachine._cmd_scan, -2, False),
    ("dbsize", KVStateMachine._cmd_dbsize, 1, False),
    ("flushdb", KVStateMachine._cmd_flushdb, -1, True),
    ("flushall", KVStateMachine._cmd_flushdb, -1, True),
    ("hset", KVStateMachine._cmd_hset, -4, True),
    ("hget", KVStateMachine._cmd_hget, 3, False),
    ("hdel", KVStateMachine._cmd_hdel, -3, True),
    ("hgetall", KVStateMachine._cmd_hgetall, 2, False),
    ("hexists", KVStateMachine._cmd_hexists, 3, False),
    ("hlen", KVStateMachine._cmd_hlen, 2, False),
    ("hincrby", KVStateMachine._cmd_hincrby, 4, True),
    ("sadd", KVStateMachine._cmd_sadd, -3, True),
    ("srem", KVStateMachine._cmd_srem, -3, True),
    ("smembers", KVStateMachine._cmd_smembers, 2, False),
    ("sismember", KVStateMachine._cmd_sismember, 3, False),
    ("scard", KVStateMachine._cmd_scard, 2, False),
    ("lpush", KVStateMachine._cmd_lpush, -3, True),
    ("rpush", KVStateMachine._cmd_rpush, -3, True),
    ("lpop", KVStateMachine._cmd_lpop, -2, True),
    ("rpop", KVStateMachine._cmd_rpop, -2, True),
    ("lrange", KVStateMachine._cmd_lrange, 4, False),
    ("llen", KVStateMachine._cmd_llen, 2, False),
    ("phalanx.expire", KVStateMachine._cmd_phalanx_expire, 3, True),
)

_COMMANDS: dict[bytes, _Spec] = {
    name.upper().encode(): _Spec(handler, arity, write, name)
    for name, handler, arity, write in _TABLE
}
# Lowercase aliases spare an `upper()` on the hot path for clients that send lowercase names.
_COMMANDS.update({name.encode(): spec for name, spec in
                  ((spec.lower_name, spec) for spec in list(_COMMANDS.values()))})

COMMAND_NAMES: tuple[str, ...] = tuple(name.upper() for name, _, _, _ in _TABLE)
"""Every command the state machine knows, upper case, including PHALANX.EXPIRE."""


def is_write(command_name: bytes | str) -> bool:
    """True when the command changes state and must go through the log.

    Unknown commands count as writes: they are never served locally (apply answers them with
    an error).
    """
    name = command_name.encode() if isinstance(command_name, str) else command_name
    spec = _COMMANDS.get(name.upper())
    return spec is None or spec.write


def is_known(command_name: bytes | str) -> bool:
    """True when the state machine implements the command."""
    name = command_name.encode() if isinstance(command_name, str) else command_name
    return name.upper() in _COMMANDS


def expire_command_args(key: bytes, expire_at_ms: int) -> tuple[bytes, tuple[bytes, ...]]:
    """The name and args of the internal command deleting `key` if it expires at exactly that."""
    return EXPIRE_COMMAND, (key, b"%d" % expire_at_ms)

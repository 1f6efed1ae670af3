"""The conflict-free types of active-active keys and their merge rules (docs/active-active.md).

Delta-state CRDTs (Almeida, Shoker, Baquero, "Delta state replicated data types", JPDC 2018;
Shapiro, Preguica, Baquero, Zawirski, "Conflict-free replicated data types", SSS 2011): every
local write is applied as `state.join(delta)` and the same `delta` is shipped to the other
regions, which join it too. `join` is idempotent, commutative and associative, so a delta
delivered twice, late, out of order, or folded into a full state converges to one state: at
least once delivery gives an exactly-once effect by construction.

- `Register` (strings written by SET): last writer wins by the stamp (hybrid logical clock,
  then region id as the deterministic tie-break); DEL writes a tombstone with a new stamp.
- `Counter` (strings written by INCR/DECR/INCRBY/DECRBY): a PN-counter with one entry per
  region (only region r writes entry r; join = max per entry), so concurrent increments all
  count. DEL is an observed reset: it records the entries it saw as a base subtracted from the
  value, so an increment it did not see survives (as Redis Enterprise's counters).
- `DotMap` (sets, hashes): an add-wins observed-remove map (Almeida et al. 2018, §7, the
  "AWORSet" over a dot store and a causal context). Each add gets a fresh dot (region, n); a
  remove (SREM, HDEL, DEL) removes only the dots it observed, so an add concurrent with a
  remove wins. A hash field's value is the payload of its live dot with the greatest (hlc,
  region): concurrent HSETs of one field resolve last-writer-wins, HSET vs HDEL add-wins.
- `KeyState`: one key may hold several typed states after concurrent writes of different types
  in two regions; the visible one is the existing state written last (greatest stamp). Keeping
  all of them side by side keeps `join` a lattice join (a per-type join).

Rules of this file: pure and deterministic; encodings (`encode`/`decode`) are plain lists with
sorted contents, so equal states encode to equal bytes (snapshots, digests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from phalanx.errors import Corrupt

Stamp: TypeAlias = tuple[int, str]
"""(hybrid logical clock, region id): the order of writes to one key."""
Dot: TypeAlias = tuple[str, int]
"""(region id, n): the n-th add a region made to one key's set or hash."""
Payload: TypeAlias = "tuple[int, bytes] | None"
"""A hash field's (hlc, value) for its dot; None for a set's element."""
Plain: TypeAlias = "list[object]"

ZERO_STAMP: Stamp = (0, "")


@dataclass(slots=True)
class Register:
    """A last-writer-wins register; `value` None is a tombstone (DEL)."""

    stamp: Stamp = ZERO_STAMP
    value: bytes | None = None

    @property
    def exists(self) -> bool:
        return self.value is not None

    def join(self, other: Register) -> None:
        if other.stamp > self.stamp:
            self.stamp, self.value = other.stamp, other.value

    def encode(self) -> Plain:
        return [self.stamp[0], self.stamp[1], self.value]

    @staticmethod
    def decode(plain: Plain) -> Register:
        hlc, region, value = plain
        if not isinstance(hlc, int) or not isinstance(region, str) or not (
                value is None or isinstance(value, bytes)):
            raise Corrupt("active-active register: bad fields")
        return Register((hlc, region), value)


def _pairs(entries: dict[str, int]) -> list[list[object]]:
    return [[region, count] for region, count in sorted(entries.items())]


def _unpairs(plain: object) -> dict[str, int]:
    if not isinstance(plain, list):
        raise Corrupt("active-active state: bad entry list")
    out: dict[str, int] = {}
    for pair in plain:
        if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str) \
                or not isinstance(pair[1], int):
            raise Corrupt("active-active state: bad (region, count) pair")
        out[pair[0]] = pair[1]
    return out


def _join_max(mine: dict[str, int], theirs: dict[str, int]) -> None:
    for region, count in theirs.items():
        if count > mine.get(region, 0):
            mine[region] = count


@dataclass(slots=True)
class Counter:
    """A PN-counter with observed reset (see the module docstring)."""

    stamp: Stamp = ZERO_STAMP
    up: dict[str, int] = field(default_factory=dict)
    down: dict[str, int] = field(default_factory=dict)
    up_base: dict[str, int] = field(default_factory=dict)
    down_base: dict[str, int] = field(default_factory=dict)

    @property
    def value(self) -> int:
        return (sum(self.up.values()) - sum(self.down.values())
                - sum(self.up_base.values()) + sum(self.down_base.values()))

    @property
    def exists(self) -> bool:
        return any(count > self.up_base.get(region, 0) for region, count in self.up.items()) \
            or any(count > self.down_base.get(region, 0)
                   for region, count in self.down.items())

    def increment(self, region: str, by: int, stamp: Stamp) -> Counter:
        """Add `by` (may be negative) as `region`; returns the delta (already joined)."""
        if by >= 0:
            delta = Counter(stamp, up={region: self.up.get(region, 0) + by})
        else:
            delta = Counter(stamp, down={region: self.down.get(region, 0) - by})
        self.join(delta)
        return delta

    def reset(self, stamp: Stamp) -> Counter:
        """DEL: subtract everything observed; returns the delta (already joined)."""
        delta = Counter(stamp, up_base=dict(self.up), down_base=dict(self.down))
        self.join(delta)
        return delta

    def join(self, other: Counter) -> None:
        if other.stamp > self.stamp:
            self.stamp = other.stamp
        _join_max(self.up, other.up)
        _join_max(self.down, other.down)
        _join_max(self.up_base, other.up_base)
        _join_max(self.down_base, other.down_base)

    def encode(self) -> Plain:
        return [self.stamp[0], self.stamp[1], _pairs(self.up), _pairs(self.down),
                _pairs(self.up_base), _pairs(self.down_base)]

    @staticmethod
    def decode(plain: Plain) -> Counter:
        hlc, region, up, down, up_base, down_base = plain
        if not isinstance(hlc, int) or not isinstance(region, str):
            raise Corrupt("active-active counter: bad stamp")
        return Counter((hlc, region), _unpairs(up), _unpairs(down), _unpairs(up_base),
                       _unpairs(down_base))


@dataclass(slots=True)
class DotMap:
    """An add-wins observed-remove map of elements to dots (see the module docstring).

    `entries[element][dot]` is the dot's payload; the causal context is `clock` (every dot
    (r, n) with n <= clock[r]) plus `cloud` (dots seen out of order). `index` maps every live
    dot to its element (derived, not encoded)."""

    stamp: Stamp = ZERO_STAMP
    entries: dict[bytes, dict[Dot, Payload]] = field(default_factory=dict)
    clock: dict[str, int] = field(default_factory=dict)
    cloud: set[Dot] = field(default_factory=set)
    index: dict[Dot, bytes] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return bool(self.entries)

    def seen(self, dot: Dot) -> bool:
        return dot[1] <= self.clock.get(dot[0], 0) or dot in self.cloud

    def add(self, element: bytes, payload: Payload, region: str, stamp: Stamp) -> DotMap:
        """Add (or overwrite) `element` as `region`: a fresh dot that supersedes the dots of
        the element this replica observed. Returns the delta (already joined)."""
        dot = (region, self.clock.get(region, 0) + 1)
        context = set(self.entries.get(element, {}))
        context.add(dot)
        delta = DotMap(stamp, {element: {dot: payload}}, {}, context, {dot: element})
        self.join(delta)
        return delta

    def remove(self, elements: list[bytes], stamp: Stamp) -> DotMap:
        """Remove the observed dots of `elements` (all elements if empty: DEL). Returns the
        delta (already joined)."""
        chosen = elements if elements else list(self.entries)
        context = {dot for element in chosen for dot in self.entries.get(element, {})}
        delta = DotMap(stamp, {}, {}, context, {})
        self.join(delta)
        return delta

    def join(self, other: DotMap) -> None:
        """The join of Almeida et al. 2018 (§5, the dot kernel): keep a dot present on both
        sides, or on one side and unseen by the other's context."""
        if other.stamp > self.stamp:
            self.stamp = other.stamp
        # Removals: our dots the other side has seen and dropped.
        if other.clock:
            candidates = [dot for dot in self.index if other.seen(dot)]
        else:  # a delta: only its explicit context can remove anything
            candidates = [dot for dot in other.cloud if dot in self.index]
        for dot in candidates:
            if dot not in other.index:
                element = self.index.pop(dot)
                dots = self.entries[element]
                del dots[dot]
                if not dots:
                    del self.entries[element]
        # Additions: their dots we have not seen (checked against our context BEFORE it grows).
        for dot, element in other.index.items():
            if dot not in self.index and not self.seen(dot):
                self.entries.setdefault(element, {})[dot] = other.entries[element][dot]
                self.index[dot] = element
        _join_max(self.clock, other.clock)
        self.cloud |= other.cloud
        self._compact()

    def _compact(self) -> None:
        if not self.cloud:
            return
        for dot in sorted(self.cloud):
            region, count = dot
            top = self.clock.get(region, 0)
            if count <= top:
                self.cloud.discard(dot)
            elif count == top + 1:
                self.clock[region] = count
                self.cloud.discard(dot)

    def field_value(self, element: bytes) -> bytes | None:
        """A hash field's value: its live dot with the greatest (hlc, region)."""
        dots = self.entries.get(element)
        if not dots:
            return None
        best: tuple[int, str, bytes] | None = None
        for (region, _count), payload in dots.items():
            if payload is not None and (best is None or (payload[0], region) > best[:2]):
                best = (payload[0], region, payload[1])
        return None if best is None else best[2]

    def encode(self) -> Plain:
        entries = [[element, [[dot[0], dot[1], None if payload is None else list(payload)]
                              for dot, payload in sorted(dots.items())]]
                   for element, dots in sorted(self.entries.items())]
        return [self.stamp[0], self.stamp[1], _pairs(self.clock),
                [[region, count] for region, count in sorted(self.cloud)], entries]

    @staticmethod
    def decode(plain: Plain) -> DotMap:
        hlc, region, clock, cloud, entries = plain
        if not isinstance(hlc, int) or not isinstance(region, str) or not isinstance(
                cloud, list) or not isinstance(entries, list):
            raise Corrupt("active-active set/hash: bad fields")
        state = DotMap((hlc, region), {}, _unpairs(clock), set())
        for dot in cloud:
            if not isinstance(dot, list) or len(dot) != 2 or not isinstance(dot[0], str) \
                    or not isinstance(dot[1], int):
                raise Corrupt("active-active set/hash: bad context dot")
            state.cloud.add((dot[0], dot[1]))
        for item in entries:
            if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes):
                raise Corrupt("active-active set/hash: bad element")
            element, dots = item
            decoded: dict[Dot, Payload] = {}
            for dot_region, count, payload in dots:
                if not isinstance(dot_region, str) or not isinstance(count, int):
                    raise Corrupt("active-active set/hash: bad dot")
                if payload is not None:
                    if not isinstance(payload, list) or len(payload) != 2 or not isinstance(
                            payload[0], int) or not isinstance(payload[1], bytes):
                        raise Corrupt("active-active hash: bad field payload")
                    decoded[(dot_region, count)] = (payload[0], payload[1])
                else:
                    decoded[(dot_region, count)] = None
                state.index[(dot_region, count)] = element
            if decoded:
                state.entries[element] = decoded
        state._compact()  # a delta's context is a cloud: normalise, so equal states are equal
        return state


Typed: TypeAlias = Register | Counter | DotMap
#: The type names (as TYPE answers) and their classes.
#: The key's expiry: not a type but a last-writer-wins register of the expiry time (ms as
#: decimal bytes; None = no expiry: PERSIST, SET, DEL).
EXPIRE = "expire"
TYPES: dict[str, type[Register] | type[Counter] | type[DotMap]] = {
    "string": Register, "counter": Counter, "set": DotMap, "hash": DotMap, EXPIRE: Register,
}


@dataclass(slots=True)
class KeyState:
    """Everything one active-active key holds, per type (see the module docstring)."""

    typed: dict[str, Typed] = field(default_factory=dict)

    def visible(self, now_ms: int | None = None) -> tuple[str, Typed] | None:
        """(type name, state) of the existing state written last, or None (no such key, or
        expired at `now_ms`)."""
        if now_ms is not None and self.expired(now_ms):
            return None
        best: tuple[Stamp, str] | None = None
        for name, state in self.typed.items():
            if name != EXPIRE and state.exists and (best is None or (state.stamp, name) > best):
                best = (state.stamp, name)
        return None if best is None else (best[1], self.typed[best[1]])

    def expire_at(self) -> int | None:
        """The key's expiry time in ms, or None."""
        register = self.typed.get(EXPIRE)
        if not isinstance(register, Register) or register.value is None:
            return None
        return int(register.value)

    def expired(self, now_ms: int) -> bool:
        at = self.expire_at()
        return at is not None and now_ms >= at

    def max_stamp(self) -> Stamp:
        return max((state.stamp for state in self.typed.values()), default=ZERO_STAMP)

    def join(self, other: KeyState) -> None:
        for name, theirs in other.typed.items():
            mine = self.typed.get(name)
            if mine is None:
                self.typed[name] = decode_typed(name, theirs.encode())  # a private copy
            elif isinstance(mine, Register):
                if isinstance(theirs, Register):
                    mine.join(theirs)
            elif isinstance(mine, Counter):
                if isinstance(theirs, Counter):
                    mine.join(theirs)
            elif isinstance(theirs, DotMap):
                mine.join(theirs)

    def encode(self) -> Plain:
        return [[name, state.encode()] for name, state in sorted(self.typed.items())]

    @staticmethod
    def decode(plain: object) -> KeyState:
        if not isinstance(plain, list):
            raise Corrupt("active-active key: bad state")
        state = KeyState()
        for item in plain:
            if not isinstance(item, list) or len(item) != 2 or item[0] not in TYPES \
                    or not isinstance(item[1], list):
                raise Corrupt("active-active key: bad typed state")
            state.typed[item[0]] = decode_typed(item[0], item[1])
        return state


def decode_typed(name: str, plain: Plain) -> Typed:
    """The typed state `name` from its plain encoding; raises Corrupt."""
    try:
        if name in ("string", EXPIRE):
            return Register.decode(plain)
        if name == "counter":
            return Counter.decode(plain)
        return DotMap.decode(plain)
    except (ValueError, TypeError) as error:
        raise Corrupt(f"active-active {name}: {error}") from error

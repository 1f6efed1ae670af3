"""Helpers several command families share: per-entry deterministic randomness, the cursor
scans of one collection (HSCAN, SSCAN), Redis's bounded-integer argument parsing.

What this module holds:
- `EntryRandom`: the randomness of SPOP, SRANDMEMBER, HRANDFIELD and RANDOMKEY. It is a
  BLAKE2b counter stream seeded from the replicated clock and the command's own words, so a
  write (SPOP) picks the same members on every replica applying the same log entry, and a
  read gives the same answer for the same state, time and arguments. It never touches the
  global generator (kv imports no `random`).
- `parse_cursor`, `parse_scan_options`, `scan_collection`: the cursor protocol of SCAN and its
  per-key forms. A small collection (up to `SMALL_COLLECTION` elements) is answered whole with
  cursor 0, as Redis does for its compact encodings; a larger one is walked in the order of a
  64-bit hash of each element, the cursor being a hash value, so the cursor means the same on
  every replica and an element present for the whole iteration is returned at least once.
- `parse_long_in`: Redis's getRangeLongFromObjectOrReply (an integer in a range, one error).

Rules of this module: pure and deterministic (standard library and the kv leaf modules only).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import blake2b

from phalanx.kv.glob import glob_match
from phalanx.kv.keyspace import scan_hash
from phalanx.kv.numbers import parse_int
from phalanx.kv.replies import NOT_INTEGER, SYNTAX_ERROR, Error

SMALL_COLLECTION = 128
"""Collections up to this size are scanned in one call, as Redis answers its compact encodings."""

_UINT64_MAX = 2**64 - 1
_LONG_MAX = 2**63 - 1


class EntryRandom:
    """A deterministic random stream for one command (see the module docstring)."""

    __slots__ = ("_counter", "_seed")

    def __init__(self, now: int, *parts: bytes) -> None:
        digest = blake2b(digest_size=32)
        digest.update(b"%d" % now)
        for part in parts:
            digest.update(b"%d:" % len(part))
            digest.update(part)
        self._seed = digest.digest()
        self._counter = 0

    def below(self, bound: int) -> int:
        """A uniform integer in [0, bound), bound >= 1 (rejection sampling: no modulo bias)."""
        limit = (1 << 64) - (1 << 64) % bound
        while True:
            self._counter += 1
            word = int.from_bytes(
                blake2b(self._counter.to_bytes(8, "big"), key=self._seed, digest_size=8).digest(),
                "big")
            if word < limit:
                return word % bound

    def word(self) -> int:
        """A uniform 64-bit integer."""
        return self.below(1 << 64)

    def sample(self, items: Sequence[bytes], count: int) -> list[bytes]:
        """`count` (<= len(items)) distinct items in random order (partial Fisher-Yates)."""
        pool = list(items)
        for position in range(count):
            other = position + self.below(len(pool) - position)
            pool[position], pool[other] = pool[other], pool[position]
        return pool[:count]


def parse_cursor(data: bytes) -> int | None:
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


def parse_scan_options(options: Sequence[bytes]) -> tuple[int, bytes | None] | Error:
    """COUNT and MATCH of HSCAN / SSCAN: (count, pattern or None for "everything")."""
    count = 10
    pattern: bytes | None = None
    position = 0
    while position < len(options):
        option = options[position].upper()
        if position + 1 >= len(options):
            return SYNTAX_ERROR
        argument = options[position + 1]
        if option == b"COUNT":
            parsed = parse_int(argument)
            if parsed is None:
                return NOT_INTEGER
            if parsed < 1:
                return SYNTAX_ERROR
            count = parsed
        elif option == b"MATCH":
            pattern = None if argument == b"*" else argument
        else:
            return SYNTAX_ERROR
        position += 2
    return count, pattern


def scan_collection(elements: Iterable[bytes], size: int, cursor: int, count: int,
                    pattern: bytes | None) -> tuple[int, list[bytes]]:
    """About `count` elements of a collection from `cursor` and the cursor after them.

    `elements` is the collection in its reply order (small collections come back whole in that
    order); larger ones are walked by `scan_hash`. MATCH filters after the walk, as in Redis.
    """
    if size <= SMALL_COLLECTION:
        found = list(elements)
        next_cursor = 0
    else:
        ordered = sorted((scan_hash(element), element) for element in elements)
        found = []
        next_cursor = 0
        last_hash = -1
        for element_hash, element in ordered:
            if element_hash < cursor:
                continue
            if len(found) >= count and element_hash != last_hash:
                next_cursor = element_hash
                break
            last_hash = element_hash
            found.append(element)
    if pattern is not None:
        found = [element for element in found if glob_match(pattern, element)]
    return next_cursor, found


def parse_long_in(data: bytes, low: int, high: int, message: str | None) -> int | Error:
    """Redis's getRangeLongFromObjectOrReply: an integer in [low, high], else one error.

    With `message`, both a non-integer and an out-of-range value get "ERR <message>";
    without, "value is not an integer or out of range" / "value is out of range, must be
    positive" (low 0) or "value is out of range, value must between ..."."""
    value = parse_int(data)
    if value is None:
        return Error(f"ERR {message}") if message else NOT_INTEGER
    if value < low or value > high:
        if message:
            return Error(f"ERR {message}")
        return Error(f"ERR value is out of range, value must between {low} and {high}")
    return value


def parse_positive(data: bytes, message: str = "value is out of range, must be positive"
                   ) -> int | Error:
    """Redis's getPositiveLongFromObjectOrReply: 0..LONG_MAX, one error text for both faults."""
    return parse_long_in(data, 0, _LONG_MAX, message)

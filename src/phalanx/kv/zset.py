"""The sorted-set value type: `ZSet`, and the score rules Redis 7.0 applies to it.

What this module holds:
- `ZSet`: a dict member -> score plus a `sortedcontainers.SortedList` of (score, member)
  pairs, ordered as Redis orders a sorted set: by score, then by member bytes (memcmp). Python
  compares `(float, bytes)` tuples exactly that way, so the list needs no key function.
- `parse_score` (a ZADD / ZINCRBY score, Redis's `getDoubleFromObject`), `parse_bound` (a
  ZRANGEBYSCORE bound, Redis's `zslParseRange`), `format_score` (a score in a reply, Redis
  7.0's `addReplyDouble`: `%.17g`), `format_scan_score` (a score in ZSCAN, Redis 7.0's
  `d2string`: integral values as integers).

Rules of this module:
- Pure and deterministic; standard library plus `sortedcontainers` (pinned in pyproject).
- A stored score is never NaN, and never -0.0 (stored as 0.0, as Redis's default compact
  encoding does: `ZADD k -0 m` then `ZSCORE k m` answers "0"). An empty ZSet is never stored.
- The snapshot writes a ZSet as a dict member -> float in (score, member) order (see
  `snapshot.py`); `ZSet.from_items` rebuilds it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import cast

from sortedcontainers import SortedList

_DECIMAL = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX = re.compile(rb"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?")
_INFINITY = re.compile(rb"([+-]?)(?:inf|infinity)", re.IGNORECASE)
_C_SPACE = b" \t\n\v\f\r"
_LLONG_HALF = float((2**63 - 1) // 2)

COMPACT_ENTRIES = 128
"""Redis's zset-max-listpack-entries: up to this many members a set is "compact"."""


class _Top:
    """Greater than any member: `(score, TOP)` sorts after every pair with that score."""

    __slots__ = ()

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return True


TOP = _Top()


def _before(score: float) -> tuple[float, bytes]:
    """A probe sorting before every pair with this score (a shorter tuple sorts first)."""
    return cast("tuple[float, bytes]", (score,))


def _after(score: float) -> tuple[float, bytes]:
    """A probe sorting after every pair with this score."""
    return cast("tuple[float, bytes]", (score, TOP))


class ZSet:
    """A sorted set: member -> score, and the (score, member) pairs in Redis's order."""

    __slots__ = ("order", "scores")

    def __init__(self) -> None:
        self.scores: dict[bytes, float] = {}
        self.order: SortedList[tuple[float, bytes]] = SortedList()

    @classmethod
    def from_items(cls, items: Iterable[tuple[bytes, float]]) -> ZSet:
        """A ZSet holding the (member, score) pairs given (members distinct)."""
        zset = cls()
        zset.scores = dict(items)
        zset.order = SortedList((score, member) for member, score in zset.scores.items())
        return zset

    def copy(self) -> ZSet:
        """An independent ZSet with the same members and scores."""
        return ZSet.from_items(self.scores.items())

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        """The (score, member) pairs, lowest first."""
        return iter(self.order)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZSet) and self.scores == other.scores

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ZSet({list(self.order)!r})"

    def add(self, member: bytes, score: float) -> None:
        """Set `member`'s score (adding the member if new)."""
        if score == 0.0:
            score = 0.0  # no -0.0
        old = self.scores.get(member)
        if old is not None:
            if old == score:
                return
            self.order.remove((old, member))
        self.scores[member] = score
        self.order.add((score, member))

    def remove(self, member: bytes) -> bool:
        """Remove `member`; False when it was absent."""
        score = self.scores.pop(member, None)
        if score is None:
            return False
        self.order.remove((score, member))
        return True

    def rank(self, member: bytes) -> int | None:
        """The 0-based position of `member` from the lowest score, or None if absent."""
        score = self.scores.get(member)
        if score is None:
            return None
        return int(self.order.bisect_left((score, member)))

    def score_span(self, low: float, low_open: bool, high: float, high_open: bool
                   ) -> tuple[int, int]:
        """The positions [start, stop) of the pairs whose score is within the bounds."""
        order = self.order
        start = order.bisect_right(_after(low)) if low_open else order.bisect_left(_before(low))
        stop = order.bisect_left(_before(high)) if high_open else order.bisect_right(_after(high))
        return int(start), int(max(start, stop))

    def lex_span(self, low: LexBound, high: LexBound, reverse: bool = False
                 ) -> tuple[int, int]:
        """The positions [start, stop) of the members within the lex bounds.

        Redis assumes every member has the same score (then members are sorted and every
        method agrees). With mixed scores we answer as Redis's compact encoding (at most
        `COMPACT_ENTRIES` members) does, scanning from the head (from the tail when
        `reverse`); a larger set is bisected. Deterministic either way."""
        order = self.order
        count = len(order)
        if (not count or lex_range_empty(low, high) or lex_below_min(order[-1][1], low)
                or lex_above_max(order[0][1], high)):
            return 0, 0  # Redis's early exits (zslIsInLexRange)
        if count > COMPACT_ENTRIES:
            return self._lex_bisect(low, high)
        if reverse:
            stop = count
            while stop > 0 and lex_above_max(order[stop - 1][1], high):
                stop -= 1
            if stop == 0 or lex_below_min(order[stop - 1][1], low):
                return 0, 0
            start = stop - 1
            while start > 0 and not lex_below_min(order[start - 1][1], low):
                start -= 1
            return start, stop
        start = 0
        while start < count and lex_below_min(order[start][1], low):
            start += 1
        if start == count or lex_above_max(order[start][1], high):
            return 0, 0
        stop = start + 1
        while stop < count and not lex_above_max(order[stop][1], high):
            stop += 1
        return start, stop

    def _lex_bisect(self, low: LexBound, high: LexBound) -> tuple[int, int]:
        order = self.order
        lo, hi = 0, len(order)
        while lo < hi:  # the first member not below `low`
            middle = (lo + hi) // 2
            if lex_below_min(order[middle][1], low):
                lo = middle + 1
            else:
                hi = middle
        start = lo
        hi = len(order)
        while lo < hi:  # the first member above `high`
            middle = (lo + hi) // 2
            if lex_above_max(order[middle][1], high):
                hi = middle
            else:
                lo = middle + 1
        return start, max(start, lo)


LexBound = tuple[int, bytes]
"""A lex range end: (kind, value) with kind -1 = "-", 1 = "+", 0 = "[value", 2 = "(value"."""

MINUS_INFINITY: LexBound = (-1, b"")
PLUS_INFINITY: LexBound = (1, b"")


def lex_range_empty(low: LexBound, high: LexBound) -> bool:
    """True for a range that is empty whatever the members (min after max, or equal ends
    with one exclusive; "-" and "+" count as exclusive ends)."""
    if low[0] in (-1, 1) and low == high:
        order = 0
    elif low[0] == -1 or high[0] == 1:
        order = -1
    elif low[0] == 1 or high[0] == -1:
        order = 1
    else:
        order = (low[1] > high[1]) - (low[1] < high[1])
    return order > 0 or (order == 0 and (low[0] != 0 or high[0] != 0))


def lex_below_min(member: bytes, low: LexBound) -> bool:
    """True when `member` sorts before the range's minimum."""
    kind, value = low
    if kind == -1:
        return False
    if kind == 1:
        return True
    return member < value if kind == 0 else member <= value


def lex_above_max(member: bytes, high: LexBound) -> bool:
    """True when `member` sorts after the range's maximum."""
    kind, value = high
    if kind == 1:
        return False
    if kind == -1:
        return True
    return member > value if kind == 0 else member >= value


def parse_lex_bound(data: bytes) -> LexBound | None:
    """A ZRANGEBYLEX bound ("-", "+", "[x", "(x"), or None when invalid."""
    if data == b"-":
        return MINUS_INFINITY
    if data == b"+":
        return PLUS_INFINITY
    if data[:1] == b"[":
        return (0, data[1:])
    if data[:1] == b"(":
        return (2, data[1:])
    return None


def _strtod(data: bytes) -> float | None:
    """C's strtod over the whole of `data` (no leading space), or None when it stops early.

    Overflow gives +/-inf and underflow 0.0, as strtod does (callers decide about ERANGE);
    NaN gives None."""
    if _DECIMAL.fullmatch(data) is not None:
        return float(data)
    if _HEX.fullmatch(data) is not None:
        negative = data[:1] == b"-"
        text = data[1:] if data[:1] in (b"+", b"-") else data
        if b"p" not in text and b"P" not in text:
            text += b"p0"
        try:
            value = float.fromhex(text.decode())
        except OverflowError:
            value = math.inf
        return -value if negative else value
    match = _INFINITY.fullmatch(data)
    if match is not None:
        return -math.inf if match.group(1) == b"-" else math.inf
    return None


def parse_score(data: bytes) -> float | None:
    """A score argument as Redis 7.0's `getDoubleFromObject` reads it, or None (not a valid
    float): strtod over the whole string, no leading space, no NaN, no overflow of a finite
    literal to infinity, no underflow of a nonzero literal to zero."""
    if not data or data[:1] in (b" ", b"\t", b"\n", b"\v", b"\f", b"\r"):
        return None
    value = _strtod(data)
    if value is None:
        return None
    if math.isinf(value) and _INFINITY.fullmatch(data) is None:
        return None  # ERANGE overflow
    if value == 0.0 and _nonzero_literal(data):
        return None  # ERANGE underflow to zero
    return value


def _nonzero_literal(data: bytes) -> bool:
    """True when the mantissa of a decimal or hex float literal has a nonzero digit."""
    lowered = data.lower()
    if b"x" in lowered:
        digits = lowered.split(b"x", 1)[1].split(b"p", 1)[0]
    else:
        digits = lowered.split(b"e", 1)[0]
    return any(digit not in b"0.+-" for digit in digits)


def parse_bound(data: bytes) -> tuple[float, bool] | None:
    """A ZRANGEBYSCORE-style bound as Redis 7.0's `zslParseRange` reads it: (value, open),
    "(" meaning open; strtod after optional leading space, no NaN. None when invalid."""
    open_bound = data[:1] == b"("
    text = data[1:] if open_bound else data
    if not text:
        return 0.0, open_bound  # strtod("") converts nothing and stops at the end
    stripped = text.lstrip(_C_SPACE)
    if not stripped:
        return None
    value = _strtod(stripped)
    if value is None:
        return None
    return value, open_bound


def format_score(score: float) -> bytes:
    """A score as Redis 7.0 replies with it (addReplyDouble: `%.17g`, "inf", "-inf")."""
    return b"%.17g" % score


def format_scan_score(score: float) -> bytes:
    """A score as Redis 7.0's ZSCAN shows it (d2string: an integral value within +/-
    LLONG_MAX/2 as an integer, otherwise `%.17g`)."""
    if -_LLONG_HALF <= score <= _LLONG_HALF and score == int(score):
        return b"%d" % int(score)
    return b"%.17g" % score

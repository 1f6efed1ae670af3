"""SORT and SORT_RO: the elements of a list or set, sorted numerically or lexically, optionally
by weights from other keys (BY), projected through other keys (GET), paged (LIMIT) and stored
as a list (STORE, SORT only). See https://redis.io/commands/sort.

Rules of this module:
- Replies follow Redis 7.0: numeric sort by C `strtod` of each element or weight (a value that
  is not a whole number gets "ERR One or more scores can't be converted into double"; equal
  scores fall back to byte order), ALPHA by bytes, a missing BY weight counts as 0 (numeric)
  or sorts first (ALPHA), a missing GET value is nil (an empty string when stored).
- Patterns that name other keys (BY with a `*`, GET other than `#`) may form any key this
  SHARD owns, checked key by key at apply time (`Keyspace.key_owned`, set by
  placement/shard.py; in log order, on every replica), phalanx's rule for every multi-key
  command and for scripts' undeclared keys: one shard serves them atomically. So in a
  single-shard cluster every pattern works, as on one redis-server; a `{hashtag}` pattern
  pinned to the key's own slot always works (Redis 7.2+ Cluster's rule); a formed key that
  lives in another shard gets "ERR BY|GET option of SORT denied in Cluster mode when keys
  formed by the pattern may be in different slots." before anything is written (Redis
  Cluster refuses every pattern that is not pinned, whatever the data). A bare state machine
  (no shard) owns every key. The STORE destination is a key of the request (`movable_keys`),
  so routing checks its slot like any other key.
- A set is sorted from its members in byte order (phalanx's reply order for sets), so `BY
  nosort` on a set answers in byte order where Redis answers in its hash-table order.
- A sorted set (`kv.zset.ZSet`, recognised by its `scores` dict so this module does not
  import it) is read in score order; `BY nosort` keeps that order (reversed with DESC).
- Pure and deterministic: standard library and the kv leaf modules only.
"""

from __future__ import annotations

import math
import re
from binascii import crc_hqx
from collections import deque
from collections.abc import Iterable
from typing import cast

from phalanx.kv.keyspace import Keyspace
from phalanx.kv.numbers import parse_int
from phalanx.kv.replies import NOT_INTEGER, SYNTAX_ERROR, WRONGTYPE, Error, Reply
from phalanx.kv.spec import Args, CommandSpec

_STRTOD = re.compile(
    rb"[ \t\n\v\f\r]*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    rb"|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?"
    rb"|inf(?:inity)?|nan(?:\([0-9A-Za-z_]*\))?)",
    re.IGNORECASE,
)
_MIN_NORMAL = 2.2250738585072014e-308


_PLAIN_NUMBER = re.compile(rb"-?[0-9]{1,15}(?:\.[0-9]{1,15})?")


def _score(data: bytes) -> float | None:
    """C strtod over the whole string (None when it fails, overflows, underflows or is NaN)."""
    if _PLAIN_NUMBER.fullmatch(data) is not None:
        return float(data)  # the common case: no exponent, no overflow, no underflow
    if data == b"":
        return 0.0  # strtod consumes nothing and leaves eptr at the terminator: Redis takes 0
    if _STRTOD.fullmatch(data) is None:
        return None
    text = data.strip(b" \t\n\v\f\r").lower()
    sign = -1.0 if text.startswith(b"-") else 1.0
    body = text.lstrip(b"+-")
    if body.startswith(b"nan"):
        return None
    if body.startswith(b"inf"):
        return sign * math.inf
    try:
        value = float.fromhex(text.decode()) if body.startswith(b"0x") else float(text)
    except (ValueError, OverflowError):
        return None
    if math.isinf(value) or (value != 0 and abs(value) < _MIN_NORMAL):
        return None  # ERANGE
    if value == 0 and any(digit in b"123456789" for digit in body.split(b"e")[0]):
        return None  # underflow to zero
    return value


def _slot(data: bytes) -> int:
    return crc_hqx(data, 0) & 16383


def _key_slot(key: bytes) -> int:
    """Redis Cluster's hash slot of a key (the `{hashtag}` rule); as placement.slots does."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return _slot(key[start + 1:end])
    return _slot(key)


def _pattern_slot(pattern: bytes) -> int | None:
    """The one slot every key the pattern forms hashes to, or None when it could vary.

    Only a `{hashtag}` closed before any `*`, `?`, `[` or `\\` pins the slot."""
    open_at = -1
    for position, byte in enumerate(pattern):
        if byte in b"*?[\\":
            return None
        if open_at == -1 and byte == ord("{"):
            open_at = position
        elif open_at != -1 and byte == ord("}"):
            if position == open_at + 1:
                return None
            return _slot(pattern[open_at + 1:position])
    return None


def _formed_key(pattern: bytes, element: bytes) -> tuple[bytes, bytes | None] | None:
    """(key, hash field or None) a BY / GET pattern forms for `element`; None without `*`."""
    star = pattern.find(b"*")
    if star == -1:
        return None
    arrow = pattern.find(b"->", star + 1)
    if arrow != -1 and arrow + 2 < len(pattern):
        return pattern[:star] + element + pattern[star + 1:arrow], pattern[arrow + 2:]
    return pattern[:star] + element + pattern[star + 1:], None


def _lookup(db: Keyspace, pattern: bytes, element: bytes, now: int) -> bytes | None:
    """The value a BY / GET pattern names for `element` (`#` is the element itself)."""
    if pattern == b"#":
        return element
    formed = _formed_key(pattern, element)
    if formed is None:
        return None
    key, field = formed
    value = db.live(key, now)
    if field is not None:
        return value.get(field) if type(value) is dict else None
    return value if type(value) is bytes else None


def _sort_generic(db: Keyspace, args: Args, now: int, readonly: bool) -> Reply:
    key = args[0]
    key_slot: int | None = None
    #: Options whose patterns may form keys of another shard (checked at lookup).
    foreign: list[tuple[bytes, bytes]] = []
    desc = alpha = dont_sort = False
    by: bytes | None = None
    gets: list[bytes] = []
    offset, count = 0, -1
    store: bytes | None = None
    position = 1
    while position < len(args):
        option = args[position].upper()
        left = len(args) - position - 1
        if option == b"ASC":
            desc = False
        elif option == b"DESC":
            desc = True
        elif option == b"ALPHA":
            alpha = True
        elif option == b"LIMIT" and left >= 2:
            start = parse_int(args[position + 1])
            limit = parse_int(args[position + 2])
            if start is None or limit is None:
                return NOT_INTEGER
            offset, count = start, limit
            position += 2
        elif option == b"STORE" and left >= 1 and not readonly:
            store = args[position + 1]
            position += 1
        elif option in (b"BY", b"GET") and left >= 1:
            pattern = args[position + 1]
            position += 1
            if option == b"BY" and b"*" not in pattern:
                dont_sort = True
                by = pattern
            else:
                if pattern != b"#" and db.key_owned is not None:
                    if key_slot is None:
                        key_slot = _key_slot(key)
                    if _pattern_slot(pattern) != key_slot:
                        foreign.append((option, pattern))  # its keys: checked below
                if option == b"BY":
                    by = pattern  # an earlier constant BY still means "don't sort", as in Redis
                else:
                    gets.append(pattern)
        else:
            return SYNTAX_ERROR
        position += 1
    value = db.live(key, now)
    elements: list[bytes]
    if value is None:
        elements = []
    elif type(value) is deque:
        elements = list(value)
    elif type(value) is set:
        elements = sorted(value)
        if dont_sort and store is not None:
            dont_sort, alpha, by = False, True, None  # Redis sorts a stored set: stable output
    elif isinstance(getattr(value, "scores", None), dict):
        # the sorted set (kv.zset.ZSet iterates (score, member) pairs, lowest first)
        elements = [member for _, member in cast("Iterable[tuple[float, bytes]]", value)]
        if dont_sort and desc:
            elements.reverse()
    else:
        return WRONGTYPE
    owned = db.key_owned
    if foreign and owned is not None:  # before anything is read or written
        for option, pattern in foreign:
            for element in elements:
                formed = _formed_key(pattern, element)
                if formed is not None and not owned(formed[0]):
                    return Error(f"ERR {option.decode()} option of SORT denied in Cluster "
                                 "mode when keys formed by the pattern may be in different "
                                 "slots.")
    if not dont_sort:
        sorted_elements = _sorted(db, elements, by, alpha, desc, now)
        if isinstance(sorted_elements, Error):
            return sorted_elements
        elements = sorted_elements
    elif desc and type(value) is deque:
        elements.reverse()  # (a sorted set was reversed above)
    length = len(elements)
    start = max(offset, 0)
    end = length - 1 if count < 0 else start + count - 1
    if start >= length:
        start, end = length - 1, length - 2
    end = min(end, length - 1)
    window = elements[start:end + 1] if end >= start else []
    output: list[Reply] = []
    for element in window:
        if not gets:
            output.append(element)
        for pattern in gets:
            found = _lookup(db, pattern, element, now)
            output.append(b"" if found is None and store is not None else found)
    if store is None:
        return output
    if db.live_for_write(store, now) is not None:
        db.delete(store)
    if output:
        db.store(store, deque(item for item in output if isinstance(item, bytes)))
    return len(output)


def _sorted(db: Keyspace, elements: list[bytes], by: bytes | None, alpha: bool, desc: bool,
            now: int) -> list[bytes] | Error:
    """Redis's sortCompare as sort keys: DESC reverses the whole comparison (ties included)."""
    if alpha:
        if by is None:
            return sorted(elements, reverse=desc)
        # A missing weight sorts first; Redis leaves equal weights to qsort, phalanx breaks
        # the tie by the element.
        alpha_keys: list[tuple[bool, bytes, bytes]] = []
        for element in elements:
            weight = _lookup(db, by, element, now)
            alpha_keys.append((weight is not None, weight or b"", element))
        alpha_keys.sort(reverse=desc)
        return [item[2] for item in alpha_keys]
    numeric_keys: list[tuple[float, bytes]] = []
    for element in elements:
        raw = element if by is None else _lookup(db, by, element, now)
        score = 0.0 if raw is None else _score(raw)
        if score is None:
            return Error("ERR One or more scores can't be converted into double")
        numeric_keys.append((score, element))  # equal scores: byte order, as Redis
    numeric_keys.sort(reverse=desc)
    return [item[1] for item in numeric_keys]


def _sort(db: Keyspace, args: Args, now: int) -> Reply:
    return _sort_generic(db, args, now, False)


def _sort_ro(db: Keyspace, args: Args, now: int) -> Reply:
    return _sort_generic(db, args, now, True)


def store_key(args: Args) -> list[bytes]:
    """SORT's movable key: the destination of its last STORE option, if any."""
    found: list[bytes] = []
    position = 1
    while position < len(args):
        option = args[position].upper()
        if option == b"LIMIT":
            position += 3
        elif option in (b"BY", b"GET"):
            position += 2
        elif option == b"STORE" and position + 1 < len(args):
            found = [args[position + 1]]
            position += 2
        else:
            position += 1
    return found


_CATEGORIES = ("@set", "@sortedset", "@list", "@slow", "@dangerous")

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("sort", -2, ("write", "denyoom", "movablekeys"), 1, 1, 1,
                ("@write", *_CATEGORIES), _sort, store_key),
    CommandSpec("sort_ro", -2, ("readonly", "movablekeys"), 1, 1, 1, ("@read", *_CATEGORIES),
                _sort_ro),
)
"""SORT and SORT_RO, listed among the key commands (`keys.COMMANDS`)."""

"""Redis glob-style pattern matching (KEYS, SCAN MATCH), a faithful port of `stringmatchlen`.

Rules of this file:
- `*` any run of bytes, `?` one byte, `[abc]` a class, `[^abc]` a negated class, `[a-z]` a
  range (ends may come in either order, compared as signed C chars like Redis), `\\x` the byte
  x literally. An unterminated `[` class runs to the end of the pattern; a trailing lone `\\`
  is a literal backslash. These quirks are Redis's and differ from `fnmatch`.
- Matching is case-sensitive and works on bytes.
- A pattern with more than about a thousand nested `*` does not match (Redis stops at a
  nesting of 1000; we stop where Python's recursion limit does).
- Standard library only; pure functions.
"""

from __future__ import annotations

_STAR = ord("*")
_QUESTION = ord("?")
_OPEN = ord("[")
_CLOSE = ord("]")
_CARET = ord("^")
_BACKSLASH = ord("\\")
_DASH = ord("-")
_SPECIAL = frozenset(b"*?[\\")


def glob_match(pattern: bytes, subject: bytes) -> bool:
    """True when `subject` matches the Redis glob `pattern`."""
    if not _SPECIAL.intersection(pattern):
        return pattern == subject
    star = pattern.find(b"*")
    if star == len(pattern) - 1 and not _SPECIAL.intersection(pattern[:star]):
        # "prefix*", the common shape. Like stringmatchlen, "*" alone does not match the empty
        # subject (KEYS and SCAN special-case "*" before calling us, as Redis does).
        return subject.startswith(pattern[:star]) and (star > 0 or len(subject) > 0)
    try:
        return _match(pattern, 0, subject, 0, [False], 0)
    except RecursionError:
        return False


def _signed(byte: int) -> int:
    """A byte as C's signed `char` (Redis compares class ranges that way)."""
    return byte - 256 if byte >= 128 else byte


def _match(
    pattern: bytes, pi: int, subject: bytes, si: int, skip_longer: list[bool], nesting: int
) -> bool:
    """`stringmatchlen_impl` from Redis util.c, with indices in place of pointers."""
    if nesting > 1000:
        return False
    plen = len(pattern)
    slen = len(subject)
    while pi < plen and si < slen:
        byte = pattern[pi]
        if byte == _STAR:
            while pi + 1 < plen and pattern[pi + 1] == _STAR:
                pi += 1
            if pi + 1 == plen:
                return True
            while si < slen:
                if _match(pattern, pi + 1, subject, si, skip_longer, nesting + 1):
                    return True
                if skip_longer[0]:
                    return False
                si += 1
            # No match for the rest of the pattern from anywhere in the rest of the subject:
            # matching an earlier "*" to a longer run cannot help either.
            skip_longer[0] = True
            return False
        if byte == _QUESTION:
            si += 1
        elif byte == _OPEN:
            pi += 1
            negate = pi < plen and pattern[pi] == _CARET
            if negate:
                pi += 1
            matched = False
            current = subject[si]
            while True:
                if pi < plen and pattern[pi] == _BACKSLASH and plen - pi >= 2:
                    pi += 1
                    if pattern[pi] == current:
                        matched = True
                elif pi < plen and pattern[pi] == _CLOSE:
                    break
                elif pi >= plen:
                    pi -= 1
                    break
                elif plen - pi >= 3 and pattern[pi + 1] == _DASH:
                    start = _signed(pattern[pi])
                    end = _signed(pattern[pi + 2])
                    if start > end:
                        start, end = end, start
                    pi += 2
                    if start <= _signed(current) <= end:
                        matched = True
                elif pattern[pi] == current:
                    matched = True
                pi += 1
            if negate:
                matched = not matched
            if not matched:
                return False
            si += 1
        else:
            if byte == _BACKSLASH and plen - pi >= 2:
                pi += 1
            if pattern[pi] != subject[si]:
                return False
            si += 1
        pi += 1
        if si == slen:
            while pi < plen and pattern[pi] == _STAR:
                pi += 1
            break
    return pi == plen and si == slen

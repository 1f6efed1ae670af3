"""The hiredis-accelerated request parser: same interface and results as `RespParser`, faster.

Rules of this file:
- hiredis is optional: it is imported in a guarded block; without it `HIREDIS_AVAILABLE` is
  False and `HiredisRespParser()` raises `ConfigError`. `create_parser()` picks the fastest.
- Results and errors are exactly those of the pure `RespParser` on every input, because hiredis
  is only trusted where it provably agrees with Redis, and the pure parser decides everything
  else. `hiredis.Reader` parses RESP *replies*: it also accepts inside an array simple strings,
  integers, verbatim strings, nested aggregates and more, and it ignores our limits. So:
  1. hiredis is used only at a command boundary that starts with '*', on a fresh reader fed
     the buffered bytes in windows (a stop costs at most one window of copying);
  2. a run of commands it returns is accepted only if every command is a non-empty list of
     `bytes` within the limits, and the run's byte span holds none of '+', '(', '=', '|', '~'
     (the only type bytes whose hiredis value can pass for a bulk string or a command). Then
     every element was a canonical `$` bulk, so the span's length follows from the values
     alone; when a check fails, a per-argument walk finds the first doubtful command;
  3. from the first command hiredis did not return or that failed a check, the pure parser
     takes over, for one command, and gives Redis's exact behaviour and message. A command cut
     by the end of the buffer is always finished by the pure parser, incrementally.
- The checks are batched over the run with C-level builtins (`str(list)`, `max`, `join`,
  `re.search`), so the per-command Python cost is one `gets()` and one `append`.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from itertools import chain
from typing import Final

from phalanx.errors import ClientProtocolError, ConfigError
from phalanx.resp._parser import RespParser
from phalanx.resp._types import DEFAULT_LIMITS, NEED_DATA, Command, NeedData, RespLimits

try:
    import hiredis
except ImportError:  # pragma: no cover - exercised only where hiredis is absent
    hiredis = None  # type: ignore[assignment]

__all__ = ["HIREDIS_AVAILABLE", "HiredisRespParser", "create_parser"]

HIREDIS_AVAILABLE: Final[bool] = hiredis is not None
"""True when the optional `hiredis` package is importable."""

# Type bytes whose hiredis value could pass for a bulk string ('+', '(', '=', '|') or for a
# command ('~', a set, comes back as a list). Any other non-'$' type yields a non-bytes value.
# '#' too: hiredis reads a boolean with a NUL ("#\x00\r\n") as nothing at all, so the probe
# after the run would see a clean boundary and an inline "#" command would be lost.
_DOUBTFUL_TYPE_BYTES: Final = (b"+", b"(", b"=", b"|", b"~", b"#")
_DOUBTFUL_TYPE_BYTE: Final = re.compile(rb"[+(=|~#]")
# Up to this many bytes, one `_DOUBTFUL_TYPE_BYTE` search is cheaper than six `bytes.find`.
_SHORT_SPAN_BYTES: Final = 512
_WINDOW_BYTES: Final = 8 * 1024
# An aggregate header with a count of two or more digits (hiredis accepts only canonical counts,
# so a longer number is seen through its first 19 digits, already far over any run's length).
_LONG_AGGREGATE_HEADER: Final = re.compile(rb"[*%~>|]([0-9]{2,19})")
# The shape of each byte for finding those headers at C speed (a regex scan costs 3x more):
# aggregate type bytes become '*', digits '0', anything else '.'.
_HEADER_SHAPES: Final = bytes(
    0x2A if byte in b"*%~>|" else 0x30 if byte in b"0123456789" else 0x2E for byte in range(256)
)
_ASTERISK: Final = 0x2A
_DOLLAR: Final = 0x24


class HiredisRespParser(RespParser):
    """A `RespParser` that lets hiredis parse runs of well-formed multibulk commands.

    Same interface, same results, same errors as `RespParser`; requires the hiredis package.
    """

    __slots__ = ("_ready",)

    def __init__(self, limits: RespLimits = DEFAULT_LIMITS) -> None:
        if not HIREDIS_AVAILABLE:
            raise ConfigError("HiredisRespParser needs the hiredis package; use RespParser")
        super().__init__(limits)
        self._ready: deque[Command] = deque()

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed but not yet parsed (commands parsed and not yet returned do not count)."""
        return super().buffered_bytes

    def next_command(self) -> Command | NeedData:
        """Return the next complete command, or `NEED_DATA` (see `RespParser.next_command`)."""
        if self._ready:
            return self._ready.popleft()
        if self._error is not None:
            raise self._error
        if self._chunks:
            if self._bulk_length >= 0 and (
                len(self._data) - self._position + self._chunks_length < self._bulk_length + 2
            ):
                return NEED_DATA
            self._data = b"".join([self._data[self._position :], *self._chunks])
            self._position = 0
            self._chunks.clear()
            self._chunks_length = 0
        if (
            not self._arguments_remaining
            and self._position < len(self._data)
            and self._data[self._position] == _ASTERISK
        ):
            command = self._parse_run()
            if command is not None:
                return command
        try:
            return self._parse()
        except ClientProtocolError as error:
            self._error = error
            raise

    def _parse_run(self) -> Command | None:
        """Let hiredis parse a run of commands at `_position`; return the first that passes the
        checks and queue the others (None: the pure parser decides)."""
        data = self._data
        start = self._position
        # The run stops before the last probable command start: the command there, complete or
        # cut by the end of the buffer, is left to the pure parser, which finishes cut commands
        # incrementally. Usually the run then ends on a command boundary, which the probe below
        # confirms; if the guess fell inside a value, the slow walk below copes.
        last_start = data.rfind(b"\r\n*", start)
        if last_start < start:
            # A lone command (a client that does not pipeline): the pure parser takes it, at
            # less than the fixed cost of a hiredis run and its checks (measured: ~30% less
            # for a SET). Without this test, every lone command at the start of the buffer
            # went through an empty hiredis run first.
            return None
        run_end = last_start + 2
        # hiredis allocates a list of the declared size for every aggregate header, nested ones
        # included, before any element arrives, and walks it when freed: the 14 bytes
        # "*2147483647\r\n*" cost 16 GiB of address space and 14 s of CPU. So hiredis only gets
        # a run whose declared counts its own bytes could fill (one-digit counts are at most 9
        # per 4-byte header); anything else is left to the pure parser, which allocates nothing
        # from a declared length and applies the limits first.
        if not _counts_fit(data, start, run_end):
            return None
        reader = hiredis.Reader()
        gets = reader.gets
        commands: list[Command] = []
        fed_end = start
        if run_end - start <= _WINDOW_BYTES:  # the usual case: one window, fed at once
            reader.feed(data, start, run_end - start)
            fed_end = run_end
        at_boundary = True
        try:
            while True:
                command = gets()
                if command is False:
                    if fed_end >= run_end:
                        break
                    window_end = min(run_end, fed_end + _WINDOW_BYTES)
                    reader.feed(data, fed_end, window_end - fed_end)
                    fed_end = window_end
                    continue
                if type(command) is not list or not command:
                    at_boundary = False  # `*0`, `*-1`, or not an array: the pure parser decides
                    break
                commands.append(command)
            if at_boundary:
                # Probe: an idle reader turns "+\r\n" into b"" and holds nothing more; a reader
                # in the middle of a reply makes it part of that reply.
                reader.feed(b"+\r\n")
                probe = gets()
                at_boundary = type(probe) is bytes and not probe and not reader.has_data()
        except Exception:
            # hiredis parses replies, not requests: on bytes it refuses (ProtocolError) or cannot
            # build (TypeError for a map with a list key, ...) the pure parser decides instead.
            at_boundary = False
        if not commands:
            return None
        if at_boundary and self._is_canonical(data, start, run_end, commands):
            span = run_end - start
        else:
            commands, span = self._walk(data, start, commands)
            if not commands:
                return None
        self._position = start + span
        if len(commands) > 1:
            self._ready.extend(commands[1:])
        return commands[0]

    def _is_canonical(self, data: bytes, start: int, end: int, commands: list[Command]) -> bool:
        """True if `data[start:end]`, wholly consumed by hiredis into `commands`, is nothing but
        canonical multibulk requests within the limits."""
        try:
            # join() rejects every non-bytes element (nested aggregates, ints, None, errors).
            b"".join(chain.from_iterable(commands))
        except TypeError:
            return False
        span = end - start
        # Each element takes at least 6 bytes ("$0\r\n\r\n"), so short spans need no max().
        if span > 6 * self._multibulk_count_max and (
            max(map(len, commands)) > self._multibulk_count_max
        ):
            return False
        if span > self._bulk_length_max and (
            max(map(len, chain.from_iterable(commands))) > self._bulk_length_max
        ):
            return False
        if span <= _SHORT_SPAN_BYTES:  # one regex call beats five finds on a short span
            return _DOUBTFUL_TYPE_BYTE.search(data, start, end) is None
        return all(data.find(type_byte, start, end) < 0 for type_byte in _DOUBTFUL_TYPE_BYTES)

    def _walk(
        self, data: bytes, start: int, commands: list[Command]
    ) -> tuple[list[Command], int]:
        """Check commands one argument at a time; keep the prefix that is canonical multibulk."""
        position = start
        for index, command in enumerate(commands):
            if len(command) > self._multibulk_count_max or data[position] != _ASTERISK:
                return commands[:index], position - start
            cursor = position + len(str(len(command))) + 3
            # hiredis's items are unchecked (None for "$-1", ints, lists...): typed as objects,
            # so the check below runs (compiled with mypyc, a `bytes` loop variable would raise).
            arguments: Sequence[object] = command
            for argument in arguments:
                if (
                    type(argument) is not bytes
                    or data[cursor] != _DOLLAR
                    or len(argument) > self._bulk_length_max
                ):
                    return commands[:index], position - start
                cursor += len(argument) + len(str(len(argument))) + 5
            position = cursor
        return commands, position - start


def _counts_fit(data: bytes, start: int, end: int) -> bool:
    """True if the aggregate counts of two or more digits in `data[start:end]` (wherever hiredis
    might read them as headers) add up to at most its length."""
    budget = end - start
    shapes = data[start:end].translate(_HEADER_SHAPES)
    position = shapes.find(b"*00")
    while position >= 0:
        header = _LONG_AGGREGATE_HEADER.match(data, start + position)
        if header is not None:
            budget -= int(header.group(1))
            if budget < 0:
                return False
        position = shapes.find(b"*00", position + 3)
    return True


def create_parser(limits: RespLimits = DEFAULT_LIMITS) -> RespParser:
    """Return the fastest available request parser: hiredis-backed when possible, else pure."""
    if HIREDIS_AVAILABLE:
        return HiredisRespParser(limits)
    return RespParser(limits)

"""Fuzzing the RESP codec: the request parsers (pure and hiredis), the reply parser, the encoder.

Properties, on any input and any chunking of it (split points are drawn by hypothesis):
- no crash: the request parsers raise only `ClientProtocolError`, the reply parser only
  `PeerProtocolError`, and the error state is sticky;
- no hang: every call returns (a SIGALRM watchdog per example) and a stream of n bytes fed in
  k chunks needs at most n + k calls to drain (each command consumes at least one byte);
- bounded memory: once drained, a request parser holds at most one incomplete command within
  the limits (its buffer: that plus the last read), and a declared length or count is never
  allocated up front (checked with tracemalloc on headers near 2**31 and 2**63);
- structure: encoded commands and replies round-trip exactly; mutated encodings are refused
  or parsed into values that re-encode; the pure and hiredis parsers agree on everything;
  100 000 levels of nesting hit neither the recursion limit nor the C stack.

Run longer soaks with `PHALANX_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/fuzz`: the
variable sets max_examples of every property (defaults are small, so the directory stays fast).
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from phalanx.errors import ClientProtocolError, PeerProtocolError
from phalanx.resp import (
    HIREDIS_AVAILABLE,
    NEED_DATA,
    NULL_ARRAY,
    BigNumber,
    Command,
    ErrorReply,
    HiredisRespParser,
    Push,
    Reply,
    RespLimits,
    RespParser,
    RespReplyParser,
    SimpleString,
    VerbatimString,
    encode,
    encode_command,
)


def examples(default: int) -> int:
    """max_examples for one property: `PHALANX_FUZZ_EXAMPLES` when set, else `default`."""
    return int(os.environ.get("PHALANX_FUZZ_EXAMPLES") or default)


def fuzz_settings(default: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples(default),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Hang(Exception):
    """A parser call did not return in time."""


@contextmanager
def watchdog(seconds: float = 20.0) -> Iterator[None]:
    """Fail (instead of hanging the run) if the block takes longer than `seconds`; restores any
    timer already armed (pytest-timeout's) on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"a parser call did not return within {seconds} s")

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            left = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)


# ----------------------------------------------------------------------------------------------
# Chunkings and mutations
# ----------------------------------------------------------------------------------------------


def chunked(data: st.DataObject, stream: bytes) -> list[bytes]:
    """Split `stream` at points drawn by hypothesis (sometimes byte by byte)."""
    if len(stream) <= 400 and data.draw(st.integers(0, 9), label="bytewise") == 0:
        return [stream[index:index + 1] for index in range(len(stream))]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts"))
    bounds = [0, *cuts, len(stream)]
    return [stream[start:end] for start, end in itertools.pairwise(bounds)]


@st.composite
def mutations(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "digits"]))
        if action == "flip" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[position:position + draw(st.integers(1, 4))]
        elif action == "digits":  # a length or count rewritten to something extreme
            extreme = draw(st.sampled_from(
                [b"-1", b"-2", b"0", b"00", b"-0", b"2147483647", b"2147483648", b"4294967296",
                 b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808",
                 b"99999999999999999999999", b"+1", b" 1"]
            ))
            data[position:position] = extreme
        else:
            del data[position:]
    return bytes(data)


# ----------------------------------------------------------------------------------------------
# Request parsers
# ----------------------------------------------------------------------------------------------

SMALL_LIMITS = RespLimits(
    bulk_length_bytes_max=64, multibulk_count_max=8, inline_length_bytes_max=32
)
REQUEST_PARSERS: list[type[RespParser]] = [RespParser]
if HIREDIS_AVAILABLE:
    REQUEST_PARSERS.append(HiredisRespParser)


def pending_command_bound(limits: RespLimits) -> int:
    """Most bytes one incomplete command may hold within `limits`: its header line, the
    arguments already parsed, one bulk header line and a bulk body short of its CRLF."""
    line = limits.inline_length_bytes_max + 2
    return (
        line
        + (limits.multibulk_count_max - 1) * (limits.bulk_length_bytes_max + line + 2)
        + line
        + limits.bulk_length_bytes_max + 1
    )


def run_requests(
    parser: RespParser, chunks: list[bytes], limits: RespLimits
) -> tuple[list[Command], str | None]:
    """Feed `chunks` one at a time, draining after each; return the commands and the error."""
    commands: list[Command] = []
    calls_max = sum(map(len, chunks)) + len(chunks)
    calls = 0
    bound = pending_command_bound(limits)
    try:
        with watchdog():
            for chunk in chunks:
                parser.feed(chunk)
                while True:
                    calls += 1
                    assert calls <= calls_max, "the parser returns without consuming anything"
                    command = parser.next_command()
                    if command is NEED_DATA:
                        break
                    assert type(command) is list and command, command
                    assert all(type(argument) is bytes for argument in command), command
                    commands.append(command)
                # Bounded memory: one incomplete command, and the buffer at most one read more.
                assert parser.buffered_bytes <= bound, (parser.buffered_bytes, bound)
                assert len(parser._data) <= bound + max(map(len, chunks))
    except ClientProtocolError as error:
        with pytest.raises(ClientProtocolError):
            parser.next_command()  # the error state is sticky
        return commands, str(error)
    return commands, None


def request_outcomes(chunks: list[bytes], limits: RespLimits = SMALL_LIMITS) -> list[Any]:
    """Run every request parser; they must agree, on commands and on the error message."""
    outcomes = [run_requests(cls(limits), chunks, limits) for cls in REQUEST_PARSERS]
    assert all(outcome == outcomes[0] for outcome in outcomes), outcomes
    return outcomes


@fuzz_settings(150)
@given(stream=st.binary(max_size=600), data=st.data())
@example(stream=b"*2147483647\r\n*1\r\n$1\r\na\r\n", data=None)  # hiredis: 16 GiB, 14 s (fixed)
@example(stream=b"*1\r\n" + b"*1000000\r\n" * 50 + b"*1\r\n", data=None)
def test_arbitrary_bytes_only_raise_client_protocol_errors(
    stream: bytes, data: st.DataObject | None
) -> None:
    chunks = [stream] if data is None else chunked(data, stream)
    request_outcomes(chunks)
    request_outcomes(chunks, RespLimits())  # Redis's default limits too


# Bytes that often form (nearly) valid requests, so the fuzzer gets past the first header.
request_tokens = st.sampled_from(
    [b"*", b"$", b"\r\n", b"\r", b"\n", b"0", b"1", b"2", b"3", b"-1", b"64", b"65", b"9", b"a",
     b" ", b'"', b"'", b"\\x41", b"\\", b"\x00", b"\t", b"PING", b"*1\r\n$4\r\nPING\r\n",
     b"*3\r\n", b"$3\r\n", b"*0\r\n", b"*-1\r\n", b"$-1\r\n", b"*9\r\n", b"*8\r\n"]
)


@fuzz_settings(150)
@given(tokens=st.lists(request_tokens, max_size=60), data=st.data())
def test_token_soup_only_raises_client_protocol_errors(
    tokens: list[bytes], data: st.DataObject
) -> None:
    request_outcomes(chunked(data, b"".join(tokens)))


arguments = st.lists(
    st.one_of(st.binary(max_size=70), st.sampled_from([b"", b"\r\n", b"*1\r\n", b"$-1\r\n"])),
    min_size=1,
    max_size=9,
)


@fuzz_settings(80)
@given(commands=st.lists(arguments, max_size=6), data=st.data())
def test_encoded_commands_round_trip_under_any_chunking(
    commands: list[list[bytes]], data: st.DataObject
) -> None:
    stream = b"".join(encode_command(*command) for command in commands)
    chunks = chunked(data, stream)
    limits = RespLimits()
    for outcome in request_outcomes(chunks, limits):
        assert outcome == (commands, None)
    # Within the small limits: the same commands, or the error at the first one over them.
    parsed, error = request_outcomes(chunks)[0]
    fitting = 0
    for command in commands:
        if len(command) > SMALL_LIMITS.multibulk_count_max or max(map(len, command)) > 64:
            break
        fitting += 1
    assert parsed == commands[:fitting]
    assert (error is None) == (fitting == len(commands))


@fuzz_settings(120)
@given(data=st.data())
def test_mutated_commands_only_raise_client_protocol_errors(data: st.DataObject) -> None:
    commands = data.draw(st.lists(arguments, min_size=1, max_size=4), label="commands")
    original = b"".join(encode_command(*command) for command in commands)
    mutated = data.draw(mutations(original), label="mutated")
    request_outcomes(chunked(data, mutated))
    request_outcomes(chunked(data, mutated), RespLimits())


def peak_allocation(function: Callable[[], object]) -> int:
    """Peak bytes allocated (tracemalloc) while `function` runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        with watchdog():
            function()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


EXTREME_COUNTS = [b"2147483647", b"2147483648", b"4294967295", b"4294967296",
                  b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808",
                  b"-9223372036854775809", b"536870912", b"536870913", b"1048576", b"1048577",
                  b"-1", b"-2", b"1" + b"0" * 5000]


@pytest.mark.parametrize("parser_class", REQUEST_PARSERS)
@pytest.mark.parametrize("count", EXTREME_COUNTS)
def test_declared_lengths_are_never_allocated(parser_class: type[RespParser], count: bytes) -> None:
    streams = [
        b"*" + count + b"\r\n*1\r\n$1\r\na\r\n",  # hiredis used to allocate the declared list
        b"*1\r\n$" + count + b"\r\nabc",
        b"*2\r\n$1\r\na\r\n$" + count + b"\r\nabc\r\n*1\r\n$1\r\na\r\n",
        b"*1\r\n" + (b"*" + count + b"\r\n") * 100 + b"*1\r\n",  # nested: never a request
    ]
    for stream in streams:
        def parse(stream: bytes = stream) -> None:
            parser = parser_class()
            parser.feed(stream)
            try:
                while parser.next_command() is not NEED_DATA:
                    pass
            except ClientProtocolError:
                return
            assert parser.buffered_bytes <= len(stream)

        # Transient copies of the input are fine; memory in proportion to a count is not.
        assert peak_allocation(parse) < 256 * 1024 + 4 * len(stream), stream[:40]


@pytest.mark.parametrize("parser_class", REQUEST_PARSERS)
def test_a_bulk_at_the_limit_is_buffered_not_preallocated(parser_class: type[RespParser]) -> None:
    parser = parser_class()  # Redis's limit: 512 MiB
    parser.feed(b"*1\r\n$536870912\r\n" + b"x" * 1000)
    assert peak_allocation(parser.next_command) < 64 * 1024  # NEED_DATA, nothing reserved
    assert parser.buffered_bytes < 2000
    parser = parser_class()
    parser.feed(b"*1\r\n$536870913\r\n")
    with pytest.raises(ClientProtocolError, match="invalid bulk length"):
        parser.next_command()


@pytest.mark.parametrize("parser_class", REQUEST_PARSERS)
def test_deeply_nested_requests_are_refused(parser_class: type[RespParser]) -> None:
    for tail in (b"", b"+\r\n", b"$1\r\na\r\n"):
        stream = b"*1\r\n" * 100_000 + tail
        assert request_outcomes([stream], RespLimits())[0] == (
            [], "Protocol error: expected '$', got '*'"
        )
        parser = parser_class()
        for start in range(0, len(stream), 65536):  # in reads, as from a socket
            parser.feed(stream[start:start + 65536])
            with pytest.raises(ClientProtocolError, match="expected '\\$'"):
                parser.next_command()


# ----------------------------------------------------------------------------------------------
# Reply parser and encoder
# ----------------------------------------------------------------------------------------------

texts = st.text(st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=12)
scalars = st.one_of(
    st.binary(max_size=40),
    st.integers(-(2**63), 2**63 - 1),
    st.builds(SimpleString, texts),
    st.builds(ErrorReply, texts),
    st.none(),
    st.booleans(),
    st.builds(BigNumber, st.integers(-(10**60), 10**60)),
    st.builds(VerbatimString, st.binary(max_size=20), st.sampled_from(["txt", "mkd", "abc"])),
)
keys = st.one_of(st.binary(max_size=10), st.integers(-5, 5), st.builds(SimpleString, texts))


def containers(children: st.SearchStrategy[Reply]) -> st.SearchStrategy[Reply]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=3),
        st.frozensets(st.binary(max_size=8), max_size=4).map(set),
        st.lists(children, max_size=3).map(Push),
    )


# Values that RESP3 carries exactly: they parse back equal.
exact_replies = st.recursive(scalars, containers, max_leaves=20)
# Every value encode() takes, for the re-encoding property (RESP2 degrades types).
any_replies = st.recursive(
    st.one_of(scalars, st.floats(), st.just(NULL_ARRAY), st.text(max_size=5)),
    containers,
    max_leaves=20,
)


def run_replies(chunks: list[bytes]) -> tuple[list[Reply], str | None]:
    parser = RespReplyParser(bulk_length_bytes_max=1 << 20, aggregate_length_max=1 << 16)
    replies: list[Reply] = []
    calls_max = sum(map(len, chunks)) + len(chunks)
    calls = 0
    try:
        with watchdog():
            for chunk in chunks:
                parser.feed(chunk)
                while True:
                    calls += 1
                    assert calls <= calls_max, "the parser returns without consuming anything"
                    reply = parser.next_reply()
                    if reply is NEED_DATA:
                        break
                    replies.append(reply)
    except PeerProtocolError as error:
        with pytest.raises(PeerProtocolError):
            parser.next_reply()
        return replies, str(error)
    return replies, None


@fuzz_settings(80)
@given(values=st.lists(exact_replies, min_size=1, max_size=4), data=st.data())
def test_resp3_replies_round_trip_exactly(values: list[Reply], data: st.DataObject) -> None:
    stream = b"".join(encode(value, 3) for value in values)
    assert run_replies(chunked(data, stream)) == (values, None)


@fuzz_settings(80)
@given(values=st.lists(any_replies, min_size=1, max_size=4), protocol=st.sampled_from([2, 3]),
       data=st.data())
def test_replies_re_encode_byte_for_byte(
    values: list[Reply], protocol: int, data: st.DataObject
) -> None:
    stream = b"".join(encode(value, protocol) for value in values)
    replies, error = run_replies(chunked(data, stream))
    assert error is None
    assert b"".join(encode(reply, protocol) for reply in replies) == stream


reply_tokens = st.sampled_from(
    [b"*", b"%", b"~", b">", b"|", b"$", b"=", b"!", b"+", b"-", b":", b"_", b"#", b",", b"(",
     b"\r\n", b"\r", b"\n", b"0", b"1", b"2", b"-1", b"3", b"t", b"f", b"inf", b"nan", b"1e5",
     b"txt:", b"\xff", b"a", b"*1\r\n", b"~1\r\n", b"%1\r\n", b"$1\r\nx\r\n", b":1\r\n"]
)


@fuzz_settings(150)
@given(stream=st.one_of(st.binary(max_size=400), st.lists(reply_tokens, max_size=80).map(b"".join)),
       data=st.data())
@example(stream=b"+a\rb\r\n", data=None)  # was InvariantViolation from SimpleString (fixed)
@example(stream=b"-\xff\r\n+\xfe\r\n", data=None)  # re-encoding was a UnicodeEncodeError (fixed)
def test_arbitrary_replies_only_raise_peer_protocol_errors(
    stream: bytes, data: st.DataObject | None
) -> None:
    replies, _ = run_replies([stream] if data is None else chunked(data, stream))
    for reply in replies:
        encode(reply, 3)  # whatever was accepted can be sent on (a proxy re-encodes replies)
        encode(reply, 2)


@fuzz_settings(100)
@given(data=st.data())
def test_mutated_replies_only_raise_peer_protocol_errors(data: st.DataObject) -> None:
    values = data.draw(st.lists(any_replies, min_size=1, max_size=3), label="values")
    protocol = data.draw(st.sampled_from([2, 3]), label="protocol")
    original = b"".join(encode(value, protocol) for value in values)
    replies, _ = run_replies(chunked(data, data.draw(mutations(original), label="mutated")))
    for reply in replies:
        encode(reply, 3)


@pytest.mark.parametrize(
    ("stream", "outcome"),
    [
        (b"*1\r\n" * 100_000 + b":1\r\n", "list"),
        (b"%1\r\n:1\r\n" * 30_000 + b":1\r\n", "dict"),  # deep map values are fine
        (b">1\r\n" * 30_000 + b":1\r\n", "Push"),
        (b"~1\r\n" + b"*1\r\n" * 100_000 + b":1\r\n", "nested deeper than 100 levels"),
        (b"%1\r\n" + b"*1\r\n" * 100_000 + b":1\r\n:2\r\n", "nested deeper than 100 levels"),
        # Sets of sets are hashed level by level as they close (frozensets cache their hash).
        (b"%1\r\n" + b"~1\r\n" * 30_000 + b":1\r\n:2\r\n", "dict"),
        (b"~1\r\n" + b"*1\r\n~1\r\n" * 15_000 + b":1\r\n", "set"),
        (b"~1\r\n" + b"*1\r\n" * 99 + b":1\r\n", "set"),
        (b"*1\r\n" * 100_000, None),  # incomplete
    ],
)
def test_deep_replies_hit_neither_the_recursion_limit_nor_the_c_stack(
    stream: bytes, outcome: str | None
) -> None:
    replies, error = run_replies([stream])
    if outcome is None:
        assert (replies, error) == ([], None)
    elif outcome.startswith("nested"):
        assert replies == [] and error is not None and outcome in error
    else:
        assert error is None and [type(reply).__name__ for reply in replies] == [outcome]


@pytest.mark.parametrize("count", EXTREME_COUNTS)
def test_reply_lengths_are_never_allocated(count: bytes) -> None:
    for kind in b"*%~>|$=!":
        stream = bytes([kind]) + count + b"\r\nabc"

        def parse(stream: bytes = stream) -> None:
            parser = RespReplyParser()  # default limits: 512 MiB bulks, 2**32 elements
            parser.feed(stream)
            with suppress(PeerProtocolError):
                parser.next_reply()

        assert peak_allocation(parse) < 64 * 1024, stream

"""The request parsers (pure and hiredis-backed): framing, inline commands, limits, errors."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phalanx.errors import ClientProtocolError, ConfigError
from phalanx.resp import (
    HIREDIS_AVAILABLE,
    NEED_DATA,
    Command,
    HiredisRespParser,
    RespLimits,
    RespParser,
    encode_command,
    parse_canonical_integer,
)

PARSER_CLASSES: list[type[RespParser]] = [RespParser]
if HIREDIS_AVAILABLE:
    PARSER_CLASSES.append(HiredisRespParser)


@pytest.fixture(params=PARSER_CLASSES, ids=lambda parser_class: parser_class.__name__)
def parser_class(request: pytest.FixtureRequest) -> type[RespParser]:
    """Each request-parser implementation in turn: both must pass every test."""
    parser_class: type[RespParser] = request.param
    return parser_class

SET_COMMAND = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"


def drain(parser: RespParser) -> list[Command]:
    """Every command the parser can return now (stops at NEED_DATA)."""
    commands = []
    while (command := parser.next_command()) is not NEED_DATA:
        commands.append(command)
    return commands


def parse(parser_class: type[RespParser], data: bytes, **limits: int) -> list[Command]:
    parser = parser_class(RespLimits(**limits))
    parser.feed(data)
    return drain(parser)


def protocol_error(parser_class: type[RespParser], data: bytes, **limits: int) -> str:
    parser = parser_class(RespLimits(**limits))
    parser.feed(data)
    with pytest.raises(ClientProtocolError) as caught:
        drain(parser)
    return str(caught.value)


def outcome(
    parser_class: type[RespParser], chunks: list[bytes], limits: RespLimits
) -> tuple[list[Command], str | None]:
    """Feed chunk by chunk, draining after each; the commands, then the error if any."""
    parser = parser_class(limits)
    commands: list[Command] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (command := parser.next_command()) is not NEED_DATA:
                commands.append(command)
    except ClientProtocolError as error:
        return commands, str(error)
    return commands, None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[start:end] for start, end in zip([0, *points], [*points, len(data)], strict=True)]


# --- framing -------------------------------------------------------------------------------


def test_multibulk_command(parser_class: type[RespParser]) -> None:
    assert parse(parser_class, SET_COMMAND) == [[b"SET", b"key", b"value"]]


def test_need_data_is_a_unique_sentinel_not_none() -> None:
    assert NEED_DATA is not None
    assert repr(NEED_DATA) == "NEED_DATA"
    assert RespParser().next_command() is NEED_DATA


def test_every_proper_prefix_needs_data(parser_class: type[RespParser]) -> None:
    for cut in range(len(SET_COMMAND)):
        parser = parser_class()
        parser.feed(SET_COMMAND[:cut])
        assert parser.next_command() is NEED_DATA, cut
        parser.feed(SET_COMMAND[cut:])
        assert parser.next_command() == [b"SET", b"key", b"value"]
        assert parser.next_command() is NEED_DATA


def test_byte_at_a_time(parser_class: type[RespParser]) -> None:
    parser = parser_class()
    commands: list[Command] = []
    for byte in SET_COMMAND * 3:
        parser.feed(bytes([byte]))
        commands.extend(drain(parser))
    assert commands == [[b"SET", b"key", b"value"]] * 3


def test_binary_safe_arguments(parser_class: type[RespParser]) -> None:
    arguments = [b"SET", b"\r\n*1\r\n$3\r\n", bytes(range(256)), b""]
    assert parse(parser_class, encode_command(*arguments)) == [arguments]


def test_pipeline_of_1000_commands(parser_class: type[RespParser]) -> None:
    commands = [[b"SET", b"key:%d" % index, b"value-%d" % index] for index in range(1000)]
    data = b"".join(encode_command(*command) for command in commands)
    assert parse(parser_class, data) == commands
    # The same pipeline cut into socket-sized reads, at arbitrary places.
    assert outcome(parser_class, split(data, list(range(0, len(data), 4093))), RespLimits()) == (
        commands,
        None,
    )


def test_values_that_look_like_type_bytes(parser_class: type[RespParser]) -> None:
    # Values full of '+', '=', '(', '|', '~', '*' (base64, globs) and an array-like `~` line.
    commands = [[b"SET", b"k+=(|~*", b"aGk+/w=="], [b"KEYS", b"h*llo"]] * 50
    data = b"".join(encode_command(*command) for command in commands)
    assert parse(parser_class, data) == commands
    mixed = SET_COMMAND + b"~1\r\n$4\r\nPING\r\n" + SET_COMMAND
    assert parse(parser_class, mixed) == [
        [b"SET", b"key", b"value"], [b"~1"], [b"$4"], [b"PING"], [b"SET", b"key", b"value"]
    ]


def test_an_inline_boolean_with_a_nul_between_commands(parser_class: type[RespParser]) -> None:
    # hiredis reads "#\x00\r\n" (a RESP3 boolean with a NUL) as nothing at all, and its probe
    # then saw a clean boundary: the inline command "#" was lost (found by the fuzz test below).
    data = b"*1\r\n$0\r\n\r\n#\x00\r\n*1\r\n$0\r\n\r\n"
    assert parse(parser_class, data) == [[b""], [b"#"], [b""]]


def test_empty_multibulk_is_skipped(parser_class: type[RespParser]) -> None:
    data = b"*0\r\n*-1\r\n*-5\r\n" + SET_COMMAND + b"*0\r\n"
    assert parse(parser_class, data) == [[b"SET", b"key", b"value"]]


def test_bulk_trailer_is_not_checked_as_in_redis(parser_class: type[RespParser]) -> None:
    # Redis skips the two bytes after a bulk and the one after a header's CR without looking.
    assert parse(parser_class, b"*2\r\n$3\r\nabcXY$1\r\naZZ") == [[b"abc", b"a"]]
    assert parse(parser_class, b"*1\rX$1\rYaZZ") == [[b"a"]]


def test_large_bulk_in_small_chunks(parser_class: type[RespParser]) -> None:
    value = bytes(range(256)) * 4096  # 1 MiB
    data = encode_command(b"SET", b"big", value) + SET_COMMAND
    parser = parser_class()
    commands: list[Command] = []
    for start in range(0, len(data), 1024):
        parser.feed(data[start : start + 1024])
        commands.extend(drain(parser))
    assert commands == [[b"SET", b"big", value], [b"SET", b"key", b"value"]]
    assert parser.buffered_bytes == 0


def test_feed_accepts_bytearray_and_memoryview(parser_class: type[RespParser]) -> None:
    parser = parser_class()
    parser.feed(bytearray(SET_COMMAND[:10]))
    parser.feed(memoryview(SET_COMMAND)[10:])
    assert drain(parser) == [[b"SET", b"key", b"value"]]


def test_buffered_bytes_counts_unparsed_input(parser_class: type[RespParser]) -> None:
    parser = parser_class()
    parser.feed(SET_COMMAND + b"*1\r\n$4\r\nPI")
    assert drain(parser) == [[b"SET", b"key", b"value"]]
    assert parser.buffered_bytes <= len(b"*1\r\n$4\r\nPI")
    parser.feed(b"NG\r\n")
    assert drain(parser) == [[b"PING"]]
    assert parser.buffered_bytes == 0


# --- inline commands -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"PING\r\n", [[b"PING"]]),
        (b"PING\n", [[b"PING"]]),
        (b"SET a b\r\n", [[b"SET", b"a", b"b"]]),
        (b"  SET \t a   b  \r\n", [[b"SET", b"a", b"b"]]),
        (b'SET "a b" \'c d\'\r\n', [[b"SET", b"a b", b"c d"]]),
        (b'SET k "\\x41\\n\\"q"\r\n', [[b"SET", b"k", b'A\n"q']]),
        (b"SET k 'it\\'s'\r\n", [[b"SET", b"k", b"it's"]]),
        (b'SET k ""\r\n', [[b"SET", b"k", b""]]),
        (b"\r\n\n   \r\nPING\r\n", [[b"PING"]]),
        (b"GET a\x00ignored\r\n", [[b"GET", b"a"]]),
        (b"PING\r\n" + SET_COMMAND + b"PING\r\n", [[b"PING"], [b"SET", b"key", b"value"], [b"PING"]]),
    ],
)
def test_inline_commands(parser_class: type[RespParser], line: bytes, expected: list[Command]) -> None:
    assert parse(parser_class, line) == expected


@pytest.mark.parametrize("line", [b'SET "a\r\n', b"SET 'a\r\n", b'SET "a"b\r\n', b"SET 'a'b\r\n"])
def test_unbalanced_quotes(parser_class: type[RespParser], line: bytes) -> None:
    assert protocol_error(parser_class, line) == "Protocol error: unbalanced quotes in request"


def test_inline_without_newline_needs_data(parser_class: type[RespParser]) -> None:
    parser = parser_class()
    parser.feed(b"PING")
    assert parser.next_command() is NEED_DATA
    parser.feed(b"\r")
    assert parser.next_command() is NEED_DATA
    parser.feed(b"\n")
    assert parser.next_command() == [b"PING"]


# --- limits and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*abc\r\n", "Protocol error: invalid multibulk length"),
        (b"*01\r\n", "Protocol error: invalid multibulk length"),
        (b"*+1\r\n", "Protocol error: invalid multibulk length"),
        (b"* 1\r\n", "Protocol error: invalid multibulk length"),
        (b"*\r\n", "Protocol error: invalid multibulk length"),
        (b"*1048577\r\n", "Protocol error: invalid multibulk length"),
        (b"*99999999999999999999999\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$abc\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$03\r\nabc\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$536870913\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\nx3\r\n", "Protocol error: expected '$', got 'x'"),
        (b"*1\r\n+OK\r\n", "Protocol error: expected '$', got '+'"),
        (b"*1\r\n:1\r\n", "Protocol error: expected '$', got ':'"),
        (b"*1\r\n*1\r\n$1\r\na\r\n", "Protocol error: expected '$', got '*'"),
        (b"*1\r\n\r\n", "Protocol error: expected '$', got ' '"),
        (b"*1\r\n%1\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n", "Protocol error: expected '$', got '%'"),
        (b"*2\r\n$1\r\na\r\n=5\r\ntxt:b\r\n", "Protocol error: expected '$', got '='"),
    ],
)
def test_protocol_errors(parser_class: type[RespParser], data: bytes, message: str) -> None:
    assert protocol_error(parser_class, data) == message
    # The same error after a healthy command: the command comes out first.
    parser = parser_class()
    parser.feed(SET_COMMAND + data)
    assert parser.next_command() == [b"SET", b"key", b"value"]
    with pytest.raises(ClientProtocolError, match="Protocol error"):
        drain(parser)


def test_multibulk_count_limit_is_inclusive(parser_class: type[RespParser]) -> None:
    parser = parser_class()
    parser.feed(b"*1048576\r\n")
    assert parser.next_command() is NEED_DATA


def test_bulk_length_limit_is_inclusive_and_configurable(parser_class: type[RespParser]) -> None:
    assert parse(parser_class, encode_command(b"x" * 32), bulk_length_bytes_max=32) == [[b"x" * 32]]
    message = protocol_error(parser_class, encode_command(b"x" * 33), bulk_length_bytes_max=32)
    assert message == "Protocol error: invalid bulk length"
    message = protocol_error(parser_class, encode_command(b"a", b"b"), multibulk_count_max=1)
    assert message == "Protocol error: invalid multibulk length"


def test_too_big_inline_request(parser_class: type[RespParser]) -> None:
    limit = 64 * 1024
    parser = parser_class()
    parser.feed(b"A" * limit)
    assert parser.next_command() is NEED_DATA  # exactly at the limit: still waiting
    parser.feed(b"\r")
    assert parser.next_command() is NEED_DATA  # the CR may end the line
    parser.feed(b"A")
    with pytest.raises(ClientProtocolError, match=r"^Protocol error: too big inline request$"):
        parser.next_command()
    # The same line arriving whole is refused too: chunking does not change the outcome.
    line = b"A" * (limit + 1) + b"\r\n"
    assert protocol_error(parser_class, line) == "Protocol error: too big inline request"
    assert parse(parser_class, b"A" * limit + b"\r\n") == [[b"A" * limit]]


def test_too_big_count_strings(parser_class: type[RespParser]) -> None:
    long_line = b"1" * (64 * 1024 + 1)
    assert protocol_error(parser_class, b"*" + long_line) == (
        "Protocol error: too big mbulk count string"
    )
    assert protocol_error(parser_class, b"*1\r\n$" + long_line) == (
        "Protocol error: too big bulk count string"
    )
    assert protocol_error(parser_class, b"*1\r\n$" + long_line + b"\r\n") == (
        "Protocol error: too big bulk count string"
    )


def test_error_state_is_sticky(parser_class: type[RespParser]) -> None:
    parser = parser_class()
    parser.feed(b"*x\r\n")
    with pytest.raises(ClientProtocolError) as first:
        parser.next_command()
    assert parser.error is first.value
    parser.feed(SET_COMMAND)
    with pytest.raises(ClientProtocolError) as again:
        parser.next_command()
    assert again.value is first.value


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ConfigError, match="bulk_length_bytes_max"):
        RespLimits(bulk_length_bytes_max=0)
    with pytest.raises(ConfigError, match="multibulk_count_max"):
        RespLimits(multibulk_count_max=0)
    with pytest.raises(ConfigError, match="inline_length_bytes_max"):
        RespLimits(inline_length_bytes_max=1)


@pytest.mark.parametrize(
    ("digits", "value"),
    [(b"0", 0), (b"7", 7), (b"-7", -7), (b"123456", 123456), (b"9223372036854775807", 2**63 - 1),
     (b"-9223372036854775808", -(2**63)), (b"", None), (b"-", None), (b"-0", None), (b"007", None),
     (b"+7", None), (b" 7", None), (b"7 ", None), (b"1_0", None), (b"9223372036854775808", None),
     (b"\xd9\xa3", None), (b"1" * 5000, None)],
)
def test_canonical_integers_follow_string2ll(digits: bytes, value: int | None) -> None:
    assert parse_canonical_integer(digits) == value


def test_declared_sizes_allocate_nothing(parser_class: type[RespParser]) -> None:
    tracemalloc.start()
    try:
        parser = parser_class()
        parser.feed(b"*1048576\r\n$536870912\r\nabc")
        assert parser.next_command() is NEED_DATA
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


# --- properties ----------------------------------------------------------------------------

arguments_strategy = st.lists(st.binary(max_size=40), min_size=1, max_size=6)
commands_strategy = st.lists(arguments_strategy, min_size=1, max_size=20)
cuts_strategy = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)


@pytest.mark.parametrize("parser_class", PARSER_CLASSES, ids=lambda cls: cls.__name__)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=commands_strategy, cuts=cuts_strategy)
def test_round_trip_in_any_chunking(
    parser_class: type[RespParser], commands: list[Command], cuts: list[int]
) -> None:
    data = b"".join(encode_command(*command) for command in commands)
    assert outcome(parser_class, split(data, cuts), RespLimits()) == (commands, None)


# Fragments that steer random input towards the interesting corners of the grammar.
fragment_strategy = st.one_of(
    arguments_strategy.map(lambda arguments: encode_command(*arguments)),
    st.sampled_from(
        [b"*", b"$", b"\r\n", b"\r", b"\n", b"-1", b"0", b"3", b"1048577", b"+OK\r\n", b":1\r\n",
         b"PING\r\n", b'"', b"'", b"\\x4", b" ", b"~1\r\n", b"=7\r\ntxt:abc\r\n", b"(12\r\n",
         b"|1\r\n", b"%1\r\n", b"*0\r\n", b"*-1\r\n", b"\x00", b"*1\r\n$1\r\n+\r\n"]
    ),
    st.binary(max_size=24),
)
limits_strategy = st.sampled_from(
    [RespLimits(), RespLimits(bulk_length_bytes_max=8, multibulk_count_max=3,
                              inline_length_bytes_max=24)]
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fragments=st.lists(fragment_strategy, max_size=30), cuts=cuts_strategy, limits=limits_strategy)
def test_fuzz_outcome_ignores_chunking_and_parsers_agree(
    fragments: list[bytes], cuts: list[int], limits: RespLimits
) -> None:
    data = b"".join(fragments)
    reference = outcome(RespParser, [data], limits)
    for parser_class in PARSER_CLASSES:
        assert outcome(parser_class, split(data, cuts), limits) == reference
        assert outcome(parser_class, [data], limits) == reference


@pytest.mark.parametrize("parser_class", PARSER_CLASSES, ids=lambda cls: cls.__name__)
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512), cuts=cuts_strategy)
def test_fuzz_random_bytes_only_raise_protocol_errors(
    parser_class: type[RespParser], data: bytes, cuts: list[int]
) -> None:
    parser = parser_class()
    returned_bytes = 0
    try:
        for chunk in split(data, cuts):
            parser.feed(chunk)
            for command in drain(parser):
                returned_bytes += sum(map(len, command))
            # Memory stays bounded by the input: nothing is held beyond what was fed.
            assert parser.buffered_bytes <= len(data)
    except ClientProtocolError as error:
        assert str(error).startswith("Protocol error: ")
    assert returned_bytes <= len(data)


@pytest.mark.skipif(not HIREDIS_AVAILABLE, reason="hiredis not installed")
def test_hiredis_runs_only_for_pipelined_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone command (no pipelining) goes straight to the pure parser, which is cheaper than
    the fixed cost of a hiredis run; a pipeline goes through hiredis, in order."""
    import hiredis

    from phalanx.resp import _hiredis

    readers: list[object] = []
    real_reader = hiredis.Reader

    def counting_reader() -> object:
        reader = real_reader()
        readers.append(reader)
        return reader

    monkeypatch.setattr(_hiredis.hiredis, "Reader", counting_reader)
    parser = HiredisRespParser()
    lone = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    for _ in range(3):
        parser.feed(lone)
        assert parser.next_command() == [b"SET", b"k", b"v"]
        assert parser.next_command() is NEED_DATA
    assert readers == []
    parser.feed(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n" * 3 + lone)
    got = []
    while (command := parser.next_command()) is not NEED_DATA:
        got.append(command)
    assert got == [[b"GET", b"a"]] * 3 + [[b"SET", b"k", b"v"]]
    assert len(readers) == 1

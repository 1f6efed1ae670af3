"""Reply encoding (RESP2 and RESP3) and the reply parser, which must round-trip each other."""

from __future__ import annotations

import ast
import math
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.errors import InvariantViolation, PeerProtocolError
from phalanx.resp import (
    EMPTY_ARRAY,
    NEED_DATA,
    NULL_ARRAY,
    NULL_ARRAY_RESP2,
    NULL_BULK,
    OK,
    ONE,
    PONG,
    ZERO,
    BigNumber,
    ErrorReply,
    Push,
    Reply,
    RespReplyParser,
    SimpleString,
    VerbatimString,
    encode,
    encode_command,
)


def parse_replies(data: bytes, cuts: tuple[int, ...] = ()) -> list[Reply]:
    parser = RespReplyParser()
    replies: list[Reply] = []
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    for start, end in zip([0, *points], [*points, len(data)], strict=True):
        parser.feed(data[start:end])
        while (reply := parser.next_reply()) is not NEED_DATA:
            replies.append(reply)
    return replies


# --- encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "resp2", "resp3"),
    [
        (SimpleString("OK"), b"+OK\r\n", b"+OK\r\n"),
        (ErrorReply("ERR bad\r\nthing"), b"-ERR bad  thing\r\n", b"-ERR bad  thing\r\n"),
        (0, b":0\r\n", b":0\r\n"),
        (-42, b":-42\r\n", b":-42\r\n"),
        (2**40, b":1099511627776\r\n", b":1099511627776\r\n"),
        (b"", b"$0\r\n\r\n", b"$0\r\n\r\n"),
        (b"a\r\nb", b"$4\r\na\r\nb\r\n", b"$4\r\na\r\nb\r\n"),
        ("h\u00e9", b"$3\r\nh\xc3\xa9\r\n", b"$3\r\nh\xc3\xa9\r\n"),
        (None, b"$-1\r\n", b"_\r\n"),
        (NULL_ARRAY, b"*-1\r\n", b"_\r\n"),
        ([], b"*0\r\n", b"*0\r\n"),
        ([b"a", 1, None], b"*3\r\n$1\r\na\r\n:1\r\n$-1\r\n", b"*3\r\n$1\r\na\r\n:1\r\n_\r\n"),
        ((b"a", [b"b"]), b"*2\r\n$1\r\na\r\n*1\r\n$1\r\nb\r\n", b"*2\r\n$1\r\na\r\n*1\r\n$1\r\nb\r\n"),
        ({b"k": 1}, b"*2\r\n$1\r\nk\r\n:1\r\n", b"%1\r\n$1\r\nk\r\n:1\r\n"),
        ({b"m"}, b"*1\r\n$1\r\nm\r\n", b"~1\r\n$1\r\nm\r\n"),
        (1.5, b"$3\r\n1.5\r\n", b",1.5\r\n"),
        (3.0, b"$1\r\n3\r\n", b",3\r\n"),
        (float("inf"), b"$3\r\ninf\r\n", b",inf\r\n"),
        (float("-inf"), b"$4\r\n-inf\r\n", b",-inf\r\n"),
        (float("nan"), b"$3\r\nnan\r\n", b",nan\r\n"),
        (True, b":1\r\n", b"#t\r\n"),
        (False, b":0\r\n", b"#f\r\n"),
        (BigNumber(10**30), b"$31\r\n1" + b"0" * 30 + b"\r\n", b"(1" + b"0" * 30 + b"\r\n"),
        (VerbatimString(b"hi", "txt"), b"$2\r\nhi\r\n", b"=6\r\ntxt:hi\r\n"),
        (Push([b"message", b"ch", b"x"]), b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n",
         b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n"),
    ],
)
def test_encode(reply: Reply, resp2: bytes, resp3: bytes) -> None:
    assert encode(reply) == resp2
    assert encode(reply, 2) == resp2
    assert encode(reply, 3) == resp3


def test_null_array_and_null_bulk_are_distinct() -> None:
    assert encode(None) == NULL_BULK == b"$-1\r\n"
    assert encode(NULL_ARRAY) == NULL_ARRAY_RESP2 == b"*-1\r\n"
    assert parse_replies(b"$-1\r\n*-1\r\n") == [None, NULL_ARRAY]
    assert encode([None, NULL_ARRAY]) == b"*2\r\n$-1\r\n*-1\r\n"


def test_constants_match_the_encoder() -> None:
    assert encode(SimpleString("OK")) == OK
    assert encode(SimpleString("PONG")) == PONG
    assert encode(0) == ZERO
    assert encode(1) == ONE
    assert encode([]) == EMPTY_ARRAY


def test_deep_nesting_does_not_recurse() -> None:
    reply: Reply = b"x"
    for _ in range(10_000):
        reply = [reply]
    data = encode(reply)
    assert data.startswith(b"*1\r\n" * 10_000)
    [parsed] = parse_replies(data)
    assert encode(parsed) == data  # compared through the (iterative) encoder: == would recurse


def test_encoding_rejects_what_resp_cannot_carry() -> None:
    with pytest.raises(InvariantViolation):
        SimpleString("two\r\nlines")
    with pytest.raises(InvariantViolation):
        VerbatimString(b"x", "text")
    with pytest.raises(InvariantViolation):
        encode(object())  # type: ignore[arg-type]
    with pytest.raises(InvariantViolation):
        encode(b"x", protocol=4)


def test_encode_command() -> None:
    assert encode_command("SET", b"k", 12, 1.5) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n1.5\r\n"
    )


# --- reply parser --------------------------------------------------------------------------


def test_parse_every_type() -> None:
    data = (
        b"+OK\r\n-ERR no\r\n:-3\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n*2\r\n:1\r\n$0\r\n\r\n"
        b"%1\r\n+k\r\n:1\r\n~2\r\n:1\r\n:2\r\n>2\r\n+a\r\n+b\r\n_\r\n,1.25\r\n,-inf\r\n"
        b"#t\r\n#f\r\n(123456789012345678901234567890\r\n=7\r\nmkd:abc\r\n!5\r\nERR x\r\n"
        b"|1\r\n+ttl\r\n:5\r\n+after-attribute\r\n*0\r\n%0\r\n~0\r\n"
    )
    assert parse_replies(data) == [
        SimpleString("OK"), ErrorReply("ERR no"), -3, b"abc", None, NULL_ARRAY, [1, b""],
        {SimpleString("k"): 1}, {1, 2}, Push([SimpleString("a"), SimpleString("b")]), None, 1.25,
        float("-inf"), True, False, BigNumber(123456789012345678901234567890),
        VerbatimString(b"abc", "mkd"), ErrorReply("ERR x"), SimpleString("after-attribute"),
        [], {}, set(),
    ]


def test_parse_nan_and_aggregate_keys() -> None:
    [value] = parse_replies(b",nan\r\n")
    assert isinstance(value, float) and math.isnan(value)
    assert parse_replies(b"%1\r\n*2\r\n:1\r\n:2\r\n+v\r\n~1\r\n*1\r\n:1\r\n") == [
        {(1, 2): SimpleString("v")}, {(1,)}
    ]


def test_partial_replies_need_data() -> None:
    data = encode([b"abc", {b"k": [1, 2.5, True]}, Push([b"x"])], 3)
    for cut in range(len(data)):
        parser = RespReplyParser()
        parser.feed(data[:cut])
        assert parser.next_reply() is NEED_DATA
        parser.feed(data[cut:])
        assert parser.next_reply() == [b"abc", {b"k": [1, 2.5, True]}, Push([b"x"])]


@pytest.mark.parametrize(
    "data",
    [b"?\r\n", b"\r\n", b"$abc\r\n", b"$3\r\nabcXY", b"*-2\r\n", b":1.5\r\n", b"#x\r\n",
     b",abc\r\n", b"_x\r\n", b"=3\r\nabc\r\n", b"$?\r\n", b"$-1x\r\n", b"%-1\r\n"],
)
def test_reply_protocol_errors(data: bytes) -> None:
    parser = RespReplyParser()
    parser.feed(data)
    with pytest.raises(PeerProtocolError):
        parser.next_reply()
    with pytest.raises(PeerProtocolError):
        parser.next_reply()  # sticky


def test_reply_bulk_limit() -> None:
    parser = RespReplyParser(bulk_length_bytes_max=4)
    parser.feed(b"$5\r\n")
    with pytest.raises(PeerProtocolError, match="over the limit"):
        parser.next_reply()


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.binary(max_size=30), st.floats(allow_nan=False),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=10).map(SimpleString),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=10).map(ErrorReply),
    st.integers().map(BigNumber), st.binary(max_size=10).map(VerbatimString),
    st.just(NULL_ARRAY),
)
resp3_replies = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.binary(max_size=5), children, max_size=4),
        st.sets(st.binary(max_size=5), max_size=4),
        st.lists(children, max_size=4).map(Push),
    ),
    max_leaves=20,
)


def without_null_array(reply: Reply) -> Reply:
    """RESP3 has a single null: NULL_ARRAY comes back as None."""
    if reply is NULL_ARRAY:
        return None
    if isinstance(reply, list):
        return [without_null_array(item) for item in reply]
    if isinstance(reply, dict):
        return {key: without_null_array(value) for key, value in reply.items()}
    if isinstance(reply, Push):
        return Push([without_null_array(item) for item in reply.items])
    return reply


@settings(max_examples=300, deadline=None)
@given(reply=resp3_replies, cuts=st.lists(st.integers(min_value=0), max_size=6).map(tuple))
def test_resp3_round_trip(reply: Reply, cuts: tuple[int, ...]) -> None:
    assert parse_replies(encode(reply, 3), cuts) == [without_null_array(reply)]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_reply_parser_fuzz(data: bytes) -> None:
    parser = RespReplyParser()
    parser.feed(data)
    try:
        while parser.next_reply() is not NEED_DATA:
            pass
    except PeerProtocolError:
        pass


# --- purity --------------------------------------------------------------------------------

FORBIDDEN_MODULES = {"asyncio", "socket", "time", "threading", "sqlite3", "random", "selectors"}


def test_resp_is_a_pure_layer() -> None:
    package = pathlib.Path(__file__).parents[2] / "src" / "phalanx" / "resp"
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                assert root not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
                assert root in {"__future__", "phalanx", "hiredis"} or root in {
                    "collections", "dataclasses", "enum", "itertools", "math", "re", "typing"
                }, f"{path.name} imports {name}"


@pytest.mark.parametrize("kind", [b"+", b"-", b":", b"$", b"*", b"("])
def test_an_endless_reply_line_is_a_protocol_error_not_unbounded_memory(kind: bytes) -> None:
    """A peer that never ends its line (issue 14): the parser refuses once the line passes
    its bound, whether the bytes come in one piece or in many, and stays refused."""
    limit = 1000
    parser = RespReplyParser(line_length_bytes_max=limit)
    parser.feed(kind)
    fed = 1
    while True:
        assert fed <= limit + 2, "the line passed its bound and was still buffered"
        parser.feed(b"7")
        fed += 1
        try:
            assert parser.next_reply() is NEED_DATA
        except PeerProtocolError as error:
            assert f"reply line longer than {limit} bytes" in str(error)
            break
    with pytest.raises(PeerProtocolError):
        parser.next_reply()  # sticky


def test_reply_lines_up_to_the_bound_are_parsed_and_the_default_bound_is_large() -> None:
    limit = 64
    for text in ("x" * (limit - 1), "x" * (limit - 2)):
        parser = RespReplyParser(line_length_bytes_max=limit)
        parser.feed(b"+" + text.encode())
        assert parser.next_reply() is NEED_DATA
        parser.feed(b"\r")  # a CR alone: its LF may follow, the line is not over-long yet
        assert parser.next_reply() is NEED_DATA
        parser.feed(b"\n")
        assert parser.next_reply() == SimpleString(text)
    over = RespReplyParser(line_length_bytes_max=limit)
    over.feed(b"-" + b"e" * limit + b"\r\n")  # complete, but one byte over
    with pytest.raises(PeerProtocolError, match="longer than 64 bytes"):
        over.next_reply()
    # The default keeps long error texts (a Lua error, say) and big numbers working.
    default = RespReplyParser()
    default.feed(b"-ERR " + b"e" * 100_000 + b"\r\n(" + b"9" * 4000 + b"\r\n")
    assert default.next_reply() == ErrorReply("ERR " + "e" * 100_000)
    assert default.next_reply() == BigNumber(int("9" * 4000))

"""RESP3 reply shapes: the state machine answers Redis's RESP2 shapes and
`front/replies.py:resp3_reply` turns them into what redis-server 7.0 sends a RESP3 client
(HELLO 3): maps, sets, doubles, pairs. Compared on the wire with a real redis-server: the same
commands, our reply shaped and encoded as RESP3, theirs as it arrives, both parsed by the same
RESP3 parser."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phalanx.kv import Command, KVStateMachine, encode_command
from phalanx.ops.ports import free_port as _free_port
from phalanx.resp import (
    NEED_DATA,
    OrderedSet,
    RespReplyParser,
    SimpleString,
    VerbatimString,
    encode,
)
from phalanx.server.front.replies import resp3_reply, to_resp

REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")




class Wire:
    """A raw RESP3 connection to redis-server."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.stream = self.sock.makefile("rb")

    def __call__(self, command: list[bytes]) -> Any:
        self.sock.sendall(b"*%d\r\n" % len(command) + b"".join(
            b"$%d\r\n%s\r\n" % (len(part), part) for part in command))
        parser = RespReplyParser()
        while True:
            reply = parser.next_reply()
            if reply is not NEED_DATA:
                return reply
            parser.feed(self.stream.read1(65536))


@pytest.fixture(scope="module", name="wire")
def wire_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    assert REDIS_SERVER is not None
    workdir: Path = tmp_path_factory.mktemp("redis-resp3")
    port = _free_port()
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                wire = Wire(port)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        assert isinstance(wire([b"HELLO", b"3"]), dict)
        yield wire
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _parse(data: bytes) -> Any:
    parser = RespReplyParser()
    parser.feed(data)
    reply = parser.next_reply()
    assert reply is not NEED_DATA
    return reply


#: Deterministic commands of every family whose RESP3 shape differs from RESP2 (and a few
#: whose shape does not, to show they stay arrays).
COMMANDS = """
flushall
sadd s a b c d
smembers s
smembers missing
sinter s
sunion s missing
sdiff s missing
sadd t c d e
sinter s t
sunion s t
sdiff s t
spop t 10
spop missing 2
srandmember s 10
smismember s a z
hset h f v g w
hgetall h
hgetall missing
hrandfield h 10
hrandfield h 10 withvalues
hrandfield missing 2 withvalues
hmget h f nope
set k1 ohmytext
set k2 mynewtext
lcs k1 k2
lcs k1 k2 len
lcs k1 k2 idx
lcs k1 k2 idx minmatchlen 4 withmatchlen
incrbyfloat fl 1.5
hincrbyfloat h x 1.5
zadd z 1 a 2.5 b 3 c
zscore z b
zscore z nope
zincrby z 0.25 a
zmscore z a nope c
zadd z incr 1 c
zrange z 0 -1 withscores
zrange z 0 -1
zrangebyscore z -inf +inf withscores
zrevrange z 0 1 withscores
zpopmin z
zpopmax z 2
zscan z 0
zunion 1 z withscores
zadd z 5 d 6 e
zmpop 1 z min count 2
lpush l x y z
lrange l 0 -1
lmpop 1 l left count 2
hkeys h
hvals h
geoadd g 13.361389 38.115556 Palermo 15.087269 37.502669 Catania
geopos g Palermo nope
geodist g Palermo Catania km
geosearch g fromlonlat 15 37 byradius 200 km asc withcoord withdist withhash
sort s alpha
type h
xadd st 1-1 a 1
xadd st 2-1 b 2 c 3
xrange st - +
xread count 1 streams st 0
xread streams st 2-1
xread streams missing 0
xgroup create st g 0
xreadgroup group g c streams st >
xreadgroup group g c streams st 0
xreadgroup group g c streams st >
xpending st g
xinfo groups st
xautoclaim st g c2 0 0 justid
xinfo stream missing
"""


@needs_redis
def test_resp3_shapes_match_redis_on_the_wire(wire: Wire) -> None:
    machine = KVStateMachine()
    for index, line in enumerate(COMMANDS.strip().splitlines(), 1):
        command = line.encode().split(b" ")
        reply = machine.apply(index, encode_command(Command(command[0], tuple(command[1:]),
                                                            1_000)))
        ours = _parse(encode(resp3_reply(command, to_resp(reply)), 3))  # type: ignore[arg-type]
        theirs = wire(command)
        if command[0].upper() in (b"HRANDFIELD", b"SRANDMEMBER") and isinstance(ours, list):
            # Random picks: the same shape and size, the same pairs.
            assert type(ours) is type(theirs) and len(ours) == len(theirs), line
            assert sorted(map(repr, ours)) == sorted(map(repr, theirs)), line
            continue
        assert ours == theirs, line
        assert type(ours) is type(theirs), line


def test_resp2_sessions_keep_redis_2_shapes() -> None:
    """resp3_reply is applied only for a RESP3 session: encoded as RESP2, a map or a set
    flattens to an array (what the listener does for protocol 2: no shaping at all)."""
    assert encode(resp3_reply([b"HGETALL", b"h"], [b"f", b"v"]), 2) == \
        b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
    assert encode(resp3_reply([b"HGETALL", b"h"], [b"f", b"v"]), 3) == \
        b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"


def test_server_command_shapes() -> None:
    """CONFIG GET is a map, INFO and CLIENT INFO|LIST verbatim text, COMMAND's flags and
    categories sets (as redis-server 7.0 answers under HELLO 3)."""
    assert resp3_reply([b"CONFIG", b"GET", b"*"], [b"maxmemory", b"0"]) == {b"maxmemory": b"0"}
    assert resp3_reply([b"CONFIG", b"SET", b"x", b"y"], SimpleString("OK")) == SimpleString("OK")
    assert resp3_reply([b"INFO"], b"# Server\r\n") == VerbatimString(b"# Server\r\n")
    assert resp3_reply([b"CLIENT", b"INFO"], b"id=1\n") == VerbatimString(b"id=1\n")
    assert resp3_reply([b"CLIENT", b"ID"], 7) == 7
    entry = [b"get", 2, [SimpleString("readonly")], 1, 1, 1, [SimpleString("@read")], [], [], []]
    shaped = resp3_reply([b"COMMAND", b"INFO", b"get"], [entry])
    assert shaped == [[b"get", 2, {SimpleString("readonly")}, 1, 1, 1,
                       {SimpleString("@read")}, set(), set(), set()]]
    # GETKEYSANDFLAGS: a set in Redis's order (RW access delete), as redis-server 7.0 sends.
    flags = [SimpleString("RW"), SimpleString("access"), SimpleString("delete")]
    shaped_flags = resp3_reply([b"COMMAND", b"GETKEYSANDFLAGS", b"lmove", b"a", b"b", b"left",
                                b"left"], [[b"a", flags]])
    assert shaped_flags == [[b"a", OrderedSet(tuple(flags))]]
    assert encode(shaped_flags, 3) == b"*1\r\n*2\r\n$1\r\na\r\n~3\r\n+RW\r\n+access\r\n+delete\r\n"
    # Errors and nulls pass through unchanged.
    assert resp3_reply([b"SMEMBERS", b"s"], None) is None


def _surface_generator() -> Any:
    """tests/kv/test_surface_differential.py's random command generator (loaded by path)."""
    import importlib.util
    from pathlib import Path as _Path

    path = _Path(__file__).parents[1] / "kv" / "test_surface_differential.py"
    spec = importlib.util.spec_from_file_location("_surface_differential", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_RANDOM_REPLIES = frozenset((b"SPOP", b"SRANDMEMBER", b"HRANDFIELD", b"RANDOMKEY", b"SCAN",
                             b"SSCAN", b"HSCAN", b"ZRANDMEMBER", b"SORT", b"SORT_RO",
                             b"OBJECT", b"DUMP", b"TTL", b"PTTL", b"EXPIRETIME",
                             b"PEXPIRETIME"))


def _skeleton(reply: Any) -> Any:
    """A reply's RESP3 types, not its content (for replies that are random by design)."""
    if isinstance(reply, (list, set, frozenset, tuple)):
        return type(reply).__name__
    if isinstance(reply, dict):
        return "dict"
    return type(reply).__name__


@needs_redis
@pytest.mark.parametrize("family", ["strings", "hashes", "sets", "lists", "keys"])
def test_random_commands_have_redis_resp3_types(wire: Wire, family: str) -> None:
    """Seeded random commands of every family (the kv surface generator): under HELLO 3 our
    shaped replies parse to redis-server's values, or at least its types for random replies."""
    generator = _surface_generator()
    rng = random.Random(13)
    wire([b"FLUSHALL"])
    machine = KVStateMachine()
    for index in range(1, 600):
        command = generator.next_command(family, rng)
        if command[0].upper() == b"SPOP":
            continue  # a random write: the two states would part
        reply = machine.apply(index, encode_command(Command(command[0], tuple(command[1:]),
                                                            1_000)))
        ours = _parse(encode(resp3_reply(command, to_resp(reply)), 3))  # type: ignore[arg-type]
        theirs = wire(command)
        if command[0].upper() in _RANDOM_REPLIES:
            assert _skeleton(ours) == _skeleton(theirs), (command, ours, theirs)
            continue
        assert ours == theirs and type(ours) is type(theirs), (command, ours, theirs)


STREAM_COMMANDS = """\
xadd s 1-1 a 1
xadd s 2-1 b 2
xadd t 1-5 c 3
xgroup create s g 0
xread streams s 0
xread count 1 streams s t 0 0
xread streams nokey 0
xreadgroup group g c count 1 streams s >
xreadgroup group g c streams s 0
xreadgroup group g c streams s >
xreadgroup group g c streams s >
xrange s - +
xpending s g
xinfo groups s
"""


def _keys(reply: Any) -> Any:
    """A map's keys (as bytes) and its values' types, recursively into lists of maps: the
    shape of a reply whose values hold times (XINFO CONSUMERS idle, XINFO STREAM FULL)."""
    if isinstance(reply, dict):
        return {(k.text.encode() if isinstance(k, SimpleString) else k): _keys(v)
                for k, v in reply.items()}
    if isinstance(reply, list) and reply and all(isinstance(item, dict) for item in reply):
        return [_keys(item) for item in reply]
    return type(reply).__name__


@needs_redis
def test_stream_replies_are_redis_resp3_maps(wire: Wire) -> None:
    """XREAD / XREADGROUP answer a map {key: entries}, XINFO GROUPS / CONSUMERS arrays of maps,
    XINFO STREAM [FULL] a map (its groups and their consumers maps): what redis-server 7.0
    sends under HELLO 3, and what redis-py 8 (RESP3 by default) parses (a RESP2 array there
    broke redis-py's XREADGROUP parser: 'list' object has no attribute 'items')."""
    wire([b"FLUSHALL"])
    machine = KVStateMachine()
    index = 0

    def both(line: str) -> tuple[Any, Any]:
        nonlocal index
        index += 1
        command = line.encode().split(b" ")
        reply = machine.apply(index, encode_command(Command(command[0], tuple(command[1:]),
                                                            1_000)))
        ours = _parse(encode(resp3_reply(command, to_resp(reply)), 3))  # type: ignore[arg-type]
        return ours, wire(command)

    for line in STREAM_COMMANDS.strip().splitlines():
        ours, theirs = both(line)
        assert ours == theirs, line
        assert type(ours) is type(theirs), line
    ours, theirs = both("xreadgroup group g c2 streams s 0")
    assert ours == theirs == {b"s": []}
    for line in ("xinfo consumers s g", "xinfo stream s", "xinfo stream s full"):
        ours, theirs = both(line)
        assert isinstance(ours, type(theirs)), line
        # The same fields and value types as redis-server (not the values: they hold times).
        assert _keys(ours) == _keys(theirs), line
        if line.endswith("full"):
            [group] = ours[b"groups"]
            assert isinstance(group, dict) and b"consumers" in group, group
            assert all(isinstance(c, dict) for c in group[b"consumers"]), group
        if line == "xinfo consumers s g":
            assert [c[b"name"] for c in ours] == [c[b"name"] for c in theirs] == [b"c", b"c2"]


def test_stream_shapes_leave_other_replies_alone() -> None:
    assert resp3_reply([b"XREAD", b"STREAMS", b"s", b"0"], None) is None
    assert resp3_reply([b"XINFO", b"HELP"], [b"line"]) == [b"line"]
    assert resp3_reply([b"XREADGROUP", b"GROUP", b"g", b"c", b"STREAMS", b"s", b">"],
                       [[b"s", [[b"1-1", [b"f", b"v"]]]]]) == {b"s": [[b"1-1", [b"f", b"v"]]]}

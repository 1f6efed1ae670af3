"""Differential test of the stream commands: the same commands against our state machine and a
real redis-server 7.0 (started by the test on a free port, stopped by its PID).

Compared exactly, after normalising only what legitimately differs: times (idle times, seen
and delivery times: Redis reads its wall clock, ours is the replicated clock) and XINFO's
radix-tree-keys / radix-tree-nodes (Redis's memory layout). Auto ids (`*`) are compared where
they are deterministic in Redis too: after an explicit id far in the future, `*` is last + 1.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from phalanx.kv import Command, Error, KVStateMachine, encode_command

from .redis_pair import needs_redis, redis_server_fixture  # noqa: F401 (a fixture)

pytestmark = needs_redis

_TIME_FIELDS = {b"idle", b"seen-time", b"radix-tree-keys", b"radix-tree-nodes"}


def _normalise(command: list[bytes], reply: Any) -> Any:
    """Replace time-dependent and layout values by markers."""
    name = command[0].upper()
    if isinstance(reply, list) and name in (b"XINFO",):
        return _normalise_info(reply)
    if name == b"XPENDING" and len(command) > 3 and isinstance(reply, list):
        return [[row[0], row[1], "idle", row[3]] if isinstance(row, list) else row
                for row in reply]
    return reply


def _normalise_info(reply: Any) -> Any:
    if not isinstance(reply, list):
        return reply
    out: list[Any] = []
    position = 0
    flat_map = len(reply) % 2 == 0 and all(
        isinstance(reply[i], bytes) and reply[i] in _KNOWN_FIELDS for i in range(0, len(reply), 2))
    if not flat_map:
        return [_normalise_info(item) for item in reply]
    while position < len(reply):
        field, value = reply[position], reply[position + 1]
        if field in _TIME_FIELDS:
            value = "time"
        elif field == b"pending" and isinstance(value, list):
            # FULL: [id, consumer, delivery_time, count] or [id, delivery_time, count]
            value = [[row[0], row[1], "time", row[3]] if len(row) == 4
                     else [row[0], "time", row[2]] for row in value]
        else:
            value = _normalise_info(value)
        out += [field, value]
        position += 2
    return out


_KNOWN_FIELDS = {
    b"length", b"radix-tree-keys", b"radix-tree-nodes", b"last-generated-id",
    b"max-deleted-entry-id", b"entries-added", b"recorded-first-entry-id", b"groups",
    b"first-entry", b"last-entry", b"entries", b"name", b"consumers", b"pending",
    b"last-delivered-id", b"entries-read", b"lag", b"pel-count", b"seen-time", b"idle",
}


def _plain(reply: Any) -> Any:
    """Status strings as bytes (redis-py reads `+OK` and bulk strings alike)."""
    if isinstance(reply, str):
        return reply.encode()
    if isinstance(reply, list):
        return [_plain(item) for item in reply]
    return reply


class StreamPair:
    """One command to our state machine (at the wall clock, as Redis) and to redis-server."""

    def __init__(self, server: Any) -> None:
        server.flushall()
        self.connection = server.connection_pool.get_connection()
        self.machine = KVStateMachine()
        self.index = 0

    def ours(self, command: list[bytes]) -> Any:
        self.index += 1
        reply = self.machine.apply(self.index, encode_command(
            Command(command[0], tuple(command[1:]), int(time.time() * 1000))))
        if isinstance(reply, Error):
            message = reply.message
            return ("error", message[4:] if message.startswith("ERR ") else message)
        return _plain(reply)

    def theirs(self, command: list[bytes]) -> Any:
        self.connection.send_command(*command)
        try:
            return self.connection.read_response()
        except Exception as exc:  # redis.ResponseError, and its NOGROUP / BUSYGROUP kinds
            if type(exc).__name__ in ("ConnectionError", "TimeoutError"):
                raise
            return ("error", str(exc))

    def check(self, command: list[bytes], context: str = "") -> Any:
        expected = _normalise(command, self.theirs(command))
        actual = _normalise(command, self.ours(command))
        assert actual == expected, f"{context}: {command!r}: ours {actual!r}, redis {expected!r}"
        return actual


def _run(pair: StreamPair, script: str) -> None:
    for line in script.strip().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pair.check([part.encode() for part in line.split()], "script")


_BASICS = """
XADD s 1-1 a 1
XADD s 1-1 a 1
XADD s 0-0 a 1
XADD s 0-* a 1
XADD s 1-* b 2
XADD s 2-* c 3 d 4
XADD s 2 e 5
XADD s 1-5 a 1
XADD s 99999999999999-5 f 6
XADD s * g 7
XADD s 99999999999999-* h 8
XADD s abc x y
XADD s 1-x x y
XADD s -1 x y
XADD s + x y
XADD s - x y
XADD s * x
XADD s * x y z
XADD s
XADD s MAXLEN
XADD s MAXLEN -1 * a 1
XADD s MAXLEN abc * a 1
XADD s MAXLEN 3 MINID 1 * a 1
XADD s MINID 1 MAXLEN 3 * a 1
XADD s LIMIT 10 * a 1
XADD s MAXLEN 3 LIMIT 10 * a 1
XADD s MAXLEN ~ 3 LIMIT -1 * a 1
XADD s MINID bad * a 1
XADD s MINID - * a 1
XADD s FOO * a 1
XLEN s
XLEN nosuch
XRANGE s - +
XRANGE s - + COUNT 2
XRANGE s - + COUNT 0
XRANGE s - + COUNT -3
XRANGE s - + COUNT x
XRANGE s - + FOO
XRANGE s (1-1 +
XRANGE s - (2-1
XRANGE s (1-1 (99999999999999-6
XRANGE s 2 2
XRANGE s 2 1
XRANGE s (- +
XRANGE s - (+
XRANGE s (18446744073709551615-18446744073709551615 +
XRANGE s - (0-0
XRANGE s 18446744073709551616 +
XRANGE s 1-18446744073709551616 +
XRANGE nosuch - +
XREVRANGE s + -
XREVRANGE s + - COUNT 2
XREVRANGE s (99999999999999-6 (1-1
XREVRANGE s 2 -
XREVRANGE s - +
XDEL s 1-2 1-2 5-5
XDEL s 1-2
XDEL s bad
XDEL s +
XDEL nosuch 1-1
XLEN s
XRANGE s - +
XINFO STREAM s
XINFO STREAM s FULL
XINFO STREAM s FULL COUNT 1
XINFO STREAM s FULL COUNT 0
XINFO STREAM s FULL COUNT -1
XINFO STREAM s FULL COUNT x
XINFO STREAM s FULL FOO 1
XINFO STREAM s FOO
XINFO STREAM nosuch
XINFO FOO s
XINFO GROUPS
XINFO HELP
XTRIM s MAXLEN 3
XTRIM s MAXLEN = 2
XTRIM s MAXLEN ~ 1
XTRIM s MINID 99999999999999-6
XTRIM s
XTRIM s FOO 1
XTRIM s LIMIT 1
XTRIM s MAXLEN 1 LIMIT 1
XTRIM nosuch MAXLEN 1
XRANGE s - +
XINFO STREAM s
SET str v
XADD str * a 1
XLEN str
XRANGE str - +
XDEL str 1-1
XTRIM str MAXLEN 1
XINFO STREAM str
XSETID str 1-1
TYPE s
OBJECT ENCODING s
XADD z NOMKSTREAM * a 1
EXISTS z
XADD z MAXLEN 0 5-1 a 1
XLEN z
EXISTS z
TYPE z
XADD z MAXLEN 0 5-2 a 1
XRANGE z - +
XINFO STREAM z
XADD z MAXLEN 0 5-2 a 1
"""

_SETID = """
XADD t 5-1 a 1
XADD t 6-1 a 1
XSETID t 5-9
XSETID t 6-1
XSETID t 7-0
XADD t 7-* b 2
XSETID t 8-0 ENTRIESADDED 1
XSETID t 8-0 ENTRIESADDED 10
XSETID t 8-0 ENTRIESADDED -1
XSETID t 8-0 ENTRIESADDED x
XSETID t 8-0 MAXDELETEDID 9-0
XSETID t 8-0 MAXDELETEDID 7-0
XSETID t 8-0 MAXDELETEDID bad
XSETID t 8-0 FOO
XSETID t bad
XSETID t +
XSETID nosuch 1-1
XDEL t 7-1
XSETID t 6-5
XINFO STREAM t
XDEL t 5-1 6-1
XSETID t 1-1
XINFO STREAM t
XSETID t 7-0
XINFO STREAM t
XADD t 7-1 x y
"""

_GROUPS = """
XGROUP CREATE g grp $
XGROUP CREATE g grp $ MKSTREAM
XGROUP CREATE g grp $ MKSTREAM
XGROUP CREATE g grp2 0 ENTRIESREAD 0
XGROUP CREATE g grp3 0 ENTRIESREAD -2
XGROUP CREATE g grp3 0 ENTRIESREAD x
XGROUP CREATE g grp3 0 FOO
XGROUP CREATE g grp3 bad
XGROUP CREATE g grp3 +
XGROUP CREATE g grp3 0 MKSTREAM ENTRIESREAD 1 MKSTREAM
XGROUP CREATE g
XGROUP FOO g grp
XGROUP HELP
XGROUP HELP extra
XADD g 1-1 a 1
XADD g 2-1 b 2
XADD g 3-1 c 3
XADD g 4-1 d 4
XINFO GROUPS g
XREADGROUP GROUP grp alice STREAMS g >
XREADGROUP GROUP grp2 alice COUNT 2 STREAMS g >
XREADGROUP GROUP grp2 bob COUNT 1 STREAMS g >
XREADGROUP GROUP grp2 bob NOACK STREAMS g >
XREADGROUP GROUP grp2 bob STREAMS g >
XREADGROUP GROUP grp2 alice STREAMS g 0
XREADGROUP GROUP grp2 alice COUNT 1 STREAMS g 0
XREADGROUP GROUP grp2 alice STREAMS g 1-1
XREADGROUP GROUP grp2 carol STREAMS g 0
XREADGROUP GROUP grp2 alice STREAMS g $
XREADGROUP GROUP grp2 alice STREAMS g bad
XREADGROUP GROUP nogrp alice STREAMS g >
XREADGROUP GROUP grp2 alice STREAMS nosuch >
XREADGROUP GROUP grp2 alice STREAMS g
XREADGROUP GROUP grp2 alice STREAMS g > extra
XREADGROUP GROUP grp2 alice FOO STREAMS g >
XREADGROUP COUNT 1 STREAMS g >
XREADGROUP GROUP grp2 alice COUNT x STREAMS g >
XREADGROUP GROUP grp2 alice BLOCK x STREAMS g >
XREADGROUP GROUP grp2 alice BLOCK -1 STREAMS g >
XINFO GROUPS g
XINFO CONSUMERS g grp2
XINFO CONSUMERS g nogrp
XINFO CONSUMERS nosuch grp2
XINFO STREAM g FULL
XPENDING g grp2
XPENDING g grp2 - + 10
XPENDING g grp2 - + 10 alice
XPENDING g grp2 - + 10 nobody
XPENDING g grp2 (1-1 + 10
XPENDING g grp2 - (2-1 10
XPENDING g grp2 - + 1
XPENDING g grp2 - + 0
XPENDING g grp2 - + -1
XPENDING g grp2 IDLE 0 - + 10
XPENDING g grp2 IDLE 100000000 - + 10
XPENDING g grp2 IDLE x - + 10
XPENDING g grp2 IDLE 0 - + 10 alice
XPENDING g grp2 IDLE 0 - +
XPENDING g grp2 - + x
XPENDING g grp2 bad + 10
XPENDING g grp2 - bad 10
XPENDING g grp2 -
XPENDING g grp2 - + 10 alice extra more
XPENDING g grp
XPENDING g nogrp
XPENDING nosuch grp
XACK g grp2 1-1 9-9
XACK g grp2 1-1
XACK g grp2 bad
XACK g nogrp 1-1
XACK nosuch grp 1-1
XPENDING g grp2
XCLAIM g grp2 carol 0 2-1
XCLAIM g grp2 carol 0 2-1 JUSTID
XCLAIM g grp2 carol 0 2-1 RETRYCOUNT 7
XPENDING g grp2 - + 10
XCLAIM g grp2 carol 100000000 2-1
XCLAIM g grp2 carol 0 4-1
XCLAIM g grp2 carol 0 4-1 FORCE
XPENDING g grp2 - + 10
XCLAIM g grp2 carol 0 4-1 FORCE JUSTID
XCLAIM g grp2 carol 0 2-1 IDLE 5000 JUSTID
XCLAIM g grp2 carol 0 2-1 TIME 1 JUSTID
XCLAIM g grp2 carol 0 2-1 LASTID 9-9 JUSTID
XINFO GROUPS g
XCLAIM g grp2 carol 0 2-1 IDLE x
XCLAIM g grp2 carol 0 2-1 TIME x
XCLAIM g grp2 carol 0 2-1 RETRYCOUNT x
XCLAIM g grp2 carol 0 2-1 LASTID bad
XCLAIM g grp2 carol 0 2-1 BOGUS
XCLAIM g grp2 carol x 2-1
XCLAIM g nogrp carol 0 2-1
XCLAIM nosuch grp carol 0 2-1
XCLAIM g grp2 carol 0 FORCE
XDEL g 3-1
XCLAIM g grp2 dave 0 3-1 2-1
XPENDING g grp2 - + 10
XAUTOCLAIM g grp2 erin 0 0
XAUTOCLAIM g grp2 erin 0 0 COUNT 1
XAUTOCLAIM g grp2 erin 0 0 COUNT 1 JUSTID
XAUTOCLAIM g grp2 erin 100000000 0
XAUTOCLAIM g grp2 erin 0 (1-1
XAUTOCLAIM g grp2 erin 0 0 COUNT 0
XAUTOCLAIM g grp2 erin 0 0 COUNT x
XAUTOCLAIM g grp2 erin 0 0 FOO
XAUTOCLAIM g grp2 erin x 0
XAUTOCLAIM g grp2 erin 0 bad
XAUTOCLAIM g nogrp erin 0 0
XAUTOCLAIM nosuch grp erin 0 0
XPENDING g grp2
XINFO CONSUMERS g grp2
XGROUP CREATECONSUMER g grp2 frank
XGROUP CREATECONSUMER g grp2 frank
XGROUP CREATECONSUMER g nogrp frank
XGROUP DELCONSUMER g grp2 erin
XGROUP DELCONSUMER g grp2 nobody
XGROUP DELCONSUMER g nogrp erin
XPENDING g grp2
XGROUP SETID g grp2 1-1
XGROUP SETID g grp2 $
XGROUP SETID g grp2 0 ENTRIESREAD 0
XGROUP SETID g grp2 - ENTRIESREAD 3
XGROUP SETID g grp2 bad
XGROUP SETID g grp2 0 FOO 1
XGROUP SETID g nogrp 0
XGROUP SETID nosuch grp 0
XINFO GROUPS g
XGROUP DESTROY g grp3
XGROUP DESTROY g grp
XGROUP DESTROY g grp
XGROUP DESTROY nosuch grp
XINFO GROUPS g
SET str v
XGROUP CREATE str grp $
XREADGROUP GROUP grp alice STREAMS str >
XACK str grp 1-1
XPENDING str grp
XCLAIM str grp c 0 1-1
XAUTOCLAIM str grp c 0 0
XINFO GROUPS str
XINFO CONSUMERS str grp
"""

_READS = """
XADD r1 1-1 a 1
XADD r1 2-1 b 2
XADD r2 1-1 c 3
XREAD STREAMS r1 0
XREAD COUNT 1 STREAMS r1 r2 0 0
XREAD STREAMS r1 r2 2-1 0
XREAD STREAMS r1 r2 2-1 1-1
XREAD STREAMS r1 $
XREAD STREAMS nosuch 0
XREAD STREAMS nosuch $
XREAD STREAMS r1 >
XREAD STREAMS r1 bad
XREAD STREAMS r1
XREAD STREAMS r1 r2 0
XREAD COUNT x STREAMS r1 0
XREAD COUNT -1 STREAMS r1 0
XREAD BLOCK x STREAMS r1 0
XREAD BLOCK -1 STREAMS r1 0
XREAD BLOCK 10 STREAMS r1 0
XREAD GROUP g c STREAMS r1 0
XREAD NOACK STREAMS r1 0
XREAD FOO STREAMS r1 0
XREAD COUNT 1
SET str v
XREAD STREAMS str 0
XREAD STREAMS r1 str 0 0
"""


@pytest.mark.parametrize("script", [_BASICS, _SETID, _GROUPS, _READS],
                         ids=["basics", "setid", "groups", "reads"])
def test_scripted_commands_match_redis(redis_server: Any, script: str) -> None:
    _run(StreamPair(redis_server), script)


def test_dump_restore_and_generic_commands_match_redis(redis_server: Any) -> None:
    pair = StreamPair(redis_server)
    _run(pair, """
XADD d 1-1 a 1
XGROUP CREATE d grp 0
XREADGROUP GROUP grp c STREAMS d >
COPY d d2
XRANGE d2 - +
XPENDING d2 grp
RENAME d2 d3
XINFO GROUPS d3
EXPIRE d3 100
TTL d3
DEL d3
EXISTS d3
TYPE d
""")
    pair.check([b"EVAL", b"return redis.call('XREAD', 'BLOCK', '0', 'STREAMS', KEYS[1], '0')",
                b"1", b"d"], "script")
    pair.check([b"EVAL", b"return redis.call('XREAD', 'COUNT', '1', 'STREAMS', KEYS[1], '0')",
                b"1", b"d"], "script")
    # DUMP payloads differ (phalanx's own format); a round trip keeps everything.
    payload = pair.ours([b"DUMP", b"d"])
    assert isinstance(payload, bytes)
    assert pair.ours([b"RESTORE", b"d4", b"0", payload]) == b"OK"
    assert pair.ours([b"XPENDING", b"d4", b"grp"]) == pair.ours([b"XPENDING", b"d", b"grp"])
    assert pair.ours([b"XINFO", b"STREAM", b"d4", b"FULL"]) == \
        pair.ours([b"XINFO", b"STREAM", b"d", b"FULL"])
    bad = payload[:-7] + bytes([payload[-7] ^ 1]) + payload[-6:]
    assert pair.ours([b"RESTORE", b"d5", b"0", bad])[0] == "error"


def test_approximate_trimming_matches_redis(redis_server: Any) -> None:
    """`~` removes whole 100-entry nodes, as Redis does for small entries."""
    pair = StreamPair(redis_server)
    for number in range(1, 451):
        pair.check([b"XADD", b"a", b"%d-1" % number, b"f", b"v"], "fill")
    for command in ("XTRIM a MAXLEN ~ 399", "XLEN a", "XTRIM a MAXLEN ~ 250 LIMIT 50",
                    "XTRIM a MAXLEN ~ 150 LIMIT 100", "XLEN a", "XTRIM a MINID ~ 420",
                    "XLEN a", "XTRIM a MINID ~ 430-0", "XLEN a",
                    "XADD a MAXLEN ~ 10 1000-1 f v", "XLEN a", "XTRIM a MAXLEN ~ 0 LIMIT 0",
                    "XLEN a", "XINFO STREAM a"):
        pair.check([part.encode() for part in command.split()], "trim")


def test_random_group_workload_matches_redis(redis_server: Any) -> None:
    """Random XADD / XREADGROUP / XACK / XCLAIM / XAUTOCLAIM / XDEL / XTRIM sequences with
    explicit ids: every reply and the final XINFO FULL agree."""
    rng = random.Random(1717)
    pair = StreamPair(redis_server)
    pair.check([b"XGROUP", b"CREATE", b"q", b"g1", b"0", b"MKSTREAM"], "setup")
    pair.check([b"XGROUP", b"CREATE", b"q", b"g2", b"$"], "setup")
    next_ms = 1
    consumers = [b"c1", b"c2", b"c3"]
    for step in range(600):
        roll = rng.random()
        group = rng.choice([b"g1", b"g2"])
        consumer = rng.choice(consumers)
        if roll < 0.35:
            next_ms += rng.choice([0, 1, 5])
            command = [b"XADD", b"q", b"%d-*" % next_ms, b"n", b"%d" % step]
            if rng.random() < 0.1:
                command[2:2] = [b"MAXLEN", b"=", b"%d" % rng.randint(5, 40)]
        elif roll < 0.55:
            command = [b"XREADGROUP", b"GROUP", group, consumer, b"COUNT",
                       b"%d" % rng.randint(1, 4), b"STREAMS", b"q",
                       b">" if rng.random() < 0.8 else b"0"]
        elif roll < 0.7:
            command = [b"XACK", b"q", group] + [
                b"%d-%d" % (rng.randint(1, next_ms), rng.randint(0, 2)) for _ in range(3)]
        elif roll < 0.78:
            command = [b"XCLAIM", b"q", group, consumer, b"0"] + [
                b"%d-%d" % (rng.randint(1, next_ms), rng.randint(0, 2)) for _ in range(2)]
            command.append(b"JUSTID")
        elif roll < 0.86:
            command = [b"XAUTOCLAIM", b"q", group, consumer, b"0", b"0", b"COUNT",
                       b"%d" % rng.randint(1, 5), b"JUSTID"]
        elif roll < 0.92:
            command = [b"XDEL", b"q", b"%d-%d" % (rng.randint(1, next_ms), rng.randint(0, 2))]
        elif roll < 0.95:
            command = [b"XINFO", b"GROUPS", b"q"]
        else:
            command = [b"XPENDING", b"q", group, b"-", b"+", b"100"]
        pair.check(command, f"step {step}")
    pair.check([b"XINFO", b"STREAM", b"q", b"FULL", b"COUNT", b"0"], "final")

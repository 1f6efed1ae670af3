"""Bitmaps (SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD, BITFIELD_RO): unit cases and a
seeded random differential run against a real redis-server (reply by reply, then the strings)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from .conftest import Driver
from .redis_pair import Pair, needs_redis, redis_server_fixture  # noqa: F401 (a fixture)


def test_bit_order_and_growth() -> None:
    d = Driver()
    assert d("SETBIT", "k", 7, 1) == 0
    assert d("GET", "k") == b"\x01"
    assert d("SETBIT", "k", 0, 1) == 0 and d("GET", "k") == b"\x81"
    assert d("GETBIT", "k", 0) == 1 and d("GETBIT", "k", 100) == 0
    assert d("SETBIT", "k", 16, 1) == 0 and d("GET", "k") == b"\x81\x00\x80"
    assert d("BITCOUNT", "k") == 3 and d("BITCOUNT", "k", 0, 0) == 2
    assert d("BITCOUNT", "k", 1, 7, "BIT") == 1
    assert d("BITPOS", "k", 0) == 1 and d("BITPOS", "k", 1, 1) == 16
    assert d("SETBIT", "k", 2**32, 1).message == "ERR bit offset is not an integer or out of range"
    assert d("SETBIT", "k", 1, 2).message == "ERR bit is not an integer or out of range"
    d("LPUSH", "l", "x")
    assert d("SETBIT", "l", 1, 1).message.startswith("WRONGTYPE")


def test_bitfield_overflow_modes() -> None:
    d = Driver()
    assert d("BITFIELD", "f", "SET", "i8", 0, 100, "INCRBY", "i8", 0, 100) == [0, -56]
    assert d("BITFIELD", "f", "OVERFLOW", "SAT", "INCRBY", "i8", 0, -200) == [-128]
    assert d("BITFIELD", "f", "OVERFLOW", "FAIL", "INCRBY", "i8", 0, -1) == [None]
    assert d("BITFIELD", "f", "GET", "u8", "#0", "GET", "i64", 0) == [128, -2**63]
    assert d("BITFIELD_RO", "f", "SET", "u8", 0, 1).message == \
        "ERR BITFIELD_RO only supports the GET subcommand"
    assert d("BITFIELD", "f", "GET", "u64", 0).message.startswith("ERR Invalid bitfield type")


def _random_command(rng: random.Random) -> list[bytes]:
    keys = [b"b1", b"b2", b"b3", b"wrong"]
    key = rng.choice(keys)
    number = lambda low, high: str(rng.randint(low, high)).encode()  # noqa: E731
    choice = rng.randrange(9)
    if choice == 0:
        return [b"SETBIT", key, number(0, 200), rng.choice([b"0", b"1", b"1", b"2"])]
    if choice == 1:
        return [b"GETBIT", key, number(-1, 220)]
    if choice == 2:
        extra = rng.choice([[], [number(-30, 30), number(-30, 30)],
                            [number(-200, 200), number(-200, 200), rng.choice([b"BIT", b"BYTE",
                                                                               b"bit", b"x"])],
                            [number(0, 3)]])
        return [b"BITCOUNT", key, *extra]
    if choice == 3:
        extra = rng.choice([[], [number(-30, 30)], [number(-30, 30), number(-30, 30)],
                            [number(-200, 200), number(-200, 200), rng.choice([b"BIT", b"BYTE"])]])
        return [b"BITPOS", key, rng.choice([b"0", b"1", b"1", b"0", b"3"]), *extra]
    if choice == 4:
        op = rng.choice([b"AND", b"OR", b"XOR", b"NOT", b"nope"])
        sources = rng.sample(keys, 1 if op == b"NOT" and rng.random() < 0.8 else 2)
        return [b"BITOP", op, rng.choice([*keys[:3], b"dest"]), *sources]
    if choice == 5:
        return [b"SET", key, bytes(rng.randrange(256) for _ in range(rng.randrange(6)))]
    ops: list[bytes] = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice([b"GET", b"SET", b"INCRBY", b"OVERFLOW"])
        if kind == b"OVERFLOW":
            ops += [kind, rng.choice([b"WRAP", b"SAT", b"FAIL", b"fail"])]
            continue
        width = rng.choice([b"u1", b"u8", b"i8", b"u63", b"i64", b"i5", b"u16", b"u64", b"x9"])
        offset = rng.choice([number(0, 70), b"#" + number(0, 5)])
        ops += [kind, width, offset]
        if kind != b"GET":
            ops.append(number(-300, 300) if rng.random() < 0.9 else b"9223372036854775807")
    return [rng.choice([b"BITFIELD", b"BITFIELD", b"BITFIELD_RO"]), key, *ops]


@needs_redis
@pytest.mark.parametrize("seed", [1313, 7, 2026, 42])
def test_bitmaps_match_redis(redis_server: Any, seed: int) -> None:
    pair = Pair(redis_server)
    pair.check([b"RPUSH", b"wrong", b"x"], "setup")
    rng = random.Random(seed)
    for step in range(2_500):
        pair.check(_random_command(rng), f"step {step}")
    for key in (b"b1", b"b2", b"b3", b"dest"):
        pair.check([b"GET", key], "final")

"""HyperLogLog (PFADD, PFCOUNT, PFMERGE): Redis's hash and estimator (counts equal
redis-server's), the HYLL string layout both ways (a Redis sparse or dense value counts here; a
phalanx value counts in Redis), errors; a seeded random differential run against redis-server."""

from __future__ import annotations

import random
from typing import Any

import pytest

from phalanx.kv.commands.hyperloglog import murmur64a

from .conftest import Driver
from .redis_pair import Pair, needs_redis, redis_server_fixture  # noqa: F401 (a fixture)


def test_murmur64a_known_values() -> None:
    # Distinct lengths exercise every tail size (0..7 bytes after the 8-byte blocks).
    values = {murmur64a(b"x" * length) for length in range(20)}
    assert len(values) == 20 and all(0 <= value < 2**64 for value in values)


def test_hll_basics_and_errors() -> None:
    d = Driver()
    assert d("PFADD", "h") == 1 and d("PFADD", "h") == 0 and d("PFCOUNT", "h") == 0
    assert d("PFADD", "h", "a", "b", "c") == 1 and d("PFADD", "h", "a") == 0
    assert d("PFCOUNT", "h") == 3 and d("PFCOUNT", "h", "missing") == 3
    value = d("GET", "h")
    assert isinstance(value, bytes) and value[:4] == b"HYLL" and len(value) == 12_304
    assert d("PFMERGE", "m", "h", "missing") == "OK" and d("PFCOUNT", "m") == 3
    d("SET", "s", "not an hll")
    assert d("PFADD", "s", "x").message == "WRONGTYPE Key is not a valid HyperLogLog string value."
    assert d("PFCOUNT", "h", "s").message.startswith("WRONGTYPE Key is not a valid")
    d("LPUSH", "l", "x")
    assert d("PFCOUNT", "l").message == \
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    d("SET", "bad", b"HYLL\x01\x00\x00\x00" + bytes(7) + b"\x80\x7f")  # sparse, truncated
    assert d("PFCOUNT", "bad").message == "INVALIDOBJ Corrupted HLL object detected"


def _random_command(rng: random.Random) -> list[bytes]:
    keys = [b"p1", b"p2", b"p3", b"wrong", b"str"]
    choice = rng.randrange(6)
    if choice <= 2:
        count = rng.choice([0, 1, 5, 50, 400])
        base = rng.randrange(3000)
        return [b"PFADD", rng.choice(keys), *(b"e%d" % (base + j) for j in range(count))]
    if choice == 3:
        return [b"PFCOUNT", *rng.sample(keys, rng.randint(1, 3))]
    if choice == 4:
        return [b"PFMERGE", rng.choice([*keys, b"dest"]), *rng.sample(keys, rng.randint(0, 3))]
    return [b"PFCOUNT", rng.choice([b"p1", b"p2", b"p3", b"dest"])]


@needs_redis
@pytest.mark.parametrize("seed", [13, 1313])
def test_hll_matches_redis(redis_server: Any, seed: int) -> None:
    pair = Pair(redis_server)
    pair.check([b"RPUSH", b"wrong", b"x"], "setup")
    pair.check([b"SET", b"str", b"hello"], "setup")
    rng = random.Random(seed)
    for step in range(400):
        pair.check(_random_command(rng), f"step {step}")
    # Interop both ways: Redis's (sparse or dense) value counts here, ours counts in Redis.
    for key in (b"p1", b"p2", b"p3", b"dest"):
        theirs = pair.theirs([b"GET", key])
        if isinstance(theirs, bytes):
            pair.ours([b"SET", b"copy", theirs])
            assert pair.ours([b"PFCOUNT", b"copy"]) == pair.theirs([b"PFCOUNT", key])
            pair.theirs([b"SET", b"copy", pair.ours([b"GET", key])])
            assert pair.theirs([b"PFCOUNT", b"copy"]) == pair.ours([b"PFCOUNT", key])


@needs_redis
def test_large_cardinalities_match_redis(redis_server: Any) -> None:
    pair = Pair(redis_server)
    for batch in range(60):
        elements = [b"big:%d" % (batch * 1000 + j) for j in range(1000)]
        pair.check([b"PFADD", b"big", *elements], f"batch {batch}")
        if batch % 10 == 9:
            pair.check([b"PFCOUNT", b"big"], f"count after {batch}")

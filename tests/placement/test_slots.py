"""Hash slots (CRC16, hashtags), key extraction from the kv command table, CROSSSLOT, and
redis-py finding the same keys from our COMMAND reply. The table itself: tests/kv/test_table.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis._parsers.commands import CommandsParser
from redis._parsers.helpers import parse_command

from phalanx.errors import CrossSlotError
from phalanx.kv import COMMAND_SPECS, command_info
from phalanx.placement.slots import (
    SLOT_COUNT,
    command_keys,
    command_slot,
    crc16,
    key_slot,
)


def test_crc16_vector() -> None:
    assert crc16(b"123456789") == 0x31C3
    assert crc16(b"") == 0


@pytest.mark.parametrize(("key", "slot"), [
    (b"foo", 12182), (b"bar", 5061), (b"hello", 866), (b"key", 12539), (b"", 0),
    (b"{user1000}.following", 3443), (b"foo{{bar}}zap", 4015), (b"foo{}{bar}", 8363), (b"somekey", 11058),
])
def test_known_redis_slots(key: bytes, slot: int) -> None:
    assert key_slot(key) == slot


def test_hashtag_rules() -> None:
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers")
    assert key_slot(b"{user1000}.following") == key_slot(b"user1000")
    # empty tag: the whole key is hashed
    assert key_slot(b"foo{}{bar}") == crc16(b"foo{}{bar}") & 16383
    # the first '{' and the next '}' delimit the tag
    assert key_slot(b"foo{{bar}}zap") == crc16(b"{bar") & 16383
    assert key_slot(b"foo{bar}{zap}") == key_slot(b"bar")
    # no closing brace: whole key
    assert key_slot(b"foo{bar") == crc16(b"foo{bar") & 16383
    assert key_slot(b"}foo{") == crc16(b"}foo{") & 16383


@given(st.binary(max_size=64))
def test_slot_in_range_and_tag_equivalence(key: bytes) -> None:
    slot = key_slot(key)
    assert 0 <= slot < SLOT_COUNT
    tag = key.replace(b"{", b"").replace(b"}", b"")
    if tag:
        assert key_slot(b"a{" + tag + b"}b") == key_slot(tag)


def test_command_keys() -> None:
    assert command_keys(b"get", [b"k"]) == [b"k"]
    assert command_keys(b"SET", [b"k", b"v", b"EX", b"10"]) == [b"k"]
    assert command_keys(b"MSET", [b"a", b"1", b"b", b"2"]) == [b"a", b"b"]
    assert command_keys(b"mget", [b"a", b"b", b"c"]) == [b"a", b"b", b"c"]
    assert command_keys(b"DEL", [b"a"]) == [b"a"]
    assert command_keys(b"HSET", [b"h", b"f", b"v"]) == [b"h"]
    assert command_keys(b"LRANGE", [b"l", b"0", b"-1"]) == [b"l"]
    assert command_keys(b"KEYS", [b"*"]) == []
    assert command_keys(b"SCAN", [b"0"]) == []
    assert command_keys(b"PING", []) == []
    assert command_keys(b"CLUSTER", [b"SLOTS"]) == []
    assert command_keys(b"NOSUCH", [b"a"]) == []


def test_command_keys_on_short_requests() -> None:
    assert command_keys(b"GET", []) == []
    assert command_keys(b"MSET", [b"a", b"1", b"b"]) == [b"a", b"b"]
    assert command_keys(b"MSET", []) == []
    assert command_keys(b"MGET", []) == []
    assert command_keys(b"HSET", [b"h"]) == [b"h"]


def test_command_slot() -> None:
    assert command_slot(b"GET", [b"foo"]) == 12182
    assert command_slot(b"PING", []) is None
    assert command_slot(b"GET", []) is None
    assert command_slot(b"MSET", [b"{u}a", b"1", b"{u}b", b"2"]) == key_slot(b"u")
    assert command_slot(b"MGET", [b"foo", b"foo"]) == 12182
    with pytest.raises(CrossSlotError) as caught:
        command_slot(b"MGET", [b"foo", b"bar"])
    assert str(caught.value) == "CROSSSLOT Keys in request don't hash to the same slot"
    with pytest.raises(CrossSlotError):
        command_slot(b"del", [b"{a}1", b"{a}2", b"{b}3"])
    # values of MSET are not keys
    assert command_slot(b"MSET", [b"foo", b"bar"]) == 12182


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=6))
def test_command_slot_matches_key_slots(keys: list[bytes]) -> None:
    slots = {key_slot(key) for key in keys}
    if len(slots) == 1:
        assert command_slot(b"EXISTS", keys) == slots.pop()
    else:
        with pytest.raises(CrossSlotError):
            command_slot(b"EXISTS", keys)


def _info_reply() -> list[list[object]]:
    return [command_info(spec) for spec in COMMAND_SPECS.values()]


def test_redis_py_commands_parser_finds_our_keys() -> None:
    parser = CommandsParser.__new__(CommandsParser)
    parser.commands = parse_command(_info_reply())
    cases: list[tuple[tuple[str, ...], list[str] | None]] = [
        (("GET", "foo"), ["foo"]),
        (("SET", "foo", "bar", "EX", "1"), ["foo"]),
        (("MSET", "a", "1", "b", "2"), ["a", "b"]),
        (("MGET", "a", "b"), ["a", "b"]),
        (("DEL", "a", "b", "c"), ["a", "b", "c"]),
        (("HSET", "h", "f", "v"), ["h"]),
        (("KEYS", "*"), None),
        (("SCAN", "0"), None),
        (("PING", "x"), None),
        (("CLUSTER", "SLOTS"), None),
    ]
    for args, expected in cases:
        assert parser.get_keys(None, *args) == expected, args
        ours = [key.decode() for key in command_keys(args[0].encode(),
                                                     [a.encode() for a in args[1:]])]
        assert ours == (expected or []), args
    # redis-py 6+ derives routing policies from the same reply; it must accept ours
    policies = parser.get_command_policies()
    assert "get" in policies["core"]
    assert "expire" in policies["phalanx"]


def _crc16_bitwise(data: bytes) -> int:
    """The CRC by its definition (polynomial 0x1021, init 0, no reflection), bit by bit."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def test_crc16_matches_its_definition_on_many_keys() -> None:
    import random

    rng = random.Random(7)
    for length in range(0, 64):
        data = bytes(rng.randrange(256) for _ in range(length))
        assert crc16(data) == _crc16_bitwise(data), data

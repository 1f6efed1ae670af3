"""Unit tests of the everyday command surface (issue 13): determinism of the random commands,
DUMP / RESTORE, SORT's slot rule, OBJECT, movable keys, and replies the differential test
cannot pin (it compares random and time-dependent replies by shape)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from phalanx.errors import CrossSlotError
from phalanx.kv import Error, KVStateMachine
from phalanx.kv.commands.dump import decode_value, encode_value
from phalanx.placement.slots import command_keys, command_slot

Driver = Any  # tests/kv/conftest.py's Driver (conftest is not importable)

WRONGTYPE = Error("WRONGTYPE Operation against a key holding the wrong kind of value")


def replay(make: Callable[[], Any], commands: list[tuple[object, ...]]) -> Driver:
    driver = make()
    for command in commands:
        driver(*command)
    return driver


def test_spop_is_the_same_write_on_every_replica(make_driver: Any) -> None:
    log: list[tuple[object, ...]] = [("SADD", "s", *range(200)), ("SPOP", "s"),
                                     ("SPOP", "s", "7"), ("SPOP", "s", "0")]
    first = replay(make_driver, log)
    second = replay(make_driver, log)
    assert first.machine.snapshot() == second.machine.snapshot()
    assert first("SCARD", "s") == 192
    # Different entries (here: a later clock) draw differently.
    third = make_driver(now_ms=2_000_000)
    for command in log:
        third(*command)
    assert third("SMEMBERS", "s") != first("SMEMBERS", "s")


def test_random_reads_are_deterministic_and_well_formed(kv: Driver,
                                                       make_driver: Any) -> None:
    kv("SADD", "s", "a", "b", "c")
    kv("HSET", "h", "f1", "1", "f2", "2", "f3", "3")
    assert kv.read("SRANDMEMBER", "s") == kv.read("SRANDMEMBER", "s")
    assert kv.read("SRANDMEMBER", "s") in (b"a", b"b", b"c")
    picked = kv.read("SRANDMEMBER", "s", "2")
    assert isinstance(picked, list) and len(set(picked)) == 2
    assert kv.read("SRANDMEMBER", "s", "10") == [b"a", b"b", b"c"]
    repeated = kv.read("SRANDMEMBER", "s", "-10")
    assert isinstance(repeated, list) and len(repeated) == 10
    pairs = kv.read("HRANDFIELD", "h", "2", "WITHVALUES")
    assert isinstance(pairs, list) and len(pairs) == 4
    assert all(pairs[i + 1] == pairs[i][1:] for i in range(0, 4, 2))
    assert kv.read("HRANDFIELD", "h", "-5") is not None
    assert kv.read("HRANDFIELD", "missing") is None and kv.read("HRANDFIELD", "missing", "3") == []
    assert kv.read("RANDOMKEY") in (b"s", b"h")
    assert kv.read("RANDOMKEY") == kv.read("RANDOMKEY")
    assert make_driver().read("RANDOMKEY") is None


def test_dump_restore_round_trip(kv: Driver) -> None:
    kv("SET", "str", "hello")
    kv("RPUSH", "list", "a", "b", "a")
    kv("SADD", "set", "x", "y")
    kv("HSET", "hash", "f", "v", "g", "")
    for key in ("str", "list", "set", "hash"):
        payload = kv("DUMP", key)
        assert isinstance(payload, bytes)
        assert kv("RESTORE", key, "0", payload) == Error(
            "BUSYKEY Target key name already exists.")
        assert kv("RESTORE", key + "2", "0", payload) == "OK"
        assert kv("DUMP", key + "2") == payload
    assert kv("LRANGE", "list2", "0", "-1") == [b"a", b"b", b"a"]
    assert kv("HGETALL", "hash2") == [b"f", b"v", b"g", b""]
    payload = kv("DUMP", "str")
    assert isinstance(payload, bytes)
    assert kv("RESTORE", "str", "5000", payload, "REPLACE") == "OK"
    assert kv("PTTL", "str") == 5000
    assert kv("RESTORE", "abs", str(kv.now_ms + 100), payload, "ABSTTL") == "OK"
    assert kv("PEXPIRETIME", "abs") == kv.now_ms + 100
    assert kv("RESTORE", "past", "1", payload, "ABSTTL") == "OK"
    assert kv("EXISTS", "past") == 0
    assert kv("DUMP", "missing") is None
    # A flipped byte fails the checksum; a sealed but malformed body is "Bad data format".
    broken = payload[:1] + bytes([payload[1] ^ 1]) + payload[2:]
    assert kv("RESTORE", "x", "0", broken) == Error(
        "ERR DUMP payload version or checksum are wrong")
    assert kv("RESTORE", "x", "0", b"") == Error(
        "ERR DUMP payload version or checksum are wrong")
    assert kv("RESTORE", "x", "0", payload, "IDLETIME", "5") == "OK"
    assert kv("RESTORE", "y", "0", payload, "IDLETIME", "5", "FREQ", "1") == Error(
        "ERR syntax error")


def test_dump_payload_validation() -> None:
    import struct
    import zlib

    def seal(body: bytes) -> bytes:
        body += b"PX" + struct.pack("<H", 1)
        return body + struct.pack("<I", zlib.crc32(body))

    bad = Error("ERR Bad data format")
    assert decode_value(seal(b"\x02\x02\x01a\x01a")) == bad  # a repeated set member
    assert decode_value(seal(b"\x01\x00")) == bad  # an empty list
    assert decode_value(seal(b"\x00\x05ab")) == bad  # truncated
    assert decode_value(seal(b"\x00\x01ab")) == bad  # trailing bytes
    assert decode_value(seal(b"\x09")) == bad  # unknown type
    payload = encode_value({b"a", b"b"})
    assert payload is not None and decode_value(payload) == {b"a", b"b"}
    assert encode_value({b"b", b"a"}) == payload  # sorted members: the same bytes everywhere


def test_sort(kv: Driver) -> None:
    kv("RPUSH", "{t}l", "3", "1", "2", "10")
    assert kv("SORT", "{t}l") == [b"1", b"2", b"3", b"10"]
    assert kv("SORT", "{t}l", "ALPHA") == [b"1", b"10", b"2", b"3"]
    assert kv("SORT", "{t}l", "DESC", "LIMIT", "1", "2") == [b"3", b"2"]
    kv("MSET", "{t}w_1", "4", "{t}w_2", "3", "{t}w_3", "2", "{t}w_10", "1", "{t}v_1", "one")
    assert kv("SORT", "{t}l", "BY", "{t}w_*") == [b"10", b"3", b"2", b"1"]
    assert kv("SORT", "{t}l", "BY", "{t}w_*", "GET", "#", "GET", "{t}v_*") == [
        b"10", None, b"3", None, b"2", None, b"1", b"one"]
    assert kv("SORT", "{t}l", "BY", "nosort", "STORE", "{t}out") == 4
    assert kv("LRANGE", "{t}out", "0", "-1") == [b"3", b"1", b"2", b"10"]
    assert kv("SORT_RO", "{t}l", "STORE", "{t}out") == Error("ERR syntax error")
    # A bare state machine owns every key (one redis-server): any pattern works. The shard's
    # apply-time rule is tests/placement/test_shard.py's.
    kv("MSET", "w_1", "1", "w_2", "2", "w_3", "3", "w_10", "4")
    assert kv("SORT", "{t}l", "BY", "w_*") == [b"1", b"2", b"3", b"10"]
    assert kv("SORT", "{t}l", "GET", "{u}v_*") == [None, None, None, None]
    kv("RPUSH", "{t}bad", "a")
    assert kv("SORT", "{t}bad") == Error("ERR One or more scores can't be converted into double")
    kv("SET", "str", "x")
    assert kv("SORT", "str") == WRONGTYPE
    assert kv("SORT", "missing", "STORE", "{t}out") == 0 and kv("EXISTS", "{t}out") == 0


def test_object(kv: Driver) -> None:
    kv("SET", "int", "123")
    kv("SET", "short", "hello")
    kv("SET", "long", "x" * 45)
    kv("SADD", "ints", "1", "2")
    kv("SADD", "words", "a")
    kv("HSET", "small", "f", "v")
    kv("HSET", "big", "f", "v" * 65)
    kv("RPUSH", "list", "a")
    expected = {"int": "int", "short": "embstr", "long": "raw", "ints": "intset",
                "words": "hashtable", "small": "listpack", "big": "hashtable",
                "list": "quicklist"}
    for key, encoding in expected.items():
        assert kv("OBJECT", "ENCODING", key) == encoding, key
    assert kv("OBJECT", "encoding", "missing") is None
    assert kv("OBJECT", "REFCOUNT", "int") == 2**31 - 1
    assert kv("OBJECT", "REFCOUNT", "short") == 1
    assert kv("OBJECT", "IDLETIME", "short") == 0
    assert isinstance(kv("OBJECT", "FREQ", "short"), Error)
    assert kv("OBJECT", "ENCODING") == Error(
        "ERR wrong number of arguments for 'object|encoding' command")
    assert kv("OBJECT", "BOGUS", "k") == Error(
        "ERR unknown subcommand 'BOGUS'. Try OBJECT HELP.")
    assert kv("OBJECT", "help", "x") == Error(
        "ERR wrong number of arguments for 'object|help' command")
    help_lines = kv("OBJECT", "HELP")
    assert isinstance(help_lines, list) and len(help_lines) == 15


def test_keys_family(kv: Driver) -> None:
    kv("SET", "a", "1")
    kv("PEXPIRE", "a", "5000")
    assert kv("RENAME", "a", "b") == "OK" and kv("PTTL", "b") == 5000
    assert kv("RENAME", "a", "b") == Error("ERR no such key")
    assert kv("RENAMENX", "b", "b") == 0 and kv("RENAME", "b", "b") == "OK"
    kv("SADD", "s", "m")
    assert kv("COPY", "s", "t") == 1 and kv("COPY", "s", "t") == 0
    kv("SADD", "t", "other")
    assert kv("SMEMBERS", "s") == [b"m"]  # the copy is deep
    assert kv("COPY", "s", "t", "DB", "1") == Error(
        "ERR Copying to another database is not allowed in cluster mode")
    assert kv("COPY", "s", "s") == Error("ERR source and destination objects are the same")
    assert kv("COPY", "b", "s", "REPLACE") == 1 and kv("GET", "s") == b"1"
    assert kv("PEXPIRETIME", "s") == kv.now_ms + 5000
    assert kv("EXPIRETIME", "s") == (kv.now_ms + 5000 + 500) // 1000
    assert kv("EXPIRETIME", "t") == -1 and kv("EXPIRETIME", "none") == -2
    assert kv("TOUCH", "s", "t", "none") == 2


def test_movable_and_two_key_positions() -> None:
    assert command_keys(b"SINTERCARD", [b"2", b"a", b"b", b"LIMIT", b"1"]) == [b"a", b"b"]
    assert command_keys(b"LMPOP", [b"1", b"x", b"LEFT", b"COUNT", b"2"]) == [b"x"]
    assert command_keys(b"LMPOP", [b"x", b"k"]) == []
    assert command_keys(b"SORT", [b"k", b"BY", b"STORE", b"STORE", b"d"]) == [b"k", b"d"]
    assert command_keys(b"SORT", [b"k", b"LIMIT", b"0", b"1"]) == [b"k"]
    assert command_keys(b"SORT_RO", [b"k", b"STORE", b"d"]) == [b"k"]
    assert command_keys(b"OBJECT", [b"ENCODING", b"k"]) == [b"k"]
    assert command_keys(b"OBJECT", [b"HELP"]) == []
    for name in (b"RENAME", b"RENAMENX", b"COPY", b"SMOVE", b"LMOVE", b"RPOPLPUSH"):
        args = [b"a", b"b", b"LEFT", b"RIGHT"][:2] + ([b"m"] if name == b"SMOVE" else [])
        assert command_keys(name, args)[:2] == [b"a", b"b"], name
        with pytest.raises(CrossSlotError):
            command_slot(name, args)
        assert command_slot(name, [b"{x}a", b"{x}b", *args[2:]]) is not None
    with pytest.raises(CrossSlotError):
        command_slot(b"SINTERCARD", [b"2", b"a", b"b"])
    with pytest.raises(CrossSlotError):
        command_slot(b"SORT", [b"a", b"STORE", b"b"])


def test_snapshot_after_new_commands_round_trips(make_driver: Any) -> None:
    driver = make_driver()
    for command in (("RPUSH", "l", "a", "b", "c"), ("LMOVE", "l", "m", "LEFT", "RIGHT"),
                    ("SADD", "s", "1", "2"), ("SMOVE", "s", "t", "1"), ("SETRANGE", "k", 3, "x"),
                    ("HINCRBYFLOAT", "h", "f", "0.1"), ("SINTERSTORE", "i", "s", "t")):
        driver(*command)
    copy = KVStateMachine()
    copy.restore(driver.machine.snapshot())
    assert copy.snapshot() == driver.machine.snapshot()


def test_scans_of_large_collections_cover_everything(kv: Driver) -> None:
    members = [f"m{i}" for i in range(1000)]
    kv("SADD", "s", *members)
    kv("HSET", "h", *[part for i in range(300) for part in (f"f{i}", str(i))])
    for name, key, want in (("SSCAN", "s", set(members)),
                            ("HSCAN", "h", {f"f{i}" for i in range(300)})):
        cursor, seen, calls = b"0", set(), 0
        while True:
            reply = kv.read(name, key, cursor, "COUNT", "50")
            assert isinstance(reply, list)
            cursor, batch = reply
            items = batch if name == "SSCAN" else batch[::2]
            seen.update(item.decode() for item in items)
            calls += 1
            if cursor == b"0":
                break
            # changes during the iteration: members present throughout are still returned
            kv("SADD", "s", f"new{calls}")
            kv("SREM", "s", f"new{calls - 1}")
        assert want <= seen and calls > 5, name
    reply = kv.read("SSCAN", "s", "0", "MATCH", "m99*", "COUNT", "100000")
    assert isinstance(reply, list) and sorted(reply[1]) == sorted(
        m.encode() for m in members if m.startswith("m99"))


def test_lcs_refuses_tables_that_would_stall_the_shard(kv: Driver) -> None:
    kv("SET", "a", "x" * 3000)
    kv("SET", "b", "x" * 3000)
    reply = kv("LCS", "a", "b", "LEN")
    assert isinstance(reply, Error) and "LCS refuses" in reply.message
    kv("SET", "b", "y" * 100)
    assert kv("LCS", "a", "b") == b"" and kv("LCS", "a", "missing", "LEN") == 0


def test_replicas_applying_the_same_random_log_agree() -> None:
    """Every family's random commands (SPOP, SMOVE, LMOVE, SORT ... STORE, RESTORE, ...),
    applied to two machines as the same log, leave byte-identical snapshots and replies."""
    import importlib.util
    import random
    from pathlib import Path

    from phalanx.kv import Command, encode_command

    # The differential test's command generators (tests are not a package: load by path).
    spec = importlib.util.spec_from_file_location(
        "surface_generators", Path(__file__).with_name("test_surface_differential.py"))
    assert spec is not None and spec.loader is not None
    generators = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generators)
    for family in sorted(generators.FAMILIES):
        rng = random.Random(family)
        first, second = KVStateMachine(), KVStateMachine()
        for index in range(1, 1500):
            name, *args = generators.next_command(family, rng)
            entry = encode_command(Command(name, tuple(args), 1_000_000 + index * 7))
            assert first.apply(index, entry) == second.apply(index, entry)
        assert first.snapshot() == second.snapshot(), family


class _SortedSetDouble:
    """Stands in for kv.zset.ZSet (another branch): a `scores` dict, (score, member) order."""

    def __init__(self, scores: dict[bytes, float]) -> None:
        self.scores = scores

    def __iter__(self) -> Any:
        return iter(sorted((score, member) for member, score in self.scores.items()))

    def copy(self) -> _SortedSetDouble:
        return _SortedSetDouble(dict(self.scores))


def test_sort_object_copy_see_a_sorted_set(kv: Driver) -> None:
    keyspace = kv.machine._keyspace
    keyspace.store(b"{z}s", _SortedSetDouble({b"10": 1.0, b"2": 2.0, b"b": 3.0}))
    assert kv("SORT", "{z}s", "BY", "nosort") == [b"10", b"2", b"b"]
    assert kv("SORT", "{z}s", "BY", "nosort", "DESC") == [b"b", b"2", b"10"]
    assert kv("SORT", "{z}s", "ALPHA") == [b"10", b"2", b"b"]
    assert kv("SORT", "{z}s") == Error("ERR One or more scores can't be converted into double")
    assert kv("OBJECT", "ENCODING", "{z}s") == "listpack"
    assert kv("COPY", "{z}s", "{z}t") == 1
    assert keyspace.data[b"{z}t"] is not keyspace.data[b"{z}s"]


def test_dump_of_a_sorted_set() -> None:
    import importlib.util

    payload = encode_value(_SortedSetDouble({b"a": 1.5, b"b": float("-inf")}))  # type: ignore[arg-type]
    assert isinstance(payload, bytes)
    restored = decode_value(payload)
    if importlib.util.find_spec("phalanx.kv.zset") is None:
        assert restored == Error("ERR Bad data format")  # this branch has no sorted-set type
    else:
        assert not isinstance(restored, Error)
        assert dict(restored.scores) == {b"a": 1.5, b"b": float("-inf")}  # type: ignore[union-attr]
        assert encode_value(restored) == payload

"""Command semantics and exact Redis error strings, one section per command family."""

from __future__ import annotations

from typing import Any

import pytest

from phalanx.errors import InvariantViolation
from phalanx.kv import (
    COMMAND_NAMES,
    Command,
    Error,
    KVStateMachine,
    encode_command,
    expire_command_args,
    is_known,
    is_write,
)

WRONGTYPE = Error("WRONGTYPE Operation against a key holding the wrong kind of value")
NOT_INTEGER = Error("ERR value is not an integer or out of range")
SYNTAX = Error("ERR syntax error")


# ---------------------------------------------------------------- dispatch


def test_unknown_command_and_arity(kv: Any) -> None:
    assert kv("NOPE", "a", "b") == Error(
        "ERR unknown command 'NOPE', with args beginning with: 'a' 'b' "
    )
    assert kv("GET") == Error("ERR wrong number of arguments for 'get' command")
    assert kv("get", "a", "b") == Error("ERR wrong number of arguments for 'get' command")
    assert kv("MSET", "a", "1", "b") == Error("ERR wrong number of arguments for 'mset' command")
    assert kv("HSET", "h", "f", "v", "g") == Error(
        "ERR wrong number of arguments for 'hset' command"
    )
    assert kv("LPOP", "l", "1", "2") == Error("ERR wrong number of arguments for 'lpop' command")


def test_names_are_case_insensitive_and_classified(kv: Any) -> None:
    assert kv("sEt", "k", "v") == "OK"
    assert kv("get", "k") == b"v"
    assert is_write("set") and is_write(b"DEL") and is_write("PHALANX.EXPIRE")
    assert not is_write("get") and not is_write(b"scan")
    assert is_write("whatever")  # unknown: never served locally
    assert is_known("hgetall") and not is_known("whatever")
    assert len(COMMAND_NAMES) == len(set(COMMAND_NAMES))


def test_corrupt_entry_is_an_error_reply_and_noop_entries_advance() -> None:
    machine = KVStateMachine()
    reply = machine.apply(1, b"\x09garbage")
    assert isinstance(reply, Error) and reply.message.startswith("ERR corrupt command")
    assert machine.apply(2, b"") is None
    assert machine.applied_index == 2
    with pytest.raises(InvariantViolation):
        machine.apply(2, b"")


def test_read_refuses_writes_and_does_not_mutate(kv: Any) -> None:
    kv("SET", "k", "v")
    assert isinstance(kv.read("SET", "k", "w"), Error)
    assert kv.read("GET", "k") == b"v"
    assert kv.read(b"nope") == Error("ERR unknown command 'nope', with args beginning with: ")
    before = kv.machine.snapshot()
    kv.read("GET", "k")
    kv.read("SCAN", "0")
    assert kv.machine.snapshot() == before


# ---------------------------------------------------------------- strings


def test_get_set_basics(kv: Any) -> None:
    assert kv("GET", "k") is None
    assert kv("SET", "k", "v") == "OK"
    assert kv("GET", "k") == b"v"
    kv("RPUSH", "l", "x")
    assert kv("GET", "l") == WRONGTYPE
    assert kv("SET", "l", "now a string") == "OK"
    assert kv("GET", "l") == b"now a string"


def test_set_nx_xx_get(kv: Any) -> None:
    assert kv("SET", "k", "1", "XX") is None
    assert kv("SET", "k", "1", "NX") == "OK"
    assert kv("SET", "k", "2", "NX") is None
    assert kv("SET", "k", "3", "XX", "GET") == b"1"
    assert kv("SET", "k", "4", "NX", "GET") == b"3"  # aborted, still answers the old value
    assert kv("GET", "k") == b"3"
    assert kv("SET", "new", "x", "GET") is None
    kv("SADD", "s", "m")
    assert kv("SET", "s", "x", "GET") == WRONGTYPE
    assert kv("TYPE", "s") == "set"


def test_set_option_conflicts_are_syntax_errors(kv: Any) -> None:
    for options in (["NX", "XX"], ["EX", "1", "PX", "1"], ["KEEPTTL", "EX", "1"],
                    ["EX", "1", "KEEPTTL"], ["EX"], ["BOGUS"], ["IFEQ", "a", "NX"],
                    ["XX", "IFEQ", "a"], ["EXAT", "1", "PXAT", "1"]):
        assert kv("SET", "k", "v", *options) == SYNTAX, options
    assert kv("SET", "k", "v", "EX", "10", "EX", "20") == "OK"  # same option twice: last wins
    assert kv("TTL", "k") == 20


def test_set_expire_validation(kv: Any) -> None:
    invalid = Error("ERR invalid expire time in 'set' command")
    assert kv("SET", "k", "v", "EX", "0") == invalid
    assert kv("SET", "k", "v", "PX", "-5") == invalid
    assert kv("SET", "k", "v", "EX", "9223372036854775807") == invalid
    assert kv("SET", "k", "v", "PX", "9223372036854775807") == invalid  # now + px overflows
    assert kv("SET", "k", "v", "EX", "ten") == NOT_INTEGER
    assert kv("SET", "k", "v", "EX", "1.5") == NOT_INTEGER
    assert kv("EXISTS", "k") == 0


def test_set_expiry_options_and_keepttl(kv: Any) -> None:
    now = kv.now_ms
    kv("SET", "a", "v", "EX", "10")
    kv("SET", "b", "v", "PX", "1500")
    kv("SET", "c", "v", "EXAT", str(now // 1000 + 100))
    kv("SET", "d", "v", "PXAT", str(now + 2500))
    assert [kv("PTTL", key) for key in "abcd"] == [10_000, 1500, 100_000 - now % 1000, 2500]
    kv("SET", "a", "w", "KEEPTTL")
    assert kv("PTTL", "a") == 10_000
    kv("SET", "a", "x")
    assert kv("PTTL", "a") == -1
    assert kv("SET", "e", "v", "PXAT", str(now - 1)) == "OK"  # already expired: absent
    assert kv("EXISTS", "e") == 0 and kv("GET", "e") is None
    assert kv("DBSIZE") == 5  # like Redis: counted until deleted
    assert kv.machine.expired_keys(now, 10) == [(b"e", now - 1)]


def test_set_ifeq_compare_and_set(kv: Any) -> None:
    assert kv("SET", "k", "v1", "IFEQ", "v0") is None  # missing key is not created
    assert kv("EXISTS", "k") == 0
    kv("SET", "k", "v1")
    assert kv("SET", "k", "v2", "IFEQ", "nope") is None
    assert kv("SET", "k", "v2", "IFEQ", "v1") == "OK"
    assert kv("GET", "k") == b"v2"
    assert kv("SET", "k", "v3", "ifeq", "v2", "GET", "PX", "5000") == b"v2"
    assert kv("PTTL", "k") == 5000
    assert kv("SET", "k", "v4", "IFEQ", "zzz", "GET") == b"v3"
    kv("HSET", "h", "f", "v")
    assert kv("SET", "h", "v", "IFEQ", "v") == WRONGTYPE


def test_setnx_getset_getdel(kv: Any) -> None:
    assert kv("SETNX", "k", "1") == 1
    assert kv("SETNX", "k", "2") == 0
    kv("EXPIRE", "k", "100")
    assert kv("GETSET", "k", "3") == b"1"
    assert kv("TTL", "k") == -1  # GETSET clears the TTL
    assert kv("GETSET", "fresh", "x") is None
    assert kv("GETDEL", "k") == b"3"
    assert kv("GETDEL", "k") is None
    kv("SADD", "s", "m")
    assert kv("GETSET", "s", "x") == WRONGTYPE
    assert kv("GETDEL", "s") == WRONGTYPE


def test_mget_mset(kv: Any) -> None:
    assert kv("MSET", "a", "1", "b", "2") == "OK"
    kv("LPUSH", "l", "x")
    assert kv("MGET", "a", "missing", "l", "b") == [b"1", None, None, b"2"]


def test_append_strlen(kv: Any) -> None:
    assert kv("APPEND", "k", "ab") == 2
    kv("PEXPIRE", "k", "10000")
    assert kv("APPEND", "k", "cd") == 4
    assert kv("GET", "k") == b"abcd"
    assert kv("PTTL", "k") == 10000  # APPEND keeps the TTL
    assert kv("STRLEN", "k") == 4
    assert kv("STRLEN", "missing") == 0
    kv("SADD", "s", "m")
    assert kv("APPEND", "s", "x") == WRONGTYPE
    assert kv("STRLEN", "s") == WRONGTYPE


def test_counters(kv: Any) -> None:
    assert kv("INCR", "n") == 1
    assert kv("INCRBY", "n", "41") == 42
    assert kv("DECR", "n") == 41
    assert kv("DECRBY", "n", "-9") == 50
    assert kv("GET", "n") == b"50"
    kv("SET", "s", "abc")
    assert kv("INCR", "s") == NOT_INTEGER
    kv("SET", "s", " 1")
    assert kv("INCR", "s") == NOT_INTEGER
    assert kv("INCRBY", "n", "1.5") == NOT_INTEGER
    kv("SET", "big", "9223372036854775807")
    assert kv("INCR", "big") == Error("ERR increment or decrement would overflow")
    kv("SET", "small", "-9223372036854775808")
    assert kv("DECR", "small") == Error("ERR increment or decrement would overflow")
    assert kv("DECRBY", "n", "-9223372036854775808") == Error("ERR decrement would overflow")
    kv("HSET", "h", "f", "1")
    assert kv("INCR", "h") == WRONGTYPE
    kv("SET", "t", "5", "EX", "100")
    kv("INCR", "t")
    assert kv("TTL", "t") == 100  # INCR keeps the TTL


def test_incrbyfloat(kv: Any) -> None:
    assert kv("INCRBYFLOAT", "f", "10.5") == b"10.5"
    assert kv("INCRBYFLOAT", "f", "0.1") == b"10.6"
    assert kv("INCRBYFLOAT", "f", "-5") == b"5.6"
    # x87 long double has ~19 significant digits; `%.17Lf` shows the 20th. Real Redis 7.0 on
    # x86-64 answers exactly this.
    assert kv("INCRBYFLOAT", "f", "2.0e2") == b"205.60000000000000001"
    assert kv("GET", "f") == b"205.60000000000000001"
    assert kv("INCRBYFLOAT", "f", "abc") == Error("ERR value is not a valid float")
    kv("SET", "s", "abc")
    assert kv("INCRBYFLOAT", "s", "1") == Error("ERR value is not a valid float")
    kv("SET", "i", "inf")
    assert kv("INCRBYFLOAT", "i", "1") == Error("ERR increment would produce NaN or Infinity")
    kv("LPUSH", "l", "x")
    assert kv("INCRBYFLOAT", "l", "1") == WRONGTYPE


# ---------------------------------------------------------------- keyspace and expiry


def test_del_exists_type(kv: Any) -> None:
    kv("MSET", "a", "1", "b", "2")
    kv("HSET", "h", "f", "v")
    kv("SADD", "s", "m")
    kv("RPUSH", "l", "x")
    assert [kv("TYPE", key) for key in ("a", "h", "s", "l", "zz")] == [
        "string", "hash", "set", "list", "none"]
    assert kv("EXISTS", "a", "a", "zz", "h") == 3
    assert kv("DEL", "a", "a", "zz") == 1
    assert kv("UNLINK", "b", "h") == 2
    assert kv("DBSIZE") == 2


def test_expire_family(kv: Any) -> None:
    now = kv.now_ms
    assert kv("EXPIRE", "missing", "10") == 0
    kv("SET", "k", "v")
    assert kv("TTL", "k") == -1
    assert kv("TTL", "missing") == -2 and kv("PTTL", "missing") == -2
    assert kv("EXPIRE", "k", "10") == 1
    assert kv("PTTL", "k") == 10_000
    assert kv("PEXPIRE", "k", "1499") == 1
    assert kv("TTL", "k") == 1  # rounded like Redis: (ms + 500) / 1000
    assert kv("EXPIREAT", "k", str(now // 1000 + 50)) == 1
    assert kv("PEXPIREAT", "k", str(now + 7000)) == 1
    assert kv("PTTL", "k") == 7000
    assert kv("PERSIST", "k") == 1
    assert kv("PERSIST", "k") == 0
    assert kv("EXPIRE", "k", "-1") == 1  # in the past: deleted at once
    assert kv("EXISTS", "k") == 0


def test_expire_options_and_errors(kv: Any) -> None:
    kv("SET", "k", "v")
    assert kv("EXPIRE", "k", "100", "XX") == 0
    assert kv("EXPIRE", "k", "100", "GT") == 0  # no TTL counts as infinite
    assert kv("EXPIRE", "k", "100", "LT") == 1
    assert kv("EXPIRE", "k", "50", "NX") == 0
    assert kv("EXPIRE", "k", "50", "GT") == 0
    assert kv("EXPIRE", "k", "200", "GT") == 1
    assert kv("EXPIRE", "k", "300", "XX") == 1
    assert kv("EXPIRE", "k", "10", "NX", "XX") == Error(
        "ERR NX and XX, GT or LT options at the same time are not compatible")
    assert kv("EXPIRE", "k", "10", "GT", "LT") == Error(
        "ERR GT and LT options at the same time are not compatible")
    assert kv("EXPIRE", "k", "10", "bogus") == Error("ERR Unsupported option bogus")
    assert kv("EXPIRE", "k", "x") == NOT_INTEGER
    assert kv("EXPIRE", "k", "9223372036854775807") == Error(
        "ERR invalid expire time in 'expire' command")
    assert kv("PEXPIRE", "k", "9223372036854775807") == Error(
        "ERR invalid expire time in 'pexpire' command")


def test_expiry_follows_replicated_time_only(kv: Any) -> None:
    kv("SET", "k", "v", "PX", "100")
    kv.now_ms += 99
    assert kv("GET", "k") == b"v"
    kv.now_ms += 1
    assert kv("GET", "k") is None
    assert kv("EXISTS", "k") == 0 and kv("TTL", "k") == -2 and kv("KEYS", "*") == []
    assert kv.machine.key_count == 1  # reads never delete
    assert kv("DBSIZE") == 1
    # A lagging leader clock cannot resurrect the key: the replicated clock is monotonic.
    kv.now_ms -= 50
    assert kv("GET", "k") is None
    assert kv.read("GET", "k") is None


def test_expired_keys_and_the_internal_expire_command(kv: Any) -> None:
    kv("SET", "a", "1", "PX", "100")
    kv("SET", "b", "2", "PX", "50")
    kv("SET", "c", "3", "PX", "500")
    now = kv.now_ms
    assert kv.machine.expired_keys(now + 49, 10) == []
    assert kv.machine.expired_keys(now + 100, 10) == [(b"b", now + 50), (b"a", now + 100)]
    assert kv.machine.expired_keys(now + 100, 1) == [(b"b", now + 50)]
    kv.now_ms = now + 100
    # "a" is rewritten by a racing SET: its deletion must not take the new value.
    kv("SET", "a", "new")
    for key, when in kv.machine.expired_keys(kv.now_ms, 10):
        name, args = expire_command_args(key, when)
        assert kv(name, *args) == 1
    assert kv("PHALANX.EXPIRE", "a", str(now + 100)) == 0
    assert kv("GET", "a") == b"new"
    assert kv.machine.key_count == 2
    assert kv.machine.expired_keys(kv.now_ms, 10) == []
    assert kv("PHALANX.EXPIRE", "c", str(now + 500)) == 0  # not expired yet at this clock


def test_writes_treat_expired_keys_as_absent(kv: Any) -> None:
    kv("SET", "k", "5", "PX", "10")
    kv("HSET", "h", "f", "v")
    kv("PEXPIRE", "h", "10")
    kv.now_ms += 10
    assert kv("INCR", "k") == 1
    assert kv("TTL", "k") == -1
    assert kv("SETNX", "h", "now a string") == 1
    assert kv("GET", "h") == b"now a string"


def test_keys_and_flush(kv: Any) -> None:
    kv("MSET", "user:1", "a", "user:2", "b", "other", "c", "", "empty")
    assert kv("KEYS", "user:*") == [b"user:1", b"user:2"]
    assert kv("KEYS", "*") == [b"user:1", b"user:2", b"other", b""]
    assert kv("KEYS", "user:[2-9]") == [b"user:2"]
    assert kv("FLUSHDB", "bogus") == SYNTAX
    assert kv("FLUSHALL", "ASYNC") == "OK"
    assert kv("DBSIZE") == 0
    kv("SET", "x", "1")
    assert kv("FLUSHDB") == "OK" and kv("KEYS", "*") == []


def scan_all(kv: Any, *options: object) -> list[bytes]:
    cursor = b"0"
    seen: list[bytes] = []
    while True:
        reply = kv.read("SCAN", cursor, *options)
        assert isinstance(reply, list)
        cursor, keys = reply[0], reply[1]
        assert isinstance(cursor, bytes) and isinstance(keys, list)
        seen.extend(k for k in keys if isinstance(k, bytes))
        if cursor == b"0":
            return seen


def test_scan_covers_everything_with_options(kv: Any) -> None:
    for number in range(200):
        kv("SET", f"key:{number}", "v")
    kv("HSET", "hash:1", "f", "v")
    kv("SET", "gone", "v", "PX", "1")
    kv.now_ms += 1
    everything = scan_all(kv)
    assert sorted(everything) == sorted([f"key:{n}".encode() for n in range(200)] + [b"hash:1"])
    assert len(everything) == len(set(everything))
    assert scan_all(kv, "MATCH", "key:1?") == sorted(
        scan_all(kv, "MATCH", "key:1?"), key=lambda k: scan_all(kv, "MATCH", "key:1?").index(k))
    assert sorted(scan_all(kv, "MATCH", "key:1?", "COUNT", "3")) == sorted(
        f"key:1{d}".encode() for d in range(10))
    assert scan_all(kv, "TYPE", "hash") == [b"hash:1"]
    assert scan_all(kv, "COUNT", "1000", "TYPE", "HASH") == [b"hash:1"]
    assert kv.read("SCAN", "x") == Error("ERR invalid cursor")
    assert kv.read("SCAN", "0", "COUNT", "0") == SYNTAX
    assert kv.read("SCAN", "0", "COUNT", "x") == NOT_INTEGER
    assert kv.read("SCAN", "0", "MATCH") == SYNTAX
    assert kv.read("SCAN", "0", "BOGUS", "1") == SYNTAX


def test_scan_survives_concurrent_changes(kv: Any) -> None:
    for number in range(300):
        kv("SET", f"stable:{number}", "v")
    for number in range(100):
        kv("SET", f"doomed:{number}", "v")
    cursor = b"0"
    seen: set[bytes] = set()
    step = 0
    while True:
        reply = kv.read("SCAN", cursor, "COUNT", "7")
        assert isinstance(reply, list)
        cursor = reply[0]  # type: ignore[assignment]
        seen.update(reply[1])  # type: ignore[arg-type]
        step += 1
        kv("DEL", f"doomed:{step}")
        for extra in range(12):  # enough churn to force index rebuilds mid-iteration
            kv("SET", f"new:{step}:{extra}", "v")
        if cursor == b"0":
            break
    assert {f"stable:{n}".encode() for n in range(300)} <= seen


def test_scan_cursor_is_the_same_on_every_replica(make_driver: Any) -> None:
    first, second = make_driver(), make_driver()
    for number in range(50):
        first("SET", f"k{number}", "v")
    for number in reversed(range(50)):  # same keys, different insertion order
        second("SET", f"k{number}", "v")
    assert first.read("SCAN", "0", "COUNT", "5") == second.read("SCAN", "0", "COUNT", "5")


# ---------------------------------------------------------------- hashes


def test_hashes(kv: Any) -> None:
    assert kv("HSET", "h", "a", "1", "b", "2") == 2
    assert kv("HSET", "h", "a", "10", "c", "3") == 1
    assert kv("HGET", "h", "a") == b"10"
    assert kv("HGET", "h", "zz") is None and kv("HGET", "missing", "a") is None
    assert kv("HGETALL", "h") == [b"a", b"10", b"b", b"2", b"c", b"3"]
    assert kv("HGETALL", "missing") == []
    assert kv("HEXISTS", "h", "b") == 1 and kv("HEXISTS", "h", "zz") == 0
    assert kv("HLEN", "h") == 3 and kv("HLEN", "missing") == 0
    assert kv("HDEL", "h", "a", "b", "zz") == 2
    assert kv("HDEL", "h", "c") == 1
    assert kv("EXISTS", "h") == 0  # empty hashes disappear
    assert kv("HDEL", "missing", "a") == 0
    kv("SET", "s", "x")
    for command in (("HSET", "s", "f", "v"), ("HGET", "s", "f"), ("HGETALL", "s"),
                    ("HDEL", "s", "f"), ("HEXISTS", "s", "f"), ("HLEN", "s"),
                    ("HINCRBY", "s", "f", "1")):
        assert kv(*command) == WRONGTYPE, command


def test_hincrby(kv: Any) -> None:
    assert kv("HINCRBY", "h", "n", "5") == 5
    assert kv("HINCRBY", "h", "n", "-7") == -2
    kv("HSET", "h", "s", "abc", "big", "9223372036854775807")
    assert kv("HINCRBY", "h", "s", "1") == Error("ERR hash value is not an integer")
    assert kv("HINCRBY", "h", "n", "x") == NOT_INTEGER
    assert kv("HINCRBY", "h", "big", "1") == Error("ERR increment or decrement would overflow")


# ---------------------------------------------------------------- sets


def test_sets(kv: Any) -> None:
    assert kv("SADD", "s", "b", "a", "b", "c") == 3
    assert kv("SADD", "s", "a", "d") == 1
    assert kv("SMEMBERS", "s") == [b"a", b"b", b"c", b"d"]  # sorted: deterministic replies
    assert kv("SISMEMBER", "s", "a") == 1 and kv("SISMEMBER", "s", "z") == 0
    assert kv("SCARD", "s") == 4 and kv("SCARD", "missing") == 0
    assert kv("SREM", "s", "a", "z") == 1
    assert kv("SREM", "s", "b", "c", "d") == 3
    assert kv("EXISTS", "s") == 0
    assert kv("SMEMBERS", "missing") == [] and kv("SREM", "missing", "a") == 0
    kv("SET", "str", "x")
    for command in (("SADD", "str", "m"), ("SREM", "str", "m"), ("SMEMBERS", "str"),
                    ("SISMEMBER", "str", "m"), ("SCARD", "str")):
        assert kv(*command) == WRONGTYPE, command


# ---------------------------------------------------------------- lists


def test_lists(kv: Any) -> None:
    assert kv("RPUSH", "l", "a", "b") == 2
    assert kv("LPUSH", "l", "y", "z") == 4
    assert kv("LRANGE", "l", "0", "-1") == [b"z", b"y", b"a", b"b"]
    assert kv("LRANGE", "l", "1", "2") == [b"y", b"a"]
    assert kv("LRANGE", "l", "-2", "100") == [b"a", b"b"]
    assert kv("LRANGE", "l", "3", "1") == [] and kv("LRANGE", "l", "9", "10") == []
    assert kv("LRANGE", "l", "-100", "0") == [b"z"]
    assert kv("LRANGE", "l", "a", "1") == NOT_INTEGER
    assert kv("LRANGE", "missing", "0", "-1") == []
    assert kv("LLEN", "l") == 4 and kv("LLEN", "missing") == 0
    assert kv("LPOP", "l") == b"z"
    assert kv("RPOP", "l") == b"b"
    assert kv("LPOP", "l", "0") == []
    assert kv("RPOP", "l", "5") == [b"a", b"y"]
    assert kv("EXISTS", "l") == 0
    assert kv("LPOP", "l") is None and kv("LPOP", "l", "2") is None
    assert kv("LPOP", "l", "-1") == Error("ERR value is out of range, must be positive")
    # Redis 7.0 (getPositiveLongFromObjectOrReply): one error for a bad or negative count
    assert kv("LPOP", "l", "x") == Error("ERR value is out of range, must be positive")
    kv("SET", "str", "x")
    for command in (("LPUSH", "str", "a"), ("RPUSH", "str", "a"), ("LPOP", "str"),
                    ("RPOP", "str"), ("LRANGE", "str", "0", "1"), ("LLEN", "str")):
        assert kv(*command) == WRONGTYPE, command


# ---------------------------------------------------------------- idempotent retries


def test_retried_request_gets_the_cached_reply(kv: Any) -> None:
    assert kv("INCR", "n", client=(7, 1)) == 1
    assert kv("INCR", "n", client=(7, 1)) == 1  # retry: not applied again
    assert kv("INCR", "n", client=(7, 2)) == 2
    assert kv("INCR", "n", client=(8, 1)) == 3  # another client has its own sequence
    stale = kv("INCR", "n", client=(7, 1))
    assert isinstance(stale, Error) and "superseded" in stale.message
    assert kv("GET", "n") == b"3"
    kv("SET", "s", "x")
    assert kv("INCR", "s", client=(9, 1)) == NOT_INTEGER
    assert kv("INCR", "s", client=(9, 1)) == NOT_INTEGER  # errors are cached too


def test_session_table_is_bounded(make_driver: Any) -> None:
    kv = make_driver(KVStateMachine(max_sessions=2))
    kv("INCR", "n", client=(1, 1))
    kv("INCR", "n", client=(2, 1))
    kv("INCR", "n", client=(1, 2))  # client 1 is now the most recently used
    kv("INCR", "n", client=(3, 1))  # evicts client 2
    assert kv("INCR", "n", client=(1, 2)) == 3
    assert kv("INCR", "n", client=(2, 1)) == 5  # forgotten: applied again


def test_apply_never_raises_on_garbage_arguments() -> None:
    weird = [b"", b"\x00", b"\xff" * 3, b"-1", b"9" * 30, b"[", b"\\", b"nan", b"*"]
    machine = KVStateMachine()
    index = 0
    for name in COMMAND_NAMES:
        for arg_count in range(4):
            for first in weird:
                index += 1
                args = (first, *(weird[(index + i) % len(weird)] for i in range(arg_count)))
                reply = machine.apply(
                    index, encode_command(Command(name.encode(), args, 10 + index)))
                if isinstance(reply, Error):
                    assert "internal" not in reply.message

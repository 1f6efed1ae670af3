"""Scripting in the state machine (kv/commands/scripts.py, kv/scripting.py): reply
conversion, Redis 7's error texts, the replicated script cache (snapshot round trip, split,
merge), EVAL_RO, the instruction limit that undoes a killed script, determinism across
replicas, and a script's undeclared keys checked against the shard's slots."""

from __future__ import annotations

from typing import Any

import pytest

from phalanx.kv import Command, Error, KVStateMachine, encode_command
from phalanx.kv.scripting import sha1hex
from phalanx.kv.snapshot import decode_snapshot
from phalanx.placement.shard import ShardMachine
from phalanx.placement.slots import key_slot


class Driver:
    """Applies commands to a state machine through the real codec, one entry each."""

    def __init__(self, machine: KVStateMachine | None = None, now_ms: int = 1_000_000) -> None:
        self.machine = machine if machine is not None else KVStateMachine()
        self.now_ms = now_ms
        self.index = self.machine.applied_index

    def __call__(self, *parts: object) -> Any:
        name, *args = (p if isinstance(p, bytes) else str(p).encode() for p in parts)
        self.index += 1
        return self.machine.apply(self.index, encode_command(
            Command(name, tuple(args), self.now_ms)))

    def read(self, *parts: object) -> Any:
        name, *args = (p if isinstance(p, bytes) else str(p).encode() for p in parts)
        return self.machine.read(name, args, self.now_ms)


@pytest.fixture
def kv() -> Driver:
    return Driver()

LOCK_RELEASE = (b"local token = redis.call('get', KEYS[1])\n"
                b"if not token or token ~= ARGV[1] then return 0 end\n"
                b"redis.call('del', KEYS[1])\nreturn 1")


def _error(reply: object) -> str:
    assert isinstance(reply, Error), reply
    return reply.message


def test_reply_conversion_follows_redis_7(kv: Driver) -> None:
    assert kv("EVAL", "return {1, 2.7, 'a', false, true, nil, 3}", "0") == [1, 2, b"a", None, 1]
    assert kv("EVAL", "return -3.99", "0") == -3
    assert kv("EVAL", "return 1e20", "0") == -(2 ** 63)
    assert kv("EVAL", "return {err='MY code'}", "0") == Error("MY code")
    assert kv("EVAL", "return {ok='fine'}", "0") == "fine"
    assert kv("EVAL", "return redis.error_reply('nocode')", "0") == Error("ERR nocode")
    assert kv("EVAL", "return redis.error_reply('-E2 x')", "0") == Error("E2 x")
    assert kv("EVAL", "return redis.status_reply('PONG')", "0") == "PONG"
    assert kv("EVAL", "return {1, {2, {3}}, redis.status_reply('OK')}", "0") == [1, [2, [3]], "OK"]
    assert kv("EVAL", "return nil", "0") is None
    # Redis -> Lua: nil bulk is false, status is {ok=}, arrays are tables.
    assert kv("EVAL", "return type(redis.call('get', 'nokey'))", "0") == b"boolean"
    assert kv("EVAL", "return redis.call('set', 'k', 'v')['ok']", "0") == b"OK"
    kv("RPUSH", "l", "a", "b")
    assert kv("EVAL", "return #redis.call('lrange', 'l', 0, -1)", "0") == 2
    assert kv("EVAL", "return redis.call('set', KEYS[1], ARGV[1] + 1)", "1", "n", "41") == "OK"
    assert kv("GET", "n") == b"42"


def test_errors_carry_redis_7_text(kv: Driver) -> None:
    body = "return redis.call('incr', 'k')"
    kv("SET", "k", "x")
    sha = sha1hex(body.encode())
    assert _error(kv("EVAL", body, "0")) == (
        f"ERR value is not an integer or out of range script: {sha}, on @user_script:1.")
    assert kv("EVAL", "return redis.pcall('incr', 'k')", "0") == Error(
        "ERR value is not an integer or out of range")
    assert kv("EVAL", "local ok, e = pcall(redis.call, 'incr', 'k'); return e", "0") == (
        b"ERR value is not an integer or out of range")
    assert _error(kv("EVAL", "\n\nlocal x = redis.call('incr', 'k')", "0")).endswith(
        "on @user_script:3.")
    assert _error(kv("EVAL", "return x", "0")).startswith(
        "ERR user_script:1: Script attempted to access nonexistent global variable 'x' script:")
    assert _error(kv("EVAL", "x = 1", "0")).startswith(
        "ERR user_script:1: Attempt to modify a readonly table script:")
    assert _error(kv("EVAL", "string.x = 1", "0")).startswith(
        "ERR user_script:1: Attempt to modify a readonly table script:")
    assert _error(kv("EVAL", "error('boom', 0)", "0")).startswith("ERR boom script:")
    assert _error(kv("EVAL", "error({err='MY boom'})", "0")).startswith("MY boom script:")
    assert _error(kv("EVAL", "return redis.call('nosuch')", "0")).startswith(
        "ERR Unknown Redis command called from script script:")
    for name in ("multi", "watch", "blpop", "eval", "script", "subscribe"):
        assert _error(kv("EVAL", f"return redis.call('{name}', 'a', 'b')", "0")).startswith(
            "ERR This Redis command is not allowed from script script:"), name
    assert _error(kv("EVAL", "return redis.call('get')", "0")).startswith(
        "ERR Wrong number of args calling Redis command from script script:")
    assert _error(kv("EVAL", "return redis.call()", "0")).startswith(
        "ERR Please specify at least one argument for this redis lib call script:")
    assert _error(kv("EVAL", "return redis.call('get', {})", "0")).startswith(
        "ERR Lua redis lib command arguments must be strings or integers script:")
    assert kv("EVAL", "syntax error here", "0") == Error(
        "ERR Error compiling script (new function): user_script:1: '=' expected near 'error'")
    assert kv("EVAL", "return 1", "x") == Error("ERR value is not an integer or out of range")
    assert kv("EVAL", "return 1", "-1") == Error("ERR Number of keys can't be negative")
    assert kv("EVAL", "return 1", "2", "a") == Error(
        "ERR Number of keys can't be greater than number of args")
    assert kv("EVAL", "return 1") == Error("ERR wrong number of arguments for 'eval' command")


def test_script_cache_evalsha_and_script_subcommands(kv: Driver) -> None:
    sha = sha1hex(LOCK_RELEASE).encode()
    assert kv("EVALSHA", sha, "1", "lock") == Error("NOSCRIPT No matching script. Please use EVAL.")
    assert kv("SCRIPT", "LOAD", LOCK_RELEASE) == sha
    assert kv("SCRIPT", "EXISTS", sha, "0" * 40, sha.upper()) == [1, 0, 1]
    kv("SET", "lock", "me")
    assert kv("EVALSHA", sha, "1", "lock", "you") == 0
    assert kv("EVALSHA", sha.upper(), "1", "lock", "me") == 1
    assert kv("EXISTS", "lock") == 0
    assert kv("SCRIPT", "FLUSH") == "OK"
    assert kv("SCRIPT", "EXISTS", sha) == [0]
    assert kv("EVAL", LOCK_RELEASE, "1", "lock", "me") == 0  # EVAL caches its body
    assert kv("SCRIPT", "EXISTS", sha) == [1]
    assert kv("SCRIPT", "LOAD", "syntax error") == Error(
        "ERR Error compiling script (new function): user_script:1: '=' expected near 'error'")
    assert kv("SCRIPT", "FLUSH", "ASYNC") == "OK"
    assert kv("SCRIPT", "KILL") == Error("NOTBUSY No scripts in execution right now.")
    assert kv("SCRIPT", "NOPE") == Error("ERR unknown subcommand 'NOPE'. Try SCRIPT HELP.")


def test_eval_ro_is_a_read_and_refuses_writes(kv: Driver) -> None:
    kv("SET", "k", "v")
    assert kv.read("EVAL_RO", "return redis.call('get', KEYS[1])", "1", "k") == b"v"
    assert _error(kv.read("EVAL_RO", "return redis.call('set', 'k', 'w')", "0")).startswith(
        "ERR Write commands are not allowed from read-only scripts. script:")
    assert kv.read("EVAL", "return 1", "0") == Error(
        "ERR 'eval' is a write command; it must go through the log")
    sha = kv("SCRIPT", "LOAD", "return redis.call('get', 'k')")
    assert kv.read("EVALSHA_RO", sha, "0") == b"v"
    assert kv("GET", "k") == b"v"


def test_killed_script_leaves_no_effect_and_the_limit_is_deterministic() -> None:
    machines = [KVStateMachine(), KVStateMachine()]
    for machine in machines:
        machine.scripts.max_instructions = 2_000_000
        drive = Driver(machine)
        drive("SET", "k", "before")
        drive("HSET", "h", "f", "1")
        drive("PEXPIRE", "h", "999999999")
        reply = drive("EVAL", "redis.call('set', 'k', 'changed'); redis.call('hset', 'h', 'g', "
                      "'2'); redis.call('set', 'new', '1'); redis.call('flushall'); "
                      "while true do pcall(function() while true do end end) end", "0")
        assert "ran past the script instruction limit (2000000 Lua instructions)" in _error(
            reply)
        assert drive("GET", "k") == b"before"
        assert drive("HGETALL", "h") == [b"f", b"1"]
        assert drive("PTTL", "h") > 0
        assert drive("EXISTS", "new") == 0
        # an ordinary error keeps the writes before it, as in Redis (no rollback)
        assert isinstance(drive("EVAL", "redis.call('set', 'k', 'kept'); error('x')", "0"),
                          Error)
        assert drive("GET", "k") == b"kept"
        assert drive("EVAL", "return 1", "0") == 1  # the engine recovered
    assert machines[0].snapshot() == machines[1].snapshot()


def test_scripts_are_deterministic_across_replicas() -> None:
    body = ("math.randomseed(7); local a = math.random(1000); local t = redis.call('time'); "
            "redis.call('set', 'r', a .. ':' .. math.random() .. ':' .. t[1] .. tostring({}))"
            "; return {a, t[1], t[2]}")
    replies = []
    snapshots = []
    for _ in range(2):
        drive = Driver(now_ms=1_700_000_123_456)
        replies.append(drive("EVAL", body, "0"))
        replies.append(drive("EVAL", "return math.random(1000000)", "0"))
        snapshots.append(drive.machine.snapshot())
    assert replies[0] == replies[2] and replies[1] == replies[3]
    assert replies[0][1:] == [b"1700000123", b"456000"]  # TIME is the replicated clock
    assert snapshots[0] == snapshots[1]


def test_cjson_and_bit_and_sha1hex(kv: Driver) -> None:
    assert kv("EVAL", "return cjson.encode({a=1, b={1, 2, 'x'}})", "0") == (
        b'{"a":1,"b":[1,2,"x"]}')
    assert kv("EVAL", "return cjson.decode(ARGV[1]).x[2]", "0", '{"x":[1,"two"]}') == b"two"
    assert kv("EVAL", "return cjson.decode('[1,2,3]')[3]", "0") == 3
    assert kv("EVAL", "local v = cjson.decode('{\"a\":null}'); "
              "return {tostring(v.a == cjson.null), cjson.encode({cjson.null, 1})}", "0") == [
        b"true", b"[null,1]"]
    assert kv("EVAL", "return redis.sha1hex('')", "0") == (
        b"da39a3ee5e6b4b0d3255bfef95601890afd80709")
    assert kv("EVAL", "return {bit.band(7, 3), bit.bor(1, 2), bit.bxor(3, 1), bit.lshift(1, 4)}",
              "0") == [3, 3, 2, 16]
    assert kv("EVAL", "redis.log(redis.LOG_WARNING, 'hello'); return 1", "0") == 1


def test_snapshot_round_trip_keeps_the_script_cache(kv: Driver) -> None:
    sha = kv("SCRIPT", "LOAD", LOCK_RELEASE)
    kv("EVAL", "return 2", "0")
    blob = kv.machine.snapshot()
    assert decode_snapshot(blob).scripts == {
        sha: LOCK_RELEASE, sha1hex(b"return 2").encode(): b"return 2"}
    copy = KVStateMachine()
    copy.restore(blob)
    assert copy.snapshot() == blob
    drive = Driver(copy)
    drive("SET", "lock", "t")
    assert drive("EVALSHA", sha, "1", "lock", "t") == 1


def test_old_snapshots_load_with_an_empty_cache() -> None:
    import marshal
    import struct
    import zlib

    payload = marshal.dumps((5, 10, [b"k", b"v"], [], []), 2)
    blob = struct.pack("<4sBBI", b"PXKV", 2, 2, zlib.crc32(payload)) + payload
    machine = KVStateMachine()
    machine.restore(blob)
    assert machine.read(b"GET", [b"k"], 10) == b"v"
    assert machine.scripts.cache == {}


def test_split_and_merge_carry_the_cache() -> None:
    shard = ShardMachine()
    drive = Driver(shard.kv)
    sha = drive("SCRIPT", "LOAD", "return 1")
    image = shard.kv.extract(lambda key: False, 1)
    assert decode_snapshot(image).scripts == {sha: b"return 1"}
    other = KVStateMachine()
    Driver(other)("SCRIPT", "LOAD", "return 2")
    other.absorb(image)
    assert set(other.scripts.cache) == {sha, sha1hex(b"return 2").encode()}


def test_undeclared_keys_work_in_the_shard_and_are_refused_elsewhere() -> None:
    home = key_slot(b"home")
    shard = ShardMachine(owned=((home, home),))
    index = 0

    def run(*parts: bytes) -> object:
        nonlocal index
        from phalanx.kv import Command, encode_command

        index += 1
        return shard.apply(index, encode_command(Command(parts[0], parts[1:], 1000)))

    body = b"redis.call('set', KEYS[1], '1'); return redis.call('set', ARGV[1], '2')"
    assert run(b"EVAL", body, b"1", b"home", b"{home}.other") == "OK"
    reply = run(b"EVAL", body, b"1", b"home", b"elsewhere")
    assert ("ERR Script attempted to access a non local key in a cluster node: 'elsewhere' "
            "lives in another shard") in _error(reply)
    assert str(run(b"EVAL", body, b"1", b"elsewhere", b"x")).find("TRYAGAIN") >= 0
    assert shard.kv.read(b"GET", [b"{home}.other"], 1000) == b"2"


def test_hostile_scripts_get_errors_and_the_engine_survives(kv: Driver) -> None:
    """Out of memory, cyclic replies, runaway recursion, deep JSON: an error reply each,
    never an exception out of the state machine, and the next script runs."""
    for body, expected in (
            ("local t = {} for i = 1, 80 do t[i] = string.rep('x', 2^24) .. i end", "memory"),
            ("local t = {} t[1] = t return t", "reached lua stack limit"),
            ("local t = {} t[1] = t return cjson.encode(t)", "Cannot serialise"),
            ("local function f() return 1 + f() end return f()", "stack overflow"),
            ("return cjson.decode(string.rep('[', 100000))", "Expected value"),
    ):
        assert expected in _error(kv("EVAL", body, "0")), body
        assert kv("EVAL", "return 'alive'", "0") == b"alive"

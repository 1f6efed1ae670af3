"""Scripts run on our state machine and on a real redis-server 7.0, replies and error texts
compared one by one (kv/commands/scripts.py, kv/scripting.py)."""

from __future__ import annotations

from typing import Any

from phalanx.kv import Error

from .redis_pair import Pair, needs_redis, redis_server_fixture  # noqa: F401

pytestmark = needs_redis

SCRIPTS: list[list[bytes | str]] = [
    ["SET", "s", "x"],
    ["RPUSH", "l", "a", "b", "c"],
    ["HSET", "h", "f", "1", "g", "2"],
    ["EVAL", "return redis.call('set', KEYS[1], ARGV[1])", "1", "k", "v"],
    ["EVAL", "return redis.call('get', KEYS[1])", "1", "k"],
    ["EVAL", "return {1, 2.7, 'a', false, true, nil, 3}", "0"],
    ["EVAL", "return -3.99", "0"],
    ["EVAL", "return 3.99", "0"],
    ["EVAL", "return {err='MY code here'}", "0"],
    ["EVAL", "return {ok='fine'}", "0"],
    ["EVAL", "return redis.error_reply('E2 x')", "0"],
    ["EVAL", "return redis.error_reply('nocode')", "0"],
    ["EVAL", "return redis.status_reply('PONG')", "0"],
    ["EVAL", "return {1, {2, {3, 'x'}}, redis.status_reply('OK')}", "0"],
    ["EVAL", "return redis.call('incr', 's')", "0"],
    ["EVAL", "\nlocal a = 1\nreturn redis.pcall('incr', 's')", "0"],
    ["EVAL", "local ok, e = pcall(redis.call, 'incr', 's'); return {ok and 1 or 0, e}", "0"],
    ["EVAL", "return x", "0"],
    ["EVAL", "x = 5", "0"],
    ["EVAL", "error('boom')", "0"],
    ["EVAL", "error('boom', 0)", "0"],
    ["EVAL", "error({err='MY boom'})", "0"],
    ["EVAL", "return redis.call('nosuch')", "0"],
    ["EVAL", "return redis.call('get')", "0"],
    ["EVAL", "return redis.call()", "0"],
    ["EVAL", "return redis.call('get', {})", "0"],
    ["EVAL", "return redis.call('multi')", "0"],
    ["EVAL", "return redis.call('eval', 'return 1', '0')", "0"],
    ["EVAL", "syntax error here", "0"],
    ["EVAL", "return 1", "x"],
    ["EVAL", "return 1", "-1"],
    ["EVAL", "return 1", "3", "a"],
    ["EVAL", "return redis.call('lrange', KEYS[1], 0, -1)", "1", "l"],
    ["EVAL", "return redis.call('hgetall', 'h')", "0"],
    ["EVAL", "return redis.call('hgetall', 'nokey')", "0"],
    ["EVAL", "return type(redis.call('get', 'nokey'))", "0"],
    ["EVAL", "return redis.call('set', 'n', 10) and redis.call('incrby', 'n', 5)", "0"],
    ["EVAL", "return redis.call('set', 'f', 0.5) and redis.call('get', 'f')", "0"],
    ["EVAL", "return cjson.encode({1, 2, 3})", "0"],
    ["EVAL", "return cjson.decode('{\"a\":[1,2,{\"b\":\"c\"}]}').a[3].b", "0"],
    ["EVAL", "return redis.sha1hex('hello')", "0"],
    ["EVAL", "return bit.bxor(5, 3)", "0"],
    ["EVAL", "return unpack({1, 2})", "0"],
    ["EVAL", "return loadstring('return 1')()", "0"],
    ["EVAL", "return tonumber('12') + #ARGV", "0", "a", "b"],
    ["EVAL", "return string.format('%d-%s', 3, 'x')", "0"],
    ["EVAL", "return table.concat({'a', 'b'}, ',')", "0"],
    ["EVAL", "return redis.call('ping')", "0"],
    ["EVAL", "return redis.call('del', 'k', 'l')", "0"],
    ["EVAL", "return {redis.call('exists', 'k'), redis.call('type', 'h')}", "0"],
    ["EVAL", "#!lua flags=no-writes\nlocal r = redis.call('set', 'a', 'b')\nreturn r", "0"],
    ["EVAL", "#!lua\nreturn redis.call('get', 'n')", "0"],
    ["EVAL", "#!python\nreturn 1", "0"],
    ["EVAL", "#!lua flags=bogus\nreturn 1", "0"],
    ["SCRIPT", "LOAD", "return 'loaded'"],
    ["EVALSHA", "d2cbe21d8bdf2b9e8a84c5a0bc2cd3d1e1f0b5f3", "0"],
    ["SCRIPT", "EXISTS", "a", "b"],
    ["SCRIPT", "FLUSH"],
    ["SCRIPT", "NOPE"],
]


def _normalise(reply: Any) -> Any:
    if isinstance(reply, list):
        return [_normalise(item) for item in reply]
    if isinstance(reply, str):
        return reply.encode()
    if isinstance(reply, Error):
        return ("error", reply.message.removeprefix("ERR "))
    if isinstance(reply, Exception):
        return ("error", str(reply))
    if isinstance(reply, tuple) and reply[0] == "error":
        text = reply[1]
        for code in ("NOSCRIPT ",):  # redis-py strips these codes from the message
            text = text.removeprefix(code)
        return ("error", text)
    return reply


def test_scripts_match_redis(redis_server: Any) -> None:
    pair = Pair(redis_server)
    for command in SCRIPTS:
        raw = [part if isinstance(part, bytes) else part.encode() for part in command]
        expected, actual = _normalise(pair.theirs(raw)), _normalise(pair.ours(raw))
        assert actual == expected, f"{command!r}: ours {actual!r}, redis {expected!r}"


MSGPACK_SCRIPTS = [
    "return cmsgpack.pack(1, -1, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296, "
    "-32, -33, -128, -129, -32768, -32769, -2147483648, -2147483649)",
    "return cmsgpack.pack(0.5, 1.1, -2.25, 1e300, 3.4e38, true, false, nil, 'abc')",
    "return cmsgpack.pack(string.rep('x', 31), string.rep('y', 32), string.rep('z', 300), "
    "string.rep('w', 70000))",
    "return cmsgpack.pack({1,2,3}, {}, {a=1}, {[1]=1,[3]=3}, {x={y={z={1,{2}}}}})",
    "local t = {} for i=1,20 do t[i]=i end return cmsgpack.pack(t)",
    "local t = {} local c = t for i=1,20 do c[1] = {} c = c[1] end return cmsgpack.pack(t)",
    "local a,b,c = cmsgpack.unpack(cmsgpack.pack(1, 'two', {3, 4})) return {a, b, c[1], c[2]}",
    "local t = cmsgpack.unpack(ARGV[1]) return 'hello ' .. t['name']",
    "return {cmsgpack.unpack_one(cmsgpack.pack(1, 2, 3), 0)}",
    "return {cmsgpack.unpack_one(cmsgpack.pack(1, 2, 3), 2)}",
    "return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 2, 0)}",
    "local x = cmsgpack.unpack('\\xc1') return x",
    "local x = cmsgpack.unpack('\\xcd\\x01') return x",
    "local x = cmsgpack.pack() return x",
    "local x = cmsgpack.unpack(5) return x",
    "return {cmsgpack.unpack(cmsgpack.pack(1.5, -0.25, 4294967296))}",
    "return cmsgpack.unpack(cmsgpack.pack({1, nil, 3}))",
    "return type(cmsgpack.unpack('\\x90'))",
]


def test_cmsgpack_matches_redis(redis_server: Any) -> None:
    """cmsgpack (kv/luamsgpack.py) byte for byte as Redis 7.0's lua_cmsgpack."""
    pair = Pair(redis_server)
    for script in MSGPACK_SCRIPTS:
        raw = [b"EVAL", script.encode(), b"0", b"\x81\xa4name\xa3Joe"]
        expected, actual = _normalise(pair.theirs(raw)), _normalise(pair.ours(raw))
        assert actual == expected, f"{script!r}: ours {actual!r}, redis {expected!r}"

"""The Lua sandbox (kv/scripting.py) under attack: every attempt to reach Python, files, the
OS, bytecode, the debug library or state left behind for the next script must fail."""

from __future__ import annotations

from typing import Any

import pytest

from phalanx.kv import Command, Error, KVStateMachine, encode_command


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

ESCAPES = [
    "return python.eval('1+1')",
    "return python.builtins.open('/etc/passwd')",
    "return python.import_module('os')",
    "return python",
    "return io.open('/etc/passwd'):read('*a')",
    "return os.execute('touch /tmp/phalanx-lua-escape')",
    "return os.getenv('HOME')",
    "return os.clock()",
    "return require('os')",
    "return package.loaded.os",
    "return loadfile('/etc/passwd')",
    "return dofile('/etc/passwd')",
    "return load(function() return nil end)",
    "return debug.getregistry()",
    "return debug.getupvalue(redis.call, 1)",
    "return getfenv(redis.call)",
    "setfenv(1, {})",
    "return string.dump(function() return 1 end)",
    "return ('').dump(function() return 1 end)",
    "return loadstring(string.char(27) .. 'LuaQ')()",
    "return collectgarbage('count')",
    "return print('x')",
    "return module('x')",
    "return newproxy(true)",
    "return getmetatable('').__index.rep('x', 3)",
    "getmetatable('').__index = nil",
    "return rawset(_G, 'leak', 1)",
    "return rawset(string, 'leak', 1)",
    "return setmetatable(_G, {})",
    "return setmetatable(string, {})",
    "redis.call = nil",
    "return redis.call('phalanx.expire', 'k', '1')",
    "return coroutine.running().x",
    "return cjson.encode(redis.call)",
]


@pytest.mark.parametrize("script", ESCAPES)
def test_escape_attempts_fail(kv: Driver, script: str) -> None:
    reply = kv("EVAL", script, "0")
    assert isinstance(reply, Error) or reply in (None, 0), (script, reply)
    # the sandbox is intact for the next script
    assert kv("EVAL", "return type(redis.call) .. type(string.rep) .. tostring(leak == nil)",
              "0") != b""


def test_no_state_survives_between_scripts(kv: Driver) -> None:
    for script in ("x = 1", "string.upper = nil", "rawset(_G, 'y', 1)",
                   "math.randomseed(1)", "KEYS[1] = 'z'"):
        kv("EVAL", script, "1", "k")
    assert kv("EVAL", "return {string.upper('a'), KEYS[1]}", "1", "k") == [b"A", b"k"]
    assert isinstance(kv("EVAL", "return y", "0"), Error)


def test_no_python_object_is_reachable(kv: Driver) -> None:
    """Walk every value reachable from the sandbox's globals (tables, metatables): only Lua
    types, never a userdata (a Python object in lupa is a userdata)."""
    body = """
    local seen, kinds = {}, {}
    local function walk(v)
      local t = type(v)
      kinds[t] = true
      if t == 'table' and not seen[v] then
        seen[v] = true
        for k, x in pairs(v) do walk(k); walk(x) end
        local mt = getmetatable(v)
        if type(mt) == 'table' then walk(mt) end
      end
    end
    for _, name in ipairs({'redis', 'string', 'table', 'math', 'cjson', 'bit', 'coroutine',
                           'KEYS', 'ARGV', '_G'}) do walk(_G[name]) end
    walk(getmetatable(''))
    return tostring(kinds.userdata == nil)
    """
    assert kv("EVAL", body, "0") == b"true"


def test_python_attribute_access_is_refused_even_on_a_leaked_object() -> None:
    """Defence in depth: the runtime's attribute filter refuses every attribute, so even a
    Python object that leaked into Lua could not be walked to `__class__` / builtins."""
    from phalanx.kv.scripting import LuaEngine

    engine = LuaEngine()
    lua = engine._lua
    leaked = lua.eval("function(o) return o.__class__ end")
    with pytest.raises(Exception, match="not allowed"):
        leaked(object())
    getattr_trick = lua.eval("function(o) return o['__class__'] end")
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do
        getattr_trick(object())

"""The Lua engine behind EVAL: a real Lua 5.1 (lupa 2.8, `lupa.lua51`, the Lua of Redis 7),
sandboxed, deterministic, with Redis 7's reply conversion and error texts.

What this module holds: `LuaEngine` (one Lua state per state machine, created on first use)
and its `run(body, sha, keys, argv, host)`, which compiles and runs one script. The Redis side
(the script cache, EVAL/EVALSHA/SCRIPT, what a script may call, undoing a killed script's
writes) lives in `commands/scripts.py`; `ScriptHost` is the narrow interface between the two.

Design decisions (docs/architecture.md copies them):
- The sandbox. Scripts run in a fresh read-only global table (Redis 7's "Script attempted to
  access nonexistent global variable" / "Attempt to modify a readonly table") holding only
  Lua's base functions that are safe, `string` (without `dump`), `table`, `math`, `coroutine`,
  `cjson`, `cmsgpack` (kv/luamsgpack.py), `bit`, `redis` and per-run `KEYS`/`ARGV`; every library table is a read-only proxy
  and the string metatable is protected, so no script can leave state behind for the next one
  (state left in the Lua VM would make a replica that restarted from a snapshot diverge). No
  `io`, `os`, `require`, `package`, `debug`, `load`, `loadfile`, `dofile`, `string.dump`,
  `getfenv`/`setfenv`, `collectgarbage`, `print`, or lupa's `python` table; `loadstring`
  refuses bytecode and runs its chunk in the sandbox. `tostring` of a table/function shows a
  per-run counter instead of an address (an address differs between replicas).
- No Python object is reachable from Lua. The runtime is created with `register_eval=False`,
  `register_builtins=False` and an `attribute_filter` that refuses every attribute. Exactly
  one Python callable (`_Bridge.__call__`, named `bridge` below) lives in the Lua state, as a
  local upvalue of the bootstrap chunk: scripts cannot reach it (no `debug`, no `getfenv`), it
  is called only by the bootstrap's Lua functions with plain strings and numbers, never raises,
  and returns only strings, numbers, booleans and Lua tables built with `table_from` (never a
  Python list or dict). Replies are converted to Lua tables here, not wrapped. (Running the
  script as a coroutine that yields its redis.call requests would keep even that callable out,
  but Lua 5.1 cannot yield across `pcall`, metamethods or `table.sort` comparators, which
  scripts use around redis.call.)
- Deterministic on every replica: time is the entry's replicated clock (TIME in a script
  returns it), `math.random` is a SplitMix64 generator seeded per entry (its log index), the C
  library's rand() is never used, `collectgarbage` (heap sizes) and addresses are hidden.
  Known limit: `pairs` over a table keyed by tables/functions iterates in address order.
- A script that runs too long is stopped, deterministically: a count hook (`debug.sethook`,
  set from the bootstrap before the script runs, every `HOOK_EVERY` VM instructions, shared by
  every coroutine) charges the script; past `max_instructions` (default 500M: measured 1.85 s
  of a pure Lua loop on the development machine, while redis-py's lock scripts use a few
  dozen) it raises a marker error that `pcall` cannot swallow (only user code raises it, so
  the engine's own functions always finish) and the engine reports `killed`;
  `commands/scripts.py` then undoes the script's
  writes. The count is the same on every replica, so they all stop at the same instruction.
- Cost: an EVALSHA of a lock release is ~55 us in the state machine (a SET ~7 us).
- Known deviation: `return redis.call(...)` is a tail call in Lua 5.1, which leaves no frame
  for the error's "on @user_script:N": such errors say line 1 (Redis gives the real line).
- Memory: the Lua state is capped at `MAX_MEMORY` (1 GiB) as a safety net against a runaway
  script taking the node down; allocation counts include garbage from earlier scripts, so a
  script that gets near the cap may fail on one replica and not another (a known limit).

Rules of this file: imports lupa and the kv leaf modules only; never raises out of `run` for
anything a script does (every failure is an `Error` reply).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from hashlib import sha1
from typing import Any, Protocol

from lupa import lua51

from phalanx.kv import luamsgpack
from phalanx.kv.replies import Error, Reply

HOOK_EVERY = 10_000
"""The count hook fires every this many Lua VM instructions (per coroutine)."""
DEFAULT_MAX_INSTRUCTIONS = 500_000_000
MAX_MEMORY = 1 << 30
_MASK64 = (1 << 64) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


class ScriptHost(Protocol):
    """What a running script may ask of the state machine (see commands/scripts.py)."""

    def call(self, args: list[bytes]) -> Reply:
        """Run one redis.call / redis.pcall command; never raises."""
        ...


def sha1hex(body: bytes) -> str:
    """The SHA1 of a script body, lower-case hex (EVALSHA's name for it)."""
    return sha1(body).hexdigest()


class _SplitMix64:
    """math.random's generator: deterministic, seeded per log entry (no global state)."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK64

    def next_float(self) -> float:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
        return (z >> 11) / float(1 << 53)


# The bootstrap chunk: receives the bridge, returns the `run` function. Everything a script
# can touch is built here; `debug`, `setfenv`, `loadstring` etc. are kept as locals only.
_BOOT = r"""
local bridge, hook_every = ...
local sethook, getinfo = debug.sethook, debug.getinfo
local _loadstring, _setfenv, _pcall, _xpcall, _error = loadstring, setfenv, pcall, xpcall, error
local _type, _tostring, _rawget, _rawset, _select = type, tostring, rawget, rawset, select
local _setmetatable, _getmetatable, _unpack, _next = setmetatable, getmetatable, unpack, next
local _format, _byte, _sub, _floor = string.format, string.byte, string.sub, math.floor
local _pairs, _ipairs, _tonumber = pairs, ipairs, tonumber

python = nil
if package then package.loaded.python = nil end
string.dump = nil
_getmetatable("").__metatable = "readonly"

local KILL = {}            -- the marker error of a script stopped by the instruction limit
local CALL_ERROR = {}      -- the key marking an error raised by redis.call
local protected = _setmetatable({}, {__mode = "k"})
local used, budget, killed = 0, 0, false


local function readonly_error() _error("Attempt to modify a readonly table", 2) end

local function readonly(t)
  local proxy = _setmetatable({}, {__index = t, __newindex = readonly_error,
                                   __metatable = "readonly"})
  protected[proxy] = true
  return proxy
end

-- The count hook charges the budget. Past it, every instruction of USER code raises KILL
-- (never the engine's own functions, so the engine always gets control back). (A "line"
-- mask would give exact error lines, but Lua 5.1 then stops counting a `while true do end`.)
local function hook()
  if not killed then
    used = used + 1
    if used <= budget then return end
    killed = true
    sethook(hook, "", 1)
  end
  local info = getinfo(2, "S")
  if info and info.source == "@user_script" then _error(KILL, 0) end
end

-- pcall/xpcall that cannot swallow the kill, and that turn a redis.call error into its text
local function caught(ok, ...)
  if ok then return true, ... end
  local e = ...
  if e == KILL then _error(KILL, 0) end
  if _type(e) == "table" and _rawget(e, CALL_ERROR) then return false, _rawget(e, "err") end
  return false, e
end
local function safe_pcall(f, ...) return caught(_pcall(f, ...)) end
local function safe_xpcall(f, handler)
  return caught(_xpcall(f, function(e)
    if e == KILL then return KILL end
    if _type(e) == "table" and _rawget(e, CALL_ERROR) then e = _rawget(e, "err") end
    return handler(e)
  end))
end

local ids, next_id = nil, 0
local function safe_tostring(v)
  local kind = _type(v)
  if kind == "table" or kind == "function" or kind == "thread" or kind == "userdata" then
    local mt = _getmetatable(v)
    if kind == "table" and _type(mt) == "table" and _rawget(mt, "__tostring") then
      return _tostring(v)
    end
    local id = ids[v]
    if not id then next_id = next_id + 1; id = next_id; ids[v] = id end
    return _format("%s: 0x%08x", kind, id)
  end
  return _tostring(v)
end

local function safe_rawset(t, k, v)
  if protected[t] then readonly_error() end
  return _rawset(t, k, v)
end

local env  -- the sandbox's global table (a read-only proxy), built below
local function safe_loadstring(s, name)
  if _type(s) == "string" and _byte(s, 1) == 27 then return nil, "bytecode is not allowed" end
  local f, err = _loadstring(s, "@user_script")
  if f then _setfenv(f, env) end
  return f, err
end

local call_error
local function arguments(n, ...)
  if n == 0 then call_error("ERR Please specify at least one argument for this redis lib call") end
  local args = {...}
  for i = 1, n do
    local a = args[i]
    local kind = _type(a)
    if kind == "number" then
      args[i] = _format("%.17g", a)
    elseif kind ~= "string" then
      call_error("ERR Lua redis lib command arguments must be strings or integers")
    end
  end
  return args
end

-- The line of the innermost user frame (Redis's "on @user_script:N"). A tail call
-- (`return redis.call(...)`) leaves no frame in Lua 5.1: then the line is 1.
local function user_line()
  for level = 3, 40 do
    local info = getinfo(level, "Sl")
    if not info then break end
    if info.source == "@user_script" and info.currentline > 0 then return info.currentline end
  end
  return 1
end

function call_error(message)
  _error({[CALL_ERROR] = true, err = message, line = user_line()}, 0)
end

local redis = {
  LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
  REPL_NONE = 0, REPL_AOF = 1, REPL_SLAVE = 2, REPL_REPLICA = 2, REPL_ALL = 3,
}
function redis.call(...)
  local ok, reply = bridge("call", _unpack(arguments(_select("#", ...), ...)))
  if not ok then call_error(reply) end
  return reply
end
function redis.pcall(...)
  local ok, reply = bridge("call", _unpack(arguments(_select("#", ...), ...)))
  if not ok then return {err = reply} end
  return reply
end
local function error_table(message)
  if _type(message) ~= "string" then _error("wrong number or type of arguments", 2) end
  local code, text = "ERR", message
  if _sub(message, 1, 1) == "-" then
    local space = string.find(message, " ", 1, true)
    if space then code, text = _sub(message, 2, space - 1), _sub(message, space + 1)
    else text = _sub(message, 2) end
  end
  text = string.gsub(text, "[\r\n]+$", "")
  return code .. " " .. text
end
function redis.error_reply(message)
  if _type(message) ~= "string" then _error("wrong number or type of arguments", 2) end
  if _sub(message, 1, 1) ~= "-" then message = "-" .. message end
  return {err = error_table(message)}
end
function redis.status_reply(message)
  if _type(message) ~= "string" then _error("wrong number or type of arguments", 2) end
  return {ok = message}
end
function redis.sha1hex(s)
  if _type(s) ~= "string" and _type(s) ~= "number" then
    _error("wrong number of arguments", 2)
  end
  return bridge("sha1", _tostring(s))
end
function redis.log(level, ...)
  if _type(level) ~= "number" or _select("#", ...) == 0 then
    _error("redis.log() requires two arguments or more.", 2)
  end
end
function redis.setresp(v)
  if v ~= 2 and v ~= 3 then _error("RESP version must be 2 or 3.", 2) end
end
function redis.set_repl(v) end
function redis.replicate_commands() return true end

local null = readonly({})
local cjson = {null = null}
function cjson.encode(v)
  local ok, text = bridge("json_encode", v)
  if not ok then _error(text, 2) end
  return text
end
function cjson.decode(s)
  if _type(s) ~= "string" then _error("bad argument #1 to 'decode' (string expected)", 2) end
  local ok, value = bridge("json_decode", s)
  if not ok then _error(value, 2) end
  return value
end

-- cmsgpack (kv/luamsgpack.py): lua_cmsgpack's pack / unpack / unpack_one / unpack_limit.
local cmsgpack = {}
function cmsgpack.pack(...)
  local n = _select("#", ...)
  if n == 0 then _error("bad argument #0 to 'pack' (MessagePack pack needs input.)", 2) end
  local ok, data = bridge("msgpack_pack", n, ...)
  if not ok then _error(data, 2) end
  return data
end
local function msgpack_unpack(s, limit, offset, with_offset)
  if _type(s) == "number" then s = _tostring(s) end  -- luaL_checklstring takes numbers
  if _type(s) ~= "string" then _error("bad argument #1 to 'unpack' (string expected)", 3) end
  local ok, values, count, next_offset = bridge("msgpack_unpack", s, limit, offset)
  if not ok then _error(values, 3) end
  if with_offset then return next_offset, _unpack(values, 1, count) end
  return _unpack(values, 1, count)
end
function cmsgpack.unpack(s) return msgpack_unpack(s, 0, 0, false) end
function cmsgpack.unpack_one(s, offset)
  return msgpack_unpack(s, 1, _tonumber(offset) or 0, true)
end
function cmsgpack.unpack_limit(s, limit, offset)
  return msgpack_unpack(s, _tonumber(limit) or 0, _tonumber(offset) or 0, true)
end

local function bitop(name)
  return function(...)
    local n = _select("#", ...)
    local args = {...}
    for i = 1, n do
      if _type(args[i]) ~= "number" then _error("bad argument #" .. i .. " to '" .. name ..
                                               "' (number expected)", 2) end
    end
    return bridge("bit", name, ...)
  end
end
local bit = {}
for _, name in _ipairs({"tobit", "tohex", "bnot", "band", "bor", "bxor", "lshift",
                        "rshift", "arshift", "rol", "ror", "bswap"}) do
  bit[name] = bitop(name)
end

local math_copy = {}
for k, v in _pairs(math) do math_copy[k] = v end
math_copy.random = function(...)
  local n = _select("#", ...)
  local m, u = ...
  if n == 0 then return bridge("random") end
  if n > 2 then _error("wrong number of arguments", 2) end
  if _type(m) ~= "number" or (n == 2 and _type(u) ~= "number") then
    _error("bad argument to 'random' (number expected)", 2)
  end
  local r = bridge("random")
  if n == 1 then
    if m < 1 then _error("bad argument #1 to 'random' (interval is empty)", 2) end
    return _floor(r * m) + 1
  end
  if m > u then _error("bad argument #2 to 'random' (interval is empty)", 2) end
  return _floor(r * (u - m + 1)) + m
end
math_copy.randomseed = function(seed) bridge("seed", _tonumber(seed) or 0) end

local function copy_of(t)
  local c = {}
  for k, v in _pairs(t) do c[k] = v end
  return c
end

local base = {
  assert = assert, error = _error, ipairs = _ipairs, next = _next, pairs = _pairs,
  pcall = safe_pcall, xpcall = safe_xpcall, select = _select, tonumber = _tonumber,
  tostring = safe_tostring, type = _type, unpack = _unpack, rawequal = rawequal,
  rawget = _rawget, rawset = safe_rawset, setmetatable = _setmetatable,
  getmetatable = _getmetatable, loadstring = safe_loadstring, _VERSION = _VERSION,
  gcinfo = nil,
  string = readonly(copy_of(string)), table = readonly(copy_of(table)),
  math = readonly(math_copy), coroutine = readonly(copy_of(coroutine)),
  redis = readonly(redis), cjson = readonly(cjson), bit = readonly(bit),
  cmsgpack = readonly(cmsgpack),
}
env = _setmetatable({}, {
  __index = function(_, name)
    local v = base[name]
    if v == nil then
      _error("Script attempted to access nonexistent global variable '" ..
             _tostring(name) .. "'", 2)
    end
    return v
  end,
  __newindex = readonly_error,
  __metatable = "readonly",
})
protected[env] = true
base._G = env

-- A script's reply as plain tables the engine reads without running any Lua metamethod:
-- Redis 7's conversion (number -> integer, true -> 1, false/nil -> nil, {err=}, {ok=}, array
-- up to the first nil).
local function export(v, depth)
  local kind = _type(v)
  if kind == "string" or kind == "number" then return v end
  if kind == "boolean" then if v then return 1 end return false end
  if kind ~= "table" then return false end
  local err = _rawget(v, "err")
  if _type(err) == "string" then return {t = "e", v = err} end
  local ok = _rawget(v, "ok")
  if _type(ok) == "string" then return {t = "s", v = ok} end
  if depth > 100 then _error("reached lua stack limit", 0) end
  local out = {t = "a"}
  local i = 1
  while true do
    local item = _rawget(v, i)
    if item == nil then break end
    out[i] = export(item, depth + 1)
    i = i + 1
  end
  out.n = i - 1
  return out
end

local function on_error(e)
  if e == KILL then return KILL end
  local line = user_line()
  if _type(e) == "table" then
    if _rawget(e, CALL_ERROR) then return {err = _rawget(e, "err"), line = _rawget(e, "line")} end
    local err = _rawget(e, "err")
    if _type(err) == "string" then return {err = err, line = line} end
    return {err = "ERR " .. safe_tostring(e), line = line}
  end
  return {err = "ERR " .. safe_tostring(e), line = line}
end

local function check(body)
  local f, err = _loadstring(body, "@user_script")
  if f then return nil end
  return err
end

return function(body, keys, argv, max_hooks)
  local f, err = _loadstring(body, "@user_script")
  if not f then return "compile", err end
  _setfenv(f, env)
  base.KEYS, base.ARGV = keys, argv
  ids, next_id = _setmetatable({}, {__mode = "k"}), 0
  used, budget, killed = 0, max_hooks, false
  sethook(hook, "", hook_every)
  local ok, result = _xpcall(f, on_error)
  sethook()
  base.KEYS, base.ARGV, ids = nil, nil, nil
  if killed or result == KILL then return "killed", used end
  if not ok then
    if _type(result) ~= "table" then  -- the handler itself failed (out of memory)
      return "error", "ERR " .. _tostring(result), 0
    end
    return "error", result.err, result.line
  end
  local exported_ok, exported = _pcall(export, result, 0)
  if not exported_ok then return "error", "ERR " .. _tostring(exported), 0 end
  return "ok", exported
end, check, null
"""


class _Bridge:
    """The one Python callable inside the Lua state (see the module docstring)."""

    __slots__ = ("host", "lua", "null", "rawequal", "rng")

    def __init__(self, lua: Any) -> None:
        self.lua = lua
        self.null: Any = None  # cjson.null (a Lua table), set once the bootstrap ran
        self.rawequal: Any = None
        self.host: ScriptHost | None = None
        self.rng = _SplitMix64(0)

    def __call__(self, op: bytes, *args: Any) -> Any:
        try:
            if op == b"call":
                host = self.host
                if host is None:
                    return False, b"ERR no script is running"
                reply = host.call([a if isinstance(a, bytes) else str(a).encode() for a in args])
                if isinstance(reply, Error):
                    return False, reply.message.encode()
                return True, self.to_lua(reply)
            if op == b"random":
                return self.rng.next_float()
            if op == b"seed":
                self.rng = _SplitMix64(int(args[0]))
                return None
            if op == b"sha1":
                return sha1hex(args[0]).encode()
            if op == b"json_encode":
                return self.json_encode(args[0])
            if op == b"json_decode":
                return self.json_decode(args[0])
            if op == b"bit":
                return _bit(args[0].decode(), args[1:])
            if op == b"msgpack_pack":
                return True, b"".join(luamsgpack.pack_value(value, _is_table)
                                      for value in args[1:1 + int(args[0])])
            if op == b"msgpack_unpack":
                try:
                    values, next_offset = luamsgpack.unpack(
                        args[0], int(args[1]), int(args[2]), self.lua.table_from)
                except luamsgpack.MsgpackError as error:
                    return False, str(error).encode()
                table = self.lua.table_from({i + 1: v for i, v in enumerate(values)
                                             if v is not None})
                return True, table, len(values), next_offset
        except Exception as exc:  # never raise into Lua: the script sees a plain error
            return False, f"ERR script engine error: {type(exc).__name__}".encode()
        return None

    def to_lua(self, reply: Reply) -> Any:
        """A reply as a Lua value (RESP2 -> Lua, as Redis 7): nil -> false, status -> {ok=},
        error -> {err=}, array -> table."""
        if reply is None:
            return False
        if isinstance(reply, (bytes, int)):
            return reply
        if isinstance(reply, str):
            return self.lua.table_from({b"ok": reply.encode()})
        if isinstance(reply, Error):
            return self.lua.table_from({b"err": reply.message.encode()})
        if isinstance(reply, float):
            return repr(reply).encode()
        if isinstance(reply, list):
            return self.lua.table_from([self.to_lua(item) for item in reply])
        return False

    def json_decode(self, text: bytes) -> Any:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return False, b"Expected value but found invalid token"
        return True, self._from_json(value, 0)

    def _from_json(self, value: Any, depth: int) -> Any:
        if depth > 200:
            raise ValueError("too deep")
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, list):
            return self.lua.table_from([self._from_json(v, depth + 1) for v in value])
        if isinstance(value, dict):
            return self.lua.table_from(
                {k.encode(): self._from_json(v, depth + 1) for k, v in value.items()})
        if value is None:
            return self.null
        return value  # numbers, bools

    def json_encode(self, value: Any) -> Any:
        try:
            return True, json.dumps(self._to_json(value, 0), separators=(",", ":"),
                                    ensure_ascii=False).encode()
        except (ValueError, TypeError) as exc:
            return False, f"Cannot serialise {exc}".encode()
        except RecursionError:
            return False, b"Cannot serialise, excessive nesting"

    def _to_json(self, value: Any, depth: int) -> Any:
        if depth > 200:
            raise ValueError("excessive nesting")
        if value is None or isinstance(value, (bool, int)):
            return value
        if isinstance(value, float):
            return int(value) if value.is_integer() and abs(value) < 1e15 else value
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if lua51.lua_type(value) == "table":
            if self.rawequal(value, self.null):
                return None
            items = list(value.items())
            if not items:
                return {}
            keys = [k for k, _ in items]
            if all(isinstance(k, int) and k > 0 for k in keys) and max(keys) == len(keys):
                return [self._to_json(v, depth + 1)
                        for _, v in sorted(items, key=lambda kv: kv[0])]
            return {(k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)):
                    self._to_json(v, depth + 1) for k, v in items}
        raise TypeError(f"{lua51.lua_type(value)}: type not supported")


def _is_table(value: Any) -> bool:
    return bool(lua51.lua_type(value) == "table")


def _bit(name: str, args: Sequence[Any]) -> Any:
    def u32(x: Any) -> int:
        return int(x) & 0xFFFFFFFF

    def s32(x: int) -> int:
        x &= 0xFFFFFFFF
        return x - (1 << 32) if x & 0x80000000 else x

    a = [u32(x) for x in args]
    ops: dict[str, Callable[[], int]] = {
        "tobit": lambda: a[0],
        "bnot": lambda: ~a[0],
        "band": lambda: _fold(a, lambda x, y: x & y),
        "bor": lambda: _fold(a, lambda x, y: x | y),
        "bxor": lambda: _fold(a, lambda x, y: x ^ y),
        "lshift": lambda: a[0] << (a[1] & 31),
        "rshift": lambda: a[0] >> (a[1] & 31),
        "arshift": lambda: s32(a[0]) >> (a[1] & 31),
        "rol": lambda: (a[0] << (a[1] & 31)) | (a[0] >> ((32 - a[1]) & 31)),
        "ror": lambda: (a[0] >> (a[1] & 31)) | (a[0] << ((32 - a[1]) & 31)),
        "bswap": lambda: int.from_bytes(a[0].to_bytes(4, "little"), "big"),
    }
    if name == "tohex":
        digits = int(args[1]) if len(args) > 1 else 8
        text = f"{a[0]:08x}"[-abs(digits):] if digits else ""
        return (text.upper() if digits < 0 else text).encode()
    return s32(ops[name]())


def _fold(values: list[int], op: Callable[[int, int], int]) -> int:
    result = values[0]
    for v in values[1:]:
        result = op(result, v)
    return result


def _deny(obj: object, name: object, is_setting: bool) -> object:
    raise AttributeError("access to Python attributes is not allowed")


def _to_reply(value: Any) -> Reply:
    """The exported script result (see `export` in the bootstrap) as a Reply."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return 1 if value else None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or not _INT64_MIN <= value < 2.0 ** 63:
            return _INT64_MIN  # C's double -> long long on x86, as Redis answers 1e20
        return int(value)
    if value is None:
        return None
    kind = value[b"t"]
    if kind == b"e":
        return Error(value[b"v"].decode("utf-8", "replace"))
    if kind == b"s":
        return str(value[b"v"].decode("utf-8", "replace"))
    return [_to_reply(value[i]) for i in range(1, int(value[b"n"]) + 1)]


class LuaEngine:
    """One sandboxed Lua 5.1 state; `run` executes one script (see the module docstring)."""

    __slots__ = ("_bridge", "_check", "_lua", "_run", "max_instructions")

    def __init__(self, max_instructions: int = DEFAULT_MAX_INSTRUCTIONS) -> None:
        self.max_instructions = max_instructions
        self._lua = lua51.LuaRuntime(
            encoding=None, register_eval=False, register_builtins=False,
            unpack_returned_tuples=True, attribute_filter=_deny, max_memory=MAX_MEMORY)
        self._bridge = _Bridge(self._lua)
        self._run, self._check, self._bridge.null = self._lua.execute(
            _BOOT.encode(), self._bridge, HOOK_EVERY)
        self._bridge.rawequal = self._lua.globals().rawequal

    def compile_error(self, body: bytes) -> Error | None:
        """Redis's error if `body` does not compile (bytecode is refused), else None."""
        if body[:1] == b"\x1b":
            message = "user_script: bytecode is not allowed"
        else:
            try:
                error = self._check(body)
            except Exception as exc:
                return Error(f"ERR Error compiling script (new function): {type(exc).__name__}")
            if error is None:
                return None
            message = error.decode("utf-8", "replace")
        return Error(f"ERR Error compiling script (new function): {message}")

    def run(self, body: bytes, sha: str, keys: Sequence[bytes], argv: Sequence[bytes],
            host: ScriptHost, seed: int) -> tuple[Reply, bool]:
        """Run `body`; returns (reply, killed). `killed` means the instruction limit stopped
        it (the caller undoes its writes). Never raises."""
        lua = self._lua
        bridge = self._bridge
        bridge.host = host
        bridge.rng = _SplitMix64(seed)
        try:
            return self._outcome(self._run(
                body, lua.table_from(list(keys)), lua.table_from(list(argv)),
                max(1, self.max_instructions // HOOK_EVERY)), sha)
        except lua51.LuaMemoryError:
            return Error("ERR Script ran out of memory (the Lua state's cap is "
                         f"{MAX_MEMORY >> 20} MiB)"), False
        except Exception as exc:
            return Error(f"ERR Script failed in the engine: {type(exc).__name__}"), False
        finally:
            bridge.host = None

    def _outcome(self, outcome: Any, sha: str) -> tuple[Reply, bool]:
        """The reply of the bootstrap's (status, ...) result."""
        status = outcome[0]
        if status == b"ok":
            return _to_reply(outcome[1]), False
        if status == b"compile":
            message = outcome[1].decode("utf-8", "replace")
            return Error(f"ERR Error compiling script (new function): {message}"), False
        if status == b"killed":
            return Error(
                f"ERR Script killed: {sha} ran past the script instruction limit "
                f"({self.max_instructions} Lua instructions); its writes were undone"), True
        message = outcome[1].decode("utf-8", "replace") if isinstance(outcome[1], bytes) \
            else str(outcome[1])
        line = outcome[2]
        return Error(f"{message} script: {sha}, on @user_script:{line}."), False

"""Hash slots and the command table: which slot a key lives in, and which arguments are keys.

What this module owns:
- The 16384 hash slots of Redis Cluster: `crc16` (CRC16-CCITT, XModem variant) and `key_slot`
  with the `{hashtag}` rule, bit for bit as Redis computes them (so cluster-aware clients and
  phalanx agree on every key's slot).
- `COMMAND_SPECS`: every command phalanx answers, with the arity, flags, key positions and ACL
  categories of Redis 7's `COMMAND INFO`; `command_info` renders one spec as that reply, which
  redis-py's `CommandsParser` (and `RedisCluster`) reads to find the keys of a command.
- `command_keys` / `command_slot`: the keys of one request and the single slot they hash to
  (`CrossSlotError` when they span slots, as Redis Cluster's `-CROSSSLOT`).

Rules of this module:
- Pure and deterministic: standard library and `phalanx.kv` (itself pure) only.
- Key positions follow Redis: position 0 is the command name, so position 1 is `args[0]`;
  a negative last position counts from the end (-1 = the last argument).
- Never raises for a short or unknown request: key extraction returns the keys present (the
  command's own arity check answers the client); only `command_slot` raises, and only
  `CrossSlotError`.
"""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Sequence
from dataclasses import dataclass

from phalanx.errors import PhalanxError, require
from phalanx.kv import COMMAND_NAMES

SLOT_COUNT = 16384
"""Hash slots of the keyspace, as in Redis Cluster."""

_SLOT_MASK = SLOT_COUNT - 1


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XModem: polynomial 0x1021, initial value 0), as Redis Cluster uses.

    `binascii.crc_hqx` is exactly that CRC, in C (about 50x a table-driven loop in Python;
    every keyed command computes it when routed and again when applied)."""
    return crc_hqx(data, 0)


def key_slot(key: bytes) -> int:
    """The hash slot of `key` (0..16383), honouring the `{hashtag}` rule of Redis Cluster.

    When the key holds a `{` and, after the FIRST `{`, a `}` with at least one byte between
    them, only those bytes are hashed; otherwise the whole key is ("foo{}{bar}" hashes whole).
    """
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return crc16(key[start + 1:end]) & _SLOT_MASK
    return crc16(key) & _SLOT_MASK


# ---------------------------------------------------------------------------- command table


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command as Redis 7's `COMMAND INFO` describes it (positions count the name as 0)."""

    name: str
    """Lower case, e.g. "mset"."""
    arity: int
    """Redis convention: N = exactly N words including the name; -N = at least N."""
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    """-1 = the last argument; 0 with `first_key` 0 = keyless."""
    step: int
    acl_categories: tuple[str, ...] = ()
    """E.g. ("@read", "@string", "@fast"), as `COMMAND INFO` lists them."""

    @property
    def keyless(self) -> bool:
        """True when the command takes no key (KEYS, SCAN, PING, ...)."""
        return self.first_key <= 0


_R, _W = "readonly", "write"
_FAST = ("fast",)

# name: (arity, flags, first, last, step, ACL categories), as Redis 7.0's `COMMAND INFO` answers
# (checked against redis-server 7.0.15). Tips, key specs and subcommands are left empty.
_KEYED: dict[str, tuple[int, tuple[str, ...], int, int, int, tuple[str, ...]]] = {
    "get": (2, (_R, "fast"), 1, 1, 1, ("@read", "@string", "@fast")),
    "set": (-3, (_W, "denyoom"), 1, 1, 1, ("@write", "@string", "@slow")),
    "setnx": (3, (_W, "denyoom", "fast"), 1, 1, 1, ("@write", "@string", "@fast")),
    "getset": (3, (_W, "denyoom", "fast"), 1, 1, 1, ("@write", "@string", "@fast")),
    "getdel": (2, (_W, "fast"), 1, 1, 1, ("@write", "@string", "@fast")),
    "mget": (-2, (_R, "fast"), 1, -1, 1, ("@read", "@string", "@fast")),
    "mset": (-3, (_W, "denyoom"), 1, -1, 2, ("@write", "@string", "@slow")),
    "append": (3, (_W, "denyoom", "fast"), 1, 1, 1, ("@write", "@string", "@fast")),
    "strlen": (2, (_R, "fast"), 1, 1, 1, ("@read", "@string", "@fast")),
    "incr": (2, (_W, "denyoom", "fast"), 1, 1, 1, ("@write", "@string", "@fast")),
    "decr": (2, (_W, "denyoom", "fast"), 1, 1, 1, ("@write", "@string", "@fast")),
    "incrby": (3, (_W, "denyoom", "fast"), 1, 1, 1, ("@write", "@string", "@fast")),
    "decrby": (3, (_W, "denyoom", "fast"), 1, 1, 1, ("@write", "@string", "@fast")),
    "incrbyfloat": (3, (_W, "denyoom", "fast"), 1, 1, 1, ("@write", "@string", "@fast")),
    "del": (-2, (_W,), 1, -1, 1, ("@keyspace", "@write", "@slow")),
    "unlink": (-2, (_W, "fast"), 1, -1, 1, ("@keyspace", "@write", "@fast")),
    "exists": (-2, (_R, "fast"), 1, -1, 1, ("@keyspace", "@read", "@fast")),
    "type": (2, (_R, "fast"), 1, 1, 1, ("@keyspace", "@read", "@fast")),
    "expire": (-3, (_W, "fast"), 1, 1, 1, ("@keyspace", "@write", "@fast")),
    "pexpire": (-3, (_W, "fast"), 1, 1, 1, ("@keyspace", "@write", "@fast")),
    "expireat": (-3, (_W, "fast"), 1, 1, 1, ("@keyspace", "@write", "@fast")),
    "pexpireat": (-3, (_W, "fast"), 1, 1, 1, ("@keyspace", "@write", "@fast")),
    "ttl": (2, (_R, "fast"), 1, 1, 1, ("@keyspace", "@read", "@fast")),
    "pttl": (2, (_R, "fast"), 1, 1, 1, ("@keyspace", "@read", "@fast")),
    "persist": (2, (_W, "fast"), 1, 1, 1, ("@keyspace", "@write", "@fast")),
    "keys": (2, (_R,), 0, 0, 0, ("@keyspace", "@read", "@slow", "@dangerous")),
    "scan": (-2, (_R,), 0, 0, 0, ("@keyspace", "@read", "@slow")),
    "dbsize": (1, (_R, "fast"), 0, 0, 0, ("@keyspace", "@read", "@fast")),
    "flushdb": (-1, (_W,), 0, 0, 0, ("@keyspace", "@write", "@slow", "@dangerous")),
    "flushall": (-1, (_W,), 0, 0, 0, ("@keyspace", "@write", "@slow", "@dangerous")),
    "hset": (-4, (_W, "denyoom", "fast"), 1, 1, 1, ("@write", "@hash", "@fast")),
    "hget": (3, (_R, "fast"), 1, 1, 1, ("@read", "@hash", "@fast")),
    "hdel": (-3, (_W, "fast"), 1, 1, 1, ("@write", "@hash", "@fast")),
    "hgetall": (2, (_R,), 1, 1, 1, ("@read", "@hash", "@slow")),
    "hexists": (3, (_R, "fast"), 1, 1, 1, ("@read", "@hash", "@fast")),
    "hlen": (2, (_R, "fast"), 1, 1, 1, ("@read", "@hash", "@fast")),
    "hincrby": (4, (_W, "denyoom", "fast"), 1, 1, 1, ("@write", "@hash", "@fast")),
    "sadd": (-3, (_W, "denyoom", "fast"), 1, 1, 1, ("@write", "@set", "@fast")),
    "srem": (-3, (_W, "fast"), 1, 1, 1, ("@write", "@set", "@fast")),
    "smembers": (2, (_R,), 1, 1, 1, ("@read", "@set", "@slow")),
    "sismember": (3, (_R, "fast"), 1, 1, 1, ("@read", "@set", "@fast")),
    "scard": (2, (_R, "fast"), 1, 1, 1, ("@read", "@set", "@fast")),
    "lpush": (-3, (_W, "denyoom", "fast"), 1, 1, 1, ("@write", "@list", "@fast")),
    "rpush": (-3, (_W, "denyoom", "fast"), 1, 1, 1, ("@write", "@list", "@fast")),
    "lpop": (-2, (_W, "fast"), 1, 1, 1, ("@write", "@list", "@fast")),
    "rpop": (-2, (_W, "fast"), 1, 1, 1, ("@write", "@list", "@fast")),
    "lrange": (4, (_R,), 1, 1, 1, ("@read", "@list", "@slow")),
    "llen": (2, (_R, "fast"), 1, 1, 1, ("@read", "@list", "@fast")),
    # phalanx's own: the leader-proposed deletion of an expired key (PHALANX.EXPIRE key at_ms).
    "phalanx.expire": (3, (_W,), 1, 1, 1, ("@keyspace", "@write", "@slow")),
}

_CONNECTION = ("@fast", "@connection")
_ANYTIME = ("noscript", "loading", "stale", "fast", "no_auth", "allow_busy")

# Server commands answered outside the state machine; all keyless.
_KEYLESS: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = {
    "ping": (-1, _FAST, _CONNECTION),
    "echo": (2, ("loading", "stale", "fast"), _CONNECTION),
    "hello": (-1, _ANYTIME, _CONNECTION),
    "auth": (-2, _ANYTIME, _CONNECTION),
    "select": (2, ("loading", "stale", "fast"), _CONNECTION),
    "client": (-2, (), ("@slow",)),
    "command": (-1, ("loading", "stale"), ("@slow", "@connection")),
    "info": (-1, ("loading", "stale"), ("@slow", "@dangerous")),
    "readonly": (1, ("loading", "stale", "fast"), _CONNECTION),
    "readwrite": (1, ("loading", "stale", "fast"), _CONNECTION),
    "role": (1, ("noscript", "loading", "stale", "fast"), ("@admin", "@fast", "@dangerous")),
    "wait": (3, ("noscript",), ("@slow", "@connection")),
    "config": (-2, (), ("@slow",)),
    "debug": (-2, ("admin", "noscript", "loading", "stale"), ("@admin", "@slow", "@dangerous")),
    "failover": (-1, ("admin", "noscript", "stale"), ("@admin", "@slow", "@dangerous")),
    "quit": (-1, _ANYTIME, _CONNECTION),
    "cluster": (-2, (), ("@slow",)),
    "asking": (1, _FAST, _CONNECTION),
}


def _build_specs() -> dict[bytes, CommandSpec]:
    specs: dict[bytes, CommandSpec] = {}
    for name, (arity, flags, first, last, step, acl) in _KEYED.items():
        specs[name.upper().encode()] = CommandSpec(name, arity, flags, first, last, step, acl)
    for name, (arity, flags, acl) in _KEYLESS.items():
        specs[name.upper().encode()] = CommandSpec(name, arity, flags, 0, 0, 0, acl)
    missing = [name for name in COMMAND_NAMES if name.encode() not in specs]
    # A new state-machine command must get its key positions here.
    require(not missing, f"placement.slots: no command spec for {', '.join(missing)}")
    return specs


COMMAND_SPECS: dict[bytes, CommandSpec] = _build_specs()
"""Every command phalanx knows, keyed by the UPPER-case name."""


def command_spec(name: bytes) -> CommandSpec | None:
    """The spec of a command named in any case, or None when phalanx does not know it."""
    return COMMAND_SPECS.get(name) or COMMAND_SPECS.get(name.upper())


def command_info(spec: CommandSpec) -> list[object]:
    """One command as Redis 7's `COMMAND` / `COMMAND INFO` reply describes it.

    [name, arity, [flags], first key, last key, step, [ACL categories], [tips], [key specs],
    [subcommands]]; names, flags and categories are plain bytes (the RESP layer decides how to
    encode them: Redis sends flags as simple strings, the rest as bulk strings).
    """
    return [
        spec.name.encode(),
        spec.arity,
        [flag.encode() for flag in spec.flags],
        spec.first_key,
        spec.last_key,
        spec.step,
        [category.encode() for category in spec.acl_categories],
        [],
        [],
        [],
    ]


def command_keys(name: bytes, args: Sequence[bytes]) -> list[bytes]:
    """The keys of the request `name args...` (`args` excludes the name); [] when keyless.

    Unknown commands have no keys. A request shorter than the command's arity yields the keys
    it does hold, never an error.
    """
    spec = command_spec(name)
    if spec is None or spec.first_key <= 0:
        return []
    count = len(args)
    last = spec.last_key if spec.last_key >= 0 else count + 1 + spec.last_key
    last = min(last, count)
    if spec.step == 1:
        return list(args[spec.first_key - 1:last])
    return [args[position - 1] for position in range(spec.first_key, last + 1, spec.step)]


class CrossSlotError(PhalanxError):
    """The keys of one request hash to different slots (Redis Cluster's -CROSSSLOT)."""

    def __init__(self) -> None:
        super().__init__("CROSSSLOT Keys in request don't hash to the same slot")


def command_slot(name: bytes, args: Sequence[bytes]) -> int | None:
    """The one slot every key of the request hashes to; None when the request has no key.

    Raises `CrossSlotError` when the keys span two or more slots.
    """
    keys = command_keys(name, args)
    if not keys:
        return None
    slot = key_slot(keys[0])
    for key in keys[1:]:
        if key_slot(key) != slot:
            raise CrossSlotError()
    return slot

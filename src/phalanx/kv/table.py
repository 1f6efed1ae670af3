"""The one command table: every command phalanx knows, with its arity, flags, key positions and
ACL categories, and (for the state machine's commands) its handler.

What this module holds:
- `STATE_MACHINE_COMMANDS`: the rows of the command families (`phalanx.kv.commands.*`), merged
  in a fixed order; `KVStateMachine` dispatches on them and `COMMAND_NAMES` lists them.
- `SERVER_COMMANDS`: the keyless commands the server front end answers itself (PING, HELLO,
  CLUSTER, ...), described here so `COMMAND INFO` and key extraction know them too.
- `COMMAND_SPECS` (both, keyed by UPPER-case name), `command_spec`, `command_info` (the Redis 7
  `COMMAND INFO` reply of one spec), `is_write` and `is_known` (the state machine's view).
  `phalanx.placement.slots` derives key positions (hence slots) from `command_spec`.

Rules of this module:
- Pure and deterministic: standard library and the kv modules only.
- Arity, flags, key positions and ACL categories are those of Redis 7.0's `COMMAND INFO`
  (checked against redis-server 7.0.15); tips, key specs and subcommands are left empty.
- Built once at import; a malformed row (duplicate name, a state-machine command without
  exactly one of "write" / "readonly") fails the import. See docs/architecture.md.
"""

from __future__ import annotations

from phalanx.errors import require
from phalanx.kv import transaction
from phalanx.kv.commands import (
    activeactive,
    bitmaps,
    geo,
    hashes,
    hyperloglog,
    keys,
    lists,
    scripts,
    sets,
    streamgroups,
    streaminfo,
    streams,
    strings,
    zsetops,
    zsets,
)
from phalanx.kv.spec import CommandSpec

STATE_MACHINE_COMMANDS: tuple[CommandSpec, ...] = (
    *strings.COMMANDS,
    *keys.COMMANDS,
    *hashes.COMMANDS,
    *sets.COMMANDS,
    *lists.COMMANDS,
    *zsets.COMMANDS, *zsetops.COMMANDS, *geo.COMMANDS,
    *bitmaps.COMMANDS,
    *hyperloglog.COMMANDS,
    *scripts.COMMANDS,
    *streams.COMMANDS, *streamgroups.COMMANDS, *streaminfo.COMMANDS,
    *keys.INTERNAL_COMMANDS,
    *streamgroups.INTERNAL_COMMANDS,
    *transaction.INTERNAL_COMMANDS,
    *activeactive.INTERNAL_COMMANDS,
)
"""Every command the state machine runs, in the order `COMMAND` lists them."""

_CONNECTION = ("@fast", "@connection")
_ADMIN_SLOW = ("@admin", "@slow", "@dangerous")
_ANYTIME = ("noscript", "loading", "stale", "fast", "no_auth", "allow_busy")
_STALE_FAST = ("loading", "stale", "fast")
_PUBSUB_SLOW = ("@pubsub", "@slow")
_BLOCKING = ("write", "noscript", "blocking")
_BLOCKING_LIST = ("@write", "@list", "@slow", "@blocking")
_BLOCKING_ZSET = ("@write", "@sortedset", "@fast", "@blocking")


def _server(name: str, arity: int, flags: tuple[str, ...],
            acl_categories: tuple[str, ...]) -> CommandSpec:
    return CommandSpec(name, arity, flags, 0, 0, 0, acl_categories)


SERVER_COMMANDS: tuple[CommandSpec, ...] = (
    _server("ping", -1, ("fast",), _CONNECTION),
    _server("echo", 2, _STALE_FAST, _CONNECTION),
    _server("time", 1, _STALE_FAST, ("@fast",)),
    _server("hello", -1, _ANYTIME, _CONNECTION),
    _server("auth", -2, _ANYTIME, _CONNECTION),
    _server("acl", -2, (), ("@slow",)),
    _server("select", 2, _STALE_FAST, _CONNECTION),
    _server("client", -2, (), ("@slow",)),
    _server("command", -1, ("loading", "stale"), ("@slow", "@connection")),
    _server("info", -1, ("loading", "stale"), ("@slow", "@dangerous")),
    _server("readonly", 1, _STALE_FAST, _CONNECTION),
    _server("readwrite", 1, _STALE_FAST, _CONNECTION),
    _server("role", 1, ("noscript", "loading", "stale", "fast"),
            ("@admin", "@fast", "@dangerous")),
    _server("wait", 3, ("noscript",), ("@slow", "@connection")),
    _server("config", -2, (), ("@slow",)),
    _server("debug", -2, ("admin", "noscript", "loading", "stale"),
            ("@admin", "@slow", "@dangerous")),
    _server("failover", -1, ("admin", "noscript", "stale"), ("@admin", "@slow", "@dangerous")),
    _server("quit", -1, _ANYTIME, _CONNECTION),
    # Introspection (server/front/introspection.py); MEMORY is a keyed row in commands/keys.
    _server("slowlog", -2, (), ("@slow",)),
    _server("latency", -2, (), ("@slow",)),
    _server("monitor", 1, ("admin", "noscript", "loading", "stale"), _ADMIN_SLOW),
    _server("lastsave", 1, ("loading", "stale", "fast"), ("@admin", "@fast", "@dangerous")),
    _server("bgsave", -1, ("admin", "noscript", "no_async_loading"), _ADMIN_SLOW),
    _server("lolwut", -1, ("readonly", "fast"), ("@read", "@fast")),
    _server("module", -2, (), ("@slow",)),
    _server("replicaof", 3, ("admin", "noscript", "stale", "no_async_loading"), _ADMIN_SLOW),
    _server("slaveof", 3, ("admin", "noscript", "stale", "no_async_loading"), _ADMIN_SLOW),
    _server("cluster", -2, (), ("@slow",)),
    _server("asking", 1, ("fast",), _CONNECTION),
    *transaction.COMMANDS,
    # Pub/Sub (server/front/pubsub.py): shard channels hash to slots like keys.
    *(_server(name, arity, ("pubsub", "noscript", "loading", "stale"), _PUBSUB_SLOW)
      for name, arity in (("subscribe", -2), ("psubscribe", -2), ("unsubscribe", -1),
                          ("punsubscribe", -1))),
    CommandSpec("ssubscribe", -2, ("pubsub", "noscript", "loading", "stale"), 1, -1, 1,
                _PUBSUB_SLOW),
    CommandSpec("sunsubscribe", -1, ("pubsub", "noscript", "loading", "stale"), 1, -1, 1,
                _PUBSUB_SLOW),
    _server("publish", 3, ("pubsub", "loading", "stale", "fast"), ("@pubsub", "@fast")),
    CommandSpec("spublish", 3, ("pubsub", "loading", "stale", "fast"), 1, 1, 1,
                ("@pubsub", "@fast")),
    _server("pubsub", -2, (), ("@slow",)),
    _server("reset", 1, _ANYTIME, _CONNECTION),
    # The blocking pops: keyed, but run by the front end (`server/front/blocking.py`), which
    # serves each through its non-blocking form (LMPOP, LMOVE, ZMPOP) on the write path.
    # BLMPOP / BZMPOP find their keys after numkeys (`placement.slots.NUMKEYS_COMMANDS`).
    CommandSpec("blpop", -3, _BLOCKING, 1, -2, 1, _BLOCKING_LIST),
    CommandSpec("brpop", -3, _BLOCKING, 1, -2, 1, _BLOCKING_LIST),
    CommandSpec("blmove", 6, ("write", "denyoom", "noscript", "blocking"), 1, 2, 1,
                _BLOCKING_LIST),
    CommandSpec("brpoplpush", 4, ("write", "denyoom", "noscript", "blocking"), 1, 2, 1,
                _BLOCKING_LIST),
    CommandSpec("blmpop", -5, ("write", "blocking", "movablekeys"), 0, 0, 0, _BLOCKING_LIST),
    CommandSpec("bzpopmin", -3, (*_BLOCKING, "fast"), 1, -2, 1, _BLOCKING_ZSET),
    CommandSpec("bzpopmax", -3, (*_BLOCKING, "fast"), 1, -2, 1, _BLOCKING_ZSET),
    CommandSpec("bzmpop", -5, ("write", "blocking", "movablekeys"), 0, 0, 0,
                ("@write", "@sortedset", "@slow", "@blocking")),
)
"""Commands answered by the server front end, outside the state machine: keyless ones, and
the blocking pops (keyed, flagged "blocking")."""

BLOCKING_COMMANDS: frozenset[bytes] = frozenset(
    spec.name.upper().encode() for spec in SERVER_COMMANDS if "blocking" in spec.flags)
"""The blocking pops (upper case), run by the front end."""


def _build() -> dict[bytes, CommandSpec]:
    specs: dict[bytes, CommandSpec] = {}
    for spec in (*STATE_MACHINE_COMMANDS, *SERVER_COMMANDS):
        name = spec.name.upper().encode()
        require(name not in specs, f"kv.table: command {spec.name} defined twice")
        require(spec.name == spec.name.lower(), f"kv.table: {spec.name} is not lower case")
        specs[name] = spec
    for spec in STATE_MACHINE_COMMANDS:
        require(spec.handler is not None, f"kv.table: {spec.name} has no handler")
        require(("write" in spec.flags) != ("readonly" in spec.flags),
                f"kv.table: {spec.name} must be flagged exactly one of write / readonly")
    return specs


COMMAND_SPECS: dict[bytes, CommandSpec] = _build()
"""Every command phalanx knows, keyed by the UPPER-case name."""

COMMAND_NAMES: tuple[str, ...] = tuple(spec.name.upper() for spec in STATE_MACHINE_COMMANDS)
"""Every command the state machine knows, upper case, including PHALANX.EXPIRE."""

_MACHINE_WRITES = frozenset(
    spec.name.upper().encode() for spec in STATE_MACHINE_COMMANDS if spec.write
)
_MACHINE_NAMES = frozenset(name.encode() for name in COMMAND_NAMES)


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


def is_write(command_name: bytes | str) -> bool:
    """True when the command changes state and must go through the log.

    Unknown commands (and the server's own, which the state machine does not run) count as
    writes: they are never served locally (apply answers them with an error).
    """
    name = command_name.encode() if isinstance(command_name, str) else command_name
    upper = name.upper()
    return upper in _MACHINE_WRITES or upper not in _MACHINE_NAMES


def is_known(command_name: bytes | str) -> bool:
    """True when the state machine implements the command."""
    name = command_name.encode() if isinstance(command_name, str) else command_name
    return name.upper() in _MACHINE_NAMES

"""Scripting commands: EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT LOAD|EXISTS|FLUSH|KILL,
the replicated script cache, and what a script's redis.call may run.

Design decisions (docs/architecture.md copies them; the Lua side is in `kv/scripting.py`):
- The log carries the INVOCATION, not the effects: an EVAL / EVALSHA entry holds the script
  (or its SHA) with its keys and arguments, and every replica runs it at apply time inside
  the state machine. That needs no leader-side execution against a state that includes every
  earlier write (the effects approach), and one entry is applied atomically, as Redis runs a
  script. The price is determinism, which `scripting.py` provides: `now` is the entry's
  replicated clock (TIME returns it), math.random is seeded by the entry's log index, and the
  instruction limit is counted in Lua VM instructions, identical on every replica.
- The script cache is replicated state: EVAL adds its body, SCRIPT LOAD and SCRIPT FLUSH are
  writes (log entries), and the cache (SHA -> body) is part of the snapshot (format 3; older
  snapshots load with an empty cache). EVALSHA is resolved at apply time from that cache, so
  every replica answers the same, and NOSCRIPT never appears because the leader changed.
  SCRIPT EXISTS goes through the log too (SCRIPT is one command, flagged "write"), so it is
  linearizable. A shard split copies the cache to the new shard; a merge unites both caches.
  With several shards the front end sends SCRIPT LOAD|FLUSH|EXISTS to every shard (as Redis
  Cluster clients do: COMMAND DOCS says request_policy all_nodes / all_shards).
- EVAL_RO / EVALSHA_RO are reads (flagged "readonly"): served by the local read path after
  the linearizable barrier; a write inside them gets Redis's "Write commands are not allowed
  from read-only scripts." They never add to the cache (a read does not change state).
- A script stopped by the instruction limit leaves NO effect: every key a write inside the
  script touches is saved before its first write (a keyless write such as FLUSHALL saves the
  whole keyspace), and restored when the script is killed. A script that fails with an
  ordinary error keeps its earlier writes, as in Redis ("there is no rollback").
- Keys: the declared KEYS decide the shard (placement's numkeys rule; -CROSSSLOT between
  shards in the front end; -TRYAGAIN at apply time if a slot moved). A key that redis.call
  touches without declaring it works when its slot belongs to this shard, and is refused with
  "ERR Script attempted to access a non local key in a cluster node: 'k' lives in another
  shard; ..." otherwise (Redis Cluster's text, then phalanx's explanation; never "ERR
  phalanx", which clients read as a transient, retryable error): the shard machine
  installs `key_owned` (slot ownership, checked at apply time, in log order).
- From a script: every state-machine command; PING, ECHO and TIME; commands flagged
  "noscript" and the server's transaction, blocking, pub/sub and connection commands get
  Redis's "This Redis command is not allowed from script"; anything else "Unknown Redis
  command called from script".
- A `#!lua` shebang first line (Redis 7) is accepted; `flags=no-writes` makes the script
  read-only; any other engine name is refused as Redis does.
- References (Redis 7): https://redis.io/docs/latest/develop/interact/programmability/
  eval-intro/ ("Script cache", "Script replication": Redis 7 replicates a script's effects;
  phalanx's log replicates the invocation, deterministically);
  https://redis.io/docs/latest/develop/interact/programmability/lua-api/ (redis.call /
  redis.pcall errors, error_reply, status_reply, sha1hex, the conversion tables);
  https://redis.io/docs/latest/develop/reference/errors/common/noscript/ (Redis empties the
  cache on restart and when a replica becomes primary, so clients must re-send scripts;
  phalanx keeps it through both, a deliberate improvement that stays compatible).

Rules of this file: deterministic (no clock, no randomness but the per-entry seed); never
raises for bad input.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Sequence

from phalanx.kv.keyspace import Keyspace
from phalanx.kv.replies import NOT_INTEGER, OK, Error, Reply, arity_error, error_text
from phalanx.kv.scripting import DEFAULT_MAX_INSTRUCTIONS, LuaEngine, sha1hex
from phalanx.kv.spec import Args, CommandSpec, numkeys_keys
from phalanx.kv.stream import Stream
from phalanx.kv.zset import ZSet

Dispatch = Callable[[bytes, Args, int], Reply]
"""The state machine's command dispatch: (UPPER name, args, now) -> reply."""
SpecOf = Callable[[bytes], "CommandSpec | None"]
"""The command table's lookup (`kv.table.command_spec`; passed in: the table imports us)."""


def script_handler(db: Keyspace, args: Args, now: int) -> Reply:
    """The table's handler for the scripting commands: a marker; `KVStateMachine` sees it and
    runs them through its `Scripts` (they need the cache and the dispatch, not only a db)."""
    return Error("ERR scripting commands run through the state machine")


_SCRIPTING = ("@slow", "@scripting")
_EVAL_FLAGS = ("noscript", "stale", "skip_monitor", "no_mandatory_keys", "movablekeys")

COMMANDS: tuple[CommandSpec, ...] = (
    # "write" is phalanx's: it sends EVAL through the log (Redis flags it may_replicate).
    CommandSpec("eval", -3, ("write", *_EVAL_FLAGS), 0, 0, 0, _SCRIPTING, script_handler,
                numkeys_keys(2)),
    CommandSpec("evalsha", -3, ("write", *_EVAL_FLAGS), 0, 0, 0, _SCRIPTING, script_handler,
                numkeys_keys(2)),
    CommandSpec("eval_ro", -3, ("readonly", *_EVAL_FLAGS), 0, 0, 0, _SCRIPTING,
                script_handler, numkeys_keys(2)),
    CommandSpec("evalsha_ro", -3, ("readonly", *_EVAL_FLAGS), 0, 0, 0, _SCRIPTING,
                script_handler, numkeys_keys(2)),
    CommandSpec("script", -2, ("write",), 0, 0, 0, ("@slow",), script_handler),
)

#: Server commands (answered by the front end, or not at all) a script may not call.
_NOT_FROM_SCRIPTS = frozenset({
    b"MULTI", b"EXEC", b"DISCARD", b"WATCH", b"UNWATCH", b"EVAL", b"EVALSHA", b"EVAL_RO",
    b"EVALSHA_RO", b"SCRIPT", b"FUNCTION", b"FCALL", b"FCALL_RO", b"BLPOP", b"BRPOP",
    b"BLMOVE", b"BRPOPLPUSH", b"BLMPOP", b"BZPOPMIN", b"BZPOPMAX", b"BZMPOP", b"SUBSCRIBE",
    b"PSUBSCRIBE", b"SSUBSCRIBE", b"UNSUBSCRIBE", b"PUNSUBSCRIBE", b"SUNSUBSCRIBE", b"WAIT",
    b"AUTH", b"HELLO", b"CLIENT", b"QUIT", b"RESET", b"MONITOR", b"DEBUG", b"FAILOVER",
    b"SYNC", b"PSYNC", b"REPLICAOF", b"SLAVEOF", b"SHUTDOWN", b"SAVE", b"BGSAVE",
})
_SHEBANG_FLAGS = frozenset({b"no-writes", b"allow-oom", b"allow-stale", b"no-cluster",
                            b"allow-cross-slot-keys"})


def _copy_value(value: object) -> object:
    if type(value) is bytes:
        return value
    if type(value) is dict or type(value) is set:
        return value.copy()
    if type(value) is deque:
        return deque(value)
    if type(value) is ZSet or type(value) is Stream:
        return value.copy()
    return copy.deepcopy(value)


def _blocks(args: Sequence[bytes]) -> bool:
    """XREAD / XREADGROUP with a BLOCK option (before STREAMS), which Redis refuses in scripts
    (https://redis.io/commands/xread/; t_stream.c xreadCommand)."""
    for position in range(1, len(args) - 1):
        option = args[position].upper()
        if option == b"STREAMS":
            return False
        if option == b"BLOCK":
            return True
    return False


def _keys_of(spec: CommandSpec, args: Sequence[bytes]) -> list[bytes]:
    """The keys of a command named by `spec`, `args` including the name."""
    keys: list[bytes] = []
    if spec.first_key > 0:
        last = spec.last_key if spec.last_key >= 0 else len(args) + spec.last_key
        keys.extend(args[spec.first_key:last + 1:max(spec.step, 1)])
    if spec.movable_keys is not None:
        keys.extend(spec.movable_keys(args[1:]))
    return keys


class _Run:
    """One running script: the `ScriptHost` its redis.call talks to."""

    __slots__ = ("db", "dispatch", "full", "journal", "key_owned", "now", "read_only",
                 "spec_of")

    def __init__(self, db: Keyspace, dispatch: Dispatch, spec_of: SpecOf, now: int,
                 read_only: bool, key_owned: Callable[[bytes], bool] | None) -> None:
        self.db = db
        self.spec_of = spec_of
        self.dispatch = dispatch
        self.now = now
        self.read_only = read_only
        self.key_owned = key_owned
        #: key -> (value or None, expire-at or None) before the script's first write to it.
        self.journal: dict[bytes, tuple[object, int | None]] = {}
        #: the whole keyspace before the script's first keyless write (FLUSHALL), if any.
        self.full: tuple[dict[bytes, object], dict[bytes, int]] | None = None

    def call(self, args: list[bytes]) -> Reply:
        upper = args[0].upper()
        spec = self.spec_of(upper)
        if upper in _NOT_FROM_SCRIPTS or (spec is not None and "noscript" in spec.flags):
            return Error("ERR This Redis command is not allowed from script")
        if upper == b"PING":
            return "PONG" if len(args) == 1 else args[1]
        if upper == b"ECHO":
            return args[1] if len(args) == 2 else arity_error("echo")
        if upper == b"TIME":
            return [str(self.now // 1000).encode(), str(self.now % 1000 * 1000).encode()]
        if spec is None or spec.handler is None or upper.startswith(b"PHALANX."):
            return Error("ERR Unknown Redis command called from script")
        if (spec.arity > 0 and len(args) != spec.arity) or len(args) < -spec.arity:
            return Error("ERR Wrong number of args calling Redis command from script")
        if spec.write and self.read_only:
            return Error("ERR Write commands are not allowed from read-only scripts.")
        if upper in (b"XREAD", b"XREADGROUP") and _blocks(args):
            return Error(f"ERR {error_text(args[0])} command is not allowed with BLOCK option "
                         "from scripts")
        keys = _keys_of(spec, args)
        if self.key_owned is not None:
            for key in keys:
                if not self.key_owned(key):
                    return Error(
                        "ERR Script attempted to access a non local key in a cluster node: "
                        f"'{error_text(key[:128])}' lives in another shard; declare it in KEYS "
                        "(the keys of one script must share a shard: use a {hashtag})")
        if spec.write:
            self._save(keys)
        return self.dispatch(upper, args[1:], self.now)

    def _save(self, keys: list[bytes]) -> None:
        db = self.db
        if not keys:
            if self.full is None:
                self.full = ({k: _copy_value(v) for k, v in db.data.items()}, dict(db.expires))
            return
        for key in keys:
            if key not in self.journal:
                value = db.data.get(key)
                self.journal[key] = (None if value is None else _copy_value(value),
                                     db.expires.get(key))

    def undo(self) -> None:
        """Put back every key this script wrote (it was killed by the instruction limit)."""
        db = self.db
        if self.full is not None:
            data, expires = self.full
            db.clear()
            for key, value in data.items():
                db.store(key, value)  # type: ignore[arg-type]
            for key, at in expires.items():
                db.set_expire(key, at)
        for key, (value, when) in self.journal.items():
            if key in db.data:
                db.delete(key)
            if value is not None:
                db.store(key, value)  # type: ignore[arg-type]
                if when is not None:
                    db.set_expire(key, when)


class Scripts:
    """The replicated script cache and the Lua engine of one state machine."""

    __slots__ = ("_engine", "cache", "key_owned", "max_instructions")

    def __init__(self, max_instructions: int = DEFAULT_MAX_INSTRUCTIONS) -> None:
        #: SHA1 hex (ASCII bytes, lower case) -> body. Replicated: part of the snapshot.
        self.cache: dict[bytes, bytes] = {}
        #: Slot ownership of the shard (installed by placement's ShardMachine), or None.
        self.key_owned: Callable[[bytes], bool] | None = None
        self.max_instructions = max_instructions
        self._engine: LuaEngine | None = None

    def execute(self, upper: bytes, args: Args, now: int, index: int, db: Keyspace,
                dispatch: Dispatch, spec_of: SpecOf) -> Reply:
        """Run EVAL* or SCRIPT (`upper`: the command name, upper case)."""
        if upper == b"SCRIPT":
            return self._script(args)
        if upper in (b"EVALSHA", b"EVALSHA_RO"):
            sha = args[0].lower()
            body = self.cache.get(sha)
            if body is None:
                return Error("NOSCRIPT No matching script. Please use EVAL.")
        else:
            body = args[0]
            sha = sha1hex(body).encode()
        raw = args[1]
        if not raw.lstrip(b"-").isdigit() or len(raw) > 19:
            return NOT_INTEGER
        numkeys = int(raw)
        if numkeys < 0:
            return Error("ERR Number of keys can't be negative")
        if numkeys > len(args) - 2:
            return Error("ERR Number of keys can't be greater than number of args")
        read_only = upper.endswith(b"_RO")
        if body[:2] == b"#!":
            line_end = body.find(b"\n")
            shebang = body[2:] if line_end < 0 else body[2:line_end]
            words = shebang.split()
            if not words or words[0] != b"lua":
                return Error("ERR Unexpected engine in script shebang: "
                             f"{error_text(b'#!' + shebang)}")
            for word in words[1:]:
                flags = word[6:].split(b",") if word.startswith(b"flags=") else [word]
                for flag in filter(None, flags):
                    if flag not in _SHEBANG_FLAGS or not word.startswith(b"flags="):
                        return Error("ERR Unexpected flag in script shebang: "
                                     f"{error_text(flag)}")
                read_only = read_only or b"no-writes" in flags
            body = b"" if line_end < 0 else b"--" + body[2:]  # keep the line numbers
        run = _Run(db, dispatch, spec_of, now, read_only, self.key_owned)
        reply, killed = self.engine.run(body, sha.decode(), args[2:2 + numkeys],
                                         args[2 + numkeys:], run, index)
        if killed:
            run.undo()
        if upper == b"EVAL" and not (isinstance(reply, Error) and reply.message.startswith(
                "ERR Error compiling script")):
            self.cache[sha] = body
        return reply

    def _script(self, args: Args) -> Reply:
        sub = args[0].upper()
        if sub == b"LOAD":
            if len(args) != 2:
                return arity_error("script|load")
            body = args[1]
            engine_error = self.engine.compile_error(body)
            if engine_error is not None:
                return engine_error
            sha = sha1hex(body).encode()
            self.cache[sha] = body
            return sha
        if sub == b"EXISTS":
            if len(args) < 2:
                return arity_error("script|exists")
            return [1 if sha.lower() in self.cache else 0 for sha in args[1:]]
        if sub == b"FLUSH":
            if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC")):
                return Error("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
            self.cache = {}
            return OK
        if sub == b"KILL":
            return Error("NOTBUSY No scripts in execution right now.")
        if sub == b"HELP":
            return [line.encode() for line in _HELP]
        return Error(f"ERR unknown subcommand '{error_text(args[0][:128])}'. "
                     "Try SCRIPT HELP.")

    @property
    def engine(self) -> LuaEngine:
        """The Lua state, created on first use (a machine that runs no script pays nothing)."""
        if self._engine is None:
            self._engine = LuaEngine(self.max_instructions)
        return self._engine

    def snapshot_items(self) -> dict[bytes, bytes]:
        """The cache for the snapshot (insertion order: identical on every replica)."""
        return self.cache


_HELP = (
    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "EXISTS <sha1> [<sha1> ...]",
    "    Return information about the existence of the scripts in the script cache.",
    "FLUSH [ASYNC|SYNC]",
    "    Flush the Lua scripts cache. Very dangerous on replicas.",
    "KILL",
    "    Kill the currently executing Lua script.",
    "LOAD <script>",
    "    Load a script into the scripts cache without executing it.",
    "HELP",
    "    Prints this help.",
)

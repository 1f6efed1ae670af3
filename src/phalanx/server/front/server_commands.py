"""Server commands: PING, ECHO, TIME, COMMAND, INFO, ROLE, WAIT, CONFIG, DEBUG, FAILOVER.

Rules of this file:
- These commands answer from this node's view (its replicas' `RawNode.status()`, the cluster
  map, the listener's counters); none goes through the data path.
- A handler takes (session, arguments) and returns a reply value, or raises `CommandError`
  with the exact error line. FAILOVER is the only one that awaits.
- "The default group" is this node's lowest-numbered data replica (the only one in a
  single-shard cluster): ROLE, WAIT and INFO's replication section describe it.
- phalanx claims Redis 7.0 compatibility (`REDIS_VERSION`, in INFO and HELLO): the commands it
  runs follow 7.0's semantics. `redis_mode` (`redis_mode()`) is "cluster" when a client must be
  cluster-aware (MOVED redirects) or the keyspace is sharded, else "standalone" (a proxying
  single-shard cluster serves a plain client exactly as one redis-server would).
- TIME is this node's wall clock (`time.time_ns`), not a replicated clock: two nodes' TIME may
  differ by their clock skew; the state machine's expiry uses the replicated clock instead.
- CONFIG: per node, as in Redis Cluster. The parameters that change at run time
  (`introspection.RuntimeConfig`: slowlog-*, latency-*, timeout, maxmemory, maxclients)
  take effect at once on this node and are not written back (CONFIG REWRITE is refused: the
  node's config file is the operator's). Every other parameter CONFIG GET answers
  (`_config_values`: what clients read, with this node's real value, and the encoding
  thresholds phalanx's OBJECT ENCODING follows) is fixed: CONFIG SET accepts only its current
  value (an idempotent "make sure" from a deployment tool) and refuses a change as Redis
  refuses a parameter it cannot set; an unknown parameter gets Redis's "Unknown option" line.
  `requirepass` is fixed: it is the cluster's shared secret (peer links authenticate with
  it); run-time users are ACL SETUSER's.
See docs/architecture.md.
"""

from __future__ import annotations

import fnmatch
import os
import platform
import struct
import time
from typing import TYPE_CHECKING, Protocol

from phalanx import __version__
from phalanx.compiled import status as compiled_status
from phalanx.errors import CommandError
from phalanx.kv import COMMAND_SPECS, command_info
from phalanx.kv.keyspecs import KEY_SPECS
from phalanx.kv.spec import CommandSpec
from phalanx.placement import command_keys
from phalanx.resp import SimpleString

#: The Redis version phalanx claims in INFO and HELLO: its commands follow Redis 7.0.
REDIS_VERSION = "7.0.15"

if TYPE_CHECKING:
    from phalanx.server.front.introspection import Introspection, IntrospectionCommands
    from phalanx.server.front.replicas import ReplicaRegistry
    from phalanx.server.front.session import ClientState
    from phalanx.server.group import RaftGroup


class ListenerStats(Protocol):
    """The listener's counters INFO reports."""

    port: int
    total_commands: int
    total_connections: int

    @property
    def clients(self) -> dict[int, ClientState]: ...


def redis_mode(replicas: ReplicaRegistry) -> str:
    """"cluster" when clients must be cluster-aware (MOVED) or the keys are sharded, else
    "standalone" (INFO's redis_mode, HELLO's mode, INFO's cluster_enabled)."""
    if replicas.config.redirect == "moved" or len(replicas.cluster_map.shards) > 1:
        return "cluster"
    return "standalone"


_memory_read: list[float] = [0.0, 0.0]  # (monotonic time of the last read, bytes)


def used_memory() -> int:
    """The process's resident set size in bytes (Redis reports its allocator's bytes; the RSS
    is the nearest honest number a Python process has), 0 where /proc is missing. Read at
    most every 100 ms (maxmemory checks it on writes)."""
    now = time.monotonic()
    if now - _memory_read[0] < 0.1:
        return int(_memory_read[1])
    try:
        with open("/proc/self/statm", "rb") as statm:
            value = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        value = 0
    _memory_read[0], _memory_read[1] = now, value
    return value


def _key_flags(spec: CommandSpec) -> list[SimpleString]:
    """The flags of a key of a command without complete Redis key specs: from its read/write
    flag (a write's keys are read-write, a read's read-only)."""
    if "write" in spec.flags:
        return [SimpleString("RW"), SimpleString("access"), SimpleString("update")]
    return [SimpleString("RO"), SimpleString("access")]


def _variable_flags(name: str, argv: list[bytes], flags: tuple[str, ...]) -> tuple[str, ...]:
    """Redis's getkeys procs for the specs flagged `variable_flags` (SET: OW update unless
    GET; BITFIELD: RO access unless SET / INCRBY)."""
    if "variable_flags" not in flags:
        return flags
    words = {word.upper() for word in argv[3 if name == "set" else 2:]}
    if name == "set":
        return ("RW", "access", "update") if b"GET" in words else ("OW", "update")
    if name == "bitfield":
        return ("RW", "access", "update") if words & {b"SET", b"INCRBY"} else ("RO", "access")
    return tuple(flag for flag in flags if flag != "variable_flags")


def keys_and_flags(spec: CommandSpec, argv: list[bytes]) -> list[list[object]]:
    """COMMAND GETKEYSANDFLAGS: every key of `argv` (the command and its arguments) with its
    key spec's flags, found as Redis 7.0's getKeysUsingKeySpecs finds them from the command's
    key specs (`kv/keyspecs.py`, https://redis.io/docs/reference/key-specs/); a command whose
    specs are incomplete (SORT's STORE, ...) takes its keys from phalanx's own table: the
    first with the first spec's flags, the others with the last spec's."""
    specs = KEY_SPECS.get(spec.name)
    if specs is None or any(begin[0] == "unknown" or find[0] == "unknown"
                            for _, begin, find in specs):
        keys = command_keys(argv[0], argv[1:])
        if not specs:
            return [[key, _key_flags(spec)] for key in keys]
        first_flags = [SimpleString(f) for f in specs[0][0]]
        other_flags = [SimpleString(f) for f in specs[-1][0]]
        return [[key, first_flags if position == 0 else other_flags]
                for position, key in enumerate(keys)]
    argc = len(argv)
    found: list[list[object]] = []
    for flags, begin, find in specs:
        first = 0
        if begin[0] == "index":
            first = int(begin[1])  # type: ignore[call-overload]
        else:
            keyword, start = str(begin[1]).encode(), int(begin[2])  # type: ignore[call-overload]
            start_index = start if start > 0 else argc + start
            end_index = argc - 1 if start > 0 else 0
            index = start_index
            while index != end_index:
                if index >= argc or index < 1:
                    break
                if argv[index].upper() == keyword.upper():
                    first = index + 1
                    break
                index = index + 1 if start_index <= end_index else index - 1
            if not first:
                continue
        if first >= argc:
            continue
        if find[0] == "range":
            lastkey, step, limit = (int(v) for v in find[1:])  # type: ignore[call-overload]
            if lastkey >= 0:
                last = first + lastkey
            elif not limit:
                last = argc + lastkey
            else:
                last = first + ((argc - first) // limit + lastkey)
        else:
            keynumidx, firstkey, step = (int(v) for v in find[1:])  # type: ignore[call-overload]
            if first + keynumidx >= argc:
                continue
            try:
                numkeys = int(argv[first + keynumidx])
            except ValueError:
                continue
            if numkeys < 0:
                continue
            first += firstkey
            last = first + numkeys - 1
        shown = [SimpleString(f) for f in _variable_flags(spec.name, argv, flags)]
        for position in range(first, last + 1, max(step, 1)):
            if position >= argc:
                break
            found.append([argv[position], shown])
    return found


def default_group(replicas: ReplicaRegistry) -> RaftGroup | None:
    """This node's lowest-numbered data replica, or None."""
    groups = replicas.data_groups()
    return groups[min(groups)] if groups else None


#: The subcommands phalanx answers, per container command: COMMAND LIST lists them as
#: "container|sub", as Redis 7 does (COMMAND COUNT counts the containers only).
SUBCOMMANDS: dict[str, tuple[str, ...]] = {
    "acl": ("cat", "deluser", "genpass", "getuser", "help", "list", "setuser", "users",
            "whoami"),
    "client": ("caching", "getname", "getredir", "help", "id", "info", "kill", "list",
               "no-evict", "no-touch", "pause", "reply", "setinfo", "setname", "tracking",
               "trackinginfo", "unblock", "unpause"),
    "cluster": ("info", "keyslot", "myid", "nodes", "shards", "slots"),
    "command": ("count", "docs", "getkeys", "getkeysandflags", "help", "info", "list"),
    "config": ("get", "resetstat", "set"),
    "latency": ("doctor", "graph", "help", "histogram", "history", "latest", "reset"),
    "memory": ("doctor", "help", "malloc-stats", "purge", "stats", "usage"),
    "module": ("help", "list"),
    "object": ("encoding", "freq", "help", "idletime", "refcount"),
    "pubsub": ("channels", "help", "numpat", "numsub", "shardchannels", "shardnumsub"),
    "script": ("exists", "flush", "help", "kill", "load"),
    "slowlog": ("get", "help", "len", "reset"),
}


class ServerCommands:
    """The server command group."""

    def __init__(self, replicas: ReplicaRegistry, stats: ListenerStats,
                 introspection: Introspection, intro_commands: IntrospectionCommands) -> None:
        self.replicas = replicas
        self.config = replicas.config
        self.stats = stats
        self.intro = introspection
        self.intro_commands = intro_commands

    def ping(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) > 2:
            raise CommandError("ERR wrong number of arguments for 'ping' command")
        return arguments[1] if len(arguments) == 2 else SimpleString("PONG")

    def echo(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) != 2:
            raise CommandError("ERR wrong number of arguments for 'echo' command")
        return arguments[1]

    def time_command(self, state: ClientState, arguments: list[bytes]) -> object:
        """TIME: this node's wall clock as [seconds, microseconds] (not replicated)."""
        if len(arguments) != 1:
            raise CommandError("ERR wrong number of arguments for 'time' command")
        now_us = time.time_ns() // 1000
        return [str(now_us // 1_000_000).encode(), str(now_us % 1_000_000).encode()]

    @staticmethod
    def _info_entry(spec: CommandSpec) -> list[object]:
        entry = command_info(spec)
        # Redis sends flags and ACL categories as simple strings (status replies).
        for index in (2, 6):
            items = entry[index]
            assert isinstance(items, list)
            entry[index] = [SimpleString(item.decode()) for item in items]
        return entry

    def command(self, state: ClientState, arguments: list[bytes]) -> object:
        """COMMAND, COMMAND COUNT|LIST|INFO|DOCS|GETKEYS|GETKEYSANDFLAGS: what cluster clients
        read key positions from (redis-py's RedisCluster routes with it), from the one table
        (`kv/table.py`)."""
        sub = arguments[1].upper() if len(arguments) >= 2 else b""
        if not sub:
            return [self._info_entry(spec) for spec in COMMAND_SPECS.values()]
        if sub == b"COUNT" and len(arguments) == 2:
            return len(COMMAND_SPECS)
        if sub == b"LIST":
            return self._command_list(arguments[2:])
        if sub == b"INFO":
            names = arguments[2:] or list(COMMAND_SPECS)
            return [self._info_entry(COMMAND_SPECS[name.upper()])
                    if name.upper() in COMMAND_SPECS else None for name in names]
        if sub == b"DOCS":
            names = arguments[2:] or list(COMMAND_SPECS)
            docs: dict[bytes, object] = {}
            for name in names:
                spec = COMMAND_SPECS.get(name.upper())
                if spec is not None:
                    # phalanx keeps no documentation text: the group (from the command's
                    # ACL category) is what clients read.
                    group = next((c[1:] for c in spec.acl_categories if c not in (
                        "@read", "@write", "@fast", "@slow", "@admin", "@dangerous",
                        "@blocking", "@keyspace")), "generic")
                    docs[spec.name.encode()] = {b"summary": b"", b"since": b"1.0.0",
                                                b"group": group.encode(), b"complexity": b""}
            return docs
        if sub in (b"GETKEYS", b"GETKEYSANDFLAGS") and len(arguments) >= 3:
            spec = COMMAND_SPECS.get(arguments[2].upper())
            if spec is None:
                raise CommandError("ERR Invalid command specified")
            if (spec.arity > 0 and len(arguments) - 2 != spec.arity) or \
                    len(arguments) - 2 < abs(spec.arity):
                raise CommandError("ERR Invalid number of arguments specified for command")
            keys = command_keys(arguments[2], arguments[3:])
            if not keys:
                raise CommandError("ERR The command has no key arguments")
            if sub == b"GETKEYS":
                return keys
            return keys_and_flags(spec, arguments[2:])
        if sub == b"HELP":
            return [SimpleString(line) for line in (
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "COUNT", "INFO [<command-name> ...]", "DOCS [<command-name> ...]",
                "GETKEYS <full-command>", "GETKEYSANDFLAGS <full-command>",
                "LIST [FILTERBY (MODULE <module-name>|ACLCAT <category>|PATTERN <pattern>)]",
                "HELP")]
        raise CommandError(f"ERR unknown subcommand or wrong number of arguments for "
                           f"'{arguments[1].decode(errors='replace')}'. Try COMMAND HELP.")

    @staticmethod
    def _command_list(options: list[bytes]) -> list[bytes]:
        names = [spec.name.encode() for spec in COMMAND_SPECS.values()]
        for spec in COMMAND_SPECS.values():
            names += [f"{spec.name}|{sub}".encode() for sub in SUBCOMMANDS.get(spec.name, ())]
        if not options:
            return names
        if len(options) != 3 or options[0].upper() != b"FILTERBY":
            raise CommandError("ERR syntax error")
        kind, value = options[1].upper(), options[2]
        if kind == b"MODULE":
            return []
        if kind == b"ACLCAT":
            category = "@" + value.decode(errors="replace").lower()
            return [spec.name.encode() for spec in COMMAND_SPECS.values()
                    if category in spec.acl_categories]  # (subcommands: not listed)
        if kind == b"PATTERN":
            pattern = value.decode(errors="replace").lower()
            return [name for name in names if fnmatch.fnmatchcase(name.decode(), pattern)]
        raise CommandError("ERR syntax error")

    def _config_values(self) -> dict[bytes, bytes]:
        """The parameters CONFIG GET answers: what clients and tools read, with this node's
        real values where it has one."""
        config = self.config
        values = {
            b"save": b"", b"appendonly": b"yes", b"appendfsync": b"always",
            b"databases": b"1", b"port": str(self.stats.port).encode(),
            b"proto-max-bulk-len": str(config.max_bulk_bytes).encode(),
            b"cluster-enabled": b"yes" if redis_mode(self.replicas) == "cluster" else b"no",
            b"notify-keyspace-events": b"", b"lua-time-limit": b"5000",
            b"busy-reply-threshold": b"5000",
            # The thresholds OBJECT ENCODING follows (kv/commands/keys.py `_encoding`).
            b"hash-max-listpack-entries": b"512", b"hash-max-listpack-value": b"64",
            b"hash-max-ziplist-entries": b"512", b"hash-max-ziplist-value": b"64",
            b"set-max-intset-entries": b"512", b"zset-max-listpack-entries": b"128",
            b"zset-max-listpack-value": b"64", b"zset-max-ziplist-entries": b"128",
            b"zset-max-ziplist-value": b"64", b"list-max-listpack-size": b"-2",
            b"list-max-ziplist-size": b"-2", b"list-compress-depth": b"0",
        }
        values.update(self.intro.config.values())
        return values

    def config_command(self, state: ClientState, arguments: list[bytes]) -> object:
        """CONFIG GET (glob patterns, several allowed, as 7.0), CONFIG SET (only a parameter's
        current value), CONFIG RESETSTAT (this node's counters), CONFIG REWRITE (refused)."""
        sub = arguments[1].upper() if len(arguments) >= 2 else b""
        if sub == b"GET" and len(arguments) >= 3:
            values = self._config_values()
            result: list[bytes] = []
            for key, value in values.items():
                if any(fnmatch.fnmatchcase(key.decode(), pattern.decode(
                        errors="replace").lower()) for pattern in arguments[2:]):
                    result += [key, value]
            return result
        if sub == b"SET" and len(arguments) >= 4 and len(arguments) % 2 == 0:
            # All or nothing, as Redis 7: every pair is checked before any is applied.
            values = self._config_values()
            runtime = self.intro.config
            changes: list[tuple[bytes, object]] = []
            seen: set[bytes] = set()
            for position in range(2, len(arguments), 2):
                key, value = arguments[position].lower(), arguments[position + 1]
                if key == b"requirepass":
                    raise CommandError("ERR CONFIG SET failed (possibly related to argument "
                                       "'requirepass') - phalanx: requirepass is the cluster's "
                                       "shared secret (peer links authenticate with it), set "
                                       "in every node's config file; run-time users are ACL "
                                       "SETUSER's")
                if key not in values:
                    raise CommandError(f"ERR Unknown option or number of arguments for CONFIG "
                                       f"SET - '{arguments[position].decode(errors='replace')}'")
                if key in seen:
                    raise CommandError(f"ERR CONFIG SET failed (possibly related to argument "
                                       f"'{key.decode()}') - duplicate parameter")
                seen.add(key)
                if runtime.is_live(key):
                    changes.append((key, runtime.parse(key, value)))
                elif values[key] != value:
                    raise CommandError(
                        f"ERR CONFIG SET failed (possibly related to argument "
                        f"'{key.decode()}') - phalanx sets it in the node's config file")
            for key, parsed in changes:
                runtime.set(key, parsed)
            self.intro.slowlog.trim(runtime.slowlog_max_len)
            self.intro.update_timing()
            return SimpleString("OK")
        if sub == b"RESETSTAT" and len(arguments) == 2:
            # INFO's counters and LATENCY HISTOGRAM's (https://redis.io/commands/config-resetstat/)
            self.stats.total_commands = 0
            self.stats.total_connections = 0
            self.intro.histograms.clear()
            return SimpleString("OK")
        if sub == b"REWRITE" and len(arguments) == 2:
            raise CommandError("ERR The server is running without a config file")
        raise CommandError(f"ERR unknown subcommand or wrong number of arguments for "
                           f"'{arguments[1].decode(errors='replace') if sub else 'config'}'. "
                           f"Try CONFIG HELP.")

    def debug(self, state: ClientState, arguments: list[bytes]) -> object:
        raise CommandError("ERR phalanx: DEBUG is not supported")

    def role(self, state: ClientState, arguments: list[bytes]) -> object:
        group = default_group(self.replicas)
        if group is None:
            return [b"master", 0, []]
        status = group.raw.status()
        if group.is_leader():
            replicas: list[object] = []
            for peer_id, progress in sorted(status.peers.items()):
                if peer_id == self.config.id:
                    continue
                host, port = self.replicas.resp_address(peer_id) or ("?", 0)
                replicas.append([host.encode(), str(port).encode(), str(progress.match).encode()])
            return [b"master", status.commit, replicas]
        leader = self.replicas.resp_address(group.leader)
        host, port = leader or ("?", 0)
        link_state = b"connected" if leader else b"connect"
        return [b"slave", host.encode(), port, link_state, status.applied]

    def wait(self, state: ClientState, arguments: list[bytes]) -> object:
        # Writes are acknowledged only once a quorum fsynced them: WAIT has nothing to wait for.
        # It reports how many followers hold everything this node has committed.
        if len(arguments) != 3:
            raise CommandError("ERR wrong number of arguments for 'wait' command")
        group = default_group(self.replicas)
        if group is None or not group.is_leader():
            return 0
        status = group.raw.status()
        return sum(1 for node, progress in status.peers.items()
                   if node != self.config.id and progress.match >= status.commit)

    async def failover(self, state: ClientState, arguments: list[bytes]) -> object:
        target: str | None = None
        position = 1
        while position < len(arguments):
            option = arguments[position].upper()
            if option == b"TO" and position + 2 < len(arguments):
                host, port = arguments[position + 1].decode(), arguments[position + 2].decode()
                match = next((p for p in self.replicas.cluster_map.nodes.values()
                              if p.resp == f"{host}:{port}" or p.id == host), None)
                if match is None:
                    raise CommandError("ERR FAILOVER target HOST and PORT is not a replica.")
                target = match.id
                position += 3
            elif option == b"TIMEOUT" and position + 1 < len(arguments):
                position += 2
            elif option in (b"FORCE", b"ABORT"):
                position += 1
            else:
                raise CommandError("ERR syntax error")
        await self.replicas.transfer_leadership(target)
        return SimpleString("OK")

    def info(self, state: ClientState, arguments: list[bytes]) -> object:
        sections = [a.decode(errors="replace").lower() for a in arguments[1:]] or ["default"]
        everything = any(s in ("all", "everything", "default") for s in sections)
        replicas = self.replicas
        cmap = replicas.cluster_map
        group = default_group(replicas)
        if group is None:
            group = replicas.meta
        status = group.raw.status()
        lines: list[str] = []
        if everything or "server" in sections:
            uptime = int(time.monotonic() - replicas.started)
            uname = platform.uname()
            lines += ["# Server", f"redis_version:{REDIS_VERSION}",
                      f"phalanx_version:{__version__}",
                      f"phalanx_compiled:{'yes' if compiled_status().compiled else 'no'}",
                      f"redis_mode:{redis_mode(replicas)}",
                      f"os:{uname.system} {uname.release} {uname.machine}",
                      f"arch_bits:{struct.calcsize('P') * 8}",
                      f"process_id:{os.getpid()}",
                      f"run_id:{self.config.id}", f"tcp_port:{self.stats.port}",
                      f"server_time_usec:{time.time_ns() // 1000}",
                      f"uptime_in_seconds:{uptime}", f"uptime_in_days:{uptime // 86400}",
                      f"phalanx_node:{self.config.id}", f"phalanx_zone:{self.config.me.zone}",
                      f"phalanx_region:{self.config.me.region}", ""]
        if everything or "clients" in sections:
            lines += ["# Clients", f"connected_clients:{len(self.stats.clients)}",
                      f"maxclients:{self.intro.config.max_clients}", ""]
        if everything or "memory" in sections:
            used = used_memory()
            lines += ["# Memory", f"used_memory:{used}",
                      f"used_memory_human:{used / (1 << 20):.2f}M", f"used_memory_rss:{used}",
                      f"maxmemory:{self.intro.config.maxmemory}",
                      "maxmemory_policy:noeviction", ""]
        if everything or "persistence" in sections:
            lines += self.intro_commands.persistence_info()
        if everything or "stats" in sections:
            lines += ["# Stats", f"total_connections_received:{self.stats.total_connections}",
                      f"total_commands_processed:{self.stats.total_commands}", ""]
        if everything or "replication" in sections:
            lines += ["# Replication"]
            if group.is_leader():
                followers = [n for n in sorted(status.peers) if n != self.config.id]
                lines += ["role:master", f"connected_slaves:{len(followers)}"]
                for position, node_id in enumerate(followers):
                    host, port = replicas.resp_address(node_id) or ("?", 0)
                    progress = status.peers[node_id]
                    lag = status.last_index - progress.match
                    lines.append(f"slave{position}:ip={host},port={port},state=online,"
                                 f"offset={progress.match},lag={lag}")
            else:
                leader = replicas.resp_address(group.leader)
                host, port_text = (leader[0], str(leader[1])) if leader else ("", "")
                lines += ["role:slave", f"master_host:{host}", f"master_port:{port_text}",
                          f"master_link_status:{'up' if leader else 'down'}",
                          f"slave_repl_offset:{status.applied}",
                          "slave_read_only:1"]
            lines += [f"raft_term:{status.term}", f"raft_commit_index:{status.commit}",
                      f"raft_applied_index:{status.applied}",
                      f"raft_leader:{group.leader or ''}", ""]
        if everything or "cluster" in sections:
            # Per-shard view: who leads, and how stale a READONLY read of this replica may be.
            lines += ["# Cluster", f"cluster_enabled:{int(redis_mode(replicas) == 'cluster')}",
                      f"phalanx_map_version:{cmap.version}"]
            for shard in sorted(cmap.shards.values(), key=lambda s: s.id):
                local = replicas.local_group(shard.id)
                shard_leader = replicas.shard_leader(shard) or "none"
                line = f"shard{shard.id}:leader={shard_leader},replicas={'/'.join(shard.replicas)}"
                if local is not None:
                    local_status = local.raw.status()
                    stale = local.staleness_ms()
                    line += (f",local_role={local_status.role.value},"
                             f"applied={local_status.applied},staleness_ms={stale},"
                             f"leaderless_s={local.leaderless_for():.1f}")
                lines.append(line)
            lines.append("")
        if everything or "keyspace" in sections:
            lines += ["# Keyspace"]
            # The keys of this node's replicas (each shard once; a node may not hold them all).
            keys = expires = 0
            for local in replicas.data_groups().values():
                keys += local.machine.key_count
                machine = local.shard
                expires += machine.kv.expire_count if machine is not None else 0
            if keys:
                lines.append(f"db0:keys={keys},expires={expires},avg_ttl=0")
            lines.append("")
        return "\r\n".join(lines).encode()

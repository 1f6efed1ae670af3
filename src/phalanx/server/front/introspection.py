"""Run-time settings and introspection of one node: CONFIG SET's live parameters, SLOWLOG,
LATENCY, MEMORY, MONITOR, LASTSAVE/BGSAVE, LOLWUT, MODULE, REPLICAOF.

What lives here: `RuntimeConfig` (the parameters CONFIG SET changes while the node runs),
`SlowLog`, `LatencyMonitor`, `Introspection` (the node's instance of each, the per-command
hook the listener calls, the MONITOR feed) and `IntrospectionCommands` (the handlers).

Rules of this file:
- Everything here is per NODE, as with Redis Cluster (every node has its own CONFIG, SLOWLOG,
  LATENCY and MONITOR): nothing is replicated. CONFIG SET on one node changes that node.
- A command's duration (SLOWLOG, LATENCY's "command"/"fast-command" events) is measured from
  the moment the node starts it to the moment its reply is ready: for a write that includes
  its commit (replication and fsync on a quorum), which is what a client waits for. Redis
  measures CPU time only. (https://redis.io/commands/slowlog-get/, /latency-latest/)
- The per-command hook costs two clock reads and, for a command answered later, one done
  callback, and nothing more while SLOWLOG and LATENCY are off (`slowlog-log-slower-than` < 0,
  `latency-monitor-threshold` 0).
- Secrets never reach SLOWLOG or MONITOR: AUTH's and HELLO's arguments, ACL SETUSER's rules and
  CONFIG SET requirepass's value are replaced by "(redacted)", as Redis does.
- MONITOR (https://redis.io/commands/monitor/): every command this node starts, from any
  client (a client of another node that forwards here included), once admitted, as Redis's
  line `+<unix time> [0 <client address>] "name" "arg" ...`; admin commands (CONFIG, SLOWLOG,
  DEBUG, ...) are not shown, as in Redis. A monitor sees what THIS node runs, not the cluster.
- maxmemory: phalanx never evicts (an eviction would be a replicated decision; only
  `noeviction` is accepted); over the limit, commands flagged `denyoom` get Redis's -OOM line.
  The memory compared is this process's resident set (Redis compares its allocator's bytes).
- MEMORY USAGE is a keyed read (`kv/commands/keys.py`, the state machine's estimate); the
  other MEMORY subcommands describe this process.
See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phalanx.errors import CommandError, PhalanxError
from phalanx.kv import command_spec
from phalanx.resp import SimpleString

if TYPE_CHECKING:
    from phalanx.server.front.replicas import ReplicaRegistry
    from phalanx.server.front.session import ClientState

#: Redis's limits on a SLOWLOG entry's arguments (slowlog.h: SLOWLOG_ENTRY_MAX_ARGC/STRING).
SLOWLOG_MAX_ARGS = 32
SLOWLOG_MAX_ARG_BYTES = 128
#: LATENCY keeps this many samples per event (latency.h: LATENCY_TS_LEN).
LATENCY_SAMPLES = 160
_INT_MAX = 2**31 - 1
_LONG_MAX = 2**63 - 1
_REDACTED = b"(redacted)"
#: Commands never shown by MONITOR (Redis: admin commands and those flagged no-monitor).
NOT_MONITORED = frozenset({
    b"CONFIG", b"SLOWLOG", b"LATENCY", b"DEBUG", b"MONITOR", b"FAILOVER", b"BGSAVE",
    b"REPLICAOF", b"SLAVEOF", b"MODULE", b"LASTSAVE", b"PHALANX.META", b"PHALANX.JOIN",
    b"PHALANX.PUBLISH", b"PHALANX.SNAPSHOT",
})


def _memory_value(raw: bytes) -> int | None:
    """Redis's memory units: 1k = 1000, 1kb = 1024, ... (config.c memtoull); None if bad."""
    text = raw.strip().lower()
    units = {b"b": 1, b"k": 1000, b"kb": 1024, b"m": 1000**2, b"mb": 1024**2,
             b"g": 1000**3, b"gb": 1024**3}
    digits = text.rstrip(b"bkmg")
    unit = text[len(digits):] or b"b"
    if unit not in units or not digits.isdigit():
        return None
    return int(digits) * units[unit]


@dataclass(frozen=True, slots=True)
class _Param:
    """A parameter CONFIG SET changes at run time: its parser (None: bad value) and range."""

    kind: str  # "int", "memory", "bool", "enum"
    low: int = 0
    high: int = _INT_MAX
    choices: tuple[str, ...] = ()


_LIVE_PARAMS: dict[bytes, _Param] = {
    b"slowlog-log-slower-than": _Param("int", -_LONG_MAX, _LONG_MAX),
    b"slowlog-max-len": _Param("int", 0, _LONG_MAX),
    b"latency-monitor-threshold": _Param("int", 0, _LONG_MAX),
    b"latency-tracking": _Param("bool"),
    b"timeout": _Param("int", 0, _INT_MAX),
    b"maxmemory": _Param("memory", 0, _LONG_MAX),
    b"maxmemory-policy": _Param("enum", choices=("noeviction",)),
    b"maxclients": _Param("int", 1, _INT_MAX),
}


class RuntimeConfig:
    """The parameters CONFIG SET changes on a running node (`_LIVE_PARAMS`), with their
    current values; every other parameter is read-only (CONFIG SET accepts its value only)."""

    def __init__(self, max_clients: int) -> None:
        self.slowlog_log_slower_than = 10_000
        self.slowlog_max_len = 128
        self.latency_monitor_threshold = 0
        self.latency_tracking = True
        self.timeout = 0
        self.maxmemory = 0
        self.max_clients = max_clients

    def values(self) -> dict[bytes, bytes]:
        return {
            b"slowlog-log-slower-than": str(self.slowlog_log_slower_than).encode(),
            b"slowlog-max-len": str(self.slowlog_max_len).encode(),
            b"latency-monitor-threshold": str(self.latency_monitor_threshold).encode(),
            b"latency-tracking": b"yes" if self.latency_tracking else b"no",
            b"timeout": str(self.timeout).encode(),
            b"maxmemory": str(self.maxmemory).encode(),
            b"maxmemory-policy": b"noeviction",
            b"maxclients": str(self.max_clients).encode(),
        }

    @staticmethod
    def is_live(name: bytes) -> bool:
        return name in _LIVE_PARAMS

    @staticmethod
    def parse(name: bytes, raw: bytes) -> object:
        """The parsed value of `raw` for live parameter `name`; CommandError with Redis 7's
        CONFIG SET line when it is not valid."""
        param = _LIVE_PARAMS[name]
        prefix = f"ERR CONFIG SET failed (possibly related to argument '{name.decode()}') - "
        if param.kind == "bool":
            if raw.lower() not in (b"yes", b"no"):
                raise CommandError(prefix + "argument must be 'yes' or 'no'")
            return raw.lower() == b"yes"
        if param.kind == "enum":
            text = raw.decode(errors="replace").lower()
            if text not in param.choices:
                raise CommandError(prefix + f"phalanx never evicts: only {param.choices[0]} "
                                   "is supported")
            return text
        value: int | None
        if param.kind == "memory":
            value = _memory_value(raw)
            if value is None:
                raise CommandError(prefix + "argument must be a memory value")
        else:
            try:
                value = int(raw)
            except ValueError:
                raise CommandError(prefix + "argument couldn't be parsed into an integer") \
                    from None
        if not param.low <= value <= param.high:
            raise CommandError(prefix + f"argument must be between {param.low} and "
                               f"{param.high} inclusive")
        return value

    def set(self, name: bytes, value: object) -> None:
        attribute = name.decode().replace("-", "_")
        if name == b"maxclients":
            attribute = "max_clients"
        if name == b"maxmemory-policy":
            return  # only "noeviction", which it is
        setattr(self, attribute, value)


def _quoted(argument: bytes) -> str:
    """An argument as Redis's sdscatrepr writes it (MONITOR): quoted, escapes for \\ and \"
    and control bytes, other non-printable bytes as \\xHH."""
    out = ['"']
    for byte in argument:
        char = chr(byte)
        if char in '\\"':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif char == "\a":
            out.append("\\a")
        elif char == "\b":
            out.append("\\b")
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    out.append('"')
    return "".join(out)


def redacted(arguments: list[bytes]) -> list[bytes]:
    """The arguments with their secrets replaced (AUTH, HELLO, ACL SETUSER, MIGRATE AUTH,
    CONFIG SET requirepass/masterauth)."""
    name = arguments[0].upper()
    if name in (b"AUTH", b"HELLO"):
        return [arguments[0]] + [_REDACTED] * (len(arguments) - 1)
    if name == b"ACL" and len(arguments) > 3 and arguments[1].upper() == b"SETUSER":
        return arguments[:3] + [_REDACTED] * (len(arguments) - 3)
    if name == b"CONFIG" and len(arguments) > 3 and arguments[1].upper() == b"SET":
        result = list(arguments)
        for position in range(2, len(result) - 1, 2):
            if result[position].lower() in (b"requirepass", b"masterauth"):
                result[position + 1] = _REDACTED
        return result
    return arguments


@dataclass(slots=True)
class SlowEntry:
    id: int
    started: int  # unix seconds
    duration_us: int
    arguments: list[bytes]
    address: str
    name: bytes


class SlowLog:
    """SLOWLOG: the newest commands slower than `slowlog-log-slower-than`, newest first
    (https://redis.io/commands/slowlog-get/)."""

    def __init__(self) -> None:
        self.entries: deque[SlowEntry] = deque()
        self.next_id = 0

    def add(self, arguments: list[bytes], duration_us: int, address: str, name: bytes,
            max_len: int) -> None:
        kept = redacted(arguments)
        if len(kept) > SLOWLOG_MAX_ARGS:
            extra = len(kept) - SLOWLOG_MAX_ARGS + 1
            kept = [*kept[:SLOWLOG_MAX_ARGS - 1], f"... ({extra} more arguments)".encode()]
        kept = [a if len(a) <= SLOWLOG_MAX_ARG_BYTES else
                a[:SLOWLOG_MAX_ARG_BYTES] + f"... ({len(a) - SLOWLOG_MAX_ARG_BYTES} more "
                f"bytes)".encode() for a in kept]
        self.entries.appendleft(SlowEntry(self.next_id, int(time.time()), duration_us, kept,
                                          address, name))
        self.next_id += 1
        self.trim(max_len)

    def trim(self, max_len: int) -> None:
        while len(self.entries) > max_len:
            self.entries.pop()


class LatencyMonitor:
    """LATENCY: per event, the latest samples (one per second, the largest) over
    `latency-monitor-threshold` ms, and the all-time maximum (https://redis.io/docs/
    reference/optimization/latency-monitor/)."""

    def __init__(self) -> None:
        #: event -> samples [(unix second, ms)], oldest first, at most LATENCY_SAMPLES.
        self.samples: dict[str, deque[tuple[int, int]]] = {}
        self.maximum: dict[str, int] = {}

    def add(self, event: str, ms: int) -> None:
        now = int(time.time())
        samples = self.samples.setdefault(event, deque(maxlen=LATENCY_SAMPLES))
        if samples and samples[-1][0] == now:
            if ms > samples[-1][1]:
                samples[-1] = (now, ms)
        else:
            samples.append((now, ms))
        self.maximum[event] = max(self.maximum.get(event, 0), ms)

    def reset(self, events: list[str]) -> int:
        chosen = events or list(self.samples)
        count = 0
        for event in chosen:
            if self.samples.pop(event, None) is not None:
                count += 1
            self.maximum.pop(event, None)
        return count


class Introspection:
    """This node's run-time settings, SLOWLOG, LATENCY samples, per-command latency
    histograms and MONITOR clients; `command_done` is the listener's per-command hook."""

    def __init__(self, max_clients: int) -> None:
        self.config = RuntimeConfig(max_clients)
        self.slowlog = SlowLog()
        self.latency = LatencyMonitor()
        #: LATENCY HISTOGRAM: command name (upper case) -> calls per bit length of their
        #: duration in microseconds (see `_histogram`).
        self.histograms: dict[bytes, list[int]] = {}
        #: MONITOR clients: client id -> a function writing a push to its connection.
        self.monitors: dict[int, Callable[[bytes], bool]] = {}
        self.timing = True
        self.update_timing()

    def update_timing(self) -> None:
        config = self.config
        self.timing = (config.slowlog_log_slower_than >= 0
                       or config.latency_monitor_threshold > 0 or config.latency_tracking)

    # -- the per-command hook ---------------------------------------------------------------
    def command_done(self, state: ClientState, name: bytes, arguments: list[bytes],
                     started_ns: int, _: object = None) -> None:
        """A command finished (its reply is ready): SLOWLOG, LATENCY, histograms."""
        duration_us = (time.perf_counter_ns() - started_ns) // 1000
        config = self.config
        threshold = config.slowlog_log_slower_than
        if 0 <= threshold <= duration_us and name not in (b"EXEC",):
            self.slowlog.add(arguments, duration_us, state.address, state.name,
                             config.slowlog_max_len)
        if config.latency_tracking:
            self._histogram(name, duration_us)
        latency_threshold = config.latency_monitor_threshold
        if latency_threshold and duration_us >= latency_threshold * 1000:
            spec = command_spec(name)
            fast = spec is not None and "fast" in spec.flags
            self.latency.add("fast-command" if fast else "command", duration_us // 1000)

    def _histogram(self, name: bytes, duration_us: int) -> None:
        """Count one call in its command's power-of-two microsecond bucket (keyed by the
        upper-case name as it arrived: no decoding on the hot path); index b counts calls
        of less than 2**b microseconds (at least 2**(b-1))."""
        buckets = self.histograms.get(name)
        if buckets is None:
            if command_spec(name) is None:
                return
            buckets = self.histograms[name] = [0] * 65
        buckets[duration_us.bit_length()] += 1

    # -- MONITOR ----------------------------------------------------------------------------
    def feed(self, state: ClientState, arguments: list[bytes]) -> None:
        """Send one started command to every MONITOR client (Redis's line format)."""
        shown = redacted(arguments)
        line = (f"+{time.time():.6f} [0 {state.address}] "
                + " ".join(_quoted(a) for a in shown) + "\r\n").encode()
        for client_id, push in list(self.monitors.items()):
            if client_id != state.id and not push(line):
                self.monitors.pop(client_id, None)

    def drop(self, client_id: int) -> None:
        self.monitors.pop(client_id, None)


class IntrospectionCommands:
    """SLOWLOG, LATENCY, MEMORY (but USAGE), MONITOR, LASTSAVE, BGSAVE, LOLWUT, MODULE,
    REPLICAOF/SLAVEOF."""

    def __init__(self, replicas: ReplicaRegistry, introspection: Introspection,
                 push_to: Callable[[int], Callable[[bytes], bool] | None],
                 used_memory: Callable[[], int], version: str) -> None:
        self.replicas = replicas
        self.intro = introspection
        self.push_to = push_to
        self.used_memory = used_memory
        self.version = version
        #: BGSAVE: snapshots running now (INFO persistence's rdb_bgsave_in_progress).
        self.saving: set[asyncio.Task[None]] = set()
        self.last_save = int(time.time())
        self.last_save_ok = True

    @staticmethod
    def _unknown(arguments: list[bytes], command: str) -> CommandError:
        return CommandError(f"ERR unknown subcommand or wrong number of arguments for "
                            f"'{arguments[1].decode(errors='replace')}'. Try {command} HELP.")

    # -- SLOWLOG ----------------------------------------------------------------------------
    def slowlog(self, state: ClientState, arguments: list[bytes]) -> object:
        """SLOWLOG GET [count] | LEN | RESET | HELP (https://redis.io/commands/slowlog-get/)."""
        if len(arguments) < 2:
            raise CommandError("ERR wrong number of arguments for 'slowlog' command")
        sub = arguments[1].upper()
        log = self.intro.slowlog
        if sub == b"GET" and len(arguments) in (2, 3):
            count = 10
            if len(arguments) == 3:
                try:
                    count = int(arguments[2])
                except ValueError:
                    raise CommandError("ERR value is not an integer or out of range") from None
                if count < -1:
                    raise CommandError("ERR count should be greater than or equal to -1")
                if count == -1:
                    count = len(log.entries)
            return [[e.id, e.started, e.duration_us, list(e.arguments), e.address.encode(),
                     e.name] for e in list(log.entries)[:count]]
        if sub == b"LEN" and len(arguments) == 2:
            return len(log.entries)
        if sub == b"RESET" and len(arguments) == 2:
            log.entries.clear()
            return SimpleString("OK")
        if sub == b"HELP" and len(arguments) == 2:
            return [SimpleString(line) for line in (
                "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET [<count>]", "    Return top <count> entries from the slowlog (default: 10,"
                " -1 mean all).", "LEN", "    Return the length of the slowlog.", "RESET",
                "    Reset the slowlog.", "HELP", "    Print this help.")]
        raise self._unknown(arguments, "SLOWLOG")

    # -- LATENCY ----------------------------------------------------------------------------
    def latency(self, state: ClientState, arguments: list[bytes]) -> object:
        """LATENCY LATEST | HISTORY event | RESET [event...] | DOCTOR | HISTOGRAM [cmd...] |
        HELP (https://redis.io/commands/latency-latest/ and its siblings)."""
        if len(arguments) < 2:
            raise CommandError("ERR wrong number of arguments for 'latency' command")
        sub = arguments[1].upper()
        monitor = self.intro.latency
        if sub == b"LATEST" and len(arguments) == 2:
            return [[event.encode(), samples[-1][0], samples[-1][1], monitor.maximum[event]]
                    for event, samples in monitor.samples.items() if samples]
        if sub == b"HISTORY" and len(arguments) == 3:
            samples = monitor.samples.get(arguments[2].decode(errors="replace"), deque())
            return [[second, ms] for second, ms in samples]
        if sub == b"RESET":
            return monitor.reset([a.decode(errors="replace") for a in arguments[2:]])
        if sub == b"DOCTOR" and len(arguments) == 2:
            return self._doctor().encode()
        if sub == b"HISTOGRAM":
            return self._histogram(arguments[2:])
        if sub == b"GRAPH" and len(arguments) == 3:
            event = arguments[2].decode(errors="replace")
            if event not in monitor.samples:
                raise CommandError(f"ERR No samples available for event '{event}'")
            return "\n".join(f"{second} {ms} ms" for second, ms in
                             monitor.samples[event]).encode() + b"\n"
        if sub == b"HELP" and len(arguments) == 2:
            return [SimpleString(line) for line in (
                "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "DOCTOR", "    Return a human readable latency analysis report.",
                "GRAPH <event>", "    Return the samples of <event> as text.",
                "HISTORY <event>", "    Return time-latency samples for the <event> class.",
                "LATEST", "    Return the latest latency samples for all events.",
                "RESET [<event> ...]", "    Reset latency data of one or more <event> classes.",
                "    (default: reset all data for all event classes)",
                "HISTOGRAM [COMMAND ...]", "    Return a cumulative distribution of latencies "
                "in the format of a histogram for the specified command names.",
                "HELP", "    Prints this help.")]
        raise self._unknown(arguments, "LATENCY")

    def _doctor(self) -> str:
        intro = self.intro
        if intro.config.latency_monitor_threshold == 0:
            return ("Dave, I have observed no latency spikes: the latency monitor is disabled "
                    "on this node (CONFIG SET latency-monitor-threshold <milliseconds> "
                    "enables it).\n")
        if not intro.latency.samples:
            return "Dave, no latency spike was observed during the lifetime of this node.\n"
        lines = ["Dave, I have observed latency spikes on this node:", ""]
        for number, (event, samples) in enumerate(intro.latency.samples.items(), 1):
            average = sum(ms for _, ms in samples) // len(samples)
            lines.append(f"{number}. {event}: {len(samples)} latency spikes (average "
                         f"{average}ms, worst all time {intro.latency.maximum[event]}ms).")
        lines += ["", "phalanx measures a command until its reply is ready: a write includes "
                  "its commit on a quorum (replication and fsync)."]
        return "\n".join(lines) + "\n"

    def _histogram(self, names: list[bytes]) -> object:
        wanted = [n.upper() for n in names] or list(self.intro.histograms)
        reply: dict[bytes, object] = {}
        for name in wanted:
            buckets = self.intro.histograms.get(name)
            if buckets is None:
                continue
            calls = sum(buckets)
            cumulative: dict[int, int] = {}
            running = 0
            for bits, count in enumerate(buckets):
                if count:
                    running += count
                    cumulative[1 << max(bits, 1)] = running
            reply[name.lower()] = {b"calls": calls, b"histogram_usec": cumulative}
        return reply

    # -- MEMORY (USAGE is a data command: kv/commands/keys.py) -----------------------------
    def memory(self, state: ClientState, arguments: list[bytes]) -> object:
        """MEMORY STATS | DOCTOR | MALLOC-STATS | PURGE | HELP of this process."""
        if len(arguments) < 2:
            raise CommandError("ERR wrong number of arguments for 'memory' command")
        sub = arguments[1].upper()
        if sub == b"STATS" and len(arguments) == 2:
            return self._stats()
        if sub == b"DOCTOR" and len(arguments) == 2:
            return (b"Hi Sam, this is the phalanx node's memory doctor. This process uses "
                    + str(self.used_memory()).encode() + b" bytes (resident set). I have no "
                    b"memory problem to report.\n")
        if sub == b"MALLOC-STATS" and len(arguments) == 2:
            return self._malloc_stats().encode()
        if sub == b"PURGE" and len(arguments) == 2:
            import gc

            gc.collect()
            return SimpleString("OK")
        if sub == b"HELP" and len(arguments) == 2:
            return [SimpleString(line) for line in (
                "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "DOCTOR", "    Return memory problems reports.",
                "MALLOC-STATS", "    Return internal statistics report from the memory "
                "allocator.", "PURGE", "    Attempt to purge dirty pages for reclamation by "
                "the allocator.", "STATS", "    Return information about the memory usage of "
                "the server.", "USAGE <key> [SAMPLES <count>]", "    Return memory in bytes "
                "used by <key> and its value. Nested values are", "    sampled up to <count> "
                "times (default: 5, 0 means sample all).", "HELP", "    Prints this help.")]
        raise self._unknown(arguments, "MEMORY")

    def _stats(self) -> dict[bytes, object]:
        used = self.used_memory()
        keys = sum(group.machine.key_count for group in self.replicas.data_groups().values())
        stats: dict[bytes, object] = {
            b"peak.allocated": used, b"total.allocated": used,
            b"startup.allocated": 0, b"replication.backlog": 0, b"clients.slaves": 0,
            b"clients.normal": 0, b"aof.buffer": 0, b"lua.caches": 0,
            b"overhead.total": 0, b"keys.count": keys,
            b"keys.bytes-per-key": used // keys if keys else 0,
            b"dataset.bytes": used, b"dataset.percentage": b"100",
            b"peak.percentage": b"100", b"fragmentation": b"1",
        }
        if keys:
            stats[b"db.0"] = {b"overhead.hashtable.main": 0, b"overhead.hashtable.expires": 0}
        return stats

    @staticmethod
    def _malloc_stats() -> str:
        """Python's allocator statistics (Redis prints jemalloc's)."""
        import sys

        lines = ["phalanx runs on CPython: its allocator statistics follow.",
                 f"python {sys.version.split()[0]} pid {os.getpid()}"]
        try:
            with open("/proc/self/status", encoding="ascii", errors="replace") as status:
                lines += [line.rstrip() for line in status if line.startswith("Vm")]
        except OSError:
            pass
        return "\n".join(lines) + "\n"

    # -- MONITOR ----------------------------------------------------------------------------
    def monitor(self, state: ClientState, arguments: list[bytes]) -> object:
        """MONITOR: this connection receives every command this node runs from now on."""
        if len(arguments) != 1:
            raise CommandError("ERR wrong number of arguments for 'monitor' command")
        push = self.push_to(state.id)
        if push is None:
            raise CommandError("ERR phalanx: this connection cannot monitor")
        self.intro.monitors[state.id] = push
        return SimpleString("OK")

    # -- persistence ------------------------------------------------------------------------
    def lastsave(self, state: ClientState, arguments: list[bytes]) -> object:
        """LASTSAVE: the unix time of this node's last completed snapshot (BGSAVE), or of its
        start (https://redis.io/commands/lastsave/)."""
        if len(arguments) != 1:
            raise CommandError("ERR wrong number of arguments for 'lastsave' command")
        return self.last_save

    def bgsave(self, state: ClientState, arguments: list[bytes]) -> object:
        """BGSAVE [SCHEDULE]: a snapshot of every replica this node holds (each written and
        its log compacted as the snapshot policy does), in the background. phalanx's data is
        durable without it (every acknowledged write is fsynced on a quorum)."""
        if len(arguments) > 2 or (len(arguments) == 2 and arguments[1].upper() != b"SCHEDULE"):
            raise CommandError("ERR syntax error")
        if self.saving:
            if len(arguments) == 2:
                return SimpleString("Background saving scheduled")
            raise CommandError("ERR Background save already in progress")
        task = asyncio.get_running_loop().create_task(self._save())
        self.saving.add(task)
        task.add_done_callback(self.saving.discard)
        return SimpleString("Background saving started")

    async def _save(self) -> None:
        ok = True
        for group in list(self.replicas.data_groups().values()):
            try:
                await group.save_snapshot()
            except PhalanxError:  # reported through INFO persistence
                ok = False
        self.last_save_ok = ok
        if ok:
            self.last_save = int(time.time())

    def persistence_info(self) -> list[str]:
        # loading:1 while a local replica replays what it had committed before the node
        # (re)started (Redis's field: 1 while it loads its dataset).
        loading = any(group.loading() for group in self.replicas.data_groups().values())
        return ["# Persistence", f"loading:{int(loading)}", f"rdb_bgsave_in_progress:{int(bool(self.saving))}",
                f"rdb_last_save_time:{self.last_save}",
                f"rdb_last_bgsave_status:{'ok' if self.last_save_ok else 'err'}",
                "aof_enabled:1", "aof_rewrite_in_progress:0", ""]

    # -- odds and ends ----------------------------------------------------------------------
    def lolwut(self, state: ClientState, arguments: list[bytes]) -> object:
        """LOLWUT [VERSION v] [...]: a small piece of art and the version."""
        art = ("  _ __ | |__   __ _| | __ _ _ __ __  __\n"
               " | '_ \\| '_ \\ / _` | |/ _` | '_ \\\\ \\/ /\n"
               " | |_) | | | | (_| | | (_| | | | |>  < \n"
               " | .__/|_| |_|\\__,_|_|\\__,_|_| |_/_/\\_\\\n"
               " |_|\n")
        return (art + f"\nphalanx, Redis ver. {self.version}\n").encode()

    def module(self, state: ClientState, arguments: list[bytes]) -> object:
        """MODULE LIST (none: phalanx loads no module); LOAD/UNLOAD are refused."""
        sub = arguments[1].upper() if len(arguments) >= 2 else b""
        if sub == b"LIST" and len(arguments) == 2:
            return []
        if sub in (b"LOAD", b"LOADEX", b"UNLOAD") and len(arguments) >= 3:
            raise CommandError("ERR phalanx loads no Redis modules")
        if sub == b"HELP" and len(arguments) == 2:
            return [SimpleString(line) for line in (
                "MODULE <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "LIST", "    Return a list of loaded modules.", "HELP", "    Prints this help.")]
        if not sub:
            raise CommandError("ERR wrong number of arguments for 'module' command")
        raise self._unknown(arguments, "MODULE")

    def replicaof(self, state: ClientState, arguments: list[bytes]) -> object:
        """REPLICAOF NO ONE: OK when this node already leads every shard it holds (Redis
        answers OK to a master too); a follower is refused with the way to move leadership
        (FAILOVER TO this node, on the leader: Raft §3.10). REPLICAOF host port is refused:
        Raft decides who replicates whom."""
        if len(arguments) != 3:
            raise CommandError(f"ERR wrong number of arguments for "
                               f"'{arguments[0].decode(errors='replace').lower()}' command")
        if arguments[1].upper() == b"NO" and arguments[2].upper() == b"ONE":
            following = sorted(shard for shard, group in self.replicas.data_groups().items()
                               if not group.is_leader())
            if following:
                raise CommandError(f"ERR phalanx: this node follows in shard(s) "
                                   f"{', '.join(map(str, following))}; run FAILOVER TO <this "
                                   f"node's host> <port> on their leader to move leadership here")
            return SimpleString("OK")
        raise CommandError("ERR phalanx: replication is Raft's: a node cannot be made the "
                           "replica of another (FAILOVER moves leadership)")

"""The RESP listener: the listening socket, and the command dispatch table.

What lives here: `RespServer` (start/stop, accept, the one table of command name -> handler,
and `start`, where every command begins), and `Handler`.

Rules of this file:
- Every command a client sends starts in `RespServer.start_command`: admission (session),
  then, in RESP2 Pub/Sub subscribed mode, the check of what `pubsub.py` allows, then, after
  MULTI, the transaction's queue (transactions.py), then the table (front-end commands), else
  the data path (keyed: `DataRouter.command`; keys of several shards or none: `FanOut`).
- Table handlers marked `awaits=False` run synchronously, in order, as they are parsed (an AUTH
  pipelined before other commands applies to them); the others run as tasks. A synchronous
  handler may return a future (its reply comes later; its effect on the session is already
  made: EXEC, WATCH).
- A command's failure becomes its error line in one place (`reply_bytes` / `encode_reply`,
  with `replies.failure_text`); an unexpected exception is logged and answered
  `-ERR phalanx internal error: ...`.
- The node is seen only through `ReplicaRegistry`; TLS contexts are built here from the config
  and passed explicitly to the peer links. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phalanx.errors import CrossSlotError, PhalanxError
from phalanx.kv import command_spec, is_known, is_write
from phalanx.kv.table import BLOCKING_COMMANDS
from phalanx.placement import command_keys, command_slot, key_slot
from phalanx.placement.shard import AA_PULL_COMMAND
from phalanx.resp import ErrorReply, RespLimits, encode
from phalanx.server.front.active_active import AA_SHARDS_COMMAND, ActiveActiveCommands
from phalanx.server.front.blocking import BlockingPops
from phalanx.server.front.blocking_streams import STREAM_READS, BlockingStreams, blocks
from phalanx.server.front.clients import ClientCommand
from phalanx.server.front.cluster_commands import ClusterCommands
from phalanx.server.front.connection import RespConnection
from phalanx.server.front.fanout import FAN_OUT_READS, FanOut
from phalanx.server.front.introspection import (
    NOT_MONITORED,
    Introspection,
    IntrospectionCommands,
)
from phalanx.server.front.pubsub import PUBLISH_COMMAND, PubSub
from phalanx.server.front.replies import error_text, failure_text, resp3_reply, to_resp
from phalanx.server.front.router import DataRouter
from phalanx.server.front.server_commands import REDIS_VERSION, ServerCommands, used_memory
from phalanx.server.front.session import (
    REPLY_ON,
    REPLY_SKIP_NEXT,
    REPLY_SKIP_THIS,
    ClientState,
    Sessions,
)
from phalanx.server.front.tracking import Tracking
from phalanx.server.front.transactions import CONTROL, Transactions, unknown_command_text
from phalanx.server.peer_link import client_tls_context, server_tls_context

if TYPE_CHECKING:
    from phalanx.server.front.replicas import ReplicaRegistry
    from phalanx.server.group import RaftGroup

logger = logging.getLogger(__name__)


def _release(started: asyncio.Future[object], _: object) -> None:
    if not started.done():
        started.set_result(None)


class _Encoded(bytes):
    """A reply already encoded (a command started after a barrier): sent as it is."""


_NOTHING = _Encoded(b"")
#: Commands a CLIENT PAUSE WRITE holds besides the data writes (Redis's "may-replicate").
_PAUSED_WRITES = frozenset({b"EVAL", b"EVALSHA", b"FCALL", b"PUBLISH", b"SPUBLISH", b"PFCOUNT",
                            b"EXEC", b"BLPOP", b"BRPOP", b"BLMOVE", b"BRPOPLPUSH", b"BLMPOP",
                            b"BZPOPMIN", b"BZPOPMAX", b"BZMPOP", b"SCRIPT"})


def _silenced(result: object) -> object:
    """A command's result whose reply is not sent (CLIENT REPLY OFF|SKIP): the command still
    runs, in order; its reply becomes no bytes."""
    if isinstance(result, asyncio.Future):
        loop = asyncio.get_running_loop()
        silent: asyncio.Future[object] = loop.create_future()

        def done(finished: asyncio.Future[object]) -> None:
            if not finished.cancelled():
                finished.exception()  # retrieved: a silenced error is not "never retrieved"
            if not silent.done():
                silent.set_result(_NOTHING)

        result.add_done_callback(done)
        return silent
    return b""


@dataclass(frozen=True, slots=True)
class Handler:
    """A front-end command: `run(session, arguments)` returns the reply value (or raises
    `CommandError`); with `awaits`, it returns an awaitable and runs as a task; with `raw`,
    it returns the reply already encoded (several frames, e.g. SUBSCRIBE's)."""

    run: Callable[[ClientState, list[bytes]], object]
    awaits: bool = False
    raw: bool = False


class RespServer:
    """Accepts Redis clients and serves them from this node's replicas."""

    #: CLIENT PAUSE: done when the pause ends (None: no pause running).
    pause: asyncio.Future[object] | None = None

    def __init__(self, replicas: ReplicaRegistry, host: str, port: int) -> None:
        self.replicas = replicas
        self.host = host
        self.port = port
        self.config = replicas.config
        self.metrics = replicas.metrics
        self.limits = RespLimits(bulk_length_bytes_max=self.config.max_bulk_bytes)
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[RespConnection] = set()
        self.tls = server_tls_context(self.config)
        #: The TLS context of this node's peer links (None: plaintext), passed to each link.
        self.client_tls = client_tls_context(self.config)
        self.sessions = Sessions(replicas)
        self.clients: dict[int, ClientState] = self.sessions.clients
        #: Each client's connection, by client id (where Pub/Sub pushes its messages).
        self.connection_of: dict[int, RespConnection] = {}
        self.pubsub = PubSub(replicas, self.connection_of.get, self.client_tls)
        self.total_commands = 0
        self.total_connections = 0
        #: CLIENT PAUSE: its end (monotonic), its timer, and whether only writes are held.
        self.pause_end = 0.0
        self.pause_timer: asyncio.TimerHandle | None = None
        self.pause_writes_only = False
        #: The task closing idle clients (CONFIG SET timeout).
        self.reaper: asyncio.Task[None] | None = None
        self.router = DataRouter(replicas, self.client_tls, self.encode_reply)
        self.sessions.release_link = self.router.links.give_back
        self.fan_out = FanOut(replicas, self.router)
        self.no_quorum_after_s = self.router.no_quorum_after_s
        #: CONFIG SET's live parameters, SLOWLOG, LATENCY, MONITOR (introspection.py).
        self.introspection = intro = Introspection(self.config.max_clients)
        self.intro_commands = intro_commands = IntrospectionCommands(
            replicas, intro, self._pusher, used_memory, REDIS_VERSION)
        server = ServerCommands(replicas, self, intro, intro_commands)
        cluster = ClusterCommands(replicas)
        sessions = self.sessions
        self.transactions = transactions = Transactions(replicas, self.router)
        pubsub = self.pubsub
        active_active = ActiveActiveCommands(replicas, self.router)
        # The command table: every command that is not a data command (`phalanx.kv`).
        self.commands: dict[bytes, Handler] = {
            # Session (session.py).
            b"AUTH": Handler(sessions.auth), b"HELLO": Handler(sessions.hello),
            b"ACL": Handler(sessions.acl), b"SELECT": Handler(sessions.select),
            b"CLIENT": Handler(ClientCommand(self.clients, self).client),
            # Server (server_commands.py).
            b"PING": Handler(server.ping), b"ECHO": Handler(server.echo),
            b"TIME": Handler(server.time_command),
            b"COMMAND": Handler(server.command), b"INFO": Handler(server.info),
            b"ROLE": Handler(server.role), b"WAIT": Handler(server.wait),
            b"CONFIG": Handler(server.config_command), b"DEBUG": Handler(server.debug),
            b"FAILOVER": Handler(server.failover, awaits=True),
            # Introspection (introspection.py).
            b"SLOWLOG": Handler(intro_commands.slowlog),
            b"LATENCY": Handler(intro_commands.latency),
            b"MEMORY": Handler(self._memory, raw=True),
            b"MONITOR": Handler(intro_commands.monitor),
            b"LASTSAVE": Handler(intro_commands.lastsave),
            b"BGSAVE": Handler(intro_commands.bgsave),
            b"LOLWUT": Handler(intro_commands.lolwut),
            b"MODULE": Handler(intro_commands.module),
            b"REPLICAOF": Handler(intro_commands.replicaof),
            b"SLAVEOF": Handler(intro_commands.replicaof),
            # Cluster (cluster_commands.py, fanout.py).
            b"CLUSTER": Handler(cluster.cluster), b"ASKING": Handler(cluster.asking),
            b"READONLY": Handler(cluster.readonly), b"READWRITE": Handler(cluster.readwrite),
            b"PHALANX.META": Handler(cluster.meta, awaits=True),
            b"PHALANX.JOIN": Handler(cluster.join, awaits=True),
            b"PHALANX.SNAPSHOT": Handler(cluster.snapshot_chunk, awaits=True),
            b"PHALANX.SHARD": Handler(self.fan_out.shard_scoped, awaits=True),
            # Active-active regions (active_active.py): what other regions' links send.
            AA_SHARDS_COMMAND: Handler(active_active.shards),
            AA_PULL_COMMAND: Handler(active_active.pull, awaits=True),
            b"PHALANX.FWD": Handler(self.router.forwarded_write),
            # Transactions (transactions.py).
            b"MULTI": Handler(transactions.multi), b"EXEC": Handler(transactions.exec),
            b"DISCARD": Handler(transactions.discard), b"WATCH": Handler(transactions.watch),
            b"UNWATCH": Handler(transactions.unwatch),
            b"PHALANX.EXEC": Handler(transactions.forwarded),
            # Pub/Sub (pubsub.py).
            b"SUBSCRIBE": Handler(pubsub.subscribe, raw=True),
            b"PSUBSCRIBE": Handler(pubsub.psubscribe, raw=True),
            b"SSUBSCRIBE": Handler(pubsub.ssubscribe, raw=True),
            b"UNSUBSCRIBE": Handler(pubsub.unsubscribe, raw=True),
            b"PUNSUBSCRIBE": Handler(pubsub.punsubscribe, raw=True),
            b"SUNSUBSCRIBE": Handler(pubsub.sunsubscribe, raw=True),
            b"PUBLISH": Handler(pubsub.publish), b"SPUBLISH": Handler(pubsub.spublish),
            b"PUBSUB": Handler(pubsub.pubsub), PUBLISH_COMMAND: Handler(pubsub.peer_publish),
            b"RESET": Handler(self._reset),
        }
        transactions.commands = self.commands
        # The blocking pops (blocking.py): BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOP*.
        self.blocking = BlockingPops(replicas, self.router, self.clients)
        # XREAD / XREADGROUP with BLOCK (blocking_streams.py), started by _data_command.
        self.blocking_streams = BlockingStreams(replicas, self.router, self.clients,
                                                self.blocking)
        self.blocking.hook = self._keys_written
        #: CLIENT TRACKING (tracking.py): the keys this node's tracking clients read, and the
        #: local replica whose watched keys count each.
        self.tracking = Tracking(self.clients, self._pusher, self._subscribed,
                                 self._watch_key)
        self.tracked_in: dict[bytes, RaftGroup] = {}
        for blocking_name in BLOCKING_COMMANDS:
            self.commands[blocking_name] = Handler(self.blocking.run, awaits=True)

    async def start(self) -> None:
        self.reaper = asyncio.get_running_loop().create_task(self._close_idle_clients())
        self.server = await asyncio.get_running_loop().create_server(
            lambda: RespConnection(self), self.host, self.port, reuse_address=True,
            ssl=self.tls, ssl_handshake_timeout=self.config.request_timeout_ms / 1000
            if self.tls is not None else None,
        )

    async def stop(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
        if self.server is not None:
            self.server.close()
            self.pubsub.close()
            for state in self.clients.values():
                for link in state.links.values():
                    link.close()
            self.router.links.close()
            for connection in list(self.connections):
                if connection.transport is not None:
                    connection.transport.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _close_idle_clients(self) -> None:
        """CONFIG SET timeout N: close a client idle for N seconds or more, checked every
        second (Redis's clientsCron). Never a subscriber, a monitor, a client waiting for a
        reply (a blocking pop, a write in flight) or another node's forwarding link."""
        while True:
            await asyncio.sleep(1.0)
            timeout = self.introspection.config.timeout
            if not timeout:
                continue
            oldest = time.perf_counter_ns() - timeout * 1_000_000_000
            for state in list(self.clients.values()):
                if state.last_active > oldest or state.forwarded \
                        or state.id in self.pubsub.subscribers \
                        or state.id in self.introspection.monitors:
                    continue
                connection = self.connection_of.get(state.id)
                if connection is None or connection.queue or connection.held is not None:
                    continue
                logger.debug("closing client %s: idle for %s s or more", state.address,
                             timeout)
                self.kill_client(state.id, False)

    # -- connections (ConnectionOwner) -----------------------------------------------------
    def open_client(self, connection: RespConnection, address: str) -> ClientState | None:
        if len(self.clients) >= self.introspection.config.max_clients:
            assert connection.transport is not None
            connection.transport.write(b"-ERR max number of clients reached\r\n")
            connection.transport.close()
            return None
        state = self.sessions.open(address)
        local = connection.transport.get_extra_info("sockname") if connection.transport else None
        if local:
            state.local_address = f"{local[0]}:{local[1]}"
        self.connections.add(connection)
        self.connection_of[state.id] = connection
        self.total_connections += 1
        self.metrics.connection_opened()
        return state

    def close_client(self, connection: RespConnection, state: ClientState | None) -> None:
        self.connections.discard(connection)
        if state is not None:
            self.connection_of.pop(state.id, None)
            self.pubsub.drop(state.id)
            self.introspection.drop(state.id)
            if self.tracking.states:
                self.tracking.stop(state.id)
        if state is not None and self.sessions.close(state):
            self.metrics.connection_closed()

    def protocol_error(self) -> None:
        self.metrics.resp_error("protocol")

    def kill_client(self, client_id: int, after_reply: bool) -> bool:
        """Close this node's connection of client `client_id` (CLIENT KILL): at once, or after
        its pending replies when it is the killer's own connection. False if not found."""
        connection = self.connection_of.get(client_id)
        if connection is None:
            return False
        connection.closing = True
        if not after_reply and connection.transport is not None:
            connection.transport.close()
        return True

    # -- CLIENT PAUSE / UNBLOCK (ClientControl, clients.py) -----------------------------------
    def pause_clients(self, milliseconds: int, writes_only: bool) -> None:
        """Hold this node's clients' commands (all, or writes) for `milliseconds`; a pause
        already running is extended, and ALL wins over WRITE, as in Redis."""
        loop = asyncio.get_running_loop()
        end = time.monotonic() + milliseconds / 1000
        if self.pause is None or self.pause.done():
            self.pause = loop.create_future()
            self.pause_writes_only = writes_only
            self.pause_end = end
        else:
            self.pause_writes_only = self.pause_writes_only and writes_only
            self.pause_end = max(self.pause_end, end)
        if self.pause_timer is not None:
            self.pause_timer.cancel()
        delay = max(0.0, self.pause_end - time.monotonic())
        self.pause_timer = loop.call_later(delay, self.unpause_clients)

    def unpause_clients(self) -> None:
        pause, self.pause = self.pause, None
        if self.pause_timer is not None:
            self.pause_timer.cancel()
            self.pause_timer = None
        if pause is not None and not pause.done():
            pause.set_result(None)

    def _held_by_pause(self, name: bytes) -> bool:
        """Does the running CLIENT PAUSE hold this command? Never CLIENT (UNPAUSE must get
        through) nor another node's internal PHALANX.* commands."""
        if name == b"CLIENT" or name.startswith(b"PHALANX."):
            return False
        if not self.pause_writes_only:
            return True
        return (is_known(name) and is_write(name)) or name in _PAUSED_WRITES

    def unblock_client(self, client_id: int, error: bool) -> bool:
        return (self.blocking.unblock(client_id, error)
                or self.blocking_streams.unblock(client_id, error))

    # -- commands --------------------------------------------------------------------------
    def start_command(self, state: ClientState, name: bytes, arguments: list[bytes]) -> object:
        """Start one command; returns encoded bytes (done) or a future of the reply.

        A command may hold the connection (`state.hold`: a WATCH read must be served before
        the commands after it run): the next commands then start only once it is done, one
        after the other in their order (`state.barrier` is the tail of that chain).
        """
        barrier = state.barrier
        pause = self.pause
        if pause is not None and not pause.done() and self._held_by_pause(name) and (
                barrier is None or barrier.done()):
            barrier = state.barrier = pause  # it starts when the pause ends, in its order
        if barrier is not None:
            if not barrier.done():
                loop = asyncio.get_running_loop()
                started: asyncio.Future[object] = loop.create_future()
                state.barrier = started
                return loop.create_task(self._start_after(barrier, started, state, name,
                                                          arguments))
            state.barrier = None
        result = self._start(state, name, arguments)
        if state.hold is not None:
            state.barrier, state.hold = state.hold, None
        return result

    async def _start_after(self, barrier: asyncio.Future[object],
                           started: asyncio.Future[object], state: ClientState, name: bytes,
                           arguments: list[bytes]) -> object:
        """Start a command once `barrier` is done; `started` then lets the next one start
        (once what this command holds is done, too)."""
        await asyncio.wait({barrier})
        try:
            result = self._start(state, name, arguments)
        finally:
            hold, state.hold = state.hold, None
            if hold is not None and not hold.done():
                hold.add_done_callback(functools.partial(_release, started))
            else:
                started.set_result(None)
        if isinstance(result, bytes):
            return _Encoded(result)
        if isinstance(result, asyncio.Future):
            return await result
        return result

    def _start(self, state: ClientState, name: bytes, arguments: list[bytes]) -> object:
        """Start one command in its turn: counters, the per-command hook (SLOWLOG, LATENCY:
        introspection.py) and CLIENT REPLY's silencing around `_dispatch`."""
        started = time.perf_counter_ns()
        self.total_commands += 1
        state.commands += 1
        state.last_command = name
        state.last_active = started
        mode = state.reply_mode
        if mode == REPLY_SKIP_NEXT:
            state.reply_mode = REPLY_SKIP_THIS
        result = self._dispatch(state, name, arguments)
        intro = self.introspection
        if intro.timing:
            if isinstance(result, asyncio.Future):
                result.add_done_callback(functools.partial(
                    intro.command_done, state, name, arguments, started))
            else:
                intro.command_done(state, name, arguments, started)
        mode = state.reply_mode
        if mode:  # CLIENT REPLY OFF / SKIP (clients.py): the reply is not sent
            if mode == REPLY_SKIP_THIS:
                state.reply_mode = REPLY_ON
            result = _silenced(result)
        return result

    def _dispatch(self, state: ClientState, name: bytes, arguments: list[bytes]) -> object:
        self.metrics.command(name.decode(errors="replace"))
        handler = self.commands.get(name)
        refused = self.sessions.admit(state, name, handler is None, arguments)
        if refused is not None:
            if state.multi is not None:
                state.multi_failed = True  # a refusal after MULTI marks the transaction
            return refused if isinstance(refused, bytes) else self.encode_reply(state, refused)
        monitors = self.introspection.monitors
        if monitors and name not in NOT_MONITORED:
            # A write another node forwarded (PHALANX.FWD id seq first sig command...) shows
            # as its command, as before it carried a session.
            self.introspection.feed(state, arguments[5:] if name == b"PHALANX.FWD"
                                    and len(arguments) > 5 else arguments)
        if self.tracking.states and state.id in self.tracking.states and handler is None \
                and is_known(name) and not is_write(name):
            self.tracking.read(state, command_keys(name, arguments[1:]))
        if state.protocol == 2 and self.pubsub.subscribers and (handler is not None
                                                                 or is_known(name)):
            answer = self.pubsub.subscribed_mode_refusal(state, name, arguments)
            if answer is not None:
                return answer
        if state.multi is not None and name not in CONTROL:
            return self.transactions.queue(state, name, arguments, handler)
        if handler is not None:
            if handler.raw:
                try:
                    return handler.run(state, arguments)
                except PhalanxError as error:
                    return self.encode_reply(state, ErrorReply(error_text(error)))
            if handler.awaits:
                return asyncio.get_running_loop().create_task(
                    handler.run(state, arguments))  # type: ignore[arg-type]
            try:
                reply = handler.run(state, arguments)
            except PhalanxError as error:
                return self.encode_reply(state, ErrorReply(error_text(error)))
            if isinstance(reply, asyncio.Future):
                return reply
            return self.encode_reply(state, reply, name, arguments)
        return self._data_command(state, name, arguments)

    def _data_command(self, state: ClientState, name: bytes, arguments: list[bytes]) -> object:
        """A data command (`phalanx.kv`): to the router (its keys in one shard) or the
        fan-out (keys of several shards, or keyless)."""
        if not is_known(name):
            return encode(ErrorReply(unknown_command_text(arguments)), state.protocol)
        if name in STREAM_READS and blocks(name, arguments):
            try:
                started = self.blocking_streams.start(state, name, arguments)
            except PhalanxError as error:
                return self.encode_reply(state, ErrorReply(error_text(error)))
            if isinstance(started, ErrorReply):
                return self.encode_reply(state, started)
            if started is not None:
                return started
        args = tuple(arguments[1:])
        write = is_write(name)
        if write:
            if self.introspection.config.maxmemory:
                over = self._over_maxmemory(name)
                if over is not None:
                    return encode(over, state.protocol)
            too_big = next((a for a in args if len(a) > self.config.max_value_bytes), None)
            if too_big is not None:
                return encode(ErrorReply(
                    f"ERR value of {len(too_big)} bytes exceeds max_value_bytes "
                    f"({self.config.max_value_bytes})"), state.protocol)
        # Routing: the slot of the command's keys picks the shard (Redis Cluster's rule).
        try:
            slot = command_slot(name, args)
        except CrossSlotError as error:
            # Redis refuses keys of different slots; phalanx only refuses keys of different
            # shards (one shard applies a multi-key command atomically, whatever the slots).
            slot = self.router.one_shard_slot(name, args)
            if slot is None:
                if name.upper() in FAN_OUT_READS and not write:
                    return asyncio.get_running_loop().create_task(
                        self.fan_out.multi_shard_read(state, name.upper(), args,
                                                      state.last_write))
                return encode(ErrorReply(str(error)), state.protocol)
        if slot is None:
            return asyncio.get_running_loop().create_task(
                self.fan_out.keyless(state, name, arguments, write))
        return self.router.command(state, name, arguments, slot, write)

    def _reset(self, state: ClientState, arguments: list[bytes]) -> object:
        """RESET: Pub/Sub's part (pubsub.py), then MONITOR, CLIENT TRACKING and CLIENT REPLY
        off, as Redis's RESET does (https://redis.io/commands/reset/)."""
        reply = self.pubsub.reset(state, arguments)
        self.introspection.drop(state.id)
        if state.id in self.tracking.states:
            self.tracking.stop(state.id)
        state.reply_mode = REPLY_ON
        return reply

    def _over_maxmemory(self, name: bytes) -> ErrorReply | None:
        """Redis's -OOM for a `denyoom` command while this process uses more than maxmemory
        (phalanx never evicts: introspection.py)."""
        spec = command_spec(name)
        if spec is None or "denyoom" not in spec.flags:
            return None
        if used_memory() <= self.introspection.config.maxmemory:
            return None
        return ErrorReply("OOM command not allowed when used memory > 'maxmemory'.")

    def _memory(self, state: ClientState, arguments: list[bytes]) -> object:
        """MEMORY: USAGE reads a key (a data command, kv/commands/keys.py); the others
        describe this process (introspection.py)."""
        if len(arguments) >= 3 and arguments[1].upper() == b"USAGE":
            return self._data_command(state, b"MEMORY", arguments)
        try:
            reply = self.intro_commands.memory(state, arguments)
        except PhalanxError as error:
            return self.encode_reply(state, ErrorReply(error_text(error)))
        return self.encode_reply(state, reply, b"MEMORY", arguments)

    # -- the apply hook and CLIENT TRACKING (tracking.py) ------------------------------------
    def _keys_written(self, group_id: int, keys: list[bytes]) -> None:
        """`RaftGroup.on_watched_write`: a local replica applied writes of watched keys."""
        self.blocking.written(group_id, keys)
        if self.tracking.table:
            self.tracking.written(keys)

    def _watch_key(self, key: bytes, delta: int) -> bool:
        """Count a tracked key (+1 / -1) in the watched keys of the local replica of its
        shard; False (+1) when this node holds none."""
        if delta < 0:
            group = self.tracked_in.pop(key, None)
            if group is not None:
                left = group.watched_keys.get(key, 0) - 1
                if left > 0:
                    group.watched_keys[key] = left
                else:
                    group.watched_keys.pop(key, None)
            return True
        shard = self.replicas.cluster_map.shard_for_slot(key_slot(key))
        found = self.replicas.local_group(shard.id) if shard is not None else None
        if found is None:
            return False
        found.watched_keys[key] = found.watched_keys.get(key, 0) + 1
        found.on_watched_write = self._keys_written
        self.tracked_in[key] = found
        return True

    def _subscribed(self, client_id: int, channel: bytes) -> bool:
        subscriber = self.pubsub.subscribers.get(client_id)
        return subscriber is not None and channel in subscriber.channels

    def _pusher(self, client_id: int) -> Callable[[bytes], bool] | None:
        """A function writing pushes to client `client_id`'s connection (MONITOR)."""
        connection = self.connection_of.get(client_id)
        return None if connection is None else connection.push

    # -- replies ---------------------------------------------------------------------------
    def reply_bytes(self, state: ClientState, name: bytes, item: asyncio.Future[object],
                    arguments: list[bytes]) -> bytes:
        """The encoded reply of a finished command future (errors become error replies)."""
        if item.cancelled():
            return self.encode_reply(state, ErrorReply("ERR phalanx: the command was cancelled"))
        error = item.exception()
        if error is None:
            result = item.result()
            if type(result) is _Encoded:
                return bytes(result)
            return self.encode_reply(state, result, name, arguments)
        text = failure_text(error)
        if text is not None:
            return self.encode_reply(state, ErrorReply(text))
        logger.error("command %s failed", name.decode(errors="replace"),
                     exc_info=(type(error), error, error.__traceback__))
        return self.encode_reply(state, ErrorReply(
            f"ERR phalanx internal error: {type(error).__name__}: {error}"))

    def encode_reply(self, state: ClientState, reply: object, name: bytes = b"",
                     arguments: list[bytes] | None = None) -> bytes:
        """Encode a reply value for this session's protocol (error replies are counted). A
        RESP3 session gets Redis 7's RESP3 shape (`replies.resp3_reply`: maps, sets, doubles)
        of the RESP2 reply the state machine or a peer link produced."""
        resp_reply = to_resp(reply)
        if state.protocol == 3 and arguments:
            resp_reply = resp3_reply(arguments, resp_reply)
        if isinstance(resp_reply, ErrorReply):
            kind = resp_reply.text.split(" ", 1)[0]
            self.metrics.resp_error(kind)
        return encode(resp_reply, state.protocol)  # type: ignore[arg-type]

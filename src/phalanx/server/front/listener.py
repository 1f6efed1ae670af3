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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phalanx.errors import CrossSlotError, PhalanxError
from phalanx.kv import is_known, is_write
from phalanx.kv.table import BLOCKING_COMMANDS
from phalanx.placement import command_slot
from phalanx.resp import ErrorReply, RespLimits, encode
from phalanx.server.front.blocking import BlockingPops
from phalanx.server.front.clients import ClientCommand
from phalanx.server.front.cluster_commands import ClusterCommands
from phalanx.server.front.connection import RespConnection
from phalanx.server.front.fanout import FAN_OUT_READS, FanOut
from phalanx.server.front.pubsub import PUBLISH_COMMAND, PubSub
from phalanx.server.front.replies import error_text, failure_text, resp3_reply, to_resp
from phalanx.server.front.router import DataRouter
from phalanx.server.front.server_commands import ServerCommands
from phalanx.server.front.session import ClientState, Sessions
from phalanx.server.front.transactions import CONTROL, Transactions, unknown_command_text
from phalanx.server.peer_link import client_tls_context, server_tls_context

if TYPE_CHECKING:
    from phalanx.server.front.replicas import ReplicaRegistry

logger = logging.getLogger(__name__)


def _release(started: asyncio.Future[object], _: object) -> None:
    if not started.done():
        started.set_result(None)


class _Encoded(bytes):
    """A reply already encoded (a command started after a barrier): sent as it is."""


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
        self.router = DataRouter(replicas, self.client_tls, self.encode_reply)
        self.fan_out = FanOut(replicas, self.router)
        self.no_quorum_after_s = self.router.no_quorum_after_s
        server = ServerCommands(replicas, self)
        cluster = ClusterCommands(replicas)
        sessions = self.sessions
        self.transactions = transactions = Transactions(replicas, self.router)
        pubsub = self.pubsub
        # The command table: every command that is not a data command (`phalanx.kv`).
        self.commands: dict[bytes, Handler] = {
            # Session (session.py).
            b"AUTH": Handler(sessions.auth), b"HELLO": Handler(sessions.hello),
            b"ACL": Handler(sessions.acl), b"SELECT": Handler(sessions.select),
            b"CLIENT": Handler(ClientCommand(self.clients, self.kill_client).client),
            # Server (server_commands.py).
            b"PING": Handler(server.ping), b"ECHO": Handler(server.echo),
            b"TIME": Handler(server.time_command),
            b"COMMAND": Handler(server.command), b"INFO": Handler(server.info),
            b"ROLE": Handler(server.role), b"WAIT": Handler(server.wait),
            b"CONFIG": Handler(server.config_command), b"DEBUG": Handler(server.debug),
            b"FAILOVER": Handler(server.failover, awaits=True),
            # Cluster (cluster_commands.py, fanout.py).
            b"CLUSTER": Handler(cluster.cluster), b"ASKING": Handler(cluster.asking),
            b"READONLY": Handler(cluster.readonly), b"READWRITE": Handler(cluster.readwrite),
            b"PHALANX.META": Handler(cluster.meta, awaits=True),
            b"PHALANX.JOIN": Handler(cluster.join, awaits=True),
            b"PHALANX.SHARD": Handler(self.fan_out.shard_scoped, awaits=True),
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
            b"RESET": Handler(pubsub.reset),
        }
        transactions.commands = self.commands
        # The blocking pops (blocking.py): BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOP*.
        self.blocking = BlockingPops(replicas, self.router, self.clients)
        for blocking_name in BLOCKING_COMMANDS:
            self.commands[blocking_name] = Handler(self.blocking.run, awaits=True)

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(
            lambda: RespConnection(self), self.host, self.port, reuse_address=True,
            ssl=self.tls, ssl_handshake_timeout=self.config.request_timeout_ms / 1000
            if self.tls is not None else None,
        )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.pubsub.close()
            for state in self.clients.values():
                for link in state.links.values():
                    link.close()
            for connection in list(self.connections):
                if connection.transport is not None:
                    connection.transport.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    # -- connections (ConnectionOwner) -----------------------------------------------------
    def open_client(self, connection: RespConnection, address: str) -> ClientState | None:
        if len(self.clients) >= self.config.max_clients:
            assert connection.transport is not None
            connection.transport.write(b"-ERR max number of clients reached\r\n")
            connection.transport.close()
            return None
        state = self.sessions.open(address)
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

    # -- commands --------------------------------------------------------------------------
    def start_command(self, state: ClientState, name: bytes, arguments: list[bytes]) -> object:
        """Start one command; returns encoded bytes (done) or a future of the reply.

        A command may hold the connection (`state.hold`: a WATCH read must be served before
        the commands after it run): the next commands then start only once it is done, one
        after the other in their order (`state.barrier` is the tail of that chain).
        """
        barrier = state.barrier
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
        self.total_commands += 1
        state.commands += 1
        self.metrics.command(name.decode(errors="replace"))
        handler = self.commands.get(name)
        refused = self.sessions.admit(state, name, handler is None)
        if refused is not None:
            if state.multi is not None:
                state.multi_failed = True  # a refusal after MULTI marks the transaction
            return refused if isinstance(refused, bytes) else self.encode_reply(state, refused)
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
        args = tuple(arguments[1:])
        write = is_write(name)
        if write:
            too_big = next((a for a in args if len(a) > self.config.max_value_bytes), None)
            if too_big is not None:
                return encode(ErrorReply(
                    f"ERR value of {len(too_big)} bytes exceeds max_value_bytes "
                    f"({self.config.max_value_bytes})"), state.protocol)
        # Routing: the slot of the command's keys picks the shard (Redis Cluster's rule).
        loop = asyncio.get_running_loop()
        try:
            slot = command_slot(name, args)
        except CrossSlotError as error:
            # Redis refuses keys of different slots; phalanx only refuses keys of different
            # shards (one shard applies a multi-key command atomically, whatever the slots).
            slot = self.router.one_shard_slot(name, args)
            if slot is None:
                if name.upper() in FAN_OUT_READS and not write:
                    return loop.create_task(self.fan_out.multi_shard_read(
                        state, name.upper(), args, state.last_write))
                return encode(ErrorReply(str(error)), state.protocol)
        if slot is None:
            return loop.create_task(self.fan_out.keyless(state, name, arguments, write))
        return self.router.command(state, name, arguments, slot, write)

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

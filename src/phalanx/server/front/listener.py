"""The RESP listener: the listening socket, and the command dispatch table.

What lives here: `RespServer` (start/stop, accept, the one table of command name -> handler,
and `start`, where every command begins), and `Handler`.

Rules of this file:
- Every command a client sends starts in `RespServer.start_command`: admission (session),
  then the table (front-end commands), else the data path (keyed: `DataRouter.command`; keys
  of several shards or none: `FanOut`).
- Table handlers marked `awaits=False` run synchronously, in order, as they are parsed (an AUTH
  pipelined before other commands applies to them); the others run as tasks.
- A command's failure becomes its error line in one place (`reply_bytes` / `encode_reply`,
  with `replies.failure_text`); an unexpected exception is logged and answered
  `-ERR phalanx internal error: ...`.
- The node is seen only through `ReplicaRegistry`; TLS contexts are built here from the config
  and passed explicitly to the peer links. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from phalanx.server.front.cluster_commands import ClusterCommands
from phalanx.server.front.connection import RespConnection
from phalanx.server.front.fanout import FAN_OUT_READS, FanOut
from phalanx.server.front.replies import RESP3_SHAPES, error_text, failure_text, to_resp
from phalanx.server.front.router import DataRouter
from phalanx.server.front.server_commands import ServerCommands
from phalanx.server.front.session import ClientState, Sessions
from phalanx.server.peer_link import client_tls_context, server_tls_context

if TYPE_CHECKING:
    from phalanx.server.front.replicas import ReplicaRegistry

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Handler:
    """A front-end command: `run(session, arguments)` returns the reply value (or raises
    `CommandError`); with `awaits`, it returns an awaitable and runs as a task."""

    run: Callable[[ClientState, list[bytes]], object]
    awaits: bool = False


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
        self.total_commands = 0
        self.total_connections = 0
        self.router = DataRouter(replicas, self.client_tls, self.encode_reply)
        self.fan_out = FanOut(replicas, self.router)
        self.no_quorum_after_s = self.router.no_quorum_after_s
        server = ServerCommands(replicas, self)
        cluster = ClusterCommands(replicas)
        sessions = self.sessions
        # The command table: every command that is not a data command (`phalanx.kv`).
        self.commands: dict[bytes, Handler] = {
            # Session (session.py).
            b"AUTH": Handler(sessions.auth), b"HELLO": Handler(sessions.hello),
            b"ACL": Handler(sessions.acl), b"SELECT": Handler(sessions.select),
            b"CLIENT": Handler(sessions.client),
            # Server (server_commands.py).
            b"PING": Handler(server.ping), b"ECHO": Handler(server.echo),
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
        }
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
        self.total_connections += 1
        self.metrics.connection_opened()
        return state

    def close_client(self, connection: RespConnection, state: ClientState | None) -> None:
        self.connections.discard(connection)
        if state is not None and self.sessions.close(state):
            self.metrics.connection_closed()

    def protocol_error(self) -> None:
        self.metrics.resp_error("protocol")

    # -- commands --------------------------------------------------------------------------
    def start_command(self, state: ClientState, name: bytes, arguments: list[bytes]) -> object:
        """Start one command; returns encoded bytes (done) or a future of the reply."""
        self.total_commands += 1
        state.commands += 1
        self.metrics.command(name.decode(errors="replace"))
        handler = self.commands.get(name)
        refused = self.sessions.admit(state, name, handler is None)
        if refused is not None:
            return refused if isinstance(refused, bytes) else self.encode_reply(state, refused)
        if handler is not None:
            if handler.awaits:
                return asyncio.get_running_loop().create_task(
                    handler.run(state, arguments))  # type: ignore[arg-type]
            try:
                return self.encode_reply(state, handler.run(state, arguments), name)
            except PhalanxError as error:
                return self.encode_reply(state, ErrorReply(error_text(error)))
        return self._data_command(state, name, arguments)

    def _data_command(self, state: ClientState, name: bytes, arguments: list[bytes]) -> object:
        """A data command (`phalanx.kv`): to the router (its keys in one shard) or the
        fan-out (keys of several shards, or keyless)."""
        if not is_known(name):
            shown = " ".join(f"'{a.decode(errors='replace')[:128]}'" for a in arguments[1:4])
            text = (f"ERR unknown command '{arguments[0].decode(errors='replace')[:128]}', "
                    f"with args beginning with: {shown}")
            return encode(ErrorReply(text.rstrip()), state.protocol)
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
    def reply_bytes(self, state: ClientState, name: bytes, item: asyncio.Future[object]) -> bytes:
        """The encoded reply of a finished command future (errors become error replies)."""
        if item.cancelled():
            return self.encode_reply(state, ErrorReply("ERR phalanx: the command was cancelled"))
        error = item.exception()
        if error is None:
            return self.encode_reply(state, item.result(), name)
        text = failure_text(error)
        if text is not None:
            return self.encode_reply(state, ErrorReply(text))
        logger.error("command %s failed", name.decode(errors="replace"),
                     exc_info=(type(error), error, error.__traceback__))
        return self.encode_reply(state, ErrorReply(
            f"ERR phalanx internal error: {type(error).__name__}: {error}"))

    def encode_reply(self, state: ClientState, reply: object, name: bytes = b"") -> bytes:
        """Encode a reply value for this session's protocol (error replies are counted)."""
        resp_reply = to_resp(reply)
        if name in RESP3_SHAPES and isinstance(resp_reply, list):
            # RESP3 types these replies (a map, a set); under RESP2 the encoder flattens them.
            resp_reply = RESP3_SHAPES[name](resp_reply)
        if isinstance(resp_reply, ErrorReply):
            kind = resp_reply.text.split(" ", 1)[0]
            self.metrics.resp_error(kind)
        return encode(resp_reply, state.protocol)  # type: ignore[arg-type]

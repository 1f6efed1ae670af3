"""The Redis front end: RESP connections, command dispatch, forwarding to the leader.

Rules of this file:
- The codec is sans-IO (`phalanx.resp`); this file owns the sockets. A client's protocol error
  gets Redis's `-ERR Protocol error: ...` and the connection is closed (as Redis does); every
  other bad input gets an error reply and the connection stays open.
- Pipelining: every command of one read is started before any is awaited, so a pipeline of
  writes becomes one Raft batch (one fsync); replies are written in order. A read waits for the
  connection's earlier writes, so a client always reads its own writes.
- Any node accepts any command. Writes go to the leader: proposed locally on the leader, or
  forwarded over a RESP connection from a follower. A forwarded command is never forwarded again
  (no ping-pong between nodes that disagree about the leader). Linearizable reads run locally
  after a ReadIndex round (on followers too); `READONLY` connections read the local replica.
- Errors say what the client may do: `-TRYAGAIN` (certainly not applied, retry is safe),
  `-CLUSTERDOWN` (no leader within the timeout), `-ERR ... outcome unknown` (do not blindly
  retry a non-idempotent write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from phalanx import __version__
from phalanx.errors import (
    ClientProtocolError,
    NotLeader,
    OutcomeUnknown,
    PeerProtocolError,
    PhalanxError,
    ProposalDropped,
)
from phalanx.kv import Error as KVError
from phalanx.kv import is_known, is_write
from phalanx.resp import (
    NEED_DATA,
    ErrorReply,
    RespLimits,
    RespReplyParser,
    SimpleString,
    create_parser,
    encode,
    encode_command,
)
from phalanx.server.config import parse_address

if TYPE_CHECKING:
    from phalanx.server.node import Node

logger = logging.getLogger(__name__)

FORWARD_CLIENT_NAME = b"phalanx-forward"
_LEADER_WAIT_STEP_S = 0.01


class CommandError(PhalanxError):
    """A command failed in a way that becomes an error reply (text after the '-')."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _pairs_to_map(items: list[object]) -> object:
    return {items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)}


def _to_set(items: list[object]) -> object:
    return set(items)


_RESP3_SHAPES: dict[bytes, Callable[[list[object]], object]] = {
    b"HGETALL": _pairs_to_map,
    b"SMEMBERS": _to_set,
    b"CONFIG": _pairs_to_map,
}


def _error_text(error: PhalanxError) -> str:
    """The RESP error line for a product error: says whether a retry is safe."""
    if isinstance(error, OutcomeUnknown):
        return f"ERR phalanx: outcome unknown: {error}"
    if isinstance(error, (ProposalDropped, NotLeader, LeaderUnreachable)):
        return f"TRYAGAIN {error}"
    return f"ERR phalanx: {error}"


def to_resp(reply: object) -> object:
    """Convert a state-machine reply into a RESP reply value."""
    if isinstance(reply, str):
        return SimpleString(reply)
    if isinstance(reply, KVError):
        return ErrorReply(reply.message)
    if isinstance(reply, list):
        return [to_resp(item) for item in reply]
    return reply


@dataclass(slots=True)
class ClientState:
    """Per-connection state."""

    id: int
    address: str
    protocol: int = 2
    name: bytes = b""
    authenticated: bool = False
    readonly: bool = False
    forwarded: bool = False
    last_write: asyncio.Future[object] | None = None
    created: float = field(default_factory=time.monotonic)
    commands: int = 0
    forward: LeaderLink | None = None


class LeaderUnreachable(PhalanxError):
    """The leader could not be reached before the command was sent: certainly not applied."""


class LeaderLink:
    """A RESP connection from this node to the leader, used to forward one client's writes."""

    def __init__(self, leader_id: str, host: str, port: int, timeout: float,
                 password: str) -> None:
        self.leader_id = leader_id
        self.host = host
        self.port = port
        self.timeout = timeout
        self.password = password
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.parser = RespReplyParser()
        self.lock = asyncio.Lock()

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout
        )
        self.parser = RespReplyParser()
        hello = b""
        if self.password:
            hello += encode_command(b"AUTH", self.password.encode())
        hello += encode_command(b"CLIENT", b"SETNAME", FORWARD_CLIENT_NAME)
        assert self.writer is not None
        self.writer.write(hello)
        expected = 2 if self.password else 1
        for _ in range(expected):
            reply = await self._read_reply()
            if isinstance(reply, ErrorReply):
                raise PeerProtocolError(f"leader {self.leader_id} refused: {reply.text}")

    async def _read_reply(self) -> object:
        assert self.reader is not None
        while True:
            reply = self.parser.next_reply()
            if reply is not NEED_DATA:
                return reply
            data = await asyncio.wait_for(self.reader.read(65536), self.timeout)
            if not data:
                raise ConnectionResetError("leader closed the connection")
            self.parser.feed(data)

    async def call(self, arguments: list[bytes]) -> object:
        """Send one command and return its reply (raises OSError/timeouts on link failure)."""
        async with self.lock:
            if self.writer is None or self.writer.is_closing():
                try:
                    await self._connect()
                except (OSError, TimeoutError, PeerProtocolError) as error:
                    self.close()
                    raise LeaderUnreachable(f"cannot reach leader {self.leader_id}: {error}") \
                        from error
            assert self.writer is not None
            self.writer.write(encode_command(*arguments))
            return await self._read_reply()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class RespServer:
    """Accepts Redis clients and serves them from this node's Raft group(s)."""

    def __init__(self, node: Node, host: str, port: int) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.config = node.config
        self.limits = RespLimits(bulk_length_bytes_max=self.config.max_bulk_bytes)
        self.server: asyncio.base_events.Server | None = None
        self.clients: dict[int, ClientState] = {}
        self.next_client_id = 0
        self.total_commands = 0
        self.total_connections = 0
        # Connection and server commands run synchronously, in order, as they are parsed: an
        # AUTH (or HELLO, SELECT, CLIENT SETNAME) pipelined before other commands applies to them.
        self.handlers: dict[bytes, Callable[[ClientState, list[bytes]], object]] = {
            b"PING": self._ping, b"ECHO": self._echo, b"HELLO": self._hello,
            b"AUTH": self._auth, b"SELECT": self._select, b"CLIENT": self._client,
            b"COMMAND": self._command, b"INFO": self._info, b"READONLY": self._readonly,
            b"READWRITE": self._readwrite, b"ROLE": self._role, b"WAIT": self._wait,
            b"CONFIG": self._config, b"DEBUG": self._debug,
        }
        self.async_handlers: dict[
            bytes, Callable[[ClientState, list[bytes]], Awaitable[object]]
        ] = {b"FAILOVER": self._failover}

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True, limit=1 << 20
        )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for state in self.clients.values():
                if state.forward is not None:
                    state.forward.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    # -- connections -----------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        metrics = self.node.metrics
        if len(self.clients) >= self.config.max_clients:
            writer.write(b"-ERR max number of clients reached\r\n")
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            return
        self.next_client_id += 1
        peer = writer.get_extra_info("peername")
        state = ClientState(id=self.next_client_id, address=f"{peer[0]}:{peer[1]}" if peer else "?")
        state.authenticated = not self.config.requirepass
        self.clients[state.id] = state
        self.total_connections += 1
        metrics.connection_opened()
        parser = create_parser(self.limits)
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                parser.feed(data)
                started: list[tuple[bytes, object]] = []
                closing = False
                protocol_error: ClientProtocolError | None = None
                while True:
                    try:
                        arguments = parser.next_command()
                    except ClientProtocolError as error:
                        protocol_error = error
                        break
                    if arguments is NEED_DATA:
                        break
                    assert isinstance(arguments, list)
                    if not arguments:
                        continue
                    name = arguments[0].upper()
                    if name == b"QUIT":
                        started.append((name, encode(SimpleString("OK"))))
                        closing = True
                        break
                    started.append((name, self._start(state, name, arguments)))
                if started:
                    writer.write(await self._collect(state, started))
                if protocol_error is not None:
                    writer.write(b"-ERR " + str(protocol_error).encode() + b"\r\n")
                    metrics.resp_error("protocol")
                    closing = True
                await writer.drain()
                if closing:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.clients.pop(state.id, None)
            metrics.connection_closed()
            if state.forward is not None:
                state.forward.close()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _collect(self, state: ClientState, started: list[tuple[bytes, object]]) -> bytes:
        parts = []
        for name, item in started:
            if isinstance(item, bytes):
                parts.append(item)
                continue
            assert isinstance(item, asyncio.Future)
            try:
                reply = await item
            except CommandError as error:
                reply = ErrorReply(error.text)
            except PhalanxError as error:
                reply = ErrorReply(_error_text(error))
            parts.append(self._encode(state, reply, name))
        return b"".join(parts)

    def _encode(self, state: ClientState, reply: object, name: bytes = b"") -> bytes:
        resp_reply = to_resp(reply)
        if name in _RESP3_SHAPES and isinstance(resp_reply, list):
            # RESP3 types these replies (a map, a set); under RESP2 the encoder flattens them.
            resp_reply = _RESP3_SHAPES[name](resp_reply)
        if isinstance(resp_reply, ErrorReply):
            kind = resp_reply.text.split(" ", 1)[0]
            self.node.metrics.resp_error(kind)
        return encode(resp_reply, state.protocol)  # type: ignore[arg-type]

    def _start(self, state: ClientState, name: bytes, arguments: list[bytes]) -> object:
        """Start one command; returns encoded bytes (done) or a future of the reply."""
        self.total_commands += 1
        state.commands += 1
        self.node.metrics.command(name.decode(errors="replace"))
        if not state.authenticated and name not in (b"AUTH", b"HELLO"):
            return b"-NOAUTH Authentication required.\r\n"
        handler = self.handlers.get(name)
        if handler is not None:
            try:
                return self._encode(state, handler(state, arguments), name)
            except CommandError as error:
                return self._encode(state, ErrorReply(error.text))
        loop = asyncio.get_running_loop()
        async_handler = self.async_handlers.get(name)
        if async_handler is not None:
            return loop.create_task(self._guard(async_handler(state, arguments)))
        if not is_known(name):
            shown = " ".join(f"'{a.decode(errors='replace')[:128]}'" for a in arguments[1:4])
            text = (f"ERR unknown command '{arguments[0].decode(errors='replace')[:128]}', "
                    f"with args beginning with: {shown}")
            return encode(ErrorReply(text.rstrip()), state.protocol)
        args = tuple(arguments[1:])
        if is_write(name):
            too_big = next((a for a in args if len(a) > self.config.max_value_bytes), None)
            if too_big is not None:
                return encode(ErrorReply(
                    f"ERR value of {len(too_big)} bytes exceeds max_value_bytes "
                    f"({self.config.max_value_bytes})"), state.protocol)
            group = self.node.group
            if group.is_leader() and not group.stopped:
                # Fast path on the leader: propose now, no task, no timer (the group's sweeper
                # fails writes that wait too long with OutcomeUnknown).
                try:
                    proposal = group.propose_command(name, args)
                except (NotLeader, ProposalDropped):
                    pass  # leadership is moving: take the slow path, which waits and retries
                else:
                    state.last_write = proposal
                    return proposal
            future = loop.create_task(self._guard(self._write(state, name, arguments)))
            state.last_write = future
            return future
        previous = state.last_write
        return loop.create_task(self._guard(self._read(state, name, args, previous)))

    async def _guard(self, awaitable: Awaitable[object]) -> object:
        try:
            return await awaitable
        except CommandError:
            raise
        except TimeoutError as error:
            raise CommandError("ERR phalanx: timed out waiting for the cluster; the outcome "
                               "of a write is unknown") from error
        except PhalanxError as error:
            raise CommandError(_error_text(error)) from error

    def _resp_address(self, node_id: str) -> tuple[str, int] | None:
        """The RESP (host, port) of a member, or None if unknown (no leader, not a peer)."""
        peer = self.config.peer(node_id) if node_id else None
        return parse_address(peer.resp, f"peers.{node_id}.resp") if peer else None

    # -- data commands ---------------------------------------------------------------------
    async def _leader_or_wait(self, deadline: float) -> str:
        group = self.node.group
        while True:
            if group.stopped:
                raise CommandError(f"ERR phalanx: this node's replica stopped: "
                                   f"{group.fatal_error}")
            leader = group.leader
            if leader:
                return leader
            if time.monotonic() >= deadline:
                raise CommandError("CLUSTERDOWN The cluster has no leader right now")
            await asyncio.sleep(_LEADER_WAIT_STEP_S)

    async def _write(self, state: ClientState, name: bytes, arguments: list[bytes]) -> object:
        group = self.node.group
        timeout = self.config.request_timeout_ms / 1000
        deadline = time.monotonic() + timeout
        while True:
            leader = await self._leader_or_wait(deadline)
            if leader == self.config.id:
                try:
                    future = group.propose_command(name, tuple(arguments[1:]))
                except (NotLeader, ProposalDropped):
                    # Certainly not applied; wait for the new leader and try again.
                    if time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(_LEADER_WAIT_STEP_S)
                    continue
                remaining = max(0.001, deadline - time.monotonic())
                try:
                    return await asyncio.wait_for(future, remaining)
                except TimeoutError as error:
                    raise OutcomeUnknown("the write was proposed but not confirmed in time") \
                        from error
            if state.forwarded:
                raise CommandError(f"TRYAGAIN this node is not the leader (leader: {leader})")
            try:
                reply = await self._forward(state, leader, arguments, deadline)
            except LeaderUnreachable:
                # Nothing was sent: retrying is safe until the deadline.
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(_LEADER_WAIT_STEP_S * 5)
                continue
            if isinstance(reply, ErrorReply) and reply.text.startswith("TRYAGAIN"):
                # The node we asked was not (or no longer) the leader: nothing was applied.
                if time.monotonic() >= deadline:
                    return reply
                await asyncio.sleep(_LEADER_WAIT_STEP_S * 5)
                continue
            return reply

    async def _forward(self, state: ClientState, leader: str, arguments: list[bytes],
                       deadline: float) -> object:
        address = self._resp_address(leader)
        if address is None:
            raise CommandError(f"CLUSTERDOWN leader {leader} is not in this node's peer list")
        host, port = address
        link = state.forward
        if link is None or link.leader_id != leader:
            if link is not None:
                link.close()
            link = LeaderLink(leader, host, int(port), max(0.05, deadline - time.monotonic()),
                              self.config.requirepass)
            state.forward = link
        link.timeout = max(0.05, deadline - time.monotonic())
        call = asyncio.get_running_loop().create_task(link.call(arguments))
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=0.02)
                if done:
                    return call.result()
                current = self.node.group.leader
                if current and current != leader:
                    # A new leader exists (the old one is dead or paused): stop waiting for the
                    # old one. The write may still commit through the new leader's log.
                    raise OutcomeUnknown(
                        f"leadership moved from {leader} to {current} while the write was "
                        f"forwarded; it may or may not have been applied")
                if time.monotonic() >= deadline:
                    raise OutcomeUnknown(f"leader {leader} did not answer in time; the write "
                                         f"may or may not have been applied")
        except LeaderUnreachable:
            state.forward = None
            raise
        except (OSError, TimeoutError, PeerProtocolError) as error:
            link.close()
            state.forward = None
            raise OutcomeUnknown(
                f"the connection to leader {leader} failed while forwarding ({error}); the "
                f"write may or may not have been applied"
            ) from error
        except OutcomeUnknown:
            link.close()
            state.forward = None
            raise
        finally:
            if not call.done():
                call.cancel()

    async def _read(self, state: ClientState, name: bytes, args: tuple[bytes, ...],
                    previous_write: asyncio.Future[object] | None) -> object:
        if previous_write is not None and not previous_write.done():
            with contextlib.suppress(Exception):
                await previous_write
        group = self.node.group
        timeout = self.config.request_timeout_ms / 1000
        if not state.readonly:
            deadline = time.monotonic() + timeout
            while True:
                await self._leader_or_wait(deadline)
                try:
                    await group.read_barrier(max(0.001, deadline - time.monotonic()))
                    break
                except NotLeader:
                    if time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(_LEADER_WAIT_STEP_S)
        return group.machine.read(name, args, int(time.time() * 1000))

    # -- connection and server commands ----------------------------------------------------
    def _ping(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) > 2:
            raise CommandError("ERR wrong number of arguments for 'ping' command")
        return arguments[1] if len(arguments) == 2 else SimpleString("PONG")

    def _echo(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) != 2:
            raise CommandError("ERR wrong number of arguments for 'echo' command")
        return arguments[1]

    def _check_password(self, user: bytes, password: bytes) -> bool:
        required = self.config.requirepass
        if not required:
            return False
        return user in (b"default", b"") and password == required.encode()

    def _auth(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) not in (2, 3):
            raise CommandError("ERR wrong number of arguments for 'auth' command")
        if not self.config.requirepass:
            raise CommandError("ERR AUTH <password> called without any password configured "
                               "for the default user. Are you sure your configuration is correct?")
        user = arguments[1] if len(arguments) == 3 else b"default"
        if not self._check_password(user, arguments[-1]):
            raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
        state.authenticated = True
        return SimpleString("OK")

    def _hello(self, state: ClientState, arguments: list[bytes]) -> object:
        position = 1
        protocol = state.protocol
        if len(arguments) > 1:
            try:
                protocol = int(arguments[1])
            except ValueError as error:
                raise CommandError("ERR Protocol version is not an integer or out of range") \
                    from error
            if protocol not in (2, 3):
                raise CommandError("NOPROTO unsupported protocol version")
            position = 2
        while position < len(arguments):
            option = arguments[position].upper()
            if option == b"AUTH" and position + 2 < len(arguments):
                if not self._check_password(arguments[position + 1], arguments[position + 2]):
                    raise CommandError(
                        "WRONGPASS invalid username-password pair or user is disabled.")
                state.authenticated = True
                position += 3
            elif option == b"SETNAME" and position + 1 < len(arguments):
                state.name = arguments[position + 1]
                position += 2
            else:
                raise CommandError(f"ERR Syntax error in HELLO option "
                                   f"'{option.decode(errors='replace')}'")
        if not state.authenticated:
            raise CommandError("NOAUTH HELLO must be called with the client already "
                               "authenticated, otherwise the HELLO <proto> AUTH <user> <pass> "
                               "option can be used to authenticate the client and select the "
                               "RESP protocol version at the same time")
        state.protocol = protocol
        group = self.node.group
        return {
            "server": "redis", "version": "7.2.0", "proto": protocol, "id": state.id,
            "mode": "standalone", "role": "master" if group.is_leader() else "replica",
            "modules": [], "phalanx_version": __version__,
        }

    def _select(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) != 2:
            raise CommandError("ERR wrong number of arguments for 'select' command")
        if arguments[1] != b"0":
            raise CommandError("ERR DB index is out of range")
        return SimpleString("OK")

    def _client(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) < 2:
            raise CommandError("ERR wrong number of arguments for 'client' command")
        sub = arguments[1].upper()
        if sub == b"SETNAME" and len(arguments) == 3:
            if b" " in arguments[2]:
                raise CommandError("ERR Client names cannot contain spaces, newlines or special "
                                   "characters.")
            state.name = arguments[2]
            state.forwarded = arguments[2] == FORWARD_CLIENT_NAME
            return SimpleString("OK")
        if sub == b"GETNAME" and len(arguments) == 2:
            return state.name or None
        if sub == b"ID" and len(arguments) == 2:
            return state.id
        if sub == b"SETINFO" and len(arguments) == 4:
            return SimpleString("OK")
        if sub == b"INFO" and len(arguments) == 2:
            return self._client_line(state).encode() + b"\n"
        if sub == b"LIST":
            return "".join(self._client_line(c) + "\n" for c in self.clients.values()).encode()
        raise CommandError(f"ERR unknown subcommand or wrong number of arguments for "
                           f"'{arguments[1].decode(errors='replace')}'. Try CLIENT HELP.")

    def _client_line(self, state: ClientState) -> str:
        age = int(time.monotonic() - state.created)
        return (f"id={state.id} addr={state.address} name={state.name.decode(errors='replace')} "
                f"age={age} db=0 resp={state.protocol} readonly={int(state.readonly)}")

    def _command(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) >= 2 and arguments[1].upper() == b"COUNT":
            from phalanx.kv import COMMAND_NAMES

            return len(COMMAND_NAMES) + len(self.handlers)
        return []

    def _config(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) >= 3 and arguments[1].upper() == b"GET":
            values = {b"save": b"", b"appendonly": b"yes", b"maxmemory": b"0",
                      b"databases": b"1"}
            result: list[bytes] = []
            for pattern in arguments[2:]:
                for key, value in values.items():
                    if pattern in (key, b"*"):
                        result += [key, value]
            return result
        if len(arguments) >= 2 and arguments[1].upper() in (b"SET", b"RESETSTAT", b"REWRITE"):
            raise CommandError("ERR phalanx: configuration is set in the node's config file")
        raise CommandError("ERR unknown subcommand or wrong number of arguments for 'config'")

    def _debug(self, state: ClientState, arguments: list[bytes]) -> object:
        raise CommandError("ERR phalanx: DEBUG is not supported")

    def _readonly(self, state: ClientState, arguments: list[bytes]) -> object:
        state.readonly = True
        return SimpleString("OK")

    def _readwrite(self, state: ClientState, arguments: list[bytes]) -> object:
        state.readonly = False
        return SimpleString("OK")

    def _role(self, state: ClientState, arguments: list[bytes]) -> object:
        group = self.node.group
        raft = group.raw.raft
        if group.is_leader():
            replicas: list[object] = []
            for peer_id, progress in sorted(raft.progress.items()):
                if peer_id == self.config.id:
                    continue
                host, port = self._resp_address(peer_id) or ("?", 0)
                replicas.append([host.encode(), str(port).encode(), str(progress.match).encode()])
            return [b"master", raft.log.committed, replicas]
        leader = self._resp_address(group.leader)
        host, port = leader or ("?", 0)
        link_state = b"connected" if leader else b"connect"
        return [b"slave", host.encode(), port, link_state, raft.log.applied]

    def _wait(self, state: ClientState, arguments: list[bytes]) -> object:
        # Writes are acknowledged only once a quorum fsynced them: WAIT has nothing to wait for.
        # It reports how many followers hold everything this node has committed.
        if len(arguments) != 3:
            raise CommandError("ERR wrong number of arguments for 'wait' command")
        group = self.node.group
        if not group.is_leader():
            return 0
        committed = group.raw.raft.log.committed
        return sum(1 for node, progress in group.raw.raft.progress.items()
                   if node != self.config.id and progress.match >= committed)

    async def _failover(self, state: ClientState, arguments: list[bytes]) -> object:
        target: str | None = None
        position = 1
        while position < len(arguments):
            option = arguments[position].upper()
            if option == b"TO" and position + 2 < len(arguments):
                host, port = arguments[position + 1].decode(), arguments[position + 2].decode()
                match = next((p for p in self.config.peers if p.resp == f"{host}:{port}"
                              or p.id == host), None)
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
        await self.node.transfer_leadership(target)
        return SimpleString("OK")

    def _info(self, state: ClientState, arguments: list[bytes]) -> object:
        sections = [a.decode(errors="replace").lower() for a in arguments[1:]] or ["default"]
        everything = any(s in ("all", "everything", "default") for s in sections)
        group = self.node.group
        raft = group.raw.raft
        lines: list[str] = []
        if everything or "server" in sections:
            lines += ["# Server", "redis_version:7.2.0", f"phalanx_version:{__version__}",
                      "redis_mode:standalone", f"process_id:{os.getpid()}",
                      f"run_id:{self.config.id}", f"tcp_port:{self.port}",
                      f"uptime_in_seconds:{int(time.monotonic() - self.node.started)}",
                      f"phalanx_node:{self.config.id}", f"phalanx_zone:{self.config.me.zone}",
                      f"phalanx_region:{self.config.me.region}", ""]
        if everything or "clients" in sections:
            lines += ["# Clients", f"connected_clients:{len(self.clients)}", ""]
        if everything or "stats" in sections:
            lines += ["# Stats", f"total_connections_received:{self.total_connections}",
                      f"total_commands_processed:{self.total_commands}", ""]
        if everything or "replication" in sections:
            lines += ["# Replication"]
            if group.is_leader():
                followers = [n for n in sorted(raft.progress) if n != self.config.id]
                lines += ["role:master", f"connected_slaves:{len(followers)}"]
                for position, node_id in enumerate(followers):
                    host, port = self._resp_address(node_id) or ("?", 0)
                    progress = raft.progress[node_id]
                    lag = raft.log.last_index() - progress.match
                    lines.append(f"slave{position}:ip={host},port={port},state=online,"
                                 f"offset={progress.match},lag={lag}")
            else:
                leader = self._resp_address(group.leader)
                host, port_text = (leader[0], str(leader[1])) if leader else ("", "")
                lines += ["role:slave", f"master_host:{host}", f"master_port:{port_text}",
                          f"master_link_status:{'up' if leader else 'down'}",
                          f"slave_repl_offset:{raft.log.applied}",
                          "slave_read_only:1"]
            lines += [f"raft_term:{raft.term}", f"raft_commit_index:{raft.log.committed}",
                      f"raft_applied_index:{raft.log.applied}",
                      f"raft_leader:{group.leader or ''}", ""]
        if everything or "keyspace" in sections:
            lines += ["# Keyspace"]
            if group.machine.key_count:
                lines.append(f"db0:keys={group.machine.key_count},expires=0,avg_ttl=0")
            lines.append("")
        return "\r\n".join(lines).encode()


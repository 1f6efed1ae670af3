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
import functools
import hmac
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from phalanx import __version__
from phalanx.errors import (
    ClientProtocolError,
    LeaderUnreachable,
    NotLeader,
    OutcomeUnknown,
    PeerProtocolError,
    PhalanxError,
    ProposalDropped,
)
from phalanx.kv import Error as KVError
from phalanx.kv import is_known, is_write
from phalanx.placement import (
    COMMAND_SPECS,
    SLOT_COUNT,
    CrossSlotError,
    ShardInfo,
    command_info,
    command_keys,
    command_slot,
    key_slot,
)
from phalanx.placement.shard import FREEZE_COMMAND
from phalanx.resp import (
    NEED_DATA,
    ErrorReply,
    RespLimits,
    SimpleString,
    create_parser,
    encode,
)
from phalanx.server.config import parse_address
from phalanx.server.peer_link import (
    FORWARD_CLIENT_NAME,
    LeaderLink,
    client_tls_context,
    internal_signature,
    server_tls_context,
)

if TYPE_CHECKING:
    from phalanx.server.group import RaftGroup
    from phalanx.server.node import Node

logger = logging.getLogger(__name__)

#: Commands a "read" user may not run although they are not data writes (every internal
#: PHALANX.* command needs "all" as well).
_NEEDS_ALL = frozenset({b"FAILOVER", b"PHALANX.META", b"PHALANX.JOIN", b"PHALANX.SHARD"})
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


#: Read commands a proxying node splits over shards instead of answering -CROSSSLOT.
_FAN_OUT_READS = frozenset({b"MGET", b"EXISTS"})


def _copy_outcome(out: asyncio.Future[object], task: asyncio.Future[object]) -> None:
    """Resolve `out` as `task` ended (a callback chaining a task into a waiting future)."""
    if out.done():
        return
    if task.cancelled():
        out.cancel()
    elif (error := task.exception()) is not None:
        out.set_exception(error)
    else:
        out.set_result(task.result())


def _moved_slot(reply: object) -> bool:
    """True for a shard's apply-time refusal of a slot it no longer owns (see
    `phalanx.placement.shard`): certainly not applied, safe to route again."""
    return isinstance(reply, KVError) and reply.message.startswith("TRYAGAIN slot")


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
    #: The authenticated user ("default" = requirepass or no password) and its permissions.
    user: str = "default"
    permissions: str = "all"
    readonly: bool = False
    forwarded: bool = False
    last_write: asyncio.Future[object] | None = None
    created: float = field(default_factory=time.monotonic)
    commands: int = 0
    links: dict[str, LeaderLink] = field(default_factory=dict)


_OK = b"+OK\r\n"
_MAX_QUEUED_COMMANDS = 4096
"""A connection with more commands started and not yet answered stops being read until it
drains (a client pipelining faster than the cluster commits cannot grow memory unbounded)."""


class RespConnection(asyncio.Protocol):
    """One client connection: parse what arrives, start every command at once, and write the
    replies strictly in command order as they finish.

    A protocol (callbacks), not a coroutine per connection: a reply costs no task switch, and
    the connection keeps reading (pipelining) while earlier commands wait for their commit.
    Flow control: reading pauses while the kernel send buffer is full (the client does not read
    its replies) or too many commands wait; it resumes when they drain.
    """

    def __init__(self, server: RespServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.state: ClientState | None = None
        self.parser = create_parser(server.limits)
        self.queue: deque[tuple[bytes, object]] = deque()
        self.waiting_on: asyncio.Future[object] | None = None
        self.closing = False
        self.write_paused = False
        self.read_paused = False

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        server = self.server
        if len(server.clients) >= server.config.max_clients:
            transport.write(b"-ERR max number of clients reached\r\n")
            transport.close()
            self.closing = True
            return
        server.next_client_id += 1
        peer = transport.get_extra_info("peername")
        state = ClientState(id=server.next_client_id,
                            address=f"{peer[0]}:{peer[1]}" if peer else "?")
        state.authenticated = not (server.config.requirepass or server.config.users)
        self.state = state
        server.clients[state.id] = state
        server.connections.add(self)
        server.total_connections += 1
        server.node.metrics.connection_opened()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        server = self.server
        server.connections.discard(self)
        state = self.state
        if state is None:
            return
        if server.clients.pop(state.id, None) is not None:
            server.node.metrics.connection_closed()
        for link in state.links.values():
            link.close()
        # Commands still running finish on their own (a write in flight still commits); their
        # replies have nowhere to go.
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        state = self.state
        if self.closing or state is None:
            return
        server = self.server
        parser = self.parser
        parser.feed(data)
        queue = self.queue
        start = server._start
        while True:
            try:
                arguments = parser.next_command()
            except ClientProtocolError as error:
                queue.append((b"", b"-ERR " + str(error).encode() + b"\r\n"))
                server.node.metrics.resp_error("protocol")
                self.closing = True
                break
            if arguments is NEED_DATA:
                break
            assert isinstance(arguments, list)
            if not arguments:
                continue
            name = arguments[0].upper()
            if name == b"QUIT":
                queue.append((name, _OK))
                self.closing = True
                break
            queue.append((name, start(state, name, arguments)))
        self._flush()

    # -- replies -----------------------------------------------------------------------------
    def _flush(self, _: object = None) -> None:
        transport = self.transport
        state = self.state
        if transport is None or state is None or transport.is_closing():
            return
        queue = self.queue
        parts: list[bytes] = []
        while queue:
            name, item = queue[0]
            if type(item) is not bytes:
                future = cast("asyncio.Future[object]", item)
                if not future.done():
                    if self.waiting_on is not future:
                        self.waiting_on = future
                        future.add_done_callback(self._flush)
                    break
                item = self.server._reply_bytes(state, name, future)
            queue.popleft()
            parts.append(item)
        if parts:
            transport.write(parts[0] if len(parts) == 1 else b"".join(parts))
        if self.closing and not queue:
            transport.close()
            return
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        pause = self.write_paused or len(self.queue) >= _MAX_QUEUED_COMMANDS
        if pause and not self.read_paused:
            self.read_paused = True
            transport.pause_reading()
        elif not pause and self.read_paused:
            self.read_paused = False
            transport.resume_reading()


class RespServer:
    """Accepts Redis clients and serves them from this node's Raft group(s)."""

    def __init__(self, node: Node, host: str, port: int) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.config = node.config
        self.limits = RespLimits(bulk_length_bytes_max=self.config.max_bulk_bytes)
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[RespConnection] = set()
        self.tls = server_tls_context(self.config)
        self.client_tls = client_tls_context(self.config)
        self.clients: dict[int, ClientState] = {}
        self.next_client_id = 0
        self.total_commands = 0
        self.total_connections = 0
        #: A shard without a leader for this long answers -CLUSTERDOWN at once: 1.5 election
        #: timeouts (750 ms by default). The clock starts when a replica stops knowing a
        #: leader, after which an election with a quorum takes milliseconds (PreVote, then
        #: one vote round), so only a shard that cannot elect gets there.
        self.no_quorum_after_s = 1.5 * self.config.election_ticks * self.config.tick_ms / 1000
        # Connection and server commands run synchronously, in order, as they are parsed: an
        # AUTH (or HELLO, SELECT, CLIENT SETNAME) pipelined before other commands applies to them.
        self.handlers: dict[bytes, Callable[[ClientState, list[bytes]], object]] = {
            b"PING": self._ping, b"ECHO": self._echo, b"HELLO": self._hello,
            b"AUTH": self._auth, b"SELECT": self._select, b"CLIENT": self._client,
            b"COMMAND": self._command, b"INFO": self._info, b"READONLY": self._readonly,
            b"READWRITE": self._readwrite, b"ROLE": self._role, b"WAIT": self._wait,
            b"CONFIG": self._config, b"DEBUG": self._debug, b"CLUSTER": self._cluster,
            b"ASKING": self._asking, b"ACL": self._acl,
        }
        self.async_handlers: dict[
            bytes, Callable[[ClientState, list[bytes]], Awaitable[object]]
        ] = {b"FAILOVER": self._failover, b"PHALANX.META": self._meta,
             b"PHALANX.JOIN": self._join, b"PHALANX.SHARD": self._shard_scoped}

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(
            self._connection, self.host, self.port, reuse_address=True,
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

    # -- connections -----------------------------------------------------------------------
    def _connection(self) -> RespConnection:
        return RespConnection(self)

    def _reply_bytes(self, state: ClientState, name: bytes, item: asyncio.Future[object]) -> bytes:
        """The encoded reply of a finished command future (errors become error replies)."""
        if item.cancelled():
            return self._encode(state, ErrorReply("ERR phalanx: the command was cancelled"))
        error = item.exception()
        if error is None:
            return self._encode(state, item.result(), name)
        if isinstance(error, CommandError):
            return self._encode(state, ErrorReply(error.text))
        if isinstance(error, PhalanxError):
            return self._encode(state, ErrorReply(_error_text(error)))
        logger.error("command %s failed", name.decode(errors="replace"),
                     exc_info=(type(error), error, error.__traceback__))
        return self._encode(state, ErrorReply(
            f"ERR phalanx internal error: {type(error).__name__}: {error}"))

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
        if state.permissions != "all" and (
                name in _NEEDS_ALL or name.startswith(b"PHALANX.")
                or (name not in self.handlers and is_known(name) and is_write(name))):
            return self._encode(state, ErrorReply(
                f"NOPERM User {state.user} has no permissions to run the "
                f"'{name.decode(errors='replace').lower()}' command"))
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
        write = is_write(name)
        if write:
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
            slot = self._one_shard_slot(name, args)
            if slot is None:
                if name.upper() in _FAN_OUT_READS and not write:
                    previous = state.last_write
                    return loop.create_task(self._guard(self._multi_shard_read(
                        state, name.upper(), args, previous)))
                return encode(ErrorReply(str(error)), state.protocol)
        if slot is None:
            return loop.create_task(self._guard(self._keyless(state, name, arguments, write)))
        shard = self.node.cluster_map.shard_for_slot(slot)
        if shard is None:
            return encode(ErrorReply(f"CLUSTERDOWN Hash slot {slot} is not served"),
                          state.protocol)
        if self.config.redirect == "moved" and not state.forwarded:
            moved = self._moved(state, shard, slot, write)
            if moved is not None:
                return encode(moved, state.protocol)
        if write:
            group = self.node.local_group(shard.id)
            if group is not None and group.is_leader() and group.owns(slot):
                # Fast path on the leader: propose now, no task, no timer (the group's sweeper
                # fails writes that wait too long with OutcomeUnknown).
                try:
                    proposal = group.propose_command(name, args)
                except (NotLeader, ProposalDropped):
                    pass  # leadership is moving: take the slow path, which waits and retries
                else:
                    out: asyncio.Future[object] = loop.create_future()
                    proposal.add_done_callback(functools.partial(
                        self._fast_write_done, out, state, name, arguments, shard.id, slot))
                    state.last_write = out
                    return out
            future = loop.create_task(self._guard(self._write(state, name, arguments, shard.id,
                                                              slot)))
            state.last_write = future
            return future
        previous = state.last_write
        if not state.readonly and (previous is None or previous.done()):
            group = self.node.local_group(shard.id)
            if group is not None and group.shard is not None and group.owns(slot) \
                    and group.leader and not group.stopped:
                fast = self._fast_read(state, group, name, arguments, shard.id, slot)
                if fast is not None:
                    return fast
        return loop.create_task(self._guard(self._read(state, name, arguments, previous,
                                                       shard.id, slot)))

    def _fast_write_done(self, out: asyncio.Future[object], state: ClientState, name: bytes,
                         arguments: list[bytes], shard_id: int, slot: int,
                         proposal: asyncio.Future[object]) -> None:
        """The leader's fast-path proposal ended: pass its outcome on, except a proposal that
        another leader's entry replaced (§5.3: certainly not applied), which is retried on the
        general path (it waits for the new leader) instead of failing the client."""
        if out.done():
            return
        if proposal.cancelled():
            out.cancel()
            return
        error = proposal.exception()
        if isinstance(error, ProposalDropped):
            task = asyncio.get_running_loop().create_task(self._guard(self._write(
                state, name, arguments, shard_id, slot)))
            task.add_done_callback(functools.partial(_copy_outcome, out))
        elif error is not None:
            out.set_exception(error)
        else:
            out.set_result(proposal.result())

    def _fast_read(self, state: ClientState, group: RaftGroup, name: bytes,
                   arguments: list[bytes], shard_id: int, slot: int) -> object:
        """A linearizable read without a task per command: served at once under the leader's
        lease, else when the group's batched ReadIndex confirms (`read_index_future`). Returns
        encoded bytes, a future of the reply, or None (take the general path)."""
        shard_machine = group.shard
        assert shard_machine is not None
        args = tuple(arguments[1:])
        if group.lease_read_ready():
            reply = shard_machine.read(name, args, int(time.time() * 1000))
            return None if _moved_slot(reply) else self._encode(state, reply, name)
        try:
            barrier = group.read_index_future()
        except NotLeader:
            return None
        loop = asyncio.get_running_loop()
        out: asyncio.Future[object] = loop.create_future()
        started = time.perf_counter()

        def general_path() -> None:
            task = loop.create_task(self._guard(self._read(state, name, arguments, None,
                                                           shard_id, slot)))
            task.add_done_callback(functools.partial(_copy_outcome, out))

        def confirmed(barrier: asyncio.Future[int]) -> None:
            if out.done():
                return
            if barrier.cancelled() or barrier.exception() is not None:
                general_path()  # leadership moved: the general path waits and retries
                return
            if group.raw.raft.log.applied < barrier.result() or group.stopped:
                general_path()
                return
            group.metrics.observe_read_index(time.perf_counter() - started)
            try:
                reply = shard_machine.read(name, args, int(time.time() * 1000))
            except PhalanxError as error:
                out.set_exception(error)
                return
            if _moved_slot(reply):
                general_path()
            else:
                out.set_result(reply)

        barrier.add_done_callback(confirmed)
        return out

    async def _multi_shard_read(self, state: ClientState, name: bytes, args: tuple[bytes, ...],
                                previous: asyncio.Future[object] | None) -> object:
        """MGET / EXISTS over keys of several shards (proxy convenience, as Redis Cluster
        proxies do): one linearizable read per shard, replies put back in key order. Each key
        is read linearizably; the whole is not one atomic snapshot (no multi-shard transaction).
        Writes over several shards are refused with -CROSSSLOT instead."""
        cmap = self.node.cluster_map
        by_shard: dict[int, list[int]] = {}
        for position, key in enumerate(args):
            found = cmap.shard_for_slot(key_slot(key))
            by_shard.setdefault(found.id if found is not None else -1, []).append(position)

        async def one(positions: list[int]) -> object:
            keys = [args[i] for i in positions]
            return await self._read(state, name, [name, *keys], previous, 0, key_slot(keys[0]))

        shard_ids = sorted(by_shard)
        replies = await asyncio.gather(*(one(by_shard[shard]) for shard in shard_ids))
        for reply in replies:
            if isinstance(reply, (KVError, ErrorReply)):
                return reply
        if name == b"EXISTS":
            return sum(int(r) for r in replies if isinstance(r, int))
        merged: list[object] = [None] * len(args)
        for shard, reply in zip(shard_ids, replies, strict=True):
            if isinstance(reply, list):
                for position, value in zip(by_shard[shard], reply, strict=True):
                    merged[position] = value
        return merged

    def _one_shard_slot(self, name: bytes, args: tuple[bytes, ...]) -> int | None:
        """The slot of the first key when every key lives in the same shard, else None."""
        cmap = self.node.cluster_map
        keys = command_keys(name, args)
        shards = {getattr(cmap.shard_for_slot(key_slot(key)), "id", None) for key in keys}
        return key_slot(keys[0]) if keys and len(shards) == 1 else None

    def _moved(self, state: ClientState, shard: ShardInfo, slot: int,
               write: bool) -> ErrorReply | None:
        """In `moved` mode: the -MOVED redirection for a key this node should not serve."""
        leader = self.node.shard_leader(shard)
        if leader == self.config.id or not leader:
            return None
        if not write and state.readonly and self.node.local_group(shard.id) is not None:
            return None  # a READONLY client reads this replica (Redis Cluster's rule)
        address = self.node.resp_address(leader)
        if address is None:
            return None
        return ErrorReply(f"MOVED {slot} {address[0]}:{address[1]}")

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
        """The RESP (host, port) of a member, or None if unknown (no leader, not a node)."""
        return self.node.resp_address(node_id)

    # -- data commands ---------------------------------------------------------------------
    async def _leader_or_wait(self, group: RaftGroup, deadline: float) -> str:
        """The group's leader, waiting through an election; a shard whose quorum is gone
        fails fast with -CLUSTERDOWN (graceful degradation: other shards are unaffected)."""
        while True:
            if group.stopped:
                raise CommandError(f"ERR phalanx: this node's replica of shard "
                                   f"{group.group_id} stopped: {group.fatal_error}")
            leader = group.leader
            if leader:
                return leader
            now = time.monotonic()
            if now >= deadline or group.leaderless_for() > self.no_quorum_after_s:
                raise CommandError(f"CLUSTERDOWN The shard for this key has no quorum "
                                   f"(shard {group.group_id}: no leader for "
                                   f"{group.leaderless_for():.1f} s)")
            await asyncio.sleep(_LEADER_WAIT_STEP_S)

    async def _route(self, shard_id: int, slot: int | None,
                     deadline: float) -> tuple[int, RaftGroup | None]:
        """(shard id, local replica or None) for a slot, from the newest map. While the local
        replica no longer owns the slot (a split or merge the map has not caught up with), wait
        and look again, until the deadline (-TRYAGAIN: nothing was done)."""
        while True:
            if slot is not None:
                current = self.node.cluster_map.shard_for_slot(slot)
                if current is not None:
                    shard_id = current.id
            group = self.node.local_group(shard_id)
            if group is None or slot is None or group.owns(slot):
                return shard_id, group
            if time.monotonic() >= deadline:
                raise CommandError(f"TRYAGAIN slot {slot} is moving between shards")
            await asyncio.sleep(_LEADER_WAIT_STEP_S)

    async def _write(self, state: ClientState, name: bytes, arguments: list[bytes],
                     shard_id: int, slot: int | None = None) -> object:
        timeout = self.config.request_timeout_ms / 1000
        deadline = time.monotonic() + timeout
        while True:
            shard_id, group = await self._route(shard_id, slot, deadline)
            if group is None:
                return await self._remote(state, shard_id, arguments, deadline)
            leader = await self._leader_or_wait(group, deadline)
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
                    reply = await asyncio.wait_for(future, remaining)
                except TimeoutError as error:
                    raise OutcomeUnknown("the write was proposed but not confirmed in time") \
                        from error
                except ProposalDropped:
                    # Another leader's entry took its index (§5.3): certainly not applied.
                    if time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(_LEADER_WAIT_STEP_S)
                    continue
                if _moved_slot(reply) and time.monotonic() < deadline:
                    # Refused at apply (the slot moved by a split): certainly not applied.
                    await asyncio.sleep(_LEADER_WAIT_STEP_S)
                    continue
                return reply
            if state.forwarded:
                raise CommandError(f"TRYAGAIN this node is not the leader of shard {shard_id} "
                                   f"(leader: {leader})")
            try:
                reply = await self._forward(state, leader, arguments, deadline, group)
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

    async def _remote(self, state: ClientState, shard_id: int, arguments: list[bytes],
                      deadline: float) -> object:
        """Serve a command for a shard this node holds no replica of: forward it to the
        shard's leader (the map's hint), else to another replica, which never forwards again."""
        if state.forwarded:
            raise CommandError(f"TRYAGAIN this node holds no replica of shard {shard_id}")
        while True:
            shard = self.node.cluster_map.shards.get(shard_id)
            if shard is None:
                raise CommandError(f"CLUSTERDOWN shard {shard_id} no longer exists; retry")
            candidates = [shard.leader] if shard.leader else []
            candidates += [n for n in (*shard.voters, *shard.replicas) if n not in candidates]
            if arguments[0].upper() != b"PHALANX.SHARD" and \
                    not command_keys(arguments[0], tuple(arguments[1:])):
                # A keyless command's share of a fan-out: this shard only, over there too.
                arguments = [b"PHALANX.SHARD", str(shard_id).encode(), *arguments]
            reply: object = None
            for target in candidates:
                if target == self.config.id:
                    continue
                try:
                    reply = await self._forward(state, target, arguments, deadline, None)
                except LeaderUnreachable:
                    continue
                if isinstance(reply, ErrorReply) and reply.text.startswith("TRYAGAIN"):
                    continue
                return reply
            if time.monotonic() >= deadline:
                if isinstance(reply, ErrorReply):
                    return reply
                raise CommandError(f"CLUSTERDOWN no replica of shard {shard_id} is reachable")
            await asyncio.sleep(_LEADER_WAIT_STEP_S * 5)

    async def _forward(self, state: ClientState, leader: str, arguments: list[bytes],
                       deadline: float, group: RaftGroup | None) -> object:
        address = self._resp_address(leader)
        if address is None:
            raise CommandError(f"CLUSTERDOWN node {leader} is not in this node's cluster map")
        host, port = address
        link = state.links.get(leader)
        if link is None:
            link = LeaderLink(leader, host, int(port), max(0.05, deadline - time.monotonic()),
                              self.config.requirepass, self.client_tls)
            state.links[leader] = link
        link.timeout = max(0.05, deadline - time.monotonic())
        call = asyncio.get_running_loop().create_task(link.call(arguments))
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=0.02)
                if done:
                    return call.result()
                current = group.leader if group is not None else ""
                if current and current != leader:
                    # A new leader exists (the old one is dead or paused): stop waiting for the
                    # old one. The write may still commit through the new leader's log.
                    raise OutcomeUnknown(
                        f"leadership moved from {leader} to {current} while the command was "
                        f"forwarded; a write may or may not have been applied")
                if time.monotonic() >= deadline:
                    raise OutcomeUnknown(f"node {leader} did not answer in time; a write "
                                         f"may or may not have been applied")
        except LeaderUnreachable:
            state.links.pop(leader, None)
            raise
        except (OSError, TimeoutError, PeerProtocolError) as error:
            link.close()
            state.links.pop(leader, None)
            raise OutcomeUnknown(
                f"the connection to {leader} failed while forwarding ({error}); a "
                f"write may or may not have been applied"
            ) from error
        except OutcomeUnknown:
            link.close()
            state.links.pop(leader, None)
            raise
        finally:
            if not call.done():
                call.cancel()

    async def _read(self, state: ClientState, name: bytes, arguments: list[bytes],
                    previous_write: asyncio.Future[object] | None, shard_id: int,
                    slot: int | None = None) -> object:
        if previous_write is not None and not previous_write.done():
            with contextlib.suppress(Exception):
                await previous_write
        args = tuple(arguments[1:])
        timeout = self.config.request_timeout_ms / 1000
        deadline = time.monotonic() + timeout
        while True:
            shard_id, group = await self._route(shard_id, slot, deadline)
            if group is None:
                return await self._remote(state, shard_id, arguments, deadline)
            if not state.readonly:
                while True:
                    await self._leader_or_wait(group, deadline)
                    try:
                        await group.read_barrier(max(0.001, deadline - time.monotonic()))
                        break
                    except NotLeader:
                        if time.monotonic() >= deadline:
                            raise
                        await asyncio.sleep(_LEADER_WAIT_STEP_S)
            shard_machine = group.shard
            if shard_machine is None:
                raise CommandError(f"ERR phalanx: group {shard_id} holds no data")
            reply = shard_machine.read(name, args, int(time.time() * 1000))
            if _moved_slot(reply) and time.monotonic() < deadline:
                await asyncio.sleep(_LEADER_WAIT_STEP_S)
                continue
            return reply

    async def _on_shard(self, state: ClientState, name: bytes, arguments: list[bytes],
                        write: bool, shard_id: int) -> object:
        """One keyless command on one shard; errors become error replies."""
        try:
            if write:
                return await self._write(state, name, arguments, shard_id)
            return await self._read(state, name, arguments, None, shard_id)
        except CommandError as error:
            return ErrorReply(error.text)
        except TimeoutError:
            return ErrorReply("ERR phalanx: timed out waiting for the cluster")
        except PhalanxError as error:
            return ErrorReply(_error_text(error))

    async def _keyless(self, state: ClientState, name: bytes, arguments: list[bytes],
                       write: bool) -> object:
        """KEYS, SCAN, DBSIZE, FLUSHDB/FLUSHALL span every shard: fan out and combine."""
        shard_ids = sorted(self.node.cluster_map.shards)
        if not shard_ids:
            raise CommandError("CLUSTERDOWN the cluster map has no shards yet")
        previous = state.last_write
        if previous is not None and not previous.done():
            with contextlib.suppress(Exception):
                await previous
        upper = name.upper()
        if upper == b"SCAN":
            return await self._scan(state, arguments, shard_ids)
        replies = await asyncio.gather(*(self._on_shard(state, name, arguments, write, shard)
                                         for shard in shard_ids))
        error = next((r for r in replies if isinstance(r, ErrorReply)), None)
        if error is not None:
            return error
        if upper == b"DBSIZE":
            return sum(int(r) for r in replies if isinstance(r, int))
        if upper == b"KEYS":
            return [key for r in replies if isinstance(r, list) for key in r]
        return replies[0]

    async def _scan(self, state: ClientState, arguments: list[bytes],
                    shard_ids: list[int]) -> object:
        """SCAN across shards: cursor = shard_cursor * shards + shard position (one shard:
        the shard's own cursor, unchanged)."""
        if len(arguments) < 2:
            raise CommandError("ERR wrong number of arguments for 'scan' command")
        try:
            cursor = int(arguments[1])
        except ValueError as error:
            raise CommandError("ERR invalid cursor") from error
        if cursor < 0:
            raise CommandError("ERR invalid cursor")
        count = len(shard_ids)
        inner, position = divmod(cursor, count)
        shard_arguments = [arguments[0], str(inner).encode(), *arguments[2:]]
        reply = await self._on_shard(state, b"SCAN", shard_arguments, False, shard_ids[position])
        if isinstance(reply, ErrorReply) or not isinstance(reply, list) or len(reply) != 2:
            return reply
        next_inner = int(reply[0])
        if next_inner == 0:
            position += 1
            next_cursor = position if position < count else 0
        else:
            next_cursor = next_inner * count + position
        return [str(next_cursor).encode(), reply[1]]

    async def _shard_scoped(self, state: ClientState, arguments: list[bytes]) -> object:
        """PHALANX.SHARD <id> <command...>: a keyless command (DBSIZE, KEYS, SCAN, FLUSHDB)
        on one shard only: how a node forwards its share of a fan-out (internal)."""
        if len(arguments) < 3 or not arguments[1].isdigit():
            raise CommandError("ERR usage: PHALANX.SHARD <shard id> <command> [args...]")
        shard_id = int(arguments[1])
        if shard_id not in self.node.cluster_map.shards:
            raise CommandError(f"ERR no shard {shard_id}")
        inner = arguments[2:]
        name = inner[0].upper()
        if name == FREEZE_COMMAND:
            # Merge step 1 (internal): signed under the cluster secret when there is one.
            if self.config.cluster_secret:
                if len(inner) != 3 or not hmac.compare_digest(inner[2], internal_signature(
                        self.config.cluster_secret, b"\0".join([arguments[1], *inner[:2]]))):
                    raise CommandError("NOPERM internal cluster command without a valid "
                                       "cluster secret signature")
                inner = inner[:2]
            return await self._write(state, name, inner, shard_id)
        if not is_known(name) or command_keys(name, tuple(inner[1:])):
            raise CommandError("ERR PHALANX.SHARD takes a keyless data command")
        if is_write(name):
            return await self._write(state, name, inner, shard_id)
        return await self._read(state, name, inner, None, shard_id)

    # -- connection and server commands ----------------------------------------------------
    def _ping(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) > 2:
            raise CommandError("ERR wrong number of arguments for 'ping' command")
        return arguments[1] if len(arguments) == 2 else SimpleString("PONG")

    def _echo(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) != 2:
            raise CommandError("ERR wrong number of arguments for 'echo' command")
        return arguments[1]

    def _check_password(self, user: bytes, password: bytes) -> tuple[str, str] | None:
        """(user name, permissions) when `password` is the user's, else None. "default" (or
        an empty name) is the `requirepass` user; comparisons are constant-time."""
        if user in (b"default", b""):
            required = self.config.requirepass
            if required and hmac.compare_digest(password, required.encode()):
                return "default", "all"
            return None
        for entry in self.config.users:
            if hmac.compare_digest(user, entry.name.encode()):
                if hmac.compare_digest(password, entry.password.encode()):
                    return entry.name, entry.permissions
                return None
        return None

    def _login(self, state: ClientState, user: bytes, password: bytes) -> None:
        found = self._check_password(user, password)
        if found is None:
            raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
        state.user, state.permissions = found
        state.authenticated = True

    def _auth(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) not in (2, 3):
            raise CommandError("ERR wrong number of arguments for 'auth' command")
        if not self.config.requirepass:
            raise CommandError("ERR AUTH <password> called without any password configured "
                               "for the default user. Are you sure your configuration is correct?")
        user = arguments[1] if len(arguments) == 3 else b"default"
        self._login(state, user, arguments[-1])
        return SimpleString("OK")

    def _acl(self, state: ClientState, arguments: list[bytes]) -> object:
        """ACL WHOAMI (this connection's user) and ACL USERS (names, "default" included; needs
        "all" permissions, as Redis's ACL USERS needs @admin)."""
        sub = arguments[1].upper() if len(arguments) >= 2 else b""
        if sub == b"WHOAMI" and len(arguments) == 2:
            return state.user.encode()
        if sub == b"USERS" and len(arguments) == 2:
            if state.permissions != "all":
                raise CommandError(f"NOPERM User {state.user} has no permissions to run the "
                                   f"'acl|users' command")
            return sorted([b"default", *(u.name.encode() for u in self.config.users)])
        shown = arguments[1].decode(errors="replace") if len(arguments) >= 2 else ""
        raise CommandError(f"ERR unknown subcommand or wrong number of arguments for "
                           f"'{shown}'. Try ACL HELP.")

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
                self._login(state, arguments[position + 1], arguments[position + 2])
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
        group = self._default_group()
        return {
            "server": "redis", "version": "7.2.0", "proto": protocol, "id": state.id,
            "mode": "cluster" if len(self.node.cluster_map.shards) > 1 else "standalone",
            "role": "master" if group is None or group.is_leader() else "replica",
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
        """COMMAND, COMMAND COUNT|INFO|GETKEYS|DOCS: what cluster clients read key positions
        from (redis-py's RedisCluster routes with it)."""
        sub = arguments[1].upper() if len(arguments) >= 2 else b""
        if not sub:
            return [command_info(spec) for spec in COMMAND_SPECS.values()]
        if sub == b"COUNT":
            return len(COMMAND_SPECS)
        if sub == b"INFO":
            return [command_info(COMMAND_SPECS[name.upper()])
                    if name.upper() in COMMAND_SPECS else None for name in arguments[2:]]
        if sub == b"GETKEYS" and len(arguments) >= 3:
            if arguments[2].upper() not in COMMAND_SPECS:
                raise CommandError("ERR Invalid command specified")
            keys = command_keys(arguments[2], arguments[3:])
            if not keys:
                raise CommandError("ERR The command has no key arguments")
            return keys
        if sub == b"DOCS":
            return {}
        raise CommandError(f"ERR unknown subcommand '{sub.decode(errors='replace')}'. "
                           f"Try COMMAND HELP.")

    def _default_group(self) -> RaftGroup | None:
        groups = self.node.data_groups()
        return groups[min(groups)] if groups else None

    def _cluster(self, state: ClientState, arguments: list[bytes]) -> object:
        """CLUSTER SLOTS|SHARDS|NODES|INFO|MYID|KEYSLOT: the shard map, as Redis Cluster
        describes it, so cluster-aware clients (redis-py RedisCluster) work unchanged. A
        shard's "master" is its Raft leader; its "replicas" are the other voters."""
        if len(arguments) < 2:
            raise CommandError("ERR wrong number of arguments for 'cluster' command")
        sub = arguments[1].upper()
        node = self.node
        cmap = node.cluster_map
        if sub == b"KEYSLOT" and len(arguments) == 3:
            return key_slot(arguments[2])
        if sub == b"MYID":
            return self.config.id.encode()
        if sub == b"SLOTS":
            result: list[object] = []
            for shard in sorted(cmap.shards.values(), key=lambda s: s.id):
                members = self._shard_members(shard)
                for start, end in shard.slots:
                    result.append([start, end, *[self._node_entry(n) for n in members]])
            return result
        if sub == b"SHARDS":
            shards: list[object] = []
            for shard in sorted(cmap.shards.values(), key=lambda s: s.id):
                leader = node.shard_leader(shard)
                nodes: list[object] = []
                for member in self._shard_members(shard):
                    address = node.resp_address(member) or ("?", 0)
                    info = cmap.nodes.get(member)
                    nodes.append({
                        b"id": member.encode(), b"port": address[1],
                        b"ip": address[0].encode(), b"endpoint": address[0].encode(),
                        b"role": b"master" if member == leader else b"replica",
                        b"replication-offset": 0,
                        b"health": b"online" if info is None or info.state == "alive"
                        else b"fail"})
                slots: list[object] = []
                for start, end in shard.slots:
                    slots += [start, end]
                shards.append({b"slots": slots, b"nodes": nodes})
            return shards
        if sub == b"NODES":
            return self._cluster_nodes().encode()
        if sub == b"INFO":
            leaderless = [s.id for s in cmap.shards.values() if not node.shard_leader(s)]
            served = sum(s.slot_count() for s in cmap.shards.values()
                         if node.shard_leader(s))
            lines = [f"cluster_state:{'fail' if leaderless else 'ok'}",
                     f"cluster_slots_assigned:{sum(s.slot_count() for s in cmap.shards.values())}",
                     f"cluster_slots_ok:{served}", "cluster_slots_pfail:0",
                     f"cluster_slots_fail:{SLOT_COUNT - served}",
                     f"cluster_known_nodes:{len(cmap.nodes)}",
                     f"cluster_size:{len(cmap.shards)}",
                     f"cluster_current_epoch:{cmap.version}",
                     f"cluster_my_epoch:{cmap.version}",
                     f"phalanx_map_version:{cmap.version}",
                     f"phalanx_survival_goal:{cmap.survival_goal}",
                     f"phalanx_shards_without_leader:{','.join(map(str, leaderless))}"]
            return ("\r\n".join(lines) + "\r\n").encode()
        raise CommandError(f"ERR unknown subcommand or wrong number of arguments for "
                           f"'{arguments[1].decode(errors='replace')}'. Try CLUSTER HELP.")

    def _shard_members(self, shard: ShardInfo) -> list[str]:
        """A shard's leader first, then its other voters (or desired replicas)."""
        leader = self.node.shard_leader(shard)
        members = [leader] if leader else []
        members += [n for n in (shard.voters or shard.replicas) if n not in members]
        return members

    def _node_entry(self, node_id: str) -> list[object]:
        host, port = self.node.resp_address(node_id) or ("?", 0)
        return [host.encode(), port, node_id.encode()]

    def _cluster_nodes(self) -> str:
        node = self.node
        cmap = node.cluster_map
        led: dict[str, list[tuple[int, int]]] = {}
        follows: dict[str, str] = {}
        for shard in cmap.shards.values():
            leader = node.shard_leader(shard)
            if leader:
                led.setdefault(leader, []).extend(shard.slots)
                for member in shard.voters or shard.replicas:
                    if member != leader:
                        follows.setdefault(member, leader)
        lines = []
        for info in sorted(cmap.nodes.values(), key=lambda n: n.id):
            host, port = node.resp_address(info.id) or ("?", 0)
            _, peer_port = parse_address(info.peer, "peer")
            flags = ["myself"] if info.id == self.config.id else []
            if info.id in led:
                flags.append("master")
                master = "-"
            else:
                flags.append("slave")
                master = follows.get(info.id, "-")
            if info.state == "dead":
                flags.append("fail")
            ranges = sorted(led.get(info.id, []))
            slots = " ".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)
            link = "disconnected" if info.state == "dead" else "connected"
            lines.append(f"{info.id} {host}:{port}@{peer_port} {','.join(flags)} {master} 0 0 "
                         f"{cmap.version} {link} {slots}".rstrip())
        return "\n".join(lines) + "\n"

    def _asking(self, state: ClientState, arguments: list[bytes]) -> object:
        return SimpleString("OK")

    def _check_internal(self, arguments: list[bytes]) -> bytes:
        """The payload of PHALANX.META / PHALANX.JOIN, its signature checked when the cluster
        has a secret (no client without the secret can change the map)."""
        if len(arguments) not in (2, 3):
            raise CommandError(f"ERR wrong number of arguments for "
                               f"'{arguments[0].decode(errors='replace').lower()}' command")
        payload = arguments[1]
        if self.config.cluster_secret:
            presented = arguments[2] if len(arguments) == 3 else b""
            expected = internal_signature(self.config.cluster_secret, payload)
            if not hmac.compare_digest(presented, expected):
                raise CommandError("NOPERM internal cluster command without a valid cluster "
                                   "secret signature")
        return payload

    @staticmethod
    def _parse_op(payload: bytes) -> dict[str, object]:
        try:
            op = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CommandError(f"ERR map op is not JSON: {error}") from error
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise CommandError('ERR map op must be a JSON object with an "op" field')
        return op

    async def _meta(self, state: ClientState, arguments: list[bytes]) -> object:
        """PHALANX.META <op-json> [signature]: commit a cluster-map op (internal)."""
        op = self._parse_op(self._check_internal(arguments))
        if state.forwarded and not self.node.meta.is_leader():
            raise CommandError("TRYAGAIN this node does not lead the placement driver")
        reply = await self.node.propose_meta(op)
        message = getattr(reply, "message", None)
        if message is not None:
            raise CommandError(f"ERR {message}")
        return SimpleString("OK")

    async def _join(self, state: ClientState, arguments: list[bytes]) -> object:
        """PHALANX.JOIN <add_node-op-json> [signature]: a new node asks to join; the reply is
        the cluster map (so it learns every node's address)."""
        op = self._parse_op(self._check_internal(arguments))
        if op.get("op") != "add_node":
            raise CommandError("ERR PHALANX.JOIN takes an add_node op")
        reply = await self.node.propose_meta(op)
        message = getattr(reply, "message", None)
        if message is not None:
            raise CommandError(f"ERR {message}")
        return self.node.cluster_map.encode()

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
        group = self._default_group()
        if group is None:
            return [b"master", 0, []]
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
        group = self._default_group()
        if group is None or not group.is_leader():
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
                match = next((p for p in self.node.cluster_map.nodes.values()
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
        await self.node.transfer_leadership(target)
        return SimpleString("OK")

    def _info(self, state: ClientState, arguments: list[bytes]) -> object:
        sections = [a.decode(errors="replace").lower() for a in arguments[1:]] or ["default"]
        everything = any(s in ("all", "everything", "default") for s in sections)
        group = self._default_group()
        if group is None:
            group = self.node.meta
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
        if everything or "cluster" in sections:
            # Per-shard view: who leads, and how stale a READONLY read of this replica may be.
            lines += ["# Cluster", f"cluster_enabled:{int(len(self.node.cluster_map.shards) > 1)}",
                      f"phalanx_map_version:{self.node.cluster_map.version}"]
            for shard in sorted(self.node.cluster_map.shards.values(), key=lambda s: s.id):
                local = self.node.local_group(shard.id)
                shard_leader = self.node.shard_leader(shard) or "none"
                line = f"shard{shard.id}:leader={shard_leader},replicas={'/'.join(shard.replicas)}"
                if local is not None:
                    local_raft = local.raw.raft
                    stale = local.staleness_ms()
                    line += (f",local_role={local_raft.role.value},"
                             f"applied={local_raft.log.applied},staleness_ms={stale},"
                             f"leaderless_s={local.leaderless_for():.1f}")
                lines.append(line)
            lines.append("")
        if everything or "keyspace" in sections:
            lines += ["# Keyspace"]
            keys = sum(g.machine.key_count for g in self.node.data_groups().values())
            if keys:
                lines.append(f"db0:keys={keys},expires=0,avg_ttl=0")
            lines.append("")
        return "\r\n".join(lines).encode()


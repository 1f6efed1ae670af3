"""The asyncio TCP peer transport: Raft messages between phalanx nodes, batched per peer.

This module owns the sockets between nodes. `TcpTransport` listens for peer connections, keeps
one outbound connection per peer, batches everything queued for a peer into one frame of the
wire codec (`phalanx.transport.codec`), applies the chaos lab's `FaultRules`, and reports
connection losses so that a follower can start a PreVote as soon as its leader's connection
resets (the fast failover path: docs/architecture.md, "Failover").

Shape of a connection
---------------------
Connections are one-way for Raft traffic: node A sends to B over A's outbound connection, and
receives from B over B's outbound connection (A's inbound). The handshake is a
challenge-response of three frames (codec rule): the dialer's hello with a fresh nonce; the
acceptor's answer, sent only after checking the hello, with its own fresh nonce and its tag
bound to the dialer's nonce; and the dialer's proof, its tag bound to the acceptor's nonce. The
acceptor delivers nothing before the proof checks out, so a replayed hello gets nowhere, and
both sides authenticated each other (cluster id, HMAC with a secret, node id). Each side also
checks the other's **incarnation** (protocol version 2, `PeerIdentity`): a node whose data
directory was wiped comes back as a new incarnation, and is refused, with the reason sent in
the refusing side's next handshake frame, so it is logged on both sides (the refused side
learns it through `PeerIdentity.refused_by`). A dialer whose version-2 hello is closed without
an answer (an older peer) says its next hello in version 1, and back. With peer TLS
(`phalanx.transport.tls.PeerTls`), every connection is mutual TLS first (both sides present a
certificate of the cluster's CA naming their node id, both verify), the handshake above runs
inside it; without it, the HMAC handshake alone authenticates. After it, the dialer sends batch frames; the acceptor sends nothing but
keepalives (empty batch frames). Both sides send a keepalive after `keepalive_interval_s` of
silence and drop a connection that stayed silent for `idle_timeout_s`, so a half-open
connection (peer frozen or partitioned away) is noticed without waiting for TCP.

Rules of this file:
- `send` / `send_many` never block and never raise for network reasons: they append to the
  target peer's bounded queue and wake its sender task. Raft tolerates loss, so a full queue
  drops its *oldest* message (newer messages carry newer terms and commits) and counts it;
  unknown targets are dropped and counted too. Nothing here ever blocks the Raft loop.
- One sender task per peer owns the outbound connection: connect (from `source_host`, so that
  per-address iptables rules are real partitions), handshake, then drain the whole queue into
  batch frames (at most `max_messages_per_frame` messages and `max_frame_bytes` bytes each),
  write, and, when the write buffer is above its low-water mark (the only time `drain()` can
  wait) or the connection is closing, drain the socket with a timeout. Any error closes the connection and reconnects
  with exponential backoff (50 ms doubling to 1 s, jittered from the injected `random.Random`),
  cut short when the peer connects to us (it is back: a restarted node must not wait out our
  backoff to hear our votes); messages queued meanwhile are kept up to the bound. Messages taken from the queue for a frame
  whose write fails are lost (TCP gives no delivery receipt; Raft retries).
- Every network await is bounded in time: connect, handshake and drain by a timeout; the
  reads of an established connection by its idle timer, which aborts the connection after
  `idle_timeout_s` of silence. Timers are per connection, never per batch or per read
  (an `asyncio.timeout` costs ~10 us, more than encoding a batch).
- Untrusted input: an inbound connection is refused (one log line "refused peer connection from
  ADDR: reason", counted) unless its handshake arrives within `handshake_timeout_s` and names a
  configured peer of this cluster with the right HMAC (and, with TLS, completes the TLS
  handshake with a certificate of the CA that names that peer). With TLS the transport
  accepts sockets itself (`_accept_tls_loop`) and wraps each with the CURRENT server context
  (`loop.connect_accepted_socket`), so a reloaded certificate serves new connections and a
  failed TLS handshake is logged here like any refusal. (Upgrading an accepted plaintext
  stream with `start_tls` is not used: uvloop reads the peer's TLS hello into the stream
  before it can be paused.) A peer that later speaks garbage is
  disconnected, logged and counted; the transport and the other peers are unaffected.
- `on_peer_lost(X)` is called once per lost connection to or from X that had been established
  (EOF, reset, idle timeout, protocol error), never for a connection replaced by a newer one from
  the same peer and never during `stop()`.
- Fault rules: outbound drops and delays are applied in `send`; delayed messages go through a
  per-peer FIFO whose release times never decrease, so per-peer order is kept even while the
  delay changes. Inbound drops are applied per received batch.
- Callbacks (`on_messages`, `on_peer_lost`) run on the event loop and must not block; an
  exception from them is a bug of the caller: it is not caught here.
- `stop()` cancels and awaits every task this transport started and closes every socket.
  `asyncio.CancelledError` is never swallowed; there is no bare `except`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Callable, Iterable
from typing import Any, Final

from phalanx.errors import ConfigError, PeerProtocolError
from phalanx.raft.messages import Message
from phalanx.raft.types import GroupId, NodeId
from phalanx.transport.codec import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_HANDSHAKE_BYTES,
    NEED_DATA,
    PROTOCOL_VERSION,
    FrameDecoder,
    Handshake,
    encode_batch,
    encode_handshake,
    verify_handshake,
)
from phalanx.transport.faults import FaultRules
from phalanx.transport.peers import Inbound as _Inbound
from phalanx.transport.peers import Outbound as _Outbound
from phalanx.transport.peers import Peer as _Peer
from phalanx.transport.peers import PeerIdentity
from phalanx.transport.peers import Refused as _Refused
from phalanx.transport.peers import describe as _describe
from phalanx.transport.peers import format_address as _format_address
from phalanx.transport.tls import PeerTls, check_peer_name

__all__ = ["KEEPALIVE_FRAME", "OnMessages", "OnPeerLost", "PeerIdentity", "TcpTransport"]

logger = logging.getLogger(__name__)

OnMessages = Callable[[str, list[tuple[GroupId, Message]]], None]
OnPeerLost = Callable[[str], None]


#: A refusal of the same peer for the same reason is logged at most once per this many s.
REFUSAL_LOG_INTERVAL_S: Final = 30.0

KEEPALIVE_FRAME: Final = encode_batch([])
"""An empty batch frame: keeps an idle connection alive; the receiver ignores it."""

_READ_CHUNK: Final = 256 * 1024
#: Bytes of a handshake challenge (fresh for every connection, from os.urandom).
NONCE_BYTES: Final = 16
_STREAM_LIMIT: Final = 1024 * 1024
_WRITE_HIGH_WATER: Final = 1024 * 1024
_MAX_UNREAD_KEEPALIVE_BYTES: Final = 64 * 1024
_TIMER_SLACK_S: Final = 0.002


class TcpTransport:
    """Peer transport over asyncio TCP streams; see the module docstring for its rules.

    `peers` maps every peer id to its listener address; an entry for `node_id` itself is
    ignored, so the composition may pass the whole membership.
    """

    def __init__(
        self,
        node_id: str,
        listen: tuple[str, int],
        peers: dict[str, tuple[str, int]],
        *,
        cluster_id: str,
        secret: bytes | None,
        on_messages: OnMessages,
        on_peer_lost: OnPeerLost | None = None,
        fault_rules: FaultRules | None = None,
        source_host: str | None = None,
        queue_limit: int = 10_000,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_messages_per_frame: int = 4096,
        connect_timeout_s: float = 2.0,
        handshake_timeout_s: float = 2.0,
        write_timeout_s: float = 5.0,
        keepalive_interval_s: float = 1.0,
        idle_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 1.0,
        rng: random.Random | None = None,
        incarnation: str = "",
        identity: PeerIdentity | None = None,
        tls: PeerTls | None = None,
    ) -> None:
        if not node_id:
            raise ConfigError("node_id: must not be empty")
        if queue_limit < 1:
            raise ConfigError(f"queue_limit: must be >= 1 (got {queue_limit})")
        if max_messages_per_frame < 1:
            raise ConfigError(f"max_messages_per_frame: must be >= 1 (got {max_messages_per_frame})")
        if max_frame_bytes < 1024:
            raise ConfigError(f"max_frame_bytes: must be >= 1024 (got {max_frame_bytes})")
        for name, value in (
            ("connect_timeout_s", connect_timeout_s),
            ("handshake_timeout_s", handshake_timeout_s),
            ("write_timeout_s", write_timeout_s),
            ("keepalive_interval_s", keepalive_interval_s),
            ("idle_timeout_s", idle_timeout_s),
            ("backoff_initial_s", backoff_initial_s),
            ("backoff_max_s", backoff_max_s),
        ):
            if not value > 0:
                raise ConfigError(f"{name}: must be > 0 (got {value})")
        if idle_timeout_s <= keepalive_interval_s:
            raise ConfigError("idle_timeout_s: must be > keepalive_interval_s")
        if backoff_max_s < backoff_initial_s:
            raise ConfigError("backoff_max_s: must be >= backoff_initial_s")
        self.node_id = node_id
        self._listen = listen
        self._cluster_id = cluster_id
        self._secret = secret
        self._on_messages = on_messages
        self._on_peer_lost = on_peer_lost
        self._fault_rules = fault_rules
        self._source_host = source_host
        self._queue_limit = queue_limit
        self._max_frame_bytes = max_frame_bytes
        self._max_messages_per_frame = max_messages_per_frame
        self._connect_timeout = connect_timeout_s
        self._handshake_timeout = handshake_timeout_s
        self._write_timeout = write_timeout_s
        self._keepalive_interval = keepalive_interval_s
        self._idle_timeout = idle_timeout_s
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._rng = rng if rng is not None else random.Random()
        self.incarnation = incarnation
        self._identity = identity
        self.tls = tls
        self._refusal_logged: dict[tuple[str, str], float] = {}
        self._peers: dict[str, _Peer] = {
            peer_id: _Peer(peer_id, host, port)
            for peer_id, (host, port) in peers.items()
            if peer_id != node_id
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        #: With TLS: the listening socket, accepted by our own loop (`_accept_tls_loop`).
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._stopping = False
        self._refused_connections = 0
        self._dropped_unknown_peer = 0

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the listener on `listen` and start one sender task per peer."""
        if self._started:
            raise ConfigError(f"transport of {self.node_id} already started")
        self._started = True
        self._loop = asyncio.get_running_loop()
        host, port = self._listen
        if self.tls is None:
            self._server = await asyncio.start_server(
                self._on_connection, host, port, limit=_STREAM_LIMIT, reuse_address=True
            )
        else:
            self._listener = _listen_socket(host, port)
            self._spawn(self._accept_tls_loop(self._listener), f"phalanx-listen-{self.node_id}")
        for peer in self._peers.values():
            peer.task = self._spawn(self._run_sender(peer), f"phalanx-send-{self.node_id}-{peer.id}")
        logger.info("%s peer transport listening on %s", self.node_id,
                    _format_address(self.listen_address))

    async def stop(self) -> None:
        """Close the listener and every connection; cancel and await every task."""
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        if self._listener is not None:
            self._listener.close()
        for peer in self._peers.values():
            if peer.delay_handle is not None:
                peer.delay_handle.cancel()
                peer.delay_handle = None
            if peer.inbound is not None:
                peer.inbound.writer.close()
        current = asyncio.current_task()
        # Rounds, because a connection accepted just before close() starts its handler task
        # late; that task sees `_stopping` and ends at once.
        for _ in range(3):
            tasks = [task for task in self._tasks if task is not current]
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=5.0)
            await asyncio.sleep(0)
        if self._server is not None:
            try:
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
            except TimeoutError:
                logger.debug("%s listener did not close within 1 s", self.node_id)
        for peer in self._peers.values():
            peer.connected = False
        logger.info("%s peer transport stopped", self.node_id)

    @property
    def listen_address(self) -> tuple[str, int]:
        """The address the listener is bound to (the real port when `listen` asked for 0)."""
        if self._listener is not None and self._listener.fileno() != -1:
            bound = self._listener.getsockname()
            return str(bound[0]), int(bound[1])
        if self._server is None or not self._server.sockets:
            return self._listen
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    @property
    def fault_rules(self) -> FaultRules | None:
        return self._fault_rules

    def is_connected(self, peer_id: str) -> bool:
        """True while an outbound connection to `peer_id` is established."""
        peer = self._peers.get(peer_id)
        return peer is not None and peer.connected

    def peer_ids(self) -> list[str]:
        """The ids of every known peer."""
        return list(self._peers)

    def set_peer(self, peer_id: str, host: str, port: int) -> None:
        """Add a peer learnt at run time (a node joined), or move one to a new address.

        A moved peer's current connection is dropped; its sender reconnects to the new address.
        """
        if peer_id == self.node_id or self._stopping:
            return
        peer = self._peers.get(peer_id)
        if peer is not None:
            if (peer.host, peer.port) == (host, port):
                return
            peer.host, peer.port = host, port
            peer.wakeup.set()
            logger.info("%s: peer %s moved to %s", self.node_id, peer_id, peer.address)
            return
        peer = _Peer(peer_id, host, port)
        self._peers[peer_id] = peer
        if self._started:
            peer.task = self._spawn(self._run_sender(peer),
                                    f"phalanx-send-{self.node_id}-{peer_id}")
        logger.info("%s: new peer %s at %s", self.node_id, peer_id, peer.address)

    # ---- sending (synchronous, never blocks) --------------------------------------------

    def send(self, group_id: GroupId, message: Message) -> None:
        """Queue `message` for `message.target`; drops (and counts) instead of blocking."""
        peer = self._peers.get(message.target)
        if peer is None or self._stopping:
            if peer is None:
                self._dropped_unknown_peer += 1
                logger.debug("%s dropped a %s for unknown peer %r", self.node_id,
                             type(message).__name__, message.target)
            return
        rules = self._fault_rules
        if rules is not None and rules.active:
            if rules.should_drop_outbound(peer.id):
                peer.dropped_fault += 1
                return
            delay = rules.delay_for(peer.id)
            if delay > 0.0 or peer.delayed:
                self._send_delayed(peer, group_id, message, delay)
                return
        elif peer.delayed:
            self._send_delayed(peer, group_id, message, 0.0)
            return
        queue = peer.queue
        if len(queue) >= self._queue_limit:
            queue.popleft()
            peer.dropped_queue_full += 1
        queue.append((group_id, message))
        peer.wakeup.set()

    def send_many(self, messages: Iterable[tuple[GroupId, Message]]) -> None:
        """`send` each (group id, message) pair, in order."""
        send = self.send
        for group_id, message in messages:
            send(group_id, message)

    def _send_delayed(self, peer: _Peer, group_id: GroupId, message: Message,
                      delay: float) -> None:
        loop = self._loop
        if loop is None:  # not started: nothing can be timed yet, and nothing is delayed yet
            peer.queue.append((group_id, message))
            return
        if len(peer.queue) + len(peer.delayed) >= self._queue_limit:
            if peer.queue:
                peer.queue.popleft()
            else:
                peer.delayed.popleft()
            peer.dropped_queue_full += 1
        # Never release before an earlier message: per-peer order survives changing delays.
        due = max(loop.time() + delay, peer.last_due)
        peer.last_due = due
        peer.delayed.append((due, group_id, message))
        if peer.delay_handle is None:
            peer.delay_handle = loop.call_at(peer.delayed[0][0], self._release_delayed, peer)

    def _release_delayed(self, peer: _Peer) -> None:
        peer.delay_handle = None
        loop = self._loop
        if loop is None or self._stopping:
            return
        now = loop.time()
        delayed, queue = peer.delayed, peer.queue
        while delayed and delayed[0][0] <= now:
            _, group_id, message = delayed.popleft()
            queue.append((group_id, message))
        if delayed:
            peer.delay_handle = loop.call_at(delayed[0][0], self._release_delayed, peer)
        if queue:
            peer.wakeup.set()

    # ---- outbound -----------------------------------------------------------------------

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        # Only a bug ends a task with an exception (for example a callback that raised):
        # report it here, where it is retrieved, instead of at garbage collection.
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("%s transport task %s failed", self.node_id, task.get_name(),
                         exc_info=error)

    def _backoff_sleep(self, backoff: float) -> float:
        return backoff * (0.5 + 0.5 * self._rng.random())

    async def _run_sender(self, peer: _Peer) -> None:
        backoff = self._backoff_initial
        while True:
            try:
                connection = await self._connect(peer)
            except (OSError, TimeoutError, PeerProtocolError) as error:
                reason = ("timed out" if isinstance(error, TimeoutError) and not str(error)
                          else _describe(error))
                peer.last_error = f"connect to {peer.address} failed: {reason}"
                if not peer.failing:
                    peer.failing = True
                    logger.info("%s cannot reach peer %s: %s (retrying)", self.node_id, peer.id,
                                peer.last_error)
                peer.redial.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(peer.redial.wait(), self._backoff_sleep(backoff))
                # A peer that just connected to us is up: dial now and start the backoff over
                # (a restarted node must not wait out our backoff before hearing from us, e.g.
                # our votes when its successor is being elected).
                backoff = (self._backoff_initial if peer.redial.is_set()
                           else min(backoff * 2, self._backoff_max))
                continue
            backoff = self._backoff_initial
            peer.failing = False
            peer.outbound = connection
            if peer.established_once:
                peer.reconnects += 1
            peer.established_once = True
            peer.connected = True
            logger.info("%s connected to peer %s at %s", self.node_id, peer.id, peer.address)
            try:
                await self._pump(peer, connection)
            except (OSError, TimeoutError, PeerProtocolError, RuntimeError) as raised:
                # RuntimeError: uvloop's writelines() on a handle the peer's reset already
                # closed. It is a lost connection like any other; the sender must live on.
                # The watcher's finding (EOF, silence, garbage) explains a failed write best.
                cause = connection.failure or raised
                reason = ("write timed out" if isinstance(cause, TimeoutError) and not str(cause)
                          else _describe(cause))
                peer.last_error = f"connection to {peer.address} lost: {reason}"
                if isinstance(cause, PeerProtocolError):
                    peer.protocol_errors += 1
            finally:
                peer.connected = False
                peer.outbound = None
                if connection.watcher is not None:
                    connection.watcher.cancel()
                if self._stopping:
                    connection.writer.close()
                else:
                    connection.writer.transport.abort()
            logger.info("%s lost its connection to peer %s: %s", self.node_id, peer.id,
                        peer.last_error)
            if self._on_peer_lost is not None:
                self._on_peer_lost(peer.id)
            await asyncio.sleep(self._backoff_sleep(backoff))
            backoff = min(backoff * 2, self._backoff_max)

    async def _connect(self, peer: _Peer) -> _Outbound:
        local_addr = (self._source_host, 0) if self._source_host else None
        async with asyncio.timeout(self._connect_timeout):
            if self.tls is None:
                reader, writer = await asyncio.open_connection(
                    peer.host, peer.port, local_addr=local_addr, limit=_STREAM_LIMIT
                )
            else:
                # Mutual TLS: the acceptor's certificate must name the peer id we dial.
                reader, writer = await asyncio.open_connection(
                    peer.host, peer.port, local_addr=local_addr, limit=_STREAM_LIMIT,
                    ssl=self.tls.client_context(), server_hostname=peer.id,
                    ssl_handshake_timeout=self._handshake_timeout)
        version = peer.hello_version
        ours = self.incarnation if version >= 2 else ""
        try:
            writer.transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
            challenge = os.urandom(NONCE_BYTES)
            writer.write(encode_handshake(NodeId(self.node_id), self._cluster_id,
                                          secret=self._secret, nonce=challenge,
                                          version=version, incarnation=ours))
            decoder = FrameDecoder(max_frame_bytes=self._max_frame_bytes)
            try:
                async with asyncio.timeout(self._handshake_timeout):
                    await writer.drain()
                    handshake = await _read_handshake(reader, decoder)
            except (ConnectionError, asyncio.IncompleteReadError):
                # Closed without an answer: an older peer refusing our version, perhaps;
                # alternate between the versions we speak (an answer settles it).
                peer.hello_version = 1 if version >= 2 else PROTOCOL_VERSION
                raise
            if handshake.node_id != peer.id:
                raise PeerProtocolError(
                    f"{peer.address} answered as node {handshake.node_id!r}, expected {peer.id!r}"
                )
            verify_handshake(handshake, cluster_id=self._cluster_id, secret=self._secret,
                             bind=challenge)
            if handshake.refusal:
                self._identity_refused(peer, handshake.refusal)
            reason = self._check_identity(peer.id, handshake.incarnation, handshake.version)
            # The proof: our tag over the acceptor's fresh nonce (and our refusal, if any).
            writer.write(encode_handshake(NodeId(self.node_id), self._cluster_id,
                                          secret=self._secret, bind=handshake.nonce,
                                          version=handshake.version, incarnation=ours,
                                          refusal=reason if handshake.version >= 2 else ""))
            if reason:
                with contextlib.suppress(OSError, TimeoutError):
                    async with asyncio.timeout(self._handshake_timeout):
                        await writer.drain()
                self._refuse(peer, handshake.incarnation, reason, "")
            self._identified(peer, handshake.incarnation)
        except BaseException:
            writer.transport.abort()
            raise
        connection = _Outbound(reader, writer, decoder)
        connection.watcher = self._spawn(
            self._watch(peer, connection), f"phalanx-watch-{self.node_id}-{peer.id}"
        )
        return connection

    async def _pump(self, peer: _Peer, connection: _Outbound) -> None:
        """Send queued messages (and keepalives) until the connection fails.

        Per batch this costs no timer: the keepalive is due from one timer per connection
        that re-arms itself (`_keepalive_check`), and the socket is drained (with the write
        timeout) only when its write buffer is above the low-water mark -- below it,
        `drain()` would return at once -- or the transport is closing (drain raises then).
        """
        writer = connection.writer
        transport = writer.transport
        low_water = transport.get_write_buffer_limits()[0]
        queue = peer.queue
        wakeup = peer.wakeup
        loop = asyncio.get_running_loop()
        connection.last_sent = loop.time()
        timer: list[asyncio.TimerHandle] = []
        timer.append(loop.call_at(connection.last_sent + self._keepalive_interval,
                                  self._keepalive_check, peer, connection, timer))
        try:
            while True:
                if connection.failure is not None:
                    raise connection.failure
                if not queue:
                    if not connection.keepalive_due:
                        wakeup.clear()
                        await wakeup.wait()
                        continue
                    connection.keepalive_due = False
                    writer.write(KEEPALIVE_FRAME)
                    peer.bytes_sent += len(KEEPALIVE_FRAME)
                    connection.last_sent = loop.time()
                    async with asyncio.timeout(self._write_timeout):
                        await writer.drain()
                    continue
                frames, count = self._take_frames(peer)
                writer.writelines(frames)
                connection.last_sent = loop.time()
                peer.messages_sent += count
                peer.frames_sent += len(frames)
                peer.bytes_sent += sum(map(len, frames))
                if transport.get_write_buffer_size() > low_water or transport.is_closing():
                    async with asyncio.timeout(self._write_timeout):
                        await writer.drain()
        finally:
            timer[0].cancel()

    def _keepalive_check(self, peer: _Peer, connection: _Outbound,
                         timer: list[asyncio.TimerHandle]) -> None:
        """Timer of an outbound connection: wake its sender for a keepalive once nothing was
        written for `keepalive_interval_s`; re-armed for the next time one can be due."""
        loop = asyncio.get_running_loop()
        due = connection.last_sent + self._keepalive_interval
        # A timer may fire a little before its time (clock resolution, uvloop's milliseconds):
        # within _TIMER_SLACK_S of due counts as due, so the timer never spins.
        if loop.time() + _TIMER_SLACK_S >= due:
            connection.keepalive_due = True
            peer.wakeup.set()
            due = loop.time() + self._keepalive_interval
        timer[0] = loop.call_at(due, self._keepalive_check, peer, connection, timer)

    def _take_frames(self, peer: _Peer) -> tuple[list[bytes], int]:
        """Everything queued for `peer`, as batch frames; and how many messages they hold."""
        queue = peer.queue
        limit = self._max_messages_per_frame
        frames: list[bytes] = []
        count = 0
        while queue:
            if len(queue) <= limit:
                batch = list(queue)
                queue.clear()
            else:
                batch = [queue.popleft() for _ in range(limit)]
            count += self._encode(peer, batch, frames)
        return frames, count

    def _encode(self, peer: _Peer, batch: list[tuple[GroupId, Message]],
                frames: list[bytes]) -> int:
        """Append `batch` to `frames` as one frame, split in halves while it is too large."""
        try:
            frames.append(encode_batch(batch, max_frame_bytes=self._max_frame_bytes))
            return len(batch)
        except PeerProtocolError as error:  # the frame would exceed max_frame_bytes
            if len(batch) > 1:
                half = len(batch) // 2
                return (self._encode(peer, batch[:half], frames)
                        + self._encode(peer, batch[half:], frames))
            peer.dropped_oversize += 1
            peer.last_error = f"dropped a {type(batch[0][1]).__name__}: {error}"
            logger.warning("%s dropped a message to %s: %s", self.node_id, peer.id, error)
            return 0

    async def _watch(self, peer: _Peer, connection: _Outbound) -> None:
        """Read the acceptor's side of an outbound connection: keepalives, EOF, silence."""
        decoder = connection.decoder
        try:
            while True:
                while (batch := decoder.next_batch()) is not NEED_DATA:
                    if batch:
                        raise PeerProtocolError(
                            f"peer {peer.id} sent {len(batch)} messages on our outbound connection"
                        )
                try:
                    async with asyncio.timeout(self._idle_timeout):
                        data = await connection.reader.read(_READ_CHUNK)
                except TimeoutError:
                    raise TimeoutError(
                        f"no keepalive from {peer.id} for {self._idle_timeout:g} s"
                    ) from None
                if not data:
                    raise ConnectionResetError(f"{peer.id} closed the connection")
                decoder.feed(data)
        except (OSError, TimeoutError, PeerProtocolError) as error:
            connection.failure = error
            connection.writer.transport.abort()
            peer.wakeup.set()

    # ---- inbound ------------------------------------------------------------------------

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A task of our own rather than a coroutine callback: `stop()` can track and cancel it
        # (Python 3.11's streams report a cancelled callback task as an error).
        if self._stopping:
            writer.transport.abort()
            return
        address = _format_address(writer.get_extra_info("peername"))
        self._spawn(self._accept(reader, writer, address),
                    f"phalanx-accept-{self.node_id}-{address}")

    async def _accept_tls_loop(self, listener: socket.socket) -> None:
        """Accept TLS peer connections: each socket gets the CURRENT server context (so a
        reloaded certificate serves new connections) and its TLS handshake is awaited here,
        so a failed one is logged and counted like any refused connection."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as error:
                if self._stopping or listener.fileno() == -1:
                    return
                logger.warning("%s peer listener: accept failed: %s", self.node_id, error)
                await asyncio.sleep(0.05)
                continue
            text = _format_address(address)
            self._spawn(self._accept_tls(sock, text), f"phalanx-accept-{self.node_id}-{text}")

    async def _accept_tls(self, sock: socket.socket, address: str) -> None:
        assert self.tls is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_STREAM_LIMIT)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            async with asyncio.timeout(self._handshake_timeout):
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol, sock, ssl=self.tls.server_context(),
                    ssl_handshake_timeout=self._handshake_timeout)
        except (OSError, TimeoutError) as error:
            sock.close()
            self._refused_connections += 1
            logger.warning("refused peer connection from %s: TLS handshake failed: %s", address,
                           _describe(error) if str(error) else "no TLS handshake within "
                           f"{self._handshake_timeout:g} s")
            return
        except BaseException:  # cancelled by stop(): the socket is ours to close
            sock.close()
            raise
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        if self._stopping:
            transport.abort()
            return
        await self._accept(reader, writer, address)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      address: str) -> None:
        decoder = FrameDecoder(max_frame_bytes=self._max_frame_bytes)
        try:
            async with asyncio.timeout(self._handshake_timeout):
                handshake = await _read_handshake(reader, decoder)
            verify_handshake(handshake, cluster_id=self._cluster_id, secret=self._secret)
            peer = self._peers.get(handshake.node_id)
            if peer is None:
                raise PeerProtocolError(
                    f"unknown node id {handshake.node_id!r} (not a configured peer of "
                    f"{self.node_id})"
                )
            if self.tls is not None:
                check_peer_name(writer.get_extra_info("peercert"), handshake.node_id)
            writer.transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
            challenge = os.urandom(NONCE_BYTES)
            # Answer in the dialer's version (an older peer speaks version 1).
            version = handshake.version
            reason = self._check_identity(peer.id, handshake.incarnation, version)
            if reason and version < 2:  # version 1 cannot carry the reason: no answer at all
                self._refuse(peer, handshake.incarnation, reason, address)
            writer.write(encode_handshake(NodeId(self.node_id), self._cluster_id,
                                          secret=self._secret, nonce=challenge,
                                          bind=handshake.nonce, version=version,
                                          incarnation=self.incarnation if version >= 2 else "",
                                          refusal=reason if version >= 2 else ""))
            async with asyncio.timeout(self._handshake_timeout):
                await writer.drain()
                if reason:
                    self._refuse(peer, handshake.incarnation, reason, address)
                proof = await _read_handshake(reader, decoder)
            if proof.node_id != handshake.node_id:
                raise PeerProtocolError(f"the proof came from {proof.node_id!r}, not "
                                        f"{handshake.node_id!r}")
            try:
                verify_handshake(proof, cluster_id=self._cluster_id, secret=self._secret,
                                 bind=challenge)
            except PeerProtocolError as error:
                raise PeerProtocolError(f"{error} (challenge not answered: a replayed "
                                        f"handshake?)") from error
            if proof.refusal:
                self._identity_refused(peer, proof.refusal)
            self._identified(peer, handshake.incarnation)
        except _Refused:
            self._refused_connections += 1
            writer.transport.abort()
            return
        except (OSError, TimeoutError, PeerProtocolError) as error:
            reason = (f"no handshake within {self._handshake_timeout:g} s"
                      if isinstance(error, TimeoutError) else str(error) or _describe(error))
            self._refused_connections += 1
            logger.warning("refused peer connection from %s: %s", address, reason)
            writer.transport.abort()
            return
        inbound = _Inbound(writer)
        peer.inbound_incarnation = handshake.incarnation
        previous, peer.inbound = peer.inbound, inbound
        if previous is not None:  # the peer reconnected: its old connection is stale
            previous.replaced = True
            previous.writer.transport.abort()
        logger.info("%s accepted peer %s from %s", self.node_id, peer.id, address)
        if not peer.connected:
            peer.redial.set()
        reason = "closed by peer"
        try:
            await self._receive(peer, reader, writer, decoder)
        except PeerProtocolError as error:
            peer.protocol_errors += 1
            reason = f"protocol error: {error}"
            logger.warning("%s dropped peer %s (%s): %s", self.node_id, peer.id, address, reason)
        except (OSError, TimeoutError) as error:
            reason = _describe(error)
        finally:
            if peer.inbound is inbound:
                peer.inbound = None
            if self._stopping:
                writer.close()
            else:
                writer.transport.abort()
        if inbound.replaced or self._stopping:
            return
        peer.last_error = f"inbound connection from {address} lost: {reason}"
        logger.info("%s lost the inbound connection from peer %s: %s", self.node_id, peer.id,
                    reason)
        if self._on_peer_lost is not None:
            self._on_peer_lost(peer.id)

    async def _receive(self, peer: _Peer, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, decoder: FrameDecoder) -> None:
        """Deliver the batches of an authenticated inbound connection until it ends (EOF).

        Reads carry no timer of their own: one timer per connection (`tick`, re-armed for the
        next time something can be due) writes the keepalive after `keepalive_interval_s`
        without one, and, when nothing arrived for `idle_timeout_s` or the peer does not read
        its keepalives, records why and aborts the connection, which ends the pending read.
        """
        loop = asyncio.get_running_loop()
        on_messages = self._on_messages
        rules = self._fault_rules
        peer_id = peer.id
        keepalive_interval = self._keepalive_interval
        idle_timeout = self._idle_timeout
        transport = writer.transport
        last_received = last_sent = loop.time()
        failure: list[BaseException] = []
        handle: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal handle, last_sent
            now = loop.time() + _TIMER_SLACK_S  # see _keepalive_check
            if now - last_received >= idle_timeout:
                failure.append(TimeoutError(f"no data from {peer_id} for {idle_timeout:g} s"))
                transport.abort()
                return
            if now - last_sent >= keepalive_interval:
                if transport.get_write_buffer_size() > _MAX_UNREAD_KEEPALIVE_BYTES:
                    failure.append(ConnectionError(f"{peer_id} does not read its connection"))
                    transport.abort()
                    return
                writer.write(KEEPALIVE_FRAME)
                last_sent = loop.time()
            handle = loop.call_at(min(last_sent + keepalive_interval,
                                      last_received + idle_timeout), tick)

        handle = loop.call_at(last_sent + keepalive_interval, tick)
        try:
            while True:
                while (batch := decoder.next_batch()) is not NEED_DATA:
                    if not batch:
                        continue  # a keepalive
                    if rules is not None and rules.active and rules.should_drop_inbound(peer_id):
                        peer.dropped_fault += len(batch)
                        continue
                    peer.messages_received += len(batch)
                    on_messages(peer_id, batch)
                if failure:
                    raise failure[0]
                data = await reader.read(_READ_CHUNK)
                if not data:
                    if failure:
                        raise failure[0]
                    return
                last_received = loop.time()
                peer.bytes_received += len(data)
                decoder.feed(data)
        finally:
            if handle is not None:
                handle.cancel()

    # ---- identity (incarnations) ---------------------------------------------------------

    def _check_identity(self, peer_id: str, incarnation: str, version: int) -> str:
        """The reason to refuse `peer_id` presenting `incarnation`, or "" to accept it."""
        if self._identity is None:
            return ""
        return self._identity.check(peer_id, incarnation, version) or ""

    def _identified(self, peer: _Peer, incarnation: str) -> None:
        peer.incarnation = incarnation
        peer.refusal = ""
        if self._identity is not None:
            self._identity.seen(peer.id, incarnation)

    def _log_refusal(self, peer_id: str, text: str) -> None:
        """Log an identity refusal, at most once per REFUSAL_LOG_INTERVAL_S per peer and text
        (a refused peer redials every second)."""
        now = asyncio.get_running_loop().time()
        key = (peer_id, text)
        if now - self._refusal_logged.get(key, -REFUSAL_LOG_INTERVAL_S) >= REFUSAL_LOG_INTERVAL_S:
            self._refusal_logged[key] = now
            logger.error("%s", text)

    def _refuse(self, peer: _Peer, incarnation: str, reason: str, address: str) -> None:
        """We refuse `peer`'s identity: record, log (rate-limited) and raise `_Refused`."""
        peer.refusal = f"we refused {peer.id} (incarnation {incarnation or 'none'}): {reason}"
        peer.last_error = peer.refusal
        where = f" from {address}" if address else ""
        self._log_refusal(peer.id, f"{self.node_id} refused peer {peer.id}{where} "
                                   f"(incarnation {incarnation or 'none'}): {reason}")
        raise _Refused(peer.refusal)

    def _identity_refused(self, peer: _Peer, reason: str) -> None:
        """`peer` refused OUR identity: record, log (rate-limited), tell the owner, raise."""
        peer.refusal = f"{peer.id} refused us: {reason}"
        peer.last_error = peer.refusal
        self._log_refusal(peer.id, f"{self.node_id} (incarnation {self.incarnation or 'none'}) "
                                   f"was refused by peer {peer.id}: {reason}")
        if self._identity is not None:
            self._identity.refused_by(peer.id, reason)
        raise _Refused(peer.refusal)

    def recheck_identities(self) -> list[str]:
        """Close the established connections of peers whose incarnation is no longer the one
        on record (a replacement finished while the old incarnation still ran); returns their
        ids. The node calls it every control round."""
        dropped = []
        for peer in self._peers.values():
            for incarnation, writer, outbound in (
                    (peer.incarnation, peer.outbound.writer if peer.outbound else None,
                     peer.outbound),
                    (peer.inbound_incarnation, peer.inbound.writer if peer.inbound else None,
                     None)):
                if writer is None:
                    continue
                reason = self._check_identity(peer.id, incarnation, PROTOCOL_VERSION) \
                    if incarnation else ""
                if not reason:
                    continue
                peer.refusal = f"we dropped {peer.id} (incarnation {incarnation}): {reason}"
                self._log_refusal(peer.id, f"{self.node_id} closes its connection with "
                                           f"{peer.id} (incarnation {incarnation}): {reason}")
                if outbound is not None:
                    outbound.failure = PeerProtocolError(peer.refusal)
                writer.transport.abort()
                dropped.append(peer.id)
        return dropped

    # ---- observability ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters for metrics: per peer, plus connections refused and unknown targets."""
        return {
            "node_id": self.node_id,
            "incarnation": self.incarnation,
            "tls": self.tls is not None,
            "tls_reloads": self.tls.reloads if self.tls is not None else 0,
            "refused_connections": self._refused_connections,
            "dropped_unknown_peer": self._dropped_unknown_peer,
            "peers": {
                peer.id: {
                    "address": peer.address,
                    "connected": peer.connected,
                    "inbound_connected": peer.inbound is not None,
                    "queued": len(peer.queue) + len(peer.delayed),
                    "messages_sent": peer.messages_sent,
                    "frames_sent": peer.frames_sent,
                    "messages_received": peer.messages_received,
                    "bytes_sent": peer.bytes_sent,
                    "bytes_received": peer.bytes_received,
                    "dropped_queue_full": peer.dropped_queue_full,
                    "dropped_fault": peer.dropped_fault,
                    "dropped_oversize": peer.dropped_oversize,
                    "protocol_errors": peer.protocol_errors,
                    "reconnects": peer.reconnects,
                    "last_error": peer.last_error,
                    "incarnation": peer.incarnation,
                    "refusal": peer.refusal,
                }
                for peer in self._peers.values()
            },
        }


def _listen_socket(host: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket on (host, port) (SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener


async def _read_handshake(reader: asyncio.StreamReader, decoder: FrameDecoder) -> Handshake:
    """Read until `decoder` holds the peer's handshake (the caller bounds the time)."""
    while True:
        handshake = decoder.next_handshake()
        if handshake is not NEED_DATA:
            return handshake
        data = await reader.read(MAX_HANDSHAKE_BYTES + 16)
        if not data:
            raise ConnectionResetError("connection closed before the handshake completed")
        decoder.feed(data)

"""The peer link: one node's RESP connection to another node, and the TLS contexts it uses.

What lives here: `LeaderLink` (forwards a client's command to a shard's leader, carries the
control plane's PHALANX.META / PHALANX.JOIN / PHALANX.SHARD calls), the TLS contexts of the
RESP listener and of the links, and `internal_signature` (the HMAC that signs internal
commands under the cluster secret).

Rules of this file:
- TLS is passed explicitly: whoever builds a `LeaderLink` hands it the client TLS context
  (or None for plaintext). There is no process-wide TLS state.
- A link failure before the command was sent raises `LeaderUnreachable` (certainly not
  applied, safe to retry); a failure after it was sent surfaces as OSError/TimeoutError and the
  caller decides (a write's outcome is then unknown). A caller that gives up on a call (a new
  leader is known, its deadline passed) learns from `call`'s `sent` event whether the command
  left: if not, it was certainly not applied.
- A link whose peer already closed it (EOF seen while idle: the peer restarted or died) is
  reconnected before the command is written, never written to: writing first would turn a
  certain "not applied" into an unknown outcome.
- Many calls may be in flight on one link (a pipeline forwarded as a pipeline): each call's
  reply is the next one read after the replies of the calls written before it. A broken
  connection fails every call waiting on it at once (and is marked `failed`, which the
  router's write sessions read to keep re-sent writes in order).
- No import of the node or the front end: both use this module, it uses neither.
See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl
from collections import deque
from collections.abc import Callable

from phalanx.errors import LeaderUnreachable, PeerProtocolError
from phalanx.resp import NEED_DATA, ErrorReply, RespReplyParser, encode_command
from phalanx.server.config import NodeConfig

#: The client name a link announces (CLIENT SETNAME): the receiving node never forwards a
#: command that arrived on such a connection again (no ping-pong between nodes).
FORWARD_CLIENT_NAME = b"phalanx-forward"


def server_tls_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The RESP listener's TLS context (TLS >= 1.2), or None when TLS is off. With
    `tls_ca_file`, clients must present a certificate signed by that CA (mutual TLS)."""
    if not config.tls_cert_file:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    if config.tls_ca_file:
        context.load_verify_locations(cafile=config.tls_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The TLS context a node uses to forward to another node, or None when TLS is off.

    The trust anchor is `tls_ca_file` when set, else the node's own certificate file (every
    node then serves the same certificate, or certificates under a CA included in that file).
    Host names are checked: a node's certificate must name the host (or IP) of its RESP
    address. Under mutual TLS the node presents its own certificate as the client's."""
    if not config.tls_cert_file:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=config.tls_ca_file or config.tls_cert_file)
    # A leaf certificate may be the trust anchor (no self-signed root needed).
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if config.tls_ca_file:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return context


def internal_signature(secret: str, payload: bytes) -> bytes:
    """HMAC of an internal RESP command (PHALANX.META / PHALANX.JOIN / PHALANX.FWD) under the
    cluster secret."""
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest().encode()


class _Connection:
    """One TCP (or TLS) connection of a link: its stream, its parser, and the calls written on
    it still waiting for their replies, in order (RESP answers in order: the n-th reply read
    is the reply of the n-th command written), each with when it was written."""

    __slots__ = ("failed", "outgoing", "parser", "pending", "reader", "reader_task", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = RespReplyParser()
        self.pending: deque[tuple[asyncio.Future[object], float]] = deque()
        #: Commands written in this loop turn, sent together at its end (one system call for
        #: a pipeline's worth of commands).
        self.outgoing: list[bytes] = []
        self.reader_task: asyncio.Task[None] | None = None
        #: Set when the connection broke or was closed: every call written on it that had no
        #: reply yet has failed (its outcome is the caller's to decide).
        self.failed = False

    def flush(self) -> None:
        """Send the commands written in this loop turn. A transport the peer already reset
        (uvloop raises RuntimeError on a closed handle, asyncio only logs) fails the
        connection: every call on it learns at once, never a bare RuntimeError."""
        outgoing = self.outgoing
        if outgoing and not self.failed:
            try:
                self.writer.write(b"".join(outgoing) if len(outgoing) > 1 else outgoing[0])
            except (OSError, RuntimeError) as error:
                self.fail(ConnectionResetError(f"connection lost while sending: {error}"))
                self.writer.close()
        outgoing.clear()

    def fail(self, error: BaseException) -> None:
        """Mark the connection broken and fail every call still waiting on it."""
        self.failed = True
        self.outgoing.clear()
        pending = self.pending
        while pending:
            future = pending.popleft()[0]
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a caller that gave up is not "never retrieved"


class LeaderLink:
    """A RESP connection from this node to another node (usually a shard's leader), used to
    forward one client's commands or to carry one control-plane call.

    Many calls may be in flight at once (a client's pipeline is forwarded as a pipeline,
    issue 15): each call writes its command at once and waits for its reply, which a reader
    task matches to the calls in the order they were written. It authenticates as the default
    user (`requirepass`) and connects with `ssl_context` (None: plaintext); the caller passes
    the node's client TLS context explicitly.

    With `watch(current_leader, stall_s)`, a watchdog closes the connection (failing every
    call on it) as soon as `current_leader()` names another node, or when the oldest call has
    waited `stall_s`: callers then learn at once that their leader is gone.
    """

    def __init__(self, leader_id: str, host: str, port: int, timeout: float,
                 password: str, ssl_context: ssl.SSLContext | None,
                 client_name: bytes = FORWARD_CLIENT_NAME) -> None:
        self.leader_id = leader_id
        #: CLIENT SETNAME after connecting; the default marks a forwarding node (never
        #: forwarded again); the region link (aa_link.py) names itself otherwise.
        self.client_name = client_name
        self.host = host
        self.port = port
        self.timeout = timeout
        self.password = password
        self.ssl_context = ssl_context
        self.connection: _Connection | None = None
        self.lock = asyncio.Lock()
        self.current_leader: Callable[[], str] | None = None
        self.stall_s = 0.0
        self.watchdog: asyncio.Task[None] | None = None
        #: Calls between their start and their send (connecting, or waiting for the link).
        self.callers = 0
        #: Resolved with the new leader's id when the watchdog sees one (see `moved`).
        self._moved: asyncio.Future[str] | None = None
        #: Called once (then cleared) when the last call waiting on the link is answered
        #: (`LinkPool.give_back` of a link its client left while calls were in flight).
        self.on_idle: Callable[[LeaderLink], None] | None = None

    def watch(self, current_leader: Callable[[], str] | None, stall_s: float) -> None:
        """Close the connection when `current_leader()` names another node or a call waits
        longer than `stall_s` (see the class docstring)."""
        self.current_leader = current_leader
        self.stall_s = stall_s

    def moved(self) -> asyncio.Future[str]:
        """A future resolved with the new leader's id once the watchdog sees `current_leader()`
        name another node (one shared watch for every call on the link, not a poll each)."""
        if self._moved is None:
            self._moved = asyncio.get_running_loop().create_future()
        return self._moved

    def _start_watchdog(self) -> None:
        if (self.current_leader is not None or self.stall_s) and \
                (self.watchdog is None or self.watchdog.done()):
            self.watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.ssl_context), self.timeout
        )
        connection = _Connection(reader, writer)
        try:
            hello = b""
            if self.password:
                hello += encode_command(b"AUTH", self.password.encode())
            hello += encode_command(b"CLIENT", b"SETNAME", self.client_name)
            try:
                writer.write(hello)
            except RuntimeError as error:  # uvloop: the peer reset the new connection already
                raise ConnectionResetError(f"connection lost while connecting: {error}") \
                    from error
            for _ in range(2 if self.password else 1):
                reply = await asyncio.wait_for(self._read_reply(connection), self.timeout)
                if isinstance(reply, ErrorReply):
                    raise PeerProtocolError(f"leader {self.leader_id} refused: {reply.text}")
        except BaseException:
            writer.close()
            raise
        connection.reader_task = asyncio.get_running_loop().create_task(
            self._read_replies(connection))
        return connection

    @staticmethod
    async def _read_reply(connection: _Connection) -> object:
        """One reply, read before the reader task starts (the handshake's)."""
        parser = connection.parser
        while True:
            reply = parser.next_reply()
            if reply is not NEED_DATA:
                return reply
            data = await connection.reader.read(65536)
            if not data:
                raise ConnectionResetError("leader closed the connection")
            parser.feed(data)

    async def _read_replies(self, connection: _Connection) -> None:
        """The reader task: each reply to the oldest call waiting on `connection`. Any failure
        (EOF, reset, a reply nobody asked for, a reply that does not parse) breaks the
        connection and fails every waiting call; it never escapes the task."""
        parser, pending = connection.parser, connection.pending
        error: BaseException
        try:
            while True:
                data = await connection.reader.read(65536)
                if not data:
                    error = ConnectionResetError(f"node {self.leader_id} closed the connection")
                    break
                parser.feed(data)
                while (reply := parser.next_reply()) is not NEED_DATA:
                    if not pending:
                        raise PeerProtocolError(f"node {self.leader_id} sent a reply nobody "
                                                f"asked for")
                    future = pending.popleft()[0]
                    if not future.done():  # (a caller that gave up has cancelled it)
                        future.set_result(reply)
                if not pending and self.on_idle is not None:
                    on_idle, self.on_idle = self.on_idle, None
                    on_idle(self)
        except asyncio.CancelledError:
            connection.fail(ConnectionResetError(f"the link to {self.leader_id} was closed"))
            raise
        except Exception as failure:  # any failure breaks this connection, never the task
            error = failure if isinstance(failure, OSError | PeerProtocolError) else \
                PeerProtocolError(f"bad reply from node {self.leader_id}: {failure!r}")
        connection.fail(error)
        if self.connection is connection:
            self.connection = None
        connection.writer.close()

    async def _watch(self) -> None:
        """The watchdog (see the class docstring); ends when no call is waiting (sent, or
        still connecting)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.02)
            connection = self.connection
            waiting = connection is not None and bool(connection.pending)
            if not waiting and not self.callers:
                return
            current = self.current_leader() if self.current_leader is not None else ""
            if current and current != self.leader_id:
                if self._moved is not None and not self._moved.done():
                    self._moved.set_result(current)
                self._break(f"leadership moved from {self.leader_id} to {current}")
                return
            if waiting and connection is not None and self.stall_s and \
                    loop.time() - connection.pending[0][1] > self.stall_s:
                self._break(f"node {self.leader_id} did not answer in {self.stall_s:.1f} s")
                return

    def _break(self, why: str) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.fail(ConnectionResetError(why))
            if connection.reader_task is not None:
                connection.reader_task.cancel()
            connection.writer.close()

    def usable(self) -> bool:
        """True if the open connection may carry a command now: not broken or closing, and
        the peer has not closed its side (a RESP server never half-closes: an EOF means it is
        gone)."""
        connection = self.connection
        if connection is None or connection.failed or connection.writer.is_closing():
            return False
        reader = connection.reader
        return not reader.at_eof() and reader.exception() is None

    def idle(self) -> bool:
        """True if the link is usable and no call is on it (none waiting for its reply, none
        connecting or written in this turn): another client connection may take it over."""
        connection = self.connection
        return (self.usable() and not self.callers and connection is not None
                and not connection.pending and not connection.outgoing)

    def send(self, arguments: list[bytes]) -> asyncio.Future[object]:
        """Write one command on the open connection now (the caller checked `usable()`): a
        future of its reply, failed with OSError if the connection breaks first. It leaves
        with the other commands written in this loop turn."""
        connection = self.connection
        if connection is None or connection.failed:
            raise LeaderUnreachable(f"the link to leader {self.leader_id} is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        connection.pending.append((future, loop.time()))
        if not connection.outgoing:
            loop.call_soon(connection.flush)
        connection.outgoing.append(encode_command(*arguments))
        self._start_watchdog()
        return future

    async def call(self, arguments: list[bytes], sent: asyncio.Event | None = None,
                   on_sent: Callable[[_Connection], None] | None = None) -> object:
        """Send one command and return its reply (raises OSError/timeouts on link failure).
        Other calls may be in flight on the link at the same time; replies come in order.

        `sent` is set (and `on_sent` called with the connection) the moment the command is
        written: the caller's proof, if it gives up before, that nothing left (a
        `LeaderUnreachable` is raised whenever that is so)."""
        if not self.usable():
            self.callers += 1
            self._start_watchdog()
            try:
                async with self.lock:
                    if not self.usable():
                        self.close()
                        try:
                            self.connection = await self._connect()
                        except (OSError, TimeoutError, PeerProtocolError) as error:
                            # (ssl.SSLError is an OSError: a TLS failure: certainly not sent.)
                            self.close()
                            raise LeaderUnreachable(
                                f"cannot reach leader {self.leader_id}: {error}") from error
            finally:
                self.callers -= 1
        future = self.send(arguments)
        if sent is not None:
            sent.set()
        if on_sent is not None and self.connection is not None:
            on_sent(self.connection)
        return await asyncio.wait_for(future, self.timeout)

    def close(self) -> None:
        """Close the connection (if any): the calls still waiting on it fail."""
        self.on_idle = None
        self._break(f"the link to {self.leader_id} was closed")


class LinkPool:
    """Idle forwarding links of this node, kept when their client connection closes and
    handed to the next client connection that forwards to the same node.

    A client connection forwards over its own link (its writes stay in its order), and a link
    used to be closed with its connection: a client that connects for each command (a load
    balancer's health-checked pool, the benchmarks' gap writer, a PHP request) made the node
    open a TCP connection to the leader, AUTH and CLIENT SETNAME there, for every command,
    on both nodes' event loops. On the shared 2-core machine at load 26-38, 70-140 such
    commands a second through a follower drove its accept queue full of connections whose
    clients had already given up (0.5 s), each still forwarded on a new link: not one write
    through that follower was answered in time for 30 s and more, while the same load through
    the leader was served (the SIGSTOP failover "hang" of the session 8 note; a failover's
    election is what first lets the queue build up).

    Rules:
    - A link is owned by one client connection at a time (`state.links`); only an idle one
      (`LeaderLink.idle`: open, no call in flight) is parked or taken, so one connection's
      order is never mixed with another's replies. A link given back with calls still in
      flight (its client left during a forward) is parked once they are answered; one that
      breaks meanwhile is dropped.
    - What a link carries is the same for every client: it authenticates as the node (the
      cluster's `requirepass`) and names itself a forwarding link; a client's identity
      travels in each `PHALANX.FWD` (its write session), never in the connection.
    - At most `per_node` idle links per node; the rest are closed. A parked link whose peer
      closed or reset it is found unusable when taken and closed then.
    """

    def __init__(self, per_node: int = 8) -> None:
        self.per_node = per_node
        self._idle: dict[str, list[LeaderLink]] = {}
        self.closed = False

    def take(self, node_id: str, host: str, port: int) -> LeaderLink | None:
        """An idle open link to `node_id` at (host, port), or None."""
        idle = self._idle.get(node_id)
        while idle:
            link = idle.pop()
            if link.idle() and link.host == host and link.port == port:
                link.on_idle = None
                return link
            link.close()
        return None

    def give_back(self, link: LeaderLink) -> None:
        """The link's client connection closed: park it for the next one (now if idle, once
        its calls are answered if some are in flight), else close it."""
        if link.client_name != FORWARD_CLIENT_NAME or not link.usable() or link.callers:
            link.close()
        elif link.idle():
            self._park(link)
        else:
            link.on_idle = self._park

    def _park(self, link: LeaderLink) -> None:
        link.on_idle = None
        idle = self._idle.setdefault(link.leader_id, [])
        if self.closed or len(idle) >= self.per_node or not link.idle() or link in idle:
            if link not in idle:
                link.close()
            return
        link.watch(None, 0.0)  # the next owner sets its own watch
        idle.append(link)

    def idle_count(self) -> int:
        """Links parked now (all nodes)."""
        return sum(len(links) for links in self._idle.values())

    def close(self) -> None:
        """Close every parked link, and every link given back from now on (the node stops)."""
        self.closed = True
        for links in self._idle.values():
            for link in links:
                link.close()
        self._idle.clear()

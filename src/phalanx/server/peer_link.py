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
- No import of the node or the front end: both use this module, it uses neither.
See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl

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
    """HMAC of an internal RESP command (PHALANX.META / PHALANX.JOIN) under the cluster secret."""
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest().encode()


class LeaderLink:
    """A RESP connection from this node to another node (usually a shard's leader), used to
    forward one client's commands or to carry one control-plane call.

    It authenticates as the default user (`requirepass`) and connects with `ssl_context`
    (None: plaintext); the caller passes the node's client TLS context explicitly.
    """

    def __init__(self, leader_id: str, host: str, port: int, timeout: float,
                 password: str, ssl_context: ssl.SSLContext | None) -> None:
        self.leader_id = leader_id
        self.host = host
        self.port = port
        self.timeout = timeout
        self.password = password
        self.ssl_context = ssl_context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.parser = RespReplyParser()
        self.lock = asyncio.Lock()

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.ssl_context), self.timeout
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
        reader, parser = self.reader, self.parser
        assert reader is not None
        while True:
            reply = parser.next_reply()
            if reply is not NEED_DATA:
                return reply
            data = await asyncio.wait_for(reader.read(65536), self.timeout)
            if not data:
                raise ConnectionResetError("leader closed the connection")
            parser.feed(data)

    def _usable(self) -> bool:
        """True if the open connection may carry a command: not closing, and the peer has not
        closed its side (a RESP server never half-closes: an EOF means it is gone)."""
        if self.writer is None or self.writer.is_closing() or self.reader is None:
            return False
        return not self.reader.at_eof() and self.reader.exception() is None

    async def call(self, arguments: list[bytes], sent: asyncio.Event | None = None) -> object:
        """Send one command and return its reply (raises OSError/timeouts on link failure).

        `sent` is set the moment the command is written (the caller's proof, if it gives up
        before, that nothing left: a `LeaderUnreachable` is raised whenever that is so)."""
        async with self.lock:
            if not self._usable():
                self.close()
                try:
                    await self._connect()
                except (OSError, TimeoutError, PeerProtocolError) as error:
                    # (ssl.SSLError is an OSError: a TLS failure means certainly not sent.)
                    self.close()
                    raise LeaderUnreachable(f"cannot reach leader {self.leader_id}: {error}") \
                        from error
            assert self.writer is not None
            if sent is not None:
                sent.set()
            self.writer.write(encode_command(*arguments))
            return await self._read_reply()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.reader = None

"""The per-peer state of the TCP peer transport (`phalanx.transport.tcp`): what it keeps about
each peer and each connection, and the identity seam (`PeerIdentity`).

Rules of this file: plain state holders and small helpers, no IO; `TcpTransport` owns every
object here and mutates it on the event loop only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from phalanx.errors import PeerProtocolError
from phalanx.raft.messages import Message
from phalanx.raft.types import GroupId
from phalanx.transport.codec import PROTOCOL_VERSION, FrameDecoder

__all__ = ["Inbound", "Outbound", "Peer", "PeerIdentity", "Refused", "describe",
           "format_address"]


class PeerIdentity(Protocol):
    """Which incarnation of each peer this node accepts (see `phalanx.server.identity`)."""

    def check(self, peer_id: str, incarnation: str, version: int) -> str | None:
        """None to accept `peer_id` presenting `incarnation` in a handshake of protocol
        `version` (1 carries none: ""), else the reason it is refused. No side effect."""
        ...

    def seen(self, peer_id: str, incarnation: str) -> None:
        """A connection with `peer_id` as `incarnation` was established (after `check`)."""
        ...

    def refused_by(self, peer_id: str, reason: str) -> None:
        """`peer_id` refused OUR identity, for `reason`."""
        ...


class Refused(PeerProtocolError):
    """A handshake ended by an identity refusal (ours or the peer's)."""


def format_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Outbound:
    """One established outbound connection and the task watching its read side."""

    __slots__ = ("decoder", "failure", "keepalive_due", "last_sent", "reader", "watcher",
                 "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, decoder: FrameDecoder
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = decoder
        self.failure: BaseException | None = None
        self.watcher: asyncio.Task[None] | None = None
        # Loop time of the last frame written, and whether the keepalive timer found the
        # connection silent for a whole `keepalive_interval_s` (the sender then writes one).
        self.last_sent = 0.0
        self.keepalive_due = False


class Inbound:
    """One accepted, authenticated inbound connection."""

    __slots__ = ("replaced", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.replaced = False


class Peer:
    """Everything the transport keeps about one peer: queues, connections, counters."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "connected",
        "delay_handle",
        "delayed",
        "dropped_fault",
        "dropped_oversize",
        "dropped_queue_full",
        "established_once",
        "failing",
        "frames_sent",
        "hello_version",
        "host",
        "id",
        "inbound",
        "inbound_incarnation",
        "incarnation",
        "last_due",
        "last_error",
        "messages_received",
        "messages_sent",
        "outbound",
        "port",
        "protocol_errors",
        "queue",
        "reconnects",
        "redial",
        "refusal",
        "task",
        "wakeup",
    )

    def __init__(self, peer_id: str, host: str, port: int) -> None:
        self.id = peer_id
        self.host = host
        self.port = port
        self.queue: deque[tuple[GroupId, Message]] = deque()
        # (release time, group id, message), release times non-decreasing (keeps order).
        self.delayed: deque[tuple[float, GroupId, Message]] = deque()
        self.delay_handle: asyncio.TimerHandle | None = None
        self.last_due = 0.0
        self.wakeup = asyncio.Event()
        #: Set when the peer connected to us while our connection to it is down: it is back,
        #: so the sender stops backing off and dials at once.
        self.redial = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.inbound: Inbound | None = None
        #: The established outbound connection (None while there is none).
        self.outbound: Outbound | None = None
        #: The incarnation the established inbound connection presented.
        self.inbound_incarnation = ""
        self.connected = False
        self.established_once = False
        self.failing = False
        self.messages_sent = 0
        self.frames_sent = 0
        self.messages_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.dropped_queue_full = 0
        self.dropped_fault = 0
        self.dropped_oversize = 0
        self.protocol_errors = 0
        self.reconnects = 0
        self.last_error: str | None = None
        #: The protocol version of our next hello (1 after a version-2 hello went unanswered).
        self.hello_version = PROTOCOL_VERSION
        #: The incarnation the peer presented in the last established connection.
        self.incarnation = ""
        #: The last identity refusal between us and the peer (either way), "" = none.
        self.refusal = ""

    @property
    def address(self) -> str:
        return format_address((self.host, self.port))

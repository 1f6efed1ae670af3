"""One client connection: bytes in, commands started, replies out in order.

Rules of this file:
- A protocol (asyncio callbacks), not a coroutine per connection: a reply costs no task switch,
  and the connection keeps reading (pipelining) while earlier commands wait for their commit.
- Pipelining: every command of one read is started before any is awaited, so a pipeline of
  writes becomes one Raft batch (one fsync); replies are written strictly in command order.
- A client's protocol error gets Redis's `-ERR Protocol error: ...` and the connection is
  closed (as Redis does); every other bad input gets an error reply and the connection stays.
- Flow control: reading pauses while the kernel send buffer is full (the client does not read
  its replies) or `MAX_QUEUED_COMMANDS` wait; it resumes when they drain.
- Pub/Sub pushes (`push`) are written outside the request/reply order: at once when no reply
  is pending, else queued behind the pending replies (a RESP2 client sees its SUBSCRIBE
  confirmation before the first message). A connection whose unsent output (kernel-refused
  bytes plus queued pushes) passes `output_limit` is dropped at once (Redis's
  client-output-buffer-limit pubsub hard limit, 32 MiB by default, soft limit not modelled).
- The connection knows its owner only through `ConnectionOwner` (the listener satisfies it).
- A blocking command (BLPOP, ...: `blocking.py`) that waits holds the commands after it: they
  start once it has answered, as Redis runs nothing for a blocked client (`held`).
See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Protocol, cast

from phalanx.errors import ClientProtocolError
from phalanx.kv.table import BLOCKING_COMMANDS
from phalanx.resp import NEED_DATA, RespLimits, create_parser
from phalanx.server.front.blocking_streams import blocks

if TYPE_CHECKING:
    from phalanx.server.front.session import ClientState

logger = logging.getLogger(__name__)

_OK = b"+OK\r\n"
PUBSUB_OUTPUT_LIMIT_BYTES = 32 * 1024 * 1024
"""A subscriber whose unsent output passes this is disconnected (Redis's default
`client-output-buffer-limit pubsub 32mb 8mb 60`, its hard limit)."""
MAX_QUEUED_COMMANDS = 4096
"""A connection with more commands started and not yet answered stops being read until it
drains (a client pipelining faster than the cluster commits cannot grow memory unbounded)."""
COMMANDS_PER_TURN = 128
"""Most commands a connection starts in one turn of the event loop (`_start_commands`)."""


class ConnectionOwner(Protocol):
    """What a connection needs from the listener that accepted it."""

    limits: RespLimits

    def open_client(self, connection: RespConnection, address: str) -> ClientState | None:
        """A session for a new connection, or None if it is refused (the owner wrote why)."""

    def close_client(self, connection: RespConnection, state: ClientState | None) -> None:
        """The connection is gone."""

    def protocol_error(self) -> None:
        """A client broke the protocol (counted)."""

    def start_command(self, state: ClientState, name: bytes, arguments: list[bytes]) -> object:
        """Start one command: its encoded reply (bytes) or a future of its reply."""

    def reply_bytes(self, state: ClientState, name: bytes,
                    future: asyncio.Future[object], arguments: list[bytes]) -> bytes:
        """The encoded reply of a finished command future (`arguments`: the whole request, which
        shapes a RESP3 reply)."""


class RespConnection(asyncio.Protocol):
    """One client connection: parse what arrives, start every command at once, and write the
    replies strictly in command order as they finish."""

    def __init__(self, owner: ConnectionOwner) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.state: ClientState | None = None
        self.parser = create_parser(owner.limits)
        #: (name, encoded reply or its future, the request: it shapes a RESP3 reply).
        self.queue: deque[tuple[bytes, object, list[bytes]]] = deque()
        self.waiting_on: asyncio.Future[object] | None = None
        self.closing = False
        self.write_paused = False
        self.read_paused = False
        #: Bytes of pushes queued behind pending replies (0 whenever the queue is empty).
        self.queued_push_bytes = 0
        self.output_limit = PUBSUB_OUTPUT_LIMIT_BYTES
        #: Commands parsed while a blocking command waits (None: none waits).
        self.held: deque[list[bytes]] | None = None
        #: True while commands already received wait for the next turn of the loop
        #: (`_start_commands`); reading is paused meanwhile.
        self.more_later = False

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.state = self.owner.open_client(self, f"{peer[0]}:{peer[1]}" if peer else "?")
        if self.state is None:
            self.closing = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.owner.close_client(self, self.state)
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
        if self.closing or self.state is None:
            return
        self.parser.feed(data)
        if not self.more_later:
            self._start_commands()

    def _start_commands(self) -> None:
        """Start the commands parsed so far, at most `COMMANDS_PER_TURN` in this turn of the
        event loop: the rest wait for the next turn (reading paused meanwhile), so a client's
        1,000-command pipeline never holds the loop for all of its commands at once (it held
        it for 100 ms of CPU, seconds under load: heartbeats went out late, elections)."""
        self.more_later = False
        state = self.state
        if self.closing or state is None:
            return
        parser = self.parser
        queue = self.queue
        start = self.owner.start_command
        budget = COMMANDS_PER_TURN
        while True:
            if budget <= 0:
                self.more_later = True
                asyncio.get_running_loop().call_soon(self._start_commands)
                break
            budget -= 1
            try:
                arguments = parser.next_command()
            except ClientProtocolError as error:
                queue.append((b"", b"-ERR " + str(error).encode() + b"\r\n", []))
                self.owner.protocol_error()
                self.closing = True
                break
            if arguments is NEED_DATA:
                break
            assert isinstance(arguments, list)
            if not arguments:
                continue
            name = arguments[0].upper()
            if name == b"QUIT":
                queue.append((name, _OK, arguments))
                self.closing = True
                break
            if self.held is not None:
                self.held.append(arguments)
                continue
            queue.append((name, start(state, name, arguments), arguments))
            if name in BLOCKING_COMMANDS or blocks(name, arguments):
                self._hold_after(queue[-1][1])
        self._flush()

    # -- blocking commands -------------------------------------------------------------------
    def _hold_after(self, item: object) -> None:
        """A blocking command started: if it waits, later commands wait behind it."""
        if type(item) is not bytes and not cast("asyncio.Future[object]", item).done():
            self.held = deque()
            cast("asyncio.Future[object]", item).add_done_callback(self._release_held)

    def _release_held(self, _: object) -> None:
        """The blocking command answered: start the commands held behind it, in order (until
        another blocking command waits)."""
        held, self.held = self.held, None
        state = self.state
        if held is None or state is None or self.closing:
            return
        while held:
            if self.held is not None:
                self.held.extend(held)
                break
            arguments = held.popleft()
            name = arguments[0].upper()
            self.queue.append((name, self.owner.start_command(state, name, arguments), arguments))
            if name in BLOCKING_COMMANDS or blocks(name, arguments):
                self._hold_after(self.queue[-1][1])
        self._flush()

    # -- server pushes (Pub/Sub) -------------------------------------------------------------
    def push(self, data: bytes) -> bool:
        """Write encoded push frames outside the reply order (behind pending replies, if
        any); False if the connection is gone or was just dropped for its output limit."""
        transport = self.transport
        if self.closing or transport is None or transport.is_closing():
            return False
        if self.queue:
            self.queue.append((b"", data, []))
            self.queued_push_bytes += len(data)
        else:
            transport.write(data)
        if transport.get_write_buffer_size() + self.queued_push_bytes > self.output_limit:
            logger.warning("dropping a subscriber that does not read: more than %d bytes of "
                           "output unsent", self.output_limit)
            self.closing = True
            self.queue.clear()
            self.queued_push_bytes = 0
            transport.abort()
            return False
        return True

    # -- replies -----------------------------------------------------------------------------
    def _flush(self, _: object = None) -> None:
        transport = self.transport
        state = self.state
        if transport is None or state is None or transport.is_closing():
            return
        queue = self.queue
        parts: list[bytes] = []
        while queue:
            name, item, arguments = queue[0]
            if type(item) is not bytes:
                future = cast("asyncio.Future[object]", item)
                if not future.done():
                    if self.waiting_on is not future:
                        self.waiting_on = future
                        future.add_done_callback(self._flush)
                    break
                item = self.owner.reply_bytes(state, name, future, arguments)
            queue.popleft()
            parts.append(item)
        if not queue:
            self.queued_push_bytes = 0
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
        waiting = len(self.queue) + (len(self.held) if self.held is not None else 0)
        pause = self.write_paused or self.more_later or waiting >= MAX_QUEUED_COMMANDS
        if pause and not self.read_paused:
            self.read_paused = True
            transport.pause_reading()
        elif not pause and self.read_paused:
            self.read_paused = False
            transport.resume_reading()

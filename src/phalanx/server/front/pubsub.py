"""Pub/Sub: this node's subscriptions, the PUBLISH / SUBSCRIBE family, and the fan-out of every
published message to the other nodes.

What lives here: `PubSub` (the registry of this node's subscribers and the command handlers
SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, their UNSUBSCRIBE twins, PUBLISH, SPUBLISH, PUBSUB, and the
internal PHALANX.PUBLISH), `PeerFanOut` (one fire-and-forget RESP link per other node).

Semantics (Redis Cluster's, https://redis.io/commands/publish/): "In a Redis Cluster clients
can publish to every node. The cluster makes sure that published messages are forwarded as
needed, so clients can subscribe to any channel by connecting to any one of the nodes."

Rules of this file:
- Messages are never stored and never go through a Raft log: a message published on any node
  is delivered to this node's subscribers at once and sent, at most once, to every other node
  of the cluster map as `PHALANX.PUBLISH` over a `PeerFanOut` link (a plain RESP connection
  to the peer's RESP port, signed with the cluster's internal key like PHALANX.META:
  server/internal_auth.py). A node that receives PHALANX.PUBLISH delivers locally and never
  forwards it again.
- The publisher never waits for a peer: each link has a bounded queue (`LINK_QUEUE_BYTES`);
  a message for a slow, unreachable or dead peer is dropped (counted), and a link that failed
  drops messages for `RETRY_S` before it tries to connect again.
- PUBLISH / SPUBLISH return the number of clients of THIS node that received the message,
  as Redis Cluster does ("only clients that are connected to the same node as the publishing
  client are included in the count"); PUBSUB CHANNELS / NUMSUB / NUMPAT / SHARD* describe
  this node's subscriptions only, as in Redis Cluster.
- Sharded Pub/Sub (https://redis.io/commands/spublish/): a shard channel hashes to a slot like
  a key, and SSUBSCRIBE / SUNSUBSCRIBE of channels of different SHARDS answer -CROSSSLOT
  (phalanx's rule for every multi-key command: one shard, whatever the slots; so a
  single-shard cluster takes any channels, as one redis-server does). Redis
  delivers a shard message on the nodes of the slot's shard; phalanx delivers it on EVERY
  node like PUBLISH (simplest, and a client subscribed on any node receives it, so clients
  that connect to the slot's node work unchanged; no MOVED is ever needed).
- The (un)subscribe confirmations are replies in command order; messages are pushed to the
  connection (`PushTarget.push`) outside the request/reply order. RESP3 frames are `>` push
  frames, RESP2 frames plain arrays. A RESP2 connection with a subscription runs only
  (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET (`subscribed_mode_refusal`).
- A client that disconnects loses its subscriptions (`drop`). A subscriber whose unsent
  output passes the connection's limit is disconnected by the connection (Redis's
  client-output-buffer-limit pubsub, hard limit only).
See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from phalanx.errors import CommandError, CrossSlotError
from phalanx.kv.glob import glob_match
from phalanx.placement import key_slot
from phalanx.resp import (
    NEED_DATA,
    ErrorReply,
    Push,
    RespReplyParser,
    SimpleString,
    encode,
    encode_command,
)
from phalanx.server.internal_auth import check, internal_key, sign, verify_key
from phalanx.server.peer_link import FORWARD_CLIENT_NAME

if TYPE_CHECKING:
    from phalanx.server.front.replicas import ReplicaRegistry
    from phalanx.server.front.session import ClientState

logger = logging.getLogger(__name__)

LINK_QUEUE_BYTES = 8 * 1024 * 1024
"""Messages waiting to be written to one peer; past this, new ones for that peer are dropped."""
RETRY_S = 1.0
"""After a failed connect or write, a peer link drops its messages this long before retrying."""
PUBLISH_COMMAND = b"PHALANX.PUBLISH"

#: Commands a RESP2 connection in subscribed mode may run (Redis 7.0's list).
SUBSCRIBED_MODE_COMMANDS = frozenset({
    b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE", b"UNSUBSCRIBE", b"PUNSUBSCRIBE",
    b"SUNSUBSCRIBE", b"PING", b"QUIT", b"RESET"})

_PUBSUB_HELP = (
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "SHARDCHANNELS [<pattern>]",
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    "SHARDNUMSUB [<shardchannel> ...]",
    "    Return the number of subscribers for the specified shard level channel(s)",
    "HELP",
    "    Prints this help.",
)


class PushTarget(Protocol):
    """Where a subscriber's messages go: its connection."""

    def push(self, data: bytes) -> bool:
        """Write `data` (encoded frames) outside the reply order; False if the connection is
        gone (or was just closed for passing its output limit)."""


class Subscriber:
    """One client's subscriptions (insertion-ordered, as UNSUBSCRIBE without arguments
    answers them)."""

    __slots__ = ("channels", "client_id", "patterns", "shard_channels", "state", "target")

    def __init__(self, state: ClientState, target: PushTarget) -> None:
        self.state = state
        self.client_id = state.id
        self.target = target
        self.channels: dict[bytes, None] = {}
        self.patterns: dict[bytes, None] = {}
        self.shard_channels: dict[bytes, None] = {}

    def count(self) -> int:
        """What SUBSCRIBE / PSUBSCRIBE and their twins answer: channels plus patterns."""
        return len(self.channels) + len(self.patterns)

    def empty(self) -> bool:
        return not (self.channels or self.patterns or self.shard_channels)


def _frame(state: ClientState, *items: object) -> bytes:
    return encode(Push(list(items)), state.protocol)  # type: ignore[arg-type]


def _arity(name: str) -> CommandError:
    return CommandError(f"ERR wrong number of arguments for '{name}' command")


class _Frames:
    """One message's frame encoded once per protocol."""

    __slots__ = ("cache", "items")

    def __init__(self, *items: bytes) -> None:
        self.items = list(items)
        self.cache: dict[int, bytes] = {}

    def get(self, protocol: int) -> bytes:
        data = self.cache.get(protocol)
        if data is None:
            data = self.cache[protocol] = encode(Push(list(self.items)), protocol)
        return data


class PubSub:
    """This node's subscription registry and the Pub/Sub command handlers."""

    def __init__(self, replicas: ReplicaRegistry,
                 target_of: Callable[[int], PushTarget | None],
                 client_tls: ssl.SSLContext | None) -> None:
        self.replicas = replicas
        self.config = replicas.config
        self.target_of = target_of
        self.subscribers: dict[int, Subscriber] = {}
        self.channels: dict[bytes, dict[int, Subscriber]] = {}
        self.patterns: dict[bytes, dict[int, Subscriber]] = {}
        self.shard_channels: dict[bytes, dict[int, Subscriber]] = {}
        self.fan_out = PeerFanOut(replicas, client_tls)
        self.received_from_peers = 0

    # -- the session -----------------------------------------------------------------------
    def subscribed_mode_refusal(self, state: ClientState, name: bytes,
                                arguments: list[bytes]) -> bytes | None:
        """None if `name` may run now; else the encoded reply a RESP2 connection in subscribed
        mode gets instead (PING answers ["pong", message], the rest are refused). RESP3
        connections run every command (https://redis.io/docs/interact/pubsub/)."""
        if state.protocol != 2 or state.id not in self.subscribers \
                or name in SUBSCRIBED_MODE_COMMANDS:
            if name == b"PING" and state.protocol == 2 and state.id in self.subscribers:
                if len(arguments) > 2:
                    return encode(ErrorReply("ERR wrong number of arguments for 'ping' command"))
                return encode([b"pong", arguments[1] if len(arguments) == 2 else b""])
            return None
        return encode(ErrorReply(
            f"ERR Can't execute '{name.decode(errors='replace').lower()}': only (P|S)SUBSCRIBE "
            f"/ (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"))

    def drop(self, client_id: int) -> None:
        """A client disconnected (or RESET): forget every subscription it had."""
        subscriber = self.subscribers.pop(client_id, None)
        if subscriber is None:
            return
        for registry, names in ((self.channels, subscriber.channels),
                                (self.patterns, subscriber.patterns),
                                (self.shard_channels, subscriber.shard_channels)):
            for name in names:
                _forget(registry, name, client_id)

    def close(self) -> None:
        self.fan_out.close()

    def reset(self, state: ClientState, arguments: list[bytes]) -> object:
        """RESET (https://redis.io/commands/reset/), the parts phalanx has: leave Pub/Sub,
        back to RESP2, READWRITE, no transaction and no watched key, and deauthenticated when
        a password is configured."""
        if len(arguments) != 1:
            raise _arity("reset")
        self.drop(state.id)
        state.multi, state.multi_failed, state.multi_bytes = None, False, 0
        state.watched, state.watch_reads = {}, []
        state.protocol = 2
        state.readonly = False
        if self.config.requirepass or self.config.users:
            state.authenticated = False
        state.user, state.permissions = "default", "all"
        return SimpleString("RESET")

    def _subscriber(self, state: ClientState) -> Subscriber | None:
        subscriber = self.subscribers.get(state.id)
        if subscriber is None:
            target = self.target_of(state.id)
            if target is None:
                return None
            subscriber = self.subscribers[state.id] = Subscriber(state, target)
        return subscriber

    def _settle(self, subscriber: Subscriber) -> None:
        if subscriber.empty():
            self.subscribers.pop(subscriber.client_id, None)

    # -- SUBSCRIBE and friends -------------------------------------------------------------
    def _one_shard(self, channels: list[bytes]) -> None:
        """Shard channels of one command must live in one shard (-CROSSSLOT otherwise)."""
        shard_for_slot = self.replicas.cluster_map.shard_for_slot
        first = key_slot(channels[0])
        if any(key_slot(channel) != first for channel in channels[1:]):
            shards = {getattr(shard_for_slot(key_slot(c)), "id", None) for c in channels}
            if len(shards) > 1:
                raise CommandError(str(CrossSlotError()))

    def subscribe(self, state: ClientState, arguments: list[bytes]) -> bytes:
        return self._subscribe(state, arguments, "subscribe")

    def psubscribe(self, state: ClientState, arguments: list[bytes]) -> bytes:
        return self._subscribe(state, arguments, "psubscribe")

    def ssubscribe(self, state: ClientState, arguments: list[bytes]) -> bytes:
        if len(arguments) >= 2:
            self._one_shard(arguments[1:])
        return self._subscribe(state, arguments, "ssubscribe")

    def _subscribe(self, state: ClientState, arguments: list[bytes], kind: str) -> bytes:
        if len(arguments) < 2:
            raise _arity(kind)
        subscriber = self._subscriber(state)
        if subscriber is None:  # the connection is already gone
            return b""
        mine, registry = self._tables(subscriber, kind)
        frames = []
        for name in arguments[1:]:
            if name not in mine:
                mine[name] = None
                registry.setdefault(name, {})[state.id] = subscriber
            count = len(mine) if kind == "ssubscribe" else subscriber.count()
            frames.append(_frame(state, kind.encode(), name, count))
        return b"".join(frames)

    def unsubscribe(self, state: ClientState, arguments: list[bytes]) -> bytes:
        return self._unsubscribe(state, arguments, "unsubscribe")

    def punsubscribe(self, state: ClientState, arguments: list[bytes]) -> bytes:
        return self._unsubscribe(state, arguments, "punsubscribe")

    def sunsubscribe(self, state: ClientState, arguments: list[bytes]) -> bytes:
        if len(arguments) >= 2:
            self._one_shard(arguments[1:])
        return self._unsubscribe(state, arguments, "sunsubscribe")

    def _unsubscribe(self, state: ClientState, arguments: list[bytes], kind: str) -> bytes:
        subscriber = self.subscribers.get(state.id)
        sharded = kind == "sunsubscribe"
        if subscriber is None:
            names = arguments[1:]
            if not names:
                return _frame(state, kind.encode(), None, 0)
            return b"".join(_frame(state, kind.encode(), name, 0) for name in names)
        mine, registry = self._tables(subscriber, kind)
        names = arguments[1:] or list(mine)
        frames = []
        for name in names:
            if name in mine:
                del mine[name]
                _forget(registry, name, state.id)
            count = len(mine) if sharded else subscriber.count()
            frames.append(_frame(state, kind.encode(), name, count))
        if not names:
            count = len(mine) if sharded else subscriber.count()
            frames.append(_frame(state, kind.encode(), None, count))
        self._settle(subscriber)
        return b"".join(frames)

    def _tables(self, subscriber: Subscriber, kind: str) -> tuple[
            dict[bytes, None], dict[bytes, dict[int, Subscriber]]]:
        if kind in ("subscribe", "unsubscribe"):
            return subscriber.channels, self.channels
        if kind in ("psubscribe", "punsubscribe"):
            return subscriber.patterns, self.patterns
        return subscriber.shard_channels, self.shard_channels

    # -- PUBLISH ---------------------------------------------------------------------------
    def publish(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) != 3:
            raise _arity("publish")
        count = self.deliver(arguments[1], arguments[2])
        self.fan_out.send(b"P", arguments[1], arguments[2], self._key())
        return count

    def spublish(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) != 3:
            raise _arity("spublish")
        count = self.deliver_shard(arguments[1], arguments[2])
        self.fan_out.send(b"S", arguments[1], arguments[2], self._key())
        return count

    def _key(self) -> str:
        """The key PHALANX.PUBLISH is signed with (server/internal_auth.py)."""
        return internal_key(self.config, self.replicas.cluster_map)

    def peer_publish(self, state: ClientState, arguments: list[bytes]) -> object:
        """PHALANX.PUBLISH P|S <channel> <message> [signature]: another node's message,
        delivered here only (internal; signed when the cluster has a secret)."""
        if len(arguments) not in (4, 5):
            raise _arity("phalanx.publish")
        kind, channel, message = arguments[1], arguments[2], arguments[3]
        check(verify_key(self.config, self.replicas.cluster_map), arguments[4] if len(arguments) == 5 else b"",
              _signed_payload(kind, channel, message))
        self.received_from_peers += 1
        if kind == b"S":
            return self.deliver_shard(channel, message)
        return self.deliver(channel, message)

    def deliver(self, channel: bytes, message: bytes) -> int:
        """Push a message to this node's subscribers of `channel` and of the patterns that
        match it; the number of clients (subscriptions) that received it, as Redis counts."""
        count = 0
        subscribers = self.channels.get(channel)
        if subscribers:
            frames = _Frames(b"message", channel, message)
            for subscriber in list(subscribers.values()):
                subscriber.target.push(frames.get(subscriber.state.protocol))
                count += 1
        for pattern, matched in list(self.patterns.items()):
            if not glob_match(pattern, channel):
                continue
            frames = _Frames(b"pmessage", pattern, channel, message)
            for subscriber in list(matched.values()):
                subscriber.target.push(frames.get(subscriber.state.protocol))
                count += 1
        return count

    def deliver_shard(self, channel: bytes, message: bytes) -> int:
        subscribers = self.shard_channels.get(channel)
        if not subscribers:
            return 0
        frames = _Frames(b"smessage", channel, message)
        for subscriber in list(subscribers.values()):
            subscriber.target.push(frames.get(subscriber.state.protocol))
        return len(subscribers)

    # -- PUBSUB ----------------------------------------------------------------------------
    def pubsub(self, state: ClientState, arguments: list[bytes]) -> object:
        """PUBSUB CHANNELS|NUMSUB|NUMPAT|SHARDCHANNELS|SHARDNUMSUB|HELP, over this node's
        subscriptions (as Redis Cluster answers it)."""
        if len(arguments) < 2:
            raise _arity("pubsub")
        sub = arguments[1].upper()
        count = len(arguments)
        if sub in (b"CHANNELS", b"SHARDCHANNELS") and count in (2, 3):
            registry = self.channels if sub == b"CHANNELS" else self.shard_channels
            pattern = arguments[2] if count == 3 else None
            return [name for name in registry
                    if pattern is None or glob_match(pattern, name)]
        if sub in (b"NUMSUB", b"SHARDNUMSUB"):
            registry = self.channels if sub == b"NUMSUB" else self.shard_channels
            reply: list[object] = []
            for name in arguments[2:]:
                reply += [name, len(registry.get(name, ()))]
            return reply
        if sub == b"NUMPAT":
            if count != 2:
                raise _arity("pubsub|numpat")
            return len(self.patterns)
        if sub == b"HELP" and count == 2:
            return [SimpleString(line) for line in _PUBSUB_HELP]
        if sub in (b"CHANNELS", b"SHARDCHANNELS", b"HELP"):
            raise CommandError(f"ERR unknown subcommand or wrong number of arguments for "
                               f"'{arguments[1].decode(errors='replace')}'. Try PUBSUB HELP.")
        raise CommandError(f"ERR unknown subcommand '{arguments[1].decode(errors='replace')}'"
                           f". Try PUBSUB HELP.")


def _forget(registry: dict[bytes, dict[int, Subscriber]], name: bytes, client_id: int) -> None:
    subscribers = registry.get(name)
    if subscribers is not None:
        subscribers.pop(client_id, None)
        if not subscribers:
            del registry[name]


def _signed_payload(kind: bytes, channel: bytes, message: bytes) -> bytes:
    return b"%b %d %b%b" % (kind, len(channel), channel, message)


# -- the fan-out to other nodes --------------------------------------------------------------
class PeerFanOut:
    """Sends every message published here to every other node of the cluster map, over one
    persistent, pipelined, fire-and-forget RESP link per node."""

    def __init__(self, replicas: ReplicaRegistry, client_tls: ssl.SSLContext | None) -> None:
        self.replicas = replicas
        self.client_tls = client_tls
        self.links: dict[str, PeerLink] = {}

    def send(self, kind: bytes, channel: bytes, message: bytes, secret: str) -> None:
        cmap = self.replicas.cluster_map
        me = self.replicas.config.id
        targets = [node_id for node_id, info in cmap.nodes.items()
                   if node_id != me and info.state != "decommissioned"]
        if not targets:
            return
        arguments = [PUBLISH_COMMAND, kind, channel, message]
        if secret:
            arguments.append(sign(secret, _signed_payload(kind, channel, message)))
        frame = encode_command(*arguments)
        for node_id in targets:
            link = self.links.get(node_id)
            if link is None:
                link = self.links[node_id] = PeerLink(self, node_id)
            link.enqueue(frame)
        if len(self.links) > len(targets):
            for node_id in [n for n in self.links if n not in targets]:
                self.links.pop(node_id).close()

    def dropped(self) -> int:
        return sum(link.dropped for link in self.links.values())

    def close(self) -> None:
        for link in self.links.values():
            link.close()
        self.links.clear()


class PeerLink:
    """One node's fire-and-forget link to another node: a bounded queue drained by a task
    that writes whole batches; replies are read and discarded by a second task."""

    def __init__(self, owner: PeerFanOut, node_id: str) -> None:
        self.owner = owner
        self.node_id = node_id
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.retry_at = 0.0
        self.sent = 0
        self.dropped = 0

    def enqueue(self, frame: bytes) -> None:
        connected = self.writer is not None and not self.writer.is_closing()
        if (not connected and time.monotonic() < self.retry_at) \
                or self.pending_bytes + len(frame) > LINK_QUEUE_BYTES:
            self.dropped += 1
            return
        self.pending.append(frame)
        self.pending_bytes += len(frame)
        self.wakeup.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            if not self.pending:
                continue
            if self.writer is None or self.writer.is_closing():
                try:
                    await self._connect()
                except (OSError, TimeoutError, ssl.SSLError, RuntimeError) as error:
                    # (RuntimeError: uvloop's write() on a connection already reset.)
                    logger.debug("pubsub link to %s: cannot connect: %s", self.node_id, error)
                    self._fail()
                    continue
            assert self.writer is not None
            batch = b"".join(self.pending)
            count = len(self.pending)
            self.pending.clear()
            self.pending_bytes = 0
            try:
                self.writer.write(batch)
                await asyncio.wait_for(self.writer.drain(), self._timeout())
            except (OSError, TimeoutError, ssl.SSLError, RuntimeError) as error:
                # RuntimeError: uvloop's write() on a handle the peer's reset already closed.
                logger.debug("pubsub link to %s: write failed: %s", self.node_id, error)
                self.dropped += count
                self._fail()
                continue
            self.sent += count

    def _timeout(self) -> float:
        return max(0.1, self.owner.replicas.config.request_timeout_ms / 1000)

    async def _connect(self) -> None:
        address = self.owner.replicas.resp_address(self.node_id)
        if address is None:
            raise OSError(f"no RESP address known for {self.node_id}")
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            address[0], address[1], ssl=self.owner.client_tls), self._timeout())
        hello = b""
        password = self.owner.replicas.config.requirepass
        if password:
            hello += encode_command(b"AUTH", password.encode())
        hello += encode_command(b"CLIENT", b"SETNAME", FORWARD_CLIENT_NAME)
        writer.write(hello)
        self.writer = writer
        self.reader_task = asyncio.get_running_loop().create_task(self._read(reader, writer))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read and discard the peer's replies (logging the first error), so its side never
        stops reading; the end of the stream closes the link."""
        parser = RespReplyParser()
        logged = False
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(65536):
                parser.feed(data)
                while (reply := parser.next_reply()) is not NEED_DATA:
                    if isinstance(reply, ErrorReply) and not logged:
                        logger.warning("pubsub link to %s: the peer answered %s",
                                       self.node_id, reply.text)
                        logged = True
        if self.writer is writer:
            self.writer = None
        writer.close()

    def _fail(self) -> None:
        self.dropped += len(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        self.retry_at = time.monotonic() + RETRY_S
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def close(self) -> None:
        for task in (self.task, self.reader_task):
            if task is not None:
                task.cancel()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

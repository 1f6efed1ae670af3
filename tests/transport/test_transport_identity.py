"""Node identity in the peer handshake (protocol version 2): a peer presenting another
incarnation than the one on record is refused on real sockets, in both directions, with the
reason logged on both sides; nothing it sends is delivered. Version 1 peers are still
understood, and a dialer falls back to version 1 for a peer that closes a version-2 hello."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from phalanx.ops.ports import free_port
from phalanx.placement import ClusterMap, NodeInfo
from phalanx.raft.messages import Heartbeat
from phalanx.raft.types import GroupId, Index, NodeId, Term
from phalanx.server.identity import PeerIncarnations
from phalanx.transport.codec import (
    MAGIC,
    NEED_DATA,
    FrameDecoder,
    decode_handshake,
    encode_handshake,
    verify_handshake,
)
from phalanx.transport.tcp import TcpTransport

pytestmark = pytest.mark.timeout(60)

CLUSTER = "test-cluster"
SECRET = b"s3cret"


def run(test: Callable[[], Coroutine[Any, Any, None]], timeout_s: float = 30.0) -> None:
    """Run one async test on a fresh loop, under a timeout; check it leaves no task behind."""

    async def main() -> None:
        async with asyncio.timeout(timeout_s):
            await test()
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks left behind: {leftover}"

    asyncio.run(main())




async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


class Inbox:
    """Collects what a transport delivers."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[tuple[GroupId, Any]]]] = []

    def on_messages(self, peer: str, batch: list[tuple[GroupId, Any]]) -> None:
        self.batches.append((peer, batch))

    def on_peer_lost(self, peer: str) -> None:
        pass

    def messages(self, peer: str | None = None) -> list[tuple[GroupId, Any]]:
        return [pair for source, batch in self.batches if peer in (None, source)
                for pair in batch]

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        await eventually(condition, timeout_s)


def heartbeat(source: str, target: str) -> Heartbeat:
    return Heartbeat(source=NodeId(source), target=NodeId(target), term=Term(1),
                     commit=Index(0), round=0)


class MapHolder:
    """A cluster map a test can change (what the node's map copy would say)."""

    def __init__(self) -> None:
        self.map = ClusterMap(version=1, survival_goal="zone", replication_factor=0,
                              nodes={}, shards={}, meta_voters=())

    def record(self, node_id: str, port: int, incarnation: str) -> None:
        info = NodeInfo(id=node_id, peer=f"127.0.0.1:{port}", resp="127.0.0.1:1",
                        incarnation=incarnation)
        self.map = ClusterMap(version=self.map.version + 1, survival_goal="zone",
                              replication_factor=0, nodes={**self.map.nodes, node_id: info},
                              shards={}, meta_voters=())


def make(node_id: str, port: int, peers: dict[str, tuple[str, int]], incarnation: str,
         tmp: Path, holder: MapHolder, inbox: Inbox) -> tuple[TcpTransport, PeerIncarnations]:
    identity = PeerIncarnations(node_id, tmp / node_id, incarnation, lambda: holder.map)
    transport = TcpTransport(node_id, ("127.0.0.1", port), peers, cluster_id=CLUSTER,
                             secret=SECRET, on_messages=inbox.on_messages,
                             on_peer_lost=inbox.on_peer_lost, incarnation=incarnation,
                             identity=identity, backoff_initial_s=0.02, backoff_max_s=0.1)
    return transport, identity


def test_a_wiped_peer_is_refused_both_ways_then_accepted_once_replaced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Proves: b remembers a as incarnation "a-old" (its own file, written when it first saw
    it); a comes back as "a-new". b refuses a's connections (as acceptor) AND a's answers (as
    dialer); each side logs the reason; a learns it is refused (`refused_by_peers`); nothing a
    sends is delivered to b and nothing b sends is delivered to a. Once b's map records
    "a-new" (what `finish_replace` does), the same transports connect and deliver; when the
    map moves on to yet another incarnation, b closes its established connections with a
    (`recheck_identities`)."""
    caplog.set_level(logging.ERROR)

    async def test() -> None:
        holder = MapHolder()
        port_a, port_b = free_port(), free_port()
        peers = {"a": ("127.0.0.1", port_a), "b": ("127.0.0.1", port_b)}
        inbox_a, inbox_b = Inbox(), Inbox()
        a, identity_a = make("a", port_a, peers, "a-new", tmp_path, holder, inbox_a)
        b, identity_b = make("b", port_b, peers, "b-1", tmp_path, holder, inbox_b)
        identity_b.seen("a", "a-old")  # b met a's previous incarnation
        assert PeerIncarnations("b", tmp_path / "b", "b-1",
                                lambda: holder.map).remembered() == {"a": "a-old"}, \
            "the memory is durable (a new instance reads it back)"
        await a.start()
        await b.start()
        try:
            a.send(GroupId(1), heartbeat("a", "b"))
            b.send(GroupId(1), heartbeat("b", "a"))
            # Refused as acceptor (a dials b) and as dialer (b dials a, a answers): a hears the
            # reason both ways; b counts the refused connections.
            await eventually(lambda: "b" in identity_a.refused_by_peers
                             and b.stats()["refused_connections"] >= 1
                             and "we refused a" in str(b.stats()["peers"]["a"]["refusal"]))
            await eventually(lambda: a.stats()["refused_connections"] >= 1)
            assert "phalanx replace a" in identity_a.refused_by_peers["b"]
            assert not a.is_connected("b") and not b.is_connected("a")
            assert inbox_a.messages() == [] and inbox_b.messages() == []
            logs = caplog.text
            assert "b refused peer a" in logs and "incarnation a-new" in logs, logs
            assert "a (incarnation a-new) was refused by peer b" in logs, logs
            # The replacement finished: the map records a's new incarnation.
            holder.record("a", port_a, "a-new")
            a.send(GroupId(1), heartbeat("a", "b"))
            b.send(GroupId(1), heartbeat("b", "a"))
            await inbox_b.wait_for(lambda: len(inbox_b.messages("a")) >= 1)
            await inbox_a.wait_for(lambda: len(inbox_a.messages("b")) >= 1)
            await eventually(lambda: "b" not in identity_a.refused_by_peers)
            assert identity_b.remembered()["a"] == "a-new"
            assert b.stats()["peers"]["a"]["incarnation"] == "a-new"
            assert b.recheck_identities() == []
            # Replaced again while "a-new" still runs: b closes its established connections.
            holder.record("a", port_a, "a-newer")
            assert set(b.recheck_identities()) == {"a"}
            await eventually(lambda: not b.is_connected("a")
                             and b.stats()["peers"]["a"]["inbound_connected"] is False)
        finally:
            await a.stop()
            await b.stop()

    run(test)


async def _raw_hello(port: int, frame: bytes) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame)
        await writer.drain()
        decoder = FrameDecoder()
        async with asyncio.timeout(5):
            while True:
                data = await reader.read(4096)
                if not data:
                    return None
                decoder.feed(data)
                answer = decoder.next_handshake()
                if answer is not NEED_DATA:
                    return answer
    finally:
        writer.close()


def test_version_1_peers_are_answered_in_version_1_unless_an_incarnation_is_on_record(
        tmp_path: Path) -> None:
    """Proves: a version-1 hello (no incarnation) from a peer with nothing on record gets a
    version-1 answer (old nodes keep working during an upgrade); from a peer whose
    incarnation is on record it is refused (a wiped node cannot slip in as an old version)."""

    async def test() -> None:
        holder = MapHolder()
        port_b = free_port()
        peers = {"a": ("127.0.0.1", free_port()), "c": ("127.0.0.1", free_port()),
                 "b": ("127.0.0.1", port_b)}
        b, identity_b = make("b", port_b, peers, "b-1", tmp_path, holder, Inbox())
        identity_b.seen("c", "c-1")
        await b.start()
        try:
            answer = await _raw_hello(port_b, encode_handshake(
                NodeId("a"), CLUSTER, secret=SECRET, nonce=b"n" * 16, version=1))
            assert answer is not None and answer.version == 1 and answer.incarnation == ""
            verify_handshake(answer, cluster_id=CLUSTER, secret=SECRET, bind=b"n" * 16)
            refused = await _raw_hello(port_b, encode_handshake(
                NodeId("c"), CLUSTER, secret=SECRET, nonce=b"n" * 16, version=1))
            assert refused is None  # closed without an answer: v1 cannot carry a refusal
            await eventually(lambda: b.stats()["refused_connections"] >= 1)
            assert "protocol version 1" in str(b.stats()["peers"]["c"]["refusal"])
        finally:
            await b.stop()

    run(test)


def test_a_dialer_falls_back_to_version_1_for_an_old_peer(tmp_path: Path) -> None:
    """Proves: an "old" acceptor (a raw server speaking version 1 only: it closes a version-2
    hello) is reached: the dialer's next hello is version 1, the old peer answers, the
    connection is established and messages flow."""

    async def test() -> None:
        holder = MapHolder()
        hellos: list[int] = []
        received = asyncio.Event()

        handlers: list[asyncio.Task[Any]] = []

        async def old_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.append(task)
            try:
                header = await reader.readexactly(10)
                magic, version, length = struct.unpack(">4sHI", header)
                assert magic == MAGIC
                hellos.append(version)
                body = await reader.readexactly(length)
                if version != 1:
                    return  # an old node refuses (closes) what it does not speak
                hello = decode_handshake(header + body)
                writer.write(encode_handshake(NodeId("old"), CLUSTER, secret=SECRET,
                                              nonce=b"m" * 16, bind=hello.nonce, version=1))
                await writer.drain()
                await reader.readexactly(10)  # the proof's header, then batches
                data = await reader.read(65536)
                if data:
                    received.set()
                await reader.read(65536)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(old_peer, "127.0.0.1", 0)
        port_old = server.sockets[0].getsockname()[1]
        port_a = free_port()
        a, _ = make("a", port_a, {"old": ("127.0.0.1", port_old)}, "a-1", tmp_path, holder,
                    Inbox())
        await a.start()
        try:
            a.send(GroupId(1), heartbeat("a", "old"))
            await eventually(lambda: a.is_connected("old"))
            a.send(GroupId(1), heartbeat("a", "old"))
            async with asyncio.timeout(10):
                await received.wait()
            assert hellos[0] == 2 and 1 in hellos, hellos
        finally:
            await a.stop()
            server.close()
            await server.wait_closed()
            async with asyncio.timeout(10):
                await asyncio.gather(*handlers, return_exceptions=True)

    run(test)

"""Tests of the asyncio TCP peer transport on real loopback sockets.

Each test is a plain function running its own event loop (`asyncio.run` style, no plugin) under
an asyncio timeout and a pytest-timeout. Ports come from `phalanx.ops.ports.free_port`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from phalanx.errors import ConfigError
from phalanx.ops.ports import free_port
from phalanx.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from phalanx.raft.types import (
    ConfState,
    Entry,
    EntryType,
    GroupId,
    Index,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)
from phalanx.transport.codec import (
    MAGIC,
    NEED_DATA,
    FrameDecoder,
    encode_batch,
    encode_handshake,
)
from phalanx.transport.faults import FaultRules
from phalanx.transport.tcp import KEEPALIVE_FRAME, TcpTransport

pytestmark = pytest.mark.timeout(60)

CLUSTER = "test-cluster"
SECRET = b"s3cret"

# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def run(test: Callable[[], Coroutine[Any, Any, None]], *, timeout_s: float = 30.0,
        loop: str = "asyncio") -> None:
    """Run one async test on a fresh loop, under a timeout; check it leaves no task behind."""

    async def main() -> None:
        async with asyncio.timeout(timeout_s):
            await test()
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks left behind: {leftover}"

    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())




def loopback_aliases() -> bool:
    """127.0.0.2 and 127.0.0.3 are usable (true on Linux without setup)."""
    try:
        for host in ("127.0.0.2", "127.0.0.3"):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((host, 0))
    except OSError:
        return False
    return True


class Inbox:
    """Collects what a transport delivers, and lets a test wait for it."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[tuple[GroupId, Message]]]] = []
        self.lost: list[str] = []
        self._changed = asyncio.Event()

    def on_messages(self, peer: str, batch: list[tuple[GroupId, Message]]) -> None:
        self.batches.append((peer, batch))
        self._changed.set()

    def on_peer_lost(self, peer: str) -> None:
        self.lost.append(peer)
        self._changed.set()

    def messages(self, peer: str | None = None) -> list[tuple[GroupId, Message]]:
        return [pair for source, batch in self.batches if peer in (None, source)
                for pair in batch]

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()


def holds(inbox: Inbox, count: int) -> Callable[[], bool]:
    return lambda: len(inbox.messages()) == count


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def cluster(
    ids: list[str], hosts: list[str] | None = None, **options: Any
) -> tuple[dict[str, tuple[str, int]], dict[str, Inbox], dict[str, TcpTransport]]:
    hosts = hosts or ["127.0.0.1"] * len(ids)
    addresses = {node: (host, free_port(host)) for node, host in zip(ids, hosts, strict=True)}
    inboxes = {node: Inbox() for node in ids}
    transports = {node: make(node, addresses, inboxes[node], **options) for node in ids}
    return addresses, inboxes, transports


def make(node: str, addresses: dict[str, tuple[str, int]], inbox: Inbox,
         **options: Any) -> TcpTransport:
    options.setdefault("cluster_id", CLUSTER)
    options.setdefault("secret", SECRET)
    options.setdefault("rng", random.Random(node))
    return TcpTransport(node, addresses[node], addresses, on_messages=inbox.on_messages,
                        on_peer_lost=inbox.on_peer_lost, **options)


async def start_all(transports: dict[str, TcpTransport]) -> None:
    for transport in transports.values():
        await transport.start()


async def stop_all(transports: dict[str, TcpTransport]) -> None:
    for transport in transports.values():
        await transport.stop()


def sample_messages(source: str, target: str, n: int) -> list[tuple[GroupId, Message]]:
    """`n` messages of every type in turn, each distinguishable by its term."""
    s, t = NodeId(source), NodeId(target)
    out: list[tuple[GroupId, Message]] = []
    for i in range(n):
        term = Term(i)
        kind = i % 10
        message: Message
        if kind == 0:
            message = RequestVote(source=s, target=t, term=term, last_log_index=Index(i),
                                  last_log_term=Term(i), pre_vote=i % 3 == 0)
        elif kind == 1:
            message = RequestVoteResponse(source=s, target=t, term=term, granted=True)
        elif kind == 2:
            message = AppendEntries(
                source=s, target=t, term=term, prev_log_index=Index(i), prev_log_term=term,
                commit=Index(i),
                entries=tuple(Entry(term, Index(i + k), EntryType.NORMAL, b"v" * k)
                              for k in range(i % 7)),
            )
        elif kind == 3:
            message = AppendEntriesResponse(source=s, target=t, term=term, success=False,
                                            index=Index(i), reject_hint=Index(1))
        elif kind == 4:
            message = Heartbeat(source=s, target=t, term=term, commit=Index(i), round=i)
        elif kind == 5:
            message = HeartbeatResponse(source=s, target=t, term=term, round=i)
        elif kind == 6:
            meta = SnapshotMeta(index=Index(i), term=term,
                                conf_state=ConfState(voters=(s, t), learners=(NodeId("n9"),)))
            message = InstallSnapshot(source=s, target=t, term=term,
                                      snapshot=Snapshot(meta=meta, data=b"snap" * 10))
        elif kind == 7:
            message = TimeoutNow(source=s, target=t, term=term)
        elif kind == 8:
            message = ReadIndexRequest(source=s, target=t, term=term, context=b"ctx%d" % i)
        else:
            message = ReadIndexResponse(source=s, target=t, term=term, context=b"c",
                                        index=Index(i))
        out.append((GroupId(i % 13), message))
    return out


def heartbeats(source: str, target: str, n: int, start: int = 0) -> list[tuple[GroupId, Message]]:
    return [(GroupId(i % 64), Heartbeat(source=NodeId(source), target=NodeId(target),
                                       term=Term(7), commit=Index(i), round=i))
            for i in range(start, start + n)]


def rounds(pairs: list[tuple[GroupId, Message]]) -> list[int]:
    return [message.round for _, message in pairs if isinstance(message, Heartbeat)]


async def read_hello(reader: asyncio.StreamReader) -> Any:
    """Read one handshake frame (a dialer's hello, or an acceptor's answer)."""
    decoder = FrameDecoder()
    while (hello := decoder.next_handshake()) is NEED_DATA:
        decoder.feed(await reader.read(4096))
    return hello


async def authenticate_as(address: tuple[str, int], node: str,
                          secret: bytes = SECRET) -> tuple[asyncio.StreamReader,
                                                           asyncio.StreamWriter]:
    """Dial `address` and run the three-frame challenge-response as `node`."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(encode_handshake(NodeId(node), CLUSTER, secret=secret, nonce=b"hello-nonce"))
    answer = await read_hello(reader)
    writer.write(encode_handshake(NodeId(node), CLUSTER, secret=secret, bind=answer.nonce))
    return reader, writer


async def raw_exchange(address: tuple[str, int], payload: bytes,
                       timeout_s: float = 15.0) -> bytes:
    """Connect, send `payload`, and read until the transport closes the connection."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(payload)
        await writer.drain()
        received = b""
        async with asyncio.timeout(timeout_s):
            while chunk := await reader.read(65536):
                received += chunk
        return received
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


# ----------------------------------------------------------------------------------------------
# Exchange, order, batching
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_two_transports_exchange_every_message_type_in_order(loop: str) -> None:
    async def test() -> None:
        _, inboxes, transports = cluster(["a", "b"])
        await start_all(transports)
        try:
            a_to_b = sample_messages("a", "b", 3000)
            b_to_a = sample_messages("b", "a", 3000)
            for i in range(0, 3000, 100):  # interleave sends with the loop running
                transports["a"].send_many(a_to_b[i:i + 100])
                for pair in b_to_a[i:i + 100]:
                    transports["b"].send(*pair)
                await asyncio.sleep(0)
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 3000)
            await inboxes["a"].wait_for(lambda: len(inboxes["a"].messages()) == 3000)
            assert inboxes["b"].messages("a") == a_to_b
            assert inboxes["a"].messages("b") == b_to_a
            stats = transports["a"].stats()
            peer = stats["peers"]["b"]
            assert peer["connected"] and peer["inbound_connected"]
            assert peer["messages_sent"] == 3000 and peer["messages_received"] == 3000
            assert peer["bytes_sent"] > 0 and peer["bytes_received"] > 0
            assert peer["dropped_queue_full"] == peer["dropped_fault"] == 0
            assert stats["refused_connections"] == 0
            assert inboxes["a"].lost == [] and inboxes["b"].lost == []
        finally:
            await stop_all(transports)

    run(test, loop=loop)


@pytest.mark.skipif(not loopback_aliases(), reason="no 127.0.0.2/127.0.0.3 loopback aliases")
def test_three_transports_on_their_own_addresses(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="phalanx.transport.tcp")

    async def test() -> None:
        ids = ["n1", "n2", "n3"]
        hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        addresses = {node: (host, free_port(host)) for node, host in zip(ids, hosts, strict=True)}
        inboxes = {node: Inbox() for node in ids}
        transports = {
            node: make(node, addresses, inboxes[node], source_host=addresses[node][0])
            for node in ids
        }
        await start_all(transports)
        try:
            sent: dict[tuple[str, str], list[tuple[GroupId, Message]]] = {}
            for source in ids:
                for target in ids:
                    if source != target:
                        sent[source, target] = sample_messages(source, target, 1000)
                        transports[source].send_many(sent[source, target])
            for node in ids:
                await inboxes[node].wait_for(holds(inboxes[node], 2000))
            for (source, target), pairs in sent.items():
                assert inboxes[target].messages(source) == pairs
        finally:
            await stop_all(transports)

    run(test)
    # Connections are sourced from each node's own address (so iptables rules per address work).
    accepted = [r.getMessage() for r in caplog.records if " accepted peer " in r.getMessage()]
    assert any(line.startswith("n1 accepted peer n2 from 127.0.0.2:") for line in accepted)
    assert any(line.startswith("n2 accepted peer n3 from 127.0.0.3:") for line in accepted)


def test_many_sends_are_batched_into_few_frames() -> None:
    async def test() -> None:
        _, inboxes, transports = cluster(["a", "b"])
        await start_all(transports)
        try:
            transports["a"].send_many(heartbeats("a", "b", 1))  # connect first
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 1)
            inboxes["b"].batches.clear()
            transports["a"].send_many(heartbeats("a", "b", 5000))  # no await in between
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 5000)
            # 5000 messages, at most 4096 per frame: two frames (a reader may see them in one go)
            assert len(inboxes["b"].batches) == 2
            assert rounds(inboxes["b"].messages()) == list(range(5000))
        finally:
            await stop_all(transports)

    run(test)


def test_a_batch_too_large_for_one_frame_is_split_and_an_oversize_message_dropped() -> None:
    async def test() -> None:
        _, inboxes, transports = cluster(["a", "b"], max_frame_bytes=4096)
        await start_all(transports)
        try:
            big = AppendEntries(source=NodeId("a"), target=NodeId("b"), term=Term(1),
                                prev_log_index=Index(0), prev_log_term=Term(0), commit=Index(0),
                                entries=(Entry(Term(1), Index(1), EntryType.NORMAL, b"x" * 8000),))
            pairs = heartbeats("a", "b", 300)
            transports["a"].send_many(pairs[:150])
            transports["a"].send(GroupId(1), big)
            transports["a"].send_many(pairs[150:])
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 300)
            assert inboxes["b"].messages() == pairs
            assert len(inboxes["b"].batches) > 1
            peer = transports["a"].stats()["peers"]["b"]
            assert peer["dropped_oversize"] == 1
            assert "AppendEntries" in peer["last_error"]
        finally:
            await stop_all(transports)

    run(test)


def test_unknown_targets_are_dropped_and_counted() -> None:
    async def test() -> None:
        _, _, transports = cluster(["a", "b"])
        transport = transports["a"]
        transport.send_many(heartbeats("a", "zz", 3))
        transport.send_many(heartbeats("a", "a", 1))  # itself is not a peer
        assert transport.stats()["dropped_unknown_peer"] == 4
        assert set(transport.stats()["peers"]) == {"b"}

    run(test)


# ----------------------------------------------------------------------------------------------
# Connection lifecycle
# ----------------------------------------------------------------------------------------------


def test_reconnects_after_the_peer_listener_restarts() -> None:
    async def test() -> None:
        addresses, inboxes, transports = cluster(["a", "b"])
        await start_all(transports)
        a = transports["a"]
        try:
            a.send_many(heartbeats("a", "b", 10))
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 10)
            await transports["b"].stop()
            await inboxes["a"].wait_for(lambda: "b" in inboxes["a"].lost)
            await eventually(lambda: not a.stats()["peers"]["b"]["connected"])
            a.send_many(heartbeats("a", "b", 20, start=10))  # kept while disconnected
            await asyncio.sleep(0.3)  # a few failed reconnect attempts
            assert a.stats()["peers"]["b"]["last_error"]
            inboxes["b2"] = Inbox()
            transports["b"] = make("b", addresses, inboxes["b2"])
            await transports["b"].start()
            await inboxes["b2"].wait_for(lambda: len(inboxes["b2"].messages()) == 20)
            assert rounds(inboxes["b2"].messages()) == list(range(10, 30))
            a.send_many(heartbeats("a", "b", 5, start=30))
            await inboxes["b2"].wait_for(lambda: len(inboxes["b2"].messages()) == 25)
            stats = a.stats()["peers"]["b"]
            assert stats["connected"] and stats["reconnects"] == 1
        finally:
            await stop_all(transports)

    run(test)


def test_a_peer_that_connects_to_us_cuts_our_reconnect_backoff_short() -> None:
    """A restarted node dials its peers at once; each peer must then dial back at once rather
    than after its backoff (here 30 s): until then the restarted node hears nothing from it,
    votes included (a kill -9 failover right after a restart took a second because of it)."""
    async def test() -> None:
        addresses, inboxes, transports = cluster(["a", "b"], backoff_initial_s=30.0,
                                                 backoff_max_s=30.0)
        a = transports["a"]
        await a.start()  # b is down: a's first dial fails, then it backs off for 30 s
        try:
            await eventually(lambda: bool(a.stats()["peers"]["b"]["last_error"]))
            transports["b"] = make("b", addresses, inboxes["b"], backoff_initial_s=30.0,
                                   backoff_max_s=30.0)
            await transports["b"].start()
            transports["b"].send_many(heartbeats("b", "a", 1))  # b dials a
            await inboxes["a"].wait_for(lambda: len(inboxes["a"].messages()) == 1)
            a.send_many(heartbeats("a", "b", 3))
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 3,
                                        timeout_s=15.0)  # the backoff is 30 s
        finally:
            await stop_all(transports)

    run(test)


def test_on_peer_lost_fires_when_a_peer_stops() -> None:
    async def test() -> None:
        # The idle timeout (120 s) is far past the waits below (10 s each): a loss noticed
        # within them took the fast path (the closed connection), never a timeout. (It was
        # "noticed within 1.0 s" with the default 5 s idle timeout: a timed assertion that a
        # loaded machine can break.)
        _, inboxes, transports = cluster(["a", "b", "c"], idle_timeout_s=120.0)
        await start_all(transports)
        try:
            for source in transports:
                for target in transports:
                    if source != target:
                        transports[source].send_many(heartbeats(source, target, 1))
            for node in transports:
                await inboxes[node].wait_for(holds(inboxes[node], 2))
            await transports["b"].stop()
            await inboxes["a"].wait_for(lambda: "b" in inboxes["a"].lost, timeout_s=10.0)
            await inboxes["c"].wait_for(lambda: "b" in inboxes["c"].lost, timeout_s=10.0)
            # One call per lost connection (inbound from b and outbound to b) at most.
            await asyncio.sleep(0.2)
            assert 1 <= inboxes["a"].lost.count("b") <= 2
            assert set(inboxes["a"].lost) == {"b"}
            assert inboxes["b"].lost == []  # never during its own stop()
        finally:
            await stop_all(transports)

    run(test)


def test_idle_connections_stay_up_with_keepalives() -> None:
    async def test() -> None:
        # A whole-process stall longer than the idle timeout drops a connection by design (the
        # peer's keepalive timer stalls too): 0.4 s was within reach of a loaded machine's
        # stalls, so the idle timeout is 2 s and keepalives go every 0.1 s.
        _, inboxes, transports = cluster(["a", "b"], keepalive_interval_s=0.1,
                                         idle_timeout_s=2.0)
        await start_all(transports)
        try:
            transports["a"].send_many(heartbeats("a", "b", 1))
            transports["b"].send_many(heartbeats("b", "a", 1))
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 1)
            await inboxes["a"].wait_for(lambda: len(inboxes["a"].messages()) == 1)
            await asyncio.sleep(6.0)  # three idle timeouts without Raft traffic
            assert inboxes["a"].lost == [] and inboxes["b"].lost == []
            assert transports["a"].stats()["peers"]["b"]["reconnects"] == 0
            assert len(inboxes["b"].batches) == 1  # keepalives are not delivered
        finally:
            await stop_all(transports)

    run(test)


def test_a_silent_peer_is_declared_lost_after_the_idle_timeout() -> None:
    """A peer that answers the handshake and then freezes (SIGSTOP, partition) is noticed."""

    async def test() -> None:
        frozen_connections: list[asyncio.StreamWriter] = []

        async def frozen_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            hello = await read_hello(reader)
            writer.write(encode_handshake(NodeId("b"), CLUSTER, secret=SECRET, nonce=b"b-nonce",
                                          bind=hello.nonce))
            frozen_connections.append(writer)  # then nothing, ever

        server = await asyncio.start_server(frozen_peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        addresses = {"a": ("127.0.0.1", free_port()), "b": ("127.0.0.1", port)}
        inbox = Inbox()
        a = make("a", addresses, inbox, keepalive_interval_s=0.05, idle_timeout_s=0.3)
        await a.start()
        try:
            a.send_many(heartbeats("a", "b", 1))
            await inbox.wait_for(lambda: "b" in inbox.lost, timeout_s=10.0)
            assert frozen_connections  # it did connect, and was declared lost afterwards
            assert "no keepalive from b" in a.stats()["peers"]["b"]["last_error"]
        finally:
            await a.stop()
            for writer in frozen_connections:
                writer.close()
            server.close()
            await server.wait_closed()

    run(test)


def test_stop_leaves_no_tasks_and_is_idempotent() -> None:
    async def test() -> None:
        _, inboxes, transports = cluster(["a", "b", "c"])
        await start_all(transports)
        transports["a"].send_many(heartbeats("a", "b", 100))
        transports["a"].send_many(heartbeats("a", "c", 100))
        await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 100)
        assert len(asyncio.all_tasks()) > 1
        await stop_all(transports)
        await stop_all(transports)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        transports["a"].send_many(heartbeats("a", "b", 1))  # after stop: silently nothing

    run(test)  # `run` checks asyncio.all_tasks() too


def test_a_transport_cannot_start_twice_and_bad_limits_are_config_errors() -> None:
    async def test() -> None:
        _, _, transports = cluster(["a", "b"])
        await transports["a"].start()
        try:
            with pytest.raises(ConfigError):
                await transports["a"].start()
        finally:
            await transports["a"].stop()

    run(test)
    addresses = {"a": ("127.0.0.1", 1), "b": ("127.0.0.1", 2)}
    for bad in ({"queue_limit": 0}, {"idle_timeout_s": 0.5, "keepalive_interval_s": 1.0},
                {"write_timeout_s": 0}, {"max_frame_bytes": 10}):
        with pytest.raises(ConfigError):
            make("a", addresses, Inbox(), **bad)


# ----------------------------------------------------------------------------------------------
# Untrusted input
# ----------------------------------------------------------------------------------------------


def test_rogue_clients_are_refused_and_the_transport_keeps_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="phalanx.transport.tcp")

    async def test() -> None:
        # 2 s: the real peer's own handshake must not time out on a loaded machine (it would
        # be refused too, and counted); the silent rogue is closed after it.
        _, inboxes, transports = cluster(["a", "b"], handshake_timeout_s=2.0)
        await start_all(transports)
        b_address = transports["b"].listen_address
        try:
            # HTTP probe, Redis client, a stranger cluster, a bad secret, no secret, an unknown
            # node, and a client that never says anything.
            rogues = [
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                b"*1\r\n$4\r\nPING\r\n",
                encode_handshake(NodeId("a"), "other-cluster", secret=SECRET),
                encode_handshake(NodeId("a"), CLUSTER, secret=b"wrong"),
                encode_handshake(NodeId("a"), CLUSTER),
                encode_handshake(NodeId("mallory"), CLUSTER, secret=SECRET),
                b"",
            ]
            answers = await asyncio.gather(*(raw_exchange(b_address, rogue) for rogue in rogues))
            assert answers == [b""] * len(rogues)  # closed without a handshake answer
            assert transports["b"].stats()["refused_connections"] == len(rogues)
            # The real peer is unaffected.
            transports["a"].send_many(heartbeats("a", "b", 50))
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 50)
        finally:
            await stop_all(transports)

    run(test)
    refused = [r.getMessage() for r in caplog.records
               if r.getMessage().startswith("refused peer connection from 127.0.0.1:")]
    assert len(refused) == 7
    text = "\n".join(refused)
    for reason in ("not a phalanx peer", "other-cluster", "wrong HMAC", "no authentication tag",
                   "unknown node id 'mallory'", "no handshake within 2 s"):
        assert reason in text


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_silent_inbound_peer_gets_keepalives_then_is_dropped_after_the_idle_timeout(
    loop: str,
) -> None:
    """The acceptor's keepalives and idle check run from one timer per connection: a dialer
    that authenticates and then says nothing gets a keepalive every interval, and is dropped
    (once, with the reason) after the idle timeout."""

    async def test() -> None:
        _, inboxes, transports = cluster(["a", "c"], keepalive_interval_s=0.1,
                                         idle_timeout_s=2.0)
        a = transports["a"]
        await a.start()
        try:
            started = time.monotonic()
            reader, writer = await authenticate_as(a.listen_address, "c")
            writer.write(encode_batch(heartbeats("c", "a", 3)))
            received = b""
            with contextlib.suppress(ConnectionError):
                async with asyncio.timeout(20):
                    while chunk := await reader.read(65536):
                        received += chunk
            elapsed = time.monotonic() - started
            writer.close()
            decoder = FrameDecoder()
            decoder.feed(received)
            keepalives = 0
            while (batch := decoder.next_batch()) is not NEED_DATA:
                assert batch == []
                keepalives += 1
            # Dropped after the idle timeout, not before; the upper bound only says "dropped by
            # the idle check, not by the 20 s read timeout above" (it was < 3.0 s for a 0.5 s
            # timeout: a timed assertion a loaded machine can break).
            assert 1.95 <= elapsed < 20.0
            assert keepalives >= 4  # about one per 100 ms for 2 s
            await inboxes["a"].wait_for(lambda: inboxes["a"].lost == ["c"])
            assert len(inboxes["a"].messages("c")) == 3
            assert "no data from c for 2 s" in a.stats()["peers"]["c"]["last_error"]
        finally:
            await a.stop()

    run(test, loop=loop)


def test_a_peer_that_stops_reading_times_out_the_write() -> None:
    """Below the write buffer's low-water mark the sender does not drain; above it, the
    drain is bounded by write_timeout_s: a peer that stops reading is dropped."""

    async def test() -> None:
        stuck: list[asyncio.StreamWriter] = []

        async def never_reads(reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
            hello = await read_hello(reader)
            writer.write(encode_handshake(NodeId("b"), CLUSTER, secret=SECRET,
                                          nonce=b"b-nonce", bind=hello.nonce))
            stuck.append(writer)
            task = asyncio.current_task()
            assert task is not None
            tasks.append(task)
            while not writer.is_closing():  # keepalives only, never reads again
                writer.write(KEEPALIVE_FRAME)
                await asyncio.sleep(0.05)

        server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
        tasks: list[asyncio.Task[None]] = []
        port = server.sockets[0].getsockname()[1]
        addresses = {"a": ("127.0.0.1", free_port()), "b": ("127.0.0.1", port)}
        inbox = Inbox()
        a = make("a", addresses, inbox, write_timeout_s=0.3, idle_timeout_s=10.0)
        await a.start()
        try:
            big = b"x" * 60_000
            for i in range(400):  # about 24 MB: more than socket buffers and the high water
                a.send(GroupId(1), AppendEntries(
                    source=NodeId("a"), target=NodeId("b"), term=Term(1),
                    prev_log_index=Index(i), prev_log_term=Term(1), commit=Index(0),
                    entries=(Entry(Term(1), Index(i + 1), EntryType.NORMAL, big),)))
                await asyncio.sleep(0)
            await inbox.wait_for(lambda: "b" in inbox.lost, timeout_s=8.0)
            assert "write timed out" in a.stats()["peers"]["b"]["last_error"]
        finally:
            await a.stop()
            for writer in stuck:
                writer.transport.abort()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            server.close()
            await server.wait_closed()

    run(test)


def test_a_peer_speaking_garbage_after_its_handshake_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def test() -> None:
        _, inboxes, transports = cluster(["a", "b", "c"])
        await start_all(transports)
        try:
            # "c" authenticates, then sends a malformed frame (a message array of the wrong shape)
            body = msgpack.packb([[5, 1, "c", "a"]], use_bin_type=True)
            await transports["c"].stop()  # so only the rogue speaks as c
            reader, writer = await authenticate_as(transports["a"].listen_address, "c")
            writer.write(encode_batch(heartbeats("c", "a", 2)) + struct.pack(">I", len(body))
                         + body)
            answer = b""
            with contextlib.suppress(ConnectionError):
                async with asyncio.timeout(5):
                    while chunk := await reader.read(65536):
                        answer += chunk
            writer.close()
            decoder = FrameDecoder()
            decoder.feed(answer)
            while (batch := decoder.next_batch()) is not NEED_DATA:
                assert batch == []  # only keepalives
            # The two good messages before the garbage were delivered, then the peer dropped.
            await inboxes["a"].wait_for(lambda: "c" in inboxes["a"].lost)
            assert len(inboxes["a"].messages("c")) == 2
            assert transports["a"].stats()["peers"]["c"]["protocol_errors"] == 1
            transports["b"].send_many(heartbeats("b", "a", 10))
            await inboxes["a"].wait_for(lambda: len(inboxes["a"].messages("b")) == 10)
        finally:
            await stop_all(transports)

    caplog.set_level(logging.INFO, logger="phalanx.transport.tcp")
    run(test)
    assert any("a dropped peer c" in r.getMessage() and "protocol error" in r.getMessage()
               for r in caplog.records)


def test_the_dialer_checks_who_answers() -> None:
    """An address that answers as another node (misconfiguration) is not trusted."""

    async def test() -> None:
        async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(4096)
            writer.write(encode_handshake(NodeId("c"), CLUSTER, secret=SECRET))
            with contextlib.suppress(ConnectionError):
                await reader.read(4096)
            writer.close()

        server = await asyncio.start_server(impostor, "127.0.0.1", 0)
        addresses = {"a": ("127.0.0.1", free_port()),
                     "b": ("127.0.0.1", server.sockets[0].getsockname()[1])}
        inbox = Inbox()
        a = make("a", addresses, inbox)
        await a.start()
        try:
            await eventually(lambda: bool(a.stats()["peers"]["b"]["last_error"]))
            stats = a.stats()["peers"]["b"]
            assert "answered as node 'c'" in stats["last_error"]
            assert not stats["connected"] and inbox.lost == []
        finally:
            await a.stop()
            server.close()
            await server.wait_closed()

    run(test)


def test_keepalive_frame_is_an_empty_batch() -> None:
    decoder = FrameDecoder()
    decoder.feed(KEEPALIVE_FRAME)
    assert decoder.next_batch() == []
    assert not KEEPALIVE_FRAME.startswith(MAGIC)


# ----------------------------------------------------------------------------------------------
# Queue bound and fault rules
# ----------------------------------------------------------------------------------------------


def test_the_queue_bound_drops_the_oldest_and_counts() -> None:
    async def test() -> None:
        _, inboxes, transports = cluster(["a", "b"], queue_limit=100)
        a = transports["a"]
        await a.start()  # b is not running yet: everything queues
        try:
            a.send_many(heartbeats("a", "b", 150))
            await asyncio.sleep(0.1)
            stats = a.stats()["peers"]["b"]
            assert stats["dropped_queue_full"] == 50 and stats["queued"] == 100
            assert not stats["connected"]
            await transports["b"].start()
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 100)
            assert rounds(inboxes["b"].messages()) == list(range(50, 150))  # the newest
        finally:
            await stop_all(transports)

    run(test)


def test_fault_rules_drop_outbound_and_inbound_and_clear() -> None:
    async def test() -> None:
        rules_a, rules_b = FaultRules(), FaultRules()
        addresses, inboxes, transports = cluster(["a", "b"])
        transports["a"] = make("a", addresses, inboxes["a"], fault_rules=rules_a)
        transports["b"] = make("b", addresses, inboxes["b"], fault_rules=rules_b)
        await start_all(transports)
        a, b = transports["a"], transports["b"]
        try:
            rules_a.set_drop_to(["b"])
            a.send_many(heartbeats("a", "b", 10))
            rules_b.set_drop_from(["a"])
            rules_a.clear()
            a.send_many(heartbeats("a", "b", 20, start=10))  # sent, but b drops them on arrival
            await eventually(lambda: b.stats()["peers"]["a"]["dropped_fault"] == 20)
            assert a.stats()["peers"]["b"]["dropped_fault"] == 10
            rules_b.update_from_json({})
            a.send_many(heartbeats("a", "b", 5, start=30))
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 5)
            assert rounds(inboxes["b"].messages()) == list(range(30, 35))
            # Probabilistic drops, counted.
            rules_a.set_drop_probability(0.5)
            a.send_many(heartbeats("a", "b", 1000, start=100))
            rules_a.clear()
            dropped = a.stats()["peers"]["b"]["dropped_fault"] - 10
            assert 350 < dropped < 650
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 5 + 1000 - dropped)
            received = rounds(inboxes["b"].messages())[5:]
            assert received == sorted(received)
        finally:
            await stop_all(transports)

    run(test)


def test_delays_keep_per_peer_order() -> None:
    async def test() -> None:
        rules = FaultRules(rng=random.Random(3))
        addresses, inboxes, transports = cluster(["a", "b", "c"])
        transports["a"] = make("a", addresses, inboxes["a"], fault_rules=rules)
        await start_all(transports)
        a = transports["a"]
        arrival: dict[int, float] = {}

        def record(peer: str, batch: list[tuple[GroupId, Message]]) -> None:
            now = asyncio.get_running_loop().time()
            for round_number in rounds(batch):
                arrival.setdefault(round_number, now)
            Inbox.on_messages(inboxes["b"], peer, batch)

        inboxes["b"].on_messages = record  # type: ignore[method-assign]
        transports["b"]._on_messages = record
        try:
            a.send_many(heartbeats("a", "b", 1))  # connect
            a.send_many(heartbeats("a", "c", 1))
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 1)
            await inboxes["c"].wait_for(lambda: len(inboxes["c"].messages()) == 1)
            # b's delay (3 s) is far longer than c's messages take even on a loaded machine:
            # c is not delayed iff its messages arrive while b's are still held (an order,
            # not a timed assertion: it was "c within 0.2 s" against a 200 ms delay).
            rules.set_delay("b", 3000, 100)
            loop = asyncio.get_running_loop()
            sent_at = loop.time()
            a.send_many(heartbeats("a", "b", 50, start=1))
            rules.set_delay("b", 0, 0)  # later messages may not overtake the delayed ones
            a.send_many(heartbeats("a", "b", 50, start=51))
            rules.clear()
            a.send_many(heartbeats("a", "b", 50, start=101))
            a.send_many(heartbeats("a", "c", 10, start=1))  # c is not delayed
            await inboxes["c"].wait_for(lambda: len(inboxes["c"].messages()) == 11)
            assert len(inboxes["b"].messages()) == 1
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages()) == 151)
            assert rounds(inboxes["b"].messages()) == list(range(151))
            assert min(arrival[r] for r in range(1, 151)) - sent_at >= 3.0
            assert a.stats()["peers"]["b"]["queued"] == 0
        finally:
            await stop_all(transports)

    run(test)


def test_delayed_messages_pending_at_stop_leave_no_timer_or_task() -> None:
    async def test() -> None:
        rules = FaultRules.from_json({"delay_to": {"*": {"ms": 5000}}})
        addresses, inboxes, transports = cluster(["a", "b"])
        transports["a"] = make("a", addresses, inboxes["a"], fault_rules=rules)
        await start_all(transports)
        transports["a"].send_many(heartbeats("a", "b", 10))
        assert transports["a"].stats()["peers"]["b"]["queued"] == 10
        await stop_all(transports)
        assert inboxes["b"].messages() == []

    run(test)


# ----------------------------------------------------------------------------------------------
# Throughput (a smoke check; the number is reported, not a benchmark)
# ----------------------------------------------------------------------------------------------


async def measure_heartbeats_per_second(total: int = 200_000) -> float:
    _, _, transports = cluster(["a", "b"])
    await start_all(transports)
    try:
        a = transports["a"]
        count = 0

        def on_messages(peer: str, batch: list[tuple[GroupId, Message]]) -> None:
            nonlocal count
            count += len(batch)

        transports["b"]._on_messages = on_messages
        a.send_many(heartbeats("a", "b", 1))
        await eventually(lambda: count == 1)
        pairs = heartbeats("a", "b", 1000)
        started = time.perf_counter()
        for _ in range(total // 1000):
            a.send_many(pairs)
            await asyncio.sleep(0)  # the Raft loop yields between ready() rounds
        await eventually(
            lambda: count + a.stats()["peers"]["b"]["dropped_queue_full"] == total + 1,
            timeout_s=60,
        )
        elapsed = time.perf_counter() - started
        return (count - 1) / elapsed
    finally:
        await stop_all(transports)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_throughput_smoke(loop: str, capsys: pytest.CaptureFixture[str]) -> None:
    result: list[float] = []

    async def test() -> None:
        result.append(await measure_heartbeats_per_second(50_000))

    run(test, loop=loop)
    with capsys.disabled():
        print(f"\n[{loop}] {result[0]:,.0f} heartbeats/s between two transports")
    assert result[0] > 5_000


def test_a_replayed_hello_cannot_answer_the_challenge(caplog: pytest.LogCaptureFixture) -> None:
    """An eavesdropper who recorded a member's hello (right secret, right id) replays it: the
    acceptor answers with a fresh nonce, and without the secret no proof can be made, so
    nothing is delivered and the connection is refused."""

    async def test() -> None:
        _, inboxes, transports = cluster(["a", "b"], handshake_timeout_s=2.0)
        await start_all(transports)
        try:
            recorded = encode_handshake(NodeId("a"), CLUSTER, secret=SECRET, nonce=b"old-nonce")
            # Replay the hello, then a proof made for some other challenge, then messages.
            stale_proof = encode_handshake(NodeId("a"), CLUSTER, secret=SECRET,
                                           bind=b"another challenge")
            answer = await raw_exchange(transports["b"].listen_address,
                                        recorded + stale_proof
                                        + encode_batch(heartbeats("a", "b", 3)))
            decoder = FrameDecoder()
            decoder.feed(answer)
            challenge = decoder.next_handshake()
            assert challenge is not NEED_DATA and challenge.nonce  # b answered a fresh nonce
            assert inboxes["b"].messages("a") == []  # nothing was delivered
            assert transports["b"].stats()["refused_connections"] == 1
            # The real a still gets through.
            transports["a"].send_many(heartbeats("a", "b", 5))
            await inboxes["b"].wait_for(lambda: len(inboxes["b"].messages("a")) == 5)
        finally:
            await stop_all(transports)

    caplog.set_level(logging.INFO, logger="phalanx.transport.tcp")
    run(test)
    assert any("challenge not answered" in r.getMessage() for r in caplog.records)

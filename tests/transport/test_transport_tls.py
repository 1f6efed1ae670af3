"""Peer mutual TLS on real sockets: messages flow between nodes of one CA; a peer with a
certificate of another CA, without TLS, or with a certificate naming another node is refused
(logged on both sides); a recording proxy between two nodes sees no plaintext (and does see
it without TLS: the check can fail); a rotated certificate is used by new connections
without a restart (file change or `reload()`)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from phalanx.errors import ConfigError
from phalanx.ops.peer_tls import NodeCertificate, issue, make_ca
from phalanx.ops.ports import free_port
from phalanx.raft.messages import AppendEntries, Heartbeat
from phalanx.raft.types import Entry, GroupId, Index, NodeId, Term
from phalanx.server.config import NodeConfig, PeerConfig
from phalanx.transport.codec import encode_handshake
from phalanx.transport.tcp import TcpTransport
from phalanx.transport.tls import PeerTls

pytestmark = pytest.mark.timeout(90)

CLUSTER = "tls-cluster"
SECRET = b"s3cret"
VALUE = b"known-written-value-0123456789"


def run(test: Callable[[], Coroutine[Any, Any, None]], timeout_s: float = 60.0,
        loop: str = "asyncio") -> None:
    async def main() -> None:
        async with asyncio.timeout(timeout_s):
            await test()
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks left behind: {leftover}"

    if loop == "uvloop":  # what a node runs
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())




async def eventually(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, Any]] = []

    def on_messages(self, peer: str, batch: list[tuple[GroupId, Any]]) -> None:
        self.messages.extend((peer, message) for _, message in batch)


def append(source: str, target: str, data: bytes) -> AppendEntries:
    return AppendEntries(source=NodeId(source), target=NodeId(target), term=Term(1),
                         prev_log_index=Index(0), prev_log_term=Term(0), commit=Index(0),
                         entries=(Entry(Term(1), Index(1), data=data),))


def heartbeat(source: str, target: str) -> Heartbeat:
    return Heartbeat(source=NodeId(source), target=NodeId(target), term=Term(1),
                     commit=Index(0), round=0)


def transport(node_id: str, port: int, peers: dict[str, tuple[str, int]], inbox: Inbox,
              cert: NodeCertificate | None) -> TcpTransport:
    tls = PeerTls(cert.cert_file, cert.key_file, cert.ca_file) if cert is not None else None
    return TcpTransport(node_id, ("127.0.0.1", port), peers, cluster_id=CLUSTER, secret=SECRET,
                        on_messages=inbox.on_messages, tls=tls, backoff_initial_s=0.02,
                        backoff_max_s=0.2)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    make_ca(tmp_path / "ca1")
    for node in ("a", "b"):
        issue(tmp_path / "ca1", node, ["127.0.0.1"])
    return tmp_path


class RecordingProxy:
    """A TCP proxy that forwards both ways and records every byte it forwards."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.recorded = bytearray()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers += [writer, upstream_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    self.recorded += data
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        async with asyncio.timeout(10):
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


@pytest.mark.parametrize(("tls_on", "loop"), [(True, "asyncio"), (True, "uvloop"),
                                              (False, "asyncio")])
def test_a_captured_peer_stream_is_not_plaintext(pki: Path, tls_on: bool, loop: str) -> None:
    """Proves: a recording proxy sits between a and b (a dials the proxy as b's address);
    a sends an AppendEntries carrying a known value; b receives it. With peer TLS the recorded
    bytes contain neither the value nor the phalanx handshake magic; without TLS (the control
    case) they contain the value: the check itself can fail."""

    async def test() -> None:
        port_a, port_b = free_port(), free_port()
        proxy = RecordingProxy(("127.0.0.1", port_b))
        proxy_port = await proxy.start()
        inbox_a, inbox_b = Inbox(), Inbox()
        certs = {n: issue(pki / "ca1", n) for n in ("a", "b")} if tls_on else {}
        a = transport("a", port_a, {"b": ("127.0.0.1", proxy_port)}, inbox_a, certs.get("a"))
        b = transport("b", port_b, {"a": ("127.0.0.1", port_a)}, inbox_b, certs.get("b"))
        await a.start()
        await b.start()
        try:
            a.send(GroupId(1), append("a", "b", VALUE))
            await eventually(lambda: any(isinstance(m, AppendEntries) and m.entries[0].data ==
                                         VALUE for _, m in inbox_b.messages))
            assert len(proxy.recorded) > 0
            if tls_on:
                assert VALUE not in proxy.recorded
                assert b"PHLX" not in proxy.recorded and CLUSTER.encode() not in proxy.recorded
                assert a.stats()["tls"] and b.stats()["tls"]
            else:
                assert VALUE in proxy.recorded
        finally:
            await a.stop()
            await b.stop()
            await proxy.stop()

    run(test, loop=loop)


def test_peers_without_a_valid_certificate_are_refused(
        pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Proves: b (mutual TLS, CA 1) refuses, each logged with its reason: a dialer whose
    certificate is signed by another CA (self-made CA 2); a plaintext dialer (no TLS); a TLS
    dialer presenting no certificate; and a dialer of CA 1 whose certificate names another
    node than the one its handshake claims. The dialer with the foreign certificate logs the
    failure too. Nothing is delivered to b."""
    caplog.set_level(logging.INFO)

    async def test() -> None:
        port_b = free_port()
        inbox_b = Inbox()
        make_ca(pki / "ca2", name="another CA")
        foreign = issue(pki / "ca2", "a", ["127.0.0.1"])
        good_b = issue(pki / "ca1", "b")
        # "c" is a node of CA 1 whose certificate is used to claim to be "a".
        impostor = issue(pki / "ca1", "c")
        b = transport("b", port_b, {"a": ("127.0.0.1", free_port())}, inbox_b, good_b)
        a = transport("a", free_port(), {"b": ("127.0.0.1", port_b)}, Inbox(), foreign)
        await b.start()
        await a.start()
        try:
            a.send(GroupId(1), heartbeat("a", "b"))
            await eventually(lambda: b.stats()["refused_connections"] >= 1)
            await eventually(lambda: "certificate" in str(
                a.stats()["peers"]["b"]["last_error"]).lower())
            await a.stop()
            refused_before = b.stats()["refused_connections"]

            # Plaintext: the peer speaks the phalanx handshake without TLS.
            reader, writer = await asyncio.open_connection("127.0.0.1", port_b)
            writer.write(encode_handshake(NodeId("a"), CLUSTER, secret=SECRET, nonce=b"x" * 16))
            async with asyncio.timeout(10):
                assert await reader.read(100) == b""  # closed, nothing answered
            writer.close()
            # TLS without a client certificate.
            context = ssl.create_default_context(cafile=good_b.ca_file)
            context.check_hostname = False
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port_b, ssl=context, server_hostname="b")
                writer.write(encode_handshake(NodeId("a"), CLUSTER, secret=SECRET,
                                              nonce=b"x" * 16))
                async with asyncio.timeout(10):
                    await reader.readexactly(10)
            # A certificate of the right CA, naming "c", used to claim "a".
            context = ssl.create_default_context(cafile=impostor.ca_file)
            context.load_cert_chain(impostor.cert_file, impostor.key_file)
            reader, writer = await asyncio.open_connection("127.0.0.1", port_b, ssl=context,
                                                           server_hostname="b")
            writer.write(encode_handshake(NodeId("a"), CLUSTER, secret=SECRET, nonce=b"x" * 16))
            async with asyncio.timeout(10):
                assert await reader.read(100) == b""
            writer.close()
            await eventually(lambda: b.stats()["refused_connections"] >= refused_before + 3)
            assert inbox_b.messages == []
            logs = caplog.text
            assert "refused peer connection" in logs and "TLS handshake failed" in logs, logs
            assert "names c, not 'a'" in logs, logs
            assert "cannot reach peer b" in logs, logs  # the foreign dialer's side
        finally:
            await a.stop()
            await b.stop()

    run(test, loop="uvloop")


def test_a_rotated_certificate_is_used_without_a_restart(pki: Path) -> None:
    """Proves: b's certificate is replaced on disk by one of a new CA (2): b picks it up by
    itself (the files changed) while running: a NEW dialer c that trusts only CA 1 now fails
    the TLS handshake with b ("certificate verify failed"), while a's established connection
    keeps delivering. Then c's CA file becomes a bundle of CA 1 and CA 2 and c reloads
    (`reload()`, what SIGHUP does): c connects to b and its messages arrive. Nothing
    restarted."""

    async def test() -> None:
        port_a, port_b, port_c = free_port(), free_port(), free_port()
        inbox_b = Inbox()
        cert_a, cert_b = issue(pki / "ca1", "a"), issue(pki / "ca1", "b")
        # c's own copy of the CA file, so that it can change alone.
        (pki / "c").mkdir()
        shutil.copy(pki / "ca1" / "ca.pem", pki / "c" / "ca.pem")
        cert_c = issue(pki / "ca1", "c")
        cert_c = NodeCertificate(cert_c.cert_file, cert_c.key_file, str(pki / "c" / "ca.pem"))
        everyone = {"a": ("127.0.0.1", port_a), "b": ("127.0.0.1", port_b),
                    "c": ("127.0.0.1", port_c)}
        a = transport("a", port_a, everyone, Inbox(), cert_a)
        b = transport("b", port_b, everyone, inbox_b, cert_b)
        c = transport("c", port_c, everyone, Inbox(), cert_c)
        await a.start()
        await b.start()
        try:
            a.send(GroupId(1), heartbeat("a", "b"))
            await eventually(lambda: len(inbox_b.messages) >= 1)
            # Rotate b's certificate to CA 2 (same paths), key first.
            make_ca(pki / "ca2", name="rotated CA")
            new_b = issue(pki / "ca2", "b")
            shutil.copy(new_b.key_file, cert_b.key_file)
            shutil.copy(new_b.cert_file, cert_b.cert_file)
            assert b.tls is not None
            await eventually(lambda: b.tls is not None and b.tls.server_context() is not None
                             and b.tls.reloads >= 1)
            await c.start()
            c.send(GroupId(1), heartbeat("c", "b"))
            await eventually(lambda: "certificate verify failed" in str(
                c.stats()["peers"]["b"]["last_error"]))
            assert not c.is_connected("b")
            assert not any(source == "c" for source, _ in inbox_b.messages)
            count = len(inbox_b.messages)
            a.send(GroupId(1), heartbeat("a", "b"))  # established: keeps its session
            await eventually(lambda: len(inbox_b.messages) > count)
            # c learns CA 2 (a bundle) and reloads on request.
            bundle = Path(cert_c.ca_file).read_bytes() + Path(new_b.ca_file).read_bytes()
            Path(cert_c.ca_file).write_bytes(bundle)
            assert c.tls is not None and c.tls.reload()
            c.send(GroupId(1), heartbeat("c", "b"))
            await eventually(lambda: any(source == "c" for source, _ in inbox_b.messages))
            assert c.is_connected("b")
        finally:
            await a.stop()
            await b.stop()
            await c.stop()

    run(test)


def test_the_node_config_validates_peer_tls_files(pki: Path) -> None:
    cert = issue(pki / "ca1", "n1")
    other = issue(pki / "ca1", "n2")
    peers = (PeerConfig(id="n1", peer="127.0.0.1:1", resp="127.0.0.1:2"),)
    base = {"id": "n1", "data_dir": str(pki / "d"), "peers": peers}
    NodeConfig(**base, **cert.overrides())
    with pytest.raises(ConfigError, match="peer_tls_ca_file: peer TLS needs"):
        NodeConfig(**base, peer_tls_cert_file=cert.cert_file, peer_tls_key_file=cert.key_file)
    with pytest.raises(ConfigError, match="peer_tls_key_file: '/nonexistent' is not"):
        NodeConfig(**base, **{**cert.overrides(), "peer_tls_key_file": "/nonexistent"})
    with pytest.raises(ConfigError, match="cannot load"):
        NodeConfig(**base, **{**cert.overrides(), "peer_tls_key_file": other.key_file})
    with pytest.raises(ConfigError, match="peer_tls_ca_file: cannot load"):
        NodeConfig(**base, **{**cert.overrides(), "peer_tls_ca_file": cert.key_file})

"""Peer mutual TLS with real node processes (`phalanx up --peer-tls-dir`'s launcher path): the
cluster elects and serves over TLS; a peer with a certificate of another CA, or without TLS,
is refused by a running node (logged); the node's certificate is replaced on disk and a
SIGHUP makes new connections present it, without a restart."""

from __future__ import annotations

import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from integration_harness import LocalCluster, wait_until

from phalanx.ops.peer_tls import issue, make_ca
from phalanx.raft.types import NodeId
from phalanx.transport.codec import encode_handshake


def _server_certificate(address: str, client: Any, ca_file: str) -> bytes | str:
    """The DER certificate a node's peer port presents (connecting with `client`'s
    certificate), or the error text when the TLS handshake fails."""
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca_file)
    context.check_hostname = False
    context.load_cert_chain(client.cert_file, client.key_file)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="peer") as tls:
            certificate = tls.getpeercert(binary_form=True)
            # TLS 1.3 reports a refused client certificate at the first read.
            tls.settimeout(5)
            try:
                tls.sendall(b"")
                tls.recv(1)
            except (ssl.SSLError, OSError, TimeoutError):
                pass
            return certificate or b""
    except (ssl.SSLError, OSError) as error:
        return str(error)


def test_a_cluster_over_peer_tls_refuses_strangers_and_reloads_its_certificate(
        cluster: Any, tmp_path: Path) -> None:
    """Proves, on real processes (uvloop): 3 nodes with peer mTLS elect a leader and
    replicate writes (every node applies them); each /status says peer_tls. A client of
    another CA is refused at the TLS handshake by n1, which logs it; a plaintext peer
    handshake gets no answer. n1's certificate is then re-issued on disk (same paths, new
    key) and, after SIGHUP, a new connection to n1's peer port is served the NEW certificate;
    the cluster keeps replicating through the same processes."""
    pki = tmp_path / "pki"
    c: LocalCluster = cluster(3, peer_tls_dir=str(pki))
    leader = c.leader()
    writer = c.client(leader)
    for i in range(50):
        assert writer.set(f"tls:{i}", str(i)) is True
    statuses = c.wait_converged()
    assert all(s.get("peer_tls") is True for s in statuses.values()), statuses
    n1 = c.node("n1")
    n1_status = c.status(n1)
    assert n1_status is not None
    peer_address = next(p for p in (n1_status.get("nodes") or []) if p["id"] == "n1")["peer"]

    # A stranger with a certificate of another CA.
    make_ca(tmp_path / "other", name="someone else's CA")
    stranger = issue(tmp_path / "other", "n2")
    refused = _server_certificate(peer_address, stranger, str(pki / "ca.pem"))
    wait_until(lambda: c.grep_logs(n1, "TLS handshake failed"), 30,
               "n1 to log the refused TLS handshake")
    assert c.grep_logs(n1, "refused peer connection"), "no refusal logged"
    print(f"a stranger's TLS connection: {refused!r:.120}")
    # A plaintext peer: the phalanx handshake without TLS gets no answer.
    host, _, port = peer_address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(encode_handshake(NodeId("n2"), "phalanx", nonce=b"x" * 16))
        raw.settimeout(10)
        try:
            answer = raw.recv(100)
        except ConnectionResetError:
            answer = b""
        assert b"PHLX" not in answer

    # Rotation: new key and certificate for n1 on disk, then SIGHUP.
    inside = issue(pki, "n2")  # a client certificate of the cluster's CA, to look
    before = _server_certificate(peer_address, inside, str(pki / "ca.pem"))
    assert isinstance(before, bytes) and before
    issue(pki, "n1", [host], replace=True)
    c.kill(n1, signal.SIGHUP)
    wait_until(lambda: c.grep_logs(n1, "peer TLS: loaded"), 30, "n1 to reload its certificate")
    after = _server_certificate(peer_address, inside, str(pki / "ca.pem"))
    assert isinstance(after, bytes) and after and after != before
    started = time.monotonic()
    assert writer.set("tls:after-rotation", "yes") is True
    c.wait_converged()
    print(f"a write after the rotation took {(time.monotonic() - started) * 1000:.0f} ms "
          f"(incl. convergence)")


def test_everything_encrypted_and_the_smart_client_speaks_tls(cluster: Any,
                                                             tmp_path: Path) -> None:
    """Proves: a cluster with peer mTLS AND TLS on the RESP port (client certificates
    required), all certificates from one test CA (`phalanx.ops.peer_tls`), serves phalanx's
    smart client over TLS (`PhalanxClient(ssl=True, ...)`): writes through every shard leader
    and reads back; the same client without TLS, or without a client certificate, gets
    nothing."""
    import redis

    from phalanx.client import PhalanxClient

    pki = tmp_path / "pki"
    resp = issue(pki, "resp", [f"127.0.0.{i}" for i in range(1, 255)])
    client_cert = issue(pki, "app")
    c: LocalCluster = cluster(3, shards=2, peer_tls_dir=str(pki), tls_cert_file=resp.cert_file,
                              tls_key_file=resp.key_file, tls_ca_file=resp.ca_file)
    c.leader()
    seeds = [n.resp for n in c.nodes]
    with PhalanxClient(seeds, ssl=True, ssl_ca_certs=resp.ca_file,
                       ssl_certfile=client_cert.cert_file, ssl_keyfile=client_cert.key_file,
                       request_timeout_s=30) as client:
        for i in range(40):
            assert client.set(f"enc:{i}", str(i)) is True
        assert [client.get(f"enc:{i}") for i in range(40)] == [str(i).encode()
                                                               for i in range(40)]
        assert client.stats["attempts"] >= 80
    for options in ({}, {"ssl": True, "ssl_ca_certs": resp.ca_file}):
        try:
            with PhalanxClient(seeds, max_attempts=2, request_timeout_s=5, connect_timeout=2,
                               socket_timeout=2, **options) as stranger:  # type: ignore[arg-type]
                stranger.get("enc:1")
        except (redis.exceptions.RedisError, OSError):
            continue  # no seed answered the map query: refused
        raise AssertionError(f"a client with {options or 'no TLS'} was served")

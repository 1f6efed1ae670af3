"""Security end to end on real 3-node clusters: ACL users through a follower (forwarding
authenticates), TLS on every RESP port (forwarding over TLS), and rogue peers refused at the
peer handshake while the cluster keeps serving.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from integration_harness import LocalCluster, wait_until

from phalanx.ops import cluster_file
from phalanx.raft.types import NodeId
from phalanx.server.config import UserConfig
from phalanx.transport.codec import encode_handshake

PASSWORD = "internal-secret"
USERS = (UserConfig(name="app", password="app-pass", permissions="all"),
         UserConfig(name="reader", password="reader-pass", permissions="read"))


def _followers(cluster: LocalCluster) -> list[str]:
    leader = cluster.leader()
    return [n.id for n in cluster.others(leader)]


def test_users_through_a_follower(cluster: Any) -> None:
    c = cluster(3, requirepass=PASSWORD, users=USERS)
    follower = _followers(c)[0]
    app = c.client(follower, username="app", password="app-pass")
    assert app.set("k", "v1") is True  # forwarded to the leader, which authenticates the link
    assert app.get("k") == "v1"
    assert app.execute_command("ACL", "WHOAMI") == "app"
    reader = c.client(follower, username="reader", password="reader-pass")
    with pytest.raises(redis.exceptions.NoPermissionError,
                       match="User reader has no permissions to run the 'set' command"):
        reader.set("k", "v2")
    assert reader.get("k") == "v1"
    with pytest.raises(redis.exceptions.AuthenticationError):
        c.client(follower, username="app", password="wrong").ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        c.client(follower).get("k")
    # The default user (requirepass) still works as before.
    assert c.client(follower, password=PASSWORD).get("k") == "v1"


def make_certs(directory: Path) -> dict[str, Path]:
    """A throwaway CA and one node certificate valid for every 127.0.0.x (the harness picks
    random loopback addresses), made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*arguments: str) -> None:
        subprocess.run(["openssl", *arguments], cwd=directory, check=True, capture_output=True,
                       timeout=30)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=phalanx test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    san = ",".join(f"IP:127.0.0.{i}" for i in range(1, 255))
    (directory / "node.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=phalanx node")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "node.pem", "-days", "2", "-extfile", "node.ext")
    return {"ca": directory / "ca.pem", "cert": directory / "node.pem",
            "key": directory / "node.key"}


def test_tls_on_every_node(cluster: Any, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    c = cluster(3, tls_cert_file=str(certs["cert"]), tls_key_file=str(certs["key"]))
    for position, node in enumerate(c.nodes):
        client = c.client(node, ssl=True, ssl_ca_certs=str(certs["ca"]))
        key = f"tls-{position}"
        assert client.set(key, node.id) is True  # followers forward over TLS
        assert client.get(key) == node.id
    plain = c.client(c.nodes[0], timeout=2.0)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()


def _peer_address(c: LocalCluster, node_id: str) -> tuple[str, int]:
    entry = cluster_file.read_cluster_file(c.data_dir).node(node_id)
    host, _, port = entry.peer.rpartition(":")
    return host, int(port)


def _refusals(c: LocalCluster, node_id: str) -> int:
    return c.node(node_id).log_path.read_text(errors="replace").count("refused peer connection")


def _send_handshake(address: tuple[str, int], frame: bytes) -> bytes:
    """Send a handshake; what the node answers before it closes the connection."""
    received = b""
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(frame)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
        except ConnectionResetError:
            pass
    return received


def test_rogue_peers_are_refused(cluster: Any) -> None:
    c = cluster(3, cluster_secret="the-right-secret")
    leader = c.leader()
    target = c.others(leader)[0]
    address = _peer_address(c, target.id)
    before = _refusals(c, target.id)
    rogue = [encode_handshake(NodeId("n9"), "phalanx", secret=b"wrong"),
             encode_handshake(NodeId("n2"), "phalanx", secret=b"wrong"),
             encode_handshake(NodeId("n9"), "phalanx", secret=b"the-right-secret")]
    for count, frame in enumerate(rogue, start=1):
        assert _send_handshake(address, frame) == b""  # no handshake back: disconnected
        wait_until(lambda count=count: _refusals(c, target.id) >= before + count, 30.0,
                   f"{target.id} to log refusal #{count}")
    log = c.node(target.id).log_path.read_text(errors="replace")
    assert "wrong HMAC for the cluster secret" in log
    assert "unknown node id 'n9'" in log
    # The cluster keeps serving writes, through the leader and the probed node.
    for node in (leader, target):
        client = c.client(node)
        deadline = time.monotonic() + 20
        key = f"after-rogue-{node.id}"
        while True:
            try:
                assert client.set(key, "ok") is True
                break
            except redis.exceptions.ResponseError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert client.get(key) == "ok"

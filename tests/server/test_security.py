"""Security of the RESP front end: ACL users (AUTH, HELLO AUTH, NOPERM, ACL), their config,
and TLS on the RESP port (mutual TLS, the forwarding link's TLS).

The RESP tests run one real single-node `Node` in-process (tiny timings, loopback ports) and
talk raw RESP to it; certificates are made with the `openssl` CLI in a tmp dir.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from phalanx.errors import ConfigError
from phalanx.ops.ports import free_port as _free_port
from phalanx.resp import NEED_DATA, ErrorReply, RespReplyParser, SimpleString, encode_command
from phalanx.server.config import (
    NodeConfig,
    PeerConfig,
    UserConfig,
    config_from_mapping,
    dump_config,
    load_config,
)
from phalanx.server.node import Node
from phalanx.server.peer_link import LeaderLink, client_tls_context

USERS = (UserConfig(name="app", password="app-pass", permissions="all"),
         UserConfig(name="reader", password="reader-pass", permissions="read"))


def _peer(port: int = 7001) -> dict[str, Any]:
    return {"id": "n1", "peer": "127.0.0.1:7201", "resp": f"127.0.0.1:{port}"}


def _mapping(**extra: Any) -> dict[str, Any]:
    return {"id": "n1", "data_dir": "/tmp/x", "peers": [_peer()], **extra}


# ---- config ---------------------------------------------------------------------------------
def test_users_load_from_toml_and_dump_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('id = "n1"\ndata_dir = "/tmp/x"\nrequirepass = "s3cret"\n'
                    '[[peers]]\nid = "n1"\npeer = "127.0.0.1:7201"\nresp = "127.0.0.1:7001"\n'
                    '[[users]]\nname = "app"\npassword = "p\\"w\\n"\n'
                    '[[users]]\nname = "ro"\npassword = "x"\npermissions = "read"\n')
    config = load_config(path)
    assert config.users == (UserConfig(name="app", password='p"w\n', permissions="all"),
                            UserConfig(name="ro", password="x", permissions="read"))
    again = tmp_path / "again.toml"
    again.write_text(dump_config(config))
    assert load_config(again) == config


def test_tls_fields_round_trip(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("x")
    config = config_from_mapping(_mapping(tls_cert_file=str(tmp_path / "cert.pem"),
                                          tls_key_file=str(tmp_path / "key.pem"),
                                          tls_ca_file=str(tmp_path / "ca.pem")))
    path = tmp_path / "node.toml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


@pytest.mark.parametrize(("extra", "message"), [
    ({"requirepass": "p", "users": [{"name": "a", "password": "x"},
                                    {"name": "b", "password": "y", "permissions": "admin"}]},
     "users[1].permissions: 'admin'"),
    ({"requirepass": "p", "users": [{"name": "a", "password": "x"},
                                    {"name": "a", "password": "y"}]},
     "users[1].name: 'a' is listed twice"),
    ({"requirepass": "p", "users": [{"name": "default", "password": "x"}]},
     "users[0].name: 'default' is the requirepass user"),
    ({"requirepass": "p", "users": [{"name": "a", "password": ""}]},
     "users[0].password: must not be empty"),
    ({"requirepass": "p", "users": [{"name": "a"}]}, "users[0].password: missing"),
    ({"requirepass": "p", "users": [{"name": "a", "password": "x", "role": "r"}]},
     "users[0]: unknown field(s) role"),
    ({"requirepass": "p", "users": [{"name": "a", "password": 3}]},
     "users[0].password: must be a string"),
    ({"requirepass": "p", "users": {"name": "a"}}, "users: must be a list of tables"),
    ({"users": [{"name": "a", "password": "x"}]}, "requirepass: must be set when users"),
    ({"tls_cert_file": "/nonexistent/cert.pem"}, "tls_key_file: tls_cert_file and"),
    ({"tls_key_file": "/nonexistent/key.pem"}, "tls_cert_file: tls_cert_file and"),
    ({"tls_ca_file": "/nonexistent/ca.pem"}, "tls_ca_file: needs tls_cert_file"),
    ({"tls_cert_file": "/nonexistent/cert.pem", "tls_key_file": "/nonexistent/key.pem"},
     "tls_cert_file: '/nonexistent/cert.pem' is not a readable file"),
])
def test_config_refuses(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(_mapping(**extra))
    assert message in str(caught.value)


def test_missing_key_and_ca_files_are_named(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match=r"^tls_key_file: "):
        config_from_mapping(_mapping(tls_cert_file=str(cert), tls_key_file=str(tmp_path / "k")))
    with pytest.raises(ConfigError, match=r"^tls_ca_file: "):
        config_from_mapping(_mapping(tls_cert_file=str(cert), tls_key_file=str(cert),
                                     tls_ca_file=str(tmp_path / "ca")))


# ---- an in-process node and a raw RESP client -------------------------------------------------


@asynccontextmanager
async def running_node(tmp_path: Path, **overrides: Any) -> AsyncIterator[Node]:
    peer = PeerConfig(id="n1", peer=f"127.0.0.1:{_free_port()}",
                      resp=f"127.0.0.1:{_free_port()}")
    config = NodeConfig(id="n1", data_dir=str(tmp_path / "n1"), peers=(peer,), tick_ms=5,
                        heartbeat_ticks=2, election_ticks=10, request_timeout_ms=3000,
                        **overrides)
    node = Node(config)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


class Client:
    """A raw RESP connection (RESP2 unless HELLO 3)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = RespReplyParser()

    @classmethod
    async def open(cls, node: Node, tls: ssl.SSLContext | None = None) -> Client:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(node.resp.host, node.resp.port, ssl=tls), 5)
        return cls(reader, writer)

    async def call(self, *arguments: str | bytes) -> object:
        self.writer.write(encode_command(*(a.encode() if isinstance(a, str) else a
                                           for a in arguments)))
        while True:
            reply = self.parser.next_reply()
            if reply is not NEED_DATA:
                return reply
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            if not data:
                raise ConnectionResetError("server closed the connection")
            self.parser.feed(data)

    def close(self) -> None:
        self.writer.close()


def _text(reply: object) -> str:
    if isinstance(reply, (ErrorReply, SimpleString)):
        return reply.text
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def run(tmp_path: Path, body: Callable[[Node], Awaitable[None]], **overrides: Any) -> None:
    async def main() -> None:
        async with running_node(tmp_path, **overrides) as node:
            await body(node)
    asyncio.run(main())


# ---- ACL users --------------------------------------------------------------------------------
def test_users_auth_and_permissions(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        anonymous = await Client.open(node)
        assert _text(await anonymous.call("GET", "k")) == "NOAUTH Authentication required."
        assert _text(await anonymous.call("AUTH", "app", "wrong")) == (
            "WRONGPASS invalid username-password pair or user is disabled.")
        assert _text(await anonymous.call("AUTH", "nobody", "app-pass")).startswith("WRONGPASS")
        assert _text(await anonymous.call("AUTH", "app-pass")).startswith("WRONGPASS")
        assert _text(await anonymous.call("SET", "k", "v")).startswith("NOAUTH")

        app = await Client.open(node)
        assert _text(await app.call("AUTH", "app", "app-pass")) == "OK"
        assert _text(await app.call("ACL", "WHOAMI")) == "app"
        assert _text(await app.call("SET", "k", "v1")) == "OK"
        assert await app.call("ACL", "USERS") == [b"app", b"default", b"reader"]

        reader = await Client.open(node)
        assert _text(await reader.call("AUTH", "reader", "reader-pass")) == "OK"
        assert _text(await reader.call("SET", "k", "v2")) == (
            "NOPERM User reader has no permissions to run the 'set' command")
        assert _text(await reader.call("del", "k")) == (
            "NOPERM User reader has no permissions to run the 'del' command")
        assert _text(await reader.call("FAILOVER")).startswith("NOPERM User reader")
        assert _text(await reader.call("PHALANX.META", "{}")).startswith("NOPERM User reader")
        assert _text(await reader.call("phalanx.split", "0")).startswith("NOPERM User reader")
        assert _text(await reader.call("ACL", "USERS")) == (
            "NOPERM User reader has no permissions to run the 'acl|users' command")
        assert _text(await reader.call("GET", "k")) == "v1"
        assert _text(await reader.call("PING")) == "PONG"
        assert b"redis_version" in await reader.call("INFO", "server")  # type: ignore[operator]
        assert _text(await reader.call("ACL", "WHOAMI")) == "reader"
        assert _text(await app.call("GET", "k")) == "v1"  # the refused writes changed nothing

        # requirepass is the default user, exactly as before users existed.
        default = await Client.open(node)
        assert _text(await default.call("AUTH", "s3cret")) == "OK"
        assert _text(await default.call("ACL", "WHOAMI")) == "default"
        assert _text(await default.call("SET", "k", "v3")) == "OK"
        other = await Client.open(node)
        assert _text(await other.call("AUTH", "default", "s3cret")) == "OK"

        # Re-authenticating switches the user of the connection.
        assert _text(await app.call("AUTH", "reader", "reader-pass")) == "OK"
        assert _text(await app.call("SET", "k", "v4")).startswith("NOPERM User reader")
        assert _text(await app.call("ACL", "NOPE")).startswith("ERR unknown subcommand")
        for client in (anonymous, app, reader, default, other):
            client.close()

    run(tmp_path, body, requirepass="s3cret", users=USERS)


def test_hello_auth_with_a_named_user(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        client = await Client.open(node)
        assert _text(await client.call("HELLO", "3", "AUTH", "reader", "bad")).startswith(
            "WRONGPASS")
        reply = await client.call("HELLO", "3", "AUTH", "reader", "reader-pass")
        assert isinstance(reply, dict) and reply[b"proto"] == 3
        assert _text(await client.call("SET", "k", "v")).startswith("NOPERM User reader")
        assert _text(await client.call("ACL", "WHOAMI")) == "reader"
        client.close()

    run(tmp_path, body, requirepass="s3cret", users=USERS)


def test_without_passwords_everyone_is_default(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        client = await Client.open(node)
        assert _text(await client.call("ACL", "WHOAMI")) == "default"
        assert _text(await client.call("SET", "k", "v")) == "OK"
        assert _text(await client.call("AUTH", "x")).startswith(
            "ERR AUTH <password> called without any password configured")
        client.close()

    run(tmp_path, body)


# ---- TLS --------------------------------------------------------------------------------------
def make_certs(directory: Path, ips: list[str]) -> dict[str, Path]:
    """A throwaway CA and one node certificate (serverAuth + clientAuth) for `ips`, made with
    the openssl CLI; returns paths ca, cert, key (and client_cert/client_key, another leaf)."""
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
    san = ",".join(f"IP:{ip}" for ip in ips)
    for name in ("node", "client"):
        (directory / f"{name}.ext").write_text(
            f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n")
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=phalanx {name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                "-extfile", f"{name}.ext")
    return {"ca": directory / "ca.pem", "cert": directory / "node.pem",
            "key": directory / "node.key", "client_cert": directory / "client.pem",
            "client_key": directory / "client.key"}


def _client_context(certs: dict[str, Path], *, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs["ca"]))
    if with_cert:
        context.load_cert_chain(str(certs["client_cert"]), str(certs["client_key"]))
    return context


def test_tls_with_mutual_authentication(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs", ["127.0.0.1"])

    async def body(node: Node) -> None:
        client = await Client.open(node, _client_context(certs, with_cert=True))
        assert _text(await client.call("SET", "k", "v")) == "OK"
        assert _text(await client.call("GET", "k")) == "v"
        client.close()
        # No client certificate: the handshake (or the first read) fails.
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            bare = await Client.open(node, _client_context(certs, with_cert=False))
            await bare.call("PING")
        # Plaintext: no RESP reply ever comes back.
        plain = await Client.open(node)
        with pytest.raises((ConnectionError, TimeoutError, asyncio.IncompleteReadError)):
            await plain.call("PING")
        plain.close()
        # The forwarding link connects with the node's client context (node cert + CA),
        # passed explicitly (no process-wide TLS state).
        link = LeaderLink("n1", node.resp.host, node.resp.port, 5.0, "", node.resp.client_tls)
        assert link.ssl_context is not None
        assert await link.call([b"GET", b"k"]) == b"v"
        link.close()

    run(tmp_path, body, tls_cert_file=str(certs["cert"]), tls_key_file=str(certs["key"]),
        tls_ca_file=str(certs["ca"]))


def test_tls_without_a_ca_trusts_the_node_certificate(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs", ["127.0.0.1"])

    async def body(node: Node) -> None:
        client = await Client.open(node, _client_context(certs, with_cert=False))
        assert _text(await client.call("AUTH", "pw")) == "OK"
        assert _text(await client.call("PING")) == "PONG"
        client.close()
        context = client_tls_context(node.config)
        assert context is not None
        link = LeaderLink("n1", node.resp.host, node.resp.port, 5.0, "pw", context)
        assert _text(await link.call([b"SET", b"k", b"v"])) == "OK"
        link.close()

    run(tmp_path, body, tls_cert_file=str(certs["cert"]), tls_key_file=str(certs["key"]),
        requirepass="pw")

"""MULTI / EXEC / DISCARD / WATCH / UNWATCH against a real redis-server 7.0, reply by reply.

One phalanx node runs in-process (its event loop in a thread) beside a redis-server the test
starts; two connections to each play the same scripted and random sequences (a second client
makes the conflicting writes WATCH must notice) and every reply is compared. The random
vocabulary keeps each key to one type: phalanx counts a write that fails (WRONGTYPE) on a
watched key as a change (a spurious abort, documented in kv/transaction.py), Redis does not.
Also: RESP3's null for an aborted EXEC and typed replies inside EXEC, and redis-py's
pipeline (a transaction by default) and WatchError, unchanged.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phalanx.ops.ports import free_port as _free_port
from phalanx.server.config import NodeConfig, PeerConfig
from phalanx.server.node import Node

redis = pytest.importorskip("redis")

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")




def _wait_ping(port: int, process: subprocess.Popen[bytes] | None = None) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline or (process is not None and process.poll()):
                raise
            time.sleep(0.05)
        finally:
            client.close()


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    assert REDIS_SERVER is not None
    port = _free_port()
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ping(port, process)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def phalanx_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One phalanx node, its event loop in a thread, until the module's tests end."""
    data_dir: Path = tmp_path_factory.mktemp("phalanx")
    port = _free_port()
    peer = PeerConfig(id="n1", peer=f"127.0.0.1:{_free_port()}", resp=f"127.0.0.1:{port}")
    config = NodeConfig(id="n1", data_dir=str(data_dir / "n1"), peers=(peer,), tick_ms=5,
                        heartbeat_ticks=2, election_ticks=10, request_timeout_ms=3000)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failed: list[BaseException] = []

    async def main() -> None:
        node = Node(config)
        await node.start()
        try:
            await stop.wait()
        finally:
            await node.stop()

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as error:  # reported by the fixture
            failed.append(error)

    thread = threading.Thread(target=run, name="phalanx-node", daemon=True)
    thread.start()
    try:
        _wait_ping(port)
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        deadline = time.monotonic() + 20
        while True:  # the first write waits for the node's leadership
            try:
                client.set("phalanx:ready", "1")
                break
            except redis.ResponseError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        assert not failed, failed


def _plain(reply: Any) -> Any:
    """A reply with the errors nested in it (an EXEC array's) as comparable tuples."""
    if isinstance(reply, Exception):
        return ("error", str(reply))
    if isinstance(reply, list):
        return [_plain(item) for item in reply]
    return reply


class Pair:
    """The same connections (named 'a', 'b', ...) on redis-server and on phalanx."""

    def __init__(self, redis_port: int, phalanx_port: int, names: str = "ab",
                 protocol: int = 2) -> None:
        self.ports = {"redis": redis_port, "phalanx": phalanx_port}
        self.connections = {
            (server, name): redis.Connection(host="127.0.0.1", port=port, socket_timeout=10,
                                             protocol=protocol)
            for server, port in self.ports.items() for name in names
        }

    def run(self, connection: str, *command: Any) -> tuple[Any, Any]:
        replies = []
        for server in ("redis", "phalanx"):
            link = self.connections[(server, connection)]
            link.send_command(*command)
            try:
                replies.append(_plain(link.read_response()))
            except redis.ResponseError as error:
                replies.append(("error", str(error)))
        return replies[0], replies[1]

    def same(self, connection: str, *command: Any) -> Any:
        theirs, ours = self.run(connection, *command)
        assert ours == theirs, f"{connection}: {command}: phalanx {ours!r}, redis {theirs!r}"
        return ours

    def close(self) -> None:
        for link in self.connections.values():
            link.disconnect()


@pytest.fixture
def pair(redis_port: int, phalanx_port: int) -> Iterator[Pair]:
    pair = Pair(redis_port, phalanx_port)
    pair.same("a", "FLUSHALL")
    try:
        yield pair
    finally:
        pair.close()


SCRIPTS: dict[str, list[tuple[str, tuple[Any, ...]]]] = {
    "queue and exec, runtime errors kept": [
        ("a", ("MULTI",)), ("a", ("SET", "k", "1")), ("a", ("LPUSH", "k", "x")),
        ("a", ("INCR", "k")), ("a", ("GET", "k")), ("a", ("HSET", "h", "f", "v")),
        ("a", ("HGETALL", "h")), ("a", ("PING",)), ("a", ("ECHO", "hi")),
        ("a", ("UNWATCH",)), ("a", ("EXEC",)), ("a", ("GET", "k")),
    ],
    "empty transaction": [("a", ("MULTI",)), ("a", ("EXEC",)), ("a", ("EXEC",))],
    "queuing errors abort": [
        ("a", ("MULTI",)), ("a", ("SET", "k", "1")), ("a", ("NOSUCH", "x", "y")),
        ("a", ("GET",)), ("a", ("EXEC",)), ("a", ("GET", "k")),
        ("a", ("MULTI",)), ("a", ("UNWATCH", "x")), ("a", ("EXEC",)),
        ("a", ("MULTI",)), ("a", ("MULTI", "x")), ("a", ("EXEC",)),
        ("a", ("MULTI",)), ("a", ("WATCH",)), ("a", ("EXEC",)),
        ("a", ("MULTI",)), ("a", ("DISCARD", "x")), ("a", ("EXEC",)),
    ],
    "control errors do not abort": [
        ("a", ("EXEC",)), ("a", ("DISCARD",)), ("a", ("MULTI",)), ("a", ("MULTI",)),
        ("a", ("WATCH", "k")), ("a", ("SET", "k", "2")), ("a", ("EXEC",)),
        ("a", ("MULTI",)), ("a", ("SET", "k", "3")), ("a", ("DISCARD",)),
        ("a", ("DISCARD",)), ("a", ("GET", "k")), ("a", ("UNWATCH",)),
    ],
    "exec with arguments discards": [
        ("a", ("MULTI",)), ("a", ("SET", "k", "1")), ("a", ("EXEC", "now")),
        ("a", ("EXEC",)), ("a", ("EXEC", "x")), ("a", ("GET", "k")),
    ],
    "watch aborts on another client's write": [
        ("a", ("SET", "k", "1")), ("a", ("WATCH", "k", "other")), ("a", ("GET", "k")),
        ("b", ("INCR", "k")), ("a", ("MULTI",)), ("a", ("SET", "k", "100")),
        ("a", ("EXEC",)), ("a", ("GET", "k")),
        # EXEC unwatched: the next transaction runs.
        ("a", ("MULTI",)), ("a", ("SET", "k", "100")), ("a", ("EXEC",)),
    ],
    "watch passes without a write, unwatch and discard forget": [
        ("a", ("WATCH", "k")), ("b", ("SET", "j", "1")), ("a", ("MULTI",)),
        ("a", ("INCR", "k")), ("a", ("EXEC",)),
        ("a", ("WATCH", "k")), ("b", ("SET", "k", "9")), ("a", ("UNWATCH",)),
        ("a", ("MULTI",)), ("a", ("INCR", "k")), ("a", ("EXEC",)),
        ("a", ("WATCH", "k")), ("a", ("MULTI",)), ("a", ("DISCARD",)), ("b", ("DEL", "k")),
        ("a", ("MULTI",)), ("a", ("INCR", "k")), ("a", ("EXEC",)),
    ],
    "own writes between watch and multi abort too": [
        ("a", ("WATCH", "k")), ("a", ("SET", "k", "mine")), ("a", ("MULTI",)),
        ("a", ("GET", "k")), ("a", ("EXEC",)),
    ],
    "deleting, expiring and flushing watched keys": [
        ("a", ("SET", "k", "1")), ("a", ("WATCH", "k")), ("b", ("DEL", "k")),
        ("a", ("MULTI",)), ("a", ("PING",)), ("a", ("EXEC",)),
        ("a", ("WATCH", "absent")), ("b", ("DEL", "absent")), ("a", ("MULTI",)),
        ("a", ("PING",)), ("a", ("EXEC",)),
        ("a", ("SET", "k", "1")), ("a", ("WATCH", "k")), ("b", ("EXPIRE", "k", "100")),
        ("a", ("MULTI",)), ("a", ("PING",)), ("a", ("EXEC",)),
        ("a", ("WATCH", "k", "absent")), ("b", ("FLUSHALL",)), ("a", ("MULTI",)),
        ("a", ("PING",)), ("a", ("EXEC",)),
        ("a", ("WATCH", "absent")), ("b", ("FLUSHALL",)), ("a", ("MULTI",)),
        ("a", ("PING",)), ("a", ("EXEC",)),
        ("a", ("SET", "h", "x")), ("a", ("WATCH", "h")), ("b", ("SET", "h", "x")),
        ("a", ("MULTI",)), ("a", ("PING",)), ("a", ("EXEC",)),
    ],
    "a key watched twice keeps the first watch": [
        ("a", ("WATCH", "k")), ("b", ("SET", "k", "1")), ("a", ("WATCH", "k")),
        ("a", ("MULTI",)), ("a", ("GET", "k")), ("a", ("EXEC",)),
    ],
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_scripted_sequences_match_redis(pair: Pair, script: str) -> None:
    for connection, command in SCRIPTS[script]:
        pair.same(connection, *command)


def test_a_key_that_expires_after_watch_aborts_as_in_redis(pair: Pair) -> None:
    pair.same("a", "SET", "k", "v", "PX", "150")
    pair.same("a", "WATCH", "k")
    time.sleep(0.3)
    pair.same("a", "MULTI")
    pair.same("a", "GET", "k")
    pair.same("a", "EXEC")


_STRINGS, _LISTS, _HASHES = ["s1", "s2"], ["l1"], ["h1"]


def _random_command(rng: random.Random) -> tuple[Any, ...]:
    roll = rng.random()
    if roll < 0.45:
        key = rng.choice(_STRINGS)
        return rng.choice([("SET", key, str(rng.randrange(9))), ("GET", key), ("INCR", key),
                           ("DEL", key), ("EXISTS", key, rng.choice(_STRINGS)),
                           ("EXPIRE", key, "1000"), ("APPEND", key, "x")])
    if roll < 0.6:
        key = rng.choice(_LISTS)
        return rng.choice([("LPUSH", key, "x"), ("RPOP", key), ("LLEN", key),
                           ("LRANGE", key, "0", "-1")])
    if roll < 0.7:
        key = rng.choice(_HASHES)
        return rng.choice([("HSET", key, "f", str(rng.randrange(3))), ("HGET", key, "f"),
                           ("HDEL", key, "f"), ("HLEN", key)])
    if roll < 0.76:
        return rng.choice([("PING",), ("ECHO", "e"), ("NOSUCH",), ("GET",), ("DBSIZE",)])
    if roll < 0.77:
        return ("FLUSHALL",)
    keys = rng.sample(_STRINGS + _LISTS + _HASHES, rng.randint(1, 2))
    return rng.choice([("MULTI",), ("MULTI",), ("EXEC",), ("EXEC",), ("DISCARD",),
                       ("WATCH", *keys), ("WATCH", *keys), ("UNWATCH",)])


@pytest.mark.parametrize("seed", range(6))
def test_random_sequences_of_two_clients_match_redis(pair: Pair, seed: int) -> None:
    rng = random.Random(seed)
    for step in range(400):
        connection = "a" if rng.random() < 0.7 else "b"
        command = _random_command(rng)
        theirs, ours = pair.run(connection, *command)
        assert ours == theirs, (
            f"seed {seed}, step {step}, {connection}: {command}: phalanx {ours!r}, "
            f"redis {theirs!r}")


def _raw_exchange(port: int, commands: bytes, resp3: bool) -> bytes:
    """Send raw commands (after HELLO 3 when `resp3`) and return every reply byte after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if resp3:
            sock.sendall(b"HELLO 3\r\n")
            time.sleep(0.3)
            sock.recv(65536)
        sock.sendall(commands)
        data = b""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 0.5:
            sock.settimeout(0.1)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if chunk:
                data += chunk
                quiet_since = time.monotonic()
        return data


@pytest.mark.parametrize("resp3", [True, False])
def test_null_and_typed_replies_inside_exec_byte_for_byte(redis_port: int, phalanx_port: int,
                                                          resp3: bool) -> None:
    """Pipelined, as one write: the connection's order holds around EXEC and WATCH."""
    commands = (b"DEL h s\r\nHSET h f v\r\nSADD s m\r\nMULTI\r\nHGETALL h\r\n"
                b"SMEMBERS s\r\nPING\r\nEXEC\r\n"
                b"MULTI\r\nSET k tx\r\nEXEC\r\nSET k after\r\nGET k\r\n"
                b"WATCH h\r\nHSET h x y\r\nMULTI\r\nGET h\r\nEXEC\r\n")
    theirs = _raw_exchange(redis_port, commands, resp3)
    ours = _raw_exchange(phalanx_port, commands, resp3)
    assert ours == theirs
    assert theirs.endswith(b"_\r\n" if resp3 else b"*-1\r\n")
    assert (b"%1\r\n" in theirs and b"~1\r\n" in theirs) is resp3


PIPELINES = [
    # A WATCH started behind another WATCH still holds the commands after it.
    b"DEL a b\r\nWATCH a\r\nWATCH b\r\nSET b x\r\nMULTI\r\nGET a\r\nEXEC\r\n",
    b"DEL a b\r\nWATCH a b\r\nGET a\r\nMULTI\r\nSET a 1\r\nEXEC\r\nSET b 2\r\n"
    b"WATCH b\r\nUNWATCH\r\nSET b 3\r\nMULTI\r\nINCR b\r\nEXEC\r\nMGET a b\r\n",
    b"DEL a\r\nWATCH a\r\nMULTI\r\nINCR a\r\nDISCARD\r\nINCR a\r\nMULTI\r\nINCR a\r\n"
    b"EXEC\r\nGET a\r\n",
]


@pytest.mark.parametrize("commands", PIPELINES)
def test_pipelined_watch_keeps_the_connection_order(redis_port: int, phalanx_port: int,
                                                     commands: bytes) -> None:
    assert _raw_exchange(phalanx_port, commands, False) == _raw_exchange(redis_port, commands,
                                                                          False)


def test_redis_py_pipelines_and_watch_error(phalanx_port: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=phalanx_port, socket_timeout=10)
    other = redis.Redis(host="127.0.0.1", port=phalanx_port, socket_timeout=10)
    client.delete("counter", "list")
    with client.pipeline() as pipe:  # transaction=True by default
        pipe.incr("counter").incr("counter").lpush("list", "a").lrange("list", 0, -1)
        assert pipe.execute() == [1, 2, 1, [b"a"]]
    with client.pipeline(transaction=True) as pipe:
        pipe.watch("counter")
        assert int(pipe.get("counter")) == 2
        other.set("counter", 10)
        pipe.multi()
        pipe.set("counter", 3)
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert client.get("counter") == b"10"

    def increment(pipe: Any) -> None:
        value = int(pipe.get("counter"))
        pipe.multi()
        pipe.set("counter", value + 1)

    assert client.transaction(increment, "counter") == [True]
    assert client.get("counter") == b"11"
    with client.pipeline() as pipe:
        pipe.set("counter", 1).lpush("counter", "x").get("counter")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            pipe.execute()
    assert client.get("counter") == b"1"  # runtime errors do not roll back
    client.close()
    other.close()

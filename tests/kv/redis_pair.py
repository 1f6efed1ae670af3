"""A real redis-server for the differential tests of sorted sets and geo: the `server`
fixture (a redis-server on a free loopback port, stopped by its PID) and `Pair` (one command
sent to our state machine and to redis-server, replies compared after normalisation)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phalanx.kv import Command, Error, KVStateMachine, encode_command
from phalanx.ops.ports import free_port as _free_port

redis = pytest.importorskip("redis")
REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")




@pytest.fixture(scope="module", name="redis_server")
def redis_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    assert REDIS_SERVER is not None
    workdir: Path = tmp_path_factory.mktemp("redis-zset")
    port = _free_port()
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, protocol=2, socket_timeout=5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Pair:
    """One command sent to our state machine and to redis-server, replies normalised."""

    def __init__(self, server: Any) -> None:
        server.flushall()
        self.connection = server.connection_pool.get_connection()
        self.machine = KVStateMachine()
        self.index = 0

    def ours(self, command: list[bytes]) -> Any:
        self.index += 1
        reply = self.machine.apply(self.index, encode_command(
            Command(command[0], tuple(command[1:]), 1_000)))
        if isinstance(reply, Error):
            message = reply.message
            return ("error", message[4:] if message.startswith("ERR ") else message)
        return reply.encode() if isinstance(reply, str) else reply

    def theirs(self, command: list[bytes]) -> Any:
        self.connection.send_command(*command)
        try:
            return self.connection.read_response()
        except redis.ResponseError as exc:
            return ("error", str(exc))

    def check(self, command: list[bytes], context: str) -> None:
        expected, actual = self.theirs(command), self.ours(command)
        if command[0].upper() == b"ZRANDMEMBER":  # random picks: compare sizes
            if isinstance(expected, list):
                expected, actual = len(expected), len(actual)
            elif isinstance(expected, bytes):
                expected, actual = "a member", "a member" if isinstance(actual, bytes) else actual
        assert actual == expected, f"{context}: {command!r}: ours {actual!r}, redis {expected!r}"

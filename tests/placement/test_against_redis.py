"""Differential: key slots and COMMAND INFO against a real redis-server (cluster mode on)."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phalanx.kv import COMMAND_SPECS, command_info
from phalanx.ops.ports import free_port
from phalanx.placement.slots import key_slot

redis = pytest.importorskip("redis")

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)"
)




@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    assert REDIS_SERVER is not None
    workdir: Path = tmp_path_factory.mktemp("redis-cluster")
    port = free_port()
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--cluster-enabled", "yes",
         # the default bus port (port + 10000) can overflow for an ephemeral port
         "--cluster-port", str(free_port())],
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


def test_key_slots_match_redis(server: Any) -> None:
    rng = random.Random(7)
    alphabet = b"ab{}x"
    keys = [b"foo", b"{user1000}.following", b"foo{}{bar}", b"foo{{bar}}zap", b"{}", b"}{"]
    keys += [bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(150)]
    keys += [rng.randbytes(rng.randint(1, 16)) for _ in range(50)]
    for key in keys:
        assert key_slot(key) == server.execute_command("CLUSTER KEYSLOT", key), key


def test_command_info_matches_redis(server: Any) -> None:
    names = [spec.name for spec in COMMAND_SPECS.values()
             if not spec.name.startswith("phalanx.")]
    connection = server.connection_pool.get_connection()
    try:
        connection.send_command("COMMAND", "INFO", *names)
        reply = connection.read_response()
    finally:
        server.connection_pool.release(connection)
    assert len(reply) == len(names)
    for theirs in reply:
        if theirs[0] == b"object":
            # Deliberate: Redis lists OBJECT as a keyless container of subcommands; phalanx's
            # row is the one of OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT (readonly, key at 2).
            theirs = [*theirs[:2], [b"readonly"], 2, 2, 1, [b"@keyspace", b"@read", b"@slow"]]
        if theirs[0] == b"memory":
            # Deliberate, as OBJECT: phalanx's row is MEMORY USAGE's (readonly, key at 2); the
            # keyless subcommands are the front end's (server/front/introspection.py).
            theirs = [*theirs[:2], [b"readonly"], 2, 2, 1, [b"@read", b"@slow"]]
        if theirs[0] in (b"xgroup", b"xinfo"):
            # Deliberate, as OBJECT: keyless containers in Redis; phalanx's one row (a write /
            # a read) has the key of their subcommands at position 2 (kv/commands/stream*).
            flag = b"write" if theirs[0] == b"xgroup" else b"readonly"
            theirs = [*theirs[:2], [flag], 2, 2, 1, list(theirs[6])]
        ours = command_info(COMMAND_SPECS[theirs[0].upper()])
        if theirs[0] in (b"eval", b"evalsha", b"script"):
            # Deliberate: phalanx flags them "write" (kv/commands/scripts.py): they go
            # through the log (Redis: may_replicate, effects replication).
            ours[2] = [flag for flag in ours[2] if flag != b"write"]
        # name, arity, flags, first, last, step, ACL categories (tips etc. are left empty)
        assert ours[:7] == [theirs[0], theirs[1], list(theirs[2]), theirs[3], theirs[4],
                            theirs[5], list(theirs[6])], theirs[0]

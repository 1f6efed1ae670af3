"""Real Redis clients (redis-py, redis-cli, raw sockets) against a real 3-node cluster."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from integration_harness import LocalCluster, NodeRef, wait_until

REDIS_CLI = shutil.which("redis-cli")
PASSWORD = "s3cret"


def raw_exchange(node: NodeRef, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes on a fresh connection and read until the server closes it (bounded)."""
    with socket.create_connection((node.host, node.port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def cli(node: NodeRef, *args: str, password: str | None = None) -> str:
    assert REDIS_CLI is not None
    command = [REDIS_CLI, "-h", node.host, "-p", str(node.port)]
    if password is not None:
        command += ["--no-auth-warning", "-a", password]
    completed = subprocess.run([*command, *args], capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()


def response_error(client: redis.Redis, *args: Any) -> str:
    with pytest.raises(redis.ResponseError) as caught:
        client.execute_command(*args)
    return str(caught.value)


def test_redis_py_and_redis_cli_on_every_node(cluster: Any) -> None:
    """Proves: any node serves any key with Redis semantics (followers forward writes and serve
    linearizable reads) for strings, counters, hashes, sets, lists, expiry, MGET/MSET and CAS
    (`SET k v IFEQ old`), through redis-py and redis-cli; errors are Redis's (unknown command,
    arity, WRONGTYPE, non-integer) and leave the connection usable; malformed RESP and an
    over-long bulk get `-ERR Protocol error` without hurting other clients; a value above
    max_value_bytes is refused; ROLE says master on the leader and slave elsewhere; INFO
    replication works; HELLO 3 switches the connection to RESP3."""
    c: LocalCluster = cluster(3, max_value_bytes=4096, max_bulk_bytes=1 << 20)
    leader = c.leader()
    bystander = c.client(c.nodes[0])
    assert bystander.ping()

    # Every data type through every node; each write is read back through every node.
    for node in c.nodes:
        r = c.client(node)
        p = f"{node.id}:"
        assert r.set(p + "s", "hello") is True
        assert r.incr(p + "n") == 1 and r.incrby(p + "n", 41) == 42
        assert r.hset(p + "h", mapping={"a": "1", "b": "2"}) == 2
        assert r.sadd(p + "set", "x", "y", "z") == 3
        assert r.lpush(p + "l", "c", "b", "a") == 3
        assert r.mset({p + "m1": "one", p + "m2": "two"}) is True
        assert r.set(p + "ttl", "v") is True and r.expire(p + "ttl", 1000) is True
        for reader_node in c.nodes:
            reader = c.client(reader_node)
            assert reader.get(p + "s") == "hello", (node.id, reader_node.id)
            assert reader.get(p + "n") == "42"
            assert reader.hgetall(p + "h") == {"a": "1", "b": "2"}
            assert reader.smembers(p + "set") == {"x", "y", "z"}
            assert reader.lrange(p + "l", 0, -1) == ["a", "b", "c"]
            assert reader.mget([p + "m1", p + "m2", p + "absent"]) == ["one", "two", None]
            assert 0 < reader.ttl(p + "ttl") <= 1000
            assert reader.ttl(p + "s") == -1 and reader.ttl(p + "absent") == -2
        assert r.delete(p + "s", p + "m1", p + "absent") == 2
        assert c.client(c.others(node)[0]).get(p + "s") is None

    # Expiry on replicated time: a key with a short TTL, set through a follower, disappears
    # from every node (the leader proposes the deletion), without a read touching it first.
    assert c.client(c.others(leader)[1]).set("short", "v", px=300) is True
    local_readers = [c.readonly_client(n) for n in c.nodes]
    wait_until(lambda: all(r.exists("short") == 0 for r in local_readers), 30,
               "the expired key to be deleted on every node")
    assert c.client(leader).get("short") is None

    # Compare-and-set through a follower and through the leader.
    follower = c.others(leader)[0]
    for node in (follower, leader):
        r = c.client(node)
        key = f"cas:{node.id}"
        assert r.set(key, "old") is True
        assert r.execute_command("SET", key, "new", "IFEQ", "wrong") is None
        assert r.get(key) == "old"
        assert r.execute_command("SET", key, "new", "IFEQ", "old") in (True, "OK")
        assert c.client(leader).get(key) == "new"

    # Errors: Redis's strings, and the connection keeps working after each.
    for node in (leader, follower):
        r = c.client(node, single_connection_client=True)
        assert response_error(r, "NOSUCHCOMMAND", "a").startswith("unknown command 'NOSUCHCOMMAND'")
        assert "wrong number of arguments for 'get' command" in response_error(r, "GET")
        assert r.hset("typed:h", "f", "v") in (0, 1)
        assert response_error(r, "GET", "typed:h").startswith(
            "WRONGTYPE Operation against a key holding the wrong kind of value")
        assert r.set("typed:s", "abc") is True
        assert response_error(r, "INCR", "typed:s") == "value is not an integer or out of range"
        assert r.ping() is True and r.get("typed:s") == "abc"

    # Malformed RESP on a raw socket: -ERR Protocol error, connection closed, others fine.
    for node in (leader, follower):
        reply = raw_exchange(node, b"*abc\r\n")
        assert reply.startswith(b"-ERR Protocol error"), reply
        reply = raw_exchange(node, b"*1\r\n$2000000\r\n")  # above max_bulk_bytes (1 MiB)
        assert reply.startswith(b"-ERR Protocol error"), reply
        assert bystander.ping() and bystander.get("typed:s") == "abc"

    # A value above max_value_bytes (4096 here) is refused, through the leader and a follower.
    for node in (leader, follower):
        r = c.client(node, single_connection_client=True)
        message = response_error(r, "SET", "big", "x" * 5000)
        assert "max_value_bytes" in message, message
        assert r.exists("big") == 0
        assert r.set("small", "x" * 4000) is True

    # ROLE and INFO replication.
    for node in c.nodes:
        role = c.client(node).execute_command("ROLE")
        info = c.client(node).info("replication")
        if node == leader:
            assert role[0] == "master", role
            assert info["role"] == "master" and info["connected_slaves"] == 2, info
        else:
            assert role[0] == "slave", role
            assert (role[1], int(role[2])) == (leader.host, leader.port), role
            assert info["role"] == "slave" and info["master_port"] == leader.port, info

    # HELLO 3 switches to RESP3: the HELLO reply is a map, and a RESP3 connection works.
    reply = raw_exchange(follower, b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*1\r\n$4\r\nQUIT\r\n")
    assert reply.startswith(b"%"), reply
    assert b"$5\r\nproto\r\n:3\r\n" in reply, reply
    r3 = c.client(follower, protocol=3)
    assert r3.set("r3:s", "v") is True and r3.get("r3:s") == "v" and r3.get("r3:none") is None
    assert r3.incr("r3:n") == 1
    assert raw_exchange(follower, b"HELLO 3\r\nGET r3:none\r\nQUIT\r\n").endswith(
        b"_\r\n+OK\r\n")

    # redis-cli against every node.
    if REDIS_CLI is None:
        pytest.skip("redis-cli is not installed (the redis-py part passed)")
    for node in c.nodes:
        key = f"cli:{node.id}"
        assert cli(node, "SET", key, "via-cli") == "OK"
        assert cli(node, "INCR", f"{key}:n") == "1"
        assert cli(node, "HSET", f"{key}:h", "f", "v") == "1"
        assert cli(node, "SADD", f"{key}:s", "m") == "1"
        assert cli(node, "RPUSH", f"{key}:l", "a", "b") == "2"
        for reader in c.nodes:
            assert cli(reader, "GET", key) == "via-cli"
            assert cli(reader, "HGETALL", f"{key}:h").split() == ["f", "v"]
            assert cli(reader, "SMEMBERS", f"{key}:s") == "m"
            assert cli(reader, "LRANGE", f"{key}:l", "0", "-1").split() == ["a", "b"]
        assert "wrong number of arguments" in cli(node, "GET")
        assert cli(node, "ROLE").splitlines()[0] == ("master" if node == leader else "slave")
    assert "role:master" in cli(leader, "INFO", "replication")


@pytest.fixture(scope="module")
def auth_cluster() -> Iterator[LocalCluster]:
    """A 3-node cluster with requirepass (shared by this module's requirepass tests)."""
    with LocalCluster(3, overrides={"requirepass": PASSWORD}, name="requirepass") as c:
        yield c


def exchange_one_by_one(node: NodeRef, commands: list[bytes], timeout: float = 10.0) -> list[bytes]:
    """Send each command in its own packet and read its whole reply before the next one."""
    replies = []
    with socket.create_connection((node.host, node.port), timeout=timeout) as sock:
        for command in commands:
            sock.sendall(command + b"\r\n")
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            replies.append(data)
    return replies


def test_wait_readonly_and_requirepass(auth_cluster: LocalCluster) -> None:
    """Proves: requirepass makes commands answer NOAUTH until AUTH (WRONGPASS for a bad
    password, OK after the right one), for raw clients, redis-py and redis-cli; WAIT returns an
    integer (followers holding everything committed); READONLY on a follower serves local reads
    (the follower's applied state, converged here), READWRITE goes back to linearizable reads."""
    c = auth_cluster
    leader = c.leader()
    follower = c.others(leader)[0]

    # NOAUTH before AUTH, WRONGPASS for a bad password, OK after AUTH; leader and follower.
    for node in (leader, follower):
        replies = exchange_one_by_one(node, [b"GET k", b"AUTH wrong", b"AUTH " + PASSWORD.encode(),
                                             b"GET k"])
        assert replies == [b"-NOAUTH Authentication required.\r\n",
                           b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
                           b"+OK\r\n", b"$-1\r\n"], replies
        with pytest.raises(redis.AuthenticationError, match="Authentication required"):
            c.client(node).get("k")
        with pytest.raises(redis.AuthenticationError):
            c.client(node, password="wrong").get("k")
    assert c.client(leader, password=PASSWORD).set("auth:1", "yes") is True
    assert c.client(follower, password=PASSWORD).get("auth:1") == "yes"
    if REDIS_CLI is not None:
        assert cli(follower, "GET", "auth:1", password=PASSWORD) == "yes"
        assert "NOAUTH" in cli(follower, "GET", "auth:1")

    # WAIT: an integer, on the leader and on a follower.
    on_leader = c.client(leader, password=PASSWORD).execute_command("WAIT", "1", "1000")
    on_follower = c.client(follower, password=PASSWORD).execute_command("WAIT", "1", "1000")
    assert isinstance(on_leader, int) and 0 <= on_leader <= 2, on_leader
    assert isinstance(on_follower, int) and on_follower >= 0, on_follower

    # READONLY on a follower: local reads of the replicated data.
    writer = c.client(leader, password=PASSWORD)
    for i in range(50):
        assert writer.set(f"ro:{i}", str(i)) is True
    c.wait_converged()
    ro = c.readonly_client(follower, password=PASSWORD)
    assert ro.mget([f"ro:{i}" for i in range(50)]) == [str(i) for i in range(50)]
    assert ro.execute_command("CLIENT", "INFO").find("readonly=1") >= 0
    assert ro.execute_command("READWRITE") in (True, "OK")
    assert ro.get("ro:7") == "7"


def test_requirepass_follower_forwards_writes(auth_cluster: LocalCluster) -> None:
    """Proves (once fixed): with requirepass, an authenticated client's write sent to a follower
    is forwarded to the leader (the forwarding link authenticates) and acknowledged."""
    c = auth_cluster
    leader = c.leader()
    for follower in c.others(leader):
        r = c.client(follower, password=PASSWORD)
        assert r.set(f"fwd:{follower.id}", "ok") is True
        assert c.client(leader, password=PASSWORD).get(f"fwd:{follower.id}") == "ok"


def test_pipelined_auth_applies_to_following_commands(auth_cluster: LocalCluster) -> None:
    """Proves (once fixed): commands pipelined after AUTH in the same packet run authenticated,
    in order, as in Redis."""
    c = auth_cluster
    leader = c.leader()
    reply = raw_exchange(leader, b"AUTH " + PASSWORD.encode() + b"\r\nSET pipelined v\r\n"
                                 b"GET pipelined\r\nQUIT\r\n")
    assert reply == b"+OK\r\n+OK\r\n$1\r\nv\r\n+OK\r\n", reply


def test_resp3_hgetall_is_a_map_and_smembers_a_set(cluster: Any) -> None:
    """Proves (once fixed): a RESP3 connection gets Redis's RESP3 types for hashes and sets,
    so redis-py 8 with its default protocol (3) gets a dict from HGETALL and a set from
    SMEMBERS, through the leader and through a follower."""
    c: LocalCluster = cluster(3)
    leader = c.leader()
    for node in (leader, c.others(leader)[0]):
        r3 = c.client(node, protocol=3)
        assert r3.hset(f"h:{node.id}", mapping={"a": "1", "b": "2"}) == 2
        assert r3.sadd(f"s:{node.id}", "x", "y") == 2
        wire = raw_exchange(node, f"HELLO 3\r\nHGETALL h:{node.id}\r\nSMEMBERS s:{node.id}\r\n"
                                  "QUIT\r\n".encode())
        assert b"%2\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n" in wire, wire
        assert b"~2\r\n$1\r\nx\r\n$1\r\ny\r\n" in wire, wire
        assert r3.hgetall(f"h:{node.id}") == {"a": "1", "b": "2"}
        assert r3.smembers(f"s:{node.id}") == {"x", "y"}

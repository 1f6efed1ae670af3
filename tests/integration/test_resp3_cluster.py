"""redis-py with protocol=3 (redis-py 8's default in many setups) against a real 3-node
cluster: RESP3 reply shapes for sorted sets, hashes and sets, through the leader (local reply)
and a follower (a reply forwarded over a RESP2 peer link, shaped at the client's node); and
the server commands clients call (CLIENT, INFO, TIME, CONFIG, COMMAND, SELECT)."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
import redis
from integration_harness import LocalCluster, NodeRef


def _exchange(node: NodeRef, commands: str) -> bytes:
    """Inline commands on a fresh connection, then QUIT: every reply byte."""
    with socket.create_connection((node.host, node.port), timeout=10) as sock:
        sock.sendall((commands + "QUIT\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.endswith(b"+OK\r\n")
    return data[:-5]


def test_redis_py_resp3_replies_and_server_commands(cluster: Any) -> None:
    c: LocalCluster = cluster(3)
    leader = c.leader()
    follower = c.others(leader)[0]
    for node in (leader, follower):
        r3 = c.client(node, protocol=3)
        z, h, s = f"z:{node.id}", f"h:{node.id}", f"s:{node.id}"
        assert r3.zadd(z, {"a": 1, "b": 2.5}) == 2
        assert r3.zscore(z, "b") == 2.5
        assert r3.zincrby(z, 0.5, "a") == 1.5
        assert r3.zrange(z, 0, -1, withscores=True) == [["a", 1.5], ["b", 2.5]]
        assert r3.zmscore(z, ["a", "nope"]) == [1.5, None]
        assert r3.zpopmax(z) == ["b", 2.5]  # no count: one flat pair, as Redis 7.0
        assert r3.hset(h, mapping={"f": "1", "g": "2"}) == 2
        assert r3.hgetall(h) == {"f": "1", "g": "2"}
        pairs = r3.hrandfield(h, 5, withvalues=True)
        assert sorted(map(tuple, pairs)) == [("f", "1"), ("g", "2")]
        assert r3.sadd(s, "x", "y") == 2
        assert r3.smembers(s) == {"x", "y"}
        assert r3.sunion(s) == {"x", "y"}
        assert sorted(r3.spop(s, 5)) == ["x", "y"]  # a RESP3 set: redis-py reads it as a list
        # The same commands under RESP2 keep Redis's RESP2 shapes; under RESP3, on the wire.
        assert _exchange(node, f"ZSCORE {z} a\r\n") == b"$3\r\n1.5\r\n"
        assert _exchange(node, f"HELLO 3\r\nZSCORE {z} a\r\n").endswith(b",1.5\r\n")
        assert _exchange(node, f"HELLO 3\r\nHGETALL {h}\r\n").endswith(
            b"%2\r\n$1\r\nf\r\n$1\r\n1\r\n$1\r\ng\r\n$1\r\n2\r\n")

    r3 = c.client(leader, protocol=3)
    seconds, micros = r3.time()
    assert abs(seconds - time.time()) < 30 and 0 <= micros < 1_000_000
    info = r3.info()
    assert info["redis_version"].startswith("7.0.") and info["arch_bits"] == 64
    assert info["tcp_port"] == leader.port and info["connected_clients"] >= 1
    assert info["redis_mode"] in ("standalone", "cluster") and info["used_memory"] > 0
    assert r3.client_setname("worker-1")
    assert r3.client_getname() == "worker-1"
    me = r3.client_id()
    assert r3.client_info()["name"] == "worker-1"
    assert any(entry["id"] == str(me) for entry in r3.client_list())
    victim = c.client(leader, protocol=3)
    victim_id = victim.client_id()
    assert r3.client_kill_filter(_id=victim_id) == 1
    # The killed connection is gone (redis-py quietly reconnects: a new client id).
    assert all(entry["id"] != str(victim_id) for entry in r3.client_list())
    assert victim.client_id() != victim_id
    assert r3.config_get("maxmemory") == {"maxmemory": "0"}
    with pytest.raises(redis.ResponseError, match="Unknown option"):
        r3.config_set("no-such-parameter", "1")
    assert r3.execute_command("SELECT", 0)
    with pytest.raises(redis.ResponseError, match="SELECT is not allowed in cluster mode"):
        r3.execute_command("SELECT", 1)
    assert r3.command_count() > 100
    assert r3.command_getkeys("MSET", "a", "1", "b", "2") == ["a", "b"]
    assert r3.echo("hi") == "hi"

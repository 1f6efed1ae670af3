"""Pub/Sub through redis-py against a real 3-node cluster: a message published on any node
reaches subscribers on every node (fan-out over the peer links, never the log), with RESP2
and RESP3 clients, patterns and shard channels, and survives the death of a third node."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from integration_harness import LocalCluster
from test_security import make_certs


def _next_message(pubsub: Any, timeout: float = 30.0) -> dict[str, Any]:
    """The next message (not a (un)subscribe confirmation) of a redis-py PubSub."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            return dict(message)
    raise AssertionError("no message within the timeout")


def _wait_subscribed(pubsub: Any, count: int) -> None:
    seen = 0
    deadline = time.monotonic() + 30
    while seen < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is not None and message["type"] in ("subscribe", "psubscribe",
                                                       "ssubscribe"):
            seen += 1
    assert seen == count


def test_redis_py_pubsub_across_nodes(cluster: Any) -> None:
    """Proves: SUBSCRIBE / PSUBSCRIBE on node A receive what PUBLISH sends on node B (the
    count is B's local subscribers, as Redis Cluster counts); SSUBSCRIBE / SPUBLISH likewise;
    a RESP3 client gets its messages as push frames; PUBSUB NUMSUB describes the node's own
    subscribers; after node C is killed, A's subscriber still receives what B publishes."""
    c: LocalCluster = cluster(3)
    a, b, third = c.nodes
    sub = c.client(a).pubsub()
    sub.subscribe("news")
    sub.psubscribe("n*")
    sub.ssubscribe("orders")
    _wait_subscribed(sub, 3)
    publisher = c.client(b)
    assert publisher.publish("news", "hello") == 0  # no subscriber on B itself
    received = [_next_message(sub), _next_message(sub)]
    assert {(m["type"], m["channel"], m["data"]) for m in received} == {
        ("message", "news", "hello"), ("pmessage", "news", "hello")}
    assert [m["pattern"] for m in received if m["type"] == "pmessage"] == ["n*"]
    assert publisher.spublish("orders", "o1") == 0
    sharded = sub.get_sharded_message(timeout=10)
    assert sharded is not None and (sharded["type"], sharded["channel"], sharded["data"]) == (
        "smessage", "orders", "o1")
    assert c.client(a).pubsub_numsub("news") == [("news", 1)]
    assert c.client(b).pubsub_numsub("news") == [("news", 0)]

    # RESP3: the subscriber's messages arrive as push frames, and it may run other commands.
    resp3 = c.client(third, protocol=3)
    sub3 = resp3.pubsub()
    sub3.subscribe("news")
    _wait_subscribed(sub3, 1)
    assert c.client(a).publish("news", "to-all") == 2  # A's subscriber: channel + pattern
    assert _next_message(sub3)["data"] == "to-all"
    assert _next_message(sub)["data"] == "to-all"
    assert _next_message(sub)["data"] == "to-all"  # the pattern
    sub3.close()

    # RESP2 subscribed mode refuses other commands on the subscribed connection.
    connection = sub.connection
    assert connection is not None
    connection.send_command("GET", "x")
    with pytest.raises(redis.ResponseError, match=r"only \(P\|S\)SUBSCRIBE"):
        connection.read_response()

    # redis-py's cluster client: SPUBLISH / SSUBSCRIBE routed by the channel's slot, PUBLISH
    # to any node; every node delivers.
    cluster_client = redis.cluster.RedisCluster(host=a.host, port=a.port, protocol=2,
                                                decode_responses=True, socket_timeout=10)
    try:
        cluster_sub = cluster_client.pubsub()
        cluster_sub.ssubscribe("orders")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            confirmation = cluster_sub.get_sharded_message(timeout=0.5)
            if confirmation is not None:
                break
        cluster_client.spublish("orders", "o2")
        got_sharded = None
        while got_sharded is None and time.monotonic() < deadline:
            got_sharded = cluster_sub.get_sharded_message(ignore_subscribe_messages=True,
                                                          timeout=0.5)
        assert got_sharded is not None and got_sharded["data"] == "o2"
        assert sub.get_sharded_message(timeout=10)["data"] == "o2"  # type: ignore[index]
        cluster_sub.close()
    finally:
        cluster_client.close()

    # A third node dies: messages published on live nodes still reach A's subscriber.
    c.kill(third)
    for i in range(20):
        assert publisher.publish("news", f"after-{i}") == 0
    got = [_next_message(sub)["data"] for _ in range(40)]
    assert sorted(set(got)) == sorted(f"after-{i}" for i in range(20))
    sub.close()


def test_pubsub_fan_out_with_a_password_a_cluster_secret_and_tls(
        cluster: Any, tmp_path: Path) -> None:
    """Proves: the peer links of the fan-out authenticate (requirepass), sign PHALANX.PUBLISH
    with the cluster secret and speak TLS like every other peer link: a message published on
    one node reaches subscribers on the two others; an unsigned PHALANX.PUBLISH is refused."""
    certs = make_certs(tmp_path / "certs")
    c: LocalCluster = cluster(3, requirepass="pw", cluster_secret="s3cret",
                              tls_cert_file=str(certs["cert"]),
                              tls_key_file=str(certs["key"]))
    options = {"password": "pw", "ssl": True, "ssl_ca_certs": str(certs["ca"])}
    subs = []
    for node in c.nodes[1:]:
        sub = c.client(node, **options).pubsub()
        sub.subscribe("secure")
        _wait_subscribed(sub, 1)
        subs.append(sub)
    publisher = c.client(c.nodes[0], **options)
    assert publisher.publish("secure", "hello") == 0
    for sub in subs:
        assert _next_message(sub)["data"] == "hello"
        sub.close()
    with pytest.raises(redis.ResponseError, match="without a valid cluster secret signature"):
        publisher.execute_command("PHALANX.PUBLISH", "P", "secure", "forged")

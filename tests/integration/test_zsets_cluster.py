"""Sorted sets through redis-py against a real 3-node cluster (RESP2, as the harness pins)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from integration_harness import LocalCluster, retry_command


def test_redis_py_sorted_sets_on_every_node(cluster: Any) -> None:
    """Proves: ZADD / ZRANGE / ZRANGEBYSCORE / ZREM and friends (and GEOADD / GEOSEARCH)
    work through redis-py on the leader and on followers (writes forwarded, reads
    linearizable), a sorted set written on one node reads back alike on every node, TYPE says
    zset, WRONGTYPE is Redis's, and COMMAND GETKEYS / COMMAND INFO describe the numkeys
    (movable keys) commands."""
    c: LocalCluster = cluster(3)
    leader = c.leader()
    for node in [leader, *c.others(leader)]:
        r = c.client(node)
        key = f"{{{node.id}}}:z"
        assert r.zadd(key, {"a": 1, "b": 2.5, "c": 3, "d": 10}) == 4
        assert r.zadd(key, {"a": 5}, gt=True, ch=True) == 1
        assert r.zincrby(key, 0.5, "b") == 3.0
        for reader_node in c.nodes:
            reader = c.client(reader_node)
            assert reader.zrange(key, 0, -1) == ["b", "c", "a", "d"]
            assert reader.zrange(key, 0, 1, withscores=True) == [("b", 3.0), ("c", 3.0)]
            assert reader.zrangebyscore(key, "(3", "+inf", withscores=True) == [
                ("a", 5.0), ("d", 10.0)]
            assert reader.zrevrangebyscore(key, 10, 4, start=0, num=1) == ["d"]
            assert reader.zscore(key, "a") == 5.0 and reader.zcard(key) == 4
            assert reader.type(key) == "zset"
        assert r.zrem(key, "a", "nope") == 1
        assert r.zpopmin(key) == [("b", 3.0)]
        other = f"{{{node.id}}}:y"
        assert r.zadd(other, {"c": 1, "x": 2}) == 2
        assert r.zunionstore(f"{{{node.id}}}:u", [key, other]) == 3
        assert r.zrange(f"{{{node.id}}}:u", 0, -1, withscores=True) == [
            ("x", 2.0), ("c", 4.0), ("d", 10.0)]
        assert r.zinter([key, other], withscores=True) == [("c", 4.0)]
        assert r.delete(key, other) == 2
        assert c.client(c.others(node)[0]).exists(key) == 0

    r = c.client(c.others(leader)[0])
    assert r.geoadd("geo", [13.361389, 38.115556, "Palermo", 15.087269, 37.502669, "Catania"]) == 2
    assert r.geodist("geo", "Palermo", "Catania", "km") == 166.2742
    assert r.geosearch("geo", longitude=15, latitude=37, radius=200, unit="km", sort="ASC",
                       withdist=True) == [["Catania", 56.4413], ["Palermo", 190.4424]]
    assert c.client(leader).geohash("geo", "Palermo") == ["sqc8b49rny0"]

    r = c.client(leader)
    r.set("plain", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.zadd("plain", {"a": 1})
    assert r.command_getkeys("ZUNIONSTORE", "dst", "2", "k1", "k2", "WEIGHTS", "1", "2") == [
        "dst", "k1", "k2"]
    assert r.command_getkeys("ZMPOP", "2", "k1", "k2", "MIN") == ["k1", "k2"]
    assert "movablekeys" in r.command()["zunion"]["flags"]


def test_multi_key_sorted_set_commands_across_shards(cluster: Any) -> None:
    """Proves: on a 3-shard cluster, ZUNIONSTORE / ZINTER whose numkeys keys live in different
    shards are refused with -CROSSSLOT (the movable keys are found from numkeys), and the same
    commands on keys sharing a {hashtag} are served."""
    c: LocalCluster = cluster(3, shards=3)
    r = c.client(c.nodes[0])
    for tag in ("t1", "t2", "t3"):
        retry_command(r, "ZADD", f"{{{tag}}}a", "1", "m", "2", "n")
        retry_command(r, "ZADD", f"{{{tag}}}b", "3", "m")
        assert retry_command(r, "ZUNIONSTORE", f"{{{tag}}}u", "2", f"{{{tag}}}a",
                             f"{{{tag}}}b") == 2
        assert r.zrange(f"{{{tag}}}u", 0, -1, withscores=True) == [("n", 2.0), ("m", 4.0)]
        assert r.zinter([f"{{{tag}}}a", f"{{{tag}}}b"]) == ["m"]
    refused = 0
    for index in range(20):
        keys = [f"k{index}:{part}" for part in ("dst", "a", "b")]
        try:
            retry_command(r, "ZUNIONSTORE", keys[0], "2", keys[1], keys[2])
        except redis.exceptions.ClusterCrossSlotError:
            refused += 1
    assert refused > 0, "no key triple of 20 spanned two shards"

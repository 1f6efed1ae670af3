"""The everyday command surface of issue 13 through redis-py against a real 3-node cluster."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from integration_harness import LocalCluster, wait_until


def test_everyday_commands_through_every_node(cluster: Any) -> None:
    """Proves: the new string / hash / set / list / key commands are served by every node with
    Redis's replies; a reliable queue (RPUSH, LMOVE to a processing list, HMGET the job, LREM on
    ack) loses nothing; SPOP, a random write, leaves the same set on every replica; two-key and
    numkeys commands are checked for -CROSSSLOT and described by COMMAND GETKEYS."""
    c: LocalCluster = cluster(3)
    leader = c.leader()
    follower = c.others(leader)[0]
    for node in (leader, follower):
        r = c.client(node)
        p = "{" + node.id + "}"
        # strings
        assert r.execute_command("SETEX", p + "s", 1000, "hello") in (True, "OK")
        assert 0 < r.ttl(p + "s") <= 1000
        assert r.getrange(p + "s", 1, 3) == "ell" and r.setrange(p + "s", 5, "!") == 6
        assert r.getex(p + "s", persist=True) == "hello!" and r.ttl(p + "s") == -1
        assert r.msetnx({p + "m1": "1", p + "m2": "2"}) is True
        assert r.msetnx({p + "m1": "x", p + "m3": "3"}) is False
        # a reliable queue: jobs are ids in a list, their payload in a hash
        for job in range(5):
            assert r.hset(p + f"job:{job}", mapping={"state": "new", "n": str(job)}) == 2
            r.rpush(p + "queue", str(job))
        done = []
        while (job_id := r.lmove(p + "queue", p + "processing", "LEFT", "RIGHT")) is not None:
            assert r.hmget(p + f"job:{job_id}", "state", "n", "absent") == ["new", job_id, None]
            assert r.hincrbyfloat(p + f"job:{job_id}", "tries", 0.5) == 0.5
            assert r.lrem(p + "processing", 1, job_id) == 1
            done.append(job_id)
        assert done == ["0", "1", "2", "3", "4"] and r.exists(p + "processing") == 0
        # sets
        r.sadd(p + "a", "1", "2", "3")
        r.sadd(p + "b", "2", "3", "4")
        assert r.sinter(p + "a", p + "b") == {"2", "3"}
        assert r.sintercard(2, [p + "a", p + "b"]) == 2
        assert r.sunionstore(p + "u", p + "a", p + "b") == 4
        assert r.smismember(p + "u", "1", "9") == [1, 0]
        assert r.smove(p + "a", p + "b", "1") is True
        # lists
        r.rpush(p + "l", "a", "b", "c", "b")
        assert r.lpos(p + "l", "b", rank=-1) == 3 and r.lindex(p + "l", -1) == "b"
        assert r.linsert(p + "l", "BEFORE", "c", "x") == 5
        assert r.lmpop(2, p + "none", p + "l", direction="RIGHT", count=2) == [p + "l",
                                                                             ["b", "c"]]
        # keys
        assert r.rename(p + "l", p + "l2") is True and r.copy(p + "l2", p + "l3") is True
        payload = r.dump(p + "l3")
        assert r.restore(p + "l4", 0, payload) == "OK" and r.lrange(p + "l4", 0, -1) == [
            "a", "b", "x"]
        assert r.sort(p + "u", desc=True) == ["4", "3", "2", "1"]
        assert r.object("encoding", p + "u") == "intset"
        assert r.touch(p + "u", p + "l4", p + "missing") == 2

    # SPOP is a replicated write: every replica removed the same members.
    r = c.client(follower)
    r.sadd("{pop}s", *range(50))
    popped = r.spop("{pop}s", 10)
    assert len(popped) == 10
    readers = [c.readonly_client(node) for node in c.nodes]
    wait_until(lambda: all(reader.scard("{pop}s") == 40 for reader in readers), 30,
               "every replica to apply the SPOP")
    members = [reader.smembers("{pop}s") for reader in readers]
    assert members[0] == members[1] == members[2] and not members[0] & set(popped)

    # Two-key and numkeys commands: their keys route them (phalanx refuses keys of different
    # shards with -CROSSSLOT; this cluster has one shard); COMMAND GETKEYS names them all.
    r = c.client(leader)
    for command, keys in ((("RENAME", "a", "b"), ["a", "b"]),
                          (("SINTERCARD", "2", "a", "b", "LIMIT", "1"), ["a", "b"]),
                          (("LMOVE", "a", "b", "LEFT", "LEFT"), ["a", "b"]),
                          (("COPY", "a", "b", "REPLACE"), ["a", "b"]),
                          (("LMPOP", "2", "x", "y", "LEFT"), ["x", "y"]),
                          (("SORT", "k", "STORE", "d"), ["k", "d"])):
        assert r.command_getkeys(*command) == keys, command
    r.rpush("a", "1")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.execute_command("SINTERCARD", "2", "a", "b")
    assert r.execute_command("RENAME", "a", "b") in (True, "OK")
    assert r.lrange("b", 0, -1) == ["1"]

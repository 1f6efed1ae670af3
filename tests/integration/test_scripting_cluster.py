"""Lua scripting through redis-py on a real 3-node cluster (kv/commands/scripts.py): the
replicated script cache survives a leader kill (NOSCRIPT never appears), EVALSHA works on
every node, redis-py's Lock works, and SCRIPT LOAD reaches every shard."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from integration_harness import LocalCluster, is_transient, retry_command


def _evalsha_until_served(client: redis.Redis, sha: str, *args: Any,
                          timeout: float = 60.0) -> Any:
    """EVALSHA, retrying transient errors only; a NOSCRIPT fails the test at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.evalsha(sha, *args)
        except redis.exceptions.NoScriptError as error:
            raise AssertionError(f"NOSCRIPT after a leader change: {error}") from error
        except redis.RedisError as error:
            if not is_transient(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_script_cache_survives_leader_kill_and_lock_works(cluster: Any) -> None:
    """Proves: register_script (EVALSHA, then SCRIPT LOAD on NOSCRIPT) through a follower;
    the script runs alike through every node; after kill -9 of the leader, EVALSHA through
    the survivors and (once restarted) the killed node never answers NOSCRIPT (the cache is
    replicated state); redis-py's Lock (its Lua scripts) acquires, extends and releases."""
    c: LocalCluster = cluster(3)
    leader = c.leader()
    follower = c.client(c.others(leader)[0])
    increment = follower.register_script("return redis.call('incr', KEYS[1])")
    assert increment(keys=["ctr"]) == 1
    for node in c.nodes:
        assert c.client(node).evalsha(increment.sha, 1, "ctr") >= 2
        assert c.client(node).script_exists(increment.sha) == [True]
    assert c.client(leader).eval_ro("return redis.call('get', KEYS[1])", 1, "ctr") == "4"

    c.kill(leader)
    survivors = c.others(leader)
    for node in survivors:
        assert _evalsha_until_served(c.client(node), increment.sha, 1, "ctr") >= 5
    c.restart(leader)
    assert _evalsha_until_served(c.client(leader), increment.sha, 1, "ctr") >= 7

    r = c.client(survivors[0])
    lock = r.lock("resource", timeout=10)
    assert lock.acquire(blocking=False)
    assert not c.client(survivors[1]).lock("resource", timeout=10).acquire(blocking=False)
    assert lock.extend(5)
    assert r.pttl("resource") > 10_000
    lock.release()
    assert r.exists("resource") == 0
    with pytest.raises(redis.ResponseError, match="Script attempted to access nonexistent"):
        r.eval("return undefined_global", 0)


def test_script_load_reaches_every_shard(cluster: Any) -> None:
    """Proves: on a 3-shard cluster SCRIPT LOAD through one node lets EVALSHA run on keys of
    every shard; a script touching an undeclared key of another shard gets a clear error."""
    c: LocalCluster = cluster(3, shards=3)
    r = c.client(c.nodes[0])
    sha = retry_command(r, "SCRIPT", "LOAD", "return redis.call('set', KEYS[1], ARGV[1])")
    for tag in ("t1", "t2", "t3", "t4", "t5", "t6"):
        assert retry_command(r, "EVALSHA", sha, "1", f"{{{tag}}}k", tag) == "OK"
        assert r.get(f"{{{tag}}}k") == tag
    assert r.script_exists(sha) == [True]
    errors = 0
    for index in range(12):
        try:
            retry_command(r, "EVAL", "return redis.call('set', ARGV[1], '1')", "1",
                          "anchor", f"other{index}")
        except redis.ResponseError as error:
            assert "lives in another shard" in str(error)
            errors += 1
    assert errors > 0
    assert retry_command(r, "SCRIPT", "FLUSH") == "OK"
    assert r.script_exists(sha) == [False]

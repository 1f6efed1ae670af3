"""Online shard split on real processes: under a write load, nothing acknowledged is lost."""

from __future__ import annotations

from typing import Any

import redis
from integration_harness import LocalCluster, WriteLoad, check_all_present, run_cli, wait_until


def _shards(c: LocalCluster) -> list[dict[str, Any]]:
    status = c.status(c.nodes[0]) or {}
    return list(status.get("shards") or [])


def test_split_under_write_load_loses_nothing_and_routes_by_the_new_map(cluster: Any) -> None:
    """Proves: `phalanx split` cuts shard 1 in two while four writers keep writing through every
    node; the map then has two shards that together own all 16384 slots, each with its own
    leader; every acknowledged write is readable afterwards with its value on every node (MGET
    over both shards), writes to both halves keep working, CLUSTER SLOTS shows both ranges, and
    a RedisCluster client routes to them."""
    c: LocalCluster = cluster(3)
    load = WriteLoad(c, threads=4, max_writes=3000, prefix="split").start()
    try:
        load.wait_acked(300, timeout=60)
        result = run_cli(["split", "--shard", "1", "--data-dir", str(c.data_dir)])
        assert result.returncode == 0, result.stderr
        assert "now shard 2" in result.stdout, result.stdout
        wait_until(lambda: len(_shards(c)) == 2 and all(s.get("leader") for s in _shards(c)),
                   30, "the map to show two shards, each with a leader")
        acked_at_split = load.acked_count()
        load.wait_acked(acked_at_split + 300, timeout=60)
    finally:
        load.stop()
    shards = _shards(c)
    ranges = sorted(tuple(r) for s in shards for r in s["slots"])
    assert ranges == [(0, 8191), (8192, 16383)], ranges
    print(f"split under load: {len(load.acknowledged)} acknowledged writes, "
          f"errors {dict(load.errors)}")
    check_all_present(c, load)
    # Both halves take writes and reads through any node.
    client = c.client(c.nodes[2])
    keys = [f"after:{i}" for i in range(40)]
    for key in keys:
        assert client.set(key, key) is True
    assert client.mget(keys) == keys
    slots = c.client(c.nodes[0]).execute_command("CLUSTER", "SLOTS")
    assert sorted((int(entry[0]), int(entry[1])) for entry in slots) == ranges
    first = c.nodes[0]
    cluster_client = redis.cluster.RedisCluster(host=first.host, port=first.port,
                                                decode_responses=True, socket_timeout=10)
    try:
        for key in keys:
            assert cluster_client.get(key) == key
        cluster_client.set("rc:{x}", "1")
        assert cluster_client.get("rc:{x}") == "1"
    finally:
        cluster_client.close()

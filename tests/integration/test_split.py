"""Online shard split on real processes: under a write load, nothing acknowledged is lost."""

from __future__ import annotations

from typing import Any

import redis
from integration_harness import LocalCluster, WriteLoad, run_cli, wait_until


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
    # Linearizable reads through every node: a READONLY read of a replica of the new shard may
    # legitimately lag (and the harness's convergence wait looks at the first shard only).
    _check_acknowledged_everywhere(c, load)
    # ... and every replica of both shards catches up: READONLY local reads agree in the end.
    keys = sorted(load.acknowledged)
    for node in c.nodes:
        local_reader = c.readonly_client(node)

        def caught_up(reader: Any = local_reader) -> bool:
            return all(reader.mget(keys[i:i + 500]) == [load.acknowledged[k]
                                                       for k in keys[i:i + 500]]
                       for i in range(0, len(keys), 500))

        wait_until(caught_up, 30, f"{node.id}'s replicas to hold every acknowledged write")
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


def test_merge_under_write_load_loses_nothing(cluster: Any) -> None:
    """Proves: `phalanx merge` folds shard 2 into shard 1 on a 5-node, 3-shard cluster while
    four writers keep writing: the driver first co-locates the two shards' replicas, shard 2
    freezes and shard 1 absorbs it; afterwards the map has shards 1 and 3 covering all slots,
    every node has deleted its replica of shard 2, and every acknowledged write is readable
    with its value on every node."""
    c: LocalCluster = cluster(5, shards=3)
    load = WriteLoad(c, threads=4, max_writes=3000, prefix="merge").start()
    try:
        load.wait_acked(300, timeout=60)
        result = run_cli(["merge", "--shard", "1", "--with", "2", "--data-dir", str(c.data_dir)],
                         timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "merged into shard 1" in result.stdout, result.stdout
        acked = load.acked_count()
        load.wait_acked(acked + 300, timeout=60)
    finally:
        load.stop()
    shards = _shards(c)
    assert sorted(s["id"] for s in shards) == [1, 3]
    covered = sorted(tuple(r) for s in shards for r in s["slots"])
    assert covered[0][0] == 0 and covered[-1][1] == 16383
    assert sum(b - a + 1 for a, b in covered) == 16384
    wait_until(lambda: all("2" not in (c.status(n) or {"local": {"2": 1}})["local"]
                           for n in c.nodes), 30, "every node to delete its replica of shard 2")
    print(f"merge under load: {len(load.acknowledged)} acknowledged writes, "
          f"errors {dict(load.errors)}")
    _check_acknowledged_everywhere(c, load)
    # Co-locating the replicas added members, which caught up by snapshot; the metrics say so.
    totals = {name: sum(_metric(c, node, name) for node in c.nodes)
              for name in ("phalanx_raft_snapshots_sent_total",
                           "phalanx_peer_messages_sent_total")}
    assert all(value > 0 for value in totals.values()), totals


def _metric(c: LocalCluster, node: Any, name: str) -> float:
    """The sum of every sample of metric `name` on `node`'s /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://{node.admin}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def _check_acknowledged_everywhere(c: LocalCluster, load: WriteLoad) -> None:
    """Every acknowledged write, read linearizably through every node (MGET fans out over
    the shards; a node without a replica of a key's shard forwards the read)."""
    keys = sorted(load.acknowledged)
    for node in c.nodes:
        client = c.client(node)
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            values = client.mget(chunk)
            wrong = [(k, v) for k, v in zip(chunk, values, strict=True)
                     if v != load.acknowledged[k]]
            assert not wrong, f"{node.id}: {len(wrong)} acknowledged writes wrong: {wrong[:5]}"

"""Restarts: a follower catching up by snapshot, and the store surviving repeated kill -9."""

from __future__ import annotations

import random
import signal
import time
from typing import Any

from integration_harness import LocalCluster, WriteLoad, check_all_present, wait_until


def test_restarted_follower_catches_up_by_snapshot(cluster: Any) -> None:
    """Proves: a follower that was down while the leader wrote far more entries than it keeps
    after a snapshot (snapshot_every_entries=300, snapshot_keep_entries=50) is brought back by
    `phalanx restart`, receives the leader's snapshot (leader logs 'sends snapshot', follower
    'installed snapshot'), catches up, and serves every key with READONLY local reads; then it
    keeps replicating new writes."""
    c: LocalCluster = cluster(3, snapshot_every_entries=300, snapshot_keep_entries=50)
    leader = c.leader()
    follower = c.others(leader)[0]
    writer = c.client(leader)
    writer.mset({f"early:{i}": str(i) for i in range(20)})
    c.wait_converged()
    c.kill(follower, signal.SIGTERM)
    behind = c.status(c.others(follower)[0])
    assert behind is not None
    follower_last = behind["applied_index"]

    # Small pipelines: each is its own Raft batch, so the leader sends the stopped follower more
    # AppendEntries than its inflight window (256) and cannot just replay what the transport
    # queued for it: the follower must come back through the snapshot.
    total = 1500
    for start in range(0, total, 4):
        pipe = writer.pipeline(transaction=False)
        for i in range(start, start + 4):
            pipe.set(f"bulk:{i}", f"value-{i}")
        assert all(r is True for r in pipe.execute())
    status = wait_until(lambda: (s := c.status(leader)) and s["snapshot_index"] > follower_last
                        + 50 and s, 60, "the leader to snapshot past the stopped follower")
    print(f"\nleader {leader.id}: snapshot at {status['snapshot_index']}, last index "
          f"{status['last_index']}; follower {follower.id} stopped at {follower_last}")

    c.restart(follower)
    c.wait_converged()
    assert c.grep_logs(leader, "sends snapshot at index"), "the leader sent no snapshot"
    assert c.grep_logs(follower, "installed snapshot"), "the follower installed no snapshot"
    ro = c.readonly_client(follower)
    keys = [f"bulk:{i}" for i in range(total)]
    assert ro.mget(keys) == [f"value-{i}" for i in range(total)]
    assert ro.mget([f"early:{i}" for i in range(20)]) == [str(i) for i in range(20)]

    assert c.client(follower).set("after-catch-up", "1") is True
    c.wait_converged()
    assert ro.get("after-catch-up") == "1"
    assert c.client(follower).dbsize() == total + 21


def test_repeated_kill9_during_write_storm_loses_nothing(cluster: Any) -> None:
    """Proves: crash recovery of the store: 8 rounds of kill -9 of a node (the leader on even
    rounds, a random node on odd ones) during a write storm of unique SETs and SADDs to random
    nodes, each followed by `phalanx restart`; at the end every acknowledged SET and SADD is
    readable on every node, and all nodes hold identical values for every key attempted (local
    reads after their applied indexes converge)."""
    c: LocalCluster = cluster(3)
    rng = random.Random(20261126)
    load = WriteLoad(c, threads=4, max_writes=40_000, prefix="storm", sets=True).start()
    kills: list[str] = []
    try:
        load.wait_acked(100)
        for round_number in range(8):
            victim = c.leader() if round_number % 2 == 0 else rng.choice(c.nodes)
            kills.append(victim.id)
            c.kill(victim, signal.SIGKILL)
            time.sleep(rng.uniform(0.1, 1.0))
            c.restart(victim)
            c.leader()
            load.wait_acked(load.acked_count() + 50)
    finally:
        load.stop()
    print(f"\nkilled {kills}; {load.acked_count()} acknowledged writes, "
          f"{len(load.attempted)} attempted; errors {load.errors}")
    check_all_present(c, load)

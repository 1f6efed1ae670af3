"""A follower whose shard data was wiped catches up by snapshot.

The follower is killed, the contents of its shard directory are deleted (the directory stays,
so the node still hosts the shard, with an empty log, no configuration and no snapshot) and it
is restarted. The leader had acknowledged entries from it that it no longer holds; it must
notice and send its snapshot (the log was compacted past them). Before the fix the leader kept
probing right after the follower's old match index for ever, and `/ready` on the follower said
ready with nothing applied.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from integration_harness import LocalCluster, NodeRef, wait_until

#: Generous: catching up takes about the time of the snapshot transfer (well under a second
#: here); the bound only has to survive a loaded machine.
CATCH_UP_TIMEOUT_S = 60.0
SNAPSHOT_EVERY = 400
SNAPSHOT_KEEP = 50
KEYS = 1200


def local_shard(cluster: LocalCluster, node: NodeRef) -> dict[str, Any] | None:
    status = cluster.status(node)
    return None if status is None else (status.get("local") or {}).get("1")


def ready(node: NodeRef) -> bool:
    try:
        with urllib.request.urlopen(f"{node.admin_url}/ready", timeout=1.0) as response:
            return bool(response.status == 200 and json.loads(response.read()).get("ready"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


@pytest.mark.parametrize("write_while_down", [True, False], ids=["writes-meanwhile", "idle"])
def test_a_wiped_follower_catches_up_by_snapshot(cluster: Any, write_while_down: bool) -> None:
    """Proves: a follower restarted with an empty shard directory (its data lost, its id kept)
    gets the leader's snapshot and serves the data from its own replica (READONLY reads) within
    a generous bound, whether or not writes happened while it was down (the leader learns of
    the loss from the rejected probe, or from the follower's answer to a heartbeat); and its
    /ready never says ready before it has applied something."""
    c: LocalCluster = cluster(3, snapshot_every_entries=SNAPSHOT_EVERY,
                              snapshot_keep_entries=SNAPSHOT_KEEP)
    c.leader()

    def shard_leader() -> NodeRef | None:
        for node in c.nodes:
            mine = local_shard(c, node)
            if mine is not None and mine.get("role") == "leader":
                return node
        return None

    leader = wait_until(shard_leader, 30, "a leader of shard 1")
    writer = c.client(leader)
    pipe = writer.pipeline(transaction=False)
    for i in range(KEYS):
        pipe.set(f"catchup:{i}", f"value-{i}")
    assert all(pipe.execute())
    c.wait_converged()
    leader_shard = local_shard(c, leader)
    assert leader_shard is not None
    # The leader's log no longer starts at 1: a replica without a log needs the snapshot.
    assert leader_shard["snapshot_index"] > SNAPSHOT_KEEP + 1, leader_shard

    victim = c.others(leader)[-1]
    c.kill(victim)
    shard_dir = Path(victim.data_dir) / "groups" / "1"
    for path in shard_dir.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    assert shard_dir.is_dir() and not any(shard_dir.iterdir())
    if write_while_down:
        assert writer.set("catchup:marker", "after-the-wipe") is True

    def target() -> int:
        mine = local_shard(c, leader)
        return int(mine["commit_index"]) if mine else 0

    started = time.monotonic()
    c.restart(victim)
    ready_with_nothing: list[dict[str, Any]] = []

    def caught_up() -> bool:
        was_ready = ready(victim)
        mine = local_shard(c, victim)
        if mine is None:
            return False
        # Read after /ready answered, so a 200 followed by applied 0 was a false "ready".
        if was_ready and int(mine["applied_index"]) == 0:
            ready_with_nothing.append(mine)
        return int(mine["applied_index"]) >= target()

    wait_until(caught_up, CATCH_UP_TIMEOUT_S, f"{victim.id} to apply the leader's commit "
               "index after its shard data was wiped", interval=0.05)
    elapsed = time.monotonic() - started
    mine = local_shard(c, victim)
    assert mine is not None and mine["snapshot_index"] > 0, mine
    assert not ready_with_nothing, f"/ready said ready with nothing applied: {ready_with_nothing}"

    reader = c.readonly_client(victim)
    assert reader.get("catchup:0") == "value-0"
    assert reader.get(f"catchup:{KEYS - 1}") == f"value-{KEYS - 1}"
    if write_while_down:
        assert reader.get("catchup:marker") == "after-the-wipe"
    wait_until(lambda: ready(victim), 30, f"{victim.id} /ready after catching up")
    # It keeps replicating afterwards.
    assert writer.set("catchup:after", "yes") is True
    wait_until(lambda: reader.get("catchup:after") == "yes", 30,
               f"{victim.id} to apply a write made after it caught up")
    print(f"wiped {victim.id} caught up in {elapsed:.2f} s (from restart, process start "
          f"included)")


def test_readonly_reads_of_a_wiped_follower_never_go_back_in_time(cluster: Any) -> None:
    """Proves: a READONLY client reading from a follower whose shard data was wiped, from the
    moment the restarted node accepts connections until its replica has caught up by
    snapshot, gets the acknowledged value or `-LOADING` (redis-py's BusyLoadingError), never
    a nil for a key that exists (before the fix: nil while the replica was empty)."""
    c: LocalCluster = cluster(3, snapshot_every_entries=SNAPSHOT_EVERY,
                              snapshot_keep_entries=SNAPSHOT_KEEP)
    c.leader()
    leader = wait_until(lambda: next((node for node in c.nodes if (local_shard(c, node) or {})
                                      .get("role") == "leader"), None),
                        30, "a leader of shard 1")
    writer = c.client(leader)
    pipe = writer.pipeline(transaction=False)
    for i in range(KEYS):
        pipe.set(f"stale:{i}", f"value-{i}")
    assert all(pipe.execute())
    c.wait_converged()
    victim = c.others(leader)[-1]
    c.kill(victim)
    shard_dir = Path(victim.data_dir) / "groups" / "1"
    for path in shard_dir.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    c.restart(victim, wait=False)
    answers: Counter[str] = Counter()
    reader: redis.Redis | None = None
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while True:
        assert time.monotonic() < deadline, f"no value within {CATCH_UP_TIMEOUT_S} s: {answers}"
        try:
            if reader is None:
                reader = c.readonly_client(victim)
            value = reader.get(f"stale:{KEYS - 1}")
        except redis.BusyLoadingError:
            answers["loading"] += 1
            time.sleep(0.01)
            continue
        except (redis.ConnectionError, redis.TimeoutError):
            answers["not listening yet"] += 1
            reader = None
            time.sleep(0.02)
            continue
        assert value is not None, f"a READONLY read answered nil for a key that exists: {answers}"
        assert value == f"value-{KEYS - 1}"
        answers["value"] += 1
        if answers["value"] >= 20:
            break
    # Every key, from the replica that has caught up.
    assert reader is not None
    assert all(reader.get(f"stale:{i}") == f"value-{i}" for i in range(0, KEYS, 97))
    print(f"READONLY reads of a wiped follower while it restarted and caught up: "
          f"{dict(answers)}")

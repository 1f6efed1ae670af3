"""A bulk load into an idle 3-node cluster (issue 15: the leader was lost at ~700k keys, its
loop held by a snapshot serialised in one go): keys in pipelines of 1,000 SETs, snapshots
taken all along (by entries and by bytes), then a wiped follower rebuilt from the last one.
Nothing may fail and nobody may start an election: every group's term is the same at the end
as after the cluster settled.

Default: 60,000 keys with snapshots every 20,000 entries (three snapshots of up to 60k
keys during the load), the consistency checker every 5 s (its digests are computed in slices,
server/consistency.py: every check during the load must agree). `PHALANX_BULK_KEYS=1000000`
runs the issue's 1M keys (minutes); `PHALANX_BULK_CHECK_MS` sets the checker's interval (0:
off; 60000 is the default of a node), `PHALANX_BULK_ELECTION_TICKS` the election timeout.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from integration_harness import LocalCluster, NodeRef, wait_until

KEYS = int(os.environ.get("PHALANX_BULK_KEYS", "60000"))
PIPELINE = 1_000
VALUE = b"x" * 16
LOAD_TIMEOUT_S = 120.0 + KEYS / 2_000
ELECTION_TICKS = int(os.environ.get("PHALANX_BULK_ELECTION_TICKS", "150"))
CHECK_MS = int(os.environ.get("PHALANX_BULK_CHECK_MS", "5000"))
#: The long variant (1M keys: 12+ min here) outlives the suite's 600 s per-test timeout.
pytestmark = pytest.mark.timeout(max(600, int(3 * LOAD_TIMEOUT_S)))


def groups_of(cluster: LocalCluster, node: NodeRef) -> dict[str, dict[str, Any]]:
    status = cluster.status(node, timeout=5.0)
    assert status is not None, f"{node.id} does not answer /status"
    return dict(status.get("local") or {})


def terms(cluster: LocalCluster) -> dict[tuple[str, str], tuple[int, str | None]]:
    """(node, group) -> (term, leader) of every replica."""
    return {(node.id, group): (int(item["term"]), item.get("leader"))
            for node in cluster.nodes for group, item in groups_of(cluster, node).items()}


def test_a_bulk_load_and_a_rebuild_keep_every_leader(cluster: Any) -> None:
    """Proves: loading KEYS keys in 1,000-SET pipelines into an idle 3-node cluster, with
    snapshots taken along the way, then rebuilding a wiped follower from a snapshot of all of
    them, gives no error and no election (every group's term and leader unchanged, on every
    replica); every key is on the rebuilt follower."""
    # Election timeout 1.5-3 s instead of 0.5-1 s: on this shared machine (load average 30 on
    # 2 cores) a node is starved of CPU for up to 1.7 s whatever it runs (the ticker's "event
    # loop stalled" log, printed below, says so); the snapshot's own work is cut in slices of
    # `snapshot_slice_ms`. A snapshot serialised in one go at 1M keys took seconds under load.
    # The consistency checker runs along (every CHECK_MS): its digest of a big shard is
    # computed in slices after the check is applied (server/consistency.py, kv/digest.py);
    # computed in one go at apply time, at 230k keys it held all three loops for 1-2.7 s at
    # once under load and cost elections (issue 15).
    c: LocalCluster = cluster(3, election_ticks=ELECTION_TICKS, consistency_check_ms=CHECK_MS)
    c.leader()

    def leader_of_shard() -> NodeRef | None:
        for node in c.nodes:
            if (groups_of(c, node).get("1") or {}).get("role") == "leader":
                return node
        return None

    leader = wait_until(leader_of_shard, 30, "a leader of shard 1")
    c.wait_converged()

    def agreed() -> bool:
        by_group: dict[str, set[tuple[int, str | None]]] = {}
        for (_node, group), value in terms(c).items():
            by_group.setdefault(group, set()).add(value)
        return all(len(v) == 1 and None not in {leader for _, leader in v}
                   for v in by_group.values())

    wait_until(agreed, 30, "every replica to know its group's leader")
    settled = terms(c)
    client = c.client(leader, timeout=60.0, decode_responses=False)
    started = time.monotonic()
    for first in range(0, KEYS, PIPELINE):
        pipe = client.pipeline(transaction=False)
        for number in range(first, min(KEYS, first + PIPELINE)):
            pipe.set(b"bulk:%09d" % number, VALUE)
        replies = pipe.execute(raise_on_error=False)
        errors = [r for r in replies if isinstance(r, redis.RedisError) or r is not True]
        assert not errors, f"keys {first}..: {errors[:3]}"
        assert time.monotonic() - started < LOAD_TIMEOUT_S, f"loading stalled at {first}"
    loaded = time.monotonic() - started
    c.wait_converged()
    snapshots = {n.id: len(c.grep_logs(n, "group 1 took a snapshot")) for n in c.nodes}
    assert all(snapshots.values()), snapshots
    # Every check the leader of shard 1 completed agreed (none outvoted anybody).
    checks = ((c.status(leader) or {}).get("consistency") or {}).get("last_checks", {})
    assert all(item["result"] in ("OK", "no-majority") for item in checks.values()), (
        checks, {n.id: (c.status(n) or {}).get("consistency") for n in c.nodes},
        {n.id: c.grep_logs(n, "consisten")[-20:] for n in c.nodes})
    for node in c.nodes:
        damaged = ((c.status(node) or {}).get("consistency") or {}).get("damaged")
        assert not damaged, (node.id, damaged)
    digests = {n.id: len(c.grep_logs(n, "check digest of shard 1:")) for n in c.nodes}

    # A follower that leads no group: killing it must change no leader.
    leads = {node for (node, _group), (_term, lead) in terms(c).items() if lead == node}
    victim = next((n for n in c.others(leader) if n.id not in leads), c.others(leader)[-1])
    led_by_victim = {group for (node, group), (_t, lead) in settled.items() if lead == victim.id}
    c.kill(victim)
    shard_dir = Path(victim.data_dir) / "groups" / "1"
    for path in shard_dir.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    rebuilding = time.monotonic()
    c.restart(victim)
    reader = c.readonly_client(victim, decode_responses=False)
    wait_until(lambda: reader.dbsize() >= KEYS, LOAD_TIMEOUT_S,
               f"{victim.id} to hold the {KEYS} keys again", interval=0.2)
    rebuilt = time.monotonic() - rebuilding
    # (bounded wait: the keys can be readable a moment before the node's log line is written)
    logged_by = time.monotonic() + 30
    while not c.grep_logs(victim, "installed snapshot") and time.monotonic() < logged_by:
        time.sleep(0.1)
    assert c.grep_logs(victim, "installed snapshot"), (
        "the follower did not install a snapshot: "
        f"{[line[24:] for line in c.grep_logs(victim, 'shard 1')][-12:]}")
    c.wait_converged()
    after = terms(c)
    changed = {key: (settled.get(key), value) for key, value in after.items()
               if settled.get(key) != value and key[1] not in led_by_victim}
    assert not changed, f"elections during the load or the rebuild: {changed}"
    for first in range(0, KEYS, 10_000):
        numbers = range(first, min(KEYS, first + 10_000, first + 200))
        assert reader.mget([b"bulk:%09d" % n for n in numbers]) == [VALUE] * len(numbers)
    stalls = [line.split(" WARNING ")[-1] for node in c.nodes
              for line in c.grep_logs(node, "event loop stalled")]
    worst = max((float(s.split("ran ")[1].split(" ms")[0]) for s in stalls), default=0.0)
    print(f"{KEYS:,} keys loaded in {loaded:.1f} s ({KEYS / loaded:,.0f} keys/s, load "
          f"{os.getloadavg()[0]:.1f}); snapshots of shard 1 per node {snapshots}; wiped "
          f"{victim.id} rebuilt in {rebuilt:.1f} s; loop stalls over 100 ms logged: "
          f"{len(stalls)}, worst {worst:.0f} ms; sliced check digests per node {digests} "
          f"(check every {CHECK_MS} ms), last check {checks}; terms unchanged")

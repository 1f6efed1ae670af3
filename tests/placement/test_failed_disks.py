"""The map remembers a failed disk (`ShardInfo.failed_disks`, docs/disk-faults.md): a replica
relocated off a node whose disk failed is never planned back onto that node (respread,
rebalance, repair, a later relocation) until an operator's readmit clears it. Without it the
planner's respread moved shard 1 from n2 (EIO) to n4 and back to n2 within 0.2 s."""

from __future__ import annotations

from typing import Any

from tests.placement.test_hosts import apply_all, converge, report_desired

from phalanx.placement.map import ClusterMap, NodeInfo, ShardInfo, apply_op
from phalanx.placement.planner import initial_map, plan, relocation_target


def four_nodes_three_zones() -> list[NodeInfo]:
    """The live test's layout: n1..n3 in z1..z3, n4 in z1 (with n1)."""
    zones = ["z1", "z2", "z3", "z1"]
    return [NodeInfo(f"n{i}", f"10.0.0.{i}:7200", f"10.0.0.{i}:7000", zone=zones[i - 1])
            for i in range(1, 5)]


def relocate(cmap: ClusterMap, shard_id: int, failed: str) -> tuple[ClusterMap, str]:
    """What the consistency watcher sends for a replica whose disk failed."""
    target = relocation_target(cmap, shard_id, failed)
    assert target is not None
    shard = cmap.shards[shard_id]
    op: dict[str, Any] = {"op": "set_replicas", "shard": shard_id,
                          "replicas": [target if n == failed else n for n in shard.replicas],
                          "failed_disk": failed,
                          "preferred_leader": "" if shard.preferred_leader == failed
                          else shard.preferred_leader}
    return apply_all(cmap, [op]), target


def holders(cmap: ClusterMap, shard_id: int) -> tuple[str, ...]:
    return cmap.shards[shard_id].replicas


def test_a_replica_relocated_off_a_failed_disk_is_not_moved_back() -> None:
    cmap = converge(initial_map(four_nodes_three_zones(), 1))
    shard = cmap.shards[1]
    failed = next(n for n in shard.replicas if n in ("n2", "n3"))  # its zone's only node
    cmap, target = relocate(cmap, 1, failed)
    assert cmap.shards[1].failed_disks == (failed,)
    assert failed not in holders(cmap, 1) and target in holders(cmap, 1)
    # The relocation doubled up a zone: respread would move the replica straight back.
    final = converge(cmap)
    assert failed not in holders(final, 1), holders(final, 1)
    assert final.shards[1].failed_disks == (failed,)


def test_readmit_clears_the_mark_and_the_spread_comes_back() -> None:
    cmap = converge(initial_map(four_nodes_three_zones(), 1))
    failed = next(n for n in cmap.shards[1].replicas if n in ("n2", "n3"))
    cmap, _ = relocate(cmap, 1, failed)
    cmap = converge(cmap)
    # The driver's own "alive" (a dead node returning) is not an operator's readmit.
    kept, reply = apply_op(cmap, {"op": "set_node_state", "node": failed, "state": "alive"})
    assert reply == "OK" and kept.shards[1].failed_disks == (failed,)
    cleared = apply_all(cmap, [{"op": "set_node_state", "node": failed, "state": "alive",
                                "readmit": True}])
    assert cleared.shards[1].failed_disks == ()
    final = converge(cleared)
    zones = {final.nodes[n].zone for n in holders(final, 1)}
    assert zones == {"z1", "z2", "z3"}, holders(final, 1)


def test_repair_never_places_a_shard_on_its_failed_disk() -> None:
    """Another replica's node dies: the repair picks any alive node but the failed disk; with
    none left, the shard stays short rather than going back onto the failed disk."""
    nodes = four_nodes_three_zones()
    cmap = converge(initial_map(nodes, 1))
    failed = next(n for n in cmap.shards[1].replicas if n in ("n2", "n3"))
    cmap, _ = relocate(cmap, 1, failed)
    cmap = converge(cmap)
    victim = next(n for n in holders(cmap, 1) if n != failed)
    cmap = report_desired(apply_all(cmap, [{"op": "set_node_state", "node": victim,
                                           "state": "dead"}]))
    for op in plan(cmap):
        if op["op"] == "set_replicas" and op["shard"] == 1:
            assert failed not in op["replicas"], op


def test_failed_disks_round_trip_and_are_not_encoded_when_empty() -> None:
    shard = ShardInfo(1, ((0, 16383),), ("n1", "n3", "n4"), failed_disks=("n2",))
    assert ShardInfo.from_json(shard.to_json()) == shard
    plain = ShardInfo(1, ((0, 16383),), ("n1", "n2", "n3"))
    assert "failed_disks" not in plain.to_json()


def test_a_failed_disk_kept_as_a_replica_is_refused() -> None:
    cmap = converge(initial_map(four_nodes_three_zones(), 1))
    replicas = list(cmap.shards[1].replicas)
    _, reply = apply_op(cmap, {"op": "set_replicas", "shard": 1, "replicas": replicas,
                               "failed_disk": replicas[0]})
    assert "failed disk" in str(reply), reply

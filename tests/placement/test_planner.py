"""Placement decisions: the initial map, violations, and plan() repair / drain / rebalance."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.errors import ConfigError
from phalanx.placement.map import ClusterMap, NodeInfo, ShardInfo, apply_op
from phalanx.placement.planner import (
    drain_done,
    initial_map,
    meta_voter_target,
    plan,
    relocation_target,
    replication_factor_for,
    slot_ranges,
    violations,
)
from phalanx.placement.slots import SLOT_COUNT


def nodes_in(zones: int, per_zone: int, regions: int = 1) -> list[NodeInfo]:
    """Nodes n1.. spread round robin over `zones` zones in each of `regions` regions."""
    found = []
    count = zones * per_zone * regions
    for i in range(1, count + 1):
        region = (i - 1) % regions
        zone = ((i - 1) // regions) % zones
        found.append(NodeInfo(f"n{i}", f"h{i}:7200", f"h{i}:7000", zone=f"z{zone}",
                              region=f"r{region}"))
    return found


def loads(cmap: ClusterMap) -> dict[str, int]:
    counts = Counter(n for shard in cmap.shards.values() for n in shard.replicas)
    return {node.id: counts[node.id] for node in cmap.alive_nodes()}


def leader_counts(cmap: ClusterMap) -> dict[str, int]:
    counts = Counter(shard.preferred_leader for shard in cmap.shards.values())
    return {node.id: counts[node.id] for node in cmap.alive_nodes()}


def spread(values: dict[str, int]) -> int:
    return max(values.values()) - min(values.values())


def apply_all(cmap: ClusterMap, ops: list[dict[str, Any]]) -> ClusterMap:
    for op in ops:
        cmap, reply = apply_op(cmap, op)
        assert reply == "OK", (op, reply)
    return cmap


def report_desired(cmap: ClusterMap) -> ClusterMap:
    """Every shard's leader reports that the desired configuration and leader are in force."""
    for shard in cmap.shards.values():
        if shard.in_motion() or shard.leader != shard.preferred_leader:
            cmap = apply_all(cmap, [{"op": "report_shard", "shard": shard.id,
                                     "leader": shard.preferred_leader, "term": shard.term + 1,
                                     "voters": list(shard.replicas), "learners": []}])
    return cmap


def converge(cmap: ClusterMap, bound: int = 100) -> tuple[ClusterMap, list[list[dict[str, Any]]]]:
    """Plan, apply, check idempotence before reports, report; until plan() is []."""
    rounds = []
    cmap = report_desired(cmap)
    for _ in range(bound):
        ops = plan(cmap)
        if not ops:
            return cmap, rounds
        rounds.append(ops)
        cmap = apply_all(cmap, ops)
        assert plan(cmap) == [], "planning again before the reports caught up changed plans"
        cmap = report_desired(cmap)
    raise AssertionError(f"plan() did not converge in {bound} rounds")


# ---------------------------------------------------------------------------- basics


def test_replication_factor_for() -> None:
    assert replication_factor_for("zone", 9) == 3
    assert replication_factor_for("region", 9) == 5
    assert replication_factor_for("region", 4) == 4
    assert replication_factor_for("zone", 1) == 1
    assert replication_factor_for("zone", 9, requested=5) == 5
    assert replication_factor_for("zone", 2, requested=5) == 2
    with pytest.raises(ConfigError, match="survival_goal"):
        replication_factor_for("planet", 3)
    with pytest.raises(ConfigError):
        replication_factor_for("zone", 0)
    with pytest.raises(ConfigError):
        replication_factor_for("zone", 3, requested=-1)


def test_meta_voter_target_is_odd_and_capped() -> None:
    assert [meta_voter_target("zone", n) for n in range(6)] == [0, 1, 1, 3, 3, 3]
    assert [meta_voter_target("region", n) for n in range(7)] == [0, 1, 1, 3, 3, 5, 5]


def test_slot_ranges_match_redis_cli() -> None:
    assert slot_ranges(1) == [(0, 16383)]
    assert slot_ranges(3) == [(0, 5460), (5461, 10922), (10923, 16383)]
    for count in (1, 2, 3, 5, 7, 16, 100, 16384):
        ranges = slot_ranges(count)
        assert ranges[0][0] == 0 and ranges[-1][1] == SLOT_COUNT - 1
        assert all(a[1] + 1 == b[0] for a, b in pairwise(ranges))
        sizes = [last - first + 1 for first, last in ranges]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ConfigError):
        slot_ranges(0)


def test_initial_map_refuses_bad_input() -> None:
    with pytest.raises(ConfigError, match="twice"):
        initial_map(nodes_in(3, 1) * 2, 3)
    with pytest.raises(ConfigError):
        initial_map([], 3)
    with pytest.raises(ConfigError):
        initial_map(nodes_in(3, 1), 3, survival_goal="galaxy")


# ---------------------------------------------------------------------------- initial map


@pytest.mark.parametrize("node_count", [3, 5, 9])
@pytest.mark.parametrize("zone_count", [1, 3])
@pytest.mark.parametrize("shard_count", [1, 3, 16])
def test_initial_map_shapes(node_count: int, zone_count: int, shard_count: int) -> None:
    nodes = [NodeInfo(f"n{i}", "p", "r", zone=f"z{i % zone_count}")
             for i in range(1, node_count + 1)]
    cmap = initial_map(nodes, shard_count)
    assert cmap.version == 1 and cmap.replication_factor == 3
    assert sorted(cmap.shards) == list(range(1, shard_count + 1))
    assert sum(shard.slot_count() for shard in cmap.shards.values()) == SLOT_COUNT
    assert all(cmap.shard_for_slot(slot) is not None for slot in (0, 8000, SLOT_COUNT - 1))
    for shard in cmap.shards.values():
        assert len(set(shard.replicas)) == 3
        assert shard.preferred_leader in shard.replicas
    if node_count % zone_count == 0:  # equal zones: balanced; else a small zone is forced
        assert spread(loads(cmap)) <= 1
        assert spread(leader_counts(cmap)) <= 1
    assert len(cmap.meta_voters) == 3
    found = violations(cmap)
    if zone_count == 1:
        assert found and all("share zone" in v for v in found)
        assert "placement driver: voters n1, n2 and n3 share zone z0" in found or \
            any(v.startswith("placement driver") for v in found)
    else:
        assert found == []
        zones = {cmap.nodes[v].zone for v in cmap.meta_voters}
        assert len(zones) == 3
    assert plan(report_desired(cmap)) == []
    assert ClusterMap.decode(cmap.encode()) == cmap


def test_initial_map_three_nodes_three_zones_is_exact() -> None:
    cmap = initial_map(nodes_in(3, 1), 3)
    assert [shard.slots for shard in cmap.shards.values()] == \
        [((0, 5460),), ((5461, 10922),), ((10923, 16383),)]
    assert all(sorted(s.replicas) == ["n1", "n2", "n3"] for s in cmap.shards.values())
    assert sorted(s.preferred_leader for s in cmap.shards.values()) == ["n1", "n2", "n3"]
    assert cmap.meta_voters == ("n1", "n2", "n3")


def test_initial_map_single_node() -> None:
    cmap = initial_map(nodes_in(1, 1), 4)
    assert cmap.replication_factor == 1 and cmap.meta_voters == ("n1",)
    assert violations(cmap) == []


def test_initial_map_region_goal() -> None:
    nodes = nodes_in(zones=2, per_zone=3, regions=3)  # 18 nodes: 3 regions x 2 zones x 3
    cmap = initial_map(nodes, 12, survival_goal="region")
    assert cmap.replication_factor == 5
    assert violations(cmap) == []
    for shard in cmap.shards.values():
        regions = Counter(cmap.nodes[n].region for n in shard.replicas)
        assert sorted(regions.values()) == [1, 2, 2]
        zones = Counter(cmap.nodes[n].domain for n in shard.replicas)
        assert max(zones.values()) == 1
    assert spread(loads(cmap)) <= 1
    assert spread(leader_counts(cmap)) <= 1
    assert len(cmap.meta_voters) == 5
    assert max(Counter(cmap.nodes[n].region for n in cmap.meta_voters).values()) == 2


def test_initial_map_region_goal_with_two_regions_reports_a_majority() -> None:
    nodes = nodes_in(zones=1, per_zone=3, regions=2)
    cmap = initial_map(nodes, 2, survival_goal="region")
    assert any("holds 3 of 5 replicas (a majority)" in v for v in violations(cmap))


@st.composite
def zone_topologies(draw: st.DrawFn) -> tuple[list[NodeInfo], int, int]:
    zones = draw(st.integers(3, 6))
    per_zone = draw(st.integers(1, 4))
    ids = draw(st.permutations(range(zones * per_zone)))
    nodes = [NodeInfo(f"n{ids[i]}", "p", "r", zone=f"z{i % zones}")
             for i in range(zones * per_zone)]
    return nodes, draw(st.integers(1, 40)), draw(st.sampled_from([0, 0, 1, 2, 3]))


@settings(max_examples=60, deadline=None)
@given(zone_topologies())
def test_initial_map_property_equal_zones(topology: tuple[list[NodeInfo], int, int]) -> None:
    nodes, shard_count, factor = topology
    cmap = initial_map(nodes, shard_count, replication_factor=factor)
    assert violations(cmap) == []
    assert spread(loads(cmap)) <= 1
    assert spread(leader_counts(cmap)) <= 1
    assert plan(report_desired(cmap)) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=3, max_size=5), st.integers(1, 30))
def test_initial_map_property_unequal_zones(sizes: list[int], shard_count: int) -> None:
    nodes = [NodeInfo(f"n{z}-{k}", "p", "r", zone=f"z{z}")
             for z, size in enumerate(sizes) for k in range(size)]
    cmap = initial_map(nodes, shard_count)
    assert violations(cmap) == []
    per_node = loads(cmap)
    for zone in range(len(sizes)):  # balance inside each zone (across zones may be forced)
        inside = [per_node[n.id] for n in nodes if n.zone == f"z{zone}"]
        assert max(inside) - min(inside) <= 1
    assert plan(report_desired(cmap)) == []


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 4), st.integers(2, 3), st.integers(1, 20))
def test_initial_map_property_regions(regions: int, per_region: int, shard_count: int) -> None:
    nodes = nodes_in(zones=per_region, per_zone=1, regions=regions)
    cmap = initial_map(nodes, shard_count, survival_goal="region")
    assert violations(cmap) == []
    assert plan(report_desired(cmap)) == []


# ---------------------------------------------------------------------------- violations


def test_violation_messages() -> None:
    nodes = {n.id: n for n in nodes_in(3, 2)}  # n1,n4 in z0; n2,n5 in z1; n3,n6 in z2
    shards = {
        1: ShardInfo(1, ((0, 99),), ("n1", "n4", "n2"), "n1"),
        2: ShardInfo(2, ((100, 199),), ("n1", "n2"), "n1"),
        3: ShardInfo(3, ((200, 299),), ("n1", "n2", "n3"), "n1"),
    }
    cmap = ClusterMap(1, "zone", 3, nodes, shards, ("n1", "n2", "n3"))
    assert violations(cmap) == [
        "shard 1: replicas n1 and n4 share zone z0",
        "shard 2: 2 replicas, replication factor is 3",
    ]
    dead = apply_all(cmap, [{"op": "set_node_state", "node": "n3", "state": "dead"}])
    assert violations(dead)[2:] == ["shard 3: replica n3 is on a dead node",
                                    "placement driver: voter n3 is on a dead node"]
    regional = ClusterMap(1, "region", 3, {n.id: n for n in nodes_in(1, 3, regions=2)},
                          {1: ShardInfo(1, (), ("n1", "n3", "n2"))}, ("n1",))
    assert violations(regional) == ["shard 1: region r0 holds 2 of 3 replicas (a majority)"]
    even = ClusterMap(1, "region", 4, regional.nodes,
                      {1: ShardInfo(1, (), ("n1", "n3", "n2", "n4"))}, ("n1",))
    assert violations(even) == [
        "shard 1: region r0 holds 2 of 4 replicas (half: its loss loses quorum)",
        "shard 1: region r1 holds 2 of 4 replicas (half: its loss loses quorum)",
    ]


# ---------------------------------------------------------------------------- plan


def stable(nodes: list[NodeInfo], shard_count: int, goal: str = "zone") -> ClusterMap:
    cmap, _ = converge(initial_map(nodes, shard_count, goal))
    assert plan(cmap) == []
    return cmap


def test_plan_of_a_healthy_map_is_empty_and_fresh_maps_wait() -> None:
    cmap = initial_map(nodes_in(3, 3), 12)
    assert plan(cmap) == []  # nothing reported yet: shards in motion, no repair needed
    assert plan(report_desired(cmap)) == []


def test_dead_node_is_replaced_in_its_zone_and_rf_restored() -> None:
    cmap = stable(nodes_in(3, 3), 12)  # n1, n4, n7 in z0
    dead = apply_all(cmap, [{"op": "set_node_state", "node": "n1", "state": "dead"}])
    ops = plan(dead)
    touched = {op["shard"] for op in ops if op["op"] == "set_replicas"}
    assert touched == {s.id for s in cmap.shards_of_node("n1")}  # minimal: only n1's shards
    assert {"op": "set_meta_voters", "voters": ["n4", "n2", "n3"]} in ops or \
        any(op["op"] == "set_meta_voters" for op in ops) == ("n1" in cmap.meta_voters)
    repaired = apply_all(dead, ops)
    assert plan(repaired) == []  # idempotent before the reports
    for sid in touched:
        shard = repaired.shards[sid]
        before = cmap.shards[sid]
        assert "n1" not in shard.replicas and len(shard.replicas) == 3
        assert shard.replicas[before.replicas.index("n1")] in ("n4", "n7")  # same zone z0
        # replica order kept otherwise
        assert [m for m in shard.replicas if m not in ("n4", "n7")] == \
            [m for m in before.replicas if m not in ("n1", "n4", "n7")]
        assert shard.preferred_leader in shard.replicas and shard.preferred_leader != "n1"
    assert "n1" not in repaired.meta_voters
    assert violations(repaired) == []
    final, _ = converge(repaired)
    assert violations(final) == []
    assert spread({n: c for n, c in loads(final).items()}) <= 2


def test_repair_when_no_replacement_exists_keeps_the_replica() -> None:
    cmap = stable(nodes_in(3, 1), 3)
    dead = apply_all(cmap, [{"op": "set_node_state", "node": "n2", "state": "dead"}])
    ops = plan(dead)  # nowhere to go: replicas stay; only n2's preferred leadership moves
    assert len(ops) == 1
    shard = cmap.shards[int(str(ops[0]["shard"]))]
    assert shard.preferred_leader == "n2"
    assert ops[0]["replicas"] == list(shard.replicas) and ops[0]["preferred_leader"] != "n2"
    dead = apply_all(dead, ops)
    assert plan(dead) == []
    assert violations(dead)[0] == "shard 1: replica n2 is on a dead node"
    joined = apply_all(dead, [{"op": "add_node", "node": NodeInfo(
        "n4", "p", "r", zone="z1").to_json()}])
    ops = plan(joined)
    assert all("n2" not in op.get("replicas", op.get("voters", [])) for op in ops)
    final, _ = converge(joined)
    assert violations(final) == []


def test_under_replicated_shard_grows() -> None:
    cmap = stable(nodes_in(3, 2), 6)
    shrunk = apply_all(cmap, [{"op": "set_replicas", "shard": 2,
                               "replicas": [cmap.shards[2].replicas[0]],
                               "preferred_leader": cmap.shards[2].replicas[0]}])
    ops = plan(shrunk)
    assert len(ops) == 1 and ops[0]["shard"] == 2
    replicas = ops[0]["replicas"]
    assert isinstance(replicas, list) and len(replicas) == 3
    assert replicas[0] == cmap.shards[2].replicas[0]
    assert len({cmap.nodes[n].zone for n in replicas}) == 3


def test_over_replicated_shard_shrinks_when_settled() -> None:
    cmap = stable(nodes_in(3, 2), 3)
    grown = report_desired(apply_all(cmap, [{"op": "set_replicas", "shard": 1,
                                             "replicas": ["n1", "n2", "n3", "n4", "n5"],
                                             "preferred_leader": "n1"}]))
    final, _ = converge(grown)
    assert len(final.shards[1].replicas) == 3
    assert violations(final) == []


def test_drain_moves_everything_off() -> None:
    cmap = stable(nodes_in(3, 3), 12)
    assert not drain_done(cmap, "n5")
    draining = apply_all(cmap, [{"op": "set_node_state", "node": "n2", "state": "draining"}])
    final, rounds = converge(draining)
    assert len(rounds) <= 10
    assert drain_done(final, "n2")
    assert violations(final) == []
    assert not final.shards_of_node("n2") and "n2" not in final.meta_voters
    removed = apply_all(final, [{"op": "set_node_state", "node": "n2", "state": "decommissioned"},
                                {"op": "remove_node", "node": "n2"}])
    assert "n2" not in removed.nodes


def test_drain_is_not_done_while_reports_lag() -> None:
    cmap = stable(nodes_in(3, 2), 3)
    draining = apply_all(cmap, [{"op": "set_node_state", "node": "n1", "state": "draining"}])
    moved = apply_all(draining, plan(draining))
    assert not moved.shards_of_node("n1") and "n1" not in moved.meta_voters
    assert not drain_done(moved, "n1")  # still a reported voter somewhere
    assert drain_done(report_desired(moved), "n1")


def test_join_rebalances_one_move_at_a_time() -> None:
    nodes = nodes_in(3, 3)
    cmap = stable(nodes[:6], 12)  # n1..n6
    assert set(loads(cmap).values()) == {6}
    cmap = apply_all(cmap, [{"op": "add_node", "node": node.to_json()} for node in nodes[6:]])
    assert loads(cmap)["n7"] == 0
    first = plan(cmap)
    assert len(first) == 1  # one replica moves, in its zone (n7 joins z0 with n1 and n4)
    shard = cmap.shards[int(str(first[0]["shard"]))]
    assert set(first[0]["replicas"]) - set(shard.replicas) == {"n7"}  # type: ignore[arg-type]
    assert set(shard.replicas) - set(first[0]["replicas"]) <= {"n1", "n4"}  # type: ignore[arg-type]
    final, rounds = converge(cmap)
    assert 6 <= len(rounds) <= 30
    assert spread(loads(final)) <= 1
    assert spread(leader_counts(final)) <= 1
    assert violations(final) == []


def test_each_round_moves_at_most_one_replica() -> None:
    nodes = nodes_in(3, 3)
    cmap = report_desired(initial_map(nodes[:3], 9))
    cmap = apply_all(cmap, [{"op": "add_node", "node": n.to_json()} for n in nodes[3:]])
    while ops := plan(cmap):
        moved = 0
        for op in ops:
            if op["op"] == "set_replicas":
                before = set(cmap.shards[int(str(op["shard"]))].replicas)
                moved += len(set(op["replicas"]) - before)  # type: ignore[call-overload]
        assert moved <= 1
        cmap = report_desired(apply_all(cmap, ops))
    assert spread(loads(cmap)) <= 1


def test_meta_voters_grow_when_nodes_join() -> None:
    one = initial_map(nodes_in(1, 1), 2)
    assert one.meta_voters == ("n1",)
    grown = apply_all(one, [{"op": "add_node", "node": n.to_json()} for n in nodes_in(3, 1)[1:]])
    ops = plan(report_desired(grown))
    assert [sorted(op["voters"]) for op in ops  # type: ignore[type-var]
            if op["op"] == "set_meta_voters"] == [["n1", "n2", "n3"]]
    assert grown.replication_factor == 1  # the factor changes only through set_policy
    raised = apply_all(grown, [{"op": "set_policy", "replication_factor": 3}])
    final, _ = converge(raised)
    assert violations(final) == [] and all(len(s.replicas) == 3 for s in final.shards.values())


def test_preferred_leaders_are_fixed_and_spread() -> None:
    cmap = stable(nodes_in(3, 1), 6)
    lopsided = report_desired(apply_all(cmap, [
        {"op": "set_replicas", "shard": sid, "replicas": list(s.replicas),
         "preferred_leader": "n1"} for sid, s in cmap.shards.items()]))
    assert leader_counts(lopsided)["n1"] == 6
    ops = plan(lopsided)
    assert 1 <= len(ops) <= 3
    final, rounds = converge(lopsided)
    assert spread(leader_counts(final)) <= 1
    assert all(len(ops) <= 3 for ops in rounds)
    missing = report_desired(apply_all(cmap, [{"op": "set_replicas", "shard": 1,
                                               "replicas": list(cmap.shards[1].replicas)}]))
    ops = plan(missing)
    assert len(ops) == 1 and ops[0]["preferred_leader"] in cmap.shards[1].replicas


def test_region_goal_repair_keeps_regions_minor() -> None:
    cmap = stable(nodes_in(zones=2, per_zone=1, regions=3), 6, goal="region")
    dead = apply_all(cmap, [{"op": "set_node_state", "node": "n1", "state": "dead"}])
    final, _ = converge(dead)
    assert violations(final) == []
    for shard in final.shards.values():
        assert "n1" not in shard.replicas
        assert max(Counter(final.nodes[n].region for n in shard.replicas).values()) <= 2


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 4), st.integers(1, 3), st.integers(1, 12), st.data())
def test_plan_converges_after_random_failures(zones: int, per_zone: int, shard_count: int,
                                              data: st.DataObject) -> None:
    nodes = nodes_in(zones, per_zone)
    cmap = stable(nodes, shard_count)
    events = data.draw(st.lists(st.tuples(st.sampled_from([n.id for n in nodes]),
                                          st.sampled_from(["dead", "draining", "alive"])),
                                max_size=3))
    for node_id, state in events:
        cmap = apply_all(cmap, [{"op": "set_node_state", "node": node_id, "state": state}])
    extra = NodeInfo("n99", "p", "r", zone="z0")
    if data.draw(st.booleans()):
        cmap = apply_all(cmap, [{"op": "add_node", "node": extra.to_json()}])
    final, _ = converge(cmap)
    alive = {n.id for n in final.alive_nodes()}
    alive_zones = {final.nodes[n].zone for n in alive}
    for shard in final.shards.values():
        assert shard.preferred_leader in alive or not alive & set(shard.replicas)
        if len(alive_zones) >= 3:
            assert all(n in alive for n in shard.replicas)
            assert len(shard.replicas) == 3
    if len(alive_zones) >= 3:
        assert violations(final) == []


def test_a_pending_merge_keeps_the_source_on_the_targets_replicas_and_freezes_balancing() -> None:
    cmap = report_desired(initial_map(nodes_in(3, 2), 3))
    cmap = apply_all(cmap, [{"op": "set_merge", "shard": 2, "into": 1}])
    assert set(cmap.shards[2].replicas) == set(cmap.shards[1].replicas)
    cmap = report_desired(cmap)
    # Nothing is rebalanced while the merge is pending, even though the nodes are now uneven.
    assert plan(cmap) == []
    # A repair of the target (one of its nodes dies) carries the source along.
    victim = cmap.shards[1].replicas[0]
    cmap = apply_all(cmap, [{"op": "set_node_state", "node": victim, "state": "dead"}])
    cmap = apply_all(cmap, plan(cmap))
    assert victim not in cmap.shards[1].replicas
    assert cmap.shards[2].replicas == cmap.shards[1].replicas
    # Once merged, balancing resumes and converges.
    cmap = apply_all(report_desired(cmap),
                     [{"op": "merge_shards", "shard": 1, "source": 2}])
    final, _ = converge(cmap)
    assert set(final.shards) == {1, 3}


def test_relocation_target_for_a_replica_on_a_failed_disk() -> None:
    """A replica whose disk failed goes to a node that holds no replica of its shard, chosen
    as a dead node's repair would be (spread, then load, then id); none when every alive node
    already holds one (it is then rebuilt in place); never for a node that holds none."""
    four = initial_map([*nodes_in(3, 1), NodeInfo("n4", "h4:7200", "h4:7000", zone="z0",
                                                  region="r0")], 1)
    shard = four.shards[1]
    holders = list(shard.replicas)
    spare = next(n for n in ("n1", "n2", "n3", "n4") if n not in holders)
    assert relocation_target(four, 1, holders[0]) == spare
    assert relocation_target(four, 1, spare) is None
    assert relocation_target(four, 99, holders[0]) is None
    three = initial_map(nodes_in(3, 1), 1)
    assert relocation_target(three, 1, "n1") is None

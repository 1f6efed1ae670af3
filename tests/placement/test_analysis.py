"""Failure analysis: single points of failure, availability arithmetic, cost, text output."""

from __future__ import annotations

import json
import math
from itertools import product
from typing import Any

import pytest

from phalanx.errors import ConfigError
from phalanx.placement.analysis import analyze, format_analysis, nines
from phalanx.placement.map import ClusterMap, NodeInfo, ShardInfo, apply_op
from phalanx.placement.planner import initial_map

PN, PZ, PR = 0.99, 0.999, 0.9999


def zoned(count: int, zones: int, regions: int = 1) -> list[NodeInfo]:
    return [NodeInfo(f"n{i}", "p", "r", zone=f"z{i % zones}", region=f"r{i % regions}")
            for i in range(1, count + 1)]


def spof_names(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["kind"], s["name"]) for s in report["spofs"]]


def brute_force_keyspace(cmap: ClusterMap, voter_sets: list[tuple[str, ...]]) -> float:
    """P(every voter set has a live majority), by enumerating every node, zone, region state."""
    nodes = sorted(cmap.nodes)
    zones = sorted({cmap.nodes[n].domain for n in nodes})
    regions = sorted({cmap.nodes[n].region for n in nodes})
    total = 0.0
    for node_up in product((True, False), repeat=len(nodes)):
        for zone_up in product((True, False), repeat=len(zones)):
            for region_up in product((True, False), repeat=len(regions)):
                p = math.prod(PN if u else 1 - PN for u in node_up)
                p *= math.prod(PZ if u else 1 - PZ for u in zone_up)
                p *= math.prod(PR if u else 1 - PR for u in region_up)
                up = {n for n, nu in zip(nodes, node_up, strict=True)
                      if nu and zone_up[zones.index(cmap.nodes[n].domain)]
                      and region_up[regions.index(cmap.nodes[n].region)]
                      and cmap.nodes[n].state in ("alive", "draining")}
                if all(2 * len(up & set(v)) > len(v) for v in voter_sets):
                    total += p
    return total


def test_nines() -> None:
    assert nines(0.0) == 12.0
    assert nines(1e-13) == 12.0
    assert nines(1e-3) == 3.0
    assert nines(0.5) == 0.3
    assert nines(1.0) == 0.0
    assert nines(4.6e-4) == 3.34


def test_one_zone_is_a_single_point_of_failure() -> None:
    cmap = initial_map([NodeInfo(f"n{i}", "p", "r") for i in range(1, 4)], 3)
    report = analyze(cmap)
    assert spof_names(report) == [("zone", "zone-1")]
    spof = report["spofs"][0]
    assert spof["affects"] == ["shard 1", "shard 2", "shard 3", "placement driver"]
    assert "0 of 3 voters (quorum 2)" in spof["why"]
    assert report["violations"]
    # the zone's own availability caps every shard: P = pz * pr * P(>=2 of 3 nodes)
    nodes_ok = PN ** 3 + 3 * PN ** 2 * (1 - PN)
    assert report["shards"][0]["availability"] == pytest.approx(PZ * PR * nodes_ok, rel=1e-12)
    assert report["keyspace"]["availability"] == pytest.approx(PZ * PR * nodes_ok, rel=1e-12)


def test_nine_nodes_three_zones_has_no_spof_and_hand_checked_nines() -> None:
    cmap = initial_map(zoned(9, 3), 12)
    report = analyze(cmap, node_availability=PN, zone_availability=PZ,
                     region_availability=PR)
    assert report["spofs"] == [] and report["unavailable"] == [] and report["violations"] == []
    # by hand: a replica is up with a = pn * pz (its zone is its own); one region for all.
    a = PN * PZ
    shard = PR * (a ** 3 + 3 * a ** 2 * (1 - a))
    assert shard == pytest.approx(0.99954035041515, abs=1e-13)
    for entry in report["shards"]:
        assert entry["availability"] == pytest.approx(shard, rel=1e-12)
        assert entry["nines"] == round(-math.log10(1 - shard), 2) == 3.34
        assert entry["quorum"] == 2 and entry["tolerates"] == 1
    assert report["driver"]["availability"] == pytest.approx(shard, rel=1e-12)
    keyspace = report["keyspace"]
    assert keyspace["method"] == "exact"
    assert keyspace["availability"] < shard  # more shards, more ways to lose one
    assert 2.5 < keyspace["nines"] < 3.34
    assert report["cost"] == {
        "shards": 12, "total_replicas": 36, "replicas_per_shard": 3.0,
        "storage_multiplier": 3,
        "replicas_per_node": {f"n{i}": 4 for i in range(1, 10)},
    }
    json.dumps(report)  # JSON-able


def test_keyspace_is_exact_against_brute_force() -> None:
    nodes = {n.id: n for n in zoned(5, 3, regions=2)}
    shards = {
        1: ShardInfo(1, ((0, 99),), ("n1", "n2", "n3")),
        2: ShardInfo(2, ((100, 199),), ("n3", "n4", "n5")),
        3: ShardInfo(3, ((200, 299),), ("n2", "n5")),
    }
    cmap = ClusterMap(1, "zone", 3, nodes, shards, ("n1",))
    report = analyze(cmap, node_availability=PN, zone_availability=PZ,
                     region_availability=PR)
    expected = brute_force_keyspace(cmap, [s.replicas for s in shards.values()])
    assert report["keyspace"]["method"] == "exact"
    assert report["keyspace"]["availability"] == pytest.approx(expected, rel=1e-12)
    for entry, shard in zip(report["shards"], shards.values(), strict=True):
        assert entry["availability"] == pytest.approx(
            brute_force_keyspace(cmap, [shard.replicas]), rel=1e-12)
    # a 2-replica shard loses quorum with either node
    assert ("node", "n2") in spof_names(report) and ("node", "n5") in spof_names(report)
    # two regions under the zone goal: region loss is analysed too
    assert any(kind == "region" for kind, _ in spof_names(report))


def test_dead_node_makes_its_partners_single_points() -> None:
    cmap = initial_map(zoned(3, 3), 2)
    dead, _ = apply_op(cmap, {"op": "set_node_state", "node": "n1", "state": "dead"})
    report = analyze(dead)
    assert ("node", "n2") in spof_names(report) and ("node", "n3") in spof_names(report)
    assert ("node", "n1") not in spof_names(report)
    assert all(entry["live_voters"] == 2 and entry["tolerates"] == 0
               for entry in report["shards"])
    down, _ = apply_op(dead, {"op": "set_node_state", "node": "n2", "state": "dead"})
    report = analyze(down)
    assert report["unavailable"] == ["shard 1", "shard 2", "placement driver"]
    assert report["keyspace"]["availability"] == 0.0 and report["keyspace"]["nines"] == 0.0
    assert report["shards"][0]["tolerates"] == -1


def test_reported_voters_are_used_when_present() -> None:
    cmap = initial_map(zoned(4, 4), 1, replication_factor=3)
    replicas = list(cmap.shards[1].replicas)
    reported, _ = apply_op(cmap, {"op": "report_shard", "shard": 1, "leader": replicas[0],
                                  "term": 1, "voters": [replicas[0]], "learners": []})
    report = analyze(reported)
    assert report["shards"][0]["voters"] == [replicas[0]]
    assert ("node", replicas[0]) in spof_names(report)


def test_region_goal() -> None:
    nodes = zoned(9, 3, regions=3)  # n1: z1/r1, n2: z2/r2, n3: z0/r0, ...
    cmap = initial_map(nodes, 6, survival_goal="region")
    report = analyze(cmap)
    assert report["spofs"] == []
    assert report["cost"]["storage_multiplier"] == 5
    assert all(entry["quorum"] == 3 for entry in report["shards"])
    # a shard with a majority in one region loses it with that region
    lopsided = ShardInfo(7, (), ("n1", "n4", "n7", "n2", "n3"))
    skewed = ClusterMap(1, "region", 5, cmap.nodes, {7: lopsided}, cmap.meta_voters)
    report = analyze(skewed)
    region_spofs = [s for s in report["spofs"] if s["kind"] == "region"]
    assert [s["name"] for s in region_spofs] == ["r1"]
    assert region_spofs[0]["affects"] == ["shard 7"]


def test_large_clusters_fall_back_to_a_lower_bound() -> None:
    cmap = initial_map(zoned(15, 3), 10)
    report = analyze(cmap)
    keyspace = report["keyspace"]
    assert keyspace["method"] == "lower bound"
    shard_availabilities = [entry["availability"] for entry in report["shards"]]
    assert math.prod(shard_availabilities) <= keyspace["availability"] + 1e-15
    assert keyspace["availability"] <= min(shard_availabilities)


def test_probabilities_are_validated() -> None:
    cmap = initial_map(zoned(3, 3), 1)
    with pytest.raises(ConfigError, match="node_availability"):
        analyze(cmap, node_availability=1.5)
    with pytest.raises(ConfigError, match="zone_availability"):
        analyze(cmap, zone_availability=-0.1)
    perfect = analyze(cmap, node_availability=1.0, zone_availability=1.0,
                      region_availability=1.0)
    assert perfect["keyspace"] == {"availability": 1.0, "nines": 12.0, "method": "exact"}


def test_format_analysis() -> None:
    healthy = format_analysis(analyze(initial_map(zoned(9, 3), 12)))
    assert "none: no single node, host, zone or region" in healthy
    assert "whole keyspace" in healthy and "placement driver" in healthy
    assert "... 2 more shards" in healthy
    assert "Cost: 36 replicas for 12 shards (3.0 per shard); storage x3" in healthy
    assert "Placement rules: all satisfied" in healthy
    laptop = format_analysis(analyze(initial_map([NodeInfo("n1", "p", "r")], 2)))
    assert "node n1: losing node n1" in laptop
    assert "zone zone-1" in laptop

"""Planning of the topology scenarios, without a cluster: when region-outage and node-lost
strike, whom they take, and the settings a run gets when the caller leaves them out."""

from __future__ import annotations

import random

import pytest

from phalanx.chaos.control import NodeInfo
from phalanx.chaos.nemesis import (
    _MIXABLE,
    PERMANENT,
    SCENARIOS,
    choose_lost_node,
    host_outage_targets,
    plan,
    region_outage_targets,
)
from phalanx.chaos.run_config import (
    RunConfig,
    apply_scenario_defaults,
    check_config,
    node_overrides,
    region_sizes,
    scenario_config,
)


def cluster(nodes: int, zones: int, regions: int) -> list[NodeInfo]:
    """The layout of `plan_local_cluster`: node i in zone z((i-1)%zones+1), zone zK in region
    r((K-1)%regions+1)."""
    infos = []
    for i in range(1, nodes + 1):
        zone = (i - 1) % zones + 1
        infos.append(NodeInfo(id=f"n{i}", zone=f"z{zone}", region=f"r{(zone - 1) % regions + 1}",
                              resp_host="127.0.0.1", resp_port=7000 + i,
                              admin_url=f"http://127.0.0.1:{7100 + i}", pid=1000 + i))
    return infos


# ---- the schedule -----------------------------------------------------------------------------

def test_node_lost_is_one_loss_right_after_the_warmup_never_healed() -> None:
    assert "node-lost" in PERMANENT
    for seed in range(20):
        slots = plan("node-lost", 30.0, seed, warmup_s=3.0, recovery_s=4.0)
        assert len(slots) == 1
        (slot,) = slots
        assert slot.kind == "node-lost" and slot.hold_s == 0.0
        assert 3.0 <= slot.at_s <= 4.0  # the rest of the run is the healing
        assert plan("node-lost", 30.0, seed) == slots  # the seed decides
    assert len(plan("node-lost", 120.0, seed=1)) == 1  # a long run still loses one node
    assert plan("node-lost", 5.0, seed=1, warmup_s=3.0, recovery_s=4.0) == []


def test_region_outage_repeats_and_heals_inside_the_run() -> None:
    slots = plan("region-outage", 60.0, seed=7)
    assert len(slots) >= 3
    assert all(s.kind == "region-outage" and 2.0 <= s.hold_s <= 5.0 for s in slots)
    assert all(s.at_s + s.hold_s <= 56.0 for s in slots)


def test_mixed_draws_neither_a_permanent_loss_nor_a_region_outage() -> None:
    assert "node-lost" not in _MIXABLE and "region-outage" not in _MIXABLE
    kinds = {slot.kind for seed in range(40) for slot in plan("mixed", 120.0, seed)}
    assert kinds and kinds <= set(_MIXABLE)
    assert {"region-outage", "node-lost"} <= set(SCENARIOS)


# ---- whom a fault takes -----------------------------------------------------------------------

def test_region_outage_takes_every_node_of_one_region() -> None:
    nodes = cluster(9, 6, 3)
    chosen = set()
    for seed in range(30):
        region, targets = region_outage_targets(nodes, random.Random(seed))
        assert targets == [n.id for n in nodes if n.region == region]
        assert len(targets) == 3  # 9 nodes, 3 per region: 6 survive, a quorum of every shard
        assert region_outage_targets(nodes, random.Random(seed)) == (region, targets)
        chosen.add(region)
    assert chosen == {"r1", "r2", "r3"}


def test_region_outage_needs_three_regions_and_a_surviving_majority() -> None:
    with pytest.raises(ValueError, match=r"at least 3 regions.*--regions 3"):
        region_outage_targets(cluster(6, 3, 2), random.Random(1))
    with pytest.raises(ValueError, match="at least 3 regions"):
        region_outage_targets(cluster(5, 3, 1), random.Random(1))
    # 5 nodes over 3 regions: r1 = n1, n4 and r2 = n2, n5 may go (3 survive), r3 = n3 too.
    region, targets = region_outage_targets(cluster(5, 3, 3), random.Random(2))
    assert 2 * len(targets) < 5
    # One region with most of the nodes: it is never the one taken.
    lopsided = [*cluster(3, 3, 3), *[NodeInfo(f"m{i}", "z1", "r1", "h", 1, "http://h:1", 1)
                                      for i in range(4)]]
    for seed in range(20):
        region, _targets = region_outage_targets(lopsided, random.Random(seed))
        assert region != "r1"


def hosted(nodes: int, zones: int, per_host: int) -> list[NodeInfo]:
    """The layout of `plan_local_cluster` with `nodes_per_host`: node i on host
    h((i-1)//per_host+1), host hH in zone z((H-1)%zones+1)."""
    infos = []
    for i in range(1, nodes + 1):
        host = (i - 1) // per_host + 1
        infos.append(NodeInfo(id=f"n{i}", zone=f"z{(host - 1) % zones + 1}", region="r1",
                              resp_host="127.0.0.1", resp_port=7000 + i,
                              admin_url=f"http://127.0.0.1:{7100 + i}", pid=1000 + i,
                              host=f"h{host}"))
    return infos


def test_host_outage_takes_every_node_of_one_shared_host() -> None:
    nodes = hosted(6, 1, 2)
    by_host = {"h1": ["n1", "n2"], "h2": ["n3", "n4"], "h3": ["n5", "n6"]}
    taken = set()
    for seed in range(30):
        host, targets = host_outage_targets(nodes, random.Random(seed))
        assert targets == by_host[host]
        taken.add(host)
    assert taken == set(by_host)  # the seed chooses among them
    # The leader's host half of the time (it qualifies): both outcomes occur over the seeds.
    with_leader = [host_outage_targets(nodes, random.Random(seed), "n4")[0] == "h2"
                   for seed in range(30)]
    assert any(with_leader) and not all(with_leader)
    # A host of several nodes is preferred to a one-node host (a node kill tests no host).
    mixed = hosted(5, 1, 2)  # h1: n1, n2; h2: n3, n4; h3: n5
    assert {host_outage_targets(mixed, random.Random(s))[0] for s in range(30)} == {"h1", "h2"}


def test_host_outage_keeps_a_majority_and_a_host_lies_in_its_zone() -> None:
    # Two hosts of two nodes: each holds half of the nodes, losing one takes the quorum.
    with pytest.raises(ValueError, match="every host holds half of the nodes or more"):
        host_outage_targets(hosted(4, 1, 2), random.Random(0))
    # Equal host labels in two zones are two hosts; unlabelled nodes are hosts of their own.
    nodes = [NodeInfo(id=f"n{i}", zone=f"z{zone}", region="r1", resp_host="127.0.0.1",
                      resp_port=7000 + i, admin_url="http://127.0.0.1:1", pid=i, host=label)
             for i, zone, label in [(1, 1, "db"), (2, 1, "db"), (3, 2, "db"), (4, 2, ""),
                                    (5, 3, ""), (6, 3, "")]]
    assert {tuple(host_outage_targets(nodes, random.Random(s))[1]) for s in range(20)} == \
        {("n1", "n2")}


def test_host_outage_defaults_to_six_nodes_on_three_hosts_in_one_zone() -> None:
    config = scenario_config("host-outage", duration_s=30.0)
    assert (config.nodes, config.zones, config.nodes_per_host) == (6, 1, 2)
    assert "host-outage" not in _MIXABLE  # mixed keeps its schedule for a seed
    built = apply_scenario_defaults(RunConfig(scenario="host-outage", nodes=6, zones=1))
    assert built.nodes_per_host == 2
    assert scenario_config("host-outage", nodes=9, nodes_per_host=3).nodes_per_host == 3


def test_the_lost_node_keeps_a_zone_mate_and_holds_replicas() -> None:
    four = cluster(4, 3, 1)  # z1: n1, n4; z2: n2; z3: n3
    picks = {choose_lost_node(four, random.Random(seed)) for seed in range(30)}
    assert picks == {"n1", "n4"}  # a replacement in the same zone keeps the zone spread
    five = cluster(5, 3, 1)  # z1: n1, n4; z2: n2, n5; z3: n3
    replicas = {"n1": 0, "n2": 2, "n3": 2, "n4": 1, "n5": 1}
    picks = {choose_lost_node(five, random.Random(seed), replicas) for seed in range(40)}
    assert picks == {"n2", "n4", "n5"}  # n1 holds nothing, n3 has no zone mate
    # Every zone holds one node: any node will do.
    three = cluster(3, 3, 1)
    assert choose_lost_node(three, random.Random(3)) in {"n1", "n2", "n3"}
    assert choose_lost_node(five, random.Random(9), replicas) == \
        choose_lost_node(five, random.Random(9), replicas)
    with pytest.raises(ValueError):
        choose_lost_node([], random.Random(1))


# ---- the settings of a run --------------------------------------------------------------------

def test_region_outage_defaults_to_nine_nodes_over_three_regions() -> None:
    config = scenario_config("region-outage", duration_s=40.0)
    assert (config.nodes, config.zones, config.regions, config.survival_goal) == \
        (9, 6, 3, "region")
    assert region_sizes(9, 6, 3) == {"r1": 3, "r2": 3, "r3": 3}
    assert region_outage_targets(cluster(9, 6, 3), random.Random(0))[1]
    smaller = scenario_config("region-outage", nodes=5)
    assert (smaller.nodes, smaller.zones, smaller.regions) == (5, 6, 3)


def test_node_lost_defaults_to_a_short_dead_after_and_a_spare_node() -> None:
    config = scenario_config("node-lost", duration_s=30.0, shards=2)
    assert config.dead_after_ms == 3000 and config.nodes == 5 and config.shards == 2
    assert node_overrides(config) == {"request_timeout_ms": 800, "shards": 2,
                                      "dead_after_ms": 3000}
    region = scenario_config("node-lost", survival_goal="region", regions=3, duration_s=30.0)
    assert region.nodes == 7  # 5 replicas per shard and two spares
    given = scenario_config("node-lost", nodes=4, dead_after_ms=2000, duration_s=30.0)
    assert (given.nodes, given.dead_after_ms) == (4, 2000)
    # A RunConfig built in code gets the scenario's node settings too.
    built = apply_scenario_defaults(RunConfig(scenario="node-lost", nodes=4, shards=2))
    assert built.dead_after_ms == 3000
    assert apply_scenario_defaults(RunConfig(scenario="leader-kill")) == \
        RunConfig(scenario="leader-kill")
    assert node_overrides(RunConfig(scenario="leader-kill")) == {"request_timeout_ms": 800}


@pytest.mark.parametrize(("scenario", "given", "message"), [
    ("region-outage", {"regions": 2}, "at least 3 regions"),
    ("region-outage", {"survival_goal": "zone"}, "region survival goal"),
    ("region-outage", {"nodes": 4}, "at least 5 nodes"),
    ("node-lost", {"nodes": 3}, "spare node.*at least 4 nodes"),
    ("node-lost", {"nodes": 5, "survival_goal": "region", "regions": 3}, "at least 6 nodes"),
    ("node-lost", {"dead_after_ms": 60_000, "duration_s": 30.0}, "longer --duration"),
    ("leader-kill", {"target": "x/cluster.json", "shards": 2}, "--shards configure a cluster"),
    ("leader-kill", {"regions": 4, "zones": 3}, "--regions must be between 1 and --zones"),
    ("leader-kill", {"shards": 0}, "--shards must be >= 1"),
    ("leader-pause", {"election_ticks": 0}, "--election-ticks must be >= 1"),
    ("leader-pause", {"target": "x/cluster.json", "election_ticks": 50},
     "--election-ticks configure a cluster"),
    ("host-outage", {"nodes": 4}, "at least 3 hosts.*got 2"),
    ("host-outage", {"nodes": 6, "nodes_per_host": 3}, "at least 3 hosts.*got 2"),
    ("host-outage", {"mode": "netns"}, "only the local mode"),
    ("leader-kill", {"nodes_per_host": 0}, "--nodes-per-host must be >= 1"),
    ("host-outage", {"target": "x/cluster.json", "nodes_per_host": 2},
     "--nodes-per-host configure a cluster"),
])
def test_impossible_runs_are_refused_in_one_line(scenario: str, given: dict[str, object],
                                                  message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scenario_config(scenario, **given)


def test_check_config_accepts_the_ordinary_runs() -> None:
    for scenario in SCENARIOS:
        check_config(apply_scenario_defaults(RunConfig(scenario=scenario, duration_s=30.0)))
    check_config(RunConfig(scenario="zone-outage", regions=3, shards=4, dead_after_ms=5000))
    check_config(RunConfig(scenario="leader-kill", target="x/cluster.json"))


def test_raft_timing_reaches_the_nodes_the_lab_starts() -> None:
    """Issue 15 lever 8: the lab compares election timings (`--election-ticks`,
    `--heartbeat-ticks`); unset, the nodes keep their own defaults."""
    config = scenario_config("leader-pause", election_ticks=50, heartbeat_ticks=5)
    assert node_overrides(config) == {"request_timeout_ms": 800, "election_ticks": 50,
                                      "heartbeat_ticks": 5}
    assert "election_ticks" not in node_overrides(scenario_config("leader-pause"))

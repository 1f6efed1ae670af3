"""Hosts as a failure domain (docs/hosts.md): K node processes of one machine never hold two
replicas of one shard while enough hosts exist; the initial map, repairs, rebalancing after a
join, drains and rebuilds keep it; a placement that cannot says so."""

from __future__ import annotations

import math
from collections import Counter
from itertools import product
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.placement.test_planner import apply_all, report_desired

from phalanx.errors import ConfigError
from phalanx.placement.analysis import analyze
from phalanx.placement.map import ClusterMap, NodeInfo, ShardInfo
from phalanx.placement.planner import initial_map, plan, relocation_target, violations


def hosts_layout(zones: int, hosts: int, per_host: int, *, id_order: list[int] | None = None,
                 region: str = "r1") -> list[NodeInfo]:
    """`hosts` hosts h1.. (round robin over `zones` zones) with `per_host` nodes each; node
    ids n1.. in host order unless `id_order` permutes them."""
    count = hosts * per_host
    order = id_order if id_order is not None else list(range(count))
    found = []
    for index in range(count):
        host = index // per_host + 1
        number = order[index] + 1
        found.append(NodeInfo(f"n{number}", f"10.0.0.{host}:{7200 + number}",
                              f"10.0.0.{host}:{7000 + number}", zone=f"z{(host - 1) % zones}",
                              region=region, host=f"h{host}"))
    return found


def host_of(cmap: ClusterMap, node_id: str) -> tuple[str, str, str, str]:
    return cmap.nodes[node_id].host_domain


def assert_host_spread(cmap: ClusterMap) -> None:
    """No shard (and not the driver) has two replicas on one host."""
    for shard in cmap.shards.values():
        hosts = Counter(host_of(cmap, n) for n in shard.replicas)
        assert max(hosts.values()) == 1, (shard.id, shard.replicas)
    voters = Counter(host_of(cmap, n) for n in cmap.meta_voters)
    assert max(voters.values()) == 1, cmap.meta_voters
    assert not [v for v in violations(cmap) if "share host" in v]


def crowding(cmap: ClusterMap, members: tuple[str, ...]) -> int:
    """The most replicas of `members` on one host."""
    return max(Counter(host_of(cmap, n) for n in members).values())


def converge(cmap: ClusterMap, check: Any = None, bound: int = 200) -> ClusterMap:
    """Plan, apply, report until plan() is []; `check(cmap)` after every applied round."""
    cmap = report_desired(cmap)
    for _ in range(bound):
        ops = plan(cmap)
        if not ops:
            return cmap
        cmap = apply_all(cmap, ops)
        if check is not None:
            check(cmap)
        cmap = report_desired(cmap)
    raise AssertionError(f"plan() did not converge in {bound} rounds")


# ---------------------------------------------------------------------------- the map


def test_host_round_trips_and_an_empty_host_is_not_encoded() -> None:
    node = NodeInfo("n1", "a:1", "a:2", zone="z1", host="machine-7")
    assert NodeInfo.from_json(node.to_json()) == node
    assert node.to_json()["host"] == "machine-7"
    plain = NodeInfo("n2", "a:1", "a:2")
    assert "host" not in plain.to_json()  # old maps encode byte for byte as before
    assert NodeInfo.from_json(plain.to_json()).host == ""
    assert plain.host_domain == ("region-1", "zone-1", "", "n2")
    assert node.host_domain == ("region-1", "z1", "machine-7", "")


@pytest.mark.parametrize("bad", [7, "two words", "tab\there", "x" * 254])
def test_a_bad_host_is_refused_naming_the_field(bad: object) -> None:
    raw = {**NodeInfo("n1", "a:1", "a:2").to_json(), "host": bad}
    with pytest.raises(ConfigError, match="node n1: field 'host'"):
        NodeInfo.from_json(raw)


def test_equal_host_names_in_two_zones_are_two_hosts() -> None:
    a = NodeInfo("n1", "a:1", "a:2", zone="z1", host="m")
    b = NodeInfo("n2", "b:1", "b:2", zone="z2", host="m")
    assert a.host_domain != b.host_domain


# ---------------------------------------------------------------------------- placement


def test_six_nodes_on_three_hosts_in_one_zone_spread_over_hosts() -> None:
    """The laptop case: one zone, so the zone rule cannot decide; hosts do."""
    cmap = initial_map(hosts_layout(zones=1, hosts=3, per_host=2), 6)
    assert_host_spread(cmap)
    for shard in cmap.shards.values():
        assert len(shard.replicas) == 3
    # K = 2 pays only if every node leads some shard: 6 shards, one preferred leader each.
    assert sorted(s.preferred_leader for s in cmap.shards.values()) == \
        ["n1", "n2", "n3", "n4", "n5", "n6"]
    assert Counter(n for s in cmap.shards.values() for n in s.replicas) == \
        dict.fromkeys(["n1", "n2", "n3", "n4", "n5", "n6"], 3)
    assert plan(report_desired(cmap)) == []


def test_without_hosts_the_placement_is_the_one_before_hosts() -> None:
    """Nodes without a host are hosts of their own: the same map as when every node names a
    distinct host (and, the planner's keys reducing to the old ones, as before hosts)."""
    for zones in (1, 2, 3):
        plain = [NodeInfo(f"n{i}", "p", "r", zone=f"z{i % zones}") for i in range(1, 8)]
        named = [NodeInfo(n.id, n.peer, n.resp, zone=n.zone, host=f"m{n.id}") for n in plain]
        for shards in (1, 5, 12):
            a, b = initial_map(plain, shards), initial_map(named, shards)
            assert [(s.replicas, s.preferred_leader) for s in a.shards.values()] == \
                [(s.replicas, s.preferred_leader) for s in b.shards.values()]
            assert a.meta_voters == b.meta_voters


def test_too_few_hosts_is_best_effort_and_said() -> None:
    cmap = initial_map(hosts_layout(zones=1, hosts=2, per_host=2), 2)
    for shard in cmap.shards.values():
        hosts = Counter(host_of(cmap, n) for n in shard.replicas)
        assert sorted(hosts.values()) == [1, 2]  # as many hosts as exist
    shared = [v for v in violations(cmap) if "share host" in v]
    assert len(shared) == 3  # two shards and the driver
    assert any(v.startswith("shard 1: replicas") and v.endswith(("share host h1",
                                                                 "share host h2"))
               for v in shared)


def test_analyze_names_a_host_that_takes_a_quorum() -> None:
    nodes = hosts_layout(zones=1, hosts=2, per_host=2)
    cmap = initial_map(nodes, 1)
    spofs = analyze(cmap)["spofs"]
    assert isinstance(spofs, list)
    kinds = {(s["kind"], s["name"]) for s in spofs}
    shared = Counter(host_of(cmap, n) for n in cmap.shards[1].replicas)
    crowded = next(h for h, c in shared.items() if c == 2)[2]
    assert ("host", crowded) in kinds
    assert any(s["kind"] == "host" and "leaves shard 1 with 1 of 3 voters" in s["why"]
               for s in spofs)
    healthy = initial_map(hosts_layout(zones=1, hosts=3, per_host=2), 3)
    assert not [s for s in analyze(healthy)["spofs"] if s["kind"] == "host"]  # type: ignore[union-attr]


@st.composite
def host_topologies(draw: st.DrawFn) -> tuple[list[NodeInfo], int]:
    zones = draw(st.integers(1, 3))
    hosts = draw(st.integers(3, 5))
    per_host = draw(st.integers(1, 3))
    count = hosts * per_host
    order = draw(st.permutations(range(count)))
    return hosts_layout(zones, hosts, per_host, id_order=list(order)), draw(st.integers(1, 12))


@settings(max_examples=60, deadline=None)
@given(host_topologies())
def test_property_no_shard_has_two_replicas_on_one_host(topology: tuple[list[NodeInfo], int]
                                                       ) -> None:
    """>= 3 hosts: the initial map never puts two replicas of a shard on one host, and is
    stable (plan() asks for nothing)."""
    nodes, shard_count = topology
    cmap = initial_map(nodes, shard_count)
    assert_host_spread(cmap)
    assert plan(report_desired(cmap)) == []


@settings(max_examples=40, deadline=None)
@given(host_topologies(), st.data())
def test_property_repairs_drains_and_joins_keep_host_spread(
        topology: tuple[list[NodeInfo], int], data: st.DataObject) -> None:
    """A host dies (all its nodes), a node drains, a new host joins: every map the planner
    makes on the way keeps host spread among the alive hosts while >= 3 remain. A host that
    died and returns: its replicas come back one move at a time, no shard's crowding on one
    host ever grows on the way, and the end is host spread again."""
    nodes, shard_count = topology
    cmap = converge(initial_map(nodes, shard_count))
    hosts = sorted({n.host for n in nodes})

    def alive_hosts(current: ClusterMap) -> set[tuple[str, str, str, str]]:
        return {n.host_domain for n in current.alive_nodes()}

    def check(current: ClusterMap) -> None:
        if len(alive_hosts(current)) < 3:
            return
        for shard in current.shards.values():
            counted = Counter(host_of(current, n) for n in shard.replicas
                              if current.nodes[n].state == "alive")
            assert not counted or max(counted.values()) == 1, (shard.id, shard.replicas)

    event = data.draw(st.sampled_from(["host dies", "host dies and returns", "node drains",
                                       "host joins"]))
    if event.startswith("host dies"):
        victim = data.draw(st.sampled_from(hosts))
        cmap = apply_all(cmap, [{"op": "set_node_state", "node": n.id, "state": "dead"}
                                for n in nodes if n.host == victim])
        if event == "host dies and returns":
            cmap = apply_all(converge(cmap, check),
                             [{"op": "set_node_state", "node": n.id, "state": "alive"}
                              for n in nodes if n.host == victim])
            worst = {sid: crowding(cmap, shard.replicas) for sid, shard in cmap.shards.items()}

            def never_worse(current: ClusterMap) -> None:
                for sid, shard in current.shards.items():
                    assert crowding(current, shard.replicas) <= worst[sid], shard.replicas

            final = converge(cmap, never_worse)
            assert_host_spread(final)
            return
    elif event == "node drains":
        node_id = data.draw(st.sampled_from([n.id for n in nodes]))
        cmap = apply_all(cmap, [{"op": "set_node_state", "node": node_id,
                                 "state": "draining"}])
    else:
        zone = data.draw(st.sampled_from(sorted({n.zone for n in nodes})))
        for k in range(2):
            new = NodeInfo(f"m{k}", f"10.9.9.9:{7300 + k}", f"10.9.9.9:{7400 + k}", zone=zone,
                           region="r1", host="h-new")
            cmap = apply_all(cmap, [{"op": "add_node", "node": new.to_json()}])
    final = converge(cmap, check)
    check(final)
    if len(alive_hosts(final)) >= 3:
        assert not [v for v in violations(final) if "share host" in v]
        for shard in final.shards.values():
            assert all(final.nodes[n].state == "alive" for n in shard.replicas)


def test_a_rebuild_goes_to_another_host() -> None:
    """A replica whose disk failed is rebuilt on a node of a host that holds no replica of
    the shard, never on the failed node's host-mate."""
    nodes = hosts_layout(zones=1, hosts=4, per_host=2)
    cmap = initial_map(nodes, 1)
    shard = cmap.shards[1]
    failed = shard.replicas[0]
    target = relocation_target(cmap, 1, failed)
    assert target is not None
    used = {host_of(cmap, n) for n in shard.replicas if n != failed}
    assert host_of(cmap, target) not in used
    assert host_of(cmap, target) != host_of(cmap, failed)


def test_a_host_that_returns_gets_the_spread_back() -> None:
    """3 hosts x 2 nodes, one zone: h1 dies, its replicas are re-created on h2 and h3 (two
    hosts left for three replicas: shared hosts, said by `violations`); h1 returns and the
    planner moves replicas back until no shard has two replicas on one host, one move per
    round, never making any shard's spread worse on the way."""
    nodes = hosts_layout(zones=1, hosts=3, per_host=2)
    cmap = converge(initial_map(nodes, 6))
    assert_host_spread(cmap)
    h1 = [n.id for n in nodes if n.host == "h1"]
    cmap = converge(apply_all(cmap, [{"op": "set_node_state", "node": n, "state": "dead"}
                                     for n in h1]))
    for shard in cmap.shards.values():
        assert not set(h1) & set(shard.replicas) and len(shard.replicas) == 3
    assert [v for v in violations(cmap) if "share host" in v]

    worst = {sid: Counter(host_of(cmap, n) for n in s.replicas).most_common(1)[0][1]
             for sid, s in cmap.shards.items()}

    def never_worse(current: ClusterMap) -> None:
        for sid, shard in current.shards.items():
            crowd = Counter(host_of(current, n) for n in shard.replicas).most_common(1)[0][1]
            assert crowd <= worst[sid], (sid, shard.replicas)

    back = apply_all(cmap, [{"op": "set_node_state", "node": n, "state": "alive"} for n in h1])
    final = converge(back, never_worse)
    assert_host_spread(final)
    loads = Counter(n for s in final.shards.values() for n in s.replicas)
    assert max(loads.values()) - min(loads[n.id] for n in nodes) <= 1, loads


def test_respread_fixes_zones_too_when_a_zone_returns() -> None:
    """The same for zones (3 zones x 2 nodes, no hosts named): a zone's return restores one
    replica per zone."""
    nodes = [NodeInfo(f"n{i}", "p", "r", zone=f"z{i % 3}") for i in range(1, 7)]
    cmap = converge(initial_map(nodes, 3))
    z0 = [n.id for n in nodes if n.zone == "z0"]
    cmap = converge(apply_all(cmap, [{"op": "set_node_state", "node": n, "state": "dead"}
                                     for n in z0]))
    assert [v for v in violations(cmap) if "share zone" in v]
    final = converge(apply_all(cmap, [{"op": "set_node_state", "node": n, "state": "alive"}
                                      for n in z0]))
    assert violations(final) == []


PN, PH, PZ, PR = 0.99, 0.995, 0.999, 0.9999


def brute_force_with_hosts(cmap: ClusterMap, voter_sets: list[tuple[str, ...]]) -> float:
    """P(every voter set has a live majority), enumerating every node, shared host (a host of
    several nodes), zone and region state: the oracle of the nines' host model."""
    nodes = sorted(cmap.nodes)
    members = Counter(cmap.nodes[n].host_domain for n in nodes if cmap.nodes[n].host)
    shared = sorted(h for h, count in members.items() if count > 1)
    zones = sorted({cmap.nodes[n].domain for n in nodes})
    regions = sorted({cmap.nodes[n].region for n in nodes})
    total = 0.0
    for state in product((True, False), repeat=len(nodes) + len(shared) + len(zones)
                         + len(regions)):
        node_up = dict(zip(nodes, state, strict=False))
        rest = state[len(nodes):]
        host_up = dict(zip(shared, rest, strict=False))
        zone_up = dict(zip(zones, rest[len(shared):], strict=False))
        region_up = dict(zip(regions, rest[len(shared) + len(zones):], strict=True))
        p = math.prod(PN if u else 1 - PN for u in node_up.values())
        p *= math.prod(PH if u else 1 - PH for u in host_up.values())
        p *= math.prod(PZ if u else 1 - PZ for u in zone_up.values())
        p *= math.prod(PR if u else 1 - PR for u in region_up.values())
        up = {n for n in nodes if node_up[n] and host_up.get(cmap.nodes[n].host_domain, True)
              and zone_up[cmap.nodes[n].domain] and region_up[cmap.nodes[n].region]}
        if all(2 * len(up & set(v)) > len(v) for v in voter_sets):
            total += p
    return total


def test_the_nines_count_a_shared_host_as_one_failure_exactly() -> None:
    """Session 8 left hosts out of the nines (a shared host only showed as a SPOF). Two nodes of
    a host fail together with the host's availability: checked against an oracle that
    enumerates every node, host, zone and region state, per shard and for the keyspace."""
    nodes = {n.id: n for n in hosts_layout(zones=2, hosts=3, per_host=2)}
    shards = {1: ShardInfo(1, ((0, 99),), ("n1", "n2", "n3")),      # two on h1
              2: ShardInfo(2, ((100, 199),), ("n1", "n3", "n5")),    # one per host
              3: ShardInfo(3, ((200, 299),), ("n4", "n6"))}
    cmap = ClusterMap(1, "zone", 3, nodes, shards, ("n2", "n4", "n6"))
    report = analyze(cmap, node_availability=PN, zone_availability=PZ,
                     region_availability=PR, host_availability=PH)
    assert report["assumptions"]["shared_hosts"] == 3  # type: ignore[index]
    for entry, shard in zip(report["shards"], shards.values(), strict=True):  # type: ignore[call-overload]
        assert entry["availability"] == pytest.approx(
            brute_force_with_hosts(cmap, [shard.replicas]), rel=1e-12, abs=1e-15)
    assert report["keyspace"]["method"] == "exact"  # type: ignore[index]
    assert report["keyspace"]["availability"] == pytest.approx(  # type: ignore[index]
        brute_force_with_hosts(cmap, [s.replicas for s in shards.values()]), rel=1e-12)
    assert report["driver"]["availability"] == pytest.approx(  # type: ignore[index]
        brute_force_with_hosts(cmap, [("n2", "n4", "n6")]), rel=1e-12)
    # Two replicas on one host are worse than one per host, all else equal (same zones).
    one, spread = report["shards"][0], report["shards"][1]  # type: ignore[index]
    assert one["availability"] < spread["availability"]
    # A host that always stays up is the model without hosts.
    flat = analyze(cmap, node_availability=PN, zone_availability=PZ, region_availability=PR,
                   host_availability=1.0)
    assert flat["shards"][1]["availability"] > spread["availability"]  # type: ignore[index]


def test_hosts_of_one_node_leave_the_nines_as_they_were() -> None:
    """A node alone on its host has its machine in its own figure: the host availability
    changes nothing (clusters without shared hosts keep their figures)."""
    cmap = initial_map(hosts_layout(zones=3, hosts=5, per_host=1), 4)
    figures = [analyze(cmap, host_availability=h) for h in (1.0, 0.9)]
    assert figures[0]["shards"] == figures[1]["shards"]
    assert figures[0]["keyspace"] == figures[1]["keyspace"]
    assert figures[0]["assumptions"]["shared_hosts"] == 0  # type: ignore[index]
    with pytest.raises(ConfigError, match="host_availability"):
        analyze(cmap, host_availability=1.5)

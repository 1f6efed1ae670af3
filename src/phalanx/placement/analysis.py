"""Failure analysis of a cluster map: single points of failure, availability in nines, cost.

What this module owns:
- `analyze`: which single node, host (several nodes on one machine), zone or region takes a shard's (or the placement driver's)
  quorum with it; the estimated availability of each shard, the driver and the whole keyspace;
  the replication cost; the placement's rule violations. A JSON-able dict.
- `format_analysis`: the same report as text for the CLI.

Rules of this module:
- Pure and deterministic: standard library only (`math`); exact arithmetic where affordable.
- The model: a replica is up iff its node, its host (when the host is shared), its zone and
  its region are up; nodes, shared hosts, zones and regions fail independently with the given
  availabilities. A shared host is one with several nodes of the map (docs/hosts.md: K node
  processes on one machine): its loss takes them all at once. A node alone on its host (or
  without a host label) has its machine's failures in its own node availability, so a cluster
  without shared hosts gets the figures it got before hosts existed. Nodes the map calls dead
  or decommissioned (or does not know) are down; alive and draining nodes are up-able.
- A shard is available iff a majority of its voters is up. Voters are the REPORTED voters when
  the shard has reported, else its desired replicas.
- Per shard and for the driver the probability is exact: enumerate the up/down states of the
  regions, zones and shared hosts involved, then count node states with a binomial-style
  convolution. For the
  whole keyspace (every shard at once; shards share nodes) it is exact while the live nodes
  involved are few (<= 12), else a lower bound (Harris' inequality: the events are increasing
  in every node, host, zone and region variable; conditioned on regions and zones, each
  shard's probability enumerates its own hosts), and the report says which.
- Region loss counts as a failure to survive only under the "region" goal or when the cluster
  spans several regions (a one-region cluster makes no claim about losing its region).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product

from phalanx.errors import ConfigError
from phalanx.placement.map import ClusterMap, NodeInfo
from phalanx.placement.planner import violations

_MAX_NINES = 12.0
_EXACT_KEYSPACE_NODES = 12


def nines(unavailability: float) -> float:
    """-log10(unavailability), rounded to 2 decimals, capped at 12 (0.0 when never up)."""
    if unavailability <= 10 ** -_MAX_NINES:
        return _MAX_NINES
    if unavailability >= 1.0:
        return 0.0
    return min(_MAX_NINES, round(-math.log10(unavailability), 2))


@dataclass(frozen=True, slots=True)
class _Group:
    """A set of voters needing a quorum: one shard, or the placement driver."""

    label: str
    voters: tuple[str, ...]
    live: tuple[str, ...]

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def survives_without(self, lost: set[str]) -> bool:
        return sum(v not in lost for v in self.live) >= self.quorum


@dataclass(frozen=True, slots=True)
class _Model:
    node: float
    zone: float
    region: float
    host: float = 1.0
    #: node id -> its shared host (a host of several nodes of the map); absent: not shared.
    shared_host: Mapping[str, tuple[str, str, str, str]] | None = None


def _shared_hosts(nodes: Mapping[str, NodeInfo]) -> dict[str, tuple[str, str, str, str]]:
    """Node id -> its host, for the nodes of hosts that hold several nodes of the map."""
    members: dict[tuple[str, str, str, str], list[str]] = {}
    for node in nodes.values():
        if node.host:
            members.setdefault(node.host_domain, []).append(node.id)
    return {node_id: host for host, ids in members.items() if len(ids) > 1 for node_id in ids}


def _is_live(nodes: Mapping[str, NodeInfo], node_id: str) -> bool:
    node = nodes.get(node_id)
    return node is not None and node.state in ("alive", "draining")


def _group(cmap: ClusterMap, label: str, voters: Iterable[str]) -> _Group:
    ordered = tuple(sorted(voters))
    return _Group(label, ordered, tuple(v for v in ordered if _is_live(cmap.nodes, v)))


def _host_states(members: Iterable[str], model: _Model) -> list[tuple[frozenset[str], float]]:
    """The up/down states of the shared hosts of `members`, as (members whose host is up (or
    not shared), probability); states with the same members are merged."""
    members = sorted(set(members))
    shared = model.shared_host or {}
    hosts = sorted({shared[m] for m in members if m in shared})
    if not hosts or model.host >= 1.0:
        return [(frozenset(members), 1.0)]
    merged: dict[frozenset[str], float] = {}
    for host_up in product((True, False), repeat=len(hosts)):
        p = math.prod(model.host if up else 1 - model.host for up in host_up)
        down = {h for h, up in zip(hosts, host_up, strict=True) if not up}
        reachable = frozenset(m for m in members if shared.get(m) not in down)
        merged[reachable] = merged.get(reachable, 0.0) + p
    return list(merged.items())


def _domain_states(nodes: Mapping[str, NodeInfo], members: Iterable[str], model: _Model,
                   hosts: bool = True) -> list[tuple[frozenset[str], float]]:
    """The up/down states of the regions, zones and (with `hosts`) shared hosts of `members`,
    as (members whose region, zone and host are up, probability); states with the same
    reachable members are merged."""
    members = sorted(set(members))
    regions = sorted({nodes[m].region for m in members})
    merged: dict[frozenset[str], float] = {}
    for region_up in product((True, False), repeat=len(regions)):
        p_regions = math.prod(model.region if up else 1 - model.region for up in region_up)
        live_regions = {r for r, up in zip(regions, region_up, strict=True) if up}
        # a zone of a region that is down cannot matter: enumerate only the others
        zones = sorted({nodes[m].domain for m in members if nodes[m].region in live_regions})
        for zone_up in product((True, False), repeat=len(zones)):
            p = p_regions * math.prod(model.zone if up else 1 - model.zone for up in zone_up)
            live_zones = {z for z, up in zip(zones, zone_up, strict=True) if up}
            reachable = frozenset(m for m in members if nodes[m].domain in live_zones)
            for up, p_hosts in (_host_states(reachable, model) if hosts
                                else [(reachable, 1.0)]):
                merged[up] = merged.get(up, 0.0) + p * p_hosts
    return sorted(merged.items(), key=lambda item: sorted(item[0]))
def _below_quorum(count: int, needed: int, p_node: float) -> float:
    """P(fewer than `needed` of `count` independent nodes are up)."""
    return sum(math.comb(count, k) * p_node ** k * (1 - p_node) ** (count - k)
               for k in range(min(needed, count + 1)))


def _unavailability(cmap: ClusterMap, group: _Group, model: _Model) -> float:
    if len(group.live) < group.quorum:
        return 1.0
    return sum(p * _below_quorum(len(reachable), group.quorum, model.node)
               for reachable, p in _domain_states(cmap.nodes, group.live, model))


def _keyspace_unavailability(cmap: ClusterMap, groups: Sequence[_Group], model: _Model
                             ) -> tuple[float, str]:
    """P(some shard is down) and the method: "exact" or "lower bound" (of availability)."""
    if not groups:
        return 0.0, "exact"
    if any(len(g.live) < g.quorum for g in groups):
        return 1.0, "exact"
    involved = sorted({v for g in groups for v in g.live})
    if len(involved) <= _EXACT_KEYSPACE_NODES:
        bit = {node_id: 1 << i for i, node_id in enumerate(involved)}
        needs = {(sum(bit[v] for v in g.live), g.quorum) for g in groups}
        full = (1 << len(involved)) - 1
        failing_up_sets = [mask for mask in range(full + 1)
                     if any((mask & voters).bit_count() < quorum for voters, quorum in needs)]
        total = 0.0
        for reachable, p_domains in _domain_states(cmap.nodes, involved, model):
            reach = sum(bit[n] for n in reachable)
            count = len(reachable)
            for mask in failing_up_sets:
                if mask & ~reach:
                    continue  # a node outside the reachable set cannot be up
                up = mask.bit_count()
                total += p_domains * model.node ** up * (1 - model.node) ** (count - up)
        return total, "exact"
    # Harris: P(all up | regions, zones) >= product of P(shard up | regions, zones): the
    # events are increasing in the independent node and host variables.
    total = 0.0
    for reachable, p_domains in _domain_states(cmap.nodes, involved, model, hosts=False):
        all_up = 1.0
        for group in groups:
            in_reach = [v for v in group.live if v in reachable]
            all_up *= 1 - sum(p_hosts * _below_quorum(len(up), group.quorum, model.node)
                              for up, p_hosts in _host_states(in_reach, model))
        total += p_domains * (1 - all_up)
    return total, "lower bound"


def _loss_text(groups: Sequence[_Group], lost: set[str]) -> str:
    parts = []
    for group in groups[:3]:
        left = sum(v not in lost for v in group.live)
        parts.append(f"{group.label} with {left} of {len(group.voters)} voters "
                     f"(quorum {group.quorum})")
    if len(groups) > 3:
        parts.append(f"and {len(groups) - 3} more below quorum")
    return "; ".join(parts)


def _spofs(cmap: ClusterMap, groups: Sequence[_Group]) -> list[dict[str, object]]:
    live_nodes = [n for n in cmap.nodes.values() if n.state in ("alive", "draining")]
    domains: list[tuple[str, str, str, set[str]]] = []  # kind, name, region, nodes lost
    for node in live_nodes:
        domains.append(("node", node.id, node.region, {node.id}))
    zones: dict[tuple[str, str], set[str]] = {}
    regions: dict[str, set[str]] = {}
    for node in live_nodes:
        zones.setdefault(node.domain, set()).add(node.id)
        regions.setdefault(node.region, set()).add(node.id)
    # A host with several nodes (docs/hosts.md) is a domain of its own; a one-node host is
    # its node, already listed.
    hosts: dict[tuple[str, str, str, str], set[str]] = {}
    for node in live_nodes:
        if node.host:
            hosts.setdefault(node.host_domain, set()).add(node.id)
    for (region, _, host, _), members in sorted(hosts.items()):
        if len(members) > 1:
            domains.append(("host", host, region, members))
    for (region, zone), members in sorted(zones.items()):
        domains.append(("zone", zone, region, members))
    if cmap.survival_goal == "region" or len(regions) > 1:
        for region, members in sorted(regions.items()):
            domains.append(("region", region, region, members))
    found: list[dict[str, object]] = []
    for kind, name, region, lost in domains:
        hit = [g for g in groups
               if g.survives_without(set()) and not g.survives_without(lost)]
        if not hit:
            continue
        what = (f"node {name}" if kind == "node" else
                f"{kind} {name} ({', '.join(sorted(lost))})")
        entry: dict[str, object] = {
            "kind": kind, "name": name, "affects": [g.label for g in hit],
            "why": f"losing {what} leaves {_loss_text(hit, lost)}",
        }
        if kind in ("zone", "host"):
            entry["region"] = region
        found.append(entry)
    return found


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability between 0 and 1, got {value}")


def analyze(cmap: ClusterMap, *, node_availability: float = 0.99,
            zone_availability: float = 0.999, region_availability: float = 0.9999,
            host_availability: float = 0.999) -> dict[str, object]:
    """Single points of failure, availability estimates and cost of `cmap` (see module doc).
    `host_availability` is that of a host shared by several nodes (docs/hosts.md)."""
    _check_probability("node_availability", node_availability)
    _check_probability("zone_availability", zone_availability)
    _check_probability("region_availability", region_availability)
    _check_probability("host_availability", host_availability)
    shared = _shared_hosts(cmap.nodes)
    model = _Model(node_availability, zone_availability, region_availability,
                   host_availability, shared)
    shard_groups = [_group(cmap, f"shard {shard.id}",
                           shard.voters if shard.voters else shard.replicas)
                    for shard in cmap.shards.values()]
    driver = _group(cmap, "placement driver", cmap.meta_voters)

    shards: list[dict[str, object]] = []
    for shard, group in zip(cmap.shards.values(), shard_groups, strict=True):
        down = _unavailability(cmap, group, model)
        shards.append({
            "shard": shard.id, "replicas": len(group.voters), "voters": list(group.voters),
            "live_voters": len(group.live), "quorum": group.quorum,
            "tolerates": max(-1, len(group.live) - group.quorum),
            "availability": 1.0 - down, "nines": nines(down),
        })
    keyspace_down, method = _keyspace_unavailability(cmap, shard_groups, model)
    driver_down = _unavailability(cmap, driver, model) if driver.voters else 1.0
    replica_counts = [len(shard.replicas) for shard in cmap.shards.values()]
    per_node: dict[str, int] = {node_id: 0 for node_id in cmap.nodes}
    for shard in cmap.shards.values():
        for replica in shard.replicas:
            per_node[replica] = per_node.get(replica, 0) + 1
    return {
        "version": cmap.version,
        "survival_goal": cmap.survival_goal,
        "spofs": _spofs(cmap, [*shard_groups, driver]),
        "unavailable": [g.label for g in [*shard_groups, driver] if not g.survives_without(set())],
        "shards": shards,
        "keyspace": {"availability": 1.0 - keyspace_down, "nines": nines(keyspace_down),
                     "method": method},
        "driver": {"voters": list(driver.voters), "live_voters": len(driver.live),
                   "quorum": driver.quorum,
                   "tolerates": max(-1, len(driver.live) - driver.quorum),
                   "availability": 1.0 - driver_down, "nines": nines(driver_down)},
        "cost": {
            "shards": len(replica_counts),
            "total_replicas": sum(replica_counts),
            "replicas_per_shard": (round(sum(replica_counts) / len(replica_counts), 2)
                                   if replica_counts else 0.0),
            "storage_multiplier": cmap.replication_factor,
            "replicas_per_node": per_node,
        },
        "violations": violations(cmap),
        "assumptions": {
            "node_availability": node_availability,
            "zone_availability": zone_availability,
            "region_availability": region_availability,
            "host_availability": host_availability,
            "shared_hosts": len(set(shared.values())),
            "model": "a replica is up iff its node, its host (if shared by several nodes), "
                     "its zone and its region are up; nodes, shared hosts, zones and regions "
                     "fail independently (a shared host takes all its nodes at once; a node "
                     "alone on its host has its machine's failures in its node figure); dead, "
                     "decommissioned and unknown nodes are down; a shard is up iff a majority "
                     "of its voters is up",
            "voters": "reported voters where a shard has reported, else desired replicas",
            "keyspace": ("exact" if method == "exact" else
                         "lower bound (too many nodes to enumerate; Harris' inequality)"),
        },
    }


def _percent(value: object) -> str:
    number = float(value) if isinstance(value, int | float) else 0.0
    return f"{number * 100:g}%"


def format_analysis(report: Mapping[str, object]) -> str:
    """The report of `analyze` as readable text (one screen for a small cluster)."""
    lines: list[str] = []
    assumptions = report.get("assumptions")
    a = assumptions if isinstance(assumptions, Mapping) else {}
    lines.append(f"Placement analysis: map version {report.get('version')}, survival goal "
                 f"{report.get('survival_goal')}")
    lines.append("")
    spofs = report.get("spofs")
    lines.append("Single points of failure:")
    if isinstance(spofs, list) and spofs:
        for spof in spofs:
            if isinstance(spof, Mapping):
                lines.append(f"  {spof.get('kind')} {spof.get('name')}: {spof.get('why')}")
    else:
        lines.append("  none: no single node, host, zone or region takes a quorum with it")
    unavailable = report.get("unavailable")
    if isinstance(unavailable, list) and unavailable:
        lines.append(f"Already without quorum: {', '.join(str(u) for u in unavailable)}")
    lines.append("")
    hosts = (f", shared host {_percent(a.get('host_availability'))} x "
             f"{a.get('shared_hosts')}" if a.get("shared_hosts") else "")
    lines.append(f"Availability (node {_percent(a.get('node_availability'))}{hosts}, zone "
                 f"{_percent(a.get('zone_availability'))}, region "
                 f"{_percent(a.get('region_availability'))}):")
    keyspace = report.get("keyspace")
    if isinstance(keyspace, Mapping):
        bound = " (lower bound)" if keyspace.get("method") != "exact" else ""
        lines.append(f"  whole keyspace    {keyspace.get('availability'):.12f}  "
                     f"{keyspace.get('nines')} nines{bound}")
    driver = report.get("driver")
    if isinstance(driver, Mapping):
        lines.append(f"  placement driver  {driver.get('availability'):.12f}  "
                     f"{driver.get('nines')} nines  voters "
                     f"{', '.join(str(v) for v in driver.get('voters') or [])}")
    shards = report.get("shards")
    if isinstance(shards, list):
        ordered = sorted((s for s in shards if isinstance(s, Mapping)),
                         key=lambda s: (float(s.get("nines", 0.0)), int(s.get("shard", 0))))
        for shard in ordered[:10]:
            lines.append(f"  shard {shard.get('shard'):<11} {shard.get('availability'):.12f}  "
                         f"{shard.get('nines')} nines  {shard.get('live_voters')}/"
                         f"{shard.get('replicas')} voters live, quorum {shard.get('quorum')}")
        if len(ordered) > 10:
            lines.append(f"  ... {len(ordered) - 10} more shards, each at least "
                         f"{ordered[10].get('nines')} nines")
    cost = report.get("cost")
    if isinstance(cost, Mapping):
        lines.append("")
        lines.append(f"Cost: {cost.get('total_replicas')} replicas for {cost.get('shards')} "
                     f"shards ({cost.get('replicas_per_shard')} per shard); storage x"
                     f"{cost.get('storage_multiplier')}")
    found = report.get("violations")
    lines.append("")
    if isinstance(found, list) and found:
        lines.append("Placement rule violations:")
        lines += [f"  {v}" for v in found]
    else:
        lines.append("Placement rules: all satisfied")
    return "\n".join(lines) + "\n"

"""Placement decisions: the initial map, rule violations, and the next ops toward health.

What this module owns:
- `initial_map`: slots split into contiguous ranges (as `redis-cli --cluster create` does),
  replicas spread across failure domains and balanced across nodes, preferred leaders spread.
- `violations`: the rules a DESIRED placement breaks, in words.
- `plan`: the next `set_replicas` / `set_meta_voters` ops that move a map toward health
  (repair, re-replication, one rebalance move at a time, leader spreading, driver voters).
- `drain_done`: whether a draining node holds nothing any more.
- `relocation_target`: where a replica on a failed disk is rebuilt instead; `relocation_op`:
  the op that moves it there.
- Every `set_replicas` made here is a compare-and-set (`expect_replicas`: the replicas of the
  map it was computed from), so an op from a stale copy of the map never undoes a later move.

Rules of this module:
- Pure and deterministic: the same map gives the same ops on every node; every tie is broken
  by node id (then shard id). No randomness, no clock.
- Survival goals: "zone" wants no two replicas of a shard in one zone; "region" wants no region
  to hold a majority of a shard's replicas (for an even count: not even half, so a quorum
  survives outside it) and, secondarily, distinct zones. A zone is the pair
  (region, zone), so equal zone names in two regions are two zones.
- Hosts (docs/hosts.md): under either goal, after the zones (and regions), replicas of a shard
  go to distinct hosts, then to distinct nodes: K node processes of one machine never hold two
  replicas of a shard while enough hosts exist, and `violations` names any that do. A host is
  the triple (region, zone, host); a node without a host is a host of its own.
- Only nodes in state "alive" receive replicas. Replicas on dead, draining or decommissioned
  nodes are replaced when a replacement exists; otherwise they stay (a returning node is better
  than a missing replica).
- Repairs are urgent and cover every shard in one call. Balance is patient: a replica move only
  while no shard is in motion (its reported configuration differs from its desired replicas),
  at most one per call: first one that strictly improves a shard's spread over zones and hosts
  (`respread`: replicas doubled up on a domain while another alive one is free, as after a
  lost host or zone returns), else one toward even load that does not weaken the spread;
  preferred-leader
  changes (one short chain per call) only when, besides, every shard's reported leader is its
  preferred leader. So planning again before the reports catch up yields [] (no flip-flop), and
  every move strictly lowers a potential (the spread cost, then the load spread), so repeated
  planning converges.
- When the topology cannot satisfy the goal (one zone on a laptop, fewer hosts than
  replicas), placement is best effort (as many distinct domains as exist) and never raises;
  `violations` reports the shortfall.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from phalanx.errors import ConfigError
from phalanx.placement.map import SURVIVAL_GOALS, ClusterMap, NodeInfo, ShardInfo
from phalanx.placement.slots import SLOT_COUNT

_META_TARGET = {"zone": 3, "region": 5}
_LEADER_PATH_LIMIT = 3
"""Most preferred-leader changes one `plan` call makes (one augmenting path)."""


def _check_goal(goal: str) -> None:
    if goal not in SURVIVAL_GOALS:
        raise ConfigError(f"survival_goal must be one of {', '.join(SURVIVAL_GOALS)}, "
                          f"got {goal!r}")


def replication_factor_for(goal: str, node_count: int, requested: int = 0) -> int:
    """Replicas per shard: `requested` if > 0, else 3 (zone) or 5 (region); at most node_count."""
    _check_goal(goal)
    if requested < 0:
        raise ConfigError(f"replication_factor must be 0 (automatic) or positive, "
                          f"got {requested}")
    if node_count < 1:
        raise ConfigError(f"a cluster needs at least one node, got {node_count}")
    factor = requested if requested > 0 else (3 if goal == "zone" else 5)
    return min(factor, node_count)


def meta_voter_target(goal: str, alive_count: int) -> int:
    """Voters of the placement driver: 3 (zone) or 5 (region), capped by the alive nodes and
    rounded down to an odd number (an even voter count adds no fault tolerance)."""
    _check_goal(goal)
    target = min(_META_TARGET[goal], alive_count)
    return target if target % 2 or target == 0 else target - 1


def slot_ranges(shard_count: int) -> list[tuple[int, int]]:
    """16384 slots cut into `shard_count` contiguous ranges, exactly as redis-cli does it."""
    if not 1 <= shard_count <= SLOT_COUNT:
        raise ConfigError(f"shard_count must be between 1 and {SLOT_COUNT}, got {shard_count}")
    per_shard = SLOT_COUNT / shard_count
    ranges = []
    first, cursor = 0, 0.0
    for index in range(shard_count):
        last = int(cursor + per_shard - 1 + 0.5)  # C's lround: halves away from zero
        if last > SLOT_COUNT - 1 or index == shard_count - 1:
            last = SLOT_COUNT - 1
        ranges.append((first, last))
        first = last + 1
        cursor += per_shard
    return ranges


# ---------------------------------------------------------------------------- spread rules


def _zone(node: NodeInfo | None, node_id: str) -> tuple[str, str]:
    return node.domain if node is not None else ("?", f"?{node_id}")


def _region(node: NodeInfo | None, node_id: str) -> str:
    return node.region if node is not None else f"?{node_id}"


def _host(node: NodeInfo | None, node_id: str) -> tuple[str, str, str, str]:
    return node.host_domain if node is not None else ("?", f"?{node_id}", "", node_id)


def _spread_cost(goal: str, nodes: Mapping[str, NodeInfo],
                 members: Sequence[str]) -> tuple[int, int, int]:
    """How badly `members` break the goal: (primary, secondary, tertiary); (0, 0, 0) is perfect.

    zone goal: (replicas sharing a zone with an earlier one, same for hosts, same for regions);
    region goal: (replicas beyond the largest minority in any region, zone sharing, host
    sharing). A host lies in one zone, so host sharing only counts where zones are shared.
    """
    zones = Counter(_zone(nodes.get(m), m) for m in members)
    hosts = Counter(_host(nodes.get(m), m) for m in members)
    regions = Counter(_region(nodes.get(m), m) for m in members)
    zone_excess = sum(count - 1 for count in zones.values())
    host_excess = sum(count - 1 for count in hosts.values())
    if goal == "zone":
        return (zone_excess, host_excess, sum(count - 1 for count in regions.values()))
    minority = (len(members) - 1) // 2
    return (sum(max(0, count - minority) for count in regions.values()), zone_excess,
            host_excess)


def _spread_key(goal: str, nodes: Mapping[str, NodeInfo], members: Iterable[str],
                candidate: NodeInfo) -> tuple[int, ...]:
    """Crowding `candidate` would join, most important first.

    zone goal: a new zone, else a new host (a zone already used), then the fewest replicas in
    its zone, its region, its host; region goal: the fewest in its region, then a new zone,
    a new host, then the fewest in its zone and host. Without hosts (every node its own) the
    order is the one before hosts existed: (zone, region) and (region, zone) counts. Picking a
    new zone while one is left, else a new host while one is left, gives as many distinct
    zones and then hosts as the topology allows.
    """
    same_zone = same_host = same_region = 0
    for member in members:
        node = nodes.get(member)
        same_zone += _zone(node, member) == candidate.domain
        same_host += _host(node, member) == candidate.host_domain
        same_region += _region(node, member) == candidate.region
    if goal == "zone":
        return (same_zone > 0, same_host > 0, same_zone, same_region, same_host)
    return (same_region, same_zone > 0, same_host > 0, same_zone, same_host)


@dataclass(slots=True)
class _Working:
    """A mutable copy of the desired placement while a plan is being made."""

    goal: str
    nodes: Mapping[str, NodeInfo]
    replicas: dict[int, list[str]]
    preferred: dict[int, str]
    reported: dict[int, ShardInfo]
    load: Counter[str]
    leaders: Counter[str]
    zone_leaders: Counter[tuple[str, str]]

    @classmethod
    def of(cls, cmap: ClusterMap) -> _Working:
        replicas = {sid: list(shard.replicas) for sid, shard in cmap.shards.items()}
        preferred = {sid: shard.preferred_leader for sid, shard in cmap.shards.items()}
        working = cls(cmap.survival_goal, cmap.nodes, replicas, preferred, dict(cmap.shards),
                      Counter(), Counter(), Counter())
        working.recount()
        return working

    def recount(self) -> None:
        self.load = Counter(m for members in self.replicas.values() for m in members)
        self.leaders = Counter(p for p in self.preferred.values() if p)
        self.zone_leaders = Counter(_zone(self.nodes.get(p), p)
                                    for p in self.preferred.values() if p)

    @property
    def alive(self) -> list[str]:
        return [node_id for node_id, node in self.nodes.items() if node.state == "alive"]

    def is_alive(self, node_id: str) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and node.state == "alive"

    def barred(self, sid: int) -> tuple[str, ...]:
        """Nodes shard `sid` was relocated off because their disk failed (`failed_disks`):
        never a target for it again until the operator readmits them."""
        shard = self.reported.get(sid)
        return shard.failed_disks if shard is not None else ()

    def in_motion(self, sid: int) -> bool:
        shard = self.reported.get(sid)
        if shard is None:
            return True
        return bool(shard.learners) or set(shard.voters) != set(self.replicas[sid])

    def choose(self, members: Sequence[str], exclude: Iterable[str] = (),
               avoid_host: tuple[str, str, str, str] | None = None) -> str | None:
        """The best alive node to join `members`: spread first, then (if given) not on
        `avoid_host`, then load, then id."""
        excluded = set(members) | set(exclude)
        present = [m for m in members if self.is_alive(m)]
        best: tuple[tuple[int, ...], bool, int, str] | None = None
        for node_id in self.alive:
            if node_id in excluded:
                continue
            node = self.nodes[node_id]
            key = (_spread_key(self.goal, self.nodes, present, node),
                   node.host_domain == avoid_host, self.load[node_id], node_id)
            if best is None or key < best:
                best = key
        return None if best is None else best[3]

    def set_preferred(self, sid: int, node_id: str) -> None:
        old = self.preferred[sid]
        if old:
            self.leaders[old] -= 1
            self.zone_leaders[_zone(self.nodes.get(old), old)] -= 1
        self.preferred[sid] = node_id
        if node_id:
            self.leaders[node_id] += 1
            self.zone_leaders[_zone(self.nodes.get(node_id), node_id)] += 1

    def pick_leader(self, sid: int) -> str:
        """The alive replica of shard `sid` leading the fewest shards (then zone, then id)."""
        candidates = [m for m in self.replicas[sid] if self.is_alive(m)]
        if not candidates:
            return ""
        return min(candidates, key=lambda m: (self.leaders[m],
                                              self.zone_leaders[self.nodes[m].domain],
                                              self.load[m], m))

    def fix_leader(self, sid: int) -> None:
        current = self.preferred[sid]
        if current not in self.replicas[sid] or not self.is_alive(current):
            self.set_preferred(sid, "")
            self.set_preferred(sid, self.pick_leader(sid))

    # -------------------------------------------------------------- repair

    def repair(self, sid: int, factor: int) -> None:
        """Replace replicas on nodes that are not alive; grow to `factor` replicas."""
        members = self.replicas[sid]
        for index, member in enumerate(list(members)):
            if self.is_alive(member):
                continue
            others = [m for m in members if m != member]
            choice = self.choose(others, exclude=[member, *self.barred(sid)])
            if choice is None:
                continue  # nowhere to go: keep it, its node may return
            members[index] = choice
            self.load[member] -= 1
            self.load[choice] += 1
        while len(members) < factor:
            choice = self.choose(members, exclude=self.barred(sid))
            if choice is None:
                break
            members.append(choice)
            self.load[choice] += 1
        if len(members) > factor and not self.in_motion(sid):
            # One replica at a time: the least useful one (not alive; leaving the best spread;
            # not the preferred leader; busiest; highest id).
            def usefulness(m: str) -> tuple[bool, tuple[int, int, int], bool, int, str]:
                cost_without = _spread_cost(self.goal, self.nodes, [x for x in members if x != m])
                return (self.is_alive(m), cost_without, m == self.preferred[sid],
                        -self.load[m], m)
            victim = min(members, key=usefulness)
            members.remove(victim)
            self.load[victim] -= 1
        self.fix_leader(sid)

    # -------------------------------------------------------------- balance

    def movable_shard(self, shard_ids: Sequence[int], source: str, target: str) -> int | None:
        """A shard whose replica on `source` can move to `target` without weakening the goal
        (preferring shards `source` does not lead, then the lowest id)."""
        candidates = [sid for sid in shard_ids
                      if source in self.replicas[sid] and target not in self.replicas[sid]
                      and target not in self.barred(sid)]
        candidates.sort(key=lambda sid: (self.preferred[sid] == source, sid))
        for sid in candidates:
            members = self.replicas[sid]
            moved = [target if m == source else m for m in members]
            if (_spread_cost(self.goal, self.nodes, moved)
                    <= _spread_cost(self.goal, self.nodes, members)):
                return sid
        return None

    def move_replica(self, sid: int, source: str, target: str) -> None:
        self.replicas[sid] = [target if m == source else m for m in self.replicas[sid]]
        self.load[source] -= 1
        self.load[target] += 1
        if self.preferred[sid] == source:
            self.set_preferred(sid, "")
            self.set_preferred(sid, self.pick_leader(sid))

    def better_spread(self, members: Sequence[str], preferred: str = "",
                      barred: Sequence[str] = ()) -> tuple[str, str] | None:
        """(member, alive non-member) whose swap strictly improves the failure-domain spread
        of `members` (zone goal: zones, then hosts; region goal: regions, zones, hosts): the
        best such swap (lowest cost, not the preferred leader, least loaded target, ids);
        None when there is none or a member is not alive (repair's business)."""
        if not all(self.is_alive(m) for m in members):
            return None
        width = 2 if self.goal == "zone" else 3
        cost = _spread_cost(self.goal, self.nodes, members)
        if not any(cost[:width]):
            return None
        best: tuple[tuple[int, ...], bool, int, str, str] | None = None
        for source in members:
            for target in self.alive:
                if target in members or target in barred:
                    continue
                after = _spread_cost(self.goal, self.nodes,
                                     [target if m == source else m for m in members])
                if after[:width] >= cost[:width]:
                    continue
                key = (after, source == preferred, self.load[target], target, source)
                if best is None or key < best:
                    best = key
        return None if best is None else (best[4], best[3])

    def respread(self, shard_ids: Sequence[int]) -> bool:
        """Move one replica of the first shard whose spread `better_spread` can improve, e.g.
        after a lost host or zone came back and left replicas doubled up. True if moved.

        The full spread cost strictly drops, and `rebalance` never raises it, so the two
        cannot undo each other (no flip-flop)."""
        for sid in sorted(shard_ids):
            swap = self.better_spread(self.replicas[sid], self.preferred[sid],
                                      self.barred(sid))
            if swap is not None:
                self.move_replica(sid, *swap)
                return True
        return False

    def rebalance(self, shard_ids: Sequence[int], max_moves: int) -> bool:
        """Shift one replica's worth of load from a busier alive node to one with >= 2 fewer.

        With `max_moves` 1 that is one direct move; more allows a chain source -> x -> target
        (x gives one and takes one) when no direct move keeps the survival goal. True if moved.
        """
        alive = self.alive
        if not alive:
            return False
        lowest = min(self.load[n] for n in alive)
        by_load = sorted(alive, key=lambda n: (self.load[n], n))
        for source in sorted(alive, key=lambda n: (-self.load[n], n)):
            ceiling = self.load[source] - 2
            if ceiling < lowest:
                return False
            parent: dict[str, tuple[str, int] | None] = {source: None}
            frontier = [source]
            for _ in range(max_moves):
                next_frontier = []
                for node_id in frontier:
                    for target in by_load:
                        if target in parent:
                            continue
                        sid = self.movable_shard(shard_ids, node_id, target)
                        if sid is None:
                            continue
                        parent[target] = (node_id, sid)
                        if self.load[target] <= ceiling:
                            chain = []
                            step = target
                            while (link := parent[step]) is not None:
                                chain.append((link[1], link[0], step))
                                step = link[0]
                            if len({sid for sid, _, _ in chain}) == len(chain):
                                for shard_id, giver, taker in reversed(chain):
                                    self.move_replica(shard_id, giver, taker)
                                return True
                        next_frontier.append(target)
                frontier = next_frontier
        return False

    def leader_path(self, shard_ids: Sequence[int], limit: int | None) -> list[tuple[int, str]]:
        """The shortest chain of preferred-leader changes that evens out leader counts.

        Leadership of shard s can pass from its preferred leader u to any alive replica w: an
        edge u -> w. A path from a node with c leaders to one with <= c - 2 moves one leadership
        along it, leaving the nodes in between unchanged. Returns [(shard, new leader), ...].
        """
        alive = self.alive
        movable = [sid for sid in shard_ids if self.preferred[sid]]
        for source in sorted(alive, key=lambda n: (-self.leaders[n], n)):
            floor = self.leaders[source] - 2
            if floor < 0 or min(self.leaders[n] for n in alive) > floor:
                return []
            parent: dict[str, tuple[str, int] | None] = {source: None}
            queue = deque([(source, 0)])
            found: str | None = None
            while queue and found is None:
                node_id, depth = queue.popleft()
                if limit is not None and depth >= limit:
                    continue
                for sid in movable:
                    if self.preferred[sid] != node_id:
                        continue
                    for member in sorted(self.replicas[sid],
                                         key=lambda m: (self.leaders[m], m)):
                        if member in parent or not self.is_alive(member):
                            continue
                        parent[member] = (node_id, sid)
                        if self.leaders[member] <= floor:
                            found = member
                            break
                        queue.append((member, depth + 1))
                    if found is not None:
                        break
            if found is None:
                continue
            path: list[tuple[int, str]] = []
            step: str = found
            while (link := parent[step]) is not None:
                path.append((link[1], step))
                step = link[0]
            return path[::-1]
        return []

    def move_leaders(self, path: Sequence[tuple[int, str]]) -> None:
        for sid, node_id in path:
            self.set_preferred(sid, node_id)


# ---------------------------------------------------------------------------- initial map


def initial_map(nodes: Sequence[NodeInfo], shard_count: int, survival_goal: str = "zone",
                replication_factor: int = 0) -> ClusterMap:
    """Version 1 of a new cluster's map over `nodes` (see the module rules)."""
    _check_goal(survival_goal)
    by_id: dict[str, NodeInfo] = {}
    for node in nodes:
        if node.id in by_id:
            raise ConfigError(f"nodes: node {node.id} is listed twice")
        by_id[node.id] = node
    alive_count = sum(node.state == "alive" for node in by_id.values())
    factor = replication_factor_for(survival_goal, alive_count, replication_factor)
    ranges = slot_ranges(shard_count)
    empty = ClusterMap(1, survival_goal, factor, by_id,
                       {i: ShardInfo(i, (r,), ()) for i, r in enumerate(ranges, 1)}, ())
    working = _Working.of(empty)
    shard_ids = list(empty.shards)
    for sid in shard_ids:
        members = working.replicas[sid]
        while len(members) < factor:
            choice = working.choose(members)
            if choice is None:  # pragma: no cover - factor <= alive nodes
                break
            members.append(choice)
            working.load[choice] += 1
    for _ in range(factor * shard_count):
        if not working.rebalance(shard_ids, max_moves=len(by_id)):
            break
    for sid in shard_ids:
        working.set_preferred(sid, working.pick_leader(sid))
    for _ in range(shard_count * len(by_id)):
        path = working.leader_path(shard_ids, None)
        if not path:
            break
        working.move_leaders(path)
    meta = _meta_voters(working, (), meta_voter_target(survival_goal, alive_count))
    return ClusterMap(
        version=1,
        survival_goal=survival_goal,
        replication_factor=factor,
        nodes=by_id,
        shards={sid: ShardInfo(sid, empty.shards[sid].slots, tuple(working.replicas[sid]),
                               working.preferred[sid]) for sid in shard_ids},
        meta_voters=meta,
    )


def _meta_voters(working: _Working, current: Sequence[str], target: int) -> tuple[str, ...]:
    """Replace voters on nodes that are not alive, grow to `target`, spreading domains, then
    (all alive) move one voter if that strictly improves their spread over zones and hosts."""
    voters = list(current)
    for index, voter in enumerate(list(voters)):
        if working.is_alive(voter):
            continue
        choice = working.choose([v for v in voters if v != voter], exclude=voters)
        if choice is not None:
            voters[index] = choice
    while len(voters) < target:
        choice = working.choose(voters)
        if choice is None:
            break
        voters.append(choice)
    # One voter at a time toward a better spread (a returned host or zone).
    swap = working.better_spread(voters) if len(voters) == target else None
    if swap is not None:
        voters[voters.index(swap[0])] = swap[1]
    return tuple(voters)


# ---------------------------------------------------------------------------- rules


def _names(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _group_violations(label: str, noun: str, goal: str, nodes: Mapping[str, NodeInfo],
                      members: Sequence[str]) -> list[str]:
    found = []
    for member in members:
        node = nodes.get(member)
        if node is None:
            found.append(f"{label}: {noun} {member} is not a known node")
        elif node.state != "alive":
            found.append(f"{label}: {noun} {member} is on a {node.state} node")
    if goal == "zone":
        by_zone: dict[tuple[str, str], list[str]] = {}
        for member in members:
            if member in nodes:
                by_zone.setdefault(nodes[member].domain, []).append(member)
        for (_, zone), sharing in sorted(by_zone.items()):
            if len(sharing) > 1:
                found.append(f"{label}: {noun}s {_names(sorted(sharing))} share zone {zone}")
    else:
        regions = Counter(nodes[m].region for m in members if m in nodes)
        # Surviving a region needs a quorum outside it: at most (n - 1) // 2 replicas inside.
        for region, count in sorted(regions.items()):
            if count > (len(members) - 1) // 2 and len(members) > 1:
                why = "a majority" if 2 * count > len(members) else "half: its loss loses quorum"
                found.append(f"{label}: region {region} holds {count} of {len(members)} "
                             f"{noun}s ({why})")
    # Under either goal, two replicas on one machine die together (docs/hosts.md).
    by_host: dict[tuple[str, str, str, str], list[str]] = {}
    for member in members:
        node = nodes.get(member)
        if node is not None and node.host:
            by_host.setdefault(node.host_domain, []).append(member)
    for (_, _, host, _), sharing in sorted(by_host.items()):
        if len(sharing) > 1:
            found.append(f"{label}: {noun}s {_names(sorted(sharing))} share host {host}")
    return found


def violations(cmap: ClusterMap) -> list[str]:
    """The rules the DESIRED placement breaks, one sentence each; [] when healthy."""
    found: list[str] = []
    factor = cmap.replication_factor
    for shard in cmap.shards.values():
        label = f"shard {shard.id}"
        if len(shard.replicas) != factor:
            found.append(f"{label}: {len(shard.replicas)} replicas, replication factor is "
                         f"{factor}")
        found += _group_violations(label, "replica", cmap.survival_goal, cmap.nodes,
                                   shard.replicas)
    found += _group_violations("placement driver", "voter", cmap.survival_goal, cmap.nodes,
                               cmap.meta_voters)
    return found


# ---------------------------------------------------------------------------- plan


def plan(cmap: ClusterMap) -> list[dict[str, object]]:
    """The next ops (set_replicas, set_meta_voters) toward a healthy, balanced placement.

    [] when nothing should change. Node states are taken as given (the caller records liveness
    with set_node_state first). Applying the ops and planning again, before the shards report
    the new configuration, yields [] (no flip-flop).
    """
    working = _Working.of(cmap)
    # Shards in a pending merge (the source and its target) are left out of balancing and
    # leader spreading; the source simply follows the target's replicas.
    merging = {sid for sid, shard in cmap.shards.items() if shard.merge_into} | {
        shard.merge_into for shard in cmap.shards.values() if shard.merge_into}
    shard_ids = [sid for sid, shard in cmap.shards.items() if not shard.merge_into]
    for sid in shard_ids:  # a, b: urgent repairs, every shard
        working.repair(sid, cmap.replication_factor)
    for sid, shard in cmap.shards.items():
        if shard.merge_into and shard.merge_into in working.replicas:
            working.replicas[sid] = list(working.replicas[shard.merge_into])
            working.preferred[sid] = working.preferred[shard.merge_into]
    balanced = [sid for sid in shard_ids if sid not in merging]
    if not merging and not any(working.in_motion(sid) for sid in shard_ids):
        # c: one replica move, only when every shard runs its desired configuration: a
        # better spread over failure domains first, else toward even load
        moved = working.respread(balanced) or working.rebalance(balanced, max_moves=1)
        # d: one chain of preferred-leader changes, only when leadership has settled too
        if not moved and all(working.reported[sid].leader == working.preferred[sid]
                             for sid in balanced):
            working.move_leaders(working.leader_path(balanced, _LEADER_PATH_LIMIT))
    ops: list[dict[str, object]] = []
    for sid, shard in cmap.shards.items():
        replicas, preferred = tuple(working.replicas[sid]), working.preferred[sid]
        if replicas != shard.replicas or preferred != shard.preferred_leader:
            # Compare-and-set on the replicas this plan started from (map.py): a plan from
            # a stale copy of the map cannot undo a move committed since.
            ops.append({"op": "set_replicas", "shard": sid, "replicas": list(replicas),
                        "preferred_leader": preferred,
                        "expect_replicas": list(shard.replicas)})
    alive_count = len(working.alive)
    meta = _meta_voters(working, cmap.meta_voters,
                        meta_voter_target(cmap.survival_goal, alive_count))  # e
    if meta != cmap.meta_voters:
        ops.append({"op": "set_meta_voters", "voters": list(meta)})
    return ops


def relocation_target(cmap: ClusterMap, shard_id: int, node_id: str) -> str | None:
    """Where a replica whose disk failed (EIO, full: docs/disk-faults.md) is rebuilt instead
    of on `node_id`: the alive node the repair of a dead node would choose (spread first,
    then off `node_id`'s host, then load, then id), never one already holding the shard; None when there is none (the
    replica is then rebuilt in place)."""
    shard = cmap.shards.get(shard_id)
    if shard is None or node_id not in shard.replicas:
        return None
    working = _Working.of(cmap)
    others = [m for m in shard.replicas if m != node_id]
    # Nodes of one host often share its disk: a host-mate is the last resort (docs/hosts.md).
    return working.choose(others, exclude=[node_id, *shard.voters, *shard.learners,
                                           *shard.failed_disks],
                          avoid_host=_host(cmap.nodes.get(node_id), node_id))


def relocation_op(cmap: ClusterMap, shard_id: int, node_id: str,
                  target: str) -> dict[str, object]:
    """The `set_replicas` that moves `node_id`'s replica of a shard off its failed disk to
    `target` (`relocation_target`'s choice). It names the failed disk (never
    placed there again) and is a compare-and-set on the replicas it was computed from: the
    sender's map may be frozen (its own placement-driver replica stopped), and a stale copy
    must never undo a move committed since (map.py, `expect_replicas`)."""
    shard = cmap.shards[shard_id]
    return {"op": "set_replicas", "shard": shard_id,
            "replicas": [target if n == node_id else n for n in shard.replicas],
            "failed_disk": node_id, "expect_replicas": list(shard.replicas),
            "preferred_leader": "" if shard.preferred_leader == node_id
            else shard.preferred_leader}


def drain_done(cmap: ClusterMap, node_id: str) -> bool:
    """True when `node_id` holds no desired replica, no reported voter or learner, and is no
    voter of the placement driver: it can be decommissioned and removed."""
    if node_id in cmap.meta_voters:
        return False
    return not any(node_id in shard.replicas or node_id in shard.voters
                   or node_id in shard.learners for shard in cmap.shards.values())

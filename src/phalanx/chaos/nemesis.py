"""The nemesis: scenarios of real faults, scheduled from the seed, injected through a
`ClusterControl`.

Rules of this file:
- A scenario is a kind of fault repeated every ~10-15 s over the run; each fault lasts a few
  seconds and is healed before the next one. The schedule (when, how long, which choice) comes
  from the seed; the targets that depend on the cluster (the leader) are resolved when the fault
  is injected, so a run is repeatable as far as the cluster's own timing allows.
- The last fault ends early enough that the run also measures the recovery.
- `node-lost` is permanent (the node's data is deleted and it never comes back): one per run,
  right after the warm-up, so the rest of the run measures how the cluster heals itself.
- Choices that depend on the topology (which region goes down, which node is lost) are pure
  functions of the nodes, the map and the fault's own seed (`region_outage_targets`,
  `choose_lost_node`), unit-tested without a cluster.
- Every fault is recorded (`Fault`: at_s, end_s, kind, targets, description) with the time it
  was in force, and told as plain-word events ("leader n2 killed").
- Healing never raises: a heal that fails is an event, and the runner repairs everything at the
  end anyway (`LocalControl.repair`).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from phalanx.chaos.control import ClusterControl, NodeInfo, fetch_statuses
from phalanx.chaos.redundancy import newest_status, replica_counts

SCENARIOS: dict[str, str] = {
    "leader-kill": "kill -9 the leader, restart it a few seconds later",
    "follower-kill": "kill -9 a follower, restart it a few seconds later",
    "random-kill": "kill -9 a random node, restart it a few seconds later",
    "leader-pause": "SIGSTOP the leader, SIGCONT it a few seconds later",
    "follower-pause": "SIGSTOP a follower, SIGCONT it a few seconds later",
    "partition-leader": "cut the leader off from every other node",
    "partition-split": "split the cluster into a majority and a minority",
    "partition-bridge": "two sides that cannot talk, and one node that sees both",
    "latency": "add 50-200 ms of delay to one node's or every node's messages",
    "zone-outage": "kill every node of one zone, restart them later",
    "region-outage": "kill every node of one region, restart them later (needs >= 3 regions "
                     "and the region survival goal)",
    "host-outage": "kill -9 every node process of one host at once (a machine loses power), "
                   "restart them together later (docs/hosts.md; the lab starts 6 nodes on 3 "
                   "hosts of 2 in one zone)",
    "node-lost": "kill -9 one node and delete its data; it never comes back: the cluster "
                 "re-creates its replicas on the other nodes",
    "partition-zone": "cut every node of one zone off from the other zones",
    "rolling-restart": "restart each node in turn (kill -9, start, wait until it answers)",
    "disk-corrupt": "kill -9 a follower (or, one time in three, the leader), flip a byte in one "
                    "of its shard replicas' WAL segment or snapshot file, restart it: the "
                    "checksum must catch it and the replica be rebuilt from its peers",
    "disk-full": "kill -9 a follower (or, one time in three, the leader), put one of its "
                 "shard replicas on its own small tmpfs, restart it and fill that file "
                 "system (ENOSPC) while clients write: the replica must stop, be rebuilt on "
                 "another node (or in place once space returns), and nothing acknowledged "
                 "be lost",
    "disk-error": "every read and write of one shard replica of a follower (or, one time in "
                  "three, the leader) fails with EIO (the store's own fault injection: no "
                  "device-mapper here): the replica must stop and be rebuilt elsewhere",
    "mixed": "a random mix of all of the above",
}

#: Kinds `mixed` draws from: not the roll, not a permanent loss, not what needs >= 3 regions.
_MIXABLE = [name for name in SCENARIOS
            if name not in {"mixed", "rolling-restart", "node-lost", "region-outage",
                            "host-outage", "disk-corrupt", "disk-full", "disk-error"}]
#: Faults that are never healed during the run.
PERMANENT = frozenset({"node-lost"})
#: Faults the cluster may repair while they are in force (a failed disk's replica rebuilt on
#: another node): their redundancy counts as restored whenever it is, not only after the heal.
REPAIRED_IN_FORCE = frozenset({"disk-full", "disk-error"})
#: The time the plan leaves a rolling restart.
ROLL_ALLOWANCE_S = 12.0


@dataclass
class Fault:
    at_s: float
    end_s: float | None
    kind: str
    targets: list[str]
    description: str
    #: The leader just before the fault (for the story and the new-leader column).
    leader_before: str | None = None
    #: When the nemesis started injecting it (`at_s` is when it was fully in force).
    began_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"at_s": round(self.at_s, 3),
                "end_s": None if self.end_s is None else round(self.end_s, 3),
                "kind": self.kind, "targets": list(self.targets),
                "description": self.description}


@dataclass(frozen=True, slots=True)
class Slot:
    """One planned fault: when it starts, how long it lasts, its kind, and a seed of its own."""

    at_s: float
    hold_s: float
    kind: str
    seed: int


def plan(scenario: str, duration_s: float, seed: int, *, warmup_s: float = 3.0,
         recovery_s: float = 4.0) -> list[Slot]:
    """The faults of a run: one every ~10-15 s from `warmup_s`, each held 2-5 s, all healed by
    `duration_s - recovery_s` (at least one fault when the run is long enough for it)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
    rng = random.Random(seed)
    slots: list[Slot] = []
    at = warmup_s + rng.uniform(0, 1.0)
    last_end = duration_s - recovery_s
    if scenario in PERMANENT:
        # One loss, as early as the warm-up allows: the rest of the run is the healing.
        return [Slot(at, 0.0, scenario, rng.randrange(2**31))] if at <= last_end else []
    while True:
        hold = rng.uniform(2.0, 5.0)
        kind = rng.choice(_MIXABLE) if scenario == "mixed" else scenario
        if kind == "rolling-restart":
            hold = 0.0
        if at + max(hold, 2.0) > last_end:
            if not slots and last_end - at >= 1.5:
                hold = max(1.0, last_end - at - (0 if kind == "rolling-restart" else 0.5))
                slots.append(Slot(at, 0.0 if kind == "rolling-restart" else hold, kind,
                                  rng.randrange(2**31)))
            break
        slots.append(Slot(at, hold, kind, rng.randrange(2**31)))
        # A roll restarts every node in turn (a few seconds each): leave it room.
        at += (ROLL_ALLOWANCE_S if kind == "rolling-restart" else hold) + rng.uniform(8.0, 11.0)
    return slots


def region_outage_targets(nodes: Sequence[NodeInfo], rng: random.Random) -> tuple[str, list[str]]:
    """(region, its nodes) for a region outage: a region whose loss leaves a majority of the
    nodes running. ValueError when the cluster has fewer than 3 regions (a region goal needs
    3 so that no region holds a quorum) or when every region holds half the nodes or more."""
    regions: dict[str, list[str]] = {}
    for node in nodes:
        regions.setdefault(node.region, []).append(node.id)
    if len(regions) < 3:
        raise ValueError(f"region-outage needs nodes in at least 3 regions; this cluster has "
                         f"{len(regions)} ({', '.join(sorted(regions)) or 'none'}): start it "
                         "with --regions 3 --survival-goal region")
    eligible = sorted(name for name, ids in regions.items() if 2 * len(ids) < len(nodes))
    if not eligible:
        raise ValueError("region-outage: every region holds half of the nodes or more; losing "
                         "one would take the quorum with it")
    region = rng.choice(eligible)
    return region, list(regions[region])


def host_outage_targets(nodes: Sequence[NodeInfo], rng: random.Random,
                        leader: str | None = None) -> tuple[str, list[str]]:
    """(host, its nodes) for a host outage: a host holding less than half of the nodes (its loss
    leaves a majority running), preferring hosts of several nodes (else the outage is a node
    kill); the leader's host half of the time when it qualifies. A host lies inside its zone
    and an unlabelled node is a host of its own (`NodeInfo.host_domain`). ValueError when every
    host holds half of the nodes or more."""
    hosts: dict[tuple[str, str, str], list[str]] = {}
    for node in nodes:
        hosts.setdefault(node.host_domain, []).append(node.id)
    eligible = sorted(domain for domain, ids in hosts.items() if 2 * len(ids) < len(nodes))
    if not eligible:
        raise ValueError(f"host-outage: every host holds half of the nodes or more "
                         f"({len(hosts)} host(s) for {len(nodes)} nodes); losing one would take "
                         "the quorum with it")
    shared = [domain for domain in eligible if len(hosts[domain]) > 1] or eligible
    leaders = [domain for domain in shared if leader in hosts[domain]]
    domain = leaders[0] if leaders and rng.random() < 0.5 else rng.choice(shared)
    return domain[2], sorted(hosts[domain])


def choose_lost_node(nodes: Sequence[NodeInfo], rng: random.Random,
                     replicas: Mapping[str, int] | None = None) -> str:
    """The node `node-lost` takes: one whose zone keeps another node (so its replicas can be
    re-created without weakening the zone spread), among those the map gives a shard replica
    (else losing it tests nothing); the rest of the choice is the seed's."""
    if not nodes:
        raise ValueError("node-lost: the cluster has no node")
    per_zone = Counter((node.region, node.zone) for node in nodes)
    candidates = [n.id for n in nodes if per_zone[(n.region, n.zone)] > 1] or \
        [n.id for n in nodes]
    if replicas:
        holding = [n for n in candidates if replicas.get(n, 0) > 0]
        candidates = holding or candidates
    return rng.choice(sorted(candidates))


@dataclass
class Nemesis:
    """Runs the planned faults in a thread against `control`; records faults and events."""

    control: ClusterControl
    slots: list[Slot]
    clock: Callable[[], float]
    on_event: Callable[[float, str], None]
    stop_event: threading.Event = field(default_factory=threading.Event)
    faults: list[Fault] = field(default_factory=list)
    current: Fault | None = None
    error: str | None = None
    #: The latest a fault may end (the run's end minus its recovery); None: no bound.
    until_s: float | None = None
    _thread: threading.Thread | None = None
    _roll_index: int = 0

    def start(self) -> Nemesis:
        self._thread = threading.Thread(target=self._run, daemon=True, name="nemesis")
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _sleep_until(self, moment_s: float) -> bool:
        """Sleep until the run clock reaches `moment_s`; False when told to stop."""
        while not self.stop_event.is_set():
            remaining = moment_s - self.clock()
            if remaining <= 0:
                return True
            self.stop_event.wait(min(remaining, 0.2))
        return False

    def _hold(self, seconds: float) -> None:
        """Keep a fault in force for `seconds` (cut short by stop(); the heal always runs)."""
        self.stop_event.wait(seconds)

    def _run(self) -> None:
        # Killing and restarting takes time the plan does not count (seconds for a whole region
        # on a busy machine): later faults move by that overrun, so the planned quiet gap after
        # each heal (where recovery and redundancy are measured) is kept. A fault that no longer
        # fits before `until_s` is skipped (told as an event), unless it would be the first.
        overrun = 0.0
        for slot in self.slots:
            start = slot.at_s + overrun
            if self.until_s is not None and self.faults and start + slot.hold_s > self.until_s:
                self.on_event(self.clock(), f"{slot.kind} planned at {slot.at_s:.1f} s skipped: "
                              f"earlier faults overran by {overrun:.1f} s, no room left")
                continue
            if not self._sleep_until(start):
                return
            try:
                self._inject(slot)
            except Exception as error:
                self.error = f"{slot.kind} at {slot.at_s:.1f} s failed: {error}"
                self.on_event(self.clock(), f"the nemesis failed: {self.error}")
            finally:
                self.current = None
            expected = ROLL_ALLOWANCE_S if slot.kind == "rolling-restart" else slot.hold_s
            overrun += max(0.0, self.clock() - (start + expected))

    def _watch_detection(self, target: str, since_s: float, limit_s: float = 20.0,
                         since: str = "its restart") -> bool:
        """Tell when `target` reports its damaged replica (time to detection), or that it did
        not within `limit_s`; True if seen. A replica rebuilt between two polls (or while a
        loaded node's /status did not answer within the poll's timeout) is still seen: its
        "replica-damaged" event, recorded when the node found the damage, stays in the
        /status events (the time to detection is then the event's)."""
        deadline = since_s + limit_s
        since_wall = time.time() - (self.clock() - since_s)
        while not self.stop_event.is_set() and self.clock() < deadline:
            try:
                status = fetch_statuses(self.control).get(target)
            except Exception:
                status = None
            damaged = damaged_replicas(status)
            if damaged:
                shard, why = sorted(damaged.items())[0]
                self.on_event(self.clock(), f"{target} reported its replica of shard {shard} "
                              f"damaged {self.clock() - since_s:.2f} s after {since} "
                              f"({why[:120]})")
                return True
            found = damage_event(status, since_wall)
            if found is not None:
                at_wall, text = found
                self.on_event(self.clock(), f"{target} reported a replica damaged "
                              f"{at_wall - since_wall:.2f} s after {since}, rebuilt before "
                              f"this poll ({text[:160]})")
                return True
            self.stop_event.wait(0.1)
        self.on_event(self.clock(), f"{target} reported no damaged replica within "
                      f"{limit_s:.0f} s of {since}")
        return False

    def _holders(self) -> dict[str, list[int]]:
        """Node -> the data shards it holds a replica of (its /status; {} when unknown)."""
        try:
            statuses = fetch_statuses(self.control)
        except Exception:
            return {}
        held: dict[str, list[int]] = {}
        for node, status in statuses.items():
            local = (status or {}).get("local") or {}
            shards = sorted(int(s) for s in local if str(s).isdigit() and int(s) > 0)
            if shards:
                held[node] = shards
        return held

    def _disk_target(self, rng: random.Random, ids: list[str],
                     leader: str | None) -> tuple[str, str, list[int]]:
        """(node, "leader"|"follower", its shards) for a disk fault: a node that holds a shard
        replica; the leader one time in three, else a follower."""
        held = self._holders()
        holders = [n for n in ids if n in held] or list(ids)
        followers = [n for n in holders if n != leader]
        if leader in holders and (rng.random() < 1 / 3 or not followers):
            target = str(leader)
        else:
            target = rng.choice(followers or holders)
        return target, "leader" if target == leader else "follower", held.get(target, [1])

    # ---- the faults -------------------------------------------------------------------------
    def _begin(self, kind: str, targets: list[str], description: str,
               leader: str | None) -> Fault:
        now = self.clock()
        fault = Fault(now, None, kind, targets, description, leader, began_s=now)
        self.faults.append(fault)
        self.current = fault
        return fault

    def _in_force(self, fault: Fault) -> None:
        # The fault's time is when it is fully in force (a partition of five namespaces takes
        # tens of ms to install): RTO counts from there, never from a half-made fault.
        fault.at_s = self.clock()
        self.on_event(fault.at_s, fault.description)

    def _restart_all(self, targets: list[str]) -> None:
        """Restart `targets` side by side (an outage ends for all of them at once); raises the
        first failure once every restart has finished."""
        if len(targets) == 1:
            self.control.restart(targets[0])
            return
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            for future in [pool.submit(self.control.restart, t) for t in targets]:
                future.result()

    def _kill_all(self, targets: list[str]) -> None:
        """kill -9 `targets` side by side (a machine's processes die together, not one after
        the other's exit); raises the first failure once every kill has finished."""
        if len(targets) == 1:
            self.control.kill(targets[0])
            return
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            for future in [pool.submit(self.control.kill, t) for t in targets]:
                future.result()

    def _end(self, fault: Fault, text: str) -> None:
        fault.end_s = self.clock()
        self.on_event(fault.end_s, text)

    def _inject(self, slot: Slot) -> None:
        rng = random.Random(slot.seed)
        control = self.control
        nodes = control.nodes()
        ids = [node.id for node in nodes]
        leader = control.leader()
        followers = [n for n in ids if n != leader]
        kind = slot.kind
        if kind in {"leader-kill", "follower-kill", "random-kill"}:
            if kind == "leader-kill":
                target = leader or rng.choice(ids)
            elif kind == "follower-kill":
                target = rng.choice(followers)
            else:
                target = rng.choice(ids)
            role = "leader" if target == leader else "follower"
            fault = self._begin(kind, [target], f"{role} {target} killed (kill -9)", leader)
            control.kill(target)
            self._in_force(fault)
            self._hold(slot.hold_s)
            control.restart(target)
            self._end(fault, f"{target} restarted")
        elif kind in {"leader-pause", "follower-pause"}:
            target = (leader or rng.choice(ids)) if kind == "leader-pause" else \
                rng.choice(followers)
            role = "leader" if target == leader else "follower"
            fault = self._begin(kind, [target], f"{role} {target} paused (SIGSTOP)", leader)
            control.pause(target)
            self._in_force(fault)
            self._hold(slot.hold_s)
            control.resume(target)
            self._end(fault, f"{target} resumed (SIGCONT)")
        elif kind == "partition-leader":
            target = leader or rng.choice(ids)
            others = [n for n in ids if n != target]
            fault = self._begin(kind, [target], f"leader {target} cut off from "
                                f"{', '.join(others)}", leader)
            control.partition([[target], others])
            self._in_force(fault)
            self._hold(slot.hold_s)
            control.heal()
            self._end(fault, "partition healed")
        elif kind == "partition-split":
            shuffled = list(ids)
            rng.shuffle(shuffled)
            minority = sorted(shuffled[: len(ids) // 2] or shuffled[:1])
            majority = sorted(n for n in ids if n not in minority)
            where = ("" if leader is None else
                     f" (the leader {leader} is in the "
                     f"{'minority' if leader in minority else 'majority'})")
            fault = self._begin(kind, minority, f"network split: {', '.join(minority)} | "
                                f"{', '.join(majority)}{where}", leader)
            control.partition([minority, majority])
            self._in_force(fault)
            self._hold(slot.hold_s)
            control.heal()
            self._end(fault, "partition healed")
        elif kind == "partition-bridge":
            shuffled = list(ids)
            rng.shuffle(shuffled)
            bridge = shuffled[0]
            rest = shuffled[1:]
            half = max(1, len(rest) // 2)
            left, right = sorted(rest[:half]), sorted(rest[half:])
            fault = self._begin(kind, [bridge], f"bridge: {', '.join(left)} and "
                                f"{', '.join(right)} cannot talk; only {bridge} sees both",
                                leader)
            for a in left:
                for b in right:
                    control.block(a, b)
                    control.block(b, a)
            self._in_force(fault)
            self._hold(slot.hold_s)
            control.heal()
            self._end(fault, "partition healed")
        elif kind == "latency":
            delay = round(rng.uniform(50, 200))
            jitter = round(delay * 0.2)
            everyone = rng.random() < 0.4
            targets = list(ids) if everyone else [leader or rng.choice(ids)]
            for node in targets:
                control.add_latency(node, delay, jitter)
            who = "every node" if everyone else targets[0]
            fault = self._begin(kind, targets, f"{delay} ms (±{jitter}) of latency added to "
                                f"{who}", leader)
            self._in_force(fault)
            self._hold(slot.hold_s)
            control.clear_latency()
            self._end(fault, "latency removed")
        elif kind == "partition-zone":
            zones = sorted({node.zone for node in nodes})
            zone = (rng.choice([n.zone for n in nodes if n.id == leader]) if leader
                    and rng.random() < 0.5 else rng.choice(zones))
            inside = sorted(node.id for node in nodes if node.zone == zone)
            outside = sorted(n for n in ids if n not in inside)
            fault = self._begin(kind, inside, f"zone {zone} ({', '.join(inside)}) cut off from "
                                f"the other zones", leader)
            control.partition([inside, outside])
            self._in_force(fault)
            self._hold(slot.hold_s)
            control.heal()
            self._end(fault, f"zone {zone} reconnected")
        elif kind == "zone-outage":
            zones = sorted({node.zone for node in nodes})
            zone = rng.choice(zones)
            targets = [node.id for node in nodes if node.zone == zone]
            if len(targets) * 2 >= len(ids):
                targets = targets[: max(1, (len(ids) - 1) // 2)]  # keep a quorum alive
            fault = self._begin(kind, targets, f"zone {zone} lost: {', '.join(targets)} killed",
                                leader)
            for target in targets:
                control.kill(target)
            self._in_force(fault)
            self._hold(slot.hold_s)
            self._restart_all(targets)
            self._end(fault, f"zone {zone} back: {', '.join(targets)} restarted")
        elif kind == "region-outage":
            region, targets = region_outage_targets(nodes, rng)
            fault = self._begin(kind, targets, f"region {region} lost: {', '.join(targets)} "
                                "killed", leader)
            for target in targets:
                control.kill(target)
            self._in_force(fault)
            self._hold(slot.hold_s)
            self._restart_all(targets)
            self._end(fault, f"region {region} back: {', '.join(targets)} restarted")
        elif kind == "host-outage":
            host, targets = host_outage_targets(nodes, rng, leader)
            where = ("" if leader is None else
                     f" (the leader {leader} {'was' if leader in targets else 'was not'} on it)")
            fault = self._begin(kind, targets, f"host {host} lost: {', '.join(targets)} killed "
                                f"at once (kill -9){where}", leader)
            self._kill_all(targets)
            self._in_force(fault)
            self._hold(slot.hold_s)
            self._restart_all(targets)
            self._end(fault, f"host {host} back: {', '.join(targets)} restarted")
        elif kind == "node-lost":
            try:
                replicas = replica_counts(newest_status(fetch_statuses(control)))
            except Exception:
                replicas = {}
            target = choose_lost_node(nodes, rng, replicas)
            role = "leader" if target == leader else "node"
            held = replicas.get(target, 0)
            fault = self._begin(kind, [target], f"{role} {target} lost for good (kill -9, data "
                                f"deleted; it held {held} shard replica{'s' if held != 1 else ''})",
                                leader)
            control.lose(target)
            self._in_force(fault)
            # Never healed: the cluster must re-create its replicas on the other nodes.
        elif kind == "disk-corrupt":
            target, role, _shards = self._disk_target(rng, ids, leader)
            fault = self._begin(kind, [target], f"{role} {target} killed (kill -9) to corrupt "
                                "its disk", leader)
            control.kill(target)
            what = control.corrupt(target, slot.seed)
            fault.description = f"{role} {target}'s disk corrupted ({what})"
            self._in_force(fault)
            self._hold(slot.hold_s)
            control.restart(target)
            restarted = self.clock()
            self._end(fault, f"{target} restarted on its corrupted disk")
            self._watch_detection(target, restarted)
        elif kind == "disk-full":
            target, role, _shards = self._disk_target(rng, ids, leader)
            fault = self._begin(kind, [target], f"{role} {target} killed (kill -9) to put a "
                                "replica on a small disk", leader)
            control.kill(target)
            try:
                where = control.mount_small_disk(target, slot.seed)
            finally:
                control.restart(target)  # on its small disk, or (mount failed) as it was
            filled = control.fill_disk(target)
            fault.description = f"{role} {target}'s disk full ({where}; {filled})"
            self._in_force(fault)
            # The disk stays full until the replica saw it (its next write that needs space:
            # a new log chunk or a snapshot; bounded), then for the hold.
            self._watch_detection(target, fault.at_s, 30.0, since="its disk filled")
            self._hold(slot.hold_s)
            freed = control.free_disk(target)
            self._end(fault, f"{target}'s disk has room again ({freed})")
        elif kind == "disk-error":
            target, role, shards = self._disk_target(rng, ids, leader)
            shard = rng.choice(shards)
            fault = self._begin(kind, [target], f"{role} {target}'s disk fails", leader)
            what = control.disk_error(target, shard)
            fault.description = f"{role} {target}'s disk fails: {what}"
            self._in_force(fault)
            self._watch_detection(target, fault.at_s, 20.0, since="its disk began to fail")
            self._hold(slot.hold_s)
            control.clear_disk_errors(target)
            self._end(fault, f"{target}'s failed disk replaced (injected faults cleared)")
        elif kind == "rolling-restart":
            for target in ids:
                if self.stop_event.is_set():
                    return
                leader = control.leader()
                role = "leader" if target == leader else "follower"
                fault = self._begin(kind, [target], f"rolling restart: {role} {target} "
                                    "killed", leader)
                control.kill(target)
                self._in_force(fault)
                control.restart(target)
                self._end(fault, f"{target} restarted")
                deadline = time.monotonic() + 15.0
                while time.monotonic() < deadline and control.leader() is None:
                    self.stop_event.wait(0.1)
                self._hold(2.0)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")


def damaged_replicas(status: Mapping[str, Any] | None) -> dict[str, str]:
    """The damaged replicas a node's /status reports (shard id -> why); {} when none."""
    if not status:
        return {}
    consistency = status.get("consistency")
    damaged = consistency.get("damaged") if isinstance(consistency, dict) else None
    return dict(damaged) if isinstance(damaged, dict) else {}


def damage_event(status: Mapping[str, Any] | None,
                 since_wall: float) -> tuple[float, str] | None:
    """The first "replica-damaged" event a node's /status lists at or after `since_wall`
    (wall-clock seconds): (its time, its text); None when there is none."""
    events = (status or {}).get("events")
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict) or event.get("kind") != "replica-damaged":
            continue
        at = event.get("time")
        if isinstance(at, int | float) and at >= since_wall:
            return float(at), str(event.get("text", ""))
    return None


def demo_plan() -> list[Slot]:
    """The demo's faults: kill the leader (restarted 4 s later), pause a follower, isolate the
    zone of the leader."""
    return [Slot(5.0, 4.0, "leader-kill", 1), Slot(16.0, 3.0, "follower-pause", 2),
            Slot(26.0, 4.0, "partition-zone", 3)]

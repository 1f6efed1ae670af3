"""The deterministic simulator: the real Raft core, Ready pipeline and KV state machine on a
simulated world, under a nemesis, then a liveness phase and the final checks.

Rules of this file:
- One `Simulator` is one seeded run. Its layers, one file each: the cluster model and Ready loop
  (model.py), the invariant checks (checks.py), the clients (workload.py), and here the
  nemesis, the liveness phase and the run loop.
- Invariants are checked after every event; a violation raises `SimulationFailure` at once. At
  the end: liveness (heal everything, the cluster must commit) and linearizability of the
  client history.
- The nemesis draws only from its own stream (`random.Random(f"{seed}/nemesis")`).
"""

from __future__ import annotations

import heapq
import logging
import random
from collections import deque
from collections.abc import Callable

from phalanx.checker import check
from phalanx.errors import NotLeader, PhalanxError, ProposalDropped, SimulationFailure
from phalanx.kv import Command, encode_command
from phalanx.raft import (
    AppendEntriesResponse,
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    Message,
    NodeId,
    Role,
)
from phalanx.sim.bank import BankWorkload
from phalanx.sim.disk import DiskFault
from phalanx.sim.faults import FaultPlan
from phalanx.sim.model import (
    EV_CLIENT,
    EV_DELIVER,
    EV_FLAP,
    EV_FLAP_CRASH,
    EV_LATE_WRITE,
    EV_NEMESIS,
    EV_PERSIST,
    EV_PROBE,
    EV_RESET,
    EV_RESTART,
    EV_TICK,
    EV_TIMEOUT,
    EV_UNCLOG,
    SimNode,
)


class Simulator(BankWorkload):
    """One seeded run of a cluster under faults."""

    def __init__(
        self,
        seed: int,
        plan: FaultPlan,
        *,
        trace: Callable[[str], None] | None = None,
        bug: str | None = None,
    ) -> None:
        super().__init__(seed, plan, trace=trace, bug=bug)
        self.liveness_marker: tuple[NodeId, int, int] | None = None
        self.done = False

    # -- running -----------------------------------------------------------------------------
    def run(self) -> None:
        """Run the safety phase, then the liveness phase, then the final checks."""
        for node in self.nodes.values():
            self._start_node(node)
        for client in range(self.plan.client_count):
            self._schedule(self.client_rng.uniform(0, 50), EV_CLIENT, client)
        self._schedule(self.nemesis_rng.expovariate(1 / self.plan.nemesis_interval_ms), EV_NEMESIS,
                       None)
        deadline = self.plan.safety_ms + self.plan.liveness_ms_max
        while self.events and not self.done:
            at, _, kind, payload = heapq.heappop(self.events)
            if at > deadline:
                break
            self.now = at
            if not self.liveness and at >= self.plan.safety_ms:
                self._start_liveness()
            self.event_count += 1
            try:
                self._dispatch(kind, payload)
            except DiskFault as fault:
                self._disk_stop(fault)
        if not self.done:
            raise SimulationFailure(
                f"liveness: after healing every fault at {self.plan.safety_ms} ms, the cluster did"
                f" not elect a leader and commit a write on every member within "
                f"{self.plan.liveness_ms_max} ms"
            )
        self._final_checks()

    def _dispatch(self, kind: int, payload: object) -> None:
        if kind == EV_TICK:
            self._on_tick(payload)  # type: ignore[arg-type]
        elif kind == EV_DELIVER:
            self._on_deliver(payload)  # type: ignore[arg-type]
        elif kind == EV_PERSIST:
            self._on_persist(payload)  # type: ignore[arg-type]
        elif kind == EV_CLIENT:
            self._on_client(payload)  # type: ignore[arg-type]
        elif kind == EV_NEMESIS:
            self._on_nemesis()
        elif kind == EV_RESTART:
            self._restart(self.nodes[payload])  # type: ignore[index]
        elif kind == EV_UNCLOG:
            self.clogged.discard(payload)
            self._log(f"unclog {payload}")
        elif kind == EV_TIMEOUT:
            self._on_client_timeout(payload)  # type: ignore[arg-type]
        elif kind == EV_PROBE:
            self._on_liveness_probe()
        elif kind == EV_RESET:
            self._on_connection_reset(payload)  # type: ignore[arg-type]
        elif kind == EV_FLAP:
            self._on_flap(payload)  # type: ignore[arg-type]
        elif kind == EV_FLAP_CRASH:
            self._on_vote_crash(payload)  # type: ignore[arg-type]
        elif kind == EV_LATE_WRITE:
            self._on_late_write(payload)  # type: ignore[arg-type]

    def _final_checks(self) -> None:
        self._check_replicas()
        self._check_bank_replicas()
        for op in list(self.ops.values()):
            self._complete_info(op)
        result = check(self.history)
        if not result.ok:
            self._fail("linearizability: " + result.explain())

    # -- nemesis -----------------------------------------------------------------------------
    def _on_new_leader(self, node: SimNode) -> None:
        raw = node.raw
        assert raw is not None
        if not self.liveness and self.nemesis_rng.random() < self.plan.leader_flap_probability:
            self._schedule(self.now + self.nemesis_rng.uniform(0, 25), EV_FLAP,
                           (node.id, node.generation, raw.term))

    def _on_flap(self, payload: tuple[NodeId, int, int]) -> None:
        node = self.nodes[payload[0]]
        if self.liveness or node.generation != payload[1] or node.raw is None:
            return
        rng = self.nemesis_rng
        if node.raw.role is Role.LEADER and rng.random() < 0.7:
            # The doomed leader takes a write first, so it leaves an uncommitted tail behind
            # (the raw material of Figure 8).
            data = encode_command(Command(name=b"SET", args=(b"__flap__", str(self.now).encode()),
                                          now_ms=int(self.now)))
            try:
                node.raw.propose(data)
                self._process(node)
            except PhalanxError:
                pass
        if node.raw is None:
            return
        if rng.random() < 0.5:
            self._log(f"flap: crash new leader {node.id} of term {payload[2]}")
            self._crash(node)
            self._schedule(self.now + rng.uniform(20, 400), EV_RESTART, node.id)
        else:
            others = [n for n in self.node_ids if n != node.id]
            self.blocked = {(node.id, o) for o in others} | {(o, node.id) for o in others}
            self.stats["partitions"] += 1
            self._log(f"flap: isolate new leader {node.id} of term {payload[2]}")
            self._release_held()

    def _before_step(self, node: SimNode, message: Message) -> None:
        # Figure 8 (c): a follower acknowledges an entry of an earlier term that the leader
        # has not committed; cut the leader off now, before its own term's entry follows, so
        # the old entry sits on a majority while no entry of the leader's term does.
        raw = node.raw
        probability = self.plan.old_tail_cut_probability
        if (not probability or self.liveness or raw is None or raw.role is not Role.LEADER
                or not isinstance(message, AppendEntriesResponse) or not message.success
                or message.term != raw.term or message.index <= raw.committed):
            return
        term = raw.term_at(message.index)
        if term is None or term >= raw.term or self.nemesis_rng.random() >= probability:
            return
        others = [n for n in self.node_ids if n != node.id]
        self.blocked = {(node.id, o) for o in others} | {(o, node.id) for o in others}
        self.stats["partitions"] += 1
        self._log(f"cut off leader {node.id} of term {raw.term}: {message.source} acknowledged "
                  f"entry {message.index} of term {term}, uncommitted")

    def _on_vote_crash(self, payload: tuple[NodeId, int]) -> None:
        victim, generation = payload
        node = self.nodes[victim]
        if node.alive and node.generation == generation and not self.liveness:
            self._log(f"crash {victim} during the fsync of its vote")
            self._crash(node)
            self._schedule(self.now + self.nemesis_rng.uniform(5, 200), EV_RESTART, victim)

    def _on_nemesis(self) -> None:
        if self.liveness:
            return
        plan = self.plan
        rng = self.nemesis_rng
        actions: list[tuple[str, int]] = [
            ("partition", plan.partition_weight),
            ("asymmetric", plan.asymmetric_partition_weight),
            ("clog", plan.clog_weight),
            ("crash", plan.crash_weight),
            ("heal", plan.heal_weight),
            ("transfer", plan.transfer_weight),
            ("membership", plan.membership_weight),
            ("isolate_leader", plan.leader_isolation_weight),
        ]
        total = sum(weight for _, weight in actions)
        if total:
            pick = rng.uniform(0, total)
            for name, weight in actions:
                if pick < weight:
                    getattr(self, f"_nemesis_{name}")(rng)
                    break
                pick -= weight
        self._release_held()
        self._schedule(self.now + rng.expovariate(1 / plan.nemesis_interval_ms), EV_NEMESIS, None)

    def _nemesis_partition(self, rng: random.Random) -> None:
        nodes = list(self.node_ids)
        rng.shuffle(nodes)
        cut = rng.randrange(1, len(nodes))
        side_a, side_b = nodes[:cut], nodes[cut:]
        self.blocked = {(a, b) for a in side_a for b in side_b} | {
            (b, a) for a in side_a for b in side_b
        }
        self.stats["partitions"] += 1
        self._log(f"partition {sorted(side_a)} | {sorted(side_b)}")

    def _nemesis_asymmetric(self, rng: random.Random) -> None:
        pairs = [(a, b) for a in self.node_ids for b in self.node_ids if a != b]
        chosen = rng.sample(pairs, rng.randrange(1, len(pairs) // 2 + 1))
        self.blocked |= set(chosen)
        self.stats["partitions"] += 1
        self._log(f"block one-way {sorted(chosen)}")

    def _nemesis_clog(self, rng: random.Random) -> None:
        # Swizzle-clogging (FoundationDB): clog several nodes, unclog them in random order.
        victims = rng.sample(self.node_ids, rng.randrange(1, len(self.node_ids) + 1))
        for victim in victims:
            self.clogged.add(victim)
            self._schedule(self.now + rng.uniform(50, 600), EV_UNCLOG, victim)
        self._log(f"clog {sorted(victims)}")

    def _nemesis_crash(self, rng: random.Random) -> None:
        alive = [n for n in self.node_ids if self.nodes[n].alive]
        if not alive:
            return
        victim = self.nodes[rng.choice(alive)]
        self._crash(victim)
        self._schedule(self.now + rng.uniform(20, 800), EV_RESTART, victim.id)

    def _nemesis_heal(self, rng: random.Random) -> None:
        self.blocked = set()
        self.isolated_leader = None
        self._log("heal partitions")

    def _nemesis_isolate_leader(self, rng: random.Random) -> None:
        """Cut the leader off from every peer (clients still reach it, and keep reading from
        it: workload.py): the others elect a new leader and commit writes, and the deposed one
        must not serve a read from then on (its lease must have run out first, diss. §6.4.1)."""
        leader = self._leader()
        if leader is None:
            return
        others = [n for n in self.node_ids if n != leader.id]
        self.blocked |= {(leader.id, o) for o in others} | {(o, leader.id) for o in others}
        self.isolated_leader = leader.id
        self.stats["partitions"] += 1
        self._log(f"isolate leader {leader.id}; clients keep reading from it")

    def _nemesis_transfer(self, rng: random.Random) -> None:
        leader = self._leader()
        if leader is None or leader.raw is None:
            return
        voters = [v for v in leader.raw.conf.voters if v != leader.id]
        if not voters:
            return
        target = rng.choice(sorted(voters))
        try:
            leader.raw.transfer_leader(target)
        except PhalanxError:
            return
        self.stats["transfers"] += 1
        self._log(f"transfer leadership {leader.id} -> {target}")
        self._process(leader)

    def _nemesis_membership(self, rng: random.Random) -> None:
        leader = self._leader()
        if leader is None or leader.raw is None:
            return
        conf = leader.raw.conf
        if conf.joint:
            return
        voters = sorted(conf.voters)
        learners = sorted(conf.learners)
        outsiders = sorted(set(self.node_ids) - set(voters) - set(learners))
        options: list[ConfChange] = []
        for node in outsiders:
            options.append(ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_LEARNER, node),)))
        for node in learners:
            options.append(ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_VOTER, node),)))
            options.append(ConfChange(changes=(ConfChangeSingle(ConfChangeType.REMOVE_NODE, node),)))
        if len(voters) > 3:
            for node in voters:
                if node == leader.id:
                    continue
                options.append(
                    ConfChange(changes=(ConfChangeSingle(ConfChangeType.REMOVE_NODE, node),))
                )
                options.append(
                    ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_LEARNER, node),))
                )
        if outsiders or learners:
            newcomer = rng.choice(outsiders + learners)
            leaving = rng.choice([v for v in voters if v != leader.id] or voters)
            if leaving != leader.id:
                options.append(
                    ConfChange(
                        changes=(
                            ConfChangeSingle(ConfChangeType.ADD_VOTER, newcomer),
                            ConfChangeSingle(ConfChangeType.REMOVE_NODE, leaving),
                        )
                    )
                )
        if not options:
            return
        change = rng.choice(options)
        try:
            leader.raw.propose_conf_change(change)
        except PhalanxError as error:
            self._log(f"conf change refused: {error}")
            return
        self.stats["conf_changes"] += 1
        self._log(f"propose conf change on {leader.id}: {_describe_change(change)}")
        self._process(leader)

    # -- liveness ----------------------------------------------------------------------------
    def _start_liveness(self) -> None:
        self.liveness = True
        self._log("liveness phase: heal everything")
        self.blocked = set()
        self.isolated_leader = None
        self._release_held()
        self.clogged = set()
        self.drop_probability = 0.0
        self.duplicate_probability = 0.0
        self.delay_ms_max = min(self.delay_ms_max, 20)
        for node_id in self.node_ids:
            if not self.nodes[node_id].alive:
                self._restart(self.nodes[node_id])
        self._schedule(self.now + 50, EV_PROBE, None)

    def _on_liveness_probe(self) -> None:
        self._schedule(self.now + 50, EV_PROBE, None)
        leader = self._leader()
        if leader is None or leader.raw is None:
            return
        raw = leader.raw
        if self.liveness_marker is None or self.liveness_marker[0] != leader.id:
            data = encode_command(
                Command(name=b"SET", args=(b"__liveness__", leader.id.encode()),
                        now_ms=int(self.now))
            )
            try:
                index, term = raw.propose(data)
            except (NotLeader, ProposalDropped):
                return
            self.liveness_marker = (leader.id, index, term)
            self._process(leader)
            return
        _, marker_index, _ = self.liveness_marker
        conf = raw.conf
        if conf.joint:
            return
        members = sorted(set(conf.voters) | set(conf.learners))
        for member in members:
            node = self.nodes[member]
            if node.disk_failed:
                continue  # out of service until rebuilt from its peers (disk.py)
            if node.raw is None or node.raw.applied < raw.committed:
                return
        if raw.committed < marker_index:
            return
        self._log(f"liveness reached: leader {leader.id}, commit {raw.committed}")
        self.done = True


def _describe_change(change: ConfChange) -> str:
    if change.leave_joint:
        return "leave joint"
    return ", ".join(f"{single.type.name} {single.node_id}" for single in change.changes)


class TraceBuffer:
    """Keeps the last `limit` trace lines (and every raft log line) of a run."""

    def __init__(self, limit: int = 4000) -> None:
        self.lines: deque[str] = deque(maxlen=limit)

    def __call__(self, line: str) -> None:
        self.lines.append(line)


class _RaftLogCapture(logging.Handler):
    def __init__(self, simulator: Simulator, sink: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.simulator = simulator
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink(f"{self.simulator.now:9.1f} raft: {record.getMessage()}")


def attach_raft_log(simulator: Simulator, sink: Callable[[str], None]) -> Callable[[], None]:
    """Route the Raft core's log lines into `sink` with simulated timestamps; returns a detach."""
    handler = _RaftLogCapture(simulator, sink)
    raft_logger = logging.getLogger("phalanx.raft")
    previous_level = raft_logger.level
    raft_logger.addHandler(handler)
    raft_logger.setLevel(logging.INFO)

    def detach() -> None:
        raft_logger.removeHandler(handler)
        raft_logger.setLevel(previous_level)

    return detach

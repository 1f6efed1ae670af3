"""The deterministic simulator: the real Raft core and KV state machine on a simulated world.

Rules of this file:
- Single-threaded discrete-event loop over a heap of (time_ms, sequence, event). No asyncio, no
  threads, no clocks, no sockets: everything that varies comes from one seed, split into
  independent streams (`random.Random(f"{seed}/network")`, ...), so a run replays exactly.
- Each node runs the same Ready loop as the product (see `phalanx.raft.node.Ready`): send
  `messages`, persist (taking simulated fsync time; a crash meanwhile loses the write or tears it),
  send `persisted_messages`, apply, advance.
- Invariants are checked after every event (see `_check_*`); a violation raises
  `SimulationFailure` at once. At the end: liveness (heal everything, the cluster must commit)
  and linearizability of the client history.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from phalanx.checker import History, check
from phalanx.errors import NotLeader, PhalanxError, ProposalDropped
from phalanx.kv import Command, KVStateMachine, encode_command
from phalanx.kv.codec import Transaction, Watch, encode_transaction
from phalanx.raft import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Index,
    MemoryStorage,
    Message,
    NodeId,
    RaftConfig,
    RawNode,
    Ready,
    Role,
    decode_conf_change,
)
from phalanx.sim.faults import FaultPlan

TICK_MS = 10
ELECTION_TICKS = 20
HEARTBEAT_TICKS = 3
CLIENT_TIMEOUT_MS = 600


class SimulationFailure(PhalanxError):
    """An invariant broke (or liveness failed) in a simulation run."""


@dataclass(slots=True)
class _Op:
    op_id: int
    client: int
    kind: str
    key: bytes
    node: NodeId
    value: bytes | None = None
    expected: bytes | None = None
    index: int = 0
    term: int = 0
    read_index: int = -1
    #: A cas run as a transaction (MULTI; SET k v IFEQ old; EXEC with k watched).
    transaction: bool = False


@dataclass(slots=True)
class SimNode:
    """One simulated server: durable storage that survives crashes, and volatile everything else."""

    id: NodeId
    storage: MemoryStorage
    tick_ms: float
    alive: bool = True
    raw: RawNode | None = None
    machine: KVStateMachine = field(default_factory=KVStateMachine)
    persisting: Ready | None = None
    #: Asynchronous writes in flight, oldest first, and when the newest completes.
    inflight: deque[Ready] = field(default_factory=deque)
    inflight_done: float = 0.0
    generation: int = 0
    checked_commit: int = 0
    was_leader_term: int = -1
    proposals: dict[int, _Op] = field(default_factory=dict)
    reads: dict[bytes, _Op] = field(default_factory=dict)
    waiting_reads: list[_Op] = field(default_factory=list)


# Event kinds (ints keep heap comparisons cheap and deterministic).
(_TICK, _DELIVER, _PERSIST, _CLIENT, _NEMESIS, _RESTART, _UNCLOG, _TIMEOUT, _PROBE, _RESET,
 _FLAP, _FLAP_CRASH, _PERSIST_ASYNC) = range(13)


class Simulator:
    """One seeded run of a cluster under faults."""

    def __init__(
        self,
        seed: int,
        plan: FaultPlan,
        *,
        trace: Callable[[str], None] | None = None,
        bug: str | None = None,
    ) -> None:
        self.seed = seed
        self.plan = plan
        self.trace = trace
        self.bug = bug
        self.network_rng = random.Random(f"{seed}/network")
        self.nemesis_rng = random.Random(f"{seed}/nemesis")
        self.client_rng = random.Random(f"{seed}/clients")
        self.disk_rng = random.Random(f"{seed}/disk")
        self.now = 0.0
        self.events: list[tuple[float, int, int, object]] = []
        self.sequence = 0
        self.event_count = 0
        self.node_ids = [NodeId(f"n{i + 1}") for i in range(plan.node_count)]
        voters = tuple(self.node_ids[: plan.initial_voters])
        self.initial_conf = ConfState(voters=voters)
        self.nodes: dict[NodeId, SimNode] = {}
        clock_rng = random.Random(f"{seed}/clocks")
        for node_id in self.node_ids:
            skew = clock_rng.uniform(-plan.clock_skew, plan.clock_skew)
            # Every node is bootstrapped with the cluster's initial configuration; nodes outside
            # it are not promotable until a configuration change adds them.
            self.nodes[node_id] = SimNode(
                id=node_id, storage=MemoryStorage(self.initial_conf), tick_ms=TICK_MS * (1 + skew)
            )
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.clogged: set[NodeId] = set()
        self.drop_probability = plan.drop_probability
        self.duplicate_probability = plan.duplicate_probability
        self.delay_ms_max = plan.delay_ms_max
        # Checker state.
        self.leader_of_term: dict[int, NodeId] = {}
        self.entry_at: dict[tuple[int, int], bytes] = {}
        self.committed: dict[int, tuple[int, int, bytes]] = {}
        self.applied: dict[int, tuple[int, bytes]] = {}
        # Workload state.
        self.history = History()
        self.ops: dict[int, _Op] = {}
        self.client_busy: dict[int, int] = {}
        self.client_leader_hint: dict[int, NodeId] = {}
        self.write_counter = 0
        self.keys = [f"k{i}".encode() for i in range(plan.key_count)]
        self.last_written: dict[bytes, bytes] = {}
        self.liveness = False
        self.liveness_marker: tuple[NodeId, int, int] | None = None
        self.done = False
        self.stats: dict[str, int] = {
            "messages": 0, "dropped": 0, "crashes": 0, "partitions": 0, "transfers": 0,
            "conf_changes": 0, "snapshots": 0, "elections": 0,
        }

    # -- scheduling --------------------------------------------------------------------------
    def _schedule(self, at: float, kind: int, payload: object) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (at, self.sequence, kind, payload))

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace(f"{self.now:9.1f} {text}")

    # -- running -----------------------------------------------------------------------------
    def run(self) -> None:
        """Run the safety phase, then the liveness phase, then the final checks."""
        for node in self.nodes.values():
            self._start_node(node)
        for client in range(self.plan.client_count):
            self._schedule(self.client_rng.uniform(0, 50), _CLIENT, client)
        self._schedule(self.nemesis_rng.expovariate(1 / self.plan.nemesis_interval_ms), _NEMESIS,
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
            self._dispatch(kind, payload)
        if not self.done:
            raise SimulationFailure(
                f"liveness: after healing every fault at {self.plan.safety_ms} ms, the cluster did"
                f" not elect a leader and commit a write on every member within "
                f"{self.plan.liveness_ms_max} ms"
            )
        self._final_checks()

    def _dispatch(self, kind: int, payload: object) -> None:
        if kind == _TICK:
            self._on_tick(payload)  # type: ignore[arg-type]
        elif kind == _DELIVER:
            self._on_deliver(payload)  # type: ignore[arg-type]
        elif kind == _PERSIST:
            self._on_persist(payload)  # type: ignore[arg-type]
        elif kind == _CLIENT:
            self._on_client(payload)  # type: ignore[arg-type]
        elif kind == _NEMESIS:
            self._on_nemesis()
        elif kind == _RESTART:
            self._restart(self.nodes[payload])  # type: ignore[index]
        elif kind == _UNCLOG:
            self.clogged.discard(payload)
            self._log(f"unclog {payload}")
        elif kind == _TIMEOUT:
            self._on_client_timeout(payload)  # type: ignore[arg-type]
        elif kind == _PROBE:
            self._on_liveness_probe()
        elif kind == _RESET:
            self._on_connection_reset(payload)  # type: ignore[arg-type]
        elif kind == _FLAP:
            self._on_flap(payload)  # type: ignore[arg-type]
        elif kind == _FLAP_CRASH:
            self._on_vote_crash(payload)  # type: ignore[arg-type]
        elif kind == _PERSIST_ASYNC:
            self._on_persist_async(payload)  # type: ignore[arg-type]

    # -- nodes -------------------------------------------------------------------------------
    def _start_node(self, node: SimNode) -> None:
        snapshot = node.storage.snapshot()
        config = RaftConfig(
            node_id=node.id,
            election_ticks=ELECTION_TICKS,
            heartbeat_ticks=HEARTBEAT_TICKS,
            lease_reads=self.plan.lease_reads,
            max_inflight_messages=self.plan.max_inflight_messages,
            max_message_bytes=self.plan.max_message_bytes,
            applied=snapshot.meta.index,
            random=random.Random(f"{self.seed}/raft/{node.id}/{node.generation}"),
        )
        node.machine = KVStateMachine()
        if not snapshot.empty:
            node.machine.restore(snapshot.data)
        node.raw = RawNode(config, node.storage)
        node.alive = True
        node.persisting = None
        node.inflight.clear()
        node.checked_commit = node.raw.committed
        node.was_leader_term = -1
        self._schedule(self.now + node.tick_ms * self.network_rng.random(), _TICK,
                       (node.id, node.generation))

    def _on_tick(self, payload: tuple[NodeId, int]) -> None:
        node = self.nodes[payload[0]]
        if not node.alive or node.generation != payload[1] or node.raw is None:
            return
        node.raw.tick()
        self._check_node(node)
        self._process(node)
        self._schedule(self.now + node.tick_ms, _TICK, payload)

    def _crash(self, node: SimNode) -> None:
        if not node.alive:
            return
        self.stats["crashes"] += 1
        rd = node.persisting if node.persisting is not None else (
            node.inflight[0] if node.inflight else None)
        if rd is not None and rd.entries and rd.snapshot is None and self.plan.torn_writes:
            # A torn write: a prefix of the batch reached the disk, the hard state did not.
            keep = self.disk_rng.randrange(len(rd.entries) + 1)
            if keep:
                node.storage.append(list(rd.entries[:keep]))
            self._log(f"crash {node.id} (torn write kept {keep}/{len(rd.entries)} entries)")
        else:
            self._log(f"crash {node.id}")
        node.alive = False
        node.raw = None
        node.persisting = None
        node.inflight.clear()
        node.generation += 1
        # Peers see their connections to the crashed node reset (the node's fast failover path),
        # usually at once, sometimes late or never.
        for other in self.node_ids:
            if other != node.id and self.network_rng.random() < 0.8:
                delay = self.network_rng.uniform(0, 30)
                self._schedule(self.now + delay, _RESET, (other, node.id))
        for op in list(node.proposals.values()) + list(node.reads.values()) + node.waiting_reads:
            self._complete_info(op)
        node.proposals.clear()
        node.reads.clear()
        node.waiting_reads.clear()

    def _restart(self, node: SimNode) -> None:
        if node.alive:
            return
        self._log(f"restart {node.id}")
        self._start_node(node)

    # -- the Ready loop ----------------------------------------------------------------------
    def _process(self, node: SimNode) -> None:
        raw = node.raw
        if raw is None or node.persisting is not None:
            return
        # Check before applying: the configuration that decided the latest commits is the
        # current one until the new entries are applied.
        self._check_node(node)
        rd = raw.ready()
        if rd is None:
            return
        self._check_ready(node, rd)
        for message in rd.messages:
            self._send(message)
        needs_disk = bool(rd.entries) or rd.hard_state is not None or rd.snapshot is not None
        if self.plan.async_writes and rd.snapshot is None and self.bug != "ack-before-fsync":
            self._process_async(node, rd, needs_disk)
            return
        if node.inflight:
            # A snapshot waits for every earlier write (they complete in order).
            node.persisting = rd
            latency = self.disk_rng.uniform(self.plan.fsync_ms_min, self.plan.fsync_ms_max)
            self._schedule(max(node.inflight_done, self.now + latency), _PERSIST,
                           (node.id, node.generation))
            return
        node.persisting = rd
        if needs_disk and self.bug != "ack-before-fsync":
            latency = self.disk_rng.uniform(self.plan.fsync_ms_min, self.plan.fsync_ms_max)
            self._schedule(self.now + latency, _PERSIST, (node.id, node.generation))
            if (
                not self.liveness
                and rd.hard_state is not None
                and rd.hard_state.vote
                and self.nemesis_rng.random() < self.plan.vote_crash_probability
            ):
                # Crash inside the fsync of a fresh vote (it must not have been revealed).
                self._schedule(self.now + self.nemesis_rng.uniform(0, latency), _FLAP_CRASH,
                               (node.id, node.generation))
        else:
            if self.bug == "ack-before-fsync" and needs_disk:
                # Deliberate bug: acknowledge first, write later (and lose it on a crash).
                for message in rd.persisted_messages:
                    self._send(message)
                rd = _without_persisted_messages(rd)
                node.persisting = rd
                latency = self.disk_rng.uniform(self.plan.fsync_ms_min, self.plan.fsync_ms_max)
                self._schedule(self.now + latency, _PERSIST, (node.id, node.generation))
                return
            self._on_persist((node.id, node.generation))

    def _process_async(self, node: SimNode, rd: Ready, needs_disk: bool) -> None:
        """Asynchronous writes: queue the write (completions keep Ready order), apply and go on.
        Acknowledgements (`persisted_messages`) leave when the write AND every earlier one is
        durable; committed entries are applied at once (durable on a quorum already)."""
        raw = node.raw
        assert raw is not None
        if needs_disk or rd.persisted_messages or node.inflight:
            latency = (self.disk_rng.uniform(self.plan.fsync_ms_min, self.plan.fsync_ms_max)
                       if needs_disk else 0.0)
            done = max(node.inflight_done, self.now + latency)
            node.inflight_done = done
            node.inflight.append(rd)
            self._schedule(done, _PERSIST_ASYNC, (node.id, node.generation))
            if (not self.liveness and rd.hard_state is not None and rd.hard_state.vote
                    and self.nemesis_rng.random() < self.plan.vote_crash_probability):
                self._schedule(self.nemesis_rng.uniform(self.now, done), _FLAP_CRASH,
                               (node.id, node.generation))
        else:
            raw.persisted(rd)  # nothing to write and nothing waiting
        self._apply_ready(node, rd)
        raw.advance_applied(rd)
        self._check_node(node)
        self._serve_reads(node)
        self._maybe_snapshot(node)
        self._process(node)

    def _on_persist_async(self, payload: tuple[NodeId, int]) -> None:
        node = self.nodes[payload[0]]
        if node.generation != payload[1] or node.raw is None or not node.inflight:
            return
        rd = node.inflight.popleft()
        if rd.entries:
            node.storage.append(list(rd.entries))
        if rd.hard_state is not None:
            node.storage.set_hard_state(rd.hard_state)
        for message in rd.persisted_messages:
            self._send(message)
        node.raw.persisted(rd)
        self._check_node(node)
        self._maybe_snapshot(node)
        self._process(node)

    def _apply_ready(self, node: SimNode, rd: Ready) -> None:
        """Apply a Ready's committed entries and take its read states."""
        for entry in rd.committed_entries:
            self._apply(node, entry)
        for state in rd.read_states:
            read_op = node.reads.pop(state.context, None)
            if read_op is None:
                continue
            if not state.ok:
                self._complete_fail(read_op)
            else:
                read_op.read_index = state.index
                node.waiting_reads.append(read_op)

    def _on_persist(self, payload: tuple[NodeId, int]) -> None:
        node = self.nodes[payload[0]]
        if node.generation != payload[1] or node.raw is None or node.persisting is None:
            return
        rd = node.persisting
        raw = node.raw
        storage = node.storage
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            storage.append(list(rd.entries))
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        for message in rd.persisted_messages:
            self._send(message)
        if rd.snapshot is not None:
            node.machine.restore(rd.snapshot.data)
            self._log(f"{node.id} restored snapshot at {rd.snapshot.meta.index}")
            for index, op in list(node.proposals.items()):
                if index <= rd.snapshot.meta.index:
                    del node.proposals[index]
                    self._complete_info(op)
        self._apply_ready(node, rd)
        raw.advance(rd)
        self._check_node(node)
        node.persisting = None
        self._serve_reads(node)
        self._maybe_snapshot(node)
        self._process(node)

    def _apply(self, node: SimNode, entry: Entry) -> None:
        raw = node.raw
        assert raw is not None
        self._check_apply(node, entry)
        reply: object = None
        if entry.type is EntryType.CONF_CHANGE:
            raw.apply_conf_change(decode_conf_change(entry.data))
        elif entry.data:
            reply = node.machine.apply(entry.index, entry.data)
        op = node.proposals.pop(entry.index, None)
        if op is not None:
            if op.term == entry.term:
                self._complete_write(op, reply)
            else:
                self._complete_fail(op)  # overwritten: it can never commit (§5.3)

    def _maybe_snapshot(self, node: SimNode) -> None:
        every = self.plan.snapshot_every_entries
        raw = node.raw
        if not every or raw is None:
            return
        applied = raw.applied
        snapshot = node.storage.snapshot()
        if applied - snapshot.meta.index < every or applied > node.storage.last_index():
            return
        if node.storage.term(Index(applied)) != raw.term_at(applied):
            # With asynchronous writes the applied entry may overwrite a stored one whose write
            # has not finished: a snapshot now would take the old entry's term, and compacting
            # would drop the overwrite. Next time.
            return
        node.storage.create_snapshot(Index(applied), raw.conf, node.machine.snapshot())
        keep = self.disk_rng.choice([0, 2, 10])
        node.storage.compact(Index(max(node.storage.first_index() - 1, applied - keep)))
        self.stats["snapshots"] += 1
        self._log(f"{node.id} snapshot at {applied}, compacted to {node.storage.first_index()}")

    # -- network -----------------------------------------------------------------------------
    def _send(self, message: Message) -> None:
        self.stats["messages"] += 1
        rng = self.network_rng
        if rng.random() < self.drop_probability:
            self.stats["dropped"] += 1
            return
        copies = 2 if rng.random() < self.duplicate_probability else 1
        for _ in range(copies):
            delay = rng.uniform(self.plan.delay_ms_min, self.delay_ms_max)
            self._schedule(self.now + delay, _DELIVER, message)

    def _on_deliver(self, message: Message) -> None:
        source, target = message.source, message.target
        if (source, target) in self.blocked:
            self.stats["dropped"] += 1
            return
        if source in self.clogged or target in self.clogged:
            self._schedule(self.now + 20 + self.network_rng.uniform(0, 20), _DELIVER, message)
            return
        node = self.nodes.get(target)
        if node is None or not node.alive or node.raw is None:
            return
        if self.trace is not None:
            self._log(f"{source}->{target} {_describe(message)}")
        node.raw.step(message)
        # Check right away: a commit decided now was decided under the current configuration.
        self._check_node(node)
        self._process(node)

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
            self._schedule(self.now + rng.uniform(20, 400), _RESTART, node.id)
        else:
            others = [n for n in self.node_ids if n != node.id]
            self.blocked = {(node.id, o) for o in others} | {(o, node.id) for o in others}
            self.stats["partitions"] += 1
            self._log(f"flap: isolate new leader {node.id} of term {payload[2]}")

    def _on_vote_crash(self, payload: tuple[NodeId, int]) -> None:
        victim, generation = payload
        node = self.nodes[victim]
        if node.alive and node.generation == generation and not self.liveness:
            self._log(f"crash {victim} during the fsync of its vote")
            self._crash(node)
            self._schedule(self.now + self.nemesis_rng.uniform(5, 200), _RESTART, victim)

    def _on_connection_reset(self, payload: tuple[NodeId, NodeId]) -> None:
        observer, lost = payload
        node = self.nodes[observer]
        if node.raw is None:
            return
        if node.raw.leader_lost(lost, 1 + self.network_rng.randrange(10)):
            self._log(f"{observer} saw its connection to leader {lost} reset")
        self._check_node(node)
        self._process(node)

    # -- nemesis -----------------------------------------------------------------------------
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
        ]
        total = sum(weight for _, weight in actions)
        if total:
            pick = rng.uniform(0, total)
            for name, weight in actions:
                if pick < weight:
                    getattr(self, f"_nemesis_{name}")(rng)
                    break
                pick -= weight
        self._schedule(self.now + rng.expovariate(1 / plan.nemesis_interval_ms), _NEMESIS, None)

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
            self._schedule(self.now + rng.uniform(50, 600), _UNCLOG, victim)
        self._log(f"clog {sorted(victims)}")

    def _nemesis_crash(self, rng: random.Random) -> None:
        alive = [n for n in self.node_ids if self.nodes[n].alive]
        if not alive:
            return
        victim = self.nodes[rng.choice(alive)]
        self._crash(victim)
        self._schedule(self.now + rng.uniform(20, 800), _RESTART, victim.id)

    def _nemesis_heal(self, rng: random.Random) -> None:
        self.blocked = set()
        self._log("heal partitions")

    def _leader(self) -> SimNode | None:
        best: SimNode | None = None
        for node_id in self.node_ids:
            node = self.nodes[node_id]
            if node.raw is not None and node.raw.role is Role.LEADER and (
                best is None or best.raw is None or node.raw.term > best.raw.term
            ):
                best = node
        return best

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

    # -- clients -----------------------------------------------------------------------------
    def _on_client(self, client: int) -> None:
        if self.liveness:
            return
        self._schedule(self.now + self.client_rng.uniform(5, 60), _CLIENT, client)
        if client in self.client_busy:
            return
        rng = self.client_rng
        hint = self.client_leader_hint.get(client)
        target = hint if hint is not None and rng.random() < 0.8 else rng.choice(self.node_ids)
        node = self.nodes[target]
        if not node.alive or node.raw is None:
            self.client_leader_hint.pop(client, None)
            return
        key = rng.choice(self.keys)
        roll = rng.random()
        if roll < 0.4:
            self._client_read(client, node, key)
        elif roll < 0.8 or key not in self.last_written:
            self.write_counter += 1
            value = f"v{self.write_counter}".encode()
            self._client_write(client, node, key, value, None)
        else:
            self.write_counter += 1
            value = f"v{self.write_counter}".encode()
            self._client_write(client, node, key, value, self.last_written[key])

    def _client_write(
        self, client: int, node: SimNode, key: bytes, value: bytes, expected: bytes | None
    ) -> None:
        raw = node.raw
        assert raw is not None
        kind = "write" if expected is None else "cas"
        op_id = self.history.invoke(
            client, kind, key, value=value, expected=expected, time=self.now
        )
        op = _Op(op_id=op_id, client=client, kind=kind, key=key, node=node.id, value=value,
                 expected=expected)
        args = (key, value) if expected is None else (key, value, b"IFEQ", expected)
        data = encode_command(Command(name=b"SET", args=args, now_ms=int(self.now)))
        if expected is not None and self.write_counter % 2 == 0:
            # Every other cas is a transaction watching its key from the proposer's local state
            # (possibly stale: then it aborts, and was certainly not applied).
            op.transaction = True
            watched = node.machine.read(b"PHALANX.WATCH", (key,), int(self.now))
            assert isinstance(watched, list) and isinstance(watched[0], int)
            payload = encode_transaction(Transaction(
                (Watch(key, watched[0], bool(watched[1])),), ((b"SET", *args),)))
            data = encode_command(Command(name=b"PHALANX.EXEC", args=(payload, key),
                                          now_ms=int(self.now)))
        try:
            index, term = raw.propose(data)
        except (NotLeader, ProposalDropped) as error:
            if isinstance(error, NotLeader) and error.leader_hint:
                self.client_leader_hint[client] = NodeId(error.leader_hint)
            self.history.fail(op_id, time=self.now)
            return
        op.index, op.term = index, term
        node.proposals[index] = op
        self.ops[op_id] = op
        self.client_busy[client] = op_id
        self.last_written[key] = value
        self._schedule(self.now + CLIENT_TIMEOUT_MS, _TIMEOUT, op_id)
        self._process(node)

    def _client_read(self, client: int, node: SimNode, key: bytes) -> None:
        raw = node.raw
        assert raw is not None
        op_id = self.history.invoke(client, "read", key, time=self.now)
        op = _Op(op_id=op_id, client=client, kind="read", key=key, node=node.id)
        context = f"r{op_id}".encode()
        if self.bug == "read-without-confirm" and raw.role is Role.LEADER:
            # Deliberate bug: a leader answers from its local state without confirming it
            # still leads (no ReadIndex round, no lease).
            self.ops[op_id] = op
            self.client_busy[client] = op_id
            op.read_index = raw.committed
            node.waiting_reads.append(op)
            self._serve_reads(node)
            return
        try:
            raw.read_index(context)
        except NotLeader:
            self.history.fail(op_id, time=self.now)
            return
        self.ops[op_id] = op
        self.client_busy[client] = op_id
        node.reads[context] = op
        self._schedule(self.now + CLIENT_TIMEOUT_MS, _TIMEOUT, op_id)
        self._process(node)

    def _serve_reads(self, node: SimNode) -> None:
        raw = node.raw
        if raw is None or not node.waiting_reads:
            return
        applied = raw.applied
        still: list[_Op] = []
        for op in node.waiting_reads:
            if op.read_index <= applied:
                reply = node.machine.read(b"GET", (op.key,), int(self.now))
                if op.op_id in self.ops:
                    self._complete_read(op, reply)
            else:
                still.append(op)
        node.waiting_reads = still

    def _finish(self, op: _Op) -> bool:
        if self.ops.pop(op.op_id, None) is None:
            return False
        if self.client_busy.get(op.client) == op.op_id:
            del self.client_busy[op.client]
        return True

    def _complete_write(self, op: _Op, reply: object) -> None:
        if not self._finish(op):
            return
        self.client_leader_hint[op.client] = op.node
        if op.transaction:
            if isinstance(reply, list):
                self.history.ok(op.op_id, reply == ["OK"], time=self.now)
            else:
                self.history.fail(op.op_id, time=self.now)  # a watched key changed: not applied
        elif op.kind == "cas":
            self.history.ok(op.op_id, reply == "OK", time=self.now)
        else:
            self.history.ok(op.op_id, time=self.now)

    def _complete_read(self, op: _Op, reply: object) -> None:
        if not self._finish(op):
            return
        value = reply if isinstance(reply, bytes) else None
        self.history.ok(op.op_id, value, time=self.now)

    def _complete_fail(self, op: _Op) -> None:
        if self._finish(op):
            self.history.fail(op.op_id, time=self.now)

    def _complete_info(self, op: _Op) -> None:
        if self._finish(op):
            self.history.info(op.op_id, time=self.now)

    def _on_client_timeout(self, op_id: int) -> None:
        op = self.ops.get(op_id)
        if op is None:
            return
        node = self.nodes[op.node]
        if op.kind != "read":
            node.proposals.pop(op.index, None)
        node.reads = {c: o for c, o in node.reads.items() if o.op_id != op_id}
        node.waiting_reads = [o for o in node.waiting_reads if o.op_id != op_id]
        self._complete_info(op)

    # -- liveness ----------------------------------------------------------------------------
    def _start_liveness(self) -> None:
        self.liveness = True
        self._log("liveness phase: heal everything")
        self.blocked = set()
        self.clogged = set()
        self.drop_probability = 0.0
        self.duplicate_probability = 0.0
        self.delay_ms_max = min(self.delay_ms_max, 20)
        for node_id in self.node_ids:
            if not self.nodes[node_id].alive:
                self._restart(self.nodes[node_id])
        self._schedule(self.now + 50, _PROBE, None)

    def _on_liveness_probe(self) -> None:
        self._schedule(self.now + 50, _PROBE, None)
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
            if node.raw is None or node.raw.applied < raw.committed:
                return
        if raw.committed < marker_index:
            return
        self._log(f"liveness reached: leader {leader.id}, commit {raw.committed}")
        self.done = True

    # -- checks ------------------------------------------------------------------------------
    def _fail(self, text: str) -> None:
        raise SimulationFailure(f"at {self.now:.1f} ms: {text}")

    def _check_ready(self, node: SimNode, rd: Ready) -> None:
        # Log matching (§5.3): one (index, term) names one entry everywhere.
        for entry in rd.entries:
            key = (entry.index, entry.term)
            known = self.entry_at.get(key)
            if known is None:
                self.entry_at[key] = entry.data
            elif known != entry.data:
                self._fail(f"log matching: two different entries at index {entry.index} "
                           f"term {entry.term} ({node.id})")

    def _check_node(self, node: SimNode) -> None:
        raw = node.raw
        if raw is None:
            return
        # Election safety (§5.2): at most one leader per term.
        if raw.role is Role.LEADER and node.was_leader_term != raw.term:
            node.was_leader_term = raw.term
            self.stats["elections"] += 1
            other = self.leader_of_term.get(raw.term)
            if other is not None and other != node.id:
                self._fail(f"election safety: {other} and {node.id} both lead term {raw.term}")
            self.leader_of_term[raw.term] = node.id
            self._log(f"{node.id} is leader of term {raw.term}")
            self._check_leader_completeness(node)
            if not self.liveness and self.nemesis_rng.random() < self.plan.leader_flap_probability:
                self._schedule(self.now + self.nemesis_rng.uniform(0, 25), _FLAP,
                               (node.id, node.generation, raw.term))
        # Committed entries never change, and are durable on a quorum when committed.
        committed = raw.committed
        if committed > node.checked_commit:
            low = max(node.checked_commit + 1, raw.first_index)
            for index in range(low, committed + 1):
                term = raw.term_at(index)
                if term is None:
                    continue
                entry = raw.entries(index, index + 1)[0]
                known = self.committed.get(index)
                if known is None:
                    self.committed[index] = (term, entry.type, entry.data)
                    if raw.role is Role.LEADER:
                        # The leader's configuration is the one that decided this commit.
                        self._check_durable_quorum(node, index, term)
                elif known[0] != term or known[2] != entry.data:
                    self._fail(f"committed entry {index} differs: term {known[0]} vs {term} "
                               f"on {node.id}")
            node.checked_commit = committed

    def _check_durable_quorum(self, node: SimNode, index: int, term: int) -> None:
        raw = node.raw
        assert raw is not None
        conf = raw.conf

        def durable_on(member: NodeId) -> bool:
            storage = self.nodes[member].storage
            if storage.snapshot().meta.index >= index:
                return True
            try:
                return storage.term(Index(index)) == term
            except PhalanxError:
                return False

        for voters in (conf.voters, conf.voters_outgoing):
            if not voters:
                continue
            holding = sum(1 for member in voters if durable_on(member))
            if holding * 2 <= len(voters):
                self._fail(
                    f"durability: entry {index} (term {term}) is committed on {node.id} but "
                    f"durable on only {holding} of {len(voters)} voters {list(voters)}"
                )

    def _check_leader_completeness(self, node: SimNode) -> None:
        # §5.4: a leader's log holds every entry committed in earlier terms.
        raw = node.raw
        assert raw is not None
        first = raw.first_index
        for index, (term, _kind, _data) in self.committed.items():
            if index < first:
                continue
            if raw.term_at(index) != term:
                self._fail(
                    f"leader completeness: {node.id} leads term {raw.term} without "
                    f"committed entry {index} (term {term})"
                )

    def _check_apply(self, node: SimNode, entry: Entry) -> None:
        # State machine safety (§5.4.3): the same entry is applied at an index everywhere.
        known = self.applied.get(entry.index)
        if known is None:
            self.applied[entry.index] = (entry.term, entry.data)
        elif known != (entry.term, entry.data):
            self._fail(f"state machine safety: {node.id} applies a different entry at index "
                       f"{entry.index}")

    def _final_checks(self) -> None:
        # Every member that applied the same prefix holds the same state.
        images: dict[int, tuple[NodeId, bytes]] = {}
        for node_id in self.node_ids:
            node = self.nodes[node_id]
            if node.raw is None:
                continue
            applied = node.raw.applied
            image = node.machine.snapshot()
            other = images.get(applied)
            if other is None:
                images[applied] = (node_id, image)
            elif other[1] != image:
                self._fail(f"replicas diverge: {other[0]} and {node_id} differ at applied "
                           f"index {applied}")
        for op in list(self.ops.values()):
            self._complete_info(op)
        result = check(self.history)
        if not result.ok:
            self._fail("linearizability: " + result.explain())


def _without_persisted_messages(rd: Ready) -> Ready:
    return Ready(
        soft_state=rd.soft_state, hard_state=rd.hard_state, entries=rd.entries,
        snapshot=rd.snapshot, committed_entries=rd.committed_entries, messages=rd.messages,
        persisted_messages=(), read_states=rd.read_states, must_sync=rd.must_sync,
    )


def _describe(message: Message) -> str:
    name = type(message).__name__
    fields = [f"term={message.term}"]
    for attribute in ("prev_log_index", "prev_log_term", "commit", "index", "success",
                      "granted", "pre_vote", "round", "last_log_index", "last_log_term"):
        if hasattr(message, attribute):
            fields.append(f"{attribute}={getattr(message, attribute)}")
    entries = getattr(message, "entries", None)
    if entries:
        fields.append(f"entries={entries[0].index}..{entries[-1].index}")
    snapshot = getattr(message, "snapshot", None)
    if snapshot is not None:
        fields.append(f"snapshot={snapshot.meta.index}")
    return f"{name} " + " ".join(fields)


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

"""The simulated cluster: nodes, disk, network and clock, each node running the production
Ready pipeline. The invariant checks (checks.py), the client workload (workload.py) and the
nemesis and run loop (simulator.py) are layered on top, one subclass each.

Rules of this file:
- Single-threaded discrete-event model over a heap of (time_ms, sequence, event). No asyncio, no
  threads, no clocks, no sockets: everything that varies comes from one seed, split into
  independent streams (`random.Random(f"{seed}/network")`, ...), so a run replays exactly.
- Each node runs the production Ready pipeline (`phalanx.raft.pipeline.ReadyPipeline`, the code
  `server/group.py` runs) on a simulated disk: a write takes simulated fsync time, and a crash
  meanwhile loses it or tears it. Plans with `async_writes` off hold every written Ready until
  its write is durable (the pipeline's classic mode).
- The layers above see events through the hooks at the end of `SimCluster` (checks, client
  answers); this file never imports them. See docs/architecture.md ("Testing": the simulator).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from phalanx.errors import SimulationFailure, require
from phalanx.kv import KVStateMachine
from phalanx.raft import (
    ConfState,
    Entry,
    EntryType,
    Index,
    LogWrite,
    MemoryStorage,
    Message,
    NodeId,
    RaftConfig,
    RawNode,
    ReadState,
    Ready,
    ReadyPipeline,
    Role,
    decode_conf_change,
)
from phalanx.raft.mutants import MUTANTS
from phalanx.sim.disk import DiskFault, SimDisk
from phalanx.sim.faults import FaultPlan

TICK_MS = 10
#: The most messages partitioned links hold at once (the rest are lost).
HELD_LIMIT = 400
#: The most Readys one node may hand out in one event before the run counts as a livelock.
READY_LIMIT = 2000
ELECTION_TICKS = 20
HEARTBEAT_TICKS = 3


@dataclass(slots=True)
class ClientOp:
    """One client operation in flight (a write, a compare-and-set or a read)."""

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
    storage: SimDisk
    tick_ms: float
    alive: bool = True
    #: Stopped for good: its disk failed a read (disk.py); it refuses to start again.
    disk_failed: bool = False
    raw: RawNode | None = None
    machine: KVStateMachine = field(default_factory=KVStateMachine)
    #: The production Ready pipeline (`phalanx.raft.pipeline`), rebuilt at every restart.
    pipeline: ReadyPipeline | None = None
    #: The log write on the simulated disk (a crash loses it, or tears it).
    writing: LogWrite | None = None
    #: With the planted bug "ack-before-fsync": when the last late write lands.
    late_done: float = 0.0
    generation: int = 0
    #: The time-varying part of this node's clock rate (`FaultPlan.clock_drift`).
    wander: float = 0.0
    checked_commit: int = 0
    was_leader_term: int = -1
    #: Ticks since this incarnation started, and whether it started from a persisted term.
    ticks: int = 0
    restarted: bool = False
    #: As leader of `was_leader_term`: the index just before its first entry of that term, the
    #: members it led from the start, and those it has sent a first append to (checks.py).
    lead_prev: int = 0
    lead_peers: frozenset[str] = frozenset()
    lead_probed: set[str] = field(default_factory=set)
    proposals: dict[int, ClientOp] = field(default_factory=dict)
    reads: dict[bytes, ClientOp] = field(default_factory=dict)
    waiting_reads: list[ClientOp] = field(default_factory=list)


# Event kinds (ints keep heap comparisons cheap and deterministic).
(EV_TICK, EV_DELIVER, EV_PERSIST, EV_CLIENT, EV_NEMESIS, EV_RESTART, EV_UNCLOG, EV_TIMEOUT,
 EV_PROBE, EV_RESET, EV_FLAP, EV_FLAP_CRASH, EV_LATE_WRITE) = range(13)


class SimCluster:
    """The simulated nodes, disk, network and clock of one seeded run."""

    def __init__(
        self,
        seed: int,
        plan: FaultPlan,
        *,
        trace: Callable[[str], None] | None = None,
        bug: str | None = None,
    ) -> None:
        self.seed = seed
        require(plan.lease_drift_ok(), f"the plan drifts clocks beyond the lease reads' bound "
                f"(skew {plan.clock_skew} + drift {plan.clock_drift})")
        self.plan = plan
        self.trace = trace
        self.bug = bug
        self.network_rng = random.Random(f"{seed}/network")
        self.nemesis_rng = random.Random(f"{seed}/nemesis")
        self.client_rng = random.Random(f"{seed}/clients")
        self.disk_rng = random.Random(f"{seed}/disk")
        self.drift_rng = random.Random(f"{seed}/drift")
        self.mutants = frozenset({bug}) if bug in MUTANTS else frozenset()
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
                id=node_id, storage=SimDisk(node_id, self.initial_conf),
                tick_ms=TICK_MS * (1 + skew)
            )
        if plan.faulty_disks:
            # At most a minority of disks fail (TigerBeetle's fault atlas): one node's.
            faulty = self.nodes[random.Random(f"{seed}/disk-atlas").choice(self.node_ids)]
            faulty.storage.fail(random.Random(f"{seed}/disk-faults"),
                                read_error=plan.disk_read_error_probability,
                                corrupt_read=plan.disk_corrupt_read_probability,
                                misdirect=plan.disk_misdirect_probability)
            faulty.storage.verify = bug != "no-checksum"
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        #: Messages a partitioned link holds until it heals (`FaultPlan.partition_buffering`).
        self.held: list[Message] = []
        self.clogged: set[NodeId] = set()
        self.drop_probability = plan.drop_probability
        self.duplicate_probability = plan.duplicate_probability
        self.delay_ms_max = plan.delay_ms_max
        self.stats: dict[str, int] = {
            "messages": 0, "dropped": 0, "crashes": 0, "partitions": 0, "transfers": 0,
            "conf_changes": 0, "snapshots": 0, "elections": 0, "disk_stops": 0,
        }
        self.liveness = False

    # -- scheduling --------------------------------------------------------------------------
    def _schedule(self, at: float, kind: int, payload: object) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (at, self.sequence, kind, payload))

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace(f"{self.now:9.1f} {text}")

    # -- nodes -------------------------------------------------------------------------------
    def _start_node(self, node: SimNode) -> None:
        snapshot = node.storage.snapshot()
        config = RaftConfig(
            node_id=node.id,
            election_ticks=ELECTION_TICKS,
            heartbeat_ticks=HEARTBEAT_TICKS,
            lease_reads=self.plan.lease_reads,
            mutants=self.mutants,
            max_inflight_messages=self.plan.max_inflight_messages,
            max_message_bytes=self.plan.max_message_bytes,
            applied=snapshot.meta.index,
            random=random.Random(f"{self.seed}/raft/{node.id}/{node.generation}"),
        )
        node.machine = KVStateMachine()
        if not snapshot.empty:
            node.machine.restore(snapshot.data)
        node.raw = RawNode(config, node.storage)
        node.ticks = 0
        node.restarted = node.raw.term > 0
        node.pipeline = ReadyPipeline(node.raw, _NodeIO(self, node),
                                      async_writes=self.plan.async_writes)
        node.alive = True
        node.writing = None
        node.checked_commit = node.raw.committed
        node.was_leader_term = -1
        self._schedule(self.now + node.tick_ms * self.network_rng.random(), EV_TICK,
                       (node.id, node.generation))

    def _on_tick(self, payload: tuple[NodeId, int]) -> None:
        node = self.nodes[payload[0]]
        if not node.alive or node.generation != payload[1] or node.raw is None:
            return
        node.raw.tick()
        node.ticks += 1
        self._process(node)  # (it checks the node first)
        self._schedule(self.now + node.tick_ms * (1 + self._wander(node)), EV_TICK, payload)

    def _wander(self, node: SimNode) -> float:
        """Real clock drift (on top of the fixed rate skew): each node's clock rate wanders
        within +/- `clock_drift` as a random walk, with occasional steps (an NTP slew change, a
        VM migrated to another host), so two nodes' clocks drift apart and back during a run."""
        bound = self.plan.clock_drift
        if not bound:
            return 0.0
        rng = self.drift_rng
        if rng.random() < 0.01:
            node.wander = rng.uniform(-bound, bound)
        else:
            node.wander = max(-bound, min(bound, node.wander + rng.uniform(-bound, bound) / 8))
        return node.wander

    def _crash(self, node: SimNode) -> None:
        if not node.alive:
            return
        self.stats["crashes"] += 1
        write = node.writing
        if write is not None and write.entries and write.snapshot is None and \
                self.plan.torn_writes:
            # A torn write: a prefix of the batch reached the disk, the hard state did not.
            keep = self.disk_rng.randrange(len(write.entries) + 1)
            if keep:
                node.storage.append(list(write.entries[:keep]))
            self._log(f"crash {node.id} (torn write kept {keep}/{len(write.entries)} entries)")
        else:
            self._log(f"crash {node.id}")
        node.alive = False
        node.raw = None
        node.pipeline = None
        node.writing = None
        node.generation += 1
        # Peers see their connections to the crashed node reset (the node's fast failover path),
        # usually at once, sometimes late or never.
        for other in self.node_ids:
            if other != node.id and self.network_rng.random() < 0.8:
                delay = self.network_rng.uniform(0, 30)
                self._schedule(self.now + delay, EV_RESET, (other, node.id))
        self._on_crashed(node)

    def _restart(self, node: SimNode) -> None:
        if node.alive or node.disk_failed:
            return  # (a node whose disk failed its checks refuses to start: disk.py)
        self._log(f"restart {node.id}")
        self._start_node(node)

    def _disk_stop(self, fault: DiskFault) -> None:
        """`fault.node` read bad data: it stops before using it, for good (disk.py)."""
        node = self.nodes[NodeId(fault.node)]
        self._log(f"disk fault: {fault}; {node.id} stops and stays down")
        self.stats["disk_stops"] += 1
        node.disk_failed = True
        self._crash(node)

    def _leader(self) -> SimNode | None:
        best: SimNode | None = None
        for node_id in self.node_ids:
            node = self.nodes[node_id]
            if node.raw is not None and node.raw.role is Role.LEADER and (
                best is None or best.raw is None or node.raw.term > best.raw.term
            ):
                best = node
        return best

    # -- the Ready loop (the production pipeline on a simulated disk) -------------------------
    def _process(self, node: SimNode) -> None:
        """Apply every Ready the node's pipeline hands out now (`phalanx.raft.pipeline`)."""
        pipeline = node.pipeline
        handed = 0
        # (The first pass checks the node at once: callers rely on it after a tick or a step.)
        while node.raw is not None and pipeline is not None and node.pipeline is pipeline:
            handed += 1
            if handed > READY_LIMIT:
                # A node that never runs out of Readys within one event spins forever: a
                # livelock (a real node would hang there), not a run that ends.
                raise SimulationFailure(
                    f"at {self.now:.1f} ms: livelock: {node.id} handed out {READY_LIMIT} Readys "
                    f"in one event without waiting for anything (applied {node.raw.applied}, "
                    f"committed {node.raw.committed})")
            # Check before applying: the configuration that decided the latest commits is the
            # current one until the new entries are applied.
            self._check_node(node)
            rd = pipeline.next_ready()
            if rd is None:
                return
            if rd.snapshot is not None:
                node.machine.restore(rd.snapshot.data)
                self._log(f"{node.id} restored snapshot at {rd.snapshot.meta.index}")
                self._on_snapshot_restored(node, rd.snapshot.meta.index)
            self._apply_ready(node, rd)
            pipeline.applied(rd)
            self._check_node(node)
            self._serve_reads(node)
            self._maybe_snapshot(node)

    def _start_write(self, node: SimNode, write: LogWrite) -> None:
        """The pipeline's `start_write`: the write takes a simulated fsync time, and a crash
        meanwhile loses it (or tears it)."""
        self._check_write(node, write)
        latency = self.disk_rng.uniform(self.plan.fsync_ms_min, self.plan.fsync_ms_max)
        key = (node.id, node.generation)
        if self.bug == "ack-before-fsync":
            # Deliberate bug: the disk reports the write durable at once and writes it later
            # (a crash meanwhile loses it), so acknowledgements leave before the fsync.
            node.late_done = max(node.late_done, self.now + latency)
            self._schedule(node.late_done, EV_LATE_WRITE, (node.id, node.generation, write))
            self._schedule(self.now, EV_PERSIST, key)
            return
        node.writing = write
        self._schedule(self.now + latency, EV_PERSIST, key)
        if (not self.liveness and write.hard_state is not None and write.hard_state.vote
                and self.nemesis_rng.random() < self.plan.vote_crash_probability):
            # Crash inside the fsync of a vote (it must not have been revealed).
            self._schedule(self.nemesis_rng.uniform(self.now, self.now + latency), EV_FLAP_CRASH,
                           key)

    def _on_persist(self, payload: tuple[NodeId, int]) -> None:
        node = self.nodes[payload[0]]
        pipeline = node.pipeline
        if node.generation != payload[1] or node.raw is None or pipeline is None:
            return
        write, node.writing = node.writing, None
        if write is not None:
            _write_to(node.storage, write)
        pipeline.write_done()
        self._check_node(node)
        self._maybe_snapshot(node)
        self._process(node)

    def _on_late_write(self, payload: tuple[NodeId, int, LogWrite]) -> None:
        node = self.nodes[payload[0]]
        if node.generation == payload[1]:
            _write_to(node.storage, payload[2])

    def _apply_ready(self, node: SimNode, rd: Ready) -> None:
        """Apply a Ready's committed entries and take its read states."""
        for entry in rd.committed_entries:
            self._apply(node, entry)
        for state in rd.read_states:
            self._on_read_state(node, state)

    def _apply(self, node: SimNode, entry: Entry) -> None:
        raw = node.raw
        assert raw is not None
        self._check_apply(node, entry)
        reply: object = None
        if entry.type is EntryType.CONF_CHANGE:
            raw.apply_conf_change(decode_conf_change(entry.data), entry.index)
        elif entry.data:
            reply = node.machine.apply(entry.index, entry.data)
        self._on_applied(node, entry, reply)

    def _maybe_snapshot(self, node: SimNode) -> None:
        every = self.plan.snapshot_every_entries
        raw = node.raw
        if not every or raw is None or node.pipeline is None or node.pipeline.holding:
            return  # (as the server: no snapshot of our own while one is being installed)
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
        self._check_send(message)
        rng = self.network_rng
        if rng.random() < self.drop_probability:
            self.stats["dropped"] += 1
            return
        copies = 2 if rng.random() < self.duplicate_probability else 1
        for _ in range(copies):
            delay = rng.uniform(self.plan.delay_ms_min, self.delay_ms_max)
            self._schedule(self.now + delay, EV_DELIVER, message)

    def _on_deliver(self, message: Message) -> None:
        source, target = message.source, message.target
        if (source, target) in self.blocked:
            if self.plan.partition_buffering and len(self.held) < HELD_LIMIT:
                self.held.append(message)
            else:
                self.stats["dropped"] += 1
            return
        if source in self.clogged or target in self.clogged:
            self._schedule(self.now + 20 + self.network_rng.uniform(0, 20), EV_DELIVER, message)
            return
        node = self.nodes.get(target)
        if node is None or not node.alive or node.raw is None:
            return
        if self.trace is not None:
            self._log(f"{source}->{target} {_describe(message)}")
        self._before_step(node, message)
        node.raw.step(message)
        # `_process` checks right away, before anything is applied: a commit decided now was
        # decided under the current configuration.
        self._process(node)

    def _release_held(self) -> None:
        """Deliver, late and in a burst, the held messages whose link is open again."""
        if not self.held:
            return
        still: list[Message] = []
        for message in self.held:
            if (message.source, message.target) in self.blocked:
                still.append(message)
            else:
                delay = self.network_rng.uniform(self.plan.delay_ms_min, self.delay_ms_max)
                self._schedule(self.now + delay, EV_DELIVER, message)
        self.held = still

    def _on_connection_reset(self, payload: tuple[NodeId, NodeId]) -> None:
        observer, lost = payload
        node = self.nodes[observer]
        if node.raw is None:
            return
        if node.raw.leader_lost(lost, 1 + self.network_rng.randrange(10)):
            self._log(f"{observer} saw its connection to leader {lost} reset")
        self._process(node)  # (it checks the node first)

    # -- hooks: the layers above fill these in ------------------------------------------------
    def _before_step(self, node: SimNode, message: Message) -> None:
        """`message` is about to reach `node` (the nemesis may act on it: simulator.py)."""

    def _check_node(self, node: SimNode) -> None:
        """Check the invariants on `node` after an event (checks.py)."""

    def _check_write(self, node: SimNode, write: LogWrite) -> None:
        """Check a log write as it starts (checks.py)."""

    def _check_send(self, message: Message) -> None:
        """Check a message as a node sends it (checks.py)."""

    def _check_apply(self, node: SimNode, entry: Entry) -> None:
        """Check an entry as it is applied (checks.py)."""

    def _on_applied(self, node: SimNode, entry: Entry, reply: object) -> None:
        """`node` applied `entry` with `reply` (workload.py answers the client who proposed it)."""

    def _on_read_state(self, node: SimNode, state: ReadState) -> None:
        """`node`'s core answered a read request (workload.py)."""

    def _on_snapshot_restored(self, node: SimNode, index: int) -> None:
        """`node` restored a snapshot at `index` (workload.py)."""

    def _on_crashed(self, node: SimNode) -> None:
        """`node` crashed: its volatile state is gone (workload.py)."""

    def _serve_reads(self, node: SimNode) -> None:
        """Serve the reads `node` may answer now (workload.py)."""


class _NodeIO:
    """A simulated node's IO as its pipeline sees it (`phalanx.raft.pipeline.ReadyIO`)."""

    def __init__(self, simulator: SimCluster, node: SimNode) -> None:
        self.simulator = simulator
        self.node = node

    def send(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.simulator._send(message)

    def start_write(self, write: LogWrite) -> None:
        self.simulator._start_write(self.node, write)


def _write_to(storage: MemoryStorage, write: LogWrite) -> None:
    if write.snapshot is not None:
        storage.apply_snapshot(write.snapshot)
    if write.entries:
        storage.append(list(write.entries))
    if write.hard_state is not None:
        storage.set_hard_state(write.hard_state)


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

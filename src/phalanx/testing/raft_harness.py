"""A synchronous, deterministic network of Raft replicas for tests (etcd's `network`).

Rules of this file:
- Standard library and `phalanx.raft` only; no pytest import, no clocks, no module-level random.
  Each replica gets its own `random.Random` derived from the network seed, so a run is a pure
  function of the seed and of the calls the test makes.
- The Ready loop here is the reference one (see `phalanx.raft.Ready`): persist snapshot, entries
  and hard state to `MemoryStorage`; queue `messages` then `persisted_messages`; restore the
  snapshot and apply committed entries (calling `apply_conf_change` for CONF_CHANGE entries);
  collect read states; `advance`.
- Messages travel through one FIFO queue. Nothing is delivered until a test calls `deliver()`,
  `stabilize()` or `tick_all()`, so a test can look at (or tamper with) what is in flight.
- Faults are link rules: `cut`, `isolate`, `drop` and `msg_hook` decide, at delivery time, whether
  a message is lost; `recover()` heals every link rule.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from phalanx.raft import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    NodeId,
    RaftConfig,
    RawNode,
    ReadState,
    Ready,
    Role,
    Snapshot,
    decode_conf_change,
)
from phalanx.raft.storage import MemoryStorage
from phalanx.raft.types import Index, Term

DEFAULT_ELECTION_TICKS = 10
DEFAULT_HEARTBEAT_TICKS = 1


def node_ids(count: int) -> tuple[NodeId, ...]:
    """The ids "n1" .. "n<count>"."""
    return tuple(NodeId(f"n{number}") for number in range(1, count + 1))


def make_config(node_id: NodeId, *, seed: int = 0, **overrides: Any) -> RaftConfig:
    """A test `RaftConfig`: etcd-like small timeouts and a per-node seeded `random.Random`."""
    settings: dict[str, Any] = {
        "election_ticks": DEFAULT_ELECTION_TICKS,
        "heartbeat_ticks": DEFAULT_HEARTBEAT_TICKS,
        "random": random.Random(f"{seed}/{node_id}"),
    }
    settings.update(overrides)
    return RaftConfig(node_id=node_id, **settings)


def make_node(
    node_id: NodeId | str,
    voters: Iterable[str],
    *,
    learners: Iterable[str] = (),
    storage: MemoryStorage | None = None,
    seed: int = 0,
    **overrides: Any,
) -> tuple[RawNode, MemoryStorage]:
    """One `RawNode` on a `MemoryStorage` bootstrapped with `voters` (for single-node tests)."""
    if storage is None:
        conf = ConfState(
            voters=tuple(sorted(NodeId(v) for v in voters)),
            learners=tuple(sorted(NodeId(v) for v in learners)),
        )
        storage = MemoryStorage(conf)
    return RawNode(make_config(NodeId(node_id), seed=seed, **overrides), storage), storage


def persist(storage: MemoryStorage, rd: Ready) -> None:
    """Step 2 of the Ready contract: snapshot, then entries, then hard state."""
    if rd.snapshot is not None:
        storage.apply_snapshot(rd.snapshot)
    if rd.entries:
        storage.append(list(rd.entries))
    if rd.hard_state is not None:
        storage.set_hard_state(rd.hard_state)


def encode_state(values: list[bytes]) -> bytes:
    """The harness state machine (a list of applied payloads) as snapshot bytes."""
    return json.dumps([value.hex() for value in values]).encode()


def decode_state(data: bytes) -> list[bytes]:
    """The inverse of `encode_state`."""
    return [bytes.fromhex(value) for value in json.loads(data)] if data else []


@dataclass
class Network:
    """N replicas wired through an in-memory, fault-injectable message queue.

    `applied[node]` is each replica's state machine: the payloads of the non-empty NORMAL entries
    it applied, in order (restored from snapshots too). `read_states[node]` collects every
    `ReadState` the node produced. `delivered` records every message that reached its target.
    """

    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    nodes: dict[NodeId, RawNode] = field(default_factory=dict)
    storages: dict[NodeId, MemoryStorage] = field(default_factory=dict)
    applied: dict[NodeId, list[bytes]] = field(default_factory=dict)
    applied_entries: dict[NodeId, list[Entry]] = field(default_factory=dict)
    read_states: dict[NodeId, list[ReadState]] = field(default_factory=dict)
    readies: dict[NodeId, list[Ready]] = field(default_factory=dict)
    queue: deque[Message] = field(default_factory=deque)
    delivered: list[Message] = field(default_factory=list)
    dropped: list[Message] = field(default_factory=list)
    #: Called for every message at delivery; return False to lose it (etcd's msgHook).
    msg_hook: Callable[[Message], bool] | None = None
    _blocked: set[tuple[NodeId, NodeId]] = field(default_factory=set)
    _isolated: set[NodeId] = field(default_factory=set)

    @classmethod
    def create(
        cls, voters: int | Iterable[str] = 3, *, learners: Iterable[str] = (), seed: int = 0,
        **overrides: Any,
    ) -> Network:
        """A network of replicas that all start from the same bootstrap `ConfState`.

        `voters` is a count (ids n1..nN) or explicit ids; `overrides` go to every `RaftConfig`.
        """
        ids = node_ids(voters) if isinstance(voters, int) else tuple(NodeId(v) for v in voters)
        network = cls(
            voters=tuple(sorted(ids)), learners=tuple(sorted(NodeId(v) for v in learners)),
            seed=seed, overrides=dict(overrides),
        )
        for node in (*network.voters, *network.learners):
            network.add_node(node)
        return network

    # -- membership of the harness ------------------------------------------------------------
    @property
    def bootstrap_conf(self) -> ConfState:
        """The configuration every replica starts from (the one in force at index 0)."""
        return ConfState(voters=self.voters, learners=self.learners)

    def add_node(self, node: str, **overrides: Any) -> RawNode:
        """Start a replica with an empty log and the bootstrap configuration.

        A replica added later (to join through a configuration change) replays the whole log,
        configuration changes included, so it must start from the same configuration as index 0.
        """
        node_id = NodeId(node)
        storage = MemoryStorage(self.bootstrap_conf)
        self.storages[node_id] = storage
        self.applied[node_id] = []
        self.applied_entries[node_id] = []
        self.read_states.setdefault(node_id, [])
        self.readies.setdefault(node_id, [])
        self.nodes[node_id] = RawNode(self.config(node_id, **overrides), storage)
        return self.nodes[node_id]

    def config(self, node: NodeId, **overrides: Any) -> RaftConfig:
        """The configuration `node` runs with (network overrides, then per-call overrides)."""
        return make_config(node, seed=self.seed, **{**self.overrides, **overrides})

    def restart(self, node: str, **overrides: Any) -> RawNode:
        """Crash and restart `node` from its storage; unapplied state is replayed from the log.

        Messages in flight from or to the old incarnation stay in the queue (as on a network).
        """
        node_id = NodeId(node)
        storage = self.storages[node_id]
        snapshot = storage.snapshot()
        self.applied[node_id] = decode_state(snapshot.data)
        self.applied_entries[node_id] = []
        self.nodes[node_id] = RawNode(self.config(node_id, **overrides), storage)
        return self.nodes[node_id]

    # -- the Ready loop ----------------------------------------------------------------------
    def process_ready(self, node: str) -> bool:
        """Handle one Ready of `node`; False if it had nothing to do."""
        node_id = NodeId(node)
        raw = self.nodes[node_id]
        rd = raw.ready()
        if rd is None:
            return False
        self.readies[node_id].append(rd)
        storage = self.storages[node_id]
        persist(storage, rd)
        self.queue.extend(rd.messages)
        self.queue.extend(rd.persisted_messages)
        if rd.snapshot is not None:
            self.applied[node_id] = decode_state(rd.snapshot.data)
        for entry in rd.committed_entries:
            self.applied_entries[node_id].append(entry)
            if entry.type is EntryType.CONF_CHANGE:
                raw.apply_conf_change(decode_conf_change(entry.data), entry.index)
            elif entry.data:
                self.applied[node_id].append(entry.data)
        self.read_states[node_id].extend(rd.read_states)
        raw.advance(rd)
        return True

    def process_all(self) -> bool:
        """Handle Readies of every node until none has work; True if any had."""
        progressed = False
        while True:
            round_progress = False
            for node in sorted(self.nodes):
                while self.process_ready(node):
                    round_progress = True
            if not round_progress:
                return progressed
            progressed = True

    # -- links -------------------------------------------------------------------------------
    def cut(self, a: str, b: str) -> None:
        """Lose every message between `a` and `b`, both ways."""
        self._blocked.add((NodeId(a), NodeId(b)))
        self._blocked.add((NodeId(b), NodeId(a)))

    def drop(self, source: str, target: str) -> None:
        """Lose every message from `source` to `target` (one way)."""
        self._blocked.add((NodeId(source), NodeId(target)))

    def isolate(self, node: str) -> None:
        """Lose every message from or to `node`."""
        self._isolated.add(NodeId(node))

    def recover(self) -> None:
        """Heal every link rule (the hook too)."""
        self._blocked.clear()
        self._isolated.clear()
        self.msg_hook = None

    def reachable(self, message: Message) -> bool:
        """True if a message would be delivered now."""
        if message.target not in self.nodes:
            return False
        if message.source in self._isolated or message.target in self._isolated:
            return False
        if (message.source, message.target) in self._blocked:
            return False
        return self.msg_hook is None or self.msg_hook(message)

    # -- delivery ----------------------------------------------------------------------------
    def send(self, *messages: Message) -> None:
        """Queue messages as if some node had sent them."""
        self.queue.extend(messages)

    def take(self, predicate: Callable[[Message], bool] = lambda _m: True) -> list[Message]:
        """Remove and return the queued messages matching `predicate` (first flushing Readies)."""
        self.process_all()
        taken = [message for message in self.queue if predicate(message)]
        self.queue = deque(message for message in self.queue if not predicate(message))
        return taken

    def deliver(self) -> int:
        """Deliver every message queued now (not the ones they cause); returns how many arrived."""
        batch = list(self.queue)
        self.queue.clear()
        arrived = 0
        for message in batch:
            if self.reachable(message):
                self.nodes[message.target].step(message)
                self.delivered.append(message)
                arrived += 1
            else:
                self.dropped.append(message)
        return arrived

    def stabilize(self, max_rounds: int = 10_000) -> None:
        """Handle Readies and deliver messages until nothing is left to do."""
        for _ in range(max_rounds):
            progressed = self.process_all()
            if not self.queue and not progressed:
                return
            self.deliver()
        raise RuntimeError(f"the network did not stabilize within {max_rounds} rounds")

    # -- time --------------------------------------------------------------------------------
    def tick(self, node: str, count: int = 1) -> None:
        """Tick `node` `count` times, handling its Readies (its messages are queued, not sent)."""
        node_id = NodeId(node)
        for _ in range(count):
            self.nodes[node_id].tick()
            while self.process_ready(node_id):
                pass

    def tick_all(self, count: int = 1, *, nodes: Iterable[str] | None = None) -> None:
        """Tick every node (or `nodes`) once per step, stabilizing the network after each step."""
        chosen = sorted(NodeId(n) for n in nodes) if nodes is not None else None
        for _ in range(count):
            for node in chosen if chosen is not None else sorted(self.nodes):
                self.nodes[node].tick()
            self.stabilize()

    # -- looking -----------------------------------------------------------------------------
    def campaign(self, node: str) -> None:
        """Make `node` start an election now and let the network settle."""
        self.nodes[NodeId(node)].campaign()
        self.stabilize()

    def elect(self, node: str) -> RawNode:
        """Elect `node` (it must be able to win) and let the network settle."""
        self.campaign(node)
        raw = self.nodes[NodeId(node)]
        if raw.role is not Role.LEADER:
            raise RuntimeError(f"{node} did not win the election (role {raw.role.value})")
        return raw

    def leaders(self) -> list[NodeId]:
        """Every node that believes it leads, sorted."""
        return sorted(n for n, raw in self.nodes.items() if raw.role is Role.LEADER)

    def leader(self) -> NodeId | None:
        """The leader of the highest term, or None if no node leads."""
        leading = [(self.nodes[n].term, n) for n in self.leaders()]
        return max(leading)[1] if leading else None

    def propose(self, node: str, data: bytes) -> tuple[Index, int]:
        """Propose `data` on `node` and let the network settle; returns (index, term)."""
        index, term = self.nodes[NodeId(node)].propose(data)
        self.stabilize()
        return index, term

    def compact(self, node: str) -> Snapshot:
        """Snapshot `node`'s state machine at its applied index and compact its log there."""
        node_id = NodeId(node)
        raw = self.nodes[node_id]
        applied = Index(raw.applied)
        storage = self.storages[node_id]
        snapshot = storage.create_snapshot(
            applied, raw.conf, encode_state(self.applied[node_id])
        )
        storage.compact(applied)
        return snapshot

    def log_terms(self, node: str) -> list[tuple[int, int]]:
        """(index, term) of every entry `node` holds from its first index on."""
        raw = self.nodes[NodeId(node)]
        return [(index, raw.term_at(index) or 0)
                for index in range(raw.first_index, raw.last_index + 1)]


def drive(raw: RawNode, storage: MemoryStorage) -> list[Message]:
    """Run one lone node's Ready loop until it is idle; returns every message it sent.

    Entries are persisted and committed CONF_CHANGE entries applied, as in `Network`, but the
    messages are returned instead of delivered (etcd's `readMessages`).
    """
    sent: list[Message] = []
    while (rd := raw.ready()) is not None:
        persist(storage, rd)
        sent.extend(rd.messages)
        sent.extend(rd.persisted_messages)
        for entry in rd.committed_entries:
            if entry.type is EntryType.CONF_CHANGE:
                raw.apply_conf_change(decode_conf_change(entry.data), entry.index)
        raw.advance(rd)
    return sent


def log_storage(
    voters: Iterable[str],
    terms: Iterable[int] = (),
    *,
    term: int | None = None,
    vote: str = "",
    commit: int = 0,
) -> MemoryStorage:
    """A `MemoryStorage` holding entries 1..N whose terms are `terms`, and a hard state.

    `term` defaults to the last entry's term (a replica's term is never below its log's).
    """
    conf = ConfState(voters=tuple(sorted(NodeId(v) for v in voters)))
    storage = MemoryStorage(conf)
    terms = list(terms)
    storage.append([Entry(term=Term(t), index=Index(i)) for i, t in enumerate(terms, start=1)])
    current = term if term is not None else (terms[-1] if terms else 0)
    storage.set_hard_state(HardState(term=Term(current), vote=NodeId(vote), commit=Index(commit)))
    return storage

"""The invariants a simulated run must keep, checked after every event (the Raft paper's
safety properties) and at the end (replicas agree).

Rules of this file:
- A violation raises `SimulationFailure` at once, naming the simulated time and the nodes.
- Checks only read the cluster (they never change what it does), except through
  `_on_new_leader`, which the nemesis (simulator.py) uses to flap a fresh leader.
"""

from __future__ import annotations

from collections.abc import Callable

from phalanx.errors import PhalanxError, SimulationFailure
from phalanx.raft import (
    AppendEntries,
    Entry,
    Index,
    InstallSnapshot,
    LogWrite,
    Message,
    NodeId,
    RequestVoteResponse,
    Role,
)
from phalanx.sim.faults import FaultPlan
from phalanx.sim.model import ELECTION_TICKS, SimCluster, SimNode


class CheckedCluster(SimCluster):
    """A `SimCluster` that checks election safety, log matching, durability, leader
    completeness and state machine safety as it runs."""

    def __init__(
        self,
        seed: int,
        plan: FaultPlan,
        *,
        trace: Callable[[str], None] | None = None,
        bug: str | None = None,
    ) -> None:
        super().__init__(seed, plan, trace=trace, bug=bug)
        # Checker state.
        self.leader_of_term: dict[int, NodeId] = {}
        self.entry_at: dict[tuple[int, int], bytes] = {}
        self.committed: dict[int, tuple[int, int, bytes]] = {}
        self.applied: dict[int, tuple[int, bytes]] = {}

    def _fail(self, text: str) -> None:
        raise SimulationFailure(f"at {self.now:.1f} ms: {text}")

    def _check_write(self, node: SimNode, write: LogWrite) -> None:
        # Log matching (§5.3): one (index, term) names one entry everywhere.
        for entry in write.entries:
            key = (entry.index, entry.term)
            known = self.entry_at.get(key)
            if known is None:
                self.entry_at[key] = entry.data
            elif known != entry.data:
                self._fail(f"log matching: two different entries at index {entry.index} "
                           f"term {entry.term} ({node.id})")

    def _check_send(self, message: Message) -> None:
        node = self.nodes[message.source]
        if isinstance(message, (AppendEntries, InstallSnapshot)):
            # §5.3: "When a leader first comes to power, it initializes all nextIndex values to
            # the index just after the last one in its log": its first append to each member
            # starts right there (a follower whose log differs rejects it with a hint).
            target = message.target
            if (message.term != node.was_leader_term or target in node.lead_probed
                    or target not in node.lead_peers):
                return
            node.lead_probed.add(target)
            start = (f"a snapshot at {message.snapshot.meta.index}"
                     if isinstance(message, InstallSnapshot)
                     else f"prev index {message.prev_log_index}")
            if isinstance(message, InstallSnapshot) or message.prev_log_index != node.lead_prev:
                self._fail(f"new leader's first append: {node.id}, leader of term "
                           f"{message.term}, first sent {target} {start}, not the entries after "
                           f"its last one ({node.lead_prev}) (§5.3)")
        elif (isinstance(message, RequestVoteResponse) and message.pre_vote and message.granted
              and node.restarted and node.ticks < ELECTION_TICKS):
            # diss. §9.6: a pre-vote only from a voter that has not heard from a leader for an
            # election timeout; a restarted one cannot know what it heard before the restart.
            self._fail(f"pre-vote after restart: {node.id} granted {message.target} a pre-vote "
                       f"{node.ticks} ticks after it restarted (election timeout "
                       f"{ELECTION_TICKS} ticks; diss. §9.6)")

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
            prev = raw.last_index
            while prev >= raw.first_index and raw.term_at(prev) == raw.term:
                prev -= 1
            node.lead_prev = prev
            node.lead_peers = frozenset(raw.conf.all_members()) - {node.id}
            node.lead_probed = set()
            self._check_leader_completeness(node)
            self._on_new_leader(node)
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

    def _check_replicas(self) -> None:
        """At the end: replicas that applied the same prefix hold the same state."""
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

    def _on_new_leader(self, node: SimNode) -> None:
        """`node` just became the leader of a new term (a hook for the nemesis)."""

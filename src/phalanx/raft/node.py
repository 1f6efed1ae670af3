"""RawNode: the sans-IO API of one Raft replica, and the `Ready` batch it hands out.

Rules of this file:
- The application drives the node from one thread/task: `tick()`, `step()`, local requests,
  then `ready()` / `advance()` strictly in pairs (a second `ready()` before `advance()` is a bug).
- Or, with asynchronous storage writes (etcd's AsyncStorageWrites; diss. §10.2.1 lets the
  leader write its log in parallel with replication): `ready()` / `advance_applied()` in pairs,
  and `persisted(ready)` for each Ready once its write is durable, in Ready order, possibly
  several Readys later. A Ready's entries are handed out once (`Unstable.offset_in_progress`).
- Everything the application must do is in the `Ready`; its docstring states the order.
"""

from __future__ import annotations

from dataclasses import dataclass

from phalanx.errors import require
from phalanx.raft.config import RaftConfig
from phalanx.raft.messages import Message
from phalanx.raft.progress import Progress, ProgressState
from phalanx.raft.raft import Raft
from phalanx.raft.read_only import ReadState
from phalanx.raft.storage import LogReader
from phalanx.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    HardState,
    Index,
    NodeId,
    Role,
    Snapshot,
    Term,
)


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting: who leads and what we are."""

    lead: NodeId
    role: Role


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    """One batch of work for the application. Handle it in this order:

    1. Send `messages` (they may leave before anything is persisted).
    2. Persist `snapshot` (if any), then `entries`, then `hard_state` (if any) — atomically, with
       one fsync when `must_sync` is True.
    3. Send `persisted_messages` (votes, acknowledgements: only true once durable).
    4. Restore the state machine from `snapshot` (if any), then apply `committed_entries` in
       order; for a CONF_CHANGE entry call `RawNode.apply_conf_change`. Serve `read_states`
       whose index has been applied.
    5. Call `advance(ready)`.

    With asynchronous writes, steps 1 and 4 happen at once and end with
    `advance_applied(ready)`; steps 2 and 3 happen when the write is durable and end with
    `persisted(ready)`. The `persisted_messages` of a Ready must wait for the writes of every
    earlier Ready too (an acknowledgement may cover entries an earlier Ready handed out).
    Committed entries may be applied before they are durable here: they are durable on a
    quorum already, and the state machine lives in memory.
    """

    soft_state: SoftState | None
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    persisted_messages: tuple[Message, ...]
    read_states: tuple[ReadState, ...]
    must_sync: bool


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """The leader's view of one peer."""

    match: int
    next: int
    state: str
    recent_active: bool
    is_learner: bool

    @property
    def replicating(self) -> bool:
        """True while the leader streams entries to this peer optimistically (it is caught up
        enough for pipelined appends; not probing, not waiting for a snapshot)."""
        return self.state == ProgressState.REPLICATE.value


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of a replica's state for monitoring and tests."""

    id: NodeId
    term: Term
    vote: NodeId
    lead: NodeId
    role: Role
    commit: int
    applied: int
    last_index: int
    conf: ConfState
    peers: dict[NodeId, PeerStatus]
    lead_transferee: NodeId


class RawNode:
    """A thread-unsafe Raft replica with the Ready/advance API (as etcd's RawNode)."""

    def __init__(self, config: RaftConfig, storage: LogReader) -> None:
        self.raft = Raft(config, storage)
        self._previous_soft = SoftState(self.raft.lead, self.raft.role)
        self._previous_hard = self.raft.hard_state()
        self._outstanding = False

    # -- inputs ------------------------------------------------------------------------------
    def tick(self, *, missed: bool = False) -> None:
        """Advance logical time by one tick (`missed`: a late tick of a stalled process, which
        counts time but decides nothing, see `Raft.tick`)."""
        self.raft.tick(missed=missed)

    def step(self, message: Message) -> None:
        """Handle a message from a peer."""
        self.raft.step(message)

    def campaign(self) -> None:
        """Start an election now (tests, tooling)."""
        self.raft.campaign()

    def align_heartbeats(self, global_tick: int) -> None:
        """Shift a leader's heartbeat timer so that it fires on the ticks where
        `global_tick % heartbeat_ticks == 0`. The leaders of many groups on one node then
        heartbeat on the same tick, and the transport carries them in one frame per peer
        (coalesced heartbeats). Timing only: no effect on safety."""
        self.raft.heartbeat_elapsed = global_tick % self.raft.config.heartbeat_ticks

    def propose(self, data: bytes) -> tuple[Index, Term]:
        """Propose `data`; raises `NotLeader` or `ProposalDropped`. Returns (index, term)."""
        return self.raft.propose(data)

    def propose_conf_change(self, change: ConfChange) -> tuple[Index, Term]:
        """Propose a membership change; raises `NotLeader`, `ProposalDropped`, `ConfigError`."""
        return self.raft.propose_conf_change(change)

    def apply_conf_change(self, change: ConfChange, index: int) -> ConfState:
        """Apply the committed membership change of the entry at `index` (call while applying
        that entry). An entry the current configuration already includes (one at or below the
        index of a snapshot installed since it was handed out) changes nothing (§5.1)."""
        return self.raft.apply_conf_change(change, index)

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read; see `Ready.read_states`."""
        self.raft.read_index(context)

    def transfer_leader(self, target: NodeId) -> None:
        """Start a leadership transfer to `target` (diss. §3.10)."""
        self.raft.transfer_leader(target)

    def report_snapshot(self, node: NodeId, *, failed: bool) -> None:
        """Report whether sending a snapshot to `node` succeeded."""
        self.raft.report_snapshot(node, failed=failed)

    def report_unreachable(self, node: NodeId) -> None:
        """Report that `node` could not be reached."""
        self.raft.report_unreachable(node)

    def leader_lost(self, node: NodeId, campaign_within_ticks: int) -> bool:
        """The connection to leader `node` reset: campaign soon (see `Raft.leader_lost`)."""
        return self.raft.leader_lost(node, campaign_within_ticks)

    # -- outputs -----------------------------------------------------------------------------
    def has_ready(self) -> bool:
        """True if `ready()` would return a batch."""
        raft = self.raft
        if raft.append_pending:
            raft.flush()
        if raft.messages or raft.messages_after_persist or raft.read_states:
            return True
        log = raft.log
        if log.unstable.has_work() or log.has_next_committed():
            return True
        # (Field by field rather than building a HardState and a SoftState to compare: this
        # runs after every event, and nearly always finds nothing to do.)
        return self._hard_changed() or self._soft_changed()

    def _hard_changed(self) -> bool:
        raft, previous = self.raft, self._previous_hard
        return (raft.term != previous.term or raft.vote != previous.vote
                or raft.log.committed != previous.commit)

    def _soft_changed(self) -> bool:
        raft, previous = self.raft, self._previous_soft
        return raft.lead != previous.lead or raft.role is not previous.role

    def ready(self) -> Ready | None:
        """The next batch of work, or None if there is nothing to do."""
        require(not self._outstanding, "ready() called again before advance()")
        if not self.has_ready():
            return None
        raft = self.raft
        soft = SoftState(raft.lead, raft.role) if self._soft_changed() else None
        hard_changed = self._hard_changed()
        hard = raft.hard_state() if hard_changed else self._previous_hard
        unstable = raft.log.unstable
        entries = tuple(unstable.entries_to_persist())
        snapshot = unstable.snapshot if not unstable.snapshot_in_progress else None
        rd = Ready(
            soft_state=soft,
            hard_state=hard if hard_changed else None,
            entries=entries,
            snapshot=snapshot,
            committed_entries=tuple(raft.log.next_committed_entries()),
            messages=tuple(raft.messages),
            persisted_messages=tuple(raft.messages_after_persist),
            read_states=tuple(raft.read_states),
            must_sync=bool(entries)
            or snapshot is not None
            or hard.term != self._previous_hard.term
            or hard.vote != self._previous_hard.vote,
        )
        raft.messages = []
        raft.messages_after_persist = []
        raft.read_states = []
        raft.read_only.messages_taken()  # a read from now on needs a round sent after it
        unstable.accept_in_progress()
        if soft is not None:
            self._previous_soft = soft
        if rd.hard_state is not None:
            self._previous_hard = hard
        self._outstanding = True
        return rd

    def advance(self, rd: Ready) -> None:
        """Tell the node that `rd` was persisted, sent and applied."""
        self.persisted(rd)
        self.advance_applied(rd)

    def advance_applied(self, rd: Ready) -> None:
        """Tell the node that `rd`'s messages were sent and its committed entries applied
        (its write may still be running: see `persisted`). The next `ready()` may follow."""
        require(self._outstanding, "advance() without an outstanding ready()")
        self._outstanding = False
        raft = self.raft
        if rd.snapshot is not None:
            raft.log.applied = max(raft.log.applied, rd.snapshot.meta.index)
        if rd.committed_entries:
            raft.log.applied_to(rd.committed_entries[-1].index)
        raft.maybe_auto_leave()

    def persisted(self, rd: Ready) -> None:
        """Tell the node that `rd`'s snapshot, entries and hard state are durable (call in
        Ready order). A leader counts its own copy only now (diss. §10.2.1)."""
        raft = self.raft
        if rd.snapshot is not None:
            raft.log.stable_snapshot_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            raft.on_persisted(last.index, last.term)

    # -- introspection -----------------------------------------------------------------------
    # Read-only views of the core for the code that drives it (the server, the simulator, the
    # test harness): nothing outside phalanx.raft reads `RawNode.raft` itself.
    @property
    def role(self) -> Role:
        """What this replica is now (follower, pre-candidate, candidate, leader)."""
        return self.raft.role

    @property
    def lead(self) -> NodeId:
        """The leader this replica knows for its term (`NO_NODE` if none)."""
        return self.raft.lead

    @property
    def is_leader(self) -> bool:
        """True while this replica leads its term."""
        return self.raft.role is Role.LEADER

    @property
    def term(self) -> Term:
        """The current term."""
        return self.raft.term

    @property
    def conf(self) -> ConfState:
        """The configuration in force (the newest applied one, diss. §4.1)."""
        return self.raft.conf

    @property
    def committed(self) -> int:
        """The commit index this replica knows."""
        return self.raft.log.committed

    @property
    def applied(self) -> int:
        """The index of the last entry the application has applied (per `advance_applied`)."""
        return self.raft.log.applied

    @property
    def first_index(self) -> int:
        """The first log index still held (after the snapshot, or handed out unstable)."""
        return self.raft.log.first_index()

    @property
    def last_index(self) -> int:
        """The last log index, durable or not."""
        return self.raft.log.last_index()

    @property
    def pending_conf_index(self) -> int:
        """The index of the newest configuration change proposed by this leader; another may
        be proposed only once it is applied (one change at a time, diss. §4.1)."""
        return self.raft.pending_conf_index

    @property
    def election_elapsed(self) -> int:
        """Ticks since the election timer last restarted (since a leader was last heard, on
        a follower)."""
        return self.raft.election_elapsed

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`, or None if the log does not hold it (compacted
        away or beyond the last index)."""
        return self.raft.log.term_or_none(index)

    def entries(self, low: int, high: int) -> list[Entry]:
        """The entries in [low, high), which the log must hold (unbounded in bytes)."""
        return self.raft.log.slice(low, high, None)

    def lease_read_index(self) -> Index | None:
        """The index a lease read may be served at right now with no message (the commit
        index), or None unless this leader holds a valid lease (diss. §6.4.1)."""
        return self.raft.lease_read_index()

    def peers(self) -> dict[NodeId, PeerStatus]:
        """The replication progress this replica tracks for every member, itself included
        (meaningful on the leader), in the core's own order."""
        return {node: _peer_status(progress) for node, progress in self.raft.progress.items()}

    def status(self) -> Status:
        """A consistent picture of this replica for monitoring."""
        raft = self.raft
        peers: dict[NodeId, PeerStatus] = {}
        if raft.role is Role.LEADER:
            for node in sorted(raft.progress):
                peers[node] = _peer_status(raft.progress[node])
        return Status(
            id=raft.id,
            term=raft.term,
            vote=raft.vote,
            lead=raft.lead,
            role=raft.role,
            commit=raft.log.committed,
            applied=raft.log.applied,
            last_index=raft.log.last_index(),
            conf=raft.conf,
            peers=peers,
            lead_transferee=raft.lead_transferee,
        )


def _peer_status(progress: Progress) -> PeerStatus:
    return PeerStatus(
        match=progress.match,
        next=progress.next,
        state=progress.state.value,
        recent_active=progress.recent_active,
        is_learner=progress.is_learner,
    )

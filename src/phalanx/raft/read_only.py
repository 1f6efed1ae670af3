"""Linearizable reads of one replica: ReadIndex rounds and the leader lease (diss. §6.4, §6.4.1;
etcd's read_only.go). See docs/architecture.md ("the life of a read").

Rules of this file:
- Pure, owned by `Raft`: it numbers the leader's heartbeat rounds, records which voter
  acknowledged which round, keeps the reads waiting for a confirmed round, and the lease a
  confirmed round grants. Raft feeds it acknowledgements, commits and term changes (each call
  names the current term). Its outputs go through callbacks `Raft` gives it: `send` (a
  `ReadIndexResponse` to a follower that asked), `local_answer` (a `ReadState` for this
  replica's own application) and `broadcast` (`Raft` sends a heartbeat round, numbered by
  `start_round`).
- A read is served at index I once (1) an entry of the leader's term is committed (§6.4 step 1),
  (2) a quorum acknowledged a heartbeat round sent after the read arrived, and I is the commit
  index when it arrived (or this term's first commit). Within the lease (`lease_reads`), no
  other leader can exist, so (2) is skipped.
- Batching (diss. §6.4: "the leader can batch ... read-only queries"; etcd's read_only.go):
  a read rides the newest round if that round's heartbeats have not left yet (they are still
  in the outbox `RawNode.ready` takes: `messages_taken`), so every read of one loop turn
  shares one round; otherwise the next round, started at once while fewer than
  `read_rounds_in_flight` rounds (default 1) are unconfirmed, else when one is confirmed. A
  round confirms only the reads registered before its heartbeats left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from phalanx.raft.config import RaftConfig
from phalanx.raft.log import RaftLog
from phalanx.raft.messages import Message, ReadIndexRequest, ReadIndexResponse
from phalanx.raft.quorum import joint_index, quorum_active
from phalanx.raft.types import ConfState, Index, NodeId, Term


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read request is safe to serve once the state machine has applied `index`.

    `ok` is False when the request could not be confirmed (leadership was lost); the caller
    should retry elsewhere.
    """

    index: Index
    context: bytes
    ok: bool = True


@dataclass(slots=True)
class PendingRead:
    """A read waiting on the leader: who asked, at which index, after which round."""

    context: bytes
    index: int
    requester: NodeId
    round_needed: int


class ReadOnly:
    """The leader's read rounds, waiting reads and lease (one per `Raft`)."""

    def __init__(self, config: RaftConfig, log: RaftLog, *,
                 send: Callable[[Message], None],
                 local_answer: Callable[[ReadState], None],
                 broadcast: Callable[[], None]) -> None:
        self.config = config
        self.id = config.node_id
        self.log = log
        self._send = send
        self._local_answer = local_answer
        self._broadcast = broadcast
        # A leader numbers its heartbeat broadcasts; a read is confirmed when a quorum
        # acknowledged a round sent after the read arrived.
        self.round = 0
        self.round_sent_tick: dict[int, int] = {}
        self.round_acked: dict[NodeId, int] = {}
        self.confirmed_round = 0
        self.round_wanted = False
        #: The round whose heartbeats are still in the outbox (not yet taken by
        #: `RawNode.ready`), 0 if none: a read arriving now may ride it.
        self.unsent_round = 0
        self.pending: list[PendingRead] = []
        self.lease_until_tick = -1
        self.lease_disabled = False
        #: The term in which this replica has seen an entry of its own term committed.
        self._committed_term = -1
        # Planted bugs (raft/mutants.py), off unless the simulator's mutation testing asks.
        self._mutant_lease_no_expiry = "lease-no-expiry" in config.mutants
        self._mutant_read_before_term_commit = "read-before-term-commit" in config.mutants
        self._mutant_stale_read_index = "stale-read-index" in config.mutants

    # -- term and role changes ---------------------------------------------------------------
    def fail_pending(self, term: int) -> None:
        """Answer every waiting read "not served, retry" (index 0) at `term`: a follower must
        not wait forever for a leader that stepped down."""
        for read in self.pending:
            self._answer(read, False, term)
        self.pending = []

    def reset(self, term: int) -> None:
        """A new term or role: fail the waiting reads, forget acknowledgements and the lease."""
        self.fail_pending(term)
        self.round_acked = {}
        self.round_sent_tick = {}
        self.confirmed_round = self.round
        self.round_wanted = False
        self.unsent_round = 0
        self.lease_until_tick = -1
        self.lease_disabled = False

    def forget(self, node: NodeId) -> None:
        """`node` left the configuration: its acknowledgements no longer count."""
        self.round_acked.pop(node, None)

    # -- the lease (diss. §6.4.1) ------------------------------------------------------------
    def lease_held(self, tick: int) -> bool:
        """True while the lease of the last confirmed round lasts (only with `lease_reads`;
        the caller checks that it leads and transfers no leadership)."""
        if self._mutant_lease_no_expiry:
            # MUTANT lease-no-expiry: once granted, the lease is never checked against time.
            return (self.config.lease_reads and not self.lease_disabled
                    and self.lease_until_tick >= 0)
        return (self.config.lease_reads and not self.lease_disabled
                and tick < self.lease_until_tick)

    def disable_lease(self) -> None:
        """No lease for the rest of this term (a TimeoutNow lets another replica win an
        election that ignores leases, even if the transfer is aborted)."""
        self.lease_disabled = True

    def lease_read_index(self, term: int, *, lease_valid: bool) -> Index | None:
        """The index a read may be served at right now without any message, or None.

        Only a leader holding its lease (`lease_valid`, diss. §6.4.1) whose log has committed
        an entry of its own term (§6.4 step 1) answers: the same test `register` applies before
        it answers a read at once, offered synchronously so the server can skip the Ready loop.
        """
        if lease_valid and self.committed_in_term(term):
            return Index(self.log.committed)
        return None

    def committed_in_term(self, term: int) -> bool:
        """True once an entry of `term` (the current one) is committed (§6.4 step 1)."""
        # Once true it stays true for the term (the commit index never decreases and a later
        # entry of the log has a term at least as high), so remember the term it held for: the
        # lease read path asks on every read.
        if self._committed_term == term or self._mutant_read_before_term_commit:
            return True  # (MUTANT read-before-term-commit: §6.4 step 1 skipped)
        if self.log.term_or_none(self.log.committed) == term:
            self._committed_term = term
            return True
        return False

    # -- rounds ------------------------------------------------------------------------------
    def start_round(self, tick: int) -> int:
        """Number a heartbeat broadcast sent at `tick`; returns its round."""
        self.round += 1
        self.round_sent_tick[self.round] = tick
        self.round_wanted = False
        self.unsent_round = self.round
        return self.round

    def messages_taken(self) -> None:
        """The outbox was taken (`RawNode.ready`): the newest round's heartbeats are on their
        way, so a read arriving from now on needs a later round."""
        self.unsent_round = 0

    def ack(self, node: NodeId, round_number: int, conf: ConfState, term: int) -> None:
        """`node` (or the leader itself) acknowledged `round_number`: confirm rounds a quorum
        acknowledged, extend the lease, release the reads they confirm."""
        if round_number > self.round_acked.get(node, 0):
            self.round_acked[node] = round_number
        confirmed = joint_index(conf.voters, conf.voters_outgoing, self.round_acked)
        confirmed = min(confirmed, self.round)
        if confirmed <= self.confirmed_round:
            return
        self.confirmed_round = confirmed
        sent_tick = self.round_sent_tick.get(confirmed)
        if sent_tick is not None:
            lease_ticks = self.config.election_ticks - self.config.lease_margin_ticks
            self.lease_until_tick = max(self.lease_until_tick, sent_tick + lease_ticks)
        for old in [r for r in self.round_sent_tick if r < confirmed]:
            del self.round_sent_tick[old]
        self._release(term)
        if self.round_wanted and self.pending:
            self._broadcast()

    # -- answers ---------------------------------------------------------------------------------
    def _answer(self, read: PendingRead, ok: bool, term: int) -> None:
        index = Index(read.index if ok else 0)
        if read.requester == self.id:
            self._local_answer(ReadState(index, read.context, ok=ok))
        else:
            self._send(
                ReadIndexResponse(
                    source=self.id, target=read.requester, term=Term(term),
                    context=read.context, index=index,
                )
            )

    def step_not_leading(self, message: Message, term: int) -> None:
        """A read message reached a replica that does not lead: take a leader's answer, or
        tell a requester to retry elsewhere."""
        if isinstance(message, ReadIndexResponse):
            index = message.index
            if self._mutant_stale_read_index and index > 0:
                index = Index(self.log.committed)  # MUTANT stale-read-index: our own commit
            self._local_answer(ReadState(index, message.context, ok=message.index > 0))
        elif isinstance(message, ReadIndexRequest):
            self._send(
                ReadIndexResponse(
                    source=self.id, target=message.source, term=Term(term),
                    context=message.context, index=Index(0),
                )
            )

    # -- reads -------------------------------------------------------------------------------
    def register(self, context: bytes, requester: NodeId, *, leader: NodeId, conf: ConfState,
                 term: int, lease_valid: bool) -> None:
        """A read arrived at leader `leader` (from itself or a follower's ReadIndexRequest)."""
        if len(self.pending) >= self.config.max_pending_reads:
            self._answer(PendingRead(context, 0, requester, 0), False, term)
            return
        committed = self.log.committed
        if lease_valid and self.committed_in_term(term):
            # Within the lease no other leader can exist; serve at once.
            self._answer(PendingRead(context, committed, requester, 0), True, term)
            return
        single_voter = quorum_active(conf.voters, conf.voters_outgoing, [leader])
        # Index 0 marks "wait for this term's first commit, then read at it" (§6.4 step 1).
        read_at = committed if self.committed_in_term(term) else 0
        if single_voter and self.committed_in_term(term):
            self._answer(PendingRead(context, read_at, requester, 0), True, term)
            return
        if self.unsent_round:
            # The newest round has not left yet: it is sent after this read arrived, so its
            # acknowledgements confirm this read too (the batching of §6.4).
            self.pending.append(PendingRead(context, read_at, requester, self.unsent_round))
            return
        self.pending.append(PendingRead(context, read_at, requester, self.round + 1))
        if self.round - self.confirmed_round < self.config.read_rounds_in_flight:
            self._broadcast()
        else:
            self.round_wanted = True  # started by `ack` when a round in flight is confirmed

    def on_commit(self, term: int) -> None:
        """The commit index moved: reads that waited for this term's first commit read at it."""
        if self.pending and self.committed_in_term(term):
            for read in self.pending:
                if read.index == 0:
                    read.index = self.log.committed
            self._release(term)

    def _release(self, term: int) -> None:
        if not self.committed_in_term(term):
            return  # §6.4 step 1: wait until the no-op of this term is committed
        still_waiting: list[PendingRead] = []
        for read in self.pending:
            if read.round_needed <= self.confirmed_round and read.index > 0:
                self._answer(read, True, term)
            else:
                still_waiting.append(read)
        self.pending = still_waiting


__all__ = ["PendingRead", "ReadOnly", "ReadState"]

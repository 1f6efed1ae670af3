"""The Raft state machine of one replica: roles, elections, reads, transfers, membership; its
log replication (both sides of AppendEntries and InstallSnapshot, commitment, heartbeats) is the
`Replication` mixin in replication.py.

Rules of this file:
- Pure: no IO, no clocks, no threads. Time enters only through `tick()`; randomness only through
  `RaftConfig.random`. Output is appended to `messages` (may be sent at once) and
  `messages_after_persist` (may be sent only after the current hard state and entries are
  durable); `RawNode` turns these into a `Ready`.
- One entry point per input: `tick()`, `step(message)`, and the local requests `campaign()`,
  `propose()`, `read_index()`, `transfer_leader()`, `propose_conf_change()`.
- Every rule cites the paper (§) or Ongaro's dissertation ("diss. §").
- Peers are always visited in sorted order so that runs are deterministic.
"""

from __future__ import annotations

import logging

from phalanx.errors import (
    Compacted,
    ConfigError,
    NotLeader,
    ProposalDropped,
    Unavailable,
    require,
)
from phalanx.raft.confchange import apply_conf_change, encode_conf_change
from phalanx.raft.config import RaftConfig
from phalanx.raft.log import RaftLog
from phalanx.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from phalanx.raft.progress import Progress, ProgressState
from phalanx.raft.quorum import VoteResult, joint_vote, quorum_active
from phalanx.raft.read_only import ReadOnly, ReadState
from phalanx.raft.replication import Replication
from phalanx.raft.storage import LogReader
from phalanx.raft.types import (
    NO_NODE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Index,
    NodeId,
    Role,
    Term,
)

logger = logging.getLogger(__name__)


class Raft(Replication):
    """One replica's Raft state machine (driven by `RawNode`)."""

    def __init__(self, config: RaftConfig, storage: LogReader) -> None:
        self.config = config
        self.id = config.node_id
        #: How this replica names itself in log lines (the node id, plus the group when the
        #: runtime names it: one node holds many groups, and "n2 became leader at term 2" for
        #: two different groups would read like a split brain).
        self.name = config.log_name or config.node_id
        self.random = config.random
        self.log = RaftLog(storage, config.max_applying_bytes)
        hard_state, conf_state = storage.initial_state()
        self.term = hard_state.term
        #: Started from a persisted term: it took part in elections before it stopped.
        self.restarted = hard_state.term > 0
        self.vote = hard_state.vote
        self.lead: NodeId = NO_NODE
        self.role = Role.FOLLOWER
        self.conf = ConfState()
        self.progress: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        self.messages: list[Message] = []
        self.messages_after_persist: list[Message] = []
        self.read_states: list[ReadState] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        #: Adaptive failure detection (issue 15 lever 8): how far apart, in ticks, this
        #: follower's leader's messages came lately (a slowly decaying maximum); a leader whose
        #: loop is busy sends irregularly, and a silence of a few such gaps is not yet a death.
        self.leader_gap_ticks = 0
        self.lead_transferee: NodeId = NO_NODE
        self.pending_conf_index = 0
        #: The index of the entry whose configuration `conf` is: the snapshot's last included
        #: index, or the last configuration entry applied since (see `apply_conf_change`).
        self.conf_index = int(storage.snapshot().meta.index)
        self.ticks_total = 0
        #: ReadIndex rounds, waiting reads and the leader lease (diss. §6.4; read_only.py).
        self.read_only = ReadOnly(config, self.log, send=self._send,
                                  local_answer=lambda state: self.read_states.append(state),
                                  broadcast=self._broadcast_heartbeat)
        self.append_pending = False
        # Planted bugs for the simulator's mutation testing (raft/mutants.py); all False in
        # production, so each mutation point costs one attribute test.
        mutants = config.mutants
        self._mutant_figure8 = "figure8-commit" in mutants
        self._mutant_apply_before_commit = "apply-before-commit" in mutants
        self._mutant_stale_snapshot = "stale-snapshot" in mutants
        self._mutant_vote_not_persisted = "vote-not-persisted" in mutants
        self._mutant_prevote_as_vote = "prevote-as-vote" in mutants
        self._mutant_vote_ignores_log = "vote-ignores-log" in mutants
        self._mutant_stale_term_append = "stale-term-append" in mutants
        self._mutant_no_truncate = "no-truncate" in mutants
        self._mutant_probe_from_start = "probe-from-start" in mutants
        self._mutant_prevote_after_restart = "prevote-after-restart" in mutants
        self._set_conf(conf_state)
        if hard_state.commit:
            # The commit index is volatile state (Figure 2): the application may persist a stale
            # one (a commit-only change costs no fsync), possibly older than a snapshot taken
            # since, which covers it. One beyond the log is corruption.
            require(
                hard_state.commit <= self.log.last_index(),
                f"persisted commit {hard_state.commit} beyond the log's last index "
                f"{self.log.last_index()}",
            )
            self.log.commit_to(hard_state.commit)
        # A snapshot holds only applied, hence committed, entries: its index is committed even
        # when the persisted commit index is older (it is written lazily) and the log keeps
        # entries before the snapshot. Without this a restarted replica would re-apply entries
        # its restored state machine already holds.
        snapshot_index = storage.snapshot().meta.index
        if snapshot_index > self.log.committed:
            self.log.commit_to(snapshot_index)
        if config.applied:
            self.log.applied_to(min(config.applied, self.log.committed))
        self.become_follower(self.term, NO_NODE)
        logger.info(
            "%s started at term %s: commit=%s applied=%s last=%s voters=%s",
            self.name, self.term, self.log.committed, self.log.applied, self.log.last_index(),
            ",".join(self.conf.voters),
        )

    # -- small helpers -----------------------------------------------------------------------
    def hard_state(self) -> HardState:
        """The state that must be durable before some messages may leave (§5, Figure 2)."""
        return HardState(term=self.term, vote=self.vote, commit=Index(self.log.committed))

    def promotable(self) -> bool:
        """True if this replica is a voter (only voters campaign, diss. §4.2.1)."""
        return self.id in self.conf.voters or self.id in self.conf.voters_outgoing

    def _send(self, message: Message) -> None:
        """Queue an outgoing message on the right list.

        A leader's replication traffic may leave before the leader's own disk write completes
        (diss. §10.2.1): the leader counts itself toward a quorum only after `advance()`, so an
        entry is never acknowledged until a quorum *including durable copies* holds it. Every
        other message reveals state (a vote, an acknowledgement, a new term) that must be durable
        first, or the replica could contradict itself after a crash.
        """
        if isinstance(
            message, (AppendEntries, Heartbeat, InstallSnapshot, TimeoutNow, ReadIndexResponse)
        ) or (isinstance(message, (RequestVote, RequestVoteResponse)) and message.pre_vote):
            self.messages.append(message)
        elif self._mutant_vote_not_persisted and isinstance(message, RequestVoteResponse):
            self.messages.append(message)  # MUTANT vote-not-persisted
        else:
            self.messages_after_persist.append(message)

    def _reset_randomized_election_timeout(self) -> None:
        # §5.2: randomised timeouts make split votes rare; the range is [T, T + spread), the
        # spread T unless configured narrower (`RaftConfig.election_spread_ticks`, §9.3).
        ticks = self.config.election_ticks
        spread = self.config.election_spread_ticks or ticks
        self.randomized_election_timeout = ticks + self.random.randrange(spread)

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = Term(term)
            self.vote = NO_NODE
        self.lead = NO_NODE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.leader_gap_ticks = 0
        self._reset_randomized_election_timeout()
        self._abort_leader_transfer()
        self.votes = {}
        next_index = self.log.last_index() + 1
        for node, progress in self.progress.items():
            fresh = Progress(
                next_index=next_index,
                max_inflight=self.config.max_inflight_messages,
                is_learner=progress.is_learner,
            )
            if node == self.id:
                fresh.match = self.log.stable_last_index()
            self.progress[node] = fresh
        self.pending_conf_index = 0
        self.read_only.reset(self.term)

    def _abort_leader_transfer(self) -> None:
        self.lead_transferee = NO_NODE

    # -- role transitions (§5.2) -------------------------------------------------------------
    def become_follower(self, term: int, lead: NodeId) -> None:
        """Follow `lead` (or nobody) at `term`."""
        was = self.role
        self._reset(term)
        self.role = Role.FOLLOWER
        self.lead = lead
        if was is not Role.FOLLOWER:
            logger.info("%s became follower at term %s (leader %s)", self.name, term, lead or "-")

    def become_pre_candidate(self) -> None:
        """Ask for pre-votes without changing term or vote (diss. §9.6)."""
        require(self.role is not Role.LEADER, "invalid transition [leader -> pre-candidate]")
        self.votes = {}
        self.lead = NO_NODE
        self.role = Role.PRE_CANDIDATE
        self.read_only.fail_pending(self.term)
        logger.info("%s became pre-candidate at term %s", self.name, self.term)

    def become_candidate(self) -> None:
        """Start an election: new term, vote for ourselves (§5.2)."""
        require(self.role is not Role.LEADER, "invalid transition [leader -> candidate]")
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        logger.info("%s became candidate at term %s", self.name, self.term)

    def become_leader(self) -> None:
        """Take over: reset follower progress and append a no-op of our term (§5.4.2, §8).

        §5.3: "When a leader first comes to power, it initializes all nextIndex values to the
        index just after the last one in its log"; `_reset` did that, and every follower starts
        in PROBE there (as etcd's `becomeLeader`): one append with our last entry as prev, and a
        follower whose log differs rejects it with a hint. (Probing from match + 1 = 1 instead
        re-sent the whole log, or a snapshot once it was compacted, to every follower.)
        """
        require(self.role is not Role.FOLLOWER, "invalid transition [follower -> leader]")
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        for node, progress in self.progress.items():
            if node != self.id:
                if self._mutant_probe_from_start:
                    progress.become_probe()  # MUTANT probe-from-start: next = match + 1 = 1
                progress.recent_active = True
        # No conf change may be proposed until the no-op of this term is applied: a new leader
        # commits an entry of its own term before changing membership (the single-server
        # change hazard, raft-dev 2015).
        self.pending_conf_index = self._append_entries([Entry(term=self.term, index=Index(0))])
        logger.info("%s became leader at term %s", self.name, self.term)

    # -- campaigning -------------------------------------------------------------------------
    def campaign(self, *, transfer: bool = False) -> None:
        """Start a (pre-)election (§5.2, diss. §9.6); `transfer` skips PreVote (diss. §3.10).

        A leader ignores the request (as etcd does): there is nothing to campaign for.
        """
        if self.role is Role.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_change():
            logger.info("%s cannot campaign at term %s: a configuration change is unapplied",
                        self.name, self.term)
            return
        if self.config.pre_vote and not transfer:
            self.become_pre_candidate()
            if self._poll(self.id, granted=True) is VoteResult.WON:
                self._campaign_after_pre_vote()  # a single voter wins at once
            else:
                self._request_votes(self.term + 1, pre_vote=True, transfer=False)
            return
        self._campaign_after_pre_vote(transfer=transfer)

    def _campaign_after_pre_vote(self, *, transfer: bool = False) -> None:
        """The real election (§5.2): a new term, our own vote, then everyone else's."""
        self.become_candidate()
        if self._poll(self.id, granted=True) is VoteResult.WON:
            self.become_leader()  # a single voter wins at once
            return
        self._request_votes(self.term, pre_vote=False, transfer=transfer)

    def _request_votes(self, term: int, *, pre_vote: bool, transfer: bool) -> None:
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for voter in self._voters_sorted():
            if voter != self.id:
                self._send(
                    RequestVote(
                        source=self.id,
                        target=voter,
                        term=Term(term),
                        last_log_index=Index(last_index),
                        last_log_term=Term(last_term),
                        pre_vote=pre_vote,
                        leadership_transfer=transfer,
                    )
                )

    def _has_unapplied_conf_change(self) -> bool:
        if self.log.committed <= self.log.applied:
            return False
        try:
            entries = self.log.slice(self.log.applied + 1, self.log.committed + 1, None)
        except (Compacted, Unavailable):
            return False  # (a Corrupt read propagates: the replica must stop, not guess)
        return any(entry.type is EntryType.CONF_CHANGE for entry in entries)

    def _poll(self, node: NodeId, *, granted: bool) -> VoteResult:
        if node not in self.votes:
            self.votes[node] = granted
        return joint_vote(self.conf.voters, self.conf.voters_outgoing, self.votes)

    def _voters_sorted(self) -> list[NodeId]:
        return sorted(set(self.conf.voters) | set(self.conf.voters_outgoing))

    # -- ticking -----------------------------------------------------------------------------
    def tick(self, *, missed: bool = False) -> None:
        """Advance logical time by one tick.

        `missed=True`: a tick the runtime delivers late because its own process was stalled
        (a GC pause, CPU starvation, SIGSTOP), in a burst, before it has read what its peers
        sent meanwhile. It counts time like any tick (a leader's lease and CheckQuorum window
        keep measuring real time) but takes no timeout decision: a leader neither heartbeats
        nor steps down, and a follower's or candidate's election timer stops two heartbeat
        intervals short of its timeout, so silence this replica caused by not running never
        starts an election by itself; the next live tick decides, after the messages are read.
        Counting less on a follower is safe: it only refuses votes for longer (diss. §4.2.3),
        and a dead leader is still noticed, two heartbeat intervals of live ticks later.
        """
        self.ticks_total += 1
        if self.role is Role.LEADER:
            self._tick_leader(missed)
        else:
            self._tick_election(missed)

    def election_timeout_now(self) -> int:
        """This follower's election timeout in ticks: the randomised one (§5.2), plus an
        allowance when its leader's messages came irregularly of late (`leader_gap_ticks`):
        nothing while they come every few heartbeats, up to one more minimum election timeout
        when they came an election timeout apart or more. A longer wait is always safe (only
        liveness); it keeps a busy leader from being deposed by the followers it serves."""
        if not self.config.adaptive_election_timeout:
            return self.randomized_election_timeout
        election = self.config.election_ticks
        allowance = min(election, max(0, 3 * self.leader_gap_ticks - election))
        return self.randomized_election_timeout + allowance

    def _heard_from_leader(self, leader: NodeId) -> None:
        gap, recent = self.election_elapsed, self.leader_gap_ticks
        # A new gap as long as the recent ones counts at once; shorter ones pull the estimate
        # down by 1/16 of the difference per message (about a second of regular heartbeats).
        self.leader_gap_ticks = gap if gap >= recent else recent - (recent - gap + 15) // 16
        self.election_elapsed = 0
        self.lead = leader

    def _tick_election(self, missed: bool = False) -> None:
        if missed:
            # Stop short of the timeout (see `tick`); never count backwards.
            ceiling = self.election_timeout_now() - 2 * self.config.heartbeat_ticks
            if self.election_elapsed < ceiling:
                self.election_elapsed += 1
            return
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.election_timeout_now():
            self.election_elapsed = 0
            self.campaign()

    def _tick_leader(self, missed: bool = False) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        for node, progress in self.progress.items():
            if node != self.id and progress.state is ProgressState.SNAPSHOT:
                progress.snapshot_elapsed_ticks += 1
                if progress.snapshot_elapsed_ticks > 4 * self.config.election_ticks:
                    # The snapshot was probably lost on the way; probe again.
                    progress.become_probe()
        if missed:
            return  # decisions wait for the next live tick (see `tick`)
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum:
                # CheckQuorum (diss. §6.2): step down if a quorum was not heard from lately, so a
                # partitioned leader stops serving.
                active = [n for n, p in self.progress.items() if n == self.id or p.recent_active]
                if not quorum_active(self.conf.voters, self.conf.voters_outgoing, active):
                    logger.info("%s stepped down at term %s: quorum not active", self.name, self.term)
                    self.become_follower(self.term, NO_NODE)
                    return
                for node, progress in self.progress.items():
                    if node != self.id:
                        progress.recent_active = False
            if self.lead_transferee:
                # diss. §3.10: abort a transfer that did not finish within an election timeout.
                logger.info("%s aborted leadership transfer to %s", self.name, self.lead_transferee)
                self._abort_leader_transfer()
            if not self.promotable():
                self._hand_over_after_removal()  # retry: the last hand-over did not finish
        if self.role is Role.LEADER and self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    # -- stepping messages -------------------------------------------------------------------
    def step(self, message: Message) -> None:
        """Handle a message from a peer (§5.1: terms first, then the role's rules)."""
        if message.term > self.term:
            if isinstance(message, RequestVote):
                # A restarted replica cannot know whether it heard from a leader just before it
                # stopped, so for its first election timeout it counts as having heard one:
                # diss. §9.6 grants a pre-vote only if the voter has "not received heartbeats
                # from a valid leader for at least a baseline election timeout". (etcd grants at
                # once, its `lead` being None after a restart: a restart under load then lets a
                # follower that merely missed heartbeats win a pre-vote and depose a live
                # leader.) A brand-new replica (no term yet) never heard a leader: it grants, so
                # a new cluster or shard elects at once. With leases a (re)started replica also
                # withholds real votes: it may have acknowledged a lease before it crashed
                # (diss. §6.4.1).
                fresh = (
                    self.config.lease_reads and self.ticks_total < self.config.election_ticks
                ) or (message.pre_vote and self._just_restarted())
                heard_recently = self.lead != NO_NODE or fresh
                in_lease = (
                    self.config.check_quorum
                    and heard_recently
                    and self.election_elapsed < self.config.election_ticks
                )
                if in_lease and not message.leadership_transfer:
                    # diss. §4.2.3 / §9.6: a replica that heard from a leader within the minimum
                    # election timeout ignores votes; this is what makes leader leases safe.
                    return
            if isinstance(message, RequestVote) and message.pre_vote:
                pass  # a pre-vote never changes our term
            elif (
                isinstance(message, RequestVoteResponse)
                and message.pre_vote
                and message.granted
            ):
                pass  # granted pre-votes carry the term we will campaign in
            elif isinstance(message, (AppendEntries, Heartbeat, InstallSnapshot)):
                self.become_follower(message.term, message.source)
            else:
                self.become_follower(message.term, NO_NODE)
        elif message.term < self.term:
            if self._mutant_stale_term_append and isinstance(message, AppendEntries) and \
                    self.role is not Role.LEADER:
                # MUTANT stale-term-append: the deposed leader's entries are taken.
                self._handle_append_entries(message)
                return
            if isinstance(message, (AppendEntries, Heartbeat)) and (
                self.config.check_quorum or self.config.pre_vote
            ):
                # A stale leader (e.g. it was partitioned) learns of the newer term and steps down;
                # without this, PreVote could leave it unaware forever.
                self._send(
                    AppendEntriesResponse(
                        source=self.id, target=message.source, term=self.term,
                        success=False, index=Index(0),
                    )
                )
            elif isinstance(message, RequestVote) and message.pre_vote:
                self._send(
                    RequestVoteResponse(
                        source=self.id, target=message.source, term=self.term,
                        granted=False, pre_vote=True,
                    )
                )
            return

        if isinstance(message, RequestVote):
            self._handle_request_vote(message)
        elif self.role is Role.LEADER:
            self._step_leader(message)
        elif self.role is Role.FOLLOWER:
            self._step_follower(message)
        else:
            self._step_candidate(message)

    def _just_restarted(self) -> bool:
        """True during the first election timeout after a restart (see `step`): no pre-votes.
        (MUTANT prevote-after-restart: etcd's behaviour, pre-votes granted at once.)"""
        return (
            self.restarted
            and self.ticks_total < self.config.election_ticks
            and not self._mutant_prevote_after_restart
        )

    def _handle_request_vote(self, message: RequestVote) -> None:
        # §5.2: one vote per term, first come first served; §5.4.1: only for an up-to-date log.
        can_vote = (
            self.vote == message.source
            or (self.vote == NO_NODE and self.lead == NO_NODE)
            or (message.pre_vote and message.term > self.term)
        )
        if message.pre_vote and self.config.check_quorum and self._just_restarted():
            # A pre-vote of our own term (the candidate is a term behind): the same wait as in
            # `step` for a later term, diss. §9.6.
            can_vote = False
        up_to_date = self._mutant_vote_ignores_log or self.log.is_up_to_date(
            message.last_log_index, message.last_log_term)  # (MUTANT vote-ignores-log)
        if can_vote and up_to_date:
            response_term = message.term if message.pre_vote else self.term
            self._send(
                RequestVoteResponse(
                    source=self.id, target=message.source, term=Term(response_term),
                    granted=True, pre_vote=message.pre_vote,
                )
            )
            if not message.pre_vote:
                self.election_elapsed = 0
                self.vote = message.source
        else:
            self._send(
                RequestVoteResponse(
                    source=self.id, target=message.source, term=self.term,
                    granted=False, pre_vote=message.pre_vote,
                )
            )

    def _step_follower(self, message: Message) -> None:
        if isinstance(message, AppendEntries):
            self._heard_from_leader(message.source)
            self._handle_append_entries(message)
        elif isinstance(message, Heartbeat):
            self._heard_from_leader(message.source)
            self._handle_heartbeat(message)
        elif isinstance(message, InstallSnapshot):
            self._heard_from_leader(message.source)
            self._handle_snapshot(message)
        elif isinstance(message, TimeoutNow):
            # diss. §3.10: the leader picked us; start an election at once, skipping PreVote.
            logger.info("%s received TimeoutNow from %s at term %s", self.name, message.source,
                        self.term)
            self.campaign(transfer=True)
        else:
            self.read_only.step_not_leading(message, self.term)

    def _step_candidate(self, message: Message) -> None:
        if isinstance(message, (AppendEntries, Heartbeat, InstallSnapshot)):
            # §5.2: a candidate that hears from a leader of its term returns to follower.
            self.become_follower(message.term, message.source)
            self._step_follower(message)
        elif isinstance(message, RequestVoteResponse):
            pre_vote_round = self.role is Role.PRE_CANDIDATE
            if message.pre_vote != pre_vote_round:
                return
            result = self._poll(message.source, granted=message.granted)
            if result is VoteResult.WON:
                if pre_vote_round and self._mutant_prevote_as_vote:
                    # MUTANT prevote-as-vote: the pre-votes are taken for real votes.
                    self.become_candidate()
                    self.become_leader()
                elif pre_vote_round:
                    self._campaign_after_pre_vote()
                else:
                    self.become_leader()
            elif result is VoteResult.LOST:
                self.become_follower(self.term, NO_NODE)
        else:
            self.read_only.step_not_leading(message, self.term)

    def _step_leader(self, message: Message) -> None:
        progress = self.progress.get(message.source)
        if progress is None:
            return  # not (or no longer) a member
        progress.recent_active = True
        if isinstance(message, AppendEntriesResponse):
            self._handle_append_response(message, progress)
        elif isinstance(message, HeartbeatResponse):
            progress.probe_sent = False
            if progress.state is ProgressState.REPLICATE and progress.inflights.full():
                progress.inflights.free_first()
            if progress.match < self.log.last_index():
                self._send_append(message.source, progress)
            self.read_only.ack(message.source, message.round, self.conf, self.term)
        elif isinstance(message, ReadIndexRequest):
            self._register_read(message.context, message.source)


    # -- linearizable reads (diss. §6.4; the bookkeeping is in read_only.py) -----------------
    def _register_read(self, context: bytes, requester: NodeId) -> None:
        self.read_only.register(context, requester, leader=self.id, conf=self.conf,
                                term=self.term, lease_valid=self.lease_valid())

    def lease_valid(self) -> bool:
        """True while a leader lease holds (only with `lease_reads`, diss. §6.4.1)."""
        return (
            self.role is Role.LEADER
            and not self.lead_transferee
            and self.read_only.lease_held(self.ticks_total)
        )

    def lease_read_index(self) -> Index | None:
        """The index a read may be served at right now without any message, or None (see
        `ReadOnly.lease_read_index`)."""
        return self.read_only.lease_read_index(self.term, lease_valid=self.lease_valid())

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read; the answer arrives as a `ReadState` (diss. §6.4)."""
        if self.role is Role.LEADER:
            self._register_read(context, self.id)
            return
        if self.lead == NO_NODE:
            raise NotLeader(None, "no leader is known; the read cannot be served")
        self._send(
            ReadIndexRequest(source=self.id, target=self.lead, term=self.term, context=context)
        )

    # -- proposals ---------------------------------------------------------------------------
    def propose(self, data: bytes) -> tuple[Index, Term]:
        """Append `data` to the log as leader; returns where it landed (§5.3)."""
        self._check_can_propose()
        index = self._append_entries([Entry(term=self.term, index=Index(0), data=data)],
                                     broadcast=False)
        return Index(index), self.term

    def propose_conf_change(self, change: ConfChange) -> tuple[Index, Term]:
        """Propose a membership change (diss. §4); one may be pending at a time."""
        self._check_can_propose()
        if self.pending_conf_index > self.log.applied:
            raise ProposalDropped(
                f"a configuration change (index {self.pending_conf_index}) is still pending"
            )
        if change.leave_joint and not self.conf.joint:
            raise ConfigError("leave-joint: the configuration is not joint")
        if not change.leave_joint and self.conf.joint:
            raise ConfigError("a configuration change needs the joint configuration to be left")
        apply_conf_change(self.conf, change)  # validate now rather than at apply time
        data = encode_conf_change(change)
        index = self._append_entries(
            [Entry(term=self.term, index=Index(0), type=EntryType.CONF_CHANGE, data=data)]
        )
        self.pending_conf_index = index
        return Index(index), self.term

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead or None)
        if self.lead_transferee:
            raise ProposalDropped(
                f"leadership is being transferred to {self.lead_transferee}; retry there"
            )

    # -- leadership transfer (diss. §3.10) ---------------------------------------------------
    def transfer_leader(self, target: NodeId) -> None:
        """Hand leadership to `target`: bring it up to date, then send TimeoutNow."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead or None)
        if target == self.id:
            return
        if target not in self.conf.voters:
            raise ConfigError(f"cannot transfer leadership to {target}: not a voter")
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.election_elapsed = 0
        logger.info("%s starts leadership transfer to %s at term %s", self.name, target, self.term)
        progress = self.progress[target]
        if progress.match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target, progress)

    # -- membership (diss. §4) ---------------------------------------------------------------
    def apply_conf_change(self, change: ConfChange, index: int) -> ConfState:
        """Switch to the configuration of the committed change entry at `index` as it is
        applied; one at or below `conf_index` is already in the configuration: a no-op.

        Diss. §5.1 (paper §7, Figure 12): a snapshot carries "the latest configuration as of the
        last included index"; §4.1: each configuration entry takes effect once. `_restore`
        switches to the snapshot's configuration at once, while a Ready handed out before (held
        for its fsync with synchronous writes) may still carry configuration entries at or below
        the snapshot's index. Applied again, one would change the joint configuration it made
        (ConfigError, sim seed 5004616) or, a leave-joint, silently leave a later one.
        """
        if index <= self.conf_index:
            logger.info("%s skips configuration entry %s: the configuration at %s includes it",
                        self.id, index, self.conf_index)
            return self.conf
        new_conf = apply_conf_change(self.conf, change)
        self._set_conf(new_conf)
        self.conf_index = index
        logger.info("%s applied configuration change: voters=%s learners=%s outgoing=%s",
                    self.name, ",".join(new_conf.voters), ",".join(new_conf.learners),
                    ",".join(new_conf.voters_outgoing))
        if self.role is Role.LEADER:
            if not self.promotable():
                # diss. §4.2.2: a leader removed from the configuration steps down. It hands
                # leadership over instead of just stopping: the survivors may not know yet that
                # the change committed, still need this node's vote, and it could refuse it
                # (its log may be longer) while never campaigning itself.
                self._hand_over_after_removal()
            else:
                if self.lead_transferee and self.lead_transferee not in self.progress:
                    self._abort_leader_transfer()
                # The quorum changed: something may now be committed; tell everyone.
                self._maybe_commit()
                self._broadcast_append()
        return new_conf

    def _hand_over_after_removal(self) -> None:
        voters = [
            (self.progress[node].match, node)
            for node in sorted(self.conf.voters)
            if node != self.id and node in self.progress
        ]
        if not voters:
            self.become_follower(self.term, NO_NODE)
            return
        target = max(voters)[1]
        self.lead_transferee = NO_NODE
        logger.info("%s was removed from the configuration; handing leadership to %s",
                    self.name, target)
        self.transfer_leader(target)

    def maybe_auto_leave(self) -> None:
        """A leader leaves a joint configuration once entering it has been applied (§4.3)."""
        if (
            self.role is Role.LEADER
            and self.conf.joint
            and self.conf.auto_leave
            and self.pending_conf_index <= self.log.applied
            and not self.lead_transferee
        ):
            self.propose_conf_change(ConfChange())

    def _set_conf(self, conf: ConfState) -> None:
        self.conf = conf
        members = set(conf.all_members())
        learners = set(conf.learners) | set(conf.learners_next)
        for node in list(self.progress):
            if node not in members:
                del self.progress[node]
                self.read_only.forget(node)
        next_index = self.log.last_index() + 1
        for node in sorted(members):
            is_learner = node in learners and node not in conf.voters_outgoing
            existing = self.progress.get(node)
            if existing is None:
                fresh = Progress(
                    next_index=next_index,
                    max_inflight=self.config.max_inflight_messages,
                    is_learner=is_learner,
                )
                if node == self.id:
                    fresh.match = self.log.stable_last_index()
                fresh.recent_active = True
                self.progress[node] = fresh
            else:
                existing.is_learner = is_learner

    # -- snapshots ---------------------------------------------------------------------------
    def report_snapshot(self, node: NodeId, *, failed: bool) -> None:
        """The application reports the outcome of sending a snapshot to `node`."""
        progress = self.progress.get(node)
        if progress is None or progress.state is not ProgressState.SNAPSHOT:
            return
        if failed:
            progress.pending_snapshot = 0
        progress.become_probe()

    def leader_lost(self, node: NodeId, campaign_within_ticks: int) -> bool:
        """The transport saw the connection to our leader `node` reset: stop waiting for it.

        The follower forgets its leader and campaigns within `campaign_within_ticks` ticks
        instead of waiting out a full election timeout. Safety is untouched: the campaign starts
        with PreVote and votes follow the usual rules, so a spurious reset cannot depose a live
        leader (the other followers still hear it and refuse, diss. §9.6). It does forfeit the
        lease assumption, so it is a no-op with `lease_reads`. Returns True if it applied.
        """
        if (
            self.config.lease_reads
            or self.role is not Role.FOLLOWER
            or self.lead != node
            or not self.promotable()
        ):
            return False
        self.lead = NO_NODE
        self.leader_gap_ticks = 0  # the leader is gone: its rhythm no longer matters
        self.election_elapsed = max(
            self.election_elapsed,
            self.randomized_election_timeout - max(1, campaign_within_ticks),
        )
        logger.info("%s lost its connection to leader %s at term %s; campaigning soon",
                    self.name, node, self.term)
        return True

    def report_unreachable(self, node: NodeId) -> None:
        """The transport could not reach `node`: stop streaming, probe instead."""
        progress = self.progress.get(node)
        if progress is not None and progress.state is ProgressState.REPLICATE:
            progress.become_probe()

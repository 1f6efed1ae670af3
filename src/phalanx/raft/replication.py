"""Log replication, the half of a replica's Raft state machine that moves entries (§5.3, §7).

Rules of this file:
- Part of `Raft` (raft.py), split off along the seam between electing a leader and replicating
  its log: `Replication` is a mixin holding the follower side (AppendEntries, heartbeats,
  InstallSnapshot) and the leader side (appending, flow-controlled sending, commitment by
  counting replicas, heartbeats) of replication. Same rules as raft.py: pure (no IO, clocks or
  threads), every rule cites the paper or the dissertation, peers visited in sorted order.
- The state it uses (the log, progress, term, role, configuration, ...) is `Raft`'s, set up in
  `Raft.__init__`; the annotations below only name it for the type checker.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from phalanx.errors import Compacted, require
from phalanx.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    TimeoutNow,
)
from phalanx.raft.mutants import append_without_truncating
from phalanx.raft.progress import Progress, ProgressState
from phalanx.raft.quorum import joint_index
from phalanx.raft.types import ConfState, Entry, Index, NodeId, Role, Snapshot, Term

if TYPE_CHECKING:
    from phalanx.raft.config import RaftConfig
    from phalanx.raft.log import RaftLog
    from phalanx.raft.read_only import ReadOnly

#: raft.py's logger: the log lines are the replica's, wherever its code sits.
logger = logging.getLogger("phalanx.raft.raft")


class Replication:
    """The replication half of `Raft` (a mixin: `Raft` is the only class that uses it)."""

    config: RaftConfig
    id: NodeId
    name: str
    term: Term
    role: Role
    conf: ConfState
    conf_index: int
    log: RaftLog
    progress: dict[NodeId, Progress]
    read_only: ReadOnly
    lead_transferee: NodeId
    append_pending: bool
    ticks_total: int
    _mutant_figure8: bool
    _mutant_apply_before_commit: bool
    _mutant_stale_snapshot: bool
    _mutant_no_truncate: bool

    def _send(self, message: Message) -> None:
        raise NotImplementedError  # Raft._send

    def _set_conf(self, conf: ConfState) -> None:
        raise NotImplementedError  # Raft._set_conf

    # -- follower side of replication --------------------------------------------------------
    def _handle_append_entries(self, message: AppendEntries) -> None:
        if message.prev_log_index < self.log.committed:
            self._send(
                AppendEntriesResponse(
                    source=self.id, target=message.source, term=self.term, success=True,
                    index=Index(self.log.committed),
                )
            )
            return
        if self._mutant_no_truncate and self.log.match_term(message.prev_log_index,
                                                            message.prev_log_term):
            last = append_without_truncating(self.log, message)  # MUTANT no-truncate
            self._send(AppendEntriesResponse(source=self.id, target=message.source,
                                             term=self.term, success=True, index=Index(last)))
            return
        last_new = self.log.maybe_append(
            message.prev_log_index, message.prev_log_term, message.commit, message.entries
        )
        if last_new is not None and self._mutant_apply_before_commit:
            self.log.commit_to(last_new)  # MUTANT apply-before-commit
        if last_new is not None:
            self._send(
                AppendEntriesResponse(
                    source=self.id, target=message.source, term=self.term, success=True,
                    index=Index(last_new),
                )
            )
        else:
            # §5.3: reject; the hint (our last index) lets the leader skip back in one step.
            self._send(
                AppendEntriesResponse(
                    source=self.id, target=message.source, term=self.term, success=False,
                    index=message.prev_log_index,
                    reject_hint=Index(min(message.prev_log_index, self.log.last_index())),
                )
            )

    def _handle_heartbeat(self, message: Heartbeat) -> None:
        # The leader caps `commit` at our known match index, so this never commits past it.
        last = self.log.last_index()
        self.log.commit_to(min(message.commit, last))
        self._send(
            HeartbeatResponse(
                source=self.id, target=message.source, term=self.term, round=message.round
            )
        )
        if message.commit > last:
            # The leader believes we hold entries up to at least `commit` (our match), but our
            # log ends before: we lost entries we had acknowledged (our data was wiped). Say so
            # the way a rejected append does, or a leader with nothing new to send would never
            # learn it and never send us the snapshot (see `Progress.maybe_decrease_to`).
            self._send(
                AppendEntriesResponse(
                    source=self.id, target=message.source, term=self.term, success=False,
                    index=message.commit, reject_hint=Index(last),
                )
            )

    def _handle_snapshot(self, message: InstallSnapshot) -> None:
        snapshot = message.snapshot
        index = snapshot.meta.index
        if self._restore(snapshot):
            logger.info("%s installed snapshot at index %s term %s", self.name, index,
                        snapshot.meta.term)
            acked = int(index)
        else:
            acked = self.log.committed
        self._send(
            AppendEntriesResponse(
                source=self.id, target=message.source, term=self.term, success=True,
                index=Index(acked),
            )
        )

    def _restore(self, snapshot: Snapshot) -> bool:
        """Install a snapshot from the leader (§7); False if our log already covers it."""
        meta = snapshot.meta
        if self._mutant_stale_snapshot and meta.index < self.log.committed:
            # MUTANT stale-snapshot: an older snapshot replaces a longer committed log.
            self.log.restore(snapshot)
            self.log.applied = min(self.log.applied, int(meta.index))
            self._set_conf(meta.conf_state)
            self.conf_index = int(meta.index)
            return True
        if meta.index <= self.log.committed:
            return False
        if self.log.match_term(meta.index, meta.term):
            # Our log already holds the snapshot's last entry: just fast-forward the commit.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snapshot)
        self._set_conf(meta.conf_state)
        self.conf_index = int(meta.index)
        return True

    # -- leader side of replication ----------------------------------------------------------
    def _append_entries(self, entries: list[Entry], *, broadcast: bool = True) -> int:
        last = self.log.last_index()
        stamped = [
            Entry(term=self.term, index=Index(last + offset + 1), type=entry.type, data=entry.data)
            for offset, entry in enumerate(entries)
        ]
        self.log.append(stamped)
        # Our own progress moves only after the entries are durable (see `on_persisted`).
        if broadcast:
            self._broadcast_append()
        else:
            # Batching: proposals made before the next `ready()` share one AppendEntries per
            # follower (see `flush`).
            self.append_pending = True
        return stamped[-1].index

    def flush(self) -> None:
        """Send the AppendEntries that batched proposals are waiting for (called by `ready`)."""
        if self.append_pending:
            self.append_pending = False
            if self.role is Role.LEADER:
                self._broadcast_append()

    def on_persisted(self, index: int, term: int) -> None:
        """The application made entries up to (index, term) durable; count our own copy."""
        self.log.stable_to(index, term)
        if self.role is Role.LEADER and term == self.term:
            own = self.progress.get(self.id)
            if own is not None and own.maybe_update(index) and self._maybe_commit():
                self._broadcast_append()

    def _maybe_commit(self) -> bool:
        matches = {node: progress.match for node, progress in self.progress.items()}
        index = joint_index(self.conf.voters, self.conf.voters_outgoing, matches)
        if index <= self.log.committed:
            return False
        # §5.4.2: a leader commits by counting replicas only entries of its own term.
        if self.log.term_or_none(index) != self.term and not self._mutant_figure8:
            return False  # (MUTANT figure8-commit skips this test)
        self.log.commit_to(index)
        self.read_only.on_commit(self.term)
        return True

    def _broadcast_append(self) -> None:
        for node in sorted(self.progress):
            if node != self.id:
                self._send_append(node, self.progress[node])

    def _send_append(self, node: NodeId, progress: Progress, *, allow_empty: bool = True) -> None:
        if progress.is_paused():
            return
        prev_index = progress.next - 1
        prev_term = self.log.term_or_none(prev_index)
        entries: list[Entry] = []
        compacted = prev_term is None
        if not compacted:
            try:
                entries = self.log.entries_from(progress.next, self.config.max_message_bytes)
            except Compacted:
                # Only compaction means "send the snapshot": a Corrupt read (a checksum
                # mismatch, an I/O error) propagates, so the replica stops instead of
                # treating its damaged log as compacted.
                compacted = True
        if compacted:
            self._send_snapshot(node, progress)
            return
        if not entries and not allow_empty:
            return
        self._send(
            AppendEntries(
                source=self.id, target=node, term=self.term, prev_log_index=Index(prev_index),
                prev_log_term=Term(prev_term or 0), entries=tuple(entries),
                commit=Index(self.log.committed),
            )
        )
        progress.sent_entries(entries[-1].index if entries else prev_index, len(entries))

    def _send_snapshot(self, node: NodeId, progress: Progress) -> None:
        # §7: the follower needs entries we compacted away; send the snapshot instead.
        if not progress.recent_active:
            return
        snapshot = self.log.snapshot()
        require(not snapshot.empty, f"need a snapshot for {node} but none exists")
        progress.become_snapshot(snapshot.meta.index)
        logger.info("%s sends snapshot at index %s to %s", self.name, snapshot.meta.index, node)
        self._send(InstallSnapshot(source=self.id, target=node, term=self.term, snapshot=snapshot))

    def _handle_append_response(self, message: AppendEntriesResponse, progress: Progress) -> None:
        node = message.source
        if not message.success:
            if message.index == 0 and message.reject_hint == 0:
                return  # a stale-term notice; the term check already handled it
            match_before = progress.match
            if progress.maybe_decrease_to(message.index, message.reject_hint):
                if progress.match < match_before:
                    # INFO, not WARNING: most of these are stale answers (a reordered or
                    # duplicated rejection, routine under the simulator's network), and a
                    # WARNING reached Python's last-resort handler in every quiet `phalanx
                    # sim` run (261 lines in 300 seeds). A wiped data directory is refused in
                    # the peer handshake (server/identity.py); --trace and node logs show this.
                    logger.info(
                        "%s: %s says its log ends at %s, below the %s it had acknowledged "
                        "(its data was lost or wiped, or a stale answer): replicating to it "
                        "from there", self.name, node, message.reject_hint, match_before)
                if progress.state is ProgressState.REPLICATE:
                    progress.become_probe()
                self._send_append(node, progress)
            return
        updated = progress.maybe_update(message.index)
        if not updated and not (
            progress.state is ProgressState.PROBE and message.index == progress.match
        ):
            # (A probe acknowledged right at `match`, e.g. one that checked a follower's claim
            # of a shorter log, resumes streaming below, as in etcd.)
            if progress.state is ProgressState.REPLICATE:
                progress.inflights.free_le(message.index)
            return
        if progress.state is ProgressState.PROBE:
            progress.become_replicate()
        elif (
            progress.state is ProgressState.SNAPSHOT
            and progress.match >= progress.pending_snapshot
        ):
            progress.become_probe()
            progress.become_replicate()
        elif progress.state is ProgressState.REPLICATE:
            progress.inflights.free_le(message.index)
        if self._maybe_commit():
            self._broadcast_append()
        # Keep streaming while the window allows (flow control: bounded in-flight messages).
        while not progress.is_paused() and progress.next <= self.log.last_index():
            before = (progress.next, progress.probe_sent, progress.state)
            self._send_append(node, progress, allow_empty=False)
            if (progress.next, progress.probe_sent, progress.state) == before:
                break
        if node == self.lead_transferee and progress.match == self.log.last_index():
            self._send_timeout_now(node)

    def _send_timeout_now(self, node: NodeId) -> None:
        logger.info("%s sends TimeoutNow to %s at term %s", self.name, node, self.term)
        # The target may now win an election that ignores leases: no lease for the rest of
        # this term, even if the transfer is aborted.
        self.read_only.disable_lease()
        self._send(TimeoutNow(source=self.id, target=node, term=self.term))

    def _broadcast_heartbeat(self) -> None:
        round_number = self.read_only.start_round(self.ticks_total)
        for node in sorted(self.progress):
            if node == self.id:
                continue
            progress = self.progress[node]
            self._send(
                Heartbeat(
                    source=self.id, target=node, term=self.term,
                    commit=Index(min(progress.match, self.log.committed)),
                    round=round_number,
                )
            )
        self.read_only.ack(self.id, round_number, self.conf, self.term)

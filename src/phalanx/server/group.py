"""One Raft group on a node: its Ready loop, its durable store, its state machine, its waiters.

Rules of this file:
- One asyncio task (`run`) owns the Ready loop. Other tasks call `step`/`tick`/`propose`/
  `read_index` synchronously on the same event loop thread (etcd's node goroutine accepts Step
  while a Ready is in flight the same way); they only mutate the core and wake the loop.
- The Ready order with asynchronous writes (etcd's AsyncStorageWrites) is
  `phalanx.raft.pipeline.ReadyPipeline`, the code the simulator runs too (see
  docs/architecture.md, "the Ready loop"). This file is its IO: `send` hands messages to the
  transport, `start_write` runs the log write (one write, one fsync) on the store's writer
  thread without the loop waiting for it, and its completion calls `write_done`. The loop
  applies what the pipeline hands out and answers waiters. The loop waiting for the disk used
  to cost a leader its own fsync plus a thread hand-off on every commit, even when two
  followers had already made the entry durable.
- A client write is answered only after its entry is applied, i.e. committed by a quorum that
  fsynced it (the leader counts itself only after its own fsync, see `Raft.on_persisted`).
- Group commit (in the pipeline): one write runs at a time; every Ready that arrives meanwhile
  joins the next one.
- Every wait has a timeout; an outcome we cannot know becomes `OutcomeUnknown`, never a guess.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from phalanx.errors import (
    Corrupt,
    NotLeader,
    OutcomeUnknown,
    PhalanxError,
    ProposalDropped,
    StorageError,
)
from phalanx.kv import Command, KVStateMachine, encode_command, expire_command_args
from phalanx.kv.codec import decode_fields
from phalanx.placement import command_keys
from phalanx.placement.shard import ShardMachine, SplitOff
from phalanx.raft import (
    ConfChange,
    ConfState,
    EntryType,
    GroupId,
    Index,
    InstallSnapshot,
    LogWrite,
    Message,
    NodeId,
    RaftConfig,
    RawNode,
    Ready,
    ReadyPipeline,
    Role,
    decode_conf_change,
)
from phalanx.server.config import NodeConfig
from phalanx.server.group_snapshots import GroupSnapshots
from phalanx.server.metrics import GroupMetrics
from phalanx.server.running_loop import LoopCache, Wake
from phalanx.server.snapshot_transfer import MetaOnlySnapshots
from phalanx.storage import AsyncLogStore

logger = logging.getLogger(__name__)

Reply = object


def group_label(group_id: int) -> str:
    """How log lines and events name a group: "placement driver" (group 0) or "shard N"."""
    return "placement driver" if group_id == 0 else f"shard {group_id}"


class StateMachine(Protocol):
    """What a group replicates: the KV store (data shards) or the cluster map (the driver)."""

    @property
    def key_count(self) -> int: ...

    def apply(self, index: int, data: bytes) -> object: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


@dataclass(slots=True)
class _PendingWrite:
    term: int
    future: asyncio.Future[Reply]
    started: float


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (a shared read's waiters, or a write's caller, may
    all have gone)."""
    if not future.cancelled():
        future.exception()


#: Entries that may write keys their arguments do not name (Lua scripts' undeclared keys).
_UNDECLARED_WRITERS = frozenset({b"EVAL", b"EVALSHA", b"FCALL"})


class RaftGroup(GroupSnapshots):
    """A Raft replica of one shard, driven by asyncio."""

    def __init__(
        self,
        group_id: GroupId,
        config: NodeConfig,
        store: AsyncLogStore,
        send: Callable[[list[tuple[GroupId, Message]]], None],
        metrics: GroupMetrics,
        machine: StateMachine | None = None,
    ) -> None:
        self.group_id = group_id
        self.config = config
        self.store = store
        # A write nobody awaits (the WAL's CONFIRM) that fails stops the replica too.
        store.on_failure = self.stop_on_storage_failure
        self._send = send
        #: The running loop, asked once (`running_loop`: no getpid() per request).
        self.loops = LoopCache()
        self.metrics = metrics
        self.machine: StateMachine = ShardMachine() if machine is None else machine
        #: The data shard's machine (None for the placement driver's group).
        self.shard: ShardMachine | None = (self.machine if isinstance(self.machine, ShardMachine)
                                           else None)
        self.kv: KVStateMachine | None = self.shard.kv if self.shard is not None else None
        if self.shard is not None:  # active-active keys: this cluster's region name
            self.shard.aa.region = config.aa_region
            self.shard.aa.outbox_max = config.aa_outbox_max
        #: Called (awaited) when a split entry is applied: (group, split-off, configuration).
        self.on_split: Callable[[RaftGroup, SplitOff, ConfState], Awaitable[None]] | None = None
        #: The keys clients on this node wait on (blocking pops, `front/blocking.py`), with
        #: how many wait on each, and whom to tell (group id, keys) when applied entries wrote
        #: one of them. Empty (nobody waits): the apply loop does no extra work.
        self.watched_keys: dict[bytes, int] = {}
        self.on_watched_write: Callable[[int, list[bytes]], None] | None = None
        snapshot = store.snapshot()
        if not snapshot.empty:
            self.machine.restore(snapshot.data)
        raft_config = RaftConfig(
            node_id=NodeId(config.id),
            election_ticks=config.election_ticks,
            election_spread_ticks=config.election_spread_ticks,
            heartbeat_ticks=config.heartbeat_ticks,
            pre_vote=config.pre_vote,
            check_quorum=config.check_quorum,
            lease_reads=config.lease_reads,
            read_rounds_in_flight=config.read_rounds_in_flight,
            adaptive_election_timeout=config.adaptive_election_timeout,
            applied=snapshot.meta.index,
            log_name=f"{config.id} [{group_label(group_id)}]",
            random=random.Random(),
        )
        # The core reads the snapshot's metadata only: followers pull the data in chunks
        # (server/snapshot_transfer.py), so no snapshot is ever read whole on the loop.
        self.raw = RawNode(raft_config, MetaOnlySnapshots(store.store))
        #: Wakes the Ready loop (an `asyncio.Event` without a getpid() per wait).
        self.wake = Wake(self.loops)
        self.wake.set()
        self.pending_writes: dict[int, _PendingWrite] = {}
        self.pending_reads: dict[bytes, asyncio.Future[int]] = {}
        #: When each pending read request was made (perf_counter), for `expire_pending`.
        self.read_started: dict[bytes, float] = {}
        #: Which leader each pending read request went to (this node itself on the leader):
        #: when that leader is gone, the request will never be answered, so it is failed at
        #: once (`_track_leader`), not after the request timeout.
        self.read_target: dict[bytes, str] = {}
        #: The read request new reads may still join (see `read_index_future`).
        self._open_read: asyncio.Future[int] | None = None
        self.apply_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.read_sequence = 0
        self.last_role = self.raw.role
        self.last_leader = self.raw.lead
        self.leader_changes = 0
        #: The leaderless clock (`leaderless_for`): when this replica last stopped knowing a
        #: leader (monotonic seconds), None while it knows one. Moved by `_track_leader` right
        #: after every input that can change the core's leader, not by the Ready loop: a
        #: router asking between the loss and the loop's next pass must read the truth.
        self.leader_lost_at: float | None = None
        #: The leader `_track_leader` saw last.
        self.tracked_leader = self.raw.lead
        #: True once this replica has known a leader (a replica that just started and has
        #: heard nobody yet says nothing about the shard's quorum).
        self.knew_leader = False
        #: True once this replica has applied up to an index its leader confirmed as
        #: committed (a ReadIndex round completed, `read_barrier`): from then on its state
        #: is no older than anything a client read from the shard before that round. A
        #: READONLY (stale) read is served from it only then (front/router.py), so a replica
        #: rebuilt empty or restarted never answers nil for a key that exists while it
        #: catches up.
        self.caught_up = False
        #: The commit index this replica knew when it opened (its hard state): until it has
        #: applied that far again it is loading (replaying its log; `loading`).
        self.boot_commit = self.raw.committed
        #: Commit latencies of the last writes proposed here (seconds), for the dashboard.
        self.recent_commits: deque[float] = deque(maxlen=512)
        #: Told of leader changes (kind, text), for the node's event list (dashboard).
        self.on_event: Callable[[str, str], None] | None = None
        #: The node's tick counter (shared by its groups), to align heartbeats across groups.
        self.tick_source: Callable[[], int] | None = None
        self.stopped = False
        self.fatal_error: str | None = None
        self._snapshotting = False
        #: The snapshot being written in slices (`_take_snapshot`), if any.
        self._snapshot_task: asyncio.Task[None] | None = None
        #: Bytes of entries applied (all time), and that count when the last snapshot was
        #: taken or installed: the byte trigger of the snapshot policy.
        self._log_bytes = 0
        self._log_bytes_at_snapshot = 0
        #: Entries up to here were released from memory (`_release_log`).
        self._released_to = 0
        #: The size of the last snapshot taken or installed (the policy's ratio).
        self._last_snapshot_bytes = len(snapshot.data)
        self.compacting = False
        #: Told when the leader offers this replica its snapshot (metadata only): the node's
        #: `SnapshotFetcher.offer` pulls it, then steps it in with its data.
        self.on_snapshot_offer: Callable[[RaftGroup, InstallSnapshot], None] | None = None
        #: Told (group id, message) when this replica offers its snapshot to a follower: the
        #: node's `SnapshotSource.pin` keeps the file readable while it is fetched.
        self.on_snapshot_sent: Callable[[int, InstallSnapshot], None] | None = None
        #: The Ready order with asynchronous, batched log writes (this object is its IO).
        self.pipeline = ReadyPipeline(self.raw, self)

    # -- inputs from other tasks ---------------------------------------------------------------
    def step(self, message: Message) -> None:
        """Hand a peer message to the core."""
        if self.stopped:
            return
        if isinstance(message, InstallSnapshot) and not message.snapshot.data \
                and self._snapshot_offered(message):
            return
        try:
            self.raw.step(message)
        except StorageError as error:
            # A log read failed while answering a peer (EIO, a bad checksum): stop as the
            # run loop does for a failed write; the rest of the cluster keeps the data.
            self._stop_on_storage_failure(error)
            return
        except PhalanxError:
            logger.exception("group %s: message %s from %s failed", self.group_id,
                             type(message).__name__, message.source)
            raise
        finally:
            self._track_leader()
        self.wake.set()

    def _snapshot_offered(self, message: InstallSnapshot) -> bool:
        """The leader offers its snapshot without its data (see server/snapshot_transfer.py):
        True when it is being fetched (the core sees it later, with its data); False when the
        core can take it as it is (it only acknowledges a snapshot its log already covers)."""
        meta = message.snapshot.meta
        if message.term < self.raw.term or meta.index == 0:
            return False  # stale or empty: the core ignores or refuses it as ever
        if meta.index <= self.raw.committed or self.raw.term_at(meta.index) == meta.term:
            return False
        if self.on_snapshot_offer is None:
            logger.warning("group %s: a snapshot offered without its data and no fetcher",
                           self.group_id)
            return True
        self.on_snapshot_offer(self, message)
        return True

    def tick(self, *, missed: bool = False) -> None:
        """Advance logical time by one tick (`missed`: delivered late after a stall of this
        process; it counts time but takes no timeout decision, see `Raft.tick`)."""
        if self.stopped:
            return
        self.raw.tick(missed=missed)
        self._track_leader()
        if self.raw.is_leader:
            self._release_log()  # (followers' acknowledgements arrive without an apply)
        self.wake.set()

    def leader_lost(self, node: str) -> None:
        """The connection to `node` reset; if it led us, campaign soon (fast failover)."""
        if self.stopped or not self.config.fast_failover:
            return
        spread = max(2, self.config.election_ticks // 5)
        if self.raw.leader_lost(NodeId(node), 1 + random.randrange(spread)):
            self._track_leader()
            self.wake.set()

    # -- state -----------------------------------------------------------------------------
    @property
    def role(self) -> Role:
        return self.raw.role

    @property
    def leader(self) -> str:
        return self.raw.lead

    def is_leader(self) -> bool:
        return self.raw.is_leader

    def owns(self, slot: int) -> bool:
        """True if this data shard owns `slot` in its applied state (always for the driver)."""
        return self.shard is None or self.shard.owns(slot)

    def leaderless_for(self) -> float:
        """Seconds since this replica last knew a leader (0 while it knows one, and until it
        has known one at all: a replica that just started has not heard its leader yet, which
        says nothing about the shard's quorum). Read from the core at the moment of asking,
        so it is right at every instant, whether or not the Ready loop has run since."""
        self._track_leader()
        lost_at = self.leader_lost_at
        return 0.0 if lost_at is None else time.monotonic() - lost_at

    def _track_leader(self) -> None:
        """Start the leaderless clock when the core has just stopped knowing a leader, stop it
        when it knows one; fail the read requests that went to a leader that is gone (cheap:
        called after every step and tick)."""
        lead = self.raw.lead
        if lead:
            self.knew_leader = True
            self.leader_lost_at = None
        elif self.knew_leader and self.leader_lost_at is None:
            self.leader_lost_at = time.monotonic()
        if lead != self.tracked_leader:
            gone = self.tracked_leader
            self.tracked_leader = lead
            if self.read_target:
                self._fail_reads_sent_to(gone, lead)

    def _fail_reads_sent_to(self, gone: str, lead: str) -> None:
        """The leader changed from `gone` to `lead` (or none): a ReadIndex request sent to
        another node than `lead` will never be answered (a dead leader answers nothing; a
        deposed one answers only its own term's reads, diss. §6.4). Nothing was read, so the
        reader is told at once to retry (`NotLeader`) instead of waiting for the request
        timeout (a GET on a follower used to hang until the client's timeout after a leader
        was killed)."""
        for context, target in list(self.read_target.items()):
            if target == lead:
                continue
            del self.read_target[context]
            self.read_started.pop(context, None)
            future = self.pending_reads.pop(context, None)
            if future is not None and not future.done():
                future.set_exception(NotLeader(lead or None, f"the read went to {target}, "
                                               f"which no longer leads (was {gone or 'none'})"))

    # -- client operations -----------------------------------------------------------------
    def propose_command(self, name: bytes, args: tuple[bytes, ...],
                        client: tuple[int, int, int] | None = None) -> asyncio.Future[Reply]:
        """Propose a write; the future resolves with the state machine's reply once applied.
        `client`: (client id, sequence, first unacknowledged sequence) of a client session
        (Raft dissertation §6.3: the state machine runs it once however often it is sent).

        Raises `NotLeader` or `ProposalDropped` at once (the write was certainly not made).
        """
        command = Command(
            name=name, args=args, now_ms=int(time.time() * 1000),
            client_id=client[0] if client else None, sequence=client[1] if client else None,
            first_unacked=client[2] if client else None,
        )
        return self.propose_data(encode_command(command))

    def propose_data(self, data: bytes) -> asyncio.Future[Reply]:
        """Propose one opaque entry; like `propose_command` for any state machine."""
        index, term = self.raw.propose(data)
        future: asyncio.Future[Reply] = self.loops.get().create_future()
        # A write whose caller has gone (its client timed out or disconnected) may still be
        # failed later (OutcomeUnknown at a step-down): mark the exception retrieved so asyncio
        # does not log "Future exception was never retrieved" as an ERROR. A caller that awaits
        # still gets it.
        future.add_done_callback(_retrieve)
        self.pending_writes[index] = _PendingWrite(term, future, time.perf_counter())
        self.metrics.proposed()
        self.wake.set()
        return future

    def staleness_ms(self) -> int:
        """How old this replica's view may be: 0 on the leader, else the time since a leader
        was last heard (the election timer restarts at every PreVote round, so the time
        without any leader counts too)."""
        raw = self.raw
        if raw.is_leader:
            return 0
        return int(max(raw.election_elapsed * self.config.tick_ms,
                       self.leaderless_for() * 1000))

    def fail_pending(self, why: str) -> int:
        """Fail every pending write with OutcomeUnknown (it may still commit later)."""
        failed = 0
        for index, pending in list(self.pending_writes.items()):
            if not pending.future.done():
                pending.future.set_exception(OutcomeUnknown(
                    f"{why}; the write (log index {index}) may or may not be applied"))
                failed += 1
        self.pending_writes.clear()
        return failed

    def expire_pending(self, max_age_s: float) -> int:
        """Fail writes that waited longer than `max_age_s` with `OutcomeUnknown`.

        One sweep (called periodically) replaces a timer per request on the hot path.
        """
        horizon = time.perf_counter() - max_age_s
        expired = [index for index, pending in self.pending_writes.items()
                   if pending.started < horizon]
        for index in expired:
            pending = self.pending_writes.pop(index)
            if not pending.future.done():
                pending.future.set_exception(OutcomeUnknown(
                    f"the write (log index {index}) was proposed but not confirmed within "
                    f"{max_age_s:.1f} s"))
        stale_reads = [context for context, started in self.read_started.items()
                       if started < horizon]
        for context in stale_reads:
            del self.read_started[context]
            self.read_target.pop(context, None)
            read_future = self.pending_reads.pop(context, None)
            if read_future is not None and not read_future.done():
                # A follower's request to a leader that died, or a round that never
                # completed: nothing was read, so the client may simply retry.
                read_future.set_exception(NotLeader(
                    self.leader or None, f"no read confirmation within {max_age_s:.1f} s"))
        return len(expired) + len(stale_reads)

    def loading(self) -> bool:
        """Is this replica still replaying what it had committed before it (re)started? A
        read that cannot be served in time then answers -LOADING (front/router.py), as
        Redis while it loads its dataset."""
        return self.raw.applied < self.boot_commit

    def lease_read_ready(self) -> bool:
        """True if a linearizable read may be served from the local state right now, with no
        message and no wait: this replica leads, holds its lease (`lease_reads`, diss. §6.4.1),
        and has applied everything committed."""
        index = self.raw.lease_read_index()
        return index is not None and self.raw.applied >= index

    def read_index_future(self) -> asyncio.Future[int]:
        """A future of the index at which a linearizable read arriving now may be served
        (ReadIndex, diss. §6.4): once the state machine has applied it, the local state is
        fresh enough. Raises `NotLeader` at once if no leader is known.

        Batched: every read that arrives before the Ready loop next runs shares one request.
        That is safe because the request's leadership check (the heartbeat round on the
        leader, or the ReadIndexRequest a follower sends) leaves only when the loop runs, i.e.
        after all of those reads arrived, and the index is the commit index at the first of
        them, which is no later than at any of them (we serve from the state applied at reply
        time, at or after that index). The future is shared: await it through `shield`.
        """
        shared = self._open_read
        if shared is not None and not shared.done():
            return shared
        self.read_sequence += 1
        context = self.read_sequence.to_bytes(8, "big")
        future: asyncio.Future[int] = self.loops.get().create_future()
        self.raw.read_index(context)  # NotLeader: nothing registered
        self.pending_reads[context] = future
        self.read_started[context] = time.perf_counter()
        self.read_target[context] = self.raw.lead
        self._open_read = future
        future.add_done_callback(_retrieve)
        self.wake.set()
        return future

    async def read_barrier(self, timeout: float) -> None:
        """Wait until a linearizable read may be served locally (ReadIndex, diss. §6.4)."""
        if self.lease_read_ready():
            self.caught_up = True
            return
        started = time.perf_counter()
        future = self.read_index_future()
        index = await asyncio.wait_for(asyncio.shield(future), timeout)
        await self.wait_applied(index, timeout)
        self.caught_up = True
        self.metrics.observe_read_index(time.perf_counter() - started)

    async def wait_applied(self, index: int, timeout: float) -> None:
        """Wait until the state machine has applied `index`."""
        if self.raw.applied >= index:
            return
        future: asyncio.Future[None] = self.loops.get().create_future()
        self.apply_waiters.append((index, future))
        await asyncio.wait_for(future, timeout)

    def transfer_leadership(self, target: str) -> None:
        """Start a leadership transfer (diss. §3.10)."""
        self.raw.transfer_leader(NodeId(target))
        self._track_leader()
        self.wake.set()

    def propose_conf_change(self, change: ConfChange) -> None:
        """Propose a membership change."""
        self.raw.propose_conf_change(change)
        self.wake.set()

    # -- the Ready loop ----------------------------------------------------------------------
    async def run(self) -> None:
        """The owner task: apply the Readys the pipeline hands out until stopped."""
        try:
            while not self.stopped:
                await self.wake.wait()
                self.wake.clear()
                processed = 0
                while not self.stopped:
                    # Reads arriving from now on need a request sent after them.
                    self._open_read = None
                    rd = self.pipeline.next_ready()
                    if rd is None:
                        break
                    await self._apply_ready(rd)
                    processed += 1
                    if processed % 64 == 0:
                        await asyncio.sleep(0)
                self._observe_role()
                if not self.pipeline.holding:
                    self._maybe_start_snapshot()
        except StorageError as error:
            # The disk failed (full, IO error): stop this replica rather than guess; the rest
            # of the cluster keeps the data.
            self._stop_on_storage_failure(error)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # A bug or a broken invariant: this replica stops, loudly (readiness and /status
            # say why), instead of a task dying in silence while the node looks healthy.
            self.fatal_error = f"replica failed: {type(error).__name__}: {error}"
            logger.exception("group %s stopped: %s", self.group_id, self.fatal_error)
            self.stopped = True
            self._fail_everything(error)

    async def _apply_ready(self, rd: Ready) -> None:
        """Apply one Ready the pipeline hands out (`phalanx.raft.pipeline`): restore its
        snapshot (already durable), apply its committed entries and answer their writers,
        answer its read states, then tell the pipeline."""
        group = self.group_id
        if rd.snapshot is not None:
            await self._restore(rd.snapshot.data)
            logger.info("group %s restored snapshot at index %s", group, rd.snapshot.meta.index)
            for index in [i for i in self.pending_writes if i <= rd.snapshot.meta.index]:
                replaced = self.pending_writes.pop(index)
                if not replaced.future.done():
                    replaced.future.set_exception(OutcomeUnknown(
                        "replaced by a snapshot before it could be confirmed"))
        apply_started = time.perf_counter()
        watched = self.watched_keys
        touched: list[bytes] | None = [] if watched or rd.snapshot is not None else None
        if touched is not None and rd.snapshot is not None:
            touched.extend(watched)
        for entry in rd.committed_entries:
            reply: Reply = None
            if entry.type is EntryType.CONF_CHANGE:
                conf = self.raw.apply_conf_change(decode_conf_change(entry.data),
                                                  entry.index)
                self._track_leader()
                logger.info("group %s configuration: voters=%s learners=%s", group,
                            ",".join(conf.voters), ",".join(conf.learners))
            elif entry.data:
                self._log_bytes += len(entry.data)
                reply = self.machine.apply(entry.index, entry.data)
                if self.shard is not None and self.shard.divergence is not None:
                    # The consistency checker found this replica's data differs from the
                    # leader's at the same index: never serve or acknowledge from it again
                    # (server/consistency.py; it is rebuilt from its healthy peers).
                    raise Corrupt(f"replica diverged: {self.shard.divergence}")
                if touched is not None:
                    touched.extend(self._watched_in(entry.data))
                if self.shard is not None and self.shard.split_offs:
                    for split_off in self.shard.take_split_offs():
                        if self.on_split is not None:
                            await self.on_split(self, split_off, self.raw.conf)
            pending = self.pending_writes.pop(entry.index, None)
            if pending is not None and not pending.future.done():
                if pending.term == entry.term:
                    pending.future.set_result(reply)
                    elapsed = time.perf_counter() - pending.started
                    self.metrics.observe_commit(elapsed)
                    self.recent_commits.append(elapsed)
                else:
                    # Another leader's entry took this index: ours was never committed (§5.3).
                    pending.future.set_exception(ProposalDropped(
                        "leadership changed before the write committed; it was not applied"))
        if rd.committed_entries:
            self.metrics.observe_apply_batch(len(rd.committed_entries),
                                             time.perf_counter() - apply_started)
        for state in rd.read_states:
            self.read_started.pop(state.context, None)
            self.read_target.pop(state.context, None)
            read_future = self.pending_reads.pop(state.context, None)
            if read_future is None or read_future.done():
                continue
            if state.ok:
                read_future.set_result(state.index)
            else:
                read_future.set_exception(NotLeader(self.leader or None,
                                                    "leadership changed during the read"))
        self.pipeline.applied(rd)
        self._release_log()
        if touched and self.on_watched_write is not None:
            self.on_watched_write(self.group_id, touched)
        applied = self.raw.applied
        if self.apply_waiters:
            remaining = []
            for index, future in self.apply_waiters:
                if future.done():
                    continue
                if index <= applied:
                    future.set_result(None)
                else:
                    remaining.append((index, future))
            self.apply_waiters = remaining
        if rd.soft_state is not None:
            self._observe_role()

    def _watched_in(self, data: bytes) -> list[bytes]:
        """The watched keys an applied entry may have written: those among its keys; every
        watched key for an entry whose keys are not known (keyless writes such as FLUSHALL,
        split and merge entries, anything not a plain command): a spurious wake-up costs a
        waiter one local look, a missed one would cost it the periodic re-check."""
        watched = self.watched_keys
        try:
            name, args = decode_fields(data)[:2]
        except PhalanxError:
            return list(watched)
        keys = command_keys(name, args)
        if not keys or name.upper() in _UNDECLARED_WRITERS:
            # (a script may write keys it did not declare: every watched key may have changed)
            return list(watched)
        return [key for key in keys if key in watched]

    # -- the pipeline's IO (phalanx.raft.pipeline.ReadyIO) ----------------------------------
    def send(self, messages: Sequence[Message]) -> None:
        """Hand the pipeline's messages to the transport."""
        group = self.group_id
        self._send([(group, message) for message in messages])
        for message in messages:
            if isinstance(message, InstallSnapshot):
                self.metrics.snapshot_sent()
                if self.on_snapshot_sent is not None:
                    self.on_snapshot_sent(group, message)

    def start_write(self, write: LogWrite) -> None:
        """Run one log write on the store's writer thread; the pipeline hears when it is
        durable (one write runs at a time, so the event loop never waits for the disk)."""
        started = time.perf_counter()
        future = asyncio.ensure_future(
            self.store.persist(write.entries, write.hard_state, write.snapshot),
            loop=self.loops.get())
        future.add_done_callback(
            lambda done: self._write_done(done, started, len(write.entries)))

    def _write_done(self, write: asyncio.Future[None], started: float, entries: int) -> None:
        if self.stopped or write.cancelled():
            return
        error = write.exception()
        if error is not None:
            # The disk failed (full, IO error): stop this replica rather than guess; the rest
            # of the cluster keeps the data (as `run` does for a synchronous failure).
            self._stop_on_storage_failure(error if isinstance(error, Exception)
                                          else StorageError(repr(error)))
            self.wake.set()
            return
        self.metrics.observe_fsync(time.perf_counter() - started, entries)
        self.pipeline.write_done()
        self.wake.set()

    def stop_on_storage_failure(self, error: Exception) -> None:
        """Stop this replica: its disk failed or lied (the background scrub found it)."""
        if not self.stopped:
            self._stop_on_storage_failure(error)

    def _stop_on_storage_failure(self, error: Exception) -> None:
        self.fatal_error = f"storage failure: {error}"
        logger.error("group %s stopped: %s", self.group_id, self.fatal_error)
        self.stopped = True
        self._fail_everything(error)

    def _observe_role(self) -> None:
        # A deposed leader's pending writes stay pending on purpose: each either turns up in the
        # log (applied with our term: success; another term took its index: certainly dropped)
        # or its client times out with OutcomeUnknown. Failing them early would be a guess.
        raft = self.raw
        self._track_leader()
        if raft.role is not self.last_role or raft.lead != self.last_leader:
            if raft.lead != self.last_leader and raft.lead:
                self.leader_changes += 1
                if self.on_event is not None:
                    self.on_event("leader", f"{group_label(self.group_id)}: {raft.lead} leads "
                                            f"at term {raft.term} "
                                            f"(was {self.last_leader or 'none'})")
                self.metrics.leader_changed()
            if raft.role is Role.LEADER and self.last_role is not Role.LEADER:
                self.metrics.election_won()
                if self.tick_source is not None:
                    self.raw.align_heartbeats(self.tick_source())
            if raft.role in (Role.CANDIDATE, Role.PRE_CANDIDATE) and self.last_role not in (
                Role.CANDIDATE, Role.PRE_CANDIDATE
            ):
                self.metrics.election_started()
            self.last_role = raft.role
            self.last_leader = raft.lead
        self.metrics.set_term(raft.term)
        self.metrics.set_leader(raft.role is Role.LEADER)
        self.metrics.set_commit_index(raft.committed)
        self.metrics.set_applied_index(raft.applied)

    def _fail_everything(self, error: Exception) -> None:
        for pending in self.pending_writes.values():
            if not pending.future.done():
                pending.future.set_exception(OutcomeUnknown(str(error)))
        self.pending_writes.clear()
        for future in self.pending_reads.values():
            if not future.done():
                future.set_exception(StorageError(str(error)))
        self.pending_reads.clear()
        self.read_started.clear()
        self.read_target.clear()
        for _, waiter in self.apply_waiters:
            if not waiter.done():
                waiter.set_exception(StorageError(str(error)))
        self.apply_waiters.clear()

    def needs_snapshot_for_new_member(self) -> bool:
        """True while the log still starts at index 1.

        A replica created after bootstrap starts empty, without the group's bootstrap
        configuration (which lives in each founding member's store, not in the log). Replaying
        the log from index 1 would give it a wrong configuration; a snapshot carries the right
        one (diss. §4.2.1 / §5: new servers catch up from a snapshot). So before a new member is
        added, the leader compacts the log's first entry away: a member that needs it gets the
        snapshot instead.
        """
        return self.store.first_index() <= 1

    async def compact_for_new_member(self) -> None:
        """Snapshot at the applied index and compact entry 1 away (see above)."""
        try:
            if self.raw.applied < 1 or self.stopped:
                return
            await self._snapshot_now()
            if self.store.first_index() <= 1 and self.store.snapshot_meta().index >= 1:
                await self.store.compact(Index(1))
        except StorageError as error:
            # The disk failed (the snapshot, or the compaction): a storage failure of this
            # replica like any other, never a warning while it keeps running.
            self.stop_on_storage_failure(error)
        finally:
            self.compacting = False

    async def save_snapshot(self) -> None:
        """A snapshot at the applied index now (BGSAVE), taken and compacted as the snapshot
        policy takes one; nothing when the last snapshot is already at the applied index."""
        if not self.stopped:
            await self._snapshot_now()

    # -- expiry (the leader proposes deletions on replicated time; docs/architecture.md) -----
    def propose_expirations(self) -> int:
        """On the leader, propose deletion of keys whose TTL passed; returns how many."""
        if not self.is_leader() or self.kv is None:
            return 0
        now_ms = int(time.time() * 1000)
        expired = self.kv.expired_keys(now_ms, self.config.expire_batch_keys)
        proposed = 0
        for key, expire_at in expired:
            name, args = expire_command_args(key, expire_at)
            try:
                self.raw.propose(encode_command(Command(name=name, args=tuple(args),
                                                        now_ms=now_ms)))
            except (NotLeader, ProposalDropped):
                break
            proposed += 1
        if proposed:
            self.wake.set()
        return proposed

    async def stop(self) -> None:
        """Stop the loop and fail every waiter."""
        self.stopped = True
        self.wake.set()
        self._fail_everything(OutcomeUnknown("the node is shutting down"))



__all__ = ["RaftGroup"]

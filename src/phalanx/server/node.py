"""The node process: many Raft groups (the placement driver and data shards), one transport,
the RESP and admin servers, and the controllers that keep placement healthy.

Groups on a node:
- Group 0 is the placement driver (`phalanx.placement.MapMachine`): the replicated cluster map
  (nodes, labels, liveness, shards, desired replicas, reported leaders). Its voters are
  `map.meta_voters` (3 or 5 nodes across zones); every other node holds a learner replica, so
  every node has the map locally, applied in log order, with no extra protocol.
- Groups 1..N are data shards (`phalanx.kv`), created where the map places a replica.

Controllers (DESIGN.md "Self-healing"; the Kubernetes pattern: the map is the desired state and
each actor moves the actual state toward it, so a leader change mid-way simply resumes):
- The driver (only on group 0's leader): node liveness from peer traffic (any message from a
  node is a heartbeat; the driver's own Raft heartbeats reach every node as a learner or voter),
  `dead_after_ms` of silence declares a node dead, then `placement.plan` decides replacements,
  rebalancing and leader spreading as map ops committed through group 0.
- Every group's leader reconciles its own membership with the map: add a missing replica as a
  learner (it catches up, by snapshot if need be), promote it once caught up, then remove
  replicas the map no longer wants; one single-server change at a time (diss. §4.1). It reports
  leader, term and configuration back to the map, and hands leadership to the map's preferred
  leader (§3.10 TimeoutNow) to spread leaders.
- Every node creates the replicas the map gives it and deletes those it no longer has, only once
  its copy of the map is caught up and the shard's reported configuration no longer lists it.

Rules of this file:
- Composition only: the protocol lives in `phalanx.raft`, the data model in `phalanx.kv`,
  placement decisions in `phalanx.placement`; this file wires them and owns their lifetimes.
- Every background task is created here and cancelled in `stop()`; nothing outlives the node.
- The ticker follows the wall clock: after a stall (GC, SIGSTOP) it delivers every missed tick,
  so timeouts and leases measure real time, never less.
- The data path never waits for the driver: routing uses the local map copy and each group's
  own leader; a driver without quorum only pauses healing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import time
from pathlib import Path

from phalanx import __version__
from phalanx.errors import ConfigError, NotLeader, PhalanxError, ProposalDropped
from phalanx.kv import Command, encode_command
from phalanx.placement import ClusterMap, MapMachine, NodeInfo, ShardInfo, encode_op
from phalanx.placement.planner import drain_done, initial_map, plan
from phalanx.placement.shard import (
    ABSORB_COMMAND,
    FREEZE_COMMAND,
    SPLIT_COMMAND,
    SPLIT_SNAPSHOT_INDEX,
    ShardMachine,
    SplitOff,
    split_command,
)
from phalanx.raft import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    GroupId,
    Index,
    Message,
    NodeId,
    Role,
    Snapshot,
    SnapshotMeta,
    Term,
)
from phalanx.raft.progress import ProgressState
from phalanx.resp import ErrorReply
from phalanx.server.admin import AdminServer
from phalanx.server.config import NodeConfig, parse_address
from phalanx.server.front.listener import RespServer
from phalanx.server.group import RaftGroup
from phalanx.server.metrics import NodeMetrics
from phalanx.server.peer_link import LeaderLink, internal_signature
from phalanx.storage import AsyncLogStore, open_log_store
from phalanx.transport.faults import FaultRules
from phalanx.transport.tcp import TcpTransport

logger = logging.getLogger(__name__)

#: A follower whose applied index trails the commit index by more than this is not "caught up".
READY_LAG_ENTRIES = 1000
#: The placement driver's group.
META_GROUP = GroupId(0)
#: How often the controllers run.
CONTROL_INTERVAL_S = 0.1
#: A learner is promoted once its log is within this many entries of the leader's.
CATCH_UP_ENTRIES = 10
#: A voter the map reports as removed deletes its replica after hearing no leader this long.
REMOVED_GRACE_S = 10.0
#: Time between two leadership hand-overs to a preferred leader of one shard.
PREFERRED_TRANSFER_GAP_S = 5.0


class Node:
    """A phalanx node: serves RESP clients, replicates through Raft, answers health checks."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        self.metrics = NodeMetrics(config.id)
        self.node_id = config.id
        self.zone = config.me.zone
        self.region = config.me.region
        self.data_dir = Path(config.data_dir)
        self.fault_rules = FaultRules()
        me = config.me
        peer_host, peer_port = parse_address(me.peer, "peer")
        self.transport = TcpTransport(
            config.id,
            (peer_host, peer_port),
            {p.id: parse_address(p.peer, f"peer {p.id}") for p in config.peers if p.id != config.id},
            cluster_id=config.cluster,
            secret=config.cluster_secret.encode() or None,
            on_messages=self._on_messages,
            on_peer_lost=self._on_peer_lost,
            fault_rules=self.fault_rules,
            source_host=peer_host,
        )
        self.running = False
        self.tick_count = 0
        self.groups: dict[int, RaftGroup] = {}
        self.group_tasks: dict[int, asyncio.Task[None]] = {}
        self.stores: dict[int, AsyncLogStore] = {}
        # The placement driver's group. A bootstrap node computes the initial map from the
        # config (every bootstrap node computes the same one); a joining node starts empty
        # and receives the map from the driver's leader (a snapshot).
        fresh = not (self.data_dir / "groups" / "0").exists()
        bootstrap_nodes = [NodeInfo(id=p.id, peer=p.peer, resp=p.resp, admin=p.admin,
                                    zone=p.zone, region=p.region) for p in config.peers]
        if config.join:
            initial = ClusterMap(version=0, survival_goal=config.survival_goal,
                                 replication_factor=max(config.replication_factor, 0),
                                 nodes={}, shards={}, meta_voters=())
            meta_conf = ConfState()
        else:
            initial = initial_map(bootstrap_nodes, config.shards, config.survival_goal,
                                  config.replication_factor)
            meta_conf = ConfState(
                voters=tuple(NodeId(n) for n in initial.meta_voters),
                learners=tuple(NodeId(n.id) for n in bootstrap_nodes
                               if n.id not in initial.meta_voters))
        self.initial = initial
        self.map_machine = MapMachine(initial)
        self._open_group(META_GROUP, meta_conf, self.map_machine)
        # Data shards: those already on disk, and at first boot those the initial map gives us.
        for path in sorted((self.data_dir / "groups").glob("*")) if not fresh else []:
            if path.name.isdigit() and int(path.name) != 0:
                self._open_group(GroupId(int(path.name)), ConfState())
        #: Fresh shards this node is the preferred leader of: it campaigns first at bootstrap, so
        #: leaders start spread and no transfer follows the first election.
        self.first_campaigns: list[int] = []
        if fresh and not config.join:
            for shard in initial.shards.values():
                if config.id in shard.replicas:
                    self._open_group(GroupId(shard.id), ConfState(
                        voters=tuple(NodeId(n) for n in shard.replicas)))
                    if shard.preferred_leader == config.id:
                        self.first_campaigns.append(shard.id)
        resp_host, resp_port = parse_address(me.resp, "resp")
        self.resp = RespServer(self, resp_host, resp_port)
        self.admin: AdminServer | None = None
        if me.admin:
            admin_host, admin_port = parse_address(me.admin, "admin")
            self.admin = AdminServer(self, self.metrics, admin_host, admin_port,
                                     token=config.admin_token,
                                     enable_fault_injection=config.enable_fault_injection)
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()
        self.running = False
        # Driver state (meaningful on group 0's leader only).
        self.last_heard: dict[str, float] = {}
        self.driver_since: float | None = None
        self.driver_busy = False
        # Per-group controller state.
        self.last_report: dict[int, tuple[object, ...]] = {}
        self.last_report_at: dict[int, float] = {}
        self.last_transfer_at: dict[int, float] = {}
        self.leader_since: dict[int, float] = {}
        self.meta_link: LeaderLink | None = None
        self.decommissioned_logged = False
        self.spof_cache: tuple[int, list[object]] = (-1, [])
        self.peer_totals: dict[tuple[str, str], int] = {}
        self.events: list[dict[str, object]] = []

    # -- groups ------------------------------------------------------------------------------
    def _open_group(self, group_id: GroupId, bootstrap: ConfState,
                    machine: MapMachine | None = None) -> RaftGroup:
        store = AsyncLogStore(open_log_store(self.data_dir / "groups" / str(group_id), bootstrap,
                                             self.config.storage_engine))
        return self._start_group(group_id, store, machine)

    def _start_group(self, group_id: GroupId, store: AsyncLogStore,
                     machine: MapMachine | None = None) -> RaftGroup:
        name = "meta" if group_id == META_GROUP else str(group_id)
        state_machine: MapMachine | ShardMachine
        if machine is not None:
            state_machine = machine
        else:
            # The slots a founding replica owns before any snapshot: the initial map's (later
            # replicas and split-off shards always start from a snapshot, which carries them).
            founding = self.initial.shards.get(group_id)
            state_machine = ShardMachine(founding.slots if founding is not None else ())
        group = RaftGroup(group_id, self.config, store, self.transport.send_many,
                          self.metrics.group(name), machine=state_machine)
        group.on_split = self._on_split
        group.tick_source = lambda: self.tick_count
        group.on_event = self._event
        self.groups[group_id] = group
        self.stores[group_id] = store
        if self.running:
            self.group_tasks[group_id] = asyncio.create_task(group.run(),
                                                             name=f"raft-group-{group_id}")
        logger.info("%s opened replica of %s", self.node_id,
                    "the placement driver" if group_id == META_GROUP else f"shard {group_id}")
        return group

    async def _close_group(self, group_id: int, *, delete: bool) -> None:
        group = self.groups.pop(group_id, None)
        store = self.stores.pop(group_id, None)
        task = self.group_tasks.pop(group_id, None)
        if group is not None:
            await group.stop()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if store is not None:
            await store.close()
        if delete:
            shutil.rmtree(self.data_dir / "groups" / str(group_id), ignore_errors=True)
            self.metrics.remove_group(str(group_id))
            self._event("replica-removed", f"{self.node_id} deleted its replica of shard "
                                           f"{group_id}")

    @property
    def meta(self) -> RaftGroup:
        return self.groups[META_GROUP]

    @property
    def cluster_map(self) -> ClusterMap:
        return self.map_machine.map

    def data_groups(self) -> dict[int, RaftGroup]:
        return {gid: g for gid, g in self.groups.items() if gid != META_GROUP}

    @property
    def group(self) -> RaftGroup:
        """The default data group: the lowest-numbered shard this node hosts (single-shard
        clusters: the only one). Raises if this node hosts no data replica."""
        groups = self.data_groups()
        if not groups:
            raise ConfigError(f"node {self.node_id} hosts no shard replica")
        return groups[min(groups)]

    def local_group(self, shard_id: int) -> RaftGroup | None:
        """This node's replica of `shard_id` if it is a member of that group."""
        group = self.groups.get(shard_id)
        if group is None or group.stopped:
            return None
        conf = group.raw.raft.conf
        me = NodeId(self.node_id)
        if me in conf.voters or me in conf.learners or me in conf.voters_outgoing:
            return group
        return None

    def node_info(self, node_id: str) -> NodeInfo | None:
        info = self.cluster_map.nodes.get(node_id)
        if info is not None:
            return info
        peer = self.config.peer(node_id)
        if peer is None:
            return None
        return NodeInfo(id=peer.id, peer=peer.peer, resp=peer.resp, admin=peer.admin,
                        zone=peer.zone, region=peer.region)

    def resp_address(self, node_id: str) -> tuple[str, int] | None:
        info = self.node_info(node_id) if node_id else None
        return parse_address(info.resp, f"nodes.{node_id}.resp") if info else None

    def shard_leader(self, shard: ShardInfo) -> str:
        """Best knowledge of a shard's leader ("" = none known): the local replica's own view
        when this node holds one (it knows when there is no leader), else the map's report,
        unless that node is dead or unreachable from here (a stale hint is worse than none:
        -MOVED to a dead node, CLUSTER SLOTS naming it)."""
        group = self.local_group(shard.id)
        if group is not None:
            return group.leader
        hint = shard.leader
        if not hint or hint == self.node_id:
            return hint
        info = self.cluster_map.nodes.get(hint)
        if info is None or info.state == "dead" or not self.transport.is_connected(hint):
            return ""
        return hint

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every listener and start the background tasks."""
        await self.transport.start()
        self.running = True
        for group_id, group in self.groups.items():
            self.group_tasks[group_id] = asyncio.create_task(group.run(),
                                                             name=f"raft-group-{group_id}")
        self.tasks.append(asyncio.create_task(self._ticker(), name="ticker"))
        self.tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        self.tasks.append(asyncio.create_task(self._control(), name="control"))
        if self.config.join:
            self.tasks.append(asyncio.create_task(self._join(), name="join"))
        if self.first_campaigns:
            self.tasks.append(asyncio.create_task(self._first_campaign(), name="first-campaign"))
        await self.resp.start()
        if self.admin is not None:
            await self.admin.start()
        logger.info("node %s (zone %s) serving RESP on %s, admin on %s, peers on %s",
                    self.config.id, self.zone, self.config.me.resp, self.config.me.admin or "-",
                    self.config.me.peer)

    async def _first_campaign(self) -> None:
        # Give the peers a moment to come up, then campaign (PreVote first) unless a leader
        # already exists; the others wait a full randomized election timeout.
        await asyncio.sleep(min(0.3, self.config.election_ticks * self.config.tick_ms / 2000))
        for group_id in self.first_campaigns:
            group = self.groups.get(group_id)
            if group is not None and not group.leader and not group.stopped:
                group.raw.campaign()
                group.wake.set()

    async def stop(self) -> None:
        """Stop serving and release every resource."""
        self.stopping.set()
        await self.resp.stop()
        if self.admin is not None:
            await self.admin.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.meta_link is not None:
            self.meta_link.close()
        for group_id in list(self.groups):
            await self._close_group(group_id, delete=False)
        await self.transport.stop()

    # -- background tasks --------------------------------------------------------------------
    async def _ticker(self) -> None:
        interval = self.config.tick_ms / 1000
        next_tick = time.monotonic() + interval
        while True:
            delay = next_tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            due = int((now - next_tick) / interval) + 1
            groups = list(self.groups.values())
            for _ in range(due):
                self.tick_count += 1
                for group in groups:
                    group.tick()
            next_tick += due * interval

    async def _housekeeping(self) -> None:
        interval = self.config.expire_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                for group in list(self.groups.values()):
                    group.propose_expirations()
                    group.expire_pending(self.config.request_timeout_ms / 1000)
                    if group.leaderless_for() > self.resp.no_quorum_after_s:
                        # The shard lost its quorum: do not make clients wait out the whole
                        # request timeout for writes it may never confirm.
                        group.fail_pending("the shard lost its quorum (no leader for "
                                           f"{group.leaderless_for():.1f} s)")
                self._update_gauges()
            except PhalanxError:
                logger.exception("housekeeping failed")

    def _update_gauges(self) -> None:
        for group in list(self.groups.values()):
            group_metrics = group.metrics
            group_metrics.set_keys(group.machine.key_count)
            raft = group.raw.raft
            if raft.role is Role.LEADER:
                last = raft.log.last_index()
                for node_id, progress in raft.progress.items():
                    if node_id != self.config.id:
                        group_metrics.set_replication_lag(node_id, last - progress.match)
        stats = self.transport.stats()
        peers = stats.get("peers", {})
        if isinstance(peers, dict):
            for peer_id, peer_stats in peers.items():
                if isinstance(peer_stats, dict):
                    self.metrics.set_peer_connected(peer_id, bool(peer_stats.get("connected")))
                    # The transport keeps running totals; the Prometheus counters get deltas.
                    for field, reason in (("messages_sent", ""), ("dropped_queue_full",
                                                                  "queue_full"),
                                          ("dropped_fault", "fault"),
                                          ("dropped_oversize", "too_large")):
                        total = peer_stats.get(field)
                        if not isinstance(total, int):
                            continue
                        seen = self.peer_totals.get((peer_id, field), 0)
                        if total > seen:
                            if reason:
                                self.metrics.peer_message_dropped(peer_id, reason, total - seen)
                            else:
                                self.metrics.peer_message_sent(peer_id, total - seen)
                        self.peer_totals[(peer_id, field)] = total

    async def _control(self) -> None:
        """Run the controllers (see the module docstring) every CONTROL_INTERVAL_S."""
        while True:
            await asyncio.sleep(CONTROL_INTERVAL_S)
            try:
                self._sync_peers()
                for group_id, group in list(self.groups.items()):
                    if group.needs_snapshot_for_new_member() and not group.stopped and \
                            group.raw.raft.log.applied >= 1 and not group.compacting:
                        # Every replica compacts its first entry away once: whichever node
                        # leads later, a new member gets a snapshot (with the configuration),
                        # never a replay from index 1 (see RaftGroup).
                        group.compacting = True
                        asyncio.get_running_loop().create_task(group.compact_for_new_member())
                    if group.is_leader() and not group.stopped:
                        self._reconcile_membership(group_id, group)
                        await self._report(group_id, group)
                if self.meta.is_leader():
                    await self._drive()
                else:
                    self.driver_since = None
                await self._sync_replicas()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: control loop failed", self.node_id)

    def _sync_peers(self) -> None:
        """Teach the transport every node of the map (nodes that joined since we started)."""
        known = set(self.transport.peer_ids())
        for info in self.cluster_map.nodes.values():
            if info.id == self.node_id:
                continue
            host, port = parse_address(info.peer, f"nodes.{info.id}.peer")
            if info.id not in known:
                self.transport.set_peer(info.id, host, port)

    def _meta_caught_up(self) -> bool:
        """Our copy of the map is usable for decisions: a leader is known, all applied."""
        meta = self.meta
        raft = meta.raw.raft
        return bool(raft.lead) and raft.log.applied >= raft.log.committed and \
            self.cluster_map.version > 0

    # -- membership reconciliation (on each group's leader) ----------------------------------
    def _desired(self, group_id: int) -> tuple[set[str], set[str]] | None:
        """(voters, learners) the map wants for a group, or None if the map does not know it."""
        cmap = self.cluster_map
        if group_id == META_GROUP:
            if not cmap.meta_voters:
                return None
            voters = set(cmap.meta_voters)
            # Every node of the map follows the map, a decommissioned one too until it is
            # drained and removed: it must see its replicas move away to delete them.
            learners = {n.id for n in cmap.nodes.values() if n.id not in voters}
            return voters, learners
        shard = cmap.shards.get(group_id)
        if shard is None or not shard.replicas:
            return None
        return set(shard.replicas), set()

    def _reconcile_membership(self, group_id: int, group: RaftGroup) -> None:
        desired = self._desired(group_id)
        if desired is None or not self._meta_caught_up():
            return
        want_voters, want_learners = desired
        raft = group.raw.raft
        conf = raft.conf
        if conf.voters_outgoing or raft.pending_conf_index > raft.log.applied:
            return  # one change at a time; a joint configuration leaves by itself
        voters, learners = set(conf.voters), set(conf.learners)
        last = raft.log.last_index()
        change: ConfChangeSingle | None = None
        why = ""
        # 1. Add what is missing, as a learner first (it catches up without counting, §4.2.1).
        missing = sorted((want_voters | want_learners) - voters - learners)
        if missing and group.needs_snapshot_for_new_member():
            asyncio.get_running_loop().create_task(group.compact_for_new_member())
            return
        if missing:
            change = ConfChangeSingle(ConfChangeType.ADD_LEARNER, NodeId(missing[0]))
            why = "add learner"
        else:
            # 2. Promote a caught-up learner the map wants as a voter.
            for node in sorted(learners & want_voters):
                progress = raft.progress.get(NodeId(node))
                if progress is not None and progress.match + CATCH_UP_ENTRIES >= last and \
                        progress.state is ProgressState.REPLICATE:
                    change = ConfChangeSingle(ConfChangeType.ADD_VOTER, NodeId(node))
                    why = "promote caught-up learner"
                    break
            if change is None:
                # 3. Demote a voter the map keeps only as a learner (driver group).
                extra_voters = sorted(voters - want_voters)
                # Removing voters only once every wanted voter is in: never shrink below.
                if extra_voters and want_voters <= voters:
                    node = extra_voters[0]
                    if node == self.node_id:
                        self._hand_over(group_id, group, want_voters)
                        return
                    kind = (ConfChangeType.ADD_LEARNER if node in want_learners
                            else ConfChangeType.REMOVE_NODE)
                    change = ConfChangeSingle(kind, NodeId(node))
                    why = "demote voter" if kind is ConfChangeType.ADD_LEARNER else "remove voter"
                else:
                    stale = sorted(learners - want_learners - want_voters)
                    if stale:
                        change = ConfChangeSingle(ConfChangeType.REMOVE_NODE, NodeId(stale[0]))
                        why = "remove learner"
        if change is None:
            return
        try:
            group.propose_conf_change(ConfChange(changes=(change,)))
        except (NotLeader, ProposalDropped, PhalanxError) as error:
            logger.info("group %s: %s %s refused: %s", group_id, why, change.node_id, error)
            return
        what = "the placement driver" if group_id == META_GROUP else f"shard {group_id}"
        self._event("membership", f"{what}: {why} {change.node_id}")
        logger.info("%s: %s: %s %s", self.node_id, what, why, change.node_id)

    def _hand_over(self, group_id: int, group: RaftGroup, candidates: set[str]) -> None:
        """This leader must leave the group: transfer leadership to a caught-up voter first."""
        now = time.monotonic()
        if now - self.last_transfer_at.get(group_id, 0.0) < 2.0:
            return
        raft = group.raw.raft
        best = max(((raft.progress[NodeId(n)].match, n) for n in candidates
                    if NodeId(n) in raft.progress and n != self.node_id), default=None)
        if best is None:
            return
        self.last_transfer_at[group_id] = now
        logger.info("%s: handing leadership of group %s to %s before leaving it", self.node_id,
                    group_id, best[1])
        group.transfer_leadership(best[1])

    async def _report(self, group_id: int, group: RaftGroup) -> None:
        """Leaders tell the map who leads their shard and its configuration (leader hints)."""
        if group_id == META_GROUP or not self._meta_caught_up():
            return
        shard = self.cluster_map.shards.get(group_id)
        if shard is None:
            return
        raft = group.raw.raft
        now = time.monotonic()
        self.leader_since.setdefault(group_id, now)
        if group.shard is not None:
            self._continue_merges(group_id, group, now)
            for (first, last), new_id in group.shard.moved.items():
                if new_id not in self.cluster_map.shards and \
                        now - self.last_report_at.get(-new_id, 0.0) > 1.0:
                    self.last_report_at[-new_id] = now
                    asyncio.get_running_loop().create_task(self._propose_meta_quietly(
                        {"op": "split_shard", "shard": group_id, "new_shard": new_id,
                         "first_slot": first, "last_slot": last}))
        current = (self.node_id, raft.term, tuple(sorted(raft.conf.voters)),
                   tuple(sorted(raft.conf.learners)))
        recorded = (shard.leader, shard.term, tuple(sorted(shard.voters)),
                    tuple(sorted(shard.learners)))
        if current != recorded:
            if self.last_report.get(group_id) == current and \
                    now - self.last_report_at.get(group_id, 0.0) < 1.0:
                return  # already sent; give it a moment to commit
            self.last_report[group_id] = current
            self.last_report_at[group_id] = now
            op = {"op": "report_shard", "shard": group_id, "leader": self.node_id,
                  "term": raft.term, "voters": list(current[2]), "learners": list(current[3])}
            asyncio.get_running_loop().create_task(self._propose_meta_quietly(op))
            return
        # Spread leaders: hand leadership to the map's preferred leader once it is caught up
        # (with one shard there is nothing to spread: leadership stays where elections put it).
        preferred = shard.preferred_leader
        if len(self.cluster_map.shards) > 1 and preferred and preferred != self.node_id and preferred in raft.conf.voters and \
                now - self.leader_since.get(group_id, now) > 2.0 and \
                now - self.last_transfer_at.get(group_id, 0.0) > PREFERRED_TRANSFER_GAP_S:
            progress = raft.progress.get(NodeId(preferred))
            info = self.cluster_map.nodes.get(preferred)
            if progress is not None and progress.match >= raft.log.last_index() - 1 and \
                    info is not None and info.state == "alive" and progress.recent_active:
                self.last_transfer_at[group_id] = now
                logger.info("%s: shard %s: leadership to preferred leader %s", self.node_id,
                            group_id, preferred)
                group.transfer_leadership(preferred)

    async def _propose_meta_quietly(self, op: dict[str, object]) -> None:
        try:
            await self.propose_meta(op)
        except (PhalanxError, OSError, TimeoutError) as error:
            logger.debug("%s: map op %s failed: %s", self.node_id, op.get("op"), error)

    # -- the placement driver (group 0's leader) ----------------------------------------------
    async def _drive(self) -> None:
        now = time.monotonic()
        if self.driver_since is None:
            self.driver_since = now
            for info in self.cluster_map.nodes.values():
                self.last_heard.setdefault(info.id, now)
            self._event("driver", f"{self.node_id} leads the placement driver")
        if self.driver_busy or not self._meta_caught_up():
            return
        self.driver_busy = True
        try:
            cmap = self.cluster_map
            ops: list[dict[str, object]] = []
            dead_after = self.config.dead_after_ms / 1000
            for info in cmap.nodes.values():
                if info.id == self.node_id:
                    heard = now
                else:
                    heard = self.last_heard.get(info.id, self.driver_since)
                silent = now - max(heard, self.driver_since)
                if info.state == "alive" and silent > dead_after:
                    ops.append({"op": "set_node_state", "node": info.id, "state": "dead"})
                    self._event("node-dead", f"{info.id} silent for {silent:.1f} s: declared "
                                             f"dead; its replicas will be re-created")
                elif info.state == "dead" and now - heard < 1.0:
                    ops.append({"op": "set_node_state", "node": info.id, "state": "alive"})
                    self._event("node-alive", f"{info.id} is back")
            if not ops:
                ops = plan(cmap)
                for info in cmap.nodes.values():
                    if info.state == "decommissioned" and drain_done(cmap, info.id):
                        ops.append({"op": "remove_node", "node": info.id})
            for op in ops:
                group = self.meta
                if not group.is_leader():
                    return
                reply = await asyncio.wait_for(group.propose_data(encode_op(op)),
                                               self.config.request_timeout_ms / 1000)
                if op.get("op") in ("set_replicas", "set_meta_voters", "remove_node"):
                    self._event("placement", f"{_describe_op(op)} -> {_describe_reply(reply)}")
                    logger.info("%s driver: %s -> %s", self.node_id, _describe_op(op),
                                _describe_reply(reply))
        except (PhalanxError, TimeoutError) as error:
            logger.info("%s driver: %s", self.node_id, error)
        finally:
            self.driver_busy = False

    async def propose_meta(self, op: dict[str, object]) -> object:
        """Commit one map op through the driver's leader (here, or over RESP to it)."""
        timeout = self.config.request_timeout_ms / 1000
        meta = self.meta
        if meta.is_leader():
            return await asyncio.wait_for(meta.propose_data(encode_op(op)), timeout)
        leader = meta.leader
        if not leader:
            raise NotLeader(None, "the placement driver has no leader right now")
        address = self.resp_address(leader)
        if address is None:
            raise NotLeader(None, f"the driver's leader {leader} has no known address")
        link = self.meta_link
        if link is None or link.leader_id != leader:
            if link is not None:
                link.close()
            link = LeaderLink(leader, address[0], address[1], timeout, self.config.requirepass,
                              self.resp.client_tls)
            self.meta_link = link
        payload = json.dumps(op, separators=(",", ":"), sort_keys=True).encode()
        arguments = [b"PHALANX.META", payload]
        if self.config.cluster_secret:
            arguments.append(internal_signature(self.config.cluster_secret, payload))
        try:
            reply = await link.call(arguments)
        except (OSError, TimeoutError, PhalanxError):
            link.close()
            self.meta_link = None
            raise
        if isinstance(reply, ErrorReply):
            raise PhalanxError(f"driver refused {op.get('op')}: {reply.text}")
        return reply

    async def _join(self) -> None:
        """A joining node announces itself through any member until the map lists it."""
        me = self.config.me
        info = NodeInfo(id=me.id, peer=me.peer, resp=me.resp, admin=me.admin, zone=me.zone,
                        region=me.region)
        payload = json.dumps({"op": "add_node", "node": info.to_json()},
                             separators=(",", ":"), sort_keys=True).encode()
        host, port = parse_address(self.config.join, "join")
        delay = 0.2
        if self.removed_from_cluster():
            logger.warning("%s was decommissioned: not joining again (delete its data directory "
                           "to join as a new node)", self.node_id)
            return
        while True:
            listed = self.cluster_map.nodes.get(self.node_id)
            if listed is not None and listed.state == "alive" and listed.peer == me.peer:
                return
            link = LeaderLink("seed", host, port, self.config.request_timeout_ms / 1000,
                              self.config.requirepass, self.resp.client_tls)
            arguments = [b"PHALANX.JOIN", payload]
            if self.config.cluster_secret:
                arguments.append(internal_signature(self.config.cluster_secret, payload))
            try:
                reply = await link.call(arguments)
                if isinstance(reply, bytes):
                    known = ClusterMap.decode(reply)
                    for node in known.nodes.values():
                        if node.id != self.node_id:
                            peer_host, peer_port = parse_address(node.peer, "peer")
                            self.transport.set_peer(node.id, peer_host, peer_port)
                    logger.info("%s joined through %s (map version %s)", self.node_id,
                                self.config.join, known.version)
                elif isinstance(reply, ErrorReply):
                    logger.warning("%s: join through %s refused: %s", self.node_id,
                                   self.config.join, reply.text)
            except (OSError, TimeoutError, PhalanxError) as error:
                logger.info("%s: join through %s failed (%s); retrying", self.node_id,
                            self.config.join, error)
            finally:
                link.close()
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)

    # -- shard splits --------------------------------------------------------------------------
    async def _on_split(self, group: RaftGroup, split_off: SplitOff, conf: ConfState) -> None:
        """Every replica of a shard applies its split entry at the same index: create the new
        shard here, on the same members, from the split-off keys (a snapshot at index 1)."""
        new_id = GroupId(split_off.new_shard)
        directory = self.data_dir / "groups" / str(new_id)
        if new_id in self.groups or directory.exists():
            return  # replaying the old shard's log after a restart: the new shard exists
        members = ConfState(voters=conf.voters, learners=conf.learners)
        store = AsyncLogStore(open_log_store(directory, ConfState(), self.config.storage_engine))
        snapshot = Snapshot(meta=SnapshotMeta(index=Index(SPLIT_SNAPSHOT_INDEX),
                                              term=Term(SPLIT_SNAPSHOT_INDEX),
                                              conf_state=members),
                            data=split_off.snapshot)
        await store.persist((), None, snapshot)
        child = self._start_group(new_id, store)
        if group.is_leader():
            # The old shard's leader leads the new one at once (PreVote first): no election
            # timeout passes with the moved slots leaderless.
            child.raw.campaign()
            child.wake.set()
        self._event("split", f"shard {group.group_id} split: slots {split_off.first_slot}-"
                             f"{split_off.last_slot} -> new shard {new_id}")
        logger.info("%s: shard %s split at log index %s: slots %s-%s now in shard %s",
                    self.node_id, group.group_id, split_off.index, split_off.first_slot,
                    split_off.last_slot, new_id)

    async def split_shard(self, shard: int, at: int | None = None) -> dict[str, object]:
        """Split `shard` online: the slots from `at` to the end of its range move to a new
        shard on the same replicas (must run on the shard's leader)."""
        group = self.local_group(shard)
        if group is None or not group.is_leader() or group.shard is None:
            leader = group.leader if group is not None else ""
            raise NotLeader(leader or None, f"this node does not lead shard {shard}")
        ranges = group.shard.owned
        if not ranges:
            raise ConfigError(f"shard {shard} owns no slots")
        if at is None:
            first, last = max(ranges, key=lambda r: r[1] - r[0])
            if first == last:
                raise ConfigError(f"shard {shard} has no range of two slots or more to split")
            at = (first + last + 1) // 2
        else:
            found = next(((a, b) for a, b in ranges if a < at <= b), None)
            if found is None:
                raise ConfigError(f"slot {at} is not inside a range of shard {shard} (ranges: "
                                  f"{', '.join(f'{a}-{b}' for a, b in ranges)}; the first "
                                  f"slot of a range cannot be a split point)")
            first, last = found
        taken = set(self.cluster_map.shards) | {
            target for g in self.data_groups().values() if g.shard is not None
            for target in g.shard.moved.values()}
        new_id = max(taken) + 1
        future = group.propose_data(encode_command(Command(
            name=SPLIT_COMMAND, args=split_command(at, last, new_id),
            now_ms=int(time.time() * 1000))))
        reply = await asyncio.wait_for(future, self.config.request_timeout_ms / 1000)
        if reply != "OK":
            raise ConfigError(f"the split was refused: {_describe_reply(reply)}")
        return {"shard": shard, "new_shard": new_id, "slots": [at, last]}

    def _continue_merges(self, group_id: int, group: RaftGroup, now: float) -> None:
        """On a shard's leader: absorb every local shard frozen into this one, then tell the
        map. Idempotent and retried, so a crash between the merge steps only delays it."""
        machine = group.shard
        if machine is None:
            return  # the driver's group merges nothing
        for other_id, other in list(self.data_groups().items()):
            frozen = other.shard
            if frozen is None or frozen.frozen_into != group_id or other_id in machine.absorbed:
                continue
            if now - self.last_report_at.get(-10_000 - other_id, 0.0) < 2.0:
                continue
            self.last_report_at[-10_000 - other_id] = now
            ranges, image = frozen.frozen_image()
            payload = json.dumps([list(r) for r in ranges]).encode()
            logger.info("%s: shard %s absorbs frozen shard %s (%d bytes)", self.node_id,
                        group_id, other_id, len(image))
            try:
                group.propose_data(encode_command(Command(
                    name=ABSORB_COMMAND, args=(str(other_id).encode(), payload, image),
                    now_ms=int(time.time() * 1000))))
            except (NotLeader, ProposalDropped):
                return
        for source in sorted(machine.absorbed):
            if source in self.cluster_map.shards and \
                    now - self.last_report_at.get(-20_000 - source, 0.0) > 1.0:
                self.last_report_at[-20_000 - source] = now
                self._event("merge", f"shard {source} merged into shard {group_id}")
                asyncio.get_running_loop().create_task(self._propose_meta_quietly(
                    {"op": "merge_shards", "shard": group_id, "source": source}))

    async def merge_shards(self, shard: int, source: int) -> dict[str, object]:
        """Merge shard `source` into `shard` online (run on `shard`'s leader). The two must have
        the same replicas: if they do not, the placement driver is told to move `source`'s
        replicas first and the answer says to run it again."""
        cmap = self.cluster_map
        target_info, source_info = cmap.shards.get(shard), cmap.shards.get(source)
        if target_info is None or source_info is None or shard == source:
            raise ConfigError(f"merge needs two different existing shards (got {shard} and "
                              f"{source}; shards: {', '.join(map(str, sorted(cmap.shards)))})")
        group = self.local_group(shard)
        if group is None or not group.is_leader():
            leader = group.leader if group is not None else target_info.leader
            raise NotLeader(leader or None, f"this node does not lead shard {shard}")
        if source_info.merge_into != shard:
            await self.propose_meta({"op": "set_merge", "shard": source, "into": shard})
        # Wait (bounded) until both shards run on the same replicas; the planner keeps the
        # source on the target's replicas and moves neither meanwhile.
        deadline = time.monotonic() + self.config.request_timeout_ms / 1000 * 4
        while True:
            cmap = self.cluster_map
            target_info, source_info = cmap.shards.get(shard), cmap.shards.get(source)
            if target_info is None or source_info is None:
                raise PhalanxError("the shards changed during the merge; look at the map")
            together = (set(source_info.voters) == set(target_info.voters)
                        == set(source_info.replicas) and not source_info.learners
                        and not target_info.learners and self.local_group(source) is not None)
            if together:
                break
            if time.monotonic() >= deadline:
                return {"status": "co-locating", "shard": shard, "source": source,
                        "detail": f"moving shard {source}'s replicas onto shard {shard}'s; "
                                  f"run the merge again to continue"}
            await asyncio.sleep(0.05)
        await self._propose_on_shard(source, FREEZE_COMMAND, (str(shard).encode(),))
        deadline = time.monotonic() + self.config.request_timeout_ms / 1000 * 3
        while source in self.cluster_map.shards and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if source in self.cluster_map.shards:
            return {"status": "merging", "shard": shard, "source": source,
                    "detail": "frozen; the absorb and the map update are still in progress"}
        return {"status": "merged", "shard": shard, "source": source,
                "slots": [list(r) for r in self.cluster_map.shards[shard].slots]}

    async def _propose_on_shard(self, shard: int, name: bytes, args: tuple[bytes, ...]) -> None:
        """Commit one internal command in `shard`'s log: here if we lead it, else through its
        leader's RESP port (PHALANX.SHARD)."""
        timeout = self.config.request_timeout_ms / 1000
        group = self.local_group(shard)
        if group is not None and group.is_leader():
            reply = await asyncio.wait_for(group.propose_data(encode_command(Command(
                name=name, args=args, now_ms=int(time.time() * 1000)))), timeout)
        else:
            leader = group.leader if group is not None else \
                self.cluster_map.shards[shard].leader
            address = self.resp_address(leader) if leader else None
            if address is None:
                raise NotLeader(None, f"shard {shard} has no known leader right now")
            link = LeaderLink(leader, address[0], address[1], timeout, self.config.requirepass,
                              self.resp.client_tls)
            shard_text = str(shard).encode()
            signed = args
            if self.config.cluster_secret:
                signed = (*args, internal_signature(self.config.cluster_secret,
                                                    b"\0".join([shard_text, name, *args])))
            try:
                reply = await link.call([b"PHALANX.SHARD", shard_text, name, *signed])
            finally:
                link.close()
        text = _describe_reply(reply)
        if text != "OK":
            raise PhalanxError(f"shard {shard} refused {name.decode()}: {text}")

    # -- replica lifecycle ---------------------------------------------------------------------
    async def _sync_replicas(self) -> None:
        """Create the replicas the map gives us; delete those no shard lists any more."""
        if self.removed_from_cluster():
            # Decommissioned: the driver removed us once we held nothing; drop what is left.
            for group_id in list(self.data_groups()):
                group = self.groups[group_id]
                if NodeId(self.node_id) not in group.raw.raft.conf.voters:
                    await self._close_group(group_id, delete=True)
            if not self.decommissioned_logged:
                self.decommissioned_logged = True
                logger.warning("%s was removed from the cluster (decommissioned): it serves "
                               "nothing; stop this process", self.node_id)
            return
        if not self._meta_caught_up():
            return
        cmap = self.cluster_map
        me = self.node_id
        for shard in cmap.shards.values():
            if shard.id not in self.groups and (me in shard.replicas or me in shard.voters
                                                or me in shard.learners):
                # A new, empty member: it waits for the shard's leader to send a snapshot.
                self._open_group(GroupId(shard.id), ConfState())
                self._event("replica-added", f"{me} created a replica of shard {shard.id}")
        for group_id in list(self.data_groups()):
            known = cmap.shards.get(group_id)
            group = self.groups[group_id]
            listed = known is not None and (me in known.replicas or me in known.voters
                                            or me in known.learners)
            if listed or group.is_leader():
                continue
            conf = group.raw.raft.conf
            # A shard the map does not know is either a fresh split-off (keep it until the map
            # catches up) or one merged away (frozen: its data lives on in the target).
            merged_away = known is None and group.shard is not None and \
                group.shard.frozen_into is not None
            # Never delete the data of a voter of our own configuration on a guess: only a
            # learner or an empty replica nobody wants, or a voter whose removal is certain:
            # the map reports a configuration without us from a leader at a term >= ours, and
            # we have heard no leader for REMOVED_GRACE_S (a removed voter never learns of the
            # commit of its own removal: the leader stops talking to it; a re-added one would
            # hear its leader at once).
            voter_here = NodeId(me) in conf.voters or NodeId(me) in conf.voters_outgoing
            removed_for_sure = (known is not None and bool(known.voters)
                                and known.term >= group.raw.raft.term
                                and group.leaderless_for() > REMOVED_GRACE_S)
            if merged_away or (known is not None and (not voter_here or removed_for_sure)):
                await self._close_group(group_id, delete=True)

    # -- transport callbacks -----------------------------------------------------------------
    def _on_messages(self, peer: str, batch: list[tuple[GroupId, Message]]) -> None:
        self.last_heard[peer] = time.monotonic()
        groups = self.groups
        for group_id, message in batch:
            group = groups.get(group_id)
            if group is not None:
                group.step(message)

    def _on_peer_lost(self, peer: str) -> None:
        for group in self.groups.values():
            group.leader_lost(peer)

    def _event(self, kind: str, text: str) -> None:
        self.events.append({"time": time.time(), "kind": kind, "text": text})
        if len(self.events) > 200:
            del self.events[:-200]

    # -- NodeView (admin HTTP) ---------------------------------------------------------------
    def _group_status(self, group_id: int, group: RaftGroup) -> dict[str, object]:
        raft = group.raw.raft
        last = raft.log.last_index()
        entry: dict[str, object] = {
            "role": raft.role.value,
            "term": raft.term,
            "leader": raft.lead or None,
            "commit_index": raft.log.committed,
            "applied_index": raft.log.applied,
            "last_index": last,
            "snapshot_index": group.store.snapshot_meta().index,
            "voters": sorted(raft.conf.voters),
            "learners": sorted(raft.conf.learners),
            "keys": group.machine.key_count,
            "leader_changes": group.leader_changes,
            "storage_error": group.fatal_error,
        }
        if raft.role is not Role.LEADER:
            # How stale a READONLY read here may be: time since the leader was last heard.
            entry["staleness_ms"] = group.staleness_ms()
        if raft.role is Role.LEADER:
            entry["progress"] = {
                node: {"match": p.match, "lag_entries": last - p.match, "state": p.state.value,
                       "learner": p.is_learner, "recent_active": p.recent_active}
                for node, p in raft.progress.items() if node != self.node_id}
        return entry

    def status(self) -> dict[str, object]:
        """The JSON status of this node (admin `/status`).

        Top-level role/term/leader/... describe this node's default shard (its lowest-numbered
        replica: the only one in a single-shard cluster); `shards` lists every shard of the map
        with its replicas, leader and lag, `local` this node's replicas.
        """
        cmap = self.cluster_map
        transport_peers = self.transport.stats().get("peers", {})
        peers: list[dict[str, object]] = []
        for info in cmap.nodes.values() or []:
            if info.id == self.node_id:
                continue
            entry: dict[str, object] = {"id": info.id, "zone": info.zone, "region": info.region,
                                        "resp": info.resp, "admin": info.admin,
                                        "state": info.state}
            if isinstance(transport_peers, dict):
                peer_stats = transport_peers.get(info.id)
                if isinstance(peer_stats, dict):
                    entry["connected"] = bool(peer_stats.get("connected"))
                    # Many groups share one connection: messages per frame shows the batching
                    # (heartbeats of every group to a peer coalesced into one frame).
                    entry["messages_sent"] = peer_stats.get("messages_sent")
                    entry["frames_sent"] = peer_stats.get("frames_sent")
                    entry["messages_received"] = peer_stats.get("messages_received")
            peers.append(entry)
        local = {str(gid): self._group_status(gid, g) for gid, g in sorted(self.groups.items())}
        shards = []
        for shard in sorted(cmap.shards.values(), key=lambda s: s.id):
            item: dict[str, object] = shard.to_json()
            item["leader"] = self.shard_leader(shard) or None
            item["fully_replicated"] = shard.fully_replicated(cmap.nodes)
            group = self.local_group(shard.id)
            if group is not None and group.is_leader():
                raft = group.raw.raft
                last = raft.log.last_index()
                item["lag"] = {node: last - p.match for node, p in raft.progress.items()
                               if node != self.node_id}
            shards.append(item)
        status: dict[str, object] = {
            "node": self.config.id,
            "zone": self.zone,
            "region": self.region,
            "version": __version__,
            "peers": peers,
            "resp": self.config.me.resp,
            "admin": self.config.me.admin,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "clients": len(self.resp.clients),
            "redirect": self.config.redirect,
            "map_version": cmap.version,
            "survival_goal": cmap.survival_goal,
            "replication_factor": cmap.replication_factor,
            "nodes": [n.to_json() for n in cmap.nodes.values()],
            "meta": {**self._group_status(META_GROUP, self.meta),
                     "desired_voters": list(cmap.meta_voters),
                     "driver": self.meta.is_leader()},
            "shards": shards,
            "local": local,
            "fully_replicated": all(bool(s["fully_replicated"]) for s in shards),
            "single_points_of_failure": self._spofs(),
            "commands_total": self.resp.total_commands,
            "commit_latency_ms": self._recent_latency_ms(),
            "events": self.events[-50:],
        }
        # The top-level role/term/leader/... describe the FIRST shard of the map (the only one
        # in a single-shard cluster), as every node sees it: its own replica's view, else the
        # map's leader hint with role "none". Tools that speak of "the leader" mean this one.
        first = min(cmap.shards) if cmap.shards else None
        group = self.local_group(first) if first is not None else None
        if group is not None and first is not None:
            default = self._group_status(first, group)
            status.update({key: default[key] for key in (
                "role", "term", "leader", "commit_index", "applied_index", "last_index",
                "snapshot_index", "voters", "learners", "keys", "leader_changes",
                "storage_error")})
            raft = group.raw.raft
            if raft.role is Role.LEADER:
                last = raft.log.last_index()
                for peer in peers:
                    progress = raft.progress.get(NodeId(str(peer["id"])))
                    if progress is not None:
                        peer.update(match=progress.match, next=progress.next,
                                    state=progress.state.value,
                                    lag_entries=last - progress.match,
                                    recent_active=progress.recent_active,
                                    learner=progress.is_learner)
        else:
            hint = cmap.shards[first].leader if first is not None else ""
            status.update(role="none", term=0, leader=hint or None)
        status["shard"] = first
        return status

    def _recent_latency_ms(self) -> dict[str, float] | None:
        """p50/p99 of the last writes proposed on this node (all its groups), in ms."""
        samples = sorted(x for g in self.groups.values() for x in g.recent_commits)
        if not samples:
            return None
        def at(q: float) -> float:
            return round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1000, 3)
        return {"p50": at(0.5), "p99": at(0.99), "samples": len(samples)}

    def _spofs(self) -> list[object]:
        """The analysis's single points of failure at default figures, cached per map version
        (/status is polled often; the analysis is not free)."""
        cmap = self.cluster_map
        if self.spof_cache[0] != cmap.version:
            from phalanx.placement.analysis import analyze

            report = analyze(cmap)
            spofs = report.get("spofs")
            self.spof_cache = (cmap.version, list(spofs) if isinstance(spofs, list) else [])
        return self.spof_cache[1]

    def readiness(self) -> tuple[bool, str]:
        """Ready = the map is known and every local replica knows a leader and is caught up.

        A replica the map gives this node but whose configuration does not list it yet has
        received nothing from its leader (no snapshot: the configuration comes with it): a new
        replica, or one whose data was wiped. It has applied nothing, and its applied and
        commit indexes (both 0) cannot say how far behind it is, so it is catching up and the
        node is not ready until the snapshot is installed. (Its clients are served meanwhile
        by forwarding: `local_group` does not count it.) A replica that is being removed
        (its configuration no longer lists this node, nor does the map) does not count.
        """
        meta = self.meta
        if meta.stopped:
            return False, f"placement driver replica stopped: {meta.fatal_error}"
        if self.removed_from_cluster():
            return False, "this node was removed from the cluster (decommissioned); stop it"
        if self.cluster_map.version == 0:
            return False, "waiting for the cluster map (joining)"
        me = NodeId(self.node_id)
        for group_id, group in sorted(self.data_groups().items()):
            if group.stopped:
                return False, f"shard {group_id} replica stopped: {group.fatal_error}"
            raft = group.raw.raft
            conf = raft.conf
            if me not in conf.voters and me not in conf.learners:
                shard = self.cluster_map.shards.get(group_id)
                wanted = shard is not None and (self.node_id in shard.replicas
                                                or self.node_id in shard.voters
                                                or self.node_id in shard.learners)
                if wanted and not conf.voters:
                    return False, (f"shard {group_id}: catching up (waiting for a snapshot "
                                   f"from the leader; {raft.log.applied} entries applied)")
                continue  # a replica being removed
            if not raft.lead:
                return False, f"shard {group_id}: no leader known (election or no quorum)"
            lag = raft.log.committed - raft.log.applied
            if lag > READY_LAG_ENTRIES:
                return False, f"shard {group_id}: catching up ({lag} entries not applied)"
        try:
            group = self.group
        except ConfigError:
            return True, "serving (no local shard replica; forwarding)"
        return True, f"serving ({group.raw.raft.role.value}, leader {group.leader})"

    def removed_from_cluster(self) -> bool:
        """True once the driver's configuration no longer lists this node (decommissioned)."""
        raft = self.meta.raw.raft
        me = NodeId(self.node_id)
        return raft.log.applied > 0 and me not in raft.conf.voters and \
            me not in raft.conf.learners

    def shard_for(self, shard: int | None = None, key: bytes | None = None) -> int:
        """The shard id of `key` or `shard` (default: this node's default shard)."""
        from phalanx.placement import key_slot

        cmap = self.cluster_map
        if key is not None:
            found = cmap.shard_for_slot(key_slot(key))
            if found is None:
                raise ConfigError(f"no shard owns the slot of key {key!r}")
            return found.id
        if shard is not None:
            if shard not in cmap.shards:
                raise ConfigError(f"no shard {shard} (shards: "
                                  f"{', '.join(str(s) for s in sorted(cmap.shards))})")
            return shard
        if not cmap.shards:
            raise ConfigError("the cluster map has no shards yet")
        return min(cmap.shards)

    def is_primary(self, shard: int | None = None, key: bytes | None = None) -> bool:
        """True only on the leader of the shard (HAProxy's writer check)."""
        try:
            group = self.local_group(self.shard_for(shard, key))
        except ConfigError:
            return False
        return group is not None and not group.stopped and group.is_leader()

    def is_replica(self) -> bool:
        """True on a healthy follower: knows a leader and is caught up."""
        ready, _ = self.readiness()
        try:
            group = self.local_group(self.shard_for())
        except ConfigError:
            return False
        return ready and group is not None and group.raw.raft.role is Role.FOLLOWER

    async def transfer_leadership(self, target: str | None, shard: int | None = None) -> str:
        """Move leadership of a shard to `target` (or the most up-to-date follower)."""
        group_id = self.shard_for(shard)
        group = self.local_group(group_id)
        if group is None:
            raise NotLeader(None, f"this node holds no replica of shard {group_id}")
        raft = group.raw.raft
        if raft.role is not Role.LEADER:
            raise NotLeader(raft.lead or None, f"this node is not the leader of shard "
                                               f"{group_id} (leader: {raft.lead or 'unknown'}); "
                                               f"ask the leader")
        if target is None:
            candidates = [(progress.match, node) for node, progress in raft.progress.items()
                          if node != self.config.id and node in raft.conf.voters]
            if not candidates:
                raise ConfigError("there is no other voter to transfer leadership to")
            target = max(candidates)[1]
        if target not in raft.conf.voters:
            raise ConfigError(f"{target!r} is not a voter of shard {group_id} (voters: "
                              f"{', '.join(sorted(raft.conf.voters))})")
        if target == self.config.id:
            return target
        group.transfer_leadership(target)
        self.last_transfer_at[group_id] = time.monotonic()
        deadline = time.monotonic() + 4 * self.config.election_ticks * self.config.tick_ms / 1000
        while time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            leader = group.leader
            if leader and leader != self.config.id:
                shard_info = self.cluster_map.shards.get(group_id)
                if shard_info is not None:
                    # The operator chose this leader: make it the preferred one, so leader
                    # spreading does not move it back.
                    await self._propose_meta_quietly(
                        {"op": "set_replicas", "shard": group_id,
                         "replicas": list(shard_info.replicas), "preferred_leader": leader})
                return leader
        raise PhalanxError(f"leadership transfer to {target} did not complete in time")

    async def set_node_state(self, node_id: str, state: str) -> dict[str, object]:
        """Drain (`draining`), decommission or re-admit (`alive`) a node via the driver."""
        if node_id not in self.cluster_map.nodes:
            raise ConfigError(f"unknown node {node_id!r}")
        reply = await self.propose_meta({"op": "set_node_state", "node": node_id,
                                         "state": state})
        return {"node": node_id, "state": state, "reply": _describe_reply(reply)}

    def analysis(self, node_availability: float, zone_availability: float,
                 region_availability: float) -> dict[str, object]:
        """Single points of failure and estimated nines of the live topology."""
        from phalanx.placement.analysis import analyze

        report: dict[str, object] = analyze(self.cluster_map, node_availability=node_availability,
                       zone_availability=zone_availability,
                       region_availability=region_availability)
        return report

    def set_fault_rules(self, rules: dict[str, object]) -> dict[str, object]:
        """Install network fault rules (chaos lab); raises ConfigError on bad rules."""
        self.fault_rules.update_from_json(rules)
        logger.warning("fault rules installed: %s", self.fault_rules.to_json())
        return self.fault_rules.to_json()

    def get_fault_rules(self) -> dict[str, object]:
        """The fault rules in force."""
        return self.fault_rules.to_json()

    def clear_fault_rules(self) -> None:
        """Remove every fault rule."""
        self.fault_rules.clear()
        logger.warning("fault rules cleared")


def _describe_op(op: dict[str, object]) -> str:
    kind = op.get("op")
    if kind == "set_replicas":
        return (f"shard {op.get('shard')} replicas -> {','.join(map(str, op.get('replicas') or []))}"  # type: ignore[call-overload]
                f" (preferred leader {op.get('preferred_leader') or '-'})")
    if kind == "set_meta_voters":
        return f"driver voters -> {','.join(map(str, op.get('voters') or []))}"  # type: ignore[call-overload]
    return json.dumps(op, sort_keys=True)


def _describe_reply(reply: object) -> str:
    if isinstance(reply, str):
        return reply
    text = getattr(reply, "text", None)
    if isinstance(text, str):
        return text
    message = getattr(reply, "message", None)
    return str(message) if message is not None else repr(reply)


def check_not_a_wiped_member(config: NodeConfig, timeout_s: float = 1.0) -> None:
    """Refuse to bootstrap a node whose data directory is empty while the running cluster
    remembers it (its disk was lost or wiped).

    Raft's safety rests on a server never forgetting its vote and its log (§5.2, §5.4: votes
    and entries are persisted before they are acknowledged). A voter that comes back empty
    under the same id could vote twice in one term. So a fresh bootstrap node asks its peers
    first: if one of them has received Raft messages from this node id, or the placement
    driver's leader shows that it had acknowledged log entries, the node must not start as
    itself. Raises ConfigError saying what to do. A brand-new cluster is unaffected (no peer
    has heard from this node yet), and so is a node with its data (it is not fresh) or one
    that joins as a new node. Not covered: every peer restarted since this node last ran.
    """
    import json
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    if config.join or (Path(config.data_dir) / "groups" / "0").exists():
        return
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def remembered_by(peer_admin: str) -> int:
        try:
            with opener.open(f"http://{peer_admin}/status", timeout=timeout_s) as response:
                status = json.loads(response.read())
        except (OSError, ValueError):
            return 0
        if not isinstance(status, dict):
            return 0
        # Evidence that this node ran before: the peer received Raft messages from it (since
        # the peer started), or, on the driver's leader, it had acknowledged log entries.
        heard = 0
        for peer in status.get("peers") or []:
            if isinstance(peer, dict) and peer.get("id") == config.id:
                received = peer.get("messages_received")
                heard = received if isinstance(received, int) else 0
        meta = status.get("meta")
        progress = meta.get("progress") if isinstance(meta, dict) else None
        mine = progress.get(config.id) if isinstance(progress, dict) else None
        match = mine.get("match") if isinstance(mine, dict) else None
        return max(heard, match if isinstance(match, int) else 0)

    admins = [p.admin for p in config.peers if p.id != config.id and p.admin]
    if not admins:
        return
    with ThreadPoolExecutor(max_workers=len(admins)) as pool:
        matches = list(pool.map(remembered_by, admins))
    if max(matches) > 0:
        raise ConfigError(
            f"the data directory {config.data_dir} is empty, but the running cluster knows "
            f"node {config.id} (it received its Raft messages): its disk was lost or wiped. Starting it as {config.id} could break Raft's safety (a forgotten vote). "
            f"Decommission {config.id} (`phalanx decommission {config.id}`, or let the "
            f"cluster declare it dead), then start this machine as a new node with a new id "
            f"and `join`.")


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGTERM or SIGINT."""
    node = Node(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, node.stopping.set)
    await node.start()
    try:
        await node.stopping.wait()
    finally:
        logger.info("node %s stopping", config.id)
        await node.stop()


def run_node(config: NodeConfig) -> None:
    """Run a node in the foreground (uvloop when available) until SIGTERM/SIGINT."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))

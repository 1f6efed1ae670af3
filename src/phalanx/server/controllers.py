"""The controllers every node runs: each moves the actual state of the replicas it is
responsible for toward the cluster map (the desired state), one step per control round, so a
leader change mid-way simply resumes. See docs/architecture.md ("the placement driver and the
controllers").

- Membership (on each group's leader): add a replica the map wants as a learner (it catches
  up, by snapshot if need be), promote it once caught up, then demote or remove the replicas
  the map no longer wants; one single-server change at a time (diss. §4.1). A leader that must
  leave its group hands leadership to a caught-up voter first (§3.10 TimeoutNow).
- Reports (on each data group's leader): tell the map who leads the shard, at which term, with
  which configuration (the leader hints routing uses); then hand leadership to the map's
  preferred leader once it is caught up, to spread leaders.
- Replica sync (every node): create the replicas the map gives this node and delete those it
  no longer has, only once the local map is caught up and, for a voter, its removal certain.
- Peer sync (every node): teach the transport every node of the map.
- Leadership transfer on request (FAILOVER, admin `/failover`), which then makes the new
  leader the preferred one.

Rules of this file:
- Decisions about where replicas go belong to the placement driver (`phalanx.server.driver`);
  the controllers only follow the map, and never act on a map copy that is not caught up.
- Every step is idempotent and rate-limited; a failed proposal is retried on a later round.
"""

from __future__ import annotations

import asyncio
import logging
import time

from phalanx.errors import (
    ConfigError,
    NotLeader,
    PhalanxError,
    ProposalDropped,
    StorageError,
)
from phalanx.raft import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    GroupId,
    NodeId,
    Role,
)
from phalanx.server.config import NodeConfig, parse_address
from phalanx.server.events import EventLog
from phalanx.server.group import RaftGroup
from phalanx.server.identity import replaced_membership
from phalanx.server.meta_client import MetaClient
from phalanx.server.replicas import META_GROUP, Replicas
from phalanx.server.resharding import Resharding
from phalanx.transport.tcp import TcpTransport

logger = logging.getLogger(__name__)

#: A learner is promoted once its log is within this many entries of the leader's.
CATCH_UP_ENTRIES = 10
#: A voter the map reports as removed deletes its replica after hearing no leader this long.
REMOVED_GRACE_S = 10.0
#: Time between two leadership hand-overs to a preferred leader of one shard.
PREFERRED_TRANSFER_GAP_S = 5.0


class Controllers:
    """Membership, reports, replica and peer sync, leadership transfers."""

    def __init__(self, replicas: Replicas, config: NodeConfig, transport: TcpTransport,
                 meta_client: MetaClient, resharding: Resharding, events: EventLog) -> None:
        self.replicas = replicas
        self.config = config
        self.transport = transport
        self.meta_client = meta_client
        self.resharding = resharding
        self.events = events
        self.node_id = config.id
        self.last_report: dict[int, tuple[object, ...]] = {}
        self.last_report_at: dict[int, float] = {}
        self.last_transfer_at: dict[int, float] = {}
        self.leader_since: dict[int, float] = {}
        self.decommissioned_logged = False

    def sync_peers(self) -> None:
        """Teach the transport every node of the map (nodes that joined since we started)."""
        known = set(self.transport.peer_ids())
        for info in self.replicas.cluster_map.nodes.values():
            if info.id == self.node_id:
                continue
            host, port = parse_address(info.peer, f"nodes.{info.id}.peer")
            if info.id not in known:
                self.transport.set_peer(info.id, host, port)

    async def control_groups(self) -> None:
        """One round over every local replica: the one-time compaction for new members, and on
        a group's leader, membership reconciliation and the report to the map."""
        for group_id, group in list(self.replicas.groups.items()):
            if group.needs_snapshot_for_new_member() and not group.stopped and \
                    group.raw.applied >= 1 and not group.compacting:
                # Every replica compacts its first entry away once: whichever node leads
                # later, a new member gets a snapshot (with the configuration), never a
                # replay from index 1 (see RaftGroup).
                group.compacting = True
                asyncio.get_running_loop().create_task(group.compact_for_new_member())
            if group.is_leader() and not group.stopped:
                self.reconcile_membership(group_id, group)
                await self.report(group_id, group)

    # -- membership reconciliation (on each group's leader) ----------------------------------
    def _desired(self, group_id: int) -> tuple[set[str], set[str]] | None:
        """(voters, learners) the map wants for a group, or None if the map does not know it."""
        cmap = self.replicas.cluster_map
        # A node being replaced (`phalanx replace`: a new incarnation waits) leaves every group
        # as its old self first; once the driver finished the replacement, it is wanted again
        # and comes back as a new member: learner, snapshot, voter.
        replaced = replaced_membership(cmap)
        if group_id == META_GROUP:
            if not cmap.meta_voters:
                return None
            voters = set(cmap.meta_voters) - replaced
            # Every node of the map follows the map, a decommissioned one too until it is
            # drained and removed: it must see its replicas move away to delete them.
            learners = {n.id for n in cmap.nodes.values() if n.id not in voters} - replaced
            return voters, learners
        shard = cmap.shards.get(group_id)
        if shard is None or not shard.replicas:
            return None
        # A damaged replica being rebuilt leaves the configuration first (server/consistency.py).
        return set(shard.replicas) - replaced - set(shard.rebuilding), set()

    def reconcile_membership(self, group_id: int, group: RaftGroup) -> None:
        """Make one single-server membership change toward the map's wish, if one is due."""
        desired = self._desired(group_id)
        if desired is None or not self.replicas.meta_caught_up():
            return
        want_voters, want_learners = desired
        raw = group.raw
        conf = raw.conf
        if conf.voters_outgoing or raw.pending_conf_index > raw.applied:
            return  # one change at a time; a joint configuration leaves by itself
        voters, learners = set(conf.voters), set(conf.learners)
        last = raw.last_index
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
            peers = raw.peers()
            for node in sorted(learners & want_voters):
                progress = peers.get(NodeId(node))
                if progress is not None and progress.match + CATCH_UP_ENTRIES >= last and \
                        progress.replicating:
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
        self.events.record("membership", f"{what}: {why} {change.node_id}")
        logger.info("%s: %s: %s %s", self.node_id, what, why, change.node_id)

    def _hand_over(self, group_id: int, group: RaftGroup, candidates: set[str]) -> None:
        """This leader must leave the group: transfer leadership to a caught-up voter first."""
        now = time.monotonic()
        if now - self.last_transfer_at.get(group_id, 0.0) < 2.0:
            return
        peers = group.raw.peers()
        best = max(((peers[NodeId(n)].match, n) for n in candidates
                    if NodeId(n) in peers and n != self.node_id), default=None)
        if best is None:
            return
        self.last_transfer_at[group_id] = now
        logger.info("%s: handing leadership of group %s to %s before leaving it", self.node_id,
                    group_id, best[1])
        group.transfer_leadership(best[1])

    # -- reports and leader spreading (on each data group's leader) --------------------------
    async def report(self, group_id: int, group: RaftGroup) -> None:
        """Leaders tell the map who leads their shard and its configuration (leader hints)."""
        if group_id == META_GROUP or not self.replicas.meta_caught_up():
            return
        cmap = self.replicas.cluster_map
        shard = cmap.shards.get(group_id)
        if shard is None:
            return
        raw = group.raw
        now = time.monotonic()
        self.leader_since.setdefault(group_id, now)
        if group.shard is not None:
            self.resharding.continue_merges(group_id, group, now)
            self.resharding.report_splits(group_id, group, now)
        conf = raw.conf
        current = (self.node_id, raw.term, tuple(sorted(conf.voters)),
                   tuple(sorted(conf.learners)))
        recorded = (shard.leader, shard.term, tuple(sorted(shard.voters)),
                    tuple(sorted(shard.learners)))
        if current != recorded:
            if self.last_report.get(group_id) == current and \
                    now - self.last_report_at.get(group_id, 0.0) < 1.0:
                return  # already sent; give it a moment to commit
            self.last_report[group_id] = current
            self.last_report_at[group_id] = now
            op = {"op": "report_shard", "shard": group_id, "leader": self.node_id,
                  "term": raw.term, "voters": list(current[2]), "learners": list(current[3])}
            asyncio.get_running_loop().create_task(self.meta_client.propose_quietly(op))
            return
        # Spread leaders: hand leadership to the map's preferred leader once it is caught up
        # (with one shard there is nothing to spread: leadership stays where elections put it).
        preferred = shard.preferred_leader
        if len(cmap.shards) > 1 and preferred and preferred != self.node_id and \
                preferred in conf.voters and \
                now - self.leader_since.get(group_id, now) > 2.0 and \
                now - self.last_transfer_at.get(group_id, 0.0) > PREFERRED_TRANSFER_GAP_S:
            progress = raw.peers().get(NodeId(preferred))
            info = cmap.nodes.get(preferred)
            if progress is not None and progress.match >= raw.last_index - 1 and \
                    info is not None and info.state == "alive" and progress.recent_active:
                self.last_transfer_at[group_id] = now
                logger.info("%s: shard %s: leadership to preferred leader %s", self.node_id,
                            group_id, preferred)
                group.transfer_leadership(preferred)

    # -- replica sync (every node) -----------------------------------------------------------
    async def sync_replicas(self) -> None:
        """Create the replicas the map gives us; delete those no shard lists any more."""
        replicas = self.replicas
        if replicas.removed_from_cluster():
            # Decommissioned: the driver removed us once we held nothing; drop what is left.
            for group_id in list(replicas.data_groups()):
                group = replicas.groups[group_id]
                if NodeId(self.node_id) not in group.raw.conf.voters:
                    await replicas.close_group(group_id, delete=True)
            if not self.decommissioned_logged:
                self.decommissioned_logged = True
                logger.warning("%s was removed from the cluster (decommissioned): it serves "
                               "nothing; stop this process", self.node_id)
            return
        if not replicas.meta_caught_up():
            return
        cmap = replicas.cluster_map
        me = self.node_id
        for shard in cmap.shards.values():
            if shard.id not in replicas.groups and shard.id not in replicas.damaged and \
                    me not in shard.rebuilding and (me in shard.replicas or me in shard.voters
                                                    or me in shard.learners):
                # A new, empty member: it waits for the shard's leader to send a snapshot.
                try:
                    replicas.open_group(GroupId(shard.id), ConfState())
                except StorageError as error:
                    # Its disk failed (full, EIO) before it held anything: a damaged replica
                    # like any other (reported, and moved to another node when there is one:
                    # server/consistency.py), never an error that fails every control round.
                    replicas.damaged[shard.id] = f"storage failure at create: {error}"
                    logger.error("%s: cannot create a replica of shard %s: %s", me, shard.id,
                                 error)
                    continue
                self.events.record("replica-added", f"{me} created a replica of shard "
                                                    f"{shard.id}")
        for group_id in list(replicas.data_groups()):
            known = cmap.shards.get(group_id)
            group = replicas.groups[group_id]
            listed = known is not None and (me in known.replicas or me in known.voters
                                            or me in known.learners)
            if listed or group.is_leader():
                continue
            conf = group.raw.conf
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
                                and known.term >= group.raw.term
                                and group.leaderless_for() > REMOVED_GRACE_S)
            if merged_away or (known is not None and (not voter_here or removed_for_sure)):
                await replicas.close_group(group_id, delete=True)

    # -- leadership transfer on request ------------------------------------------------------
    async def transfer_leadership(self, target: str | None, shard: int | None = None) -> str:
        """Move leadership of a shard to `target` (or the most up-to-date follower)."""
        group_id = self.replicas.shard_for(shard)
        group = self.replicas.local_group(group_id)
        if group is None:
            raise NotLeader(None, f"this node holds no replica of shard {group_id}")
        raw = group.raw
        if raw.role is not Role.LEADER:
            raise NotLeader(raw.lead or None, f"this node is not the leader of shard "
                                              f"{group_id} (leader: {raw.lead or 'unknown'}); "
                                              f"ask the leader")
        voters = raw.conf.voters
        if target is None:
            candidates = [(progress.match, node) for node, progress in raw.peers().items()
                          if node != self.config.id and node in voters]
            if not candidates:
                raise ConfigError("there is no other voter to transfer leadership to")
            target = max(candidates)[1]
        if target not in voters:
            raise ConfigError(f"{target!r} is not a voter of shard {group_id} (voters: "
                              f"{', '.join(sorted(voters))})")
        if target == self.config.id:
            return target
        group.transfer_leadership(target)
        self.last_transfer_at[group_id] = time.monotonic()
        deadline = time.monotonic() + 4 * self.config.election_ticks * self.config.tick_ms / 1000
        while time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            leader = group.leader
            if leader and leader != self.config.id:
                shard_info = self.replicas.cluster_map.shards.get(group_id)
                if shard_info is not None:
                    # The operator chose this leader: make it the preferred one, so leader
                    # spreading does not move it back.
                    await self.meta_client.propose_quietly(
                        {"op": "set_replicas", "shard": group_id,
                         "replicas": list(shard_info.replicas), "preferred_leader": leader,
                         # CAS: from this node's copy of the map, maybe stale: never
                         # undoes a move committed since (placement/map.py).
                         "expect_replicas": list(shard_info.replicas)})
                return leader
        raise PhalanxError(f"leadership transfer to {target} did not complete in time")

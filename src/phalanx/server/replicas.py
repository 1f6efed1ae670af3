"""The replicas of one node (its replica registry): the Raft groups it holds, their stores
and tasks, and the local copy of the cluster map. See docs/architecture.md ("the node
runtime").

Groups on a node:
- Group 0 is the placement driver (`phalanx.placement.MapMachine`): the replicated cluster map
  (nodes, labels, liveness, shards, desired replicas, reported leaders). Its voters are
  `map.meta_voters` (3 or 5 nodes across zones); every other node holds a learner replica, so
  every node has the map locally, applied in log order, with no extra protocol.
- Groups 1..N are data shards (`phalanx.kv` behind `phalanx.placement.shard.ShardMachine`),
  created where the map places a replica.

The registry answers the questions routing asks ("which local replica serves shard N", "who
leads it", "where is node X's RESP port") from local state only, and opens and closes
replicas for the rooms that decide to (boot, the controllers, resharding).

Rules of this file:
- It decides nothing: which replicas to create or delete is the controllers' business, when to
  split is resharding's. It owns the replicas' lifetimes: every group task is created here and
  cancelled in `close_group`.
- Reads are cheap and never wait: the data path calls `local_group`, `shard_leader` and
  `cluster_map` on every command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from phalanx.errors import ConfigError, StorageError
from phalanx.placement import ClusterMap, MapMachine, NodeInfo, ShardInfo
from phalanx.placement.planner import initial_map
from phalanx.placement.shard import ShardMachine, SplitOff
from phalanx.raft import ConfState, GroupId, InstallSnapshot, NodeId
from phalanx.server.config import NodeConfig, parse_address
from phalanx.server.disk_faults import DiskFaults, FaultyLogStore
from phalanx.server.events import EventLog
from phalanx.server.group import RaftGroup
from phalanx.server.metrics import NodeMetrics
from phalanx.storage import AsyncLogStore, NodeLog, open_log_store
from phalanx.transport.tcp import TcpTransport

logger = logging.getLogger(__name__)

#: The placement driver's group.
META_GROUP = GroupId(0)

#: Called when a replica applies a split entry (see `phalanx.server.resharding`).
SplitHandler = Callable[[RaftGroup, SplitOff, ConfState], Awaitable[None]]


class Replicas:
    """The replicas (Raft groups) of this node and its copy of the cluster map."""

    def __init__(self, config: NodeConfig, metrics: NodeMetrics, transport: TcpTransport,
                 events: EventLog, tick_source: Callable[[], int]) -> None:
        self.config = config
        self.metrics = metrics
        self.transport = transport
        self.events = events
        self.tick_source = tick_source
        self.node_id = config.id
        self.data_dir = Path(config.data_dir)
        #: Set by the node before `open_at_boot`: resharding's handler of split entries.
        self.on_split: SplitHandler | None = None
        #: Set by the node before `open_at_boot`: every replica's snapshot transfer hooks
        #: (`RaftGroup.on_snapshot_offer` / `on_snapshot_sent`, server/snapshot_transfer.py).
        self.snapshot_offer: Callable[[RaftGroup, InstallSnapshot], None] | None = None
        self.snapshot_sent: Callable[[int, InstallSnapshot], None] | None = None
        self.fetched_floor: Callable[[int], int | None] | None = None
        self.running = False
        self.groups: dict[int, RaftGroup] = {}
        self.group_tasks: dict[int, asyncio.Task[None]] = {}
        self.stores: dict[int, AsyncLogStore] = {}
        #: The chaos lab's disk faults (server/disk_faults.py): only with fault injection on.
        self.disk_faults = DiskFaults()
        #: The node's one log (`storage_engine = "node"`, and any group that lives in it),
        #: opened on first use, closed by `close_all`.
        self._node_log: NodeLog | None = None
        #: Data replicas whose store failed to open (group id -> why): not running, waiting
        #: to be rebuilt (`Controllers.rebuild_damaged`).
        self.damaged: dict[int, str] = {}
        # The placement driver's group. A bootstrap node computes the initial map from the
        # config (every bootstrap node computes the same one); a joining node starts empty
        # and receives the map from the driver's leader (a snapshot).
        self.fresh = not (self.data_dir / "groups" / "0").exists()
        bootstrap_nodes = [NodeInfo(id=p.id, peer=p.peer, resp=p.resp, admin=p.admin,
                                    zone=p.zone, region=p.region, host=p.host)
                           for p in config.peers]
        if config.join:
            initial = ClusterMap(version=0, survival_goal=config.survival_goal,
                                 replication_factor=max(config.replication_factor, 0),
                                 nodes={}, shards={}, meta_voters=())
            self.meta_conf = ConfState()
        else:
            initial = initial_map(bootstrap_nodes, config.shards, config.survival_goal,
                                  config.replication_factor)
            self.meta_conf = ConfState(
                voters=tuple(NodeId(n) for n in initial.meta_voters),
                learners=tuple(NodeId(n.id) for n in bootstrap_nodes
                               if n.id not in initial.meta_voters))
        self.initial = initial
        self.map_machine = MapMachine(initial)

    def open_at_boot(self) -> list[int]:
        """Open the driver's replica and the data replicas this node holds at boot: those on
        disk, and at first boot those the initial map gives it. Returns the fresh shards this
        node is the preferred leader of (it campaigns first, so leaders start spread and no
        transfer follows the first election)."""
        self.open_group(META_GROUP, self.meta_conf, self.map_machine)
        for path in sorted((self.data_dir / "groups").glob("*")) if not self.fresh else []:
            if path.name.isdigit() and int(path.name) != 0:
                try:
                    self.open_group(GroupId(int(path.name)), ConfState())
                except StorageError as error:
                    # A corrupt or unreadable store (checksum mismatch, EIO): this replica
                    # does not start, the node serves the rest; it is rebuilt from its peers
                    # (server/consistency.py). Never recreated empty under the same
                    # membership (that would be a wiped voter).
                    self.damaged[int(path.name)] = f"storage failure at open: {error}"
                    logger.error("%s: replica of shard %s not opened: %s", self.node_id,
                                 path.name, error)
        first_campaigns: list[int] = []
        if self.fresh and not self.config.join:
            for shard in self.initial.shards.values():
                if self.config.id in shard.replicas:
                    self.open_group(GroupId(shard.id), ConfState(
                        voters=tuple(NodeId(n) for n in shard.replicas)))
                    if shard.preferred_leader == self.config.id:
                        first_campaigns.append(shard.id)
        return first_campaigns

    # -- lifetimes ---------------------------------------------------------------------------
    def open_group(self, group_id: GroupId, bootstrap: ConfState,
                   machine: MapMachine | None = None) -> RaftGroup:
        """Open (or create, with `bootstrap` as its configuration) a replica's store, and
        start it."""
        store = self.open_store(self.data_dir / "groups" / str(group_id), bootstrap)
        try:
            return self.start_group(group_id, store, machine)
        except StorageError:
            store.store.close()  # its snapshot did not load: release the store's lock
            raise

    def open_store(self, directory: Path, bootstrap: ConfState) -> AsyncLogStore:
        """Open (or create) one replica's log store: in the node log or its own directory's,
        whichever it already has, else the configured engine's (`phalanx.storage`)."""
        durable = open_log_store(directory, bootstrap, self.config.storage_engine,
                                 self.node_log)
        if self.config.enable_fault_injection and directory.name.isdigit() and \
                int(directory.name) != META_GROUP:
            # The chaos lab's disk faults (server/disk_faults.py), data replicas only.
            return AsyncLogStore(FaultyLogStore(durable, self.disk_faults, int(directory.name)))
        return AsyncLogStore(durable)

    def node_log(self) -> NodeLog:
        """The node's one log (opened on first use)."""
        if self._node_log is None:
            self._node_log = NodeLog(self.data_dir / "log", self.data_dir / "groups")
        return self._node_log

    def start_group(self, group_id: GroupId, store: AsyncLogStore,
                    machine: MapMachine | None = None) -> RaftGroup:
        """Start a replica on an open store (its task runs once the node runs)."""
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
        group.on_split = self.on_split
        group.on_snapshot_offer = self.snapshot_offer
        group.on_snapshot_sent = self.snapshot_sent
        group.fetched_floor = self.fetched_floor
        group.tick_source = self.tick_source
        group.on_event = self.events.record
        self.groups[group_id] = group
        self.stores[group_id] = store
        if self.running:
            self.group_tasks[group_id] = asyncio.create_task(group.run(),
                                                             name=f"raft-group-{group_id}")
        logger.info("%s opened replica of %s", self.node_id,
                    "the placement driver" if group_id == META_GROUP else f"shard {group_id}")
        return group

    def start(self) -> None:
        """Run every replica opened so far (and those opened later, as they open)."""
        self.running = True
        for group_id, group in self.groups.items():
            self.group_tasks[group_id] = asyncio.create_task(group.run(),
                                                             name=f"raft-group-{group_id}")

    async def close_group(self, group_id: int, *, delete: bool) -> None:
        """Stop a replica and close its store; with `delete`, remove its data for good."""
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
            if delete:
                await store.drop()
            else:
                await store.close()
        if delete:
            shutil.rmtree(self.data_dir / "groups" / str(group_id), ignore_errors=True)
            self.metrics.remove_group(str(group_id))
            self.events.record("replica-removed", f"{self.node_id} deleted its replica of "
                                                  f"shard {group_id}")

    async def close_all(self) -> None:
        """Stop every replica (keeping its data)."""
        for group_id in list(self.groups):
            await self.close_group(group_id, delete=False)
        if self._node_log is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._node_log.close)
            self._node_log = None

    # -- what routing asks -------------------------------------------------------------------
    @property
    def meta(self) -> RaftGroup:
        """This node's replica of the placement driver's group."""
        return self.groups[META_GROUP]

    @property
    def cluster_map(self) -> ClusterMap:
        """The local copy of the cluster map (as applied by the driver's replica here)."""
        return self.map_machine.map

    def data_groups(self) -> dict[int, RaftGroup]:
        """This node's data replicas by shard id."""
        return {gid: g for gid, g in self.groups.items() if gid != META_GROUP}

    @property
    def default_group(self) -> RaftGroup:
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
        conf = group.raw.conf
        me = NodeId(self.node_id)
        if me in conf.voters or me in conf.learners or me in conf.voters_outgoing:
            return group
        return None

    def node_info(self, node_id: str) -> NodeInfo | None:
        """What the map (else the config) says about a node."""
        info = self.cluster_map.nodes.get(node_id)
        if info is not None:
            return info
        peer = self.config.peer(node_id)
        if peer is None:
            return None
        return NodeInfo(id=peer.id, peer=peer.peer, resp=peer.resp, admin=peer.admin,
                        zone=peer.zone, region=peer.region, host=peer.host)

    def resp_address(self, node_id: str) -> tuple[str, int] | None:
        """(host, port) of a node's RESP listener, or None if the node is unknown."""
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

    # -- the map's standing, for the rooms that decide ---------------------------------------
    def meta_caught_up(self) -> bool:
        """Our copy of the map is usable for decisions: a leader is known, all applied."""
        raw = self.meta.raw
        return bool(raw.lead) and raw.applied >= raw.committed and \
            self.cluster_map.version > 0

    def removed_from_cluster(self) -> bool:
        """True once the driver's configuration no longer lists this node (decommissioned)."""
        raw = self.meta.raw
        conf = raw.conf
        me = NodeId(self.node_id)
        return raw.applied > 0 and me not in conf.voters and me not in conf.learners

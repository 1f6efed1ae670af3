"""The node process: many Raft groups (the placement driver and data shards), one transport,
the RESP and admin servers, and the controllers that keep placement healthy.
See docs/architecture.md ("the node runtime") for the rooms and how a request, a failover and
a placement decision travel through them.

This file is composition only. The rooms it wires:
- `phalanx.server.replicas`: the replica registry (the groups this node holds, the map copy);
- `phalanx.server.controllers`: membership reconciliation, reports, replica and peer sync,
  leadership transfers (every node; the Kubernetes pattern: the map is the desired state and
  each actor moves the actual state toward it, so a leader change mid-way simply resumes);
- `phalanx.server.driver`: the placement driver (on group 0's leader only);
- `phalanx.server.meta_client`: commits map ops and internal commands through the leaders;
- `phalanx.server.resharding`: online splits and merges;
- `phalanx.server.node_status`: status, readiness and gauges (the admin API's `NodeView`);
- `phalanx.server.front`: the RESP front end, which sees only `_FrontEndView` (its
  `ReplicaRegistry` protocol);
- `phalanx.server.admin`: the admin HTTP API, which sees only `_AdminView`.
The process entry point (`serve`, `run_node`, `check_not_a_wiped_member`) is `phalanx.server.process`.

Rules of this file:
- Composition only: the protocol lives in `phalanx.raft`, the data model in `phalanx.kv`,
  placement decisions in `phalanx.placement`, and each concern of the runtime in its room
  above; this file wires them and owns their lifetimes.
- Every background task is created here (or by the registry, for the groups) and cancelled in
  `stop()`; nothing outlives the node.
- The ticker follows the wall clock: after a stall (GC, SIGSTOP) it delivers every missed tick,
  so timeouts and leases measure real time, never less; the missed ticks decide nothing (no
  campaign, no step-down, see `Raft.tick(missed=True)`) until the loop has read what the peers
  sent during the stall and one live tick runs.
- The data path never waits for the driver: routing uses the local map copy and each group's
  own leader; a driver without quorum only pauses healing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from phalanx.errors import ConfigError, PhalanxError
from phalanx.placement import ClusterMap
from phalanx.raft import GroupId, InstallSnapshot, Message
from phalanx.server.aa_home import StrongHome
from phalanx.server.aa_link import RegionLink
from phalanx.server.admin import AdminServer, NodeView
from phalanx.server.config import NodeConfig, parse_address
from phalanx.server.consistency import ConsistencyChecker
from phalanx.server.controllers import Controllers
from phalanx.server.driver import PlacementDriver
from phalanx.server.events import EventLog
from phalanx.server.front.listener import RespServer
from phalanx.server.front.replicas import ReplicaRegistry
from phalanx.server.group import RaftGroup
from phalanx.server.group_snapshots import limit_allocator_retention, trim_heap
from phalanx.server.identity import PeerIncarnations, load_or_create_incarnation
from phalanx.server.meta_client import MetaClient
from phalanx.server.metrics import NodeMetrics
from phalanx.server.node_status import NodeStatus
from phalanx.server.peer_link import client_tls_context
from phalanx.server.replicas import Replicas
from phalanx.server.resharding import Resharding
from phalanx.server.snapshot_transfer import SnapshotFetcher, SnapshotSource
from phalanx.server.stall_watch import StallWatch
from phalanx.transport.faults import FaultRules
from phalanx.transport.tcp import TcpTransport
from phalanx.transport.tls import PeerTls

logger = logging.getLogger(__name__)

#: After a stall of this process, how long the ticker lets the loop read what the peers sent
#: before the live tick that may time out (a few loop turns: the socket read, the frame decode,
#: the step into the group).
STALL_READ_S = 0.002
#: How often the controllers (and the driver, on group 0's leader) run.
CONTROL_INTERVAL_S = 0.1
#: How long the start-up waits for the replay of committed entries before the heap trim.
_REPLAY_TRIM_WAIT_S = 120.0


class _FrontEndView:
    """What the RESP front end sees of this node (`phalanx.server.front.replicas.
    ReplicaRegistry`): the replica registry's routing answers, plus two control-plane entry
    points, PHALANX.META (`MetaClient.propose_meta`) and FAILOVER
    (`Controllers.transfer_leadership`). Nothing else of the node is reachable from the data
    path."""

    def __init__(self, replicas: Replicas, config: NodeConfig, metrics: NodeMetrics,
                 started: float, meta_client: MetaClient, controllers: Controllers,
                 snapshot_source: SnapshotSource) -> None:
        self._replicas = replicas
        self.config = config
        self.metrics = metrics
        self.started = started
        # Bound methods as attributes: the data path calls these on every command, with no
        # extra call frame.
        self.local_group = replicas.local_group
        self.shard_leader = replicas.shard_leader
        self.resp_address = replicas.resp_address
        self.data_groups = replicas.data_groups
        self.propose_meta = meta_client.propose_meta
        self.transfer_leadership = controllers.transfer_leadership
        self.snapshot_chunk = snapshot_source.read

    @property
    def cluster_map(self) -> ClusterMap:
        return self._replicas.map_machine.map

    @property
    def meta(self) -> RaftGroup:
        return self._replicas.meta


class _AdminView:
    """What the admin HTTP API sees of this node (`phalanx.server.admin.NodeView`): status
    and health from `NodeStatus`, operator actions from the controllers, resharding and the
    meta client, and the chaos lab's fault rules."""

    def __init__(self, config: NodeConfig, status: NodeStatus, controllers: Controllers,
                 resharding: Resharding, meta_client: MetaClient,
                 fault_rules: FaultRules, replicas: Replicas) -> None:
        self.node_id = config.id
        self.zone = config.me.zone
        self.region = config.me.region
        self._status = status
        self._controllers = controllers
        self._resharding = resharding
        self._meta_client = meta_client
        self._fault_rules = fault_rules
        self._replicas = replicas

    def status(self) -> dict[str, object]:
        return self._status.status()

    def readiness(self, shard: int | None = None, *,
                  strict: bool = False) -> tuple[bool, str, dict[int, str]]:
        return self._status.readiness(shard, strict=strict)

    def is_primary(self, shard: int | None = None, key: bytes | None = None) -> bool:
        return self._status.is_primary(shard, key)

    def is_replica(self) -> bool:
        return self._status.is_replica()

    def analysis(self, node_availability: float, zone_availability: float,
                 region_availability: float,
                 host_availability: float = 0.999) -> dict[str, object]:
        return self._status.analysis(node_availability, zone_availability, region_availability,
                                     host_availability)

    async def transfer_leadership(self, target: str | None, shard: int | None = None) -> str:
        return await self._controllers.transfer_leadership(target, shard)

    async def set_node_state(self, node_id: str, state: str) -> dict[str, object]:
        return await self._meta_client.set_node_state(node_id, state)

    async def replace_node(self, node_id: str, incarnation: str) -> dict[str, object]:
        return await self._meta_client.replace_node(node_id, incarnation)

    async def split_shard(self, shard: int, at: int | None = None) -> dict[str, object]:
        return await self._resharding.split_shard(shard, at)

    async def merge_shards(self, shard: int, source: int) -> dict[str, object]:
        return await self._resharding.merge_shards(shard, source)

    def set_fault_rules(self, rules: dict[str, object]) -> dict[str, object]:
        """Install network fault rules (chaos lab); raises ConfigError on bad rules."""
        self._fault_rules.update_from_json(rules)
        logger.warning("fault rules installed: %s", self._fault_rules.to_json())
        return self._fault_rules.to_json()

    def get_fault_rules(self) -> dict[str, object]:
        """The fault rules in force."""
        return self._fault_rules.to_json()

    def clear_fault_rules(self) -> None:
        """Remove every fault rule."""
        self._fault_rules.clear()
        logger.warning("fault rules cleared")

    def set_disk_fault(self, rules: dict[str, object]) -> dict[str, object]:
        """Arm a disk fault on one local replica's store (server/disk_faults.py)."""
        armed = self._replicas.disk_faults.arm(rules)
        logger.warning("disk faults armed: %s", armed)
        return armed

    def get_disk_faults(self) -> dict[str, object]:
        return self._replicas.disk_faults.to_json()

    def clear_disk_faults(self) -> None:
        self._replicas.disk_faults.clear()
        logger.warning("disk faults cleared")

    def plant_lie(self, shard: int, key: bytes, value: bytes) -> dict[str, object]:
        """Change one value of the local replica of `shard` without a log entry (a disk that
        lies at run time); ConfigError when no running replica of it is here."""
        group = self._replicas.groups.get(shard)
        if group is None or group.shard is None or group.stopped:
            raise ConfigError(f"no running replica of shard {shard} on this node")
        group.shard.kv.plant_lie(key, value)
        logger.warning("a lie planted in the replica of shard %s at applied index %s",
                       shard, group.raw.applied)
        return {"shard": shard, "applied_index": int(group.raw.applied),
                "role": "leader" if group.is_leader() else "follower"}


class Node:
    """A phalanx node: serves RESP clients, replicates through Raft, answers health checks."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.node_id = config.id
        self.started = time.monotonic()
        self.metrics = NodeMetrics(config.id)
        self.events = EventLog()
        self.fault_rules = FaultRules()
        me = config.me
        peer_host, peer_port = parse_address(me.peer, "peer")
        # Node identity: this data directory's incarnation, and the peers' on record.
        self.incarnation, _ = load_or_create_incarnation(config.data_dir)
        self.identity = PeerIncarnations(config.id, config.data_dir, self.incarnation,
                                         lambda: self.replicas.cluster_map)
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
            incarnation=self.incarnation,
            identity=self.identity,
            tls=PeerTls(config.peer_tls_cert_file, config.peer_tls_key_file,
                        config.peer_tls_ca_file) if config.peer_tls_cert_file else None,
        )
        self.tick_count = 0
        limit_allocator_retention()
        self.replicas = Replicas(config, self.metrics, self.transport, self.events,
                                 lambda: self.tick_count)
        # Snapshots of any size: followers pull them in chunks (server/snapshot_transfer.py).
        self.snapshot_source = SnapshotSource(self._group_directory)
        # The sender's address: from the map, else from the join reply (`MetaClient.
        # resp_address`: a joining node's map arrives with the very snapshot it fetches).
        self.snapshot_fetcher = SnapshotFetcher(
            config, lambda node_id: self.meta_client.resp_address(node_id),
            client_tls_context(config))
        self.replicas.snapshot_offer = self.snapshot_fetcher.offer
        self.replicas.snapshot_sent = self._snapshot_sent
        self.replicas.fetched_floor = self.snapshot_source.fetched_floor
        self.meta_client = MetaClient(self.replicas, config, self.transport,
                                      client_tls_context(config))
        self.resharding = Resharding(self.replicas, config, self.meta_client, self.events)
        self.controllers = Controllers(self.replicas, config, self.transport, self.meta_client,
                                       self.resharding, self.events)
        self.consistency = ConsistencyChecker(self.replicas, config, self.metrics, self.events,
                                              self.meta_client)
        self.driver = PlacementDriver(self.replicas, config, self.events, self.identity,
                                      self.transport)
        self.replicas.on_split = self.resharding.on_split
        #: Fresh shards this node is the preferred leader of: it campaigns first at bootstrap.
        self.first_campaigns = self.replicas.open_at_boot()
        resp_host, resp_port = parse_address(me.resp, "resp")
        front_end: ReplicaRegistry = _FrontEndView(self.replicas, config, self.metrics,
                                                   self.started, self.meta_client,
                                                   self.controllers, self.snapshot_source)
        self.resp = RespServer(front_end, resp_host, resp_port)
        self.status = NodeStatus(self.replicas, config, self.metrics, self.transport,
                                 self.events, self.resp, self.started, self.identity)
        self.status.consistency = self.consistency.status
        view: NodeView = _AdminView(config, self.status, self.controllers, self.resharding,
                                    self.meta_client, self.fault_rules, self.replicas)
        self.admin: AdminServer | None = None
        if me.admin:
            admin_host, admin_port = parse_address(me.admin, "admin")
            self.admin = AdminServer(view, self.metrics, admin_host, admin_port,
                                     token=config.admin_token,
                                     enable_fault_injection=config.enable_fault_injection)
        #: Active-active regions: the link pulling the other regions (aa_link.py).
        self.region_link = RegionLink(config, self.replicas, client_tls_context(config),
                                      self.fault_rules) if config.aa_peers else None
        if self.region_link is not None:
            self.status.region_links = self.region_link.status
            link = self.region_link
            self.metrics.add_render_hook(lambda: link.export(self.metrics))
        #: Strong keys' home region, when it is another one (aa_home.py).
        self.strong_home = StrongHome(config, client_tls_context(config), self.fault_rules) \
            if config.aa_strong_home and config.aa_strong_home != config.aa_region else None
        self.resp.router.strong_home = self.strong_home
        self.tasks: list[asyncio.Task[None]] = []
        #: What held the loop when the ticker ran late (off unless PHALANX_STALL_WATCH_MS).
        self.stall_watch = StallWatch.from_env()
        self.stopping = asyncio.Event()
        # The transport callbacks run for every batch of peer messages: direct references.
        self._groups = self.replicas.groups
        self._last_heard = self.driver.last_heard

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every listener and start the background tasks."""
        await self.transport.start()
        # Opening the stores (the node log's replay, snapshot restores) left freed heap
        # behind: give it back before serving; once more when the entries committed before
        # the restart are applied (`_trim_after_replay`). Issue 15 lever 7, docs/memory.md.
        trim_heap()
        replayed = {group_id: group.raw.committed
                    for group_id, group in self.replicas.groups.items()
                    if group.raw.committed > group.raw.applied}
        self.replicas.start()
        if replayed:
            self.tasks.append(asyncio.create_task(self._trim_after_replay(replayed),
                                                  name="trim-after-replay"))
        if self.stall_watch is not None:
            self.stall_watch.start()
        self.tasks.append(asyncio.create_task(self._ticker(), name="ticker"))
        self.tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        self.tasks.append(asyncio.create_task(self._control(), name="control"))
        if self.config.join:
            self.tasks.append(asyncio.create_task(self.meta_client.join(), name="join"))
        if self.first_campaigns:
            self.tasks.append(asyncio.create_task(self._first_campaign(), name="first-campaign"))
        if self.region_link is not None:
            self.tasks.append(asyncio.create_task(self.region_link.run(), name="region-link"))
        await self.resp.start()
        if self.admin is not None:
            await self.admin.start()
        logger.info("node %s (zone %s) serving RESP on %s, admin on %s, peers on %s",
                    self.config.id, self.config.me.zone, self.config.me.resp,
                    self.config.me.admin or "-", self.config.me.peer)

    async def _trim_after_replay(self, replayed: dict[int, int]) -> None:
        """Once every group has applied the entries committed before the restart (or has
        gone), give the heap the replay freed back to the system (`trim_heap`). Bounded: a
        group that cannot apply within `_REPLAY_TRIM_WAIT_S` is not waited for."""
        deadline = asyncio.get_running_loop().time() + _REPLAY_TRIM_WAIT_S
        for group_id, index in replayed.items():
            group = self.replicas.groups.get(group_id)
            remaining = deadline - asyncio.get_running_loop().time()
            if group is None or remaining <= 0:
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await group.wait_applied(index, remaining)
        trim_heap()
        logger.info("node %s: replayed %d group(s) to their commit index; heap trimmed",
                    self.config.id, len(replayed))

    async def _first_campaign(self) -> None:
        # Give the peers a moment to come up, then campaign (PreVote first) unless a leader
        # already exists; the others wait a full randomized election timeout.
        await asyncio.sleep(min(0.3, self.config.election_ticks * self.config.tick_ms / 2000))
        for group_id in self.first_campaigns:
            group = self.replicas.groups.get(group_id)
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
        if self.stall_watch is not None:
            self.stall_watch.stop()
        self.meta_client.close()
        await self.snapshot_fetcher.close()
        self.snapshot_source.close()
        if self.region_link is not None:
            self.region_link.close()
        if self.strong_home is not None:
            self.strong_home.close()
        await self.replicas.close_all()
        await self.transport.stop()

    def _group_directory(self, group_id: int) -> Path | None:
        group = self.replicas.groups.get(group_id)
        return group.directory if group is not None else None

    def _snapshot_sent(self, group_id: int, message: InstallSnapshot) -> None:
        meta = message.snapshot.meta
        self.snapshot_source.pin(group_id, int(meta.term), int(meta.index))

    def reload_tls(self) -> None:
        """SIGHUP: load the peer TLS certificate files again (new connections use them)."""
        if self.transport.tls is not None:
            self.transport.tls.reload()

    # -- background tasks --------------------------------------------------------------------
    async def _ticker(self) -> None:
        interval = self.config.tick_ms / 1000
        next_tick = time.monotonic() + interval
        stall_ticks = 2 * self.config.heartbeat_ticks
        watch = self.stall_watch
        while True:
            delay = next_tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            if watch is not None:
                watch.beat()
            due = int((now - next_tick) / interval) + 1
            if due > stall_ticks:
                # The loop ran nothing for longer than two heartbeat intervals: heartbeats
                # went out late (issue 15: nothing may stall the loop). Said, never hidden.
                logger.warning("event loop stalled: the ticker ran %.0f ms late",
                               (now - next_tick) * 1000)
            if due > 1:
                # This process was stalled (GC, CPU starvation, SIGSTOP): the missed ticks
                # count time but decide nothing (`Raft.tick(missed=True)`), then the loop reads
                # what the peers sent meanwhile, then one live tick decides. A follower must
                # not start an election over a silence it caused by not running.
                for _ in range(due - 1):
                    self.tick_count += 1
                    for group in list(self.replicas.groups.values()):
                        group.tick(missed=True)
                await asyncio.sleep(STALL_READ_S)
            self.tick_count += 1
            for group in list(self.replicas.groups.values()):
                group.tick()
            next_tick += due * interval

    async def _housekeeping(self) -> None:
        interval = self.config.expire_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                for group in list(self.replicas.groups.values()):
                    group.propose_expirations()
                    group.expire_pending(self.config.request_timeout_ms / 1000)
                    if group.leaderless_for() > self.resp.no_quorum_after_s:
                        # The shard lost its quorum: do not make clients wait out the whole
                        # request timeout for writes it may never confirm.
                        group.fail_pending("the shard lost its quorum (no leader for "
                                           f"{group.leaderless_for():.1f} s)")
                self.status.update_gauges()
                self.snapshot_source.sweep()
            except PhalanxError:
                logger.exception("housekeeping failed")

    async def _control(self) -> None:
        """Every CONTROL_INTERVAL_S: the controllers, then the driver (on group 0's leader),
        then replica sync (see `phalanx.server.controllers`)."""
        while True:
            await asyncio.sleep(CONTROL_INTERVAL_S)
            try:
                self.controllers.sync_peers()
                self.transport.recheck_identities()
                await self.controllers.control_groups()
                # Disks that fail or lie: checks on the shards led here, damaged replicas
                # reported and rebuilt (server/consistency.py).
                self.consistency.start_due_checks()
                self.consistency.vote_on_checks()
                self.consistency.start_due_scrub()
                self.consistency.finish_rebuilds()
                await self.consistency.rebuild_damaged()
                if self.replicas.meta.is_leader():
                    await self.driver.drive()
                else:
                    self.driver.step_down()
                await self.controllers.sync_replicas()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: control loop failed", self.node_id)

    # -- transport callbacks -----------------------------------------------------------------
    def _on_messages(self, peer: str, batch: list[tuple[GroupId, Message]]) -> None:
        # Any message from a node is a heartbeat for the driver's liveness view.
        self._last_heard[peer] = time.monotonic()
        groups = self._groups
        for group_id, message in batch:
            group = groups.get(group_id)
            if group is not None:
                group.step(message)

    def _on_peer_lost(self, peer: str) -> None:
        for group in self.replicas.groups.values():
            group.leader_lost(peer)

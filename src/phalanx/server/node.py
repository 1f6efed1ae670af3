"""The node process: one Raft group (sharding comes next), its transport, RESP and admin servers.

Rules of this file:
- Composition only: the protocol lives in `phalanx.raft`, the data model in `phalanx.kv`, the IO
  in `phalanx.storage` / `phalanx.transport`; this file wires them and owns their lifetimes.
- Every background task is created here and cancelled in `stop()`; nothing outlives the node.
- The ticker follows the wall clock: after a stall (GC, SIGSTOP) it delivers every missed tick,
  so timeouts and leases measure real time, never less.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

from phalanx import __version__
from phalanx.errors import ConfigError, NotLeader, PhalanxError
from phalanx.raft import ConfState, GroupId, Message, NodeId, Role
from phalanx.server.admin import AdminServer
from phalanx.server.config import NodeConfig, parse_address
from phalanx.server.group import RaftGroup
from phalanx.server.metrics import NodeMetrics
from phalanx.server.resp_server import RespServer
from phalanx.storage import AsyncLogStore, SqliteLogStore
from phalanx.transport.faults import FaultRules
from phalanx.transport.tcp import TcpTransport

logger = logging.getLogger(__name__)

#: A follower whose applied index trails the commit index by more than this is not "caught up".
READY_LAG_ENTRIES = 1000


class Node:
    """A phalanx node: serves RESP clients, replicates through Raft, answers health checks."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        self.metrics = NodeMetrics(config.id)
        self.node_id = config.id
        self.zone = config.me.zone
        self.region = config.me.region
        data_dir = Path(config.data_dir)
        bootstrap = ConfState(voters=tuple(sorted(NodeId(p.id) for p in config.peers)))
        self.store = AsyncLogStore(SqliteLogStore(data_dir / "groups" / "0", bootstrap))
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
        self.group = RaftGroup(GroupId(0), config, self.store, self.transport.send_many,
                               self.metrics.group("0"))
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

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every listener and start the background tasks."""
        await self.transport.start()
        self.tasks.append(asyncio.create_task(self.group.run(), name="raft-group-0"))
        self.tasks.append(asyncio.create_task(self._ticker(), name="ticker"))
        self.tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        await self.resp.start()
        if self.admin is not None:
            await self.admin.start()
        logger.info("node %s (zone %s) serving RESP on %s, admin on %s, peers on %s",
                    self.config.id, self.zone, self.config.me.resp, self.config.me.admin or "-",
                    self.config.me.peer)

    async def stop(self) -> None:
        """Stop serving and release every resource."""
        self.stopping.set()
        await self.resp.stop()
        if self.admin is not None:
            await self.admin.stop()
        await self.group.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.transport.stop()
        await self.store.close()

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
            for _ in range(due):
                self.group.tick()
            next_tick += due * interval

    async def _housekeeping(self) -> None:
        interval = self.config.expire_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                self.group.propose_expirations()
                self.group.expire_pending(self.config.request_timeout_ms / 1000)
                self._update_gauges()
            except PhalanxError:
                logger.exception("housekeeping failed")

    def _update_gauges(self) -> None:
        group_metrics = self.metrics.group("0")
        group_metrics.set_keys(self.group.machine.key_count)
        raft = self.group.raw.raft
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

    # -- transport callbacks -----------------------------------------------------------------
    def _on_messages(self, peer: str, batch: list[tuple[GroupId, Message]]) -> None:
        for group_id, message in batch:
            if group_id == 0:
                self.group.step(message)

    def _on_peer_lost(self, peer: str) -> None:
        self.group.leader_lost(peer)

    # -- NodeView (admin HTTP) ---------------------------------------------------------------
    def status(self) -> dict[str, object]:
        """The JSON status of this node (admin `/status`)."""
        raft = self.group.raw.raft
        last = raft.log.last_index()
        transport_peers = self.transport.stats().get("peers", {})
        peers: list[dict[str, object]] = []
        for peer in self.config.peers:
            if peer.id == self.config.id:
                continue
            entry: dict[str, object] = {"id": peer.id, "zone": peer.zone, "region": peer.region,
                                        "resp": peer.resp, "admin": peer.admin}
            progress = raft.progress.get(NodeId(peer.id))
            if raft.role is Role.LEADER and progress is not None:
                entry.update(match=progress.match, next=progress.next,
                             state=progress.state.value, lag_entries=last - progress.match,
                             recent_active=progress.recent_active,
                             learner=progress.is_learner)
            if isinstance(transport_peers, dict):
                peer_stats = transport_peers.get(peer.id)
                if isinstance(peer_stats, dict):
                    entry["connected"] = bool(peer_stats.get("connected"))
            peers.append(entry)
        return {
            "node": self.config.id,
            "zone": self.zone,
            "region": self.region,
            "version": __version__,
            "role": raft.role.value,
            "term": raft.term,
            "leader": raft.lead or None,
            "commit_index": raft.log.committed,
            "applied_index": raft.log.applied,
            "last_index": last,
            "snapshot_index": self.store.snapshot().meta.index,
            "voters": list(raft.conf.voters),
            "learners": list(raft.conf.learners),
            "keys": self.group.machine.key_count,
            "peers": peers,
            "resp": self.config.me.resp,
            "admin": self.config.me.admin,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "leader_changes": self.group.leader_changes,
            "clients": len(self.resp.clients),
            "storage_error": self.group.fatal_error,
        }

    def readiness(self) -> tuple[bool, str]:
        """Ready = replica running, a leader known, and caught up with the commit index."""
        group = self.group
        if group.stopped:
            return False, f"replica stopped: {group.fatal_error}"
        raft = group.raw.raft
        if not raft.lead:
            return False, "no leader known (election in progress or no quorum)"
        lag = raft.log.committed - raft.log.applied
        if lag > READY_LAG_ENTRIES:
            return False, f"catching up: {lag} committed entries not applied yet"
        return True, f"serving ({raft.role.value}, leader {raft.lead})"

    def is_primary(self) -> bool:
        """True only on the leader (HAProxy's writer check)."""
        return not self.group.stopped and self.group.is_leader()

    def is_replica(self) -> bool:
        """True on a healthy follower: knows a leader and is caught up."""
        ready, _ = self.readiness()
        return ready and self.group.raw.raft.role is Role.FOLLOWER

    async def transfer_leadership(self, target: str | None) -> str:
        """Move leadership to `target` (or the most up-to-date follower); returns the leader."""
        group = self.group
        raft = group.raw.raft
        if raft.role is not Role.LEADER:
            raise NotLeader(raft.lead or None, f"this node is not the leader (leader: "
                                               f"{raft.lead or 'unknown'}); ask the leader")
        if target is None:
            candidates = [(progress.match, node) for node, progress in raft.progress.items()
                          if node != self.config.id and node in raft.conf.voters]
            if not candidates:
                raise ConfigError("there is no other voter to transfer leadership to")
            target = max(candidates)[1]
        if self.config.peer(target) is None:
            raise ConfigError(f"unknown node {target!r}")
        if target == self.config.id:
            return target
        group.transfer_leadership(target)
        deadline = time.monotonic() + 4 * self.config.election_ticks * self.config.tick_ms / 1000
        while time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            leader = group.leader
            if leader and leader != self.config.id:
                return leader
        raise PhalanxError(f"leadership transfer to {target} did not complete in time")

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

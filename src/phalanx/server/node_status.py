"""What a node says about itself: `/status`, readiness, the health-check answers, the
topology analysis, and the gauges refreshed by housekeeping. The admin API
(`phalanx.server.admin`) reaches these through the node's `NodeView`. See
docs/architecture.md ("the node runtime").

Rules of this file:
- Read-only: nothing here changes a replica, the map or the transport; every answer is built
  from local state at call time, with no I/O (health checks arrive every 100-200 ms).
- The analysis of single points of failure is cached per map version (`/status` is polled
  often; the analysis is not free).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sized
from typing import Protocol

from phalanx import __version__
from phalanx.errors import ConfigError
from phalanx.raft import NodeId, Role
from phalanx.server.config import NodeConfig
from phalanx.server.events import EventLog
from phalanx.server.group import RaftGroup
from phalanx.server.identity import PeerIncarnations
from phalanx.server.metrics import NodeMetrics
from phalanx.server.replicas import META_GROUP, Replicas
from phalanx.transport.tcp import TcpTransport

#: A follower whose applied index trails the commit index by more than this is not "caught up".
READY_LAG_ENTRIES = 1000


class FrontEndStats(Protocol):
    """The RESP front end's counters that `/status` shows."""

    @property
    def clients(self) -> Sized:
        """The connected clients."""
        ...

    @property
    def total_commands(self) -> int:
        """Commands served since start."""
        ...


class NodeStatus:
    """Status, readiness and gauges of one node."""

    def __init__(self, replicas: Replicas, config: NodeConfig, metrics: NodeMetrics,
                 transport: TcpTransport, events: EventLog, front_end: FrontEndStats,
                 started: float, identity: PeerIncarnations | None = None) -> None:
        self.replicas = replicas
        self.identity = identity
        self.config = config
        self.metrics = metrics
        self.transport = transport
        self.events = events
        self.front_end = front_end
        self.started = started
        self.node_id = config.id
        self.spof_cache: tuple[int, list[object]] = (-1, [])
        self.peer_totals: dict[tuple[str, str], int] = {}
        #: The consistency checker's section of `/status` (set by the node).
        self.consistency: Callable[[], dict[str, object]] | None = None
        #: The region links of an active-active setup (server/aa_link.py; set by the node).
        self.region_links: Callable[[], list[dict[str, object]]] | None = None

    # -- /status -----------------------------------------------------------------------------
    def _group_status(self, group_id: int, group: RaftGroup) -> dict[str, object]:
        raw = group.raw
        last = raw.last_index
        conf = raw.conf
        entry: dict[str, object] = {
            "role": raw.role.value,
            "term": raw.term,
            "leader": raw.lead or None,
            "commit_index": raw.committed,
            "applied_index": raw.applied,
            "last_index": last,
            "snapshot_index": group.store.snapshot_meta().index,
            "voters": sorted(conf.voters),
            "learners": sorted(conf.learners),
            "keys": group.machine.key_count,
            "leader_changes": group.leader_changes,
            "storage_error": group.fatal_error,
        }
        released = group.store.released()
        if released is not None:
            # Entries whose data is only in the node log's file, and how many were read back
            # (a lagging follower's catch-up, a segment rewrite): issue 15 lever 7.
            entry["log_released_index"], entry["log_read_back_entries"] = released
        if raw.role is not Role.LEADER:
            # How stale a READONLY read here may be: time since the leader was last heard.
            entry["staleness_ms"] = group.staleness_ms()
        if raw.role is Role.LEADER:
            entry["progress"] = {
                node: {"match": p.match, "lag_entries": last - p.match, "state": p.state,
                       "learner": p.is_learner, "recent_active": p.recent_active}
                for node, p in raw.peers().items() if node != self.node_id}
        return entry

    def status(self) -> dict[str, object]:
        """The JSON status of this node (admin `/status`).

        Top-level role/term/leader/... describe the map's first shard (the only one in a
        single-shard cluster): role "none" and term null when this node holds no replica of it;
        `shards` lists every shard of the map with its replicas, leader and lag, `local` this
        node's replicas (the placement driver's group is "0").
        """
        replicas = self.replicas
        cmap = replicas.cluster_map
        me = self.config.me
        transport_stats = self.transport.stats()
        transport_peers = transport_stats.get("peers", {})
        peers: list[dict[str, object]] = []
        for info in cmap.nodes.values() or []:
            if info.id == self.node_id:
                continue
            entry: dict[str, object] = {"id": info.id, "zone": info.zone, "region": info.region,
                                        "host": info.host, "resp": info.resp,
                                        "admin": info.admin, "state": info.state}
            if isinstance(transport_peers, dict):
                peer_stats = transport_peers.get(info.id)
                if isinstance(peer_stats, dict):
                    entry["connected"] = bool(peer_stats.get("connected"))
                    # Many groups share one connection: messages per frame shows the batching
                    # (heartbeats of every group to a peer coalesced into one frame).
                    entry["messages_sent"] = peer_stats.get("messages_sent")
                    entry["frames_sent"] = peer_stats.get("frames_sent")
                    entry["messages_received"] = peer_stats.get("messages_received")
                    entry["incarnation"] = peer_stats.get("incarnation")
                    if peer_stats.get("refusal"):
                        entry["refusal"] = peer_stats.get("refusal")
            peers.append(entry)
        local = {str(gid): self._group_status(gid, g)
                 for gid, g in sorted(replicas.groups.items())}
        shards = []
        for shard in sorted(cmap.shards.values(), key=lambda s: s.id):
            item: dict[str, object] = shard.to_json()
            item["leader"] = replicas.shard_leader(shard) or None
            item["fully_replicated"] = shard.fully_replicated(cmap.nodes)
            group = replicas.local_group(shard.id)
            if group is not None and group.is_leader():
                last = group.raw.last_index
                item["lag"] = {node: last - p.match for node, p in group.raw.peers().items()
                               if node != self.node_id}
            shards.append(item)
        status: dict[str, object] = {
            "node": self.config.id,
            "zone": me.zone,
            "region": me.region,
            "host": me.host,
            "version": __version__,
            "incarnation": transport_stats.get("incarnation"),
            "peer_tls": bool(transport_stats.get("tls")),
            "refused_by": self.refused_by(),
            "peers": peers,
            "resp": me.resp,
            "admin": me.admin,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "clients": len(self.front_end.clients),
            "redirect": self.config.redirect,
            "map_version": cmap.version,
            "survival_goal": cmap.survival_goal,
            "replication_factor": cmap.replication_factor,
            "nodes": [n.to_json() for n in cmap.nodes.values()],
            "meta": {**self._group_status(META_GROUP, replicas.meta),
                     "desired_voters": list(cmap.meta_voters),
                     "driver": replicas.meta.is_leader()},
            "shards": shards,
            "local": local,
            "fully_replicated": all(bool(s["fully_replicated"]) for s in shards),
            "single_points_of_failure": self._spofs(),
            "commands_total": self.front_end.total_commands,
            "commit_latency_ms": self._recent_latency_ms(),
            "events": self.events.recent(50),
        }
        if self.consistency is not None:
            status["consistency"] = self.consistency()
        if self.config.aa_region:
            status["active_active"] = {
                "region": self.config.aa_region,
                "prefixes": [p.decode("utf-8", "replace")
                             for p in self.config.aa_prefix_list()],
                "links": self.region_links() if self.region_links is not None else []}
        # The top-level role/term/leader/... describe the FIRST shard of the map (the only one
        # in a single-shard cluster), as every node sees it: its own replica's view, else the
        # map's leader hint with role "none" and term null (a node holding no replica of that
        # shard, e.g. the 4th node of a 1-shard cluster of 3 replicas, knows no term of it:
        # reporting 0 made a healthy spare look like a node that never joined). Tools that
        # speak of "the leader" mean this one.
        first = min(cmap.shards) if cmap.shards else None
        group = replicas.local_group(first) if first is not None else None
        if group is not None and first is not None:
            default = self._group_status(first, group)
            status.update({key: default[key] for key in (
                "role", "term", "leader", "commit_index", "applied_index", "last_index",
                "snapshot_index", "voters", "learners", "keys", "leader_changes",
                "storage_error")})
            raw = group.raw
            if raw.role is Role.LEADER:
                last = raw.last_index
                progresses = raw.peers()
                for peer in peers:
                    progress = progresses.get(NodeId(str(peer["id"])))
                    if progress is not None:
                        peer.update(match=progress.match, next=progress.next,
                                    state=progress.state,
                                    lag_entries=last - progress.match,
                                    recent_active=progress.recent_active,
                                    learner=progress.is_learner)
        else:
            hint = cmap.shards[first].leader if first is not None else ""
            status.update(role="none", term=None, leader=hint or None)
        status["shard"] = first
        return status

    def _recent_latency_ms(self) -> dict[str, float] | None:
        """p50/p99 of the last writes proposed on this node (all its groups), in ms."""
        samples = sorted(x for g in self.replicas.groups.values() for x in g.recent_commits)
        if not samples:
            return None
        def at(q: float) -> float:
            return round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1000, 3)
        return {"p50": at(0.5), "p99": at(0.99), "samples": len(samples)}

    def _spofs(self) -> list[object]:
        """The analysis's single points of failure at default figures, cached per map version
        (/status is polled often; the analysis is not free)."""
        cmap = self.replicas.cluster_map
        if self.spof_cache[0] != cmap.version:
            from phalanx.placement.analysis import analyze

            report = analyze(cmap)
            spofs = report.get("spofs")
            self.spof_cache = (cmap.version, list(spofs) if isinstance(spofs, list) else [])
        return self.spof_cache[1]

    def analysis(self, node_availability: float, zone_availability: float,
                 region_availability: float,
                 host_availability: float = 0.999) -> dict[str, object]:
        """Single points of failure and estimated nines of the live topology."""
        from phalanx.placement.analysis import analyze

        report: dict[str, object] = analyze(self.replicas.cluster_map,
                                            node_availability=node_availability,
                                            zone_availability=zone_availability,
                                            region_availability=region_availability,
                                            host_availability=host_availability)
        if self.config.aa_region:
            report["cap"] = self._cap(report, region_availability)
        return report

    def _cap(self, report: dict[str, object], region_availability: float) -> dict[str, object]:
        """The CAP section of an active-active node's analysis (placement/cap.py)."""
        from phalanx.placement.cap import cap_analysis

        cost = report.get("cost")
        per_shard = cost.get("replicas_per_shard", 0.0) if isinstance(cost, dict) else 0.0
        config = self.config
        return cap_analysis(
            region=config.aa_region,
            regions=sorted([config.aa_region, *config.aa_peer_map()]),
            strong_home=config.aa_strong_home,
            prefixes=[prefix.decode(errors="replace") for prefix in config.aa_prefix_list()],
            shards=len(self.replicas.cluster_map.shards),
            replicas_per_shard=float(per_shard) if isinstance(per_shard, int | float) else 0.0,
            home_survival_goal=self.replicas.cluster_map.survival_goal,
            poll_ms=config.aa_poll_ms, region_availability=region_availability)

    # -- readiness and health checks ---------------------------------------------------------
    def refused_by(self) -> dict[str, str]:
        """The peers that refuse this node's incarnation (`phalanx.server.identity`), with why."""
        return dict(self.identity.refused_by_peers) if self.identity is not None else {}

    def readiness(self, shard: int | None = None, *,
                  strict: bool = False) -> tuple[bool, str, dict[int, str]]:
        """(ready?, why, the degraded shards {shard id: why it cannot be served from here}).

        Three questions, one answer each (issue 14, per-shard readiness):
        - default: can this node serve SOME shard? Ready while at least one shard of the map is
          served from here (its local replica knows a leader and is caught up, or, for a shard
          without a local replica, a live leader is known to forward to); the shards that
          cannot be served are listed. So in a multi-shard cluster a load balancer keeps a
          node that lost one shard's quorum: its other shards' keys still work through it, and
          the lost shard's keys fail the same on every node.
        - `shard=N`: can this node serve shard N now?
        - `strict`: is every LOCAL replica healthy (the old all-or-nothing answer)?
        Never ready, whatever is asked, while the node itself cannot serve: refused by its
        peers, the placement driver's replica stopped, removed from the cluster, or no map yet.
        """
        blocked = self._node_blocked()
        if blocked is not None:
            return False, blocked, {}
        states = self._shard_states()
        degraded = {shard_id: why for shard_id, why in states.items() if why is not None}
        if shard is not None:
            if shard not in states:
                return False, f"shard {shard} is not in the cluster map", degraded
            why = states[shard]
            if why is not None:
                return False, f"shard {shard}: {why}", degraded
            return True, f"serving shard {shard}", degraded
        local = self.replicas.data_groups()
        if strict:
            for shard_id in sorted(degraded):
                if shard_id in local or shard_id in self.replicas.damaged:
                    return False, f"shard {shard_id}: {degraded[shard_id]}", degraded
        elif states and len(degraded) == len(states):
            return False, "no shard can be served from this node: " + "; ".join(
                f"shard {shard_id}: {why}" for shard_id, why in sorted(degraded.items())), \
                degraded
        try:
            group = self.replicas.default_group
        except ConfigError:
            reason = "serving (no local shard replica; forwarding)"
        else:
            reason = f"serving ({group.raw.role.value}, leader {group.leader or 'none'})"
        if degraded:
            reason += "; degraded: " + ", ".join(f"shard {shard_id} ({why})"
                                                 for shard_id, why in sorted(degraded.items()))
        return True, reason, degraded

    def _node_blocked(self) -> str | None:
        """Why this node can serve nothing at all, or None."""
        replicas = self.replicas
        refused = self.refused_by()
        if refused:
            return (f"refused by peer(s) {', '.join(sorted(refused))}: this data directory "
                    f"is not the incarnation the cluster knows (run `phalanx replace "
                    f"{self.node_id}`)")
        meta = replicas.meta
        if meta.stopped:
            return f"placement driver replica stopped: {meta.fatal_error}"
        if replicas.removed_from_cluster():
            return "this node was removed from the cluster (decommissioned); stop it"
        if replicas.cluster_map.version == 0:
            return "waiting for the cluster map (joining)"
        return None

    def _shard_states(self) -> dict[int, str | None]:
        """Every shard of the map and of this node: None when it is served from here now,
        else why not.

        A local replica serves when it knows a leader and is caught up. A replica the map
        gives this node but whose configuration does not list it yet has received nothing
        from its leader (no snapshot: the configuration comes with it): a new replica, or one
        whose data was wiped. It has applied nothing, and its applied and commit indexes
        (both 0) cannot say how far behind it is, so it is catching up until the snapshot is
        installed. (Its clients are served meanwhile by forwarding: `local_group` does not
        count it.) A replica that is being removed (its configuration no longer lists this
        node, nor does the map) does not count: the shard is served as a remote one, by
        forwarding to a leader that is known and connected (`Replicas.shard_leader`).
        """
        replicas = self.replicas
        cluster_map = replicas.cluster_map
        me = NodeId(self.node_id)
        states: dict[int, str | None] = {}
        for group_id, why in replicas.damaged.items():
            states[group_id] = f"replica damaged (not opened): {why}"
        for group_id, group in sorted(replicas.data_groups().items()):
            if group.stopped:
                states[group_id] = f"replica stopped: {group.fatal_error}"
                continue
            raw = group.raw
            conf = raw.conf
            if me not in conf.voters and me not in conf.learners:
                shard = cluster_map.shards.get(group_id)
                wanted = shard is not None and (self.node_id in shard.replicas
                                                or self.node_id in shard.voters
                                                or self.node_id in shard.learners)
                if wanted and not conf.voters:
                    states[group_id] = (f"catching up (waiting for a snapshot from the "
                                        f"leader; {raw.applied} entries applied)")
                continue  # a replica being removed: served as a remote shard below
            if not raw.lead:
                leaderless = group.leaderless_for()
                states[group_id] = ("no leader known (election or no quorum" +
                                    (f"; none for {leaderless:.1f} s)" if leaderless else ")"))
                continue
            lag = raw.committed - raw.applied
            states[group_id] = (f"catching up ({lag} entries not applied)"
                                if lag > READY_LAG_ENTRIES else None)
        for shard_id, shard in sorted(cluster_map.shards.items()):
            if shard_id in states:
                continue
            states[shard_id] = None if replicas.shard_leader(shard) else \
                "no reachable leader known to forward to"
        return states

    def is_primary(self, shard: int | None = None, key: bytes | None = None) -> bool:
        """True only on the leader of the shard (HAProxy's writer check)."""
        try:
            group = self.replicas.local_group(self.replicas.shard_for(shard, key))
        except ConfigError:
            return False
        return group is not None and not group.stopped and group.is_leader()

    def is_replica(self) -> bool:
        """True on a healthy follower: knows a leader and is caught up."""
        ready, _, _ = self.readiness(strict=True)
        try:
            group = self.replicas.local_group(self.replicas.shard_for())
        except ConfigError:
            return False
        return ready and group is not None and group.raw.role is Role.FOLLOWER

    # -- gauges (housekeeping) ---------------------------------------------------------------
    def update_gauges(self) -> None:
        """Refresh the Prometheus gauges and the per-peer message counters."""
        for group in list(self.replicas.groups.values()):
            group_metrics = group.metrics
            group_metrics.set_keys(group.machine.key_count)
            raw = group.raw
            if raw.role is Role.LEADER:
                last = raw.last_index
                for node_id, progress in raw.peers().items():
                    if node_id != self.config.id:
                        group_metrics.set_replication_lag(node_id, last - progress.match)
        stats = self.transport.stats()
        peers = stats.get("peers", {})
        if isinstance(peers, dict):
            self.metrics.set_peer_identity(self.refused_by(), list(peers),
                                           int(stats.get("refused_connections") or 0),
                                           int(stats.get("tls_reloads") or 0))
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

"""The placement driver: runs on the leader of group 0 only, and turns the cluster map's
desired state into map ops. See docs/architecture.md ("the placement driver and the
controllers").

Each round (every control interval, see `phalanx.server.node`):
- A cluster without a secret gets its internal token first, once (`set_internal_token`: the
  key internal commands are signed with, server/internal_auth.py).
- Node liveness from peer traffic: any message from a node is a heartbeat (the driver's own
  Raft heartbeats reach every node, a learner or a voter of group 0, so every node answers).
  `dead_after_ms` of silence declares a node dead; a dead node heard again is alive.
- Otherwise `phalanx.placement.planner.plan` decides replacements, rebalancing and leader
  spreading, and drained decommissioned nodes are removed.
- Each op is committed through group 0 here; the controllers on every node then move the
  actual state toward the new map (the Kubernetes pattern: a new driver simply resumes).

Rules of this file:
- Decisions come from `phalanx.placement` (pure); this file gathers liveness, commits the ops
  one at a time, and records what it did. One round at a time (`busy`).
- It only acts on a caught-up copy of the map, and stops as soon as it is no longer leader.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time

from phalanx.errors import PhalanxError
from phalanx.placement import encode_op
from phalanx.placement.planner import drain_done, plan
from phalanx.server.config import NodeConfig
from phalanx.server.events import EventLog
from phalanx.server.identity import PeerIncarnations, recording_ops
from phalanx.server.meta_client import describe_reply
from phalanx.server.replicas import Replicas
from phalanx.transport.tcp import TcpTransport

logger = logging.getLogger(__name__)


def describe_op(op: dict[str, object]) -> str:
    """A map op as one line of text."""
    kind = op.get("op")
    if kind == "set_replicas":
        return (f"shard {op.get('shard')} replicas -> {','.join(map(str, op.get('replicas') or []))}"  # type: ignore[call-overload]
                f" (preferred leader {op.get('preferred_leader') or '-'})")
    if kind == "set_meta_voters":
        return f"driver voters -> {','.join(map(str, op.get('voters') or []))}"  # type: ignore[call-overload]
    return json.dumps(op, sort_keys=True)


class PlacementDriver:
    """Node liveness and placement decisions, on the driver group's leader."""

    def __init__(self, replicas: Replicas, config: NodeConfig, events: EventLog,
                 identity: PeerIncarnations | None = None,
                 transport: TcpTransport | None = None) -> None:
        self.replicas = replicas
        self.identity = identity
        self.transport = transport
        self.config = config
        self.events = events
        self.node_id = config.id
        #: When each node was last heard from (any peer message), by `time.monotonic()`.
        self.last_heard: dict[str, float] = {}
        #: Since when this node leads the driver (None: it does not).
        self.since: float | None = None
        self.busy = False

    def heard_from(self, node_id: str) -> None:
        """A message from `node_id` arrived: it is alive."""
        self.last_heard[node_id] = time.monotonic()

    def step_down(self) -> None:
        """This node no longer leads the driver's group."""
        self.since = None

    def _identity_ops(self) -> list[dict[str, object]]:
        """Record first-seen incarnations; finish replacements (`phalanx.server.identity`)."""
        if self.identity is None or self.transport is None:
            return []
        seen = {self.node_id: self.identity.incarnation}
        peers = self.transport.stats().get("peers", {})
        for peer_id, stats in peers.items():
            incarnation = stats.get("incarnation") if isinstance(stats, dict) else None
            if isinstance(incarnation, str) and incarnation:
                seen[peer_id] = incarnation
        return recording_ops(self.replicas.cluster_map, seen, self.replicas.meta.raw.conf)

    async def drive(self) -> None:
        """One round of the driver (the caller leads group 0)."""
        now = time.monotonic()
        cmap = self.replicas.cluster_map
        if self.since is None:
            self.since = now
            for info in cmap.nodes.values():
                self.last_heard.setdefault(info.id, now)
            self.events.record("driver", f"{self.node_id} leads the placement driver")
        if self.busy or not self.replicas.meta_caught_up():
            return
        self.busy = True
        try:
            cmap = self.replicas.cluster_map
            ops: list[dict[str, object]] = []
            if not cmap.internal_token and not self.config.cluster_secret:
                # The key internal commands are signed with (server/internal_auth.py): first,
                # once; never logged.
                ops.append({"op": "set_internal_token", "token": secrets.token_hex(32),
                            "at_ms": int(time.time() * 1000)})
            dead_after = self.config.dead_after_ms / 1000
            for info in cmap.nodes.values():
                heard = now if info.id == self.node_id else \
                    self.last_heard.get(info.id, self.since)
                silent = now - max(heard, self.since)
                if info.state == "alive" and silent > dead_after:
                    ops.append({"op": "set_node_state", "node": info.id, "state": "dead"})
                    self.events.record("node-dead", f"{info.id} silent for {silent:.1f} s: "
                                                    f"declared dead; its replicas will be "
                                                    f"re-created")
                elif info.state == "dead" and now - heard < 1.0:
                    ops.append({"op": "set_node_state", "node": info.id, "state": "alive"})
                    self.events.record("node-alive", f"{info.id} is back")
            if not ops:
                ops = self._identity_ops()
            if not ops:
                ops = plan(cmap)
                for info in cmap.nodes.values():
                    if info.state == "decommissioned" and drain_done(cmap, info.id):
                        ops.append({"op": "remove_node", "node": info.id})
            for op in ops:
                if op.get("op") in ("set_incarnation", "finish_replace"):
                    self.events.record("identity", describe_op(op))
                    logger.info("%s driver: %s", self.node_id, describe_op(op))
                group = self.replicas.meta
                if not group.is_leader():
                    return
                reply = await asyncio.wait_for(group.propose_data(encode_op(op)),
                                               self.config.request_timeout_ms / 1000)
                if op.get("op") in ("set_replicas", "set_meta_voters", "remove_node"):
                    self.events.record("placement", f"{describe_op(op)} -> "
                                                    f"{describe_reply(reply)}")
                    logger.info("%s driver: %s -> %s", self.node_id, describe_op(op),
                                describe_reply(reply))
        except (PhalanxError, TimeoutError) as error:
            logger.info("%s driver: %s", self.node_id, error)
        finally:
            self.busy = False

"""`phalanx replace NODE`: bring back a node whose data directory was wiped (or replaced) as a
new member. See docs/architecture.md ("Node identity") and `phalanx.server.identity`.

The node presents a new incarnation, which every peer refuses while the cluster map records
the old one. Replacing it: the map records the new incarnation as `replacing` (admin
`POST /replace`); the controllers remove the node from every group as its old self; the driver
then makes the new incarnation THE incarnation; peers accept it; the node is added back as a
learner, receives a snapshot, and is promoted. This module finds the new incarnation, asks
any node to start the replacement, and reads the progress from the newest map the nodes show.

Rules of this file: the nodes are reached only through their admin API (`phalanx.ops.admin`)
and the cluster file; the new incarnation comes from `--incarnation`, else from the node's own
`/status`, else from its data directory (a local cluster).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from phalanx.errors import ClusterError
from phalanx.ops.admin import admin_request, query_status
from phalanx.ops.cluster_file import ClusterFile, NodeEntry
from phalanx.server.identity import read_incarnation


def find_incarnation(entry: NodeEntry, timeout: float = 2.0) -> tuple[str, str]:
    """The incarnation NODE runs as now, and where it was found: its `/status` (it runs),
    else its data directory. ClusterError when neither says."""
    if entry.admin:
        try:
            code, payload = admin_request(entry.admin, "/status", timeout=timeout)
        except OSError:
            code, payload = 0, None
        if code == 200 and isinstance(payload, dict) and payload.get("node") == entry.id:
            incarnation = payload.get("incarnation")
            if isinstance(incarnation, str) and incarnation:
                return incarnation, f"the /status of {entry.id} at {entry.admin}"
    if entry.data_dir:
        incarnation = read_incarnation(entry.data_dir)
        if incarnation is not None:
            return incarnation, f"the data directory {entry.data_dir}"
    raise ClusterError(f"cannot tell which incarnation {entry.id} runs as: it does not answer "
                       f"and {entry.data_dir or 'its data directory'} holds none; start it "
                       f"once (it creates its incarnation and logs it), or pass --incarnation")


@dataclass(frozen=True, slots=True)
class ReplaceProgress:
    """Where a replacement stands, from the newest map the nodes show."""

    #: "removing" (the old incarnation leaves every group), "catching-up" (the new one is
    #: accepted and being added back), "done", or "unknown" (no node shows the node).
    stage: str
    detail: str

    @property
    def done(self) -> bool:
        return self.stage == "done"


def newest_status(cluster: ClusterFile, timeout: float = 1.0) -> dict[str, Any] | None:
    """The /status of the node that shows the newest cluster map (None: no node answers)."""
    best: dict[str, Any] | None = None
    for status in query_status(cluster.nodes, timeout=timeout):
        payload = status.status
        if payload is None:
            continue
        if best is None or int(payload.get("map_version") or 0) > int(best.get("map_version")
                                                                       or 0):
            best = payload
    return best


def replace_progress(status: dict[str, Any], node_id: str, incarnation: str) -> ReplaceProgress:
    """How far the replacement of `node_id` by `incarnation` went, judged from one /status."""
    nodes = {n.get("id"): n for n in status.get("nodes") or [] if isinstance(n, dict)}
    info = nodes.get(node_id)
    if info is None:
        return ReplaceProgress("unknown", f"the map (version {status.get('map_version')}) "
                                          f"does not list {node_id}")
    if info.get("replacing") == incarnation:
        holding = [str(s.get("id")) for s in status.get("shards") or []
                   if node_id in (s.get("voters") or []) or node_id in (s.get("learners") or [])]
        where = f"still in shard(s) {', '.join(holding)}" if holding else \
            "out of every shard; leaving the placement driver's group"
        return ReplaceProgress("removing", f"removing the old incarnation "
                                           f"{info.get('incarnation') or '?'} ({where})")
    if info.get("incarnation") != incarnation:
        return ReplaceProgress("unknown", f"{node_id} is incarnation "
                                          f"{info.get('incarnation') or '(none recorded)'}, "
                                          f"not {incarnation}")
    pending = [str(s.get("id")) for s in status.get("shards") or []
               if node_id in (s.get("replicas") or []) and node_id not in (s.get("voters") or [])]
    if pending:
        return ReplaceProgress("catching-up", f"accepted as incarnation {incarnation}; being "
                                              f"added back to shard(s) {', '.join(pending)} "
                                              f"(learner, snapshot, voter)")
    meta = status.get("meta") or {}
    if node_id in (meta.get("desired_voters") or []) and node_id not in (meta.get("voters")
                                                                       or []):
        return ReplaceProgress("catching-up", "being added back to the placement driver")
    return ReplaceProgress("done", f"{node_id} is incarnation {incarnation}, a member again")


def start_replace(cluster: ClusterFile, node_id: str, incarnation: str,
                  token_for: Any, timeout: float = 15.0) -> dict[str, Any]:
    """Ask the nodes, one after another, to start the replacement (admin `POST /replace`);
    the first that answers decides. `token_for(entry)` gives each node's admin token.
    ClusterError with the node's answer when it is refused or no node could do it."""
    last = "no node has an admin address"
    for entry in cluster.nodes:
        if not entry.admin or entry.id == node_id:
            continue
        try:
            code, payload = admin_request(entry.admin, "/replace", method="POST",
                                          body={"node": node_id, "incarnation": incarnation},
                                          token=token_for(entry), timeout=timeout)
        except OSError as error:
            last = f"{entry.id}: {error}"
            continue
        if code == 200 and isinstance(payload, dict):
            return payload
        message = payload.get("error") if isinstance(payload, dict) else payload
        if code in (400, 401, 403):
            raise ClusterError(f"{entry.id} refused: {message}")
        last = f"{entry.id}: HTTP {code}: {message}"
    raise ClusterError(f"no node could start the replacement ({last})")

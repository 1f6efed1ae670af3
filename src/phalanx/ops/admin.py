"""Talking to running nodes from outside: their admin HTTP API, what their /status says, and
the manual failover (`phalanx status / failover`, the chaos lab's observations, the benchmarks).

See docs/architecture.md ("Layers and rooms": `ops/`).

Rules of this file:
- HTTP calls to the admin API bypass any proxy from the environment and time out (1 s default).
- A node is only ever reached through its admin address; nothing here imports the node.
- Leaders are decided from what the nodes say: the one named by a majority of ALL nodes (a
  leader counts itself), never from a single node's word.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from phalanx.errors import ClusterError, ConfigError
from phalanx.ops.cluster_file import NodeEntry
from phalanx.server.config import load_config

#: Roles a node's /status may report.
ROLES = ("leader", "follower", "candidate", "pre-candidate")

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def admin_request(address: str, path: str, *, method: str = "GET",
                  body: dict[str, Any] | None = None, token: str = "",
                  timeout: float = 1.0) -> tuple[int, Any]:
    """One admin HTTP call: (status code, parsed JSON or text). Raises OSError when unreachable."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://{address}{path}", data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            code, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        code, payload = error.code, error.read()
    except urllib.error.URLError as error:
        reason = error.reason
        raise reason if isinstance(reason, OSError) else OSError(str(reason)) from error
    text = payload.decode(errors="replace")
    try:
        return code, json.loads(text)
    except json.JSONDecodeError:
        return code, text


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What one node said about itself (or that it said nothing)."""

    entry: NodeEntry
    #: The raw /status JSON; None when the node did not answer.
    status: dict[str, Any] | None
    #: "ok", "down" (no answer), or what /health said when it was not OK.
    health: str
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.status is not None

    @property
    def role(self) -> str | None:
        return None if self.status is None else self.status.get("role")

    @property
    def term(self) -> int | None:
        return None if self.status is None else self.status.get("term")

    @property
    def leader(self) -> str | None:
        return None if self.status is None else self.status.get("leader")

    def to_json(self) -> dict[str, Any]:
        entry = self.entry
        return {"id": entry.id, "zone": entry.zone, "region": entry.region,
                "resp": entry.resp, "admin": entry.admin, "pid": entry.pid,
                "reachable": self.reachable, "health": self.health, "error": self.error,
                "status": self.status}


def _query_one(entry: NodeEntry, timeout: float) -> NodeStatus:
    try:
        code, status = admin_request(entry.admin, "/status", timeout=timeout)
    except OSError as error:
        return NodeStatus(entry, None, "down", _describe(error))
    if code != 200 or not isinstance(status, dict):
        return NodeStatus(entry, None, "down", f"/status answered {code}: {str(status)[:200]}")
    try:
        health_code, health_body = admin_request(entry.admin, "/health", timeout=timeout)
    except OSError as error:
        return NodeStatus(entry, status, "unknown", _describe(error))
    if health_code == 200:
        health = "ok"
        with contextlib.suppress(OSError):
            ready_code, ready_body = admin_request(entry.admin, "/ready", timeout=timeout)
            if ready_code != 200:
                reason = (ready_body.get("error") if isinstance(ready_body, dict) else None)
                health = str(reason or f"not ready ({ready_code})")
    elif isinstance(health_body, dict):
        health = str(health_body.get("status") or health_body.get("reason") or health_code)
    else:
        health = f"{health_code} {str(health_body).strip()[:40]}".strip()
    return NodeStatus(entry, status, health)


def _describe(error: OSError) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return "timed out"
    return error.strerror or str(error) or type(error).__name__


def query_status(nodes: Sequence[NodeEntry], timeout: float = 1.0) -> list[NodeStatus]:
    """GET /status and /health of every node in parallel; one NodeStatus per node, in order."""
    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        return list(pool.map(lambda entry: _query_one(entry, timeout), nodes))


def node_ready(entry: NodeEntry, timeout: float = 1.0) -> bool:
    """Whether the node's admin `GET /ready` answers 200 (it knows the map, a leader for each of
    its shards, and has applied what is committed); False when it does not answer."""
    try:
        code, _ = admin_request(entry.admin, "/ready", timeout=timeout)
    except OSError:
        return False
    return code == 200


def agreed_leader(statuses: Sequence[NodeStatus]) -> str | None:
    """The leader named by a majority of all nodes (the leader counts itself), else None."""
    votes: dict[str, int] = {}
    for status in statuses:
        leader = status.leader
        if status.role == "leader":
            leader = status.entry.id
        if leader:
            votes[leader] = votes.get(leader, 0) + 1
    majority = len(statuses) // 2 + 1
    for leader, count in votes.items():
        if count >= majority:
            return leader
    return None


def all_shards_led(statuses: Sequence[NodeStatus]) -> bool:
    """True when some node's newest map shows a leader for every shard."""
    for status in statuses:
        shards = (status.status or {}).get("shards")
        if isinstance(shards, list) and shards and all(
                isinstance(shard, dict) and shard.get("leader") for shard in shards):
            return True
    return not any((status.status or {}).get("shards") for status in statuses)


def current_leader(statuses: Sequence[NodeStatus]) -> NodeStatus | None:
    """The reachable node that says it is the leader, in the highest term."""
    leaders = [s for s in statuses if s.role == "leader"]
    if not leaders:
        return None
    return max(leaders, key=lambda s: s.term if isinstance(s.term, int) else -1)


def lag_by_node(statuses: Sequence[NodeStatus]) -> dict[str, int]:
    """Replication lag in entries per node, as the current leader reports it."""
    leader = current_leader(statuses)
    if leader is None or leader.status is None:
        return {}
    lags = {leader.entry.id: 0}
    for peer in leader.status.get("peers") or []:
        if isinstance(peer, dict) and "id" in peer and isinstance(peer.get("lag_entries"), int):
            lags[str(peer["id"])] = peer["lag_entries"]
    return lags



@dataclass(frozen=True, slots=True)
class FailoverResult:
    old_leader: str
    new_leader: str
    elapsed_ms: float


def admin_token_for(entry: NodeEntry) -> str:
    """The node's admin_token, read from its config file ("" when there is none)."""
    path = entry.config_path
    if not path:
        return ""
    try:
        return load_config(path).admin_token
    except ConfigError:
        return ""


def failover(nodes: Sequence[NodeEntry], to: str | None = None, *, token: str | None = None,
             timeout: float = 10.0,
             clock: Callable[[], float] = time.monotonic,
             shard: int | None = None) -> FailoverResult:
    """Ask the leader to transfer leadership (to `to`, or a node of its choice).

    `token` None means: read admin_token from the leader's config file.
    """
    ids = [entry.id for entry in nodes]
    if to is not None and to not in ids:
        raise ClusterError(f"no node {to!r} in the cluster (nodes: {', '.join(ids)})")
    if shard is not None:
        return _failover_shard(nodes, shard, to, token=token, timeout=timeout, clock=clock)
    statuses = query_status(nodes)
    leader = current_leader(statuses)
    if leader is None:
        reachable = [s.entry.id for s in statuses if s.reachable]
        raise ClusterError("no leader to fail over from (reachable nodes: "
                           f"{', '.join(reachable) or 'none'})")
    old = leader.entry.id
    if to == old:
        raise ClusterError(f"{to} is already the leader")
    if to is not None:
        target = next(s for s in statuses if s.entry.id == to)
        if not target.reachable:
            raise ClusterError(f"{to} is not reachable ({target.error}); cannot move leadership to it")

    def token_for(entry: NodeEntry) -> str:
        return token if token is not None else admin_token_for(entry)

    by_id = {entry.id: entry for entry in nodes}
    began = clock()
    code, body = _post_failover(leader.entry, to, token_for(leader.entry), timeout)
    hint = body.get("leader") if isinstance(body, dict) else None
    if code == 409 and isinstance(hint, str) and hint in by_id and hint not in (old, to):
        # Leadership moved between our /status and the POST: ask the new leader once.
        old = hint
        code, body = _post_failover(by_id[hint], to, token_for(by_id[hint]), timeout)
    if code != 200:
        detail = body.get("error", body) if isinstance(body, dict) else str(body).strip()
        raise ClusterError(f"{old} refused the failover ({code}): {detail}")
    new = body.get("leader") if isinstance(body, dict) else None
    if not new or new == old:
        new = _wait_for_new_leader(nodes, old, deadline=began + timeout, clock=clock)
    return FailoverResult(old, str(new), (clock() - began) * 1000)


def shard_leader(statuses: Sequence[NodeStatus], shard: int) -> str | None:
    """The leader of `shard` in the newest cluster map among the statuses."""
    maps = [s.status for s in statuses if s.status and s.status.get("shards")]
    if not maps:
        return None
    newest = max(maps, key=lambda raw: int(raw.get("map_version") or 0))
    for item in newest.get("shards") or []:
        if isinstance(item, dict) and item.get("id") == shard:
            leader = item.get("leader")
            return str(leader) if leader else None
    raise ClusterError(f"no shard {shard} in the cluster map")


def _failover_shard(nodes: Sequence[NodeEntry], shard: int, to: str | None, *,
                    token: str | None, timeout: float,
                    clock: Callable[[], float]) -> FailoverResult:
    by_id = {entry.id: entry for entry in nodes}
    old = shard_leader(query_status(nodes), shard)
    if old is None or old not in by_id:
        raise ClusterError(f"shard {shard} has no known leader among {', '.join(by_id)}")
    if to == old:
        raise ClusterError(f"{to} already leads shard {shard}")
    began = clock()
    for _ in range(3):
        entry = by_id[old]
        code, body = _post_failover(entry, to, token if token is not None else
                                    admin_token_for(entry), timeout, shard)
        hint = body.get("leader") if isinstance(body, dict) else None
        if code == 409 and isinstance(hint, str) and hint in by_id and hint != old:
            old = hint  # the map's leader hint was stale: ask the leader it names
            if to == old:
                raise ClusterError(f"{to} already leads shard {shard}")
            continue
        break
    if code != 200:
        detail = body.get("error", body) if isinstance(body, dict) else str(body).strip()
        raise ClusterError(f"{old} refused the failover of shard {shard} ({code}): {detail}")
    new = body.get("leader") if isinstance(body, dict) else None
    while (not new or new == old) and clock() < began + timeout:
        new = shard_leader(query_status(nodes, timeout=0.5), shard)
        time.sleep(0.05)
    if not new or new == old:
        raise ClusterError(f"leadership of shard {shard} did not move away from {old} in time")
    return FailoverResult(old, str(new), (clock() - began) * 1000)


def _post_failover(entry: NodeEntry, to: str | None, token: str,
                   timeout: float, shard: int | None = None) -> tuple[int, Any]:
    body: dict[str, Any] = {"to": to} if to else {}
    if shard is not None:
        body["shard"] = shard
    try:
        return admin_request(entry.admin, "/failover", method="POST",
                             body=body, token=token, timeout=timeout)
    except OSError as error:
        raise ClusterError(f"POST /failover to {entry.id} at {entry.admin} failed: "
                           f"{_describe(error)}") from error


def _wait_for_new_leader(nodes: Sequence[NodeEntry], old: str, *, deadline: float,
                         clock: Callable[[], float]) -> str:
    while clock() < deadline:
        leader = agreed_leader(query_status(nodes, timeout=0.5))
        if leader is not None and leader != old:
            return leader
        time.sleep(0.05)
    raise ClusterError(f"leadership did not move away from {old} in time")


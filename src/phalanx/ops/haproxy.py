"""HAProxy in front of a phalanx cluster: the config, the node list it is built from, and a
reader of HAProxy's stats socket.

`render_config(nodes, frontend_port=...)` returns a complete `haproxy.cfg` (TCP mode):

- a RESP frontend balanced (`leastconn`) over every node. Any node serves any key (it forwards
  to the shard's leader), so the health check is `GET /ready` on each node's ADMIN port (not its
  RESP port): 200 while the node can serve some shard (a degraded shard, e.g. one that lost its
  quorum, fails on every node alike and does not take a node out of rotation); not the strict
  `/ready?strict=1` (every local replica has a leader and is caught up);
- optionally a writer frontend whose backend checks `GET /primary`: only the leader of the first
  shard (or of `writer_shard`) passes. That saves the forwarding hop only in a single-shard
  cluster; with several shards the other shards' keys are forwarded anyway, so use the
  balanced frontend there;
- optionally a stats page (`stats_port`) and a stats socket (`stats_socket`, for `show stat`).

Rules of this module:
- The output must pass `haproxy -c -f` (tests/ops checks it, and checks that a broken config
  fails it, so the check is real).
- Every node needs an admin address: a server HAProxy cannot health-check would receive
  traffic blindly, so a node without one is a ConfigError, not a silently unchecked server.
- Nodes come from any running node's `/status` (`nodes`: the cluster map, which includes
  nodes that joined after `phalanx up`), else from `DIR/cluster.json` (`discover_nodes`).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phalanx.errors import ConfigError

#: Names of the proxies in the rendered config (what `show stat` reports as `pxname`).
RESP_FRONTEND = "fe_phalanx"
RESP_BACKEND = "be_phalanx"
WRITER_FRONTEND = "fe_phalanx_writer"
WRITER_BACKEND = "be_phalanx_writer"

#: Health-check defaults; the reasoning is in the rendered config's comment (_CHECK_COMMENT).
DEFAULT_CHECK_INTER_MS = 100
DEFAULT_FALL = 2
DEFAULT_RISE = 2
DEFAULT_CHECK_TIMEOUT_MS = 500

_SERVER_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


@dataclass(frozen=True, slots=True)
class BackendNode:
    """One phalanx node as HAProxy needs it."""

    id: str
    #: host:port of the RESP listener (where client traffic goes).
    resp: str
    #: host:port of the admin HTTP listener (where the health checks go).
    admin: str
    zone: str = ""
    #: The node's state in the cluster map (alive, draining, ...), when known.
    state: str = ""


def backend_node(item: object) -> BackendNode:
    """A BackendNode from a `/status` `nodes` entry (a mapping), a `cluster.json` NodeEntry,
    a BackendNode, or anything with `id`, `resp` and `admin` attributes."""
    if isinstance(item, BackendNode):
        return item
    fields: dict[str, Any]
    if isinstance(item, Mapping):
        fields = {name: item.get(name) for name in ("id", "resp", "admin", "zone", "state")}
    else:
        fields = {name: getattr(item, name, None)
                  for name in ("id", "resp", "admin", "zone", "state")}
    node_id = str(fields["id"] or "")
    if not node_id:
        raise ConfigError(f"node without an id: {item!r}")
    for name in ("resp", "admin"):
        value = fields[name]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"node {node_id}: no {name} address (HAProxy needs the RESP "
                              f"address for traffic and the admin address for health checks)")
        _split_address(value, f"node {node_id}: {name}")
    return BackendNode(id=node_id, resp=str(fields["resp"]), admin=str(fields["admin"]),
                       zone=str(fields["zone"] or ""), state=str(fields["state"] or ""))


def nodes_from_status(status: Mapping[str, Any]) -> list[BackendNode]:
    """The nodes of the cluster map in a node's `/status` JSON."""
    raw = status.get("nodes")
    if not isinstance(raw, list) or not raw:
        raise ConfigError("/status has no \"nodes\" list")
    return [backend_node(item) for item in raw]


def discover_nodes(data_dir: str | Path, *, timeout: float = 1.0) -> tuple[list[BackendNode],
                                                                             str]:
    """The cluster's nodes and where they came from.

    Asks every node of `DIR/cluster.json` for `/status` and takes the `nodes` of the newest
    map among those that answer (a node missing its admin address there is filled in from
    cluster.json); when no node answers, `cluster.json` itself. ClusterError (a ConfigError
    sibling under PhalanxError) when there is no cluster file.
    """
    from phalanx.ops import admin, cluster_file

    cluster = cluster_file.read_cluster_file(data_dir)
    statuses = [s for s in admin.query_status(cluster.nodes, timeout=timeout)
                if s.status is not None and isinstance(s.status.get("nodes"), list)]
    if statuses:
        newest = max(statuses, key=lambda s: int((s.status or {}).get("map_version") or 0))
        known = {entry.id: entry for entry in cluster.nodes}
        nodes = []
        for item in (newest.status or {}).get("nodes") or []:
            merged = dict(item) if isinstance(item, Mapping) else {}
            entry = known.get(str(merged.get("id")))
            if entry is not None:
                merged["resp"] = merged.get("resp") or entry.resp
                merged["admin"] = merged.get("admin") or entry.admin
                merged["zone"] = merged.get("zone") or entry.zone
            nodes.append(backend_node(merged))
        if nodes:
            return nodes, (f"/status of {newest.entry.id} "
                           f"(map version {(newest.status or {}).get('map_version')})")
    return ([backend_node(entry) for entry in cluster.nodes],
            f"{cluster_file.cluster_file_path(data_dir)} (no node answered /status)")


def _split_address(address: str, where: str) -> tuple[str, int]:
    host, separator, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not separator or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{where}: {address!r} is not host:port")
    return host, int(port_text)


def _haproxy_address(host: str, port: int) -> str:
    # HAProxy reads the port after the LAST colon, so an IPv6 address needs no brackets, but
    # an explicit ipv6@ prefix keeps `::1:7001` from being misread as a hostname.
    return f"ipv6@{host}:{port}" if ":" in host else f"{host}:{port}"


def _server_names(nodes: Sequence[BackendNode]) -> list[str]:
    names: list[str] = []
    for node in nodes:
        name = _SERVER_NAME.sub("_", node.id)
        if name in names:
            raise ConfigError(f"two nodes map to the HAProxy server name {name!r}")
        names.append(name)
    return names


_CHECK_COMMENT = """\
# Health checks: `option httpchk` against each node's ADMIN port (`check port`, `addr`), while
# traffic goes to its RESP port. Why these values (inter {inter}ms, fall {fall}, rise {rise},
# timeout check {timeout}ms):
# - A killed node's admin port refuses the connection at once, so a dead node is marked DOWN
#   after `fall` failed checks: at most about fall x inter = {down_ms} ms. A phalanx cluster
#   replaces a killed leader in a few hundred milliseconds (its peers see the connection reset
#   and campaign at once), so the balancer's detection is of the same order as the cluster's
#   own recovery instead of dominating it (HAProxy's default, inter 2s fall 3, adds ~6 s).
# - fall 2, not 1: one lost check (a GC pause, a busy event loop) does not eject a node.
#   rise 2: a flapping node needs two good answers in a row before it gets traffic again.
# - A hung node (SIGSTOP, a black-holed host) accepts the connection but never answers; the
#   check then fails after `timeout check`, so it is DOWN in about fall x (inter + timeout)
#   = {hung_ms} ms, comparable to the cluster's election timeout (500-1000 ms by default).
# - /ready is cheap (in-memory state), so {rate} checks per second per HAProxy is negligible.
# - /ready (not /ready?strict=1) answers 200 while the node can serve SOME shard and lists
#   the degraded ones: a shard without a leader (an election, a lost quorum) fails the same on
#   every node, so a node is not taken out for it while its other shards still work through
#   it. It answers 503 when the node can serve no shard at all (in a single-shard cluster:
#   while its shard has no leader or it is catching up after a restart), refuses to serve, or
#   has no map yet. /ready?shard=N is the strict answer for one shard.
# - on-marked-down shutdown-sessions: the sessions of a node marked DOWN are closed, so clients
#   reconnect (to a healthy node) instead of waiting on a hung node until a timeout.
# - option redispatch 1 + retries: a new connection refused by a node not yet marked DOWN is
#   retried on another node at once, so new connections do not see the detection window.
"""


def render_config(nodes: Iterable[object], *, frontend_port: int,
                  writer_port: int | None = None, writer_shard: int | None = None,
                  bind_address: str = "127.0.0.1",
                  check_inter_ms: int = DEFAULT_CHECK_INTER_MS, fall: int = DEFAULT_FALL,
                  rise: int = DEFAULT_RISE, check_timeout_ms: int = DEFAULT_CHECK_TIMEOUT_MS,
                  stats_port: int | None = None, stats_socket: str | Path | None = None,
                  connect_timeout_ms: int = 1000, idle_timeout_s: int = 3600,
                  maxconn: int = 4096) -> str:
    """A complete haproxy.cfg for these nodes (see the module docstring).

    `nodes`: `/status` `nodes` entries, `cluster.json` NodeEntries or BackendNodes.
    `writer_port`: also a frontend that reaches only the leader of the first shard (or of
    `writer_shard`): meaningful for single-shard clusters only.
    `stats_socket`: a unix socket path for `show stat` (runtime API, level operator).
    """
    backend = [backend_node(item) for item in nodes]
    if not backend:
        raise ConfigError("no nodes: HAProxy needs at least one server")
    ports = {"frontend_port": frontend_port, "writer_port": writer_port,
             "stats_port": stats_port}
    used: dict[int, str] = {}
    for name, port in ports.items():
        if port is None:
            continue
        if not 0 < port < 65536:
            raise ConfigError(f"{name}: {port} is not a TCP port")
        if port in used:
            raise ConfigError(f"{name} and {used[port]} are both {port}")
        used[port] = name
    if check_inter_ms < 10:
        raise ConfigError(f"check_inter_ms must be at least 10, got {check_inter_ms}")
    if fall < 1 or rise < 1:
        raise ConfigError(f"fall and rise must be at least 1, got {fall} and {rise}")
    if check_timeout_ms < 1 or connect_timeout_ms < 1 or idle_timeout_s < 1 or maxconn < 1:
        raise ConfigError("timeouts and maxconn must be positive")
    if writer_shard is not None and writer_shard < 0:
        raise ConfigError(f"writer_shard must be a shard number, got {writer_shard}")
    names = _server_names(backend)
    bind = _haproxy_address(bind_address.strip("[]"), 0).rpartition(":")[0]

    lines = [
        "# HAProxy in front of a phalanx cluster; written by `phalanx haproxy-config`.",
        f"# Nodes: {', '.join(n.id for n in backend)}. Run: haproxy -W -db -f <this file>",
        "# (or under systemd). Validate: haproxy -c -f <this file>.",
        "",
        "global",
        f"    maxconn {maxconn}",
        "    log stderr format short local0 notice",
    ]
    if stats_socket is not None:
        lines.append(f"    stats socket {stats_socket} mode 600 level operator")
        lines.append("    stats timeout 30s")
    lines += [
        "",
        "defaults",
        "    mode tcp",
        "    log global",
        "    option tcplog",
        "    option dontlognull",
        # Connecting to a node on a LAN takes well under a millisecond; a dead host's SYN goes
        # unanswered, and after this the connection is retried (redispatched) elsewhere.
        f"    timeout connect {connect_timeout_ms}ms",
        # RESP connections are long-lived and often idle (client pools, pub/sub, blocking
        # commands): a short client/server timeout would cut healthy idle connections. TCP
        # keepalives (clitcpka/srvtcpka) notice dead peers instead.
        f"    timeout client {idle_timeout_s}s",
        f"    timeout server {idle_timeout_s}s",
        "    timeout client-fin 30s",
        "    timeout server-fin 30s",
        # Read timeout of a health check (its connect timeout is min(timeout connect, inter)).
        f"    timeout check {check_timeout_ms}ms",
        "    option clitcpka",
        "    option srvtcpka",
        # A connection refused by a node not yet marked DOWN is retried on ANOTHER node at
        # once (`redispatch 1`: at every retry). Without it HAProxy waits a turn-around of
        # min(timeout connect, 1 s) and retries the same (dead) node.
        "    option redispatch 1",
        "    retries 3",
        "",
    ]
    inter, down_ms = check_inter_ms, fall * check_inter_ms
    lines += _CHECK_COMMENT.format(
        inter=inter, fall=fall, rise=rise, timeout=check_timeout_ms, down_ms=down_ms,
        hung_ms=fall * (check_inter_ms + check_timeout_ms),
        rate=f"{len(backend) * 1000 / check_inter_ms:g}").splitlines()

    def backend_section(name: str, path: str, comment: str) -> list[str]:
        section = [
            f"backend {name}",
            f"    # {comment}",
            "    balance leastconn",
            f"    option httpchk GET {path}",
            "    http-check expect status 200",
            f"    default-server check inter {check_inter_ms}ms fall {fall} rise {rise} "
            "on-marked-down shutdown-sessions",
        ]
        for node, server in zip(backend, names, strict=True):
            host, port = _split_address(node.resp, f"node {node.id}: resp")
            admin_host, admin_port = _split_address(node.admin, f"node {node.id}: admin")
            check_addr = ""
            if admin_host not in (host, "0.0.0.0", "::"):
                check_addr = f" addr {admin_host}"
            where = ", ".join(part for part in (node.zone and f"zone {node.zone}",
                                                node.state and f"state {node.state}") if part)
            section.append(f"    server {server} {_haproxy_address(host, port)}"
                           f"{check_addr} port {admin_port}" + (f"  # {where}" if where else ""))
        return section

    lines += [
        "",
        f"frontend {RESP_FRONTEND}",
        f"    bind {bind}:{frontend_port}",
        f"    default_backend {RESP_BACKEND}",
        "",
        *backend_section(RESP_BACKEND, "/ready",
                         "any node serves any key (it forwards to the shard's leader); /ready: "
                         "it can serve some shard"),
    ]
    if writer_port is not None:
        path = "/primary" if writer_shard is None else f"/primary?shard={writer_shard}"
        which = "the first shard" if writer_shard is None else f"shard {writer_shard}"
        lines += [
            "",
            f"# Writer: only the leader of {which} passes {path}. Meaningful for a",
            "# SINGLE-SHARD cluster only (it saves the forwarding hop); with several shards",
            "# most keys live elsewhere and are forwarded anyway: use the frontend above.",
            "# During a failover no server is UP for a moment: new connections are closed at once.",
            f"frontend {WRITER_FRONTEND}",
            f"    bind {bind}:{writer_port}",
            f"    default_backend {WRITER_BACKEND}",
            "",
            *backend_section(WRITER_BACKEND, path, f"only the leader of {which}"),
        ]
    if stats_port is not None:
        lines += [
            "",
            "listen stats",
            "    mode http",
            f"    bind {bind}:{stats_port}",
            "    timeout client 30s",
            "    stats enable",
            "    stats uri /",
            "    stats refresh 2s",
            "    stats show-legends",
        ]
    return "\n".join(lines) + "\n"


# ---- the runtime API (stats socket) --------------------------------------------------------

def stats_command(socket_path: str | Path, command: str, *, timeout: float = 1.0) -> str:
    """Send one command (e.g. `show stat`) to HAProxy's stats socket; its whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(str(socket_path))
        connection.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def parse_show_stat(text: str) -> list[dict[str, str]]:
    """The rows of `show stat` CSV output, as dicts keyed by the header's column names."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise ConfigError(f"not `show stat` output: {text[:200]!r}")
    header = lines[0][2:].split(",")
    return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]


def server_statuses(socket_path: str | Path, backend: str = RESP_BACKEND, *,
                    timeout: float = 1.0) -> dict[str, str]:
    """{server name: status} of one backend ("UP", "DOWN", "UP 1/2", "DOWN 1/2", "MAINT"...)."""
    rows = parse_show_stat(stats_command(socket_path, "show stat", timeout=timeout))
    return {row["svname"]: row.get("status", "") for row in rows
            if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND",
                                                                          "BACKEND")}

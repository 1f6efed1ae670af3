"""A local cluster on one machine: its plan, its cluster file, its processes, its admin queries.

This is the logic behind `phalanx up / down / status / failover / restart`; the CLI only parses
flags and prints. Nothing here imports the node: nodes are separate processes, reached through
their admin HTTP API, so every function is testable without a running node.

Rules of this file:
- Node i (1-based) of a local cluster gets its own loopback address 127.0.0.(loopback_base + i)
  and the ports base+i (RESP), base+100+i (admin), base+200+i (peer); zones z1..zZ are assigned
  round robin, every node is in one region. Dropping traffic between two addresses is therefore
  a real partition between two nodes.
- `DIR/cluster.json` is the one record of a running local cluster:
  `{"nodes": [{"id", "zone", "region", "resp", "admin", "peer", "pid", "data_dir", "argv"}]}`,
  where `argv` is the exact command that restarts the node. It is written atomically (temporary
  file, fsync, rename, fsync of the directory) and read-modify-written under `DIR/cluster.lock`.
- A pid from the cluster file is only signalled when the process is alive (not a zombie) and
  its command line is a phalanx node (`/proc/PID/cmdline` contains "phalanx"): pids get reused.
- Nothing here restarts a node by itself; `restart_node` runs only when asked.
- HTTP calls to the admin API bypass any proxy from the environment and time out (1 s default).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from phalanx.errors import ConfigError, PhalanxError
from phalanx.server.config import NodeConfig, PeerConfig, dump_config, load_config

CLUSTER_FILE = "cluster.json"
LOCK_FILE = "cluster.lock"
NODE_CONFIG_FILE = "node.toml"
NODE_LOG_FILE = "node.log"

#: Roles a node's /status may report.
ROLES = ("leader", "follower", "candidate", "pre-candidate")


class ClusterError(PhalanxError):
    """A local-cluster operation failed; the message says what and, where it can, why."""


class StartupInterrupted(ClusterError):
    """Startup was cancelled (Ctrl-C or SIGTERM) before a leader was agreed."""


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One node of the cluster file."""

    id: str
    zone: str
    region: str
    #: host:port of the RESP listener.
    resp: str
    #: host:port of the admin HTTP listener.
    admin: str
    #: host:port of the peer (Raft) listener.
    peer: str
    #: Process id of the last start (may be dead).
    pid: int | None
    data_dir: str
    #: The exact command that (re)starts this node.
    argv: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        """The node's own address (every listener binds to it)."""
        return self.resp.rpartition(":")[0]

    @property
    def config_path(self) -> str | None:
        """The `--config` file in `argv`, if any."""
        if "--config" in self.argv:
            position = self.argv.index("--config")
            if position + 1 < len(self.argv):
                return self.argv[position + 1]
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any, position: int) -> NodeEntry:
        if not isinstance(raw, dict):
            raise ClusterError(f"nodes[{position}]: must be an object")
        for name in ("id", "resp", "admin", "argv"):
            if name not in raw:
                raise ClusterError(f"nodes[{position}].{name}: missing")
        argv = raw["argv"]
        if not isinstance(argv, list) or not all(isinstance(part, str) for part in argv):
            raise ClusterError(f"nodes[{position}].argv: must be a list of strings")
        pid = raw.get("pid")
        if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0):
            raise ClusterError(f"nodes[{position}].pid: {pid!r} is not a process id")
        return cls(id=str(raw["id"]), zone=str(raw.get("zone", "")),
                   region=str(raw.get("region", "")), resp=str(raw["resp"]),
                   admin=str(raw["admin"]), peer=str(raw.get("peer", "")), pid=pid,
                   data_dir=str(raw.get("data_dir", "")), argv=list(argv))


@dataclass(frozen=True, slots=True)
class PlannedNode:
    """One node of a planned local cluster: its config and where its files go."""

    config: NodeConfig
    config_path: Path
    log_path: Path
    argv: list[str]

    def entry(self, pid: int | None) -> NodeEntry:
        me = self.config.me
        return NodeEntry(id=me.id, zone=me.zone, region=me.region, resp=me.resp,
                         admin=me.admin, peer=me.peer, pid=pid, data_dir=self.config.data_dir,
                         argv=list(self.argv))


def node_argv(config_path: str | Path) -> list[str]:
    """The command that runs the node configured by `config_path`."""
    return [sys.executable, "-m", "phalanx.cli", "node", "--config", str(Path(config_path))]


def plan_local_cluster(data_dir: str | Path, *, nodes: int = 3, zones: int = 3,
                       region: str = "r1", base_port: int = 7000, loopback_base: int = 10,
                       overrides: dict[str, Any] | None = None,
                       regions: int = 1) -> list[PlannedNode]:
    """Configs, files and commands of an `nodes`-node local cluster under `data_dir`.

    Node i sits in zone z((i-1) % zones + 1); with `regions` > 1, zone zK belongs to region
    r((K-1) % regions + 1) (otherwise every zone is in `region`).

    `overrides` are NodeConfig fields (e.g. `election_ticks`) applied to every node; None values
    are ignored. Raises ConfigError naming the option when the plan is impossible.
    """
    if nodes < 1:
        raise ConfigError(f"nodes: must be >= 1 (got {nodes})")
    if zones < 1:
        raise ConfigError(f"zones: must be >= 1 (got {zones})")
    if regions < 1 or regions > zones:
        raise ConfigError(f"regions: must be between 1 and zones ({zones}) (got {regions})")
    if loopback_base < 1 or loopback_base + nodes > 254:
        raise ConfigError(f"loopback_base: 127.0.0.{loopback_base + 1}..{loopback_base + nodes}"
                          " is outside 127.0.0.2..127.0.0.254")
    if base_port < 1 or base_port + 200 + nodes > 65535:
        raise ConfigError(f"base_port: {base_port}+{200 + nodes} is outside 1..65535")
    if nodes > 99:
        raise ConfigError(f"nodes: at most 99 (got {nodes}); port ranges would overlap")
    root = Path(data_dir).absolute()
    peers = []
    for i in range(1, nodes + 1):
        host = f"127.0.0.{loopback_base + i}"
        zone = (i - 1) % zones + 1
        peers.append(PeerConfig(id=f"n{i}", peer=f"{host}:{base_port + 200 + i}",
                                resp=f"{host}:{base_port + i}",
                                admin=f"{host}:{base_port + 100 + i}",
                                zone=f"z{zone}",
                                region=region if regions == 1 else f"r{(zone - 1) % regions + 1}"))
    changes = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = set(changes) - set(NodeConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"overrides: unknown field(s) {', '.join(sorted(unknown))}")
    planned = []
    for peer in peers:
        node_dir = root / peer.id
        config = NodeConfig(id=peer.id, data_dir=str(node_dir), peers=tuple(peers), **changes)
        config_path = node_dir / NODE_CONFIG_FILE
        planned.append(PlannedNode(config=config, config_path=config_path,
                                   log_path=node_dir / NODE_LOG_FILE,
                                   argv=node_argv(config_path)))
    return planned


def write_node_configs(plan: Iterable[PlannedNode]) -> None:
    """Create each node's directory and write its `node.toml`."""
    for node in plan:
        node.config_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(node.config_path, dump_config(node.config))


def check_addresses_free(plan: Iterable[PlannedNode]) -> None:
    """Raise ClusterError naming the first listener address that cannot be bound."""
    for node in plan:
        me = node.config.me
        for what, address in (("resp", me.resp), ("admin", me.admin), ("peer", me.peer)):
            host, _, port = address.rpartition(":")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, int(port)))
                except OSError as error:
                    raise ClusterError(f"{me.id} {what} address {address} is not free: "
                                       f"{error.strerror}") from error


# --------------------------------------------------------------------------- cluster file


@dataclass(frozen=True, slots=True)
class ClusterFile:
    """The content of `DIR/cluster.json`."""

    nodes: list[NodeEntry]

    def node(self, node_id: str) -> NodeEntry:
        for entry in self.nodes:
            if entry.id == node_id:
                return entry
        raise ClusterError(f"no node {node_id!r} in the cluster "
                           f"(nodes: {', '.join(e.id for e in self.nodes)})")

    def with_pid(self, node_id: str, pid: int | None) -> ClusterFile:
        self.node(node_id)
        return ClusterFile([replace(e, pid=pid) if e.id == node_id else e for e in self.nodes])

    def to_json(self) -> dict[str, Any]:
        return {"nodes": [entry.to_json() for entry in self.nodes]}


def cluster_file_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / CLUSTER_FILE


def read_cluster_file(data_dir: str | Path) -> ClusterFile:
    """Parse `DIR/cluster.json`; ClusterError when it is missing or malformed."""
    path = cluster_file_path(data_dir)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ClusterError(f"no cluster in {data_dir} ({path} does not exist)") from error
    except OSError as error:
        raise ClusterError(f"cannot read {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise ClusterError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), list):
        raise ClusterError(f"{path}: expected an object with a \"nodes\" list")
    try:
        nodes = [NodeEntry.from_json(item, i) for i, item in enumerate(raw["nodes"])]
    except ClusterError as error:
        raise ClusterError(f"{path}: {error}") from error
    return ClusterFile(nodes)


def write_cluster_file(data_dir: str | Path, cluster: ClusterFile) -> Path:
    """Write `DIR/cluster.json` atomically: readers see the old or the new file, never a part."""
    path = cluster_file_path(data_dir)
    _write_atomically(path, json.dumps(cluster.to_json(), indent=2) + "\n")
    return path


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def cluster_lock(data_dir: str | Path) -> Iterator[None]:
    """Hold `DIR/cluster.lock` (an exclusive flock) for a read-modify-write of cluster.json."""
    path = Path(data_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------- processes


def pid_alive(pid: int | None) -> bool:
    """Whether `pid` is a live process (a zombie is dead; our own dead child is reaped)."""
    if pid is None or pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    state = stat.rpartition(")")[2].split()
    return not (state and state[0] in {"Z", "X"})


def process_cmdline(pid: int) -> list[str] | None:
    """The command line of `pid`, or None when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_our_node(pid: int | None) -> bool:
    """Whether `pid` is alive and runs phalanx (guards against signalling a reused pid)."""
    if not pid_alive(pid):
        return False
    assert pid is not None
    cmdline = process_cmdline(pid)
    return cmdline is not None and any("phalanx" in part for part in cmdline)


def start_node_process(argv: Sequence[str], log_path: str | Path) -> subprocess.Popen[bytes]:
    """Start one node in its own session, stdout and stderr appended to `log_path`.

    Its own session keeps a terminal's Ctrl-C away from the node: `phalanx up` stops its nodes.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True)


def stop_pids(pids: Iterable[int], grace: float = 5.0) -> dict[int, str]:
    """SIGTERM every live phalanx pid, wait up to `grace` s, SIGKILL the rest.

    Returns pid -> what happened: "stopped", "killed", "not running", "not phalanx".
    """
    outcome: dict[int, str] = {}
    signalled = []
    for pid in pids:
        if not pid_alive(pid):
            outcome[pid] = "not running"
        elif not is_our_node(pid):
            outcome[pid] = "not phalanx"
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
    deadline = time.monotonic() + grace
    waiting = list(signalled)
    while waiting and time.monotonic() < deadline:
        waiting = [pid for pid in waiting if pid_alive(pid)]
        if waiting:
            time.sleep(0.05)
    for pid in signalled:
        if pid in waiting and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            outcome[pid] = "killed"
        else:
            outcome[pid] = "stopped"
    kill_deadline = time.monotonic() + 2.0
    while any(pid_alive(pid) for pid in waiting) and time.monotonic() < kill_deadline:
        time.sleep(0.02)
    return outcome


def live_nodes(cluster: ClusterFile) -> list[NodeEntry]:
    """The nodes of `cluster` whose pid is a live phalanx process."""
    return [entry for entry in cluster.nodes if is_our_node(entry.pid)]


def stop_cluster(data_dir: str | Path, grace: float = 5.0) -> dict[str, str]:
    """Stop every live node listed in `DIR/cluster.json`; node id -> outcome. Idempotent."""
    cluster = read_cluster_file(data_dir)
    pids = {entry.id: entry.pid for entry in cluster.nodes}
    outcome = stop_pids([pid for pid in pids.values() if pid is not None], grace)
    return {node_id: outcome.get(pid, "not running") if pid is not None else "not running"
            for node_id, pid in pids.items()}


def tail(path: str | Path, lines: int = 15) -> str:
    """The last `lines` lines of a text file ("" when it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def restart_node(data_dir: str | Path, node_id: str) -> NodeEntry:
    """Start `node_id` again with its argv from cluster.json and record its new pid.

    ClusterError when the node is already running.
    """
    with cluster_lock(data_dir):
        cluster = read_cluster_file(data_dir)
        entry = cluster.node(node_id)
        if is_our_node(entry.pid):
            raise ClusterError(f"{node_id} is already running (pid {entry.pid})")
        if not entry.argv:
            raise ClusterError(f"{node_id} has no argv in {cluster_file_path(data_dir)}")
        log_path = Path(entry.data_dir or Path(data_dir) / node_id) / NODE_LOG_FILE
        process = start_node_process(entry.argv, log_path)
        write_cluster_file(data_dir, cluster.with_pid(node_id, process.pid))
        return replace(entry, pid=process.pid)


# --------------------------------------------------------------------------- admin API

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


def wait_for_leader(nodes: Sequence[NodeEntry], timeout: float = 30.0, *,
                    processes: dict[str, subprocess.Popen[bytes]] | None = None,
                    log_paths: dict[str, Path] | None = None,
                    poll: float = 0.2,
                    cancelled: Callable[[], bool] | None = None) -> str:
    """Poll /status until every node answers and a majority names the same leader; return
    its id.

    Fails early when a started process exits, and with StartupInterrupted as soon as
    `cancelled()` is true. On timeout the ClusterError names the nodes that
    did not come up and shows the tail of their logs.
    """
    deadline = time.monotonic() + timeout
    statuses: list[NodeStatus] = []
    while True:
        if cancelled is not None and cancelled():
            raise StartupInterrupted("interrupted before a leader was elected")
        if processes:
            exited = {node_id: process.poll() for node_id, process in processes.items()}
            dead = {node_id: code for node_id, code in exited.items() if code is not None}
            if dead:
                details = ", ".join(f"{node_id} (exit code {code})" for node_id, code in dead.items())
                raise ClusterError(f"node(s) exited during startup: {details}"
                                   + _log_tails(dead, log_paths))
        statuses = query_status(nodes, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        leader = agreed_leader(statuses)
        # Up = every node answers (its RESP listener is bound before its admin one) and every
        # shard has a leader: a client may use any node at once.
        if leader is not None and all_shards_led(statuses) and all(s.reachable for s in statuses):
            return leader
        if time.monotonic() >= deadline:
            break
        waited_until = time.monotonic() + poll
        while time.monotonic() < waited_until and not (cancelled is not None and cancelled()):
            time.sleep(0.02)
    down = [s.entry.id for s in statuses if not s.reachable]
    if down:
        raise ClusterError(f"node(s) did not come up within {timeout:g} s: {', '.join(down)}"
                           + _log_tails(down, log_paths))
    roles = ", ".join(f"{s.entry.id}={s.role}/term {s.term}/leader {s.leader}" for s in statuses)
    raise ClusterError(f"no leader agreed by a majority within {timeout:g} s ({roles})")


def _log_tails(node_ids: Iterable[str], log_paths: dict[str, Path] | None) -> str:
    if not log_paths:
        return ""
    parts = []
    for node_id in node_ids:
        path = log_paths.get(node_id)
        if path is None:
            continue
        text = tail(path) or "(empty)"
        parts.append(f"\n--- {node_id}: tail of {path} ---\n{text}")
    return "".join(parts)


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


# --------------------------------------------------------------------------- up


def check_can_start(data_dir: str | Path, plan: Sequence[PlannedNode]) -> None:
    """Refuse to start over a running cluster, or over a cluster of other nodes."""
    path = cluster_file_path(data_dir)
    if not path.exists():
        return
    try:
        existing = read_cluster_file(data_dir)
    except ClusterError:
        return  # an unreadable file is replaced
    running = live_nodes(existing)
    if running:
        listed = ", ".join(f"{entry.id} (pid {entry.pid})" for entry in running)
        raise ClusterError(f"a cluster is already running from {path}: {listed}; "
                           f"stop it with `phalanx down --data-dir {data_dir}`")
    old_ids = sorted(entry.id for entry in existing.nodes)
    new_ids = sorted(node.config.id for node in plan)
    if old_ids != new_ids:
        raise ClusterError(f"{data_dir} holds a cluster of {', '.join(old_ids)}, not "
                           f"{', '.join(new_ids)}; use a fresh --data-dir")


def start_local_cluster(data_dir: str | Path, plan: Sequence[PlannedNode], *,
                        timeout: float = 30.0, cancelled: Callable[[], bool] | None = None
                        ) -> tuple[ClusterFile, str, dict[str, subprocess.Popen[bytes]]]:
    """Start every planned node, wait for an agreed leader, write cluster.json.

    Returns (cluster file, leader id, processes). On any failure (StartupInterrupted once
    `cancelled()` is true, or Ctrl-C) the nodes started so far are stopped before the error
    propagates.
    """
    with cluster_lock(data_dir):
        check_can_start(data_dir, plan)
        check_addresses_free(plan)
        write_node_configs(plan)
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for node in plan:
                processes[node.config.id] = start_node_process(node.argv, node.log_path)
            cluster = ClusterFile([node.entry(processes[node.config.id].pid) for node in plan])
            leader = wait_for_leader(cluster.nodes, timeout, processes=processes,
                                     log_paths={node.config.id: node.log_path for node in plan},
                                     cancelled=cancelled)
            write_cluster_file(data_dir, cluster)
        except BaseException:
            stop_processes(processes.values())
            raise
    return cluster, leader, processes


def stop_processes(processes: Iterable[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
    """SIGTERM our own child processes, wait up to `grace` s, SIGKILL the rest, reap them all."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()

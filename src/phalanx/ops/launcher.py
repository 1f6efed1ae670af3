"""The local-cluster launcher: the one place that plans, starts, restarts and stops node processes.

This is the logic behind `phalanx up / down / restart`; the CLI only parses flags and prints.
The chaos lab, the benchmarks and the tests start their clusters here too. Nothing here imports
the node: nodes are separate processes, reached through their admin HTTP API
(`phalanx.ops.admin`) and recorded in `DIR/cluster.json` (`phalanx.ops.cluster_file`).
See docs/architecture.md ("Layers and rooms": `ops/`).

Rules of this file:
- Node i (1-based) of a local cluster gets its own loopback address 127.0.0.(loopback_base + i)
  and the ports base+i (RESP), base+100+i (admin), base+200+i (peer); nodes sit on synthetic
  hosts h1..hH (`nodes_per_host` consecutive nodes each: the placement's host failure domain,
  docs/hosts.md), hosts in zones z1..zZ round robin, every node is in one region. Dropping traffic between two addresses is therefore
  a real partition between two nodes. (`plan_cluster` takes any other addresses: the chaos
  lab's network namespaces.)
- A pid from the cluster file is only signalled when the process is alive (not a zombie) and
  its command line is a phalanx node (`/proc/PID/cmdline` contains "phalanx"): pids get reused.
- Nothing here restarts a node by itself; `restart_node` runs only when asked.
- A cluster is up when every node answers and a majority of ALL nodes names the same leader
  (and every shard has one); startup that fails or is cancelled stops what it started.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from phalanx.errors import ClusterError, ConfigError, StartupInterrupted
from phalanx.ops.admin import NodeStatus, agreed_leader, all_shards_led, query_status
from phalanx.ops.cluster_file import (
    NODE_CONFIG_FILE,
    NODE_LOG_FILE,
    ClusterFile,
    NodeEntry,
    cluster_file_path,
    cluster_lock,
    read_cluster_file,
    write_atomically,
    write_cluster_file,
)
from phalanx.server.config import NodeConfig, PeerConfig, dump_config
from phalanx.server.identity import read_incarnation

# --------------------------------------------------------------------------- plan


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
                         argv=list(self.argv), host_label=me.host)


def node_argv(config_path: str | Path) -> list[str]:
    """The command that runs the node configured by `config_path`."""
    return [sys.executable, "-m", "phalanx.cli", "node", "--config", str(Path(config_path))]


@dataclass(frozen=True, slots=True)
class Listeners:
    """Where one planned node listens: host:port of its RESP, admin and peer listeners."""

    resp: str
    admin: str
    peer: str


def _check_layout(nodes: int, zones: int, regions: int, nodes_per_host: int = 1) -> None:
    if nodes < 1:
        raise ConfigError(f"nodes: must be >= 1 (got {nodes})")
    if nodes_per_host < 1:
        raise ConfigError(f"nodes_per_host: must be >= 1 (got {nodes_per_host})")
    if zones < 1:
        raise ConfigError(f"zones: must be >= 1 (got {zones})")
    if regions < 1 or regions > zones:
        raise ConfigError(f"regions: must be between 1 and zones ({zones}) (got {regions})")


def plan_cluster(data_dir: str | Path, listeners: Sequence[Listeners], *, zones: int = 3,
                 region: str = "r1", regions: int = 1, nodes_per_host: int = 1,
                 overrides: dict[str, Any] | None = None,
                 argv: Callable[[str, Path], list[str]] | None = None) -> list[PlannedNode]:
    """Configs, files and commands of a cluster whose node i (1-based, id "n<i>") listens on
    `listeners[i-1]`; its files go to `data_dir/n<i>/`.

    Node i runs on the synthetic host h((i-1) // nodes_per_host + 1) (docs/hosts.md: one
    machine modelling several, each a failure domain), and host hH sits in zone
    z((H-1) % zones + 1) (with one node per host: node i in zone z((i-1) % zones + 1)); with
    `regions` > 1, zone zK belongs to region r((K-1) % regions + 1) (otherwise every zone is in
    `region`). `overrides` are NodeConfig
    fields applied to every node (None values are ignored), plus one that is not a field:
    `peer_tls_dir` turns peer mutual TLS on with a test CA and one certificate per node in that
    directory (made with `phalanx.ops.peer_tls` when missing, kept otherwise).
    `argv(node_id, config_path)` is the command that runs a node (default: `node_argv`). Raises
    ConfigError naming the option when the plan is impossible.
    """
    _check_layout(len(listeners), zones, regions, nodes_per_host)
    root = Path(data_dir).absolute()
    peers = []
    for i, listening in enumerate(listeners, start=1):
        host_number = (i - 1) // nodes_per_host + 1
        zone = (host_number - 1) % zones + 1
        peers.append(PeerConfig(id=f"n{i}", peer=listening.peer, resp=listening.resp,
                                admin=listening.admin, zone=f"z{zone}",
                                region=region if regions == 1 else f"r{(zone - 1) % regions + 1}",
                                host=f"h{host_number}"))
    changes = {key: value for key, value in (overrides or {}).items() if value is not None}
    peer_tls_dir = changes.pop("peer_tls_dir", None)
    unknown = set(changes) - set(NodeConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"overrides: unknown field(s) {', '.join(sorted(unknown))}")
    planned = []
    for peer in peers:
        node_dir = root / peer.id
        node_changes = dict(changes)
        if peer_tls_dir:
            from phalanx.ops.peer_tls import issue

            host = peer.peer.rpartition(":")[0]
            node_changes.update(issue(Path(peer_tls_dir).absolute(), peer.id, [host])
                                .overrides())
        config = NodeConfig(id=peer.id, data_dir=str(node_dir), peers=tuple(peers),
                            **node_changes)
        config_path = node_dir / NODE_CONFIG_FILE
        command = argv(peer.id, config_path) if argv is not None else node_argv(config_path)
        planned.append(PlannedNode(config=config, config_path=config_path,
                                   log_path=node_dir / NODE_LOG_FILE, argv=command))
    return planned


def plan_local_cluster(data_dir: str | Path, *, nodes: int = 3, zones: int = 3,
                       region: str = "r1", base_port: int = 7000, loopback_base: int = 10,
                       overrides: dict[str, Any] | None = None,
                       regions: int = 1, nodes_per_host: int = 1) -> list[PlannedNode]:
    """Configs, files and commands of an `nodes`-node local cluster under `data_dir`.

    Node i listens on 127.0.0.(loopback_base + i), ports base+i (RESP), base+100+i (admin) and
    base+200+i (peer); hosts, zones and regions as in `plan_cluster`. Raises ConfigError naming
    the option when the plan is impossible.
    """
    _check_layout(nodes, zones, regions, nodes_per_host)
    if loopback_base < 1 or loopback_base + nodes > 254:
        raise ConfigError(f"loopback_base: 127.0.0.{loopback_base + 1}..{loopback_base + nodes}"
                          " is outside 127.0.0.2..127.0.0.254")
    if base_port < 1 or base_port + 200 + nodes > 65535:
        raise ConfigError(f"base_port: {base_port}+{200 + nodes} is outside 1..65535")
    if nodes > 99:
        raise ConfigError(f"nodes: at most 99 (got {nodes}); port ranges would overlap")
    listeners = []
    for i in range(1, nodes + 1):
        host = f"127.0.0.{loopback_base + i}"
        listeners.append(Listeners(resp=f"{host}:{base_port + i}",
                                   admin=f"{host}:{base_port + 100 + i}",
                                   peer=f"{host}:{base_port + 200 + i}"))
    return plan_cluster(data_dir, listeners, zones=zones, region=region, regions=regions,
                        nodes_per_host=nodes_per_host, overrides=overrides)


def pick_free_plan(data_dir: str | Path, rng: random.Random, *, nodes: int, zones: int = 3,
                   regions: int = 1, nodes_per_host: int = 1,
                   overrides: dict[str, Any] | None = None,
                   base_ports: tuple[int, int] = (20000, 60000 - 300),
                   loopback_bases: tuple[int, int] | None = None,
                   tries: int = 60) -> list[PlannedNode]:
    """A `plan_local_cluster` on a random base port in `base_ports` and a random loopback base
    in `loopback_bases` (default 20..250-nodes, end excluded) whose every listener address is
    free right now. ClusterError after `tries` layouts that were not."""
    low, high = loopback_bases if loopback_bases is not None else (20, 250 - nodes)
    last_error: Exception | None = None
    for _ in range(tries):
        base_port = rng.randrange(*base_ports)
        loopback_base = rng.randrange(low, high)
        plan = plan_local_cluster(data_dir, nodes=nodes, zones=zones, base_port=base_port,
                                  loopback_base=loopback_base, overrides=overrides,
                                  regions=regions, nodes_per_host=nodes_per_host)
        try:
            check_addresses_free(plan)
        except ClusterError as error:
            last_error = error
            continue
        return plan
    raise ClusterError(f"no free ports / loopback addresses found: {last_error}")


def node_config_default(name: str) -> Any:
    """The default of the NodeConfig field `name` (what a node uses when nothing sets it)."""
    return NodeConfig.__dataclass_fields__[name].default


def write_node_configs(plan: Iterable[PlannedNode]) -> None:
    """Create each node's directory and write its `node.toml`."""
    for node in plan:
        node.config_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(node.config_path, dump_config(node.config))


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
    if not (state and state[0] in {"Z", "X"}):
        return True
    # A multi-threaded process's leader is a zombie as soon as its own thread exits, while
    # other threads may still be exiting and holding its files (its listening sockets still
    # accept connections, then reset them): dead only once no other thread is left.
    try:
        threads = [t for t in os.listdir(f"/proc/{pid}/task") if t != str(pid)]
    except OSError:
        return False
    return bool(threads)


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



def wait_until_answering(entry: NodeEntry, timeout: float, poll: float = 0.1) -> bool:
    """Poll the node's /status until it answers (True), its process dies or `timeout` s pass
    (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query_status([entry], timeout=0.5)[0].reachable:
            return True
        if not pid_alive(entry.pid):
            return False
        time.sleep(poll)
    return False


def add_node(data_dir: str | Path, config: NodeConfig
             ) -> tuple[NodeEntry, subprocess.Popen[bytes]]:
    """Start one more node (e.g. one that joins through `config.join`) beside the local cluster
    in `data_dir`: write its `node.toml` in its data_dir, start it, add it to cluster.json.

    ClusterError when one of its listener addresses is not free.
    """
    node_dir = Path(config.data_dir)
    config_path = node_dir / NODE_CONFIG_FILE
    planned = PlannedNode(config=config, config_path=config_path,
                          log_path=node_dir / NODE_LOG_FILE, argv=node_argv(config_path))
    check_addresses_free([planned])
    write_node_configs([planned])
    process = start_node_process(planned.argv, planned.log_path)
    entry = planned.entry(process.pid)
    with cluster_lock(data_dir):
        current = read_cluster_file(data_dir)
        write_cluster_file(data_dir, ClusterFile([*current.nodes, entry]))
    return entry, process


# --------------------------------------------------------------------------- up


def wait_for_leader(nodes: Sequence[NodeEntry], timeout: float = 30.0, *,
                    processes: dict[str, subprocess.Popen[bytes]] | None = None,
                    log_paths: dict[str, Path] | None = None,
                    poll: float = 0.2,
                    cancelled: Callable[[], bool] | None = None,
                    data_dirs: dict[str, str | Path] | None = None) -> str:
    """Poll /status until every node answers and a majority names the same leader; return
    its id.

    Fails early when a started process exits, and with StartupInterrupted as soon as
    `cancelled()` is true. On timeout the ClusterError names the nodes that
    did not come up and shows the tail of their logs. With `data_dirs` (node id -> its data
    directory) a node only counts as up when the process answering at its address reports
    the incarnation stored in that directory (`foreign_answers`).
    """
    deadline = time.monotonic() + timeout
    statuses: list[NodeStatus] = []
    foreign: dict[str, str] = {}
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
        foreign = foreign_answers(statuses, data_dirs) if data_dirs else {}
        leader = agreed_leader(statuses)
        # Up = every node answers (its RESP listener is bound before its admin one) and every
        # shard has a leader: a client may use any node at once.
        if (leader is not None and all_shards_led(statuses) and not foreign
                and all(s.reachable for s in statuses)):
            return leader
        if time.monotonic() >= deadline:
            break
        waited_until = time.monotonic() + poll
        while time.monotonic() < waited_until and not (cancelled is not None and cancelled()):
            time.sleep(0.02)
    if foreign:
        raise ClusterError(f"within {timeout:g} s, not our nodes answering at: "
                           + "; ".join(f"{node_id}: {why}" for node_id, why in foreign.items())
                           + _log_tails(foreign, log_paths))
    down = [s.entry.id for s in statuses if not s.reachable]
    if down:
        raise ClusterError(f"node(s) did not come up within {timeout:g} s: {', '.join(down)}"
                           + _log_tails(down, log_paths))
    roles = ", ".join(f"{s.entry.id}={s.role}/term {s.term}/leader {s.leader}" for s in statuses)
    raise ClusterError(f"no leader agreed by a majority within {timeout:g} s ({roles})")


def foreign_answers(statuses: Iterable[NodeStatus], data_dirs: dict[str, str | Path]
                    ) -> dict[str, str]:
    """Node id -> why the process answering at its address is not the node started on its
    data directory: its /status incarnation is not the one stored there (server/identity.py;
    none stored yet: ours has not started). Two launches that planned the same addresses
    (session 9: two chaos region labs with one seed) otherwise each took the other's nodes
    for their own, and wrote into one cluster while their own nodes died on a bind error.
    A node that reports no incarnation is not judged."""
    out: dict[str, str] = {}
    for status in statuses:
        answered = (status.status or {}).get("incarnation")
        data_dir = data_dirs.get(status.entry.id)
        if not answered or data_dir is None:
            continue
        stored = read_incarnation(data_dir)
        if answered != stored:
            out[status.entry.id] = (f"{status.entry.admin} reports incarnation {answered}, "
                                    f"{data_dir} holds {stored or 'none yet'}")
    return out


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
                                     cancelled=cancelled,
                                     data_dirs={node.config.id: node.config.data_dir
                                                for node in plan})
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

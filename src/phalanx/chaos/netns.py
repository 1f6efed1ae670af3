"""`NetnsControl`: a cluster where every node runs in its own Linux network namespace.

Each node gets a namespace `<prefix>-nI` holding `lo` and `eth0` (one end of a veth pair whose
other end, `<prefix>-vI`, is enslaved to the bridge `<prefix>-br` in the root namespace). The
bridge has `<subnet>.1/24`, node I has `<subnet>.(10+I)/24` and a default route via the bridge.
The lab (this process, in the root namespace) reaches every node's RESP and admin listener
through the bridge; nodes reach each other through it too.

Faults are real: a partition is iptables DROP rules inside the nodes' namespaces (chain
`PHALANX`, jumped to from INPUT and OUTPUT, so healing is a flush of that chain), latency is a
tc netem qdisc on the node's `eth0` applied to packets addressed to its peers (kernels without
sch_netem / sch_prio fall back to the node's own fault rules, see `latency_backend`), kill /
pause are signals to the node's python process (the pid of `ip netns exec`, which execs in place).

Rules of this file:
- Only objects this control created are touched: names carry a per-run random prefix
  (`phx` + 4 hex digits), rules live in namespaces we created. The host's interfaces and rules
  are never changed (the bridge is new and only carries our subnet).
- Every command runs with a timeout; a failure raises `NetnsError` naming the command and its
  stderr.
- `close()` is idempotent, best effort (it carries on past a failure and reports all of them at
  the end) and registered with atexit; `start()` cleans up after itself when it fails.
- Partitions and blocks accumulate until `heal()`.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import logging
import os
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phalanx.chaos.control import NodeInfo
from phalanx.chaos.disk import (
    DiskFaultError,
    SmallDisks,
    arm_disk_error,
    clear_disk_errors,
    corrupt_store,
)
from phalanx.errors import ClusterError, ConfigError, NetnsError
from phalanx.ops.admin import admin_request, agreed_leader, query_status
from phalanx.ops.cluster_file import ClusterFile, NodeEntry, write_cluster_file
from phalanx.ops.launcher import (
    Listeners,
    plan_cluster,
    start_node_process,
    tail,
    wait_for_leader,
    write_node_configs,
)

logger = logging.getLogger(__name__)

RESP_PORT = 6379
ADMIN_PORT = 7100
PEER_PORT = 7200
#: Our own iptables chain inside every node namespace.
CHAIN = "PHALANX"
#: Subnets are picked from 10.213.0.0/16 (one /24 per cluster).
SUBNET_BASE = "10.213"
#: Serialises subnet choice between concurrent controls on one host.
_LOCK_PATH = Path("/tmp/phalanx-netns.lock")
_COMMAND_TIMEOUT = 15.0
_REQUIRED_TOOLS = ("ip", "iptables", "iptables-restore", "tc")
#: Exit 0 when a TCP connect to argv[1]:9 is answered (accepted or refused) within 3 s.
_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=3).close()
except ConnectionRefusedError:
    pass
"""
#: prio's default priomap: band 4 (1:4) only receives what the filters send there.
_PRIOMAP = ("1", "2", "2", "2", "1", "2", "0", "0", "1", "1", "1", "1", "1", "1", "1", "1")


@dataclass(slots=True)
class _Node:
    id: str
    zone: str
    region: str
    namespace: str
    veth: str
    address: str
    config_path: Path
    log_path: Path
    data_dir: Path
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    @property
    def admin(self) -> str:
        return f"{self.address}:{ADMIN_PORT}"

    def entry(self) -> NodeEntry:
        return NodeEntry(id=self.id, zone=self.zone, region=self.region,
                         resp=f"{self.address}:{RESP_PORT}", admin=self.admin,
                         peer=f"{self.address}:{PEER_PORT}", pid=self.pid or None,
                         data_dir=str(self.data_dir), argv=list(self.argv))

    def info(self) -> NodeInfo:
        return NodeInfo(id=self.id, zone=self.zone, region=self.region, resp_host=self.address,
                        resp_port=RESP_PORT, admin_url=f"http://{self.admin}", pid=self.pid)


# --------------------------------------------------------------------------- commands


def run(argv: Sequence[str], *, timeout: float = _COMMAND_TIMEOUT, input_text: str | None = None,
        ignore: Iterable[str] = ()) -> str:
    """Run one command; its stdout. NetnsError with the command and stderr when it fails.

    A failure whose stderr contains one of `ignore` (case-insensitive) is not an error.
    """
    command = shlex.join(argv)
    try:
        result = subprocess.run(list(argv), input=input_text, capture_output=True, text=True,
                                timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise NetnsError(f"`{command}` timed out after {timeout:g} s") from error
    except OSError as error:
        raise NetnsError(f"`{command}` could not run: {error.strerror or error}") from error
    if result.returncode != 0:
        stderr = result.stderr.strip()
        if any(text.lower() in stderr.lower() for text in ignore):
            return result.stdout
        raise NetnsError(f"`{command}` failed (exit {result.returncode}): "
                         f"{stderr or result.stdout.strip() or 'no output'}")
    return result.stdout


def _in_ns(namespace: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv]


def partition_rules(groups: Sequence[Sequence[str]], addresses: dict[str, str]
                    ) -> dict[str, list[str]]:
    """iptables rules (for chain PHALANX) per node that cut traffic between different groups.

    Nodes in no group are isolated (each is a group of its own). Every node drops packets to and
    from the addresses of every node outside its group.
    """
    unknown = {node for group in groups for node in group} - set(addresses)
    if unknown:
        raise NetnsError(f"partition: unknown node(s) {', '.join(sorted(unknown))} "
                         f"(nodes: {', '.join(addresses)})")
    group_of: dict[str, int] = {}
    for index, group in enumerate(groups):
        for node in group:
            if node in group_of and group_of[node] != index:
                raise NetnsError(f"partition: {node} is in more than one group")
            group_of[node] = index
    for node in addresses:
        if node not in group_of:
            group_of[node] = len(groups) + len(group_of)
    rules: dict[str, list[str]] = {node: [] for node in addresses}
    for node in addresses:
        for other, address in addresses.items():
            if group_of[other] != group_of[node]:
                rules[node].append(f"-A {CHAIN} -s {address}/32 -j DROP")
                rules[node].append(f"-A {CHAIN} -d {address}/32 -j DROP")
    return rules


def _pick_subnet(used_text: str, rng: secrets.SystemRandom) -> str:
    """A 10.213.X.0/24 that overlaps nothing in `ip -4 addr`/`ip -4 route` output."""
    used: list[ipaddress.IPv4Network] = []
    for token in used_text.split():
        with contextlib.suppress(ValueError):
            if token[0].isdigit() and ("/" in token or token.count(".") == 3):
                used.append(ipaddress.IPv4Network(token, strict=False))
    candidates = list(range(1, 255))
    rng.shuffle(candidates)
    for third in candidates:
        subnet = ipaddress.IPv4Network(f"{SUBNET_BASE}.{third}.0/24")
        if not any(subnet.overlaps(other) for other in used
                   if other.prefixlen > 0):
            return f"{SUBNET_BASE}.{third}"
    raise NetnsError(f"no free /24 left in {SUBNET_BASE}.0.0/16")


# --------------------------------------------------------------------------- the control


@dataclass
class NetnsControl:
    """A `ClusterControl` whose nodes live in their own network namespaces (needs root)."""

    prefix: str
    subnet: str
    data_dir: Path
    bridge: str
    _nodes: list[_Node] = field(default_factory=list)
    _created_namespaces: list[str] = field(default_factory=list)
    _created_veths: list[str] = field(default_factory=list)
    _bridge_created: bool = False
    _closed: bool = False
    #: Seconds spent in start() (network setup, and processes until a leader was agreed).
    setup_network_s: float = 0.0
    setup_total_s: float = 0.0
    #: How add_latency works here: "netem" (tc) or "fault-rules" (the node's admin API).
    latency_backend: str = "netem"
    latency_note: str = ""
    _delayed: set[str] = field(default_factory=set)
    _admin_token: str = ""
    #: Nodes lost for good (`lose`): never restarted.
    lost: set[str] = field(default_factory=set)
    #: The small file systems of `disk-full` (unmounted at close, after the nodes).
    small_disks: SmallDisks = field(default_factory=SmallDisks)

    # -- availability -----------------------------------------------------------------------

    @staticmethod
    def available() -> tuple[bool, str]:
        """(can netns mode run here?, why or why not). Touches nothing but a probe namespace."""
        if os.geteuid() != 0:
            return False, "netns mode needs root (creates namespaces, veths, iptables rules)"
        missing = [tool for tool in _REQUIRED_TOOLS if shutil.which(tool) is None]
        if missing:
            return False, (f"missing tool(s): {', '.join(missing)} "
                           "(apt-get install -y iproute2 iptables)")
        probe = f"phxprobe{secrets.token_hex(2)}"
        try:
            run(["ip", "netns", "add", probe], timeout=5)
        except NetnsError as error:
            return False, f"cannot create a network namespace: {error}"
        try:
            run(_in_ns(probe, "ip", "link", "add", "pa", "type", "veth", "peer", "name", "pb"),
                timeout=5)
            run(_in_ns(probe, "ip", "link", "set", "pa", "up"), timeout=5)
            run(_in_ns(probe, "iptables", "-w", "5", "-N", CHAIN), timeout=10)
            try:
                run(_in_ns(probe, "tc", "qdisc", "replace", "dev", "pa", "root", "netem",
                           "delay", "1ms"), timeout=5)
                latency = "tc netem works"
            except NetnsError:
                latency = "no tc netem in this kernel: latency through the nodes' fault rules"
        except NetnsError as error:
            return False, f"namespace probe failed: {error}"
        finally:
            with contextlib.suppress(NetnsError):
                run(["ip", "netns", "del", probe], timeout=10)
        return True, f"root, tools present, namespaces, veth and iptables work; {latency}"

    # -- start ------------------------------------------------------------------------------

    @classmethod
    def start(cls, *, nodes: int = 5, zones: int = 3, data_dir: str | Path, seed: int = 0,
              overrides: dict[str, Any] | None = None, prefix: str | None = None,
              region: str = "r1", timeout: float = 30.0, regions: int = 1) -> NetnsControl:
        """Create the network, start `nodes` node processes, wait for an agreed leader.

        `seed` is recorded only (the network has no randomness beyond names); `overrides` are
        NodeConfig fields applied to every node. Node i is in zone z((i-1) % zones + 1); with
        `regions` > 1 zone zK is in region r((K-1) % regions + 1), else every zone is in
        `region` (as `phalanx.ops.launcher.plan_cluster` does). On failure everything
        created is removed.
        """
        del seed  # names and subnets must be unique per run, not reproducible
        if nodes < 1 or nodes > 200:
            raise ConfigError(f"nodes: must be in 1..200 (got {nodes})")
        if zones < 1:
            raise ConfigError(f"zones: must be >= 1 (got {zones})")
        if regions < 1 or regions > zones:
            raise ConfigError(f"regions: must be between 1 and zones ({zones}) (got {regions})")
        prefix = prefix or f"phx{secrets.token_hex(2)}"
        if len(prefix) > 8 or not prefix.replace("-", "").isalnum():
            raise ConfigError(f"prefix: {prefix!r} must be at most 8 letters/digits "
                              "(interface names are limited to 15 characters)")
        began = time.monotonic()
        control = cls(prefix=prefix, subnet="", data_dir=Path(data_dir).absolute(),
                      bridge=f"{prefix}-br")
        atexit.register(control._close_at_exit)
        try:
            control._create_network(nodes, zones, region, overrides, regions)
            control.setup_network_s = time.monotonic() - began
            control._start_nodes(timeout)
        except BaseException:
            with contextlib.suppress(NetnsError):
                control.close()
            raise
        control.setup_total_s = time.monotonic() - began
        logger.info("netns cluster %s on %s.0/24 up in %.1f s (network %.2f s)", prefix,
                    control.subnet, control.setup_total_s, control.setup_network_s)
        return control

    def _create_network(self, count: int, zones: int, region: str,
                        overrides: dict[str, Any] | None, regions: int = 1) -> None:
        _LOCK_PATH.touch(exist_ok=True)
        with open(_LOCK_PATH, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                used = run(["ip", "-4", "-o", "addr", "show"]) + run(["ip", "-4", "route",
                                                                      "show", "table", "all"])
                self.subnet = _pick_subnet(used, secrets.SystemRandom())
                run(["ip", "link", "add", self.bridge, "type", "bridge"])
                self._bridge_created = True
                run(["ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge])
                run(["ip", "link", "set", self.bridge, "up"])
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        changes = {key: value for key, value in (overrides or {}).items() if value is not None}
        changes.setdefault("enable_fault_injection", True)
        # The lab calls the nodes' admin API from the host, which is not loopback for a node
        # in its own namespace: mutations need a token there, so the lab makes one.
        changes.setdefault("admin_token", secrets.token_hex(16))
        self._admin_token = str(changes.get("admin_token", ""))
        listeners = [Listeners(resp=f"{self.subnet}.{10 + i}:{RESP_PORT}",
                               admin=f"{self.subnet}.{10 + i}:{ADMIN_PORT}",
                               peer=f"{self.subnet}.{10 + i}:{PEER_PORT}")
                     for i in range(1, count + 1)]

        def argv(node_id: str, config_path: Path) -> list[str]:
            return _in_ns(f"{self.prefix}-{node_id}", sys.executable, "-m", "phalanx", "node",
                          "--config", str(config_path))

        plan = plan_cluster(self.data_dir, listeners, zones=zones, region=region,
                            regions=regions, overrides=changes, argv=argv)
        for i, planned in enumerate(plan, start=1):
            namespace = f"{self.prefix}-n{i}"
            veth = f"{self.prefix}-v{i}"
            inner = f"{self.prefix}-p{i}"
            me = planned.config.me
            address = me.peer.rpartition(":")[0]
            node = _Node(id=me.id, zone=me.zone, region=me.region, namespace=namespace,
                         veth=veth, address=address, config_path=planned.config_path,
                         log_path=planned.log_path, data_dir=planned.config_path.parent,
                         argv=planned.argv)
            self._nodes.append(node)
            run(["ip", "netns", "add", namespace])
            self._created_namespaces.append(namespace)
            self._created_veths.append(veth)
            run(["ip", "link", "add", veth, "type", "veth", "peer", "name", inner])
            run(["ip", "link", "set", inner, "netns", namespace])
            run(["ip", "link", "set", veth, "master", self.bridge])
            run(["ip", "link", "set", veth, "up"])
            run(["ip", "-n", namespace, "link", "set", inner, "name", "eth0"])
            run(["ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0"])
            run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
            run(["ip", "-n", namespace, "link", "set", "lo", "up"])
            run(["ip", "-n", namespace, "route", "add", "default", "via", f"{self.subnet}.1"])
            run(_in_ns(namespace, "iptables", "-w", "5", "-N", CHAIN))
            run(_in_ns(namespace, "iptables", "-w", "5", "-A", "INPUT", "-j", CHAIN))
            run(_in_ns(namespace, "iptables", "-w", "5", "-A", "OUTPUT", "-j", CHAIN))
        write_node_configs(plan)
        self._check_connectivity()
        self._detect_latency_backend()

    def _check_connectivity(self) -> None:
        """Node-to-node and root-to-node reachability through the bridge; explain a failure.

        A TCP connect to a closed port inside the target namespace answers with a reset when the
        path works and times out when it does not (no ping needed).
        """
        if len(self._nodes) < 2:
            return
        first, second = self._nodes[0], self._nodes[1]
        try:
            run(_in_ns(first.namespace, sys.executable, "-c", _PROBE, second.address),
                timeout=10)
        except NetnsError as error:
            raise NetnsError(
                f"{first.id} cannot reach {second.id} through the bridge {self.bridge}: {error}. "
                "If br_netfilter is loaded (net.bridge.bridge-nf-call-iptables = 1) the host's "
                "FORWARD chain filters bridged traffic; a DROP policy there (e.g. Docker's) "
                "blocks it") from error
        try:
            run([sys.executable, "-c", _PROBE, first.address], timeout=10)
        except NetnsError as error:
            raise NetnsError(f"the root namespace cannot reach {first.id} at {first.address} "
                             f"through {self.bridge}: {error}") from error

    def _start_nodes(self, timeout: float) -> None:
        for node in self._nodes:
            node.process = start_node_process(node.argv, node.log_path)
        self._write_cluster_file()
        try:
            wait_for_leader([node.entry() for node in self._nodes], timeout,
                            processes={n.id: n.process for n in self._nodes if n.process},
                            log_paths={n.id: n.log_path for n in self._nodes})
        except ClusterError as error:
            raise NetnsError(f"netns cluster {self.prefix}: {error}") from error

    def _write_cluster_file(self) -> None:
        """DIR/cluster.json, so `phalanx status --data-dir DIR` works from the root namespace."""
        write_cluster_file(self.data_dir, ClusterFile([node.entry() for node in self._nodes]))

    # -- observation ------------------------------------------------------------------------

    def _node(self, node_id: str) -> _Node:
        for node in self._nodes:
            if node.id == node_id:
                return node
        raise NetnsError(f"no node {node_id!r} (nodes: {', '.join(n.id for n in self._nodes)})")

    def nodes(self) -> list[NodeInfo]:
        return [node.info() for node in self._nodes]

    def namespace(self, node_id: str) -> str:
        """The network namespace of `node_id` (for `ip netns exec`)."""
        return self._node(node_id).namespace

    def address(self, node_id: str) -> str:
        """The IPv4 address of `node_id` (all its listeners bind to it)."""
        return self._node(node_id).address

    def leader(self) -> str | None:
        return agreed_leader(query_status([node.entry() for node in self._nodes], timeout=0.5))

    def role(self, node_id: str) -> str | None:
        """What `node_id`'s /status says its role is (None when it does not answer)."""
        try:
            code, body = admin_request(self._node(node_id).admin, "/status", timeout=0.5)
        except OSError:
            return None
        return str(body.get("role")) if code == 200 and isinstance(body, dict) else None

    # -- processes --------------------------------------------------------------------------

    def _live_process(self, node_id: str) -> subprocess.Popen[bytes]:
        node = self._node(node_id)
        if node.process is None or node.process.poll() is not None:
            raise NetnsError(f"{node_id} is not running")
        return node.process

    def kill(self, node: str) -> None:
        process = self._live_process(node)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired as error:
            raise NetnsError(f"{node} (pid {process.pid}) did not die after SIGKILL") from error

    def pause(self, node: str) -> None:
        process = self._live_process(node)
        process.send_signal(signal.SIGSTOP)
        self._wait_state(node, process.pid, stopped=True)

    def resume(self, node: str) -> None:
        process = self._live_process(node)
        process.send_signal(signal.SIGCONT)
        self._wait_state(node, process.pid, stopped=False)

    @staticmethod
    def _wait_state(node: str, pid: int, *, stopped: bool) -> None:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return
            state = stat.rpartition(")")[2].split()[0]
            if (state in {"T", "t"}) == stopped:
                return
            time.sleep(0.01)
        raise NetnsError(f"{node} (pid {pid}) did not {'stop' if stopped else 'continue'}")

    def restart(self, node: str, timeout: float = 30.0) -> None:
        entry = self._node(node)
        if node in self.lost:
            raise NetnsError(f"{node} was lost for good (its data is deleted); it is not "
                             "restarted")
        if entry.process is not None and entry.process.poll() is None:
            raise NetnsError(f"{node} is still running (pid {entry.process.pid}); kill it first")
        entry.process = start_node_process(entry.argv, entry.log_path)
        self._write_cluster_file()
        deadline = time.monotonic() + timeout
        while True:
            code = entry.process.poll()
            if code is not None:
                raise NetnsError(f"{node} exited with code {code} while restarting\n"
                                 f"--- tail of {entry.log_path} ---\n{tail(entry.log_path)}")
            with contextlib.suppress(OSError):
                status, _ = admin_request(entry.admin, "/health", timeout=0.5)
                if status == 200:
                    return
            if time.monotonic() >= deadline:
                raise NetnsError(f"{node} did not answer /health within {timeout:g} s\n"
                                 f"--- tail of {entry.log_path} ---\n{tail(entry.log_path)}")
            time.sleep(0.05)

    def corrupt(self, node: str, seed: int) -> str:
        """Flip a byte in a data replica's WAL or snapshot of the STOPPED `node` (chaos/disk.py)."""
        return corrupt_store(self._node(node).data_dir, random.Random(seed))

    def mount_small_disk(self, node: str, seed: int) -> str:
        """Put one data replica of the STOPPED node on a small tmpfs (chaos/disk.py)."""
        try:
            return self.small_disks.mount(self._node(node).data_dir, random.Random(seed))
        except DiskFaultError as error:
            raise NetnsError(str(error)) from error

    def fill_disk(self, node: str) -> str:
        return self.small_disks.fill(self._node(node).data_dir)

    def free_disk(self, node: str) -> str:
        return self.small_disks.free(self._node(node).data_dir)

    def disk_error(self, node: str, shard: int) -> str:
        return arm_disk_error(self._node(node).admin, shard, token=self._admin_token)

    def clear_disk_errors(self, node: str) -> None:
        clear_disk_errors(self._node(node).admin, token=self._admin_token)

    def lose(self, node: str) -> None:
        """Kill `node` and delete its data directory (its log is kept as DIR/<id>.lost.log);
        it is never restarted."""
        entry = self._node(node)
        self.kill(node)
        self.lost.add(node)
        with contextlib.suppress(OSError):
            entry.log_path.replace(self.data_dir / f"{node}.lost.log")
        shutil.rmtree(entry.data_dir, ignore_errors=True)
        if entry.data_dir.exists():
            raise NetnsError(f"{node}: could not delete {entry.data_dir}")

    # -- network faults ---------------------------------------------------------------------

    def _append_rules(self, node: _Node, rules: list[str]) -> None:
        if not rules:
            return
        text = "*filter\n" + "\n".join(rules) + "\nCOMMIT\n"
        run(_in_ns(node.namespace, "iptables-restore", "-w", "5", "--noflush"),
            input_text=text)

    def partition(self, groups: list[list[str]]) -> None:
        rules = partition_rules(groups, {node.id: node.address for node in self._nodes})
        for node in self._nodes:
            self._append_rules(node, rules[node.id])

    def block(self, source: str, target: str) -> None:
        target_address = self._node(target).address
        self._append_rules(self._node(source), [f"-A {CHAIN} -d {target_address}/32 -j DROP"])

    def heal(self) -> None:
        for node in self._nodes:
            run(_in_ns(node.namespace, "iptables", "-w", "5", "-F", CHAIN))

    def add_latency(self, node: str, delay_ms: float, jitter_ms: float = 0.0) -> None:
        """Delay the packets `node` sends to its peers (not its answers to the lab's clients).

        With netem (`latency_backend == "netem"`): a prio qdisc on the node's eth0 whose fourth
        band is a netem qdisc, fed by u32 filters matching the peers' addresses. Kernels without
        sch_netem / sch_prio / cls_u32 get the node's own fault rules instead (`delay_to` every
        peer through the admin API): the same delay on peer messages, applied by the node's
        transport; unlike netem it does not survive a restart of the node.
        """
        if delay_ms < 0 or jitter_ms < 0:
            raise NetnsError(f"add_latency: delay and jitter must be >= 0 "
                             f"(got {delay_ms}, {jitter_ms})")
        entry = self._node(node)
        if self.latency_backend == "fault-rules":
            self._put_fault_rules(entry, {"delay_to": {"*": {"ms": delay_ms,
                                                              "jitter_ms": jitter_ms}}})
            self._delayed.add(entry.id)
            return
        namespace = entry.namespace
        self._del_root_qdisc(namespace)
        self._delayed.add(entry.id)
        run(_in_ns(namespace, "tc", "qdisc", "add", "dev", "eth0", "root", "handle", "1:",
                   "prio", "bands", "4", "priomap", *_PRIOMAP))
        netem = ["netem", "delay", f"{delay_ms:g}ms"]
        if jitter_ms > 0:
            netem.append(f"{jitter_ms:g}ms")
        run(_in_ns(namespace, "tc", "qdisc", "add", "dev", "eth0", "parent", "1:4", "handle",
                   "40:", *netem))
        for other in self._nodes:
            if other.id != node:
                run(_in_ns(namespace, "tc", "filter", "add", "dev", "eth0", "parent", "1:",
                           "protocol", "ip", "prio", "1", "u32", "match", "ip", "dst",
                           f"{other.address}/32", "flowid", "1:4"))

    def clear_latency(self) -> None:
        failures = []
        for node in self._nodes:
            if self.latency_backend == "netem":
                self._del_root_qdisc(node.namespace)
            elif node.id in self._delayed:
                try:
                    self._delete_fault_rules(node)
                except NetnsError as error:
                    failures.append(str(error))
        self._delayed.clear()
        if failures:
            raise NetnsError("; ".join(failures))

    @staticmethod
    def _del_root_qdisc(namespace: str) -> None:
        run(_in_ns(namespace, "tc", "qdisc", "del", "dev", "eth0", "root"),
            ignore=("no such file", "cannot delete qdisc with handle of zero",
                    "cannot find specified qdisc"))

    def _detect_latency_backend(self) -> None:
        """netem when the kernel has sch_prio, sch_netem and cls_u32; else the fault rules."""
        if not self._nodes:
            return
        probe = self._nodes[0]
        try:
            self.add_latency(probe.id, 1.0)
        except NetnsError as error:
            self.latency_backend = "fault-rules"
            self.latency_note = (f"tc netem is not usable here ({error}); latency goes through "
                                 "the nodes' fault rules")
            logger.info("netns cluster %s: %s", self.prefix, self.latency_note)
        else:
            self.latency_backend = "netem"
            self.latency_note = "tc netem (prio qdisc, u32 filters on the peers' addresses)"
        finally:
            self._del_root_qdisc(probe.namespace)
            self._delayed.clear()

    def _put_fault_rules(self, node: _Node, rules: dict[str, Any]) -> None:
        try:
            code, body = admin_request(node.admin, "/faults", method="PUT", body=rules,
                                       token=self._admin_token, timeout=2.0)
        except OSError as error:
            raise NetnsError(f"PUT /faults on {node.id} at {node.admin} failed: {error}") from error
        if code != 200:
            raise NetnsError(f"PUT /faults on {node.id} answered {code}: {body}")

    def _delete_fault_rules(self, node: _Node) -> None:
        try:
            code, body = admin_request(node.admin, "/faults", method="DELETE",
                                       token=self._admin_token, timeout=2.0)
        except OSError as error:
            raise NetnsError(f"DELETE /faults on {node.id} at {node.admin} failed: "
                             f"{error}") from error
        if code != 200:
            raise NetnsError(f"DELETE /faults on {node.id} answered {code}: {body}")

    # -- teardown ---------------------------------------------------------------------------

    def close(self) -> None:
        """Kill the nodes, delete the namespaces (and their veths) and the bridge. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self._close_at_exit)
        failures: list[str] = []
        for node in self._nodes:
            process = node.process
            if process is None:
                continue
            with contextlib.suppress(ProcessLookupError, OSError):
                process.send_signal(signal.SIGKILL)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                failures.append(f"{node.id} (pid {process.pid}) survived SIGKILL")
        self.small_disks.unmount_all()
        for namespace in self._created_namespaces:
            try:
                pids = run(["ip", "netns", "pids", namespace], timeout=5).split()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                run(["ip", "netns", "del", namespace], ignore=("no such file",))
            except NetnsError as error:
                failures.append(str(error))
        self._created_namespaces.clear()
        for veth in self._created_veths:
            # Gone with its namespace unless setup failed before moving its peer there.
            try:
                # "No such device": the namespace's deletion (asynchronous in the kernel)
                # took it between our check and our delete.
                run(["ip", "link", "del", veth], ignore=("cannot find device",
                                                         "no such device"))
            except NetnsError as error:
                failures.append(str(error))
        self._created_veths.clear()
        if self._bridge_created:
            try:
                run(["ip", "link", "del", self.bridge], ignore=("cannot find device",))
                self._bridge_created = False
            except NetnsError as error:
                failures.append(str(error))
        if failures:
            raise NetnsError(f"netns cluster {self.prefix}: cleanup incomplete: "
                             + "; ".join(failures))

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except NetnsError as error:
            logger.warning("%s", error)

    def __enter__(self) -> NetnsControl:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

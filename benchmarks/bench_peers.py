"""The peers of `phalanx bench` (benchmarks/phalanx_bench.py): Redis Sentinel, a 3-member
etcd (its own Go client, benchmarks/etcd_load) and PySyncObj: how each is started on free
ports under the run's directory, loaded, and faulted (kill -9, SIGSTOP of its leader/master)
with the same gap writers as phalanx.

Imported by `phalanx_bench.run_suite` (it uses the suite's Processes registry and helpers,
bench_common.py, and the failover writers, bench_failover.py); every process is started through
`Processes.spawn`, so `Processes.close()` stops it by pid whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import resp_bench as rb
from bench_common import bulk_strings, load_record, log, resp_command, wait_for
from bench_failover import (
    FAULTS,
    ExternalWriter,
    Fault,
    gap_try,
    measure_gap,
    measure_gap_with,
    pid_fault,
)

if TYPE_CHECKING:
    from bench_common import Processes
    from phalanx_bench import Settings

HERE = Path(__file__).resolve().parent


class Sentinels:
    """1 redis master + 2 replicas + 3 sentinels on 127.0.0.1, data under `root`."""

    NAME = "mymaster"

    def __init__(self, root: Path, processes: Processes) -> None:
        self.root = root
        self.processes = processes
        self.servers: dict[int, tuple[list[str], subprocess.Popen[bytes]]] = {}
        self.sentinel_ports: list[int] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ports = [rb.free_port() for _ in range(3)]
        for index, port in enumerate(ports):
            directory = self.root / f"redis-{port}"
            directory.mkdir()
            argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir",
                    str(directory), "--save", "", "--appendonly", "no", "--protected-mode", "no",
                    "--daemonize", "no"]
            if index > 0:
                argv += ["--replicaof", "127.0.0.1", str(ports[0])]
            self.servers[port] = (argv, self.processes.spawn(argv, directory / "redis.log"))
        for port in ports:
            wait_for(lambda port=port: rb.ping("127.0.0.1", port), 15, f"redis :{port}")
        for _ in range(3):
            port = rb.free_port()
            directory = self.root / f"sentinel-{port}"
            directory.mkdir()
            config = directory / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {directory}\n"
                f"sentinel monitor {self.NAME} 127.0.0.1 {ports[0]} 2\n"
                f"sentinel down-after-milliseconds {self.NAME} 1000\n"
                f"sentinel failover-timeout {self.NAME} 10000\n"
                f"sentinel parallel-syncs {self.NAME} 1\n")
            self.processes.spawn(["redis-sentinel", str(config)], directory / "sentinel.log")
            self.sentinel_ports.append(port)
        wait_for(self.ready, 30, "sentinels to see 2 replicas and 2 other sentinels", poll=0.2)

    def master(self) -> tuple[str, int] | None:
        for port in self.sentinel_ports:
            with contextlib.suppress(OSError, ValueError):
                parts = bulk_strings(resp_command("127.0.0.1", port, "SENTINEL",
                                                  "get-master-addr-by-name", self.NAME,
                                                  timeout=0.3))
                if len(parts) == 2:
                    return parts[0], int(parts[1])
        return None

    def ready(self) -> bool:
        """Every sentinel knows the master, both replicas (link up) and the other sentinels."""
        for port in self.sentinel_ports:
            try:
                fields = bulk_strings(resp_command("127.0.0.1", port, "SENTINEL", "master",
                                                   self.NAME))
            except (OSError, ValueError):
                return False
            info = dict(zip(fields[::2], fields[1::2], strict=False))
            if info.get("num-slaves") != "2" or info.get("num-other-sentinels") != "2" or \
                    "down" in info.get("flags", "") or "failover" in info.get("flags", ""):
                return False
        master = self.master()
        if master is None:
            return False
        try:
            replication = resp_command(master[0], master[1], "INFO", "replication").decode()
        except OSError:
            return False
        return "connected_slaves:2" in replication and replication.count("state=online") == 2

    def kill_master(self) -> tuple[int, Callable[[], None]]:
        master = self.master()
        assert master is not None
        _argv, process = self.servers[master[1]]
        return master[1], process.kill

    def restart(self, port: int) -> None:
        argv, process = self.servers[port]
        process.wait(timeout=10)
        # Back as a plain server: the sentinels turn it into a replica of the new master.
        argv = list(argv)
        if "--replicaof" in argv:
            at = argv.index("--replicaof")
            del argv[at:at + 3]
        directory = Path(argv[argv.index("--dir") + 1])
        self.servers[port] = (argv, self.processes.spawn(argv, directory / "redis.log"))


def sentinel_failover(sentinels: Sentinels, settings: Settings,
                      how: str = "kill") -> list[dict[str, Any]]:
    """kill -9 (then restart as a plain server) or SIGSTOP (then SIGCONT) of the master; the
    sentinels turn the old master into a replica of the new one."""
    if not sentinels.sentinel_ports:
        sentinels.start()
    results = []
    tries = settings.failover_tries if how == "kill" else settings.sigstop_tries
    for attempt in range(1, tries + 1):
        wait_for(sentinels.ready, 60, "sentinel setup to heal", poll=0.2)
        port, kill = sentinels.kill_master()
        pid = sentinels.servers[port][1].pid

        def apply(kill: Callable[[], None] = kill, pid: int = pid) -> None:
            if how == "kill":
                kill()
            else:
                os.kill(pid, signal.SIGSTOP)

        fault = Fault(apply)

        gap = gap_try(pid, how, measure_gap, sentinels.master, fault, settings,
                      f"sentinel-{how}{attempt}", recover_timeout_s=60)
        gap.update(try_=attempt, killed=f"127.0.0.1:{port}")
        log(f"failover sentinel try {attempt}: {FAULTS[how]} master :{port}: "
            f"{gap.get('gap_ms', '-')} ms gap {gap['error']}")
        results.append(gap)
        if how == "kill":
            fault.ensure()
            sentinels.restart(port)
    return results


# --------------------------------------------------------------------------- etcd

#: etcd timing profiles: name -> extra flags (etcd's defaults: heartbeat 100 ms, election 1000 ms).
ETCD_PROFILES = {"etcd": [], "etcd-fast": ["--heartbeat-interval", "50",
                                          "--election-timeout", "250"]}
ETCD_LOAD_SOURCE = HERE / "etcd_load" / "main.go"


def build_etcd_load(root: Path) -> Path:
    """Build benchmarks/etcd_load/main.go against Debian's clientv3, offline, GOPATH mode."""
    binary = root / "etcd_load"
    environment = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode")
    environment.setdefault("GOCACHE", str(Path.home() / ".cache" / "go-build"))
    done = subprocess.run(["go", "build", "-o", str(binary), str(ETCD_LOAD_SOURCE)],
                          capture_output=True, text=True, timeout=600, check=False,
                          env=environment, cwd=str(ETCD_LOAD_SOURCE.parent))
    if done.returncode != 0:
        raise RuntimeError(f"go build etcd_load failed: {(done.stdout + done.stderr)[-800:]}")
    return binary


class Etcd:
    """A 3-member etcd cluster on 127.0.0.1 (free ports, data under `root`)."""

    def __init__(self, root: Path, processes: Processes, profile: str) -> None:
        self.root = root
        self.processes = processes
        self.profile = profile
        self.members: list[dict[str, Any]] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for index in range(3):
            self.members.append({"name": f"m{index}", "client": rb.free_port(),
                                 "peer": rb.free_port(), "dir": self.root / f"m{index}"})
        initial = ",".join(f"{m['name']}=http://127.0.0.1:{m['peer']}" for m in self.members)
        for member in self.members:
            client, peer = f"http://127.0.0.1:{member['client']}", \
                f"http://127.0.0.1:{member['peer']}"
            member["argv"] = [
                "etcd", "--name", member["name"], "--data-dir", str(member["dir"]),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"bench-{self.profile}-{os.getpid()}",
                "--log-level", "warn", *ETCD_PROFILES[self.profile]]
            self.spawn(member)
        wait_for(self.leader, 60, f"{self.profile}: a leader", poll=0.2)

    def spawn(self, member: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        member["process"] = self.processes.spawn(member["argv"],
                                                 self.root / f"{member['name']}.log")

    def endpoint(self, member: dict[str, Any]) -> str:
        return f"127.0.0.1:{member['client']}"

    def _statuses(self) -> Any:
        """`etcdctl endpoint status` of every live member, as parsed JSON (raises
        subprocess.TimeoutExpired, or ValueError on output that is not JSON)."""
        endpoints = ",".join(self.endpoint(m) for m in self.members
                             if m["process"].poll() is None)
        done = subprocess.run(["etcdctl", "--endpoints", endpoints, "--command-timeout",
                               "1s", "--dial-timeout", "1s", "endpoint", "status", "-w",
                               "json"], capture_output=True, text=True, timeout=10,
                              check=False, env=dict(os.environ, ETCDCTL_API="3"))
        return json.loads(done.stdout or "[]")

    def term(self) -> int:
        """The highest Raft term a live member reports (0 when none answers)."""
        try:
            return max((int(st["Status"].get("raft_term", 0)) for st in self._statuses()),
                       default=0)
        except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
            return 0

    def leader(self) -> dict[str, Any] | None:
        """The member every live member names as leader, or None."""
        try:
            statuses = self._statuses()
        except (subprocess.TimeoutExpired, ValueError):
            return None
        if len(statuses) != sum(1 for m in self.members if m["process"].poll() is None):
            return None
        leaders = {st["Status"]["leader"] for st in statuses}
        if len(leaders) != 1 or 0 in leaders:
            return None
        leader_id = leaders.pop()
        for st in statuses:
            if st["Status"]["header"]["member_id"] == leader_id:
                for member in self.members:
                    if st["Endpoint"].endswith(f":{member['client']}"):
                        return member
        return None


def run_etcd_load(binary: Path, etcd: Etcd, clients: int, requests: int, repeat: int,
                  settings: Settings) -> dict[str, Any]:
    """etcd_load against the leader's endpoint; a run dict like run_load's."""
    load = os.getloadavg()[0]
    leader = wait_for(etcd.leader, 30, "an etcd leader", poll=0.2)
    argv = [str(binary), "-mode", "load", "-endpoints", etcd.endpoint(leader), "-n",
            str(requests), "-c", str(clients), "-keyspace", str(settings.keyspace)]
    began = time.monotonic()
    ok, error, metrics = False, "", {}
    try:
        done = subprocess.run(argv, capture_output=True, text=True,
                              timeout=settings.run_timeout_s, check=False)
        result = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
        if done.returncode != 0 or not result:
            error = f"exit {done.returncode}: {done.stderr[-300:]}"
        elif result.get("errors"):
            error = f"{result['errors']} failed puts"
        else:
            ok = True
        if result:
            metrics = {"rps": float(result["rps"]), "p50_latency_ms": float(result["p50_ms"]),
                       "p99_latency_ms": float(result["p99_ms"])}
    except subprocess.TimeoutExpired:
        error = f"timed out after {settings.run_timeout_s:g} s"
    except ValueError as problem:
        error = f"unreadable output: {problem}"
    return load_record("etcd", "SET", clients, requests, repeat, ok, error, metrics,
                       time.monotonic() - began, load)


def etcd_failover(binary: Path, etcd: Etcd, settings: Settings,
                  how: str = "kill") -> list[dict[str, Any]]:
    """kill -9 (then start it again on its data dir) or SIGSTOP (then SIGCONT) of the etcd
    leader; the Go writer puts through the two other members."""
    results = []
    tries = settings.failover_tries if how == "kill" else settings.sigstop_tries
    for attempt in range(1, tries + 1):
        leader = wait_for(etcd.leader, 60, f"{etcd.profile}: a leader", poll=0.2)
        term_before = etcd.term()
        survivors = [etcd.endpoint(m) for m in etcd.members if m is not leader]
        process = leader["process"]
        writer = ExternalWriter(
            [str(binary), "-mode", "gap", "-endpoints", ",".join(survivors), "-interval",
             f"{settings.writer_interval_s * 1000:g}ms", "-timeout",
             f"{settings.writer_timeout_s * 1000:g}ms"],
            etcd.processes, etcd.root / "writer.log")

        fault = pid_fault(process.pid, how)
        tag = f"{etcd.profile}-{how}{attempt}"
        gap = gap_try(process.pid, how, measure_gap_with, writer, fault, tag)
        gap.update(try_=attempt, killed=leader["name"])
        if how == "kill":
            fault.ensure()
            process.wait(timeout=10)
            etcd.spawn(leader)
        # Healed: all three members answer and agree on a leader.
        wait_for(etcd.leader, 60, f"{etcd.profile} to heal", poll=0.2)
        term_after = etcd.term()
        if gap.get("ok") and term_before and term_after and term_after <= term_before:
            # No election followed the fault: the member hit had lost its leadership between
            # the look-up and the fault (a loaded machine), so the gap is not a failover's.
            gap.update(ok=False, error=f"no election followed (raft term stayed "
                                       f"{term_before}): {leader['name']} was not the leader "
                                       f"at the fault; its {gap.get('gap_ms')} ms not counted")
        log(f"failover {etcd.profile} try {attempt}: {FAULTS[how]} leader {leader['name']}: "
            f"{gap.get('gap_ms', '-')} ms gap {gap['error']}")
        results.append(gap)
    return results


# --------------------------------------------------------------------------- PySyncObj

PYSYNCOBJ_NODE = HERE / "pysyncobj_node.py"


class PySyncObjCluster:
    """3 PySyncObj nodes (benchmarks/pysyncobj_node.py) on 127.0.0.1, each in its own process,
    with a control port for commands (status, load, gap)."""

    def __init__(self, root: Path, processes: Processes) -> None:
        self.root = root
        self.processes = processes
        self.nodes: list[dict[str, Any]] = []

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        raft = [f"127.0.0.1:{rb.free_port()}" for _ in range(3)]
        for index, address in enumerate(raft):
            node = {"name": f"s{index}", "raft": address, "control": rb.free_port()}
            node["argv"] = [sys.executable, str(PYSYNCOBJ_NODE), address,
                            ",".join(a for a in raft if a != address), str(node["control"]),
                            str(self.root)]
            self.nodes.append(node)
            self.spawn(node)
        wait_for(self.leader, 60, "a PySyncObj leader", poll=0.2)

    def spawn(self, node: dict[str, Any]) -> None:
        node["process"] = self.processes.spawn(node["argv"], self.root / f"{node['name']}.log")

    def command(self, node: dict[str, Any], line: str, timeout: float) -> dict[str, Any]:
        with socket.create_connection(("127.0.0.1", node["control"]), timeout=timeout) as c:
            c.settimeout(timeout)
            c.sendall(line.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
        return dict(json.loads(data))

    def leader(self) -> dict[str, Any] | None:
        """The node every live node names as leader, or None."""
        named = set()
        for node in self.nodes:
            if node["process"].poll() is not None:
                continue
            try:
                named.add(self.command(node, "status", 2.0).get("leader"))
            except (OSError, ValueError):
                return None
        if len(named) != 1 or None in named:
            return None
        leader = named.pop()
        return next((n for n in self.nodes if n["raft"] == leader), None)


class SocketWriter(ExternalWriter):
    """ExternalWriter reading the event lines from a connection (a PySyncObj node's `gap`)."""

    def __init__(self, address: tuple[str, int], command: str) -> None:
        self.offset = time.monotonic() - time.time()
        self.events = []
        self.lock = threading.Lock()
        self.connection = socket.create_connection(address, timeout=5)
        self.connection.settimeout(None)
        self.connection.sendall(command.encode() + b"\n")
        self.reader = threading.Thread(target=self._read_socket, daemon=True)
        self.reader.start()

    def _read_socket(self) -> None:
        with contextlib.suppress(OSError), self.connection.makefile("rb") as lines:
            for raw in lines:
                parts = raw.split()
                if len(parts) == 3:
                    with contextlib.suppress(ValueError), self.lock:
                        self.events.append((int(parts[0]) / 1e9 + self.offset,
                                            int(parts[1]) / 1e9 + self.offset, parts[2] == b"1"))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()
        self.reader.join(5)


def run_pysyncobj_load(cluster: PySyncObjCluster, threads: int, requests: int, repeat: int,
                       settings: Settings) -> dict[str, Any]:
    """`load` inside the leader's process (PySyncObj's clients are in-process threads)."""
    load = os.getloadavg()[0]
    began = time.monotonic()
    ok, error, metrics = False, "", {}
    try:
        leader = wait_for(cluster.leader, 30, "a PySyncObj leader", poll=0.2)
        result = cluster.command(leader, f"load {threads} {requests}", settings.run_timeout_s)
        metrics = {"rps": float(result["rps"]), "p50_latency_ms": float(result["p50_ms"]),
                   "p99_latency_ms": float(result["p99_ms"])}
        ok = not result.get("errors")
        error = "" if ok else f"{result['errors']} failed writes"
    except (OSError, ValueError, KeyError, RuntimeError) as problem:
        error = f"{type(problem).__name__}: {problem}"
    return load_record("pysyncobj", "SET", threads, requests, repeat, ok, error, metrics,
                       time.monotonic() - began, load)


def pysyncobj_failover(cluster: PySyncObjCluster, settings: Settings,
                       how: str = "kill") -> list[dict[str, Any]]:
    """kill -9 (then start it again: its log is in memory, it catches up from the leader) or
    SIGSTOP (then SIGCONT) of the leader; the writer runs inside a surviving node."""
    results = []
    tries = settings.failover_tries if how == "kill" else settings.sigstop_tries
    for attempt in range(1, tries + 1):
        leader = wait_for(cluster.leader, 60, "a PySyncObj leader", poll=0.2)
        survivor = next(n for n in cluster.nodes if n is not leader)
        process = leader["process"]

        fault = pid_fault(process.pid, how)

        def measure(survivor: dict[str, Any] = survivor, fault: Fault = fault,
                    tag: str = f"pysyncobj-{how}{attempt}") -> dict[str, Any]:
            writer = SocketWriter(("127.0.0.1", survivor["control"]),
                                  f"gap {settings.writer_interval_s * 1000:g} "
                                  f"{settings.writer_timeout_s * 1000:g}")
            return measure_gap_with(writer, fault, tag)

        gap = gap_try(process.pid, how, measure, errors=(RuntimeError, OSError))
        gap.update(try_=attempt, killed=leader["name"], via=survivor["name"])
        log(f"failover pysyncobj try {attempt}: {FAULTS[how]} leader {leader['name']}: "
            f"{gap.get('gap_ms', '-')} ms gap {gap['error']}")
        results.append(gap)
        if how == "kill":
            fault.ensure()
            process.wait(timeout=10)
            cluster.spawn(leader)
        wait_for(cluster.leader, 60, "PySyncObj to heal", poll=0.2)
    return results

"""A 3-node RabbitMQ cluster on loopback for `phalanx bench --only queue` (issue 17).

Debian's `rabbitmq-server` (3.10, Erlang/OTP 25), each node its own Erlang VM:
- distinct node names (`bq<i>-<pid>@localhost`), AMQP ports and distribution ports (free ports),
  `RABBITMQ_MNESIA_BASE`, `RABBITMQ_LOG_BASE`, config, plugins and pid files under one temporary
  directory; a private `epmd` on a free port (`ERL_EPMD_PORT`), started here in the foreground
  so it is stopped by pid like every other process; one Erlang cookie shared through a private
  `HOME/.erlang.cookie` (the nodes and `rabbitmqctl` read the cookie from `$HOME`);
- nodes 2 and 3 join node 1 with `rabbitmqctl stop_app`, `join_cluster`, `start_app`
  (https://www.rabbitmq.com/clustering.html, "Creating a cluster");
- Erlang schedulers do not busy-wait (`+sbwt none +sbwtdcpu none +sbwtdio none`,
  https://www.rabbitmq.com/runtime.html "Scheduler busy waiting": advised where cores are
  shared), so idle nodes leave the cores to whatever is being measured;
- no plugins, no system config (`RABBITMQ_CONF_ENV_FILE`, `RABBITMQ_ENABLED_PLUGINS_FILE` and
  `RABBITMQ_CONFIG_FILE` point into the temporary directory), guest may log in over loopback.

The script `rabbitmq-server` runs the VM as its child; the VM writes its OS pid to
`RABBITMQ_PID_FILE` on boot, which is what kill -9 hits (the shell wrapper exits with it).
Quorum queues (https://www.rabbitmq.com/quorum-queues.html) keep their Raft log in the Ra WAL,
fsynced before a publisher confirm by default (`quorum_queue`/Ra `wal_sync_method` default).

Rules: every process is started through `Processes.spawn` (stopped by pid at the end); every
rabbitmqctl call has a timeout; nothing outside the temporary directory is written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import resp_bench as rb

if TYPE_CHECKING:
    from bench_common import Processes

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
QUEUES = "/usr/lib/rabbitmq/bin/rabbitmq-queues"


def installed() -> bool:
    return Path(SERVER).is_file() and Path(CTL).is_file() and shutil.which("epmd") is not None


class RabbitCluster:
    """3 RabbitMQ nodes under `root`, clustered; `start()` returns when all run as one cluster."""

    def __init__(self, root: Path, processes: Processes, size: int = 3) -> None:
        self.root = root
        self.processes = processes
        self.size = size
        self.nodes: list[dict[str, Any]] = []
        self.epmd_port = 0
        self.env: dict[str, str] = {}

    # ------------------------------------------------------------------ start

    def start(self, timeout: float = 240.0) -> None:
        began = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        home = self.root / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(f"PHALANXBENCH{os.getpid()}{int(time.time())}")
        cookie.chmod(0o400)
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq-env.conf").write_text("")
        self.epmd_port = rb.free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        self.env = dict(base, HOME=str(home), ERL_EPMD_PORT=str(self.epmd_port),
                        ERL_EPMD_ADDRESS="127.0.0.1",
                        RABBITMQ_CONF_ENV_FILE=str(self.root / "rabbitmq-env.conf"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=str(self.root / "enabled_plugins"),
                        RABBITMQ_CTL_DIST_PORT_MIN=str(rb.free_port()))
        self.env["RABBITMQ_CTL_DIST_PORT_MAX"] = str(int(self.env["RABBITMQ_CTL_DIST_PORT_MIN"])
                                                     + 10)
        self.processes.spawn(["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                             self.root / "epmd.log")
        rb.log(f"rabbitmq: epmd on :{self.epmd_port}; starting {self.size} nodes in {self.root}")
        for index in range(1, self.size + 1):
            name = f"bq{index}-{os.getpid()}@localhost"
            directory = self.root / f"n{index}"
            directory.mkdir()
            port, dist = rb.free_port(), rb.free_port()
            config = directory / "rabbitmq.conf"
            config.write_text(
                f"listeners.tcp.default = 127.0.0.1:{port}\n"
                "loopback_users = none\n"
                f"distribution.listener.port_range.min = {dist}\n"
                f"distribution.listener.port_range.max = {dist}\n"
                "disk_free_limit.absolute = 50MB\n"
                "log.console = false\nlog.file.level = info\n")
            node = {"index": index, "name": name, "port": port, "dist": dist, "dir": directory,
                    "pid_file": directory / "beam.pid"}
            node["env"] = dict(
                self.env, RABBITMQ_NODENAME=name, RABBITMQ_NODE_PORT=str(port),
                RABBITMQ_NODE_IP_ADDRESS="127.0.0.1", RABBITMQ_DIST_PORT=str(dist),
                RABBITMQ_CONFIG_FILE=str(config.with_suffix("")),
                RABBITMQ_MNESIA_BASE=str(directory / "mnesia"),
                RABBITMQ_LOG_BASE=str(directory / "log"),
                RABBITMQ_PID_FILE=str(node["pid_file"]),
                RABBITMQ_PLUGINS_EXPAND_DIR=str(directory / "plugins-expand"),
                RABBITMQ_FEATURE_FLAGS_FILE=str(directory / "feature_flags"),
                RABBITMQ_QUORUM_DIR=str(directory / "quorum"),
                # No scheduler busy-waiting (RabbitMQ's advice for shared hosts): otherwise the
                # three idle VMs spin on the 2 cores while the other targets are measured.
                RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none")
            self.nodes.append(node)
        for node in self.nodes:  # boot in parallel
            self.spawn(node)
        for node in self.nodes:
            self.wait_booted(node, timeout - (time.monotonic() - began))
        first = self.nodes[0]["name"]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first, timeout=120)
            self.ctl(node, "start_app", timeout=120)
        members = self.running_nodes(self.nodes[0])
        if sorted(members) != sorted(n["name"] for n in self.nodes):
            raise RuntimeError(f"rabbitmq: cluster has {members} running, expected all "
                               f"{[n['name'] for n in self.nodes]}")
        rb.log(f"rabbitmq: cluster of {self.size} up in {time.monotonic() - began:.1f} s: "
               + ", ".join(f"{n['name']}@:{n['port']}" for n in self.nodes))

    def spawn(self, node: dict[str, Any]) -> None:
        with contextlib.suppress(FileNotFoundError):
            node["pid_file"].unlink()
        with open(node["dir"] / "stdout.log", "ab") as handle:
            process = subprocess.Popen([SERVER], stdin=subprocess.DEVNULL, stdout=handle,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       env=node["env"], cwd=str(node["dir"]))
        self.processes.children.append(process)
        node["process"] = process

    def wait_booted(self, node: dict[str, Any], timeout: float) -> None:
        """`rabbitmqctl wait --pid` (the pid file's VM) until the app runs."""
        deadline = time.monotonic() + max(timeout, 10)
        while not node["pid_file"].exists():
            if node["process"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq {node['name']} did not start: "
                                   + self.tail(node))
            time.sleep(0.2)
        self.ctl(node, "wait", str(node["pid_file"]), "--timeout", "120",
                 timeout=max(deadline - time.monotonic(), 10))

    def tail(self, node: dict[str, Any]) -> str:
        logs = [*sorted((node["dir"] / "log").glob("*.log")), node["dir"] / "stdout.log"]
        return " | ".join(f"{p.name}: {rb._tail(p, 8)}" for p in logs if p.exists())

    # ------------------------------------------------------------------ control

    def ctl(self, node: dict[str, Any], *args: str, timeout: float = 60.0,
            tool: str = CTL) -> str:
        done = subprocess.run([tool, "-n", node["name"], *args], capture_output=True, text=True,
                              timeout=timeout, check=False, env=self.env)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(tool).name} -n {node['name']} {' '.join(args)}: exit "
                               f"{done.returncode}: {(done.stderr or done.stdout).strip()[-600:]}")
        return done.stdout

    def running_nodes(self, node: dict[str, Any]) -> list[str]:
        out = self.ctl(node, "eval", "rabbit_nodes:all_running().")
        return re.findall(r"'?([\w.-]+@[\w.-]+)'?", out)

    def pid(self, node: dict[str, Any]) -> int:
        return int(node["pid_file"].read_text().strip())

    def alive(self) -> list[dict[str, Any]]:
        return [n for n in self.nodes if n.get("process") is not None
                and n["process"].poll() is None]

    def queue_leader(self, queue: str) -> dict[str, Any] | None:
        """The node that leads quorum queue `queue`, asked of any live node (None if unknown)."""
        for node in self.alive():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                out = self.ctl(node, "list_queues", "-q", "--no-table-headers", "name",
                               "leader", timeout=30)
                for line in out.splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[0] == queue:
                        return next((n for n in self.nodes if n["name"] == parts[1]), None)
        return None

    def kill(self, node: dict[str, Any]) -> None:
        """kill -9 of the node's Erlang VM (the wrapper shell exits with it)."""
        os.kill(self.pid(node), signal.SIGKILL)

    def restart(self, node: dict[str, Any], timeout: float = 180.0) -> None:
        """Start a killed node again on its data; it rejoins the cluster by itself."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            node["process"].wait(timeout=20)
        self.spawn(node)
        self.wait_booted(node, timeout)

    def queue_members_online(self, queue: str) -> bool:
        """Every node is a running cluster member and the quorum queue has all its members."""
        try:
            if len(self.running_nodes(self.nodes[0])) != self.size:
                return False
            out = self.ctl(self.nodes[0], "list_queues", "-q", "--no-table-headers", "name",
                           "online", timeout=30)
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
        for line in out.splitlines():
            if line.split() and line.split()[0] == queue:
                return line.count("@") == self.size
        return False

    def url(self, node: dict[str, Any]) -> str:
        return f"amqp://guest:guest@127.0.0.1:{node['port']}/"

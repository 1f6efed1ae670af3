"""`LocalControl`: the `ClusterControl` of a local cluster (node processes on loopback).

Rules of this file:
- A cluster is started only through `phalanx.ops.launcher` (the code behind `phalanx up`), with
  fault injection enabled, on a free base port and its own loopback addresses; or attached from
  an existing `DIR/cluster.json` (`--target`), which this control never stops.
- Processes are signalled by pid, and only while the pid is a live phalanx process
  (`is_our_node`): pids get reused. `close()` resumes what it paused, removes the fault rules it
  installed, and SIGKILLs (then reaps) every process it started itself, by pid, always.
- Partitions and latency are the nodes' own transport fault rules (admin `PUT /faults`). The
  control keeps the whole rule set of every node and always sends it whole (a PUT replaces the
  rules); a node that was down gets its rules again when it restarts. These rules cut Raft
  (peer) traffic only: a node's RESP forwarding to the leader is not cut (netns mode cuts all).
- Every process it starts (the nodes, every restart) is written to the run's pid file
  (`phalanx.chaos.pidfile.RunRecord`) when given one, with its data directory as the marker.
- `lose(node)` kills the node and deletes its data directory (its log is kept beside it as
  `DIR/<id>.lost.log` for a post-mortem); a lost node is never restarted, not even by `repair`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
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
from phalanx.chaos.pidfile import RunRecord
from phalanx.errors import ChaosError, ClusterError
from phalanx.ops import admin, cluster_file, launcher

logger = logging.getLogger(__name__)

#: How long a restarted node may take to answer on its admin API.
RESTART_TIMEOUT_S = 30.0


class LocalControl:
    """Fault injection on a local cluster; see the module docstring."""

    def __init__(self, data_dir: str | Path, *, owned: bool,
                 processes: dict[str, subprocess.Popen[bytes]] | None = None,
                 temporary_root: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.owned = owned
        self._processes: list[subprocess.Popen[bytes]] = list((processes or {}).values())
        self._started_pids: set[int] = {p.pid for p in self._processes}
        self._temporary_root = temporary_root
        self._paused: set[str] = set()
        self._lock = threading.Lock()
        # The full fault rule set per node: peers it drops to / from, and delays per peer.
        self._drop_to: dict[str, set[str]] = {}
        self._drop_from: dict[str, set[str]] = {}
        self._delay: dict[str, dict[str, dict[str, float]]] = {}
        self._closed = False
        #: The run's pid file (`phalanx.chaos.pidfile`), when the run keeps one.
        self.record: RunRecord | None = None
        #: Nodes lost for good (`lose`): never restarted.
        self.lost: set[str] = set()
        #: The small file systems of `disk-full` (unmounted at close, after the nodes).
        self.small_disks = SmallDisks()
        self._ids = [entry.id for entry in cluster_file.read_cluster_file(self.data_dir).nodes]

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def start(cls, *, nodes: int = 5, zones: int = 3, data_dir: str | Path | None = None,
              seed: int | None = None, overrides: dict[str, Any] | None = None,
              timeout: float = 60.0, regions: int = 1,
              record: RunRecord | None = None, nodes_per_host: int = 1) -> LocalControl:
        """Start a fresh local cluster (fault injection on) and control it; stops it on close.

        Zone zK is in region r((K-1) % regions + 1) when `regions` > 1 (see
        `phalanx.ops.launcher.plan_local_cluster`); `nodes_per_host` consecutive nodes share a
        synthetic host h1..hH (docs/hosts.md). `record` (the run's pid file) gets the
        directories before anything starts and every node's pid once it runs."""
        temporary: Path | None = None
        if data_dir is None:
            temporary = Path(tempfile.mkdtemp(prefix="phalanx-chaos-"))
            data_dir = temporary / "cluster"
        data_dir = Path(data_dir).absolute()
        if record is not None:
            if temporary is not None:
                record.add_temporary(temporary)
            record.add_cluster(data_dir)
        options: dict[str, Any] = {"enable_fault_injection": True, **(overrides or {})}
        # Ports are not part of the experiment: they come from the OS's randomness, not the seed,
        # so that two runs with one seed can run side by side.
        rng = random.Random()
        try:
            plan = launcher.pick_free_plan(data_dir, rng, nodes=nodes, zones=zones,
                                           regions=regions, overrides=options,
                                           nodes_per_host=nodes_per_host)
        except ClusterError as error:
            raise ChaosError(str(error)) from error
        try:
            _cluster, _leader, processes = launcher.start_local_cluster(data_dir, plan,
                                                                        timeout=timeout)
        except ClusterError as error:
            raise ChaosError(f"the local cluster did not start: {error}") from error
        control = cls(data_dir, owned=True, processes=processes, temporary_root=temporary)
        control.record = record
        if record is not None:
            for entry in control._entries():
                record.add_process(entry.pid, entry.data_dir, f"node {entry.id}")
        return control

    @classmethod
    def attach(cls, cluster_json: str | Path) -> LocalControl:
        """Control a running cluster from its `cluster.json` (or its directory); never stops it."""
        path = Path(cluster_json)
        directory = path.parent if path.name == cluster_file.CLUSTER_FILE else path
        try:
            cluster_file.read_cluster_file(directory)
        except ClusterError as error:
            raise ChaosError(str(error)) from error
        return cls(directory, owned=False)

    # ---- observation ------------------------------------------------------------------------
    def _entries(self) -> list[cluster_file.NodeEntry]:
        return cluster_file.read_cluster_file(self.data_dir).nodes

    def _entry(self, node: str) -> cluster_file.NodeEntry:
        return cluster_file.read_cluster_file(self.data_dir).node(node)

    def nodes(self) -> list[NodeInfo]:
        infos = []
        for entry in self._entries():
            host, _, port = entry.resp.rpartition(":")
            infos.append(NodeInfo(id=entry.id, zone=entry.zone, region=entry.region,
                                  resp_host=host, resp_port=int(port),
                                  admin_url=f"http://{entry.admin}", pid=entry.pid or 0,
                                  host=entry.host_label))
        return infos

    def statuses(self, timeout: float = 0.5) -> list[admin.NodeStatus]:
        """Every node's /status (one request each, in parallel; None where it did not answer)."""
        entries = self._entries()

        def one(entry: cluster_file.NodeEntry) -> admin.NodeStatus:
            try:
                code, body = admin.admin_request(entry.admin, "/status", timeout=timeout)
            except OSError as error:
                return admin.NodeStatus(entry, None, "down", str(error))
            if code != 200 or not isinstance(body, dict):
                return admin.NodeStatus(entry, None, "down", f"/status answered {code}")
            return admin.NodeStatus(entry, body, "ok")

        with ThreadPoolExecutor(max_workers=len(entries)) as pool:
            return list(pool.map(one, entries))

    def leader(self) -> str | None:
        return admin.agreed_leader(self.statuses())

    def pid(self, node: str) -> int | None:
        return self._entry(node).pid

    def alive(self, node: str) -> bool:
        return launcher.is_our_node(self._entry(node).pid)

    # ---- processes --------------------------------------------------------------------------
    def _signal(self, node: str, sig: signal.Signals) -> int:
        entry = self._entry(node)
        if entry.pid is None or not launcher.is_our_node(entry.pid):
            raise ChaosError(f"{node} is not running (pid {entry.pid})")
        os.kill(entry.pid, sig)
        return entry.pid

    def kill(self, node: str) -> None:
        pid = self._signal(node, signal.SIGKILL)
        self._paused.discard(node)
        deadline = time.monotonic() + 10.0
        while launcher.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if launcher.pid_alive(pid):
            raise ChaosError(f"{node} (pid {pid}) did not die after SIGKILL")

    def pause(self, node: str) -> None:
        self._signal(node, signal.SIGSTOP)
        self._paused.add(node)

    def resume(self, node: str) -> None:
        self._signal(node, signal.SIGCONT)
        self._paused.discard(node)
        if self._drop_to.get(node) or self._drop_from.get(node) or self._delay.get(node):
            self._push(node)  # rules set while it was paused

    def restart(self, node: str) -> None:
        if node in self.lost:
            raise ChaosError(f"{node} was lost for good (its data is deleted); it is not "
                             "restarted")
        try:
            entry = launcher.restart_node(self.data_dir, node)
        except ClusterError as error:
            raise ChaosError(f"cannot restart {node}: {error}") from error
        if entry.pid is not None:
            self._started_pids.add(entry.pid)
            if self.record is not None:
                self.record.add_process(entry.pid, entry.data_dir, f"node {node} (restarted)")
        if launcher.wait_until_answering(entry, RESTART_TIMEOUT_S, poll=0.05):
            self._push(node)
            return
        log = Path(entry.data_dir) / cluster_file.NODE_LOG_FILE
        raise ChaosError(f"{node} did not come up after a restart\n{launcher.tail(log)}")

    def lose(self, node: str) -> None:
        """Kill `node` and delete its data directory; it never comes back (see the module)."""
        entry = self._entry(node)
        if not entry.data_dir:
            raise ChaosError(f"{node} has no data_dir in cluster.json; cannot delete its data")
        self.kill(node)
        self.lost.add(node)
        data_dir = Path(entry.data_dir)
        log = data_dir / cluster_file.NODE_LOG_FILE
        with contextlib.suppress(OSError):
            log.replace(data_dir.parent / f"{node}.lost.log")
        shutil.rmtree(data_dir, ignore_errors=True)
        if data_dir.exists():
            raise ChaosError(f"{node}: could not delete {data_dir}")

    def corrupt(self, node: str, seed: int) -> str:
        """Flip a byte in a data replica's WAL or snapshot of the STOPPED `node` (chaos/disk.py)."""
        entry = self._entry(node)
        if not entry.data_dir:
            raise ChaosError(f"{node} has no data_dir in cluster.json; cannot corrupt its disk")
        return corrupt_store(entry.data_dir, random.Random(seed))

    def mount_small_disk(self, node: str, seed: int) -> str:
        """Put one data replica of the STOPPED node on a small tmpfs (chaos/disk.py)."""
        if not self.owned:
            raise ChaosError("disk-full mounts file systems under the nodes' data: only on a "
                         "cluster the lab started itself")
        try:
            return self.small_disks.mount(self._entry(node).data_dir, random.Random(seed))
        except DiskFaultError as error:
            raise ChaosError(str(error)) from error

    def fill_disk(self, node: str) -> str:
        return self.small_disks.fill(self._entry(node).data_dir)

    def free_disk(self, node: str) -> str:
        return self.small_disks.free(self._entry(node).data_dir)

    def disk_error(self, node: str, shard: int) -> str:
        return arm_disk_error(self._entry(node).admin, shard)

    def clear_disk_errors(self, node: str) -> None:
        clear_disk_errors(self._entry(node).admin)

    # ---- network fault rules ----------------------------------------------------------------
    def _rules(self, node: str) -> dict[str, Any]:
        return {"drop_to": sorted(self._drop_to.get(node, ())),
                "drop_from": sorted(self._drop_from.get(node, ())),
                "delay_to": dict(self._delay.get(node, {}))}

    def _push(self, node: str) -> bool:
        """Send `node` its whole rule set; False when it cannot be reached (down or paused)."""
        entry = self._entry(node)
        try:
            code, body = admin.admin_request(entry.admin, "/faults", method="PUT",
                                             body=self._rules(node), timeout=2.0)
        except OSError as error:
            logger.info("fault rules for %s not installed now (%s); they follow on restart",
                        node, error)
            return False
        if code != 200:
            raise ChaosError(f"PUT /faults on {node} answered {code}: {body}")
        return True

    def _push_all(self, nodes: Iterable[str] | None = None) -> None:
        chosen = list(nodes) if nodes is not None else list(self._ids)
        targets = [n for n in chosen if n not in self._paused]
        if not targets:
            return
        threads = [threading.Thread(target=self._push, args=(n,), daemon=True) for n in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5.0)

    def partition(self, groups: list[list[str]]) -> None:
        side = {node: index for index, group in enumerate(groups) for node in group}
        with self._lock:
            for a in self._ids:
                for b in self._ids:
                    if a != b and (a not in side or b not in side or side[a] != side[b]):
                        self._drop_to.setdefault(a, set()).add(b)
                        self._drop_from.setdefault(a, set()).add(b)
            self._push_all()

    def block(self, source: str, target: str) -> None:
        with self._lock:
            self._drop_to.setdefault(source, set()).add(target)
            self._drop_from.setdefault(target, set()).add(source)
            self._push_all([source, target])

    def heal(self) -> None:
        with self._lock:
            self._drop_to.clear()
            self._drop_from.clear()
            self._push_all()

    def add_latency(self, node: str, delay_ms: float, jitter_ms: float = 0.0) -> None:
        with self._lock:
            self._delay[node] = {"*": {"ms": float(delay_ms), "jitter_ms": float(jitter_ms)}}
            self._push_all([node])

    def clear_latency(self) -> None:
        with self._lock:
            self._delay.clear()
            self._push_all()

    # ---- teardown ---------------------------------------------------------------------------
    def repair(self) -> list[str]:
        """Undo every fault: resume paused nodes, heal, clear latency, restart dead nodes.

        Returns what it did, in words. Never raises for one node's trouble.
        """
        done: list[str] = []
        for node in sorted(self._paused):
            with contextlib.suppress(ChaosError, OSError):
                self.resume(node)
                done.append(f"{node} resumed")
        with self._lock:
            self._drop_to.clear()
            self._drop_from.clear()
            self._delay.clear()
            self._push_all()
        for node in self._ids:
            if node in self.lost:
                continue
            with contextlib.suppress(ChaosError, DiskFaultError, OSError, ClusterError):
                freed = self.free_disk(node) if self.small_disks.mounted else ""
                if freed and not freed.startswith("0 KiB"):
                    done.append(f"{node}: {freed}")
            with contextlib.suppress(ChaosError, DiskFaultError, OSError, ClusterError):
                if self.alive(node):
                    self.clear_disk_errors(node)
        for node in self._ids:
            if node not in self.lost and not self.alive(node):
                try:
                    self.restart(node)
                    done.append(f"{node} restarted")
                except ChaosError as error:
                    done.append(f"{node} could not be restarted: {error}")
        return done

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for node in sorted(self._paused):
            with contextlib.suppress(ChaosError, OSError, ClusterError):
                self.resume(node)
        if not self.owned:
            with contextlib.suppress(ChaosError, ClusterError):
                self.heal()
                self.clear_latency()
            return
        pids = set(self._started_pids)
        with contextlib.suppress(ClusterError):
            pids.update(e.pid for e in self._entries() if e.pid is not None)
        for pid in sorted(pids):
            if launcher.is_our_node(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        for pid in sorted(pids):
            while launcher.pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        for process in self._processes:
            with contextlib.suppress(Exception):
                process.wait(timeout=1)
        self.small_disks.unmount_all()
        if self._temporary_root is not None and not os.environ.get("PHALANX_CHAOS_KEEP"):
            shutil.rmtree(self._temporary_root, ignore_errors=True)

    def __enter__(self) -> LocalControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""One chaos run: a cluster, a workload, a nemesis, and the measured result (a JSON-ready dict).

Rules of this file:
- `run_chaos` starts its own local cluster unless given a control (or `--target`), and always
  stops what it started (try / finally, by pid, through the control's `close()`).
- Order of a run: wait for a leader; start the leader monitor, the clients and the nemesis; at
  the end stop the nemesis (its last fault is healed), stop the clients, repair every fault
  (resume, heal, restart), wait until the replicas converge, read every set from every node,
  check the register history. Nothing is measured while repairing.
- The run is split along its seams: what it is asked (`run_config.py`: `RunConfig`, scenario
  defaults, `check_config`), how the cluster is watched (`watch.py`: the monitor thread, the
  waits for a leader, full redundancy and convergence) and what it found (`result.py`: the
  result dict with exactly `RESULT_KEYS`, lost writes, RTO, redundancy). This file runs it.
- A node lost for good (`node-lost`) leaves the clients' rotation once the cluster declares it
  dead, and is left out of convergence and of the final reads.
- The workload (`--workload`, `phalanx.chaos.workloads`) is orthogonal to the nemesis: its own
  check runs after healing, next to the final reads, and goes to `workload_check`; its lost
  acknowledged writes (a queue's lost pushes) count in `lost_acknowledged_writes` and the RPO.
- The client mode (`--client raw|smart|haproxy`, `phalanx.chaos.clients`) is orthogonal too.
  `ops` / `availability` / `nines` are the RAW view (every attempt); `application` is the view
  of the application's calls (succeeded within the deadline, retries counted); every fault's
  row of `rto_ms.faults` carries both over its window, and `per_kind` sums them per fault
  kind. In the haproxy mode the run starts HAProxy (`phalanx.chaos.haproxy_lab`) after the
  cluster is ready and stops it before the cluster.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from phalanx.chaos import metrics, redundancy, resources
from phalanx.chaos.control import ClusterControl
from phalanx.chaos.nemesis import SCENARIOS, Fault, Nemesis, Slot, plan
from phalanx.chaos.pidfile import RunRecord, reap_stale
from phalanx.chaos.result import build_result, lost_nodes
from phalanx.chaos.run_config import (
    RunConfig,
    apply_scenario_defaults,
    check_config,
    key_epoch_for,
    node_overrides,
)
from phalanx.chaos.watch import (
    ClusterMonitor,
    wait_converged,
    wait_for_leader,
    wait_fully_redundant,
)
from phalanx.chaos.workload import Workload, WorkloadConfig
from phalanx.chaos.workloads import make_workload
from phalanx.checker import check


@dataclass
class Progress:
    """What the live view shows; refreshed a few times a second."""

    elapsed_s: float
    duration_s: float
    ok: int
    fail: int
    info: int
    ops_per_s: float
    current_fault: str | None
    leader: str | None
    faults: int
    phase: str = "running"


@dataclass
class RunArtifacts:
    """The result and what it was computed from (for tests and the demo's story)."""

    result: dict[str, Any]
    history: Any = None
    ops: list[metrics.OpRecord] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    leader_changes: list[tuple[float, str]] = field(default_factory=list)
    pid_changes: dict[str, list[int]] = field(default_factory=dict)
    #: The workload itself (its raw records: pushes, deliveries, reads of the bank ...).
    workload: Workload | None = None


def make_control(config: RunConfig, record: RunRecord | None = None
                 ) -> tuple[ClusterControl, bool]:
    """The control of the run's cluster, and whether the run started it (and must stop it)."""
    if config.target is not None:
        from phalanx.chaos.local import LocalControl

        return LocalControl.attach(config.target), False
    if config.mode == "netns":
        try:
            from phalanx.chaos.netns import NetnsControl  # type: ignore[import-not-found,unused-ignore]
        except ImportError as error:
            raise RuntimeError("netns mode is not available in this build "
                               f"(phalanx.chaos.netns: {error})") from error
        import tempfile

        data_dir = config.data_dir or tempfile.mkdtemp(prefix="phalanx-chaos-netns-")
        control: ClusterControl = NetnsControl.start(nodes=config.nodes, zones=config.zones,
                                                     data_dir=data_dir, seed=config.seed,
                                                     overrides=node_overrides(config),
                                                     regions=config.regions or 1)
        return control, True
    if config.mode != "local":
        raise ValueError(f"unknown mode {config.mode!r} (local or netns)")
    from phalanx.chaos.local import LocalControl

    return LocalControl.start(nodes=config.nodes, zones=config.zones, data_dir=config.data_dir,
                              seed=config.seed, overrides=node_overrides(config),
                              regions=config.regions or 1, record=record,
                              nodes_per_host=config.nodes_per_host or 1), True

def run_chaos(config: RunConfig, *, control: ClusterControl | None = None,
              on_progress: Callable[[Progress], None] | None = None,
              slots: list[Slot] | None = None,
              on_started: Callable[[str, int | None], None] | None = None) -> RunArtifacts:
    """Run one scenario (or the given `slots`); see the module docstring.

    Raises ValueError for an unknown scenario."""
    if slots is None:
        if config.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {config.scenario!r} "
                             f"(known: {', '.join(SCENARIOS)})")
        config = apply_scenario_defaults(config)
        check_config(config)
        slots = plan(config.scenario, config.duration_s, config.seed,
                     warmup_s=config.warmup_s, recovery_s=config.recovery_s)
    owned = False
    record: RunRecord | None = None
    reaped: list[str] = []
    if control is None and config.target is None and config.mode == "local":
        reaped = reap_stale()
        record = RunRecord()
    try:
        if control is None:
            control, owned = make_control(config, record)
        try:
            return _run(config, control, slots, on_progress, on_started, reaped, record)
        finally:
            if owned:
                control.close()
    finally:
        if record is not None:
            record.close()


def _run(config: RunConfig, control: ClusterControl, slots: list[Slot],
         on_progress: Callable[[Progress], None] | None,
         on_started: Callable[[str, int | None], None] | None = None,
         reaped: list[str] | None = None,
         record: RunRecord | None = None) -> RunArtifacts:
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if wait_for_leader(control, 60.0) is None:
        raise RuntimeError("the cluster has no leader; nothing to measure")
    # Start from a fully redundant cluster, so that every loss is the nemesis' doing.
    before = wait_fully_redundant(control, 30.0)
    nodes = control.nodes()
    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    events: list[tuple[float, str]] = []
    events_lock = threading.Lock()

    def on_event(at_s: float, text: str) -> None:
        with events_lock:
            events.append((at_s, text))

    if not before.full:
        on_event(0.0, f"before the run: the cluster was not fully redundant ({before.reason})")
    for text in reaped or []:
        on_event(0.0, f"before the run: {text}")
    proxy = None
    if config.client == "haproxy":
        from phalanx.chaos.haproxy_lab import LabHAProxy

        proxy = LabHAProxy(nodes)
        if record is not None:
            record.add_temporary(proxy.directory)
        proxy.start(on_spawn=None if record is None else
                    lambda pid: record.add_process(pid, str(proxy.directory), "haproxy"))
        if on_started is not None:
            on_started("haproxy", proxy.pid)
    try:
        return _measure(config, control, slots, on_progress, nodes, t0, clock, events,
                        on_event, started_at, proxy)
    finally:
        if proxy is not None:
            proxy.stop()


def _measure(config: RunConfig, control: ClusterControl, slots: list[Slot],
             on_progress: Callable[[Progress], None] | None, nodes: list[Any], t0: float,
             clock: Callable[[], float], events: list[tuple[float, str]],
             on_event: Callable[[float, str], None], started_at: str,
             proxy: Any) -> RunArtifacts:
    monitor = ClusterMonitor(control, clock).start()
    sampler = resources.ResourceSampler(lambda: _node_resources(control), clock,
                                        min(resources.DEFAULT_INTERVAL_S,
                                            max(1.0, config.duration_s / 30))).start()
    prefix = f"chaos:{config.seed}:{os.urandom(3).hex()}"
    workload = make_workload(config.workload, nodes,
                             WorkloadConfig(clients=config.clients, rate_ops_s=config.rate_ops_s,
                                            prefix=prefix, client=config.client,
                                            deadline_s=config.deadline_s,
                                            haproxy=None if proxy is None else proxy.address,
                                            key_epoch_s=key_epoch_for(config)),
                             seed=config.seed, t0=t0, until_s=config.duration_s).start()
    nemesis = Nemesis(control, slots, clock, on_event,
                      until_s=config.duration_s - config.recovery_s).start()
    pid_changes: dict[str, list[int]] = {node.id: [node.pid] for node in nodes}
    try:
        last_total, last_time = 0, 0.0
        rate = 0.0
        while clock() < config.duration_s:
            time.sleep(0.25)
            now = clock()
            with workload.state.lock:
                found = metrics.counts(workload.state.ops)
            if now - last_time >= 1.0:
                rate = (found["total"] - last_total) / (now - last_time)
                last_total, last_time = found["total"], now
            _retire_lost_nodes(nemesis.faults, monitor.latest, workload, now, on_event)
            if on_progress is not None:
                current = nemesis.current
                on_progress(Progress(now, config.duration_s, found["ok"], found["fail"],
                                     found["info"], rate,
                                     None if current is None else current.description,
                                     monitor.current, len(nemesis.faults)))
        nemesis.stop()
    finally:
        nemesis.stop()
        workload.stop()
        used = sampler.stop()
    if on_progress is not None:
        on_progress(Progress(clock(), config.duration_s, 0, 0, 0, 0.0, None, monitor.current,
                             len(nemesis.faults), phase="healing and checking"))
    for node in control.nodes():
        if node.pid and node.pid not in pid_changes.setdefault(node.id, []):
            pid_changes[node.id].append(node.pid)
    repaired = getattr(control, "repair", None)
    if repaired is not None:
        for text in repaired():
            on_event(clock(), f"after the run: {text}")
    else:
        with contextlib.suppress(Exception):
            control.heal()
            control.clear_latency()
    lost = lost_nodes(nemesis.faults)
    converged = wait_converged(control, exclude=lost)
    if not converged:
        on_event(clock(), "after the run: the replicas did not converge within 30 s")
    monitor.stop()
    final = workload.final_members(exclude=lost)
    workload_check = workload.final_check(exclude=lost)
    history = workload.state.history
    verdict = check(history)
    for node in control.nodes():
        if node.pid and node.pid not in pid_changes.setdefault(node.id, []):
            pid_changes[node.id].append(node.pid)
    result = build_result(config, control, started_at, workload, nemesis.faults,
                          monitor.changes, final, verdict, events,
                          observations=list(monitor.observations), cluster=monitor.cluster,
                          workload_check=workload_check)
    result["resources"] = used
    if nemesis.error:
        result["events"].append({"at_s": config.duration_s, "text": f"nemesis error: {nemesis.error}"})
    return RunArtifacts(result, history, list(workload.state.ops), list(nemesis.faults),
                        list(monitor.changes), pid_changes, workload)


def _node_resources(control: ClusterControl) -> list[tuple[str, int | None, str | None]]:
    """(id, pid, data_dir) of every node, from the cluster file of a control that has one."""
    directory = getattr(control, "data_dir", None)
    if directory is None:
        return [(node.id, node.pid or None, None) for node in control.nodes()]
    from phalanx.ops import cluster_file

    return [(entry.id, entry.pid, entry.data_dir or None)
            for entry in cluster_file.read_cluster_file(directory).nodes]


def _retire_lost_nodes(faults: list[Fault], latest: redundancy.Observation | None,
                       workload: Workload, now: float,
                       on_event: Callable[[float, str], None]) -> None:
    """A node lost for good leaves the clients' rotation once the cluster declares it dead."""
    if latest is None:
        return
    for node in sorted(lost_nodes(faults) & set(latest.dead) - workload.retired):
        workload.retire(node)
        on_event(now, f"{node} taken out of the clients' rotation (the cluster declared it "
                      "dead)")

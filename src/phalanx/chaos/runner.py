"""One chaos run: a cluster, a workload, a nemesis, and the measured result (a JSON-ready dict).

Rules of this file:
- `run_chaos` starts its own local cluster unless given a control (or `--target`), and always
  stops what it started (try / finally, by pid, through the control's `close()`).
- Order of a run: wait for a leader; start the leader monitor, the clients and the nemesis; at
  the end stop the nemesis (its last fault is healed), stop the clients, repair every fault
  (resume, heal, restart), wait until the replicas converge, read every set from every node,
  check the register history. Nothing is measured while repairing.
- The result dict has exactly the keys the HTML report reads (see `RESULT_KEYS`); values are
  plain JSON (no infinities, None where a measure does not exist).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phalanx.chaos import metrics
from phalanx.chaos.control import ClusterControl
from phalanx.chaos.nemesis import SCENARIOS, Fault, Nemesis, Slot, plan
from phalanx.chaos.workload import Workload, WorkloadConfig
from phalanx.checker import check

RESULT_KEYS = ("scenario", "seed", "mode", "duration_s", "started_at", "cluster", "ops",
               "availability", "nines", "rto_ms", "lost_acknowledged_writes", "rpo",
               "linearizable", "linearizability", "faults", "timeline", "latency_ms",
               "throughput_ops_s", "events")

#: Node settings of a cluster the lab starts: the server gives up on a request before the
#: client's socket timeout, so the client hears a clear error rather than a timeout.
LOCAL_OVERRIDES: dict[str, Any] = {"request_timeout_ms": 800}


@dataclass(frozen=True, slots=True)
class RunConfig:
    scenario: str
    duration_s: float = 60.0
    seed: int = 0
    nodes: int = 5
    zones: int = 3
    mode: str = "local"
    target: str | None = None
    clients: int = 4
    rate_ops_s: float = 200.0
    warmup_s: float = 3.0
    recovery_s: float = 4.0
    data_dir: str | None = None


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


class _Monitor:
    """Polls the agreed leader a few times a second; records every change."""

    def __init__(self, control: ClusterControl, clock: Callable[[], float],
                 interval_s: float = 0.25) -> None:
        self.control = control
        self.clock = clock
        self.interval_s = interval_s
        self.changes: list[tuple[float, str]] = []
        self.current: str | None = None
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="leader-monitor")

    def _run(self) -> None:
        while not self.stop_event.is_set():
            began = self.clock()
            try:
                leader = self.control.leader()
            except Exception:
                leader = None
            if leader is not None and leader != self.current:
                self.changes.append((began, leader))
            self.current = leader
            self.stop_event.wait(self.interval_s)

    def start(self) -> _Monitor:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5.0)


def make_control(config: RunConfig) -> tuple[ClusterControl, bool]:
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
                                                     overrides=LOCAL_OVERRIDES)
        return control, True
    if config.mode != "local":
        raise ValueError(f"unknown mode {config.mode!r} (local or netns)")
    from phalanx.chaos.local import LocalControl

    return LocalControl.start(nodes=config.nodes, zones=config.zones, data_dir=config.data_dir,
                              seed=config.seed, overrides=LOCAL_OVERRIDES), True


def _wait_for_leader(control: ClusterControl, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        leader = control.leader()
        if leader is not None:
            return leader
        time.sleep(0.2)
    return None


def wait_converged(control: ClusterControl, timeout_s: float = 30.0) -> bool:
    """Until every node agrees on the leader and term and has applied all it committed (seen
    twice in a row). Controls without per-node statuses: until a leader is agreed, plus 2 s."""
    statuses = getattr(control, "statuses", None)
    if statuses is None:
        found = _wait_for_leader(control, timeout_s) is not None
        time.sleep(2.0)
        return found
    deadline = time.monotonic() + timeout_s
    previous: tuple[Any, ...] | None = None
    while time.monotonic() < deadline:
        seen = [s.status for s in statuses()]
        if all(s is not None for s in seen):
            leaders = {s.get("leader") for s in seen if s}
            terms = {s.get("term") for s in seen if s}
            applied = {s.get("applied_index") for s in seen if s}
            committed = {s.get("commit_index") for s in seen if s}
            if (len(leaders) == 1 and None not in leaders and len(terms) == 1
                    and len(applied) == 1 and applied == committed):
                key = (next(iter(leaders)), next(iter(terms)), next(iter(applied)))
                if key == previous:
                    return True
                previous = key
            else:
                previous = None
        time.sleep(0.2)
    return False


def run_chaos(config: RunConfig, *, control: ClusterControl | None = None,
              on_progress: Callable[[Progress], None] | None = None,
              slots: list[Slot] | None = None) -> RunArtifacts:
    """Run one scenario (or the given `slots`); see the module docstring.

    Raises ValueError for an unknown scenario."""
    if slots is None:
        if config.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {config.scenario!r} "
                             f"(known: {', '.join(SCENARIOS)})")
        slots = plan(config.scenario, config.duration_s, config.seed,
                     warmup_s=config.warmup_s, recovery_s=config.recovery_s)
    owned = False
    if control is None:
        control, owned = make_control(config)
    try:
        return _run(config, control, slots, on_progress)
    finally:
        if owned:
            control.close()


def _run(config: RunConfig, control: ClusterControl, slots: list[Slot],
         on_progress: Callable[[Progress], None] | None) -> RunArtifacts:
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if _wait_for_leader(control, 60.0) is None:
        raise RuntimeError("the cluster has no leader; nothing to measure")
    nodes = control.nodes()
    pids_before = {node.id: node.pid for node in nodes}
    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    events: list[tuple[float, str]] = []
    events_lock = threading.Lock()

    def on_event(at_s: float, text: str) -> None:
        with events_lock:
            events.append((at_s, text))

    monitor = _Monitor(control, clock).start()
    prefix = f"chaos:{config.seed}:{os.urandom(3).hex()}"
    workload = Workload(nodes, WorkloadConfig(clients=config.clients,
                                              rate_ops_s=config.rate_ops_s, prefix=prefix),
                        seed=config.seed, t0=t0, until_s=config.duration_s).start()
    nemesis = Nemesis(control, slots, clock, on_event).start()
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
    converged = wait_converged(control)
    if not converged:
        on_event(clock(), "after the run: the replicas did not converge within 30 s")
    monitor.stop()
    final = workload.final_members()
    history = workload.state.history
    verdict = check(history)
    for node in control.nodes():
        if node.pid and node.pid not in pid_changes.setdefault(node.id, []):
            pid_changes[node.id].append(node.pid)
    del pids_before
    result = build_result(config, control, started_at, workload, nemesis.faults,
                          monitor.changes, final, verdict, events)
    if nemesis.error:
        result["events"].append({"at_s": config.duration_s, "text": f"nemesis error: {nemesis.error}"})
    return RunArtifacts(result, history, list(workload.state.ops), list(nemesis.faults),
                        list(monitor.changes), pid_changes)


def build_result(config: RunConfig, control: ClusterControl, started_at: str,
                 workload: Workload, faults: list[Fault], leader_changes: list[tuple[float, str]],
                 final: tuple[dict[str, dict[str, set[str] | None]],
                              dict[str, dict[str, set[str] | None]]], verdict: Any,
                 events: list[tuple[float, str]]) -> dict[str, Any]:
    state = workload.state
    ops = list(state.ops)
    duration = config.duration_s
    found = metrics.counts(ops)
    available = metrics.availability(ops)
    # Lost acknowledged writes: acknowledged members missing from what any node answers to a
    # linearizable SMEMBERS (what a client would read). A replica whose own copy (READONLY) lacks
    # some is told as an event: lagging or diverged, but the writes are not lost to clients.
    linearizable, local_copy = final
    lost: list[tuple[float, str, str]] = []
    for key, members in state.acknowledged.items():
        missing: set[str] = set()
        for per_node in linearizable.values():
            observed = per_node.get(key)
            if observed is not None:
                missing |= set(members) - observed
        lost.extend((members[m], key, m) for m in missing)
    lost.sort()
    lagging: list[tuple[float, str]] = []
    for node_id, per_node in local_copy.items():
        absent = sum(len(set(members) - (per_node.get(key) or set()))
                     for key, members in state.acknowledged.items()
                     if per_node.get(key) is not None)
        unread = [key for key, observed in per_node.items() if observed is None]
        if absent:
            lagging.append((duration, f"after the run: {node_id}'s own copy lacks {absent} "
                            "acknowledged writes (a replica behind the others)"))
        if unread:
            lagging.append((duration, f"after the run: {node_id} did not answer a local read"))
    rpo = metrics.rpo(t for t, _key, _member in lost)
    rto_entries: list[dict[str, Any]] = []
    story: list[tuple[float, str]] = list(events) + lagging
    for position, fault in enumerate(faults):
        rto = metrics.recovery_time_ms(fault.at_s, ops)
        following = faults[position + 1].at_s if position + 1 < len(faults) else None
        new_leader = _new_leader(fault, leader_changes, following)
        rto_entries.append({"kind": fault.kind, "targets": list(fault.targets),
                            "at_s": round(fault.at_s, 3), "rto_ms": rto,
                            "new_leader": new_leader})
        if rto is None:
            story.append((fault.at_s + 0.0002, "writes did not come back before the end"))
        else:
            story.append((fault.at_s + rto / 1000, f"writes resumed {rto:.0f} ms after the "
                          "fault (first acknowledged write)"))
    for at, leader in leader_changes[1:]:
        story.append((at, f"{leader} became leader"))
    if lost:
        story.append((duration, f"{len(lost)} acknowledged writes lost (first acknowledged at "
                      f"{lost[0][0]:.1f} s)"))
    story.sort(key=lambda item: item[0])
    explain = "" if verdict.ok else verdict.explain()
    return {
        "scenario": config.scenario,
        "seed": config.seed,
        "mode": config.mode,
        "duration_s": duration,
        "started_at": started_at,
        "cluster": {"nodes": [{"id": n.id, "zone": n.zone, "region": n.region}
                              for n in control.nodes()]},
        "ops": {"ok": found["ok"], "fail": found["fail"], "info": found["info"],
                "total": found["total"]},
        "availability": round(available, 6),
        "nines": metrics.nines(available, found["total"]),
        "rto_ms": {**metrics.rto_summary(e["rto_ms"] for e in rto_entries),
                   "faults": rto_entries},
        "lost_acknowledged_writes": len(lost),
        "rpo": rpo,
        "linearizable": bool(verdict.ok),
        "linearizability": {"verdict": str(verdict.verdict), "explain": explain},
        "faults": [fault.to_json() for fault in faults],
        "timeline": metrics.timeline(ops, duration),
        "latency_ms": metrics.latency_summary(ops),
        "throughput_ops_s": metrics.throughput(ops, duration),
        "events": [{"at_s": round(at, 3), "text": text} for at, text in story],
    }


def _new_leader(fault: Fault, changes: list[tuple[float, str]],
                following_at_s: float | None = None) -> str | None:
    """The first leader seen after the fault (until 3 s after it healed, and before the next
    fault) that differs from the leader before it; None when the leadership did not move."""
    horizon = (fault.end_s if fault.end_s is not None else fault.at_s) + 3.0
    if following_at_s is not None:
        horizon = min(horizon, following_at_s)
    for at, leader in changes:
        if fault.at_s <= at <= horizon and leader != fault.leader_before:
            return leader
    return None


def write_result(result: dict[str, Any], directory: str | Path) -> tuple[Path, Path | None]:
    """DIR/result.json and, when the report writer is available, DIR/report.html."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "result.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    try:
        from phalanx.chaos.report import write_html_report  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return json_path, None
    html = write_html_report(result, directory / "report.html")
    return json_path, Path(html)

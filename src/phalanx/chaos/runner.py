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
- One monitor thread polls every node's /status every `MONITOR_INTERVAL_S`: the agreed leader
  (for the new-leader column) and whether the cluster is fully redundant
  (`phalanx.chaos.redundancy`), from which the time to full redundancy of every fault is
  computed, bounded by the run's duration.
- A cluster the lab starts gets the run's topology (`regions`) and node settings (`shards`,
  `survival_goal`, `dead_after_ms`); a scenario fills what the caller left out
  (`SCENARIO_DEFAULTS`) and `check_config` refuses, in one line, what cannot work (a region
  outage without 3 regions, a lost node with no spare to heal onto).
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
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from phalanx.chaos import metrics, redundancy, resources
from phalanx.chaos.clients import CLIENT_MODES, DEFAULT_CLIENT, DEFAULT_DEADLINE_S
from phalanx.chaos.control import ClusterControl, agreed_leader, fetch_statuses
from phalanx.chaos.nemesis import (
    PERMANENT,
    REPAIRED_IN_FORCE,
    SCENARIOS,
    Fault,
    Nemesis,
    Slot,
    plan,
)
from phalanx.chaos.pidfile import RunRecord, reap_stale
from phalanx.chaos.workload import Workload, WorkloadConfig
from phalanx.chaos.workloads import DEFAULT_WORKLOAD, WORKLOADS, make_workload
from phalanx.checker import check

RESULT_KEYS = ("scenario", "seed", "mode", "duration_s", "started_at", "cluster", "ops",
               "availability", "nines", "rto_ms", "lost_acknowledged_writes", "rpo",
               "linearizable", "linearizability", "faults", "timeline", "latency_ms",
               "throughput_ops_s", "events", "redundancy", "workload", "workload_check",
               "client", "application", "per_kind", "resources")

#: Node settings of a cluster the lab starts: the server gives up on a request before the
#: client's socket timeout, so the client hears a clear error rather than a timeout.
LOCAL_OVERRIDES: dict[str, Any] = {"request_timeout_ms": 800}

#: How often the monitor polls every node's /status (leader, redundancy).
MONITOR_INTERVAL_S = 0.2
#: How long a node may take to answer /status before it counts as not answering (a loaded
#: machine answers slowly; a killed node refuses at once, a paused one takes all of it).
STATUS_TIMEOUT_S = 1.0

#: What a scenario needs of a cluster the lab starts, where the caller did not say.
#: region-outage: 9 nodes in 6 zones over 3 regions (two zones per region), 5 replicas per
#: shard with no region holding a quorum. node-lost: the dead node is declared dead after 3 s
#: (the node default is 60 s), so the healing happens inside the run.
SCENARIO_DEFAULTS: dict[str, dict[str, Any]] = {
    "region-outage": {"nodes": 9, "regions": 3, "survival_goal": "region"},
    "node-lost": {"dead_after_ms": 3000},
}

#: Node settings a scenario needs of a cluster the lab starts. disk-full: a snapshot every
#: 100 entries (20 kept), so a replica on a full disk meets it within seconds at the lab's
#: rates (a snapshot is a new file; the log's 4 MiB preallocated chunk would take minutes to
#: use up) and a rebuilt replica gets a small snapshot and a short log; and per-replica logs
#: (`storage_engine = "wal"`): a replica in the node's one log has no directory of its own to
#: put on a small disk (a full node log stops every replica of the node, docs/disk-faults.md).
SCENARIO_NODE_SETTINGS: dict[str, dict[str, Any]] = {
    "disk-full": {"snapshot_every_entries": 100, "snapshot_keep_entries": 20,
                  "storage_engine": "wal"},
}


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
    #: Topology and node settings of a cluster the lab starts (None: the scenario's default,
    #: else the node's own: 1 region, 1 shard, zone goal, 60 s).
    regions: int | None = None
    shards: int | None = None
    survival_goal: str | None = None
    dead_after_ms: int | None = None
    #: Raft timing of a cluster the lab starts, in 10 ms ticks (None: the node's defaults;
    #: issue 15 lever 8 compares timings with these).
    election_ticks: int | None = None
    heartbeat_ticks: int | None = None
    #: What the clients do (`phalanx.chaos.workloads.WORKLOADS`).
    workload: str = DEFAULT_WORKLOAD
    #: How they reach the cluster (`phalanx.chaos.clients.CLIENT_MODES`), and the deadline of
    #: one application call in the retrying modes.
    client: str = DEFAULT_CLIENT
    deadline_s: float = DEFAULT_DEADLINE_S
    #: Peer mutual TLS for a cluster the lab starts: a test CA and certificates here.
    peer_tls_dir: str | None = None
    #: Register keys renamed every this many seconds (None: `key_epoch_for(duration)`).
    key_epoch_s: float | None = None


#: Runs longer than this rename their register keys every `LONG_RUN_KEY_EPOCH_S`.
LONG_RUN_S = 300.0
LONG_RUN_KEY_EPOCH_S = 60.0


def key_epoch_for(config: RunConfig) -> float | None:
    """The register keys' epoch of a run: given, else 60 s for a run over 5 minutes (its history
    is then many short ones, which the checker handles in time), else none."""
    if config.key_epoch_s is not None:
        return config.key_epoch_s if config.key_epoch_s > 0 else None
    return LONG_RUN_KEY_EPOCH_S if config.duration_s > LONG_RUN_S else None


def replicas_for(survival_goal: str | None) -> int:
    """Replicas per shard under a survival goal (the planner's default)."""
    return 5 if survival_goal == "region" else 3


def apply_scenario_defaults(config: RunConfig) -> RunConfig:
    """Fill the node settings the scenario needs and the caller left None (a lab-started
    cluster only: an attached cluster keeps its own)."""
    if config.target is not None:
        return config
    missing = {key: value for key, value in SCENARIO_DEFAULTS.get(config.scenario, {}).items()
               if key != "nodes" and getattr(config, key) is None}
    return replace(config, **missing) if missing else config


def scenario_config(scenario: str, **given: Any) -> RunConfig:
    """A RunConfig from what the caller gave (None = not given): the scenario's defaults fill
    the rest (`SCENARIO_DEFAULTS`; zones default to 3, at least the regions, and two per region
    for region-outage; node-lost defaults to two nodes more than the replicas per shard).
    ValueError (one line) when the combination cannot work, see `check_config`."""
    values = {key: value for key, value in given.items() if value is not None}
    if values.get("target") is None:
        for key, value in SCENARIO_DEFAULTS.get(scenario, {}).items():
            values.setdefault(key, value)
        regions = values.get("regions") or 1
        if "zones" not in values:
            values["zones"] = 2 * regions if scenario == "region-outage" else max(3, regions)
        if scenario == "node-lost" and "nodes" not in values:
            values["nodes"] = replicas_for(values.get("survival_goal")) + 2
    config = apply_scenario_defaults(RunConfig(scenario=scenario, **values))
    check_config(config)
    return config


def region_sizes(nodes: int, zones: int, regions: int) -> dict[str, int]:
    """Nodes per region of a local cluster (the layout of `plan_local_cluster`)."""
    sizes: dict[str, int] = {}
    for i in range(1, nodes + 1):
        zone = (i - 1) % zones + 1
        region = f"r{(zone - 1) % regions + 1}" if regions > 1 else "r1"
        sizes[region] = sizes.get(region, 0) + 1
    return sizes


def check_config(config: RunConfig) -> None:
    """ValueError naming the option when a run cannot do what its scenario needs."""
    if config.scenario not in SCENARIOS and config.scenario != "demo":
        raise ValueError(f"unknown scenario {config.scenario!r} (known: {', '.join(SCENARIOS)})")
    if config.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {config.workload!r} (known: {', '.join(WORKLOADS)})")
    if config.client not in CLIENT_MODES:
        raise ValueError(f"unknown client mode {config.client!r} "
                         f"(known: {', '.join(CLIENT_MODES)})")
    if config.client == "smart" and config.workload not in ("register", "queue"):
        raise ValueError(f"--client smart runs the register and queue workloads: the "
                         f"{config.workload} workload needs connection state (WATCH / MULTI, a "
                         "consumer's connection) that a routing client does not keep; use "
                         "--client raw or haproxy")
    if config.deadline_s <= 0:
        raise ValueError(f"--deadline must be > 0; got {config.deadline_s:g}")
    node_settings = {"--regions": config.regions, "--shards": config.shards,
                     "--survival-goal": config.survival_goal,
                     "--dead-after-ms": config.dead_after_ms,
                     "--election-ticks": config.election_ticks,
                     "--heartbeat-ticks": config.heartbeat_ticks}
    if config.target is not None:
        if config.scenario == "disk-full":
            raise ValueError("disk-full mounts file systems under the nodes' data: only on a "
                             "cluster the lab starts itself (no --target)")
        given = [name for name, value in node_settings.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} configure a cluster the lab starts; with "
                             "--target the running cluster keeps its own settings")
        return
    if config.nodes < 1 or config.zones < 1:
        raise ValueError("--nodes and --zones must be >= 1")
    regions = config.regions or 1
    if not 1 <= regions <= config.zones:
        raise ValueError(f"--regions must be between 1 and --zones ({config.zones}); "
                         f"got {regions}")
    if config.shards is not None and config.shards < 1:
        raise ValueError(f"--shards must be >= 1; got {config.shards}")
    if config.survival_goal not in (None, "zone", "region"):
        raise ValueError(f"--survival-goal must be zone or region; got {config.survival_goal}")
    if config.dead_after_ms is not None and config.dead_after_ms <= 0:
        raise ValueError(f"--dead-after-ms must be > 0; got {config.dead_after_ms}")
    for name, ticks in (("--election-ticks", config.election_ticks),
                        ("--heartbeat-ticks", config.heartbeat_ticks)):
        if ticks is not None and ticks < 1:
            raise ValueError(f"{name} must be >= 1; got {ticks}")
    if config.scenario == "region-outage":
        if regions < 3 or config.survival_goal != "region":
            raise ValueError("region-outage needs at least 3 regions and the region survival "
                             "goal (no region holds a quorum of a shard): --regions 3 "
                             "--survival-goal region")
        if config.nodes < 5:
            raise ValueError(f"region-outage needs at least 5 nodes (5 replicas per shard); "
                             f"got --nodes {config.nodes}")
        sizes = region_sizes(config.nodes, config.zones, regions)
        if all(2 * size >= config.nodes for size in sizes.values()):
            raise ValueError("region-outage: every region holds half of the nodes or more; "
                             "use more nodes or regions")
    if config.scenario == "disk-full" and os.geteuid() != 0:
        raise ValueError("disk-full mounts a small tmpfs for one replica: run it as root")
    if config.scenario == "node-lost":
        needed = replicas_for(config.survival_goal) + 1
        if config.nodes < needed:
            raise ValueError(f"node-lost needs a spare node to heal onto: at least {needed} "
                             f"nodes for {needed - 1} replicas per shard; got --nodes "
                             f"{config.nodes}")
        dead_after_s = (config.dead_after_ms or 60_000) / 1000
        room_s = config.duration_s - config.warmup_s - 1.0
        if dead_after_s >= room_s:
            raise ValueError(f"node-lost: the cluster declares a silent node dead after "
                             f"{dead_after_s:g} s (--dead-after-ms), but the run has only "
                             f"{max(room_s, 0):g} s after the loss; use a longer --duration "
                             "or a shorter --dead-after-ms")


def node_overrides(config: RunConfig) -> dict[str, Any]:
    """NodeConfig fields for every node of a cluster the lab starts."""
    settings = {"shards": config.shards, "survival_goal": config.survival_goal,
                "dead_after_ms": config.dead_after_ms, "peer_tls_dir": config.peer_tls_dir,
                "election_ticks": config.election_ticks,
                "heartbeat_ticks": config.heartbeat_ticks}
    return {**LOCAL_OVERRIDES, **SCENARIO_NODE_SETTINGS.get(config.scenario, {}),
            **{k: v for k, v in settings.items() if v is not None}}


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


class _Monitor:
    """Polls every node's /status every `interval_s`: the agreed leader (every change is
    recorded) and a redundancy observation (`redundancy.assess`)."""

    def __init__(self, control: ClusterControl, clock: Callable[[], float],
                 interval_s: float = MONITOR_INTERVAL_S) -> None:
        self.control = control
        self.clock = clock
        self.interval_s = interval_s
        self.changes: list[tuple[float, str]] = []
        self.current: str | None = None
        self.observations: list[redundancy.Observation] = []
        self.latest: redundancy.Observation | None = None
        #: survival goal, replication factor, shards of the newest map seen.
        self.cluster: dict[str, Any] = {}
        self.stop_event = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=max(4, len(control.nodes())),
                                       thread_name_prefix="status-poll")
        self.thread = threading.Thread(target=self._run, daemon=True, name="monitor")

    def _poll(self) -> tuple[str | None, Mapping[str, Any] | None]:
        try:
            statuses = fetch_statuses(self.control, timeout=STATUS_TIMEOUT_S, pool=self.pool)
        except Exception:
            try:
                return self.control.leader(), None
            except Exception:
                return None, None
        return agreed_leader(statuses), statuses

    def _run(self) -> None:
        while not self.stop_event.is_set():
            began = self.clock()
            leader, statuses = self._poll()
            if statuses is not None:
                observation = redundancy.assess(statuses, self.clock())
                newest = redundancy.newest_status(statuses)
                if newest is not None:
                    self.cluster = {"survival_goal": newest.get("survival_goal"),
                                    "replication_factor": newest.get("replication_factor"),
                                    "shards": len(observation.replicas) or None}
                self.observations.append(observation)
                self.latest = observation
            if leader is not None and leader != self.current:
                self.changes.append((began, leader))
            self.current = leader
            self.stop_event.wait(max(0.0, self.interval_s - (self.clock() - began)))

    def start(self) -> _Monitor:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5.0)
        self.pool.shutdown(wait=False)


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
                              regions=config.regions or 1, record=record), True


def _wait_for_leader(control: ClusterControl, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        leader = control.leader()
        if leader is not None:
            return leader
        time.sleep(0.2)
    return None


def convergence_key(statuses: Mapping[str, Mapping[str, Any] | None],
                    exclude: frozenset[str] = frozenset()) -> tuple[Any, ...] | None:
    """What must hold still for the replicas to have converged, or None while they have not:
    every node (but `exclude`) answers, and for every shard of the newest map its voters agree
    on leader and term and have applied all they committed, the same index. A node without a
    shard map: every node agrees on the top-level leader, term and applied index."""
    considered = {node: status for node, status in statuses.items() if node not in exclude}
    if not considered or any(status is None for status in considered.values()):
        return None
    answered = {node: status for node, status in considered.items() if status is not None}
    newest = redundancy.newest_status(answered)
    shards = [s for s in (newest or {}).get("shards") or [] if isinstance(s, Mapping)]
    if not shards:
        seen = list(answered.values())
        leaders = {s.get("leader") for s in seen}
        terms = {s.get("term") for s in seen}
        applied = {s.get("applied_index") for s in seen}
        committed = {s.get("commit_index") for s in seen}
        if (len(leaders) == 1 and None not in leaders and len(terms) == 1
                and len(applied) == 1 and applied == committed):
            return (next(iter(leaders)), next(iter(terms)), next(iter(applied)))
        return None
    key: list[tuple[Any, ...]] = []
    for shard in shards:
        shard_id = str(shard.get("id"))
        groups = []
        for voter in shard.get("voters") or []:
            if voter in exclude or voter not in answered:
                continue
            local = answered[voter].get("local")
            group = local.get(shard_id) if isinstance(local, Mapping) else None
            if not isinstance(group, Mapping):
                return None
            groups.append(group)
        if not groups:
            return None
        leaders = {g.get("leader") for g in groups}
        terms = {g.get("term") for g in groups}
        applied = {g.get("applied_index") for g in groups}
        committed = {g.get("commit_index") for g in groups}
        if (len(leaders) != 1 or None in leaders or len(terms) != 1 or len(applied) != 1
                or applied != committed):
            return None
        key.append((shard_id, next(iter(leaders)), next(iter(terms)), next(iter(applied))))
    return tuple(key)


def wait_converged(control: ClusterControl, timeout_s: float = 30.0,
                   exclude: frozenset[str] = frozenset()) -> bool:
    """Until `convergence_key` is the same twice in a row (nodes in `exclude`, lost for good,
    are left out). A control whose nodes cannot be polled: until a leader is agreed, plus 2 s."""
    deadline = time.monotonic() + timeout_s
    previous: tuple[Any, ...] | None = None
    while time.monotonic() < deadline:
        try:
            statuses = fetch_statuses(control, timeout=0.5)
        except Exception:
            found = _wait_for_leader(control, max(0.0, deadline - time.monotonic())) is not None
            time.sleep(2.0)
            return found
        key = convergence_key(statuses, exclude)
        if key is not None and key == previous:
            return True
        previous = key
        time.sleep(0.2)
    return False


def wait_fully_redundant(control: ClusterControl, timeout_s: float) -> redundancy.Observation:
    """Poll until the cluster is fully redundant (or `timeout_s`); the last observation."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            statuses = fetch_statuses(control, timeout=0.5)
        except Exception as error:
            return redundancy.Observation(0.0, False, f"cannot poll the nodes: {error}")
        newest = redundancy.newest_status(statuses)
        if newest is not None and "shards" not in newest:
            return redundancy.Observation(0.0, True)  # nodes without a shard map: nothing to wait for
        observation = redundancy.assess(statuses, 0.0)
        if observation.full or time.monotonic() >= deadline:
            return observation
        time.sleep(MONITOR_INTERVAL_S)


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
    if _wait_for_leader(control, 60.0) is None:
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
    monitor = _Monitor(control, clock).start()
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
    lost_nodes = _lost_nodes(nemesis.faults)
    converged = wait_converged(control, exclude=lost_nodes)
    if not converged:
        on_event(clock(), "after the run: the replicas did not converge within 30 s")
    monitor.stop()
    final = workload.final_members(exclude=lost_nodes)
    workload_check = workload.final_check(exclude=lost_nodes)
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


def _dead_after_ms(config: RunConfig) -> int | None:
    """The dead-after of a cluster the lab started (the node default when not set); None for an
    attached cluster (its own, unknown here)."""
    if config.dead_after_ms is not None or config.target is not None:
        return config.dead_after_ms
    from phalanx.ops.launcher import node_config_default

    default = node_config_default("dead_after_ms")
    return default if isinstance(default, int) else None


def _lost_nodes(faults: list[Fault]) -> frozenset[str]:
    return frozenset(t for fault in faults if fault.kind in PERMANENT for t in fault.targets)


def _retire_lost_nodes(faults: list[Fault], latest: redundancy.Observation | None,
                       workload: Workload, now: float,
                       on_event: Callable[[float, str], None]) -> None:
    """A node lost for good leaves the clients' rotation once the cluster declares it dead."""
    if latest is None:
        return
    for node in sorted(_lost_nodes(faults) & set(latest.dead) - workload.retired):
        workload.retire(node)
        on_event(now, f"{node} taken out of the clients' rotation (the cluster declared it "
                      "dead)")


def redundancy_result(faults: list[Fault], observations: list[redundancy.Observation],
                      duration_s: float) -> dict[str, Any]:
    """The `redundancy` part of the result: time to full redundancy per fault (bounded by the
    run), median and worst, the state at the end of the run and every change of state."""
    measured = [o for o in observations if o.at_s <= duration_s]
    entries = redundancy.per_fault([(f.at_s, f.end_s) for f in faults], measured, duration_s,
                                   began=[f.began_s for f in faults],
                                   heal_needed=[f.kind not in REPAIRED_IN_FORCE for f in faults])
    for fault, entry in zip(faults, entries, strict=True):
        entry.update({"kind": fault.kind, "targets": list(fault.targets),
                      "at_s": round(fault.at_s, 3)})
    changes = redundancy.transitions(measured)
    last = measured[-1] if measured else None
    return {**redundancy.summary(entries), "faults": entries,
            "final": None if last is None else {"at_s": round(last.at_s, 3), "full": last.full,
                                                "reason": last.reason or None},
            "transitions": [{"at_s": at, "full": full, "reason": reason or None}
                            for at, full, reason in changes[:500]],
            "poll_interval_s": MONITOR_INTERVAL_S,
            "lag_limit_entries": redundancy.LAG_LIMIT_ENTRIES}


def _placement_story(observations: list[redundancy.Observation],
                     duration_s: float) -> list[tuple[float, str]]:
    """Nodes the cluster declared dead (or alive again) and shards whose replicas it moved."""
    story: list[tuple[float, str]] = []
    previous: redundancy.Observation | None = None
    for observation in observations:
        if observation.at_s > duration_s:
            break
        if previous is not None and observation.map_version is not None:
            for node in sorted(set(observation.dead) - set(previous.dead)):
                story.append((observation.at_s, f"the cluster declared {node} dead"))
            for node in sorted(set(previous.dead) - set(observation.dead)):
                story.append((observation.at_s, f"the cluster sees {node} alive again"))
            before = dict(previous.replicas)
            for shard, replicas in observation.replicas:
                old = before.get(shard)
                if old is not None and set(old) != set(replicas):
                    gone = sorted(set(old) - set(replicas))
                    new = sorted(set(replicas) - set(old))
                    story.append((observation.at_s, f"shard {shard}: replica(s) on "
                                  f"{', '.join(gone) or '-'} re-created on "
                                  f"{', '.join(new) or '-'} (desired: {', '.join(replicas)})"))
        if observation.map_version is not None:
            previous = observation
    return story


def build_result(config: RunConfig, control: ClusterControl, started_at: str,
                 workload: Workload, faults: list[Fault], leader_changes: list[tuple[float, str]],
                 final: tuple[dict[str, dict[str, set[str] | None]],
                              dict[str, dict[str, set[str] | None]]], verdict: Any,
                 events: list[tuple[float, str]],
                 observations: list[redundancy.Observation] | None = None,
                 cluster: Mapping[str, Any] | None = None,
                 workload_check: Mapping[str, Any] | None = None) -> dict[str, Any]:
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
    lost.extend(workload.lost_writes())
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
    calls = list(state.calls) or metrics.calls_from_ops(ops)
    index = metrics.OpIndex(ops, calls)
    for position, fault in enumerate(faults):
        rto = index.recovery_time_ms(fault.at_s)
        following = faults[position + 1].at_s if position + 1 < len(faults) else None
        new_leader = _new_leader(fault, leader_changes, following)
        began = fault.at_s if fault.began_s is None else min(fault.began_s, fault.at_s)
        window = metrics.fault_window(began, fault.end_s, following, duration)
        rto_entries.append({"kind": fault.kind, "targets": list(fault.targets),
                            "at_s": round(fault.at_s, 3), "rto_ms": rto,
                            "new_leader": new_leader,
                            "window_s": [round(window[0], 3), round(window[1], 3)],
                            **index.window(*window)})
        if rto is None:
            story.append((fault.at_s + 0.0002, "writes did not come back before the end"))
        else:
            story.append((fault.at_s + rto / 1000, f"writes resumed {rto:.0f} ms after the "
                          "fault (first acknowledged write)"))
    for at, leader in leader_changes[1:]:
        story.append((at, f"{leader} became leader"))
    polled = list(observations or [])
    redundant = redundancy_result(faults, polled, duration)
    story.extend(_placement_story(polled, duration))
    for entry in redundant["faults"]:
        if entry["restored_at_s"] is not None:
            healed = entry["after_heal_s"]
            after = ("" if healed is None else f", {healed:.1f} s after it healed" if healed >= 0
                     else f", {-healed:.1f} s before it healed (rebuilt elsewhere)")
            story.append((entry["restored_at_s"], f"full redundancy again {entry['seconds']:.1f}"
                          f" s after the {entry['kind']} fault{after}"))
        elif entry["lost"]:
            story.append((entry["lost_at_s"] + 0.0003, f"full redundancy: {entry['reason']}"))
    if lost:
        story.append((duration, f"{len(lost)} acknowledged writes lost (first acknowledged at "
                      f"{lost[0][0]:.1f} s)"))
    for problem in (workload_check or {}).get("problems") or []:
        story.append((duration, f"after the run: {problem}"))
    story.sort(key=lambda item: item[0])
    explain = "" if verdict.ok else verdict.explain()
    return {
        "scenario": config.scenario,
        "seed": config.seed,
        "mode": config.mode,
        "duration_s": duration,
        "started_at": started_at,
        "cluster": {"nodes": [{"id": n.id, "zone": n.zone, "region": n.region}
                              for n in control.nodes()],
                    "shards": (cluster or {}).get("shards", config.shards),
                    "survival_goal": (cluster or {}).get("survival_goal", config.survival_goal),
                    "replication_factor": (cluster or {}).get("replication_factor"),
                    "dead_after_ms": _dead_after_ms(config),
                    "lost_nodes": sorted(_lost_nodes(faults))},
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
        "redundancy": redundant,
        "workload": getattr(workload, "name", config.workload),
        "workload_check": None if workload_check is None else dict(workload_check),
        "resources": None,
        "register_key_epoch_s": key_epoch_for(config),
        "client": {"mode": config.client,
                   "deadline_s": None if config.client == "raw" else config.deadline_s},
        "application": metrics.application_summary(calls),
        "per_kind": metrics.per_kind(rto_entries),
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

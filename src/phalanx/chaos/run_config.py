"""What a chaos run is asked to do: `RunConfig`, the scenarios' defaults and node settings, and
the checks that refuse, in one line, a run that cannot work. See docs/architecture.md (chaos).

Rules of this file:
- Pure configuration: no process is started and no node is asked anything here; the runner
  (`phalanx.chaos.runner`) starts the cluster these settings describe.
- A cluster the lab starts gets the run's topology (`regions`) and node settings (`shards`,
  `survival_goal`, `dead_after_ms`); a scenario fills what the caller left out
  (`SCENARIO_DEFAULTS`) and `check_config` refuses, in one line naming the option, what cannot
  work (a region outage without 3 regions, a lost node with no spare to heal onto).
- An attached cluster (`--target`) keeps its own settings: the node options are refused there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from phalanx.chaos.clients import CLIENT_MODES, DEFAULT_CLIENT, DEFAULT_DEADLINE_S
from phalanx.chaos.nemesis import SCENARIOS
from phalanx.chaos.workloads import DEFAULT_WORKLOAD, WORKLOADS

#: Node settings of a cluster the lab starts: the server gives up on a request before the
#: client's socket timeout, so the client hears a clear error rather than a timeout.
LOCAL_OVERRIDES: dict[str, Any] = {"request_timeout_ms": 800}

#: What a scenario needs of a cluster the lab starts, where the caller did not say.
#: region-outage: 9 nodes in 6 zones over 3 regions (two zones per region), 5 replicas per
#: shard with no region holding a quorum. node-lost: the dead node is declared dead after 3 s
#: (the node default is 60 s), so the healing happens inside the run. host-outage: 6 nodes on
#: 3 synthetic hosts of 2 in ONE zone (docs/hosts.md): only the host rule keeps two replicas of a
#: shard off one machine, so the lost host must cost at most one replica of each shard.
SCENARIO_DEFAULTS: dict[str, dict[str, Any]] = {
    "region-outage": {"nodes": 9, "regions": 3, "survival_goal": "region"},
    "node-lost": {"dead_after_ms": 3000},
    "host-outage": {"nodes": 6, "zones": 1, "nodes_per_host": 2},
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
    #: Node processes per synthetic host of a cluster the lab starts (None: 1; host-outage: 2).
    nodes_per_host: int | None = None
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
                     "--heartbeat-ticks": config.heartbeat_ticks,
                     "--nodes-per-host": config.nodes_per_host}
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
    per_host = 1 if config.nodes_per_host is None else config.nodes_per_host
    if per_host < 1:
        raise ValueError(f"--nodes-per-host must be >= 1; got {per_host}")
    if per_host > 1 and config.mode != "local":
        raise ValueError("--nodes-per-host: only the local mode puts several nodes on a "
                         "synthetic host (in netns mode every node is a host of its own)")
    if config.scenario == "host-outage":
        hosts = -(-config.nodes // per_host)
        if hosts < 3:
            raise ValueError(f"host-outage needs at least 3 hosts (so one host holds less than "
                             f"half of the nodes); got {hosts} (--nodes {config.nodes} "
                             f"--nodes-per-host {per_host})")
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

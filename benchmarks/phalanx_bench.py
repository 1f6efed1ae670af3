"""`phalanx bench`: phalanx and every installed peer, side by side, in one run (issues 7, 15).

The run (`run_suite`): the sections with clusters of their own first (scale, recovery/memory in
bench_sections.py, the modules of SECTION_MODULES such as bench_bulk.py and bench_hosts.py,
soak, queue, partition), then one shared 3-node cluster and the peers (bench_peers.py: Redis
Sentinel, etcd, PySyncObj; redis-server AOF always) for writes, reads, commands, pipelines,
latency and the failover gaps (bench_failover.py). The helpers every part shares (the Processes
registry, wait_for, resp_command, the shared cluster's leader) are in bench_common.py. Runs alternate: for each repeat every target runs once, in an
order that rotates per repeat. `RESULTS.md` (bench_report.py, opening with the "Issue 15
goals" table of bench_goals.py) and `results.json` go to the output directory; see
benchmarks/README.md for how to read them.

Rules it keeps: every process it starts is stopped by pid (phalanx through `phalanx down`, then
any survivor naming our temporary directory), also on errors, Ctrl-C and SIGTERM; every external
call has a timeout; no number is a pass/fail threshold.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import resp_bench as rb  # noqa: E402  (same directory; shares the process and parsing helpers)
from bench_common import (  # noqa: E402  (the processes registry and helpers every section uses)
    Processes,
    load_record,
    log,
    phalanx_leader,
    wait_for,
)
from bench_failover import (  # noqa: E402  (the failover/sigstop sections)
    failover_ratio,
    gap_summary,
    phalanx_failover,
)
from bench_queue import QueueSettings  # noqa: E402  (the queue section's settings, issue 17)

if TYPE_CHECKING:
    import bench_peers as peers

SECTIONS = ("writes", "reads", "commands", "pipelines", "failover", "sigstop", "etcd",
            "pysyncobj", "latency", "scale", "recovery", "memory", "bulk", "soak", "queue",
            "partition", "hosts")
#: Sections that start their own clusters (benchmarks/bench_sections.py, bench_queue.py, and
#: the modules of SECTION_MODULES), run before the rest.
ISOLATED = ("scale", "recovery", "memory", "bulk", "soak", "queue", "partition", "hosts")
#: Sections in a module of their own, each on clusters of its own: name -> (module, function).
#: `function(processes, settings)` returns the section's dict, stored as `doc[name]`;
#: `module.markdown(doc[name])` gives its lines in RESULTS.md. A new section registers here
#: (and in SECTIONS, ISOLATED and the CLI's --only default), and adds its goal row to
#: bench_goals.ROWS.
SECTION_MODULES: dict[str, tuple[str, str]] = {
    "bulk": ("bench_bulk", "bulk_section"),
    "hosts": ("bench_hosts", "hosts_section"),
}

#: Peers this suite knows about: name -> (how to detect it, how to install it, measured here?).
PEERS: dict[str, dict[str, Any]] = {
    "redis-server": {"binary": "redis-server", "install": "apt-get install redis-server",
                     "measured": True},
    "redis-benchmark": {"binary": "redis-benchmark", "install": "apt-get install redis-tools",
                        "measured": True},
    "redis-sentinel": {"binary": "redis-sentinel", "install": "apt-get install redis-sentinel",
                       "measured": True},
    "etcd": {"binary": "etcd", "install": "apt-get install etcd-server etcd-client golang-go "
             "golang-etcd-server-dev", "measured": True},
    "etcdctl": {"binary": "etcdctl", "install": "apt-get install etcd-client", "measured": True},
    "go": {"binary": "go", "install": "apt-get install golang-go golang-etcd-server-dev",
           "measured": True},
    "pysyncobj": {"module": "pysyncobj", "install": "pip install pysyncobj", "measured": True},
}


@dataclass
class Settings:
    repeats: int = 3
    set_requests: dict[int, int] = field(default_factory=lambda: {1: 1000, 50: 10000,
                                                                  256: 10000})
    get_requests: int = 20000
    read_clients: int = 50
    keyspace: int = 100000
    failover_tries: int = 5
    sigstop_tries: int = 3
    pysyncobj_requests: dict[int, int] = field(default_factory=lambda: {1: 150, 16: 1000})
    etcd_requests: dict[int, int] = field(default_factory=lambda: {1: 1000, 50: 10000,
                                                                   256: 10000})
    writer_interval_s: float = 0.005
    writer_timeout_s: float = 0.5
    run_timeout_s: float = 90.0
    #: pipelines (issue 15, lever 5): SET requests per run, 100 per pipeline, through the
    #: leader and through a follower (benchmarks/bench_pipelines.py).
    pipeline_requests: int = 40000
    #: commands (issue 13): LPUSH/LPOP/ZADD/EVALSHA, requests per run and clients.
    command_requests: int = 10000
    command_clients: int = 50
    only: tuple[str, ...] = SECTIONS
    #: Peers to treat as not installed (the smoke test uses this to see the "skipped" path).
    assume_missing: frozenset[str] = frozenset()
    quick: bool = False
    #: Peer mutual TLS on every phalanx cluster (a test CA and certificates in this directory).
    peer_tls_dir: str | None = None
    #: reads: also GET through a follower (ReadIndex via the leader) and on a --lease-reads
    #: cluster; the keyspace is loaded first everywhere, so every GET hits.
    read_variants: bool = True
    #: latency: fixed rates (requests/s) and seconds per open-loop run.
    latency_rates: tuple[float, ...] = (500.0, 2000.0)
    latency_seconds: float = 10.0
    #: scale: (nodes, shards) per row, SET requests per row (split over the nodes).
    scale_configs: tuple[tuple[int, int], ...] = ((3, 1), (3, 3), (3, 9), (6, 1), (6, 3),
                                                  (6, 9))
    scale_requests: int = 10000
    #: recovery: data sizes (keys), SET requests per size; memory: keys.
    recovery_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    recovery_set_requests: int = 20000
    memory_keys: int = 1_000_000
    #: Snapshot cadence of the recovery/memory cluster (None: the node defaults, 20000/2000).
    snapshot_every_entries: int | None = None
    snapshot_keep_entries: int = 2000
    #: recovery: also wipe a follower's shard data and time its catch-up by snapshot; how
    #: long it may take before the data section stops.
    recovery_wipe: bool = True
    wipe_timeout_s: float = 300.0
    #: soak: seconds, mixed SET/GET rate, keys, RSS/disk sample interval.
    soak_seconds: float = 120.0
    soak_rate: float = 500.0
    soak_keys: int = 10000
    soak_sample_s: float = 10.0
    #: bulk (issue 15): keys loaded in 1,000-SET pipelines into an idle cluster, and a bound
    #: on the load's time (the row then says how far it got).
    bulk_keys: int = 1_000_000
    bulk_timeout_s: float = 900.0
    #: hosts (issue 15 lever 9, benchmarks/bench_hosts.py): 3 hosts x K=1 vs x K=2 node
    #: processes, alternating rounds, SET requests per run, shards of both clusters.
    hosts_rounds: int = 2
    hosts_requests: int = 20000
    hosts_shards: int = 6
    #: queue (issue 17): phalanx streams vs RabbitMQ quorum queues vs redis-server streams.
    queue: QueueSettings = field(default_factory=QueueSettings)

    @classmethod
    def quick_settings(cls) -> Settings:
        return cls(repeats=1, set_requests={1: 300, 50: 3000}, get_requests=5000,
                   failover_tries=1, sigstop_tries=1, etcd_requests={1: 300, 50: 3000},
                   pysyncobj_requests={1: 50, 16: 300},
                   run_timeout_s=30.0, quick=True, keyspace=20000, command_requests=2000,
                   pipeline_requests=3000,
                   latency_rates=(500.0,), latency_seconds=2.0,
                   scale_configs=((3, 1), (3, 9)), scale_requests=3000,
                   recovery_sizes=(10_000,), recovery_set_requests=3000, memory_keys=10_000,
                   snapshot_every_entries=500, snapshot_keep_entries=50, wipe_timeout_s=10.0,
                   soak_seconds=10.0, soak_sample_s=2.0, soak_keys=2000,
                   bulk_keys=20_000, bulk_timeout_s=120.0,
                   hosts_rounds=1, hosts_requests=3000,
                   queue=QueueSettings.quick())

    def sections(self) -> set[str]:
        return set(self.only)


def installed(peer: str, settings: Settings) -> bool:
    if peer in settings.assume_missing:
        return False
    spec = PEERS[peer]
    if "binary" in spec:
        return shutil.which(spec["binary"]) is not None
    import importlib.util

    return importlib.util.find_spec(spec["module"]) is not None


def skip_note(peer: str, settings: Settings) -> str:
    spec = PEERS[peer]
    if not installed(peer, settings):
        return f"skipped: not installed ({spec['install']})"
    return "skipped: installed, but not measured by this version of the suite"


# --------------------------------------------------------------------------- throughput


def run_load(target: str, host: str, port: int, test: str, clients: int, requests: int,
             repeat: int, settings: Settings) -> dict[str, Any]:
    load = os.getloadavg()[0]
    ok, metrics, error, elapsed = rb.run_benchmark(host, port, test, 1, clients, requests,
                                                   settings.keyspace, settings.run_timeout_s)
    return load_record(target, test, clients, requests, repeat, ok, error, metrics, elapsed,
                       load)


def throughput_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(r["test"], r["clients"]) for r in runs}, key=lambda k: (k[0] != "SET", k[1]))
    for test, clients in keys:
        for target in ("phalanx", "phalanx-follower", "phalanx-lease", "redis-aof-always",
                       "etcd", "pysyncobj"):
            chosen = [r for r in runs if (r["target"], r["test"], r["clients"])
                      == (target, test, clients)]
            if not chosen:
                continue
            good = [r for r in chosen if r["ok"]]
            row: dict[str, Any] = {"target": target, "test": test, "clients": clients,
                                   "runs": len(chosen), "ok_runs": len(good),
                                   "failures": [r["error"] for r in chosen if not r["ok"]]}
            if good:
                rps = [r["metrics"]["rps"] for r in good]
                row.update(rps_median=statistics.median(rps), rps_min=min(rps),
                           rps_max=max(rps),
                           p50_ms=statistics.median(r["metrics"]["p50_latency_ms"] for r in good),
                           p99_ms=statistics.median(r["metrics"]["p99_latency_ms"] for r in good))
            rows.append(row)
    by_key = {(r["target"], r["test"], r["clients"]): r for r in rows}
    for row in rows:
        other = by_key.get(("redis-aof-always", row["test"], row["clients"]))
        if row["target"].startswith("phalanx") and other and row.get("rps_median") and \
                other.get("rps_median"):
            row["vs_redis_aof_always"] = row["rps_median"] / other["rps_median"]
        etcd = by_key.get(("etcd", row["test"], row["clients"]))
        if row["target"] == "phalanx" and etcd and row.get("rps_median") and \
                etcd.get("rps_median"):
            row["vs_etcd"] = row["rps_median"] / etcd["rps_median"]
            row["p50_vs_etcd"] = row["p50_ms"] / etcd["p50_ms"] if etcd["p50_ms"] else None
        syncobj = by_key.get(("pysyncobj", row["test"], row["clients"]))
        if row["target"] == "phalanx" and syncobj and row.get("rps_median") and \
                syncobj.get("rps_median"):
            row["vs_pysyncobj"] = row["rps_median"] / syncobj["rps_median"]
    return rows


# --------------------------------------------------------------------------- the run


def run_suite(settings: Settings, output_dir: Path) -> dict[str, Any]:
    """Run the selected sections; write RESULTS.md and results.json into `output_dir`."""
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="phalanx-bench-"))
    if settings.peer_tls_dir:
        rb.NODE_OVERRIDES["peer_tls_dir"] = str(Path(settings.peer_tls_dir).absolute())
    machine = rb.machine_description(root)
    machine["kernel"] = os.uname().release
    log(f"machine: {machine['cpu_count']} CPUs, kernel {machine['kernel']}, python "
        f"{machine['python']}, load {machine['load_average_start']}; work dir {root}")
    sections = settings.sections()
    skipped: dict[str, str] = {}
    for peer in ("redis-server", "redis-benchmark", "redis-sentinel"):
        if not installed(peer, settings):
            skipped[peer] = skip_note(peer, settings)
            log(f"{peer}: {skipped[peer]}")
    want_etcd = "etcd" in sections and bool({"writes", "failover", "sigstop", "latency"}
                                              & sections)
    missing_etcd = [p for p in ("etcd", "etcdctl", "go") if not installed(p, settings)]
    if "etcd" not in sections:
        skipped["etcd"] = "skipped: not selected (--only)"
    elif missing_etcd:
        skipped["etcd"] = (f"skipped: not installed ({', '.join(missing_etcd)}; "
                           f"{PEERS['etcd']['install']})")
        want_etcd = False
    want_pysyncobj = "pysyncobj" in sections and bool({"writes", "failover", "sigstop"}
                                                       & sections)
    if "pysyncobj" not in sections:
        skipped["pysyncobj"] = "skipped: not selected (--only)"
    elif not installed("pysyncobj", settings):
        skipped["pysyncobj"] = skip_note("pysyncobj", settings)
        want_pysyncobj = False
    for peer in ("etcd", "pysyncobj"):
        if peer in skipped:
            log(f"{peer}: {skipped[peer]}")
    have_redis = "redis-server" not in skipped
    have_benchmark = "redis-benchmark" not in skipped
    have_sentinel = have_redis and "redis-sentinel" not in skipped
    runs: list[dict[str, Any]] = []
    failover: dict[str, list[dict[str, Any]]] = {}
    more_out: dict[str, Any] = {}
    processes = Processes(root)
    interrupted = ""

    def on_sigterm(*_: object) -> None:
        raise rb.Stop()

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main else None
    walls: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(name: str) -> Any:
        """Adds the block's wall time to walls[name] (README: what a full run costs)."""
        began = time.monotonic()
        try:
            yield
        finally:
            walls[name] = round(walls.get(name, 0.0) + time.monotonic() - began, 1)

    try:
        import importlib

        import bench_data
        import bench_peers as peers
        import bench_sections as more

        # The sections with their own clusters first, while nothing else runs.
        if "scale" in sections:
            if have_benchmark:
                with timed("scale"):
                    more_out["scale"] = more.scale_section(processes, settings)
            else:
                skipped["scale"] = "skipped: redis-benchmark not installed"
        if {"recovery", "memory"} & sections:
            if have_redis and have_benchmark:
                with timed("recovery/memory"):
                    more_out["data"] = bench_data.data_section(processes, settings,
                                                               "recovery" in sections,
                                                               "memory" in sections)
            else:
                skipped["recovery/memory"] = "skipped: redis-server/redis-benchmark not installed"
        for name, (module, function) in SECTION_MODULES.items():
            if name in sections:
                with timed(name):
                    more_out[name] = getattr(importlib.import_module(module), function)(
                        processes, settings)
        if "soak" in sections:
            with timed("soak"):
                more_out["soak"] = more.soak_section(processes, settings)
        if "queue" in sections:
            import bench_queue

            with timed("queue"):
                more_out["queue"] = bench_queue.queue_section(processes, settings)
        if "partition" in sections:
            import bench_partition

            with timed("partition"):
                more_out["partition"] = bench_partition.partition_section(settings)
        shared_began = time.monotonic()
        cluster = None
        if {"writes", "reads", "commands", "pipelines", "failover", "sigstop",
                "latency"} & sections:
            cluster = rb.Phalanx(root / "phalanx")
            processes.cluster = cluster
            cluster.data_dir.mkdir()
            cluster.start(3, timeout=90)
            log(f"phalanx up: {', '.join(n['id'] + '@' + n['resp'] for n in cluster.nodes)}")
        redis_aof = None
        if have_redis and {"writes", "reads", "commands", "latency"} & sections:
            redis_aof = rb.start_redis("redis-aof-always", root,
                                       ["--save", "", "--appendonly", "yes",
                                        "--appendfsync", "always"])
            processes.children.append(redis_aof.process)
        etcd_binary: Path | None = None
        etcds: dict[str, peers.Etcd] = {}
        if want_etcd:
            try:
                log("etcd: building benchmarks/etcd_load (go, GOPATH mode, offline) ...")
                etcd_binary = peers.build_etcd_load(root)
                for profile in peers.ETCD_PROFILES:
                    etcds[profile] = peers.Etcd(root / profile, processes, profile)
                    etcds[profile].start()
                    log(f"{profile} up: " + ", ".join(etcds[profile].endpoint(m)
                                                      for m in etcds[profile].members))
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as error:
                skipped["etcd"] = f"skipped: {error}"
                log(f"etcd: {skipped['etcd']}")
                etcd_binary = None
        pysyncobj: peers.PySyncObjCluster | None = None
        if want_pysyncobj:
            try:
                pysyncobj = peers.PySyncObjCluster(root / "pysyncobj", processes)
                pysyncobj.start()
                log("pysyncobj up: " + ", ".join(n["raft"] for n in pysyncobj.nodes))
            except (RuntimeError, OSError) as error:
                skipped["pysyncobj"] = f"skipped: {error}"
                log(f"pysyncobj: {skipped['pysyncobj']}")
                pysyncobj = None
        lease: rb.Phalanx | None = None
        if "reads" in sections and settings.read_variants and have_benchmark:
            # Every GET hits: the keyspace is loaded into every read target first.
            assert cluster is not None
            lease = more.start_cluster(processes, "phalanx-lease", 3, {"lease_reads": True})
            log("phalanx-lease up (--lease-reads); loading "
                f"{settings.keyspace:,} keys into the read targets ...")
            for who in (cluster, lease):
                host, port = more.hostport(more.shard_leader(who).resp)
                more.load_keys(host, port, 0, settings.keyspace)
            if redis_aof is not None:
                more.load_keys(redis_aof.host, redis_aof.port, 0, settings.keyspace,
                               batch=5000)
        if cluster is not None or redis_aof is not None or etcds or pysyncobj is not None:
            walls["shared cluster and peers: start, load keys"] = round(
                time.monotonic() - shared_began, 1)
        plan: list[tuple[str, int, int]] = []
        if "writes" in sections:
            set_requests = dict(settings.set_requests)
            if pysyncobj is not None:  # the same client counts as PySyncObj's threads
                for threads in settings.pysyncobj_requests:
                    set_requests.setdefault(threads, max(settings.pysyncobj_requests[threads],
                                                         1000))
            plan += [("SET", clients, n) for clients, n in sorted(set_requests.items())]
        if "reads" in sections:
            plan.append(("GET", settings.read_clients, settings.get_requests))
        if "writes" not in sections:
            extra = ({**(settings.etcd_requests if etcd_binary is not None else {}),
                      **(settings.pysyncobj_requests if pysyncobj is not None else {})})
            plan += [("SET", clients, n) for clients, n in sorted(extra.items())]
        if plan and not have_benchmark:
            log("writes/reads: skipped (redis-benchmark not installed)")
        elif plan:
            shared_began = time.monotonic()
            targets = ((["phalanx"] + (["redis-aof-always"] if redis_aof else []))
                       if {"writes", "reads"} & sections else [])
            targets += ["phalanx-follower", "phalanx-lease"] if lease is not None else []
            targets += ["etcd"] if etcd_binary is not None else []
            targets += ["pysyncobj"] if pysyncobj is not None else []
            for repeat in range(1, settings.repeats + 1):
                shift = (repeat - 1) % len(targets)
                order = targets[shift:] + targets[:shift]
                for test, clients, requests in plan:
                    for target in order:
                        if target == "etcd":
                            if test != "SET" or clients not in settings.etcd_requests:
                                continue
                            assert etcd_binary is not None
                            runs.append(peers.run_etcd_load(etcd_binary, etcds["etcd"], clients,
                                                      settings.etcd_requests[clients], repeat,
                                                      settings))
                            continue
                        if target == "pysyncobj":
                            if test != "SET" or clients not in settings.pysyncobj_requests:
                                continue
                            assert pysyncobj is not None
                            runs.append(peers.run_pysyncobj_load(pysyncobj, clients,
                                                           settings.pysyncobj_requests[clients],
                                                           repeat, settings))
                            continue
                        if target in ("phalanx-follower", "phalanx-lease"):
                            if test != "GET":
                                continue
                            assert cluster is not None and lease is not None
                            if target == "phalanx-lease":
                                host, port = more.hostport(more.shard_leader(lease).resp)
                            else:
                                leader = more.shard_leader(cluster).id
                                host, port = more.hostport(next(
                                    e for e in more.entries(cluster) if e.id != leader).resp)
                        elif target == "phalanx":
                            assert cluster is not None
                            _node, host, port = phalanx_leader(cluster)
                        else:
                            assert redis_aof is not None
                            host, port = redis_aof.host, redis_aof.port
                        runs.append(run_load(target, host, port, test, clients, requests,
                                             repeat, settings))
            walls["writes/reads (+ etcd, pysyncobj)"] = round(time.monotonic() - shared_began, 1)
        if lease is not None:
            more.stop_cluster(processes, lease)
        if "commands" in sections:
            if have_benchmark:
                with timed("commands"):
                    more_out["commands"] = commands_section(cluster, redis_aof, settings)
            else:
                skipped["commands"] = "skipped: redis-benchmark not installed"
        if "pipelines" in sections:
            if have_benchmark and cluster is not None:
                import bench_pipelines

                phalanx = cluster
                with timed("pipelines"):
                    more_out["pipelines"] = bench_pipelines.pipelines_section(
                        lambda: bench_pipelines.addresses(phalanx), settings.repeats,
                        settings.pipeline_requests, settings.run_timeout_s)
            else:
                skipped["pipelines"] = "skipped: redis-benchmark not installed"
        if "latency" in sections:
            with timed("latency"):
                more_out["latency"] = more.latency_section(
                    latency_targets(cluster, redis_aof, etcd_binary, etcds, settings), settings)
        sentinels = peers.Sentinels(root / "sentinel", processes)
        for how, section in (("kill", "failover"), ("stop", "sigstop")):
            if section not in sections:
                continue
            section_began = time.monotonic()
            if cluster is not None:
                failover[f"phalanx|{how}"] = phalanx_failover(cluster, settings, how)
            if etcd_binary is not None:
                for profile, etcd in etcds.items():
                    failover[f"{profile}|{how}"] = peers.etcd_failover(etcd_binary, etcd, settings,
                                                                 how)
            if pysyncobj is not None:
                failover[f"pysyncobj|{how}"] = peers.pysyncobj_failover(pysyncobj, settings, how)
            if have_sentinel:
                failover[f"redis-sentinel|{how}"] = peers.sentinel_failover(sentinels, settings, how)
            walls[section] = round(time.monotonic() - section_began, 1)
    except KeyboardInterrupt:
        interrupted = "interrupted (Ctrl-C)"
    except rb.Stop:
        interrupted = "interrupted (SIGTERM)"
    except Exception as error:
        interrupted = f"aborted: {type(error).__name__}: {error}"
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            log("stopping everything started ...")
            processes.close()
            shutil.rmtree(root, ignore_errors=True)
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
    if interrupted:
        log(interrupted)
    wall = time.monotonic() - began
    document = {
        "started_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine, "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "settings": {"repeats": settings.repeats, "quick": settings.quick,
                     "set_requests": settings.set_requests, "get_requests": settings.get_requests,
                     "read_clients": settings.read_clients, "keyspace": settings.keyspace,
                     "command_requests": settings.command_requests,
                     "command_clients": settings.command_clients,
                     "failover_tries": settings.failover_tries,
                     "sigstop_tries": settings.sigstop_tries,
                     "etcd_requests": settings.etcd_requests,
                     "pysyncobj_requests": settings.pysyncobj_requests,
                     "writer_interval_ms": settings.writer_interval_s * 1000,
                     "writer_timeout_ms": settings.writer_timeout_s * 1000,
                     "only": list(settings.only),
                     "latency_rates": list(settings.latency_rates),
                     "latency_seconds": settings.latency_seconds,
                     "scale_configs": [list(c) for c in settings.scale_configs],
                     "scale_requests": settings.scale_requests,
                     "recovery_sizes": list(settings.recovery_sizes),
                     "recovery_set_requests": settings.recovery_set_requests,
                     "memory_keys": settings.memory_keys,
                     "snapshot_every_entries": settings.snapshot_every_entries,
                     "soak_seconds": settings.soak_seconds, "soak_rate": settings.soak_rate,
                     "soak_keys": settings.soak_keys, "soak_sample_s": settings.soak_sample_s,
                     "bulk_keys": settings.bulk_keys, "bulk_timeout_s": settings.bulk_timeout_s,
                     "hosts_rounds": settings.hosts_rounds,
                     "hosts_requests": settings.hosts_requests,
                     "hosts_shards": settings.hosts_shards},
        "wall_s": round(wall, 1), "incomplete": interrupted, "skipped": skipped,
        "work_dir": str(root),
        "throughput": throughput_rows(runs),
        "failover": [gap_summary(t, tries) for t, tries in failover.items()],
        "runs": runs, "failover_tries": failover, "cleanup": processes.notes,
        "latency": more_out.get("latency", []), "scale": more_out.get("scale", []),
        "data": more_out.get("data"), "recovery_measured": "recovery" in sections,
        "memory_measured": "memory" in sections, "soak": more_out.get("soak"),
        "commands": more_out.get("commands"), "queue": more_out.get("queue"),
        "pipelines": more_out.get("pipelines"), "partition": more_out.get("partition"),
        "section_wall_s": walls,
        **{name: more_out.get(name) for name in SECTION_MODULES},
    }
    document["failover_ratio"] = failover_ratio(document["failover"])
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (output_dir / "RESULTS.md").write_text(markdown(document))
    return document


def commands_section(cluster: rb.Phalanx | None, redis_aof: rb.RedisServer | None,
                     settings: Settings) -> dict[str, Any]:
    """The `commands` section (benchmarks/bench_commands.py) on the shared cluster's leader and
    on redis-aof-always."""
    import bench_commands

    addresses: dict[str, Callable[[], tuple[str, int]]] = {}
    if cluster is not None:
        def on_phalanx(cluster: rb.Phalanx = cluster) -> tuple[str, int]:
            _node, host, port = phalanx_leader(cluster)
            return host, port
        addresses["phalanx"] = on_phalanx
    if redis_aof is not None:
        def on_redis(redis_aof: rb.RedisServer = redis_aof) -> tuple[str, int]:
            return redis_aof.host, redis_aof.port
        addresses["redis-aof-always"] = on_redis
    return bench_commands.commands_section(addresses, settings)


def latency_targets(cluster: rb.Phalanx | None, redis_aof: rb.RedisServer | None,
                    etcd_binary: Path | None, etcds: dict[str, peers.Etcd],
                    settings: Settings) -> dict[str, Callable[[str, float, float], Any]]:
    """name -> run(test, rate, seconds) for the latency section."""
    import bench_sections as more

    targets: dict[str, Callable[[str, float, float], Any]] = {}
    if cluster is not None:
        def on_phalanx(test: str, rate: float, seconds: float) -> Any:
            assert cluster is not None
            _node, host, port = phalanx_leader(cluster)
            return more.openloop(host, port, test.lower(), rate, seconds, settings.keyspace)
        targets["phalanx"] = on_phalanx
    if redis_aof is not None:
        def on_redis(test: str, rate: float, seconds: float) -> Any:
            assert redis_aof is not None
            return more.openloop(redis_aof.host, redis_aof.port, test.lower(), rate, seconds,
                                 settings.keyspace)
        targets["redis-aof-always"] = on_redis
    if etcd_binary is not None and "etcd" in etcds:
        def on_etcd(test: str, rate: float, seconds: float) -> Any:
            assert etcd_binary is not None
            leader = wait_for(etcds["etcd"].leader, 30, "an etcd leader", poll=0.2)
            return more.etcd_rate(etcd_binary, etcds["etcd"].endpoint(leader),
                                  "put" if test == "SET" else "get", rate, seconds,
                                  settings.keyspace)
        targets["etcd"] = on_etcd
    return targets


def markdown(doc: dict[str, Any]) -> str:
    """RESULTS.md's text (benchmarks/bench_report.py)."""
    import bench_report

    return bench_report.markdown(doc)


def print_summary(doc: dict[str, Any]) -> None:
    print(markdown(doc))

"""phalanx vs redis-server over RESP, measured with redis-benchmark in one run.

What it does (see benchmarks/README.md for how to read the results):
- Starts a 3-node phalanx cluster (through `phalanx.ops.launcher`, the code behind `phalanx up`;
  fsync on, quorum commit: the node's defaults) in a temporary directory, on a free base port and its own
  loopback addresses, plus two redis-server processes on free loopback ports: in-memory
  (`--save '' --appendonly no`) and durable (`--appendonly yes --appendfsync always`). Every data
  directory lives under one temporary directory, so fsyncs hit the same filesystem.
- For each repeat, for each (pipeline depth, test), runs redis-benchmark against every target in
  turn (the order rotates per repeat), so slow drift of a shared machine spreads over all targets:
  SET and GET, 50 clients, `-P 1` and `-P 16`, a fixed request count, `-r 100000`. GET is also
  run against a phalanx follower (a linearizable ReadIndex read served by a non-leader node).
- Parses `--csv` (rps, avg, min, p50, p95, p99, max latency), prints a Markdown report on stdout
  (progress goes to stderr) and writes JSON to benchmarks/results/resp_bench-<timestamp>.json
  and benchmarks/results/latest.json.

Rules it keeps:
- It always stops what it started, by PID, also on Ctrl-C or SIGTERM: the launcher's
  `stop_cluster` (`phalanx down`) and its own node processes, then any
  process whose command line names our temporary directory, then the redis-servers it spawned.
- Every external call has a timeout; a timed-out redis-benchmark is a failed measurement, not a
  hang. An overall deadline skips the remaining measurements (they are reported as skipped).

Run it with the project's venv:  .venv/bin/python benchmarks/resp_bench.py [--requests N]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_ratios import higher

from phalanx.ops.ports import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"

#: Target names, in the order of the report.
PHALANX = "phalanx"
PHALANX_FOLLOWER = "phalanx-follower"
REDIS = "redis"
REDIS_AOF = "redis-aof-always"
TARGETS = (PHALANX, PHALANX_FOLLOWER, REDIS, REDIS_AOF)
TESTS = ("SET", "GET")
CSV_FIELDS = ("rps", "avg_latency_ms", "min_latency_ms", "p50_latency_ms", "p95_latency_ms",
              "p99_latency_ms", "max_latency_ms")


class Stop(BaseException):
    """SIGTERM arrived: unwind through the `finally` blocks like Ctrl-C does (so, like
    KeyboardInterrupt, not an Exception that a broad `except Exception` would swallow)."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine


def machine_description(data_root: Path) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    redis_version = _first_line(["redis-server", "--version"])
    benchmark_version = _first_line(["redis-benchmark", "--version"])
    filesystem = _first_line(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target",
                              str(data_root)])
    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    try:
        from phalanx import __version__ as phalanx_version
    except ImportError:
        phalanx_version = "?"
    return {
        "cpu_model": cpu_model or platform.processor() or "?",
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis_server": redis_version,
        "redis_benchmark": benchmark_version,
        "phalanx": phalanx_version,
        "git_commit": commit,
        "data_filesystem": f"{filesystem} ({data_root})",
    }


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) \
        else "?"


# --------------------------------------------------------------------------- ports




# --------------------------------------------------------------------------- processes


def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(b"*1\r\n$4\r\nPING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    name: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    data_dir: Path
    argv: list[str]


def start_redis(name: str, root: Path, extra: list[str]) -> RedisServer:
    data_dir = root / name
    data_dir.mkdir(parents=True)
    last_error = ""
    for _ in range(5):
        port = free_port()
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir",
                str(data_dir), "--daemonize", "no", "--protected-mode", "no",
                "--logfile", str(data_dir / "redis.log"), *extra]
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        server = RedisServer(name, "127.0.0.1", port, process, data_dir, argv)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and process.poll() is None:
            if ping(server.host, port):
                return server
            time.sleep(0.05)
        stop_process(process)
        last_error = _tail(data_dir / "redis.log")
    raise RuntimeError(f"redis-server {name} did not start:\n{last_error}")


def stop_process(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@dataclass
class Phalanx:
    """A local phalanx cluster started through the launcher (`phalanx.ops.launcher`, the code
    behind `phalanx up`) in `data_dir`, on a free base port and its own loopback addresses."""

    data_dir: Path
    base_port: int = 0
    loopback_base: int = 0
    nodes: list[dict[str, Any]] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def cli(self, *arguments: str) -> list[str]:
        return [sys.executable, "-m", "phalanx", *arguments]

    def start(self, nodes: int, timeout: float,
              overrides: dict[str, Any] | None = None, nodes_per_host: int = 1) -> None:
        """Start `nodes` nodes (node config `overrides`, e.g. {"shards": 3}; `nodes_per_host`
        as `phalanx up --nodes-per-host`) and return once a majority agrees on a leader; the
        launcher stops what it started when that fails."""
        from phalanx.errors import ClusterError
        from phalanx.ops import launcher

        overrides = {**NODE_OVERRIDES, **(overrides or {})}
        options = {"log_level": "info", **overrides}
        plan = launcher.pick_free_plan(self.data_dir, random.Random(), nodes=nodes,
                                       nodes_per_host=nodes_per_host, overrides=options,
                                       tries=200)
        first = plan[0].config.me.resp
        host, _, port = first.rpartition(":")
        self.base_port = int(port) - 1
        self.loopback_base = int(host.rpartition(".")[2]) - 1
        flags = " ".join(as_flags(overrides or {}))
        log(f"starting phalanx: {nodes} nodes in {self.data_dir} (base port {self.base_port}, "
            f"loopback base {self.loopback_base}){' ' + flags if flags else ''}")
        try:
            cluster, _leader, self.processes = launcher.start_local_cluster(
                self.data_dir, plan, timeout=timeout)
        except ClusterError as error:
            raise RuntimeError(f"the phalanx cluster did not start: {error}") from None
        self.nodes = [entry.to_json() for entry in cluster.nodes]

    def roles(self) -> dict[str, str]:
        """node id -> role, from each node's admin /status."""
        from phalanx.ops import admin, cluster_file

        statuses = admin.query_status(cluster_file.read_cluster_file(self.data_dir).nodes,
                                      timeout=2.0)
        return {s.entry.id: (s.role or "down") for s in statuses}

    def address(self, node_id: str) -> tuple[str, int]:
        for node in self.nodes:
            if node["id"] == node_id:
                host, _, port = node["resp"].rpartition(":")
                return host, int(port)
        raise KeyError(node_id)

    def stop(self) -> list[str]:
        """Stop every node of cluster.json (the launcher's `phalanx down`) and the processes
        started here, then SIGKILL any survivor whose command line names our directory."""
        from phalanx.errors import ClusterError
        from phalanx.ops import cluster_file, launcher

        notes = []
        if (self.data_dir / cluster_file.CLUSTER_FILE).exists():
            with contextlib.suppress(ClusterError, OSError):
                outcome = launcher.stop_cluster(self.data_dir)
                notes.append("; ".join(f"{node_id}: {what}" for node_id, what in outcome.items()))
        launcher.stop_processes(self.processes.values())
        for pid in pids_mentioning(str(self.data_dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                notes.append(f"killed leftover pid {pid}")
        return notes


#: Node config overrides of every phalanx cluster the benchmarks start (`phalanx bench
#: --peer-tls-dir` sets "peer_tls_dir": the launcher then turns peer mutual TLS on).
NODE_OVERRIDES: dict[str, Any] = {}


def as_flags(overrides: dict[str, Any]) -> list[str]:
    """Node config overrides as the `phalanx up` flags that set them (for the report)."""
    flags = []
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append(f"--no-{name.replace('_', '-')}")
        else:
            flags += [flag, str(value)]
    return flags


def pids_mentioning(text: str) -> list[int]:
    """PIDs (not ours) whose command line contains `text` (our unique temporary directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmdline:
                found.append(int(entry.name))
    return found


# --------------------------------------------------------------------------- measuring


@dataclass
class Run:
    target: str
    test: str
    pipeline: int
    repeat: int
    node: str
    ok: bool
    elapsed_s: float
    load_1m: float
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""


def parse_csv(text: str, test: str) -> dict[str, float] | None:
    """The row of `test` in redis-benchmark's --csv output, as floats keyed by header name."""
    rows = list(csv.reader(io.StringIO(text)))
    header: list[str] | None = None
    for row in rows:
        if not row:
            continue
        if row[0] == "test":
            header = row
            continue
        if header is not None and row[0].upper() == test and len(row) == len(header):
            try:
                return {name: float(value) for name, value in zip(header[1:], row[1:],
                                                                  strict=True)}
            except ValueError:
                return None
    return None


def run_benchmark(host: str, port: int, test: str, pipeline: int, clients: int,
                  requests: int, keyspace: int, timeout: float) -> tuple[bool, dict[str, float],
                                                                         str, float]:
    argv = ["redis-benchmark", "-h", host, "-p", str(port), "-t", test.lower(), "-c",
            str(clients), "-n", str(requests), "-r", str(keyspace), "-P", str(pipeline),
            "--csv"]
    began = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, {}, f"timed out after {timeout:g} s", time.monotonic() - began
    elapsed = time.monotonic() - began
    metrics = parse_csv(done.stdout, test)
    problems = [line for line in (done.stdout + "\n" + done.stderr).splitlines()
                if "error" in line.lower()]
    if done.returncode != 0 or metrics is None:
        detail = (done.stderr or done.stdout).strip()[-400:]
        return False, {}, f"exit {done.returncode}: {detail}", elapsed
    if problems:
        # redis-benchmark counts error replies as answers: a fast stream of -TRYAGAIN is not a
        # result. Report it as failed, with the first error line.
        return False, metrics, f"error replies: {problems[0][:200]}", elapsed
    return True, metrics, "", elapsed


# --------------------------------------------------------------------------- report


def summarise(runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    for pipeline in sorted({run.pipeline for run in runs}):
        for test in TESTS:
            for target in TARGETS:
                chosen = [r for r in runs if (r.target, r.test, r.pipeline)
                          == (target, test, pipeline)]
                if not chosen:
                    continue
                good = [r for r in chosen if r.ok]
                row: dict[str, Any] = {"target": target, "test": test, "pipeline": pipeline,
                                       "runs": len(chosen), "ok_runs": len(good),
                                       "failures": [r.error for r in chosen if not r.ok]}
                if good:
                    rps = [r.metrics["rps"] for r in good]
                    row.update(rps_median=statistics.median(rps), rps_min=min(rps),
                               rps_max=max(rps),
                               p50_ms=statistics.median(r.metrics["p50_latency_ms"] for r in good),
                               p99_ms=statistics.median(r.metrics["p99_latency_ms"] for r in good))
                rows.append(row)
    by_key = {(row["target"], row["test"], row["pipeline"]): row for row in rows}
    for row in rows:
        if not row["target"].startswith(PHALANX) or "rps_median" not in row:
            continue
        for reference, key in ((REDIS, "vs_redis"), (REDIS_AOF, "vs_redis_aof_always")):
            other = by_key.get((reference, row["test"], row["pipeline"]))
            if other and other.get("rps_median"):
                row[key] = row["rps_median"] / other["rps_median"]
    return rows


def markdown(machine: dict[str, Any], settings: dict[str, Any], rows: list[dict[str, Any]],
             load_end: list[float], wall_s: float) -> str:
    lines = ["# phalanx vs redis-server (redis-benchmark)", "",
             f"- machine: {machine['cpu_model']}, {machine['cpu_count']} CPUs "
             f"({machine['affinity_cpus']} usable), load average at start "
             f"{' / '.join(f'{x:.2f}' for x in machine['load_average_start'])}, at end "
             f"{' / '.join(f'{x:.2f}' for x in load_end)}",
             f"- software: Python {machine['python']}, {machine['redis_server']}, "
             f"{machine['redis_benchmark']}, phalanx {machine['phalanx']} "
             f"(git {machine['git_commit']}), {machine['platform']}",
             f"- data on: {machine['data_filesystem']}",
             f"- settings: {settings['clients']} clients, {settings['requests']} requests per "
             f"run, keyspace -r {settings['keyspace']}, {settings['repeats']} repeats, timeout "
             f"{settings['timeout_s']:g} s per run; phalanx: {settings['nodes']} nodes, fsync "
             f"per batch, quorum commit, linearizable reads (ReadIndex)",
             f"- wall time: {wall_s:.0f} s", "",
             "| target | test | pipeline | median ops/s (min-max) | p50 ms | p99 ms "
             "| vs redis | vs redis-aof-always |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if "rps_median" in row:
            throughput = (f"{row['rps_median']:,.0f} ({row['rps_min']:,.0f}-"
                          f"{row['rps_max']:,.0f})")
            p50, p99 = f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}"
        else:
            throughput, p50, p99 = "failed", "-", "-"
        if row["ok_runs"] < row["runs"]:
            throughput += f" [{row['runs'] - row['ok_runs']}/{row['runs']} failed]"
        ratios = [higher(row[key], 3) if key in row else "" for key in
                  ("vs_redis", "vs_redis_aof_always")]
        lines.append(f"| {row['target']} | {row['test']} | {row['pipeline']} | {throughput} "
                     f"| {p50} | {p99} | {ratios[0]} | {ratios[1]} |")
    if not rows:
        lines.append("| (no measurements) | | | | | | | |")
    failures = [(row, error) for row in rows for error in row["failures"]]
    if failures:
        lines += ["", "Failed runs:"]
        lines += [f"- {row['target']} {row['test']} -P {row['pipeline']}: {error}"
                  for row, error in failures]
    lines += ["", "Ratios are phalanx median ops/s divided by the reference's median ops/s for "
              "the same test and pipeline depth (1.0 = as fast; 0.05 = 20x slower)."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000,
                        help="Requests per redis-benchmark run (-n).")
    parser.add_argument("--repeats", type=int, default=3, help="Rounds over every target.")
    parser.add_argument("--clients", type=int, default=50, help="Parallel connections (-c).")
    parser.add_argument("--keyspace", type=int, default=100000, help="Random keys (-r).")
    parser.add_argument("--pipelines", default="1,16",
                        help="Comma-separated pipeline depths (-P).")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="Seconds before one redis-benchmark run counts as failed.")
    parser.add_argument("--max-total", type=float, default=1800.0,
                        help="Seconds after which the remaining runs are skipped.")
    parser.add_argument("--nodes", type=int, default=3, help="phalanx nodes.")
    parser.add_argument("--work-dir", default=None,
                        help="Where the temporary data directory goes (default: the system "
                             "temp dir); put it on the disk you want to measure.")
    parser.add_argument("--no-follower", action="store_true",
                        help="Skip GET against a phalanx follower.")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--keep", action="store_true",
                        help="Keep the temporary directory (logs) after the run.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if shutil.which("redis-server") is None or shutil.which("redis-benchmark") is None:
        print("resp_bench: redis-server and redis-benchmark must be on PATH", file=sys.stderr)
        return 2
    try:
        import phalanx  # noqa: F401
    except ImportError:
        print("resp_bench: phalanx is not importable; run with the project's venv "
              "(.venv/bin/python benchmarks/resp_bench.py)", file=sys.stderr)
        return 2
    pipelines = [int(part) for part in args.pipelines.split(",") if part.strip()]

    def on_sigterm(*_: object) -> None:
        raise Stop()

    previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
    # Python leaves SIGINT ignored when it started ignored (a background job of a
    # non-interactive shell); `kill -INT` should stop a run like Ctrl-C does.
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="phalanx-resp-bench-", dir=args.work_dir))
    machine = machine_description(root)
    settings = {"requests": args.requests, "repeats": args.repeats, "clients": args.clients,
                "keyspace": args.keyspace, "pipelines": pipelines, "timeout_s": args.timeout,
                "nodes": args.nodes, "follower_get": not args.no_follower}
    log(f"machine: {machine['cpu_model']}, {machine['cpu_count']} CPUs, load "
        f"{machine['load_average_start']}; data in {root}")
    cluster = Phalanx(root / "phalanx")
    servers: dict[str, RedisServer] = {}
    runs: list[Run] = []
    interrupted = ""
    cleanup_notes: list[str] = []
    try:
        servers[REDIS] = start_redis(REDIS, root, ["--save", "", "--appendonly", "no"])
        servers[REDIS_AOF] = start_redis(REDIS_AOF, root, ["--save", "", "--appendonly", "yes",
                                                           "--appendfsync", "always"])
        log(f"redis-server: {REDIS} on :{servers[REDIS].port}, {REDIS_AOF} on "
            f":{servers[REDIS_AOF].port}")
        cluster.data_dir.mkdir()
        cluster.start(args.nodes, timeout=90)
        log(f"phalanx up: {', '.join(n['id'] + '@' + n['resp'] for n in cluster.nodes)}")
        deadline = began + args.max_total
        targets = [PHALANX, REDIS, REDIS_AOF]
        for repeat in range(1, args.repeats + 1):
            order = targets[(repeat - 1) % len(targets):] + targets[:(repeat - 1) % len(targets)]
            for pipeline in pipelines:
                for test in TESTS:
                    plan = []
                    for target in order:
                        plan.append(target)
                        if target == PHALANX and test == "GET" and not args.no_follower:
                            plan.append(PHALANX_FOLLOWER)
                    for target in plan:
                        runs.append(measure(target, test, pipeline, repeat, args, cluster,
                                            servers, deadline))
    except KeyboardInterrupt:
        interrupted = "interrupted (Ctrl-C)"
    except Stop:
        interrupted = "interrupted (SIGTERM)"
    except Exception as error:
        interrupted = f"aborted: {type(error).__name__}: {error}"
    finally:
        # Ignore further Ctrl-C / SIGTERM while stopping: a second signal must not leave
        # processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            log("stopping phalanx and redis-server ...")
            cleanup_notes += cluster.stop()
            for server in servers.values():
                stop_process(server.process)
                cleanup_notes.append(f"{server.name}: pid {server.process.pid} stopped")
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
            else:
                cleanup_notes.append(f"kept {root}")
        finally:
            signal.signal(signal.SIGINT, previous_sigint)
            signal.signal(signal.SIGTERM, previous_sigterm)
    if interrupted:
        log(interrupted)
    wall = time.monotonic() - began
    load_end = [round(x, 2) for x in os.getloadavg()]
    rows = summarise(runs)
    report = markdown(machine, settings, rows, load_end, wall)
    if interrupted:
        report += f"\n\n**Incomplete run: {interrupted}**"
    print(report)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {"started_utc": stamp, "machine": machine, "load_average_end": load_end,
                "settings": settings, "wall_s": round(wall, 1), "incomplete": interrupted,
                "summary": rows, "runs": [asdict(run) for run in runs],
                "cluster": {"base_port": cluster.base_port, "loopback_base": cluster.loopback_base},
                "cleanup": cleanup_notes, "markdown": report}
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"resp_bench-{stamp}.json"
    text = json.dumps(document, indent=2) + "\n"
    path.write_text(text)
    if not interrupted:
        (results / "latest.json").write_text(text)
    log(f"results: {path}")
    return 1 if interrupted else 0


def measure(target: str, test: str, pipeline: int, repeat: int, args: argparse.Namespace,
            cluster: Phalanx, servers: dict[str, RedisServer], deadline: float) -> Run:
    run = _measure(target, test, pipeline, repeat, args, cluster, servers, deadline)
    if run.metrics:
        m = run.metrics
        shown = (f"{m['rps']:>10,.0f} ops/s  p50 {m['p50_latency_ms']:.2f} ms  "
                 f"p99 {m['p99_latency_ms']:.2f} ms")
    else:
        shown = ""
    log(f"repeat {repeat} {target:<17} {test} -P {pipeline:<2} ({run.node or '-'}): {shown}"
        f"{'' if run.ok else ' FAILED: ' + run.error} [{run.elapsed_s:.1f} s, "
        f"load {run.load_1m:.1f}]")
    return run


def _measure(target: str, test: str, pipeline: int, repeat: int, args: argparse.Namespace,
             cluster: Phalanx, servers: dict[str, RedisServer], deadline: float) -> Run:
    load = os.getloadavg()[0]
    if time.monotonic() >= deadline:
        return Run(target, test, pipeline, repeat, "", False, 0.0, load,
                   error=f"skipped: --max-total {args.max_total:g} s reached")
    if target in (PHALANX, PHALANX_FOLLOWER):
        try:
            roles = cluster.roles()
        except Exception as error:
            return Run(target, test, pipeline, repeat, "", False, 0.0, load,
                       error=f"cannot read the cluster's roles: {error}")
        leaders = [node for node, role in roles.items() if role == "leader"]
        followers = [node for node, role in roles.items() if role == "follower"]
        pool = leaders if target == PHALANX else followers
        if not pool:
            return Run(target, test, pipeline, repeat, "", False, 0.0, load,
                       error=f"no {'leader' if target == PHALANX else 'follower'}: {roles}")
        node = sorted(pool)[0]
        host, port = cluster.address(node)
    else:
        server = servers[target]
        node, host, port = f"127.0.0.1:{server.port}", server.host, server.port
    ok, metrics, error, elapsed = run_benchmark(host, port, test, pipeline, args.clients,
                                                args.requests, args.keyspace, args.timeout)
    return Run(target, test, pipeline, repeat, node, ok, round(elapsed, 2), load, metrics, error)


if __name__ == "__main__":
    sys.exit(main())

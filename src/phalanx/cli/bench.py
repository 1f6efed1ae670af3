"""`phalanx bench`: the benchmark suite from the command line.

Rules of this file: the suite itself is benchmarks/phalanx_bench.py of a source checkout (found
next to src/, imported only when the command runs); without it the command fails in one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from phalanx.cli.common import fail


@click.command()
@click.option("--quick", is_flag=True,
              help="A tiny workload (1 repeat, a few thousand requests, 1 failover try): "
                   "a few minutes (357 s at load 12-19 on 2 cores, 1,058 s at load 30-39). Writes to "
                   "benchmarks/results/quick/ unless --output is given.")
@click.option("--repeats", type=int, default=None,
              help="Rounds over every target (default 3; 1 with --quick).")
@click.option("--output", "output", type=click.Path(file_okay=False), default=None,
              help="Where RESULTS.md and results.json go (default: the benchmarks/ directory).")
@click.option("--only", default="writes,reads,commands,pipelines,failover,sigstop,etcd,pysyncobj,"
                              "latency,scale,recovery,memory,bulk,soak,queue,partition,hosts",
              show_default=True,
              help="Comma-separated sections to run: writes, reads, commands (LPUSH, LPOP, "
                   "ZADD, EVALSHA), pipelines (SET, 100 per pipeline, through a follower vs "
                   "through the leader), failover, sigstop, etcd, pysyncobj, latency, scale, "
                   "recovery, memory, bulk (1M keys in 1,000-SET pipelines into an idle "
                   "cluster: errors, elections, wall time), soak, queue (Redis Streams on "
                   "phalanx vs RabbitMQ "
                   "quorum queues vs redis-server streams), partition (the leader cut off in "
                   "network namespaces, root only; default timing vs the old one), hosts "
                   "(SET on 3 hosts x 1 vs x 2 node processes, slot-routed clients).")
@click.option("--soak-seconds", type=float, default=None,
              help="Length of the soak section's steady workload (default 120; 10 with "
                   "--quick; 3600 for the issue's one-hour check).")
@click.option("--peer-tls-dir", type=click.Path(file_okay=False), default=None,
              help="Run every phalanx cluster with peer mutual TLS (a test CA and node "
                   "certificates in this directory, made when missing).")
def bench(quick: bool, repeats: int | None, output: str | None, only: str,
          soak_seconds: float | None, peer_tls_dir: str | None) -> None:
    """phalanx vs every installed peer (redis-server AOF, Redis Sentinel, etcd, PySyncObj,
    RabbitMQ quorum queues), plus latency at a fixed rate, scale, recovery, memory, a soak and
    a message queue (benchmarks/README.md).

    Needs a source checkout (the suite lives in benchmarks/phalanx_bench.py) and redis-tools.
    """
    import importlib

    benchmarks = Path(__file__).resolve().parents[3] / "benchmarks"
    if not (benchmarks / "phalanx_bench.py").is_file():
        fail(f"the benchmark suite is not here ({benchmarks}/phalanx_bench.py): run "
              "`phalanx bench` from a source checkout (pip install -e .)")
    sys.path.insert(0, str(benchmarks))
    suite = importlib.import_module("phalanx_bench")
    sections = tuple(part.strip() for part in only.split(",") if part.strip())
    unknown = set(sections) - set(suite.SECTIONS)
    if unknown or not sections:
        fail(f"--only: unknown section(s) {', '.join(sorted(unknown)) or '(none given)'} "
              f"(choose from {', '.join(suite.SECTIONS)})", 2)
    settings = suite.Settings.quick_settings() if quick else suite.Settings()
    settings.only = sections
    settings.peer_tls_dir = peer_tls_dir
    if repeats is not None:
        if repeats < 1:
            fail("--repeats: must be >= 1", 2)
        settings.repeats = repeats
    if soak_seconds is not None:
        if soak_seconds <= 0:
            fail("--soak-seconds: must be > 0", 2)
        settings.soak_seconds = soak_seconds
    default_dir = benchmarks / "results" / "quick" if quick else benchmarks
    directory = Path(output) if output else default_dir
    document = suite.run_suite(settings, directory)
    suite.print_summary(document)
    click.echo(f"wrote {directory / 'RESULTS.md'} and {directory / 'results.json'}", err=True)

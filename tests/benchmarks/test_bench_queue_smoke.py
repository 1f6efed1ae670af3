"""Smoke test of `phalanx bench --only queue` (issue 17) on a tiny workload: streams on a 3-node
phalanx and on a redis-server (AOF always) and, with PHALANX_BENCH_RABBITMQ=1, a 3-node RabbitMQ
quorum queue (its cluster takes ~30 s to form and ~20 s to heal after the kill, so it stays out
of the default suite; benchmarks/README.md says how to run it).

Structure and correctness only, no timing: every figure is there with a number, the ratios are
computed, and the kill -9 of the leader lost no confirmed message (the issue's goal; duplicates
are redeliveries and only counted). Everything the run starts is stopped by pid inside
`run_suite`; the `run_bench` fixture (conftest.py) then checks that nothing naming the run's
work directory is left.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_queue  # noqa: E402
import phalanx_bench  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="needs redis-server (apt-get install redis-server)")


#: conftest.py's `run_bench`: settings -> (results.json, RESULTS.md)
Runner = Callable[[phalanx_bench.Settings], tuple[dict[str, Any], str]]


def run_tiny(run_bench: Runner, targets: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    queue = bench_queue.QueueSettings(
        publish_messages={1: 40, 64: 640}, run_seconds=40.0, latency_rates=(100.0,),
        latency_seconds=1.0, failover_tries=1, gap_rate=100.0, after_recovery_s=0.5,
        recover_timeout_s=60.0, drain_s=20.0, timeout_s=10.0, targets=targets)
    settings = phalanx_bench.Settings(repeats=1, only=("queue",), quick=True, queue=queue)
    return run_bench(settings)


def check_target(queue: dict, target: str) -> None:
    rows = {(r["target"], r["test"], r["clients"]): r for r in queue["rows"]}
    for key in ((target, "publish", 1), (target, "publish", 64), (target, "consume", 1)):
        row = rows.get(key)
        assert row is not None, f"missing row {key}: {sorted(rows)}"
        assert row["ok_runs"] == row["runs"] == 1, row
        assert isinstance(row["rate_median"], float) and row["rate_median"] > 0, row
    publishes = [r for r in queue["runs"] if r["target"] == target and r["test"] == "publish"]
    assert sorted(r["confirmed"] for r in publishes) == [40, 640], publishes
    [consume] = [r for r in queue["runs"] if r["target"] == target and r["test"] == "consume"]
    # Every confirmed message was consumed once, by its unique id.
    assert consume["unique"] == consume["delivered"] == 680 and consume["duplicates"] == 0

    [latency] = [r for r in queue["latency"] if r["target"] == target]
    assert latency["error"] == "" and latency["confirmed"] == latency["delivered"] > 0, latency
    assert latency["lost"] == 0
    for name in ("p50_ms", "p99_ms", "confirm_p50_ms", "achieved_rate"):
        assert isinstance(latency[name], float), (name, latency)

    [fault] = [r for r in queue["failover"] if r["target"] == target]
    assert fault["ok"] and fault["error"] == "", fault
    assert fault["recovered"] and fault["confirmed"] > 0
    assert isinstance(fault["publish_gap_ms"], float)
    assert isinstance(fault["consume_gap_ms"], float)
    # The goal: nothing confirmed is lost by a kill -9 of the leader.
    assert fault["lost"] == 0, fault["lost_ids"]
    assert fault["delivered"] >= fault["confirmed"]


def test_queue_bench_streams_on_phalanx_and_redis(tmp_path: Path, run_bench: Runner) -> None:
    saved, report = run_tiny(run_bench, ("phalanx", "redis-aof-always"))
    queue = saved["queue"]
    assert queue["error"] == "", queue["error"]
    assert queue["measured"] == ["phalanx", "redis-aof-always"], queue["skipped"]
    for target in ("phalanx", "redis-aof-always"):
        check_target(queue, target)
    [fault] = [r for r in queue["failover"] if r["target"] == "phalanx"]
    # The leader was killed; the clients were connected to the two other nodes.
    assert fault["killed"] in ("n1", "n2", "n3") and len(fault["via"]) == 2
    for name in ("publish c=1 msg/s vs redis-aof-always", "publish c=64 msg/s vs redis-aof-always",
                 "consume c=1 msg/s vs redis-aof-always", "latency p50 at 100/s vs redis-aof-always",
                 "publish gap vs redis-aof-always"):
        assert isinstance(queue["ratios"].get(name), float), (name, queue["ratios"])
    assert saved["settings"]["only"] == ["queue"]
    assert len(queue["load_average_start"]) == 3 and len(queue["load_average_end"]) == 3

    for needle in ("## Queue: Redis Streams on phalanx vs RabbitMQ", "| publish | 64 | phalanx |",
                   "| consume | 1 | redis-aof-always |", "### End-to-end latency",
                   "| 100 | phalanx |", "### kill -9 of the queue's leader node",
                   "- publish c=1 msg/s vs redis-aof-always: "):
        assert needle in report, needle

    # Committing a run: its section goes into the full bench's RESULTS.md (replacing an older
    # queue section, keeping the others) and its JSON beside it.
    results = tmp_path / "full.md"
    results.write_text("# phalanx bench\n\n## Soak\n\nsoak\n\n## Peers not measured\n\n- x\n")
    bench_queue.splice(tmp_path, results, tmp_path / "queue.json")
    bench_queue.splice(tmp_path, results, tmp_path / "queue.json")
    spliced = results.read_text()
    assert spliced.count("## Queue: ") == 1 and spliced.count("### kill -9") == 1
    assert spliced.index("## Soak") < spliced.index("## Queue: ") < spliced.index("## Peers")
    assert json.loads((tmp_path / "queue.json").read_text())["queue"]["rows"] == queue["rows"]


if os.environ.get("PHALANX_BENCH_RABBITMQ") == "1":
    # Opt-in (see the module docstring): defined only when asked for, so the default suite
    # neither runs nor skips it.
    def test_queue_bench_rabbitmq_quorum_queue(run_bench: Runner) -> None:
        import bench_queue_rabbit

        assert bench_queue_rabbit.installed(), "apt-get install rabbitmq-server"
        saved, report = run_tiny(run_bench, ("rabbitmq",))
        queue = saved["queue"]
        assert queue["error"] == "", queue["error"]
        assert queue["measured"] == ["rabbitmq"], queue["skipped"]
        check_target(queue, "rabbitmq")
        [fault] = queue["failover"]
        assert fault["killed"].startswith("bq") and len(fault["via"]) == 2
        assert "| publish | 1 | rabbitmq |" in report

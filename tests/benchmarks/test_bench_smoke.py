"""Smoke test of `phalanx bench`: the machinery runs end to end on a tiny workload and writes
RESULTS.md and results.json with numbers; a peer that is missing is reported as skipped.

Structure only: no assertion about any timing or ratio (the machine is shared and noisy).
Every process the run starts is stopped by pid inside `run_suite` (also on failure); the test
then checks that nothing naming the run's work directory is left, and SIGKILLs it by pid if so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from phalanx.cli import main

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import phalanx_bench  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-benchmark") is None,
    reason="needs redis-server and redis-benchmark (apt-get install redis-server redis-tools)")


def _kill_leftovers(work_dir: str) -> list[int]:
    leftovers = phalanx_bench.rb.pids_mentioning(work_dir) if work_dir else []
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leftovers


def test_tiny_run_writes_results_and_reports_missing_peers(tmp_path: Path) -> None:
    # etcd and PySyncObj are treated as missing whether or not they are installed, so the test
    # takes the same time and path on every machine (and checks the "skipped" report).
    settings = phalanx_bench.Settings(
        repeats=1, set_requests={1: 100, 50: 2000}, get_requests=2000, failover_tries=1,
        sigstop_tries=1, run_timeout_s=40.0,
        only=("writes", "reads", "failover", "sigstop", "etcd", "pysyncobj"),
        assume_missing=frozenset({"redis-sentinel", "etcd", "pysyncobj"}), quick=True)
    document: dict = {}
    try:
        document = phalanx_bench.run_suite(settings, tmp_path)
    finally:
        leftovers = _kill_leftovers(document.get("work_dir", ""))
    assert leftovers == [], f"processes left running: {leftovers}"
    assert document["incomplete"] == ""

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["machine"]["cpu_count"] and saved["machine"]["kernel"]
    assert len(saved["machine"]["load_average_start"]) == 3
    rows = {(r["target"], r["test"], r["clients"]): r for r in saved["throughput"]}
    for key in (("phalanx", "SET", 1), ("phalanx", "SET", 50), ("phalanx", "GET", 50),
                ("redis-aof-always", "SET", 1), ("redis-aof-always", "SET", 50),
                ("redis-aof-always", "GET", 50)):
        assert key in rows, f"missing row {key}: {sorted(rows)}"
        row = rows[key]
        assert row["ok_runs"] == row["runs"] == 1, row
        for name in ("rps_median", "rps_min", "rps_max", "p50_ms", "p99_ms"):
            assert isinstance(row[name], float) and row[name] >= 0, (name, row)
    assert isinstance(rows[("phalanx", "SET", 50)]["vs_redis_aof_always"], float)

    failover = {(r["target"], r["fault"]): r for r in saved["failover"]}
    # Sentinel, etcd treated as missing
    assert set(failover) == {("phalanx", "kill -9"), ("phalanx", "SIGSTOP")}
    for row in failover.values():
        assert row["ok_tries"] == 1, row
        assert isinstance(row["median_ms"], float)

    assert "not installed" in saved["skipped"]["redis-sentinel"]
    assert "apt-get install redis-sentinel" in saved["skipped"]["redis-sentinel"]
    assert "not installed" in saved["skipped"]["etcd"]
    assert "apt-get install etcd-server" in saved["skipped"]["etcd"]
    assert "pip install pysyncobj" in saved["skipped"]["pysyncobj"]

    report = (tmp_path / "RESULTS.md").read_text()
    for needle in ("## Machine", "load average at start", "kernel", "| SET | 50 | phalanx |",
                   "| GET | 50 | redis-aof-always |", "| phalanx | kill -9 | 1/1 |",
                   "| phalanx | SIGSTOP | 1/1 |",
                   "redis-sentinel: skipped: not installed (apt-get install redis-sentinel)",
                   "## Peers not measured"):
        assert needle in report, needle


def test_the_cli_default_runs_every_section_and_only_selects_exactly() -> None:
    from click.testing import CliRunner

    from phalanx.cli import main

    help_text = CliRunner().invoke(main, ["bench", "--help"]).output
    default = "writes,reads,failover,sigstop,etcd,pysyncobj"
    assert default in help_text
    assert set(default.split(",")) == set(phalanx_bench.SECTIONS)
    assert phalanx_bench.Settings(only=("writes", "etcd")).sections() == {"writes", "etcd"}
    assert phalanx_bench.Settings(only=("writes", "reads", "failover")).sections() == {
        "writes", "reads", "failover"}


def test_cli_rejects_unknown_section() -> None:
    result = CliRunner().invoke(main, ["bench", "--only", "writes,bogus"])
    assert result.exit_code == 2
    assert "bogus" in result.output


def test_cli_help_lists_the_options() -> None:
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0
    for option in ("--quick", "--repeats", "--output", "--only"):
        assert option in result.output

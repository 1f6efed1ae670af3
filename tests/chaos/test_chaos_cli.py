"""`phalanx chaos run --json --report DIR` end to end: a short latency run on 3 local nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from phalanx.chaos.result import RESULT_KEYS

pytestmark = pytest.mark.timeout(180)


def test_chaos_run_prints_json_and_writes_the_report(tmp_path: Path) -> None:
    report = tmp_path / "report"
    completed = subprocess.run(
        [sys.executable, "-m", "phalanx", "chaos", "run", "--scenario", "latency",
         "--duration", "10s", "--seed", "3", "--nodes", "3", "--clients", "2", "--rate", "80",
         "--json", "--report", str(report)],
        capture_output=True, text=True, timeout=150, stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert set(RESULT_KEYS) <= set(result)
    assert result["scenario"] == "latency" and result["seed"] == 3
    assert result["faults"] and result["faults"][0]["kind"] == "latency"
    assert result["lost_acknowledged_writes"] == 0
    assert result["linearizable"] is True
    assert json.loads((report / "result.json").read_text()) == result


def test_unknown_mode_target_is_a_clear_error(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "phalanx", "chaos", "run", "--scenario", "leader-kill",
         "--target", str(tmp_path / "cluster.json"), "--duration", "5s", "--json"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert completed.returncode == 1
    assert "chaos run failed" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize(("arguments", "message"), [
    (["--scenario", "region-outage", "--regions", "2"], "at least 3 regions"),
    (["--scenario", "node-lost", "--nodes", "3"], "spare node to heal onto"),
    (["--scenario", "leader-kill", "--target", "x/cluster.json", "--shards", "2"],
     "--shards configure a cluster the lab starts"),
])
def test_a_run_that_cannot_work_is_refused_before_starting(arguments: list[str],
                                                          message: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "phalanx", "chaos", "run", *arguments, "--duration", "20s"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr

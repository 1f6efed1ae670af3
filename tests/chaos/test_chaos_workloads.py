"""Short real runs (3 local nodes, a leader killed with kill -9) of the queue and bank
workloads: no acknowledged push lost, no id twice, duplicates counted; every read of the bank
sums to the total. The checks must also fail on our own data: one delivery and its final copy
removed from the queue run's records is a lost push; one read of the bank changed breaks the
sum. The bank run goes through `phalanx chaos run --workload bank --json --report DIR`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from phalanx.chaos.queue_workload import QueueWorkload
from phalanx.chaos.report import render_html
from phalanx.chaos.result import RESULT_KEYS
from phalanx.chaos.run_config import RunConfig
from phalanx.chaos.runner import run_chaos
from phalanx.checker import check_bank, check_queue

pytestmark = pytest.mark.timeout(180)


def test_queue_under_a_leader_kill() -> None:
    config = RunConfig(scenario="leader-kill", duration_s=14.0, seed=31, nodes=3, zones=3,
                       clients=3, rate_ops_s=120.0, warmup_s=3.0, recovery_s=4.0,
                       workload="queue")
    artifacts = run_chaos(config)
    result = artifacts.result
    assert set(RESULT_KEYS) <= set(result)
    json.dumps(result, allow_nan=False)
    assert result["workload"] == "queue"
    assert result["faults"] and result["faults"][0]["kind"] == "leader-kill"
    check = result["workload_check"]
    assert check["ok"] is True, check["problems"]
    assert check["acknowledged_pushes"] > 50, check
    assert check["lost"] == 0 and check["twice_in_final"] == 0 and check["phantoms"] == 0
    assert check["delivered"] > 50, check
    # Every duplicate comes from a consumer that died between processing and its ack.
    assert check["redeliveries"] <= check["consumer_crashes"], check
    assert check["nodes_read"] == ["n1", "n2", "n3"]
    assert result["lost_acknowledged_writes"] == 0 and result["linearizable"] is True
    assert result["rto_ms"]["faults"][0]["rto_ms"] is not None
    assert "Queue accounting" in render_html(result)
    # Plant a loss in the run's own records: forget a delivered push everywhere.
    workload = artifacts.workload
    assert isinstance(workload, QueueWorkload)
    delivered = [item for item, _consumer, _at in workload.deliveries]
    victim = next(item for item in workload.pushed if item in delivered)
    planted = check_queue(workload.pushed, workload.sent,
                          [item for item in delivered if item != victim], {})
    assert not planted.ok and victim in planted.lost


def test_bank_under_a_leader_kill_through_the_cli(tmp_path: Path) -> None:
    report = tmp_path / "report"
    completed = subprocess.run(
        [sys.executable, "-m", "phalanx", "chaos", "run", "--scenario", "leader-kill",
         "--workload", "bank", "--duration", "14s", "--seed", "32", "--nodes", "3",
         "--clients", "3", "--rate", "120", "--json", "--report", str(report)],
        capture_output=True, text=True, timeout=150, stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert set(RESULT_KEYS) <= set(result)
    assert result["workload"] == "bank"
    assert result["faults"] and result["faults"][0]["kind"] == "leader-kill"
    check = result["workload_check"]
    assert check["ok"] is True, check["problems"]
    assert check["reads"] > 50 and check["sum_violations"] == 0, check
    assert check["final_reads"] == 3 and check["final_violations"] == 0, check
    transfers = check["transfers"]
    assert transfers.get("watch applied", 0) > 0 and transfers.get("script applied", 0) > 0
    for balances in check["final"].values():
        assert sum(balances) == check["total"] == 500
    assert "Bank invariant" in (report / "report.html").read_text()
    # A read changed (a debit seen without its credit) breaks the sum.
    final = check["final"]
    first = next(iter(final.values()))
    broken = [first[0] - 7, *first[1:]]
    assert check_bank(500, [(1.0, first), (2.0, broken)], final).violations[0].at_s == 2.0


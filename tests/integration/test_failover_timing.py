"""Failover timing as seen by a client (a measurement printed by the suite, not a speed test)."""

from __future__ import annotations

import json
import os
from typing import Any

from failover_timing import measure_failover
from integration_harness import LocalCluster


def test_failover_timing_measurement(cluster: Any) -> None:
    """Proves: after kill -9 and after SIGSTOP of the leader, writes through a surviving node
    resume every time (bounded wait), and records the client-visible write gap; prints median and
    worst over PHALANX_FAILOVER_TRIES tries (default 3) of each fault. No speed assertion: the
    numbers are for the closing note (`python tests/integration/failover_timing.py --tries 10`
    measures more tries)."""
    tries = int(os.environ.get("PHALANX_FAILOVER_TRIES", "3"))
    c: LocalCluster = cluster(3)
    summary = measure_failover(c, tries)
    for fault in ("kill", "stop"):
        assert summary[fault]["tries"] == tries
        assert all(gap > 0 for gap in summary[fault]["gaps_ms"])
    print("\nfailover timing: " + json.dumps(
        {fault: {k: summary[fault][k] for k in ("tries", "median_ms", "worst_ms", "gaps_ms")}
         for fault in ("kill", "stop")}))

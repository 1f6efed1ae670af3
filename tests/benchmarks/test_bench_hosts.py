"""`phalanx bench --only hosts` (benchmarks/bench_hosts.py), tiny: 3 hosts x K=1 and x K=2 on
real processes, one round; structure only (no figure is asserted: the machine is shared)."""

from __future__ import annotations

from typing import Any

import phalanx_bench


def test_hosts_section_measures_k1_and_k2_with_slot_routed_clients(run_bench: Any) -> None:
    settings = phalanx_bench.Settings(
        repeats=1, run_timeout_s=60.0, keyspace=2000, only=("hosts",), hosts_rounds=1,
        hosts_requests=500, assume_missing=frozenset({"redis-sentinel", "etcd", "pysyncobj"}),
        quick=True)
    saved, report = run_bench(settings)
    hosts = saved["hosts"]
    runs = hosts["runs"]
    assert [(r["k"], r["nodes"]) for r in runs] == [(1, 3), (2, 6)], runs
    assert all(r["error"] == "" for r in runs), runs
    assert all(r["rps"] > 0 and r["cpu_us_per_set"] > 0 for r in runs), runs
    # slot-routed: redis-benchmark --cluster saw several leaders (6 shards)
    assert all(r["routed_leader_nodes"] > 1 for r in runs), runs
    assert hosts["k2_vs_k1"] == runs[1]["rps"] / runs[0]["rps"]
    assert "## Nodes per host (issue 15 lever 9)" in report
    assert "| SET with 2 node processes per host vs 1 (3 hosts) | a measured row |" in report

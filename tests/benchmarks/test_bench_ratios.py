"""benchmarks/bench_ratios.py: every ratio of the bench is cut in the direction that does not
flatter phalanx (down where higher is better, up where lower is better), and the detailed
sections of RESULTS.md use it (not `:.2f`, which rounds to nearest). Synthetic values and
documents, no processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import bench_goals  # noqa: E402
import bench_pipelines  # noqa: E402
import bench_ratios  # noqa: E402
import bench_report  # noqa: E402
from bench_ratios import cut_down, cut_up, higher, lower  # noqa: E402


@pytest.mark.parametrize(("value", "down", "up"), [
    (0.705, "0.70", "0.71"),   # the s8 case: `:.2f` showed 0.71x for a higher-is-better ratio
    (1.456, "1.45", "1.46"),   # and 1.45x for a lower-is-better p50 ratio
    (1.46, "1.46", "1.46"),    # exact at the places: unchanged both ways (not 1.45 from 1.4599..)
    (0.29, "0.29", "0.29"),    # 0.29 * 100 is 28.999999999999996 in binary
    (2.0, "2.00", "2.00"),
    (1.999, "1.99", "2.00"),   # never shown as meeting a ">= 2x" goal it misses
    (2.001, "2.00", "2.01"),   # never shown as meeting a "<= 2x" goal it misses
    (1.0049, "1.00", "1.01"),
    (0.0, "0.00", "0.00"),
    (0.001, "0.00", "0.01"),
    (12345.678, "12345.67", "12345.68"),
])
def test_two_places_cut_down_and_up_at_the_boundaries(value: float, down: str, up: str) -> None:
    assert cut_down(value) == down
    assert cut_up(value) == up
    assert higher(value) == f"{down}x"
    assert lower(value) == f"{up}x"


def test_three_places_and_the_half_way_point_that_round_to_nearest_would_take_up() -> None:
    assert higher(0.9125, 3) == "0.912x"
    assert lower(0.9121, 3) == "0.913x"
    assert higher(0.912, 3) == lower(0.912, 3) == "0.912x"
    # Round-half-even and round-half-up disagree here; the cut does not depend on either.
    assert cut_down(0.125) == "0.12" and cut_up(0.125) == "0.13"
    assert cut_down(0.135) == "0.13" and cut_up(0.135) == "0.14"


def test_not_a_figure_and_no_negative_zero() -> None:
    for value in (float("inf"), float("nan")):
        assert higher(value) == lower(value) == bench_ratios.NOT_A_FIGURE
    assert cut_up(-0.001) == "0.00"
    assert cut_down(-0.001) == "-0.01"
    # Huge values keep every digit of their repr (no decimal precision error).
    assert cut_up(1e30, 0) == "1" + "0" * 30
    assert higher(1.5e300) == "15" + "0" * 299 + ".00x"


def test_a_detailed_section_shows_the_cut_ratio_not_the_nearest() -> None:
    runs = [{"target": "leader", "rps": 10000.0, "load_1m": 1.0, "ok": True, "error": ""},
            {"target": "follower", "rps": 7999.0, "load_1m": 1.0, "ok": True, "error": ""}]
    lines = bench_pipelines.markdown({"follower_vs_leader": 0.7999, "runs": runs,
                                      "pipeline": 100, "clients": 50, "requests": 1000,
                                      "follower_rps_median": 7999.0,
                                      "leader_rps_median": 10000.0})
    text = "\n".join(lines)
    assert "**0.79x**" in text and "0.80x**" not in text


def _document() -> dict[str, Any]:
    """A near-empty results document with one throughput row, the failover ratios and one
    memory size, each ratio just off a two-decimal boundary."""
    phalanx_set = {"target": "phalanx", "test": "SET", "clients": 1, "runs": 1, "ok_runs": 1,
                   "failures": [], "rps_median": 635.0, "rps_min": 620.0, "rps_max": 651.0,
                   "p50_ms": 1.5, "p99_ms": 3.0, "vs_redis_aof_always": 0.1699,
                   "vs_etcd": 0.7049, "p50_vs_etcd": 1.4501, "vs_pysyncobj": 64.439}
    size = {"keys": 1_000_000, "rss": {"n1": 254_100_000}, "rss_per_key": 254.1,
            "redis_used_per_key": 105.4, "rss_delta_per_key": 195.0, "redis_delta_per_key": 104.0,
            "redis": {"used_memory": 105_400_000, "used_memory_rss": 125_600_000},
            "rss_vs_redis_used": 2.41, "rss_vs_redis_rss": 2.02}  # stored rounded, as in s8
    return {"started_utc": "2026-12-07T20:00:00Z", "wall_s": 5.0, "incomplete": "",
            "machine": {"load_average_start": [1.0, 1.0, 1.0], "cpu_count": 2,
                        "affinity_cpus": 2, "cpu_model": "x", "kernel": "k", "platform": "p",
                        "python": "3", "redis_server": "r", "redis_benchmark": "b",
                        "phalanx": "0", "git_commit": "c", "data_filesystem": "ext4"},
            "load_average_end": [2.0, 2.0, 2.0],
            "settings": {"repeats": 1, "quick": True, "set_requests": {}, "get_requests": 0,
                         "read_clients": 50, "keyspace": 1, "etcd_requests": {},
                         "pysyncobj_requests": {}, "writer_interval_ms": 5,
                         "writer_timeout_ms": 500, "failover_tries": 1, "sigstop_tries": 1},
            "skipped": {}, "throughput": [phalanx_set], "failover": [], "runs": [],
            "failover_ratio": {"etcd kill -9": 0.0801, "etcd-fast SIGSTOP": 2.1601},
            "data": {"sizes": [size], "error": ""}, "memory_measured": True}


def test_the_report_cuts_every_ratio_in_the_unflattering_direction() -> None:
    text = bench_report.markdown(_document())
    # Higher is better (ops/s vs a peer): down. Lower is better (p50, gaps, memory): up.
    assert "| 0.16x | 0.70x; p50 1.46x | 64.43x |" in text
    assert "vs etcd kill -9: 0.09x; vs etcd-fast SIGSTOP: 2.17x." in text
    # Memory from the raw bytes (254.1 / 105.4 = 2.4108...; 254.1 / 125.6 = 2.0230...), not
    # from the document's rounded 2.41 and 2.02.
    assert "| 2.42x | 2.03x |" in text
    assert "0.17x" not in text and "0.71x" not in text and "1.45x" not in text


def test_a_gap_in_whole_ms_is_cut_up_in_the_goals_table_and_the_failover_table() -> None:
    row = {"target": "phalanx", "fault": "kill -9", "median_ms": 200.4, "min_ms": 150.01,
           "max_ms": 250.0, "gaps_ms": [150.01, 200.4, 250.0], "ok_tries": 3, "tries": 3,
           "failures": []}
    goal = bench_goals.gap("kill -9", "kill -9 of a leader, client gap", 200.0)(
        {"failover": [row]})
    # Not "median 200 ms" next to a "<= 200 ms" goal it misses.
    assert (goal.figure, goal.verdict) == ("median 201 ms (3/3 tries, worst 250 ms)", "NOT met")
    # A peer's gaps are cut down: rounding them up would flatter phalanx too.
    peer = row | {"target": "etcd", "median_ms": 1078.9, "min_ms": 1046.5,
                  "gaps_ms": [1046.5, 1078.9, 2675.99], "max_ms": 2675.99}
    text = bench_report.markdown(_document() | {"failover": [row, peer]})
    assert "| phalanx | kill -9 | 3/3 | 201 | 151 | 250 | 151, 201, 250 |" in text
    assert "| etcd | kill -9 | 3/3 | 1078 | 1046 | 2675 | 1046, 1078, 2675 |" in text


def test_the_report_is_rendered_again_from_a_saved_document(tmp_path: Path) -> None:
    doc = _document()
    (tmp_path / "results.json").write_text(json.dumps(doc))
    (tmp_path / "RESULTS.md").write_text("stale: 0.71x\n")
    assert bench_report.rerender(tmp_path) == tmp_path / "RESULTS.md"
    assert (tmp_path / "RESULTS.md").read_text() == bench_report.markdown(doc)

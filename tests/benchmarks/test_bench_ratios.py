"""benchmarks/bench_ratios.py: every ratio of the bench is cut in the direction that does not
flatter phalanx (down where higher is better, up where lower is better), and the detailed
sections of RESULTS.md use it (not `:.2f`, which rounds to nearest). Synthetic values and
documents, no processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import bench_pipelines  # noqa: E402
import bench_ratios  # noqa: E402
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


def test_a_detailed_section_shows_the_cut_ratio_not_the_nearest() -> None:
    runs = [{"target": "leader", "rps": 10000.0, "load_1m": 1.0, "ok": True, "error": ""},
            {"target": "follower", "rps": 7999.0, "load_1m": 1.0, "ok": True, "error": ""}]
    lines = bench_pipelines.markdown({"follower_vs_leader": 0.7999, "runs": runs,
                                      "pipeline": 100, "clients": 50, "requests": 1000,
                                      "follower_rps_median": 7999.0,
                                      "leader_rps_median": 10000.0})
    text = "\n".join(lines)
    assert "**0.79x**" in text and "0.80x**" not in text

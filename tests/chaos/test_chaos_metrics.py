"""Unit tests of the chaos lab's measures on synthetic data: availability, nines, RTO, RPO,
percentiles, the per-second timeline, and the nemesis schedule."""

from __future__ import annotations

import itertools
import math

import pytest

from phalanx.chaos import metrics
from phalanx.chaos.metrics import FAIL, INFO, OK, OpRecord
from phalanx.chaos.nemesis import PERMANENT, SCENARIOS, plan
from phalanx.chaos.workload import classify


def op(start: float, end: float, kind: str = "write", outcome: str = OK) -> OpRecord:
    return OpRecord(start, end, kind, outcome, "n1")


def test_availability_counts_unknown_outcomes_as_unavailable() -> None:
    ops = [op(0, 0.1)] * 6 + [op(0, 0.1, outcome=FAIL)] * 2 + [op(0, 1, outcome=INFO)] * 2
    assert metrics.availability(ops) == pytest.approx(0.6)
    assert metrics.counts(ops) == {"ok": 6, "fail": 2, "info": 2, "total": 10}
    assert metrics.availability([]) == 0.0


def test_nines_are_bounded_by_the_sample() -> None:
    assert metrics.nines(0.999, 100_000) == pytest.approx(3.0)
    assert metrics.nines(0.99, 100_000) == pytest.approx(2.0)
    # No failure in 1000 requests shows about 3 nines, not infinity.
    assert metrics.nines(1.0, 1000) == pytest.approx(3.0)
    assert metrics.nines(0.0, 10) == 0.0
    assert metrics.nines(0.5, 0) == 0.0
    assert math.isfinite(metrics.nines(1.0, 1))


def test_rto_is_fault_to_first_acknowledged_write_invoked_after_it() -> None:
    ops = [
        op(0.9, 1.6),                      # in flight at the fault: says nothing
        op(1.1, 1.3, outcome=FAIL),        # failed
        op(1.2, 1.4, kind="read"),         # a read is not the signal
        op(1.5, 1.8, outcome=INFO),        # unknown
        op(1.6, 1.75, kind="cas"),         # first acknowledged write after the fault
        op(1.7, 1.9, kind="sadd"),
    ]
    assert metrics.recovery_time_ms(1.0, ops) == pytest.approx(750.0)
    assert metrics.recovery_time_ms(5.0, ops) is None
    assert metrics.rto_summary([100.0, None, 300.0, 200.0]) == {"median": 200.0, "max": 300.0}
    assert metrics.rto_summary([None]) == {"median": None, "max": None}


def test_rpo_span_is_between_first_and_last_lost_ack() -> None:
    assert metrics.rpo([]) == {"lost_writes": 0, "span_s": 0.0}
    assert metrics.rpo([4.0]) == {"lost_writes": 1, "span_s": 0.0}
    assert metrics.rpo([7.5, 4.0, 5.25]) == {"lost_writes": 3, "span_s": 3.5}


def test_percentiles_and_latency_summary() -> None:
    values = [float(v) for v in range(1, 101)]
    assert metrics.percentile(values, 0.5) == 50.0
    assert metrics.percentile(values, 0.99) == 99.0
    assert metrics.percentile(values, 1.0) == 100.0
    assert metrics.percentile([], 0.5) is None
    ops = [op(0, v / 1000) for v in values] + [op(0, 9.0, outcome=INFO)]
    summary = metrics.latency_summary(ops)
    assert summary["p50"] == pytest.approx(50.0)
    assert summary["max"] == pytest.approx(100.0)  # unknown outcomes have no latency


def test_timeline_has_one_row_per_second_by_completion() -> None:
    ops = [op(0.1, 0.2), op(0.5, 1.5, outcome=FAIL), op(1.0, 1.1), op(2.0, 2.9, outcome=INFO)]
    rows = metrics.timeline(ops, 3.0)
    assert [r["t_s"] for r in rows] == [0, 1, 2]
    assert (rows[0]["ok"], rows[1]["ok"], rows[1]["fail"], rows[2]["info"]) == (1, 1, 1, 1)
    assert rows[2]["p50_ms"] is None
    assert metrics.throughput(ops, 2.0) == 1.0


def test_error_classification() -> None:
    import redis
    from redis.exceptions import ClusterDownError, TryAgainError

    assert classify(TryAgainError("not the leader"), True) == FAIL
    assert classify(ClusterDownError("no leader"), True) == FAIL
    assert classify(redis.ConnectionError("Error 111 connecting to x. Connection refused."),
                    True) == FAIL
    assert classify(redis.TimeoutError("Timeout reading from socket"), True) == INFO
    assert classify(redis.ConnectionError("Connection closed by server."), True) == INFO
    assert classify(redis.ResponseError("phalanx: outcome unknown: x"), True) == INFO
    assert classify(redis.ResponseError("phalanx: outcome unknown: x"), False) == FAIL


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_plans_healed_faults_inside_the_run(scenario: str) -> None:
    for duration in (12.0, 60.0):
        slots = plan(scenario, duration, seed=7)
        assert slots, f"{scenario} plans no fault in {duration} s"
        for slot in slots:
            assert slot.at_s >= 3.0
            assert slot.at_s + slot.hold_s <= duration - 4.0 + 1e-9
        assert plan(scenario, duration, seed=7) == slots  # the seed decides
    if scenario in PERMANENT:
        return  # one loss per run (tests/chaos/test_chaos_planning.py)
    long_run = plan(scenario, 60.0, seed=7)
    assert len(long_run) >= (2 if scenario == "rolling-restart" else 3)
    gaps = [b.at_s - a.at_s for a, b in itertools.pairwise(long_run)]
    assert all(8.0 <= gap <= 25.0 for gap in gaps), gaps


def test_cli_lists_every_scenario() -> None:
    from phalanx.cli.lab import scenario_names

    assert sorted(scenario_names()) == sorted(SCENARIOS)

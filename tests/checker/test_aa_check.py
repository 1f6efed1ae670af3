"""checker/aa_check: the model of the active-active merge rules catches what breaks them."""

from __future__ import annotations

from phalanx.checker.aa_check import (
    FAIL,
    OK,
    UNKNOWN,
    AaOp,
    check_active_active,
    region_loss_rpo,
)


def op(region: str, kind: str, key: str, value: object, invoked: float,
       completed: float | None = None, outcome: str = OK) -> AaOp:
    done = invoked + 0.5 if completed is None and outcome != UNKNOWN else completed
    return AaOp(region, kind, key, value, invoked, done, outcome)


def test_counter_counts_every_acknowledged_increment_once() -> None:
    ops = [op("dc1", "incr", "c", 3, 1), op("dc2", "incr", "c", 4, 1),
           op("dc2", "incr", "c", 5, 2, outcome=UNKNOWN), op("dc1", "incr", "c", 9, 3, outcome=FAIL)]
    for value, good in ((7, True), (12, True), (6, False), (13, False), (16, False)):
        result = check_active_active(ops, {"a": {"c": value}, "b": {"c": value}})
        assert result.ok is good, (value, result.problems)
    # an increment applied twice (14 = 3 + 4 + 7?) no: 3+4 counted twice = 14 > 12
    assert not check_active_active(ops, {"a": {"c": 14}}).ok


def test_divergent_nodes_fail_convergence() -> None:
    ops = [op("dc1", "incr", "c", 1, 1)]
    result = check_active_active(ops, {"a": {"c": 1}, "b": {"c": 0}})
    assert not result.ok and not result.converged


def test_set_add_wins_and_observed_remove() -> None:
    ops = [op("dc1", "sadd", "s", "x", 1), op("dc1", "srem", "s", "x", 3),   # observed: gone
           op("dc1", "sadd", "s", "y", 1), op("dc2", "srem", "s", "y", 3),   # may be gone
           op("dc2", "sadd", "s", "y", 10),                                 # re-add after: wins
           op("dc2", "sadd", "s", "z", 1)]
    assert check_active_active(ops, {"a": {"s": {"y", "z"}}}).ok
    missing = check_active_active(ops, {"a": {"s": {"z"}}})
    assert not missing.ok and "missing" in missing.problems[0]
    back = check_active_active(ops, {"a": {"s": {"x", "y", "z"}}})
    assert not back.ok and "back after a remove" in back.problems[0]
    # A remove in another region, concurrent with the only add: either outcome is allowed.
    concurrent = [op("dc1", "sadd", "s", "w", 1), op("dc2", "srem", "s", "w", 1.2)]
    assert check_active_active(concurrent, {"a": {"s": set()}}).ok
    assert check_active_active(concurrent, {"a": {"s": {"w"}}}).ok


def test_register_holds_a_write_with_the_greatest_clock() -> None:
    ops = [op("dc1", "set", "r", "a", 1), op("dc1", "set", "r", "b", 3),     # b after a in dc1
           op("dc2", "set", "r", "c", 1.2),                                   # concurrent
           op("dc2", "get", "r", "b", 5), op("dc2", "set", "r", "d", 7),      # d saw b
           op("dc1", "set", "r", "e", 7.1)]                                   # e concurrent with d
    for value, good in (("d", True), ("e", True), ("a", False), ("b", False), ("c", False),
                        ("zz", False), (None, False)):
        result = check_active_active(ops, {"n": {"r": value}})
        assert result.ok is good, (value, result.problems)


def test_region_loss_rpo_in_writes_and_seconds() -> None:
    acked = [("m1", 1.0), ("m2", 2.0), ("m3", 2.5), ("m4", 3.0)]
    assert region_loss_rpo(acked, {"m1", "m2", "m3", "m4"}, 4.0)["lost_writes"] == 0
    rpo = region_loss_rpo(acked, {"m1", "m2"}, 4.0)
    assert rpo["lost_writes"] == 2 and rpo["rpo_seconds"] == 1.5

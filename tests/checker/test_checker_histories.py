"""Hand-made histories for phalanx.checker: each one a rule of linearizability, by name."""

from __future__ import annotations

import pytest

from phalanx.checker import (
    CheckResult,
    History,
    InvalidHistory,
    Operation,
    OpKind,
    Outcome,
    Verdict,
    check,
)


def op(
    h: History,
    process: int,
    kind: str,
    start: float,
    end: float | None,
    outcome: str,
    output: bytes | bool | None = None,
    *,
    key: str = "k",
    value: bytes | None = None,
    expected: bytes | None = None,
) -> int:
    """Invoke at `start`; complete at `end` with `outcome` (end None: leave it outstanding)."""
    op_id = h.invoke(process, kind, key, value=value, expected=expected, time=start)
    if end is None:
        return op_id
    if outcome == "ok":
        h.ok(op_id, output, time=end)
    elif outcome == "fail":
        h.fail(op_id, time=end)
    else:
        h.info(op_id, time=end)
    return op_id


def write(
    h: History,
    p: int,
    start: float,
    end: float | None,
    value: bytes | None,
    outcome: str = "ok",
    key: str = "k",
) -> int:
    return op(h, p, "write", start, end, outcome, key=key, value=value)


def read(
    h: History,
    p: int,
    start: float,
    end: float | None,
    output: bytes | None,
    outcome: str = "ok",
    key: str = "k",
) -> int:
    return op(h, p, "read", start, end, outcome, output, key=key)


def cas(
    h: History,
    p: int,
    start: float,
    end: float | None,
    expected: bytes | None,
    value: bytes | None,
    output: bool | None,
    outcome: str = "ok",
) -> int:
    return op(h, p, "cas", start, end, outcome, output, value=value, expected=expected)


def assert_linearizable(result: CheckResult) -> None:
    assert result.ok, result.explain()
    assert result.verdict == "linearizable"
    assert result.failure is None


def assert_violation(result: CheckResult) -> None:
    assert not result.ok
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.verdict == "not linearizable"
    assert result.failure is not None


# --- basics ---------------------------------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    result = check(History())
    assert_linearizable(result)
    assert result.keys == ()


def test_sequential_write_then_read_is_linearizable() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    read(h, 2, 2, 3, b"a")
    assert_linearizable(check(h))


def test_read_of_initial_absent_value() -> None:
    h = History()
    read(h, 1, 0, 1, None)
    write(h, 1, 2, 3, b"a")
    read(h, 1, 4, 5, b"a")
    assert_linearizable(check(h))


def test_read_of_a_given_initial_value() -> None:
    h = History(initial={"k": b"seed"})
    read(h, 1, 0, 1, b"seed")
    assert_linearizable(check(h))
    assert_violation(check(h, initial={"k": b"other"}))


def test_delete_is_a_write_of_none() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    write(h, 1, 2, 3, None)
    read(h, 2, 4, 5, None)
    assert_linearizable(check(h))


def test_builder_without_times_uses_event_order() -> None:
    h = History()
    w = h.invoke(1, "write", "k", value=b"a")
    r = h.invoke(2, "read", "k")  # overlaps the write: may see either value
    h.ok(r, None)
    h.ok(w)
    r2 = h.invoke(2, "read", "k")
    h.ok(r2, b"a")
    assert_linearizable(check(h))
    r3 = h.invoke(3, "read", "k")
    h.ok(r3, None)  # after the write completed: stale
    assert_violation(check(h))


# --- stale reads and disagreeing reads ------------------------------------------------------


def test_stale_read_after_a_completed_write_is_a_violation() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    write(h, 1, 2, 3, b"b")
    stale = read(h, 2, 4, 5, b"a")
    result = check(h)
    assert_violation(result)
    failure = result.failure
    assert failure is not None
    assert failure.key == "k"
    assert failure.blocked is not None and failure.blocked.op_id == stale
    assert [o.op_id for o in failure.linearization] == [0, 1]
    assert failure.state == b"b"
    assert failure.state_source is not None and failure.state_source.op_id == 1
    assert failure.needed_writer is not None and failure.needed_writer.op_id == 0
    assert {o.op_id for o in failure.window} == {0, 1, 2}


def test_read_concurrent_with_a_write_may_see_old_or_new() -> None:
    for seen in (b"a", b"b"):
        h = History()
        write(h, 1, 0, 1, b"a")
        write(h, 1, 2, 6, b"b")
        read(h, 2, 3, 4, seen)
        assert_linearizable(check(h))


def test_two_concurrent_writes_then_reads_that_agree() -> None:
    h = History()
    write(h, 1, 0, 10, b"x")
    write(h, 2, 0, 10, b"y")
    read(h, 3, 11, 12, b"y")
    read(h, 4, 13, 14, b"y")
    assert_linearizable(check(h))


def test_two_concurrent_writes_then_reads_that_disagree_is_a_violation() -> None:
    h = History()
    write(h, 1, 0, 10, b"x")
    write(h, 2, 0, 10, b"y")
    read(h, 3, 11, 12, b"x")
    read(h, 4, 13, 14, b"y")  # the register flipped back with no write in flight
    result = check(h)
    assert_violation(result)
    failure = result.failure
    assert failure is not None and failure.blocked is not None
    assert failure.blocked.op_id == 3
    assert "cannot be linearized" in result.explain()


def test_concurrent_reads_during_concurrent_writes_may_disagree() -> None:
    h = History()
    write(h, 1, 0, 10, b"x")
    write(h, 2, 0, 10, b"y")
    read(h, 3, 1, 2, b"x")
    read(h, 4, 3, 4, b"y")
    assert_linearizable(check(h))
    read(h, 3, 5, 6, b"x")  # x, y, x while only two writes happen: impossible
    assert_violation(check(h))


def test_value_never_written_is_a_violation() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    read(h, 2, 0, 5, b"ghost")
    result = check(h)
    assert_violation(result)
    assert "which no operation invoked before it returned wrote" in result.explain()


def test_equal_timestamps_overlap() -> None:
    # The read is invoked at the tick the write completes: they overlap, so either is fine.
    for seen in (None, b"a"):
        h = History()
        write(h, 1, 0, 5, b"a")
        read(h, 2, 5, 7, seen)
        assert_linearizable(check(h))


# --- cas ------------------------------------------------------------------------------------


def test_cas_chain_is_linearizable() -> None:
    h = History()
    cas(h, 1, 0, 1, None, b"a", True)  # set if absent
    cas(h, 2, 2, 3, b"a", b"b", True)
    cas(h, 1, 4, 5, b"a", b"c", False)  # not matched: the value is b
    read(h, 3, 6, 7, b"b")
    assert_linearizable(check(h))


def test_cas_succeeding_on_a_value_the_register_never_held_is_a_violation() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    cas(h, 2, 2, 3, b"z", b"b", True)
    assert_violation(check(h))


def test_cas_reporting_no_match_when_it_must_have_matched_is_a_violation() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    cas(h, 2, 2, 3, b"a", b"b", False)
    assert_violation(check(h))


def test_cas_no_match_is_fine_while_a_write_is_in_flight() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    write(h, 3, 2, 9, b"other")
    cas(h, 2, 2, 3, b"a", b"b", False)
    read(h, 2, 10, 11, b"other")
    assert_linearizable(check(h))


def test_two_cas_on_the_same_expected_value_cannot_both_succeed() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    cas(h, 2, 2, 5, b"a", b"x", True)
    cas(h, 3, 2, 5, b"a", b"y", True)
    assert_violation(check(h))


def test_successful_cas_that_did_not_write_is_a_violation() -> None:
    h = History()
    cas(h, 1, 0, 1, None, b"a", True)
    read(h, 2, 2, 3, None)
    assert_violation(check(h))


# --- info: unknown outcomes -----------------------------------------------------------------


def test_info_write_that_takes_effect_late() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    write(h, 2, 2, 3, b"b", outcome="info")  # timed out; the write lands later
    read(h, 3, 10, 11, b"a")
    read(h, 3, 20, 21, b"b")
    read(h, 3, 30, 31, b"b")
    assert_linearizable(check(h))


def test_info_write_takes_effect_once_only() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    write(h, 2, 2, 3, b"b", outcome="info")
    read(h, 3, 10, 11, b"a")
    read(h, 3, 20, 21, b"b")
    read(h, 3, 30, 31, b"a")  # back to a, but nobody wrote a again
    assert_violation(check(h))


def test_info_write_that_never_takes_effect() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    write(h, 2, 2, 3, b"b", outcome="info")
    read(h, 3, 10, 11, b"a")
    read(h, 3, 20, 21, b"a")
    result = check(h)
    assert_linearizable(result)
    # Nobody could observe b: the info write is left out of the search.
    assert result.key("k").excluded == 1


def test_info_write_cannot_take_effect_before_it_is_invoked() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    read(h, 3, 2, 3, b"b")
    write(h, 2, 5, 6, b"b", outcome="info")
    assert_violation(check(h))


def test_outstanding_operation_counts_as_info() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    write(h, 2, 2, None, b"b")  # never completed (the client crashed)
    read(h, 3, 10, 11, b"b")
    assert_linearizable(check(h))
    assert h.operations[1].outcome is Outcome.INFO


def test_info_cas_may_or_may_not_take_effect() -> None:
    for final in (b"a", b"b"):
        h = History()
        write(h, 1, 0, 1, b"a")
        cas(h, 2, 2, 3, b"a", b"b", None, outcome="info")
        read(h, 3, 10, 11, final)
        assert_linearizable(check(h))


def test_info_cas_only_writes_when_it_matches() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    cas(h, 2, 2, 3, b"zzz", b"b", None, outcome="info")
    read(h, 3, 10, 11, b"b")
    assert_violation(check(h))


def test_info_read_is_dropped() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    read(h, 2, 2, 3, b"nonsense", outcome="info")
    result = check(h)
    assert_linearizable(result)
    assert result.key("k").excluded == 1


def test_info_write_observed_with_a_not_matched_cas_is_kept() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    write(h, 2, 2, 3, b"b", outcome="info")
    cas(h, 3, 10, 11, b"a", b"c", False)  # needs the value to differ from a: the info write
    assert_linearizable(check(h))
    assert check(h).key("k").excluded == 0


# --- fail: definitely not applied -----------------------------------------------------------


def test_failed_write_is_excluded() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    write(h, 2, 2, 3, b"b", outcome="fail")
    read(h, 3, 4, 5, b"a")
    assert_linearizable(check(h))


def test_reading_a_failed_write_is_a_violation() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    write(h, 2, 2, 3, b"b", outcome="fail")
    read(h, 3, 4, 5, b"b")
    assert_violation(check(h))


# --- keys, reports, budget, determinism -----------------------------------------------------


def test_keys_are_independent_and_the_failing_key_is_named() -> None:
    h = History()
    write(h, 1, 0, 1, b"a", key="x")
    write(h, 1, 2, 3, b"a", key="y")
    read(h, 2, 4, 5, b"a", key="x")
    read(h, 2, 6, 7, None, key="y")  # stale on y only
    result = check(h)
    assert_violation(result)
    assert result.key("x").ok
    assert not result.key("y").ok
    assert result.failure is not None and result.failure.key == "y"
    assert [k.key for k in result.keys] == ["x", "y"]
    explained = result.explain()
    assert explained.startswith("not linearizable: 2 keys, 1 linearizable, 1 not linearizable")
    assert "key y" in explained and "key x:" not in explained


def test_linearization_is_reported_when_linearizable() -> None:
    h = History()
    write(h, 1, 0, 10, b"x")
    write(h, 2, 0, 10, b"y")
    read(h, 3, 11, 12, b"x")
    key_result = check(h).key("k")
    order = [o.op_id for o in key_result.linearization]
    assert order == [1, 0, 2]
    assert key_result.state == b"x"


def test_explain_shows_the_window() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    write(h, 1, 2, 3, b"b")
    read(h, 2, 4, 5, b"a")
    text = check(h).explain()
    assert "#2 p2 read on k [4, 5] ok 'a'  <-- cannot be linearized" in text
    assert "L #1 p1 write 'b' on k [2, 3] ok  <-- set 'b'" in text
    assert "L #0 p1 write 'a' on k [0, 1] ok  <-- wrote 'a'" in text


def _hard_history(writers: int = 12) -> History:
    """Many concurrent writes of few values, then a contradiction: lots of orders to try."""
    h = History()
    for p in range(writers):
        write(h, p, 0, 100, bytes([97 + p % 3]))
    for p in range(writers):
        read(h, 100 + p, 1 + p, 2 + p, bytes([97 + (p + 1) % 3]))
    read(h, 200, 101, 102, b"a")
    read(h, 201, 103, 104, b"b")
    return h


def test_budget_exceeded_is_unknown_not_a_verdict() -> None:
    result = check(_hard_history(), max_steps=50)
    assert not result.ok
    assert result.verdict is Verdict.UNKNOWN
    assert result.verdict == "unknown (budget exceeded)"
    assert result.failure is None
    assert result.key("k").steps == 50
    assert "gave up after 50 steps" in result.explain()


def test_hard_history_is_decided_with_enough_budget() -> None:
    result = check(_hard_history())
    assert result.verdict is Verdict.NOT_LINEARIZABLE


def test_a_violation_on_one_key_beats_unknown_on_another() -> None:
    h = _hard_history()
    write(h, 300, 0, 1, b"a", key="other")
    read(h, 300, 2, 3, None, key="other")
    result = check(h, max_steps=50)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.failure is not None and result.failure.key == "other"


def test_same_history_same_report() -> None:
    h = _hard_history(8)
    first, second = check(h), check(h)
    assert first == second
    assert first.explain() == second.explain()


# --- the direct form and validation ---------------------------------------------------------


def test_direct_form_with_dataclasses() -> None:
    ops = [
        Operation(1, OpKind.WRITE, b"k", 0.0, 0.5, Outcome.OK, value=b"a"),
        Operation(
            2, OpKind.CAS, b"k", 0.6, 0.9, Outcome.OK, value=b"b", expected=b"a", output=True
        ),
        Operation(3, OpKind.READ, b"k", 1.0, 1.2, Outcome.OK, output=b"b"),
        Operation(4, OpKind.WRITE, b"k", 1.3, None, Outcome.INFO, value=b"c"),
    ]
    result = check(ops)
    assert_linearizable(result)
    assert [o.op_id for o in result.key(b"k").linearization] == [0, 1, 2]
    stale = [*ops, Operation(3, OpKind.READ, b"k", 2.0, 2.1, Outcome.OK, output=b"a")]
    assert_violation(check(stale))


def test_direct_form_rejects_duplicate_ids() -> None:
    ops = [
        Operation(1, OpKind.WRITE, "k", 0, 1, Outcome.OK, value=b"a", op_id=7),
        Operation(1, OpKind.WRITE, "k", 2, 3, Outcome.OK, value=b"a", op_id=7),
    ]
    with pytest.raises(InvalidHistory, match="used twice"):
        check(ops)


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (Operation(1, OpKind.READ, "k", 0, None, Outcome.OK), "needs a complete_time"),
        (Operation(1, OpKind.READ, "k", 5, 4, Outcome.OK), "completes before"),
        (Operation(1, OpKind.CAS, "k", 0, 1, Outcome.OK, output=b"x"), "True or False"),
        (Operation(1, OpKind.READ, "k", 0, 1, Outcome.OK, output=True), "bytes or None"),
        (Operation(1, OpKind.WRITE, "k", 0, 1, Outcome.OK, value="str"), "bytes or None"),  # type: ignore[arg-type]
    ],
)
def test_direct_form_validation(operation: Operation, message: str) -> None:
    with pytest.raises(InvalidHistory, match=message):
        check([operation])


def test_builder_rejects_misuse() -> None:
    h = History()
    w = h.invoke(1, "write", "k", value=b"a", time=0)
    with pytest.raises(InvalidHistory, match="still outstanding"):
        h.invoke(1, "read", "k", time=1)
    with pytest.raises(InvalidHistory, match="unknown operation kind"):
        h.invoke(2, "append", "k", time=1)
    with pytest.raises(InvalidHistory, match="no operation with id"):
        h.ok(99, time=2)
    with pytest.raises(InvalidHistory, match="on every event or on none"):
        h.ok(w)
    h.ok(w, time=2)
    with pytest.raises(InvalidHistory, match="already completed"):
        h.fail(w, time=3)
    r = h.invoke(1, "read", "k", time=4)
    with pytest.raises(InvalidHistory, match="completes before"):
        h.ok(r, b"a", time=3)
    assert len(h) == 2


def test_unobserved_info_writes_can_explain_unmatched_cas_once_each() -> None:
    def history(info_writes: int) -> History:
        h = History()
        write(h, 1, 0, 1, b"a")
        for p in range(info_writes):
            write(h, 10 + p, 2, 3, b"x%d" % p, outcome="info")
        cas(h, 2, 4, 5, b"a", b"z", False)  # the value was not a: an info write landed
        write(h, 1, 6, 7, b"a")
        cas(h, 2, 8, 9, b"a", b"z", False)  # again: needs a second info write
        return h

    assert_violation(check(history(1)))
    assert_linearizable(check(history(2)))
    assert_linearizable(check(history(5)))
    assert check(history(2)).key("k").excluded == 0


def test_linearization_leaves_out_unknown_ops_that_need_not_happen() -> None:
    h = History()
    write(h, 1, 0, 1, b"a")
    write(h, 2, 2, 3, b"b", outcome="info")
    read(h, 3, 4, 5, b"b")
    write(h, 4, 6, 7, b"c", outcome="info")
    read(h, 3, 8, 9, b"b")
    read(h, 3, 10, 11, b"c")
    order = [o.op_id for o in check(h).key("k").linearization]
    assert order == [0, 1, 2, 4, 3, 5]

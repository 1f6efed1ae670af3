"""Unit tests of the two availability views (raw attempts, application calls) and of how the
lab records the attempts of a retried call, on synthetic data and fake connections."""

from __future__ import annotations

import random
from typing import Any

import pytest
import redis

from phalanx.chaos import metrics
from phalanx.chaos.clients import RetryingCaller, attempt_outcome
from phalanx.chaos.metrics import FAIL, INFO, OK, CallRecord, OpRecord
from phalanx.chaos.workload import Workload, WorkloadConfig
from phalanx.checker import OpKind, Outcome, check
from phalanx.client.policy import OutcomeUnknownError


def op(start: float, end: float, kind: str = "write", outcome: str = OK) -> OpRecord:
    return OpRecord(start, end, kind, outcome, "n1")


def test_application_availability_counts_calls_within_their_deadline() -> None:
    calls = [CallRecord(0, 0.1, "write", OK, 1, 5.0)] * 6 + [
        CallRecord(0, 0.5, "write", OK, 3, 5.0),      # retried twice, then ok
        CallRecord(0, 6.0, "read", OK, 4, 5.0),       # ok, but after its deadline: late
        CallRecord(0, 5.0, "read", FAIL, 9, 5.0),
        CallRecord(0, 1.0, "cas", INFO, 1, 5.0)]
    found = metrics.application_summary(calls)
    assert found["calls"] == 10
    assert found["succeeded"] == 7
    assert found["late"] == 1
    assert (found["failed"], found["unknown"]) == (1, 1)
    assert found["attempts"] == 6 + 3 + 4 + 9 + 1
    assert found["retries"] == found["attempts"] - 10
    assert found["retried_calls"] == 3
    assert found["not_succeeded_by_kind"] == {"read": 2, "cas": 1}
    assert found["availability"] == pytest.approx(0.7)
    assert metrics.application_summary([])["availability"] == 0.0


def test_calls_of_a_client_without_retry_are_its_requests() -> None:
    ops = [op(0, 1), op(1, 2, outcome=FAIL), op(2, 3, outcome=INFO)]
    calls = metrics.calls_from_ops(ops)
    assert [c.attempts for c in calls] == [1, 1, 1]
    assert metrics.application_summary(calls)["availability"] == pytest.approx(
        metrics.availability(ops))


def test_fault_window_ends_after_the_heal_or_at_the_next_fault() -> None:
    assert metrics.fault_window(10.0, 14.0, None, 60.0) == (10.0, 14.0 + metrics.AFTER_HEAL_S)
    assert metrics.fault_window(10.0, 14.0, 15.0, 60.0) == (10.0, 15.0)
    assert metrics.fault_window(10.0, None, None, 60.0) == (10.0, 60.0)  # never healed
    assert metrics.fault_window(59.0, 59.5, None, 60.0) == (59.0, 60.0)  # bounded by the run


def test_window_availability_takes_requests_started_in_the_window() -> None:
    ops = [op(0.5, 1.5, outcome=FAIL),                 # before: not counted
           op(1.0, 1.2, outcome=FAIL), op(1.1, 1.3), op(1.9, 2.5, outcome=INFO),
           op(2.0, 2.1)]                               # at the end: not counted
    calls = [CallRecord(1.0, 1.4, "write", OK, 2, 5.0), CallRecord(1.9, 2.6, "write", INFO, 1,
                                                                    5.0)]
    found = metrics.window_availability(ops, calls, 1.0, 2.0)
    assert (found["attempts"], found["attempts_ok"]) == (3, 1)
    assert found["raw_availability"] == pytest.approx(1 / 3, abs=1e-6)
    assert (found["calls"], found["calls_succeeded"], found["retries"]) == (2, 1, 1)
    assert found["app_availability"] == pytest.approx(0.5)
    empty = metrics.window_availability(ops, calls, 50.0, 60.0)
    assert empty["raw_availability"] is None and empty["app_availability"] is None


def test_the_index_gives_the_same_answers_as_the_plain_measures() -> None:
    rng = random.Random(7)
    ops = []
    for _ in range(400):
        start = rng.uniform(0, 60)
        ops.append(op(start, start + rng.uniform(0, 2), rng.choice(["read", "write", "sadd"]),
                      rng.choice([OK, OK, OK, FAIL, INFO])))
    calls = metrics.calls_from_ops(ops)
    index = metrics.OpIndex(ops, calls)
    for at in [0.0, 3.3, 17.0, 42.5, 59.9, 61.0]:
        assert index.recovery_time_ms(at) == metrics.recovery_time_ms(at, ops)
        end = at + 4.0
        assert index.window(at, end) == metrics.window_availability(ops, calls, at, end)


def test_per_kind_sums_the_windows_of_each_fault_kind() -> None:
    rows: list[dict[str, object]] = [
        {"kind": "leader-kill", "rto_ms": 100.0, "attempts": 100, "attempts_ok": 90,
         "calls": 95, "calls_succeeded": 95, "retries": 5},
        {"kind": "leader-kill", "rto_ms": 300.0, "attempts": 100, "attempts_ok": 98,
         "calls": 99, "calls_succeeded": 98, "retries": 1},
        {"kind": "zone-outage", "rto_ms": None, "attempts": 0, "attempts_ok": 0, "calls": 0,
         "calls_succeeded": 0, "retries": 0}]
    found = metrics.per_kind(rows)
    kill = found["leader-kill"]
    assert kill["faults"] == 2 and kill["median"] == 200.0 and kill["max"] == 300.0
    assert kill["raw_availability"] == pytest.approx(188 / 200)
    assert kill["app_availability"] == pytest.approx(193 / 194, abs=1e-6)
    assert kill["retries"] == 6 and kill["not_recovered"] == 0
    zone = found["zone-outage"]
    assert zone["not_recovered"] == 1 and zone["raw_availability"] is None
    assert zone["median"] is None


def test_attempt_outcomes() -> None:
    refused = redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    reset = redis.ConnectionError("Connection closed by server.")
    assert attempt_outcome(refused, sent=False, is_write=True) == FAIL
    assert attempt_outcome(reset, sent=True, is_write=True) == INFO
    assert attempt_outcome(redis.TimeoutError("Timeout reading"), sent=True,
                           is_write=False) == INFO
    assert attempt_outcome(redis.ResponseError("CLUSTERDOWN no quorum"), sent=True,
                           is_write=True) == FAIL
    assert attempt_outcome(redis.ResponseError("TRYAGAIN"), sent=True, is_write=True) == FAIL
    assert attempt_outcome(redis.ResponseError("phalanx: outcome unknown"), sent=True,
                           is_write=True) == INFO
    assert attempt_outcome(redis.ResponseError("WRONGTYPE"), sent=True, is_write=False) == FAIL


class FlakyConnection:
    """Answers a scripted list: an exception is raised, anything else is the reply."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.sent: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> Any:
        self.sent.append(args)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def close(self) -> None:
        pass


def workload_with(script: list[Any], *, deadline_s: float = 5.0) -> tuple[Workload,
                                                                           RetryingCaller,
                                                                           FlakyConnection]:
    workload = Workload([], WorkloadConfig(client="haproxy", haproxy=("127.0.0.1", 1),
                                           deadline_s=deadline_s), seed=1, t0=0.0,
                        until_s=10.0)
    connection = FlakyConnection(script)
    caller = RetryingCaller(connection, where="haproxy",  # type: ignore[arg-type]
                            deadline_s=deadline_s, rng=random.Random(1))
    return workload, caller, connection


def test_a_write_resent_after_an_unknown_outcome_stays_in_the_history_twice() -> None:
    reset = redis.ConnectionError("Connection closed by server.")
    workload, caller, connection = workload_with([reset, b"OK"])
    known: dict[str, bytes | None] = {}
    rng = random.Random(3)
    outcome = "none"
    # Draw until the workload picks a plain write (the draw is the workload's own).
    while True:
        state = random.Random(rng.random())
        probe = random.Random()
        probe.setstate(state.getstate())
        key = probe.choice(workload.register_keys)
        roll = probe.random()
        if 0.5 <= roll < 0.75:
            outcome = workload._register_op(state, caller, 0, known, b"v-1")
            break
    assert outcome == OK
    assert connection.sent == [("SET", key, b"v-1"), ("SET", key, b"v-1")]
    ops = list(workload.state.history)
    assert [(o.kind, o.outcome, o.value) for o in ops] == [
        (OpKind.WRITE, Outcome.INFO, b"v-1"), (OpKind.WRITE, Outcome.OK, b"v-1")]
    assert ops[0].process != ops[1].process  # the unknown one stays open forever
    assert [r.outcome for r in workload.state.ops] == [INFO, OK]
    [call] = workload.state.calls
    assert (call.outcome, call.attempts) == (OK, 2)
    assert check(workload.state.history).ok


def test_a_cas_is_never_resent_after_an_unknown_outcome() -> None:
    reset = redis.ConnectionError("Connection closed by server.")
    _, caller, connection = workload_with([reset, b"OK"])

    class Observer:
        count = 0

        def begin(self, where: str) -> object:
            self.count += 1
            return None

        def succeeded(self, token: object, reply: Any) -> None:
            pass

        def failed(self, token: object, error: Exception, sent: bool) -> None:
            pass

    observer = Observer()
    with pytest.raises(OutcomeUnknownError):
        caller.call(observer, "SET", "k", b"new", "IFEQ", b"old")
    assert observer.count == 1 and len(connection.sent) == 1
    # A refused connection proves nothing was sent: even a cas is retried.
    refused = redis.ConnectionError("Error 111 connecting to x. Connection refused.")
    _, caller, connection = workload_with([refused, b"OK"])
    assert caller.call(Observer(), "SET", "k", b"new", "IFEQ", b"old") == b"OK"
    assert len(connection.sent) == 2


def test_an_idempotent_write_that_runs_out_of_retries_may_have_been_applied() -> None:
    reset = redis.ConnectionError("Connection closed by server.")
    down = redis.exceptions.ClusterDownError("CLUSTERDOWN no quorum")
    _, caller, connection = workload_with([reset] + [down] * 30, deadline_s=0.3)

    class Quiet:
        def begin(self, where: str) -> object:
            return None

        def succeeded(self, token: object, reply: Any) -> None:
            pass

        def failed(self, token: object, error: Exception, sent: bool) -> None:
            pass

    with pytest.raises(OutcomeUnknownError):
        caller.call(Quiet(), "SADD", "s", "m")
    assert len(connection.sent) >= 2


def test_the_report_shows_both_views_per_fault_and_per_kind(tmp_path: Any) -> None:
    import json

    from tests.chaos.test_report import healthy_result  # the report tests' sample result

    from phalanx.chaos.report import write_html_report
    from phalanx.chaos.report_availability import client_sentence

    result = healthy_result(10)
    result["client"] = {"mode": "smart", "deadline_s": 5.0}
    result["application"] = metrics.application_summary(
        [CallRecord(0, 0.1, "write", OK, 1, 5.0)] * 998 + [CallRecord(0, 0.1, "write", OK, 3,
                                                                      5.0),
                                                           CallRecord(0, 5.5, "read", FAIL, 9,
                                                                      5.0)])
    result["rto_ms"]["faults"] = [{"kind": "leader-kill", "targets": ["n1"], "at_s": 3.0,
                                   "rto_ms": 120.0, "new_leader": "n2", "window_s": [3.0, 8.0],
                                   "attempts": 500, "attempts_ok": 490,
                                   "raw_availability": 0.98, "calls": 492,
                                   "calls_succeeded": 492, "retries": 8,
                                   "app_availability": 1.0}]
    result["per_kind"] = metrics.per_kind(result["rto_ms"]["faults"])
    result["resources"] = {"interval_s": 10.0, "summary": {
        "samples": 2, "nodes": {"n1<script>": {"rss_mb_first": 50.0, "rss_mb_last": 60.0,
                                               "rss_mb_max": 61.0, "disk_mb_first": 1.0,
                                               "disk_mb_last": 2.0, "disk_mb_max": 2.0}},
        "lab_rss_mb": {"first": 40.0, "last": 41.0, "max": 41.0},
        "load_1m": {"mean": 3.0, "max": 4.0}}, "samples": []}
    page = write_html_report(result, tmp_path / "r.html").read_text()
    assert "Application availability" in page
    assert "99.900 %" in page  # 999 of 1000 calls
    assert "Per fault kind" in page and "leader-kill" in page
    assert "98.000 % of 500" in page and "100.000 % of 492" in page
    assert "n1&lt;script&gt;" in page and "n1<script>" not in page
    assert "smart client" in client_sentence(result)
    json.dumps(result, allow_nan=False)


def test_the_markdown_summary_never_rounds_a_percentage_up() -> None:
    from phalanx.chaos.markdown import render_markdown

    result = {"scenario": "mixed", "availability": 0.9999996, "ops": {"ok": 1, "total": 1},
              "application": {"availability": 0.99899999, "calls": 10},
              "per_kind": {"leader-kill": {"faults": 2, "median": 10.0, "max": 20.0,
                                           "raw_availability": None,
                                           "app_availability": 0.5}},
              "resources": {"interval_s": 10.0, "samples": [
                  {"t_s": 0.0, "nodes": {"n1": {"rss_mb": 50.0, "disk_mb": 1.0}},
                   "lab_rss_mb": 40.0, "load": [3.0, 2.0, 1.0]},
                  {"t_s": 10.0, "nodes": {"n1": {"rss_mb": None, "disk_mb": 1.5}},
                   "lab_rss_mb": 41.0, "load": [3.5, 2.0, 1.0]}], "summary": {}}}
    text = render_markdown(result, every_s=5.0)
    assert "99.999 %" in text and "100.000 %" not in text
    assert "application availability: 99.899 %" in text
    assert "| leader-kill | 2 | 10 ms | 20 ms | - | - | 50.000 % | - |" in text
    assert "| 10 | - / 1.5 | 41.0 | 3.5 |" in text
    assert render_markdown({})  # every value may be missing

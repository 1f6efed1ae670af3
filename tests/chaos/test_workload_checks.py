"""The pure checks of the queue and bank workloads on synthetic histories: a clean history
passes, and every planted violation (a lost push, an id twice in the final lists, a phantom,
an ack that removed nothing, a read that does not sum, a negative balance, a wrong final read)
is caught. Also: the run's verdict, the terminal and HTML words, and the CLI's choice list."""

from __future__ import annotations

import json

from phalanx.chaos import console, workloads
from phalanx.chaos.report_workload import workload_section
from phalanx.checker import check_bank, check_queue
from phalanx.checker.bank_check import read_violation

PUSHED = ["a", "b", "c", "d", "e"]
SENT = {*PUSHED, "x"}  # x: a push with an unknown outcome


def test_a_clean_queue_history_passes_and_counts_duplicates() -> None:
    # a, b consumed (b twice: a consumer died before its ack), c in a processing list, d, e
    # still queued; x (unknown outcome) consumed: fine.
    result = check_queue(PUSHED, SENT, ["a", "b", "b", "x"],
                         {"queue": ["e", "d"], "processing:0": ["c"], "processing:1": []})
    assert result.ok, result.problems()
    assert result.lost == ()
    assert result.duplicates == {"b": 2}
    assert (result.acknowledged, result.delivered, result.deliveries, result.remaining) == \
        (5, 3, 4, 3)
    body = result.to_json()
    json.dumps(body, allow_nan=False)
    assert body["ok"] is True and body["duplicates"] == 1 and body["redeliveries"] == 1
    assert body["problems"] == []


def test_a_lost_acknowledged_push_is_caught() -> None:
    result = check_queue(PUSHED, SENT, ["a", "b"], {"queue": ["e", "d"], "processing:0": []})
    assert not result.ok
    assert result.lost == ("c",)
    assert result.to_json()["lost"] == 1
    assert "1 acknowledged pushes lost" in result.problems()[0]


def test_an_unacknowledged_push_that_vanished_is_not_lost() -> None:
    result = check_queue(PUSHED, SENT, ["a", "b", "c", "d", "e"], {"queue": []})
    assert result.ok


def test_an_id_twice_in_the_final_lists_is_caught() -> None:
    # c in two processing lists at once (or a move applied twice).
    result = check_queue(PUSHED, SENT, ["a", "b"],
                         {"queue": ["e", "d"], "processing:0": ["c"], "processing:1": ["c"]})
    assert not result.ok
    assert result.twice_in_final == ("c",)
    assert result.lost == ()


def test_a_phantom_and_an_empty_ack_are_caught() -> None:
    phantom = check_queue(PUSHED, SENT, ["a", "b", "c", "zz"], {"queue": ["e", "d"]})
    assert not phantom.ok and phantom.phantoms == ("zz",)
    empty_ack = check_queue(PUSHED, SENT, ["a", "b", "c", "d", "e"], {}, ["c"])
    assert not empty_ack.ok and empty_ack.acks_found_nothing == ("c",)


def test_bank_reads_that_sum_pass() -> None:
    reads = [(0.1, [100, 100, 100]), (0.2, [90, 110, 100]), (0.3, [0, 200, 100])]
    result = check_bank(300, reads, {"n1": [50, 150, 100], "n2": [50, 150, 100], "n3": None},
                        {"watch applied": 2, "watch aborted": 1, "script unknown": 1})
    assert result.ok, result.problems()
    assert (result.reads, result.final_reads) == (3, 2)
    body = result.to_json()
    json.dumps(body, allow_nan=False)
    assert body["sum_violations"] == 0 and body["transfers"]["watch aborted"] == 1


def test_a_read_that_does_not_sum_is_caught() -> None:
    # Half a transfer seen: debited, not yet credited.
    reads = [(0.1, [100, 100, 100]), (0.2, [80, 100, 100]), (0.3, [80, 120, 100])]
    result = check_bank(300, reads, {"n1": [80, 120, 100]})
    assert not result.ok
    (violation,) = result.violations
    assert violation.at_s == 0.2 and violation.reason == "sum 280 != 300"
    assert result.to_json()["sum_violations"] == 1
    assert "1 of 3 reads broke the invariant" in result.problems()[0]


def test_negative_missing_and_final_violations_are_caught() -> None:
    assert read_violation(300, [-10, 210, 100]) == "negative balance -10"
    assert read_violation(300, [None, 200, 100]) == "1 account(s) missing"
    assert read_violation(300, [100, 100, 100]) is None
    final = check_bank(300, [], {"n1": [100, 100, 100], "n2": [100, 100, 99]})
    assert not final.ok and final.final_violations[0].where == "n2"
    nobody = check_bank(300, [], {"n1": None})
    assert not nobody.ok and "no node answered" in nobody.problems()[0]


def _result(check: dict[str, object] | None, workload: str) -> dict[str, object]:
    return {"lost_acknowledged_writes": 0, "linearizable": True, "workload": workload,
            "workload_check": check, "linearizability": {"verdict": "linearizable"},
            "faults": [], "rto_ms": {"faults": []}, "availability": 1.0,
            "ops": {"total": 10}}


def test_a_failing_workload_check_fails_the_run_everywhere() -> None:
    assert workloads.passed(_result(None, "register"))
    good = check_queue(PUSHED, SENT, PUSHED, {}).to_json()
    assert workloads.passed(_result(good, "queue"))
    bad = check_bank(300, [(0.5, [1, 2, 3])], {"n1": [100, 100, 100]}).to_json()
    bad["accounts"] = 3
    result = _result(bad, "bank")
    assert not workloads.passed(result)
    reasons = workloads.failure_reasons(result)
    assert reasons and "broke the invariant" in reasons[0]
    assert "did not sum to 300" in (workloads.summary(result) or "")
    assert any("bank: 1 of 1 reads broke" in line for line in console.story_lines(result))
    section = workload_section(result)
    assert "Bank invariant" in section and "FAILED" in section
    assert workload_section(_result(None, "register")) == ""


def test_the_cli_lists_every_workload() -> None:
    from phalanx.cli.lab import workload_names

    assert workload_names() == list(workloads.WORKLOADS)


def test_a_failing_queue_check_fails_the_html_page_and_shows_in_the_terminal() -> None:
    from io import StringIO

    from rich.console import Console

    from phalanx.chaos.report import render_html
    result: dict[str, object] = {
        "scenario": "leader-kill", "seed": 1, "mode": "local", "duration_s": 5.0,
        "started_at": "2026-01-01T00:00:00+00:00", "cluster": {"nodes": [{"id": "n1"}]},
        "ops": {"ok": 10, "fail": 0, "info": 0, "total": 10}, "availability": 1.0,
        "nines": 1.0, "rto_ms": {"median": None, "max": None, "faults": []},
        "lost_acknowledged_writes": 0, "rpo": {"lost_writes": 0, "span_s": 0.0},
        "linearizable": True, "linearizability": {"verdict": "linearizable", "explain": ""},
        "faults": [], "timeline": [], "events": [], "throughput_ops_s": 2.0,
        "latency_ms": {"p50": 1.0, "p90": 1.0, "p99": 1.0, "p999": 1.0, "max": 1.0},
        "workload": "queue"}
    result["workload_check"] = {
        **check_queue(PUSHED, SENT, ["a", "b"], {"queue": ["e", "d"]}).to_json(),
        "consumer_crashes": 0}
    page = render_html(result)
    assert 'class="verdict bad"' in page
    assert "1 acknowledged pushes lost (never consumed, not in the queue): c" in page
    assert "Queue accounting" in page and "5 acknowledged pushes: 1 lost" in page
    buffer = StringIO()
    console.print_summary(result, Console(file=buffer, width=200, color_system=None))
    text = buffer.getvalue()
    assert "queue workload" in text and "5 acknowledged pushes: 1 lost" in text
    result["workload_check"] = check_queue(PUSHED, SENT, PUSHED, {}).to_json()
    assert 'class="verdict good"' in render_html(result)

"""The redis-py suite runner's result reading (benchmarks/redispy/redispy_report.py): junit
parsing, the cause a failure is grouped under, and the redis-server vs phalanx comparison."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS / "redispy"))

from redispy_report import CaseResult, RunResult, cause_of, compare, markdown, parse_junit  # noqa: E402

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_commands.TestRedisCommands" name="test_a" time="0.1"/>
<testcase classname="tests.test_commands.TestRedisCommands" name="test_b" time="0.1">
<failure message="redis.exceptions.ResponseError: unknown command 'XADD', with args">tb</failure>
</testcase>
<testcase classname="tests.test_lock.TestLock" name="test_c" time="0.1">
<skipped type="pytest.skip" message="Redis version required &gt;= 7.9.0">x</skipped></testcase>
<testcase classname="tests.test_lock.TestLock" name="test_d" time="0.1">
<error message="failed on setup with &quot;KeyError: 'x'&quot;">tb</error></testcase>
</testsuite></testsuites>"""


def test_parse_junit_outcomes_and_ids(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    path.write_text(JUNIT)
    tests = parse_junit(path)
    assert {tid: r.outcome for tid, r in tests.items()} == {
        "test_commands.py::TestRedisCommands::test_a": "passed",
        "test_commands.py::TestRedisCommands::test_b": "failed",
        "test_lock.py::TestLock::test_c": "skipped",
        "test_lock.py::TestLock::test_d": "error",
    }
    assert "XADD" in tests["test_commands.py::TestRedisCommands::test_b"].text


def test_cause_is_the_first_refused_command_else_the_exception() -> None:
    assert cause_of("ResponseError: unknown command 'zadd', with args beginning with: 'a'") \
        == "ZADD"
    assert cause_of("unknown subcommand 'SETUSER'. Try ACL HELP.\nunknown command 'XADD'") \
        == "ACL SETUSER"
    assert cause_of("unknown subcommand or wrong number of arguments for 'DELUSER'. "
                    "Try ACL HELP.") == "ACL DELUSER"
    assert cause_of("unknown subcommand or wrong number of arguments for 'config|x'") \
        == "CONFIG X"
    assert cause_of("redis.exceptions.ResponseError: phalanx: DEBUG is not supported\n") \
        == "phalanx: DEBUG is not supported"
    assert cause_of("AssertionError: assert b'1' == 1.0\n  detail") \
        == "AssertionError: assert b'1' == 1.0"
    assert cause_of('failed on setup with "KeyError: \'slowlog\'"\n') \
        == "KeyError: 'slowlog' (in setup)"
    assert cause_of("_queue.Empty\nTraceback") == "Empty"


def _run(target: str, outcomes: dict[str, tuple[str, str]]) -> RunResult:
    run = RunResult(target=target)
    for tid, (outcome, text) in outcomes.items():
        run.tests[tid] = CaseResult(file=tid.split("::")[0], test_id=tid, outcome=outcome,
                                    text=text)
    return run


def test_compare_counts_n_of_m_and_groups_by_count() -> None:
    xadd = "ResponseError: unknown command 'XADD'"
    reference = _run("redis-server", {f"test_x.py::T::t{i}": ("passed", "") for i in range(5)})
    reference.tests["test_x.py::T::gated"] = CaseResult("test_x.py", "test_x.py::T::gated",
                                                        "skipped", "version")
    candidate = _run("phalanx", {
        "test_x.py::T::t0": ("passed", ""), "test_x.py::T::t1": ("failed", xadd),
        "test_x.py::T::t2": ("error", xadd), "test_x.py::T::t3": ("failed", "unknown command 'TIME'"),
        "test_x.py::T::gated": ("passed", "")})
    result = compare(reference, candidate)
    assert (result.both_passed, result.reference_passed, result.phalanx_only_passed) == (1, 5, 1)
    assert [(cause, count) for cause, count, _ in result.causes] == [
        ("XADD", 2), ("(not run on phalanx)", 1), ("TIME", 1)]
    text = markdown(["test_x.py"], {"redis-server": reference, "phalanx": candidate}, result,
                    ["# title"], {})
    assert "| test_x.py | 5 / 0 / 1 / 0 | 2 / 2 / 0 / 1 |" in text
    assert "1 of 5" in text


def test_every_remaining_failure_is_listed_with_its_documented_reason() -> None:
    reference = _run("redis-server", {
        "test_commands.py::TestRedisCommands::test_select": ("passed", ""),
        "test_x.py::T::t1": ("passed", "")})
    candidate = _run("phalanx", {
        "test_commands.py::TestRedisCommands::test_select": (
            "failed", "ResponseError: SELECT is not allowed in cluster mode"),
        "test_x.py::T::t1": ("failed", "unknown command 'TIME'")})
    text = markdown(["test_commands.py", "test_x.py"],
                    {"redis-server": reference, "phalanx": candidate},
                    compare(reference, candidate), ["# title"], {})
    section = text.split("## Every remaining failure, and why", 1)[1]
    assert "| test_commands.py::TestRedisCommands::test_select | deliberate: one database" \
        in section
    assert "| test_x.py::T::t1 | **NOT DOCUMENTED** (`TIME`) |" in section

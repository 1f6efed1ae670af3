"""Reading redis-py's test results: junit XML -> per-test outcomes, the side-by-side table, and
the phalanx failures grouped by cause. Pure functions (no processes, no network), used by
`benchmarks/redispy_suite.py` and testable on their own.

Rules:
- A test is identified by `file::class::name` (junit classname `tests.test_x.TestY` + name).
- Outcomes: passed, failed, error, skipped (junit `<failure>`, `<error>`, `<skipped>`).
- The cause of a failure is the first command the server refused in its text (`unknown command
  'XADD'` -> `XADD`; `unknown subcommand 'SETUSER'. Try ACL HELP.` -> `ACL SETUSER`; a phalanx
  `ERR phalanx: ...` refusal -> that text), otherwise the exception type and its first line.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from differences import reason

OUTCOMES = ("passed", "failed", "skipped", "error")  # the order of the table's columns


@dataclass
class CaseResult:
    file: str
    test_id: str
    outcome: str
    text: str = ""  # failure / error / skip message and details


@dataclass
class RunResult:
    """One pytest run of the suite against one target."""

    target: str
    returncode: int | None = None
    tests: dict[str, CaseResult] = field(default_factory=dict)
    aborted: str | None = None  # why the run produced no results, when it did not
    seconds: float = 0.0
    shim_fields: list[str] = field(default_factory=list)  # INFO fields the shim supplied

    def counts(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for result in self.tests.values():
            row = table.setdefault(result.file, dict.fromkeys(OUTCOMES, 0))
            row[result.outcome] += 1
        return table


def _file_of(classname: str) -> str:
    for part in classname.split("."):
        if part.startswith("test_"):
            return part + ".py"
    return classname


def parse_junit(path: Path) -> dict[str, CaseResult]:
    tree = ET.parse(path)
    results: dict[str, CaseResult] = {}
    for case in tree.iter("testcase"):
        classname = case.get("classname", "")
        name = case.get("name", "")
        file = _file_of(classname)
        test_id = f"{file}::{classname.rsplit('.', 1)[-1]}::{name}"
        outcome, text = "passed", ""
        for tag, label in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                outcome = label
                text = (node.get("message") or "") + "\n" + (node.text or "")
                break
        # an error in teardown after a pass/fail is reported as a second element: keep the worst
        results[test_id] = CaseResult(file=file, test_id=test_id, outcome=outcome, text=text)
    return results


# Redis 7: "unknown subcommand 'X'. Try ACL HELP."; phalanx also says "unknown subcommand or
# wrong number of arguments for 'X'. Try ACL HELP." and, without a HELP hint, "... for 'acl|x'".
_UNKNOWN_SUB = re.compile(r"unknown subcommand (?:or wrong number of arguments for )?"
                          r"'([^']+)'\.? Try (\S+) HELP", re.I)
_UNKNOWN_SUB_OR_ARITY = re.compile(
    r"unknown subcommand or wrong number of arguments for '([^']+)'(?!\.? Try)", re.I)
_UNKNOWN_CMD = re.compile(r"unknown command '([^']*)'", re.I)
_PHALANX_REFUSAL = re.compile(r"(?:ERR |Error: )phalanx: ([^\n\"]{1,80})")
_TYPED_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Empty|Failed|Timeout\w*))"
                         r"(?::\s*(.*))?$")
_EXCEPTION_LINE = re.compile(r"^E\s+(\w[\w.]*(?:Error|Exception|Timeout)\w*):?\s*(.*)$", re.M)


def cause_of(text: str) -> str:
    """The group a phalanx failure belongs to (see the module docstring)."""
    found: list[tuple[int, str]] = []
    for match in _UNKNOWN_SUB.finditer(text):
        found.append((match.start(), f"{match.group(2)} {match.group(1)}".upper()))
    for match in _UNKNOWN_SUB_OR_ARITY.finditer(text):
        found.append((match.start(), match.group(1).replace("|", " ").upper()))
    for match in _UNKNOWN_CMD.finditer(text):
        found.append((match.start(), match.group(1).upper()))
    for match in _PHALANX_REFUSAL.finditer(text):
        found.append((match.start(), f"phalanx: {match.group(1).strip()}"))
    if found:
        return min(found)[1]
    first = text.strip().splitlines()[0] if text.strip() else "(no message)"
    phase = re.match(r'failed on (setup|teardown) with "(.*)"?$', first)
    if phase:
        first = f"{phase.group(2).rstrip(chr(34))} (in {phase.group(1)})"
    typed = _TYPED_LINE.match(first)
    if typed:  # junit's message: "redis.exceptions.ResponseError: ..." -> "ResponseError: ..."
        first = f"{typed.group(1).rsplit('.', 1)[-1]}: {typed.group(2) or ''}".rstrip(": ")
    elif (exception := _EXCEPTION_LINE.search(text)) is not None:
        first = f"{exception.group(1).rsplit('.', 1)[-1]}: {exception.group(2).strip()}"
    return first[:110]


@dataclass
class Comparison:
    reference_passed: int  # M: tests passing on redis-server
    both_passed: int  # N: of those, passing on phalanx
    causes: list[tuple[str, int, list[str]]]  # (cause, count, example test ids), by count
    phalanx_only_passed: int  # pass on phalanx but not on redis-server (e.g. version gates)
    failing: list[tuple[str, str]] = field(default_factory=list)  # (test id, cause), all


def compare(reference: RunResult, candidate: RunResult) -> Comparison:
    passed_ref = [tid for tid, r in reference.tests.items() if r.outcome == "passed"]
    both = 0
    failing: list[tuple[str, str]] = []
    groups: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for tid in passed_ref:
        other = candidate.tests.get(tid)
        if other is not None and other.outcome == "passed":
            both += 1
            continue
        if other is None:
            cause = "(not run on phalanx)"
        elif other.outcome == "skipped":
            cause = f"skipped on phalanx: {other.text.strip().splitlines()[0][:100]}"
        else:
            cause = cause_of(other.text)
        groups[cause] += 1
        examples.setdefault(cause, []).append(tid)
        failing.append((tid, cause))
    only = sum(1 for tid, r in candidate.tests.items() if r.outcome == "passed"
               and (tid not in reference.tests or reference.tests[tid].outcome != "passed"))
    causes = [(cause, count, examples[cause][:3])
              for cause, count in sorted(groups.items(), key=lambda item: (-item[1], item[0]))]
    return Comparison(len(passed_ref), both, causes, only, failing)


def markdown(files: list[str], runs: dict[str, RunResult], comparison: Comparison | None,
             header: list[str], aborts: dict[str, RunResult]) -> str:
    """RESULTS.md: header lines, aborts, the per-file table, N of M, causes."""
    lines = list(header)
    if aborts:
        lines += ["## Runs that aborted", ""]
        for label, run in aborts.items():
            lines += [f"- **{label}**: {run.aborted}"]
        lines.append("")
    lines += ["## Per file", "",
              "| file | " + " | ".join(f"{t}: pass / fail / skip / error" for t in runs) + " |",
              "|---|" + "---|" * len(runs)]
    tables = {target: run.counts() for target, run in runs.items()}
    totals = {target: dict.fromkeys(OUTCOMES, 0) for target in runs}
    for file in files:
        cells = []
        for target in runs:
            row = tables[target].get(file)
            if row is None:
                cells.append("-")
                continue
            for outcome in OUTCOMES:
                totals[target][outcome] += row[outcome]
            cells.append(" / ".join(str(row[o]) for o in OUTCOMES))
        lines.append(f"| {file} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(
        " / ".join(str(totals[t][o]) for o in OUTCOMES) for t in runs) + " |")
    lines.append("")
    if comparison is not None:
        lines += [f"**Tests passing on redis-server that pass on phalanx: "
                  f"{comparison.both_passed} of {comparison.reference_passed}.** "
                  f"({comparison.phalanx_only_passed} test(s) pass on phalanx but not on "
                  "redis-server; not counted.)", "",
                  "## phalanx failures that pass on redis-server, by cause", "",
                  "| cause (first refused command, else exception) | tests | e.g. |",
                  "|---|---|---|"]
        for cause, count, example in comparison.causes:
            safe = cause.replace("|", "\\|")
            lines.append(f"| `{safe}` | {count} | {example[0].split('::', 1)[1][:70]} |")
        lines.append("")
        lines += ["## Every remaining failure, and why", "",
                  "From `benchmarks/redispy/differences.py`; a failure without a documented "
                  "reason says **NOT DOCUMENTED**.", "",
                  "| test | why |", "|---|---|"]
        for tid, cause in sorted(comparison.failing):
            why = reason(tid)
            text = why if why is not None else f"**NOT DOCUMENTED** (`{cause}`)"
            lines.append(f"| {tid} | {text.replace('|', chr(92) + '|')} |")
        lines.append("")
    return "\n".join(lines)

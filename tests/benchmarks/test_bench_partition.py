"""The bench's partition section (issue 15): its table from the chaos lab's results, and the
one-line skip where network namespaces cannot run. The netns runs themselves are the chaos
lab's (tests/chaos/test_netns.py); this checks what the bench makes of their output."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_partition  # noqa: E402


def test_the_table_has_each_timing_median_min_max_and_the_checks() -> None:
    section = {"skipped": "", "seconds": 60, "runs": [
        {"timing": "default", "repeat": 1, "rto_ms": [300.0, 350.0, 410.0], "linearizable": True,
         "lost": 0, "error": ""},
        {"timing": "election-ticks-25", "repeat": 1, "rto_ms": [650.0, 700.0],
         "linearizable": True, "lost": 0, "error": ""},
        {"timing": "election-ticks-25", "repeat": 2, "rto_ms": [], "linearizable": None,
         "lost": None, "error": "the cluster did not start"},
    ]}
    text = "\n".join(bench_partition.markdown(section))
    assert "| default | 3 | 350 | 300 | 410 | yes | 0 |" in text
    assert "| election-ticks-25 | 2 | 675 | 650 | 700 | yes | 0 |" in text
    assert "failed run: election-ticks-25 repeat 2: the cluster did not start" in text


def test_not_measured_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_partition.os, "geteuid", lambda: 1000)
    section = bench_partition.partition_section(SimpleNamespace(quick=True, repeats=1))
    assert section == {"skipped": "skipped: network namespaces need root", "runs": []}
    assert "Not measured: skipped: network namespaces need root." in \
        bench_partition.markdown(section)

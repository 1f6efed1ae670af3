"""The detection lab's bookkeeping (benchmarks/detection_lab.py): profiles, spurious elections
counted per group from the nodes' terms, and the stall watch's lines classified as the
machine's (the loop thread waiting for a CPU) or ours. Synthetic inputs, no processes: the lab
itself runs for minutes and is run by hand (docs/failure-detection.md)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import detection_lab  # noqa: E402


def test_profiles_with_and_without_a_spread() -> None:
    assert detection_lab.parse_profile("5/50") == (5, 50, 0)
    assert detection_lab.parse_profile("5/35+10") == (5, 35, 10)
    assert detection_lab.label_of((5, 35, 10)) == "5/35+10"
    assert detection_lab.label_of((5, 50, 0)) == "5/50"


def test_elections_are_the_terms_begun_per_group() -> None:
    before = {"n1": ({"0": 2, "1": 3, "default": 3}, 0), "n2": ({"0": 2, "1": 2, "default": 2}, 0)}
    after = {"n1": ({"0": 2, "1": 6, "default": 6}, 2), "n2": ({"0": 4, "1": 6, "default": 6}, 2)}
    assert detection_lab.elections(before, after) == {"0": 2, "1": 3}
    assert detection_lab.elections(after, after) == {"0": 0, "1": 0}


def test_stalls_are_split_into_starved_and_on_cpu() -> None:
    line = ("n1: ... stall watch: loop held {held} ms; over the last {watched} ms the loop "
            "thread was on a CPU {cpu} ms, waiting for a CPU {wait} ms, blocked 0 ms (...)")
    lines = [line.format(held=319, watched=211, cpu=37, wait=170),   # starved
             line.format(held=600, watched=500, cpu=450, wait=40),   # our code
             line.format(held=120, watched=60, cpu=5, wait=50),      # short
             "n2: ... event loop stalled: the ticker ran 300 ms late"]
    summary = detection_lab.stall_summary(lines)
    assert summary[">=250ms"] == {"stalls": 2, "starved": 1, "on_cpu": 1}
    assert summary[">=500ms"] == {"stalls": 1, "starved": 0, "on_cpu": 1}
    assert summary[">=100ms"]["stalls"] == 3
    assert summary["longest_ms"] == 600

"""Shared by the bench smoke tests: run `phalanx_bench.run_suite` on a tiny workload, then make
sure nothing it started is left (every process is stopped by pid inside `run_suite`, also on
failure; anything still naming the run's work directory is SIGKILLed by pid and fails the
test), and hand back the saved results.json and RESULTS.md."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import phalanx_bench  # noqa: E402

#: (results.json as saved, RESULTS.md's text)
Run = tuple[dict[str, Any], str]


def kill_leftovers(work_dir: str) -> list[int]:
    leftovers = phalanx_bench.rb.pids_mentioning(work_dir) if work_dir else []
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leftovers


@pytest.fixture
def run_bench(tmp_path: Path) -> Callable[[phalanx_bench.Settings], Run]:
    def run(settings: phalanx_bench.Settings) -> Run:
        document: dict[str, Any] = {}
        try:
            document = phalanx_bench.run_suite(settings, tmp_path)
        finally:
            leftovers = kill_leftovers(document.get("work_dir", ""))
        assert leftovers == [], f"processes left running: {leftovers}"
        assert document["incomplete"] == ""
        return (json.loads((tmp_path / "results.json").read_text()),
                (tmp_path / "RESULTS.md").read_text())
    return run

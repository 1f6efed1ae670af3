"""The stall watch names the code that held the event loop (issue 15, lever 8)."""

from __future__ import annotations

import time

import pytest

from phalanx.server.stall_watch import StallWatch


def _hold_the_loop(watch: StallWatch) -> None:
    """Stand for a callback that never yields: run (no beat) until the watch has seen the
    stall, bounded."""
    deadline = time.monotonic() + 20.0
    while not watch.in_stall and time.monotonic() < deadline:
        sum(range(2000))


def test_a_stall_is_reported_with_the_stack_that_held_the_loop() -> None:
    watch = StallWatch(threshold_ms=20)
    watch.start()
    try:
        watch.beat()
        _hold_the_loop(watch)
        assert watch.in_stall
        watch.beat()  # the loop runs again
        deadline = time.monotonic() + 20.0
        while watch.stalls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watch.stalls == 1
        assert watch.last is not None
        held_ms, _cpu_ms, _stack = watch.last
        assert held_ms >= 20
        # The first sample is taken before `in_stall` is set, so while the loop was held.
        assert any("_hold_the_loop" in frame for stack in watch.last_stacks for frame in stack), \
            watch.last_stacks
        assert watch.status()["stalls"] == 1
    finally:
        watch.stop()


@pytest.mark.parametrize("value", ["", "0", "fast"])
def test_off_unless_a_threshold_is_set(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PHALANX_STALL_WATCH_MS", value)
    assert StallWatch.from_env() is None


def test_on_with_a_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHALANX_STALL_WATCH_MS", "75")
    watch = StallWatch.from_env()
    assert watch is not None and watch.threshold_s == pytest.approx(0.075)

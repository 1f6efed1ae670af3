"""Deterministic simulation: regression seeds, fresh seeds, replay, and planted bugs.

Fresh seeds come from PHALANX_SIM_START (printed, so a failure can be replayed) or a random
start; PHALANX_SIM_SEEDS sets how many run (default 240).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from phalanx.sim import plan_for_seed, run_seed

REGRESSIONS = Path(__file__).with_name("regressions.txt")


def _regression_seeds() -> list[int]:
    seeds = []
    for line in REGRESSIONS.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            seeds.append(int(text))
    return seeds


FRESH_COUNT = int(os.environ.get("PHALANX_SIM_SEEDS", "240"))
FRESH_START = int(os.environ.get("PHALANX_SIM_START", str(random.SystemRandom().randrange(1 << 30))))
print(f"fresh simulation seeds: {FRESH_START}..{FRESH_START + FRESH_COUNT - 1} "
      f"(set PHALANX_SIM_START={FRESH_START} to rerun them)")


def _assert_ok(seed: int, bug: str | None = None) -> None:
    result = run_seed(seed, bug=bug)
    assert result.ok, f"{result.error}\nreplay: {result.replay_command()}\nplan: {result.plan}"


@pytest.mark.parametrize("seed", _regression_seeds())
def test_regression_seed(seed: int) -> None:
    _assert_ok(seed)


@pytest.mark.parametrize("chunk", range(8))
def test_fresh_seeds(chunk: int) -> None:
    per_chunk = (FRESH_COUNT + 7) // 8
    first = FRESH_START + chunk * per_chunk
    failures = []
    for seed in range(first, min(first + per_chunk, FRESH_START + FRESH_COUNT)):
        result = run_seed(seed)
        if not result.ok:
            failures.append(f"seed {seed}: {result.error}\n  replay: {result.replay_command()}")
    assert not failures, "\n".join(failures)


def test_a_seed_replays_exactly() -> None:
    first = run_seed(12345, trace=True)
    second = run_seed(12345, trace=True)
    assert first.ok and second.ok
    assert first.events == second.events
    assert first.stats == second.stats
    assert first.trace == second.trace


def test_digest_names_a_run() -> None:
    """`phalanx sim --digest`: a seed's digest is the same on every replay and differs between
    seeds and when the run differs (a planted bug changes what happens)."""
    first = run_seed(777, digest=True)
    assert first.digest and run_seed(777, digest=True).digest == first.digest
    assert run_seed(778, digest=True).digest != first.digest
    assert run_seed(777, digest=True, bug="tx-without-watch").digest != first.digest


def test_swarm_draws_different_plans() -> None:
    plans = {plan_for_seed(seed).describe() for seed in range(50)}
    assert len(plans) > 40


def test_faults_are_actually_injected() -> None:
    totals: dict[str, int] = {}
    for seed in range(40):
        result = run_seed(seed)
        assert result.ok, result.error
        for key, value in result.stats.items():
            totals[key] = totals.get(key, 0) + value
    for fault in ("dropped", "crashes", "partitions", "transfers", "conf_changes", "snapshots"):
        assert totals[fault] > 0, f"no {fault} in 40 seeds: {totals}"
    assert totals["elections"] > 40


@pytest.mark.parametrize(
    ("bug", "seeds"),
    [("ack-before-fsync", range(1, 400)), ("read-without-confirm", range(1, 400))],
)
def test_planted_bug_is_caught(bug: str, seeds: range) -> None:
    """The simulator must catch classic mistakes; each was caught within a few seeds."""
    for seed in seeds:
        result = run_seed(seed, bug=bug)
        if not result.ok:
            return
    pytest.fail(f"planted bug {bug!r} survived seeds {seeds.start}..{seeds.stop - 1}")

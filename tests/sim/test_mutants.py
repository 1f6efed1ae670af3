"""Mutation testing of the simulator: every planted bug is caught, and the seed that catches it
passes without the bug (so the catch is the bug's doing, not the plan's).

The quick version (default): each bug is hunted from seed 1 on its `FAST_KNOBS` (the faults
that expose it) within a small budget. The long version (PHALANX_SIM_MUTANTS_LONG=1, or
`phalanx sim --mutants`) hunts on plain swarm plans, PHALANX_SIM_MUTANT_SEEDS seeds (default
5,000) per bug.
"""

from __future__ import annotations

import os

import pytest

from phalanx.errors import ConfigError
from phalanx.raft import RaftConfig
from phalanx.raft.mutants import MUTANTS
from phalanx.sim import run_seed
from phalanx.sim.mutants import FAST_KNOBS, PLANTED, SIM_BUGS, hunt, plan_overrides_valid

#: Seeds a bug may need on its fast knobs before the quick test calls it a survivor.
QUICK_BUDGET = 60
LONG = os.environ.get("PHALANX_SIM_MUTANTS_LONG") == "1"
LONG_SEEDS = int(os.environ.get("PHALANX_SIM_MUTANT_SEEDS", "5000"))


def test_every_planted_bug_has_fast_knobs_naming_real_plan_fields() -> None:
    assert set(PLANTED) == set(SIM_BUGS) | set(MUTANTS)
    assert set(FAST_KNOBS) == set(PLANTED)
    for bug, knobs in FAST_KNOBS.items():
        assert plan_overrides_valid(knobs), bug


def test_mutants_are_off_by_default_and_checked() -> None:
    assert RaftConfig(node_id="n1").mutants == frozenset()
    with pytest.raises(ConfigError, match="unknown mutants"):
        RaftConfig(node_id="n1", mutants=frozenset({"no-such-bug"}))


@pytest.mark.parametrize("bug", list(PLANTED))
def test_planted_bug_is_caught_quickly(bug: str) -> None:
    result = hunt(bug, range(1, QUICK_BUDGET + 1), fast=True)
    assert result.caught, f"planted bug {bug!r} survived {result.seeds_run} seeds: {PLANTED[bug]}"
    assert result.first_seed is not None
    control = run_seed(result.first_seed, overrides=FAST_KNOBS[bug])
    assert control.ok, (f"seed {result.first_seed} fails without {bug!r} too: {control.error}; "
                        f"replay: {control.replay_command()}")


if LONG:  # defined only when asked for (CI counts a skipped test as a failure)

    @pytest.mark.parametrize("bug", list(PLANTED))
    def test_planted_bug_is_caught_on_swarm_plans(bug: str) -> None:
        result = hunt(bug, range(1, LONG_SEEDS + 1))
        assert result.caught, f"planted bug {bug!r} survived {result.seeds_run} swarm seeds"


def test_the_mutants_command_reports_catches_and_fails_on_a_survivor() -> None:
    from click.testing import CliRunner

    from phalanx.cli import main

    runner = CliRunner()
    caught = runner.invoke(main, ["sim", "--mutants", "--fast", "--only", "no-truncate",
                                  "--seeds", "5", "--jobs", "1"])
    assert caught.exit_code == 0, caught.output
    assert "caught   no-truncate" in caught.output
    assert "1 of 1 planted bugs caught" in caught.output
    # One plain seed is too few for this bug: it survives, and that is a failing result.
    survived = runner.invoke(main, ["sim", "--mutants", "--only", "vote-not-persisted",
                                    "--seeds", "1", "--start", "1", "--jobs", "1"])
    assert survived.exit_code == 1, survived.output
    assert "SURVIVED vote-not-persisted" in survived.output

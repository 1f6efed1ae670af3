"""Run simulation seeds and summarise them; every failure names the command that replays it.

Rules of this file:
- One seed fixes everything: `plan_for_seed(seed)` draws the fault plan (swarm testing) from
  `random.Random(f"{seed}/plan")`, and the simulator splits the seed into per-subsystem streams.
- A failure never escapes as a traceback alone: `SeedResult.error` holds the message and
  `replay_command()` the one-line command that reproduces it exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from phalanx.errors import PhalanxError, SimulationFailure
from phalanx.sim.faults import FaultPlan, swarm
from phalanx.sim.simulator import Simulator, attach_raft_log


def plan_for_seed(seed: int) -> FaultPlan:
    """The swarm-drawn fault plan of `seed`."""
    return swarm(random.Random(f"{seed}/plan"))


@dataclass(slots=True)
class SeedResult:
    """The outcome of one seed."""

    seed: int
    ok: bool
    error: str = ""
    events: int = 0
    simulated_ms: float = 0.0
    operations: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    plan: str = ""
    trace: list[str] = field(default_factory=list)
    bug: str | None = None
    #: With `run_seed(digest=True)`: a hash of everything the run produced (see `run_digest`).
    digest: str = ""

    def replay_command(self) -> str:
        """The one-line command that replays this seed with a readable trace."""
        bug = f" --bug {self.bug}" if self.bug else ""
        return f"phalanx sim --seed {self.seed}{bug} --trace"


def run_digest(result: SeedResult, simulator: Simulator) -> str:
    """A hash of a finished run: its outcome, event count, simulated time, statistics, the
    whole client history and the trace lines kept. Two versions of the simulator (or of the
    core) that give a seed the same digest ran it the same way: a change meant to keep
    behaviour (a refactoring, a speed-up) is checked by comparing digests over many seeds."""
    hasher = hashlib.sha256()
    hasher.update(repr((result.ok, result.error, simulator.event_count, simulator.now,
                        sorted(simulator.stats.items()))).encode())
    for operation in simulator.history:
        hasher.update(repr(operation).encode())
    for line in result.trace:
        hasher.update(line.encode() + b"\n")
    return hasher.hexdigest()[:16]


def run_seed(seed: int, *, trace: bool = False, bug: str | None = None,
             trace_lines: int = 400, overrides: Mapping[str, Any] | None = None,
             digest: bool = False) -> SeedResult:
    """Run one seed; with `trace`, keep the last `trace_lines` lines of the event trace.
    `bug` plants a bug (`phalanx.sim.mutants.PLANTED`); `overrides` replaces knobs of the
    seed's plan (the mutants' quick knobs); `digest` fills `SeedResult.digest`."""
    plan = plan_for_seed(seed)
    if overrides:
        plan = dataclasses.replace(plan, **overrides)
    lines: deque[str] = deque(maxlen=trace_lines)
    simulator = Simulator(seed, plan, trace=lines.append if trace else None, bug=bug)
    detach = attach_raft_log(simulator, lines.append) if trace else None
    result = SeedResult(seed=seed, ok=True, plan=plan.describe(), bug=bug)
    try:
        simulator.run()
    except SimulationFailure as failure:
        result.ok = False
        result.error = str(failure)
    except PhalanxError as error:
        # An InvariantViolation inside the core (or any other product error) is a failure too.
        result.ok = False
        result.error = f"at {simulator.now:.1f} ms: {type(error).__name__}: {error}"
    finally:
        if detach is not None:
            detach()
    result.events = simulator.event_count
    result.simulated_ms = simulator.now
    result.operations = len(simulator.history)
    result.stats = dict(simulator.stats)
    result.trace = list(lines)
    if digest:
        result.digest = run_digest(result, simulator)
    return result

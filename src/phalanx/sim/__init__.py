"""phalanx.sim: the deterministic simulator that runs the real Raft core and KV state machine.

Rules of this package: single-threaded, no asyncio, no sockets, no clocks; one seed fixes a run.
Only tests and the CLI import it.
"""

from phalanx.errors import SimulationFailure
from phalanx.sim.faults import FaultPlan, swarm
from phalanx.sim.runner import SeedResult, plan_for_seed, run_seed
from phalanx.sim.simulator import Simulator

__all__ = [
    "FaultPlan",
    "SeedResult",
    "SimulationFailure",
    "Simulator",
    "plan_for_seed",
    "run_seed",
    "swarm",
]

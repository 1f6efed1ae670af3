"""Mutation testing: plant each known bug in turn and find the first seed that catches it.

Rules of this file:
- A planted bug is either a core mutant (`phalanx.raft.mutants.MUTANTS`, switched on through
  `RaftConfig.mutants`) or one of the simulator's own (`SIM_BUGS`: the node around the core
  misbehaves). `PLANTED` lists them all, in the order `phalanx sim --mutants` runs them.
- `hunt` runs seeds of one planted bug until one fails; a bug no seed catches *survives*, and a
  survivor is a failing result. Plain seeds draw the whole swarm plan; `FAST_KNOBS` narrows the
  plan to the faults that expose one bug quickly, for the quick test in `make test`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from phalanx.raft.mutants import MUTANTS
from phalanx.sim.runner import run_seed

#: Bugs planted by the simulator around the core (model.py / workload.py), not in it.
SIM_BUGS: dict[str, str] = {
    "ack-before-fsync":
        "the disk reports a write durable at once and writes it later: acknowledgements leave "
        "before the fsync (Figure 2: respond after persisting)",
    "read-without-confirm":
        "a leader answers reads from its state without confirming it still leads (no "
        "ReadIndex round, no lease; diss. §6.4)",
    "no-checksum":
        "the faulty disk's reads are not verified: a corrupted read or a misdirected write "
        "reaches the core (TigerBeetle: every read is checked against its checksum)",
    "tx-without-watch":
        "the bank's transactional transfer runs without its WATCH: it SETs balances read from "
        "a possibly stale replica (checks the bank invariant; Redis: WATCH is the CAS of MULTI)",
}

#: Every planted bug, with what it breaks.
PLANTED: dict[str, str] = {**SIM_BUGS, **MUTANTS}

#: Plan knobs that expose each bug within a few seeds (the quick test); every other knob stays
#: as the seed's swarm drew it.
FAST_KNOBS: dict[str, dict[str, Any]] = {
    "ack-before-fsync": {"crash_weight": 3, "fsync_ms_max": 20},
    "read-without-confirm": {"leader_isolation_weight": 3, "lease_reads": False},
    "tx-without-watch": {"delay_ms_max": 40, "client_count": 5},
    "no-checksum": {"faulty_disks": 1, "disk_corrupt_read_probability": 0.02,
                    "disk_misdirect_probability": 0.2, "disk_read_error_probability": 0.0},
    "lease-no-expiry": {"lease_reads": True, "leader_isolation_weight": 4, "heal_weight": 1,
                        "clock_skew": 0.0, "clock_drift": 0.02, "drop_probability": 0.0},
    "figure8-commit": {"leader_flap_probability": 0.6, "max_message_bytes": 1,
                       "max_inflight_messages": 1, "old_tail_cut_probability": 0.8},
    "apply-before-commit": {"leader_flap_probability": 0.6, "crash_weight": 2},
    "stale-read-index": {"delay_ms_max": 40, "lease_reads": False},
    "read-before-term-commit": {"leader_flap_probability": 0.3, "transfer_weight": 2,
                                "crash_weight": 2},
    "stale-snapshot": {"snapshot_every_entries": 5, "duplicate_probability": 0.1,
                       "delay_ms_max": 80},
    "vote-not-persisted": {"vote_crash_probability": 0.3, "fsync_ms_max": 20},
    "prevote-as-vote": {"partition_weight": 2, "crash_weight": 2},
    "vote-ignores-log": {"leader_flap_probability": 0.6, "crash_weight": 2},
    "stale-term-append": {"clog_weight": 3, "heal_weight": 1, "leader_isolation_weight": 2,
                          "delay_ms_max": 40},
    "no-truncate": {"leader_flap_probability": 0.6, "max_message_bytes": 1, "crash_weight": 2},
    "probe-from-start": {"crash_weight": 2},
    "prevote-after-restart": {"crash_weight": 3, "partition_weight": 2},
}


@dataclass(slots=True)
class HuntResult:
    """How one planted bug fared: the first seed that caught it (None: it survived)."""

    bug: str
    first_seed: int | None
    seeds_run: int
    seconds: float
    error: str = ""

    @property
    def caught(self) -> bool:
        """True if some seed caught the bug."""
        return self.first_seed is not None


def hunt(bug: str, seeds: Iterable[int], *, fast: bool = False,
         progress: Callable[[int], None] | None = None) -> HuntResult:
    """Run `seeds` with `bug` planted until one fails; with `fast`, on the bug's FAST_KNOBS."""
    if bug not in PLANTED:
        raise ValueError(f"unknown planted bug {bug!r}; known: {sorted(PLANTED)}")
    knobs = FAST_KNOBS.get(bug, {}) if fast else {}
    began = time.monotonic()
    run = 0
    for seed in seeds:
        run += 1
        result = run_seed(seed, bug=bug, overrides=knobs)
        if progress is not None:
            progress(seed)
        if not result.ok:
            return HuntResult(bug, seed, run, time.monotonic() - began,
                              result.error.splitlines()[0] if result.error else "")
    return HuntResult(bug, None, run, time.monotonic() - began)


def plan_overrides_valid(knobs: dict[str, Any]) -> bool:
    """True if every knob names a FaultPlan field (guards FAST_KNOBS against typos)."""
    from phalanx.sim.faults import FaultPlan

    names = {f.name for f in dataclasses.fields(FaultPlan)}
    return set(knobs) <= names


__all__ = ["FAST_KNOBS", "PLANTED", "SIM_BUGS", "HuntResult", "hunt", "plan_overrides_valid"]

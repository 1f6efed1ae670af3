"""The simulated disk fails and lies (read errors, corrupted reads, misdirected writes, as
TigerBeetle's storage simulator): every bad read is caught by its checksum, the node stops
before using it, and the cluster keeps every acknowledged write."""

from __future__ import annotations

import random

import pytest

from phalanx.raft import Entry, Index, Term
from phalanx.sim import run_seed
from phalanx.sim.disk import DiskFault, SimDisk

DISK_FAULTS = {"faulty_disks": 1, "disk_read_error_probability": 0.005,
               "disk_corrupt_read_probability": 0.005, "disk_misdirect_probability": 0.1}


def _entries(first: int, count: int, term: int = 1) -> list[Entry]:
    return [Entry(term=Term(term), index=Index(i), data=b"value-%d" % i)
            for i in range(first, first + count)]


def _disk(*, read_error: float = 0.0, corrupt_read: float = 0.0,
          misdirect: float = 0.0) -> SimDisk:
    disk = SimDisk("n1")
    disk.fail(random.Random(7), read_error=read_error, corrupt_read=corrupt_read,
              misdirect=misdirect)
    return disk


def test_a_healthy_disk_returns_what_was_written() -> None:
    disk = _disk()
    disk.append(_entries(1, 5))
    assert disk.entries(Index(1), Index(6)) == _entries(1, 5)


def test_a_read_error_is_raised() -> None:
    disk = _disk(read_error=1.0)
    disk.append(_entries(1, 3))
    with pytest.raises(DiskFault, match="EIO"):
        disk.entries(Index(1), Index(4))
    assert disk.stats["read-errors"] == 1


def test_a_corrupted_read_fails_its_checksum() -> None:
    disk = _disk(corrupt_read=1.0)
    disk.append(_entries(1, 3))
    with pytest.raises(DiskFault, match="checksum"):
        disk.entries(Index(1), Index(4))
    # The fault was on the read path: the record on disk is intact.
    disk.corrupt_read_probability = 0.0
    assert disk.entries(Index(1), Index(4)) == _entries(1, 3)


def test_a_misdirected_write_damages_both_slots_for_good() -> None:
    disk = _disk(misdirect=1.0)
    disk.append(_entries(1, 2))
    assert disk.stats["misdirected-writes"] == 1
    disk.misdirect_probability = 0.0
    for index in (1, 2):
        with pytest.raises(DiskFault, match=f"entry {index} fails its checksum"):
            disk.entries(Index(index), Index(index + 1))
    # Rewriting the slots (a leader overwriting the suffix, §5.3) repairs them.
    disk.append(_entries(1, 2, term=2))
    assert disk.entries(Index(1), Index(3)) == _entries(1, 2, term=2)


def test_without_checksums_a_misdirected_write_serves_the_wrong_record() -> None:
    """What the checksums prevent: unverified, slot 2 answers with entry 1's data (or the
    other way round), which the core would apply or replicate as entry 2."""
    disk = _disk(misdirect=1.0)
    disk.verify = False
    disk.append(_entries(1, 2))
    read = disk.entries(Index(1), Index(3))
    assert read != _entries(1, 2)


def test_simulated_disk_faults_stop_the_node_and_lose_nothing() -> None:
    """Seeds with a faulty disk: faults are injected and detected (nodes stop), and every
    check (durability, linearizability, the bank, replicas agree) still passes."""
    stops = 0
    for seed in range(1, 17):
        result = run_seed(seed, overrides=DISK_FAULTS)
        assert result.ok, f"{result.error}\nreplay with overrides {DISK_FAULTS}: seed {seed}"
        stops += result.stats["disk_stops"]
    assert stops > 0, "no simulated node ever hit a disk fault"


def test_the_swarm_draws_faulty_disks() -> None:
    from phalanx.sim import plan_for_seed

    plans = [plan_for_seed(seed) for seed in range(200)]
    assert 20 < sum(plan.faulty_disks for plan in plans) < 100
    assert all(plan.faulty_disks <= 1 for plan in plans)


def test_lease_plans_keep_clock_drift_within_the_lease_bound() -> None:
    """Leases assume bounded drift (diss. §6.4.1): the swarm never draws more for a lease plan,
    and the simulator refuses a plan that does (a stale lease read would be the plan's fault)."""
    import dataclasses

    from phalanx.errors import InvariantViolation
    from phalanx.sim import Simulator, plan_for_seed
    from phalanx.sim.faults import LEASE_SAFE_DRIFT

    plans = [plan_for_seed(seed) for seed in range(300)]
    lease_plans = [plan for plan in plans if plan.lease_reads]
    assert lease_plans and all(plan.lease_drift_ok() for plan in lease_plans)
    assert any(plan.clock_drift for plan in lease_plans)
    assert all(plan.leader_isolation_weight for plan in lease_plans)
    too_far = dataclasses.replace(lease_plans[0], clock_skew=LEASE_SAFE_DRIFT, clock_drift=0.02)
    with pytest.raises(InvariantViolation, match="drifts clocks"):
        Simulator(1, too_far)

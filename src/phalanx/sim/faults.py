"""Faults as data: the knobs of one simulation run, fixed or drawn from the seed (swarm testing).

Rules of this file:
- A `FaultPlan` is a frozen dataclass of probabilities and bounds; nothing here acts.
- `swarm(rng)` draws every knob from one `random.Random`, so a seed fixes the whole fault mix
  (TigerBeetle's `options_swarm`, FoundationDB's swarm testing).
- Faults stay inside the model Raft tolerates: messages may be lost, delayed, duplicated and
  reordered; nodes crash and lose what they had not fsynced; the network partitions. No disk
  ever loses fsynced data.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

#: The most any node's clock rate may deviate (skew plus drift) in a plan with lease reads.
#: The simulated replicas use election_ticks=20 and lease_margin_ticks=2: a leader's lease
#: ends 18 of its ticks after it sent the heartbeat a quorum acknowledged, and a follower
#: votes no sooner than 20 of its ticks after it received that heartbeat. That is safe while
#: 18 * slow_period <= 20 * fast_period, i.e. (1 + b) / (1 - b) <= 20 / 18, b <= 2 / 38 = 0.0526
#: (diss. §6.4.1: leases assume bounded clock drift; the margin is that bound).
LEASE_SAFE_DRIFT = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultPlan:
    """The fault mix and shape of one run. Times are in simulated milliseconds."""

    #: Number of nodes in the pool (voters start as the first `initial_voters`).
    node_count: int = 5
    initial_voters: int = 5
    #: Probability that a message is lost.
    drop_probability: float = 0.0
    #: Probability that a message is delivered twice.
    duplicate_probability: float = 0.0
    #: One-way delay bounds; a wide range reorders messages.
    delay_ms_min: int = 1
    delay_ms_max: int = 10
    #: Per-node fsync latency bounds (a crash inside it loses the write).
    fsync_ms_min: int = 0
    fsync_ms_max: int = 3
    #: Mean time between nemesis actions, and the actions' weights.
    nemesis_interval_ms: int = 400
    partition_weight: int = 0
    asymmetric_partition_weight: int = 0
    clog_weight: int = 0
    crash_weight: int = 0
    heal_weight: int = 2
    transfer_weight: int = 0
    membership_weight: int = 0
    #: Probability that a newly elected leader is crashed or isolated within a few ms of winning
    #: (leader flapping: many terms with uncommitted tails, the histories of Figure 8).
    leader_flap_probability: float = 0.0
    #: Probability that a leader is cut off from every peer the moment a follower acknowledges
    #: an entry of an earlier term that the leader has not committed yet (the moment of Figure
    #: 8 (c): the old entry sits on a majority, the leader's own entry on none).
    old_tail_cut_probability: float = 0.0
    #: A partitioned link holds its messages (as TCP buffers and retransmits) and delivers them
    #: once the partition heals, instead of losing them: stale messages from deposed leaders
    #: and old terms arrive late, in a burst.
    partition_buffering: bool = False
    #: Weight of the nemesis that cuts the current leader off from every peer while clients
    #: keep reading from it (and write through the others): a deposed leader must stop serving.
    leader_isolation_weight: int = 0
    #: Probability that a node which just voted crashes before (or while) its vote is fsynced:
    #: targets the window in which a vote must not be visible yet.
    vote_crash_probability: float = 0.0
    #: Torn writes: a crash during fsync keeps a random prefix of the batch's entries.
    torn_writes: bool = True
    #: Per-node clock rate skew bound (a node's tick period is 10 ms * (1 +/- skew)).
    clock_skew: float = 0.0
    #: Real clock drift: each node's rate also wanders within +/- this bound during the run
    #: (model.py `_wander`). With lease reads, skew + drift stays within `LEASE_SAFE_DRIFT`.
    clock_drift: float = 0.0
    #: Disks that fail or lie (disk.py): how many nodes get one (at most a minority: 0 or 1),
    #: and per-operation probabilities of a read error (EIO), a corrupted read and a
    #: misdirected write (per batch of entries).
    faulty_disks: int = 0
    disk_read_error_probability: float = 0.0
    disk_corrupt_read_probability: float = 0.0
    disk_misdirect_probability: float = 0.0
    #: Snapshot after this many applied entries (0 = never).
    snapshot_every_entries: int = 0
    #: Client workload.
    client_count: int = 3
    key_count: int = 3
    #: The most bytes of entries per AppendEntries (1 = one entry per message, which separates
    #: an old-term entry from the new leader's no-op, as in Figure 8 of the paper).
    max_message_bytes: int = 4096
    #: Most AppendEntries in flight per follower (1 = stop-and-wait replication).
    max_inflight_messages: int = 8
    #: Serve reads through the leader lease instead of a heartbeat round.
    lease_reads: bool = False
    #: Asynchronous storage writes: the node keeps processing Readys (sending, applying) while
    #: earlier writes are in flight, and sends acknowledgements when they complete.
    async_writes: bool = False
    #: Durations of the safety phase and the bound for the liveness phase.
    safety_ms: int = 4000
    liveness_ms_max: int = 4000

    def lease_drift_ok(self) -> bool:
        """False if the plan drifts clocks further than lease reads assume (then a stale
        lease read is the plan's fault, not the code's)."""
        return not self.lease_reads or self.clock_skew + self.clock_drift <= LEASE_SAFE_DRIFT + 1e-9

    def describe(self) -> str:
        """One line listing every knob."""
        return " ".join(f"{key}={value}" for key, value in asdict(self).items())


def swarm(rng: random.Random) -> FaultPlan:
    """Draw a fault plan from `rng`: each fault class is on or off, with random strength."""

    def maybe(probability_on: float, low: float, high: float) -> float:
        return round(rng.uniform(low, high), 3) if rng.random() < probability_on else 0.0

    node_count = rng.choice([3, 3, 5, 5, 5])
    delay_max = rng.choice([5, 10, 20, 40, 80])
    plan = FaultPlan(
        node_count=node_count,
        initial_voters=node_count if rng.random() < 0.7 else 3,
        drop_probability=maybe(0.6, 0.01, 0.25),
        duplicate_probability=maybe(0.4, 0.01, 0.1),
        delay_ms_min=1,
        delay_ms_max=delay_max,
        fsync_ms_min=0,
        fsync_ms_max=rng.choice([0, 2, 5, 20]),
        nemesis_interval_ms=rng.choice([150, 300, 600]),
        partition_weight=rng.choice([0, 1, 2]),
        asymmetric_partition_weight=rng.choice([0, 1]),
        clog_weight=rng.choice([0, 1, 2]),
        crash_weight=rng.choice([0, 1, 2, 3]),
        heal_weight=rng.choice([1, 2, 3]),
        transfer_weight=rng.choice([0, 1]),
        membership_weight=rng.choice([0, 0, 1, 2]),
        leader_flap_probability=rng.choice([0.0, 0.0, 0.3, 0.6]),
        vote_crash_probability=rng.choice([0.0, 0.0, 0.1, 0.3]),
        torn_writes=rng.random() < 0.5,
        clock_skew=rng.choice([0.0, 0.0, 0.02, 0.1]),
        snapshot_every_entries=rng.choice([0, 5, 20, 60]),
        client_count=rng.choice([2, 3, 5]),
        key_count=rng.choice([1, 2, 4]),
        max_message_bytes=rng.choice([1, 1, 100, 4096]),
        max_inflight_messages=rng.choice([1, 2, 8]),
        lease_reads=rng.random() < 0.3,
        safety_ms=4000,
        liveness_ms_max=6000,
        # Drawn last, so the plans of earlier seeds keep every other knob they had.
        async_writes=rng.random() < 0.5,
    )
    # Session 6 knobs, drawn after the older ones (which keep their values).
    isolation = rng.choice([0, 0, 1, 2])
    drift = rng.choice([0.0, 0.01, 0.02, 0.04])
    old_tail_cut = rng.choice([0.0, 0.0, 0.3, 0.8])
    faulty_disks = 1 if rng.random() < 0.25 else 0
    disk_faults = [round(rng.uniform(0.0, high), 4) for high in (0.01, 0.01, 0.1)]
    buffering = rng.random() < 0.5
    skew = plan.clock_skew
    if plan.lease_reads:
        # Leases are safe only within the drift bound they assume: clamp, and favour the
        # nemesis that deposes a leader while clients read from it.
        skew = min(skew, round(LEASE_SAFE_DRIFT - drift, 3))
        isolation = max(isolation, 1)
    return replace(plan, leader_isolation_weight=isolation, clock_drift=drift, clock_skew=skew,
                   old_tail_cut_probability=old_tail_cut, faulty_disks=faulty_disks,
                   disk_read_error_probability=disk_faults[0],
                   disk_corrupt_read_probability=disk_faults[1],
                   disk_misdirect_probability=disk_faults[2], partition_buffering=buffering)

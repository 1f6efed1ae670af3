"""Configuration of one Raft replica, validated when built.

Rules of this file:
- Every field is documented; relations between fields are checked in `__post_init__` and the
  error names the rule that was broken ("election_ticks must be > heartbeat_ticks").
- Time is counted in ticks; the node runtime decides how long a tick is (default 50 ms... see
  `phalanx.server`). Randomness arrives as an injected `random.Random`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from phalanx.errors import ConfigError
from phalanx.raft.mutants import check_mutants
from phalanx.raft.types import NodeId

if TYPE_CHECKING:
    import random


def _fixed_random() -> random.Random:
    # Imported here so the module never binds the global `random` module (a layer rule):
    # production callers pass their own generator; this default is deterministic.
    import random as random_module

    return random_module.Random(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftConfig:
    """How one replica behaves. Defaults suit a 10 ms tick: 50 ms heartbeats, 0.5-1 s elections."""

    #: This replica's identity.
    node_id: NodeId
    #: Minimum election timeout in ticks; the real timeout is drawn from
    #: [election_ticks, election_ticks + spread) at every reset (§5.2), the spread being
    #: `election_spread_ticks`, or election_ticks when that is 0 (Raft's [T, 2T)).
    election_ticks: int = 50
    #: The width of the random range the election timeout is drawn from (0: election_ticks).
    #: A narrower range notices a silent leader sooner for the same minimum timeout (the first
    #: of the followers times out, on average, closer to the minimum); it must stay well above
    #: the broadcast time so that split votes stay rare (diss. §9.3: with 5 ms of randomness
    #: most elections already completed without a split vote; more randomness mainly
    #: improved the worst case); at least `heartbeat_ticks`. The minimum, which leases and
    #: CheckQuorum rely on (§6.2, §6.4.1), does not move.
    election_spread_ticks: int = 0
    #: A leader sends heartbeats every `heartbeat_ticks` (must be < election_ticks).
    heartbeat_ticks: int = 5
    #: PreVote (dissertation §9.6): a would-be candidate first asks whether it could win, so a
    #: rejoining node cannot bump the term and depose a healthy leader.
    pre_vote: bool = True
    #: CheckQuorum (dissertation §6.2, §9.6): a leader that has not heard from a quorum within an
    #: election timeout steps down; followers that recently heard from a leader ignore votes.
    check_quorum: bool = True
    #: Serve linearizable reads from a leader lease instead of a heartbeat round
    #: (dissertation §6.4.1). Needs check_quorum. Assumes bounded clock drift.
    lease_reads: bool = False
    #: How many ticks shorter than election_ticks the lease is, to absorb clock drift.
    lease_margin_ticks: int = 2
    #: A follower whose leader's messages came irregularly of late waits up to one more
    #: election_ticks before it campaigns (`Raft.election_timeout_now`; issue 15 lever 8).
    #: Off by default (the simulator's schedules and mutation tests assume the plain §5.2
    #: timer); a node sets it from `NodeConfig.adaptive_election_timeout`.
    adaptive_election_timeout: bool = False
    #: The most bytes of entries one AppendEntries carries (at least one entry is always sent).
    max_message_bytes: int = 1 << 20
    #: The most AppendEntries in flight to one follower in REPLICATE state.
    max_inflight_messages: int = 256
    #: The most bytes of committed entries handed to the application in one Ready.
    max_applying_bytes: int = 16 << 20
    #: The most read requests that may wait for a leadership confirmation.
    max_pending_reads: int = 100_000
    #: The most ReadIndex heartbeat rounds in flight at once (diss. §6.4; read_only.py). Reads
    #: arriving while this many are unconfirmed wait and share the next round. 1 (etcd's one at
    #: a time) costs the fewest rounds per read; 2 lets reads answered by one round that come
    #: straight back skip the wait behind the round in flight for the others: up to 1.33x the
    #: reads per unit of network delay, for 1.5-2x the heartbeats per read
    #: (benchmarks/bench_read_rounds.py). Worth it only where the network, not CPU, limits.
    read_rounds_in_flight: int = 1
    #: The applied index the application restored on restart (its state machine's position).
    applied: int = 0
    #: How this replica names itself in its log lines, e.g. "n2 [shard 1]" (the runtime puts
    #: the group in it, since one node runs many groups); empty: `node_id`.
    log_name: str = ""
    #: The source of all randomness of this replica (election jitter).
    random: random.Random = field(default_factory=_fixed_random)
    #: Planted bugs (`phalanx.raft.mutants.MUTANTS`) for mutation testing of the simulator;
    #: empty (no bug) everywhere but `phalanx sim --mutants` and its tests.
    mutants: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.node_id:
            raise ConfigError("node_id must not be empty")
        if self.heartbeat_ticks <= 0:
            raise ConfigError("heartbeat_ticks must be > 0")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError("election_ticks must be > heartbeat_ticks")
        if self.election_spread_ticks and self.election_spread_ticks < self.heartbeat_ticks:
            raise ConfigError("election_spread_ticks must be 0 (election_ticks) or >= "
                              "heartbeat_ticks")
        if self.lease_reads and not self.check_quorum:
            raise ConfigError("lease_reads needs check_quorum (a lease is only safe if a "
                              "leader that loses its quorum steps down)")
        if self.lease_margin_ticks < 0 or self.lease_margin_ticks >= self.election_ticks:
            raise ConfigError("lease_margin_ticks must be in [0, election_ticks)")
        if self.max_message_bytes <= 0:
            raise ConfigError("max_message_bytes must be > 0")
        if self.max_inflight_messages <= 0:
            raise ConfigError("max_inflight_messages must be > 0")
        if self.max_applying_bytes <= 0:
            raise ConfigError("max_applying_bytes must be > 0")
        if self.applied < 0:
            raise ConfigError("applied must be >= 0")
        if self.read_rounds_in_flight < 1:
            raise ConfigError("read_rounds_in_flight must be >= 1")
        problem = check_mutants(self.mutants)
        if problem is not None:
            raise ConfigError(problem)

"""The election timeout's random range (§5.2, diss. §9.3): [T, 2T) by default, [T, T + spread)
with `election_spread_ticks`. The minimum T never moves: a follower still refuses votes for T
ticks after hearing its leader (diss. §4.2.3), which leases and CheckQuorum rely on (issue 15,
lever 8: a narrower range notices a silent leader sooner without lowering that minimum)."""

from __future__ import annotations

from tests.raft.test_adaptive_timeout import ticks_until_campaign

from phalanx.raft import Heartbeat, NodeId, RawNode, RequestVote
from phalanx.raft.types import Index, Term
from phalanx.testing.raft_harness import make_node

ELECTION = 20
HEARTBEAT = 2


def follower(seed: int, spread: int) -> RawNode:
    raw, _storage = make_node("n2", ["n1", "n2", "n3"], seed=seed, election_ticks=ELECTION,
                              heartbeat_ticks=HEARTBEAT, election_spread_ticks=spread)
    raw.step(Heartbeat(source=NodeId("n1"), target=NodeId("n2"), term=Term(1),
                       commit=Index(0), round=0))
    return raw


def test_default_range_is_t_to_2t() -> None:
    waits = {ticks_until_campaign(follower(seed, spread=0)) for seed in range(200)}
    assert min(waits) >= ELECTION and max(waits) < 2 * ELECTION
    assert max(waits) >= ELECTION + ELECTION // 2  # the whole range is used


def test_a_narrow_spread_draws_from_t_to_t_plus_spread() -> None:
    spread = 4
    waits = {ticks_until_campaign(follower(seed, spread=spread)) for seed in range(200)}
    assert waits == set(range(ELECTION, ELECTION + spread))


def test_the_minimum_still_guards_votes() -> None:
    """diss. §4.2.3: within the minimum election timeout of hearing its leader a follower
    ignores a vote request (PreVote or real) from a higher term, whatever the spread."""
    raw = follower(seed=1, spread=HEARTBEAT)
    for _ in range(ELECTION - 1):
        raw.tick()
    raw.step(RequestVote(source=NodeId("n3"), target=NodeId("n2"), term=Term(2),
                         last_log_index=Index(5), last_log_term=Term(1), pre_vote=False))
    assert raw.raft.term == 1 and raw.raft.vote != NodeId("n3")

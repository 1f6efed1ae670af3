"""Adaptive election timeout (issue 15, lever 8): a follower whose leader's messages came
irregularly of late waits longer before it campaigns; one whose leader is regular keeps the
short randomised timeout (§5.2), and a reset connection still campaigns at once.

A leader whose event loop is busy (a bulk load, a big apply) sends its heartbeats late; with a
short election timeout its followers then deposed it although it was serving them. The
allowance is what a follower learned from the gaps it saw, never more than one minimum
election timeout, and waiting longer is always safe (only liveness)."""

from __future__ import annotations

from phalanx.raft import Heartbeat, NodeId, RawNode, Role
from phalanx.raft.types import Index, Term
from phalanx.testing.raft_harness import make_node

ELECTION = 20
HEARTBEAT = 2


def follower(seed: int = 0, adaptive: bool = True) -> RawNode:
    raw, _storage = make_node("n2", ["n1", "n2", "n3"], seed=seed, election_ticks=ELECTION,
                              heartbeat_ticks=HEARTBEAT, adaptive_election_timeout=adaptive)
    return raw


def heartbeat(raw: RawNode, term: int = 1) -> None:
    raw.step(Heartbeat(source=NodeId("n1"), target=NodeId("n2"), term=Term(term),
                       commit=Index(0), round=0))


def ticks_until_campaign(raw: RawNode) -> int:
    for tick in range(1, 10 * ELECTION):
        raw.tick()
        if raw.raft.role is not Role.FOLLOWER:
            return tick
    raise AssertionError("never campaigned")


def test_a_regular_leader_keeps_the_short_timeout() -> None:
    for seed in range(10):
        raw = follower(seed)
        for _ in range(30):
            heartbeat(raw)
            for _ in range(HEARTBEAT):
                raw.tick()
        assert raw.raft.election_timeout_now() == raw.raft.randomized_election_timeout
        assert ELECTION <= ticks_until_campaign(raw) < 2 * ELECTION


def test_an_irregular_leader_gets_up_to_one_more_election_timeout() -> None:
    for seed in range(10):
        raw = follower(seed)
        heartbeat(raw)
        for _ in range(3):  # the leader's messages came 15 ticks apart
            raw.tick()
            for _ in range(14):
                raw.tick()
            heartbeat(raw)
        assert raw.raft.leader_gap_ticks == 15
        waited = ticks_until_campaign(raw)
        allowance = min(ELECTION, 3 * 15 - ELECTION)
        assert waited == raw.raft.randomized_election_timeout + allowance
        assert waited < 3 * ELECTION  # never more than one extra minimum timeout


def test_the_allowance_fades_once_the_leader_is_regular_again() -> None:
    raw = follower()
    heartbeat(raw)
    for _ in range(ELECTION - 2):  # one gap just under the minimum timeout
        raw.tick()
    heartbeat(raw)
    assert raw.raft.leader_gap_ticks == ELECTION - 2
    for _ in range(100):  # regular heartbeats again
        for _ in range(HEARTBEAT):
            raw.tick()
        heartbeat(raw)
    assert raw.raft.leader_gap_ticks == HEARTBEAT
    assert raw.raft.election_timeout_now() == raw.raft.randomized_election_timeout


def test_a_reset_connection_still_campaigns_at_once() -> None:
    raw = follower()
    heartbeat(raw)
    for _ in range(ELECTION - 2):
        raw.tick()
    heartbeat(raw)
    assert raw.raft.election_timeout_now() > raw.raft.randomized_election_timeout
    assert raw.leader_lost(NodeId("n1"), 2)
    assert ticks_until_campaign(raw) <= 2


def test_off_the_timer_is_the_plain_randomised_one() -> None:
    """The core's default (the simulator's): no allowance, whatever the gaps."""
    raw = follower(adaptive=False)
    heartbeat(raw)
    for _ in range(ELECTION - 2):
        raw.tick()
    heartbeat(raw)
    assert raw.raft.leader_gap_ticks == ELECTION - 2
    assert raw.raft.election_timeout_now() == raw.raft.randomized_election_timeout

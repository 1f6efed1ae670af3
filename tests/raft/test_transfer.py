"""Leadership transfer (diss. §3.10)."""

from __future__ import annotations

import pytest

from phalanx.errors import ConfigError, NotLeader, ProposalDropped
from phalanx.raft import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    RequestVote,
    Role,
    TimeoutNow,
)
from phalanx.testing.raft_harness import DEFAULT_ELECTION_TICKS, Network

ELECTION = DEFAULT_ELECTION_TICKS


def steady() -> Network:
    net = Network.create(3)
    net.elect("n1")
    net.tick_all(1)
    net.delivered.clear()
    return net


def test_transfer_to_up_to_date_follower_uses_timeout_now() -> None:
    """diss. §3.10: the leader "sends it a TimeoutNow request", and the target starts an election
    at once, skipping PreVote and overriding the other followers' leases."""
    net = steady()
    assert net.nodes["n3"].raft.lead == "n1"  # n3 is in n1's lease, yet it will vote
    net.nodes["n1"].transfer_leader("n2")
    net.stabilize()  # no ticks: the transfer needs no election timeout
    assert net.leaders() == ["n2"]
    assert net.nodes["n2"].raft.term == 2
    assert [type(m) for m in net.delivered if isinstance(m, TimeoutNow)] == [TimeoutNow]
    votes = [m for m in net.delivered if isinstance(m, RequestVote)]
    assert votes and all(m.leadership_transfer and not m.pre_vote for m in votes)


def test_transfer_to_lagging_follower_catches_it_up_first() -> None:
    """diss. §3.10 step 2: "The prior leader transfers its log entries to the target server"
    before it sends TimeoutNow, so the target can win the election."""
    net = steady()
    net.isolate("n3")
    for number in range(5):
        net.propose("n1", b"%d" % number)
    net.recover()
    net.delivered.clear()
    last = net.nodes["n1"].raft.log.last_index()
    net.nodes["n1"].transfer_leader("n3")
    net.stabilize()
    assert net.leaders() == ["n3"]
    timeout_at = next(i for i, m in enumerate(net.delivered) if isinstance(m, TimeoutNow))
    caught_up_at = next(
        i for i, m in enumerate(net.delivered)
        if isinstance(m, AppendEntriesResponse) and m.source == "n3" and m.success
        and m.index == last
    )
    assert caught_up_at < timeout_at
    assert net.applied["n3"][:5] == [b"%d" % n for n in range(5)]


def test_proposals_are_dropped_during_transfer() -> None:
    """diss. §3.10 step 1: "The prior leader stops accepting new client requests" while it hands
    over; proposals fail fast with `ProposalDropped` so clients retry at the new leader."""
    net = steady()
    net.isolate("n3")  # the transfer cannot complete
    net.nodes["n1"].transfer_leader("n3")
    net.stabilize()
    with pytest.raises(ProposalDropped, match="n3"):
        net.nodes["n1"].propose(b"x")
    change = ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_LEARNER, "n4"),))
    with pytest.raises(ProposalDropped):
        net.nodes["n1"].propose_conf_change(change)


def test_transfer_aborted_after_an_election_timeout() -> None:
    """diss. §3.10: "If the transfer does not complete within ... an election timeout, the prior
    leader aborts the transfer and resumes accepting client requests"."""
    net = steady()
    net.isolate("n3")
    net.nodes["n1"].transfer_leader("n3")
    net.tick_all(ELECTION - 1, nodes=["n1", "n2"])
    assert net.nodes["n1"].raft.lead_transferee == "n3"
    net.tick_all(1, nodes=["n1", "n2"])
    assert net.nodes["n1"].raft.lead_transferee == ""
    assert net.leaders() == ["n1"]
    index, _ = net.propose("n1", b"resumed")
    assert net.nodes["n2"].raft.log.committed >= index


def test_transfer_needs_a_leader_and_a_voter_target() -> None:
    """diss. §3.10: only the leader transfers, and only to a voter (a learner cannot lead,
    diss. §4.2.1); transferring to itself does nothing."""
    net = Network.create(3, learners=["n4"])
    net.elect("n1")
    with pytest.raises(NotLeader):
        net.nodes["n2"].transfer_leader("n3")
    with pytest.raises(ConfigError, match="not a voter"):
        net.nodes["n1"].transfer_leader("n4")
    with pytest.raises(ConfigError, match="not a voter"):
        net.nodes["n1"].transfer_leader("n9")
    net.nodes["n1"].transfer_leader("n1")
    assert net.nodes["n1"].raft.lead_transferee == ""
    net.stabilize()
    assert net.leaders() == ["n1"]


def test_lost_timeout_now_leaves_the_leader_in_place() -> None:
    """diss. §3.10 with §9.6: if TimeoutNow is lost the transfer times out and the leader keeps
    leading; the target does not campaign on its own while it hears heartbeats."""
    net = steady()
    net.msg_hook = lambda m: not isinstance(m, TimeoutNow)
    net.nodes["n1"].transfer_leader("n2")
    net.tick_all(2 * ELECTION)
    assert net.leaders() == ["n1"]
    assert net.nodes["n1"].raft.role is Role.LEADER
    assert not any(isinstance(m, AppendEntries) and m.source == "n2" for m in net.delivered)

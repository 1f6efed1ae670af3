"""Missed ticks (`RawNode.tick(missed=True)`): the late ticks a stalled process delivers in a
burst count time but decide nothing (issue 15, lever 8).

The runtime's ticker follows the wall clock: after its own process was stalled (GC, CPU
starvation on a loaded host, SIGSTOP) it delivers every tick it missed, before it has read what
its peers sent meanwhile. With a short election timeout, a machine-wide stall of a few hundred
milliseconds then made followers campaign over a silence they caused by not running, and
elect a new leader while the old one was healthy. These tests pin the rule (`Raft.tick`) and
show the bug it prevents (the same burst delivered as live ticks elects a new leader).
"""

from __future__ import annotations

from phalanx.raft import Heartbeat, Role
from phalanx.testing.raft_harness import Network

ELECTION = 10
HEARTBEAT = 2


def steady(**overrides: object) -> Network:
    net = Network.create(3, election_ticks=ELECTION, heartbeat_ticks=HEARTBEAT, **overrides)
    if overrides.get("lease_reads"):
        for node in net.nodes:
            net.tick(node, ELECTION)  # past the fresh-replica vote refusal
        net.queue.clear()
    net.elect("n1")
    net.tick_all(ELECTION)  # heartbeats answered: a steady state
    return net


def stall_everyone(net: Network, ticks: int, *, missed: bool) -> None:
    """Every process stalled for `ticks` ticks, then delivers them in one burst each (before
    reading anything: nothing is delivered meanwhile), then reads its messages."""
    for raw in net.nodes.values():
        for _ in range(ticks):
            raw.tick(missed=missed)
    net.stabilize()


def test_a_machine_wide_stall_delivered_as_live_ticks_deposes_a_healthy_leader() -> None:
    """The bug: every replica stalled for 3 election timeouts; the late ticks, taken as live,
    make the followers campaign (and win) before they read the leader's heartbeats."""
    net = steady()
    stall_everyone(net, 3 * ELECTION, missed=False)
    net.tick_all(2 * ELECTION)
    assert net.nodes["n1"].raft.term > 1 or net.leader() != "n1"


def test_a_machine_wide_stall_delivered_as_missed_ticks_keeps_the_leader() -> None:
    net = steady()
    stall_everyone(net, 3 * ELECTION, missed=True)
    net.tick_all(4 * ELECTION)  # live again: heartbeats flow before any timer expires
    assert net.leader() == "n1"
    assert {raw.raft.term for raw in net.nodes.values()} == {1}
    assert all(raw.raft.role is Role.FOLLOWER for n, raw in net.nodes.items() if n != "n1")


def test_missed_ticks_never_start_an_election_but_a_dead_leader_is_still_noticed() -> None:
    net = steady()
    net.isolate("n1")  # the leader is really gone
    follower = net.nodes["n2"].raft
    for _ in range(5 * ELECTION):
        net.nodes["n2"].tick(missed=True)
    net.process_all()
    assert follower.role is Role.FOLLOWER and follower.lead == "n1"
    # Stopped two heartbeat intervals short of its timeout: that much live time decides.
    assert follower.election_elapsed == follower.election_timeout_now() - 2 * HEARTBEAT
    live = 0
    while follower.role is Role.FOLLOWER:
        net.tick("n2")
        live += 1
        assert live <= 2 * HEARTBEAT
    assert live == 2 * HEARTBEAT


def test_a_leader_neither_heartbeats_nor_steps_down_on_missed_ticks() -> None:
    net = steady()
    leader = net.nodes["n1"]
    for _ in range(3 * ELECTION):  # longer than CheckQuorum's two windows
        leader.tick(missed=True)
    assert not [m for m in net.take() if isinstance(m, Heartbeat)]
    assert leader.raft.role is Role.LEADER
    # The first live tick decides: the followers answered before the stall, so it stays, and it
    # heartbeats at once.
    net.tick("n1")
    assert leader.raft.role is Role.LEADER
    assert {m.target for m in net.take() if isinstance(m, Heartbeat)} == {"n2", "n3"}


def test_a_leader_cut_off_before_its_stall_still_steps_down_at_the_next_live_ticks() -> None:
    net = steady()
    net.isolate("n1")
    leader = net.nodes["n1"]
    for _ in range(3 * ELECTION):
        leader.tick(missed=True)
    for _ in range(2 * ELECTION):
        net.tick("n1")
    assert leader.raft.role is Role.FOLLOWER


def test_missed_ticks_still_age_the_lease() -> None:
    """A leader's lease measures real time: a stall longer than the lease ends it (diss.
    §6.4.1), missed ticks or not."""
    net = steady(lease_reads=True)
    leader = net.nodes["n1"]
    assert leader.raft.lease_read_index() is not None
    net.isolate("n1")
    for _ in range(ELECTION):
        leader.tick(missed=True)
    assert leader.raft.lease_read_index() is None

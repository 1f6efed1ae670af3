"""Linearizable reads: ReadIndex (diss. §6.4) and leader leases (diss. §6.4.1)."""

from __future__ import annotations

import random

import pytest

from phalanx.errors import ConfigError, NotLeader
from phalanx.raft import (
    AppendEntries,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    Role,
    TimeoutNow,
)
from phalanx.testing.raft_harness import DEFAULT_ELECTION_TICKS, Network

ELECTION = DEFAULT_ELECTION_TICKS


def steady(**overrides: object) -> Network:
    """Three replicas, n1 leading, one heartbeat round done."""
    net = Network.create(3, **overrides)
    if overrides.get("lease_reads"):
        # With leases, a fresh replica votes only after an election timeout (it may have
        # acknowledged a lease before a crash); let the clocks run past that first.
        for node in net.nodes:
            net.tick(node, ELECTION)
        net.queue.clear()  # the (pre-)campaigns this started are lost
    net.elect("n1")
    net.tick_all(1)
    return net


def heartbeats_queued(net: Network) -> list[Heartbeat]:
    return [m for m in net.take(lambda m: isinstance(m, Heartbeat))
            if isinstance(m, Heartbeat)]


def test_read_index_needs_a_quorum_heartbeat_round() -> None:
    """diss. §6.4 step 3: "The leader sends a new round of heartbeats and waits for their
    acknowledgments from a majority"; without them the read is not served."""
    net = steady()
    commit = net.nodes["n1"].raft.log.committed
    net.cut("n1", "n2")
    net.cut("n1", "n3")
    net.nodes["n1"].read_index(b"r")
    net.stabilize()
    assert net.read_states["n1"] == []
    net.recover()
    net.tick_all(1)  # the next heartbeat round reaches a majority
    assert net.read_states["n1"] == [ReadState(commit, b"r")]


def test_read_index_waits_for_the_leaders_first_commit() -> None:
    """diss. §6.4 step 1: "If the leader has not yet marked an entry from its current term
    committed, it waits until it has done so" (a new leader may not know the commit index)."""
    net = Network.create(3)
    net.msg_hook = lambda m: not isinstance(m, AppendEntries)
    net.elect("n1")
    net.nodes["n1"].read_index(b"early")
    net.tick_all(2)  # heartbeat rounds are acknowledged, but the no-op is not committed
    assert net.nodes["n1"].raft.log.committed == 0
    assert net.read_states["n1"] == []
    net.recover()
    net.tick_all(2)
    noop_index = net.nodes["n1"].raft.log.committed
    assert noop_index == 1
    assert net.read_states["n1"] == [ReadState(noop_index, b"early")]


def test_reads_arriving_together_share_one_heartbeat_round() -> None:
    """diss. §6.4 ("batching"): with one round in flight at most (etcd's way), reads that arrive
    while a round is outstanding wait for the next single round instead of starting one each."""
    net = steady(read_rounds_in_flight=1)
    leader = net.nodes["n1"]
    leader.read_index(b"first")
    first_round = heartbeats_queued(net)
    assert len(first_round) == 2
    for context in (b"a", b"b", b"c", b"d"):
        leader.read_index(context)
    assert heartbeats_queued(net) == []  # the four reads wait for the round in flight
    net.send(*first_round)
    net.delivered.clear()
    net.stabilize()
    rounds = {m.round for m in net.delivered if isinstance(m, Heartbeat)}
    assert rounds == {first_round[0].round, first_round[0].round + 1}  # one more round for four
    commit = leader.raft.log.committed
    assert net.read_states["n1"] == [ReadState(commit, c) for c in
                                     (b"first", b"a", b"b", b"c", b"d")]


def test_reads_of_one_loop_turn_share_the_round_still_in_the_outbox() -> None:
    """diss. §6.4 (batching): reads that arrive before the round's heartbeats have left the
    leader (one turn of its loop: no `ready()` between them) all ride that round."""
    net = steady()
    leader = net.nodes["n1"]
    for context in (b"a", b"b", b"c"):
        leader.read_index(context)  # no Ready taken between them
    one_round = heartbeats_queued(net)
    assert len(one_round) == 2 and {m.round for m in one_round} == {one_round[0].round}
    net.send(*one_round)
    net.delivered.clear()
    net.stabilize()
    assert [m for m in net.delivered if isinstance(m, Heartbeat)] == one_round  # no other round
    commit = leader.raft.log.committed
    assert net.read_states["n1"] == [ReadState(commit, c) for c in (b"a", b"b", b"c")]


@pytest.mark.parametrize("in_flight", [1, 2])
def test_a_round_that_left_does_not_confirm_a_later_read(in_flight: int) -> None:
    """diss. §6.4 step 3: the round must be sent after the read arrived. A read made after the
    round's heartbeats were taken from the outbox waits for the acknowledgement of a later round,
    even when the earlier round's acknowledgements arrive first."""
    net = steady(read_rounds_in_flight=in_flight)
    leader = net.nodes["n1"]
    leader.read_index(b"early")
    early_round = heartbeats_queued(net)  # the Ready was taken: this round has left
    leader.read_index(b"late")
    late_round = heartbeats_queued(net)
    # With one round in flight at most, the late read waits; with two, its round leaves now.
    assert {m.round for m in late_round} == (set() if in_flight == 1
                                             else {early_round[0].round + 1})
    net.send(*early_round)
    net.deliver()  # the followers answer the early round only
    net.send(*net.take(lambda m: isinstance(m, HeartbeatResponse)))
    net.deliver()
    net.process_all()
    commit = leader.raft.log.committed
    assert net.read_states["n1"] == [ReadState(commit, b"early")]  # not the late read yet
    net.send(*late_round)
    net.stabilize()
    assert net.read_states["n1"] == [ReadState(commit, b"early"), ReadState(commit, b"late")]


def test_rounds_in_flight_are_bounded_and_later_reads_share_the_next() -> None:
    """With `read_rounds_in_flight` = 2, a third batch of reads waits until a round in flight is
    confirmed, then the whole batch shares one round (no round per read)."""
    net = steady(read_rounds_in_flight=2)
    leader = net.nodes["n1"]
    leader.read_index(b"r1")
    first = heartbeats_queued(net)
    leader.read_index(b"r2")
    second = heartbeats_queued(net)
    assert {m.round for m in second} == {first[0].round + 1}
    for context in (b"a", b"b", b"c"):
        leader.read_index(context)
        assert heartbeats_queued(net) == []  # two rounds unconfirmed: no third one yet
    net.send(*first, *second)
    net.delivered.clear()
    net.stabilize()
    rounds = sorted({m.round for m in net.delivered if isinstance(m, Heartbeat)})
    assert rounds == [first[0].round, first[0].round + 1, first[0].round + 2]  # one for a, b, c
    commit = leader.raft.log.committed
    assert net.read_states["n1"] == [ReadState(commit, c) for c in
                                     (b"r1", b"r2", b"a", b"b", b"c")]


def test_read_rounds_in_flight_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="read_rounds_in_flight"):
        Network.create(3, read_rounds_in_flight=0)


def test_follower_read_index_is_forwarded_to_the_leader() -> None:
    """diss. §6.4: "followers can ... help serve reads": the follower asks the leader for its
    read index and serves the read once it has applied that index."""
    net = steady()
    net.nodes["n2"].read_index(b"f")
    net.stabilize()
    assert [type(m) for m in net.delivered if isinstance(m, ReadIndexRequest)] == [
        ReadIndexRequest
    ]
    commit = net.nodes["n1"].raft.log.committed
    assert net.read_states["n2"] == [ReadState(commit, b"f")]
    assert any(isinstance(m, ReadIndexResponse) and m.target == "n2" for m in net.delivered)


def test_follower_without_leader_cannot_read() -> None:
    """diss. §6.4: a read needs a leader to confirm it; with none known it fails at once."""
    net = Network.create(3)
    with pytest.raises(NotLeader):
        net.nodes["n2"].read_index(b"x")


def test_deposed_leader_fails_its_pending_reads() -> None:
    """diss. §6.4: a leader that loses leadership before confirming a read must not serve it;
    the read fails (ok=False) so the client can retry at the new leader."""
    net = steady()
    net.isolate("n1")
    net.nodes["n1"].read_index(b"doomed")
    net.tick_all(3 * ELECTION, nodes=["n2", "n3"])
    assert net.leader() in ("n2", "n3")
    net.recover()
    net.tick_all(2)
    assert net.nodes["n1"].raft.role is Role.FOLLOWER
    assert net.read_states["n1"] == [ReadState(0, b"doomed", ok=False)]


def test_lease_read_is_served_without_a_round() -> None:
    """diss. §6.4.1: within its lease (a quorum acknowledged a heartbeat less than an election
    timeout ago) a leader serves a read at its commit index with no extra round."""
    net = steady(lease_reads=True)
    net.nodes["n1"].read_index(b"lease")
    assert heartbeats_queued(net) == []
    assert net.read_states["n1"] == [ReadState(net.nodes["n1"].raft.log.committed, b"lease")]


def test_lease_expires_without_acknowledgements() -> None:
    """diss. §6.4.1: the lease lasts less than the election timeout from the round that granted
    it; after that the leader falls back to a heartbeat round."""
    net = steady(lease_reads=True)  # the last acknowledged round was sent at this tick
    net.isolate("n1")
    lease_ticks = ELECTION - net.nodes["n1"].raft.config.lease_margin_ticks
    net.tick("n1", lease_ticks - 1)
    net.nodes["n1"].read_index(b"in-lease")
    net.process_all()
    assert [r.context for r in net.read_states["n1"]] == [b"in-lease"]
    net.read_states["n1"].clear()
    net.tick("n1")
    heartbeats_queued(net)
    net.nodes["n1"].read_index(b"late")
    net.process_all()
    assert net.read_states["n1"] == []  # it waits for a round, which needs the followers
    net.recover()
    net.tick_all(1)
    assert [r.context for r in net.read_states["n1"]] == [b"late"]


def test_lease_not_used_after_timeout_now_was_sent() -> None:
    """diss. §6.4.1 with §3.10: TimeoutNow lets the target win an election that ignores leases,
    so a leader that sent it must not serve lease reads for the rest of its term, even if the
    transfer is aborted."""
    net = steady(lease_reads=True)
    net.msg_hook = lambda m: not isinstance(m, TimeoutNow)
    net.nodes["n1"].transfer_leader("n2")
    net.stabilize()
    assert any(isinstance(m, TimeoutNow) for m in net.dropped)
    net.tick_all(ELECTION)  # the transfer is aborted; heartbeat rounds keep succeeding
    assert net.nodes["n1"].raft.lead_transferee == ""
    assert net.nodes["n1"].raft.role is Role.LEADER
    net.nodes["n1"].read_index(b"after-transfer")
    assert heartbeats_queued(net), "the read must wait for a heartbeat round, not the lease"


def test_single_voter_serves_read_index_at_once() -> None:
    """diss. §6.4: with one voter the leader alone is a majority; no round is needed."""
    net = Network.create(1)
    net.elect("n1")
    net.nodes["n1"].read_index(b"solo")
    net.process_all()
    assert net.read_states["n1"] == [ReadState(1, b"solo")]


def test_deposed_leader_fails_forwarded_reads() -> None:
    """diss. §6.4: a read the leader could not confirm must not be served, and the follower that
    forwarded it should learn that (ReadIndexResponse with index 0 -> ReadState ok=False) rather
    than wait forever."""
    net = steady()
    net.msg_hook = lambda m: not isinstance(m, HeartbeatResponse)  # no round can complete
    net.nodes["n2"].read_index(b"forwarded")
    net.stabilize()
    assert net.read_states["n2"] == []
    # A newer leader's heartbeat deposes n1 while the read is pending.
    net.send(Heartbeat(source="n3", target="n1", term=5, commit=0, round=1))
    net.stabilize()
    assert net.nodes["n1"].raft.role is Role.FOLLOWER
    assert net.read_states["n2"] == [ReadState(0, b"forwarded", ok=False)]


@pytest.mark.parametrize("seed", range(40))
def test_every_read_is_confirmed_by_a_round_that_left_after_it(seed: int) -> None:
    """diss. §6.4 step 3 under batching, as a property: reads at random moments, messages
    delayed, reordered across links and lost at random, 1-3 rounds in flight. Whenever the
    leader answers a read, some follower's HeartbeatResponse that reached it answered a heartbeat
    taken from the leader's outbox no earlier than the turn the read arrived in (the leader
    itself is the other vote of the majority of 3). Once the network is healed, every read is
    answered."""
    rng = random.Random(seed)
    net = steady(read_rounds_in_flight=rng.choice([1, 2, 3]))
    leader = net.nodes["n1"]
    term = leader.term
    registered: dict[bytes, int] = {}
    taken_at: dict[tuple[str, int], int] = {}  # (follower, round) -> turn its heartbeat left
    acked: list[tuple[int, str, int]] = []  # (turn, follower, round) of responses delivered
    in_flight: list[tuple[int, Message]] = []  # (due turn, message)
    answered: set[bytes] = set()
    seen = 0

    def turn(step: int, *, lossy: bool) -> None:
        nonlocal seen
        net.process_all()
        for message in net.take():
            if isinstance(message, Heartbeat):
                taken_at[(message.target, message.round)] = step
            if lossy and rng.random() < 0.15:
                continue  # lost
            in_flight.append((step + (rng.randint(1, 4) if lossy else 1), message))
        due = [m for at, m in in_flight if at <= step]
        in_flight[:] = [(at, m) for at, m in in_flight if at > step]
        rng.shuffle(due)
        for message in due:
            if isinstance(message, HeartbeatResponse) and message.target == "n1":
                acked.append((step, message.source, message.round))
            net.send(message)
            net.deliver()
        net.process_all()
        states = net.read_states["n1"][seen:]
        seen += len(states)
        for state in states:
            assert state.ok and leader.term == term
            arrived = registered[state.context]
            assert any(taken_at.get((follower, round_), -1) >= arrived
                       for at, follower, round_ in acked if at <= step), (
                f"read {state.context!r} (turn {arrived}) confirmed by no round sent after it")
            answered.add(state.context)

    for step in range(200):
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            context = f"r{step}-{rng.random()}".encode()
            leader.read_index(context)
            registered[context] = step
        if rng.random() < 0.1:
            leader.tick()  # the leader's own heartbeat rounds (followers do not tick: no election)
        turn(step, lossy=True)
    for step in range(200, 200 + 10 * ELECTION):
        if answered == set(registered):
            break
        leader.tick()
        turn(step, lossy=False)
    assert answered == set(registered)

"""Flow control of replication (§5.3 "the leader ... retries AppendEntries"; etcd's Progress
states PROBE / REPLICATE / SNAPSHOT, see phalanx.raft.progress)."""

from __future__ import annotations

from phalanx.raft import AppendEntries, Heartbeat
from phalanx.raft.progress import ProgressState
from phalanx.raft.storage import entry_size_bytes
from phalanx.raft.types import Entry
from phalanx.testing.raft_harness import Network


def appends_to(net: Network, target: str) -> list[AppendEntries]:
    return [m for m in net.take(lambda m: isinstance(m, AppendEntries) and m.target == target)
            if isinstance(m, AppendEntries)]


def test_replicate_state_is_bounded_by_max_inflight_messages() -> None:
    """§5.3 pipelining: in REPLICATE state the leader streams appends without waiting, but at
    most `max_inflight_messages` unacknowledged ones per follower."""
    net = Network.create(3, max_inflight_messages=2)
    net.elect("n1")
    leader = net.nodes["n1"]
    assert leader.raft.progress["n2"].state is ProgressState.REPLICATE
    sent: list[AppendEntries] = []
    for number in range(5):
        leader.propose(b"%d" % number)
        sent += appends_to(net, "n2")  # one Ready per proposal: one append each, if allowed
    assert [len(m.entries) for m in sent] == [1, 1]
    assert leader.raft.progress["n2"].is_paused()
    # Acknowledgements free the window and the rest flows.
    net.send(*sent)
    net.stabilize()
    assert net.nodes["n2"].raft.log.last_index() == leader.raft.log.last_index()


def test_probe_state_sends_one_append_at_a_time() -> None:
    """§5.3: while the leader does not know where a follower's log matches it sends one
    AppendEntries and waits for the answer before sending another."""
    net = Network.create(3)
    net.elect("n1")
    leader = net.nodes["n1"]
    leader.report_unreachable("n2")
    assert leader.raft.progress["n2"].state is ProgressState.PROBE
    to_n2: list[AppendEntries] = []
    to_n3: list[AppendEntries] = []
    for number in range(3):
        leader.propose(b"%d" % number)
        to_n2 += appends_to(net, "n2")
        to_n3 += appends_to(net, "n3")
    assert len(to_n2) == 1
    assert len(to_n3) == 3  # n3 is still streaming


def test_heartbeat_response_unpauses_a_probe() -> None:
    """§5.3: a lost probe is retried: a heartbeat answer shows the follower is alive, so the
    leader sends the next probe."""
    net = Network.create(3)
    net.elect("n1")
    leader = net.nodes["n1"]
    leader.report_unreachable("n2")
    leader.propose(b"lost")
    assert len(appends_to(net, "n2")) == 1  # this probe is lost
    net.tick("n1")  # heartbeat
    net.deliver()
    net.process_all()
    net.deliver()  # n1 gets n2's heartbeat response
    assert len(appends_to(net, "n2")) == 1
    net.stabilize()


def test_max_message_bytes_batches_entries() -> None:
    """§5.3 ("may send more than one [entry] for efficiency"): catch-up appends carry as many
    entries as fit in `max_message_bytes`, and always at least one."""
    entry_bytes = entry_size_bytes(Entry(term=1, index=1, data=b"0123456789"))
    net = Network.create(3, max_message_bytes=2 * entry_bytes)
    net.elect("n1")
    net.isolate("n3")
    for number in range(6):
        net.propose("n1", b"%010d" % number)
    net.propose("n1", b"x" * (4 * entry_bytes))  # bigger than the limit on its own
    net.recover()
    net.delivered.clear()
    net.tick_all(2)
    sizes = [len(m.entries) for m in net.delivered
             if isinstance(m, AppendEntries) and m.target == "n3" and m.entries]
    assert max(sizes) == 2 and all(size >= 1 for size in sizes)
    assert net.applied["n3"] == net.applied["n1"]


def test_heartbeat_commit_is_capped_at_follower_match() -> None:
    """§5.3: a follower sets its commit index to min(leaderCommit, index of last new entry);
    heartbeats carry at most what the follower is known to hold so it never commits an
    unverified suffix."""
    net = Network.create(3)
    net.elect("n1")
    net.isolate("n3")
    net.propose("n1", b"x")
    net.tick("n1")
    beats = [m for m in net.take(lambda m: isinstance(m, Heartbeat)) if isinstance(m, Heartbeat)]
    by_target = {m.target: m.commit for m in beats}
    assert by_target == {"n2": 2, "n3": 1}

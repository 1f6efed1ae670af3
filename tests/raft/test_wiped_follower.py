"""A follower that lost its log (disk wiped or replaced, restarted empty under its old id) is
caught up again: the leader believes the follower's rejection over its own `match` (§5.3) and
sends the snapshot (§7) or the entries it needs."""

from __future__ import annotations

from phalanx.raft import AppendEntriesResponse, ConfState, InstallSnapshot, RawNode
from phalanx.raft.progress import Progress, ProgressState
from phalanx.raft.storage import MemoryStorage
from phalanx.raft.types import Index, NodeId
from phalanx.testing.raft_harness import Network


def wipe(net: Network, node: str) -> RawNode:
    """Restart `node` with an empty store and no configuration (its data directory emptied)."""
    node_id = NodeId(node)
    storage = MemoryStorage(ConfState())
    net.storages[node_id] = storage
    net.applied[node_id] = []
    net.applied_entries[node_id] = []
    net.nodes[node_id] = RawNode(net.config(node_id), storage)
    return net.nodes[node_id]


def test_wiped_follower_within_the_log_gets_the_snapshot() -> None:
    """The follower's old match is still in the leader's log (it was up to date when it
    stopped), but the log was compacted below it: the leader must fall back to the snapshot
    instead of probing at match + 1 for ever."""
    net = Network.create(3)
    net.elect("n1")
    for number in range(10):
        net.propose("n1", b"old%d" % number)
    snapshot = net.compact("n1")
    for number in range(3):
        net.propose("n1", b"new%d" % number)
    leader = net.nodes[NodeId("n1")].raft
    old_match = leader.progress[NodeId("n3")].match
    assert old_match == leader.log.last_index() > snapshot.meta.index
    wipe(net, "n3")
    net.tick_all(3 * leader.config.heartbeat_ticks)
    installs = [m for m in net.delivered if isinstance(m, InstallSnapshot) and m.target == "n3"]
    assert [m.snapshot.meta.index for m in installs] == [snapshot.meta.index]
    assert net.applied["n3"] == net.applied["n1"]
    assert net.nodes[NodeId("n3")].raft.conf.voters == net.nodes[NodeId("n1")].raft.conf.voters
    progress = leader.progress[NodeId("n3")]
    assert progress.state is ProgressState.REPLICATE
    assert progress.match == leader.log.last_index() == old_match
    # And it keeps replicating afterwards.
    net.propose("n1", b"after")
    assert net.applied["n3"][-1] == b"after"


def test_wiped_follower_with_an_uncompacted_log_gets_the_entries() -> None:
    """Without a snapshot the leader resends its log from the start."""
    net = Network.create(3)
    net.elect("n1")
    for number in range(5):
        net.propose("n1", b"v%d" % number)
    wiped = wipe(net, "n3")
    # The wiped replica has no configuration; give it the group's (a real node gets it from
    # the snapshot: every replica compacts entry 1 away, see RaftGroup).
    wiped.raft.conf = net.bootstrap_conf
    net.tick_all(3 * net.nodes[NodeId("n1")].raft.config.heartbeat_ticks)
    assert net.applied["n3"] == net.applied["n1"]
    assert net.nodes[NodeId("n1")].raft.progress[NodeId("n3")].state is ProgressState.REPLICATE


def test_wiped_follower_behind_a_new_write_gets_the_snapshot() -> None:
    """Writes went on while it was down: the leader's probe right after the old match is
    rejected with "my log ends at 0", and the leader goes back to the snapshot."""
    net = Network.create(3)
    net.elect("n1")
    for number in range(10):
        net.propose("n1", b"old%d" % number)
    net.isolate("n3")
    snapshot = net.compact("n1")
    for number in range(3):
        net.propose("n1", b"new%d" % number)
    wipe(net, "n3")
    net.recover()
    net.tick_all(3 * net.nodes[NodeId("n1")].raft.config.heartbeat_ticks)
    installs = [m for m in net.delivered if isinstance(m, InstallSnapshot) and m.target == "n3"]
    assert [m.snapshot.meta.index for m in installs] == [snapshot.meta.index]
    assert net.applied["n3"] == net.applied["n1"]


def test_probe_rejection_below_match_lowers_match() -> None:
    progress = Progress(next_index=11, max_inflight=4, is_learner=False)
    progress.maybe_update(10)
    assert (progress.match, progress.next, progress.state) == (10, 11, ProgressState.PROBE)
    # A rejection of another index that claims a shorter log: checked by a probe after match.
    progress.probe_sent = True
    assert progress.maybe_decrease_to(7, 0)
    assert (progress.match, progress.next, progress.probe_sent) == (10, 11, False)
    # The probe at prev 10 answered "my log ends at 0": the follower lost its log.
    assert progress.maybe_decrease_to(10, 0)
    assert (progress.match, progress.next) == (0, 1)


def test_replicate_rejections_at_or_below_match() -> None:
    progress = Progress(next_index=1, max_inflight=4, is_learner=False)
    progress.maybe_update(10)
    progress.become_replicate()
    # Stale: the follower's log reached the rejected index (only its term differed then).
    assert not progress.maybe_decrease_to(10, 10)
    # A claim of a log ending below match: probe right after match (match is kept until the
    # probe itself is rejected that way).
    assert progress.maybe_decrease_to(10, 0)
    assert (progress.match, progress.next) == (10, 11)


def test_a_stale_claim_costs_one_probe_and_keeps_match() -> None:
    """A delayed rejection claiming a short log, from a follower that has its log: the leader
    probes, the follower accepts, and nothing is lost or resent as a snapshot."""
    net = Network.create(3)
    net.elect("n1")
    for number in range(5):
        net.propose("n1", b"v%d" % number)
    leader = net.nodes[NodeId("n1")].raft
    match = leader.progress[NodeId("n3")].match
    net.send(AppendEntriesResponse(source=NodeId("n3"), target=NodeId("n1"), term=leader.term,
                                   success=False, index=Index(2), reject_hint=Index(1)))
    net.stabilize()
    assert leader.progress[NodeId("n3")].match == match
    net.propose("n1", b"after")
    assert net.applied["n3"] == net.applied["n1"]
    assert leader.progress[NodeId("n3")].state is ProgressState.REPLICATE
    assert not [m for m in net.delivered if isinstance(m, InstallSnapshot)]

"""Log compaction and InstallSnapshot (§7); restart from persistent state (§5, Figure 2)."""

from __future__ import annotations

from phalanx.raft import (
    AppendEntriesResponse,
    ConfState,
    InstallSnapshot,
    RequestVote,
    RequestVoteResponse,
    Role,
    Snapshot,
    SnapshotMeta,
)
from phalanx.raft.progress import ProgressState
from phalanx.testing.raft_harness import Network, drive, encode_state, log_storage, make_node


def test_far_behind_follower_gets_snapshot_then_catches_up() -> None:
    """§7: "the leader must occasionally send snapshots to followers that lag behind" when the
    entries they need were discarded; the follower then continues from the snapshot."""
    net = Network.create(3)
    net.elect("n1")
    net.isolate("n3")
    for number in range(10):
        net.propose("n1", b"old%d" % number)
    snapshot = net.compact("n1")
    assert net.storages["n1"].first_index() == snapshot.meta.index + 1
    for number in range(3):
        net.propose("n1", b"new%d" % number)
    net.recover()
    net.tick_all(3)
    installs = [m for m in net.delivered if isinstance(m, InstallSnapshot)]
    assert [(m.target, m.snapshot.meta.index) for m in installs] == [("n3", snapshot.meta.index)]
    assert net.storages["n3"].snapshot().meta.index == snapshot.meta.index
    assert net.applied["n3"] == net.applied["n1"]
    assert net.applied["n3"][-1] == b"new2"
    assert net.log_terms("n3") == net.log_terms("n1")
    assert net.nodes["n1"].status().peers["n3"].state == ProgressState.REPLICATE.value


def test_stale_snapshot_is_ignored() -> None:
    """§7 (InstallSnapshot receiver): a snapshot that does not go beyond what the follower has
    committed carries nothing new; the log and state are kept and the reply reports the commit."""
    storage = log_storage(["n1", "n2", "n3"], [1, 1, 1, 1, 1], commit=5)
    raw, _ = make_node("n1", [], storage=storage)
    stale = Snapshot(meta=SnapshotMeta(index=3, term=1, conf_state=ConfState(voters=("n1",))))
    raw.step(InstallSnapshot(source="n2", target="n1", term=1, snapshot=stale))
    sent = drive(raw, storage)
    assert [(m.success, m.index) for m in sent if isinstance(m, AppendEntriesResponse)] == [
        (True, 5)
    ]
    assert storage.snapshot().meta.index == 0 and storage.last_index() == 5
    assert raw.raft.conf.voters == ("n1", "n2", "n3")


def test_snapshot_covering_an_existing_entry_keeps_the_following_entries() -> None:
    """§7: "If existing log entry has same index and term as snapshot's last included entry,
    retain log entries following it"; only the commit index moves."""
    storage = log_storage(["n1", "n2", "n3"], [1, 1, 1, 1, 1], commit=2)
    raw, _ = make_node("n1", [], storage=storage)
    snapshot = Snapshot(meta=SnapshotMeta(index=3, term=1,
                                          conf_state=ConfState(voters=("n1", "n2", "n3"))))
    raw.step(InstallSnapshot(source="n2", target="n1", term=1, snapshot=snapshot))
    rd = raw.ready()
    assert rd is not None and rd.snapshot is None
    assert [e.index for e in rd.committed_entries] == [1, 2, 3]
    assert raw.raft.log.last_index() == 5


def test_snapshot_replaces_a_conflicting_log() -> None:
    """§7: otherwise "discard the entire log" and reset the state machine from the snapshot,
    taking the snapshot's configuration."""
    storage = log_storage(["n1", "n2", "n3"], [1, 1, 2, 2], commit=2)
    raw, _ = make_node("n1", [], storage=storage)
    conf = ConfState(voters=("n1", "n2", "n3"), learners=("n4",))
    snapshot = Snapshot(meta=SnapshotMeta(index=6, term=3, conf_state=conf),
                        data=encode_state([b"s"]))
    raw.step(InstallSnapshot(source="n2", target="n1", term=3, snapshot=snapshot))
    rd = raw.ready()
    assert rd is not None and rd.snapshot == snapshot and rd.must_sync
    assert rd.committed_entries == ()
    assert rd.hard_state is not None and rd.hard_state.commit == 6
    assert [(m.success, m.index) for m in rd.persisted_messages
            if isinstance(m, AppendEntriesResponse)] == [(True, 6)]
    storage.apply_snapshot(snapshot)
    storage.set_hard_state(rd.hard_state)
    raw.advance(rd)
    assert raw.raft.conf == conf
    assert (raw.raft.log.first_index(), raw.raft.log.last_index()) == (7, 6)
    assert raw.raft.log.applied == 6


def test_restart_preserves_term_vote_and_commit() -> None:
    """§5, Figure 2: currentTerm, votedFor and log[] are persistent; a restarted replica comes
    back with them (and its commit index) and replays committed entries."""
    net = Network.create(3)
    net.elect("n1")
    net.propose("n1", b"a")
    net.propose("n1", b"b")
    net.tick_all(1)
    before = net.nodes["n2"].status()
    raw = net.restart("n2")
    after = raw.status()
    assert (after.term, after.vote, after.commit, after.last_index) == (
        before.term, before.vote, before.commit, before.last_index)
    assert after.role is Role.FOLLOWER and after.conf == before.conf
    net.stabilize()
    assert net.applied["n2"] == [b"a", b"b"]
    net.propose("n1", b"c")
    assert net.applied["n2"] == [b"a", b"b", b"c"]


def test_restart_from_snapshot_restores_state_and_position() -> None:
    """§7: after compaction a restarted replica starts from its snapshot (state machine and
    configuration) plus the entries after it."""
    net = Network.create(3)
    net.elect("n1")
    for number in range(5):
        net.propose("n1", b"%d" % number)
    net.tick_all(1)
    snapshot = net.compact("n2")
    net.propose("n1", b"after")
    net.tick_all(1)
    raw = net.restart("n2")
    assert raw.raft.log.first_index() == snapshot.meta.index + 1
    assert raw.raft.log.committed == net.nodes["n1"].raft.log.committed
    net.stabilize()
    assert net.applied["n2"] == [b"0", b"1", b"2", b"3", b"4", b"after"]


def test_restarted_replica_keeps_its_vote_and_does_not_vote_twice() -> None:
    """§5.2 with Figure 2: a replica that voted and restarted must not grant another vote in the
    same term (votedFor is durable)."""
    storage = log_storage(["n1", "n2", "n3"], [], term=4, vote="n2")
    raw, _ = make_node("n1", [], storage=storage)
    assert (raw.raft.term, raw.raft.vote) == (4, "n2")
    raw.step(RequestVote(source="n3", target="n1", term=4, last_log_index=0, last_log_term=0))
    (response,) = drive(raw, storage)
    assert isinstance(response, RequestVoteResponse) and not response.granted

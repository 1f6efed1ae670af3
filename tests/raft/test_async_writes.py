"""Asynchronous storage writes: `ready()` / `advance_applied()` while earlier writes are in
flight, `persisted(ready)` when each becomes durable (etcd's AsyncStorageWrites; diss. §10.2.1:
the leader writes its log in parallel with replicating it)."""

from __future__ import annotations

from phalanx.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    MemoryStorage,
    RawNode,
    RequestVoteResponse,
)
from phalanx.raft.types import ConfState, Index, NodeId, Term
from phalanx.testing.raft_harness import make_node, persist


def _leader() -> tuple[RawNode, MemoryStorage]:
    raw, storage = make_node("n1", ["n1", "n2", "n3"], pre_vote=False)
    raw.campaign()
    rd = raw.ready()
    assert rd is not None
    persist(storage, rd)
    raw.advance(rd)
    raw.step(RequestVoteResponse(source="n2", target="n1", term=1, granted=True))
    rd = raw.ready()  # leader: the no-op of term 1
    assert rd is not None and rd.entries == (Entry(term=1, index=1),)
    persist(storage, rd)
    raw.advance(rd)
    raw.step(AppendEntriesResponse(source="n2", target="n1", term=1, success=True, index=1))
    rd = raw.ready()
    assert rd is not None
    persist(storage, rd)
    raw.advance(rd)
    assert raw.raft.log.committed == 1
    return raw, storage


def test_entries_in_flight_are_handed_out_once() -> None:
    raw, storage = _leader()
    raw.propose(b"a")
    first = raw.ready()
    assert first is not None and [e.data for e in first.entries] == [b"a"]
    raw.advance_applied(first)  # the write of `first` is still running
    raw.propose(b"b")
    second = raw.ready()
    assert second is not None and [e.data for e in second.entries] == [b"b"]
    raw.advance_applied(second)
    assert raw.ready() is None  # nothing new: in-flight entries are not handed out again
    persist(storage, first)
    raw.persisted(first)
    persist(storage, second)
    raw.persisted(second)
    assert raw.raft.log.unstable.entries == []


def test_leader_commits_on_follower_acks_before_its_own_write_completes() -> None:
    """A quorum of durable copies commits an entry even if the leader's is not one yet."""
    raw, storage = _leader()
    index, _ = raw.propose(b"x")
    rd = raw.ready()
    assert rd is not None
    raw.advance_applied(rd)  # our own write is in flight
    raw.step(AppendEntriesResponse(source="n2", target="n1", term=1, success=True, index=index))
    raw.step(AppendEntriesResponse(source="n3", target="n1", term=1, success=True, index=index))
    applied = raw.ready()
    assert applied is not None
    assert [e.data for e in applied.committed_entries] == [b"x"]
    raw.advance_applied(applied)
    persist(storage, rd)
    raw.persisted(rd)
    persist(storage, applied)
    raw.persisted(applied)
    assert raw.raft.progress["n1"].match == index


def test_leader_alone_does_not_count_itself_before_its_write() -> None:
    raw, storage = _leader()
    index, _ = raw.propose(b"x")
    rd = raw.ready()
    assert rd is not None
    raw.advance_applied(rd)
    raw.step(AppendEntriesResponse(source="n2", target="n1", term=1, success=True, index=0))
    later = raw.ready()
    assert later is None or not later.committed_entries
    assert raw.raft.log.committed < index
    if later is not None:
        raw.advance_applied(later)
        persist(storage, later)
        raw.persisted(later)
    raw.step(AppendEntriesResponse(source="n2", target="n1", term=1, success=True, index=index))
    assert raw.raft.log.committed < index  # n2 plus a copy that is not durable: no quorum
    persist(storage, rd)
    raw.persisted(rd)
    assert raw.raft.log.committed == index


def test_an_overwrite_of_entries_in_flight_hands_them_out_again() -> None:
    """A follower whose in-flight entries are replaced by a new leader's must write the new
    ones; the old write completing later must not mark the new entries durable."""
    raw, storage = make_node("n1", ["n1", "n2", "n3"])
    raw.step(AppendEntries(source="n2", target="n1", term=1, prev_log_index=0, prev_log_term=0,
                           entries=(Entry(term=1, index=1), Entry(term=1, index=2)), commit=0))
    old = raw.ready()
    assert old is not None and len(old.entries) == 2
    raw.advance_applied(old)
    raw.step(AppendEntries(source="n3", target="n1", term=2, prev_log_index=1, prev_log_term=1,
                           entries=(Entry(term=2, index=2, data=b"new"),), commit=0))
    new = raw.ready()
    assert new is not None and new.entries == (Entry(term=2, index=2, data=b"new"),)
    raw.advance_applied(new)
    persist(storage, old)
    raw.persisted(old)  # (2, term 1) is no longer in the log: the new entry 2 stays unstable
    assert raw.raft.log.unstable.entries[-1] == Entry(term=2, index=2, data=b"new")
    assert raw.raft.log.stable_last_index() < 2
    persist(storage, new)
    raw.persisted(new)
    assert raw.raft.log.unstable.entries == []


def test_restart_with_a_snapshot_newer_than_the_persisted_commit() -> None:
    """The commit index is written lazily; a snapshot (of applied, so committed, entries) may
    be newer, with entries kept before it. The restarted replica's commit and applied indexes
    start at the snapshot, so it never re-applies what its restored state machine holds
    (regression: "applied index must advance: 10 after 10", simulator seed 382872012)."""
    conf = ConfState(voters=(NodeId("n1"), NodeId("n2"), NodeId("n3")))
    storage = MemoryStorage(conf)
    storage.append([Entry(term=Term(1), index=Index(i)) for i in range(1, 11)])
    storage.set_hard_state(HardState(term=Term(1), vote=NodeId("n1"), commit=Index(7)))
    storage.create_snapshot(Index(9), conf, b"state at 9")
    storage.compact(Index(4))  # keep entries 5..10 behind the snapshot
    raw, _ = make_node("n1", ["n1", "n2", "n3"], storage=storage, applied=9)
    assert raw.raft.log.committed == 9
    assert raw.raft.log.applied == 9


def test_restart_with_a_persisted_commit_older_than_the_log_start() -> None:
    conf = ConfState(voters=(NodeId("n1"), NodeId("n2"), NodeId("n3")))
    storage = MemoryStorage(conf)
    storage.append([Entry(term=Term(1), index=Index(i)) for i in range(1, 11)])
    storage.set_hard_state(HardState(term=Term(1), vote=NodeId("n1"), commit=Index(3)))
    storage.create_snapshot(Index(8), conf, b"state at 8")
    storage.compact(Index(8))
    raw, _ = make_node("n1", ["n1", "n2", "n3"], storage=storage, applied=8)
    assert raw.raft.log.committed == 8 and raw.raft.log.applied == 8

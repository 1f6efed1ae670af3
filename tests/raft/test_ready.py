"""The Ready contract: what must be durable before which message leaves (§5, Figure 2 "Persistent
state ... updated on stable storage before responding to RPCs"; diss. §10.2.1)."""

from __future__ import annotations

import pytest

from phalanx.errors import InvariantViolation
from phalanx.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    RequestVote,
    RequestVoteResponse,
    SoftState,
)
from phalanx.raft.types import Role
from phalanx.testing.raft_harness import drive, log_storage, make_node, persist


def test_vote_is_a_persisted_message() -> None:
    """Figure 2: votedFor must be on stable storage before the vote is granted (§5.2), so the
    RequestVoteResponse travels in `persisted_messages`, with a hard state that needs a sync."""
    raw, _storage = make_node("n1", ["n1", "n2", "n3"])
    raw.step(RequestVote(source="n2", target="n1", term=1, last_log_index=0, last_log_term=0))
    rd = raw.ready()
    assert rd is not None
    assert rd.messages == ()
    assert [type(m) for m in rd.persisted_messages] == [RequestVoteResponse]
    assert rd.hard_state == HardState(term=1, vote="n2", commit=0)
    assert rd.must_sync


def test_candidate_request_vote_is_a_persisted_message() -> None:
    """Figure 2: the new term and the self-vote must be durable before RequestVote leaves."""
    raw, _storage = make_node("n1", ["n1", "n2", "n3"], pre_vote=False)
    raw.campaign()
    rd = raw.ready()
    assert rd is not None and rd.messages == ()
    assert {type(m) for m in rd.persisted_messages} == {RequestVote}
    assert rd.hard_state == HardState(term=1, vote="n1", commit=0) and rd.must_sync


def test_pre_vote_messages_leave_at_once() -> None:
    """diss. §9.6: a pre-vote changes no persistent state, so it needs no sync before sending."""
    raw, _storage = make_node("n1", ["n1", "n2", "n3"])
    raw.campaign()
    rd = raw.ready()
    assert rd is not None
    assert {(type(m), m.pre_vote) for m in rd.messages} == {(RequestVote, True)}
    assert rd.persisted_messages == () and rd.hard_state is None and not rd.must_sync


def test_append_response_is_a_persisted_message() -> None:
    """Figure 2 / §5.3: a follower acknowledges entries only once they are durable."""
    raw, _storage = make_node("n1", ["n1", "n2", "n3"])
    raw.step(AppendEntries(source="n2", target="n1", term=1, prev_log_index=0, prev_log_term=0,
                           entries=(Entry(term=1, index=1),), commit=0))
    rd = raw.ready()
    assert rd is not None
    assert rd.messages == ()
    assert [type(m) for m in rd.persisted_messages] == [AppendEntriesResponse]
    assert rd.entries == (Entry(term=1, index=1),) and rd.must_sync


def test_leader_append_entries_leave_before_its_own_write() -> None:
    """diss. §10.2.1: "the leader can write to its disk in parallel with replicating to the
    followers", so its AppendEntries are in `messages` next to the entries to persist."""
    raw, storage = make_node("n1", ["n1", "n2", "n3"], pre_vote=False)
    raw.campaign()
    raw.step(RequestVoteResponse(source="n2", target="n1", term=1, granted=True))
    rd = raw.ready()
    assert rd is not None
    assert rd.soft_state == SoftState("n1", Role.LEADER)
    appends = [m for m in rd.messages if isinstance(m, AppendEntries)]
    assert sorted(m.target for m in appends) == ["n2", "n3"]
    assert rd.entries == (Entry(term=1, index=1),)
    assert not any(isinstance(m, AppendEntries) for m in rd.persisted_messages)
    persist(storage, rd)
    raw.advance(rd)


def test_must_sync_false_for_commit_only_change() -> None:
    """Figure 2: commitIndex is volatile state; a Ready that only moves the commit index needs no
    fsync (the entries it commits are already durable)."""
    storage = log_storage(["n1", "n2", "n3"], [1, 1])
    raw, _ = make_node("n1", [], storage=storage)
    raw.step(Heartbeat(source="n2", target="n1", term=1, commit=2, round=1))
    rd = raw.ready()
    assert rd is not None
    assert rd.hard_state == HardState(term=1, vote="", commit=2)
    assert rd.entries == () and rd.snapshot is None
    assert not rd.must_sync
    assert [e.index for e in rd.committed_entries] == [1, 2]
    assert [type(m) for m in rd.persisted_messages] == [HeartbeatResponse]


@pytest.mark.parametrize("change", ["entries", "term", "vote"])
def test_must_sync_when_entries_term_or_vote_change(change: str) -> None:
    """Figure 2: currentTerm, votedFor and log[] are persistent state; changing any of them makes
    the Ready need an fsync."""
    storage = log_storage(["n1", "n2", "n3"], [], term=1)  # term 1, no leader known, no vote
    raw, _ = make_node("n1", [], storage=storage)
    drive(raw, storage)
    if change == "entries":
        raw.step(AppendEntries(source="n2", target="n1", term=1, prev_log_index=0,
                               prev_log_term=0, entries=(Entry(term=1, index=1),), commit=0))
    elif change == "term":
        raw.step(Heartbeat(source="n3", target="n1", term=2, commit=0, round=1))
    else:
        raw.step(RequestVote(source="n3", target="n1", term=1, last_log_index=0,
                             last_log_term=0))
    rd = raw.ready()
    assert rd is not None and rd.must_sync


def test_ready_is_none_when_idle() -> None:
    """The Ready loop: nothing to do is `None`, not an empty batch."""
    raw, storage = make_node("n1", ["n1", "n2", "n3"])
    drive(raw, storage)
    assert raw.ready() is None
    assert not raw.has_ready()


def test_ready_twice_without_advance_is_invariant_violation() -> None:
    """The Ready contract: `ready()` and `advance()` come strictly in pairs."""
    raw, _storage = make_node("n1", ["n1", "n2", "n3"])
    raw.campaign()
    assert raw.ready() is not None
    with pytest.raises(InvariantViolation, match="advance"):
        raw.ready()


def test_advance_without_ready_is_invariant_violation() -> None:
    """The Ready contract: `advance()` acknowledges exactly one outstanding Ready."""
    raw, storage = make_node("n1", ["n1", "n2", "n3"])
    raw.campaign()
    rd = raw.ready()
    assert rd is not None
    persist(storage, rd)
    raw.advance(rd)
    with pytest.raises(InvariantViolation, match="advance"):
        raw.advance(rd)

"""Log replication and commitment (§5.3, §5.4.2, Figure 8)."""

from __future__ import annotations

import pytest

from phalanx.errors import InvariantViolation
from phalanx.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryType,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from phalanx.testing.raft_harness import Network, drive, log_storage, make_node, persist


def test_leader_appends_noop_on_election() -> None:
    """§5.4.2 / §8: a new leader commits a blank no-op entry of its own term at the start of its
    term, and it replicates to every follower."""
    net = Network.create(3)
    net.elect("n1")
    net.tick_all(1)
    leader = net.nodes["n1"].raft
    last = leader.log.last_index()
    (noop,) = leader.log.slice(last, last + 1, None)
    assert noop == Entry(term=leader.term, index=last, type=EntryType.NORMAL, data=b"")
    for raw in net.nodes.values():
        assert raw.raft.log.committed == last
        assert raw.raft.log.term_or_none(last) == leader.term


def test_leader_alone_never_commits() -> None:
    """§5.3: "A log entry is committed once the leader that created the entry has replicated it
    on a majority of the servers"; the leader's own copy is not a majority of three."""
    net = Network.create(3, check_quorum=False)
    net.elect("n1")
    committed = net.nodes["n1"].raft.log.committed
    net.isolate("n1")
    index, _term = net.nodes["n1"].propose(b"lonely")
    net.tick_all(50)
    assert net.nodes["n1"].raft.role is Role.LEADER
    assert net.nodes["n1"].raft.log.last_index() == index
    assert net.nodes["n1"].raft.log.committed == committed
    assert net.applied["n1"] == []


def test_leader_counts_itself_only_after_its_entries_are_durable() -> None:
    """§5.3 with diss. §10.2.1: the leader may send entries before writing them, but its own
    copy counts toward the majority only once persisted (after `advance`)."""
    net = Network.create(3)
    net.elect("n1")
    leader = net.nodes["n1"]
    committed = leader.raft.log.committed
    index, _ = leader.propose(b"x")
    rd = leader.ready()
    assert rd is not None and rd.entries and rd.entries[-1].index == index
    net.drop("n1", "n3")
    net.send(*rd.messages, *rd.persisted_messages)
    net.deliver()  # n2 receives the entry
    net.process_ready("n2")
    net.deliver()  # n1 receives n2's acknowledgement; n1 has not persisted yet
    assert leader.raft.progress["n2"].match == index
    assert leader.raft.log.committed == committed
    persist(net.storages["n1"], rd)
    leader.advance(rd)
    assert leader.raft.log.committed == index


@pytest.mark.parametrize(("acked", "commit"), [(1, 0), (2, 0), (3, 3)])
def test_leader_only_commits_entries_of_its_current_term(acked: int, commit: int) -> None:
    """§5.4.2: "Raft never commits log entries from previous terms by counting replicas. Only
    log entries from the leader's current term are committed by counting replicas"."""
    storage = log_storage(["n1", "n2", "n3"], [1, 2], term=2)
    raw, _ = make_node("n1", [], storage=storage, pre_vote=False)
    raw.campaign()
    raw.step(RequestVoteResponse(source="n2", target="n1", term=3, granted=True))
    drive(raw, storage)  # leader of term 3 with its no-op at index 3, durable
    assert raw.raft.role is Role.LEADER and raw.raft.log.last_index() == 3
    raw.step(AppendEntriesResponse(source="n2", target="n1", term=3, success=True, index=acked))
    assert raw.raft.log.committed == commit


def test_figure8_entry_of_old_term_on_majority_is_not_committed() -> None:
    """§5.4.2, Figure 8: an entry of an earlier term stored on a majority can still be overwritten
    by a future leader, so the leader of a later term must not count it as committed."""
    net = Network.create(5, pre_vote=False, check_quorum=False, max_message_bytes=1)
    s1, s2, s3, s4, s5 = (net.nodes[n] for n in ("n1", "n2", "n3", "n4", "n5"))
    # (a) S1 leads term 1 and replicates index 2 only to S2.
    net.elect("n1")
    for other in ("n3", "n4", "n5"):
        net.cut("n1", other)
    net.propose("n1", b"term-1 entry")
    assert [n for n in net.nodes if net.nodes[n].raft.log.last_index() == 2] == ["n1", "n2"]
    # (b) S1 crashes; S5 wins term 2 with votes of S3, S4, S5 and appends index 2 locally only.
    net.recover()
    net.isolate("n1")
    net.cut("n5", "n2")
    net.msg_hook = lambda m: not isinstance(m, AppendEntries)
    net.campaign("n5")
    assert s5.raft.role is Role.LEADER and s5.raft.term == 2
    assert s5.raft.log.term_or_none(2) == 2
    # (c) S5 crashes; S1 restarts and wins term 3 (S2, S3, S4), and replicates its term-1 entry
    # at index 2 to S3, but not yet its term-3 no-op (index 3).
    net.recover()
    net.isolate("n5")
    s1 = net.restart("n1")
    net.campaign("n1")  # term 2: S3 and S4 already voted for S5 in term 2
    # (S1's first probe carries its no-op after index 2, §5.3: it may reach S3, which rejects
    # it, lacking index 2; an append that would land index 3 anywhere is lost.)
    net.msg_hook = lambda m: not (
        isinstance(m, AppendEntries) and any(e.index >= 3 for e in m.entries)
        and net.nodes[m.target].raft.log.match_term(m.prev_log_index, m.prev_log_term)
    )
    net.campaign("n1")
    assert s1.raft.role is Role.LEADER and s1.raft.term == 3
    assert [raw.raft.log.term_or_none(2) for raw in (s1, s2, s3)] == [1, 1, 1]
    # Index 2 is on a majority (S1, S2, S3), yet must not be committed.
    assert s1.raft.log.committed == 1
    # (d) S1 crashes; S5 can be elected (its last term 2 beats term 1) and overwrites index 2.
    net.recover()
    net.isolate("n1")
    s5 = net.restart("n5")
    s5.campaign()  # term 3 is taken by S1's voters; campaign until a fresh term wins
    net.stabilize()
    if s5.raft.role is not Role.LEADER:
        net.campaign("n5")
    assert s5.raft.role is Role.LEADER
    net.tick_all(3)
    for raw in (s2, s3, s4, s5):
        assert raw.raft.log.term_or_none(2) == 2
    assert all(b"term-1 entry" not in net.applied[n] for n in net.nodes)


def test_follower_overwrites_conflicting_suffix() -> None:
    """§5.3: "If an existing entry conflicts with a new one (same index but different terms),
    delete the existing entry and all that follow it" and append the new ones."""
    storage = log_storage(["n1", "n2", "n3"], [1, 1, 2, 2])
    raw, _ = make_node("n1", [], storage=storage)
    new = (Entry(term=3, index=3, data=b"a"), Entry(term=3, index=4, data=b"b"),
           Entry(term=3, index=5, data=b"c"))
    raw.step(AppendEntries(source="n2", target="n1", term=3, prev_log_index=2, prev_log_term=1,
                           entries=new, commit=0))
    (response,) = drive(raw, storage)
    assert isinstance(response, AppendEntriesResponse) and response.success
    assert response.index == 5
    assert storage.entries(1, 6) == [Entry(term=1, index=1), Entry(term=1, index=2), *new]


def test_follower_keeps_entries_after_a_matching_prefix() -> None:
    """§5.3 (Figure 2, receiver rule 3): only *conflicting* entries are deleted; a delayed
    AppendEntries carrying a prefix must not truncate entries that follow it."""
    storage = log_storage(["n1", "n2", "n3"], [1, 1, 1])
    raw, _ = make_node("n1", [], storage=storage)
    raw.step(AppendEntries(source="n2", target="n1", term=1, prev_log_index=0, prev_log_term=0,
                           entries=(Entry(term=1, index=1),), commit=0))
    (response,) = drive(raw, storage)
    assert isinstance(response, AppendEntriesResponse) and response.success
    assert response.index == 1
    assert storage.last_index() == 3


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "hint"),
    [(2, 2, 2), (3, 3, 2), (9, 3, 2)],
)
def test_follower_rejects_mismatched_prev_with_hint(
    prev_index: int, prev_term: int, hint: int
) -> None:
    """§5.3: "If the follower does not find an entry in its log with the same index and term,
    then it refuses the new entries"; the reply hints at its last index so the leader can skip
    back in one step (§5.3, "the protocol can be optimized")."""
    storage = log_storage(["n1", "n2", "n3"], [1, 1], term=3)
    raw, _ = make_node("n1", [], storage=storage)
    raw.step(AppendEntries(source="n2", target="n1", term=3, prev_log_index=prev_index,
                           prev_log_term=prev_term, entries=(Entry(term=3, index=prev_index + 1),),
                           commit=0))
    (response,) = drive(raw, storage)
    assert isinstance(response, AppendEntriesResponse)
    assert (response.success, response.index, response.reject_hint) == (False, prev_index, hint)
    assert storage.last_index() == 2


def test_leader_backs_up_with_reject_hint_and_repairs_log() -> None:
    """§5.3: "the leader decrements nextIndex and retries"; with the hint one rejection suffices
    for a follower that is missing many entries, and the logs then match (Log Matching)."""
    net = Network.create(3)
    net.elect("n1")
    net.isolate("n3")
    for number in range(20):
        net.propose("n1", b"v%d" % number)
    net.recover()
    net.delivered.clear()
    net.tick_all(2)
    rejections = [m for m in net.delivered
                  if isinstance(m, AppendEntriesResponse) and not m.success]
    assert len(rejections) == 1
    assert net.log_terms("n3") == net.log_terms("n1")
    assert net.applied["n3"] == net.applied["n1"] == [b"v%d" % n for n in range(20)]


def test_commit_index_propagated_to_followers() -> None:
    """§5.3: "The leader keeps track of the highest index it knows to be committed, and it
    includes that index in future AppendEntries RPCs (including heartbeats)"; followers apply."""
    net = Network.create(3)
    net.elect("n1")
    net.tick_all(1)
    index, _ = net.propose("n1", b"x")
    net.tick_all(1)
    for raw in net.nodes.values():
        assert raw.raft.log.committed == index
        assert raw.raft.log.applied == index
    assert net.applied == {"n1": [b"x"], "n2": [b"x"], "n3": [b"x"]}


def test_commit_reaches_a_follower_that_acked_last_by_next_heartbeat() -> None:
    """§5.3: a follower whose acknowledgement arrives after the entry committed learns the commit
    index from the next AppendEntries or heartbeat."""
    net = Network.create(3)
    net.elect("n1")
    net.tick("n1")
    net.stabilize()
    assert {raw.raft.log.committed for raw in net.nodes.values()} == {1}


def test_stale_append_below_commit_is_acknowledged_not_applied() -> None:
    """§5.4 (State Machine Safety): a committed entry is never replaced; an AppendEntries that
    would rewrite the committed prefix is answered with the commit index and changes nothing."""
    storage = log_storage(["n1", "n2", "n3"], [1, 1, 1], commit=2)
    raw, _ = make_node("n1", [], storage=storage)
    raw.step(AppendEntries(source="n2", target="n1", term=2, prev_log_index=1, prev_log_term=1,
                           entries=(Entry(term=2, index=2, data=b"evil"),), commit=2))
    sent: list[Message] = drive(raw, storage)
    assert [(m.success, m.index) for m in sent if isinstance(m, AppendEntriesResponse)] == [
        (True, 2)
    ]
    assert storage.entries(1, 4) == [Entry(term=1, index=i) for i in (1, 2, 3)]


def test_overwriting_a_committed_entry_is_an_invariant_violation() -> None:
    """§5.4 (Leader Completeness / State Machine Safety): forcing the log to replace a committed
    entry raises `InvariantViolation` instead of silently diverging."""
    storage = log_storage(["n1", "n2", "n3"], [1, 1, 1], commit=2)
    raw, _ = make_node("n1", [], storage=storage)
    log = raw.raft.log
    with pytest.raises(InvariantViolation, match="committed"):
        log.append([Entry(term=2, index=2)])
    with pytest.raises(InvariantViolation, match="committed"):
        log.maybe_append(1, 1, 0, (Entry(term=2, index=2),))
    assert log.term_or_none(2) == 1


FIGURE7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]


@pytest.mark.parametrize(
    "follower",
    [
        pytest.param([1, 1, 1, 4, 4, 5, 5, 6, 6], id="a-missing-one"),
        pytest.param([1, 1, 1, 4], id="b-missing-many"),
        pytest.param([1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], id="c-extra-uncommitted"),
        pytest.param([1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], id="d-extra-newer-term"),
        pytest.param([1, 1, 1, 4, 4, 4, 4], id="e-missing-and-extra"),
        pytest.param([1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], id="f-long-divergent-suffix"),
    ],
)
def test_leader_brings_figure7_followers_into_line(follower: list[int]) -> None:
    """§5.3, Figure 7: "the leader handles inconsistencies by forcing the followers' logs to
    duplicate its own": missing entries are sent, extraneous ones deleted."""
    net = Network.create(3, pre_vote=False)
    net.storages["n1"] = log_storage(["n1", "n2", "n3"], FIGURE7_LEADER, term=8, commit=10)
    net.storages["n2"] = log_storage(["n1", "n2", "n3"], follower, term=7)
    net.storages["n3"] = log_storage(["n1", "n2", "n3"], [], term=7)
    for node in ("n1", "n2", "n3"):
        net.restart(node)
    net.elect("n1")  # n3 supplies the majority when n2's log is newer (d)
    net.propose("n1", b"x")
    net.tick_all(2)
    assert net.log_terms("n2") == net.log_terms("n1")
    assert [term for _index, term in net.log_terms("n1")] == [*FIGURE7_LEADER, 9, 9]


@pytest.mark.parametrize("mutant", [False, True])
def test_new_leader_probes_from_just_after_its_last_entry(mutant: bool) -> None:
    """§5.3: "When a leader first comes to power, it initializes all nextIndex values to the
    index just after the last one in its log": its first append to each follower carries only
    its no-op, after its last entry, never the whole log nor a snapshot (as etcd). The planted
    bug `probe-from-start` probes from match + 1 = 1 instead: with a compacted log every
    follower, up to date or not, is sent a snapshot."""
    mutants = frozenset({"probe-from-start"}) if mutant else frozenset()
    net = Network.create(3, check_quorum=False, mutants=mutants)
    net.elect("n1")
    for number in range(5):
        net.propose("n1", b"v%d" % number)
    net.tick_all(2)
    last = net.nodes["n2"].raft.log.last_index()
    assert {raw.raft.log.last_index() for raw in net.nodes.values()} == {last}
    net.compact("n2")
    net.isolate("n1")
    net.delivered.clear()
    net.elect("n2")
    first: dict[str, Message] = {}
    for message in net.delivered:
        if message.source == "n2" and not isinstance(message, RequestVote):
            first.setdefault(message.target, message)
    if mutant:
        assert {type(m).__name__ for m in first.values()} == {"InstallSnapshot"}
        return
    assert {target: (type(m).__name__, m.prev_log_index, [e.index for e in m.entries])
            for target, m in first.items()
            if isinstance(m, AppendEntries)} == {"n3": ("AppendEntries", last, [last + 1])}
    assert not [m for m in net.delivered if isinstance(m, InstallSnapshot)]

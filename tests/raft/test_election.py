"""Leader election (§5.2, §5.4.1), PreVote and CheckQuorum (diss. §9.6, §6.2)."""

from __future__ import annotations

import pytest

from phalanx.raft import (
    AppendEntries,
    Heartbeat,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from phalanx.testing.raft_harness import (
    DEFAULT_ELECTION_TICKS,
    Network,
    drive,
    log_storage,
    make_node,
)

ELECTION = DEFAULT_ELECTION_TICKS


def ticks_until_campaign(seed: int, election_ticks: int = ELECTION) -> int:
    raw, _storage = make_node("n1", ["n1", "n2", "n3"], seed=seed, election_ticks=election_ticks)
    for tick in range(1, 4 * election_ticks):
        raw.tick()
        if raw.raft.role is not Role.FOLLOWER:
            return tick
    raise AssertionError("the follower never campaigned")


@pytest.mark.parametrize("seed", range(20))
def test_follower_campaigns_within_randomized_election_timeout(seed: int) -> None:
    """§5.2: "If a follower receives no communication over a period of time called the election
    timeout, then it ... begins an election"; timeouts are drawn from [T, 2T)."""
    ticks = ticks_until_campaign(seed)
    assert ELECTION <= ticks < 2 * ELECTION


def test_randomized_election_timeouts_differ_across_seeds() -> None:
    """§5.2: "Raft uses randomized election timeouts to ensure that split votes are rare"."""
    timeouts = {ticks_until_campaign(seed, election_ticks=50) for seed in range(20)}
    assert len(timeouts) > 5


def test_candidate_votes_for_itself_and_asks_every_voter() -> None:
    """§5.2: "a follower increments its current term ... votes for itself and issues RequestVote
    RPCs in parallel to each of the other servers"."""
    raw, storage = make_node("n1", ["n1", "n2", "n3"], pre_vote=False)
    raw.campaign()
    sent = drive(raw, storage)
    assert raw.raft.role is Role.CANDIDATE
    assert (raw.raft.term, raw.raft.vote) == (1, "n1")
    assert storage.initial_state()[0].vote == "n1"
    assert sorted((m.target, m.term, m.pre_vote) for m in sent) == [
        ("n2", 1, False), ("n3", 1, False)
    ]


@pytest.mark.parametrize(
    ("size", "responses", "role"),
    [
        (1, {}, Role.LEADER),
        (3, {"n2": True, "n3": True}, Role.LEADER),
        (3, {"n2": True}, Role.LEADER),
        (5, {"n2": True, "n3": True, "n4": True, "n5": True}, Role.LEADER),
        (5, {"n2": True, "n3": True}, Role.LEADER),
        (3, {}, Role.CANDIDATE),
        (5, {"n2": True}, Role.CANDIDATE),
        (5, {"n2": False, "n3": False}, Role.CANDIDATE),
        (3, {"n2": False, "n3": False}, Role.FOLLOWER),
        (5, {"n2": True, "n3": False, "n4": False, "n5": False}, Role.FOLLOWER),
    ],
)
def test_candidate_wins_with_majority_and_loses_without(
    size: int, responses: dict[str, bool], role: Role
) -> None:
    """§5.2: "A candidate wins an election if it receives votes from a majority of the servers in
    the full cluster for the same term"; a majority of rejections ends the attempt."""
    voters = [f"n{i}" for i in range(1, size + 1)]
    raw, storage = make_node("n1", voters, pre_vote=False)
    raw.campaign()
    drive(raw, storage)
    for source, granted in responses.items():
        raw.step(RequestVoteResponse(source=source, target="n1", term=1, granted=granted))
    assert raw.raft.role is role
    assert raw.raft.term == 1


def test_one_vote_per_term_first_come_first_served() -> None:
    """§5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis"; a repeated request from the same candidate is granted."""
    raw, storage = make_node("n1", ["n1", "n2", "n3"])

    def ask(source: str) -> bool:
        raw.step(RequestVote(source=source, target="n1", term=2, last_log_index=0,
                             last_log_term=0))
        (response,) = drive(raw, storage)
        assert isinstance(response, RequestVoteResponse) and response.target == source
        return response.granted

    assert ask("n2") is True
    assert ask("n3") is False
    assert ask("n2") is True
    assert storage.initial_state()[0].vote == "n2"


@pytest.mark.parametrize(
    ("voter_terms", "candidate_last_term", "candidate_last_index", "granted"),
    [
        # Same last term: the longer (or equal) log is at least as up to date.
        ([1], 1, 1, True),
        ([1], 1, 2, True),
        ([1, 1], 1, 1, False),
        # The candidate's last term is higher: always up to date.
        ([1], 2, 1, True),
        ([1, 1], 2, 1, True),
        # The voter's last term is higher: never, however long the candidate's log.
        ([1, 2], 1, 1, False),
        ([1, 2], 1, 9, False),
    ],
)
def test_vote_only_for_up_to_date_log(
    voter_terms: list[int], candidate_last_term: int, candidate_last_index: int, granted: bool
) -> None:
    """§5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
    candidate" (compare last terms, then lengths)."""
    storage = log_storage(["n1", "n2", "n3"], voter_terms)
    raw, _ = make_node("n1", [], storage=storage)
    raw.step(RequestVote(source="n2", target="n1", term=3, last_log_index=candidate_last_index,
                         last_log_term=candidate_last_term))
    (response,) = drive(raw, storage)
    assert isinstance(response, RequestVoteResponse)
    assert (response.granted, response.term) == (granted, 3)


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE, Role.LEADER])
def test_higher_term_makes_any_role_step_down(role: Role) -> None:
    """§5.1: "If a candidate or leader discovers that its term is out of date, it immediately
    reverts to follower state" and adopts the larger term."""
    raw, storage = make_node("n1", ["n1", "n2", "n3"], pre_vote=role is Role.PRE_CANDIDATE)
    if role is not Role.FOLLOWER:
        raw.campaign()
    if role is Role.LEADER:
        raw.step(RequestVoteResponse(source="n2", target="n1", term=1, granted=True))
    drive(raw, storage)
    assert raw.raft.role is role
    raw.step(AppendEntries(source="n2", target="n1", term=5, prev_log_index=0, prev_log_term=0,
                           entries=(), commit=0))
    assert (raw.raft.role, raw.raft.term, raw.raft.lead) == (Role.FOLLOWER, 5, "n2")


def test_candidate_returns_to_follower_on_append_entries_of_same_term() -> None:
    """§5.2: "If the leader's term ... is at least as large as the candidate's current term, then
    the candidate recognizes the leader as legitimate and returns to follower state"."""
    raw, storage = make_node("n1", ["n1", "n2", "n3"], pre_vote=False)
    raw.campaign()
    drive(raw, storage)
    raw.step(AppendEntries(source="n2", target="n1", term=1, prev_log_index=0, prev_log_term=0,
                           entries=(), commit=0))
    assert (raw.raft.role, raw.raft.term, raw.raft.lead) == (Role.FOLLOWER, 1, "n2")
    assert raw.raft.vote == "n1"  # the vote of term 1 is kept


def test_single_node_cluster_elects_itself() -> None:
    """§5.2: a candidate with votes from a majority (here: itself) becomes leader at once."""
    net = Network.create(1)
    net.tick_all(2 * ELECTION)
    assert net.leader() == "n1"
    raw = net.nodes["n1"]
    assert raw.raft.term == 1
    assert raw.raft.log.committed == 1  # its own no-op, durable on a majority of one


@pytest.mark.parametrize("seed", range(8))
def test_elections_converge_on_one_leader_per_term(seed: int) -> None:
    """§5.2 Election Safety: "at most one leader can be elected in a particular term"; randomized
    timeouts resolve split votes so a leader emerges."""
    net = Network.create(5, seed=seed)
    leaders_by_term: dict[int, set[str]] = {}
    for _ in range(6 * ELECTION):
        net.tick_all(1)
        for node in net.leaders():
            leaders_by_term.setdefault(net.nodes[node].raft.term, set()).add(node)
    assert net.leader() is not None
    assert all(len(leaders) == 1 for leaders in leaders_by_term.values())


def test_prevote_rejoining_node_does_not_bump_term_or_depose_leader() -> None:
    """diss. §9.6: with PreVote a partitioned server cannot win a pre-election, so it never
    increments its term, and rejoining does not disrupt the leader."""
    net = Network.create(3)
    net.elect("n1")
    net.isolate("n3")
    net.tick_all(10 * ELECTION)
    assert net.nodes["n3"].raft.term == 1
    net.recover()
    net.tick_all(3 * ELECTION)
    assert net.leaders() == ["n1"]
    assert {raw.raft.term for raw in net.nodes.values()} == {1}


def test_without_prevote_a_rejoining_node_disrupts_the_leader() -> None:
    """diss. §9.6 (the problem PreVote solves): an isolated server keeps incrementing its term and
    forces a new election when it rejoins."""
    net = Network.create(3, pre_vote=False)
    net.elect("n1")
    net.isolate("n3")
    net.tick_all(10 * ELECTION)
    assert net.nodes["n3"].raft.term > 3
    net.recover()
    net.tick_all(4 * ELECTION)
    assert net.nodes["n1"].raft.term > 1


def test_prevote_does_not_change_terms() -> None:
    """diss. §9.6: a pre-candidate "does not increment its term" and nobody adopts the term it
    asks about, whether the pre-vote is refused (voter in lease) or granted."""
    net = Network.create(3)
    net.elect("n1")
    net.isolate("n1")
    net.delivered.clear()
    net.tick_all(2 * ELECTION, nodes=["n2"])  # n3 does not tick: it still hears n1 recently
    pre_votes = [m for m in net.delivered if isinstance(m, RequestVote) and m.pre_vote]
    assert pre_votes and all(m.term == 2 for m in pre_votes)
    assert net.nodes["n2"].raft.role is Role.PRE_CANDIDATE
    assert (net.nodes["n2"].raft.term, net.nodes["n3"].raft.term) == (1, 1)
    # Once n3 timed out too, the pre-vote is granted and only then the real election bumps terms.
    net.tick_all(3 * ELECTION, nodes=["n2", "n3"])
    assert net.leader() in ("n2", "n3")
    assert net.nodes["n2"].raft.term == net.nodes["n3"].raft.term == 2


def test_check_quorum_isolated_leader_steps_down() -> None:
    """diss. §6.2 (CheckQuorum): a leader that does not hear from a majority within an election
    timeout steps down, so a partitioned leader stops serving."""
    net = Network.create(3)
    net.elect("n1")
    net.tick_all(ELECTION)  # a steady state: followers have answered
    net.isolate("n1")
    for _ in range(2 * ELECTION):
        net.tick("n1")
    assert net.nodes["n1"].raft.role is Role.FOLLOWER


def test_without_check_quorum_an_isolated_leader_stays_leader() -> None:
    """diss. §6.2: the step-down above is CheckQuorum's doing (control case)."""
    net = Network.create(3, check_quorum=False)
    net.elect("n1")
    net.isolate("n1")
    net.tick("n1", 5 * ELECTION)
    assert net.nodes["n1"].raft.role is Role.LEADER


def test_check_quorum_follower_in_lease_ignores_request_vote() -> None:
    """diss. §9.6 (and §4.2.3): a follower that heard from a leader within the minimum election
    timeout ignores RequestVote, so a disruptive server cannot depose a healthy leader."""
    net = Network.create(3)
    net.elect("n1")
    net.tick_all(1)
    net.delivered.clear()
    vote = RequestVote(source="n3", target="n2", term=5, last_log_index=9, last_log_term=9)
    net.send(vote)
    net.stabilize()
    assert net.nodes["n2"].raft.term == 1
    assert not [m for m in net.delivered if isinstance(m, RequestVoteResponse)]
    # Once the lease has passed without news from the leader, the same request is granted.
    net.isolate("n1")
    net.tick("n2", ELECTION)
    net.send(vote)
    net.stabilize()
    responses = [m for m in net.delivered if isinstance(m, RequestVoteResponse)]
    assert [(r.source, r.granted, r.term) for r in responses] == [("n2", True, 5)]


def test_stale_leader_learns_newer_term_and_steps_down() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects the request";
    the rejection carries the newer term, so an old leader that rejoins steps down."""
    net = Network.create(3, check_quorum=False)
    net.elect("n1")
    net.isolate("n1")
    net.elect("n2")
    net.recover()
    net.tick("n1")  # n1 still believes it leads and sends a heartbeat of term 1
    assert any(isinstance(m, Heartbeat) and m.term == 1 for m in net.queue)
    net.stabilize()
    assert net.nodes["n1"].raft.role is Role.FOLLOWER
    assert net.nodes["n1"].raft.term == 2
    assert net.leaders() == ["n2"]


def test_campaign_on_leader_is_ignored() -> None:
    """§5.2: a leader has no election to start; a stray local campaign request (tooling, the
    connection-reset fast path, docs/architecture.md) must leave it leading."""
    net = Network.create(3)
    net.elect("n1")
    net.nodes["n1"].campaign()
    assert net.nodes["n1"].raft.role is Role.LEADER and net.nodes["n1"].raft.term == 1


def _pre_vote_from_n2(net: Network) -> RequestVote:
    leader = net.nodes["n1"].raft
    return RequestVote(source="n2", target="n3", term=leader.term + 1,
                       last_log_index=leader.log.last_index(), last_log_term=leader.term,
                       pre_vote=True)


@pytest.mark.parametrize("mutant", [False, True])
def test_restarted_follower_grants_no_pre_vote_within_an_election_timeout(mutant: bool) -> None:
    """diss. §9.6: a pre-vote is granted only by a voter that has "not received heartbeats from
    a valid leader for at least a baseline election timeout". A restarted replica cannot know
    what it heard just before it stopped, so it waits one election timeout after the restart
    (etcd grants at once: its leader is unknown after a restart; the planted bug
    `prevote-after-restart` restores that). Afterwards, with no news from a leader, it grants."""
    mutants = frozenset({"prevote-after-restart"}) if mutant else frozenset()
    net = Network.create(3, mutants=mutants)
    net.elect("n1")
    net.propose("n1", b"x")
    net.isolate("n1")
    net.restart("n3", mutants=mutants)
    net.delivered.clear()
    net.send(_pre_vote_from_n2(net))
    net.stabilize()
    granted = [(m.source, m.granted) for m in net.delivered if isinstance(m, RequestVoteResponse)]
    if mutant:
        assert granted == [("n3", True)]
        return
    assert granted == []
    net.tick("n3", ELECTION - 1)
    net.send(_pre_vote_from_n2(net))
    net.stabilize()
    assert [m for m in net.delivered if isinstance(m, RequestVoteResponse)] == []
    net.tick("n3", 1)  # one election timeout since the restart, no leader heard
    net.delivered.clear()
    net.send(_pre_vote_from_n2(net))
    net.stabilize()
    assert [(m.source, m.granted) for m in net.delivered
            if isinstance(m, RequestVoteResponse)] == [("n3", True)]


def test_brand_new_replicas_grant_pre_votes_at_once() -> None:
    """A replica with no term yet never heard a leader (nothing to wait for): a new cluster, or
    a shard's new group, elects on the first campaign, as etcd does."""
    net = Network.create(3)
    assert {raw.raft.term for raw in net.nodes.values()} == {0}
    net.elect("n2")
    assert net.leaders() == ["n2"]


def test_restarted_cluster_elects_after_an_election_timeout() -> None:
    """Every replica restarted (terms > 0): the first campaign within the election timeout gets
    no pre-votes; the cluster still elects once the timeouts run (liveness)."""
    net = Network.create(3)
    net.elect("n1")
    net.propose("n1", b"x")
    for node in ("n1", "n2", "n3"):
        net.restart(node)
    net.campaign("n2")
    assert net.leaders() == []
    net.tick_all(3 * ELECTION)
    assert len(net.leaders()) == 1

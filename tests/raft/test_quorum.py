"""Quorum arithmetic against naive oracles that enumerate subsets (§5.2, §5.3; diss. §4.3)."""

from __future__ import annotations

from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.raft.quorum import (
    INFINITE_INDEX,
    VoteResult,
    joint_index,
    joint_vote,
    majority_index,
    majority_vote,
    quorum_active,
)

NODES = [f"n{i}" for i in range(1, 8)]

voter_sets = st.lists(st.sampled_from(NODES), unique=True, max_size=7)
acks = st.dictionaries(st.sampled_from(NODES), st.integers(min_value=0, max_value=20))
votes = st.dictionaries(st.sampled_from(NODES), st.booleans())


def majorities(voters: list[str]) -> list[tuple[str, ...]]:
    """Every subset of `voters` that is a strict majority."""
    quorum = len(voters) // 2 + 1
    return [subset for size in range(quorum, len(voters) + 1)
            for subset in combinations(voters, size)]


def oracle_index(voters: list[str], acked: dict[str, int]) -> int:
    """The largest value every member of some majority reached."""
    if not voters:
        return INFINITE_INDEX
    return max(min(acked.get(v, 0) for v in subset) for subset in majorities(voters))


def oracle_vote(voters: list[str], tally: dict[str, bool]) -> VoteResult:
    """WON if some majority all granted; LOST if no majority can still grant; else PENDING."""
    if not voters:
        return VoteResult.WON
    subsets = majorities(voters)
    if any(all(tally.get(v) is True for v in s) for s in subsets):
        return VoteResult.WON
    if not any(all(tally.get(v) is not False for v in s) for s in subsets):
        return VoteResult.LOST
    return VoteResult.PENDING


@settings(max_examples=300)
@given(voter_sets, acks)
def test_majority_index_matches_subset_oracle(voters: list[str], acked: dict[str, int]) -> None:
    """§5.3: an index is committed when "replicated it on a majority of the servers"."""
    assert majority_index(voters, acked) == oracle_index(voters, acked)


@settings(max_examples=300)
@given(voter_sets, voter_sets, acks)
def test_joint_index_needs_both_majorities(
    incoming: list[str], outgoing: list[str], acked: dict[str, int]
) -> None:
    """diss. §4.3: in C_old,new commitment "requires separate majorities from both"."""
    expected = min(oracle_index(incoming, acked), oracle_index(outgoing, acked))
    assert joint_index(incoming, outgoing, acked) == expected
    assert joint_index(incoming, [], acked) == majority_index(incoming, acked)


@settings(max_examples=300)
@given(voter_sets, votes)
def test_majority_vote_matches_subset_oracle(voters: list[str], tally: dict[str, bool]) -> None:
    """§5.2: a candidate wins with "votes from a majority of the servers"; it has lost once a
    majority can no longer be reached."""
    assert majority_vote(voters, tally) is oracle_vote(voters, tally)


@settings(max_examples=300)
@given(voter_sets, voter_sets, votes)
def test_joint_vote_matches_subset_oracle(
    incoming: list[str], outgoing: list[str], tally: dict[str, bool]
) -> None:
    """diss. §4.3: elections in C_old,new need a majority of both halves: won when both are won,
    lost as soon as either is lost."""
    first, second = oracle_vote(incoming, tally), oracle_vote(outgoing, tally)
    if VoteResult.LOST in (first, second):
        expected = VoteResult.LOST
    elif first is second is VoteResult.WON:
        expected = VoteResult.WON
    else:
        expected = VoteResult.PENDING
    assert joint_vote(incoming, outgoing, tally) is expected


@settings(max_examples=200)
@given(voter_sets, voter_sets, st.lists(st.sampled_from(NODES), unique=True))
def test_quorum_active_is_a_won_joint_vote(
    incoming: list[str], outgoing: list[str], active: list[str]
) -> None:
    """diss. §6.2 (CheckQuorum): the active nodes must form a quorum of every half."""
    expected = all(
        not half or any(set(s) <= set(active) for s in majorities(half))
        for half in (incoming, outgoing)
    )
    assert quorum_active(incoming, outgoing, active) is expected


@given(voter_sets, acks)
def test_majority_index_is_monotonic_in_acks(voters: list[str], acked: dict[str, int]) -> None:
    """§5.3: a follower's acknowledgement can only raise what a majority holds (commit never
    goes back)."""
    before = majority_index(voters, acked)
    for node in voters:
        raised = {**acked, node: acked.get(node, 0) + 1}
        assert majority_index(voters, raised) >= before


def test_empty_configuration_half_agrees_to_everything() -> None:
    """diss. §4.3: a non-joint configuration is a joint one with an empty outgoing half."""
    assert majority_index([], {}) == INFINITE_INDEX
    assert majority_vote([], {}) is VoteResult.WON
    assert joint_vote(["n1"], [], {"n1": True}) is VoteResult.WON

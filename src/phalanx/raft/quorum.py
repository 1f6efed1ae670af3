"""Quorum arithmetic for majority and joint configurations (§5.2, §5.3; dissertation §4.3).

Rules of this file:
- Pure functions over plain mappings; no knowledge of roles, messages or logs.
- A joint configuration needs a majority of *both* halves; an empty half agrees to everything,
  so a non-joint configuration is a joint one with an empty outgoing half.
- Checked against a naive oracle by property tests (tests/raft/test_quorum.py).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

from phalanx.raft.types import NodeId

INFINITE_INDEX = 1 << 62
"""What an empty voter set "commits": it never holds back the other half of a joint config."""


class VoteResult(enum.Enum):
    """The outcome of an election so far."""

    PENDING = "pending"
    LOST = "lost"
    WON = "won"


def majority_index(voters: Collection[NodeId], acked: Mapping[NodeId, int]) -> int:
    """The largest value that a majority of `voters` has reached in `acked` (missing = 0).

    For match indexes this is the index a majority holds (§5.3); for heartbeat rounds it is the
    newest round a majority acknowledged (ReadIndex, dissertation §6.4).
    """
    if not voters:
        return INFINITE_INDEX
    values = sorted((acked.get(voter, 0) for voter in voters), reverse=True)
    return values[len(values) // 2]


def joint_index(
    incoming: Collection[NodeId], outgoing: Collection[NodeId], acked: Mapping[NodeId, int]
) -> int:
    """The largest value that a majority of both halves of a joint configuration reached."""
    return min(majority_index(incoming, acked), majority_index(outgoing, acked))


def majority_vote(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """Tally `votes` (True = granted, False = rejected, missing = pending) among `voters`."""
    if not voters:
        return VoteResult.WON
    granted = sum(1 for voter in voters if votes.get(voter) is True)
    rejected = sum(1 for voter in voters if votes.get(voter) is False)
    quorum = len(voters) // 2 + 1
    if granted >= quorum:
        return VoteResult.WON
    if len(voters) - rejected < quorum:
        return VoteResult.LOST
    return VoteResult.PENDING


def joint_vote(
    incoming: Collection[NodeId], outgoing: Collection[NodeId], votes: Mapping[NodeId, bool]
) -> VoteResult:
    """Tally votes in a joint configuration: won only if both halves won (§4.3)."""
    first = majority_vote(incoming, votes)
    second = majority_vote(outgoing, votes)
    if first is second:
        return first
    if VoteResult.LOST in (first, second):
        return VoteResult.LOST
    return VoteResult.PENDING


def quorum_active(
    incoming: Collection[NodeId], outgoing: Collection[NodeId], active: Collection[NodeId]
) -> bool:
    """True if the nodes in `active` form a quorum of the (possibly joint) configuration."""
    votes = {node: True for node in active}
    return joint_vote(incoming, outgoing, votes) is VoteResult.WON

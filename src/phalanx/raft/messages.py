"""Messages that Raft peers exchange (§5, Figure 2; dissertation §3.10, §4, §6.4, §9.6).

Rules of this file:
- Every message is a frozen, slotted, keyword-only dataclass with `source`, `target` and `term`.
- A message never carries a group id: the node runtime wraps messages with their group.
- Names follow the paper: RequestVote, AppendEntries, InstallSnapshot, TimeoutNow.
"""

from __future__ import annotations

from dataclasses import dataclass

from phalanx.raft.types import Entry, Index, NodeId, Snapshot, Term


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVote:
    """A candidate (or pre-candidate) asks for a vote (§5.2; PreVote: dissertation §9.6).

    For a PreVote, `term` is the term the sender *would* campaign in; nobody changes its term
    because of it. `leadership_transfer` marks a campaign started by TimeoutNow (§3.10), which may
    disrupt a live leader on purpose.
    """

    source: NodeId
    target: NodeId
    term: Term
    last_log_index: Index
    last_log_term: Term
    pre_vote: bool = False
    leadership_transfer: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVoteResponse:
    """The answer to a RequestVote; `term` is the voter's term (or the asked term for PreVote)."""

    source: NodeId
    target: NodeId
    term: Term
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntries:
    """Log replication (§5.3): entries after (prev_log_index, prev_log_term), and the commit index."""

    source: NodeId
    target: NodeId
    term: Term
    prev_log_index: Index
    prev_log_term: Term
    entries: tuple[Entry, ...]
    commit: Index


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntriesResponse:
    """Success: the follower's log matches up to `index`. Rejection: `index` is the rejected
    prev_log_index and `reject_hint` the follower's last index, so the leader backs up fast."""

    source: NodeId
    target: NodeId
    term: Term
    success: bool
    index: Index
    reject_hint: Index = Index(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """Leader's periodic message (§5.2). `commit` is capped at what the follower is known to hold.
    `round` numbers heartbeat rounds: a quorum of acks for a round confirms leadership for every
    read request registered before the round was sent (ReadIndex, dissertation §6.4), and its send
    time starts a leader lease (§6.4.1)."""

    source: NodeId
    target: NodeId
    term: Term
    commit: Index
    round: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatResponse:
    """A follower acknowledges heartbeat round `round`."""

    source: NodeId
    target: NodeId
    term: Term
    round: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot:
    """The leader sends its snapshot to a follower that needs compacted entries (§7)."""

    source: NodeId
    target: NodeId
    term: Term
    snapshot: Snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow:
    """Leadership transfer: the target starts an election at once (dissertation §3.10)."""

    source: NodeId
    target: NodeId
    term: Term


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndexRequest:
    """A follower forwards a linearizable read to the leader (dissertation §6.4)."""

    source: NodeId
    target: NodeId
    term: Term
    context: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndexResponse:
    """The leader answers a forwarded read: the follower may serve it once it has applied `index`.
    `index` is 0 when the leader could not serve the read (for example it lost leadership)."""

    source: NodeId
    target: NodeId
    term: Term
    context: bytes
    index: Index


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
)
"""Every message a peer may send."""

MESSAGE_TYPES: tuple[type, ...] = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
)

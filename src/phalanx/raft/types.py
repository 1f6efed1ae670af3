"""Plain data of the Raft core: identifiers, log entries, persistent state and snapshots.

Rules of this file:
- Only frozen, slotted dataclasses and `NewType`s; no behaviour beyond validation helpers.
- Standard library only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NewType

NodeId = NewType("NodeId", str)
"""The identity of a Raft peer (for example "n1"). The empty string means "nobody"."""

Term = NewType("Term", int)
Index = NewType("Index", int)
GroupId = NewType("GroupId", int)
"""Identifies one Raft group (one shard) among the many a node hosts."""

NO_NODE = NodeId("")


class Role(enum.Enum):
    """The role a replica plays (§5.1), plus the pre-candidate of PreVote (diss. §9.6)."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class EntryType(enum.IntEnum):
    """What an entry carries: application data or a membership change."""

    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. An entry with empty `data` of type NORMAL is a leader's no-op (§5.4.2)."""

    term: Term
    index: Index
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must survive a crash besides the log (§5, Figure 2): term, vote, commit index."""

    term: Term = Term(0)
    vote: NodeId = NO_NODE
    commit: Index = Index(0)


@dataclass(frozen=True, slots=True)
class ConfState:
    """A membership configuration (dissertation §4).

    `voters_outgoing` is non-empty only in a joint configuration C_old,new: then decisions need a
    majority of `voters` AND a majority of `voters_outgoing` (§4.3). `learners` receive the log but
    never vote or count toward a quorum. `learners_next` are voters of the outgoing configuration
    that become learners when the joint configuration is left. `auto_leave` asks the leader to
    propose leaving the joint configuration as soon as it has applied entering it.
    """

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()
    voters_outgoing: tuple[NodeId, ...] = ()
    learners_next: tuple[NodeId, ...] = ()
    auto_leave: bool = False

    @property
    def joint(self) -> bool:
        """True while in the joint configuration C_old,new."""
        return bool(self.voters_outgoing)

    def all_members(self) -> tuple[NodeId, ...]:
        """Every node that receives the log, sorted and without repeats."""
        return tuple(
            sorted(set(self.voters) | set(self.learners) | set(self.voters_outgoing)
                   | set(self.learners_next))
        )


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log and which configuration was in force there (§7)."""

    index: Index = Index(0)
    term: Term = Term(0)
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image at `meta.index`; `data` is opaque to the Raft core."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    @property
    def empty(self) -> bool:
        """True for the "no snapshot" value."""
        return self.meta.index == 0


class ConfChangeType(enum.IntEnum):
    """One step of a membership change."""

    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE_NODE = 2


@dataclass(frozen=True, slots=True)
class ConfChangeSingle:
    """Add a voter, add a learner (or demote a voter to learner), or remove a node."""

    type: ConfChangeType
    node_id: NodeId


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A membership change proposal (dissertation §4).

    An empty `changes` tuple means "leave the joint configuration". A change that alters the voter
    set by at most one node is applied directly (single-server change, §4.1); anything larger goes
    through a joint configuration (§4.3) that the leader leaves automatically unless
    `use_joint` is forced and `auto_leave` is False.
    """

    changes: tuple[ConfChangeSingle, ...] = ()
    use_joint: bool = False
    auto_leave: bool = True

    @property
    def leave_joint(self) -> bool:
        """True when this change only leaves the joint configuration."""
        return not self.changes

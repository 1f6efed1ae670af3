"""Membership changes: single-server changes and joint consensus (dissertation §4).

Rules of this file:
- Pure functions from (ConfState, ConfChange) to a new ConfState; errors raise `ConfigError`
  naming the broken rule.
- A change that alters the voter set by at most one node applies directly (§4.1, "single-server
  changes"); larger changes enter the joint configuration C_old,new (§4.3) and leave it with a
  second change. Learners never vote and never count toward a quorum (§4.2.1).
- The configuration takes effect when its entry is *applied*; only one change may be pending at
  a time, and a new leader must commit an entry of its own term first, which closes the
  single-server-change hazard Ongaro described on raft-dev (2015).
"""

from __future__ import annotations

import json

from phalanx.errors import ConfigError, Corrupt
from phalanx.raft.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    NodeId,
)


def encode_conf_change(change: ConfChange) -> bytes:
    """Serialize a membership change for the log."""
    body = {
        "changes": [[int(single.type), single.node_id] for single in change.changes],
        "use_joint": change.use_joint,
        "auto_leave": change.auto_leave,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def decode_conf_change(data: bytes) -> ConfChange:
    """Parse a membership change from the log; raises `Corrupt` on garbage."""
    try:
        body = json.loads(data)
        changes = tuple(
            ConfChangeSingle(type=ConfChangeType(int(kind)), node_id=NodeId(str(node)))
            for kind, node in body["changes"]
        )
        return ConfChange(
            changes=changes, use_joint=bool(body["use_joint"]), auto_leave=bool(body["auto_leave"])
        )
    except (ValueError, KeyError, TypeError) as error:
        raise Corrupt(f"undecodable configuration change: {error}") from error


def _needs_joint(conf: ConfState, change: ConfChange) -> bool:
    voters = set(conf.voters)
    after = set(voters)
    for single in change.changes:
        if single.type is ConfChangeType.ADD_VOTER:
            after.add(single.node_id)
        else:
            after.discard(single.node_id)
    return change.use_joint or len(voters ^ after) > 1


def apply_conf_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The configuration that results from applying `change` to `conf`."""
    if change.leave_joint:
        if not conf.joint:
            raise ConfigError("leave-joint: the configuration is not joint")
        learners = sorted(set(conf.learners) | set(conf.learners_next))
        return ConfState(voters=conf.voters, learners=tuple(learners))
    if conf.joint:
        raise ConfigError("a configuration change needs the joint configuration to be left first")
    joint = _needs_joint(conf, change)
    voters = list(conf.voters)
    learners = list(conf.learners)
    learners_next: list[NodeId] = []
    outgoing = set(conf.voters) if joint else set()
    for single in change.changes:
        node = single.node_id
        if not node:
            raise ConfigError("a configuration change must name a node")
        if single.type is ConfChangeType.ADD_VOTER:
            if node in learners:
                learners.remove(node)
            if node not in voters:
                voters.append(node)
        elif single.type is ConfChangeType.ADD_LEARNER:
            if node in voters:
                voters.remove(node)
                if node in outgoing:
                    # A voter of C_old stays a voter there until the joint config is left (§4.3).
                    learners_next.append(node)
                    continue
            if node not in learners:
                learners.append(node)
        else:
            if node in voters:
                voters.remove(node)
            if node in learners:
                learners.remove(node)
    if not voters:
        raise ConfigError("a configuration change must leave at least one voter")
    return ConfState(
        voters=tuple(sorted(voters)),
        learners=tuple(sorted(learners)),
        voters_outgoing=tuple(sorted(outgoing)),
        learners_next=tuple(sorted(learners_next)),
        auto_leave=joint and change.auto_leave,
    )

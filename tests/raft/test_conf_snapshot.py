"""A configuration entry the installed snapshot already includes is not applied again
(dissertation §5.1: a snapshot carries the latest configuration as of its last included index;
§4.1: each configuration entry takes effect once).

The hazard (simulator seed 5004616): a follower is handed a Ready whose committed entries hold a
configuration change, and with synchronous writes it applies that Ready only once its fsync is
done. Messages are stepped meanwhile; an InstallSnapshot taken after the change switches the
core to the snapshot's configuration at once. The held Ready then applies the change a second
time, on top of the configuration it already produced.
"""

from __future__ import annotations

from phalanx.raft import (
    AppendEntries,
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Index,
    InstallSnapshot,
    RawNode,
    Ready,
    Snapshot,
    SnapshotMeta,
    Term,
    apply_conf_change,
    decode_conf_change,
    encode_conf_change,
)
from phalanx.testing.raft_harness import log_storage, make_node, persist

VOTERS = ("n1", "n2", "n3")
#: Add n4 and remove n3 at once: the joint configuration C_old,new (§4.3).
SWAP = ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_VOTER, "n4"),
                           ConfChangeSingle(ConfChangeType.REMOVE_NODE, "n3")))
JOINT = apply_conf_change(ConfState(voters=VOTERS), SWAP)


def _conf_entry(index: int, change: ConfChange) -> Entry:
    return Entry(term=Term(1), index=Index(index), type=EntryType.CONF_CHANGE,
                 data=encode_conf_change(change))


def _held_ready_with(entries: list[Entry], *, applied: int = 2) -> tuple[RawNode, Ready]:
    """Follower n1 (log 1..2, term 1) receives `entries`, applies those up to `applied`, then
    learns that the rest committed; returns the node and the Ready that hands the rest out as
    committed, not yet applied (held for its fsync)."""
    storage = log_storage(VOTERS, [1, 1], commit=2)
    raw, _ = make_node("n1", [], storage=storage)
    last = entries[-1].index
    raw.step(AppendEntries(source="n2", target="n1", term=1, prev_log_index=2, prev_log_term=1,
                           entries=tuple(entries), commit=Index(applied)))
    while (first := raw.ready()) is not None:
        persist(storage, first)
        _apply(raw, first)
    raw.step(AppendEntries(source="n2", target="n1", term=1, prev_log_index=last,
                           prev_log_term=1, entries=(), commit=Index(last)))
    held = raw.ready()
    assert held is not None
    assert [e.index for e in held.committed_entries] == list(range(applied + 1, last + 1))
    return raw, held


def _install(raw: RawNode, index: int, conf: ConfState) -> None:
    snapshot = Snapshot(meta=SnapshotMeta(index=Index(index), term=Term(1), conf_state=conf))
    raw.step(InstallSnapshot(source="n2", target="n1", term=1, snapshot=snapshot))
    assert raw.conf == conf  # the core switched to the snapshot's configuration at once


def _apply(raw: RawNode, rd: Ready) -> None:
    for entry in rd.committed_entries:
        if entry.type is EntryType.CONF_CHANGE:
            raw.apply_conf_change(decode_conf_change(entry.data), entry.index)
    raw.advance(rd)


def test_change_already_in_the_installed_snapshot_is_not_applied_twice() -> None:
    """Seed 5004616's shape: entering the joint configuration at 3 is held; a snapshot at 5
    taken inside that joint configuration arrives; applying entry 3 again used to raise
    ConfigError ("needs the joint configuration to be left first")."""
    raw, held = _held_ready_with([_conf_entry(3, SWAP)])
    _install(raw, 5, JOINT)
    _apply(raw, held)
    assert raw.conf == JOINT
    assert raw.raft.conf_index == 5


def test_leave_joint_already_in_the_installed_snapshot_does_not_leave_a_later_joint() -> None:
    """The silent variant: a held leave-joint (entry 4) meets a snapshot at 6 that is already
    inside a *later* joint configuration; applying the leave-joint again would quietly drop
    C_old of that later change (wrong quorums, no error)."""
    raw, held = _held_ready_with([_conf_entry(3, SWAP), _conf_entry(4, ConfChange())],
                                 applied=3)
    assert raw.conf == JOINT
    later = apply_conf_change(apply_conf_change(JOINT, ConfChange()), ConfChange(changes=(
        ConfChangeSingle(ConfChangeType.ADD_VOTER, "n3"),
        ConfChangeSingle(ConfChangeType.REMOVE_NODE, "n1"))))
    assert later.joint
    _install(raw, 6, later)
    _apply(raw, held)
    assert raw.conf == later


def test_changes_after_the_snapshot_still_apply() -> None:
    """Entries past the snapshot's index are new: they take effect as usual."""
    storage = log_storage(VOTERS, [1, 1], commit=2)
    raw, _ = make_node("n1", [], storage=storage)
    raw.step(AppendEntries(source="n2", target="n1", term=1, prev_log_index=2, prev_log_term=1,
                           entries=(_conf_entry(3, SWAP), _conf_entry(4, ConfChange())),
                           commit=Index(4)))
    while (rd := raw.ready()) is not None:
        persist(storage, rd)
        _apply(raw, rd)
    assert raw.conf == apply_conf_change(JOINT, ConfChange())
    assert raw.raft.conf_index == 4

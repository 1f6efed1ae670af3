"""Membership changes: learners, single-server changes, joint consensus (diss. §4)."""

from __future__ import annotations

import pytest

from phalanx.errors import ConfigError, ProposalDropped
from phalanx.raft import (
    AppendEntries,
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    EntryType,
    RequestVote,
    Role,
    apply_conf_change,
    decode_conf_change,
)
from phalanx.testing.raft_harness import DEFAULT_ELECTION_TICKS, Network

ELECTION = DEFAULT_ELECTION_TICKS
ADD_VOTER = ConfChangeType.ADD_VOTER
ADD_LEARNER = ConfChangeType.ADD_LEARNER
REMOVE = ConfChangeType.REMOVE_NODE


def change(*singles: tuple[ConfChangeType, str], **options: bool) -> ConfChange:
    return ConfChange(changes=tuple(ConfChangeSingle(t, n) for t, n in singles), **options)


def apply_change(net: Network, leader: str, conf_change: ConfChange) -> None:
    net.nodes[leader].propose_conf_change(conf_change)
    net.stabilize()


def steady(voters: int = 3) -> Network:
    net = Network.create(voters)
    net.elect("n1")
    net.tick_all(1)
    return net


def test_added_learner_receives_the_log_but_is_not_counted() -> None:
    """diss. §4.2.1: a learner ("non-voting member") receives log entries but "is not considered
    for majorities"; it replays the whole log, configuration changes included."""
    net = steady()
    net.propose("n1", b"before")
    net.add_node("n4")
    apply_change(net, "n1", change((ADD_LEARNER, "n4")))
    for node in ("n1", "n2", "n3", "n4"):
        assert net.nodes[node].raft.conf == ConfState(voters=("n1", "n2", "n3"), learners=("n4",))
    assert net.applied["n4"] == [b"before"]
    net.cut("n1", "n2")
    net.cut("n1", "n3")
    index, _ = net.nodes["n1"].propose(b"after")
    net.tick_all(3, nodes=["n1", "n4"])
    assert net.nodes["n4"].raft.log.last_index() >= index
    assert net.nodes["n1"].raft.log.committed < index  # n1 + learner n4 is no majority


def test_learner_never_campaigns_and_is_never_asked_to_vote() -> None:
    """diss. §4.2.1: learners cannot become leader: they neither campaign nor receive votes."""
    net = Network.create(3, learners=["n4"])
    net.isolate("n4")
    net.tick("n4", 10 * ELECTION)
    raw = net.nodes["n4"]
    assert (raw.raft.role, raw.raft.term) == (Role.FOLLOWER, 0)
    net.recover()
    net.tick_all(3 * ELECTION)
    assert net.leader() in ("n1", "n2", "n3")
    assert not [m for m in net.delivered if isinstance(m, RequestVote) and m.target == "n4"]


def test_promoted_learner_becomes_a_voter() -> None:
    """diss. §4.2.1: once caught up, a learner is promoted with an ordinary configuration change
    and then counts toward majorities and may lead."""
    net = steady()
    net.add_node("n4")
    apply_change(net, "n1", change((ADD_LEARNER, "n4")))
    apply_change(net, "n1", change((ADD_VOTER, "n4")))
    for raw in net.nodes.values():
        assert raw.raft.conf == ConfState(voters=("n1", "n2", "n3", "n4"))
    # Four voters: n1 + n2 is no majority any more.
    net.isolate("n3")
    net.isolate("n4")
    index, _ = net.nodes["n1"].propose(b"two of four")
    net.stabilize()
    assert net.nodes["n1"].raft.log.committed < index
    net.recover()
    net.stabilize()
    net.nodes["n1"].transfer_leader("n4")
    net.stabilize()
    assert net.leaders() == ["n4"]


def test_removed_node_no_longer_counts_or_receives() -> None:
    """diss. §4.1: after removing a server, majorities are computed over the new configuration,
    and the leader stops replicating to the removed server."""
    net = steady()
    apply_change(net, "n1", change((REMOVE, "n3")))
    assert net.nodes["n1"].raft.conf.voters == ("n1", "n2")
    assert "n3" not in net.nodes["n1"].raft.progress
    net.delivered.clear()
    index, _ = net.propose("n1", b"x")
    assert net.nodes["n2"].raft.log.committed == index
    assert not [m for m in net.delivered if m.target == "n3"]


def test_removed_leader_steps_down_and_hands_over() -> None:
    """diss. §4.2.2: a leader removed from the configuration steps down once the change is
    committed; it hands leadership to a remaining voter (§3.10) rather than leave the others to
    time out."""
    net = steady()
    apply_change(net, "n1", change((REMOVE, "n1")))
    assert not net.nodes["n1"].raft.promotable()
    assert net.nodes["n2"].raft.conf.voters == ("n2", "n3")
    net.tick_all(2 * ELECTION)
    assert net.nodes["n1"].raft.role is Role.FOLLOWER
    assert net.leaders() in (["n2"], ["n3"])
    index, _ = net.propose(net.leaders()[0], b"after removal")
    assert net.nodes["n2"].raft.log.committed == net.nodes["n3"].raft.log.committed == index


def test_joint_consensus_swaps_two_voters_and_leaves_automatically() -> None:
    """diss. §4.3: replacing two servers at once goes through C_old,new; the leader leaves the
    joint configuration by itself once entering it is applied."""
    net = steady()
    net.add_node("n4")
    net.add_node("n5")
    apply_change(net, "n1", change((ADD_VOTER, "n4"), (ADD_VOTER, "n5"), (REMOVE, "n2"),
                                   (REMOVE, "n3")))
    final = ConfState(voters=("n1", "n4", "n5"))
    for node in ("n1", "n4", "n5"):
        assert net.nodes[node].raft.conf == final
    conf_entries = [decode_conf_change(e.data) for e in net.applied_entries["n1"]
                    if e.type is EntryType.CONF_CHANGE]
    assert len(conf_entries) == 2 and conf_entries[1].leave_joint
    net.isolate("n2")
    net.isolate("n3")
    index, _ = net.propose("n1", b"new config")
    assert net.nodes["n4"].raft.log.committed == index


def test_joint_configuration_needs_both_majorities() -> None:
    """diss. §4.3: in C_old,new "agreement (for elections and entry commitment) requires separate
    majorities from both the old and new configurations"."""
    net = steady()
    net.add_node("n4")
    net.add_node("n5")
    apply_change(net, "n1", change((ADD_VOTER, "n4"), (ADD_VOTER, "n5"), (REMOVE, "n2"),
                                   (REMOVE, "n3"), auto_leave=False))
    conf = net.nodes["n1"].raft.conf
    assert conf.joint and conf.voters == ("n1", "n4", "n5")
    assert conf.voters_outgoing == ("n1", "n2", "n3")
    for outside, inside in ((("n4", "n5"), "old"), (("n2", "n3"), "new")):
        for node in outside:
            net.isolate(node)
        index, _ = net.nodes["n1"].propose(inside.encode())
        net.tick_all(2)
        assert net.nodes["n1"].raft.log.committed < index, f"committed by the {inside} half"
        net.recover()
        net.tick_all(2)
        assert net.nodes["n1"].raft.log.committed >= index
    apply_change(net, "n1", ConfChange())
    assert net.nodes["n1"].raft.conf == ConfState(voters=("n1", "n4", "n5"))


def test_only_one_conf_change_may_be_pending() -> None:
    """diss. §4.1: "a leader ... will not start another change until the first has been
    committed"; a second proposal is dropped (`ProposalDropped`)."""
    net = steady()
    net.nodes["n1"].propose_conf_change(change((ADD_LEARNER, "n4")))
    with pytest.raises(ProposalDropped, match="pending"):
        net.nodes["n1"].propose_conf_change(change((ADD_LEARNER, "n5")))
    net.stabilize()
    net.nodes["n1"].propose_conf_change(change((ADD_LEARNER, "n5")))


def test_new_leader_waits_for_an_inherited_conf_change() -> None:
    """diss. §4.1: a new leader whose log holds an uncommitted configuration change of an earlier
    term must not start another change before that one is committed and applied."""
    net = steady()
    net.cut("n1", "n3")
    net.nodes["n1"].propose_conf_change(change((ADD_LEARNER, "n4")))
    net.msg_hook = lambda m: not (isinstance(m, AppendEntries) and m.target == "n2"
                                  and m.commit >= 2 and not m.entries)
    net.stabilize()  # n2 holds the change at index 2; n1 never tells it the change committed
    assert net.nodes["n2"].raft.log.last_index() == 2 and net.nodes["n2"].raft.log.applied == 1
    net.recover()
    net.isolate("n1")
    net.msg_hook = lambda m: not isinstance(m, AppendEntries)
    net.tick_all(3 * ELECTION, nodes=["n2", "n3"])
    assert net.leader() == "n2"
    with pytest.raises(ProposalDropped, match="pending"):
        net.nodes["n2"].propose_conf_change(change((ADD_LEARNER, "n5")))
    net.msg_hook = None
    net.tick_all(2, nodes=["n2", "n3"])
    assert net.nodes["n2"].raft.conf.learners == ("n4",)
    net.nodes["n2"].propose_conf_change(change((ADD_LEARNER, "n5")))


def test_new_leader_changes_membership_only_after_committing_in_its_term() -> None:
    """diss. §4.1 (the single-server change bug, raft-dev 2015): "a leader may not append a new
    configuration entry until it has committed an entry from its current term"."""
    net = Network.create(3)
    net.msg_hook = lambda m: not isinstance(m, AppendEntries)
    net.elect("n1")
    assert net.nodes["n1"].raft.log.committed == 0  # the no-op of term 1 is not committed
    with pytest.raises(ProposalDropped):
        net.nodes["n1"].propose_conf_change(change((ADD_LEARNER, "n4")))


@pytest.mark.parametrize(
    ("conf", "conf_change", "message"),
    [
        (ConfState(voters=("n1",)), change((REMOVE, "n1")), "at least one voter"),
        (ConfState(voters=("n1",)), ConfChange(), "not joint"),
        (ConfState(voters=("n1", "n2"), voters_outgoing=("n1",)), change((ADD_VOTER, "n3")),
         "left first"),
        (ConfState(voters=("n1",)), change((ADD_VOTER, "")), "must name a node"),
    ],
)
def test_invalid_conf_changes_name_the_broken_rule(
    conf: ConfState, conf_change: ConfChange, message: str
) -> None:
    """diss. §4: a configuration must keep a voter; a joint configuration must be left before
    another change; leaving requires being joint. Errors name the rule."""
    with pytest.raises(ConfigError, match=message):
        apply_conf_change(conf, conf_change)


def test_leader_validates_conf_change_when_proposed() -> None:
    """diss. §4: an impossible change is refused at proposal time with `ConfigError`, before it
    reaches the log."""
    net = steady()
    last = net.nodes["n1"].raft.log.last_index()
    with pytest.raises(ConfigError, match="not joint"):
        net.nodes["n1"].propose_conf_change(ConfChange())
    with pytest.raises(ConfigError, match="at least one voter"):
        net.nodes["n1"].propose_conf_change(
            change((REMOVE, "n1"), (REMOVE, "n2"), (REMOVE, "n3")))
    assert net.nodes["n1"].raft.log.last_index() == last


def test_demoting_a_voter_in_joint_config_keeps_it_voting_until_leave() -> None:
    """diss. §4.3: a voter of C_old demoted to learner still votes in C_old until the joint
    configuration is left (`learners_next`)."""
    conf = ConfState(voters=("n1", "n2", "n3"))
    joint = apply_conf_change(conf, change((ADD_LEARNER, "n3"), (ADD_VOTER, "n4")))
    assert joint.voters == ("n1", "n2", "n4")
    assert joint.voters_outgoing == ("n1", "n2", "n3")
    assert joint.learners_next == ("n3",) and joint.learners == ()
    left = apply_conf_change(joint, ConfChange())
    assert left == ConfState(voters=("n1", "n2", "n4"), learners=("n3",))


def test_removed_leader_does_not_strand_a_survivor_that_missed_the_commit() -> None:
    """diss. §4.2.2: once C_new is committed the removed leader steps down and C_new elects a
    leader; that must hold even if the commit notice to C_new was lost (it is retried in Raft),
    so a removed leader must not leave C_new unable to learn the commit."""
    net = Network.create(2)
    net.elect("n2")
    net.tick_all(1)
    leader = net.nodes["n2"]
    conf_index, _ = leader.propose_conf_change(change((ADD_LEARNER, "n2")))  # demote itself
    leader.propose(b"tail")  # a client write lands after the change, before it is applied
    net.msg_hook = lambda m: not (
        m.target == "n1" and (getattr(m, "commit", 0) >= conf_index
                              or any(e.index > conf_index for e in getattr(m, "entries", ())))
    )
    net.stabilize()
    assert leader.raft.conf.voters == ("n1",)
    assert net.nodes["n1"].raft.log.committed < conf_index  # the notice to n1 was lost
    net.recover()  # every fault heals
    net.tick_all(20 * ELECTION)
    assert net.leader() == "n1"
    assert net.leaders() == ["n1"] and leader.raft.role is Role.FOLLOWER

"""Per-shard readiness (`NodeStatus.readiness`, behind `/ready`; issue 14, item 4), on a fake
node: the default answer is "can this node serve SOME shard" with the degraded shards listed,
`shard=N` asks about one shard, `strict` about every local replica."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from phalanx.errors import ConfigError
from phalanx.raft import Role
from phalanx.server.node_status import READY_LAG_ENTRIES, NodeStatus


class Group:
    def __init__(self, voters: tuple[str, ...] = ("n1", "n2", "n3"), lead: str = "n2",
                 lag: int = 0, stopped: bool = False) -> None:
        self.stopped = stopped
        self.fatal_error = "disk full" if stopped else None
        self.raw = SimpleNamespace(conf=SimpleNamespace(voters=voters, learners=()),
                                   lead=lead, committed=100 + lag, applied=100,
                                   role=Role.FOLLOWER if lead != "n1" else Role.LEADER)

    @property
    def leader(self) -> str:
        return str(self.raw.lead)

    def leaderless_for(self) -> float:
        return 0.0 if self.raw.lead else 3.25


def _status(groups: dict[int, Group], shards: dict[int, str], *, version: int = 5,
            removed: bool = False) -> NodeStatus:
    """Node n1 holding `groups`; the map's shards with their leader hints (for shards
    without a local replica: "" = no live leader known)."""
    cluster_map = SimpleNamespace(version=version, shards={
        shard_id: SimpleNamespace(id=shard_id, leader=leader, replicas=("n1", "n2", "n3"),
                                  voters=("n1", "n2", "n3"), learners=())
        for shard_id, leader in shards.items()})

    class Replicas(SimpleNamespace):
        @property
        def default_group(self) -> Group:
            if not groups:
                raise ConfigError("no shard replica")
            return groups[min(groups)]

    replicas: Any = Replicas(
        meta=SimpleNamespace(stopped=False, fatal_error=None), damaged={},
        removed_from_cluster=lambda: removed, cluster_map=cluster_map,
        data_groups=lambda: dict(groups),
        shard_leader=lambda shard: (groups[shard.id].leader if shard.id in groups
                                    else shard.leader))
    config: Any = SimpleNamespace(id="n1")
    return NodeStatus(replicas, config, metrics=None, transport=None,  # type: ignore[arg-type]
                      events=None, front_end=None, started=0.0)  # type: ignore[arg-type]


def test_a_healthy_node_is_ready_every_way() -> None:
    status = _status({1: Group(), 2: Group(lead="n1")}, {1: "n2", 2: "n1"})
    for shard, strict in ((None, False), (None, True), (1, False), (2, False)):
        ready, reason, degraded = status.readiness(shard, strict=strict)
        assert ready and not degraded, reason


def test_one_shard_without_a_leader_degrades_but_does_not_unready_the_node() -> None:
    status = _status({1: Group(lead=""), 2: Group()}, {1: "", 2: "n2"})
    ready, reason, degraded = status.readiness()
    assert ready, reason
    assert set(degraded) == {1} and "no leader known" in degraded[1]
    assert "degraded: shard 1" in reason and "3.2 s" in reason
    assert status.readiness(2)[0]
    ready, reason, _ = status.readiness(1)
    assert not ready and reason.startswith("shard 1: no leader known")
    ready, reason, _ = status.readiness(strict=True)
    assert not ready and reason.startswith("shard 1: ")


def test_a_node_that_serves_no_shard_is_not_ready() -> None:
    status = _status({1: Group(lead=""), 2: Group(lag=READY_LAG_ENTRIES + 1)}, {1: "", 2: "n2"})
    ready, reason, degraded = status.readiness()
    assert not ready and reason.startswith("no shard can be served from this node")
    assert set(degraded) == {1, 2} and "entries not applied" in degraded[2]


def test_shards_without_a_local_replica_count_when_a_live_leader_is_known() -> None:
    # n1 holds shard 1 only (leaderless); shard 2 lives elsewhere with a live leader: n1
    # still serves shard 2's keys by forwarding.
    status = _status({1: Group(lead="")}, {1: "", 2: "n4"})
    ready, _, degraded = status.readiness()
    assert ready and set(degraded) == {1}
    assert status.readiness(2)[0]
    assert not status.readiness(strict=True)[0]
    # ... and when no live leader of shard 2 is known either, nothing can be served.
    status = _status({1: Group(lead="")}, {1: "", 2: ""})
    ready, _, degraded = status.readiness()
    assert not ready and set(degraded) == {1, 2}
    assert "no reachable leader" in degraded[2]


def test_strict_only_looks_at_local_replicas() -> None:
    status = _status({1: Group()}, {1: "n2", 2: ""})
    assert status.readiness(strict=True)[0]
    assert not status.readiness(2)[0]
    assert status.readiness()[0]


@pytest.mark.parametrize("blocked", ["no map", "removed", "stopped replica"])
def test_node_level_problems_unready_every_question(blocked: str) -> None:
    groups = {1: Group(stopped=blocked == "stopped replica"), 2: Group()}
    status = _status(groups, {1: "n2", 2: "n2"}, version=0 if blocked == "no map" else 5,
                     removed=blocked == "removed")
    if blocked == "stopped replica":
        # A stopped shard replica is that shard's problem only.
        assert status.readiness()[0]
        ready, reason, _ = status.readiness(1)
        assert not ready and "replica stopped: disk full" in reason
        return
    for shard, strict in ((None, False), (None, True), (1, False)):
        assert not status.readiness(shard, strict=strict)[0]


def test_an_unknown_shard_is_not_ready() -> None:
    status = _status({1: Group()}, {1: "n2"})
    ready, reason, _ = status.readiness(7)
    assert not ready and "shard 7 is not in the cluster map" in reason


def test_a_replica_damaged_at_open_degrades_its_shard_and_fails_strict() -> None:
    """A replica whose store failed its checksums at open (docs/disk-faults.md) is not
    running: its shard is not served from here (not ready for `shard=1`, degraded by
    default: the other shard still works) and `strict` fails."""
    status = _status({2: Group()}, {1: "n2", 2: "n2"})
    status.replicas.damaged[1] = "storage failure at open: CRC mismatch"
    ready, reason, degraded = status.readiness()
    assert ready and set(degraded) == {1} and "damaged" in degraded[1], reason
    ready, reason, _ = status.readiness(1)
    assert not ready and "CRC mismatch" in reason
    assert status.readiness(2)[0]
    assert not status.readiness(strict=True)[0]

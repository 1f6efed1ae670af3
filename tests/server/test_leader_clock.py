"""The leaderless clock of a replica (`RaftGroup.leaderless_for`) and the router's
"no quorum" verdict built on it (issue 14, item 2).

A real `RaftGroup` on a real store, driven by hand (no ticker, no peers): the messages a
follower receives are stepped in directly and the group's clock is a fake one, so "how long
has this replica been without a leader" has one right answer at every instant. The bug these
tests pin down: the clock was only moved by the Ready loop's `_observe_role`, so between the
loss of a leader and the loop's next pass it read the time since the node STARTED (a node up
for minutes answered `-CLUSTERDOWN ... no leader for 100.0 s` a millisecond after its leader
died, while a new leader was being elected), and once the loop ran, it started counting only
then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from phalanx.errors import ClusterDown, NotLeader
from phalanx.raft import ConfState, NodeId
from phalanx.raft.messages import Heartbeat
from phalanx.raft.types import Index, Term
from phalanx.server import group as group_module
from phalanx.server.config import NodeConfig, PeerConfig
from phalanx.server.front.router import DataRouter
from phalanx.server.group import RaftGroup
from phalanx.server.metrics import NodeMetrics
from phalanx.storage import AsyncLogStore, open_log_store


class FakeClock:
    """`time` as the group module sees it, with a monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return time.perf_counter()

    def time(self) -> float:
        return time.time()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    fake = FakeClock()
    monkeypatch.setattr(group_module, "time", fake)
    yield fake


def _config(tmp_path: Path) -> NodeConfig:
    peers = tuple(PeerConfig(id=n, peer=f"127.0.0.1:{1 + i}", resp=f"127.0.0.1:{11 + i}")
                  for i, n in enumerate(("n1", "n2", "n3")))
    return NodeConfig(id="n1", data_dir=str(tmp_path), peers=peers)


def _group(tmp_path: Path) -> RaftGroup:
    conf = ConfState(voters=(NodeId("n1"), NodeId("n2"), NodeId("n3")))
    store = AsyncLogStore(open_log_store(tmp_path / "groups" / "1", conf))
    return RaftGroup(group_module.GroupId(1), _config(tmp_path), store, lambda messages: None,
                     NodeMetrics("n1", process_metrics=False).group("1"))


def _heartbeat(group: RaftGroup, leader: str, term: int) -> None:
    group.step(Heartbeat(source=NodeId(leader), target=NodeId("n1"), term=Term(term),
                         commit=Index(0), round=0))


async def _with_running(group: RaftGroup) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(group.run())
    await asyncio.sleep(0.05)  # the Ready loop observes whatever happened so far
    return task


async def _stop(group: RaftGroup, task: asyncio.Task[None]) -> None:
    await group.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await group.store.close()


def test_the_clock_starts_when_the_leader_is_lost_not_when_the_loop_notices(
        tmp_path: Path, clock: FakeClock) -> None:
    async def body() -> None:
        group = _group(tmp_path)
        task = await _with_running(group)
        try:
            _heartbeat(group, "n2", 1)
            await asyncio.sleep(0.05)
            assert group.leader == "n2"
            assert group.leaderless_for() == 0.0
            clock.now += 100.0  # the node has been up (and following n2) for 100 s
            group.leader_lost("n2")  # the connection to n2 reset (kill -9)
            assert group.leader == ""
            # Asked before the Ready loop ran: no time has passed since the loss.
            assert group.leaderless_for() == 0.0
            clock.now += 0.3
            assert group.leaderless_for() == pytest.approx(0.3)
            # The loop observing the change later must not restart the clock.
            await asyncio.sleep(0.05)
            assert group.leaderless_for() == pytest.approx(0.3)
            # A new leader is known the instant its message is stepped, loop or not.
            _heartbeat(group, "n3", 2)
            assert group.leaderless_for() == 0.0
            clock.now += 5.0
            assert group.leaderless_for() == 0.0
        finally:
            await _stop(group, task)

    asyncio.run(body())


def test_a_replica_that_never_knew_a_leader_reports_no_leaderless_time(
        tmp_path: Path, clock: FakeClock) -> None:
    async def body() -> None:
        group = _group(tmp_path)
        task = await _with_running(group)
        try:
            clock.now += 60.0
            # Just started, nothing heard yet: says nothing about the shard's quorum.
            assert group.leaderless_for() == 0.0
        finally:
            await _stop(group, task)

    asyncio.run(body())


def _router(group: RaftGroup) -> DataRouter:
    replicas: Any = SimpleNamespace(config=group.config)
    return DataRouter(replicas, None, lambda state, reply, name, arguments: b"")


def test_a_write_right_after_a_leader_kill_waits_for_the_election(
        tmp_path: Path, clock: FakeClock) -> None:
    async def body() -> None:
        group = _group(tmp_path)
        task = await _with_running(group)
        try:
            router = _router(group)
            _heartbeat(group, "n2", 1)
            await asyncio.sleep(0.05)
            # The Ready loop is busy elsewhere (a large apply batch, a slow snapshot): here it
            # is simply paused, so nothing but the router looks at the group meanwhile.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            clock.now += 100.0
            group.leader_lost("n2")
            waiting = asyncio.get_running_loop().create_task(
                router._leader_or_wait(group, time.monotonic() + 30))
            await asyncio.sleep(0.1)
            # Not "-CLUSTERDOWN ... no leader for 100.0 s": the shard just lost its leader.
            assert not waiting.done(), waiting.result() if not waiting.exception() \
                else waiting.exception()
            _heartbeat(group, "n3", 2)  # the election's winner
            assert await asyncio.wait_for(waiting, 5) == "n3"
        finally:
            await _stop(group, task)

    asyncio.run(body())


def test_no_quorum_is_reported_after_several_election_timeouts_without_a_leader(
        tmp_path: Path, clock: FakeClock) -> None:
    async def body() -> None:
        group = _group(tmp_path)
        task = await _with_running(group)
        try:
            router = _router(group)
            _heartbeat(group, "n2", 1)
            await asyncio.sleep(0.05)
            group.leader_lost("n2")
            election_timeout_s = group.config.election_ticks * group.config.tick_ms / 1000
            # Several election timeouts: a split vote or two must not read as lost quorum.
            assert router.no_quorum_after_s >= 2 * (2 * election_timeout_s)
            clock.now += router.no_quorum_after_s / 2
            waiting = asyncio.get_running_loop().create_task(
                router._leader_or_wait(group, time.monotonic() + 30))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            clock.now += router.no_quorum_after_s
            with pytest.raises(ClusterDown, match=r"shard 1: no leader for \d+\.\d s"):
                await asyncio.wait_for(waiting, 5)
        finally:
            await _stop(group, task)

    asyncio.run(body())


def test_every_raft_log_line_names_its_group(tmp_path: Path, clock: FakeClock,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """One node runs many groups: "n1 became leader at term 2" twice, a few ms apart, read like
    a split brain until one knows they were two shards (issue 14, item 7)."""
    async def body() -> None:
        group = _group(tmp_path)
        task = await _with_running(group)
        try:
            _heartbeat(group, "n2", 1)
            group.leader_lost("n2")
            for _ in range(2 * group.config.election_ticks):
                group.tick()  # campaigns (PreVote): more lines
        finally:
            await _stop(group, task)

    with caplog.at_level("INFO", logger="phalanx.raft"):
        asyncio.run(body())
    lines = [record.getMessage() for record in caplog.records
             if record.name.startswith("phalanx.raft")]
    assert any("pre-candidate" in line for line in lines), lines
    assert any("lost its connection to leader n2" in line for line in lines), lines
    assert lines and all(line.startswith("n1 [shard 1] ") for line in lines), lines


def test_a_read_request_sent_to_a_leader_that_is_gone_fails_at_once(
        tmp_path: Path, clock: FakeClock) -> None:
    """A follower's ReadIndex request to a killed leader is never answered: the read is told
    to retry (NotLeader: nothing was read) the moment the leader is lost, not after the request
    timeout (a GET on a follower hung until the client's timeout through HAProxy)."""
    async def body() -> None:
        group = _group(tmp_path)
        task = await _with_running(group)
        try:
            _heartbeat(group, "n2", 1)
            await asyncio.sleep(0.05)
            read = group.read_index_future()
            await asyncio.sleep(0.05)  # the request left for n2; no answer comes
            assert not read.done()
            _heartbeat(group, "n2", 1)  # the same leader again: the read keeps waiting
            assert not read.done()
            group.leader_lost("n2")
            assert read.done()
            with pytest.raises(NotLeader, match="went to n2"):
                read.result()
            assert not group.pending_reads and not group.read_target
            # A read to the new leader waits for its answer.
            _heartbeat(group, "n3", 2)
            second = group.read_index_future()
            await asyncio.sleep(0.05)
            assert not second.done()
            assert group.read_target == {next(iter(group.pending_reads)): "n3"}
        finally:
            await _stop(group, task)

    asyncio.run(body())


@pytest.mark.parametrize(("election_ticks", "expected_s"), [(5, 2.0), (25, 2.0), (100, 4.0)])
def test_no_quorum_threshold_is_four_election_timeouts_but_never_under_two_seconds(
        election_ticks: int, expected_s: float) -> None:
    """A short election timeout (issue 15 lever 8) detects a silent
    leader sooner, but a slow election on a loaded machine must not turn into refusals: the
    -CLUSTERDOWN threshold keeps a 2 s floor; long timeouts still get 4 of them."""
    config = SimpleNamespace(election_ticks=election_ticks, tick_ms=10)
    router = DataRouter(SimpleNamespace(config=config), None,  # type: ignore[arg-type]
                        lambda state, reply, name, arguments: b"")
    assert router.no_quorum_after_s == pytest.approx(expected_s)

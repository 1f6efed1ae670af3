"""A node whose own placement-driver replica stopped (a full node log) keeps a FROZEN copy of
the map, and `ConsistencyChecker.rebuild_damaged` keeps proposing the relocation of its
damaged replica from it (once a second). The real checker, with its map frozen, against the
live map's state machine (`MapMachine`) that has moved the shard on since: the relocation it
sends is refused as stale, and the later move stands (issue 16; docs/architecture.md, "Map
ops, compare-and-set"). No processes: freezing one node's group-0 replica on real processes
needs the full-node-log tmpfs of tests/integration/test_disk_full_node_log.py, and showing
that a move is NOT undone there needs a waiting window; the decision itself is this one."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.placement.test_planner import apply_all, report_desired
from tests.placement.test_stale_relocations import five_nodes, settled

from phalanx.placement.map import MapMachine, OpError
from phalanx.placement.planner import plan
from phalanx.server.consistency import ConsistencyChecker
from phalanx.server.events import EventLog
from phalanx.server.meta_client import MetaClient
from phalanx.server.metrics import NodeMetrics

DISK_FULL = "storage failure: store 1: cannot write: [Errno 28] No space left on device"


class FrozenReplicas:
    """The few `Replicas` members the damaged-replica watch reads; the map never advances.
    `meta` is the placement driver's group, led here (so `MetaClient.propose_meta` commits
    through it), applying to the LIVE map."""

    def __init__(self, cluster_map: Any, data_dir: Path, meta: LiveDriver) -> None:
        self.meta = meta
        self.cluster_map = cluster_map
        self.data_dir = data_dir
        self.damaged = {1: DISK_FULL}
        self.groups: dict[int, object] = {}

    def meta_caught_up(self) -> bool:
        return True  # what the node believes: its stopped replica does not know it is behind

    def data_groups(self) -> dict[int, object]:
        return {}


class LiveDriver:
    """The placement driver's group 0, led by this node: every committed entry goes through
    the live MapMachine, as `RaftGroup.propose_data` would apply it."""

    def __init__(self, machine: MapMachine) -> None:
        self.machine = machine
        self.replies: list[object] = []

    def is_leader(self) -> bool:
        return True

    async def propose_data(self, data: bytes) -> object:
        self.replies.append(self.machine.apply(len(self.replies) + 1, data))
        return self.replies[-1]


def _checker(cmap: Any, node_id: str, driver: LiveDriver, data_dir: Path) -> ConsistencyChecker:
    # rebuild_damaged and MetaClient.propose_meta read the node's id and the request timeout
    config: Any = SimpleNamespace(id=node_id, request_timeout_ms=5_000)
    replicas: Any = FrozenReplicas(cmap, data_dir, driver)
    transport: Any = None  # a driver led here is never reached over the network
    return ConsistencyChecker(replicas, config, NodeMetrics(node_id, process_metrics=False),
                              EventLog(), MetaClient(replicas, config, transport, None))


async def _rebuild(checker: ConsistencyChecker) -> None:
    await checker.rebuild_damaged()
    for _ in range(10):  # the proposal runs as a task (`_send_once`)
        await asyncio.sleep(0)


def test_a_node_with_a_frozen_map_cannot_undo_a_later_move(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frozen = settled(five_nodes(), 1)
    failed = frozen.shards[1].replicas[1]
    driver = LiveDriver(MapMachine(frozen))
    checker = _checker(frozen, failed, driver, tmp_path)
    # First round: the relocation, from a map that is still current, is committed.
    asyncio.run(_rebuild(checker))
    assert driver.replies == ["OK"], driver.replies
    relocated = driver.machine.map
    target = checker.relocating[1]
    assert failed not in relocated.shards[1].replicas and target in relocated.shards[1].replicas
    # The driver moves the replica on (its target is drained); the node's map stays frozen.
    later = apply_all(report_desired(relocated),
                      [{"op": "set_node_state", "node": target, "state": "draining"}])
    later = apply_all(later, [op for op in plan(later) if op["op"] == "set_replicas"])
    assert target not in later.shards[1].replicas
    driver.machine.restore(later.encode())
    # Later rounds: the node resends its relocation from the frozen map (past the
    # once-a-second limit): the map refuses it as stale and the later move stands.
    checker.sent_at.clear()
    with caplog.at_level(logging.INFO, logger="phalanx.server.meta_client"):
        asyncio.run(_rebuild(checker))
    assert len(driver.replies) == 2, driver.replies
    refused = driver.replies[1]
    assert isinstance(refused, OpError) and "stale" in refused.message, refused
    assert driver.machine.map.encode() == later.encode()
    assert target not in driver.machine.map.shards[1].replicas
    # The refusal is in the node's log (MetaClient.propose_quietly), saying why.
    assert any("refused" in r.getMessage() and "stale" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]

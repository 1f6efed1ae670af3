"""The node runtime's rooms wired together in one process (one node, no harness): the replica
registry, the controllers reporting through the meta client to the placement driver's group,
resharding, node status, and the narrow views the front end and the admin API get.
See docs/architecture.md ("the node runtime")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from phalanx.ops.ports import free_port as _free_port
from phalanx.server.config import NodeConfig, PeerConfig
from phalanx.server.front.replicas import ReplicaRegistry
from phalanx.server.node import Node


def _config(tmp_path: Path) -> NodeConfig:
    peer = PeerConfig(id="n1", peer=f"127.0.0.1:{_free_port()}",
                      resp=f"127.0.0.1:{_free_port()}", admin=f"127.0.0.1:{_free_port()}")
    return NodeConfig(id="n1", data_dir=str(tmp_path / "n1"), peers=(peer,), tick_ms=5,
                      heartbeat_ticks=2, election_ticks=10, request_timeout_ms=3000)


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_a_single_node_reports_its_leader_and_splits_online(tmp_path: Path) -> None:
    async def main() -> None:
        node = Node(_config(tmp_path))
        await node.start()
        try:
            assert node.admin is not None
            view = node.admin.view
            await _until(lambda: view.readiness()[0])
            # The controllers report the shard's leader to the map through the meta client.
            await _until(lambda: node.replicas.cluster_map.shards[1].leader == "n1")
            status = view.status()
            assert status["role"] == "leader" and status["shard"] == 1
            assert view.is_primary(shard=1) and not view.is_replica()
            kinds = {event["kind"] for event in node.events.recent(50)}
            assert {"leader", "driver"} <= kinds
            # The front end sees only its protocol's names.
            front: ReplicaRegistry = node.resp.replicas
            assert front.local_group(1) is node.replicas.groups[1]
            assert front.shard_leader(node.replicas.cluster_map.shards[1]) == "n1"
            # Resharding: the split entry creates the new shard here, and the map learns it.
            answer = await view.split_shard(1)
            new_shard = answer["new_shard"]
            assert isinstance(new_shard, int)
            await _until(lambda: new_shard in node.replicas.cluster_map.shards)

            def new_shard_led_here() -> bool:
                group = node.replicas.local_group(new_shard)
                return group is not None and group.is_leader()

            await _until(new_shard_led_here)
            assert "split" in {event["kind"] for event in node.events.recent(50)}
        finally:
            await node.stop()
        assert not node.replicas.groups

    asyncio.run(main())

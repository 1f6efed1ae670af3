"""`ReplicaRegistry`: everything the RESP front end needs from the node, and nothing more.

Rules of this file:
- A `typing.Protocol`: the node (or the registry it composes) satisfies it structurally; the
  front end never imports `phalanx.server.node`.
- Members are read-only from the front end's side (properties), so a plain attribute or a
  property satisfies them.
- Adding a member widens the coupling between the front end and the node: prefer deriving what
  you need from these. See docs/architecture.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from phalanx.placement import ClusterMap, ShardInfo
    from phalanx.server.config import NodeConfig
    from phalanx.server.group import RaftGroup
    from phalanx.server.metrics import NodeMetrics


class ReplicaRegistry(Protocol):
    """The node's replicas and cluster view, as the front end uses them."""

    @property
    def config(self) -> NodeConfig:
        """This node's configuration."""

    @property
    def cluster_map(self) -> ClusterMap:
        """The newest cluster map this node has applied."""

    @property
    def meta(self) -> RaftGroup:
        """This node's replica of the placement driver's group."""

    @property
    def metrics(self) -> NodeMetrics:
        """The node's metrics (commands, error replies, connections)."""

    @property
    def started(self) -> float:
        """`time.monotonic()` when the node started (INFO uptime)."""

    def local_group(self, shard_id: int) -> RaftGroup | None:
        """This node's live replica of `shard_id`, or None."""

    def data_groups(self) -> dict[int, RaftGroup]:
        """Every data replica this node holds, by shard id."""

    def shard_leader(self, shard: ShardInfo) -> str:
        """Best knowledge of a shard's leader ("" = none known)."""

    def resp_address(self, node_id: str) -> tuple[str, int] | None:
        """A member's RESP (host, port), or None if unknown."""

    async def propose_meta(self, op: dict[str, object]) -> object:
        """Commit a cluster-map op through the placement driver; the map machine's reply."""

    async def transfer_leadership(self, target: str | None, shard: int | None = None) -> str:
        """Hand this node's leaderships away (to `target` when given); the new leader."""

    async def snapshot_chunk(self, group_id: int, term: int, index: int, offset: int,
                             length: int) -> tuple[int, bytes]:
        """(file size, bytes) of a chunk of a local replica's snapshot file
        (`server/snapshot_transfer.py:SnapshotSource.read`); raises NoSuchSnapshot."""

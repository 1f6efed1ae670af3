"""The seam between the chaos lab's nemesis and a cluster: how faults are injected.

Rules of this file:
- `ClusterControl` is the only way the nemesis touches a cluster. `LocalControl` (processes on
  loopback; partitions and latency through each node's admin fault-rule API) and `NetnsControl`
  (one network namespace per node; partitions with iptables, latency with tc netem) implement it.
- Every method acts for real (signals, rules) and returns only once the fault is in force.
- Node ids are the cluster's ids ("n1"...). Zones, regions and hosts come from `nodes()`.
- A node that was `lose`-t is gone for good: no control restarts it (not even `repair`), and the
  runner leaves it out of convergence and final reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node as the lab sees it."""

    id: str
    zone: str
    region: str
    resp_host: str
    resp_port: int
    admin_url: str
    pid: int
    #: The host label (docs/hosts.md): nodes of one machine share it; "" = a host of its own.
    host: str = ""

    @property
    def host_domain(self) -> tuple[str, str, str]:
        """(region, zone, host) of the node's machine: a host lies inside its zone, and a node
        without a label is a host of its own (its id)."""
        return (self.region, self.zone, self.host or f"node {self.id}")


class ClusterControl(Protocol):
    """Fault injection and observation of one cluster."""

    def nodes(self) -> list[NodeInfo]:
        """Every node of the cluster (current pids)."""
        ...

    def leader(self) -> str | None:
        """The node a majority reports as leader, or None."""
        ...

    def kill(self, node: str) -> None:
        """SIGKILL the node's process."""
        ...

    def pause(self, node: str) -> None:
        """SIGSTOP the node's process."""
        ...

    def resume(self, node: str) -> None:
        """SIGCONT the node's process."""
        ...

    def restart(self, node: str) -> None:
        """Start a killed node again with its original command; returns when it is up."""
        ...

    def lose(self, node: str) -> None:
        """SIGKILL the node and delete its data directory; it is never started again."""
        ...

    def corrupt(self, node: str, seed: int) -> str:
        """Flip a byte of one data replica's WAL segment or snapshot file of the STOPPED
        node (`chaos/disk.py`); returns what was done."""
        ...

    def mount_small_disk(self, node: str, seed: int) -> str:
        """Put one data replica of the STOPPED node on its own small real file system (a
        tmpfs with size=, `chaos/disk.py:SmallDisks`); returns what was done."""
        ...

    def fill_disk(self, node: str) -> str:
        """Fill the node's small disk until the kernel says ENOSPC."""
        ...

    def free_disk(self, node: str) -> str:
        """Delete what `fill_disk` wrote: space returns."""
        ...

    def disk_error(self, node: str, shard: int) -> str:
        """Make every read and write of the RUNNING node's replica of `shard` fail with EIO
        (the store's own fault injection, `chaos/disk.py:DISK_ERROR_NOTE`)."""
        ...

    def clear_disk_errors(self, node: str) -> None:
        """Disarm the node's injected disk faults (its disk was replaced)."""
        ...

    def partition(self, groups: list[list[str]]) -> None:
        """Cut all traffic between nodes of different groups (nodes in no group are isolated)."""
        ...

    def block(self, source: str, target: str) -> None:
        """Drop traffic from `source` to `target` only (one-way)."""
        ...

    def heal(self) -> None:
        """Remove every partition and one-way block."""
        ...

    def add_latency(self, node: str, delay_ms: float, jitter_ms: float = 0.0) -> None:
        """Delay every packet the node sends to its peers."""
        ...

    def clear_latency(self) -> None:
        """Remove every added latency."""
        ...

    def close(self) -> None:
        """Stop what the control started (processes, namespaces, rules)."""
        ...


def fetch_statuses(control: ClusterControl, timeout: float = 0.5,
                   pool: ThreadPoolExecutor | None = None) -> dict[str, dict[str, Any] | None]:
    """Every node's admin `/status` JSON, in parallel: node id -> dict, or None where the node
    did not answer (down, paused, or cut off from the lab)."""
    from phalanx.ops.admin import admin_request

    nodes = control.nodes()

    def one(node: NodeInfo) -> dict[str, Any] | None:
        address = node.admin_url.removeprefix("http://").removeprefix("https://").rstrip("/")
        try:
            code, body = admin_request(address, "/status", timeout=timeout)
        except OSError:
            return None
        return body if code == 200 and isinstance(body, dict) else None

    if pool is not None:
        return dict(zip((n.id for n in nodes), pool.map(one, nodes), strict=True))
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as own:
        return dict(zip((n.id for n in nodes), own.map(one, nodes), strict=True))


def agreed_leader(statuses: Mapping[str, Mapping[str, Any] | None]) -> str | None:
    """The leader of the first shard named by a majority of all nodes (a leader counts itself),
    as `phalanx.ops.admin.agreed_leader` decides it; None without a majority."""
    votes: dict[str, int] = {}
    for node, status in statuses.items():
        if status is None:
            continue
        leader = node if status.get("role") == "leader" else status.get("leader")
        if isinstance(leader, str) and leader:
            votes[leader] = votes.get(leader, 0) + 1
    majority = len(statuses) // 2 + 1
    for leader, count in votes.items():
        if count >= majority:
            return leader
    return None

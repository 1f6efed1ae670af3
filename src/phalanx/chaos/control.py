"""The seam between the chaos lab's nemesis and a cluster: how faults are injected.

Rules of this file:
- `ClusterControl` is the only way the nemesis touches a cluster. `LocalControl` (processes on
  loopback; partitions and latency through each node's admin fault-rule API) and `NetnsControl`
  (one network namespace per node; partitions with iptables, latency with tc netem) implement it.
- Every method acts for real (signals, rules) and returns only once the fault is in force.
- Node ids are the cluster's ids ("n1"...). Zones come from `nodes()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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

"""The record of a local cluster: `DIR/cluster.json`, its entries, its lock.

The launcher (`phalanx.ops.launcher`) writes this file when it starts a cluster and when it
restarts a node; everything else (the CLI, the chaos lab, the benchmarks, the HAProxy config)
reads it to find the nodes. See docs/architecture.md ("Layers and rooms": `ops/`).

Rules of this file:
- `DIR/cluster.json` is the one record of a running local cluster:
  `{"nodes": [{"id", "zone", "region", "resp", "admin", "peer", "pid", "data_dir", "argv"}]}`,
  where `argv` is the exact command that restarts the node. It is written atomically (temporary
  file, fsync, rename, fsync of the directory) and read-modify-written under `DIR/cluster.lock`.
- Nothing here imports the node or starts a process; every function works on files only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from phalanx.errors import ClusterError

CLUSTER_FILE = "cluster.json"
LOCK_FILE = "cluster.lock"
NODE_CONFIG_FILE = "node.toml"
NODE_LOG_FILE = "node.log"



@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One node of the cluster file."""

    id: str
    zone: str
    region: str
    #: host:port of the RESP listener.
    resp: str
    #: host:port of the admin HTTP listener.
    admin: str
    #: host:port of the peer (Raft) listener.
    peer: str
    #: Process id of the last start (may be dead).
    pid: int | None
    data_dir: str
    #: The exact command that (re)starts this node.
    argv: list[str] = field(default_factory=list)
    #: The node's host label (`peers[].host`, docs/hosts.md: several nodes of one machine share
    #: it); "" = a host of its own. Not `host`, which is the node's own address.
    host_label: str = ""

    @property
    def host(self) -> str:
        """The node's own address (every listener binds to it)."""
        return self.resp.rpartition(":")[0]

    @property
    def config_path(self) -> str | None:
        """The `--config` file in `argv`, if any."""
        if "--config" in self.argv:
            position = self.argv.index("--config")
            if position + 1 < len(self.argv):
                return self.argv[position + 1]
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any, position: int) -> NodeEntry:
        if not isinstance(raw, dict):
            raise ClusterError(f"nodes[{position}]: must be an object")
        for name in ("id", "resp", "admin", "argv"):
            if name not in raw:
                raise ClusterError(f"nodes[{position}].{name}: missing")
        argv = raw["argv"]
        if not isinstance(argv, list) or not all(isinstance(part, str) for part in argv):
            raise ClusterError(f"nodes[{position}].argv: must be a list of strings")
        pid = raw.get("pid")
        if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0):
            raise ClusterError(f"nodes[{position}].pid: {pid!r} is not a process id")
        return cls(id=str(raw["id"]), zone=str(raw.get("zone", "")),
                   region=str(raw.get("region", "")), resp=str(raw["resp"]),
                   admin=str(raw["admin"]), peer=str(raw.get("peer", "")), pid=pid,
                   data_dir=str(raw.get("data_dir", "")), argv=list(argv),
                   host_label=str(raw.get("host_label", "")))



@dataclass(frozen=True, slots=True)
class ClusterFile:
    """The content of `DIR/cluster.json`."""

    nodes: list[NodeEntry]

    def node(self, node_id: str) -> NodeEntry:
        for entry in self.nodes:
            if entry.id == node_id:
                return entry
        raise ClusterError(f"no node {node_id!r} in the cluster "
                           f"(nodes: {', '.join(e.id for e in self.nodes)})")

    def with_pid(self, node_id: str, pid: int | None) -> ClusterFile:
        self.node(node_id)
        return ClusterFile([replace(e, pid=pid) if e.id == node_id else e for e in self.nodes])

    def to_json(self) -> dict[str, Any]:
        return {"nodes": [entry.to_json() for entry in self.nodes]}


def cluster_file_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / CLUSTER_FILE


def read_cluster_file(data_dir: str | Path) -> ClusterFile:
    """Parse `DIR/cluster.json`; ClusterError when it is missing or malformed."""
    path = cluster_file_path(data_dir)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ClusterError(f"no cluster in {data_dir} ({path} does not exist)") from error
    except OSError as error:
        raise ClusterError(f"cannot read {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise ClusterError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), list):
        raise ClusterError(f"{path}: expected an object with a \"nodes\" list")
    try:
        nodes = [NodeEntry.from_json(item, i) for i, item in enumerate(raw["nodes"])]
    except ClusterError as error:
        raise ClusterError(f"{path}: {error}") from error
    return ClusterFile(nodes)


def write_cluster_file(data_dir: str | Path, cluster: ClusterFile) -> Path:
    """Write `DIR/cluster.json` atomically: readers see the old or the new file, never a part."""
    path = cluster_file_path(data_dir)
    write_atomically(path, json.dumps(cluster.to_json(), indent=2) + "\n")
    return path


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def cluster_lock(data_dir: str | Path) -> Iterator[None]:
    """Hold `DIR/cluster.lock` (an exclusive flock) for a read-modify-write of cluster.json."""
    path = Path(data_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


"""An old data directory (per-shard WAL stores) under the node log engine, on real processes.

Issue 15 lever 1 made one log per node (`storage_engine = "node"`) the default. A node started
on a data directory whose replicas have their own WALs reads both: the old replicas keep their
own logs, replicas created afterwards go to the node log (docs/disk-faults.md, "One log per
node"). Nothing is moved, so nothing can be lost in a move.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from integration_harness import LocalCluster, run_cli, wait_until


def _switch_engine(c: LocalCluster, node: Any, engine: str) -> None:
    """kill -9, set `storage_engine` in its node.toml, restart it."""
    c.kill(node)
    config = Path(c.data_dir) / node.id / "node.toml"
    text = config.read_text()
    lines = [line for line in text.splitlines() if not line.startswith("storage_engine")]
    config.write_text("\n".join([f'storage_engine = "{engine}"', *lines]) + "\n")
    c.restart(node)


def test_old_per_shard_wals_keep_serving_and_new_shards_join_the_node_log(cluster: Any) -> None:
    """Proves: a 3-node cluster written with per-shard WALs, then restarted node by node with
    the node log engine, serves every acknowledged key; its old replicas still have their WAL
    segments (not migrated, not emptied), and the shard a split creates afterwards lives in
    each node's log (its directory holds a NODELOG key and no WAL)."""
    c: LocalCluster = cluster(3, storage_engine="wal")
    writer = c.client(c.leader())
    written = {f"old:{i}": f"v{i}" for i in range(200)}
    for key, value in written.items():
        assert writer.set(key, value) is True
    c.wait_converged()
    for node in c.nodes:
        assert any((Path(node.data_dir) / "groups" / "1").glob("*.wal")), node.id
        _switch_engine(c, node, "node")
        c.wait_converged()
    for node in c.nodes:
        assert any((Path(node.data_dir) / "groups" / "1").glob("*.wal")), node.id
        reader = c.client(node)
        for key in ("old:0", "old:100", "old:199"):
            assert reader.get(key) == written[key], (node.id, key)
    result = run_cli(["split", "--shard", "1", "--data-dir", str(c.data_dir)], timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

    def new_shard_dirs() -> list[Path]:
        return [path for node in c.nodes
                for path in (Path(node.data_dir) / "groups").glob("*")
                if path.is_dir() and path.name.isdigit() and int(path.name) > 1]

    wait_until(lambda: len(new_shard_dirs()) == 3, 60, "the new shard's replicas")
    for directory in new_shard_dirs():
        assert (directory / "NODELOG").exists() and not any(directory.glob("*.wal")), directory
        assert any((directory.parent.parent / "log").glob("*.log")), directory
    c.wait_converged()
    reader = c.client(c.nodes[0])
    assert reader.mget(list(written)) == list(written.values())

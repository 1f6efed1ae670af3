"""The launcher only takes its own nodes for up (ops/launcher.py `foreign_answers`).

Session 9: two chaos region labs run at once with one seed planned the same addresses; both
passed `check_addresses_free` before either bound them, the second launch's `wait_for_leader`
saw the first launch's nodes answer and returned, its own nodes then died (they refused to
start, or could not bind), and both labs' clients wrote into one cluster: the active-active
checker reported acknowledged adds missing and counters beyond their sums.

Rules of this file: every process started is stopped by pid in a `finally`; temp dirs are
pytest's.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from phalanx.errors import ClusterError
from phalanx.ops import launcher
from phalanx.ops.admin import NodeStatus
from phalanx.ops.cluster_file import NodeEntry
from phalanx.server.identity import INCARNATION_FILE


def _status(node_id: str, incarnation: str | None, data_dir: Path) -> NodeStatus:
    entry = NodeEntry(id=node_id, zone="z1", region="r1", resp="127.0.0.2:1", admin="127.0.0.2:2",
                      peer="127.0.0.2:3", pid=None, data_dir=str(data_dir))
    body = None if incarnation == "down" else {"incarnation": incarnation}
    return NodeStatus(entry=entry, status=body, health="ok")


def _store(data_dir: Path, incarnation: str) -> Path:
    (data_dir / INCARNATION_FILE).parent.mkdir(parents=True, exist_ok=True)
    (data_dir / INCARNATION_FILE).write_text(incarnation + "\n")
    return data_dir


def test_foreign_answers_names_every_node_whose_incarnation_is_not_its_directorys(
        tmp_path: Path) -> None:
    ours = _store(tmp_path / "ours", "aaaa")
    other = _store(tmp_path / "other", "bbbb")
    empty = tmp_path / "empty"
    statuses = [_status("n1", "aaaa", ours), _status("n2", "aaaa", other),
                _status("n3", "aaaa", empty), _status("n4", None, other),
                _status("n5", "down", other)]
    dirs: dict[str, str | Path] = {"n1": ours, "n2": other, "n3": empty, "n4": other, "n5": other}
    foreign = launcher.foreign_answers(statuses, dirs)
    # n1 is ours; n2 answers with another directory's incarnation; n3's own node has not
    # written one yet, so the answer is someone else's; n4 reports none and n5 is down: not judged.
    assert sorted(foreign) == ["n2", "n3"]
    assert "bbbb" in foreign["n2"] and "none yet" in foreign["n3"]


def test_a_launch_does_not_take_another_launchs_nodes_for_its_own(tmp_path: Path) -> None:
    """Real node processes: a cluster up on some addresses; a second launch planned on the
    same addresses (its own data directories) must not see it as its own cluster."""
    plan = launcher.pick_free_plan(tmp_path / "first", random.Random(), nodes=1, zones=1)
    cluster, leader, processes = launcher.start_local_cluster(tmp_path / "first", plan,
                                                              timeout=90.0)
    try:
        # The first launch's own check passes: the answering node holds its directory's
        # incarnation ...
        dirs: dict[str, str | Path] = {node.config.id: node.config.data_dir for node in plan}
        assert launcher.wait_for_leader(cluster.nodes, 90.0, data_dirs=dirs) == leader
        # ... without the check, anyone answering at the addresses was taken for up ...
        assert launcher.wait_for_leader(cluster.nodes, 90.0) == leader
        # ... with it, a second launch whose nodes live elsewhere is told the truth.
        second = {node_id: tmp_path / "second" / node_id for node_id in dirs}
        for node_id, path in second.items():
            _store(path, f"second-{node_id}")
        with pytest.raises(ClusterError, match="not our nodes answering"):
            launcher.wait_for_leader(cluster.nodes, 2.0, data_dirs=dict(second))
    finally:
        launcher.stop_processes(processes.values())

"""Node identity files and the acceptance rules (`phalanx.server.identity`): an incarnation is
created once with the data directory and survives restarts, a directory from before
incarnations gets one, a damaged one is an error; the map's record wins over a node's own
memory; a version-1 peer is refused once an incarnation is on record."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from phalanx.errors import ConfigError
from phalanx.placement import ClusterMap, NodeInfo
from phalanx.server.identity import (
    INCARNATION_FILE,
    PeerIncarnations,
    load_or_create_incarnation,
    read_incarnation,
)


def test_an_incarnation_is_created_once_and_kept(tmp_path: Path) -> None:
    first, created = load_or_create_incarnation(tmp_path)
    assert created and len(first) == 32 and read_incarnation(tmp_path) == first
    again, created = load_or_create_incarnation(tmp_path)
    assert (again, created) == (first, False)
    # The Raft state goes, the incarnation goes with it: a new one next time.
    (tmp_path / INCARNATION_FILE).unlink()
    fresh, created = load_or_create_incarnation(tmp_path)
    assert created and fresh != first


def test_an_older_data_directory_gets_an_incarnation(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "groups" / "0").mkdir(parents=True)  # Raft state from before incarnations
    with caplog.at_level(logging.WARNING):
        incarnation, created = load_or_create_incarnation(tmp_path)
    assert created and "had no incarnation id" in caplog.text and incarnation in caplog.text


def test_a_damaged_incarnation_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "groups").mkdir()
    (tmp_path / INCARNATION_FILE).write_text("not a valid id!\n")
    with pytest.raises(ConfigError, match="not a valid incarnation"):
        load_or_create_incarnation(tmp_path)


def _map(**incarnations: str) -> ClusterMap:
    nodes = {name: NodeInfo(id=name, peer="127.0.0.1:1", resp="127.0.0.1:2",
                            incarnation=value) for name, value in incarnations.items()}
    return ClusterMap(version=1, survival_goal="zone", replication_factor=0, nodes=nodes,
                      shards={}, meta_voters=())


def test_the_map_wins_over_the_memory_and_version_1_is_refused_once_recorded(
        tmp_path: Path) -> None:
    current = [_map(n2="")]
    identity = PeerIncarnations("n1", tmp_path, "me", lambda: current[0])
    assert identity.check("n2", "x", 2) is None  # nothing on record: the first is taken
    identity.seen("n2", "x")
    reason = identity.check("n2", "y", 2)
    assert reason is not None and "phalanx replace n2" in reason
    reason = identity.check("n2", "", 1)
    assert reason is not None and "protocol version 1" in reason
    current[0] = _map(n2="y")  # the map records y (a finished replacement)
    assert identity.check("n2", "y", 2) is None
    assert identity.check("n2", "x", 2) is not None
    identity.seen("n2", "y")
    assert PeerIncarnations("n1", tmp_path, "me", lambda: _map()).remembered() == {"n2": "y"}

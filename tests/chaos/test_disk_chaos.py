"""The chaos lab's disk scenarios (`disk-corrupt`, `disk-full`, `disk-error`) on real processes,
and `chaos/disk.py` on files."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from phalanx.chaos.disk import DiskFaultError, corrupt_store
from phalanx.chaos.nemesis import damage_event
from phalanx.chaos.result import RESULT_KEYS
from phalanx.chaos.run_config import RunConfig
from phalanx.chaos.runner import run_chaos
from phalanx.errors import Corrupt
from phalanx.raft import ConfState, Entry, EntryType, HardState, Index, NodeId, Term
from phalanx.storage.nodelog import NodeLog
from phalanx.storage.wal import WalLogStore

pytestmark = pytest.mark.timeout(240 + 2 * float(os.environ.get("PHALANX_DISK_CHAOS_S", "30")))


def _store_with_records(directory: Path) -> None:
    store = WalLogStore(directory, ConfState(voters=(NodeId("n1"),)))
    try:
        for index in range(1, 40):
            store.persist([Entry(Term(1), Index(index), EntryType.NORMAL, b"x" * 50)],
                          HardState(Term(1), NodeId("n1"), Index(index)))
    finally:
        store.close()


def test_a_flipped_wal_byte_is_caught_when_the_store_is_opened(tmp_path: Path) -> None:
    """Proves: the byte `corrupt_store` flips in a WAL segment is never taken for a torn tail:
    reopening the store raises Corrupt (the replica then does not start)."""
    group = tmp_path / "groups" / "1"
    _store_with_records(group)
    reopened = WalLogStore(group, ConfState())
    reopened.close()  # intact: opens
    what = corrupt_store(tmp_path, random.Random(1), kind="wal")
    assert "flipped" in what
    with pytest.raises(Corrupt):
        WalLogStore(group, ConfState())


def test_a_flipped_node_log_byte_damages_that_replica_only(tmp_path: Path) -> None:
    """Proves: for a replica whose log lives in the node log, `corrupt_store` flips a byte of a
    frame that holds that replica's ops only; at reopen that replica is damaged (Corrupt) and
    the other one opens."""
    log = NodeLog(tmp_path / "log", tmp_path / "groups", confirm_delay=0)
    stores = [log.open_group(tmp_path / "groups" / name, ConfState()) for name in ("0", "1")]
    for index in range(1, 30):
        for store in stores:  # one after the other: each frame holds one group's ops
            store.persist([Entry(Term(1), Index(index), EntryType.NORMAL, b"v" * 40)],
                          HardState(Term(1), NodeId("n1"), Index(index)))
    log.close()
    what = corrupt_store(tmp_path, random.Random(1), kind="wal")
    assert "node log" in what
    log = NodeLog(tmp_path / "log", tmp_path / "groups")
    try:
        with pytest.raises(Corrupt, match="payload CRC mismatch"):
            log.open_group(tmp_path / "groups" / "1")
        assert log.open_group(tmp_path / "groups" / "0").last_index() == 29
    finally:
        log.close()


def test_nothing_to_corrupt_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "groups" / "0").mkdir(parents=True)
    with pytest.raises(DiskFaultError):
        corrupt_store(tmp_path, random.Random(1))


def test_a_damage_found_and_rebuilt_between_two_polls_is_still_seen() -> None:
    """The detection watch polls /status; under load a damaged replica can be found and rebuilt
    between two polls (or while /status did not answer): its "replica-damaged" event counts,
    but only one recorded at or after the fault (an older one belongs to an earlier fault)."""
    old = {"time": 90.0, "kind": "replica-damaged", "text": "n1: replica of shard 1 stopped"}
    new = {"time": 101.5, "kind": "replica-damaged", "text": "n1: replica of shard 2 stopped"}
    other = {"time": 102.0, "kind": "replica-rebuild", "text": "n1 deleted its replica"}
    assert damage_event({"events": [old, other, new]}, 100.0) == (101.5, new["text"])
    assert damage_event({"events": [old, other]}, 100.0) is None
    assert damage_event(None, 100.0) is None
    assert damage_event({"events": "junk"}, 100.0) is None


def test_disk_corrupt_scenario_detects_and_rebuilds() -> None:
    """A real run: a node is killed, a byte of one of its shard replicas' files flipped, and it
    is restarted. The node reports the damaged replica (time to detection in the events),
    nothing acknowledged is lost, the history is linearizable, and full redundancy comes back
    within the run (its time measured, not asserted on)."""
    config = RunConfig(scenario="disk-corrupt", duration_s=30.0, seed=31, nodes=3, zones=3,
                       clients=3, rate_ops_s=100.0, warmup_s=3.0, recovery_s=12.0)
    artifacts = run_chaos(config)
    result = artifacts.result
    assert set(RESULT_KEYS) <= set(result)
    json.dumps(result, allow_nan=False)
    faults = result["faults"]
    assert faults and all(f["kind"] == "disk-corrupt" for f in faults)
    assert "corrupted" in faults[0]["description"], faults[0]
    assert result["ops"]["ok"] > 100, result["ops"]
    assert result["lost_acknowledged_writes"] == 0, result["rpo"]
    assert result["linearizable"], result["linearizability"]["explain"]
    texts = [event["text"] for event in result["events"]]
    assert any("damaged" in text and "after its restart" in text for text in texts), texts
    assert result["redundancy"]["final"]["full"] is True, (result["redundancy"], texts)
    print("\n".join(texts))
    print(json.dumps(result["redundancy"]["faults"]))


#: The disk scenarios' run length: 30 s (one fault) by default; PHALANX_DISK_CHAOS_S=120 (say)
#: for the long variant (several faults, each healed before the next).
DISK_CHAOS_S = float(os.environ.get("PHALANX_DISK_CHAOS_S", "30"))


def _run_disk_scenario(scenario: str, nodes: int, seed: int) -> dict[str, Any]:
    config = RunConfig(scenario=scenario, duration_s=DISK_CHAOS_S, seed=seed, nodes=nodes,
                       zones=3,
                       clients=3, rate_ops_s=100.0, warmup_s=3.0, recovery_s=12.0)
    result = run_chaos(config).result
    json.dumps(result, allow_nan=False)
    faults = result["faults"]
    texts = [event["text"] for event in result["events"]]
    assert faults and all(f["kind"] == scenario for f in faults), faults
    assert result["ops"]["ok"] > 100, result["ops"]
    assert result["lost_acknowledged_writes"] == 0, result["rpo"]
    assert result["linearizable"], result["linearizability"]["explain"]
    assert any("damaged" in text and " s after its disk" in text for text in texts), texts
    assert result["redundancy"]["final"]["full"] is True, (result["redundancy"], texts)
    print("\n".join(texts))
    print(json.dumps(result["redundancy"]["faults"]))
    return result


@pytest.mark.skipif(os.geteuid() != 0, reason="disk-full mounts a tmpfs: needs root")
def test_disk_full_scenario_stops_the_replica_and_rebuilds_it_on_another_node() -> None:
    """A real run on 4 nodes (3 replicas): one replica is moved onto its own small tmpfs,
    which is filled (ENOSPC) while the clients write. The node reports the replica damaged
    ("disk full", time to detection in the events), the replica is rebuilt on the node that
    held none, nothing acknowledged is lost, the history is linearizable, and full redundancy
    comes back within the run (its time measured, not asserted on)."""
    result = _run_disk_scenario("disk-full", 4, 7)
    assert "disk full" in result["faults"][0]["description"], result["faults"][0]
    target = result["faults"][0]["targets"][0]
    texts = [event["text"] for event in result["events"]]
    assert any(f"on {target} re-created on" in text for text in texts), texts
    # The heal frees the ballast, which lies on the disk but outside the replica's directory:
    # the replica's removal from the node did not free it (session 8: "0 KiB freed").
    healed = [t for t in texts if t.startswith(f"{target}'s disk has room again")]
    assert healed and all(re.search(r"\(([1-9]\d*) KiB freed\)", t) for t in healed), healed


def test_disk_error_scenario_stops_the_replica_and_rebuilds_it() -> None:
    """A real run on 3 nodes: every read and write of one replica fails with EIO (the store's
    fault injection) for a few seconds; the replica stops, is reported, and (no other node to
    move it to) is rebuilt in place once the failed disk is replaced; nothing acknowledged is
    lost, linearizable, full redundancy again within the run."""
    result = _run_disk_scenario("disk-error", 3, 11)
    assert "EIO" in result["faults"][0]["description"], result["faults"][0]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_small_disks_mount_fill_free_and_unmount(tmp_path: Path) -> None:
    """Proves, on a real tmpfs: a replica's files are moved onto a small file system intact,
    `fill` writes until the kernel says ENOSPC (0 bytes free, and the refused write leaves
    nothing behind to fail later), the ballast lies outside the replica's directory (a node
    that deletes its damaged replica, as `rmtree(groups/<id>, ignore_errors=True)` does, does
    not free the disk: session 8's heal then reported "0 KiB freed"), `free` gives the space
    back, and `unmount_all` undoes it."""
    from phalanx.chaos.disk import SmallDisks

    group = tmp_path / "groups" / "1"
    group.mkdir(parents=True)
    (group / "0000.wal").write_bytes(b"x" * 5000)
    disks = SmallDisks()
    try:
        what = disks.mount(tmp_path, random.Random(1), spare_bytes=1 << 20)
        assert "shard 1" in what and group in disks.mounted
        assert (group / "0000.wal").read_bytes() == b"x" * 5000
        (group / "0000.wal").write_bytes(b"z" * 5000)  # the replica's directory IS the disk
        assert (tmp_path / "small-disk-1" / "replica" / "0000.wal").read_bytes() == b"z" * 5000
        for round_number in range(2):
            assert "0 bytes free" in disks.fill(tmp_path)
            assert not any(p.name == "ballast.fill" for p in group.rglob("*"))
            if round_number == 0:
                # The node drops its damaged replica to rebuild it: the disk stays full.
                shutil.rmtree(group, ignore_errors=True)
                assert group.is_dir() and not any(group.iterdir())
            with pytest.raises(OSError):  # more than the replica's own files held
                (group / "more").write_bytes(b"y" * (64 << 10))
            (group / "more").unlink(missing_ok=True)
            freed = disks.free(tmp_path)
            assert freed.endswith(" KiB freed") and int(freed.split()[0]) >= 500, freed
            (group / "more").write_bytes(b"y" * 8192)
            (group / "more").unlink()
    finally:
        assert disks.unmount_all()
    assert not disks.mounted

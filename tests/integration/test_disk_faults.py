"""Disks that fail or lie (issue 16 §4), on real processes.

- A follower's WAL segment or snapshot file has bytes flipped while it is stopped; it
  restarts: the checksum catches it at open, the replica does not start (it serves and
  acknowledges nothing from the damaged store; reads through that node are forwarded), says so
  in /status and /ready, is rebuilt from its healthy peers (removed from the configuration,
  its data deleted, added back as a new member: learner, snapshot, voter) and no acknowledged
  write is lost.
- A follower's snapshot is rewritten with one value changed AND valid checksums (a disk that
  lies): checksums cannot see it; the consistency checker does (its digest at a check index
  differs from the leader's): the replica stops, is reported, and is rebuilt.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import pytest
import redis
from integration_harness import LocalCluster, WriteLoad, check_all_present, wait_until

from phalanx.chaos.disk import corrupt_store
from phalanx.kv.snapshot import decode_snapshot, encode_snapshot
from phalanx.placement.shard import ShardMachine
from phalanx.storage.sqlite import SNAPSHOT_HEADER, SNAPSHOT_MAGIC

SHARD = "1"


def _group_dir(node: Any) -> Path:
    return Path(node.data_dir) / "groups" / SHARD


def _flip_wal(node: Any) -> str:
    """Flip one byte in the middle of the records of the group's oldest WAL segment (not in
    its torn-tail region: valid records follow it), as a disk returning bad data would; for
    a group in the node log (storage/nodelog.py), in a frame that holds only its ops."""
    if (_group_dir(node) / "NODELOG").exists():
        return corrupt_store(node.data_dir, random.Random(1), kind="wal")
    segment = sorted(_group_dir(node).glob("*.wal"))[0]
    data = bytearray(segment.read_bytes())
    end = len(data.rstrip(b"\0"))
    position = 16 + (end - 16) // 2
    data[position] ^= 0xFF
    segment.write_bytes(bytes(data))
    return f"{segment.name} byte {position} of {end}"


def _snapshot_index(path: Path) -> int:
    try:
        return int(SNAPSHOT_HEADER.unpack_from(path.read_bytes())[2])
    except (OSError, struct.error):
        return -1


def _snapshot_file(node: Any) -> Path:
    """The newest snapshot file of the group."""
    files = list(_group_dir(node).glob("snapshot-*.snap"))
    assert files, f"no snapshot file in {_group_dir(node)}"
    return max(files, key=_snapshot_index)


def _snapshot_now(c: LocalCluster, node: Any) -> None:
    """BGSAVE on `node`; wait until its snapshot covers everything it had applied."""
    status = c.status(node)
    assert status is not None
    applied = int(status["local"][SHARD]["applied_index"])
    assert c.client(node).bgsave()
    wait_until(lambda: any(_snapshot_index(p) >= applied
                           for p in _group_dir(node).glob("snapshot-*.snap")), 30,
               f"a snapshot at index >= {applied} on {node.id}")


def _flip_snapshot(node: Any) -> str:
    path = _snapshot_file(node)
    data = bytearray(path.read_bytes())
    position = SNAPSHOT_HEADER.size + (len(data) - SNAPSHOT_HEADER.size) // 2
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    return f"{path.name} byte {position} of {len(data)}"


def _lie_in_snapshot(node: Any, key: bytes, value: bytes) -> str:
    """Rewrite the snapshot with `key` set to `value`, every checksum valid."""
    path = _snapshot_file(node)
    blob = path.read_bytes()
    magic, term, index, _length, _crc = SNAPSHOT_HEADER.unpack_from(blob)
    assert magic == SNAPSHOT_MAGIC
    shard = ShardMachine()
    shard.restore(blob[SNAPSHOT_HEADER.size:])
    state = decode_snapshot(shard.kv.snapshot())
    assert state.data.get(key) is not None, f"{key!r} not in the snapshot"
    state.data[key] = value
    shard.kv.restore(encode_snapshot(state.applied_index, state.clock_ms, state.data,
                                     state.expires, state.sessions, state.watch, state.scripts))
    payload = shard.snapshot()
    header = SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, term, index, len(payload),
                                  zlib.crc32(payload))
    path.write_bytes(header + payload)
    return f"{path.name}: {key!r} := {value!r}"


def _damaged_reason(c: LocalCluster, node: Any) -> str | None:
    status = c.status(node)
    if status is None:
        return None
    damaged = (status.get("consistency") or {}).get("damaged") or {}
    return damaged.get(SHARD)


def _rebuilt(c: LocalCluster, node: Any) -> bool:
    """The node is a voter of the shard again with a fresh replica started from a snapshot
    (it may still be catching up on the leader's log after it)."""
    status = c.status(node)
    if status is None:
        return False
    local = (status.get("local") or {}).get(SHARD)
    if not local or local.get("storage_error") or (status.get("consistency") or {}).get(
            "damaged"):
        return False
    return node.id in local.get("voters", []) and local.get("snapshot_index", 0) > 0 and \
        local.get("applied_index", 0) >= local.get("commit_index", 1) > 0


def _prepare(c: LocalCluster, count: int = 300) -> tuple[Any, Any, dict[str, str]]:
    leader = c.leader()
    victim = c.others(leader)[0]
    writer = c.client(leader)
    acknowledged = {}
    for i in range(count):
        assert writer.set(f"disk:{i}", f"v{i}") is True
        acknowledged[f"disk:{i}"] = f"v{i}"
    c.wait_converged()
    return leader, victim, acknowledged


@pytest.mark.parametrize("where", ["wal", "snapshot"])
def test_corrupt_follower_store_is_refused_reported_and_rebuilt(cluster: Any, where: str) -> None:
    """Proves: flipped bytes in a stopped follower's WAL segment / snapshot file are caught
    by the checksums when it restarts; its replica never starts (a READONLY read through that
    node is served by forwarding, with the acknowledged value), /status and /ready name the
    damage, and the replica is rebuilt to a voter caught up by snapshot; every write
    acknowledged before and during the fault is on every node afterwards."""
    c: LocalCluster = cluster(3)
    _leader, victim, acknowledged = _prepare(c)
    if where == "snapshot":
        _snapshot_now(c, victim)
    c.kill(victim)
    what = _flip_wal(victim) if where == "wal" else _flip_snapshot(victim)
    load = WriteLoad(c, threads=2, max_writes=3_000, nodes=c.others(victim)).start()
    started = time.monotonic()
    c.restart(victim, wait=False)
    reason = wait_until(lambda: _damaged_reason(c, victim) or (
        "rebuilt" if _rebuilt(c, victim) else None), 60, "the damage to be reported")
    detected = time.monotonic() - started
    if reason != "rebuilt":  # it may be rebuilt before the first poll sees the damage
        assert "Corrupt" in reason or "checksum" in reason or "CRC" in reason, reason
    # Whatever its own replica's state, the node never answers from the damaged store: a
    # local (READONLY) read there is served from a healthy replica or by forwarding. Errors
    # while it starts are retried; any value it returns must be the acknowledged one.
    # A READONLY read is a stale read, but never older than what the shard held when the
    # REBUILT replica first confirmed with its leader: while it catches up it answers
    # -LOADING (redis-py's BusyLoadingError, a ConnectionError), never a nil for a key
    # written before (docs/security.md).
    local = c.readonly_client(victim)

    def read(key: str) -> str | None:
        try:
            value = local.get(key)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return None
        assert value is not None, f"{key} read as missing"
        return str(value)

    for key in ("disk:0", "disk:150", "disk:299"):
        value = wait_until(lambda key=key: read(key), 30, f"a read of {key}")
        assert value == acknowledged[key]
    wait_until(lambda: _rebuilt(c, victim), 120, f"{victim.id}'s replica to be rebuilt")
    rebuilt = time.monotonic() - started
    load.wait_acked(100, timeout=60)
    load.stop()
    for key, value in acknowledged.items():
        load.acknowledged[key] = value
        load.attempted[key] = value
    check_all_present(c, load)
    events = [e["text"] for e in (c.status(victim) or {}).get("events", [])]
    assert any("damaged" in text for text in events), events

    def metrics() -> str:
        with urllib.request.urlopen(f"http://{victim.admin}/metrics", timeout=5) as response:
            return str(response.read().decode())

    text = metrics()
    assert 'phalanx_replicas_damaged_total{cause="storage"} 1.0' in text, [
        line for line in text.splitlines() if "damaged" in line]
    # (the gauge follows the control loop's next round after the rebuild)
    wait_until(lambda: "phalanx_replicas_damaged_now 0.0" in metrics(), 30,
               "the damaged-replicas gauge back to 0")
    print(f"{where}: flipped {what}; damage reported {detected:.2f} s after the restart "
          f"began, full redundancy after {rebuilt:.2f} s; {load.acked_count()} writes "
          f"acknowledged during the fault, 0 lost")


def test_consistency_checker_catches_a_lying_snapshot_and_rebuilds(cluster: Any) -> None:
    """Proves: a follower whose snapshot says `disk:7` = "lie" with valid checksums restarts
    and replays cleanly (checksums cannot see a lie), but at the next consistency check its
    digest differs from the leader's at the same index: the replica stops, /status reports the
    divergence, and it is rebuilt; afterwards it holds the acknowledged value."""
    c: LocalCluster = cluster(3, consistency_check_ms=1000)
    _leader, victim, acknowledged = _prepare(c, 100)
    _snapshot_now(c, victim)
    c.kill(victim)
    what = _lie_in_snapshot(victim, b"disk:7", b"lie")
    started = time.monotonic()
    c.restart(victim, wait=False)
    reason = wait_until(lambda: _damaged_reason(c, victim) or (
        "rebuilt-before-seen" if _rebuilt(c, victim) and
        c.grep_logs(victim, "diverged") else None), 60, "the divergence to be detected")
    detected = time.monotonic() - started
    if reason != "rebuilt-before-seen":
        assert "diverged" in reason, reason
    wait_until(lambda: _rebuilt(c, victim), 120, f"{victim.id}'s replica to be rebuilt")
    rebuilt = time.monotonic() - started
    c.wait_converged()  # (a READONLY read is stale until the rebuilt replica caught up)
    local = c.readonly_client(victim)
    assert local.get("disk:7") == "v7"

    # Afterwards every replica records the same digest at the same check index (/status).
    def agreeing_digests() -> bool:
        seen = [((c.status(n) or {}).get("consistency") or {}).get("digests", {}).get(SHARD)
                for n in c.nodes]
        return all(seen) and len({(d["index"], d["digest"]) for d in seen}) == 1

    wait_until(agreeing_digests, 30, "every replica's digest at one check index to agree")
    assert all(local.get(k) == v for k, v in list(acknowledged.items())[:50])
    print(f"lie planted ({what}); divergence detected {detected:.2f} s after the restart "
          f"began (check interval 1 s), full redundancy after {rebuilt:.2f} s")


def _mount_tmpfs(path: Path, size_bytes: int) -> bool:
    completed = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs",
                                str(path)], capture_output=True, text=True, timeout=30,
                               check=False)
    return completed.returncode == 0


def test_a_full_disk_stops_the_replica_and_it_is_rebuilt(cluster: Any, tmp_path: Path) -> None:
    """Proves, on a real full file system: a follower's shard replica lives on a tmpfs with
    1 MiB to spare (its own per-group WAL: with the node log one full disk stops every
    replica of the node, docs/disk-faults.md); writes of 8 KiB values (one key) fill its log
    until a write fails with ENOSPC; that
    replica stops (reported as a storage failure, "disk full"), its data is deleted (which
    frees the file system) and it is rebuilt from its peers; no acknowledged write is lost.
    Needs root and a kernel that lets it mount a tmpfs (else skipped: a failure in CI)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    # Frequent snapshots (every 100 entries, 10 kept) keep the leader's log short: the
    # rebuilt replica gets a small snapshot and a short log, which fit where the old log
    # did not (with the default 20,000 entries it would refill the disk while catching up).
    c: LocalCluster = cluster(3, snapshot_every_entries=100, snapshot_keep_entries=10,
                              storage_engine="wal")
    leader, victim, acknowledged = _prepare(c, 50)
    c.kill(victim)
    group = _group_dir(victim)
    stash = tmp_path / "stash"
    shutil.copytree(group, stash)
    used = sum(p.stat().st_blocks * 512 for p in stash.iterdir())
    for child in group.iterdir():
        child.unlink()
    if not _mount_tmpfs(group, used + (1 << 20)):
        pytest.skip("this kernel does not let the test mount a tmpfs")
    try:
        for child in stash.iterdir():
            shutil.copy2(child, group / child.name)
        started = time.monotonic()
        c.restart(victim)
        writer = c.client(leader)
        blob = "x" * 8192
        last = None
        for i in range(1500):  # up to ~12 MB of log: far more than the 1 MiB spare
            if i % 10 == 0 and (_damaged_reason(c, victim) or
                                c.grep_logs(victim, "No space left")):
                break
            assert writer.set("full:blob", f"{i}:{blob}") is True
            last = f"{i}:{blob}"
        reason = wait_until(lambda: _damaged_reason(c, victim) or (
            "rebuilt" if _rebuilt(c, victim) and c.grep_logs(victim, "disk full") else None),
            60, "the full disk to stop the replica")
        detected = time.monotonic() - started
        if reason != "rebuilt":
            assert "disk full" in reason or "No space" in reason, reason
        wait_until(lambda: _rebuilt(c, victim), 120, f"{victim.id}'s replica to be rebuilt")
        rebuilt = time.monotonic() - started
        # A rebuilt replica may still be catching up from the leader's log (a READONLY read
        # is a stale read): compare once every node has applied the same index.
        c.wait_converged()
        local = c.readonly_client(victim)
        assert local.get("full:blob") == last
        assert all(local.get(k) == v for k, v in acknowledged.items())
        print(f"disk full on a {(used + (1 << 20)) >> 10} KiB tmpfs: stopped "
              f"{detected:.2f} s after the restart began, full redundancy after {rebuilt:.2f} s")
    finally:
        if c.alive(victim):
            c.kill(victim)
        subprocess.run(["umount", "-l", str(group)], capture_output=True, timeout=30,
                       check=False)


@pytest.mark.parametrize("engine", ["node", "wal"])
def test_the_background_scrub_finds_bytes_that_rot_at_rest(cluster: Any, engine: str) -> None:
    """Proves: a byte flipped in a RUNNING follower's WAL segment (the disk rots at rest; the
    data is not needed until the next restart) is found by the background scrub (every 0.5 s
    here): the replica stops, is reported and rebuilt; no acknowledged write is lost."""
    c: LocalCluster = cluster(3, scrub_interval_ms=500, storage_engine=engine)
    _leader, victim, acknowledged = _prepare(c, 200)
    if engine == "node":
        # A frame of the node log that holds only this shard's ops (the running node keeps
        # appending to the active segment: the flipped frame has valid ones after it).
        what = _flip_wal(victim)
        found = "payload CRC mismatch"
    else:
        segment = sorted(_group_dir(victim).glob("*.wal"))[0]
        end = len(segment.read_bytes().rstrip(b"\0"))
        position = 16 + (end - 16) // 3
        with open(segment, "r+b") as file:
            file.seek(position)
            byte = file.read(1)
            file.seek(position)
            file.write(bytes([byte[0] ^ 0xFF]))
        what, found = f"byte {position} of {segment.name} flipped", "bad record"
    started = time.monotonic()
    reason = wait_until(lambda: _damaged_reason(c, victim) or (
        "rebuilt" if _rebuilt(c, victim) and c.grep_logs(victim, found) else None),
        60, "the scrub to find the flipped byte")
    detected = time.monotonic() - started
    if reason != "rebuilt":
        assert found in reason, reason
    wait_until(lambda: _rebuilt(c, victim), 120, f"{victim.id}'s replica to be rebuilt")
    rebuilt = time.monotonic() - started
    c.wait_converged()
    local = c.readonly_client(victim)
    assert all(local.get(k) == v for k, v in acknowledged.items())
    print(f"scrub ({engine}): {what} at rest; found {detected:.2f} s "
          f"later, full redundancy after {rebuilt:.2f} s")

"""A full disk under the node's ONE log (`storage_engine = "node"`, the default), on real
processes and a real tmpfs (issue 16 §4, the scope of a full node log).

The node log (`storage/nodelog.py`) holds every group's entries of the node; when its file
system is full, a frame that needs new space fails, and with it every op in that frame: the
scope of a full disk is the node, not one replica. What the product does then, measured here:
every replica of the node that writes stops ("disk full"), the data replicas are reported
damaged and rebuilt on another node, the cluster keeps acknowledging writes, and nothing
acknowledged is lost.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from integration_harness import (
    LocalCluster,
    WriteLoad,
    check_all_present,
    describe_map,
    newest_map,
    shards_of,
    wait_until,
)

SHARD = "1"


def _status_local(c: LocalCluster, node: Any) -> dict[str, Any]:
    status = c.status(node) or {}
    return dict(status.get("local") or {})


def _mount_tmpfs(path: Path, size_bytes: int) -> bool:
    completed = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs",
                                str(path)], capture_output=True, text=True, timeout=30,
                               check=False)
    return completed.returncode == 0


def test_a_full_node_log_disk_stops_the_nodes_replicas_and_they_are_rebuilt_elsewhere(
        cluster: Any, tmp_path: Path) -> None:
    """Proves, on a real full file system under a follower's node log (4 nodes, 3 replicas):
    once the log's preallocated space is used up, its writes fail with ENOSPC; the data
    replica stops as a storage failure worded "disk full" and is reported damaged; it is
    rebuilt on the node that held none; the cluster acknowledges writes throughout and every
    acknowledged write is on the three healthy replicas. Prints which of the node's replicas
    stopped; the placement driver's replica of that node stops "disk full" too (the scope of a
    full node log is the node). Needs root (CI runs as root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    c: LocalCluster = cluster(4, snapshot_every_entries=100, snapshot_keep_entries=10)
    writer = c.client(c.leader())
    for i in range(50):
        assert writer.set(f"before:{i}", f"v{i}") is True
    holders = wait_until(lambda: [n for n in c.nodes if SHARD in _status_local(c, n)], 30,
                         "the holders of shard 1")
    c.wait_converged(holders)
    leader_of_shard = next(n for n in holders if _status_local(c, n)[SHARD]["role"] == "leader")
    victim = next(n for n in holders if n != leader_of_shard)
    c.kill(victim)
    log_dir = Path(victim.data_dir) / "log"
    stash = tmp_path / "stash"
    shutil.copytree(log_dir, stash)
    used = sum(max(p.stat().st_size, p.stat().st_blocks * 512) + 4096 for p in stash.iterdir())
    shutil.rmtree(log_dir)
    log_dir.mkdir()
    assert _mount_tmpfs(log_dir, used + (1 << 20)), "cannot mount a tmpfs"
    try:
        for child in stash.iterdir():
            shutil.copy2(child, log_dir / child.name)
        c.restart(victim)
        started = time.monotonic()
        load = WriteLoad(c, threads=2, max_writes=3_000,
                         nodes=[n for n in c.nodes if n != victim]).start()
        writer = c.client(leader_of_shard)
        blob = "x" * (64 << 10)

        def damaged() -> dict[str, str]:
            status = c.status(victim) or {}
            return dict((status.get("consistency") or {}).get("damaged") or {})

        for i in range(400):  # up to ~25 MB of log: far more than the spare (and the 4 MiB
            # the log preallocates, which it uses up before it needs new space)
            if i % 10 == 0 and (damaged() or c.grep_logs(victim, "No space left")):
                break
            assert writer.set("full:blob", f"{i}:{blob}") is True
        seen = wait_until(damaged, 60, "the full node log to stop a replica")
        detected = time.monotonic() - started
        assert "disk full" in seen.get(SHARD, ""), seen
        local = _status_local(c, victim)
        stopped = {g: (v.get("storage_error") or "")[:80] for g, v in local.items()
                   if v.get("storage_error")}
        print(f"\nreplicas of {victim.id}: {sorted(local)}; stopped: {stopped}; damaged: "
              f"{ {k: v[:80] for k, v in seen.items()} }; {detected:.2f} s after the restart")
        # The cluster keeps acknowledging writes (the other replicas of the shard).
        load.wait_acked(50, timeout=60)

        def rebuilt_elsewhere() -> bool:
            statuses = {n.id: _status_local(c, n) for n in c.nodes if n != victim}
            voters = [n for n, local in statuses.items() if SHARD in local
                      and not local[SHARD].get("storage_error")]
            return len(voters) >= 3
        wait_until(rebuilt_elsewhere, 120, "shard 1 back on 3 healthy replicas")
        rebuilt = time.monotonic() - started
        # The scope is the node: the move changed the map, an entry every replica of the
        # placement driver must write, and the victim's cannot (same log, same full disk).
        driver = wait_until(lambda: (_status_local(c, victim).get("0") or {}).get(
            "storage_error"), 60, "the placement driver's replica on the full disk to stop")
        assert "disk full" in driver, driver
        # Its map is frozen now. When it froze before the move (it still lists the victim in
        # shard 1) and looks caught up to the node (a leader known, all committed entries
        # applied: `Replicas.meta_caught_up`), the node resends the relocation from it once
        # a second: a compare-and-set on the replicas it saw (placement/map.py), which the
        # driver refuses as stale, so it cannot undo a later move of the shard (issue 16).
        frozen = c.status(victim) or {}
        meta = dict(frozen.get("local") or {}).get("0") or {}
        frozen_shard = shards_of(frozen).get(int(SHARD)) or {}
        resends = (victim.id in (frozen_shard.get("replicas") or [])
                   and victim.id not in (frozen_shard.get("rebuilding") or [])
                   and bool(meta.get("leader"))
                   and int(meta.get("applied_index") or 0) >= int(meta.get("commit_index") or 0))
        if resends:
            stale = wait_until(lambda: c.grep_logs(victim, "set_replicas: stale"), 60,
                               f"{victim.id}'s resent relocation to be refused as stale")
            assert "set_replicas" in stale[0], stale[0]
        else:
            print(f"{victim.id}'s frozen map does not resend the relocation: "
                  f"{describe_map(frozen)}; driver replica {meta}")
        healthy = [n for n in c.nodes if n != victim]
        status = newest_map(c, healthy)
        assert status is not None
        assert victim.id not in shards_of(status)[int(SHARD)]["replicas"], describe_map(status)
        load.stop()
        check_all_present(c, load, nodes=[n for n in c.nodes if n != victim])
        proposals = c.grep_logs(victim, f"set_replicas shard {SHARD} node {victim.id}")
        print(f"full node log: shard 1 reported damaged {detected:.2f} s after the restart "
              f"(the filling writes included), on 3 other replicas {rebuilt:.2f} s after "
              f"the restart; {load.acked_count()} writes acknowledged meanwhile, 0 lost; "
              f"{len(proposals)} relocation proposal(s) sent by {victim.id}, "
              f"{len(c.grep_logs(victim, 'set_replicas: stale'))} refused as stale")
    finally:
        if c.alive(victim):
            c.kill(victim)
        subprocess.run(["umount", "-l", str(log_dir)], capture_output=True, timeout=30,
                       check=False)

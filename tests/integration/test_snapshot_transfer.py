"""Snapshots larger than the transport's 64 MB frame reach a replica (issue 16 §3): the follower
pulls the leader's snapshot file in chunks (server/snapshot_transfer.py), resumes after a
dropped connection, and nobody's heartbeats suffer (no election, the shard's term unchanged).

Real processes, a real wipe of a follower's shard directory, a real dropped TCP connection
(`ss -K` destroys the sockets to the leader's RESP port in the kernel). The default size is
72 MB in 256 KiB chunks; `PHALANX_SNAPSHOT_TEST_MB=1024` runs the 1 GB variant (minutes).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from integration_harness import (
    LocalCluster,
    NodeRef,
    WriteLoad,
    check_all_present,
    map_nodes_of,
    run_cli,
    shards_of,
    start_joining_node,
    wait_map,
    wait_until,
)

SIZE_MB = int(os.environ.get("PHALANX_SNAPSHOT_TEST_MB", "72"))
CHUNK_BYTES = int(os.environ.get("PHALANX_SNAPSHOT_TEST_CHUNK", str(256 * 1024)))
VALUE_BYTES = 64 * 1024
KEYS = SIZE_MB * 1024 * 1024 // VALUE_BYTES
PER_COMMAND = 16  # one MSET of 1 MiB
#: Generous bounds for a loaded machine; they only stop a hung test.
LOAD_TIMEOUT_S = 60.0 + SIZE_MB * 1.0
CATCH_UP_TIMEOUT_S = 60.0 + SIZE_MB * 0.5
#: The 1 GB variant outlives the suite's 600 s per-test timeout.
pytestmark = pytest.mark.timeout(max(600, int(2 * (LOAD_TIMEOUT_S + 2 * CATCH_UP_TIMEOUT_S))))


def value_of(number: int) -> bytes:
    seed = hashlib.sha256(b"%d" % number).digest()
    return (seed * (VALUE_BYTES // len(seed) + 1))[:VALUE_BYTES]


class RssSampler:
    """Samples every node process's resident set (VmRSS in /proc, and RssAnon: VmRSS less the
    pages of mapped files, which the kernel can drop) every 0.2 s and keeps the peak per
    (phase, node): what the numbers in docs/simulation.md come from. A node between
    two pids (restarting) is skipped; never an assertion on time."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.phase = "start"
        self.peaks: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for node in list(self.cluster.nodes):
                try:
                    pid = self.cluster.pid(node)
                    status = Path(f"/proc/{pid}/status").read_text()
                except (AssertionError, OSError, KeyError, ValueError):
                    continue
                for field in ("VmRSS", "RssAnon"):
                    found = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
                    if found:
                        key = (self.phase, f"{node.id} {field}")
                        self.peaks[key] = max(self.peaks.get(key, 0),
                                              int(found.group(1)) * 1024)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def report(self) -> str:
        phases: dict[str, list[str]] = {}
        for (phase, node_id), peak in sorted(self.peaks.items()):
            phases.setdefault(phase, []).append(f"{node_id} {peak / 2**20:.0f}")
        return "; ".join(f"{phase}: {', '.join(items)}" for phase, items in phases.items())


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def index_in(line: str) -> int:
    """The log index a "took a snapshot at index N" line names (0 if none)."""
    found = re.search(r"at index (\d+)", line)
    return int(found.group(1)) if found else 0


def longest_stall_ms(lines: list[str]) -> float:
    """The longest "event loop stalled: the ticker ran N ms late" among log lines."""
    found = [float(m.group(1)) for line in lines
             if (m := re.search(r"ran (\d+) ms late", line))]
    return max(found, default=0.0)


def shard_status(cluster: LocalCluster, node: NodeRef) -> dict[str, Any] | None:
    status = cluster.status(node, timeout=5.0)
    return None if status is None else (status.get("local") or {}).get("1")


def shard_leader(cluster: LocalCluster) -> NodeRef | None:
    for node in cluster.nodes:
        mine = shard_status(cluster, node)
        if mine is not None and mine.get("role") == "leader":
            return node
    return None


def kill_connections_to(host: str, port: int) -> str:
    """Destroy every TCP connection to (host, port) (a dropped connection, for real)."""
    result = subprocess.run(["ss", "-K", "dst", host, "dport", "=", str(port)],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) for a dropped "
                    "connection")
def test_a_wiped_replica_and_a_new_one_get_a_snapshot_bigger_than_a_frame(cluster: Any) -> None:
    """Proves: a follower whose shard data was wiped gets back a snapshot bigger than the
    transport's 64 MB frame (it was dropped and resent for ever before), in chunks; a
    connection destroyed mid-transfer resumes where it broke; then a NEW node (joined, the
    wiped one decommissioned) gets a replica of the shard the same way; the shard keeps its
    leader and its term throughout (no heartbeat missed long enough for an election), writes
    go on meanwhile and every acknowledged one is on every replica; the big values are intact
    on both rebuilt replicas. Prints the figures of docs/simulation.md ("Snapshots of any
    size"): build, transfer and install times, peak RSS per node per phase, loop stalls."""
    # No snapshot during the load (its 1 MiB entries stall the loops on their own on a loaded
    # machine, a separate matter): the snapshots under test are taken after it, watched.
    # Election timeout 1.5-3 s: this shared machine starves every node of CPU for up to
    # ~1.2 s at once now and then (all three log "event loop stalled" together), which is not
    # what this test is about; the stall log is printed at the end.
    # The consistency checker is off: it digests the whole keyspace at apply time on every
    # replica at once (5.9 s stall of the leader at 830 MB in the first 1 GB run: an election),
    # a stall of its own (issue 15, the checker's work), not the snapshot's.
    c: LocalCluster = cluster(3, snapshot_chunk_bytes=CHUNK_BYTES, snapshot_keep_entries=10,
                              snapshot_every_entries=1_000_000,
                              snapshot_every_bytes=1 << 40, election_ticks=150,
                              consistency_check_ms=0)
    c.leader()
    leader = wait_until(lambda: shard_leader(c), 30, "a leader of shard 1")
    rss = RssSampler(c).start()
    try:
        figures = _wiped_then_new_replica(c, leader, rss)
    finally:
        rss.stop()
    print(f"{figures}; peak RSS MiB per phase: {rss.report()}")


def _wiped_then_new_replica(c: LocalCluster, leader: NodeRef, rss: RssSampler) -> str:
    rss.phase = "1-load"
    writer = c.client(leader, timeout=60.0)
    started = time.monotonic()
    for first in range(0, KEYS, PER_COMMAND * 8):
        pipe = writer.pipeline(transaction=False)
        for start in range(first, min(KEYS, first + PER_COMMAND * 8), PER_COMMAND):
            pipe.mset({f"big:{n}": value_of(n)
                       for n in range(start, min(KEYS, start + PER_COMMAND))})
        assert all(pipe.execute())
        assert time.monotonic() - started < LOAD_TIMEOUT_S, "loading took too long"
    loaded = time.monotonic() - started
    load_during_load = load_average()
    c.wait_converged()
    leader = wait_until(lambda: shard_leader(c), 30, "a leader of shard 1 after the load")
    before = {n.id: shard_status(c, n) for n in c.nodes}
    term = before[leader.id]["term"]  # type: ignore[index]
    stall_mark = {n.id: len(c.grep_logs(n, "event loop stalled")) for n in c.nodes}
    rss.phase = "2-build"
    for node in c.nodes:  # a snapshot of everything on every replica; the log compacted
        assert c.client(node, timeout=60.0).bgsave()
    wait_until(lambda: all((shard_status(c, n) or {}).get("snapshot_index", 0)
                           >= before[leader.id]["applied_index"]  # type: ignore[index]
                           for n in c.nodes), 120, "snapshots at the end of the load")
    victim = c.others(leader)[-1]
    c.kill(victim)
    shard_dir = Path(victim.data_dir) / "groups" / "1"
    for path in shard_dir.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    rss.phase = "3-wiped-back"
    # Writes through the leader and the other follower (the victim is down, then catching up,
    # then decommissioned), bounded in count: enough for the slowest (1 GB) variant.
    load = WriteLoad(c, threads=2, max_writes=4_000 + 50 * SIZE_MB, prefix="during",
                     nodes=c.others(victim)).start()
    try:
        load.wait_acked(20)
        restarted = time.monotonic()
        c.restart(victim)

        def spilling() -> bool:
            parts = list(shard_dir.glob("fetching-snapshot-*.part"))
            return bool(parts) and parts[0].stat().st_size > 4 * CHUNK_BYTES

        wait_until(spilling, CATCH_UP_TIMEOUT_S, f"{victim.id} to start fetching the snapshot",
                   interval=0.005)
        # Mid-transfer. Under heavy load one `ss -K` was once seen to leave the fetch's
        # connection alone (0 resumes): kill again (at most 5 times) until the victim says its
        # connection broke, while its fetch still runs; the check below is unchanged.
        killed = ""
        for _ in range(5):
            killed += kill_connections_to(leader.host, leader.port)
            try:
                wait_until(lambda: c.grep_logs(victim, "the connection broke at byte")
                           or c.grep_logs(victim, "fetched snapshot at index"), 10,
                           "the fetch to notice its destroyed connection", interval=0.1)
                break
            except AssertionError:
                continue

        def caught_up(node: NodeRef) -> bool:
            mine = shard_status(c, node)
            return mine is not None and mine.get("snapshot_index", 0) > 0 \
                and mine["applied_index"] >= before[leader.id]["applied_index"]  # type: ignore[index]

        wait_until(lambda: caught_up(victim), CATCH_UP_TIMEOUT_S,
                   f"{victim.id} to install the snapshot")
        caught = time.monotonic() - restarted
        load_during_wiped = load_average()
        load.wait_acked(load.acked_count() + 20)
        assert c.grep_logs(victim, "the connection broke at byte"), "no resumption seen"
        fetched = c.grep_logs(victim, "fetched snapshot at index")
        assert fetched and "(0 resumes)" not in fetched[-1], fetched
        check_big_values(c, victim)

        # A new replica: n4 joins in the wiped node's zone, that node is decommissioned, so
        # the placement driver adds shard 1's replica on n4 (a learner fed by a snapshot).
        rss.phase = "4-new-replica"
        zone = map_nodes_of(c.status(leader, timeout=5.0) or {})[victim.id]["zone"]
        newcomer = start_joining_node(c, "n4", zone=zone, join=leader)
        wait_map(c, lambda s: map_nodes_of(s).get("n4", {}).get("state") == "alive",
                 CATCH_UP_TIMEOUT_S, "n4 listed alive in the map", among=[leader])
        joined = time.monotonic()
        completed = run_cli(["decommission", victim.id, "--data-dir", str(c.data_dir)],
                            timeout=60)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        wait_map(c, lambda s: "n4" in (shards_of(s)[1].get("voters") or [])
                 and victim.id not in (shards_of(s)[1].get("voters") or []),
                 CATCH_UP_TIMEOUT_S, "shard 1's replica moved onto n4", among=[leader])
        wait_until(lambda: caught_up(newcomer), CATCH_UP_TIMEOUT_S,
                   "n4 to install the snapshot")
        moved = time.monotonic() - joined
        c.kill(victim)  # decommissioned: its memory back for the rest of the run
        load_during_new = load_average()
        load.wait_acked(load.acked_count() + 20)
    finally:
        load.stop()
    rss.phase = "5-verify"
    survivors = [n for n in c.nodes if n.id != victim.id]
    # No election anywhere while the snapshots were built, pulled and installed.
    for node in survivors:
        mine = shard_status(c, node)
        assert mine is not None and mine["term"] == term, (node.id, mine, term)
        assert mine["leader"] == leader.id, (node.id, mine)
    new_fetched = c.grep_logs(newcomer, "fetched snapshot at index")
    assert new_fetched, "n4 caught up without a snapshot"
    check_all_present(c, load, nodes=survivors)
    check_big_values(c, newcomer)
    stalls = [f"{node.id}: " + line.split(" WARNING ")[-1] for node in c.nodes
              for line in c.grep_logs(node, "event loop stalled")[stall_mark.get(node.id, 0):]]
    # Read at the end: the log line comes after the snapshot index in /status.
    built = sorted((line.split(": ", 1)[-1]
                    for line in c.grep_logs(leader, "group 1 took a snapshot at")), key=index_in)
    installs = [f"{node.id}: " + line.split(": ", 1)[-1] for node in (victim, newcomer)
                for line in c.grep_logs(node, "installed a snapshot of")]
    return (f"{SIZE_MB} MB in {KEYS} keys loaded in {loaded:.1f} s (load average {load_during_load}); "
            f"built on {leader.id}: {built[-1] if built else '?'}; "
            f"wiped {victim.id} back in {caught:.1f} s (restart included; load {load_during_wiped}): "
            f"{fetched[-1].split(': ', 1)[-1]}; sockets destroyed: {killed.count('ESTAB')}; "
            f"new replica n4 in {moved:.1f} s after its join (load {load_during_new}): "
            f"{new_fetched[-1].split(': ', 1)[-1]}; installs: {installs}; "
            f"term {term} unchanged, leader {leader.id} throughout; loop stalls logged: "
            f"{len(stalls)}, longest {longest_stall_ms(stalls):.0f} ms {stalls}")


def check_big_values(c: LocalCluster, node: NodeRef) -> None:
    reader = c.readonly_client(node, decode_responses=False)
    for first in range(0, KEYS, 16):  # 1 MiB replies
        numbers = range(first, min(KEYS, first + 16))
        values = reader.mget([f"big:{n}" for n in numbers])
        bad = [n for n, v in zip(numbers, values, strict=True) if v != value_of(n)]
        assert not bad, f"{len(bad)} big values wrong on {node.id}, e.g. {bad[:5]}"

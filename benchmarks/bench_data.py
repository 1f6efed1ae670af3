"""The recovery and memory sections of `phalanx bench` (issue 7), on one cluster of their own:

- recovery: as the data grows, SET throughput, the restart time of a killed follower and the
  snapshot catch-up of a follower whose shard data was deleted;
- memory:   RSS per node with N small keys vs redis-server's used_memory for the same keys.

Used by phalanx_bench.run_suite; the cluster helpers are bench_sections.py's. The cluster is
registered with `processes.extra_clusters` before it starts, so `Processes.close()` stops it
(by pid) whatever happens; it is also stopped as soon as the section is done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import resp_bench as rb
from bench_common import log, mb, wait_for
from bench_ratios import higher, lower
from bench_sections import (
    caught_up,
    disk_bytes,
    entries,
    entry,
    hostport,
    leader_changes,
    load_keys,
    ready,
    redis_memory,
    rss_bytes,
    shard_leader,
    start_cluster,
    status,
    stop_cluster,
)

if TYPE_CHECKING:
    from bench_common import Processes
    from phalanx_bench import Settings


def readonly_get(host: str, port: int, key: str) -> bytes | None:
    import redis

    try:
        client = redis.Redis(host=host, port=port, socket_timeout=1, socket_connect_timeout=1)
        try:
            client.execute_command("READONLY")
            value = client.get(key)
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return None
    return value if isinstance(value, bytes) else None


def restart_follower(cluster: rb.Phalanx, follower: str, leader: Any, wipe: bool,
                     marker: str, timeout: float = 600.0) -> dict[str, Any]:
    """kill -9 `follower` (wipe: then delete its shard-1 data: log, state and snapshots), write
    `marker`, `phalanx restart` it; time until /ready and until a READONLY GET of the marker
    on it returns the value."""
    from phalanx.ops import launcher

    node = entry(cluster, follower)
    pid = int(node.pid or 0)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not launcher.pid_alive(pid), 10, f"{follower} to exit")
    if wipe:
        # Empty the shard's directory but keep it: a node opens the data groups it finds on
        # disk, so an empty one is a replica with no log, no state and no snapshot (deleting
        # the directory would make the node forward instead of hosting the shard).
        shard_dir = Path(node.data_dir) / "groups" / "1"
        shutil.rmtree(shard_dir, ignore_errors=True)
        shard_dir.mkdir()
    value = f"{marker}-{time.time_ns()}"
    host, port = hostport(leader.resp)
    rb_client_set(host, port, marker, value)
    target = status(leader)["local"]["1"]["commit_index"]
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "phalanx", "restart", follower, "--data-dir",
                           str(cluster.data_dir)], capture_output=True, text=True, timeout=60,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"phalanx restart {follower}: {done.stdout} {done.stderr}")
    node = entry(cluster, follower)
    fhost, fport = hostport(node.resp)
    result: dict[str, Any] = {"node": follower, "wiped": wipe}
    answered = ready_at = served_at = None
    deadline = began + timeout
    while time.monotonic() < deadline and (ready_at is None or served_at is None):
        if answered is None and rb.ping(fhost, fport, timeout=0.5):
            answered = time.monotonic()
        if ready_at is None and ready(node):
            ready_at = time.monotonic()
        # Serving from its own replica: applied through the marker's index (a node without
        # the replica would forward the READONLY GET, so the GET alone proves nothing).
        if served_at is None and applied_index(node) >= target and \
                readonly_get(fhost, fport, marker) == value.encode():
            served_at = time.monotonic()
        time.sleep(0.02)
    if served_at is None:
        raise RuntimeError(f"{follower} did not apply through index {target} and serve "
                           f"{marker} within {timeout:g} s (applied: {applied_index(node)}; "
                           f"/ready: {'yes' if ready_at is not None else 'no'})")
    result.update(answers_s=round((answered or served_at) - began, 3),
                  ready_s=round((ready_at or served_at) - began, 3),
                  serves_s=round(served_at - began, 3))
    # Catching up = from the process answering RESP to serving the marker (the start-up of
    # the Python process itself, ~1-2 s, is not transfer time).
    result["catch_up_s"] = round(max(result["serves_s"] - result["answers_s"], 0.001), 3)
    with contextlib.suppress(OSError, RuntimeError, KeyError):
        mine = status(node)["local"]["1"]
        result["snapshot_index_after"] = mine["snapshot_index"]
        result["keys_after"] = mine["keys"]
        result["leader_keys"] = status(leader)["local"]["1"]["keys"]
    return result


def applied_index(node: Any) -> int:
    try:
        return int(status(node)["local"]["1"]["applied_index"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError):
        return -1


def rb_client_set(host: str, port: int, key: str, value: str) -> None:
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=30)
    try:
        client.set(key, value)
    finally:
        client.close()


def ensure_compacted(cluster: rb.Phalanx, leader: Any, keep: int, keys: int,
                     settings: Settings) -> dict[str, Any]:
    """Write (overwrite existing keys, so the data does not grow) until the leader's shard-1
    snapshot index is past `keep` entries: its log no longer starts at 1, so a wiped follower
    can only catch up by a snapshot."""
    host, port = hostport(leader.resp)
    written = 0
    deadline = time.monotonic() + 600
    while status(leader)["local"]["1"]["snapshot_index"] <= keep + 1:
        if time.monotonic() > deadline:
            raise RuntimeError("the leader did not take a snapshot within 600 s")
        rb.run_benchmark(host, port, "SET", 1, 50, 5000, keys, settings.run_timeout_s)
        written += 5000
    return {"filler_sets": written,
            "leader_snapshot_index": status(leader)["local"]["1"]["snapshot_index"]}


def snapshot_bytes(node: Any) -> int:
    files = sorted(Path(node.data_dir, "groups", "1").glob("snapshot-*.snap"),
                   key=lambda p: p.stat().st_mtime)
    return files[-1].stat().st_size if files else 0


def data_section(processes: Processes, settings: Settings, recovery: bool,
                 memory: bool) -> dict[str, Any]:
    """One 3-node, 1-shard cluster (node defaults, plus --snapshot-every-entries when the
    settings say so) and one in-memory redis-server, both loaded with the same keys, growing
    through `sizes`. At each size: memory (RSS per node vs redis), and if `recovery`: SET
    throughput at that size, restart of a killed follower, catch-up of a wiped follower."""
    sizes = list(settings.recovery_sizes) if recovery else [settings.memory_keys]
    if memory and settings.memory_keys not in sizes:
        sizes = sorted({*sizes, settings.memory_keys})
    out: dict[str, Any] = {"sizes": [], "error": ""}
    overrides: dict[str, Any] = {}
    if settings.snapshot_every_entries:
        overrides = {"snapshot_every_entries": settings.snapshot_every_entries,
                     "snapshot_keep_entries": settings.snapshot_keep_entries}
    out["cluster_flags"] = rb.as_flags(overrides)
    cluster = None
    redis_server = None
    try:
        cluster = start_cluster(processes, "data", 3, overrides)
        redis_server = rb.start_redis("redis-memory", processes.root,
                                      ["--save", "", "--appendonly", "no"])
        processes.children.append(redis_server.process)
        import bench_bulk

        # Leader changes during the loads are counted (issue 15: none at 1M keys): first let
        # the placement driver's start-up leadership moves finish.
        out["settled"] = bench_bulk.settle(cluster)
        leader = shard_leader(cluster)
        baseline = {e.id: rss_bytes(e.pid) for e in entries(cluster)}
        out["baseline_rss"] = baseline
        out["redis_baseline"] = redis_memory(redis_server.host, redis_server.port)
        loaded = 0
        for size in sizes:
            item: dict[str, Any] = {"keys": size}
            host, port = hostport(leader.resp)
            retried: list[str] = []
            changes_before = leader_changes(cluster)
            item["load_keys_per_s"] = round(load_keys(host, port, loaded, size,
                                                      retried=retried), 1)
            # The bulk load (issue 15): 1,000-key MSETs into an idle cluster; any election
            # during it shows here (replicas that saw a new leader), any error as a retry.
            item["load_leader_changes"] = leader_changes(cluster) - changes_before
            item["load_retries"] = len(retried)
            load_keys(redis_server.host, redis_server.port, loaded, size, batch=5000)
            loaded = size
            wait_for(lambda leader=leader: caught_up(cluster, leader), 300,
                     "every node to apply the load", poll=0.2)
            time.sleep(1.0)  # let the allocator settle
            nodes = entries(cluster)
            item["rss"] = {e.id: rss_bytes(e.pid) for e in nodes}
            item["disk"] = {e.id: disk_bytes(Path(e.data_dir)) for e in nodes}
            item["redis"] = redis_memory(redis_server.host, redis_server.port)
            worst = max(item["rss"].values())
            item["rss_per_key"] = round(worst / size, 1)
            item["redis_used_per_key"] = round(item["redis"]["used_memory"] / size, 1)
            # Marginal cost: growth over the empty process, per key.
            item["rss_delta_per_key"] = round(max(
                item["rss"][n] - baseline.get(n, 0) for n in item["rss"]) / size, 1)
            item["redis_delta_per_key"] = round(
                (item["redis"]["used_memory"] - out["redis_baseline"]["used_memory"]) / size, 1)
            item["rss_vs_redis_used"] = worst / item["redis"]["used_memory"]
            item["rss_vs_redis_rss"] = worst / item["redis"]["used_memory_rss"]
            log(f"data {size:,} keys: loaded at {item['load_keys_per_s']:,.0f} keys/s; max node "
                f"RSS {worst / 1e6:.1f} MB ({item['rss_per_key']:.0f} B/key) vs redis "
                f"used_memory {item['redis']['used_memory'] / 1e6:.1f} MB "
                f"({lower(item['rss_vs_redis_used'])})")
            if recovery:
                load = os.getloadavg()[0]
                ok, metrics, error, _elapsed = rb.run_benchmark(
                    host, port, "SET", 1, settings.read_clients, settings.recovery_set_requests,
                    size, settings.run_timeout_s)
                item["set"] = {"ok": ok, "error": error, "load_1m": round(load, 2),
                               "rps": metrics.get("rps"), "p50_ms": metrics.get("p50_latency_ms"),
                               "p99_ms": metrics.get("p99_latency_ms")}
                log(f"data {size:,} keys: SET c={settings.read_clients} "
                    f"{metrics.get('rps', 0):,.0f}/s {error}")
                follower = sorted(e.id for e in entries(cluster) if e.id != leader.id)[-1]
                wait_for(lambda leader=leader: caught_up(cluster, leader), 300,
                         "every node to apply the writes", poll=0.2)
                item["restart"] = restart_follower(cluster, follower, leader, False,
                                                   "recovery:restart")
                log(f"data {size:,} keys: restart of {follower}: ready "
                    f"{item['restart']['ready_s']} s, serves {item['restart']['serves_s']} s")
                if not settings.recovery_wipe:
                    out["sizes"].append(item)
                    leader = shard_leader(cluster)
                    continue
                keep = settings.snapshot_keep_entries if settings.snapshot_every_entries \
                    else 2000
                item["compaction"] = ensure_compacted(cluster, leader, keep, size, settings)
                item["snapshot_bytes"] = snapshot_bytes(leader)
                try:
                    item["wipe"] = restart_follower(cluster, follower, leader, True,
                                                    "recovery:wipe", settings.wipe_timeout_s)
                except RuntimeError as error:
                    item["wipe"] = {"node": follower, "wiped": True, "error": str(error)}
                    out["sizes"].append(item)
                    raise RuntimeError(f"stopped at {size:,} keys: {error}") from None
                item["wipe"]["by_snapshot"] = bool(item["wipe"].get("snapshot_index_after"))
                item["wipe"]["ready_before_caught_up"] = \
                    item["wipe"]["ready_s"] < item["wipe"]["serves_s"] - 1.0
                seconds = item["wipe"]["catch_up_s"]
                item["snapshot_mb_per_s"] = round(item["snapshot_bytes"] / 1e6 / seconds, 2) \
                    if seconds else None
                log(f"data {size:,} keys: wiped {follower} caught up in {seconds} s, snapshot "
                    f"{item['snapshot_bytes'] / 1e6:.1f} MB ({item['snapshot_mb_per_s']} MB/s, "
                    f"by snapshot: {item['wipe']['by_snapshot']})")
                leader = shard_leader(cluster)
            out["sizes"].append(item)
    except Exception as error:  # a section's failure is reported, the suite goes on
        out["error"] = f"{type(error).__name__}: {error}"[:400]
        log(f"data: FAILED {out['error']}")
    finally:
        if cluster is not None:
            stop_cluster(processes, cluster)
        if redis_server is not None:
            rb.stop_process(redis_server.process)
    sets = [s for s in out["sizes"] if s.get("set", {}).get("ok")]
    if len(sets) >= 2:
        out["set_largest_vs_smallest"] = sets[-1]["set"]["rps"] / sets[0]["set"]["rps"]
    return out


def markdown(doc: dict[str, Any]) -> list[str]:
    """The recovery and memory sections' lines in RESULTS.md."""
    lines: list[str] = []
    s = doc["settings"]
    data = doc.get("data")
    if data and doc.get("recovery_measured"):
        lines += ["", "## Recovery and throughput as the data grows", "",
                  "One 3-node, 1-shard cluster (node defaults"
                  + (f", {' '.join(data.get('cluster_flags', []))}" if data.get("cluster_flags")
                     else "") + ") loaded with key:<12 digits> -> 3-byte values (pipelined MSETs "
                  "of 1000 keys), growing. At each size: redis-benchmark SET "
                  f"c={s.get('read_clients')} n={s.get('recovery_set_requests')} over the "
                  "existing keys (the data does not grow); kill -9 of a follower, one more write "
                  "(a marker), `phalanx restart`: seconds until its admin /ready and until a "
                  "READONLY GET of the marker on it returns the value; then the same with the "
                  "follower's shard data deleted (log, state, snapshots) after the leader's log "
                  "was compacted past its start (filler SETs over the existing keys if needed), so "
                  "it can only catch up by a snapshot. Catch-up = from the restarted process answering "
                  "RESP to serving the marker (excludes the ~1-2 s Python start-up); snapshot "
                  "MB/s = the leader's snapshot file / catch-up. keys after = the wiped "
                  "follower's key count / the leader's (a check that it got everything).",
                  "Load = 1,000-key MSETs, 20 per pipeline, into the idle cluster; leader "
                  "changes = replicas (of every group) that saw a new leader during the load; "
                  "retries = pipelines sent again after an error (both 0 is the goal).",
                  "", "| keys | load keys/s | load: leader changes / retries | SET/s | SET p50 ms "
                  "| restart: /ready s | restart: "
                  "serves s | wiped: serves s | wiped: catch-up s | snapshot MB | snapshot MB/s "
                  "| keys after |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for item in data["sizes"]:
            st = item.get("set", {})
            rs, wp = item.get("restart", {}), item.get("wipe", {})
            bulk = (f"{item.get('load_leader_changes', '-')} / "
                    f"{item.get('load_retries', '-')}")
            lines.append(
                f"| {item['keys']:,} | {item['load_keys_per_s']:,.0f} | {bulk} | "
                f"{st['rps']:,.0f} | {st['p50_ms']:.2f} | " if st.get("rps") else
                f"| {item['keys']:,} | {item['load_keys_per_s']:,.0f} | {bulk} | failed | | ")
            lines[-1] += (f"{rs.get('ready_s', '-')} | {rs.get('serves_s', '-')} | "
                          f"{wp.get('serves_s', '-')} | {wp.get('catch_up_s', '-')} | "
                          f"{mb(item.get('snapshot_bytes'))} | "
                          f"{item.get('snapshot_mb_per_s', '-')} | "
                          f"{wp.get('keys_after', '?')} / {wp.get('leader_keys', '?')} |")
        for item in data["sizes"]:
            wp = item.get("wipe", {})
            if wp.get("error"):
                lines.append(f"- {item['keys']:,} keys, wiped follower: {wp['error']}")
            elif wp.get("ready_before_caught_up"):
                lines.append(f"- {item['keys']:,} keys: the wiped follower's admin /ready said "
                             f"ready after {wp['ready_s']} s, {wp['serves_s'] - wp['ready_s']:.1f}"
                             " s before it had caught up.")
        if data.get("set_largest_vs_smallest"):
            lines += ["", f"SET throughput at the largest size / at the smallest: "
                      f"{higher(data['set_largest_vs_smallest'])} (target: within 20 %, i.e. "
                      "≥ 0.80x)."]
    if data and doc.get("memory_measured"):
        lines += ["", "## Memory per key", "",
                  "Resident memory (VmRSS) of each phalanx node (the largest of the 3 is "
                  "reported) after every node applied the keys, vs one in-memory redis-server "
                  "(`--save '' --appendonly no`) holding the same keys: `INFO memory` "
                  "used_memory and used_memory_rss. Per key = total / keys (the empty "
                  "process's baseline included); growth/key = (total - the empty process) / "
                  "keys, the marginal cost of a key.", "",
                  "| keys | phalanx max node RSS MB | B/key | growth B/key | redis used_memory MB "
                  "| B/key | growth B/key | redis RSS MB | phalanx RSS / redis used_memory "
                  "| / redis RSS |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for item in data["sizes"]:
            worst = max(item["rss"].values())
            lines.append(f"| {item['keys']:,} | {mb(worst)} | {item['rss_per_key']:.0f} | "
                         f"{item.get('rss_delta_per_key', 0):.0f} | "
                         f"{mb(item['redis']['used_memory'])} | "
                         f"{item['redis_used_per_key']:.0f} | "
                         f"{item.get('redis_delta_per_key', 0):.0f} | "
                         f"{mb(item['redis']['used_memory_rss'])} | "
                         # From the raw bytes: older documents stored these ratios rounded.
                         f"{lower(worst / item['redis']['used_memory'])} | "
                         f"{lower(worst / item['redis']['used_memory_rss'])} |")
        base = data.get("baseline_rss", {})
        if base:
            lines += ["", "Empty cluster RSS per node: " + ", ".join(
                f"{k} {mb(v)} MB" for k, v in base.items()) + "; target: ≤ 2x redis "
                "used_memory."]
    if data and data.get("error"):
        lines += ["", f"**data sections failed: {data['error']}**"]
    return lines

"""The `phalanx bench` sections that start their own clusters or measure over time (issue 7):

- latency:  p50/p99/p99.9 at fixed moderate rates (benchmarks/openloop.py; etcd_load -mode rate)
- scale:    SET throughput for 1/3/9 shards on 3 and 6 nodes (redis-benchmark on every node)
- recovery, memory: in bench_data.py (on the cluster helpers of this file)
- soak:     a mixed workload at a fixed rate for --soak-seconds, RSS and disk sampled

Used by phalanx_bench.run_suite (which owns the Processes registry, the peers and the report).
Every cluster started here is registered with `processes.extra_clusters` before it starts, so
`Processes.close()` stops it (by pid) whatever happens; each is also stopped and its directory
removed as soon as its section is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import resp_bench as rb
from bench_common import log, mb, wait_for
from bench_ratios import higher

if TYPE_CHECKING:
    from bench_common import Processes
    from phalanx_bench import Settings

HERE = Path(__file__).resolve().parent
OPENLOOP = HERE / "openloop.py"
VALUE = b"xxx"  # redis-benchmark's default 3-byte value


# --------------------------------------------------------------------------- clusters


def start_cluster(processes: Processes, name: str, nodes: int, overrides: dict[str, Any],
                  timeout: float = 120.0, nodes_per_host: int = 1) -> rb.Phalanx:
    """An N-node cluster (node config `overrides`, as `phalanx up` flags set them) in
    processes.root/name, started through the launcher; returns once every node is ready
    (admin /ready: every local replica knows its leader and has applied its log)."""
    cluster = rb.Phalanx(processes.root / name)
    processes.extra_clusters.append(cluster)
    cluster.data_dir.mkdir(parents=True)
    cluster.start(nodes, timeout=timeout, overrides=overrides, nodes_per_host=nodes_per_host)
    wait_for(lambda: all(ready(e) for e in entries(cluster)), 90,
             f"{name}: every node ready", poll=0.2)
    return cluster


def stop_cluster(processes: Processes, cluster: rb.Phalanx) -> None:
    processes.notes += cluster.stop()
    with contextlib.suppress(ValueError):
        processes.extra_clusters.remove(cluster)
    shutil.rmtree(cluster.data_dir, ignore_errors=True)


def entries(cluster: rb.Phalanx) -> list[Any]:
    from phalanx.ops import cluster_file

    return list(cluster_file.read_cluster_file(cluster.data_dir).nodes)


def entry(cluster: rb.Phalanx, node_id: str) -> Any:
    return next(e for e in entries(cluster) if e.id == node_id)


def ready(node: Any) -> bool:
    from phalanx.ops import admin

    return admin.node_ready(node, timeout=1.0)


def status(node: Any) -> dict[str, Any]:
    from phalanx.ops import admin

    code, body = admin.admin_request(node.admin, "/status", timeout=2.0)
    if code != 200 or not isinstance(body, dict):
        raise RuntimeError(f"{node.id} /status: {code}")
    return body


def hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def shard_leader(cluster: rb.Phalanx, shard: int = 1) -> Any:
    """The node entry leading `shard` (as every reachable node names it)."""
    def find() -> Any:
        named = set()
        for node in entries(cluster):
            with contextlib.suppress(OSError, RuntimeError):
                for item in status(node).get("shards", []):
                    if item.get("id") == shard:
                        named.add(item.get("leader"))
        if len(named) == 1 and None not in named:
            leader = named.pop()
            return next((e for e in entries(cluster) if e.id == leader), None)
        return None
    return wait_for(find, 60, f"a leader of shard {shard}", poll=0.2)


def leader_changes(cluster: rb.Phalanx) -> int:
    """Leader changes seen so far, summed over every replica of every group of every node
    (each replica's `leader_changes` in /status; an election counts once per replica)."""
    total = 0
    for node in entries(cluster):
        with contextlib.suppress(OSError, RuntimeError):
            for item in (status(node).get("local") or {}).values():
                total += int(item.get("leader_changes", 0))
    return total


def rss_bytes(pid: int | None) -> int:
    if not pid:
        return 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def disk_bytes(path: Path) -> int:
    """Allocated bytes under `path` (du: st_blocks * 512), files that vanish are skipped."""
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


def load_keys(host: str, port: int, start: int, stop: int, batch: int = 1000,
              retried: list[str] | None = None) -> float:
    """SET key:<12 digits> = xxx for start <= i < stop (redis-benchmark's key format), as
    pipelined MSETs of `batch` keys; returns keys/s. Errors that made a pipeline be sent
    again are appended to `retried`."""
    import redis

    began = time.monotonic()
    client = redis.Redis(host=host, port=port, socket_timeout=60)
    chunk = batch * 20  # one pipeline of 20 MSETs; resent whole on an error (MSET is idempotent)
    try:
        for low in range(start, stop, chunk):
            for attempt in range(5):
                pipe = client.pipeline(transaction=False)
                for first in range(low, min(stop, low + chunk), batch):
                    pipe.mset({b"key:%012d" % i: VALUE
                               for i in range(first, min(stop, first + batch))})
                try:
                    pipe.execute()
                    break
                except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError) as error:
                    if attempt == 4:
                        raise RuntimeError(f"loading keys {low}..: {error}") from None
                    log(f"load: retrying keys {low}.. after: {str(error)[:160]}")
                    if retried is not None:
                        retried.append(str(error)[:160])
                    time.sleep(1.0)
    finally:
        client.close()
    return (stop - start) / max(time.monotonic() - began, 1e-9)


def redis_memory(host: str, port: int) -> dict[str, int]:
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=10)
    try:
        info = client.info("memory")
    finally:
        client.close()
    return {"used_memory": int(info["used_memory"]), "used_memory_rss": int(info["used_memory_rss"])}


# --------------------------------------------------------------------------- open loop


def _rate_run(argv: list[str], timeout: float, what: str) -> tuple[bool, dict[str, Any]]:
    """Run an open-loop load generator: (True, its result: the JSON of its last stdout line),
    or (False, a failed row {"ok": 0, "error": ...})."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return False, {"ok": 0, "error": f"{what} timed out after {timeout:g} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return False, {"ok": 0, "error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
    return True, dict(json.loads(lines[-1]))


def openloop(host: str, port: int, test: str, rate: float, seconds: float, keyspace: int,
             extra: list[str] | None = None) -> dict[str, Any]:
    argv = [sys.executable, str(OPENLOOP), "--host", host, "--port", str(port), "--test", test,
            "--rate", f"{rate:g}", "--seconds", f"{seconds:g}", "--keyspace", str(keyspace),
            *(extra or [])]
    ran, result = _rate_run(argv, seconds + 60, "openloop")
    if ran:
        result["error"] = result.get("first_error", "") if result.get("errors") else ""
    return result


def etcd_rate(binary: Path, endpoint: str, op: str, rate: float, seconds: float,
              keyspace: int) -> dict[str, Any]:
    argv = [str(binary), "-mode", "rate", "-endpoints", endpoint, "-op", op, "-rate",
            f"{rate:g}", "-duration", f"{seconds:g}s", "-keyspace", str(keyspace)]
    ran, result = _rate_run(argv, seconds + 90, "etcd_load")
    if ran:
        result["error"] = f"{result['errors']} failed" if result.get("errors") else ""
    return result


def latency_section(targets: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """targets: name -> callable(test, rate, seconds) -> result dict. One pass per (test, rate),
    the order of the targets rotating per pass."""
    rows = []
    names = list(targets)
    passes = [(test, rate) for rate in settings.latency_rates for test in ("SET", "GET")]
    for index, (test, rate) in enumerate(passes):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            load = os.getloadavg()[0]
            result = targets[name](test, rate, settings.latency_seconds)
            row = {"target": name, "test": test, "rate": rate, "load_1m": round(load, 2),
                   **{k: result.get(k) for k in ("sent", "ok", "errors", "dropped",
                                                 "achieved_rate", "p50_ms", "p90_ms", "p99_ms",
                                                 "p999_ms", "max_ms")},
                   "error": result.get("error", "")}
            if isinstance(row["achieved_rate"], float):
                row["achieved_rate"] = round(row["achieved_rate"], 1)
            log(f"latency {name:<16} {test} {rate:g}/s: achieved {row['achieved_rate']}/s "
                f"p50 {row['p50_ms']} p99 {row['p99_ms']} p99.9 {row['p999_ms']} ms "
                f"{row['error']} [load {load:.1f}]")
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- scale


def scale_section(processes: Processes, settings: Settings) -> list[dict[str, Any]]:
    """For each (nodes, shards): a fresh cluster, then redis-benchmark SET on every node at
    once, the 50 clients and the requests split evenly over the nodes (each node forwards a
    key's write to its shard's leader: the default proxy mode), keys random over the keyspace
    so they spread over every slot. Throughput = all requests / the slowest node's time."""
    rows = []
    for nodes, shards in settings.scale_configs:
        row: dict[str, Any] = {"nodes": nodes, "shards": shards, "clients": settings.read_clients,
                               "requests": settings.scale_requests}
        cluster = None
        try:
            began = time.monotonic()
            cluster = start_cluster(processes, f"scale-{nodes}n-{shards}s", nodes,
                                    {"shards": shards})
            row["startup_s"] = round(time.monotonic() - began, 1)
            load = os.getloadavg()[0]
            row["load_1m"] = round(load, 2)
            per_clients = max(1, settings.read_clients // nodes)
            per_requests = max(1, settings.scale_requests // nodes)
            outcomes: list[tuple[bool, dict[str, float], str, float]] = []
            # Every node at once: one redis-benchmark process per node.
            procs = []
            for node in entries(cluster):
                host, port = hostport(node.resp)
                argv = ["redis-benchmark", "-h", host, "-p", str(port), "-t", "set", "-c",
                        str(per_clients), "-n", str(per_requests), "-r",
                        str(settings.keyspace), "--csv"]
                procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True))
            for proc in procs:
                try:
                    out, err = proc.communicate(timeout=settings.run_timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out, err = proc.communicate()
                    outcomes.append((False, {}, "timed out", 0.0))
                    continue
                metrics = rb.parse_csv(out, "SET")
                bad = [line for line in (out + err).splitlines() if "error" in line.lower()]
                outcomes.append((proc.returncode == 0 and metrics is not None and not bad,
                                 metrics or {}, (bad or [err.strip()[-200:]])[0]
                                 if bad or proc.returncode else "", 0.0))
            good = [m for ok, m, _e, _t in outcomes if ok]
            errors = [e for ok, _m, e, _t in outcomes if not ok]
            if good and not errors:
                slowest = max(per_requests / m["rps"] for m in good)
                row.update(ok=True, rps=round(per_requests * len(good) / slowest, 1),
                           p50_ms=statistics.median(m["p50_latency_ms"] for m in good),
                           p99_ms=max(m["p99_latency_ms"] for m in good), error="")
            else:
                row.update(ok=False, error="; ".join(errors)[:300])
            # Slot-routed, `repeats` runs on this cluster (the median is the row's figure: one
            # run moves by tens of percent here).
            tries = [routed_set(cluster, settings.read_clients, settings.scale_requests,
                                settings.keyspace, settings.run_timeout_s)
                     for _ in range(max(1, settings.repeats))]
            good_tries = [t for t in tries if t.get("routed_rps")]
            routed = dict(good_tries[0] if len(good_tries) == len(tries) else
                          next(t for t in tries if not t.get("routed_rps")))
            if len(good_tries) == len(tries):
                routed["routed_rps"] = statistics.median(t["routed_rps"] for t in tries)
                routed["routed_p50_ms"] = statistics.median(t["routed_p50_ms"] for t in tries)
            routed["routed_runs_rps"] = [t.get("routed_rps") for t in tries]
            row.update(routed)
            log(f"scale {nodes} nodes {shards} shards: {row.get('rps', '-')} SET/s "
                f"{row['error']}; slot-routed {row.get('routed_rps', '-')} SET/s "
                f"{row.get('routed_error', '')} [load {load:.1f}]")
        except Exception as error:  # a row's failure is reported, the suite goes on
            row.update(ok=False, error=f"{type(error).__name__}: {error}"[:300])
            log(f"scale {nodes} nodes {shards} shards: FAILED {row['error']}")
        finally:
            if cluster is not None:
                stop_cluster(processes, cluster)
        rows.append(row)
    base = next((r for r in rows if r.get("ok") and (r["nodes"], r["shards"]) == (3, 1)), None)
    for row in rows:
        if base and row.get("ok"):
            row["vs_3n_1s"] = row["rps"] / base["rps"]
        if base and base.get("routed_rps") and row.get("routed_rps"):
            row["routed_vs_3n_1s"] = row["routed_rps"] / base["routed_rps"]
    return rows


def routed_set(cluster: rb.Phalanx, clients: int, requests: int, keyspace: int,
               timeout: float) -> dict[str, Any]:
    """SET with slot-routed clients (issue 15): `redis-benchmark --cluster` sends each key to
    its shard's leader (from CLUSTER SLOTS). redis-benchmark refuses a cluster with one
    master, so when every shard's leader is on one node (one shard) it is driven directly at
    that node: the same routing."""
    import redis

    try:
        host, port = hostport(entries(cluster)[0].resp)
        slots = redis.Redis(host=host, port=port, socket_timeout=5).execute_command(
            "CLUSTER", "SLOTS")
        leaders = sorted({(item[2][0].decode() if isinstance(item[2][0], bytes)
                           else str(item[2][0]), int(item[2][1])) for item in slots})
        target_host, target_port = leaders[0]
        argv = ["redis-benchmark", *(["--cluster"] if len(leaders) > 1 else []), "-h",
                target_host, "-p", str(target_port), "-t", "set", "-c", str(clients), "-n",
                str(requests), "-r", str(keyspace), "--csv"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
        metrics = rb.parse_csv(done.stdout, "SET")
        bad = [line for line in (done.stdout + done.stderr).splitlines()
               if "error" in line.lower()]
        if done.returncode != 0 or metrics is None or bad:
            return {"routed_error": (bad or [done.stderr.strip()[-200:]])[0][:200]}
        return {"routed_rps": round(metrics["rps"], 1),
                "routed_p50_ms": metrics["p50_latency_ms"], "routed_leader_nodes": len(leaders)}
    except Exception as error:  # a row's failure is reported, the suite goes on
        return {"routed_error": f"{type(error).__name__}: {error}"[:200]}


# --------------------------------------------------------------------------- clusters: catch-up


def caught_up(cluster: rb.Phalanx, leader: Any) -> bool:
    """Every node has applied the leader's commit index of shard 1. Raises RuntimeError at
    once when a node's shard-1 replica has stopped (it would never catch up)."""
    try:
        commit = status(leader)["local"]["1"]["commit_index"]
        replicas = {n.id: status(n)["local"]["1"] for n in entries(cluster)}
    except (OSError, RuntimeError, KeyError):
        return False
    for node, replica in replicas.items():
        if replica.get("storage_error"):
            raise RuntimeError(f"{node}: shard 1 replica stopped: {replica['storage_error']} "
                               f"(applied {replica.get('applied_index')}, commit "
                               f"{replica.get('commit_index')}; see its node.log)")
    return all(r["applied_index"] >= commit for r in replicas.values())


# --------------------------------------------------------------------------- soak


def soak_section(processes: Processes, settings: Settings) -> dict[str, Any]:
    """A fresh 3-node cluster; a mixed SET/GET open-loop workload at `soak_rate` over
    `soak_keys` keys (pre-loaded) for `soak_seconds`, through the leader; every
    `soak_sample_s` the RSS and data-dir disk usage of every node."""
    out: dict[str, Any] = {"seconds": settings.soak_seconds, "rate": settings.soak_rate,
                           "keys": settings.soak_keys, "samples": [], "error": ""}
    cluster = None
    try:
        cluster = start_cluster(processes, "soak", 3, {})
        leader = shard_leader(cluster)
        host, port = hostport(leader.resp)
        load_keys(host, port, 0, settings.soak_keys)
        import bench_bulk

        # Spurious elections (issue 15: none in a 1 h soak): terms gained by any group, and
        # the replicas' own leader-change counters, from the start of the workload to its end.
        out["settled"] = bench_bulk.settle(cluster)
        terms_before = bench_bulk.group_terms(cluster)
        changes_before = leader_changes(cluster)

        def sample(at: float) -> None:
            nodes = entries(cluster)
            out["samples"].append({"t_s": round(at, 1),
                                   "rss": {e.id: rss_bytes(e.pid) for e in nodes},
                                   "disk": {e.id: disk_bytes(Path(e.data_dir)) for e in nodes}})

        began = time.monotonic()
        sample(0.0)
        argv = [sys.executable, str(OPENLOOP), "--host", host, "--port", str(port), "--test",
                "mixed", "--rate", f"{settings.soak_rate:g}", "--seconds",
                f"{settings.soak_seconds:g}", "--keyspace", str(settings.soak_keys)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.children.append(proc)  # type: ignore[arg-type]
        next_sample = began + settings.soak_sample_s
        while proc.poll() is None:
            if time.monotonic() > began + settings.soak_seconds + 60:
                proc.kill()
                break
            if time.monotonic() >= next_sample:
                sample(time.monotonic() - began)
                next_sample += settings.soak_sample_s
            time.sleep(0.2)
        stdout, stderr = proc.communicate()
        sample(time.monotonic() - began)
        lines = stdout.strip().splitlines()
        out["workload"] = json.loads(lines[-1]) if lines else {"error": stderr[-300:]}
        terms_after = bench_bulk.group_terms(cluster)
        out["elections"] = bench_bulk.elections(terms_before, terms_after)
        out["term_changes"] = bench_bulk.term_changes(terms_before, terms_after)
        out["leader_changes"] = leader_changes(cluster) - changes_before
        with contextlib.suppress(OSError, RuntimeError, KeyError):
            out["leader_snapshot_index"] = status(leader)["local"]["1"]["snapshot_index"]
            out["leader_last_index"] = status(leader)["local"]["1"]["last_index"]
    except Exception as error:  # a section's failure is reported, the suite goes on
        out["error"] = f"{type(error).__name__}: {error}"[:400]
        log(f"soak: FAILED {out['error']}")
    finally:
        if cluster is not None:
            stop_cluster(processes, cluster)
    out["nodes"] = soak_summary(out["samples"])
    for node, row in out["nodes"].items():
        log(f"soak {node}: RSS {row['rss_start'] / 1e6:.1f} -> {row['rss_end'] / 1e6:.1f} MB "
            f"(max {row['rss_max'] / 1e6:.1f}); disk {row['disk_start'] / 1e6:.1f} -> "
            f"{row['disk_end'] / 1e6:.1f} MB (max {row['disk_max'] / 1e6:.1f})")
    return out


def soak_summary(samples: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    nodes: dict[str, dict[str, int]] = {}
    if not samples:
        return nodes
    for node in samples[0]["rss"]:
        rss = [s["rss"].get(node, 0) for s in samples]
        disk = [s["disk"].get(node, 0) for s in samples]
        nodes[node] = {"rss_start": rss[0], "rss_end": rss[-1], "rss_max": max(rss),
                       "disk_start": disk[0], "disk_end": disk[-1], "disk_max": max(disk)}
    return nodes


# --------------------------------------------------------------------------- report


def markdown(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    s = doc["settings"]
    if doc.get("latency"):
        lines += ["", "## Latency at a fixed rate (open loop)", "",
                  "Requests sent at a fixed rate whatever the replies do (benchmarks/openloop.py: "
                  "8 pipelined RESP connections, asyncio + hiredis; etcd: etcd_load -mode rate, "
                  "8 clientv3 connections, a goroutine per request); latency from each request's "
                  "scheduled send time, so stalls are counted (no coordinated omission); the "
                  "generators' own scheduling jitter (~1 ms on a busy machine) is in every "
                  f"number. {s.get('latency_seconds', 0):g} s per run, one pass, target order "
                  "rotating. phalanx: the leader of the 3-node cluster (GET = ReadIndex); "
                  "etcd: the leader (GET = linearizable Range); redis-aof-always as above.", "",
                  "| test | rate/s | target | achieved/s | p50 ms | p90 ms | p99 ms | p99.9 ms "
                  "| max ms | errors/dropped |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in doc["latency"]:
            if r.get("ok"):
                lines.append(f"| {r['test']} | {r['rate']:g} | {r['target']} | "
                             f"{r['achieved_rate']:,.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                             f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {r['max_ms']:.1f} | "
                             f"{r.get('errors') or 0}/{r.get('dropped') or 0} |")
            else:
                lines.append(f"| {r['test']} | {r['rate']:g} | {r['target']} | failed | | | | "
                             f"| | {r.get('error', '')[:80]} |")
    if doc.get("scale"):
        lines += ["", "## Scale: SET throughput as shards and nodes grow", "",
                  "A fresh cluster per row (`phalanx up --nodes N --shards S`, node defaults, "
                  "proxy mode); redis-benchmark SET on every node at once, the "
                  f"{s.get('read_clients')} clients and {s.get('scale_requests')} requests split "
                  f"evenly, keys random over {s.get('keyspace'):,} (spread over every slot, so "
                  "every shard is written; a node forwards a write to its shard's leader). "
                  "Throughput = all requests / the slowest node's run time. On one 2-core host "
                  "more nodes mean more processes on the same cores: this shows the cost of "
                  "sharding machinery, not the gain of more machines. Then, on the same "
                  "cluster, slot-routed clients (issue 15): `redis-benchmark --cluster` sends "
                  "each key to its shard's leader (one shard: straight at its leader), "
                  f"{s.get('read_clients')} clients, {s.get('scale_requests')} requests, "
                  f"{s.get('repeats')} run(s) per row: the median (every run in brackets).", "",
                  "| nodes | shards | SET/s | p50 ms | p99 ms (worst node) | vs 3 nodes, 1 shard "
                  "| slot-routed SET/s | slot-routed vs 3 nodes, 1 shard | startup s |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in doc["scale"]:
            routed = f"{r['routed_rps']:,.0f}" if r.get("routed_rps") else \
                f"failed: {r.get('routed_error', '')[:60]}"
            if len(r.get("routed_runs_rps") or []) > 1:
                routed += " (" + ", ".join(f"{x:,.0f}" if x else "failed"
                                           for x in r["routed_runs_rps"]) + ")"
            routed_vs = higher(r['routed_vs_3n_1s']) if "routed_vs_3n_1s" in r else ""
            if r.get("ok"):
                vs = higher(r['vs_3n_1s']) if "vs_3n_1s" in r else ""
                lines.append(f"| {r['nodes']} | {r['shards']} | {r['rps']:,.0f} | "
                             f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {vs} | {routed} | "
                             f"{routed_vs} | {r.get('startup_s', '')} |")
            else:
                lines.append(f"| {r['nodes']} | {r['shards']} | failed: {r['error'][:100]} "
                             f"| | | | {routed} | {routed_vs} | |")
    return lines


def soak_markdown(doc: dict[str, Any]) -> list[str]:
    """The soak section's lines in RESULTS.md."""
    lines: list[str] = []
    s = doc["settings"]
    soak = doc.get("soak")
    if soak:
        w = soak.get("workload", {})
        lines += ["", "## Steady workload (soak)", "",
                  f"A fresh 3-node cluster, {soak['keys']:,} keys pre-loaded, then "
                  f"{soak['seconds']:g} s of mixed SET/GET (half each) at {soak['rate']:g}/s "
                  "through the leader (openloop.py); RSS and data-dir disk usage (du) of every "
                  f"node sampled every {s.get('soak_sample_s', 10):g} s "
                  f"({len(soak['samples'])} samples). Growth = end - start.", ""]
        if w.get("ok"):
            lines.append(f"Workload: {w['ok']:,} ok, {w.get('errors', 0)} errors, "
                         f"{w.get('dropped', 0)} dropped, achieved {w['achieved_rate']:,.0f}/s, "
                         f"p50 {w['p50_ms']:.2f} ms, p99 {w['p99_ms']:.2f} ms, p99.9 "
                         f"{w['p999_ms']:.2f} ms. Leader snapshot index at the end: "
                         f"{soak.get('leader_snapshot_index', '?')} (last log index "
                         f"{soak.get('leader_last_index', '?')}). Elections during the "
                         f"workload (terms gained): {soak.get('elections', '?')}"
                         + (f" ({'; '.join(soak['term_changes'])})"
                            if soak.get("term_changes") else "")
                         + f"; replica leader changes: {soak.get('leader_changes', '?')}.")
            lines.append("")
        lines += ["| node | RSS start MB | end | max | growth | disk start MB | end | max "
                  "| growth |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for node, r in soak.get("nodes", {}).items():
            lines.append(f"| {node} | {mb(r['rss_start'])} | {mb(r['rss_end'])} | "
                         f"{mb(r['rss_max'])} | {mb(r['rss_end'] - r['rss_start'])} | "
                         f"{mb(r['disk_start'])} | {mb(r['disk_end'])} | {mb(r['disk_max'])} "
                         f"| {mb(r['disk_end'] - r['disk_start'])} |")
        if soak.get("error"):
            lines += ["", f"**soak failed: {soak['error']}**"]
    return lines

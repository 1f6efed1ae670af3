"""The `phalanx bench` section `commands` (issue 13): LPUSH, LPOP, ZADD and EVALSHA throughput.

On the shared 3-node cluster (redis-benchmark against the leader) and on the same
redis-server (`appendonly yes`, `appendfsync always`) as the writes section, at
`Settings.command_clients` (50) clients, no pipelining:

- LPUSH, LPOP, ZADD: redis-benchmark's own tests (`-t lpush` ...). redis-benchmark 7.0 pushes to
  and pops from one fixed key (`mylist`) and adds random members to one fixed key (`myzset`),
  so these measure one hot key; LPOP runs right after LPUSH on the same target with the same
  request count, so it pops what was pushed (no nil replies).
- EVALSHA: redis-benchmark's arbitrary-command mode, `EVALSHA <sha> 1 key:__rand_int__ xxx`
  with `-r <keyspace>` (random keys), after `SCRIPT LOAD` of a one-line write script
  (`SCRIPT` below: a SET through `redis.call`) on that target. On phalanx the script's
  invocation is the replicated entry, so this is a Raft write like SET, plus the Lua call.

Rules: every redis-benchmark run has a timeout; a run that exits non-zero or gets error
replies (e.g. NOSCRIPT, -TRYAGAIN) counts as failed and is listed under the table; targets
alternate in an order rotating per repeat, as in the writes section. No process is started
here: the cluster and the redis-server belong to phalanx_bench.run_suite (stopped by pid there).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import resp_bench as rb
from bench_common import load_record, throughput_cells
from bench_ratios import higher

if TYPE_CHECKING:
    from phalanx_bench import Settings

TESTS = ("LPUSH", "LPOP", "ZADD", "EVALSHA")
SCRIPT = "return redis.call('SET', KEYS[1], ARGV[1])"
TARGETS = ("phalanx", "redis-aof-always")


def script_load(host: str, port: int) -> str:
    """SCRIPT LOAD of `SCRIPT` on host:port; the SHA1 it answers (raises on an error reply)."""
    from bench_common import resp_command

    reply = resp_command(host, port, "SCRIPT", "LOAD", SCRIPT, timeout=10.0)
    lines = reply.split(b"\r\n")
    if not reply.startswith(b"$") or len(lines) < 2 or len(lines[1]) != 40:
        raise RuntimeError(f"SCRIPT LOAD on {host}:{port} answered {reply[:200]!r}")
    return lines[1].decode()


def benchmark_argv(host: str, port: int, test: str, clients: int, requests: int,
                   keyspace: int, sha: str) -> tuple[list[str], str]:
    """redis-benchmark's argv for `test`, and the name of its row in the --csv output."""
    argv = ["redis-benchmark", "-h", host, "-p", str(port), "-c", str(clients), "-n",
            str(requests), "-r", str(keyspace), "--csv"]
    if test != "EVALSHA":
        return [*argv, "-t", test.lower()], test
    command = ["EVALSHA", sha, "1", "key:__rand_int__", "xxx"]
    return [*argv, *command], " ".join(command).upper()


def run_one(target: str, host: str, port: int, test: str, clients: int, requests: int,
            repeat: int, settings: Settings, sha: str) -> dict[str, Any]:
    """One redis-benchmark run; the same record as phalanx_bench.run_load."""
    load = os.getloadavg()[0]
    argv, row = benchmark_argv(host, port, test, clients, requests, settings.keyspace, sha)
    began = time.monotonic()
    ok, metrics, error = False, {}, ""
    try:
        done = subprocess.run(argv, capture_output=True, text=True,
                              timeout=settings.run_timeout_s, check=False)
        metrics = rb.parse_csv(done.stdout, row) or {}
        problems = [line for line in (done.stdout + "\n" + done.stderr).splitlines()
                    if "error" in line.lower()]
        if done.returncode != 0 or not metrics:
            error = f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-400:]}"
            metrics = {}
        elif problems:
            error = f"error replies: {problems[0][:200]}"
        else:
            ok = True
    except subprocess.TimeoutExpired:
        error = f"timed out after {settings.run_timeout_s:g} s"
    elapsed = time.monotonic() - began
    return load_record(target, test, clients, requests, repeat, ok, error, metrics, elapsed,
                       load)


def commands_section(addresses: dict[str, Callable[[], tuple[str, int]]],
                     settings: Settings) -> dict[str, Any]:
    """Every test on every target (`addresses`: target -> its current host, port), repeated.

    Returns {"runs": [...], "rows": [...], "script": SCRIPT, "sha": ..., "error": ""}; rows are
    phalanx_bench.throughput_rows of the runs (median, min-max, p50/p99, phalanx / redis-aof)."""
    from phalanx_bench import throughput_rows

    out: dict[str, Any] = {"runs": [], "rows": [], "script": SCRIPT, "sha": "", "error": "",
                           "clients": settings.command_clients,
                           "requests": settings.command_requests}
    targets = [t for t in TARGETS if t in addresses]
    shas: dict[str, str] = {}
    for target in targets:
        try:
            shas[target] = script_load(*addresses[target]())
        except (OSError, RuntimeError) as error:
            out["error"] += f"{target}: SCRIPT LOAD failed: {error}; "
            rb.log(f"commands: {target}: SCRIPT LOAD failed: {error}")
    out["sha"] = next(iter(shas.values()), "")
    for repeat in range(1, settings.repeats + 1):
        shift = (repeat - 1) % max(len(targets), 1)
        order = targets[shift:] + targets[:shift]
        for test in TESTS:
            for target in order:
                if test == "EVALSHA" and target not in shas:
                    continue
                host, port = addresses[target]()
                out["runs"].append(run_one(target, host, port, test, settings.command_clients,
                                           settings.command_requests, repeat, settings,
                                           shas.get(target, "")))
    rows = throughput_rows(out["runs"])
    out["rows"] = sorted(rows, key=lambda r: (TESTS.index(r["test"]), r["clients"],
                                              TARGETS.index(r["target"])))
    return out


def markdown(doc: dict[str, Any]) -> list[str]:
    """The section's RESULTS.md lines (nothing when it was not run)."""
    section = doc.get("commands")
    if not section:
        return []
    lines = ["", "## Commands: LPUSH, LPOP, ZADD, EVALSHA (redis-benchmark, no pipelining)", "",
             "The same phalanx cluster (against the leader) and redis-aof-always as the "
             f"throughput table; {section['clients']} clients, {section['requests']:,} requests "
             "per run. LPUSH/LPOP/ZADD are redis-benchmark's own tests: one fixed key each "
             "(`mylist`, `myzset`; ZADD members random), LPOP right after LPUSH so it pops what "
             "was pushed. EVALSHA: `EVALSHA <sha> 1 key:__rand_int__ xxx`, keys random over "
             f"{doc['settings'].get('keyspace', 0):,}, after `SCRIPT LOAD` of "
             f"`{section['script']}` (a write through Lua; on phalanx the invocation is the "
             "replicated entry).", "",
             "| test | clients | target | median ops/s (min-max) | p50 ms | p99 ms "
             "| phalanx / redis-aof |", "|---|---:|---|---:|---:|---:|---:|"]
    for row in section["rows"]:
        shown, p50, p99 = throughput_cells(row)
        ratio = higher(row['vs_redis_aof_always']) if "vs_redis_aof_always" in row else ""
        lines.append(f"| {row['test']} | {row['clients']} | {row['target']} | {shown} | {p50} "
                     f"| {p99} | {ratio} |")
    if not section["rows"]:
        lines.append("| (not measured) | | | | | | |")
    lines += [f"- failed: {r['target']} {r['test']} c={r['clients']}: {e}"
              for r in section["rows"] for e in r["failures"]]
    if section.get("error"):
        lines += ["", f"**commands: {section['error'].rstrip('; ')}**"]
    return lines

"""`phalanx bench --only partition`: the leader cut off by a real network partition (issue 15).

The chaos lab's `partition-leader` scenario in network namespaces (`phalanx chaos run --mode
netns`, root only): a 3-node cluster, the register workload through the raw client, the
leader's links cut (iptables in its namespace) a few times per run. The figure is the lab's
RTO per fault: from the cut to the first acknowledged write after it. Runs alternate between
the node default timing (election timeout 500-1000 ms) and `--election-ticks 25` (250-500 ms,
issue 15's lever 8), so both come from the same run. Every run also checks linearizability and lost
acknowledged writes; a failed check is reported, never dropped.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from typing import Any

from bench_ratios import cut_up

#: name -> extra `phalanx chaos run` flags.
TIMINGS: dict[str, list[str]] = {"default": [], "election-ticks-25": ["--election-ticks", "25"]}


def can_run() -> str:
    """Empty when netns runs are possible here, else why not."""
    if os.geteuid() != 0:
        return "skipped: network namespaces need root"
    if shutil.which("ip") is None or shutil.which("iptables") is None:
        return "skipped: needs iproute2 and iptables"
    return ""


def partition_section(settings: Any) -> dict[str, Any]:
    why = can_run()
    if why:
        return {"skipped": why, "runs": []}
    runs = []
    seconds = 30 if settings.quick else 60
    for repeat in range(1, settings.repeats + 1):
        order = list(TIMINGS) if repeat % 2 else list(reversed(TIMINGS))
        for name in order:
            argv = [sys.executable, "-m", "phalanx", "chaos", "run", "--scenario",
                    "partition-leader", "--mode", "netns", "--nodes", "3", "--duration",
                    f"{seconds}s", "--json", "--progress-every", "30", *TIMINGS[name]]
            load = os.getloadavg()[0]
            try:
                done = subprocess.run(argv, capture_output=True, text=True,
                                      timeout=seconds + 300, check=False)
                result = json.loads(done.stdout) if done.stdout.strip() else {}
                error = "" if result else (done.stderr.strip()[-300:] or "no output")
            except (subprocess.TimeoutExpired, json.JSONDecodeError) as failure:
                result, error = {}, str(failure)[:300]
            faults = (result.get("rto_ms") or {}).get("faults") or []
            runs.append({"timing": name, "repeat": repeat, "load_1m": round(load, 2),
                         "rto_ms": [f.get("rto_ms") for f in faults],
                         "linearizable": result.get("linearizable"),
                         "lost": result.get("lost_acknowledged_writes"), "error": error})
            print(f"[partition] repeat {repeat} {name}: RTO {runs[-1]['rto_ms']} ms, "
                  f"linearizable {runs[-1]['linearizable']}, lost {runs[-1]['lost']} {error}",
                  file=sys.stderr, flush=True)
    return {"skipped": "", "runs": runs, "seconds": seconds}


def markdown(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    lines = ["", "## Leader cut off by a network partition (netns)", ""]
    if section.get("skipped"):
        return [*lines, f"Not measured: {section['skipped']}."]
    lines += [
        "`phalanx chaos run --scenario partition-leader --mode netns --nodes 3` "
        f"({section['seconds']} s runs, register workload, raw client): the leader's links cut "
        "with iptables in its namespace; RTO = from the cut to the first acknowledged write "
        "after it. `default`: the node defaults (heartbeat 50 ms, election timeout 500-1000 ms); "
        "`election-ticks-25`: 250-500 ms (docs/failure-detection.md). Runs alternate.",
        "",
        "| timing | faults | median RTO ms | min | max | linearizable | lost acked writes |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for name in TIMINGS:
        chosen = [r for r in section["runs"] if r["timing"] == name]
        rtos = [v for r in chosen for v in r["rto_ms"] if v is not None]
        if not rtos:
            lines.append(f"| {name} | 0 | | | | | |")
            continue
        linear = all(r["linearizable"] for r in chosen if not r["error"])
        lost = sum(int(r["lost"] or 0) for r in chosen)
        lines.append(f"| {name} | {len(rtos)} | {cut_up(statistics.median(rtos), 0)} | "
                     f"{cut_up(min(rtos), 0)} | {cut_up(max(rtos), 0)} | "
                     f"{'yes' if linear else 'NO'} | {lost} |")
    lines += [f"- failed run: {r['timing']} repeat {r['repeat']}: {r['error']}"
              for r in section["runs"] if r["error"]]
    return lines

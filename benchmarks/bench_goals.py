"""The "Issue 15 goals" table at the top of RESULTS.md: per row of issue 15's table, the goal,
this run's figure and whether it is met, all computed from the run's document (results.json),
never written by hand.

Verdicts: `met`, `NOT met`, or `not measured: <why>` (the section did not run, failed, or ran
at a size other than the goal's: `--quick` loads 20,000 keys, not 1M, so those rows say so
instead of claiming the goal). Ratios are shown cut in the unflattering direction to two
decimals (benchmarks/bench_ratios.py: down where higher is better, up where lower is better,
e.g. the p50 and memory rows); the verdict compares the exact value.

A section that adds a row (e.g. the nodes-per-host section, issue 15 lever 9) adds a function
to ROWS taking the document and returning a Goal. The nodes-per-host row reads
`doc["hosts"]["k2_vs_k1"]` (SET/s with K=2 node processes per host / K=1, slot-routed).

Tests: tests/benchmarks/test_bench_goals.py (synthetic documents, no processes).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench_ratios import cut_up, higher, lower

#: The sizes the issue's rows are stated at.
MILLION = 1_000_000
SMALL = 10_000
SOAK_GOAL_S = 3600.0


@dataclass(frozen=True)
class Goal:
    row: str
    goal: str
    figure: str
    verdict: str


def judged(ok: bool) -> str:
    return "met" if ok else "NOT met"


def missing(why: str) -> str:
    return f"not measured: {why}"


def _throughput(doc: dict[str, Any], target: str, test: str,
                clients: int) -> dict[str, Any] | None:
    for row in doc.get("throughput") or []:
        if (row["target"], row["test"], row["clients"]) == (target, test, clients):
            return row
    return None


def _ratio_row(row: str, goal: str, value: float | None, at_least: float | None,
               at_most: float | None, detail: str, why: str) -> Goal:
    if value is None:
        return Goal(row, goal, "-", missing(why))
    ok = (at_least is None or value >= at_least) and (at_most is None or value <= at_most)
    # A goal with only an upper bound is a ratio where lower is better: cut up, else down.
    shown = lower(value) if at_least is None and at_most is not None else higher(value)
    return Goal(row, goal, f"{shown}{detail}", judged(ok))


def set_vs_etcd(clients: int) -> Callable[[dict[str, Any]], Goal]:
    def row(doc: dict[str, Any]) -> Goal:
        ours = _throughput(doc, "phalanx", "SET", clients)
        etcd = _throughput(doc, "etcd", "SET", clients)
        value = ours.get("vs_etcd") if ours else None
        detail = (f" ({ours['rps_median']:,.0f} vs {etcd['rps_median']:,.0f} SET/s)"
                  if value is not None and ours and etcd else "")
        return _ratio_row(f"SET, {clients} clients, vs 3-node etcd", ">= 2x", value, 2.0, None,
                          detail, _why_not(doc, ours, etcd, clients))
    return row


def _why_not(doc: dict[str, Any], ours: dict[str, Any] | None, etcd: dict[str, Any] | None,
             clients: int) -> str:
    if ours is None:
        return f"no phalanx SET run at {clients} clients (the writes section)"
    if etcd is None:
        return (doc.get("skipped") or {}).get("etcd") or f"no etcd run at {clients} clients"
    return "a run failed (see the throughput table)"


def set_p50_vs_etcd(doc: dict[str, Any]) -> Goal:
    ours = _throughput(doc, "phalanx", "SET", 1)
    etcd = _throughput(doc, "etcd", "SET", 1)
    value = ours.get("p50_vs_etcd") if ours else None
    detail = (f" ({ours['p50_ms']:.2f} vs {etcd['p50_ms']:.2f} ms)"
              if value is not None and ours and etcd else "")
    return _ratio_row("SET, 1 client, p50 vs etcd", "<= 1x", value, None, 1.0, detail,
                      _why_not(doc, ours, etcd, 1))


def get_vs_redis(target: str, label: str) -> Callable[[dict[str, Any]], Goal]:
    def row(doc: dict[str, Any]) -> Goal:
        ours = _throughput(doc, target, "GET", 50)
        redis = _throughput(doc, "redis-aof-always", "GET", 50)
        value = ours.get("vs_redis_aof_always") if ours else None
        detail = (f" ({ours['rps_median']:,.0f} vs {redis['rps_median']:,.0f} GET/s)"
                  if value is not None and ours and redis else "")
        return _ratio_row(f"GET ({label}), 50 clients, vs redis-server AOF always", ">= 0.5x",
                          value, 0.5, None, detail, "needs the reads section")
    return row


def shards(nodes: int) -> Callable[[dict[str, Any]], Goal]:
    """9 shards vs 1 shard on `nodes` nodes, slot-routed clients (redis-benchmark --cluster)."""
    def row(doc: dict[str, Any]) -> Goal:
        by = {(r["nodes"], r["shards"]): r for r in doc.get("scale") or []}
        label = f"SET on {nodes} nodes: 9 shards vs 1 shard (slot-routed)"
        one, nine = by.get((nodes, 1)), by.get((nodes, 9))
        if not one or not nine:
            return Goal(label, ">= 1.0x", "-", missing(
                f"needs the scale section with {nodes} nodes x 1 and 9 shards"))
        if not one.get("routed_rps") or not nine.get("routed_rps"):
            return Goal(label, ">= 1.0x", "-", missing(
                "a slot-routed run failed: " + (one.get("routed_error") or
                                                nine.get("routed_error") or "?")[:80]))
        three = by.get((nodes, 3)) or {}
        extra = (f"; 3 shards {higher(three['routed_rps'] / one['routed_rps'])}"
                 if three.get("routed_rps") else "")
        value = nine["routed_rps"] / one["routed_rps"]
        return _ratio_row(label, ">= 1.0x", value, 1.0, None,
                          f" ({nine['routed_rps']:,.0f} vs {one['routed_rps']:,.0f} SET/s{extra})",
                          "")
    return row


def _sizes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    data = doc.get("data") or {}
    return list(data.get("sizes") or [])


def set_at_size(doc: dict[str, Any]) -> Goal:
    label = "SET at 1M keys vs at 10k keys; no leader change during the load"
    goal = ">= 0.8x, 0 leader changes"
    sets = [s for s in _sizes(doc) if (s.get("set") or {}).get("rps")]
    if not doc.get("recovery_measured") or len(sets) < 2:
        return Goal(label, goal, "-", missing("needs the recovery section at two sizes"))
    small, large = sets[0], sets[-1]
    value = large["set"]["rps"] / small["set"]["rps"]
    changes = sum(int(s.get("load_leader_changes", 0)) for s in _sizes(doc))
    figure = (f"{higher(value)} ({large['set']['rps']:,.0f} at {large['keys']:,} vs "
              f"{small['set']['rps']:,.0f} at {small['keys']:,} keys); {changes} leader "
              "changes while loading")
    if small["keys"] > SMALL or large["keys"] < MILLION:
        return Goal(label, goal, figure, missing(
            f"sizes {small['keys']:,}..{large['keys']:,} (the goal: 10k and 1M)"))
    return Goal(label, goal, figure, judged(value >= 0.8 and changes == 0))


def memory(doc: dict[str, Any]) -> Goal:
    label = "largest node RSS at 1M keys vs redis used_memory"
    sizes = [s for s in _sizes(doc) if s.get("rss_vs_redis_used")]
    if not doc.get("memory_measured") or not sizes:
        return Goal(label, "<= 2x", "-", missing("needs the memory section"))
    item = sizes[-1]
    worst = max(item["rss"].values())
    figure = (f"{lower(worst / item['redis']['used_memory'])} ({worst / 1e6:.1f} vs "
              f"{item['redis']['used_memory'] / 1e6:.1f} MB at {item['keys']:,} keys)")
    if item["keys"] < MILLION:
        return Goal(label, "<= 2x", figure, missing(f"at {item['keys']:,} keys, not 1M"))
    return Goal(label, "<= 2x", figure, judged(worst / item["redis"]["used_memory"] <= 2.0))


def pipelines(doc: dict[str, Any]) -> Goal:
    section = doc.get("pipelines") or {}
    value = section.get("follower_vs_leader")
    detail = (f" ({section['follower_rps_median']:,.0f} vs {section['leader_rps_median']:,.0f}"
              " SET/s)" if value is not None else "")
    return _ratio_row("pipelined SET (100 per pipeline) through a follower vs the leader",
                      ">= 0.8x", value, 0.8, None, detail, "needs the pipelines section")


def bulk(doc: dict[str, Any]) -> Goal:
    import bench_bulk

    label = "bulk load of 1M keys in 1,000-key pipelines, idle cluster"
    goal = "no error, no leader change"
    section = doc.get("bulk")
    clean = bench_bulk.clean(section)
    if clean is None or not section:
        why = (section or {}).get("error") or "needs the bulk section"
        return Goal(label, goal, "-", missing(why[:100]))
    figure = (f"{section['sent']:,} keys in {section['wall_s']:.1f} s, {section['errors']:,} "
              f"errors, {section['elections']} elections, {section['leader_changes']} replica "
              "leader changes")
    if section["keys"] < MILLION:
        return Goal(label, goal, figure, missing(f"{section['keys']:,} keys, not 1M"))
    if section["sent"] < section["keys"] and not section["errors"] and \
            not section["elections"] and not section["leader_changes"]:
        # Cut short by the section's deadline, cleanly so far: neither met nor failed.
        return Goal(label, goal, figure, missing(section.get("error") or "cut short"))
    return Goal(label, goal, figure, judged(clean))


def gap(fault: str, label: str, limit_ms: float) -> Callable[[dict[str, Any]], Goal]:
    def row(doc: dict[str, Any]) -> Goal:
        found = next((r for r in doc.get("failover") or []
                      if (r["target"], r["fault"]) == ("phalanx", fault)), None)
        goal = f"median <= {limit_ms:g} ms"
        if not found or found.get("median_ms") is None:
            return Goal(label, goal, "-", missing(
                "needs the failover/sigstop section" if not found else "every try failed"))
        # Gaps: lower is better, so whole ms cut up (200.4 shows 201, never 200).
        figure = (f"median {cut_up(found['median_ms'], 0)} ms ({found['ok_tries']}/"
                  f"{found['tries']} tries, worst {cut_up(found['max_ms'], 0)} ms)")
        return Goal(label, goal, figure, judged(found["median_ms"] <= limit_ms))
    return row


def partition(doc: dict[str, Any]) -> Goal:
    label = "leader cut off by a netns partition, client gap (default timing)"
    goal = "median <= 500 ms"
    section = doc.get("partition") or {}
    if not section or section.get("skipped"):
        return Goal(label, goal, "-", missing(section.get("skipped") or
                                              "needs the partition section"))
    rtos = [v for r in section.get("runs", []) if r["timing"] == "default"
            for v in r["rto_ms"] if v is not None]
    if not rtos:
        return Goal(label, goal, "-", missing("no fault recovered in any run"))
    median = statistics.median(rtos)
    return Goal(label, goal, f"median {cut_up(median, 0)} ms ({len(rtos)} faults, worst "
                f"{cut_up(max(rtos), 0)} ms)", judged(median <= 500.0))


def soak(doc: dict[str, Any]) -> Goal:
    label = "no spurious election in a 1 h soak"
    goal = "0 elections in 3600 s"
    section = doc.get("soak") or {}
    if not section or "elections" not in section:
        return Goal(label, goal, "-", missing(section.get("error") or "needs the soak section"))
    figure = (f"{section['elections']} elections, {section.get('leader_changes', '?')} replica "
              f"leader changes in {section['seconds']:g} s")
    if section["seconds"] < SOAK_GOAL_S:
        return Goal(label, goal, figure, missing(
            f"a {section['seconds']:g} s soak (--soak-seconds 3600 for the goal)"))
    return Goal(label, goal, figure, judged(section["elections"] == 0 and not section["error"]))


def hosts(doc: dict[str, Any]) -> Goal:
    label = "SET with 2 node processes per host vs 1 (3 hosts)"
    section = doc.get("hosts") or {}
    value = section.get("k2_vs_k1")
    if value is None:
        return Goal(label, "a measured row", "-", missing(
            section.get("error") or section.get("skipped") or "needs the hosts section"))
    return Goal(label, "a measured row", higher(float(value)), "met")


ROWS: list[Callable[[dict[str, Any]], Goal]] = [
    set_vs_etcd(50), set_vs_etcd(256), set_p50_vs_etcd,
    get_vs_redis("phalanx", "linearizable ReadIndex"), get_vs_redis("phalanx-lease", "lease"),
    shards(3), shards(6), set_at_size, memory, pipelines, bulk,
    gap("kill -9", "kill -9 of a leader, client gap", 200.0),
    gap("SIGSTOP", "SIGSTOP of a leader, client gap", 500.0), partition, soak, hosts,
]


#: The issue's "now" column when it was filed (RESULTS.md of 2026-11-26), for reference only:
#: row -> figure. Never used for a verdict.
AT_FILING: dict[str, str] = {
    "SET, 50 clients, vs 3-node etcd": "1.58x",
    "SET, 256 clients, vs 3-node etcd": "1.46x",
    "SET, 1 client, p50 vs etcd": "1.61x (3.70 vs 2.30 ms)",
    "GET (linearizable ReadIndex), 50 clients, vs redis-server AOF always": "0.21x",
    "GET (lease), 50 clients, vs redis-server AOF always": "0.29x",
    "SET on 3 nodes: 9 shards vs 1 shard (slot-routed)": "0.43x (proxied)",
    "SET on 6 nodes: 9 shards vs 1 shard (slot-routed)": "0.27x (proxied)",
    "SET at 1M keys vs at 10k keys; no leader change during the load": "0.68x",
    "largest node RSS at 1M keys vs redis used_memory": "2.30x",
    "pipelined SET (100 per pipeline) through a follower vs the leader": "0.06x",
    "bulk load of 1M keys in 1,000-key pipelines, idle cluster": "leader lost at ~700k keys",
    "kill -9 of a leader, client gap": "median 108 ms",
    "SIGSTOP of a leader, client gap": "median 759 ms",
    "leader cut off by a netns partition, client gap (default timing)": "median 1,193 ms",
}


def goals(doc: dict[str, Any]) -> list[Goal]:
    out = []
    for row in ROWS:
        try:
            out.append(row(doc))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
            # A malformed section must not cost the report: the row says what broke.
            out.append(Goal(getattr(row, "__name__", "row"), "-", "-",
                            missing(f"{type(error).__name__}: {error}"[:100])))
    return out


def markdown(doc: dict[str, Any]) -> list[str]:
    rows = goals(doc)
    met = sum(g.verdict == "met" for g in rows)
    not_met = sum(g.verdict == "NOT met" for g in rows)
    start = doc["machine"]["load_average_start"]
    end = doc["load_average_end"]
    lines = ["## Issue 15 goals", "",
             f"Computed from this run (results.json): {met} met, {not_met} not met, "
             f"{len(rows) - met - not_met} not measured. Load average (1/5/15 min) at the "
             f"start {' / '.join(f'{x:.2f}' for x in start)}, at the end "
             f"{' / '.join(f'{x:.2f}' for x in end)}, on {doc['machine']['cpu_count']} CPUs; "
             f"wall time {doc['wall_s']:.0f} s, {doc['settings']['repeats']} repeat(s). "
             "Ratios cut to two decimals in the direction that does not flatter phalanx "
             "(down where higher is better, up where lower is better; here and in every "
             "section); the sections below have every run.", "",
             "| issue 15 row | goal | at filing (2026-11-26) | this run | verdict |",
             "|---|---|---|---|---|"]
    lines += [f"| {g.row} | {g.goal} | {AT_FILING.get(g.row, '-')} | {g.figure} | {g.verdict} |"
              for g in rows]
    return [*lines, ""]

"""The result of a chaos run: the JSON-ready dict the HTML report reads, computed from the
operations, the faults, the leader changes and the redundancy observations of the run, and its
files (result.json, report.html). See docs/architecture.md (chaos).

Rules of this file:
- The result dict has exactly the keys the HTML report reads (`RESULT_KEYS`); values are plain
  JSON (no infinities, None where a measure does not exist).
- Computed after the run, from what was recorded: nothing here talks to a node (the control is
  asked only for its node list).
- Lost acknowledged writes are acknowledged members missing from what any node answers to a
  linearizable read, plus the workload's own (a queue's lost pushes); they make the RPO.
- Time to full redundancy is measured per fault and bounded by the run's duration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phalanx.chaos import metrics, redundancy
from phalanx.chaos.control import ClusterControl
from phalanx.chaos.nemesis import PERMANENT, REPAIRED_IN_FORCE, Fault
from phalanx.chaos.run_config import RunConfig, key_epoch_for
from phalanx.chaos.watch import MONITOR_INTERVAL_S
from phalanx.chaos.workload import Workload

RESULT_KEYS = ("scenario", "seed", "mode", "duration_s", "started_at", "cluster", "ops",
               "availability", "nines", "rto_ms", "lost_acknowledged_writes", "rpo",
               "linearizable", "linearizability", "faults", "timeline", "latency_ms",
               "throughput_ops_s", "events", "redundancy", "workload", "workload_check",
               "client", "application", "per_kind", "resources")


def dead_after_ms(config: RunConfig) -> int | None:
    """The dead-after of a cluster the lab started (the node default when not set); None for an
    attached cluster (its own, unknown here)."""
    if config.dead_after_ms is not None or config.target is not None:
        return config.dead_after_ms
    from phalanx.ops.launcher import node_config_default

    default = node_config_default("dead_after_ms")
    return default if isinstance(default, int) else None


def lost_nodes(faults: list[Fault]) -> frozenset[str]:
    return frozenset(t for fault in faults if fault.kind in PERMANENT for t in fault.targets)



def redundancy_result(faults: list[Fault], observations: list[redundancy.Observation],
                      duration_s: float) -> dict[str, Any]:
    """The `redundancy` part of the result: time to full redundancy per fault (bounded by the
    run), median and worst, the state at the end of the run and every change of state."""
    measured = [o for o in observations if o.at_s <= duration_s]
    entries = redundancy.per_fault([(f.at_s, f.end_s) for f in faults], measured, duration_s,
                                   began=[f.began_s for f in faults],
                                   heal_needed=[f.kind not in REPAIRED_IN_FORCE for f in faults])
    for fault, entry in zip(faults, entries, strict=True):
        entry.update({"kind": fault.kind, "targets": list(fault.targets),
                      "at_s": round(fault.at_s, 3)})
    changes = redundancy.transitions(measured)
    last = measured[-1] if measured else None
    return {**redundancy.summary(entries), "faults": entries,
            "final": None if last is None else {"at_s": round(last.at_s, 3), "full": last.full,
                                                "reason": last.reason or None},
            "transitions": [{"at_s": at, "full": full, "reason": reason or None}
                            for at, full, reason in changes[:500]],
            "poll_interval_s": MONITOR_INTERVAL_S,
            "lag_limit_entries": redundancy.LAG_LIMIT_ENTRIES}


def _placement_story(observations: list[redundancy.Observation],
                     duration_s: float) -> list[tuple[float, str]]:
    """Nodes the cluster declared dead (or alive again) and shards whose replicas it moved."""
    story: list[tuple[float, str]] = []
    previous: redundancy.Observation | None = None
    for observation in observations:
        if observation.at_s > duration_s:
            break
        if previous is not None and observation.map_version is not None:
            for node in sorted(set(observation.dead) - set(previous.dead)):
                story.append((observation.at_s, f"the cluster declared {node} dead"))
            for node in sorted(set(previous.dead) - set(observation.dead)):
                story.append((observation.at_s, f"the cluster sees {node} alive again"))
            before = dict(previous.replicas)
            for shard, replicas in observation.replicas:
                old = before.get(shard)
                if old is not None and set(old) != set(replicas):
                    gone = sorted(set(old) - set(replicas))
                    new = sorted(set(replicas) - set(old))
                    story.append((observation.at_s, f"shard {shard}: replica(s) on "
                                  f"{', '.join(gone) or '-'} re-created on "
                                  f"{', '.join(new) or '-'} (desired: {', '.join(replicas)})"))
        if observation.map_version is not None:
            previous = observation
    return story


def build_result(config: RunConfig, control: ClusterControl, started_at: str,
                 workload: Workload, faults: list[Fault], leader_changes: list[tuple[float, str]],
                 final: tuple[dict[str, dict[str, set[str] | None]],
                              dict[str, dict[str, set[str] | None]]], verdict: Any,
                 events: list[tuple[float, str]],
                 observations: list[redundancy.Observation] | None = None,
                 cluster: Mapping[str, Any] | None = None,
                 workload_check: Mapping[str, Any] | None = None) -> dict[str, Any]:
    state = workload.state
    ops = list(state.ops)
    duration = config.duration_s
    found = metrics.counts(ops)
    available = metrics.availability(ops)
    # Lost acknowledged writes: acknowledged members missing from what any node answers to a
    # linearizable SMEMBERS (what a client would read). A replica whose own copy (READONLY) lacks
    # some is told as an event: lagging or diverged, but the writes are not lost to clients.
    linearizable, local_copy = final
    lost: list[tuple[float, str, str]] = []
    for key, members in state.acknowledged.items():
        missing: set[str] = set()
        for per_node in linearizable.values():
            observed = per_node.get(key)
            if observed is not None:
                missing |= set(members) - observed
        lost.extend((members[m], key, m) for m in missing)
    lost.extend(workload.lost_writes())
    lost.sort()
    lagging: list[tuple[float, str]] = []
    for node_id, per_node in local_copy.items():
        absent = sum(len(set(members) - (per_node.get(key) or set()))
                     for key, members in state.acknowledged.items()
                     if per_node.get(key) is not None)
        unread = [key for key, observed in per_node.items() if observed is None]
        if absent:
            lagging.append((duration, f"after the run: {node_id}'s own copy lacks {absent} "
                            "acknowledged writes (a replica behind the others)"))
        if unread:
            lagging.append((duration, f"after the run: {node_id} did not answer a local read"))
    rpo = metrics.rpo(t for t, _key, _member in lost)
    rto_entries: list[dict[str, Any]] = []
    story: list[tuple[float, str]] = list(events) + lagging
    calls = list(state.calls) or metrics.calls_from_ops(ops)
    index = metrics.OpIndex(ops, calls)
    for position, fault in enumerate(faults):
        rto = index.recovery_time_ms(fault.at_s)
        following = faults[position + 1].at_s if position + 1 < len(faults) else None
        new_leader = _new_leader(fault, leader_changes, following)
        began = fault.at_s if fault.began_s is None else min(fault.began_s, fault.at_s)
        window = metrics.fault_window(began, fault.end_s, following, duration)
        rto_entries.append({"kind": fault.kind, "targets": list(fault.targets),
                            "at_s": round(fault.at_s, 3), "rto_ms": rto,
                            "new_leader": new_leader,
                            "window_s": [round(window[0], 3), round(window[1], 3)],
                            **index.window(*window)})
        if rto is None:
            story.append((fault.at_s + 0.0002, "writes did not come back before the end"))
        else:
            story.append((fault.at_s + rto / 1000, f"writes resumed {rto:.0f} ms after the "
                          "fault (first acknowledged write)"))
    for at, leader in leader_changes[1:]:
        story.append((at, f"{leader} became leader"))
    polled = list(observations or [])
    redundant = redundancy_result(faults, polled, duration)
    story.extend(_placement_story(polled, duration))
    for entry in redundant["faults"]:
        if entry["restored_at_s"] is not None:
            healed = entry["after_heal_s"]
            after = ("" if healed is None else f", {healed:.1f} s after it healed" if healed >= 0
                     else f", {-healed:.1f} s before it healed (rebuilt elsewhere)")
            story.append((entry["restored_at_s"], f"full redundancy again {entry['seconds']:.1f}"
                          f" s after the {entry['kind']} fault{after}"))
        elif entry["lost"]:
            story.append((entry["lost_at_s"] + 0.0003, f"full redundancy: {entry['reason']}"))
    if lost:
        story.append((duration, f"{len(lost)} acknowledged writes lost (first acknowledged at "
                      f"{lost[0][0]:.1f} s)"))
    for problem in (workload_check or {}).get("problems") or []:
        story.append((duration, f"after the run: {problem}"))
    story.sort(key=lambda item: item[0])
    explain = "" if verdict.ok else verdict.explain()
    return {
        "scenario": config.scenario,
        "seed": config.seed,
        "mode": config.mode,
        "duration_s": duration,
        "started_at": started_at,
        "cluster": {"nodes": [{"id": n.id, "zone": n.zone, "region": n.region, "host": n.host}
                              for n in control.nodes()],
                    "shards": (cluster or {}).get("shards", config.shards),
                    "survival_goal": (cluster or {}).get("survival_goal", config.survival_goal),
                    "replication_factor": (cluster or {}).get("replication_factor"),
                    "dead_after_ms": dead_after_ms(config),
                    "lost_nodes": sorted(lost_nodes(faults))},
        "ops": {"ok": found["ok"], "fail": found["fail"], "info": found["info"],
                "total": found["total"]},
        "availability": round(available, 6),
        "nines": metrics.nines(available, found["total"]),
        "rto_ms": {**metrics.rto_summary(e["rto_ms"] for e in rto_entries),
                   "faults": rto_entries},
        "lost_acknowledged_writes": len(lost),
        "rpo": rpo,
        "linearizable": bool(verdict.ok),
        "linearizability": {"verdict": str(verdict.verdict), "explain": explain},
        "faults": [fault.to_json() for fault in faults],
        "timeline": metrics.timeline(ops, duration),
        "latency_ms": metrics.latency_summary(ops),
        "throughput_ops_s": metrics.throughput(ops, duration),
        "events": [{"at_s": round(at, 3), "text": text} for at, text in story],
        "redundancy": redundant,
        "workload": getattr(workload, "name", config.workload),
        "workload_check": None if workload_check is None else dict(workload_check),
        "resources": None,
        "register_key_epoch_s": key_epoch_for(config),
        "client": {"mode": config.client,
                   "deadline_s": None if config.client == "raw" else config.deadline_s},
        "application": metrics.application_summary(calls),
        "per_kind": metrics.per_kind(rto_entries),
    }


def _new_leader(fault: Fault, changes: list[tuple[float, str]],
                following_at_s: float | None = None) -> str | None:
    """The first leader seen after the fault (until 3 s after it healed, and before the next
    fault) that differs from the leader before it; None when the leadership did not move."""
    horizon = (fault.end_s if fault.end_s is not None else fault.at_s) + 3.0
    if following_at_s is not None:
        horizon = min(horizon, following_at_s)
    for at, leader in changes:
        if fault.at_s <= at <= horizon and leader != fault.leader_before:
            return leader
    return None


def write_result(result: dict[str, Any], directory: str | Path) -> tuple[Path, Path | None]:
    """DIR/result.json and, when the report writer is available, DIR/report.html."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "result.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    try:
        from phalanx.chaos.report import write_html_report  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return json_path, None
    html = write_html_report(result, directory / "report.html")
    return json_path, Path(html)

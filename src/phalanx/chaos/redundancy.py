"""Time to full redundancy: is every shard fully replicated right now, and how long after each
fault did the cluster get back there?

Rules of this file:
- Pure functions over the nodes' admin `/status` JSON (node id -> dict, or None when the node
  did not answer) and over plain observations; no clocks, no I/O, so every rule is unit-tested
  on synthetic statuses. The runner's monitor polls and feeds them.
- Full redundancy, as observed from outside the cluster, needs all three of:
  1. the newest map (highest `map_version` among the nodes that answered) says
     `fully_replicated: true`: every shard's reported voters are its desired replicas, no
     learner, all on nodes the map calls alive;
  2. every voter of every shard answers `/status` (the map's liveness trails reality by
     `dead_after_ms`: a killed node stays "alive" in the map for that long, and a restarted one
     is listed while it boots);
  3. every shard has a leader that reports each other voter within `LAG_LIMIT_ENTRIES` of its
     log (a restarted or new replica that has not caught up adds no redundancy yet).
- Per fault: redundancy is lost when the fault is in force (`at_s`); it is restored at the first
  full observation after a not-full one, and never before the fault was healed (`end_s`; a
  `node-lost` fault is never healed: the cluster must re-create the replicas elsewhere),
  except for a fault the cluster repairs while it is still in force (a failed disk whose
  replica is rebuilt on another node: `heal_needed` False), restored whenever it is. The
  search stops at the next fault or at the end of the monitoring; then the measure is None with
  the reason. A fault during which every observation was full "never lost" redundancy.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: A voter within this many log entries of its shard's leader counts as caught up (a fraction of
#: a second of writes at the lab's rates).
LAG_LIMIT_ENTRIES = 100

Statuses = Mapping[str, Mapping[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Observation:
    """What one poll of every node's /status showed."""

    at_s: float
    full: bool
    #: Why redundancy is not full, in words ("" when it is).
    reason: str = ""
    map_version: int | None = None
    #: Nodes the newest map calls dead.
    dead: tuple[str, ...] = ()
    #: shard id -> its desired replicas in the newest map.
    replicas: tuple[tuple[int, tuple[str, ...]], ...] = ()


def newest_status(statuses: Statuses) -> Mapping[str, Any] | None:
    """The answering node's status with the highest map version (ties: the first node id)."""
    best: Mapping[str, Any] | None = None
    best_version = -1
    for node in sorted(statuses):
        status = statuses[node]
        if status is None:
            continue
        version = _int(status.get("map_version"), 0)
        if version > best_version:
            best, best_version = status, version
    return best


def replica_counts(status: Mapping[str, Any] | None) -> dict[str, int]:
    """node -> how many shard replicas the map gives it (empty without a map)."""
    counts: dict[str, int] = {}
    for shard in _shards(status):
        for node in _strings(shard.get("replicas")):
            counts[node] = counts.get(node, 0) + 1
    return counts


def _leader_lag(statuses: Statuses, shard_id: int) -> tuple[str, dict[str, int]] | None:
    """(leader, lag per node) as the shard's current leader reports it (highest term wins)."""
    best: tuple[int, str, dict[str, int]] | None = None
    for node in sorted(statuses):
        status = statuses[node]
        if status is None:
            continue
        local = status.get("local")
        group = local.get(str(shard_id)) if isinstance(local, Mapping) else None
        if not isinstance(group, Mapping) or group.get("role") != "leader":
            continue
        lag: dict[str, int] = {}
        for shard in _shards(status):
            if _int(shard.get("id"), -1) == shard_id and isinstance(shard.get("lag"), Mapping):
                lag = {str(k): _int(v, 0) for k, v in shard["lag"].items()}
        term = _int(group.get("term"), 0)
        if best is None or term > best[0]:
            best = (term, node, lag)
    return None if best is None else (best[1], best[2])


def assess(statuses: Statuses, at_s: float,
           lag_limit_entries: int = LAG_LIMIT_ENTRIES) -> Observation:
    """Is the cluster fully redundant, by the three rules of the module docstring?"""
    newest = newest_status(statuses)
    if newest is None:
        return Observation(at_s, False, "no node answered /status")
    version = _int(newest.get("map_version"), 0)
    dead = tuple(sorted(str(n.get("id")) for n in _list(newest.get("nodes"))
                        if isinstance(n, Mapping) and n.get("state") == "dead"))
    shards = _shards(newest)
    replicas = tuple((_int(s.get("id"), -1), tuple(_strings(s.get("replicas")))) for s in shards)

    def observed(full: bool, reason: str = "") -> Observation:
        return Observation(at_s, full, reason, version, dead, replicas)

    if not shards:
        return observed(False, "the map lists no shard")
    for shard in shards:
        shard_id = _int(shard.get("id"), -1)
        voters = _strings(shard.get("voters"))
        wanted = _strings(shard.get("replicas"))
        learners = _strings(shard.get("learners"))
        if set(voters) != set(wanted) or learners:
            extra = f", learners {','.join(learners)}" if learners else ""
            return observed(False, f"shard {shard_id}: voters {','.join(voters) or '-'} are "
                                   f"not the desired {','.join(wanted)}{extra}")
        on_dead = [n for n in wanted if n in dead]
        if on_dead:
            return observed(False, f"shard {shard_id}: replica(s) on dead node(s) "
                                   f"{','.join(on_dead)}")
        if shard.get("fully_replicated") is False:
            return observed(False, f"shard {shard_id}: the map says not fully replicated")
        silent = [n for n in voters if statuses.get(n) is None]
        if silent:
            return observed(False, f"shard {shard_id}: voter(s) {','.join(silent)} do not "
                                   "answer")
        found = _leader_lag(statuses, shard_id)
        if found is None:
            return observed(False, f"shard {shard_id}: no leader")
        leader, lag = found
        behind = {n: lag.get(n) for n in voters if n != leader}
        unknown = sorted(n for n, value in behind.items() if value is None)
        if unknown:
            return observed(False, f"shard {shard_id}: leader {leader} has no progress for "
                                   f"{','.join(unknown)}")
        far = sorted((n, value) for n, value in behind.items()
                     if value is not None and value > lag_limit_entries)
        if far:
            node, value = far[0]
            return observed(False, f"shard {shard_id}: {node} is {value} entries behind "
                                   f"leader {leader}")
    if newest.get("fully_replicated") is not True:
        return observed(False, "the map does not say fully_replicated")
    return observed(True)


def per_fault(faults: Sequence[tuple[float, float | None]], observations: Sequence[Observation],
              until_s: float, began: Sequence[float | None] | None = None,
              heal_needed: Sequence[bool] | None = None) -> list[dict[str, Any]]:
    """Time to full redundancy of each fault ((at_s, end_s), in order): see the module rules.
    `began` (per fault, optional) is when its injection started: the search for the previous
    fault's restoration stops there (a region's first kill comes before the fault is in force).

    Each entry: lost (bool or None when nothing was observed), restored_at_s, seconds (from the
    fault), after_heal_s (from the heal; None for a fault that never healed) and reason (why no
    measure, else None).
    """
    entries: list[dict[str, Any]] = []
    ordered = sorted(observations, key=lambda o: o.at_s)
    for position, (at_s, end_s) in enumerate(faults):
        following: float | None = None
        if position + 1 < len(faults):
            following = faults[position + 1][0]
            started = began[position + 1] if began is not None else None
            if started is not None:
                following = min(following, started)
        bound = until_s if following is None else min(until_s, following)
        window = [o for o in ordered if at_s <= o.at_s < bound]
        entry: dict[str, Any] = {"lost_at_s": _r(at_s),
                                 "healed_at_s": None if end_s is None else _r(end_s),
                                 "lost": None, "restored_at_s": None, "seconds": None,
                                 "after_heal_s": None, "reason": None}
        entries.append(entry)
        if not window:
            entry["reason"] = "no observation after the fault"
            continue
        first_lost = next((i for i, o in enumerate(window) if not o.full), None)
        if first_lost is None:
            entry["lost"] = False
            entry["reason"] = "redundancy was never seen lost"
            continue
        entry["lost"] = True
        waits_for_heal = heal_needed is None or heal_needed[position]
        earliest = at_s if end_s is None or not waits_for_heal else end_s
        restored = next((o for o in window[first_lost:] if o.full and o.at_s >= earliest), None)
        if restored is None:
            last = window[-1]
            where = ("the next fault" if following is not None and following <= until_s
                     else "the end of the run")
            entry["reason"] = (f"not restored before {where}"
                               + (f" ({last.reason})" if last.reason else ""))
            continue
        entry["restored_at_s"] = _r(restored.at_s)
        entry["seconds"] = _r(restored.at_s - at_s)
        if end_s is not None:
            entry["after_heal_s"] = _r(restored.at_s - end_s)
    return entries


def summary(entries: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Median and worst time to full redundancy (s) of the faults that lost and regained it."""
    known = [float(e["seconds"]) for e in entries if e.get("seconds") is not None]
    if not known:
        return {"median_s": None, "max_s": None}
    return {"median_s": _r(statistics.median(known)), "max_s": _r(max(known))}


def transitions(observations: Sequence[Observation]) -> list[tuple[float, bool, str]]:
    """(at_s, full, reason) at every change of the full / not-full state (the first included)."""
    changes: list[tuple[float, bool, str]] = []
    for observation in sorted(observations, key=lambda o: o.at_s):
        if not changes or changes[-1][1] != observation.full:
            changes.append((_r(observation.at_s), observation.full, observation.reason))
    return changes


def _r(value: float) -> float:
    return round(value, 3)


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _strings(value: Any) -> list[str]:
    return [str(item) for item in _list(value)]


def _shards(status: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if status is None:
        return []
    return [s for s in _list(status.get("shards")) if isinstance(s, Mapping)]

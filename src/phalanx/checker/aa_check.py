"""The chaos lab's check of active-active keys against a model of the merge rules (issue 18).

Merge rules checked (docs/active-active.md, "Merge rules"; Shapiro et al., "Conflict-free
replicated data types", SSS 2011; Almeida, Shoker, Baquero, "Delta state replicated data
types", JPDC 2018):

- **counter** (PN-counter, one entry per region): every acknowledged increment counted exactly
  once. With only acknowledged increments the final value is exactly their sum; an increment
  whose outcome is unknown (timeout, connection lost) may or may not count, so the final value
  must lie in [sum of acknowledged, sum of acknowledged + the unknown ones] (increments are
  positive in the lab's workload; negative ones widen the range the other way).
- **set** (add-wins observed-remove set): every added member is unique to one `SADD`
  (apart from deliberate re-adds), so an add is present unless a remove may have observed it.
  A remove may have observed an add that was *invoked before the remove completed* (in any
  region: replication may have delivered it); it certainly observed an add of its own region
  acknowledged before the remove was invoked (a region is linearizable inside). So a member
  MUST be present when one of its acknowledged adds was invoked after every remove of it
  completed (a concurrent re-add: add wins), and MUST be absent when every add of it that may
  have happened was certainly observed by an acknowledged remove.
- **register** (last-writer-wins by hybrid logical clock, ties by region): the final value must
  be a write that happened (acknowledged or unknown) and is not *dominated*: a write w is
  dominated by an acknowledged write w2 when w2's clock is certainly greater, which the client
  knows when w2 was invoked after w was acknowledged in the same region (one region's clock is
  monotonic along its log), or after a read in w2's region returned w's value (the hybrid
  logical clock of a write made after seeing another is greater; Kulkarni et al. 2014).
  Values are unique per write, so a value names its write.
- **convergence**: after the heal every node of every region answers the same state.
- **RPO of a region loss**: acknowledged writes of the lost region absent from the survivors,
  in writes and in seconds (from the oldest lost acknowledgement to the loss).

Rules of this file:
- Pure: standard library only, no clocks (times come in with the history), deterministic.
- Never a false failure: anything the client cannot know (unknown outcomes, cross-region
  observation not recorded) widens what is allowed, never narrows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: Outcomes of one operation as the client saw it.
OK, FAIL, UNKNOWN = "ok", "fail", "unknown"
INF = float("inf")
#: What an operation wrote or read: an increment, a member, a register value.
Value = str | int | None
#: A JSON-ready report.
Report = dict[str, object]


@dataclass(frozen=True, slots=True)
class AaOp:
    """One client operation on an active-active key.

    kind: "incr" (value: the increment), "sadd"/"srem" (value: the member), "set" (value: the
    unique value written), "get" (value: what the read returned; outcome OK only).
    """

    region: str
    kind: str
    key: str
    value: Value
    invoked: float
    completed: float | None
    outcome: str


@dataclass
class AaCheck:
    """The verdict of `check_active_active`."""

    ok: bool = True
    problems: list[str] = field(default_factory=list)
    counters: dict[str, Report] = field(default_factory=dict)
    sets: dict[str, Report] = field(default_factory=dict)
    registers: dict[str, Report] = field(default_factory=dict)
    converged: bool = True

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)

    def to_json(self) -> Report:
        return {"ok": self.ok, "problems": self.problems[:50],
                "problem_count": len(self.problems), "converged": self.converged,
                "counters": self.counters, "sets": self.sets, "registers": self.registers}


def counter_range(ops: Iterable[AaOp]) -> tuple[int, int, int, int]:
    """(lowest allowed, highest allowed, acknowledged count, unknown count) of a counter."""
    low = high = acked = unknown = 0
    for op in ops:
        if op.kind != "incr":
            continue
        step = int(op.value or 0)
        if op.outcome == OK:
            low, high, acked = low + step, high + step, acked + 1
        elif op.outcome == UNKNOWN:
            low, high, unknown = low + min(0, step), high + max(0, step), unknown + 1
    return low, high, acked, unknown


def set_expectation(ops: Sequence[AaOp]) -> tuple[set[str], set[str]]:
    """(members that must be present, members that must be absent) of one set's history."""
    adds: dict[str, list[AaOp]] = {}
    removes: dict[str, list[AaOp]] = {}
    for op in ops:
        if op.kind == "sadd" and op.outcome != FAIL:
            adds.setdefault(str(op.value), []).append(op)
        elif op.kind == "srem" and op.outcome != FAIL:
            removes.setdefault(str(op.value), []).append(op)
    must: set[str] = set()
    must_not: set[str] = set()
    for member, member_adds in adds.items():
        member_removes = removes.get(member, [])

        def may_observe(remove: AaOp, add: AaOp) -> bool:
            return add.invoked < (remove.completed if remove.completed is not None else INF)

        def surely_observed(remove: AaOp, add: AaOp) -> bool:
            return (remove.outcome == OK and add.outcome == OK and add.region == remove.region
                    and add.completed is not None and add.completed < remove.invoked)

        if any(add.outcome == OK and not any(may_observe(r, add) for r in member_removes)
               for add in member_adds):
            must.add(member)
        elif all(any(surely_observed(r, add) for r in member_removes) for add in member_adds):
            must_not.add(member)
    return must, must_not


def register_candidates(ops: Sequence[AaOp]) -> set[Value]:
    """The values a register may hold at the end: writes not dominated (module docstring)."""
    writes = [op for op in ops if op.kind == "set" and op.outcome != FAIL]
    reads = [op for op in ops if op.kind == "get" and op.outcome == OK]
    by_value = {op.value: op for op in writes}
    # When each value was first observed in each region (its own write's ack, or a read).
    seen: dict[tuple[Value, str], float] = {}
    for op in writes:
        if op.outcome == OK and op.completed is not None:
            seen[(op.value, op.region)] = min(seen.get((op.value, op.region), INF), op.completed)
    for op in reads:
        if op.value in by_value and op.completed is not None:
            seen[(op.value, op.region)] = min(seen.get((op.value, op.region), INF), op.completed)
    candidates: set[Value] = set()
    for write in writes:
        dominated = any(
            other is not write and other.outcome == OK
            and other.invoked > seen.get((write.value, other.region), INF)
            for other in writes)
        if not dominated:
            candidates.add(write.value)
    return candidates


def check_active_active(ops: Sequence[AaOp], finals: Mapping[str, Mapping[str, object]]
                        ) -> AaCheck:
    """Check the final states against the model.

    `finals`: node name -> {key: value} read after the heal, where a counter's value is an int
    (or None when absent), a set's is a set of members, a register's the value or None.
    Which keys are counters, sets or registers follows from the operations on them.
    """
    result = AaCheck()
    states = list(finals.values())
    if not states:
        result.fail("no final state was read")
        return result
    first_name, first = next(iter(finals.items()))
    for name, state in finals.items():
        if state != first:
            result.converged = False
            differing = sorted(k for k in set(state) | set(first)
                               if state.get(k) != first.get(k))
            result.fail(f"not converged: {name} differs from {first_name} on {differing[:5]}")
    by_key: dict[str, list[AaOp]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    for key, key_ops in sorted(by_key.items()):
        kinds = {op.kind for op in key_ops} - {"get"}
        final = first.get(key)
        if kinds == {"incr"}:
            low, high, acked, unknown = counter_range(key_ops)
            value = int(str(final)) if final is not None else 0
            result.counters[key] = {"final": value, "acknowledged_sum": low,
                                    "allowed": [low, high], "acknowledged": acked,
                                    "unknown": unknown}
            if not low <= value <= high:
                result.fail(f"counter {key}: {value} outside [{low}, {high}] "
                            f"({acked} acknowledged increments, {unknown} unknown)")
        elif kinds <= {"sadd", "srem"}:
            must, must_not = set_expectation(key_ops)
            members = {str(m) for m in final} if isinstance(final, (set, frozenset, list)) else set()
            missing, resurrected = sorted(must - members), sorted(must_not & members)
            result.sets[key] = {"members": len(members), "must_be_present": len(must),
                                "must_be_absent": len(must_not), "missing": missing[:20],
                                "present_but_removed": resurrected[:20]}
            if missing:
                result.fail(f"set {key}: {len(missing)} acknowledged add(s) missing, "
                            f"e.g. {missing[:5]}")
            if resurrected:
                result.fail(f"set {key}: {len(resurrected)} member(s) back after a remove "
                            f"that observed every add, e.g. {resurrected[:5]}")
        elif kinds == {"set"}:
            candidates = register_candidates(key_ops)
            result.registers[key] = {"final": final, "candidates": len(candidates)}
            if final not in candidates:
                result.fail(f"register {key}: holds {final!r}, not a write with the greatest "
                            f"clock (allowed: {sorted(map(str, candidates))[:5]})")
        else:
            result.fail(f"key {key}: mixed operations {sorted(kinds)} (the lab does not mix)")
    return result


def region_loss_rpo(acknowledged: Sequence[tuple[Value, float]], survived: Iterable[Value],
                    lost_at: float) -> Report:
    """RPO of losing a region: (element, acknowledged at) of the lost region's unique writes,
    the elements the surviving regions hold, and when the region was lost. Returns the lost
    writes' count and the seconds between the oldest lost acknowledgement and the loss."""
    kept = set(survived)
    lost = [(element, at) for element, at in acknowledged if element not in kept]
    return {"acknowledged": len(acknowledged), "lost_writes": len(lost),
            "rpo_seconds": round(lost_at - min(at for _, at in lost), 3) if lost else 0.0,
            "lost_examples": [str(element) for element, _ in lost[:10]]}

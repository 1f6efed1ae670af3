"""The chaos lab's measures, computed from what the clients saw: availability, nines, RTO, RPO,
latency percentiles and a per-second timeline.

Rules of this file:
- Pure functions over plain records (`OpRecord`, fault start times); no clocks, no I/O, so every
  measure is unit-tested on synthetic data.
- Times are seconds since the start of the run.
- Availability = ok / (ok + fail + info): an unknown outcome is not a success.
- RTO of a fault = time from its injection to the end of the first write *invoked after* the
  injection that was acknowledged (on any node): a write already in flight at the fault says
  nothing about recovery. None when no write succeeded afterwards.
- RPO = acknowledged writes lost, and the span between the acknowledgements of the first and the
  last lost one (0 when none or one is lost).
- Nines = -log10(1 - availability). With no failure at all the measure is bounded by the sample:
  N successes support about log10(N) nines, which is what is reported then (never infinity).
- Two views of availability. Raw (request) availability counts every ATTEMPT a client sent
  (`OpRecord`); application availability counts every CALL the application made (`CallRecord`:
  one or more attempts under the client's retry rules) that succeeded within its deadline.
  With the raw client (no retry) a call is one attempt and the two views are the same numbers.
- Per fault, both views are taken over the fault's window: requests STARTED from its injection
  to `AFTER_HEAL_S` after it healed (or to the next fault / the end of the run, whichever comes
  first); `retries` counts the attempts beyond a call's first.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

OK = "ok"
FAIL = "fail"
INFO = "info"
#: Requests that change state (the RTO counts the first acknowledged one after a fault): the
#: register and set workloads', the queue's (push, move, ack), the bank's transfers and the
#: stream's appends and acks.
WRITE_KINDS = frozenset({"write", "cas", "sadd", "lpush", "blmove", "lrem", "transfer",
                         "script-transfer", "xadd", "xack"})


@dataclass(frozen=True, slots=True)
class OpRecord:
    """One client request as the client saw it."""

    start_s: float
    end_s: float
    kind: str  # read | write | cas | sadd | lpush | blmove | lrem | lrange | transfer | ...
    outcome: str  # ok | fail | info
    node: str = ""

    @property
    def is_write(self) -> bool:
        return self.kind in WRITE_KINDS

    @property
    def latency_ms(self) -> float:
        return (self.end_s - self.start_s) * 1000.0


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One application call: what the application asked for and finally got, after the retries
    (`attempts` >= 1) its client made within `deadline_s`."""

    start_s: float
    end_s: float
    kind: str
    outcome: str  # ok | fail | info (info: a write that may have been applied)
    attempts: int = 1
    deadline_s: float | None = None

    @property
    def succeeded(self) -> bool:
        """ok, and within the deadline (a late answer is a failure to the application)."""
        return self.outcome == OK and (self.deadline_s is None
                                       or self.end_s - self.start_s <= self.deadline_s)


#: A fault's window for availability ends this long after it healed (the recovery it caused).
AFTER_HEAL_S = 2.0


def calls_from_ops(ops: Iterable[OpRecord]) -> list[CallRecord]:
    """The calls of a client that never retries: one per request."""
    return [CallRecord(op.start_s, op.end_s, op.kind, op.outcome) for op in ops]


def application_summary(calls: Sequence[CallRecord]) -> dict[str, Any]:
    """Calls, how many succeeded within their deadline, how many attempts they took, the
    retries (attempts beyond the first), the calls that needed one, and the availability."""
    total = len(calls)
    succeeded = sum(1 for call in calls if call.succeeded)
    attempts = sum(call.attempts for call in calls)
    late = sum(1 for call in calls if call.outcome == OK and not call.succeeded)
    value = succeeded / total if total else 0.0
    missed: dict[str, int] = {}
    for call in calls:
        if not call.succeeded:
            missed[call.kind] = missed.get(call.kind, 0) + 1
    return {"calls": total, "succeeded": succeeded, "not_succeeded_by_kind": missed,
            "failed": sum(1 for call in calls if call.outcome == FAIL),
            "unknown": sum(1 for call in calls if call.outcome == INFO),
            "late": late, "attempts": attempts, "retries": attempts - total,
            "retried_calls": sum(1 for call in calls if call.attempts > 1),
            "availability": round(value, 6), "nines": nines(value, total)}


def fault_window(at_s: float, end_s: float | None, next_at_s: float | None,
                 duration_s: float) -> tuple[float, float]:
    """[start, end) of a fault's availability window (see the module rules)."""
    stop = duration_s if end_s is None else min(duration_s, end_s + AFTER_HEAL_S)
    if next_at_s is not None:
        stop = min(stop, next_at_s)
    return at_s, max(at_s, stop)


def window_availability(ops: Sequence[OpRecord], calls: Sequence[CallRecord], start_s: float,
                        end_s: float) -> dict[str, float | int | None]:
    """Both views over the requests started in [start_s, end_s): raw (attempts) and
    application (calls within their deadline); None where nothing was sent."""
    attempts = [op for op in ops if start_s <= op.start_s < end_s]
    made = [call for call in calls if start_s <= call.start_s < end_s]
    raw = counts(attempts)
    app = application_summary(made)
    return {"attempts": raw["total"], "attempts_ok": raw[OK],
            "raw_availability": round(raw[OK] / raw["total"], 6) if raw["total"] else None,
            "calls": app["calls"], "calls_succeeded": app["succeeded"],
            "retries": app["retries"],
            "app_availability": app["availability"] if app["calls"] else None}


class OpIndex:
    """The attempts and calls of a run sorted by start, for the per-fault measures of a long
    run (thousands of faults over a million requests): the same answers as
    `recovery_time_ms` and `window_availability`, in O(log n) per fault."""

    def __init__(self, ops: Sequence[OpRecord], calls: Sequence[CallRecord]) -> None:
        self.ops = sorted(ops, key=lambda op: op.start_s)
        self.op_starts = [op.start_s for op in self.ops]
        self.calls = sorted(calls, key=lambda call: call.start_s)
        self.call_starts = [call.start_s for call in self.calls]
        # suffix minimum of the end of acknowledged writes, by start order
        self._first_write_end: list[float] = [math.inf] * (len(self.ops) + 1)
        for i in range(len(self.ops) - 1, -1, -1):
            op = self.ops[i]
            end = op.end_s if op.is_write and op.outcome == OK else math.inf
            self._first_write_end[i] = min(end, self._first_write_end[i + 1])

    def recovery_time_ms(self, fault_at_s: float) -> float | None:
        end = self._first_write_end[bisect.bisect_left(self.op_starts, fault_at_s)]
        return None if math.isinf(end) else round((end - fault_at_s) * 1000.0, 1)

    def window(self, start_s: float, end_s: float) -> dict[str, float | int | None]:
        ops = self.ops[bisect.bisect_left(self.op_starts, start_s):
                       bisect.bisect_left(self.op_starts, end_s)]
        calls = self.calls[bisect.bisect_left(self.call_starts, start_s):
                           bisect.bisect_left(self.call_starts, end_s)]
        return window_availability(ops, calls, start_s, end_s)


def per_kind(entries: Iterable[dict[str, object]]) -> dict[str, dict[str, object]]:
    """Per fault kind: how many faults, RTO median / worst (ms), and both availabilities over
    all of that kind's windows. `entries` carry kind, rto_ms, attempts, attempts_ok, calls,
    calls_succeeded, retries (the per-fault rows of the result)."""
    grouped: dict[str, list[dict[str, object]]] = {}
    for entry in entries:
        grouped.setdefault(str(entry.get("kind")), []).append(entry)
    found: dict[str, dict[str, object]] = {}
    for kind, rows in sorted(grouped.items()):
        def total(name: str, rows: list[dict[str, object]] = rows) -> int:
            return sum(int(row.get(name) or 0) for row in rows)  # type: ignore[call-overload]

        rtos = [row.get("rto_ms") for row in rows]
        known = [float(v) for v in rtos if isinstance(v, int | float)]
        attempts, calls = total("attempts"), total("calls")
        found[kind] = {
            "faults": len(rows), **rto_summary(known),
            "not_recovered": sum(1 for v in rtos if v is None),
            "attempts": attempts, "calls": calls, "retries": total("retries"),
            "raw_availability": round(total("attempts_ok") / attempts, 6) if attempts else None,
            "app_availability": round(total("calls_succeeded") / calls, 6) if calls else None,
        }
    return found


def counts(ops: Iterable[OpRecord]) -> dict[str, int]:
    found = {OK: 0, FAIL: 0, INFO: 0}
    for op in ops:
        found[op.outcome] = found.get(op.outcome, 0) + 1
    found["total"] = found[OK] + found[FAIL] + found[INFO]
    return found


def availability(ops: Iterable[OpRecord]) -> float:
    """ok / all; 0.0 when there was no request at all (nothing was available to anyone)."""
    found = counts(ops)
    return found[OK] / found["total"] if found["total"] else 0.0


def nines(availability_value: float, total: int) -> float:
    """-log10(1 - a), bounded by what `total` requests can show (see the module rules)."""
    if total <= 0:
        return 0.0
    if availability_value >= 1.0:
        return round(math.log10(total), 2)
    if availability_value <= 0.0:
        return 0.0
    return round(min(-math.log10(1.0 - availability_value), math.log10(total)), 2)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (fraction in [0, 1]) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(ops: Iterable[OpRecord]) -> dict[str, float | None]:
    """Latency percentiles (ms) of successful requests."""
    values = [op.latency_ms for op in ops if op.outcome == OK]
    return {name: _round(percentile(values, fraction))
            for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999),
                                   ("max", 1.0))}


def timeline(ops: Iterable[OpRecord], duration_s: float) -> list[dict[str, float | int | None]]:
    """One row per second of the run (by completion time): ok / fail / info and latency p50 / p99."""
    seconds = max(1, math.ceil(duration_s))
    buckets: list[list[OpRecord]] = [[] for _ in range(seconds)]
    for op in ops:
        index = min(seconds - 1, max(0, int(op.end_s)))
        buckets[index].append(op)
    rows: list[dict[str, float | int | None]] = []
    for second, bucket in enumerate(buckets):
        found = counts(bucket)
        latencies = [op.latency_ms for op in bucket if op.outcome == OK]
        rows.append({"t_s": second, "ok": found[OK], "fail": found[FAIL], "info": found[INFO],
                     "p50_ms": _round(percentile(latencies, 0.5)),
                     "p99_ms": _round(percentile(latencies, 0.99))})
    return rows


def recovery_time_ms(fault_at_s: float, ops: Iterable[OpRecord]) -> float | None:
    """RTO of one fault (see the module rules), in ms; None when writes never came back."""
    ends = [op.end_s for op in ops
            if op.is_write and op.outcome == OK and op.start_s >= fault_at_s]
    return None if not ends else round((min(ends) - fault_at_s) * 1000.0, 1)


def rto_summary(values: Iterable[float | None]) -> dict[str, float | None]:
    """Median and worst RTO (ms) of the faults that recovered."""
    known = [value for value in values if value is not None]
    if not known:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(known), 1), "max": round(max(known), 1)}


def rpo(lost_ack_times_s: Iterable[float]) -> dict[str, float | int]:
    """Lost acknowledged writes, and the span (s) between the first and last one's ack."""
    times = sorted(lost_ack_times_s)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {"lost_writes": len(times), "span_s": round(span, 3)}


def throughput(ops: Sequence[OpRecord], duration_s: float) -> float:
    """Successful requests per second over the run."""
    if duration_s <= 0:
        return 0.0
    return round(sum(1 for op in ops if op.outcome == OK) / duration_s, 1)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)

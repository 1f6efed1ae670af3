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
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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

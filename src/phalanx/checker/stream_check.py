"""The accounting of a Redis Streams workload (producers XADD unique payloads; a consumer group
reads with XREADGROUP `>`, acks with XACK, and reclaims a dead consumer's pending entries with
XAUTOCLAIM), checked from what the clients saw and the stream's final state.

Rules of this file:
- Pure: plain records in (`Produce`, `Delivery`, `Ack`, `FinalState`), a frozen `StreamCheck`
  out; no clocks, no I/O. Times are the clients' (seconds since the run's start): `began` just
  before a request was sent, `ended` just after its reply.
- Every payload is unique and XADDed once (no client-side retry). Outcomes are the lab's:
  `ok` (acknowledged, with the id the server gave), `fail` (certainly not applied), `info`
  (unknown: it may or may not be in the stream). Failures:
  - NEVER DELIVERED: an acknowledged XADD whose id no consumer ever received (the workload
    drains the group after healing, so everything acknowledged must have been delivered).
  - MISSING: an acknowledged XADD whose id is absent from the final stream (XRANGE - +; the
    workload never trims or deletes), or present with another payload.
  - UNACKED: an acknowledged XADD still in the group's final pending entries list (PEL)
    after the drain, or that no XACK covered: none answered ok, and none with an unknown
    outcome either (one that timed out may have applied: the entry then left the PEL with no
    ok seen, which is fine; an XACK answered `fail` was certainly not applied).
  - PHANTOM: a delivered or final entry whose payload nobody tried to XADD, whose payload came
    back without its fields, or whose id is not the one its acknowledged XADD returned; or one
    id seen with two payloads.
  - FAILED BUT PRESENT: the payload of an XADD answered `fail` (certainly not applied) was
    delivered or is in the stream.
  - APPENDED TWICE: one payload under two ids (an XADD applied twice).
  - DELIVERED AS NEW TWICE: one id handed out twice by XREADGROUP `>` (which only serves
    entries never delivered to the group): two consumers of one group got it at once.
  - EARLY CLAIM: XAUTOCLAIM (or XCLAIM) handed over an entry whose last delivery was surely
    more recent than the claim's min-idle time: the claim took an entry from a consumer that
    may still be working on it, outside what a reclaim allows. Sound on the clients' clocks: a
    delivery D that surely came before the claim C (D ended before C began, or D was the
    entry's `>` delivery, always its first) happened on the server after D.began, C before
    C.ended, so the entry's idle time at C was at most C.ended - D.began.
  - ID ORDER: an acknowledged XADD that ended before another began got the larger id (ids
    must grow in real-time order, across leader changes too: issue 17, item 2).
- Reported, not failures: duplicates (ids delivered more than once: a reclaim after a
  consumer died or stalled; Redis Streams consumer groups are at-least-once), deliveries per
  kind, acks, consumers that died.
- `stream_timeline` derives per-second rates (produced, consumed, acked) and the consumer
  group's lag (acknowledged XADDs not acked yet) and pending entries (delivered, not acked)
  from the same records, for the report.
- Lists are reported in a deterministic order (the order of acknowledgement, else sorted).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

OK = "ok"
FAIL = "fail"
INFO = "info"
#: Delivery kinds: XREADGROUP `>` (never delivered before), XAUTOCLAIM / XCLAIM (a reclaim).
NEW = "new"
CLAIM = "claim"

#: How many ids of each kind the report keeps (the counts are always complete).
SAMPLE = 20


def parse_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id `ms-seq` as a sortable pair; (-1, -1) for a malformed one."""
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return -1, -1


@dataclass(frozen=True, slots=True)
class Produce:
    """One XADD attempt: its payload, outcome and (when ok) the id the server gave."""

    payload: str
    outcome: str  # ok | fail | info
    began: float
    ended: float
    entry_id: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One entry handed to a consumer: by XREADGROUP `>` (`new`) or a reclaim (`claim`, with
    the min-idle time it asked for). `payload` is None when the entry came without fields."""

    entry_id: str
    payload: str | None
    consumer: str
    kind: str  # new | claim
    began: float
    ended: float
    min_idle_ms: int = 0


@dataclass(frozen=True, slots=True)
class Ack:
    """One XACK request of some ids, its outcome and reply (the number it removed)."""

    entry_ids: tuple[str, ...]
    consumer: str
    outcome: str
    began: float
    ended: float
    removed: int | None = None


@dataclass(frozen=True, slots=True)
class FinalState:
    """The stream and the group as one node answered after the drain: every entry (id,
    payload or None) and the ids still pending."""

    entries: Sequence[tuple[str, str | None]]
    pending: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class StreamCheck:
    acknowledged: int  # XADDs answered ok
    unknown: int  # XADDs with an unknown outcome
    failed: int  # XADDs answered fail
    delivered: int  # distinct ids delivered at least once
    deliveries: Mapping[str, int]  # kind -> count
    acked: int  # distinct ids a successful XACK covered
    acked_unknown: int  # distinct ids only XACKs with an unknown outcome covered
    final_entries: int | None  # entries in the final stream (None: not read)
    final_pending: int | None
    never_delivered: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unacked: tuple[str, ...] = ()
    phantoms: tuple[str, ...] = ()
    failed_but_present: tuple[str, ...] = ()
    appended_twice: tuple[str, ...] = ()
    new_twice: tuple[str, ...] = ()
    early_claims: tuple[str, ...] = ()
    id_order: tuple[str, ...] = ()
    duplicates: Mapping[str, int] = field(default_factory=dict)  # id -> times delivered

    @property
    def ok(self) -> bool:
        return not (self.never_delivered or self.missing or self.unacked or self.phantoms
                    or self.failed_but_present or self.appended_twice or self.new_twice
                    or self.early_claims or self.id_order)

    def problems(self) -> list[str]:
        """One plain line per kind of failure (empty when ok)."""
        lines = (
            (self.never_delivered, "acknowledged XADDs never delivered to a consumer"),
            (self.missing, "acknowledged XADDs missing from the final stream"),
            (self.unacked, "acknowledged XADDs never acked (or still pending after the drain)"),
            (self.phantoms, "entries nobody produced (or with the wrong id or payload)"),
            (self.failed_but_present, "XADDs answered 'failed' whose payload is in the stream"),
            (self.appended_twice, "payloads appended twice (under two ids)"),
            (self.new_twice, "ids delivered twice as new entries (two consumers at once)"),
            (self.early_claims, "reclaims of an entry idle for less than the claim's min-idle"),
            (self.id_order, "acknowledged XADDs whose id is below an earlier one's"),
        )
        return [f"{len(found)} {text}: {', '.join(found[:5])}" for found, text in lines if found]

    def to_json(self) -> dict[str, object]:
        return {"workload": "stream", "ok": self.ok, "acknowledged_xadds": self.acknowledged,
                "unknown_xadds": self.unknown, "failed_xadds": self.failed,
                "delivered": self.delivered, "deliveries": dict(self.deliveries),
                "acked": self.acked, "acked_unknown": self.acked_unknown,
                "final_entries": self.final_entries,
                "final_pending": self.final_pending,
                "never_delivered": len(self.never_delivered), "missing": len(self.missing),
                "unacked": len(self.unacked), "phantoms": len(self.phantoms),
                "failed_but_present": len(self.failed_but_present),
                "appended_twice": len(self.appended_twice), "new_twice": len(self.new_twice),
                "early_claims": len(self.early_claims), "id_order": len(self.id_order),
                "duplicates": len(self.duplicates),
                "redeliveries": sum(n - 1 for n in self.duplicates.values()),
                "examples": {
                    "never_delivered": list(self.never_delivered[:SAMPLE]),
                    "missing": list(self.missing[:SAMPLE]),
                    "unacked": list(self.unacked[:SAMPLE]),
                    "phantoms": list(self.phantoms[:SAMPLE]),
                    "failed_but_present": list(self.failed_but_present[:SAMPLE]),
                    "appended_twice": list(self.appended_twice[:SAMPLE]),
                    "new_twice": list(self.new_twice[:SAMPLE]),
                    "early_claims": list(self.early_claims[:SAMPLE]),
                    "id_order": list(self.id_order[:SAMPLE]),
                    "duplicates": dict(sorted(self.duplicates.items())[:SAMPLE])},
                "problems": self.problems()}


def check_stream(produces: Iterable[Produce], deliveries: Iterable[Delivery],
                 acks: Iterable[Ack], final: FinalState | None = None) -> StreamCheck:
    """The accounting of one run (see the module rules): every XADD attempt, every delivery,
    every XACK, and the final stream and PEL as one node answered (None: not read)."""
    produced = list(produces)
    delivered = list(deliveries)
    acknowledged = sorted((p for p in produced if p.outcome == OK), key=lambda p: p.ended)
    by_payload = {p.payload: p for p in produced}
    failed_payloads = {p.payload for p in produced if p.outcome == FAIL}

    # What came back: (id, payload) from every delivery and the final stream.
    seen: list[tuple[str, str | None]] = [(d.entry_id, d.payload) for d in delivered]
    if final is not None:
        seen.extend(final.entries)
    phantoms: set[str] = set()
    failed_present: set[str] = set()
    payloads_of: dict[str, set[str]] = {}
    ids_of: dict[str, set[str]] = {}
    for entry_id, payload in seen:
        if payload is None:
            phantoms.add(f"{entry_id} (no fields)")
            continue
        payloads_of.setdefault(entry_id, set()).add(payload)
        ids_of.setdefault(payload, set()).add(entry_id)
        origin = by_payload.get(payload)
        if origin is None:
            phantoms.add(f"{entry_id}={payload} (never produced)")
        elif origin.outcome == OK and origin.entry_id != entry_id:
            phantoms.add(f"{entry_id}={payload} (its XADD returned {origin.entry_id})")
        if payload in failed_payloads:
            failed_present.add(payload)
    phantoms.update(f"{entry_id} (payloads {', '.join(sorted(found))})"
                    for entry_id, found in payloads_of.items() if len(found) > 1)
    appended_twice = tuple(sorted(f"{payload} ({', '.join(sorted(found, key=parse_id))})"
                                  for payload, found in ids_of.items() if len(found) > 1))

    times = Counter(d.entry_id for d in delivered)
    never = tuple(p.payload for p in acknowledged if p.entry_id not in times)
    missing: tuple[str, ...] = ()
    final_pending: set[str] = set()
    if final is not None:
        in_stream = dict(final.entries)
        missing = tuple(p.payload for p in acknowledged
                        if p.entry_id not in in_stream or in_stream[p.entry_id] != p.payload)
        final_pending = set(final.pending)
    covered = {entry_id for ack in acks if ack.outcome == OK for entry_id in ack.entry_ids}
    maybe = {entry_id for ack in acks if ack.outcome == INFO for entry_id in ack.entry_ids}
    unacked = tuple(p.payload for p in acknowledged if p.entry_id in final_pending
                    or (p.entry_id not in covered and p.entry_id not in maybe))

    new_counts = Counter(d.entry_id for d in delivered if d.kind == NEW)
    new_twice = tuple(sorted((i for i, n in new_counts.items() if n > 1), key=parse_id))
    early = _early_claims(delivered)
    id_order = _id_order(acknowledged)
    kinds = Counter(d.kind for d in delivered)
    duplicates = {i: n for i, n in sorted(times.items(), key=lambda item: parse_id(item[0]))
                  if n > 1}
    return StreamCheck(
        acknowledged=len(acknowledged), unknown=sum(1 for p in produced if p.outcome == INFO),
        failed=sum(1 for p in produced if p.outcome == FAIL), delivered=len(times),
        deliveries=dict(sorted(kinds.items())), acked=len(covered & set(times)),
        acked_unknown=len((maybe - covered) & set(times)),
        final_entries=None if final is None else len(final.entries),
        final_pending=None if final is None else len(final.pending),
        never_delivered=never, missing=missing, unacked=unacked,
        phantoms=tuple(sorted(phantoms)), failed_but_present=tuple(sorted(failed_present)),
        appended_twice=appended_twice, new_twice=new_twice, early_claims=early,
        id_order=id_order, duplicates=duplicates)


def _early_claims(deliveries: Sequence[Delivery]) -> tuple[str, ...]:
    """Claims of an entry surely delivered less than the claim's min-idle before (see EARLY
    CLAIM in the module rules), as 'id to consumer at t s'."""
    per_id: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        per_id.setdefault(delivery.entry_id, []).append(delivery)
    found: list[str] = []
    for entry_id, those in sorted(per_id.items(), key=lambda item: parse_id(item[0])):
        for claim in those:
            if claim.kind != CLAIM or claim.min_idle_ms <= 0:
                continue
            before = [d.began for d in those if d is not claim
                      and (d.kind == NEW or d.ended <= claim.began)]
            if not before:
                continue
            idle_ms_max = (claim.ended - max(before)) * 1000.0
            if idle_ms_max < claim.min_idle_ms:
                found.append(f"{entry_id} to {claim.consumer} at {claim.ended:.3f} s (idle at "
                             f"most {idle_ms_max:.0f} ms < {claim.min_idle_ms} ms)")
    return tuple(found)


def _id_order(acknowledged: Sequence[Produce]) -> tuple[str, ...]:
    """Acknowledged XADDs that began after another one ended but got a smaller id."""
    found: list[str] = []
    done = sorted((p for p in acknowledged if p.entry_id is not None), key=lambda p: p.ended)
    best: tuple[tuple[int, int], Produce] | None = None  # the largest id among those ended
    position = 0
    for later in sorted(done, key=lambda p: p.began):
        while position < len(done) and done[position].ended < later.began:
            candidate = done[position]
            key = parse_id(candidate.entry_id or "")
            if best is None or key > best[0]:
                best = (key, candidate)
            position += 1
        if best is not None and parse_id(later.entry_id or "") <= best[0]:
            found.append(f"{later.payload} got {later.entry_id} after {best[1].payload} got "
                         f"{best[1].entry_id}")
    return tuple(found)


def stream_timeline(produces: Iterable[Produce], deliveries: Iterable[Delivery],
                    acks: Iterable[Ack], duration_s: float) -> list[dict[str, int]]:
    """One row per second (by completion time): XADDs acknowledged, entries consumed (first
    delivery), entries acked (first successful XACK), and at the second's end the group's
    lag (acknowledged XADDs not acked yet) and pending entries (delivered, not acked yet)."""
    seconds = max(1, math.ceil(duration_s))

    def second(at: float) -> int:
        return min(seconds - 1, max(0, int(at)))

    produced = [0] * seconds
    consumed = [0] * seconds
    acked = [0] * seconds
    acked_known = [0] * seconds  # of acknowledged XADDs' ids only (the lag's)
    known: set[str] = set()
    for p in produces:
        if p.outcome == OK and p.entry_id is not None:
            known.add(p.entry_id)
            if p.ended < seconds:
                produced[second(p.ended)] += 1
    first_delivery: dict[str, float] = {}
    for d in deliveries:
        if d.ended < first_delivery.get(d.entry_id, math.inf):
            first_delivery[d.entry_id] = d.ended
    first_ack: dict[str, float] = {}
    for ack in acks:
        if ack.outcome != OK:
            continue
        for entry_id in ack.entry_ids:
            if ack.ended < first_ack.get(entry_id, math.inf):
                first_ack[entry_id] = ack.ended
    for at in first_delivery.values():
        if at < seconds:
            consumed[second(at)] += 1
    for entry_id, at in first_ack.items():
        if at < seconds:
            acked[second(at)] += 1
            if entry_id in known:
                acked_known[second(at)] += 1
    rows: list[dict[str, int]] = []
    total_produced = total_consumed = total_acked = total_acked_known = 0
    for t in range(seconds):
        total_produced += produced[t]
        total_consumed += consumed[t]
        total_acked += acked[t]
        total_acked_known += acked_known[t]
        rows.append({"t_s": t, "produced": produced[t], "consumed": consumed[t],
                     "acked": acked[t], "lag": max(0, total_produced - total_acked_known),
                     "pending": max(0, total_consumed - total_acked)})
    return rows

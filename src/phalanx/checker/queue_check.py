"""The accounting of a reliable-queue workload (LPUSH unique ids; BLMOVE to a per-consumer
processing list; LREM on ack), checked from what clients saw and the final lists.

Rules of this file:
- Pure: plain values in, a frozen `QueueCheck` out; no clocks, no I/O.
- Every pushed id is unique and pushed once (no client-side retry), so:
  - LOST: an acknowledged push that was never delivered to a consumer and is absent from the
    final lists (the queue and every processing list). A failure.
  - TWICE IN FINAL: an id present more than once over all the final lists (a push or a move
    applied twice, or an element in two processing lists at once). A failure.
  - PHANTOM: an id delivered or present that no client ever tried to push. A failure.
  - ACK FOUND NOTHING: a consumer's LREM that removed nothing right after its own successful
    BLMOVE of that id (only that consumer touches its processing list). A failure.
  - DUPLICATES: ids delivered more than once (a consumer that died after processing and before
    its ack, and re-processed its processing list). Reported, not a failure: the reliable-queue
    pattern is at-least-once.
- Ids whose push had an unknown outcome may or may not be anywhere: never a failure.
- Lists are reported in a deterministic order (the order of `acknowledged`, else sorted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

#: How many ids of each kind the report keeps (the counts are always complete).
SAMPLE = 20


@dataclass(frozen=True, slots=True)
class QueueCheck:
    acknowledged: int
    delivered: int  # distinct ids delivered at least once
    deliveries: int  # every delivery, duplicates included
    remaining: int  # ids still in the final lists
    lost: tuple[str, ...] = ()
    twice_in_final: tuple[str, ...] = ()
    phantoms: tuple[str, ...] = ()
    acks_found_nothing: tuple[str, ...] = ()
    duplicates: Mapping[str, int] = field(default_factory=dict)  # id -> times delivered

    @property
    def ok(self) -> bool:
        return not (self.lost or self.twice_in_final or self.phantoms or self.acks_found_nothing)

    def problems(self) -> list[str]:
        """One plain line per kind of failure (empty when ok)."""
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} acknowledged pushes lost (never consumed, not in "
                         f"the queue): {', '.join(self.lost[:5])}")
        if self.twice_in_final:
            found.append(f"{len(self.twice_in_final)} ids present twice in the final lists: "
                         f"{', '.join(self.twice_in_final[:5])}")
        if self.phantoms:
            found.append(f"{len(self.phantoms)} ids nobody pushed: "
                         f"{', '.join(self.phantoms[:5])}")
        if self.acks_found_nothing:
            found.append(f"{len(self.acks_found_nothing)} acks removed nothing from the "
                         f"consumer's own processing list: "
                         f"{', '.join(self.acks_found_nothing[:5])}")
        return found

    def to_json(self) -> dict[str, object]:
        return {"workload": "queue", "ok": self.ok, "acknowledged_pushes": self.acknowledged,
                "delivered": self.delivered, "deliveries": self.deliveries,
                "remaining": self.remaining, "lost": len(self.lost),
                "duplicates": len(self.duplicates),
                "redeliveries": sum(n - 1 for n in self.duplicates.values()),
                "twice_in_final": len(self.twice_in_final), "phantoms": len(self.phantoms),
                "acks_found_nothing": len(self.acks_found_nothing),
                "examples": {"lost": list(self.lost[:SAMPLE]),
                             "duplicates": dict(sorted(self.duplicates.items())[:SAMPLE]),
                             "twice_in_final": list(self.twice_in_final[:SAMPLE]),
                             "phantoms": list(self.phantoms[:SAMPLE]),
                             "acks_found_nothing": list(self.acks_found_nothing[:SAMPLE])},
                "problems": self.problems()}


def check_queue(acknowledged: Iterable[str], attempted: Set[str], deliveries: Iterable[str],
                final_lists: Mapping[str, Sequence[str]],
                acks_found_nothing: Iterable[str] = ()) -> QueueCheck:
    """The accounting of one run: `acknowledged` pushes (in ack order), every id ever sent
    (`attempted`), every delivery (an id per consumption, duplicates included), the final
    content of the queue and of every processing list, and the ids whose ack removed nothing."""
    acked = list(dict.fromkeys(acknowledged))
    delivered = Counter(deliveries)
    in_final: Counter[str] = Counter()
    for items in final_lists.values():
        in_final.update(items)
    lost = tuple(i for i in acked if i not in delivered and i not in in_final)
    twice = tuple(sorted(i for i, n in in_final.items() if n > 1))
    phantoms = tuple(sorted({i for i in (*delivered, *in_final) if i not in attempted}))
    duplicates = {i: n for i, n in sorted(delivered.items()) if n > 1}
    return QueueCheck(acknowledged=len(acked), delivered=len(delivered),
                      deliveries=sum(delivered.values()), remaining=len(in_final), lost=lost,
                      twice_in_final=twice, phantoms=phantoms,
                      acks_found_nothing=tuple(dict.fromkeys(acks_found_nothing)),
                      duplicates=duplicates)

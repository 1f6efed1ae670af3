"""Hybrid logical clocks (Kulkarni, Demirbas et al., "Logical Physical Clocks and Consistent
Snapshots in Globally Distributed Databases", OPODIS 2014), packed in one integer.

A timestamp is `physical_ms << LOGICAL_BITS | logical`. The paper's send/local rule
(l' = max(l, pt); c' = c + 1 if l' == l else 0) is `max(last + 1, pt << LOGICAL_BITS)` on the
packed form, and its receive rule (l' = max(l, l_m, pt)) is `max(last, remote)` followed by the
next local tick. So a write made after observing another (locally, or merged from a region)
always carries a greater timestamp, and timestamps stay close to wall-clock milliseconds.

Rules of this file: pure; the physical time is an argument (a shard passes its replicated
clock, the `now_ms` the leader stamped on the entry), so every replica computes the same value.
"""

from __future__ import annotations

#: Bits of the logical counter (65,536 events per millisecond before the physical part moves).
LOGICAL_BITS = 16


def hlc_tick(last: int, physical_ms: int) -> int:
    """The timestamp of a new local event after `last`, at wall time `physical_ms`."""
    return max(last + 1, physical_ms << LOGICAL_BITS)


def hlc_physical_ms(timestamp: int) -> int:
    """The wall-clock milliseconds part of a timestamp."""
    return timestamp >> LOGICAL_BITS

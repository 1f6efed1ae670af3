"""Conflict-free replicated data types for active-active keys (issue 18; docs/active-active.md).

A PURE room: no asyncio, socket, time, threading or module-level random. Clocks are passed in
(the replicated clock of the shard applying an entry). See `types.py` (the merge rules),
`hlc.py` (hybrid logical clocks), `store.py` (a shard's active-active keys, its outbox and the
positions it pulled other regions to) and `commands.py` (what each Redis command does to them).
"""

from __future__ import annotations

from phalanx.crdt.hlc import LOGICAL_BITS, hlc_physical_ms, hlc_tick
from phalanx.crdt.store import ActiveActiveStore, PullReply

__all__ = ["LOGICAL_BITS", "ActiveActiveStore", "PullReply", "hlc_physical_ms", "hlc_tick"]

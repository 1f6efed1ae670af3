"""The node's recent cluster events: a short, bounded log for `/status` and the dashboard.

Every room of the node runtime (the replica registry, the controllers, the placement driver,
resharding, and each Raft group's leader changes) records what it did here as one line of
text under a kind ("membership", "placement", "split", ...); the admin API shows the newest.
See docs/architecture.md ("the node runtime").

Rules of this file:
- Recording is synchronous and cheap (no I/O); the log keeps the last `KEEP` events only.
- Events are for people: the text is a sentence, never parsed by code.
"""

from __future__ import annotations

import time

#: How many events the log keeps.
KEEP = 200


class EventLog:
    """The last `KEEP` events of this node, oldest first."""

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def record(self, kind: str, text: str) -> None:
        """Add one event (wall-clock time, kind, text)."""
        self.events.append({"time": time.time(), "kind": kind, "text": text})
        if len(self.events) > KEEP:
            del self.events[:-KEEP]

    def recent(self, count: int) -> list[dict[str, object]]:
        """The newest `count` events, oldest first."""
        return self.events[-count:]

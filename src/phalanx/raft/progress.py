"""What a leader knows about each follower, and how fast it may send (etcd's tracker).

Rules of this file:
- One `Progress` per member that receives the log (voters and learners).
- Three states (etcd `tracker/progress.go`, drawn here):

        +--------- rejection / unreachable ---------+
        v                                            |
      PROBE --- first successful append ---> REPLICATE
        ^                                            |
        +-- snapshot acknowledged --- SNAPSHOT <-----+-- needed entries were compacted

  PROBE sends one append at a time and waits; REPLICATE streams optimistically within a bounded
  window of in-flight messages; SNAPSHOT sends nothing until the snapshot is acknowledged.
"""

from __future__ import annotations

import enum
from collections import deque

from phalanx.errors import require


class ProgressState(enum.Enum):
    """How the leader replicates to one follower."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """A bounded window of in-flight append messages, each remembered by its last index."""

    __slots__ = ("_capacity", "_last_indexes")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._last_indexes: deque[int] = deque()

    def add(self, last_index: int) -> None:
        """Record a sent append whose last entry is `last_index`."""
        require(not self.full(), "adding to a full inflight window")
        self._last_indexes.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget every in-flight message acknowledged by an ack up to `index`."""
        while self._last_indexes and self._last_indexes[0] <= index:
            self._last_indexes.popleft()

    def free_first(self) -> None:
        """Forget the oldest in-flight message (used when a heartbeat shows the peer is alive)."""
        if self._last_indexes:
            self._last_indexes.popleft()

    def full(self) -> bool:
        """True when no more messages may be sent until some are acknowledged."""
        return len(self._last_indexes) >= self._capacity

    def count(self) -> int:
        """How many messages are in flight."""
        return len(self._last_indexes)

    def reset(self) -> None:
        """Forget everything in flight."""
        self._last_indexes.clear()


class Progress:
    """The leader's view of one follower: matched index, next index to send, and send state."""

    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snapshot_elapsed_ticks",
        "state",
    )

    def __init__(self, *, next_index: int, max_inflight: int, is_learner: bool) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.snapshot_elapsed_ticks = 0
        self.probe_sent = False
        self.recent_active = False
        self.is_learner = is_learner
        self.inflights = Inflights(max_inflight)

    def become_probe(self) -> None:
        """Send one append at a time until the follower's position is known again."""
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.probe_sent = False
        self.inflights.reset()

    def become_replicate(self) -> None:
        """Stream appends optimistically."""
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.pending_snapshot = 0
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, snapshot_index: int) -> None:
        """Wait for the follower to install the snapshot at `snapshot_index` (§7)."""
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.snapshot_elapsed_ticks = 0
        self.probe_sent = False
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """Record a successful append up to `index`; True if the match index moved."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease_to(self, rejected: int, last_index_hint: int) -> bool:
        """Back up after the follower rejected prev index `rejected` (§5.3 consistency check).

        Returns False if the rejection is stale (it answers an older message).

        A follower whose log ends below `match` lost entries it had acknowledged: its disk was
        wiped or replaced and it restarted empty under its old id. The follower is the
        authority on its own log, so once a probe right after `match` is rejected that way,
        `match` drops to the hint and the next probe starts after it (from the snapshot if
        those entries were compacted, §7). Keeping `match` (etcd does: a member never loses its
        log there) would probe at match + 1 for ever, every probe rejected. A rejection that
        merely claims so (`rejected <= match`: it may be stale, or the follower's answer to a
        heartbeat that promised more than it holds) is checked first: the leader probes right
        after `match`. Lowering `match` never undoes a commit; it stops counting a copy that
        no longer exists.
        """
        lost_entries = last_index_hint < self.match
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match and not lost_entries:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            if self.state is ProgressState.PROBE and lost_entries and rejected < self.match:
                self.next = self.match + 1  # check the claim: probe right after match
                self.probe_sent = False
                return True
            return False
        if self.state is ProgressState.PROBE and lost_entries:
            self.match = max(last_index_hint, 0)
        self.next = max(min(rejected, last_index_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def sent_entries(self, last_index: int, entry_count: int) -> None:
        """Account for an append just sent whose last entry is `last_index`."""
        if self.state is ProgressState.REPLICATE:
            if entry_count > 0:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def is_paused(self) -> bool:
        """True when the leader must not send another append to this follower now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def describe(self) -> str:
        """A short human-readable description for status output and traces."""
        return (
            f"{self.state.value} match={self.match} next={self.next}"
            f" inflight={self.inflights.count()}"
            + (f" pending_snapshot={self.pending_snapshot}" if self.pending_snapshot else "")
        )

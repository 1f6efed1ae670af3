"""A client connection's write session: the (client id, sequence) every write it makes
carries, so that a write whose outcome became unknown can be sent again and still run once.

Rules of this file (Raft dissertation §6.3, "Implementing linearizable semantics"):
- A connection's session id is 64 random bits drawn when the connection makes its first
  write (unique across the cluster and across restarts of this node: a reused id could get
  another request's cached reply). Sequences count from 1, one per write, on every shard.
- Each write carries the session's lowest sequence still in flight (`first_unacked`): the
  state machine keeps the replies from there on and discards the rest. A sequence stays in
  flight until its write has a final outcome here (answered, or given up at its deadline:
  never sent again either way).
- Re-sent writes keep the connection's order: a forwarded write is not sent (again) while a
  lower sequence of the same connection is waiting to be re-sent (its link broke, or it waits
  for a new leader). A pipeline cut by a leader kill is re-sent in the order it was written.
- Pure bookkeeping: no I/O, no node.
See docs/architecture.md.
"""

from __future__ import annotations

import secrets

from phalanx.errors import InvariantViolation

#: `WriteSession.in_flight`: the write is served locally (proposed on this node's replica).
LOCAL = "local"
#: The write waits to be forwarded (or forwarded again).
WAITING = "waiting"


class WriteSession:
    """The sequences of one connection's writes, and where each forwarded one was sent."""

    __slots__ = ("client_id", "in_flight", "next_sequence")

    def __init__(self) -> None:
        self.client_id = secrets.randbits(64)
        self.next_sequence = 1
        #: sequence -> LOCAL, WAITING, or the link connection it was last written on (an
        #: object with a `failed` flag: `peer_link._Connection`). In sequence order.
        self.in_flight: dict[int, object] = {}

    def begin(self) -> int:
        """A new write's sequence (in flight until `end`)."""
        sequence = self.next_sequence
        self.next_sequence = sequence + 1
        self.in_flight[sequence] = LOCAL
        return sequence

    def end(self, sequence: int) -> None:
        """The write of `sequence` has its final outcome: never sent again."""
        self.in_flight.pop(sequence, None)

    def first_unacked(self) -> int:
        """The lowest sequence still in flight (§6.3: replies below it may be discarded)."""
        return next(iter(self.in_flight), self.next_sequence)

    def tag(self, sequence: int) -> tuple[int, int, int]:
        """(client id, sequence, first unacknowledged) for a write being sent now."""
        return self.client_id, sequence, self.first_unacked()

    def held(self, sequence: int) -> bool:
        """True while a lower sequence waits to be forwarded (again): sending `sequence`
        now could overtake it."""
        for lower, where in self.in_flight.items():
            if lower >= sequence:
                return False
            if where is WAITING or getattr(where, "failed", False):
                return True
        return False


class WriteTag:
    """The identity one write carries through the write path: its connection's session and
    sequence (this node's client), or the tag another node forwarded it with (`fixed`)."""

    __slots__ = ("fixed", "raw_forward", "sequence", "session", "uncertain")

    def __init__(self, session: WriteSession | None, sequence: int,
                 fixed: tuple[int, int, int] | None = None) -> None:
        self.session = session
        self.sequence = sequence
        self.fixed = fixed
        #: An attempt's outcome was unknown (it may have been applied): the write may never
        #: be reported as certainly not applied (-TRYAGAIN) after this.
        self.uncertain = False
        #: The leader does not know PHALANX.FWD (an older node): forward the bare command.
        self.raw_forward = False

    def current(self) -> tuple[int, int, int]:
        """(client id, sequence, first unacknowledged) to send now."""
        if self.fixed is not None:
            return self.fixed
        if self.session is None:
            raise InvariantViolation("a write tag has neither a session nor a fixed tag")
        return self.session.tag(self.sequence)

    def mark(self, where: object) -> None:
        """Record where the write is now (LOCAL, WAITING, a link or its connection)."""
        session = self.session
        if session is not None and self.sequence in session.in_flight:
            session.in_flight[self.sequence] = where

    def held(self) -> bool:
        """True while a lower write of the same connection waits to be forwarded (again)."""
        return self.session is not None and self.session.held(self.sequence)

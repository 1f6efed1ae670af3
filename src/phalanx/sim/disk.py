"""The simulated disk of one node: durable log storage that can fail or lie, as TigerBeetle's
storage simulator does (read faults, corrupted reads, misdirected writes), and the checksums
that catch it.

Rules of this file:
- Every log record is written with a checksum of what it should hold (index, term, type,
  data), kept in a header table beside the records (TigerBeetle keeps redundant headers; here
  the headers are assumed intact, the record bodies are what fails). Every body read checks it.
- Faults (drawn from the disk stream, only on the nodes `FaultPlan.faulty_disks` names):
  * a read error (EIO): the read raises `DiskFault`;
  * a corrupted read: the bytes returned differ from those written (a transient bit flip on
    the read path: the record on disk stays intact, as TigerBeetle applies faults on read);
  * a misdirected write: a record lands in another record's slot; its own slot keeps what it
    held before (or nothing). Both slots now fail their checksum, for good.
- What a node does with a bad read (the choice, see docs/simulation.md): it stops at once
  (crash-stop), before anything read is used, sent or acknowledged, and it refuses to start
  again on a disk that fails its checks: `DiskFault` propagates out of the Raft core to the
  simulator, which stops the node for the rest of the run. A replica rebuilt from its peers is
  the placement driver's job (issue 16 §4), outside the simulator.
- Faults are kept to a minority of the nodes (at most one), like TigerBeetle's fault atlas: a
  committed entry always has an intact copy on a majority.
"""

from __future__ import annotations

import random
import zlib

from phalanx.errors import Corrupt
from phalanx.raft import ConfState, Entry, Index, MemoryStorage, Snapshot, Term


class DiskFault(Corrupt):
    """A read that returned an error or data that failed its checksum (the node must stop)."""

    def __init__(self, node: str, text: str) -> None:
        super().__init__(f"{node}: {text}")
        self.node = node


def checksum(index: int, term: int, kind: int, data: bytes) -> int:
    """The checksum of a log record: CRC-32 over its index, term, type and data."""
    head = f"{index}:{term}:{kind}:".encode()
    return zlib.crc32(data, zlib.crc32(head))


class SimDisk(MemoryStorage):
    """A node's durable storage with checksummed records and injectable faults."""

    def __init__(self, node: str, conf_state: ConfState | None = None) -> None:
        super().__init__(conf_state)
        self.node = node
        #: index -> checksum of the record that should be there (the header table).
        self.sums: dict[int, int] = {}
        #: index -> what the slot holds instead (misdirected writes).
        self.damaged: dict[int, Entry | None] = {}
        self.rng: random.Random | None = None
        self.read_error_probability = 0.0
        self.corrupt_read_probability = 0.0
        self.misdirect_probability = 0.0
        #: Planted bug "no-checksum": reads are not verified (bad data reaches the core).
        self.verify = True
        self.stats = {"read-errors": 0, "corrupt-reads": 0, "misdirected-writes": 0}

    def fail(self, rng: random.Random, *, read_error: float, corrupt_read: float,
             misdirect: float) -> None:
        """Make this disk faulty with the given per-operation probabilities."""
        self.rng = rng
        self.read_error_probability = read_error
        self.corrupt_read_probability = corrupt_read
        self.misdirect_probability = misdirect

    # -- writes ------------------------------------------------------------------------------
    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        previous = {e.index: e for e in self._slots(entries[0].index, entries[-1].index)}
        super().append(entries)
        first = self.first_index()
        for entry in entries:
            if entry.index < first:
                continue
            self.sums[entry.index] = checksum(entry.index, entry.term, entry.type, entry.data)
            self.damaged.pop(entry.index, None)
        rng = self.rng
        if rng is not None and len(entries) > 1 and rng.random() < self.misdirect_probability:
            # One record of the batch lands in another slot of the batch.
            source, target = rng.sample(entries, 2)
            self.damaged[target.index] = source
            self.damaged[source.index] = previous.get(source.index)
            self.stats["misdirected-writes"] += 1

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        super().apply_snapshot(snapshot)
        self._forget_below(snapshot.meta.index + 1)

    def compact(self, index: Index) -> None:
        super().compact(index)
        self._forget_below(index + 1)

    def _forget_below(self, first: int) -> None:
        for index in [i for i in self.sums if i < first]:
            del self.sums[index]
            self.damaged.pop(index, None)

    def _slots(self, low: int, high: int) -> list[Entry]:
        first, last = self.first_index(), self.last_index()
        low, high = max(low, first), min(high, last)
        if low > high:
            return []
        return super().entries(Index(low), Index(high + 1))

    # -- reads -------------------------------------------------------------------------------
    def entries(self, low: Index, high: Index, max_size_bytes: int | None = None) -> list[Entry]:
        found = super().entries(low, high, max_size_bytes)
        rng = self.rng
        if rng is not None and found and rng.random() < self.read_error_probability:
            self.stats["read-errors"] += 1
            raise DiskFault(self.node, f"read error (EIO) reading entries {low}..{high - 1}")
        corrupt_at = -1
        if rng is not None and found and rng.random() < self.corrupt_read_probability:
            corrupt_at = rng.randrange(len(found))
            self.stats["corrupt-reads"] += 1
        result: list[Entry] = []
        for position, entry in enumerate(found):
            # The body the slot really holds: the record written there, another record's
            # (a misdirected write), or nothing.
            body = self.damaged.get(entry.index, entry)
            if body is not None and position == corrupt_at:
                data = body.data
                flipped = bytes([data[0] ^ 0x01]) + data[1:] if data else b"\x01"
                body = Entry(term=body.term, index=body.index, type=body.type, data=flipped)
            if self.verify and (body is None or checksum(body.index, body.term, body.type,
                                                         body.data) != self.sums.get(entry.index)):
                raise DiskFault(self.node, f"entry {entry.index} fails its checksum "
                                           f"(a corrupted read or a misdirected write)")
            if body is None:
                body = Entry(term=Term(0), index=entry.index)  # zeroes (only unverified)
            result.append(Entry(term=body.term, index=entry.index, type=body.type,
                                data=body.data))
        return result


__all__ = ["DiskFault", "SimDisk", "checksum"]

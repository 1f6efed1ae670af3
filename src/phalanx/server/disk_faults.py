"""The store's own disk-fault injection, for the chaos lab (issue 16 §4, `disk-error`).

Where the kernel cannot inject disk errors (no device-mapper `error`/`flakey` targets, no
`make-it-fail` on the block device, as on the machines this project runs on: docs/
disk-faults.md), a node started with `enable_fault_injection` wraps each replica's durable
store in a `FaultyLogStore`. Armed through the admin API (`PUT /faults/disk`), the store's
writes (persist, snapshot, compaction) and/or reads (log entries, the snapshot file, the
scrub's read-back) raise the `StorageError` a real `OSError(EIO)` (or `ENOSPC`) on that call
would have become in `storage/`: the replica's reaction is the production one, only the cause
is simulated. `DELETE /faults/disk` disarms everything (the disk was replaced or space freed).

The chaos lab's "disk that lies at run time" (`POST /faults/lie`) is here too: it changes one
value of a replica's state in memory WITHOUT a log entry, as a read returning bytes other than
those written would; only the consistency checker can see it.

Rules of this file:
- Nothing here runs unless the node was started with `enable_fault_injection` (the admin API
  answers 403 otherwise; the stores are not even wrapped).
- A fault is per shard replica of THIS node; arming one never touches a file.
- The wrapper adds nothing on the healthy path but one dictionary lookup per call, and passes
  every optional method of the inner store through (`__getattr__`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phalanx.errors import ConfigError, StorageError
from phalanx.raft import ConfState, Entry, HardState, Index, Snapshot, SnapshotMeta, Term
from phalanx.storage.async_store import DurableLogStore

#: The errors the lab may inject, by name.
ERRORS = {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC}


@dataclass
class DiskFault:
    """One armed fault on one replica's store."""

    error: str = "EIO"
    reads: bool = True
    writes: bool = True
    #: Calls that failed because of it.
    hits: int = 0

    def to_json(self) -> dict[str, object]:
        return {"error": self.error, "reads": self.reads, "writes": self.writes,
                "hits": self.hits}


class DiskFaults:
    """The armed faults of this node: shard id -> DiskFault."""

    def __init__(self) -> None:
        self.armed: dict[int, DiskFault] = {}

    def arm(self, rules: dict[str, object]) -> dict[str, object]:
        """Arm a fault from its JSON form `{"shard": N, "error": "EIO"|"ENOSPC", "reads":
        bool, "writes": bool}`; ConfigError on a bad rule. Returns every armed fault."""
        shard = rules.get("shard")
        error = rules.get("error", "EIO")
        reads, writes = rules.get("reads", True), rules.get("writes", True)
        unknown = set(rules) - {"shard", "error", "reads", "writes"}
        if unknown:
            raise ConfigError(f"unknown disk fault field(s): {', '.join(sorted(unknown))}")
        if not isinstance(shard, int) or isinstance(shard, bool) or shard < 1:
            raise ConfigError("a disk fault needs \"shard\": a data shard id (1 or more)")
        if error not in ERRORS:
            raise ConfigError(f"\"error\" must be one of {', '.join(ERRORS)}, not {error!r}")
        if not isinstance(reads, bool) or not isinstance(writes, bool) or not (reads or writes):
            raise ConfigError("\"reads\" and \"writes\" are booleans, at least one true")
        self.armed[shard] = DiskFault(str(error), reads, writes)
        return self.to_json()

    def clear(self) -> None:
        self.armed.clear()

    def to_json(self) -> dict[str, object]:
        return {str(shard): fault.to_json() for shard, fault in sorted(self.armed.items())}

    def check(self, shard: int, directory: Path, action: str, *, write: bool) -> None:
        """Raise the armed error for this call, if any."""
        fault = self.armed.get(shard)
        if fault is None or not (fault.writes if write else fault.reads):
            return
        fault.hits += 1
        code = ERRORS[fault.error]
        hint = " (disk full)" if code == errno.ENOSPC else ""
        raise StorageError(f"store {directory}: cannot {action}: [Errno {code}] "
                           f"{os.strerror(code)}{hint} (injected: chaos lab disk fault)")


class FaultyLogStore:
    """A `DurableLogStore` that fails as armed in `DiskFaults` (see the module docstring)."""

    def __init__(self, inner: DurableLogStore, faults: DiskFaults, shard: int) -> None:
        self._inner = inner
        self._faults = faults
        self._shard = shard

    def __getattr__(self, name: str) -> Any:
        # Any other optional method of the inner store (AsyncLogStore looks them up with
        # getattr): passed through as it is.
        return getattr(self._inner, name)

    @property
    def inner(self) -> DurableLogStore:
        return self._inner

    @property
    def directory(self) -> Path:
        return self._inner.directory

    def _fail_if_armed(self, action: str, *, write: bool) -> None:
        self._faults.check(self._shard, self._inner.directory, action, write=write)

    # -- writes
    def persist(self, entries: Sequence[Entry] = (), hard_state: HardState | None = None,
                snapshot: Snapshot | None = None) -> None:
        self._fail_if_armed("write the log", write=True)
        self._inner.persist(entries, hard_state, snapshot)

    def create_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot:
        self._fail_if_armed("write a snapshot", write=True)
        return self._inner.create_snapshot(index, conf_state, data)

    def compact(self, index: Index) -> None:
        self._fail_if_armed("compact the log", write=True)
        self._inner.compact(index)

    def close(self) -> None:
        self._inner.close()  # releasing the files never fails on purpose

    # -- reads (from disk: entries past the cache, the snapshot file, the scrub)
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._inner.initial_state()

    def entries(self, low: Index, high: Index,
                max_size_bytes: int | None = None) -> list[Entry]:
        self._fail_if_armed("read the log", write=False)
        return self._inner.entries(low, high, max_size_bytes)

    def term(self, index: Index) -> Term:
        return self._inner.term(index)

    def first_index(self) -> Index:
        return self._inner.first_index()

    def last_index(self) -> Index:
        return self._inner.last_index()

    def snapshot(self) -> Snapshot:
        self._fail_if_armed("read the snapshot", write=False)
        return self._inner.snapshot()

    def snapshot_meta(self) -> SnapshotMeta:
        return self._inner.snapshot_meta()

    def confirm(self) -> bool:
        """The inner WAL's CONFIRM record (storage/wal.py); a write like any other."""
        confirm = getattr(self._inner, "confirm", None)
        if confirm is None:
            return False
        self._fail_if_armed("confirm the last record", write=True)
        return bool(confirm())

    def drop(self) -> None:
        """The replica is deleted: a node-log group forgets it (storage/nodelog.py)."""
        drop = getattr(self._inner, "drop", None)
        if drop is not None:
            drop()

    def scrub(self) -> int:
        self._fail_if_armed("read back the files", write=False)
        scrub = getattr(self._inner, "scrub", None)
        return int(scrub()) if scrub is not None else 0


__all__ = ["ERRORS", "DiskFault", "DiskFaults", "FaultyLogStore"]

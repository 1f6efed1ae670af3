"""The one mapping from a failed disk operation to a storage failure (issue 16 §4).

Every file a replica writes or reads (its log, its snapshot files, a snapshot being built
outside the store by `server/group_snapshots.py`, a snapshot being fetched from the leader by
`server/snapshot_transfer.py`) goes through `io_errors`, so a full disk (ENOSPC) or a failing
one (EIO) is the same `StorageError`, worded the same way, wherever it is met first: the
replica that met it stops, says why in `/status`, `/ready` and the metrics, and is rebuilt
(`server/consistency.py:disk_failed` reads the wording below; docs/disk-faults.md).

Rules of this file:
- An `OSError` becomes `StorageError("store <directory>: cannot <action>: <error>")`, with
  " (disk full)" appended for ENOSPC (and EDQUOT, a quota that is full is a full disk to the
  replica); the original error is its `__cause__`. Nothing else is caught.
- Pure: no I/O here, no asyncio (the callers run the I/O, on whatever thread they use).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from phalanx.errors import StorageError

#: The errors that mean "no space": a full file system, or a full quota.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def storage_error(where: str | os.PathLike[str], action: str, error: OSError) -> StorageError:
    """The `StorageError` for `error`, met while doing `action` in store `where`."""
    hint = " (disk full)" if error.errno in _NO_SPACE else ""
    return StorageError(f"store {where}: cannot {action}: {error}{hint}")


@contextlib.contextmanager
def io_errors(where: str | os.PathLike[str], action: str) -> Iterator[None]:
    """Raise any `OSError` of the block as the `StorageError` of `storage_error`."""
    try:
        yield
    except OSError as exc:
        raise storage_error(where, action, exc) from exc


__all__ = ["io_errors", "storage_error"]

"""Durable storage of Raft groups: the SQLite and the WAL log stores and their asyncio wrapper.

Rules of this package:
- Implementations here satisfy `phalanx.raft.storage.LogWriter` and pass the shared contract in
  `phalanx.testing.storage_contract`, like the in-memory reference `MemoryStorage`.
- One store per Raft group, each in its own directory (e.g. `data_dir/groups/<group_id>/`).
- `SqliteLogStore` and `WalLogStore` have the same public interface and semantics; a directory
  holds one or the other (a `WalLogStore` refuses a directory that holds a SQLite log).
"""

from phalanx.storage.async_store import AsyncLogStore
from phalanx.storage.sqlite import SqliteLogStore
from phalanx.storage.wal import WalLogStore

__all__ = ["AsyncLogStore", "SqliteLogStore", "WalLogStore"]

"""Durable storage of Raft groups: the SQLite log store and its asyncio wrapper.

Rules of this package:
- Implementations here satisfy `phalanx.raft.storage.LogWriter` and pass the shared contract in
  `phalanx.testing.storage_contract`, like the in-memory reference `MemoryStorage`.
- One store per Raft group, each in its own directory (e.g. `data_dir/groups/<group_id>/`).
"""

from phalanx.storage.async_store import AsyncLogStore
from phalanx.storage.sqlite import SqliteLogStore

__all__ = ["AsyncLogStore", "SqliteLogStore"]

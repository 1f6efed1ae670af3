"""Durable storage of Raft groups: the SQLite and the WAL log stores and their asyncio wrapper.

Rules of this package:
- Implementations here satisfy `phalanx.raft.storage.LogWriter` and pass the shared contract in
  `phalanx.testing.storage_contract`, like the in-memory reference `MemoryStorage`.
- One store per Raft group, each in its own directory (e.g. `data_dir/groups/<group_id>/`).
- `SqliteLogStore` and `WalLogStore` have the same public interface and semantics; a directory
  holds one or the other (a `WalLogStore` refuses a directory that holds a SQLite log).
"""

import os

from phalanx.errors import ConfigError
from phalanx.raft.types import ConfState
from phalanx.storage.async_store import AsyncLogStore, DurableLogStore
from phalanx.storage.sqlite import DATABASE_NAME, SqliteLogStore
from phalanx.storage.wal import WalLogStore

ENGINES = ("wal", "sqlite")


def open_log_store(directory: str | os.PathLike[str], conf_state: ConfState | None,
                   engine: str = "wal") -> SqliteLogStore | WalLogStore:
    """Open (or create) the log store of one group. A directory that already holds a store
    keeps its format whatever `engine` says (no silent migration, and never an empty log of
    the other kind next to a full one); a new directory gets `engine`."""
    if engine not in ENGINES:
        raise ConfigError(f"storage engine {engine!r} is not one of {', '.join(ENGINES)}")
    if os.path.exists(os.path.join(directory, DATABASE_NAME)):
        return SqliteLogStore(directory, conf_state)
    if os.path.isdir(directory) and any(name.endswith(".wal") for name in os.listdir(directory)):
        return WalLogStore(directory, conf_state)
    if engine == "sqlite":
        return SqliteLogStore(directory, conf_state)
    return WalLogStore(directory, conf_state)


__all__ = ["ENGINES", "AsyncLogStore", "DurableLogStore", "SqliteLogStore", "WalLogStore",
           "open_log_store"]

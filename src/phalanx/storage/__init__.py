"""Durable storage of Raft groups: the SQLite and the WAL log stores and their asyncio wrapper.

Rules of this package:
- Implementations here satisfy `phalanx.raft.storage.LogWriter` and pass the shared contract in
  `phalanx.testing.storage_contract`, like the in-memory reference `MemoryStorage`.
- One store per Raft group, each in its own directory (e.g. `data_dir/groups/<group_id>/`):
  with the "node" engine (the default) the directory holds the group's key and snapshot files
  and its log lives in the node's one log (`phalanx.storage.nodelog`, `data_dir/log/`); with
  "wal" or "sqlite" the directory holds the group's own log.
- `SqliteLogStore`, `WalLogStore` and `GroupStore` have the same public interface and
  semantics; a directory holds one kind only, and keeps it whatever the configured engine says
  (a node started on an old data directory reads both kinds: old groups keep their own logs,
  new groups go to the configured engine).
"""

import os
from collections.abc import Callable
from pathlib import Path

from phalanx.errors import ConfigError
from phalanx.raft.types import ConfState
from phalanx.storage.async_store import AsyncLogStore, DurableLogStore
from phalanx.storage.nodelog import GroupStore, NodeLog, holds_group
from phalanx.storage.sqlite import DATABASE_NAME, SqliteLogStore
from phalanx.storage.wal import WalLogStore

ENGINES = ("node", "wal", "sqlite")


def open_log_store(directory: str | os.PathLike[str], conf_state: ConfState | None,
                   engine: str = "wal", node_log: Callable[[], NodeLog] | None = None,
                   ) -> SqliteLogStore | WalLogStore | GroupStore:
    """Open (or create) the log store of one group. A directory that already holds a store
    keeps its format whatever `engine` says (no silent migration, and never an empty log of
    the other kind next to a full one); a new directory gets `engine`. `node_log` gives the
    node's one log (opened on first use) for the "node" engine."""
    if engine not in ENGINES:
        raise ConfigError(f"storage engine {engine!r} is not one of {', '.join(ENGINES)}")
    if os.path.exists(os.path.join(directory, DATABASE_NAME)):
        return SqliteLogStore(directory, conf_state)
    if os.path.isdir(directory) and any(name.endswith(".wal") for name in os.listdir(directory)):
        return WalLogStore(directory, conf_state)
    if engine == "node" or holds_group(Path(directory)):
        if node_log is None:
            raise ConfigError(f"store {directory} lives in a node log, and none was given")
        return node_log().open_group(directory, conf_state)
    if engine == "sqlite":
        return SqliteLogStore(directory, conf_state)
    return WalLogStore(directory, conf_state)


__all__ = ["ENGINES", "AsyncLogStore", "DurableLogStore", "GroupStore", "NodeLog",
           "SqliteLogStore", "WalLogStore", "open_log_store"]

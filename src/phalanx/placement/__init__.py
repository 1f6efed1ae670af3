"""phalanx.placement: where keys live and where replicas go.

Rules of this package:
- Pure and deterministic: standard library only (plus `phalanx.errors` and the pure
  `phalanx.kv` command table); never asyncio, socket, time, threading, sqlite3 or module-level
  random. The same inputs give the same outputs (and the same bytes) on every node.
- Files: `slots.py` (CRC16 hash slots, `{hashtag}`, the command table: key positions and
  `COMMAND INFO`), `map.py` (the cluster map, its ops, and the placement driver's state
  machine).
"""

from phalanx.placement.map import (
    NODE_STATES,
    ClusterMap,
    MapMachine,
    NodeInfo,
    OpError,
    ShardInfo,
    apply_op,
    encode_op,
)
from phalanx.placement.slots import (
    COMMAND_SPECS,
    SLOT_COUNT,
    CommandSpec,
    CrossSlotError,
    command_info,
    command_keys,
    command_slot,
    command_spec,
    crc16,
    key_slot,
)

__all__ = [
    "COMMAND_SPECS",
    "NODE_STATES",
    "SLOT_COUNT",
    "ClusterMap",
    "CommandSpec",
    "CrossSlotError",
    "MapMachine",
    "NodeInfo",
    "OpError",
    "ShardInfo",
    "apply_op",
    "command_info",
    "command_keys",
    "command_slot",
    "command_spec",
    "crc16",
    "encode_op",
    "key_slot",
]

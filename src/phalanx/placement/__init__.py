"""phalanx.placement: where keys live and where replicas go.

Rules of this package:
- Pure and deterministic: standard library only (plus `phalanx.errors` and the pure
  `phalanx.kv` command table); never asyncio, socket, time, threading, sqlite3 or module-level
  random. The same inputs give the same outputs (and the same bytes) on every node.
- Files: `slots.py` (CRC16 hash slots, `{hashtag}`, a request's keys and slot, with key
  positions from `phalanx.kv`'s command table), `map.py` (the cluster map, its ops, and the placement driver's state
  machine `MapMachine`), `planner.py` (initial placement, rule violations, the next ops toward
  health), `analysis.py` (single points of failure, availability in nines, cost).
- Layering inside the package: slots <- map <- planner <- analysis.
"""

from phalanx.placement.analysis import analyze, format_analysis, nines
from phalanx.placement.map import (
    NODE_STATES,
    SURVIVAL_GOALS,
    ClusterMap,
    MapMachine,
    NodeInfo,
    OpError,
    ShardInfo,
    apply_op,
    encode_op,
)
from phalanx.placement.planner import (
    drain_done,
    initial_map,
    meta_voter_target,
    plan,
    replication_factor_for,
    slot_ranges,
    violations,
)
from phalanx.placement.slots import (
    SLOT_COUNT,
    command_keys,
    command_slot,
    crc16,
    key_slot,
)

__all__ = [
    "NODE_STATES",
    "SLOT_COUNT",
    "SURVIVAL_GOALS",
    "ClusterMap",
    "MapMachine",
    "NodeInfo",
    "OpError",
    "ShardInfo",
    "analyze",
    "apply_op",
    "command_keys",
    "command_slot",
    "crc16",
    "drain_done",
    "encode_op",
    "format_analysis",
    "initial_map",
    "key_slot",
    "meta_voter_target",
    "nines",
    "plan",
    "replication_factor_for",
    "slot_ranges",
    "violations",
]

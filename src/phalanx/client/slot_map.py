"""The client's view of the cluster: which shard owns each slot, and which node leads it.

What this module owns:
- `SlotMap`: an immutable table slot -> shard, each shard with its members' RESP addresses
  ("host:port"), its leader (Redis Cluster's "master") first.
- Parsing `CLUSTER SHARDS` (preferred: it names shards, so MGET/MSET can be split per shard)
  and `CLUSTER SLOTS` (fallback: each slot range counts as its own shard, which never merges
  two shards into one request), in RESP2 or RESP3 shape, bytes or decoded strings.

Rules of this module:
- Pure: no IO. A map is replaced as a whole, never mutated, so threads read it without locks;
  `with_leader` returns a new map (a -MOVED reply's lesson).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from phalanx.placement import SLOT_COUNT


@dataclass(frozen=True, slots=True)
class ShardView:
    """One shard as the client sees it."""

    index: int
    """Position in the map (not the server's shard id, which CLUSTER SLOTS does not give)."""
    nodes: tuple[str, ...]
    """RESP addresses "host:port", the leader first when the map knew one."""
    has_leader: bool

    @property
    def leader(self) -> str | None:
        return self.nodes[0] if self.has_leader and self.nodes else None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _as_dict(value: object) -> dict[str, object]:
    """A RESP3 map, or the flat [key, value, ...] array RESP2 makes of it."""
    if isinstance(value, Mapping):
        return {_text(k): v for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = list(value)
        return {_text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
    return {}


def _address(host: object, port: object) -> str | None:
    host_text = _text(host)
    try:
        port_number = int(_text(port))
    except ValueError:
        return None
    if not host_text or host_text == "?" or port_number <= 0:
        return None
    return f"{host_text}:{port_number}"


class SlotMap:
    """slot -> shard; see the module docstring."""

    __slots__ = ("_slot_shard", "shards")

    def __init__(self, shards: Iterable[tuple[ShardView, Iterable[tuple[int, int]]]]) -> None:
        table: list[int] = [-1] * SLOT_COUNT
        views: list[ShardView] = []
        for view, ranges in shards:
            views.append(view)
            for start, end in ranges:
                for slot in range(max(0, start), min(SLOT_COUNT - 1, end) + 1):
                    table[slot] = view.index
        self.shards: tuple[ShardView, ...] = tuple(views)
        self._slot_shard = table

    @classmethod
    def empty(cls) -> SlotMap:
        return cls([])

    def shard_for_slot(self, slot: int) -> ShardView | None:
        index = self._slot_shard[slot]
        return self.shards[index] if index >= 0 else None

    def addresses(self) -> list[str]:
        """Every node address the map names, leaders first, without repeats."""
        found: dict[str, None] = {}
        for shard in self.shards:
            if shard.leader:
                found.setdefault(shard.leader, None)
        for shard in self.shards:
            for address in shard.nodes:
                found.setdefault(address, None)
        return list(found)

    def with_leader(self, slot: int, address: str) -> SlotMap:
        """A copy where the shard of `slot` is led by `address` (a -MOVED reply said so).
        A slot the map did not know gets a shard of its own."""
        current = self.shard_for_slot(slot)
        new = SlotMap.__new__(SlotMap)
        table = list(self._slot_shard)
        views = list(self.shards)
        if current is None:
            views.append(ShardView(len(views), (address,), True))
            table[slot] = len(views) - 1
        else:
            nodes = (address, *[n for n in current.nodes if n != address])
            views[current.index] = ShardView(current.index, nodes, True)
        new.shards = tuple(views)
        new._slot_shard = table
        return new

    # ---- parsing --------------------------------------------------------------------------

    @classmethod
    def from_cluster_shards(cls, reply: object) -> SlotMap:
        """Parse `CLUSTER SHARDS` (Redis 7): [{slots: [s, e, ...], nodes: [{ip, port, role,
        health, ...}, ...]}, ...]. Failed nodes are kept, after the healthy ones."""
        parsed: list[tuple[ShardView, list[tuple[int, int]]]] = []
        for item in reply if isinstance(reply, list | tuple) else []:
            shard = _as_dict(item)
            raw_slots = shard.get("slots")
            slots = [int(_text(s)) for s in raw_slots] if isinstance(raw_slots, list) else []
            ranges = [(slots[i], slots[i + 1]) for i in range(0, len(slots) - 1, 2)]
            leader: str | None = None
            healthy: list[str] = []
            failed: list[str] = []
            raw_nodes = shard.get("nodes")
            for raw in raw_nodes if isinstance(raw_nodes, list) else []:
                node = _as_dict(raw)
                address = _address(node.get("endpoint") or node.get("ip"), node.get("port"))
                if address is None:
                    continue
                if _text(node.get("role", "")) == "master" and leader is None:
                    leader = address
                elif _text(node.get("health", "online")) == "online":
                    healthy.append(address)
                else:
                    failed.append(address)
            nodes = ([leader] if leader else []) + healthy + failed
            parsed.append((ShardView(len(parsed), tuple(nodes), leader is not None), ranges))
        return cls(parsed)

    @classmethod
    def from_cluster_slots(cls, reply: object) -> SlotMap:
        """Parse `CLUSTER SLOTS`: [[start, end, [host, port, id], ...], ...]; the first node of
        a range is its leader. Each range is its own shard (ranges carry no shard id)."""
        parsed: list[tuple[ShardView, list[tuple[int, int]]]] = []
        for item in reply if isinstance(reply, list | tuple) else []:
            if not isinstance(item, list | tuple) or len(item) < 2:
                continue
            nodes: list[str] = []
            for raw in item[2:]:
                if isinstance(raw, list | tuple) and len(raw) >= 2:
                    address = _address(raw[0], raw[1])
                    if address is not None:
                        nodes.append(address)
            view = ShardView(len(parsed), tuple(nodes), bool(nodes))
            parsed.append((view, [(int(_text(item[0])), int(_text(item[1])))]))
        return cls(parsed)

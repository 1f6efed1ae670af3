"""Cluster commands: CLUSTER ..., ASKING, READONLY/READWRITE, and the internal PHALANX.META /
PHALANX.JOIN the control plane sends between nodes.

Rules of this file:
- CLUSTER describes the shard map as Redis Cluster does, so cluster-aware clients (redis-py
  RedisCluster) work unchanged: a shard's "master" is its Raft leader, its "replicas" the
  other voters.
- PHALANX.META changes the cluster map: it must carry the signature of the cluster's internal
  key (the secret, else the map's token: server/internal_auth.py). PHALANX.JOIN and
  PHALANX.SNAPSHOT (a chunk of a snapshot file, for a follower's fetch:
  server/snapshot_transfer.py) need the secret's only when there is one: a joining node has
  no token yet. A join reply never carries the token. PHALANX.SHARD (one shard's share of a
  fan-out) lives with the fan-out (`fanout.py`).
- A handler takes (session, arguments) and returns a reply value, or raises `CommandError`.
See docs/architecture.md.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from typing import TYPE_CHECKING

from phalanx.errors import CommandError, TryAgain
from phalanx.placement import SLOT_COUNT, ShardInfo, key_slot
from phalanx.resp import SimpleString
from phalanx.server.config import parse_address
from phalanx.server.internal_auth import check, verify_key
from phalanx.server.snapshot_transfer import NoSuchSnapshot, parse_chunk_request

if TYPE_CHECKING:
    from phalanx.server.front.replicas import ReplicaRegistry
    from phalanx.server.front.session import ClientState


class ClusterCommands:
    """The cluster command group."""

    def __init__(self, replicas: ReplicaRegistry) -> None:
        self.replicas = replicas
        self.config = replicas.config

    # -- CLUSTER ---------------------------------------------------------------------------
    def cluster(self, state: ClientState, arguments: list[bytes]) -> object:
        """CLUSTER SLOTS|SHARDS|NODES|INFO|MYID|KEYSLOT: the shard map, as Redis Cluster
        describes it."""
        if len(arguments) < 2:
            raise CommandError("ERR wrong number of arguments for 'cluster' command")
        sub = arguments[1].upper()
        replicas = self.replicas
        cmap = replicas.cluster_map
        if sub == b"KEYSLOT" and len(arguments) == 3:
            return key_slot(arguments[2])
        if sub == b"MYID":
            return self.config.id.encode()
        if sub == b"SLOTS":
            result: list[object] = []
            for shard in sorted(cmap.shards.values(), key=lambda s: s.id):
                members = self._shard_members(shard)
                for start, end in shard.slots:
                    result.append([start, end, *[self._node_entry(n) for n in members]])
            return result
        if sub == b"SHARDS":
            shards: list[object] = []
            for shard in sorted(cmap.shards.values(), key=lambda s: s.id):
                leader = replicas.shard_leader(shard)
                nodes: list[object] = []
                for member in self._shard_members(shard):
                    address = replicas.resp_address(member) or ("?", 0)
                    info = cmap.nodes.get(member)
                    nodes.append({
                        b"id": member.encode(), b"port": address[1],
                        b"ip": address[0].encode(), b"endpoint": address[0].encode(),
                        b"role": b"master" if member == leader else b"replica",
                        b"replication-offset": 0,
                        b"health": b"online" if info is None or info.state == "alive"
                        else b"fail"})
                slots: list[object] = []
                for start, end in shard.slots:
                    slots += [start, end]
                shards.append({b"slots": slots, b"nodes": nodes})
            return shards
        if sub == b"NODES":
            return self._cluster_nodes().encode()
        if sub == b"INFO":
            leaderless = [s.id for s in cmap.shards.values() if not replicas.shard_leader(s)]
            served = sum(s.slot_count() for s in cmap.shards.values()
                         if replicas.shard_leader(s))
            lines = [f"cluster_state:{'fail' if leaderless else 'ok'}",
                     f"cluster_slots_assigned:{sum(s.slot_count() for s in cmap.shards.values())}",
                     f"cluster_slots_ok:{served}", "cluster_slots_pfail:0",
                     f"cluster_slots_fail:{SLOT_COUNT - served}",
                     f"cluster_known_nodes:{len(cmap.nodes)}",
                     f"cluster_size:{len(cmap.shards)}",
                     f"cluster_current_epoch:{cmap.version}",
                     f"cluster_my_epoch:{cmap.version}",
                     f"phalanx_map_version:{cmap.version}",
                     f"phalanx_survival_goal:{cmap.survival_goal}",
                     f"phalanx_shards_without_leader:{','.join(map(str, leaderless))}"]
            return ("\r\n".join(lines) + "\r\n").encode()
        raise CommandError(f"ERR unknown subcommand or wrong number of arguments for "
                           f"'{arguments[1].decode(errors='replace')}'. Try CLUSTER HELP.")

    def _shard_members(self, shard: ShardInfo) -> list[str]:
        """A shard's leader first, then its other voters (or desired replicas)."""
        leader = self.replicas.shard_leader(shard)
        members = [leader] if leader else []
        members += [n for n in (shard.voters or shard.replicas) if n not in members]
        return members

    def _node_entry(self, node_id: str) -> list[object]:
        host, port = self.replicas.resp_address(node_id) or ("?", 0)
        return [host.encode(), port, node_id.encode()]

    def _cluster_nodes(self) -> str:
        replicas = self.replicas
        cmap = replicas.cluster_map
        led: dict[str, list[tuple[int, int]]] = {}
        follows: dict[str, str] = {}
        for shard in cmap.shards.values():
            leader = replicas.shard_leader(shard)
            if leader:
                led.setdefault(leader, []).extend(shard.slots)
                for member in shard.voters or shard.replicas:
                    if member != leader:
                        follows.setdefault(member, leader)
        lines = []
        for info in sorted(cmap.nodes.values(), key=lambda n: n.id):
            host, port = replicas.resp_address(info.id) or ("?", 0)
            _, peer_port = parse_address(info.peer, "peer")
            flags = ["myself"] if info.id == self.config.id else []
            if info.id in led:
                flags.append("master")
                master = "-"
            else:
                flags.append("slave")
                master = follows.get(info.id, "-")
            if info.state == "dead":
                flags.append("fail")
            ranges = sorted(led.get(info.id, []))
            slots = " ".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)
            link = "disconnected" if info.state == "dead" else "connected"
            lines.append(f"{info.id} {host}:{port}@{peer_port} {','.join(flags)} {master} 0 0 "
                         f"{cmap.version} {link} {slots}".rstrip())
        return "\n".join(lines) + "\n"

    # -- connection modes ------------------------------------------------------------------
    def asking(self, state: ClientState, arguments: list[bytes]) -> object:
        return SimpleString("OK")

    def readonly(self, state: ClientState, arguments: list[bytes]) -> object:
        state.readonly = True
        return SimpleString("OK")

    def readwrite(self, state: ClientState, arguments: list[bytes]) -> object:
        state.readonly = False
        return SimpleString("OK")

    # -- internal: the control plane -------------------------------------------------------
    def _check_internal(self, arguments: list[bytes], key: str) -> bytes:
        """The payload of PHALANX.META / PHALANX.JOIN / PHALANX.SNAPSHOT, its signature
        checked under `key` (internal_auth.py; no client without it can change the map)."""
        if len(arguments) not in (2, 3):
            raise CommandError(f"ERR wrong number of arguments for "
                               f"'{arguments[0].decode(errors='replace').lower()}' command")
        payload = arguments[1]
        check(key, arguments[2] if len(arguments) == 3 else b"", payload)
        return payload

    @staticmethod
    def _parse_op(payload: bytes) -> dict[str, object]:
        try:
            op = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CommandError(f"ERR map op is not JSON: {error}") from error
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise CommandError('ERR map op must be a JSON object with an "op" field')
        return op

    async def meta(self, state: ClientState, arguments: list[bytes]) -> object:
        """PHALANX.META <op-json> [signature]: commit a cluster-map op (internal)."""
        op = self._parse_op(self._check_internal(
            arguments, verify_key(self.config, self.replicas.cluster_map)))
        if state.forwarded and not self.replicas.meta.is_leader():
            raise TryAgain("this node does not lead the placement driver")
        reply = await self.replicas.propose_meta(op)
        message = getattr(reply, "message", None)
        if message is not None:
            raise CommandError(_error_text(message))
        return SimpleString("OK")

    async def join(self, state: ClientState, arguments: list[bytes]) -> object:
        """PHALANX.JOIN <add_node-op-json> [signature]: a new node asks to join; the reply is
        the cluster map (so it learns every node's address)."""
        # Signed under the cluster secret only: a joining node has no map yet, so not the
        # token either (docs/security.md: without a secret, any client may add a node).
        op = self._parse_op(self._check_internal(arguments, self.config.cluster_secret))
        if op.get("op") != "add_node":
            raise CommandError("ERR PHALANX.JOIN takes an add_node op")
        reply = await self.replicas.propose_meta(op)
        message = getattr(reply, "message", None)
        if message is not None:
            raise CommandError(_error_text(message))
        # The map without its internal token: the reply goes to whoever asked.
        return replace(self.replicas.cluster_map, internal_token="").encode()

    async def snapshot_chunk(self, state: ClientState, arguments: list[bytes]) -> object:
        """PHALANX.SNAPSHOT <group term index offset length> [signature]: a chunk of one of
        this node's snapshot files, as `[file size, crc32, bytes]` (internal: a follower
        pulls a snapshot, server/snapshot_transfer.py)."""
        try:
            # The cluster secret only: a joining node fetches group 0's snapshot (the map,
            # and the token with it) before it has the token.
            request = parse_chunk_request(self._check_internal(arguments,
                                                               self.config.cluster_secret))
        except ValueError as error:
            raise CommandError(f"ERR {error}") from error
        try:
            size, chunk = await self.replicas.snapshot_chunk(*request)
        except NoSuchSnapshot as error:
            raise CommandError(f"ERR {error}") from error
        return [size, zlib.crc32(chunk), chunk]


def _error_text(message: str) -> str:
    """A map op's refusal as a reply: the map's `OpError` messages already carry their
    error code ("ERR set_replicas: stale: ..."), so it is not added twice."""
    return message if message.startswith("ERR ") else f"ERR {message}"

"""The node's client of the control plane: commit a map op through the placement driver's
leader, announce a joining node, commit an internal command in another shard's log.
See docs/architecture.md ("the placement driver and the controllers").

Every call goes to the right leader directly: through the local replica when this node leads
the group, else over a peer link (`LeaderLink`) to the leader's RESP port, with the internal
commands PHALANX.META, PHALANX.JOIN and PHALANX.SHARD, signed with the cluster's internal key
(server/internal_auth.py; PHALANX.JOIN with the cluster secret only).

Rules of this file:
- The control plane never rides on the RESP front end object: the links are the client's own,
  and their TLS context is passed in explicitly (None: plaintext).
- A failed call raises (NotLeader, PhalanxError, OSError, TimeoutError); `propose_quietly` is
  for the controllers' fire-and-forget reports, which retry on their next round.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time

from phalanx.errors import ConfigError, NotLeader, PhalanxError
from phalanx.kv import Command, encode_command
from phalanx.placement import ClusterMap, NodeInfo, encode_op
from phalanx.resp import ErrorReply
from phalanx.server.config import NodeConfig, parse_address
from phalanx.server.internal_auth import internal_key, sign
from phalanx.server.peer_link import LeaderLink
from phalanx.server.replicas import Replicas
from phalanx.transport.tcp import TcpTransport

logger = logging.getLogger(__name__)


def describe_reply(reply: object) -> str:
    """A reply (simple string, error, or other) as one line of text for logs and answers."""
    if isinstance(reply, str):
        return reply
    if isinstance(reply, bytes):  # a shard machine's simple reply (PHALANX.DIGEST: b"OK")
        return reply.decode("utf-8", "replace")
    text = getattr(reply, "text", None)
    if isinstance(text, str):
        return text
    message = getattr(reply, "message", None)
    return str(message) if message is not None else repr(reply)


class MetaClient:
    """Commits map ops and internal shard commands through the right leader."""

    def __init__(self, replicas: Replicas, config: NodeConfig, transport: TcpTransport,
                 tls: ssl.SSLContext | None) -> None:
        self.replicas = replicas
        self.config = config
        self.transport = transport
        self.tls = tls
        self.node_id = config.id
        #: The members a join reply listed (id -> NodeInfo): a joining node's map arrives
        #: with group 0's snapshot, which it must first fetch from a member whose address
        #: only this reply tells it (`resp_address`).
        self.joined_nodes: dict[str, NodeInfo] = {}
        #: The link to the driver's current leader (reused while it leads).
        self.meta_link: LeaderLink | None = None

    def _link(self, leader_id: str, host: str, port: int, timeout: float) -> LeaderLink:
        return LeaderLink(leader_id, host, port, timeout, self.config.requirepass, self.tls)

    def _signed(self, arguments: list[bytes], payload: bytes, key: str) -> list[bytes]:
        if key:
            arguments.append(sign(key, payload))
        return arguments

    def _internal_key(self) -> str:
        """The key internal commands are signed with (server/internal_auth.py)."""
        return internal_key(self.config, self.replicas.cluster_map)

    def close(self) -> None:
        """Close the driver link (the node is stopping)."""
        if self.meta_link is not None:
            self.meta_link.close()

    async def propose_meta(self, op: dict[str, object]) -> object:
        """Commit one map op through the driver's leader (here, or over RESP to it)."""
        timeout = self.config.request_timeout_ms / 1000
        meta = self.replicas.meta
        if meta.is_leader():
            return await asyncio.wait_for(meta.propose_data(encode_op(op)), timeout)
        leader = meta.leader
        if not leader:
            raise NotLeader(None, "the placement driver has no leader right now")
        address = self.replicas.resp_address(leader)
        if address is None:
            raise NotLeader(None, f"the driver's leader {leader} has no known address")
        link = self.meta_link
        if link is None or link.leader_id != leader:
            if link is not None:
                link.close()
            link = self._link(leader, address[0], address[1], timeout)
            self.meta_link = link
        payload = json.dumps(op, separators=(",", ":"), sort_keys=True).encode()
        arguments = self._signed([b"PHALANX.META", payload], payload, self._internal_key())
        try:
            reply = await link.call(arguments)
        except (OSError, TimeoutError, PhalanxError):
            link.close()
            self.meta_link = None
            raise
        if isinstance(reply, ErrorReply):
            raise PhalanxError(f"driver refused {op.get('op')}: {reply.text}")
        return reply

    async def propose_quietly(self, op: dict[str, object]) -> None:
        """`propose_meta`, logging a failure instead of raising (the caller retries later). A
        compare-and-set refused as stale (placement/map.py, `expect_replicas`: this node's map
        is behind) is logged at info, the rest at debug."""
        try:
            text = describe_reply(await self.propose_meta(op))
        except (PhalanxError, OSError, TimeoutError) as error:
            text = str(error)
        if text == "OK":
            return
        level = logging.INFO if "stale" in text else logging.DEBUG
        logger.log(level, "%s: map op %s refused or failed: %s", self.node_id, op.get("op"),
                   text)

    async def set_node_state(self, node_id: str, state: str) -> dict[str, object]:
        """Drain (`draining`), decommission or re-admit (`alive`) a node via the driver."""
        if node_id not in self.replicas.cluster_map.nodes:
            raise ConfigError(f"unknown node {node_id!r}")
        op: dict[str, object] = {"op": "set_node_state", "node": node_id, "state": state}
        if state == "alive":
            op["readmit"] = True  # an operator's readmit also clears its failed-disk marks
        reply = await self.propose_meta(op)
        return {"node": node_id, "state": state, "reply": describe_reply(reply)}

    async def replace_node(self, node_id: str, incarnation: str) -> dict[str, object]:
        """Start replacing `node_id` by a new incarnation (`phalanx replace`): the map records
        it in `replacing`; the controllers and the driver do the rest (`server/identity.py`)."""
        info = self.replicas.cluster_map.nodes.get(node_id)
        if info is None:
            raise ConfigError(f"unknown node {node_id!r}")
        if info.incarnation == incarnation:
            raise ConfigError(f"{node_id} already is incarnation {incarnation}: nothing to "
                              f"replace")
        reply = await self.propose_meta({"op": "replace_node", "node": node_id,
                                         "incarnation": incarnation})
        text = describe_reply(reply)
        if text != "OK":
            raise ConfigError(f"the driver refused the replacement: {text}")
        return {"node": node_id, "incarnation": incarnation, "old_incarnation":
                info.incarnation, "reply": text}

    async def join(self) -> None:
        """A joining node announces itself through any member until the map lists it."""
        me = self.config.me
        info = NodeInfo(id=me.id, peer=me.peer, resp=me.resp, admin=me.admin, zone=me.zone,
                        region=me.region, host=me.host)
        payload = json.dumps({"op": "add_node", "node": info.to_json()},
                             separators=(",", ":"), sort_keys=True).encode()
        host, port = parse_address(self.config.join, "join")
        delay = 0.2
        if self.replicas.removed_from_cluster():
            logger.warning("%s was decommissioned: not joining again (delete its data directory "
                           "to join as a new node)", self.node_id)
            return
        while True:
            listed = self.replicas.cluster_map.nodes.get(self.node_id)
            if listed is not None and listed.state == "alive" and listed.peer == me.peer:
                return
            link = self._link("seed", host, port, self.config.request_timeout_ms / 1000)
            # The secret's signature only: a joining node has no token (internal_auth.py).
            arguments = self._signed([b"PHALANX.JOIN", payload], payload,
                                     self.config.cluster_secret)
            try:
                reply = await link.call(arguments)
                if isinstance(reply, bytes):
                    known = ClusterMap.decode(reply)
                    self.joined_nodes.update(known.nodes)
                    for node in known.nodes.values():
                        if node.id != self.node_id:
                            peer_host, peer_port = parse_address(node.peer, "peer")
                            self.transport.set_peer(node.id, peer_host, peer_port)
                    logger.info("%s joined through %s (map version %s)", self.node_id,
                                self.config.join, known.version)
                elif isinstance(reply, ErrorReply):
                    logger.warning("%s: join through %s refused: %s", self.node_id,
                                   self.config.join, reply.text)
            except (OSError, TimeoutError, PhalanxError) as error:
                logger.info("%s: join through %s failed (%s); retrying", self.node_id,
                            self.config.join, error)
            finally:
                link.close()
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)

    def resp_address(self, node_id: str) -> tuple[str, int] | None:
        """(host, port) of a node's RESP listener: from the map, else from the join reply (a
        joining node fetches group 0's snapshot, and with it the map, from a member its own
        empty map does not list yet), or None."""
        address = self.replicas.resp_address(node_id)
        info = self.joined_nodes.get(node_id) if address is None else None
        if info is not None and info.resp:
            address = parse_address(info.resp, f"nodes.{node_id}.resp")
        return address

    async def propose_on_shard(self, shard: int, name: bytes, args: tuple[bytes, ...]) -> None:
        """Commit one internal command in `shard`'s log: here if we lead it, else through its
        leader's RESP port (PHALANX.SHARD)."""
        timeout = self.config.request_timeout_ms / 1000
        group = self.replicas.local_group(shard)
        if group is not None and group.is_leader():
            reply = await asyncio.wait_for(group.propose_data(encode_command(Command(
                name=name, args=args, now_ms=int(time.time() * 1000)))), timeout)
        else:
            leader = group.leader if group is not None else \
                self.replicas.cluster_map.shards[shard].leader
            address = self.replicas.resp_address(leader) if leader else None
            if address is None:
                raise NotLeader(None, f"shard {shard} has no known leader right now")
            link = self._link(leader, address[0], address[1], timeout)
            shard_text = str(shard).encode()
            signed = args
            key = self._internal_key()
            if key:
                signed = (*args, sign(key, b"\0".join([shard_text, name, *args])))
            try:
                reply = await link.call([b"PHALANX.SHARD", shard_text, name, *signed])
            finally:
                link.close()
        text = describe_reply(reply)
        if text != "OK":
            raise PhalanxError(f"shard {shard} refused {name.decode()}: {text}")

"""The cluster map: nodes, shards and their placement, as the placement driver replicates it.

What this module owns:
- `NodeInfo`, `ShardInfo`, `ClusterMap`: immutable values with a canonical JSON form
  (`ClusterMap.encode()` gives byte-identical output on every replica).
- `apply_op`: the pure transition function of the map, one JSON op at a time.
- `MapMachine`: the placement driver's replicated state machine around `apply_op` (the same
  duck-typed interface as `phalanx.kv.KVStateMachine`: apply / snapshot / restore / key_count).

Rules of this module:
- Pure and deterministic: standard library only; the same ops give the same map and the same
  bytes everywhere.
- A refused or malformed op never raises out of `apply_op` / `MapMachine.apply`: it answers an
  `OpError` and leaves the map unchanged, so a bad entry can never wedge the replicated log.
- The version grows by exactly one per op that changed something; an op that changes nothing
  returns the very same map object.
- Two kinds of shard fields: DESIRED placement (`replicas`, `preferred_leader`), written by the
  driver's planner, and REPORTED state (`leader`, `term`, `voters`, `learners`), written by each
  shard's leader through `report_shard`. A report from an older term than recorded is ignored.
- Bad input from outside (`from_json`, `decode`) raises `ConfigError` naming the field.
- Users (`UserInfo`, ops `set_user` / `del_user`): the RESP users created at run time by
  ACL SETUSER, replicated so every node agrees. Only SHA-256 digests of passwords are stored
  (hex, as Redis stores them). `set_user` replaces the whole record (the front end computes it
  from the rules: last writer wins); `del_user` removes names (absent ones are ignored). A map
  without users encodes exactly as before (no "users" field), so old maps load unchanged.
- Node identity (`NodeInfo.incarnation`, `NodeInfo.replacing`; ops `set_incarnation`,
  `replace_node`, `finish_replace`): the random id a node's data directory was created with,
  recorded the first time the driver sees it; peers refuse any other incarnation under that
  id (a wiped disk: Raft's safety rests on a node never forgetting its vote and log, §5.2,
  §5.4). `phalanx replace` records the new incarnation in `replacing`: the controllers remove
  the node from every group as its old self, then the driver's `finish_replace` makes the new
  incarnation THE incarnation, and the node is added back as a new member (learner, snapshot,
  voter). Empty fields are not encoded, so old maps load and encode unchanged.
- Hosts (`NodeInfo.host`, docs/hosts.md): the machine a node runs on, a failure domain
  between node and zone. A host lies inside its zone: equal host names in two zones are two
  hosts. "" (the default) makes the node a host of its own, and is not encoded, so old maps
  load and encode unchanged.
- `set_replicas` with `expect_replicas` is a compare-and-set: refused ("stale") unless the
  shard's desired replicas are still exactly that list. Every caller that computes the new
  list from its own copy of the map sends it; the absolute form (no `expect_replicas`, what
  nodes before session 9 send) is still accepted.
- Damaged replicas (`ShardInfo.rebuilding`; ops `rebuild_replica`, `finish_rebuild`): a node
  whose replica of a shard is damaged (corrupt disk, divergence) asks for it to be rebuilt;
  while listed there, the shard's leader removes that replica from the configuration (the
  node stays one of the desired `replicas`), the node deletes its data, and once the removal
  is done `finish_rebuild` lets it come back as a new member (learner, snapshot, voter): a
  replica never rejoins having forgotten what it acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from itertools import pairwise
from types import MappingProxyType
from typing import Any

from phalanx.errors import ConfigError, Corrupt
from phalanx.placement.slots import SLOT_COUNT

NODE_STATES = ("alive", "dead", "draining", "decommissioned")
"""alive: serving and eligible for new replicas; dead: declared failed by the driver; draining:
serving, but its replicas are being moved away; decommissioned: drained and out of service."""

SURVIVAL_GOALS = ("zone", "region")

USER_PERMISSIONS = ("all", "read")
"""A user's permissions: every command, or no data write / control-plane command."""


# ---------------------------------------------------------------------------- JSON helpers


def _get(raw: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in raw:
        raise ConfigError(f"{where}: missing field '{name}'")
    return raw[name]


def _mapping(raw: object, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    return raw


def _string(raw: Mapping[str, Any], name: str, where: str, default: str | None = None,
            nonempty: bool = False) -> str:
    value = _get(raw, name, where) if default is None or name in raw else default
    if not isinstance(value, str):
        raise ConfigError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    if nonempty and not value:
        raise ConfigError(f"{where}: field '{name}' must not be empty")
    return value


def _integer(raw: Mapping[str, Any], name: str, where: str, minimum: int,
             default: int | None = None) -> int:
    value = _get(raw, name, where) if default is None or name in raw else default
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}: field '{name}' must be an integer, got "
                          f"{type(value).__name__}")
    if value < minimum:
        raise ConfigError(f"{where}: field '{name}' must be at least {minimum}, got {value}")
    return value


def _strings(raw: Mapping[str, Any], name: str, where: str, required: bool = True,
             unique: bool = True) -> tuple[str, ...]:
    value = _get(raw, name, where) if required or name in raw else []
    if not isinstance(value, list | tuple) or not all(
            isinstance(item, str) and item for item in value):
        raise ConfigError(f"{where}: field '{name}' must be a list of non-empty strings")
    if unique and len(set(value)) != len(value):
        raise ConfigError(f"{where}: field '{name}' lists an id twice: {list(value)}")
    return tuple(value)


#: An internal token: 64 lowercase hex digits (32 random bytes).
_TOKEN_LENGTH = 64


def _token(raw: Mapping[str, Any], name: str, where: str) -> str:
    value = _string(raw, name, where)
    if len(value) != _TOKEN_LENGTH or value.strip("0123456789abcdef"):
        raise ConfigError(f"{where}: field '{name}' must be {_TOKEN_LENGTH} lowercase hex digits")
    return value


def _objects(raw: Mapping[str, Any], name: str, where: str) -> list[Mapping[str, Any]]:
    value = _get(raw, name, where)
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: field '{name}' must be a list")
    return [_mapping(item, f"{where}.{name}[{i}]") for i, item in enumerate(value)]


# ---------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node of the cluster: its addresses, failure domains and state (see NODE_STATES)."""

    id: str
    peer: str
    """host:port of the peer (Raft) listener."""
    resp: str
    """host:port of the RESP listener, handed to clients in MOVED and CLUSTER SLOTS."""
    admin: str = ""
    zone: str = "zone-1"
    region: str = "region-1"
    state: str = "alive"
    incarnation: str = ""
    """The incarnation (data directory) peers accept for this node; "" = not recorded yet."""
    replacing: str = ""
    """A new incarnation waiting to replace the old one (`phalanx replace`); "" = none."""
    host: str = ""
    """The machine the node runs on (a failure domain between node and zone, docs/hosts.md);
    "" = a host of its own (nodes of one machine must say so: `host = "..."`)."""

    @property
    def domain(self) -> tuple[str, str]:
        """The node's zone as a globally unique pair (region, zone)."""
        return (self.region, self.zone)

    @property
    def host_domain(self) -> tuple[str, str, str, str]:
        """The node's host as a globally unique key (region, zone, host, ""); a node without
        a host is a host of its own: (region, zone, "", node id)."""
        return (self.region, self.zone, self.host, "") if self.host else \
            (self.region, self.zone, "", self.id)

    def to_json(self) -> dict[str, object]:
        raw: dict[str, object] = {"id": self.id, "peer": self.peer, "resp": self.resp,
                                  "admin": self.admin, "zone": self.zone,
                                  "region": self.region, "state": self.state}
        # Absent when empty: a map without incarnations encodes exactly as before.
        if self.incarnation:
            raw["incarnation"] = self.incarnation
        if self.replacing:
            raw["replacing"] = self.replacing
        if self.host:
            raw["host"] = self.host
        return raw

    @classmethod
    def from_json(cls, raw: object) -> NodeInfo:
        """Validate and build; ConfigError names the bad field."""
        data = _mapping(raw, "node")
        node_id = _string(data, "id", "node", nonempty=True)
        where = f"node {node_id}"
        state = _string(data, "state", where, default="alive")
        if state not in NODE_STATES:
            raise ConfigError(f"{where}: field 'state' must be one of {', '.join(NODE_STATES)}, "
                              f"got {state!r}")
        return cls(
            id=node_id,
            peer=_string(data, "peer", where),
            resp=_string(data, "resp", where),
            admin=_string(data, "admin", where, default=""),
            zone=_string(data, "zone", where, default="zone-1", nonempty=True),
            region=_string(data, "region", where, default="region-1", nonempty=True),
            state=state,
            incarnation=_incarnation(data, "incarnation", where),
            replacing=_incarnation(data, "replacing", where),
            host=_host(data, where),
        )


#: Longest host name (a DNS name is at most 253 characters).
MAX_HOST_CHARS = 253


def _host(raw: Mapping[str, Any], where: str) -> str:
    host = _string(raw, "host", where, default="")
    if len(host) > MAX_HOST_CHARS or any(ch.isspace() or not ch.isprintable() for ch in host):
        raise ConfigError(f"{where}: field 'host' must be at most {MAX_HOST_CHARS} printable "
                          f"characters without spaces, got {host[:40]!r}")
    return host


#: Longest incarnation id (ours are 32 hex digits; the peer handshake allows 64).
MAX_INCARNATION_CHARS = 64


def _incarnation(raw: Mapping[str, Any], name: str, where: str, required: bool = False) -> str:
    value = _string(raw, name, where, default=None if required else "", nonempty=required)
    if len(value) > MAX_INCARNATION_CHARS or not all(c.isalnum() or c in "-_" for c in value):
        raise ConfigError(f"{where}: field '{name}' must be at most {MAX_INCARNATION_CHARS} "
                          f"letters, digits, '-' or '_', got {value!r}")
    return value


def _slot_ranges(value: object, where: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: field 'slots' must be a list of [first, last] pairs")
    ranges = []
    for item in value:
        if (not isinstance(item, list | tuple) or len(item) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in item)):
            raise ConfigError(f"{where}: field 'slots' must be a list of [first, last] pairs, "
                              f"got {item!r}")
        first, last = item
        if not 0 <= first <= last < SLOT_COUNT:
            raise ConfigError(f"{where}: slot range [{first}, {last}] is outside "
                              f"0..{SLOT_COUNT - 1} or reversed")
        ranges.append((first, last))
    ranges.sort()
    for (_, last), (first, _) in pairwise(ranges):
        if first <= last:
            raise ConfigError(f"{where}: field 'slots' has overlapping ranges")
    return tuple(ranges)


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard: its slots, its desired replicas, and what its leader last reported."""

    id: int
    """The Raft group id of the shard, >= 1 (group 0 is the placement driver)."""
    slots: tuple[tuple[int, int], ...]
    """Inclusive slot ranges, sorted, non-overlapping."""
    replicas: tuple[str, ...]
    """DESIRED members (node ids), set by the driver; order is meaningful only to the planner."""
    preferred_leader: str = ""
    leader: str = ""
    """REPORTED by the shard's leader ("" = unknown)."""
    term: int = 0
    """REPORTED: the term of the last accepted report."""
    voters: tuple[str, ...] = ()
    """REPORTED: the voters of the shard's current configuration (sorted)."""
    learners: tuple[str, ...] = ()
    """REPORTED: the learners of the shard's current configuration (sorted)."""
    merge_into: int = 0
    """DESIRED: this shard is to be merged into that shard (0 = no merge); the planner keeps
    its replicas on the target's and moves neither while the merge is pending."""
    rebuilding: tuple[str, ...] = ()
    """Replicas (node ids, sorted) being rebuilt: out of the configuration until removed."""
    failed_disks: tuple[str, ...] = ()
    """Nodes (sorted) this shard's replica was relocated off because their disk failed (EIO,
    full: docs/disk-faults.md): the planner never places the shard there again (no respread or
    rebalance back onto a failed disk) until `readmit` clears the node."""

    def slot_count(self) -> int:
        """How many slots the shard owns."""
        return sum(last - first + 1 for first, last in self.slots)

    def in_motion(self) -> bool:
        """True while the reported configuration differs from the desired replicas."""
        return bool(self.learners) or set(self.voters) != set(self.replicas)

    def fully_replicated(self, nodes: Mapping[str, NodeInfo]) -> bool:
        """The reported voters are exactly the desired replicas, no learner, all nodes alive."""
        if self.in_motion():
            return False
        return all(n in nodes and nodes[n].state == "alive" for n in self.replicas)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id, "slots": [[first, last] for first, last in self.slots],
            "replicas": list(self.replicas), "preferred_leader": self.preferred_leader,
            "leader": self.leader, "term": self.term, "voters": list(self.voters),
            "learners": list(self.learners), "merge_into": self.merge_into,
        } | ({"rebuilding": list(self.rebuilding)} if self.rebuilding else {}) \
          | ({"failed_disks": list(self.failed_disks)} if self.failed_disks else {})

    @classmethod
    def from_json(cls, raw: object) -> ShardInfo:
        """Validate and build; ConfigError names the bad field."""
        data = _mapping(raw, "shard")
        shard_id = _integer(data, "id", "shard", minimum=1)
        where = f"shard {shard_id}"
        replicas = _strings(data, "replicas", where)
        preferred = _string(data, "preferred_leader", where, default="")
        if preferred and preferred not in replicas:
            raise ConfigError(f"{where}: field 'preferred_leader' ({preferred}) is not one of "
                              f"the replicas")
        return cls(
            id=shard_id,
            slots=_slot_ranges(_get(data, "slots", where), where),
            replicas=replicas,
            preferred_leader=preferred,
            leader=_string(data, "leader", where, default=""),
            term=_integer(data, "term", where, minimum=0, default=0),
            voters=tuple(sorted(_strings(data, "voters", where, required=False))),
            learners=tuple(sorted(_strings(data, "learners", where, required=False))),
            merge_into=_integer(data, "merge_into", where, minimum=0, default=0),
            rebuilding=tuple(sorted(_strings(data, "rebuilding", where, required=False))),
            failed_disks=tuple(sorted(_strings(data, "failed_disks", where, required=False))),
        )


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A RESP user created at run time (ACL SETUSER): its password digests and permissions."""

    name: str
    password_sha256: tuple[str, ...] = ()
    """Lower-case hex SHA-256 digests of its passwords, sorted, no duplicates."""
    permissions: str = "read"
    enabled: bool = False
    nopass: bool = False
    """Any password (or none) authenticates this user."""
    commands: tuple[str, ...] = ()
    """ACL command rules in order ("-@all", "+get", "+client|id", ...); empty: `permissions`
    alone decides (server/front/acl_rules.py)."""
    keys: tuple[str, ...] = ()
    """Key patterns ("~p", "%R~p", ...), used with `commands` (no pattern: no key)."""

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "name": self.name, "password_sha256": list(self.password_sha256),
            "permissions": self.permissions, "enabled": self.enabled, "nopass": self.nopass}
        if self.commands:  # (absent: a map written before command rules encodes as before)
            data["commands"] = list(self.commands)
            data["keys"] = list(self.keys)
        return data

    @classmethod
    def from_json(cls, raw: object) -> UserInfo:
        """Validate and build; ConfigError names the bad field."""
        data = _mapping(raw, "user")
        name = _string(data, "name", "user", nonempty=True)
        where = f"user {name}"
        if any(c.isspace() for c in name) or not name.isprintable():
            raise ConfigError(f"{where}: field 'name' must have no space or control character")
        digests = _strings(data, "password_sha256", where, required=False, unique=False)
        for digest in digests:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"{where}: field 'password_sha256' must hold 64-digit "
                                  f"lower-case hex digests")
        permissions = _string(data, "permissions", where, default="read")
        if permissions not in USER_PERMISSIONS:
            raise ConfigError(f"{where}: field 'permissions' must be all or read, got "
                              f"{permissions!r}")
        flags = {}
        for flag in ("enabled", "nopass"):
            value = data.get(flag, False)
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: field '{flag}' must be true or false")
            flags[flag] = value
        commands = _strings(data, "commands", where, required=False, unique=False)
        keys = _strings(data, "keys", where, required=False, unique=False)
        if any(not rule or rule[0] not in "+-" for rule in commands):
            raise ConfigError(f"{where}: field 'commands' must hold +/- rules")
        return cls(name=name, password_sha256=tuple(sorted(set(digests))),
                   permissions=permissions, commands=tuple(commands), keys=tuple(keys),
                   **flags)


def _check_no_overlap(shards: Iterable[ShardInfo]) -> None:
    ranges = sorted((first, last, shard.id) for shard in shards for first, last in shard.slots)
    for (_, last, a), (first, _, b) in pairwise(ranges):
        if first <= last:
            raise ConfigError(f"shards {a} and {b} both own slot {first}")


@dataclass(frozen=True, slots=True)
class ClusterMap:
    """The whole placement: nodes, shards, the driver's own voters. Immutable; see apply_op."""

    version: int
    survival_goal: str
    """"zone" (survive a zone: RF 3 across >= 3 zones) or "region" (RF 5 across >= 3 regions)."""
    replication_factor: int
    nodes: Mapping[str, NodeInfo]
    shards: Mapping[int, ShardInfo]
    meta_voters: tuple[str, ...]
    """The voters of the placement driver's own Raft group (group 0)."""
    users: Mapping[str, UserInfo] = field(default_factory=dict)
    """Users created at run time (ACL SETUSER), by name."""
    internal_token: str = field(default="", repr=False)
    """The key internal RESP commands are signed with when the cluster has no secret
    (docs/security.md): random, proposed once by the driver (`set_internal_token`), never
    replaced, never shown to a client ("" until then, and in a cluster with a secret)."""
    internal_token_ms: int = 0
    """When the driver proposed the token (its wall clock, ms): nodes enforce it some
    seconds later, once every node has it (server/internal_auth.py)."""
    _slot_table: tuple[ShardInfo | None, ...] | None = field(
        default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Read-only, id-ordered views: iteration order is part of determinism.
        for node_id, node in self.nodes.items():
            if node_id != node.id:
                raise ConfigError(f"nodes: key {node_id!r} holds node {node.id!r}")
        for shard_id, shard in self.shards.items():
            if shard_id != shard.id:
                raise ConfigError(f"shards: key {shard_id!r} holds shard {shard.id!r}")
        object.__setattr__(self, "nodes", MappingProxyType(dict(sorted(self.nodes.items()))))
        object.__setattr__(self, "shards", MappingProxyType(dict(sorted(self.shards.items()))))
        object.__setattr__(self, "meta_voters", tuple(self.meta_voters))
        object.__setattr__(self, "users", MappingProxyType(dict(sorted(self.users.items()))))

    # -------------------------------------------------------------- queries

    def shard_for_slot(self, slot: int) -> ShardInfo | None:
        """The shard owning `slot`, or None; O(1) after the first call on this map."""
        table = self._slot_table
        if table is None:
            cells: list[ShardInfo | None] = [None] * SLOT_COUNT
            for shard in self.shards.values():
                for first, last in shard.slots:
                    cells[first:last + 1] = [shard] * (last - first + 1)
            table = tuple(cells)
            object.__setattr__(self, "_slot_table", table)
        if not 0 <= slot < SLOT_COUNT:
            return None
        return table[slot]

    def shards_of_node(self, node_id: str) -> list[ShardInfo]:
        """The shards that want a replica on `node_id` (desired placement), by shard id."""
        return [shard for shard in self.shards.values() if node_id in shard.replicas]

    def live_nodes(self) -> list[NodeInfo]:
        """Nodes that serve (state alive or draining), by id."""
        return [node for node in self.nodes.values() if node.state in ("alive", "draining")]

    def alive_nodes(self) -> list[NodeInfo]:
        """Nodes eligible for new replicas (state alive), by id."""
        return [node for node in self.nodes.values() if node.state == "alive"]

    # -------------------------------------------------------------- encoding

    def to_json(self) -> dict[str, object]:
        raw: dict[str, object] = {
            "version": self.version,
            "survival_goal": self.survival_goal,
            "replication_factor": self.replication_factor,
            "nodes": [node.to_json() for node in self.nodes.values()],
            "shards": [shard.to_json() for shard in self.shards.values()],
            "meta_voters": list(self.meta_voters),
        }
        if self.users:  # absent when empty: a map without users encodes as before
            raw["users"] = [user.to_json() for user in self.users.values()]
        if self.internal_token:  # absent when empty, as users
            raw["internal_token"] = self.internal_token
            raw["internal_token_ms"] = self.internal_token_ms
        return raw

    @classmethod
    def from_json(cls, raw: object) -> ClusterMap:
        """Validate and build; ConfigError names the bad field."""
        data = _mapping(raw, "map")
        goal = _string(data, "survival_goal", "map")
        if goal not in SURVIVAL_GOALS:
            raise ConfigError(f"map: field 'survival_goal' must be zone or region, got {goal!r}")
        nodes: dict[str, NodeInfo] = {}
        for item in _objects(data, "nodes", "map"):
            node = NodeInfo.from_json(item)
            if node.id in nodes:
                raise ConfigError(f"map: node {node.id} is listed twice")
            nodes[node.id] = node
        shards: dict[int, ShardInfo] = {}
        for item in _objects(data, "shards", "map"):
            shard = ShardInfo.from_json(item)
            if shard.id in shards:
                raise ConfigError(f"map: shard {shard.id} is listed twice")
            unknown = [n for n in shard.replicas if n not in nodes]
            if unknown:
                raise ConfigError(f"shard {shard.id}: field 'replicas' names unknown node(s) "
                                  f"{', '.join(unknown)}")
            shards[shard.id] = shard
        _check_no_overlap(shards.values())
        meta_voters = _strings(data, "meta_voters", "map")
        unknown = [n for n in meta_voters if n not in nodes]
        if unknown:
            raise ConfigError(f"map: field 'meta_voters' names unknown node(s) "
                              f"{', '.join(unknown)}")
        users: dict[str, UserInfo] = {}
        for item in _objects(data, "users", "map") if "users" in data else []:
            user = UserInfo.from_json(item)
            if user.name in users:
                raise ConfigError(f"map: user {user.name} is listed twice")
            users[user.name] = user
        return cls(
            version=_integer(data, "version", "map", minimum=0),
            survival_goal=goal,
            replication_factor=_integer(data, "replication_factor", "map", minimum=1),
            nodes=nodes,
            shards=shards,
            meta_voters=meta_voters,
            users=users,
            internal_token=_token(data, "internal_token", "map") if "internal_token" in data
            else "",
            internal_token_ms=_integer(data, "internal_token_ms", "map", minimum=0, default=0),
        )

    def encode(self) -> bytes:
        """Canonical JSON (sorted keys, compact, ASCII): byte-identical on every replica."""
        return _canonical(self.to_json())

    @classmethod
    def decode(cls, data: bytes) -> ClusterMap:
        """The inverse of `encode`; ConfigError for bytes that are not a valid map."""
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"map: not valid UTF-8 JSON: {exc}") from None
        return cls.from_json(raw)


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


# ---------------------------------------------------------------------------- operations


@dataclass(frozen=True, slots=True)
class OpError:
    """A refused or malformed op; `message` is a whole Redis-style error line ("ERR ...")."""

    message: str


OK = "OK"


def apply_op(cmap: ClusterMap, op: Mapping[str, object]) -> tuple[ClusterMap, object]:
    """Apply one op to `cmap`: (new map, "OK") or (the same map, OpError).

    The new map's version is `cmap.version + 1` when anything changed; when nothing changed the
    very same `cmap` object comes back with "OK". Never raises for bad input.
    """
    try:
        data = _mapping(op, "op")
        kind = _string(data, "op", "op")
        handler = _OPS.get(kind)
        if handler is None:
            return cmap, OpError(f"ERR unknown placement op {kind!r}")
        result = handler(cmap, data)
    except ConfigError as exc:
        return cmap, OpError(f"ERR {exc}")
    if isinstance(result, OpError):
        return cmap, result
    if result == cmap:
        return cmap, OK
    return replace(result, version=cmap.version + 1), OK


_Result = ClusterMap | OpError


def _with_node(cmap: ClusterMap, node: NodeInfo) -> ClusterMap:
    return replace(cmap, nodes={**cmap.nodes, node.id: node})


def _with_shard(cmap: ClusterMap, shard: ShardInfo) -> ClusterMap:
    return replace(cmap, shards={**cmap.shards, shard.id: shard})


def _op_add_node(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    node = NodeInfo.from_json(_get(op, "node", "add_node"))
    known = cmap.nodes.get(node.id)
    if known is not None:
        # A re-joining node serves again, under the identity already on record (a join
        # never changes an incarnation: only `replace_node` does).
        node = replace(node, state="alive", incarnation=known.incarnation,
                       replacing=known.replacing)
    return _with_node(cmap, node)


def _op_set_incarnation(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    """Record the incarnation the driver first saw for a node; never overwrites one."""
    node_id = _string(op, "node", "set_incarnation", nonempty=True)
    incarnation = _incarnation(op, "incarnation", "set_incarnation", required=True)
    node = cmap.nodes.get(node_id)
    if node is None:
        return OpError(f"ERR set_incarnation: unknown node {node_id}")
    if node.incarnation == incarnation:
        return cmap
    if node.incarnation:
        return OpError(f"ERR set_incarnation: {node_id} is incarnation {node.incarnation}, "
                       f"not {incarnation} (a new incarnation needs `phalanx replace`)")
    return _with_node(cmap, replace(node, incarnation=incarnation))


def _op_replace_node(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    """Start replacing a node's old incarnation by a new one (`phalanx replace`)."""
    node_id = _string(op, "node", "replace_node", nonempty=True)
    incarnation = _incarnation(op, "incarnation", "replace_node", required=True)
    node = cmap.nodes.get(node_id)
    if node is None:
        return OpError(f"ERR replace_node: unknown node {node_id}")
    if node.incarnation == incarnation:
        return OpError(f"ERR replace_node: {node_id} already is incarnation {incarnation}: "
                       f"nothing to replace")
    if node.replacing == incarnation:
        return cmap
    return _with_node(cmap, replace(node, replacing=incarnation))


def _op_finish_replace(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    """The old incarnation left every group: the new one becomes the node's incarnation."""
    node_id = _string(op, "node", "finish_replace", nonempty=True)
    node = cmap.nodes.get(node_id)
    if node is None:
        return OpError(f"ERR finish_replace: unknown node {node_id}")
    if not node.replacing:
        return OpError(f"ERR finish_replace: {node_id} is not being replaced")
    return _with_node(cmap, replace(node, incarnation=node.replacing, replacing=""))


def _op_set_node_state(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    node_id = _string(op, "node", "set_node_state", nonempty=True)
    state = _string(op, "state", "set_node_state")
    if state not in NODE_STATES:
        return OpError(f"ERR set_node_state: state must be one of {', '.join(NODE_STATES)}, "
                       f"got {state!r}")
    node = cmap.nodes.get(node_id)
    if node is None:
        return OpError(f"ERR set_node_state: unknown node {node_id}")
    cmap = _with_node(cmap, replace(node, state=state))
    if op.get("readmit") is True and state == "alive":
        # An operator's readmit (`phalanx readmit`, after replacing or freeing a failed disk):
        # the node may hold the shards it was relocated off again.
        cmap = replace(cmap, shards={
            sid: replace(shard, failed_disks=tuple(n for n in shard.failed_disks
                                                   if n != node_id))
            if node_id in shard.failed_disks else shard
            for sid, shard in cmap.shards.items()})
    return cmap


def _op_remove_node(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    node_id = _string(op, "node", "remove_node", nonempty=True)
    if node_id not in cmap.nodes:
        return OpError(f"ERR remove_node: unknown node {node_id}")
    holding = [str(shard.id) for shard in cmap.shards_of_node(node_id)]
    if holding:
        return OpError(f"ERR remove_node: {node_id} still holds replicas of shard(s) "
                       f"{', '.join(holding)}")
    if node_id in cmap.meta_voters:
        return OpError(f"ERR remove_node: {node_id} is a voter of the placement driver")
    return replace(cmap, nodes={k: v for k, v in cmap.nodes.items() if k != node_id})


def _shard_of(cmap: ClusterMap, op: Mapping[str, Any], where: str) -> ShardInfo | OpError:
    shard_id = _integer(op, "shard", where, minimum=1)
    shard = cmap.shards.get(shard_id)
    if shard is None:
        return OpError(f"ERR {where}: unknown shard {shard_id}")
    return shard


def _unknown_nodes(cmap: ClusterMap, ids: Iterable[str]) -> list[str]:
    return [node_id for node_id in ids if node_id not in cmap.nodes]


def _op_set_replicas(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    shard = _shard_of(cmap, op, "set_replicas")
    if isinstance(shard, OpError):
        return shard
    replicas = _strings(op, "replicas", "set_replicas")
    preferred = _string(op, "preferred_leader", "set_replicas", default="")
    if not replicas:
        return OpError("ERR set_replicas: a shard needs at least one replica")
    unknown = _unknown_nodes(cmap, replicas)
    if unknown:
        return OpError(f"ERR set_replicas: unknown node(s) {', '.join(unknown)}")
    if preferred and preferred not in replicas:
        return OpError(f"ERR set_replicas: preferred leader {preferred} is not a replica")
    if "expect_replicas" in op:
        # Compare-and-set on the shard's desired replicas (etcd's compare-and-swap,
        # Kubernetes' resourceVersion): an op computed from an older map, whose shard has
        # moved since, is refused here, identically on every replica of the map, so a
        # frozen view can never undo a later move (docs/operations.md, "Map ops").
        expected = _strings(op, "expect_replicas", "set_replicas")
        if not expected:
            return OpError("ERR set_replicas: field 'expect_replicas' is empty")
        if expected != shard.replicas:
            return OpError(f"ERR set_replicas: stale: shard {shard.id}'s replicas are "
                           f"{','.join(shard.replicas)}, not {','.join(expected)}; not applied")
    failed = _string(op, "failed_disk", "set_replicas", default="")
    if failed and failed in replicas:
        return OpError(f"ERR set_replicas: {failed} is named as a failed disk and kept as a "
                       f"replica")
    return _with_shard(cmap, replace(shard, replicas=replicas, preferred_leader=preferred,
                                     rebuilding=tuple(n for n in shard.rebuilding
                                                      if n in replicas),
                                     failed_disks=tuple(sorted({*shard.failed_disks, failed}
                                                               - {""}))))


def _op_rebuild_replica(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    """A node's replica of a shard is damaged: rebuild it (see the module rules)."""
    shard = _shard_of(cmap, op, "rebuild_replica")
    if isinstance(shard, OpError):
        return shard
    node = _string(op, "node", "rebuild_replica", nonempty=True)
    if node not in shard.replicas:
        return OpError(f"ERR rebuild_replica: {node} is not a replica of shard {shard.id}")
    return _with_shard(cmap, replace(shard, rebuilding=tuple(sorted({*shard.rebuilding,
                                                                       node}))))


def _op_finish_rebuild(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    """The damaged replica left the configuration: it may come back as a new member."""
    shard = _shard_of(cmap, op, "finish_rebuild")
    if isinstance(shard, OpError):
        return shard
    node = _string(op, "node", "finish_rebuild", nonempty=True)
    return _with_shard(cmap, replace(shard, rebuilding=tuple(n for n in shard.rebuilding
                                                             if n != node)))


def _op_report_shard(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    shard = _shard_of(cmap, op, "report_shard")
    if isinstance(shard, OpError):
        return shard
    leader = _string(op, "leader", "report_shard")
    term = _integer(op, "term", "report_shard", minimum=0)
    voters = tuple(sorted(_strings(op, "voters", "report_shard")))
    learners = tuple(sorted(_strings(op, "learners", "report_shard", required=False)))
    if term < shard.term:
        return cmap  # a stale leader's report: the newer term's report stands
    return _with_shard(cmap, replace(shard, leader=leader, term=term, voters=voters,
                                     learners=learners))


def _op_set_meta_voters(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    voters = _strings(op, "voters", "set_meta_voters")
    if not voters:
        return OpError("ERR set_meta_voters: the placement driver needs at least one voter")
    unknown = _unknown_nodes(cmap, voters)
    if unknown:
        return OpError(f"ERR set_meta_voters: unknown node(s) {', '.join(unknown)}")
    return replace(cmap, meta_voters=voters)


def _op_add_shard(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    shard = ShardInfo.from_json(_get(op, "shard", "add_shard"))
    if shard.id in cmap.shards:
        return OpError(f"ERR add_shard: shard {shard.id} exists")
    if not shard.replicas:
        return OpError("ERR add_shard: a shard needs at least one replica")
    unknown = _unknown_nodes(cmap, shard.replicas)
    if unknown:
        return OpError(f"ERR add_shard: unknown node(s) {', '.join(unknown)}")
    try:
        _check_no_overlap([*cmap.shards.values(), shard])
    except ConfigError as exc:
        return OpError(f"ERR add_shard: {exc}")
    return _with_shard(cmap, shard)


def _op_split_shard(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    """A shard's leader reports a split its replicas applied: slots first..last of `shard` now
    belong to the new shard `new_shard`, on the same replicas (they created it from the split
    entry). Idempotent: reporting the same split again changes nothing."""
    shard_id = _integer(op, "shard", "split_shard", minimum=1)
    new_id = _integer(op, "new_shard", "split_shard", minimum=1)
    first = _integer(op, "first_slot", "split_shard", minimum=0)
    last = _integer(op, "last_slot", "split_shard", minimum=first)
    existing = cmap.shards.get(new_id)
    if existing is not None:
        if existing.slots == ((first, last),):
            return cmap
        return OpError(f"ERR split_shard: shard {new_id} exists with other slots")
    shard = cmap.shards.get(shard_id)
    if shard is None:
        return OpError(f"ERR split_shard: unknown shard {shard_id}")
    if not any(a <= first and last <= b for a, b in shard.slots):
        return OpError(f"ERR split_shard: slots {first}-{last} are not all in shard {shard_id}")
    remaining = subtract_range(shard.slots, first, last)
    if not remaining:
        return OpError(f"ERR split_shard: shard {shard_id} would keep no slot")
    left = replace(shard, slots=remaining)
    right = ShardInfo(id=new_id, slots=((first, last),), replicas=shard.replicas,
                      preferred_leader=shard.preferred_leader, voters=shard.voters,
                      learners=shard.learners)
    return replace(cmap, shards={**cmap.shards, left.id: left, right.id: right})


def subtract_range(ranges: Iterable[tuple[int, int]], first: int,
                   last: int) -> tuple[tuple[int, int], ...]:
    """`ranges` without the slots first..last: (0,99) minus 40..59 -> (0,39),(60,99)."""
    remaining: list[tuple[int, int]] = []
    for a, b in ranges:
        if b < first or a > last:
            remaining.append((a, b))
            continue
        if a < first:
            remaining.append((a, first - 1))
        if b > last:
            remaining.append((last + 1, b))
    return tuple(remaining)


def coalesce(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted ranges with adjacent ones joined: (0,9),(10,19) -> (0,19)."""
    joined: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if joined and first <= joined[-1][1] + 1:
            joined[-1] = (joined[-1][0], max(last, joined[-1][1]))
        else:
            joined.append((first, last))
    return tuple(joined)


def _op_set_merge(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    """Record the intent to merge `shard` into `into`: its desired replicas become the
    target's (the merge needs them co-located)."""
    shard_id = _integer(op, "shard", "set_merge", minimum=1)
    into = _integer(op, "into", "set_merge", minimum=1)
    shard, target = cmap.shards.get(shard_id), cmap.shards.get(into)
    if shard is None or target is None or shard_id == into:
        return OpError(f"ERR set_merge: need two different existing shards, got {shard_id} "
                       f"and {into}")
    if target.merge_into:
        return OpError(f"ERR set_merge: shard {into} is itself being merged")
    return _with_shard(cmap, replace(shard, merge_into=into, replicas=target.replicas,
                                     preferred_leader=target.preferred_leader))


def _op_merge_shards(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    """The target's leader reports a merge its replicas applied: shard `source` is gone and its
    slots belong to `shard`. Idempotent (reporting it again changes nothing)."""
    shard_id = _integer(op, "shard", "merge_shards", minimum=1)
    source_id = _integer(op, "source", "merge_shards", minimum=1)
    target = cmap.shards.get(shard_id)
    if target is None:
        return OpError(f"ERR merge_shards: unknown shard {shard_id}")
    source = cmap.shards.get(source_id)
    if source is None:
        return cmap
    if source_id == shard_id:
        return OpError("ERR merge_shards: a shard cannot absorb itself")
    merged = replace(target, slots=coalesce(target.slots + source.slots))
    shards = {k: v for k, v in cmap.shards.items() if k != source_id}
    shards[shard_id] = merged
    return replace(cmap, shards=shards)


def _op_set_policy(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    goal = _string(op, "survival_goal", "set_policy", default=cmap.survival_goal)
    if goal not in SURVIVAL_GOALS:
        return OpError(f"ERR set_policy: survival_goal must be zone or region, got {goal!r}")
    factor = _integer(op, "replication_factor", "set_policy", minimum=1,
                      default=cmap.replication_factor)
    return replace(cmap, survival_goal=goal, replication_factor=factor)


def _op_set_user(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    """Create or replace a user (the whole record: see UserInfo)."""
    user = UserInfo.from_json({k: v for k, v in op.items() if k != "op"})
    if user.name == "default":
        return OpError("ERR set_user: the default user is requirepass in the node configuration")
    return replace(cmap, users={**cmap.users, user.name: user})


def _op_del_user(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    """Delete users by name; names that are not in the map are ignored."""
    names = set(_strings(op, "names", "del_user", unique=False))
    return replace(cmap, users={k: v for k, v in cmap.users.items() if k not in names})


def _op_set_internal_token(cmap: ClusterMap, op: Mapping[str, Any]) -> _Result:
    """Set the cluster's internal token once (the driver proposes it when the map has none);
    a second, different token is refused: the nodes sign with the first."""
    token = _token(op, "token", "set_internal_token")
    at_ms = _integer(op, "at_ms", "set_internal_token", minimum=0)
    if cmap.internal_token == token:
        return cmap
    if cmap.internal_token:
        return OpError("ERR set_internal_token: the cluster already has its internal token")
    return replace(cmap, internal_token=token, internal_token_ms=at_ms)


_OPS: dict[str, Callable[[ClusterMap, Mapping[str, Any]], _Result]] = {
    "add_node": _op_add_node,
    "set_node_state": _op_set_node_state,
    "remove_node": _op_remove_node,
    "set_replicas": _op_set_replicas,
    "report_shard": _op_report_shard,
    "set_meta_voters": _op_set_meta_voters,
    "add_shard": _op_add_shard,
    "split_shard": _op_split_shard,
    "merge_shards": _op_merge_shards,
    "set_merge": _op_set_merge,
    "set_policy": _op_set_policy,
    "set_user": _op_set_user,
    "del_user": _op_del_user,
    "set_incarnation": _op_set_incarnation,
    "replace_node": _op_replace_node,
    "finish_replace": _op_finish_replace,
    "rebuild_replica": _op_rebuild_replica,
    "finish_rebuild": _op_finish_rebuild,
    "set_internal_token": _op_set_internal_token,
}


def encode_op(op: Mapping[str, object]) -> bytes:
    """One op as the bytes of a log entry of the placement driver (canonical UTF-8 JSON)."""
    return _canonical(dict(op))


# ---------------------------------------------------------------------------- state machine


class MapMachine:
    """The placement driver's replicated state machine: a ClusterMap advanced by ops.

    `apply` never raises: bytes that are not one JSON op answer an OpError (the log must not
    wedge on a bad entry). The snapshot is the canonical encoding of the map.
    """

    __slots__ = ("_map", "key_count")

    def __init__(self, initial: ClusterMap) -> None:
        self._map = initial
        self.key_count: int = len(initial.shards)
        """Shards in the map (the server's key gauge reads it)."""

    @property
    def map(self) -> ClusterMap:
        """The current map."""
        return self._map

    def apply(self, index: int, data: bytes) -> object:
        """Apply the committed entry `index` (one op as UTF-8 JSON); "OK" or an OpError."""
        if not data:
            return None  # a leader's no-op entry
        try:
            op = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return OpError(f"ERR placement op in log entry {index} is not UTF-8 JSON: {exc}")
        if not isinstance(op, dict):
            return OpError(f"ERR placement op in log entry {index} is not a JSON object")
        self._map, reply = apply_op(self._map, op)
        self.key_count = len(self._map.shards)
        return reply

    def snapshot(self) -> bytes:
        """The whole state: the map's canonical encoding."""
        return self._map.encode()

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's; raises Corrupt (state unchanged) if it is bad."""
        try:
            self._map = ClusterMap.decode(data)
        except ConfigError as exc:
            raise Corrupt(f"placement snapshot: {exc}") from None
        self.key_count = len(self._map.shards)

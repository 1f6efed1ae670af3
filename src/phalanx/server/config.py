"""Configuration of one node process: identity, addresses, peers, timing, limits.

Rules of this file:
- `NodeConfig` is a frozen dataclass validated in `__post_init__`; every error names the field
  (`ConfigError("peers[1].peer: 'abc' is not host:port")`).
- A config comes from a TOML file (`load_config`), optionally overridden by CLI flags; the file
  format mirrors the dataclass (see `example_config()` and docs in README).
- The cluster's membership at bootstrap is the `peers` list (which includes this node); every
  node of a cluster must be started with the same list.
- Security (see `UserConfig` and the `tls_*` fields): `requirepass` is Redis's "default" user
  (full permissions); `users` adds named users (`AUTH user pass`) with "all" or "read"
  permissions. Nodes forward client commands to each other over RESP authenticating as the
  default user, so `users` needs `requirepass` (one rule instead of an "internal user" knob).
  `tls_cert_file` + `tls_key_file` turn on TLS for the RESP port (clients and forwarding);
  `tls_ca_file` adds mutual TLS. The admin HTTP port is not TLS. The peer (Raft) port is
  authenticated by `cluster_secret` (HMAC handshake), and with `peer_tls_cert_file` +
  `peer_tls_key_file` + `peer_tls_ca_file` (all three or none) it is mutual TLS too: every
  node presents a certificate of that CA naming its node id (DNS subjectAltName or common
  name) and verifies its peer's; the files are loaded at validation (a mismatched key or an
  unreadable CA is a ConfigError naming the field) and reloaded when they change (or on
  SIGHUP): new peer connections use the new certificate.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from phalanx.errors import ConfigError


def parse_address(text: str, field_name: str) -> tuple[str, int]:
    """Split "host:port" and validate it; the error names `field_name`."""
    host, separator, port_text = text.rpartition(":")
    if not separator or not host or not port_text.isdigit():
        raise ConfigError(f"{field_name}: {text!r} is not host:port")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{field_name}: port {port} is out of range 0..65535")
    return host, port


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConfig:
    """Where to reach one member of the cluster."""

    id: str
    #: host:port of the peer (Raft) listener.
    peer: str
    #: host:port of the RESP listener (used to forward client writes to the leader).
    resp: str
    #: host:port of the admin HTTP listener.
    admin: str = ""
    zone: str = "zone-1"
    region: str = "region-1"
    #: The machine this node runs on: a failure domain between node and zone (docs/hosts.md).
    #: Nodes of one machine must name the same host, so that no two replicas of a shard land
    #: on it; "" (the default) = a host of its own, as if every node had its own machine.
    host: str = ""

    def validate(self, position: int) -> None:
        prefix = f"peers[{position}]"
        if not self.id or not self.id.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{prefix}.id: {self.id!r} must be a non-empty word")
        if len(self.host) > 253 or any(ch.isspace() or not ch.isprintable() for ch in self.host):
            raise ConfigError(f"{prefix}.host: {self.host[:40]!r} must be at most 253 printable "
                              "characters without spaces")
        parse_address(self.peer, f"{prefix}.peer")
        parse_address(self.resp, f"{prefix}.resp")
        if self.admin:
            parse_address(self.admin, f"{prefix}.admin")


#: What a user may run: "all" (every command) or "read" (no write, no FAILOVER, no internal
#: PHALANX.* command; connection and server commands such as PING, INFO, HELLO stay allowed).
USER_PERMISSIONS = ("all", "read")


@dataclass(frozen=True, slots=True, kw_only=True)
class UserConfig:
    """A named RESP user (Redis ACL style): `[[users]]` tables of the node's TOML.

    The name "default" is reserved: the default user is `requirepass` (full permissions),
    exactly as before users existed.
    """

    name: str
    password: str
    #: "all" or "read" (see USER_PERMISSIONS).
    permissions: str = "all"

    def validate(self, position: int) -> None:
        prefix = f"users[{position}]"
        if not self.name or not self.name.replace("-", "").replace("_", "").replace(
                ".", "").isalnum():
            raise ConfigError(f"{prefix}.name: {self.name!r} must be a non-empty word")
        if self.name == "default":
            raise ConfigError(f"{prefix}.name: 'default' is the requirepass user; set "
                              "requirepass instead")
        if not self.password:
            raise ConfigError(f"{prefix}.password: must not be empty")
        if self.permissions not in USER_PERMISSIONS:
            raise ConfigError(f"{prefix}.permissions: {self.permissions!r} is not "
                              f"{' or '.join(USER_PERMISSIONS)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """Everything one node process needs. Times in milliseconds unless the name says ticks."""

    #: This node's id; must appear in `peers`.
    id: str
    #: Directory for the durable log, snapshots and the node's lock file.
    data_dir: str
    #: Every member of the cluster at bootstrap, this node included.
    peers: tuple[PeerConfig, ...]
    #: Name of the cluster; peers of another cluster are refused at the handshake.
    cluster: str = "phalanx"
    #: Shared secret for the peer handshake (HMAC); empty = no authentication.
    cluster_secret: str = ""
    #: Length of one Raft tick.
    tick_ms: int = 10
    #: Heartbeat interval and minimum election timeout, in ticks (50 ms and 500 ms by default;
    #: the timeout is drawn from [500, 1000) ms, Raft §5.2). A silent (SIGSTOPped, partitioned)
    #: leader is noticed only by this timeout. 25 (250 ms) halves that client gap but elected new
    #: leaders under load on a starved 2-core machine; docs/failure-detection.md has the figures
    #: (benchmarks/detection_lab.py measures both).
    heartbeat_ticks: int = 5
    election_ticks: int = 50
    #: The width of the election timeout's random range in ticks (0: election_ticks, i.e.
    #: [election_ticks, 2 * election_ticks)); `RaftConfig.election_spread_ticks`.
    election_spread_ticks: int = 0
    #: A follower whose leader's heartbeats came irregularly of late (a busy leader) waits up
    #: to one more election timeout before it campaigns (docs/failure-detection.md). Off: not
    #: shown to pay yet.
    adaptive_election_timeout: bool = False
    pre_vote: bool = True
    check_quorum: bool = True
    #: Serve linearizable reads from a leader lease (no quorum round per read batch).
    lease_reads: bool = False
    #: The most ReadIndex heartbeat rounds in flight at once (`RaftConfig.read_rounds_in_flight`:
    #: 1 = etcd's one at a time, the fewest rounds per read; 2 trades heartbeats for latency
    #: where the network, not CPU, is the limit). Reads arriving meanwhile share the next round.
    read_rounds_in_flight: int = 1
    #: Start a PreVote at once when the connection to the leader resets (not with lease_reads).
    fast_failover: bool = True
    #: The Raft log's on-disk format for groups created from now on: "node" (one segmented
    #: append-only log for all the node's groups in `data_dir/log/`, one write + one fdatasync
    #: per turn for all of them; the default: ~40 % fewer fdatasyncs per SET than "wal" with
    #: 3 or 9 shards, benchmarks/README.md), "wal" (one such log per group) or "sqlite". A
    #: group directory that already holds a store keeps its format (docs/disk-faults.md,
    #: "One log per node").
    storage_engine: str = "node"
    #: Take a snapshot after this many applied entries, or this many bytes of applied
    #: entries, since the last one; keep this many entries after it. Past
    #: `snapshot_ratio_floor_bytes`, a snapshot also waits until the log since the last one
    #: holds `snapshot_log_percent` % of that snapshot's size (so the cost of snapshots per
    #: byte written stays bounded however big the shard is, as Redis's
    #: auto-aof-rewrite-percentage).
    snapshot_every_entries: int = 20_000
    snapshot_every_bytes: int = 64 * 1024 * 1024
    snapshot_log_percent: int = 50
    snapshot_ratio_floor_bytes: int = 4 * 1024 * 1024
    snapshot_keep_entries: int = 2_000
    #: ... and at most this many bytes of entries (whichever keeps fewer): the kept entries
    #: stay in memory, and 2,000 entries of 1,000-key MSETs are ~48 MB (issue 15 lever 7,
    #: docs/memory.md). A follower further behind catches up by snapshot.
    snapshot_keep_bytes: int = 8 * 1024 * 1024
    #: Entries this replica applied and every live follower holds leave memory: their data
    #: stays only in the node log's file, read back for a lagging follower or a segment
    #: rewrite (storage/nodelog_group.py `release`; issue 15 lever 7, docs/memory.md). The
    #: per-group logs (`storage_engine = "wal"`/"sqlite") always keep them.
    release_applied_log: bool = True
    #: A snapshot is written (and installed) in slices of about this many ms of the event
    #: loop, so heartbeats keep flowing (issue 15 lever 4).
    snapshot_slice_ms: int = 4
    #: Snapshots travel to followers in chunks of this many bytes, pulled by the follower
    #: (resumable; server/snapshot_transfer.py).
    snapshot_chunk_bytes: int = 4 * 1024 * 1024
    #: RESP password (AUTH) of the "default" user, full permissions; empty = no password.
    #: Nodes authenticate with it when they forward commands to each other, so it must be set
    #: (the same on every node) whenever `users` is not empty.
    requirepass: str = ""
    #: Named RESP users (`AUTH name password`), see `UserConfig`; same on every node.
    users: tuple[UserConfig, ...] = ()
    #: TLS on the RESP port: PEM certificate (chain) and private key of this node, both or
    #: neither. Forwarding between nodes then uses TLS too, trusting `tls_ca_file`, or, when
    #: that is empty, this node's own certificate (so every node must share one certificate,
    #: or a self-signed CA certificate must be the cert file's issuer listed in it).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: CA certificate (PEM); when set, clients must present a certificate signed by it
    #: (mutual TLS) and nodes present their own certificate when forwarding.
    tls_ca_file: str = ""
    #: Mutual TLS on the peer (Raft) port: this node's certificate (PEM, naming its node id),
    #: its private key, and the CA that signed every node's certificate. All three or none.
    peer_tls_cert_file: str = ""
    peer_tls_key_file: str = ""
    peer_tls_ca_file: str = ""
    #: Largest bulk string a client may send (Redis's proto-max-bulk-len).
    max_bulk_bytes: int = 512 * 1024 * 1024
    #: Largest value stored (a SET of a bigger value is refused).
    max_value_bytes: int = 64 * 1024 * 1024
    #: Most client connections.
    max_clients: int = 10_000
    #: How long a client write or read may wait for the cluster before an error.
    request_timeout_ms: int = 5_000
    #: Allow the admin API's network fault rules (for the chaos lab only).
    enable_fault_injection: bool = False
    #: Token required by mutating admin endpoints (failover, fault rules); empty = none.
    admin_token: str = ""
    #: How often the leader looks for expired keys to delete, and how many per proposal.
    expire_interval_ms: int = 100
    expire_batch_keys: int = 200
    log_level: str = "info"
    #: The consistency checker: each shard's leader has its replicas compare a digest of
    #: their data at the same index this often (milliseconds; 0 = off; server/consistency.py).
    consistency_check_ms: int = 60_000
    #: The background scrub: every this many ms one replica of this node has its files read
    #: back and their checksums verified (0 = off; server/consistency.py).
    scrub_interval_ms: int = 600_000
    #: Data shards created at bootstrap (16384 slots split evenly); each is one Raft group.
    shards: int = 1
    #: What the placement must survive: "zone" (3 replicas, one per zone) or "region" (5
    #: replicas, no region holding a quorum of a shard).
    survival_goal: str = "zone"
    #: Replicas per shard; 0 = from the survival goal (3 or 5), capped at the node count.
    replication_factor: int = 0
    #: A node silent this long is declared dead and its replicas are re-created elsewhere.
    dead_after_ms: int = 60_000
    #: "proxy": any node serves any key by forwarding to the shard's leader (plain clients,
    #: load balancers); "moved": answer -MOVED slot host:port as Redis Cluster does.
    redirect: str = "proxy"
    #: RESP address (host:port) of any member of a running cluster to join; empty = this node
    #: is one of the bootstrap `peers`.
    join: str = ""
    #: Active-active regions (docs/active-active.md): this cluster's region name (the same on
    #: every node of the cluster; empty = not part of an active-active setup).
    aa_region: str = ""
    #: Comma-separated key prefixes whose keys are active-active (merged across regions);
    #: every other key is strong (this cluster's Raft only). The same in every region.
    aa_prefixes: str = ""
    #: The other regions: `name=host:port,host:port;name2=host:port` (RESP addresses of some
    #: of each region's nodes; any one of them answers for its whole region).
    aa_peers: str = ""
    #: Shared secret signing the cross-region pull commands (HMAC); empty = none (then
    #: the RESP password alone guards them). The same in every region.
    aa_secret: str = ""
    #: The region whose cluster holds the strong keys (every key outside `aa_prefixes`);
    #: the other regions forward them there and refuse them when cut off from it. Empty:
    #: strong keys are local to each region's cluster (not replicated across regions).
    aa_strong_home: str = ""
    #: The RESP password of the other regions' default user (empty: `requirepass`).
    aa_peer_password: str = ""
    #: How often each shard leader pulls every other region, and the most deltas per pull.
    aa_poll_ms: int = 100
    aa_batch: int = 1_000
    #: Local deltas each shard keeps for the other regions (past it, a region that has not
    #: pulled them takes the shard's full state, page by page).
    aa_outbox_max: int = 100_000

    def __post_init__(self) -> None:
        if not self.peers:
            raise ConfigError("peers: at least this node must be listed")
        seen: set[str] = set()
        for position, peer in enumerate(self.peers):
            peer.validate(position)
            if peer.id in seen:
                raise ConfigError(f"peers[{position}].id: {peer.id!r} is listed twice")
            seen.add(peer.id)
        if self.id not in seen:
            raise ConfigError(f"id: {self.id!r} is not one of peers ({', '.join(sorted(seen))})")
        if not self.data_dir:
            raise ConfigError("data_dir: must not be empty")
        positive = ("tick_ms", "heartbeat_ticks", "election_ticks", "snapshot_every_entries",
                    "snapshot_every_bytes", "snapshot_slice_ms", "snapshot_chunk_bytes",
                    "max_bulk_bytes", "max_value_bytes", "max_clients", "request_timeout_ms",
                    "expire_interval_ms", "expire_batch_keys", "shards", "dead_after_ms")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be > 0 (got {getattr(self, name)})")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError("election_ticks: must be > heartbeat_ticks")
        if self.election_spread_ticks < 0 or 0 < self.election_spread_ticks < \
                self.heartbeat_ticks:
            raise ConfigError("election_spread_ticks: must be 0 (election_ticks) or >= "
                              "heartbeat_ticks")
        if self.scrub_interval_ms < 0:
            raise ConfigError("scrub_interval_ms: must be >= 0 (0 = off)")
        if self.consistency_check_ms < 0:
            raise ConfigError("consistency_check_ms: must be >= 0 (0 = off)")
        if self.snapshot_keep_entries < 0:
            raise ConfigError("snapshot_keep_entries: must be >= 0")
        if self.snapshot_keep_bytes < 0:
            raise ConfigError("snapshot_keep_bytes: must be >= 0")
        if self.snapshot_log_percent < 0 or self.snapshot_ratio_floor_bytes < 0:
            raise ConfigError("snapshot_log_percent, snapshot_ratio_floor_bytes: must be >= 0")
        if self.lease_reads and not self.check_quorum:
            raise ConfigError("lease_reads: needs check_quorum = true")
        if self.read_rounds_in_flight < 1:
            raise ConfigError("read_rounds_in_flight: must be >= 1")
        if self.survival_goal not in ("zone", "region"):
            raise ConfigError(f"survival_goal: {self.survival_goal!r} is not zone or region")
        if self.replication_factor < 0:
            raise ConfigError("replication_factor: must be >= 0 (0 = from the survival goal)")
        if self.storage_engine not in ("node", "wal", "sqlite"):
            raise ConfigError(f"storage_engine: {self.storage_engine!r} is not node, wal or "
                              f"sqlite")
        if self.redirect not in ("proxy", "moved"):
            raise ConfigError(f"redirect: {self.redirect!r} is not proxy or moved")
        if self.join:
            parse_address(self.join, "join")
        if self.aa_poll_ms <= 0 or self.aa_batch <= 0 or self.aa_outbox_max <= 0:
            raise ConfigError("aa_poll_ms, aa_batch, aa_outbox_max: must be > 0")
        for region, addresses in self.aa_peer_map().items():
            if region == self.aa_region or not region:
                raise ConfigError(f"aa_peers: bad region name {region!r} (not this region's)")
            for address in addresses:
                parse_address(address, "aa_peers")
        if self.aa_strong_home and self.aa_strong_home != self.aa_region and \
                self.aa_strong_home not in self.aa_peer_map():
            raise ConfigError(f"aa_strong_home: {self.aa_strong_home!r} is neither this "
                              f"region nor one of aa_peers")
        if (self.aa_peers or self.aa_prefixes) and not self.aa_region:
            raise ConfigError("aa_region: must be set with aa_peers or aa_prefixes")
        names: set[str] = set()
        for position, user in enumerate(self.users):
            user.validate(position)
            if user.name in names:
                raise ConfigError(f"users[{position}].name: {user.name!r} is listed twice")
            names.add(user.name)
        if self.users and not self.requirepass:
            raise ConfigError("requirepass: must be set when users are configured (nodes "
                              "forward commands to each other as the default user)")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            missing = "tls_key_file" if self.tls_cert_file else "tls_cert_file"
            raise ConfigError(f"{missing}: tls_cert_file and tls_key_file go together")
        if self.tls_ca_file and not self.tls_cert_file:
            raise ConfigError("tls_ca_file: needs tls_cert_file and tls_key_file")
        for name in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"{name}: {path!r} is not a readable file")
        peer_tls = ("peer_tls_cert_file", "peer_tls_key_file", "peer_tls_ca_file")
        given = [field for field in peer_tls if getattr(self, field)]
        if given and len(given) != len(peer_tls):
            absent = [field for field in peer_tls if field not in given]
            raise ConfigError(f"{absent[0]}: peer TLS needs peer_tls_cert_file, "
                              f"peer_tls_key_file and peer_tls_ca_file together")
        for field in given:
            if not Path(getattr(self, field)).is_file():
                raise ConfigError(f"{field}: {getattr(self, field)!r} is not a readable file")
        if given:
            from phalanx.transport.tls import load_contexts

            load_contexts(self.peer_tls_cert_file, self.peer_tls_key_file,
                          self.peer_tls_ca_file)
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ConfigError(f"log_level: {self.log_level!r} is not debug/info/warning/error")

    def aa_prefix_list(self) -> tuple[bytes, ...]:
        """The active-active key prefixes (empty: every key is strong)."""
        return tuple(p.strip().encode() for p in self.aa_prefixes.split(",") if p.strip())

    def aa_peer_map(self) -> dict[str, tuple[str, ...]]:
        """The other regions: name -> RESP addresses (`aa_peers` parsed)."""
        out: dict[str, tuple[str, ...]] = {}
        for part in self.aa_peers.split(";"):
            if not part.strip():
                continue
            name, _, addresses = part.partition("=")
            if not addresses:
                raise ConfigError(f"aa_peers: {part!r} is not name=host:port,...")
            out[name.strip()] = tuple(a.strip() for a in addresses.split(",") if a.strip())
        return out

    @property
    def me(self) -> PeerConfig:
        """This node's own entry in `peers`."""
        return next(peer for peer in self.peers if peer.id == self.id)

    def peer(self, node_id: str) -> PeerConfig | None:
        """The entry of `node_id`, if it is a member."""
        return next((peer for peer in self.peers if peer.id == node_id), None)


_SCALARS = {f.name for f in fields(NodeConfig)} - {"peers", "users"}
_PEER_FIELDS = {f.name for f in fields(PeerConfig)}
_USER_FIELDS = {f.name for f in fields(UserConfig)}


def _users_from_list(raw_users: object) -> tuple[UserConfig, ...]:
    if not isinstance(raw_users, list):
        raise ConfigError("users: must be a list of tables ([[users]])")
    users = []
    for position, raw in enumerate(raw_users):
        if isinstance(raw, UserConfig):
            users.append(raw)
            continue
        if not isinstance(raw, dict):
            raise ConfigError(f"users[{position}]: must be a table")
        unknown_user = set(raw) - _USER_FIELDS
        if unknown_user:
            raise ConfigError(f"users[{position}]: unknown field(s) "
                              f"{', '.join(sorted(unknown_user))}")
        for required in ("name", "password"):
            if required not in raw:
                raise ConfigError(f"users[{position}].{required}: missing")
        for key, value in raw.items():
            if not isinstance(value, str):
                raise ConfigError(f"users[{position}].{key}: must be a string (got {value!r})")
        users.append(UserConfig(**raw))
    return tuple(users)


def config_from_mapping(data: dict[str, Any], source: str = "config") -> NodeConfig:
    """Build a `NodeConfig` from parsed TOML/JSON; unknown keys are errors."""
    unknown = set(data) - _SCALARS - {"peers", "users"}
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {', '.join(sorted(unknown))}")
    peers_raw = data.get("peers")
    if not isinstance(peers_raw, list) or not peers_raw:
        raise ConfigError(f"{source}: peers must be a non-empty list of tables")
    peers = []
    for position, raw in enumerate(peers_raw):
        if not isinstance(raw, dict):
            raise ConfigError(f"peers[{position}]: must be a table")
        unknown_peer = set(raw) - _PEER_FIELDS
        if unknown_peer:
            raise ConfigError(f"peers[{position}]: unknown field(s) {', '.join(sorted(unknown_peer))}")
        for required in ("id", "peer", "resp"):
            if required not in raw:
                raise ConfigError(f"peers[{position}].{required}: missing")
        peers.append(PeerConfig(**{key: str(value) for key, value in raw.items()}))
    users = _users_from_list(data.get("users", []))
    scalars: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("peers", "users"):
            continue
        expected = NodeConfig.__dataclass_fields__[key].type
        if "int" in str(expected) and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"{key}: must be an integer (got {value!r})")
        if "bool" in str(expected) and not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false (got {value!r})")
        if "str" in str(expected) and not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string (got {value!r})")
        scalars[key] = value
    for required in ("id", "data_dir"):
        if required not in scalars:
            raise ConfigError(f"{source}: {required} is missing")
    return NodeConfig(peers=tuple(peers), users=users, **scalars)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> NodeConfig:
    """Read a TOML config file and apply `overrides` (flag values that are not None)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config {path} is not valid TOML: {error}") from error
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    return config_from_mapping(data, str(path))


def dump_config(config: NodeConfig) -> str:
    """The TOML text of `config` (the inverse of `load_config`)."""
    lines = []
    for name in sorted(_SCALARS):
        value = getattr(config, name)
        lines.append(f"{name} = {_toml_value(value)}")
    for peer in config.peers:
        lines.append("")
        lines.append("[[peers]]")
        for name in ("id", "peer", "resp", "admin", "zone", "region"):
            lines.append(f"{name} = {_toml_value(getattr(peer, name))}")
        if peer.host:
            lines.append(f"host = {_toml_value(peer.host)}")
    for user in config.users:
        lines.append("")
        lines.append("[[users]]")
        for name in ("name", "password", "permissions"):
            lines.append(f"{name} = {_toml_value(getattr(user, name))}")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # A JSON string is a valid TOML basic string (same escapes), control characters included.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def with_overrides(config: NodeConfig, **changes: Any) -> NodeConfig:
    """A copy of `config` with some fields changed (validated again)."""
    return replace(config, **changes)

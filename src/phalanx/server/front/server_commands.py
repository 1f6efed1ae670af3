"""Server commands: PING, ECHO, COMMAND, INFO, ROLE, WAIT, CONFIG, DEBUG, FAILOVER.

Rules of this file:
- These commands answer from this node's view (its replicas' `RawNode.status()`, the cluster
  map, the listener's counters); none goes through the data path.
- A handler takes (session, arguments) and returns a reply value, or raises `CommandError`
  with the exact error line. FAILOVER is the only one that awaits.
- "The default group" is this node's lowest-numbered data replica (the only one in a
  single-shard cluster): ROLE, WAIT and INFO's replication section describe it.
See docs/architecture.md.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Protocol

from phalanx import __version__
from phalanx.errors import CommandError
from phalanx.kv import COMMAND_SPECS, command_info
from phalanx.placement import command_keys
from phalanx.resp import SimpleString

if TYPE_CHECKING:
    from phalanx.server.front.replicas import ReplicaRegistry
    from phalanx.server.front.session import ClientState
    from phalanx.server.group import RaftGroup


class ListenerStats(Protocol):
    """The listener's counters INFO reports."""

    port: int
    total_commands: int
    total_connections: int

    @property
    def clients(self) -> dict[int, ClientState]: ...


def default_group(replicas: ReplicaRegistry) -> RaftGroup | None:
    """This node's lowest-numbered data replica, or None."""
    groups = replicas.data_groups()
    return groups[min(groups)] if groups else None


class ServerCommands:
    """The server command group."""

    def __init__(self, replicas: ReplicaRegistry, stats: ListenerStats) -> None:
        self.replicas = replicas
        self.config = replicas.config
        self.stats = stats

    def ping(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) > 2:
            raise CommandError("ERR wrong number of arguments for 'ping' command")
        return arguments[1] if len(arguments) == 2 else SimpleString("PONG")

    def echo(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) != 2:
            raise CommandError("ERR wrong number of arguments for 'echo' command")
        return arguments[1]

    def command(self, state: ClientState, arguments: list[bytes]) -> object:
        """COMMAND, COMMAND COUNT|INFO|GETKEYS|DOCS: what cluster clients read key positions
        from (redis-py's RedisCluster routes with it)."""
        sub = arguments[1].upper() if len(arguments) >= 2 else b""
        if not sub:
            return [command_info(spec) for spec in COMMAND_SPECS.values()]
        if sub == b"COUNT":
            return len(COMMAND_SPECS)
        if sub == b"INFO":
            return [command_info(COMMAND_SPECS[name.upper()])
                    if name.upper() in COMMAND_SPECS else None for name in arguments[2:]]
        if sub == b"GETKEYS" and len(arguments) >= 3:
            if arguments[2].upper() not in COMMAND_SPECS:
                raise CommandError("ERR Invalid command specified")
            keys = command_keys(arguments[2], arguments[3:])
            if not keys:
                raise CommandError("ERR The command has no key arguments")
            return keys
        if sub == b"DOCS":
            return {}
        raise CommandError(f"ERR unknown subcommand '{sub.decode(errors='replace')}'. "
                           f"Try COMMAND HELP.")

    def config_command(self, state: ClientState, arguments: list[bytes]) -> object:
        """CONFIG GET answers a few fixed values clients ask for; nothing is set at run time."""
        if len(arguments) >= 3 and arguments[1].upper() == b"GET":
            values = {b"save": b"", b"appendonly": b"yes", b"maxmemory": b"0",
                      b"databases": b"1"}
            result: list[bytes] = []
            for pattern in arguments[2:]:
                for key, value in values.items():
                    if pattern in (key, b"*"):
                        result += [key, value]
            return result
        if len(arguments) >= 2 and arguments[1].upper() in (b"SET", b"RESETSTAT", b"REWRITE"):
            raise CommandError("ERR phalanx: configuration is set in the node's config file")
        raise CommandError("ERR unknown subcommand or wrong number of arguments for 'config'")

    def debug(self, state: ClientState, arguments: list[bytes]) -> object:
        raise CommandError("ERR phalanx: DEBUG is not supported")

    def role(self, state: ClientState, arguments: list[bytes]) -> object:
        group = default_group(self.replicas)
        if group is None:
            return [b"master", 0, []]
        status = group.raw.status()
        if group.is_leader():
            replicas: list[object] = []
            for peer_id, progress in sorted(status.peers.items()):
                if peer_id == self.config.id:
                    continue
                host, port = self.replicas.resp_address(peer_id) or ("?", 0)
                replicas.append([host.encode(), str(port).encode(), str(progress.match).encode()])
            return [b"master", status.commit, replicas]
        leader = self.replicas.resp_address(group.leader)
        host, port = leader or ("?", 0)
        link_state = b"connected" if leader else b"connect"
        return [b"slave", host.encode(), port, link_state, status.applied]

    def wait(self, state: ClientState, arguments: list[bytes]) -> object:
        # Writes are acknowledged only once a quorum fsynced them: WAIT has nothing to wait for.
        # It reports how many followers hold everything this node has committed.
        if len(arguments) != 3:
            raise CommandError("ERR wrong number of arguments for 'wait' command")
        group = default_group(self.replicas)
        if group is None or not group.is_leader():
            return 0
        status = group.raw.status()
        return sum(1 for node, progress in status.peers.items()
                   if node != self.config.id and progress.match >= status.commit)

    async def failover(self, state: ClientState, arguments: list[bytes]) -> object:
        target: str | None = None
        position = 1
        while position < len(arguments):
            option = arguments[position].upper()
            if option == b"TO" and position + 2 < len(arguments):
                host, port = arguments[position + 1].decode(), arguments[position + 2].decode()
                match = next((p for p in self.replicas.cluster_map.nodes.values()
                              if p.resp == f"{host}:{port}" or p.id == host), None)
                if match is None:
                    raise CommandError("ERR FAILOVER target HOST and PORT is not a replica.")
                target = match.id
                position += 3
            elif option == b"TIMEOUT" and position + 1 < len(arguments):
                position += 2
            elif option in (b"FORCE", b"ABORT"):
                position += 1
            else:
                raise CommandError("ERR syntax error")
        await self.replicas.transfer_leadership(target)
        return SimpleString("OK")

    def info(self, state: ClientState, arguments: list[bytes]) -> object:
        sections = [a.decode(errors="replace").lower() for a in arguments[1:]] or ["default"]
        everything = any(s in ("all", "everything", "default") for s in sections)
        replicas = self.replicas
        cmap = replicas.cluster_map
        group = default_group(replicas)
        if group is None:
            group = replicas.meta
        status = group.raw.status()
        lines: list[str] = []
        if everything or "server" in sections:
            lines += ["# Server", "redis_version:7.2.0", f"phalanx_version:{__version__}",
                      "redis_mode:standalone", f"process_id:{os.getpid()}",
                      f"run_id:{self.config.id}", f"tcp_port:{self.stats.port}",
                      f"uptime_in_seconds:{int(time.monotonic() - replicas.started)}",
                      f"phalanx_node:{self.config.id}", f"phalanx_zone:{self.config.me.zone}",
                      f"phalanx_region:{self.config.me.region}", ""]
        if everything or "clients" in sections:
            lines += ["# Clients", f"connected_clients:{len(self.stats.clients)}", ""]
        if everything or "stats" in sections:
            lines += ["# Stats", f"total_connections_received:{self.stats.total_connections}",
                      f"total_commands_processed:{self.stats.total_commands}", ""]
        if everything or "replication" in sections:
            lines += ["# Replication"]
            if group.is_leader():
                followers = [n for n in sorted(status.peers) if n != self.config.id]
                lines += ["role:master", f"connected_slaves:{len(followers)}"]
                for position, node_id in enumerate(followers):
                    host, port = replicas.resp_address(node_id) or ("?", 0)
                    progress = status.peers[node_id]
                    lag = status.last_index - progress.match
                    lines.append(f"slave{position}:ip={host},port={port},state=online,"
                                 f"offset={progress.match},lag={lag}")
            else:
                leader = replicas.resp_address(group.leader)
                host, port_text = (leader[0], str(leader[1])) if leader else ("", "")
                lines += ["role:slave", f"master_host:{host}", f"master_port:{port_text}",
                          f"master_link_status:{'up' if leader else 'down'}",
                          f"slave_repl_offset:{status.applied}",
                          "slave_read_only:1"]
            lines += [f"raft_term:{status.term}", f"raft_commit_index:{status.commit}",
                      f"raft_applied_index:{status.applied}",
                      f"raft_leader:{group.leader or ''}", ""]
        if everything or "cluster" in sections:
            # Per-shard view: who leads, and how stale a READONLY read of this replica may be.
            lines += ["# Cluster", f"cluster_enabled:{int(len(cmap.shards) > 1)}",
                      f"phalanx_map_version:{cmap.version}"]
            for shard in sorted(cmap.shards.values(), key=lambda s: s.id):
                local = replicas.local_group(shard.id)
                shard_leader = replicas.shard_leader(shard) or "none"
                line = f"shard{shard.id}:leader={shard_leader},replicas={'/'.join(shard.replicas)}"
                if local is not None:
                    local_status = local.raw.status()
                    stale = local.staleness_ms()
                    line += (f",local_role={local_status.role.value},"
                             f"applied={local_status.applied},staleness_ms={stale},"
                             f"leaderless_s={local.leaderless_for():.1f}")
                lines.append(line)
            lines.append("")
        if everything or "keyspace" in sections:
            lines += ["# Keyspace"]
            keys = sum(g.machine.key_count for g in replicas.data_groups().values())
            if keys:
                lines.append(f"db0:keys={keys},expires=0,avg_ttl=0")
            lines.append("")
        return "\r\n".join(lines).encode()

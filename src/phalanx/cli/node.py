"""`phalanx node`: run one node in the foreground, and the node flags `phalanx up` shares.

Rules of this file: a configuration error is one line naming the field, exit code 2; the node
runtime (`phalanx.server`) is imported only inside the command.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from phalanx.cli.common import fail


def timing_options(function: Any) -> Any:
    """Flags shared by `node` and `up`: the timing and safety knobs of a node (None = default)."""
    options = [
        click.option("--tick-ms", type=int, default=None, help="Length of one Raft tick (ms)."),
        click.option("--heartbeat-ticks", type=int, default=None,
                     help="Heartbeat interval in ticks."),
        click.option("--election-ticks", type=int, default=None,
                     help="Minimum election timeout in ticks."),
        click.option("--election-spread-ticks", type=int, default=None,
                     help="Width of the election timeout's random range in ticks (0: the "
                          "election ticks, Raft's [T, 2T))."),
        click.option("--lease-reads/--no-lease-reads", default=None,
                     help="Serve linearizable reads from a leader lease."),
        click.option("--requirepass", default=None, help="RESP password (AUTH)."),
        click.option("--enable-fault-injection/--no-fault-injection", default=None,
                     help="Allow the admin API's network fault rules (chaos lab only)."),
        click.option("--snapshot-every-entries", type=int, default=None,
                     help="Take a snapshot after this many applied entries."),
        click.option("--snapshot-keep-entries", type=int, default=None,
                     help="Log entries kept behind a snapshot for slow followers."),
        click.option("--max-value-bytes", type=int, default=None,
                     help="Largest value a client may store."),
        click.option("--request-timeout-ms", type=int, default=None,
                     help="How long a request may wait for the cluster."),
        click.option("--fast-failover/--no-fast-failover", default=None,
                     help="Campaign at once when the connection to the leader resets."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def placement_options(function: Any) -> Any:
    """Flags shared by `node` and `up`: sharding and placement (None = the config's value)."""
    options = [
        click.option("--shards", type=int, default=None,
                     help="Data shards created at bootstrap (default 1)."),
        click.option("--survival-goal", type=click.Choice(["zone", "region"]), default=None,
                     help="Survive a zone (3 replicas) or a region (5 replicas)."),
        click.option("--replication-factor", type=int, default=None,
                     help="Replicas per shard (default: from the survival goal)."),
        click.option("--dead-after-ms", type=int, default=None,
                     help="Declare a silent node dead after this long (default 60000)."),
        click.option("--redirect", type=click.Choice(["proxy", "moved"]), default=None,
                     help="Forward to the shard leader (proxy) or answer -MOVED (moved)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _parse_peer(text: str, position: int) -> dict[str, str]:
    from phalanx.errors import ConfigError

    peer: dict[str, str] = {}
    for part in text.split(","):
        key, separator, value = part.strip().partition("=")
        if not separator or not key:
            raise ConfigError(f"--peer[{position}]: {part.strip()!r} is not key=value")
        peer[key.strip()] = value.strip()
    return peer


def _configure_logging(level: str, node_id: str) -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)-7s {node_id} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())



@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML config file (flags override it).")
@click.option("--id", "node_id", default=None, help="This node's id (one of the peers).")
@click.option("--data-dir", default=None, help="Directory for the log and snapshots.")
@click.option("--peer", "peers", multiple=True, metavar="SPEC",
              help="A member, as 'id=n1,peer=H:P,resp=H:P,admin=H:P,zone=z1,region=r1' "
                   "(repeat for each member, this node included; without --config).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
                                               case_sensitive=False), default=None)
@click.option("--join", default=None, metavar="HOST:PORT",
              help="Join a running cluster through any member's RESP address (the peers "
                   "list then holds only this node).")
@timing_options
@placement_options
def node(config_path: str | None, node_id: str | None, data_dir: str | None,
         peers: tuple[str, ...], log_level: str | None, join: str | None,
         **timing: Any) -> None:
    """Run one node in the foreground until SIGTERM or Ctrl-C."""
    from phalanx.errors import ConfigError
    from phalanx.server.config import config_from_mapping, load_config

    overrides: dict[str, Any] = {"id": node_id, "data_dir": data_dir, "log_level": log_level,
                                 "join": join, **timing}
    try:
        if config_path is not None:
            if peers:
                raise ConfigError("--peer: give the peers in the config file or as flags, "
                                  "not both")
            config = load_config(config_path, overrides)
        else:
            if not peers:
                raise ConfigError("peers: give --config FILE or one --peer per member")
            data: dict[str, Any] = {key: value for key, value in overrides.items()
                                    if value is not None}
            data["peers"] = [_parse_peer(text, i) for i, text in enumerate(peers)]
            config = config_from_mapping(data, "flags")
    except ConfigError as error:
        fail(f"config error: {error}", 2)
    _configure_logging(config.log_level, config.id)
    try:
        from phalanx.server.process import check_not_a_wiped_member, run_node
    except ImportError as error:
        fail(f"the node is not available in this build ({error})")
    try:
        check_not_a_wiped_member(config)
    except ConfigError as error:
        fail(f"refusing to start: {error}", 2)
    run_node(config)

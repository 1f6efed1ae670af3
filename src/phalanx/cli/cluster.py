"""The lifecycle of a local cluster: `phalanx up / down / status / failover / restart`.

Rules of this file: the commands parse flags and print; the logic is the launcher
(`phalanx.ops.launcher`) and the admin client (`phalanx.ops.admin`), imported inside the
commands so that `phalanx --help` stays fast. See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from phalanx.cli.common import data_dir_option, fail
from phalanx.cli.node import placement_options, timing_options
from phalanx.errors import ClusterError, ConfigError, StartupInterrupted


def _cluster_error_types() -> tuple[type[Exception], ...]:
    from phalanx.errors import ClusterError, ConfigError

    return ClusterError, ConfigError


@click.command()
@click.option("--nodes", type=int, default=3, show_default=True)
@click.option("--zones", type=int, default=3, show_default=True,
              help="Zones z1..zZ, assigned to the hosts round robin.")
@click.option("--nodes-per-host", type=int, default=1, show_default=True,
              help="K node processes per synthetic host h1..hH (consecutive nodes): a host is "
                   "a failure domain, so no shard gets two replicas on one host while "
                   "enough hosts exist (docs/hosts.md). --nodes 6 --nodes-per-host 2: 3 "
                   "hosts of 2 nodes.")
@click.option("--region", default="r1", show_default=True)
@click.option("--regions", type=int, default=1, show_default=True,
              help="Spread the zones over this many regions (r1, r2, ...); with "
                   "--active-active: start this many linked clusters, one per region.")
@click.option("--active-active", "active_active", default=None, metavar="PREFIXES",
              help="Key prefixes (comma-separated) of active-active keys: with --regions R, "
                   "start R clusters (dc1..dcR, --nodes each) linked by the region link "
                   "(docs/active-active.md).")
@click.option("--strong-home", default="dc1", show_default=True, metavar="REGION",
              help="With --active-active: the region holding the strong keys (the others "
                   "forward them there, and refuse them when cut off); '' = each region "
                   "keeps its own.")
@data_dir_option
@click.option("--base-port", type=int, default=7000, show_default=True,
              help="Node i listens on RESP base+i, admin base+100+i, peer base+200+i.")
@click.option("--loopback-base", type=int, default=10, show_default=True,
              help="Node i gets the address 127.0.0.(base+i).")
@click.option("--detach", is_flag=True, help="Return once a leader is elected.")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for a leader.")
@click.option("--admin-token", default=None, help="Token for mutating admin endpoints.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
                                               case_sensitive=False), default=None)
@click.option("--peer-tls-dir", type=click.Path(file_okay=False), default=None,
              help="Mutual TLS between the nodes: a test CA and one certificate per node in "
                   "this directory (made when missing, kept otherwise).")
@timing_options
@placement_options
def up(nodes: int, zones: int, nodes_per_host: int, region: str, regions: int, data_dir: str,
       base_port: int, loopback_base: int, detach: bool, timeout: float,
       admin_token: str | None, log_level: str | None, peer_tls_dir: str | None,
       active_active: str | None, strong_home: str, **timing: Any) -> None:
    """Start a local cluster of N node processes and wait for a leader."""
    from phalanx.ops import cluster_file, launcher

    overrides = {"admin_token": admin_token, "log_level": log_level,
                 "peer_tls_dir": peer_tls_dir, **timing}
    if active_active is not None:
        _up_regions(regions, active_active, strong_home, nodes, data_dir, overrides, detach,
                    timeout)
        return
    try:
        plan = launcher.plan_local_cluster(data_dir, nodes=nodes, zones=zones, region=region,
                                           base_port=base_port, loopback_base=loopback_base,
                                           overrides=overrides, regions=regions,
                                           nodes_per_host=nodes_per_host)
    except _cluster_error_types() as error:
        fail(str(error), 2)
    click.echo(f"starting {nodes} node(s) in {Path(data_dir).absolute()} ...")
    # Ctrl-C and SIGTERM only set a flag (no exception can land in the middle of a step):
    # before a leader is agreed, startup stops what it started and fails; afterwards the
    # foreground loop below stops every node.
    stop_requested = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop_requested.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        cluster, leader, processes = launcher.start_local_cluster(
            data_dir, plan, timeout=timeout, cancelled=stop_requested.is_set)
    except StartupInterrupted:
        fail("interrupted; the nodes started so far were stopped", 130)
    except _cluster_error_types() as error:
        fail(str(error))
    _print_cluster(cluster, leader, {p.config.id: p.config.me.host for p in plan})
    if detach:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        click.echo(f"stop it with: phalanx down --data-dir {data_dir}")
        return
    click.echo("running in the foreground; Ctrl-C stops every node")
    reported: set[str] = set()
    while not stop_requested.wait(0.5):
        for node_id, process in processes.items():
            code = process.poll()
            if code is not None and node_id not in reported:
                reported.add(node_id)
                click.echo(f"{node_id} exited with code {code} (not restarted; "
                           f"`phalanx restart {node_id} --data-dir {data_dir}`)")
        try:
            current = cluster_file.read_cluster_file(data_dir)
        except ClusterError:
            continue
        if not launcher.live_nodes(current) and all(p.poll() is not None
                                                    for p in processes.values()):
            click.echo("every node has exited")
            sys.exit(1)
    click.echo("stopping the nodes ...")
    with contextlib.suppress(ClusterError):
        launcher.stop_cluster(data_dir)
    launcher.stop_processes(processes.values())
    click.echo("stopped")


def _up_regions(regions: int, prefixes: str, strong_home: str, nodes: int, data_dir: str,
                overrides: dict[str, Any], detach: bool, timeout: float) -> None:
    """`phalanx up --regions R --active-active PREFIXES`: R linked local clusters."""
    import random

    from phalanx.ops import launcher
    from phalanx.ops.regions import plan_regions

    try:
        plans = plan_regions(data_dir, random.Random(), regions=regions, prefixes=prefixes,
                             nodes=nodes, overrides=overrides, strong_home=strong_home)
    except _cluster_error_types() as error:
        fail(str(error), 2)
    stop_requested = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop_requested.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    started: list[Any] = []
    for name, plan in plans.items():
        region_dir = Path(data_dir) / name
        click.echo(f"starting region {name}: {nodes} node(s) in {region_dir.absolute()} ...")
        try:
            cluster, leader, processes = launcher.start_local_cluster(
                region_dir, plan, timeout=timeout, cancelled=stop_requested.is_set)
        except (StartupInterrupted, ClusterError, ConfigError) as error:
            for _, _, running in started:
                launcher.stop_processes(running.values())
            fail(f"region {name}: {error}; the regions started so far were stopped")
        started.append((region_dir, cluster, processes))
        click.echo(f"region {name} (active-active prefixes: {prefixes})")
        _print_cluster(cluster, leader, {p.config.id: p.config.me.host for p in plan})
    if detach:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        dirs = " ".join(str(region_dir) for region_dir, _, _ in started)
        click.echo(f"stop them with: for d in {dirs}; do phalanx down --data-dir $d; done")
        return
    click.echo("running in the foreground; Ctrl-C stops every region")
    stop_requested.wait()
    click.echo("stopping the regions ...")
    for region_dir, _, processes in started:
        with contextlib.suppress(ClusterError):
            launcher.stop_cluster(region_dir)
        launcher.stop_processes(processes.values())
    click.echo("stopped")


def _print_cluster(cluster: Any, leader: str, hosts: dict[str, str] | None = None) -> None:
    from rich.table import Table

    table = Table(title=f"phalanx cluster: leader {leader}")
    for column in ("node", "zone", "region", "host", "resp", "admin", "pid"):
        table.add_column(column)
    for entry in cluster.nodes:
        name = f"{entry.id} *" if entry.id == leader else entry.id
        table.add_row(name, entry.zone, entry.region, (hosts or {}).get(entry.id) or "-",
                      entry.resp, entry.admin, str(entry.pid))
    _console().print(table)
    first = cluster.nodes[0]
    host, _, port = first.resp.rpartition(":")
    click.echo(f"connect: redis-cli -h {host} -p {port}")


@click.command()
@data_dir_option
@click.option("--grace", type=float, default=5.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
def down(data_dir: str, grace: float) -> None:
    """Stop every node of a local cluster (idempotent)."""
    from phalanx.ops import launcher

    try:
        outcome = launcher.stop_cluster(data_dir, grace=grace)
    except ClusterError as error:
        fail(str(error))
    for node_id, what in outcome.items():
        click.echo(f"{node_id}: {what}")
    if all(what in {"not running", "not phalanx"} for what in outcome.values()):
        click.echo("no node was running")


@click.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw per-node list as JSON.")
@click.option("--timeout", type=float, default=1.0, show_default=True,
              help="Seconds to wait for each node.")
def status(data_dir: str, as_json: bool, timeout: float) -> None:
    """Show each node: zone, host, address, role, term, leader, commit, applied, lag, health."""
    import json

    from phalanx.ops import admin, cluster_file

    try:
        cluster = cluster_file.read_cluster_file(data_dir)
    except ClusterError as error:
        fail(str(error))
    statuses = admin.query_status(cluster.nodes, timeout=timeout)
    if as_json:
        click.echo(json.dumps([s.to_json() for s in statuses], indent=2))
        return
    from rich.table import Table

    lags = admin.lag_by_node(statuses)
    table = Table(title=f"phalanx cluster in {data_dir}")
    for column in ("node", "zone", "host", "address", "role", "term", "leader", "commit",
                   "applied", "lag", "replicas", "health"):
        table.add_column(column)
    for s in statuses:
        raw = s.status or {}
        role = s.role or "-"
        style = {"leader": "bold green", "down": "red"}.get(role if s.reachable else "down", "")
        lag = lags.get(s.entry.id)
        table.add_row(s.entry.id, s.entry.zone, _cell(raw.get("host") or None), s.entry.resp,
                      role_cell(raw) if s.status else role, _cell(raw.get("term")),
                      _cell(raw.get("leader")), _cell(raw.get("commit_index")),
                      _cell(raw.get("applied_index")), _cell(lag),
                      replicas_cell(raw) if s.status else "-", s.health, style=style)
    _console().print(table)
    if not any(s.reachable for s in statuses):
        click.echo("no node is reachable (is the cluster running? `phalanx up`)")
        return
    # The shard map, from the node with the newest copy of it.
    newest = max((s.status for s in statuses if s.status),
                 key=lambda raw: int(raw.get("map_version") or 0))
    shards = newest.get("shards") or []
    if shards:
        shard_table = Table(title=f"shards (map version {newest.get('map_version')}, survival "
                                  f"goal {newest.get('survival_goal')})")
        for column in ("shard", "slots", "leader", "replicas (desired)", "voters", "learners",
                       "redundancy"):
            shard_table.add_column(column)
        for shard in shards:
            slots = ",".join(f"{a}-{b}" for a, b in shard.get("slots", []))
            healthy = bool(shard.get("fully_replicated"))
            shard_table.add_row(
                str(shard.get("id")), slots, _cell(shard.get("leader")),
                ",".join(shard.get("replicas", [])), ",".join(shard.get("voters", [])),
                ",".join(shard.get("learners", [])) or "-",
                "full" if healthy else "REPAIRING", style="" if healthy else "yellow")
        _console().print(shard_table)
    _print_region_links(statuses)
    states = {n.get("id"): n.get("state") for n in newest.get("nodes") or []}
    unusual = {node: state for node, state in states.items() if state != "alive"}
    if unusual:
        click.echo("node states: " + ", ".join(f"{n}={st}" for n, st in sorted(unusual.items())))


def _print_region_links(statuses: Any) -> None:
    """Active-active regions (docs/active-active.md): each node's link to each other region
    (a node pulls for the shards it leads; the others show `idle (leads no shard)`)."""
    from rich.table import Table

    rows = [(s.entry.id, link) for s in statuses
            for link in ((s.status or {}).get("active_active") or {}).get("links") or []]
    if not rows:
        return
    table = Table(title="region links (active-active)")
    for column in ("node", "from region", "state", "lag entries", "lag s", "last pull s ago",
                   "last error"):
        table.add_column(column)
    for node_id, link in rows:
        state = str(link.get("state"))
        table.add_row(node_id, _cell(link.get("region")), state, _cell(link.get("lag_entries")),
                      _cell(link.get("lag_seconds")), _cell(link.get("last_ok_seconds_ago")),
                      str(link.get("last_error") or "-"),
                      style={"up": "green", "down": "red"}.get(state, ""))
    _console().print(table)


def _console() -> Any:
    """A rich console; when output is not a terminal, wide enough that no column is cut."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=200)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def role_cell(raw: Mapping[str, Any]) -> str:
    """The role column: the node's role in the map's first shard (the top-level role of its
    /status), or "no replica" when it holds none of that shard (a spare of a 1-shard cluster
    with more nodes than replicas is a member all the same: see the replicas column)."""
    role = raw.get("role")
    if role == "none":
        return "no replica"
    return "-" if role is None else str(role)


def replicas_cell(raw: Mapping[str, Any]) -> str:
    """The replicas column: the shards this node holds a replica of (its /status `local`), and
    "meta" when it votes in the placement driver's group ("meta learner" while it only learns),
    e.g. "1,2,meta"; "-" when it holds nothing yet."""
    local = raw.get("local")
    shards = [key for key in local if key != "0"] if isinstance(local, Mapping) else []
    held = sorted(shards, key=lambda key: (len(key), key))
    meta = raw.get("meta")
    node = raw.get("node")
    if isinstance(meta, Mapping) and node in (meta.get("voters") or []):
        held.append("meta")
    elif isinstance(meta, Mapping) and node in (meta.get("learners") or []):
        held.append("meta learner")
    return ",".join(held) or "-"


@click.command()
@data_dir_option
@click.option("--to", "to", default=None, help="The node that should become the leader.")
@click.option("--admin-token", default=None, envvar="PHALANX_ADMIN_TOKEN",
              help="Admin token (default: the leader's config file).")
@click.option("--timeout", type=float, default=10.0, show_default=True)
@click.option("--shard", type=int, default=None,
              help="The shard whose leadership moves (default: the first shard).")
def failover(data_dir: str, to: str | None, admin_token: str | None, timeout: float,
             shard: int | None) -> None:
    """Move leadership away from the current leader (to --to, if given)."""
    from phalanx.ops import admin, cluster_file

    try:
        cluster = cluster_file.read_cluster_file(data_dir)
        result = admin.failover(cluster.nodes, to, token=admin_token, timeout=timeout,
                                shard=shard)
    except ClusterError as error:
        fail(str(error))
    what = f" of shard {shard}" if shard is not None else ""
    click.echo(f"leadership{what} moved from {result.old_leader} to {result.new_leader} "
               f"in {result.elapsed_ms:.0f} ms")


@click.command()
@click.argument("node_id", metavar="NODE")
@data_dir_option
@click.option("--wait/--no-wait", default=False,
              help="Wait until the node answers on its admin API.")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def restart(node_id: str, data_dir: str, wait: bool, timeout: float) -> None:
    """Start a stopped node again with the command recorded in cluster.json."""
    from phalanx.ops import cluster_file, launcher

    try:
        entry = launcher.restart_node(data_dir, node_id)
    except ClusterError as error:
        fail(str(error))
    click.echo(f"{node_id} started (pid {entry.pid})")
    if wait:
        if launcher.wait_until_answering(entry, timeout, poll=0.1):
            click.echo(f"{node_id} is answering on {entry.admin}")
            return
        log = Path(entry.data_dir) / cluster_file.NODE_LOG_FILE
        fail(f"{node_id} did not come up within {timeout:g} s\n{launcher.tail(log)}")

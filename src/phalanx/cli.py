"""The `phalanx` command line.

Rules of this file:
- Commands parse flags and print; the logic lives in the library (`phalanx.ops.launcher` for
  the local-cluster commands, `phalanx.server.node` for `node`, `phalanx.sim` for `sim`).
- A configuration error is one line naming the field, exit code 2 (like a usage error). Other
  failures print one clear line (plus context such as log tails) and exit 1; no tracebacks for
  expected failures.
- Heavy modules are imported inside the commands, so `phalanx --help` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import click


@click.group()
@click.version_option(package_name="phalanx")
def main() -> None:
    """phalanx: a fault-tolerant, Redis-compatible key-value store."""


@main.command()
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the report (default ./reports/demo-<timestamp>).")
@click.option("--seed", type=int, default=None, help="Seed of the workload (default: random).")
def demo(report_dir: str | None, seed: int | None) -> None:
    """Five nodes over three zones, a live workload, real faults; what happened, in plain words."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.rule import Rule

    from phalanx.chaos import console as view
    from phalanx.chaos.nemesis import demo_plan
    from phalanx.chaos.runner import RunConfig, run_chaos, write_result

    console = Console(stderr=True)
    seed = seed if seed is not None else int.from_bytes(os.urandom(3), "big")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    directory = Path(report_dir or f"reports/demo-{stamp}")
    console.print(Rule("[bold cyan]phalanx demo"))
    console.print(
        "A 5-node phalanx cluster over 3 zones on this machine, and 4 clients sending reads, "
        "writes, compare-and-sets and set-adds to every node. While they run: the leader is "
        "killed (kill -9) and restarted, a follower is paused (SIGSTOP) and resumed, and a whole "
        "zone is cut off from the others. Every request is recorded; at the end the history is "
        "checked for linearizability and every acknowledged write is looked for on every node.\n")
    config = RunConfig(scenario="demo", duration_s=36.0, seed=seed, nodes=5, zones=3,
                       clients=4, rate_ops_s=150.0)
    try:
        with view.LiveView("phalanx demo", console) as live:
            artifacts = run_chaos(config, on_progress=live, slots=demo_plan())
    except KeyboardInterrupt:
        _fail("interrupted; the cluster was stopped", 130)
    except Exception as error:  # the demo explains any failure in one line
        _fail(f"the demo failed: {error}")
    result = artifacts.result
    view.print_summary(result, console)
    console.print(Rule("[bold]what happened"))
    for line in view.story_lines(result):
        console.print(f"  • {line}")
    json_path, html_path = write_result(result, directory)
    where = html_path if html_path is not None else json_path
    good = result["lost_acknowledged_writes"] == 0 and result["linearizable"]
    console.print(Panel(f"report: [bold]{where.absolute()}[/]\n"
                        f"data:   {json_path.absolute()}\n"
                        f"again, longer or harsher: phalanx chaos run --scenario mixed "
                        f"--duration 60s --report DIR",
                        border_style="green" if good else "red"))
    sys.exit(0 if good else 1)


def _duration(text: str) -> float:
    """'60s', '2m', '90' -> seconds."""
    text = text.strip().lower()
    scale = 1.0
    if text.endswith("ms"):
        text, scale = text[:-2], 0.001
    elif text.endswith("s"):
        text = text[:-1]
    elif text.endswith("m"):
        text, scale = text[:-1], 60.0
    try:
        value = float(text) * scale
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 60s, 2m)") from None
    if value <= 0:
        raise click.BadParameter("must be positive")
    return value


@main.group()
def chaos() -> None:
    """The chaos lab: real faults against a cluster; availability, RTO, RPO, consistency."""


def _scenario_names() -> list[str]:
    # Kept in step with phalanx.chaos.nemesis.SCENARIOS (a test checks it); listed here so that
    # `phalanx --help` does not import the lab.
    return ["leader-kill", "follower-kill", "random-kill", "leader-pause", "follower-pause",
            "partition-leader", "partition-split", "partition-bridge", "latency", "zone-outage",
            "region-outage", "node-lost", "partition-zone", "rolling-restart", "mixed"]


@chaos.command("run")
@click.option("--scenario", required=True, type=click.Choice(_scenario_names()))
@click.option("--duration", "duration_text", default="60s", show_default=True,
              help="How long the workload runs (60s, 2m).")
@click.option("--seed", type=int, default=None, help="Seed of the schedule (default: random).")
@click.option("--nodes", type=int, default=None,
              help="Nodes of the cluster the lab starts [default: 5; region-outage: 9; "
                   "node-lost: replicas per shard + 2, so a spare node is left to heal onto].")
@click.option("--zones", type=int, default=None,
              help="Zones [default: 3, at least --regions; region-outage: 2 per region].")
@click.option("--regions", type=int, default=None,
              help="Regions; zone zK is in region r((K-1) % R + 1) [default: 1; "
                   "region-outage: 3, and it needs >= 3].")
@click.option("--shards", type=int, default=None,
              help="Data shards (each a Raft group) [default: the node's, 1].")
@click.option("--survival-goal", "survival_goal", type=click.Choice(["zone", "region"]),
              default=None, help="zone: 3 replicas in 3 zones; region: 5 replicas, no region "
                                 "holding a quorum [default: zone; region-outage: region].")
@click.option("--dead-after-ms", "dead_after_ms", type=int, default=None,
              help="Silence after which the cluster declares a node dead and re-creates its "
                   "replicas elsewhere [default: the node's, 60000; node-lost: 3000, so the "
                   "healing happens within the run].")
@click.option("--target", type=click.Path(), default=None,
              help="Run against this running cluster (DIR/cluster.json) instead of starting one.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Write DIR/result.json (and DIR/report.html).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--mode", type=click.Choice(["local", "netns"]), default="local",
              show_default=True, help="local: loopback processes; netns: namespaces (root).")
@click.option("--clients", type=int, default=4, show_default=True)
@click.option("--rate", "rate", type=float, default=200.0, show_default=True,
              help="Requests per second over all clients.")
def chaos_run(scenario: str, duration_text: str, seed: int | None, nodes: int | None,
              zones: int | None, regions: int | None, shards: int | None,
              survival_goal: str | None, dead_after_ms: int | None, target: str | None,
              report_dir: str | None, as_json: bool, mode: str, clients: int,
              rate: float) -> None:
    """Run one scenario and measure availability, RTO, RPO, linearizability and the time to
    full redundancy after each fault."""
    import json

    from rich.console import Console

    from phalanx.chaos import console as view
    from phalanx.chaos.runner import run_chaos, scenario_config, write_result

    duration = _duration(duration_text)
    if clients < 1 or rate <= 0:
        _fail("--clients must be >= 1 and --rate > 0", 2)
    seed = seed if seed is not None else int.from_bytes(os.urandom(3), "big")
    try:
        config = scenario_config(scenario, duration_s=duration, seed=seed, nodes=nodes,
                                 zones=zones, regions=regions, shards=shards,
                                 survival_goal=survival_goal, dead_after_ms=dead_after_ms,
                                 mode=mode, target=target, clients=clients, rate_ops_s=rate)
    except ValueError as error:
        _fail(str(error), 2)
    console = Console(stderr=True)
    try:
        if as_json:
            artifacts = run_chaos(config)
        else:
            console.print(f"chaos run: {scenario}, {duration:g} s, seed {seed} "
                          f"(replay: --seed {seed})")
            with view.LiveView(f"phalanx chaos: {scenario}", console) as live:
                artifacts = run_chaos(config, on_progress=live)
    except KeyboardInterrupt:
        _fail("interrupted; what the run started was stopped", 130)
    except Exception as error:  # one clear line, no traceback
        _fail(f"chaos run failed: {error}")
    result = artifacts.result
    if report_dir is not None:
        json_path, html_path = write_result(result, report_dir)
        if not as_json:
            console.print(f"report: {html_path or json_path}")
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        view.print_summary(result, console)
        for line in view.story_lines(result):
            console.print(f"  • {line}")
    good = result["lost_acknowledged_writes"] == 0 and result["linearizable"]
    sys.exit(0 if good else 1)


def _run_seed_quiet(args: tuple[int, str | None]) -> object:
    from phalanx.sim import run_seed

    seed, bug = args
    return run_seed(seed, bug=bug)


@main.command()
@click.option("--seed", type=int, default=None, help="Replay exactly this seed.")
@click.option("--seeds", type=int, default=None, help="Run this many seeds.")
@click.option("--start", type=int, default=None,
              help="First seed of a --seeds run (default: random, printed).")
@click.option("--jobs", type=int, default=0, help="Worker processes (default: CPU count).")
@click.option("--trace/--no-trace", default=False, help="Print the event trace of a --seed run.")
@click.option("--trace-lines", type=int, default=400, help="How many trace lines to keep.")
@click.option("--bug", type=click.Choice(["ack-before-fsync", "read-without-confirm"]),
              default=None, help="Plant a known bug in the simulated node (to show it is caught).")
@click.option("--stop-on-failure/--keep-going", default=False)
def sim(seed: int | None, seeds: int | None, start: int | None, jobs: int, trace: bool,
        trace_lines: int, bug: str | None, stop_on_failure: bool) -> None:
    """Run the deterministic simulator: the real Raft core under seeded faults."""
    from phalanx.sim import SeedResult, run_seed

    if seed is not None:
        result = run_seed(seed, trace=trace, bug=bug, trace_lines=trace_lines)
        click.echo(f"seed {seed}: plan {result.plan}")
        if trace:
            for line in result.trace:
                click.echo(line)
        _print_result(result)
        sys.exit(0 if result.ok else 1)
    count = seeds or 100
    first = start if start is not None else int.from_bytes(os.urandom(4), "big")
    click.echo(f"running {count} seeds from {first} (replay any with `phalanx sim --seed N`)")
    began = time.monotonic()
    failures: list[SeedResult] = []
    events = operations = 0
    workers = jobs or os.cpu_count() or 1
    work = [(first + offset, bug) for offset in range(count)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for done, outcome in enumerate(pool.map(_run_seed_quiet, work, chunksize=4), start=1):
            assert isinstance(outcome, SeedResult)
            result = outcome
            events += result.events
            operations += result.operations
            if not result.ok:
                failures.append(result)
                click.echo(f"FAIL seed {result.seed}: {result.error.splitlines()[0]}")
                click.echo(f"     replay: {result.replay_command()}")
                if stop_on_failure:
                    pool.shutdown(cancel_futures=True)
                    break
            if done % 100 == 0:
                click.echo(f"  {done}/{count} seeds, {len(failures)} failed, "
                           f"{time.monotonic() - began:.0f} s")
    elapsed = time.monotonic() - began
    click.echo(f"{count} seeds, {len(failures)} failed, {events} events, {operations} client "
               f"operations checked, in {elapsed:.1f} s")
    if failures:
        click.echo("failing seeds: " + " ".join(str(f.seed) for f in failures))
        sys.exit(1)


def _print_result(result: object) -> None:
    from phalanx.sim import SeedResult

    assert isinstance(result, SeedResult)
    stats = " ".join(f"{key}={value}" for key, value in result.stats.items())
    if result.ok:
        click.echo(f"seed {result.seed}: ok ({result.events} events, {result.operations} client "
                   f"operations, {result.simulated_ms:.0f} simulated ms; {stats})")
    else:
        click.echo(f"seed {result.seed}: FAILED\n{result.error}")
        click.echo(f"replay: {result.replay_command()}")


# --------------------------------------------------------------------------- node and cluster


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"phalanx: {message}", err=True)
    sys.exit(code)


def _timing_options(function: Any) -> Any:
    """Flags shared by `node` and `up`: the timing and safety knobs of a node (None = default)."""
    options = [
        click.option("--tick-ms", type=int, default=None, help="Length of one Raft tick (ms)."),
        click.option("--heartbeat-ticks", type=int, default=None,
                     help="Heartbeat interval in ticks."),
        click.option("--election-ticks", type=int, default=None,
                     help="Minimum election timeout in ticks."),
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


def _placement_options(function: Any) -> Any:
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


@main.command()
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
@_timing_options
@_placement_options
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
        _fail(f"config error: {error}", 2)
    _configure_logging(config.log_level, config.id)
    try:
        from phalanx.server.node import check_not_a_wiped_member, run_node
    except ImportError as error:
        _fail(f"the node is not available in this build ({error})")
    try:
        check_not_a_wiped_member(config)
    except ConfigError as error:
        _fail(f"refusing to start: {error}", 2)
    run_node(config)


def _cluster_error_types() -> tuple[type[Exception], ...]:
    from phalanx.errors import ConfigError
    from phalanx.ops.cluster_file import ClusterError

    return ClusterError, ConfigError


data_dir_option = click.option("--data-dir", required=True, type=click.Path(file_okay=False),
                               help="Directory of the local cluster (holds cluster.json).")


@main.command()
@click.option("--nodes", type=int, default=3, show_default=True)
@click.option("--zones", type=int, default=3, show_default=True,
              help="Zones z1..zZ, assigned round robin.")
@click.option("--region", default="r1", show_default=True)
@click.option("--regions", type=int, default=1, show_default=True,
              help="Spread the zones over this many regions (r1, r2, ...).")
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
@_timing_options
@_placement_options
def up(nodes: int, zones: int, region: str, regions: int, data_dir: str, base_port: int,
       loopback_base: int, detach: bool, timeout: float, admin_token: str | None,
       log_level: str | None, **timing: Any) -> None:
    """Start a local cluster of N node processes and wait for a leader."""
    from phalanx.ops import cluster_file, launcher

    overrides = {"admin_token": admin_token, "log_level": log_level, **timing}
    try:
        plan = launcher.plan_local_cluster(data_dir, nodes=nodes, zones=zones, region=region,
                                           base_port=base_port, loopback_base=loopback_base,
                                           overrides=overrides, regions=regions)
    except _cluster_error_types() as error:
        _fail(str(error), 2)
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
    except launcher.StartupInterrupted:
        _fail("interrupted; the nodes started so far were stopped", 130)
    except _cluster_error_types() as error:
        _fail(str(error))
    _print_cluster(cluster, leader)
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
        except cluster_file.ClusterError:
            continue
        if not launcher.live_nodes(current) and all(p.poll() is not None
                                                    for p in processes.values()):
            click.echo("every node has exited")
            sys.exit(1)
    click.echo("stopping the nodes ...")
    with contextlib.suppress(cluster_file.ClusterError):
        launcher.stop_cluster(data_dir)
    launcher.stop_processes(processes.values())
    click.echo("stopped")


def _print_cluster(cluster: Any, leader: str) -> None:
    from rich.table import Table

    table = Table(title=f"phalanx cluster: leader {leader}")
    for column in ("node", "zone", "region", "resp", "admin", "pid"):
        table.add_column(column)
    for entry in cluster.nodes:
        name = f"{entry.id} *" if entry.id == leader else entry.id
        table.add_row(name, entry.zone, entry.region, entry.resp, entry.admin, str(entry.pid))
    _console().print(table)
    first = cluster.nodes[0]
    host, _, port = first.resp.rpartition(":")
    click.echo(f"connect: redis-cli -h {host} -p {port}")


@main.command()
@data_dir_option
@click.option("--grace", type=float, default=5.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
def down(data_dir: str, grace: float) -> None:
    """Stop every node of a local cluster (idempotent)."""
    from phalanx.ops import cluster_file, launcher

    try:
        outcome = launcher.stop_cluster(data_dir, grace=grace)
    except cluster_file.ClusterError as error:
        _fail(str(error))
    for node_id, what in outcome.items():
        click.echo(f"{node_id}: {what}")
    if all(what in {"not running", "not phalanx"} for what in outcome.values()):
        click.echo("no node was running")


@main.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw per-node list as JSON.")
@click.option("--timeout", type=float, default=1.0, show_default=True,
              help="Seconds to wait for each node.")
def status(data_dir: str, as_json: bool, timeout: float) -> None:
    """Show each node: zone, address, role, term, leader, commit, applied, lag, health."""
    import json

    from phalanx.ops import admin, cluster_file

    try:
        cluster = cluster_file.read_cluster_file(data_dir)
    except cluster_file.ClusterError as error:
        _fail(str(error))
    statuses = admin.query_status(cluster.nodes, timeout=timeout)
    if as_json:
        click.echo(json.dumps([s.to_json() for s in statuses], indent=2))
        return
    from rich.table import Table

    lags = admin.lag_by_node(statuses)
    table = Table(title=f"phalanx cluster in {data_dir}")
    for column in ("node", "zone", "address", "role", "term", "leader", "commit", "applied",
                   "lag", "health"):
        table.add_column(column)
    for s in statuses:
        raw = s.status or {}
        role = s.role or "-"
        style = {"leader": "bold green", "down": "red"}.get(role if s.reachable else "down", "")
        lag = lags.get(s.entry.id)
        table.add_row(s.entry.id, s.entry.zone, s.entry.resp, role, _cell(raw.get("term")),
                      _cell(raw.get("leader")), _cell(raw.get("commit_index")),
                      _cell(raw.get("applied_index")), _cell(lag), s.health, style=style)
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
    states = {n.get("id"): n.get("state") for n in newest.get("nodes") or []}
    unusual = {node: state for node, state in states.items() if state != "alive"}
    if unusual:
        click.echo("node states: " + ", ".join(f"{n}={st}" for n, st in sorted(unusual.items())))


def _console() -> Any:
    """A rich console; when output is not a terminal, wide enough that no column is cut."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=200)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


@main.command()
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
    except cluster_file.ClusterError as error:
        _fail(str(error))
    what = f" of shard {shard}" if shard is not None else ""
    click.echo(f"leadership{what} moved from {result.old_leader} to {result.new_leader} "
               f"in {result.elapsed_ms:.0f} ms")


def _any_admin(data_dir: str, path: str, *, method: str = "GET",
               body: dict[str, Any] | None = None, token: str | None = None,
               timeout: float = 10.0) -> Any:
    """Call `path` on the first node of the local cluster that answers; exits on failure."""
    from phalanx.ops import admin, cluster_file

    try:
        cluster = cluster_file.read_cluster_file(data_dir)
    except cluster_file.ClusterError as error:
        _fail(str(error))
    last = "no node has an admin address"
    for entry in cluster.nodes:
        if not entry.admin:
            continue
        secret = token if token is not None else admin.admin_token_for(entry)
        try:
            code, payload = admin.admin_request(entry.admin, path, method=method, body=body,
                                                token=secret, timeout=timeout)
        except OSError as error:
            last = f"{entry.id}: {error}"
            continue
        if code == 200:
            return payload
        message = payload.get("error") if isinstance(payload, dict) else payload
        if code in (400, 401, 404):
            _fail(f"{entry.id} refused: {message}", 2)
        last = f"{entry.id}: HTTP {code}: {message}"
    _fail(f"no node could do it ({last})")


def _node_state_command(verb: str, state: str, node_id: str, data_dir: str,
                        admin_token: str | None) -> None:
    result = _any_admin(data_dir, f"/{verb}", method="POST", body={"node": node_id},
                        token=admin_token)
    click.echo(f"{node_id}: {state} ({result.get('reply', 'OK')}); "
               f"watch the progress with `phalanx status --data-dir {data_dir}`")


admin_token_option = click.option("--admin-token", default=None, envvar="PHALANX_ADMIN_TOKEN",
                                  help="Admin token (default: from the node's config file).")


@main.command()
@click.argument("node_id", metavar="NODE")
@data_dir_option
@admin_token_option
def drain(node_id: str, data_dir: str, admin_token: str | None) -> None:
    """Move every replica and leader off NODE (it stays a member; `readmit` undoes it)."""
    _node_state_command("drain", "draining", node_id, data_dir, admin_token)


@main.command()
@click.argument("node_id", metavar="NODE")
@data_dir_option
@admin_token_option
def decommission(node_id: str, data_dir: str, admin_token: str | None) -> None:
    """Drain NODE, then remove it from the cluster once it holds nothing."""
    _node_state_command("decommission", "decommissioned", node_id, data_dir, admin_token)


@main.command()
@click.argument("node_id", metavar="NODE")
@data_dir_option
@admin_token_option
def readmit(node_id: str, data_dir: str, admin_token: str | None) -> None:
    """Let a drained node take replicas again."""
    _node_state_command("readmit", "alive", node_id, data_dir, admin_token)


@main.command()
@data_dir_option
@click.option("--shard", type=int, required=True, help="The shard to split.")
@click.option("--at", "at", type=int, default=None,
              help="First slot of the new shard (default: the middle of the largest range).")
@admin_token_option
def split(data_dir: str, shard: int, at: int | None, admin_token: str | None) -> None:
    """Split a shard online: the slots from --at on move to a new shard on the same replicas."""
    shards = _cluster_shards(data_dir)
    _require_shard(shards, shard)
    leader, code, payload = _post_to_shard_leader(data_dir, shards[shard], "/split",
                                                  {"shard": shard, "at": at}, admin_token, 15.0)
    if leader is None:
        _fail(f"shard {shard} has no known leader with an admin address right now; retry")
    if code != 200:
        message = payload.get("error") if isinstance(payload, dict) else payload
        _fail(f"{leader} refused the split: {message}")
    first, last = payload["slots"]
    click.echo(f"shard {shard} split: slots {first}-{last} are now shard {payload['new_shard']} "
               f"(same replicas; the placement driver spreads them from here)")


def _cluster_shards(data_dir: str) -> dict[Any, dict[str, Any]]:
    """The shards of the newest map a reachable node shows, by id (with the map's nodes)."""
    status = _any_admin(data_dir, "/status")
    nodes = {n.get("id"): n for n in status.get("nodes") or []}
    return {s.get("id"): {**s, "_nodes": nodes} for s in status.get("shards") or []}


def _require_shard(shards: dict[Any, dict[str, Any]], shard: int) -> None:
    if shard not in shards:
        _fail(f"no shard {shard} (shards: {', '.join(str(s) for s in sorted(shards))})", 2)


def _post_to_shard_leader(data_dir: str, shard: dict[str, Any], path: str,
                          body: dict[str, Any], admin_token: str | None,
                          timeout: float) -> tuple[str | None, int, Any]:
    """POST `body` to the admin API of the shard's leader: (leader or None when unknown, HTTP
    code, payload); a connection failure is code 0 with the error as payload."""
    from phalanx.ops import admin, cluster_file

    leader = shard.get("leader")
    address = (shard["_nodes"].get(leader) or {}).get("admin") if leader else None
    if not address:
        return None, 0, {"error": "no known leader"}
    try:
        cluster = cluster_file.read_cluster_file(data_dir)
        entry = next((e for e in cluster.nodes if e.id == leader), None)
        token = admin_token if admin_token is not None else (
            admin.admin_token_for(entry) if entry is not None else "")
        code, payload = admin.admin_request(address, path, method="POST", body=body,
                                            token=token, timeout=timeout)
    except (OSError, cluster_file.ClusterError) as error:
        return str(leader), 0, {"error": f"cannot reach {leader}: {error}"}
    return str(leader), code, payload


@main.command()
@data_dir_option
@click.option("--shard", type=int, required=True, help="The shard that stays.")
@click.option("--with", "source", type=int, required=True, help="The shard merged into it.")
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="How long to wait for replicas to be co-located and the merge to finish.")
@admin_token_option
def merge(data_dir: str, shard: int, source: int, timeout: float,
          admin_token: str | None) -> None:
    """Merge shard --with into --shard online (their replicas are co-located first)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        shards = _cluster_shards(data_dir)
        if source not in shards and shard in shards:
            click.echo(f"shard {source} merged into shard {shard}")
            return
        _require_shard(shards, shard)
        leader, code, payload = _post_to_shard_leader(
            data_dir, shards[shard], "/merge", {"shard": shard, "source": source},
            admin_token, 30.0)
        if leader is not None:
            if code == 200:
                click.echo(f"shard {source} merged into shard {shard}: slots "
                           f"{payload.get('slots')}")
                return
            if code == 400:
                _fail(f"refused: {payload.get('error')}", 2)
            detail = payload.get("detail") or payload.get("error") if isinstance(
                payload, dict) else payload
            if detail != last:
                click.echo(f"... {detail}")
                last = str(detail)
        time.sleep(1.0)
    _fail(f"the merge did not finish within {timeout:g} s ({last})")


@main.command()
@data_dir_option
@click.option("--node-availability", type=float, default=0.99, show_default=True,
              help="Availability of one node (e.g. 0.99).")
@click.option("--zone-availability", type=float, default=0.999, show_default=True)
@click.option("--region-availability", type=float, default=0.9999, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON.")
def analyze(data_dir: str, node_availability: float, zone_availability: float,
            region_availability: float, as_json: bool) -> None:
    """Single points of failure and estimated nines of the running cluster's placement."""
    import json

    from phalanx.placement import format_analysis

    report = _any_admin(data_dir, f"/analyze?node={node_availability}&zone={zone_availability}"
                                  f"&region={region_availability}")
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_analysis(report))


@main.command("haproxy-config")
@data_dir_option
@click.option("--port", type=int, default=6400, show_default=True,
              help="RESP frontend, balanced over every node that passes GET /ready.")
@click.option("--writer-port", type=int, default=None,
              help="Also a frontend reaching only the first shard's leader (GET /primary). "
                   "Meaningful for SINGLE-SHARD clusters only: with several shards most keys "
                   "are forwarded anyway; use --port there.")
@click.option("--bind", "bind_address", default="127.0.0.1", show_default=True,
              help="Address the frontends listen on ('*' for every address).")
@click.option("--stats-port", type=int, default=None, help="Also an HTTP stats page.")
@click.option("--stats-socket", default=None, help="Also a stats socket (for `show stat`).")
@click.option("--check-inter-ms", type=int, default=100, show_default=True,
              help="Health-check interval.")
@click.option("--fall", type=int, default=2, show_default=True,
              help="Failed checks before a node is marked DOWN.")
@click.option("--rise", type=int, default=2, show_default=True,
              help="Passed checks before a node is marked UP again.")
@click.option("--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Write the config to this file (default: print it).")
def haproxy_config(data_dir: str, port: int, writer_port: int | None, bind_address: str,
                   stats_port: int | None, stats_socket: str | None, check_inter_ms: int,
                   fall: int, rise: int, output: str | None) -> None:
    """Write an HAProxy config (TCP) for the cluster: health checks on each node's admin port.

    The nodes come from /status of a running node (the cluster map), else from cluster.json.
    """
    from phalanx.errors import PhalanxError
    from phalanx.ops.haproxy import discover_nodes, render_config

    try:
        nodes, source = discover_nodes(data_dir)
        text = render_config(nodes, frontend_port=port, writer_port=writer_port,
                             bind_address=bind_address, stats_port=stats_port,
                             stats_socket=stats_socket, check_inter_ms=check_inter_ms,
                             fall=fall, rise=rise)
    except PhalanxError as error:
        _fail(str(error), 2)
    if output is None:
        click.echo(text, nl=False)
        return
    Path(output).write_text(text)
    click.echo(f"wrote {output}: {len(nodes)} nodes from {source}; check it with "
               f"`haproxy -c -f {output}`, run it with `haproxy -W -db -f {output}`", err=True)


@main.command()
@click.argument("node_id", metavar="NODE")
@data_dir_option
@click.option("--wait/--no-wait", default=False,
              help="Wait until the node answers on its admin API.")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def restart(node_id: str, data_dir: str, wait: bool, timeout: float) -> None:
    """Start a stopped node again with the command recorded in cluster.json."""
    from phalanx.ops import admin, cluster_file, launcher

    try:
        entry = launcher.restart_node(data_dir, node_id)
    except cluster_file.ClusterError as error:
        _fail(str(error))
    click.echo(f"{node_id} started (pid {entry.pid})")
    if wait:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if admin.query_status([entry], timeout=0.5)[0].reachable:
                click.echo(f"{node_id} is answering on {entry.admin}")
                return
            if not launcher.pid_alive(entry.pid):
                break
            time.sleep(0.1)
        log = Path(entry.data_dir) / cluster_file.NODE_LOG_FILE
        _fail(f"{node_id} did not come up within {timeout:g} s\n{launcher.tail(log)}")


@main.command()
@click.option("--quick", is_flag=True,
              help="A tiny workload (1 repeat, a few thousand requests, 1 failover try): "
                   "under 90 s. Writes to benchmarks/results/quick/ unless --output is given.")
@click.option("--repeats", type=int, default=None,
              help="Rounds over every target (default 3; 1 with --quick).")
@click.option("--output", "output", type=click.Path(file_okay=False), default=None,
              help="Where RESULTS.md and results.json go (default: the benchmarks/ directory).")
@click.option("--only", default="writes,reads,failover,sigstop,etcd,pysyncobj,latency,scale,"
                              "recovery,memory,soak",
              show_default=True,
              help="Comma-separated sections to run: writes, reads, failover, sigstop, etcd, "
                   "pysyncobj, latency, scale, recovery, memory, soak.")
@click.option("--soak-seconds", type=float, default=None,
              help="Length of the soak section's steady workload (default 120; 10 with "
                   "--quick; 3600 for the issue's one-hour check).")
def bench(quick: bool, repeats: int | None, output: str | None, only: str,
          soak_seconds: float | None) -> None:
    """phalanx vs every installed peer (redis-server AOF, Redis Sentinel, etcd, PySyncObj),
    plus latency at a fixed rate, scale, recovery, memory and a soak (benchmarks/README.md).

    Needs a source checkout (the suite lives in benchmarks/phalanx_bench.py) and redis-tools.
    """
    import importlib

    benchmarks = Path(__file__).resolve().parents[2] / "benchmarks"
    if not (benchmarks / "phalanx_bench.py").is_file():
        _fail(f"the benchmark suite is not here ({benchmarks}/phalanx_bench.py): run "
              "`phalanx bench` from a source checkout (pip install -e .)")
    sys.path.insert(0, str(benchmarks))
    suite = importlib.import_module("phalanx_bench")
    sections = tuple(part.strip() for part in only.split(",") if part.strip())
    unknown = set(sections) - set(suite.SECTIONS)
    if unknown or not sections:
        _fail(f"--only: unknown section(s) {', '.join(sorted(unknown)) or '(none given)'} "
              f"(choose from {', '.join(suite.SECTIONS)})", 2)
    settings = suite.Settings.quick_settings() if quick else suite.Settings()
    settings.only = sections
    if repeats is not None:
        if repeats < 1:
            _fail("--repeats: must be >= 1", 2)
        settings.repeats = repeats
    if soak_seconds is not None:
        if soak_seconds <= 0:
            _fail("--soak-seconds: must be > 0", 2)
        settings.soak_seconds = soak_seconds
    default_dir = benchmarks / "results" / "quick" if quick else benchmarks
    directory = Path(output) if output else default_dir
    document = suite.run_suite(settings, directory)
    suite.print_summary(document)
    click.echo(f"wrote {directory / 'RESULTS.md'} and {directory / 'results.json'}", err=True)
    if document["incomplete"]:
        _fail(document["incomplete"])


if __name__ == "__main__":
    main()

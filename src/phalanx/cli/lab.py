"""`phalanx demo` and `phalanx chaos run`: the chaos lab from the command line.

Rules of this file: the commands parse flags and print; the lab itself is `phalanx.chaos`
(imported inside the commands, so `phalanx --help` does not load it). See docs/architecture.md.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from phalanx.cli.common import fail


@click.command()
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the report (default ./reports/demo-<timestamp>).")
@click.option("--seed", type=int, default=None, help="Seed of the workload (default: random).")
@click.option("--client", "client", type=click.Choice(["raw", "smart", "haproxy"]),
              default="smart", show_default=True,
              help="smart: the application view, phalanx's own client retrying under its rules "
                   "(a deadline per call); raw: one node per request, no retry; haproxy: "
                   "through a real HAProxy.")
def demo(report_dir: str | None, seed: int | None, client: str) -> None:
    """Five nodes over three zones, a live workload, real faults; what happened, in plain words."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.rule import Rule

    from phalanx.chaos import console as view
    from phalanx.chaos.nemesis import demo_plan
    from phalanx.chaos.pidfile import Interrupted, stop_on_signals
    from phalanx.chaos.result import write_result
    from phalanx.chaos.run_config import RunConfig
    from phalanx.chaos.runner import run_chaos

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
        "checked for linearizability and every acknowledged write is looked for on every node.")
    console.print(_client_sentence(client) + "\n")
    config = RunConfig(scenario="demo", duration_s=48.0, seed=seed, nodes=5, zones=3,
                       clients=4, rate_ops_s=150.0, client=client)
    try:
        with stop_on_signals(), view.LiveView("phalanx demo", console) as live:
            artifacts = run_chaos(config, on_progress=live, slots=demo_plan())
    except Interrupted as interrupted:
        fail(f"{interrupted}; the cluster was stopped", 128 + interrupted.signum)
    except KeyboardInterrupt:
        fail("interrupted; the cluster was stopped", 130)
    except Exception as error:  # the demo explains any failure in one line
        fail(f"the demo failed: {error}")
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



def _progress_lines(every_s: float) -> Any:
    """An `on_progress` that prints one plain line every `every_s` seconds (and each phase)."""
    last = [-every_s]
    phase = ["running"]

    def show(progress: Any) -> None:
        if progress.elapsed_s - last[0] < every_s and progress.phase == phase[0]:
            return
        last[0], phase[0] = progress.elapsed_s, progress.phase
        load = os.getloadavg()[0]
        click.echo(f"[{time.strftime('%H:%M:%S')}] {progress.elapsed_s:7.1f}/"
                   f"{progress.duration_s:g} s {progress.phase}: attempts {progress.ok} ok, "
                   f"{progress.fail} failed, {progress.info} unknown, "
                   f"{progress.ops_per_s:.0f}/s, {progress.faults} faults, fault now: "
                   f"{progress.current_fault or 'none'}, leader {progress.leader}, "
                   f"load {load:.2f}", err=True)

    return show


def _client_sentence(client: str) -> str:
    """What the availability figures of a run with this client mode mean."""
    if client == "smart":
        return ("The clients are applications using phalanx's own smart client: each request is "
                "routed to its shard's leader and retried on another node under the client's "
                "retry rules, within a 5 s deadline. The headline availability is the "
                "APPLICATION view (requests that finally succeeded); every attempt is counted "
                "too (raw view) and every attempt is in the checked history.")
    if client == "haproxy":
        return ("The clients reach the cluster through a real HAProxy (the config phalanx "
                "generates) and retry under the smart client's rules within a 5 s deadline: "
                "the headline availability is the APPLICATION view, every attempt counted too.")
    return ("The clients send each request to one node and never retry (raw view): the "
            "availability is what the nodes answered, not what a retrying application sees.")


def _duration(text: str) -> float:
    """'60s', '2m', '1h', '90' -> seconds."""
    text = text.strip().lower()
    scale = 1.0
    if text.endswith("ms"):
        text, scale = text[:-2], 0.001
    elif text.endswith("s"):
        text = text[:-1]
    elif text.endswith("m"):
        text, scale = text[:-1], 60.0
    elif text.endswith("h"):
        text, scale = text[:-1], 3600.0
    try:
        value = float(text) * scale
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 60s, 2m)") from None
    if value <= 0:
        raise click.BadParameter("must be positive")
    return value


@click.group()
def chaos() -> None:
    """The chaos lab: real faults against a cluster; availability, RTO, RPO, consistency."""


def scenario_names() -> list[str]:
    # Kept in step with phalanx.chaos.nemesis.SCENARIOS (a test checks it); listed here so that
    # `phalanx --help` does not import the lab.
    return ["leader-kill", "follower-kill", "random-kill", "leader-pause", "follower-pause",
            "partition-leader", "partition-split", "partition-bridge", "latency", "zone-outage",
            "region-outage", "host-outage", "node-lost", "partition-zone", "rolling-restart", "disk-corrupt",
            "disk-full", "disk-error", "mixed"]


def workload_names() -> list[str]:
    # Kept in step with phalanx.chaos.workloads.WORKLOADS (a test checks it).
    return ["register", "queue", "bank", "stream"]


@chaos.command("run")
@click.option("--scenario", required=True, type=click.Choice(scenario_names()))
@click.option("--duration", "duration_text", default="60s", show_default=True,
              help="How long the workload runs (60s, 2m, 1h).")
@click.option("--seed", type=int, default=None, help="Seed of the schedule (default: random).")
@click.option("--nodes", type=int, default=None,
              help="Nodes of the cluster the lab starts [default: 5; region-outage: 9; "
                   "host-outage: 6; "
                   "node-lost: replicas per shard + 2, so a spare node is left to heal onto].")
@click.option("--zones", type=int, default=None,
              help="Zones [default: 3, at least --regions; region-outage: 2 per region; "
                   "host-outage: 1].")
@click.option("--nodes-per-host", "nodes_per_host", type=int, default=None,
              help="Node processes per synthetic host h1..hH of the cluster the lab starts "
                   "(docs/hosts.md) [default: 1; host-outage: 2].")
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
@click.option("--election-ticks", "election_ticks", type=int, default=None,
              help="Minimum election timeout of the nodes the lab starts, in 10 ms ticks "
                   "[default: the node's, 50].")
@click.option("--heartbeat-ticks", "heartbeat_ticks", type=int, default=None,
              help="Heartbeat interval of the nodes the lab starts, in 10 ms ticks "
                   "[default: the node's, 5].")
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
@click.option("--workload", type=click.Choice(workload_names()), default="register",
              show_default=True,
              help="register: GET/SET/CAS (linearizability) and SADD (lost writes); queue: "
                   "LPUSH, BLMOVE to a processing list, LREM to ack (lost and duplicated "
                   "messages); bank: transfers with MULTI/EXEC+WATCH and Lua (sums).")
@click.option("--client", "client", type=click.Choice(["raw", "smart", "haproxy"]),
              default="raw", show_default=True,
              help="raw: one node per request, no retry (what the nodes answer); smart: "
                   "phalanx's own client, routed and retried under its rules (the application "
                   "view); haproxy: through a real HAProxy with the generated config, retried "
                   "under the same rules. Every attempt is recorded and checked.")
@click.option("--deadline", "deadline", type=float, default=5.0, show_default=True,
              help="Seconds an application call may take, retries included (smart, haproxy).")
@click.option("--progress-every", "progress_every", type=float, default=0.0,
              help="Instead of the live view, one plain progress line on stderr every this "
                   "many seconds (for long runs in the background; with --json too).")
@click.option("--peer-tls-dir", type=click.Path(file_okay=False), default=None,
              help="Start the cluster with peer mutual TLS (a test CA and node certificates "
                   "in this directory, made when missing).")
def chaos_run(scenario: str, duration_text: str, seed: int | None, nodes: int | None,
              zones: int | None, nodes_per_host: int | None, regions: int | None,
              shards: int | None,
              survival_goal: str | None, dead_after_ms: int | None,
              election_ticks: int | None, heartbeat_ticks: int | None, target: str | None,
              report_dir: str | None, as_json: bool, mode: str, clients: int,
              rate: float, workload: str, client: str, deadline: float,
              progress_every: float, peer_tls_dir: str | None) -> None:
    """Run one scenario and measure availability, RTO, RPO, linearizability and the time to
    full redundancy after each fault."""
    import json

    from rich.console import Console

    from phalanx.chaos import console as view
    from phalanx.chaos.pidfile import Interrupted, stop_on_signals
    from phalanx.chaos.result import write_result
    from phalanx.chaos.run_config import scenario_config
    from phalanx.chaos.runner import run_chaos
    from phalanx.chaos.workloads import passed

    duration = _duration(duration_text)
    if clients < 1 or rate <= 0:
        fail("--clients must be >= 1 and --rate > 0", 2)
    seed = seed if seed is not None else int.from_bytes(os.urandom(3), "big")
    try:
        config = scenario_config(scenario, duration_s=duration, seed=seed, nodes=nodes,
                                 zones=zones, nodes_per_host=nodes_per_host,
                                 regions=regions, shards=shards,
                                 survival_goal=survival_goal, dead_after_ms=dead_after_ms,
                                 election_ticks=election_ticks,
                                 heartbeat_ticks=heartbeat_ticks, mode=mode, target=target, clients=clients, rate_ops_s=rate,
                                 workload=workload, client=client, deadline_s=deadline,
                                 peer_tls_dir=peer_tls_dir)
    except ValueError as error:
        fail(str(error), 2)
    console = Console(stderr=True)
    try:
        with stop_on_signals():
            if progress_every > 0:
                artifacts = run_chaos(config, on_progress=_progress_lines(progress_every))
            elif as_json:
                artifacts = run_chaos(config)
            else:
                console.print(f"chaos run: {scenario}, {workload} workload, {client} client, "
                              f"{duration:g} s, seed {seed} (replay: --seed {seed})")
                with view.LiveView(f"phalanx chaos: {scenario}", console) as live:
                    artifacts = run_chaos(config, on_progress=live)
    except Interrupted as interrupted:
        fail(f"{interrupted}; what the run started was stopped", 128 + interrupted.signum)
    except KeyboardInterrupt:
        fail("interrupted; what the run started was stopped", 130)
    except Exception as error:  # one clear line, no traceback
        fail(f"chaos run failed: {error}")
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
    sys.exit(0 if passed(result) else 1)


@chaos.command("regions")
@click.option("--regions", type=int, default=2, show_default=True,
              help="Linked regions (3-node clusters on loopback), strong keys at home in dc1.")
@click.option("--cut", "cut_text", default="6s", show_default=True,
              help="How long every region link is cut while clients write on every side.")
@click.option("--rate", type=float, default=40.0, show_default=True,
              help="Operations per second per region (at most).")
@click.option("--no-region-loss", is_flag=True,
              help="Skip the last step (the last region SIGKILLed while it writes: the RPO).")
@click.option("--loss-during-cut", is_flag=True,
              help="Lose the last region while its links are cut (RPO: all since the cut).")
@click.option("--seed", type=int, default=None)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the whole result (lag samples included) to this JSON file.")
def chaos_regions(regions: int, cut_text: str, rate: float, no_region_loss: bool,
                  loss_during_cut: bool, seed: int | None, json_path: str | None) -> None:
    """Active-active keys through a region cut, a heal and a region loss (issue 18)."""
    import json

    from phalanx.chaos.regions_lab import RegionLabConfig, run_region_lab, summary

    config = RegionLabConfig(regions=regions, cut_s=_duration(cut_text), rate=rate,
                             region_loss=not no_region_loss, seed=seed,
                             loss_during_cut=loss_during_cut)
    result = run_region_lab(config)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=1, default=sorted))
    click.echo(summary(result))
    if not result["passed"]:
        raise SystemExit(1)

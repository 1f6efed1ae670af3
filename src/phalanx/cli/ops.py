"""Operating a running cluster through its admin API: `phalanx drain / decommission / readmit /
replace / split / merge / analyze / lb-config (alias haproxy-config)`.

Rules of this file: the commands parse flags and print; they reach the nodes only through
`phalanx.ops` (admin HTTP, cluster.json, the HAProxy and nginx renderers). See docs/architecture.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from phalanx.cli.common import data_dir_option, fail
from phalanx.errors import ClusterError


def _any_admin(data_dir: str, path: str, *, method: str = "GET",
               body: dict[str, Any] | None = None, token: str | None = None,
               timeout: float = 10.0) -> Any:
    """Call `path` on the first node of the local cluster that answers; exits on failure."""
    from phalanx.ops import admin, cluster_file

    try:
        cluster = cluster_file.read_cluster_file(data_dir)
    except ClusterError as error:
        fail(str(error))
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
            fail(f"{entry.id} refused: {message}", 2)
        last = f"{entry.id}: HTTP {code}: {message}"
    fail(f"no node could do it ({last})")


def _node_state_command(verb: str, state: str, node_id: str, data_dir: str,
                        admin_token: str | None) -> None:
    result = _any_admin(data_dir, f"/{verb}", method="POST", body={"node": node_id},
                        token=admin_token)
    click.echo(f"{node_id}: {state} ({result.get('reply', 'OK')}); "
               f"watch the progress with `phalanx status --data-dir {data_dir}`")


admin_token_option = click.option("--admin-token", default=None, envvar="PHALANX_ADMIN_TOKEN",
                                  help="Admin token (default: from the node's config file).")


@click.command()
@click.argument("node_id", metavar="NODE")
@data_dir_option
@admin_token_option
def drain(node_id: str, data_dir: str, admin_token: str | None) -> None:
    """Move every replica and leader off NODE (it stays a member; `readmit` undoes it)."""
    _node_state_command("drain", "draining", node_id, data_dir, admin_token)


@click.command()
@click.argument("node_id", metavar="NODE")
@data_dir_option
@admin_token_option
def decommission(node_id: str, data_dir: str, admin_token: str | None) -> None:
    """Drain NODE, then remove it from the cluster once it holds nothing."""
    _node_state_command("decommission", "decommissioned", node_id, data_dir, admin_token)


@click.command()
@click.argument("node_id", metavar="NODE")
@data_dir_option
@admin_token_option
def readmit(node_id: str, data_dir: str, admin_token: str | None) -> None:
    """Let a drained node take replicas again."""
    _node_state_command("readmit", "alive", node_id, data_dir, admin_token)


@click.command()
@click.argument("node_id", metavar="NODE")
@data_dir_option
@click.option("--incarnation", default=None,
              help="The node's new incarnation (default: from its /status, else its data "
                   "directory).")
@click.option("--timeout", type=float, default=180.0, show_default=True,
              help="How long to wait for the node to be a member again (0: do not wait).")
@admin_token_option
def replace(node_id: str, data_dir: str, incarnation: str | None, timeout: float,
            admin_token: str | None) -> None:
    """Bring back NODE whose data directory was wiped: the old member is removed from every
    group, then NODE is added back as a new member and caught up by snapshot."""
    from phalanx.ops import admin, cluster_file
    from phalanx.ops.replace import (
        find_incarnation,
        newest_status,
        replace_progress,
        start_replace,
    )

    try:
        cluster = cluster_file.read_cluster_file(data_dir)
        entry = cluster.node(node_id)
        if incarnation is None:
            incarnation, source = find_incarnation(entry)
            click.echo(f"{node_id} runs as incarnation {incarnation} (from {source})")
        result = start_replace(cluster, node_id, incarnation, lambda e: admin_token if
                               admin_token is not None else admin.admin_token_for(e))
    except ClusterError as error:
        fail(str(error), 2)
    click.echo(f"replacing {node_id}: incarnation {result.get('old_incarnation') or '?'} -> "
               f"{incarnation}")
    if timeout <= 0:
        return
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        status = newest_status(cluster)
        if status is not None:
            progress = replace_progress(status, node_id, incarnation)
            if progress.detail != last:
                click.echo(f"... {progress.detail}")
                last = progress.detail
            if progress.done:
                click.echo(f"{node_id} replaced: it is a member again as incarnation "
                           f"{incarnation}")
                return
        time.sleep(0.5)
    fail(f"{node_id} is not a member again after {timeout:g} s ({last}); the replacement "
         f"goes on: watch `phalanx status --data-dir {data_dir}`")


@click.command()
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
        fail(f"shard {shard} has no known leader with an admin address right now; retry")
    if code != 200:
        message = payload.get("error") if isinstance(payload, dict) else payload
        fail(f"{leader} refused the split: {message}")
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
        fail(f"no shard {shard} (shards: {', '.join(str(s) for s in sorted(shards))})", 2)


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
    except (OSError, ClusterError) as error:
        return str(leader), 0, {"error": f"cannot reach {leader}: {error}"}
    return str(leader), code, payload


@click.command()
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
                fail(f"refused: {payload.get('error')}", 2)
            detail = payload.get("detail") or payload.get("error") if isinstance(
                payload, dict) else payload
            if detail != last:
                click.echo(f"... {detail}")
                last = str(detail)
        time.sleep(1.0)
    fail(f"the merge did not finish within {timeout:g} s ({last})")


@click.command()
@data_dir_option
@click.option("--node-availability", type=float, default=0.99, show_default=True,
              help="Availability of one node (e.g. 0.99).")
@click.option("--zone-availability", type=float, default=0.999, show_default=True)
@click.option("--region-availability", type=float, default=0.9999, show_default=True)
@click.option("--host-availability", type=float, default=0.999, show_default=True,
              help="Availability of a host shared by several nodes (docs/hosts.md): its loss "
                   "takes them all at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON.")
def analyze(data_dir: str, node_availability: float, zone_availability: float,
            region_availability: float, host_availability: float, as_json: bool) -> None:
    """Single points of failure and estimated nines of the running cluster's placement; on an
    active-active region, what a region partition or loss does to strong and active-active keys
    (CAP: availability, RPO, cost in replicas and cross-region traffic)."""
    import json

    from phalanx.placement import format_analysis

    report = _any_admin(data_dir, f"/analyze?node={node_availability}&zone={zone_availability}"
                                  f"&region={region_availability}&host={host_availability}")
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_analysis(report))
        if isinstance(report, dict) and isinstance(report.get("cap"), dict):
            from phalanx.placement.cap import format_cap

            click.echo(format_cap(report["cap"]))


_HAPROXY_DEFAULTS = {"writer_port": None, "stats_port": None, "stats_socket": None,
                     "check_inter_ms": 100, "fall": 2, "rise": 2}
_NGINX_DEFAULTS = {"max_fails": 1, "fail_timeout_s": 2, "stream_module": None,
                   "pid_file": "/run/nginx-phalanx.pid", "access_log": None}


def _lb_options(function: Any) -> Any:
    """The options of `lb-config` and its alias `haproxy-config` (one set, one meaning)."""
    options = [
        data_dir_option,
        click.option("--port", type=int, default=6400, show_default=True,
                     help="RESP frontend, balanced over every node (HAProxy: those passing "
                          "GET /ready)."),
        click.option("--bind", "bind_address", default="127.0.0.1", show_default=True,
                     help="Address the frontends listen on ('*' for every address)."),
        click.option("--output", "output", type=click.Path(dir_okay=False), default=None,
                     help="Write the config to this file (default: print it)."),
        click.option("--writer-port", type=int, default=None,
                     help="haproxy: also a frontend reaching only the first shard's leader "
                          "(GET /primary). Meaningful for SINGLE-SHARD clusters only: with "
                          "several shards most keys are forwarded anyway; use --port there."),
        click.option("--stats-port", type=int, default=None,
                     help="haproxy: also an HTTP stats page."),
        click.option("--stats-socket", default=None,
                     help="haproxy: also a stats socket (for `show stat`)."),
        click.option("--check-inter-ms", type=int, default=100, show_default=True,
                     help="haproxy: health-check interval."),
        click.option("--fall", type=int, default=2, show_default=True,
                     help="haproxy: failed checks before a node is marked DOWN."),
        click.option("--rise", type=int, default=2, show_default=True,
                     help="haproxy: passed checks before a node is marked UP again."),
        click.option("--max-fails", type=int, default=1, show_default=True,
                     help="nginx: failed connection attempts within --fail-timeout-s before "
                          "a node is skipped."),
        click.option("--fail-timeout-s", type=int, default=2, show_default=True,
                     help="nginx: the window of --max-fails, and how long a node is skipped."),
        click.option("--stream-module", default=None,
                     help="nginx: path of ngx_stream_module.so to load (default: the "
                          "installed one, if any; 'none': built into nginx)."),
        click.option("--pid-file", default="/run/nginx-phalanx.pid", show_default=True,
                     help="nginx: its pid file."),
        click.option("--access-log", default=None,
                     help="nginx: a file for one line per proxied session (default: off)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _lb_config(kind: str, data_dir: str, output: str | None, **options: Any) -> None:
    from phalanx.errors import PhalanxError
    from phalanx.ops import haproxy, nginx

    own, other = ((_HAPROXY_DEFAULTS, _NGINX_DEFAULTS) if kind == "haproxy"
                  else (_NGINX_DEFAULTS, _HAPROXY_DEFAULTS))
    misplaced = [name for name, default in other.items() if options.get(name) != default]
    if misplaced:
        fail(f"--kind {kind} does not take "
             + ", ".join("--" + name.replace("_", "-") for name in misplaced), 2)
    common = {name: options[name] for name in ("bind_address",)}
    try:
        nodes, source = haproxy.discover_nodes(data_dir)
        if kind == "haproxy":
            text = haproxy.render_config(nodes, frontend_port=options["port"], **common,
                                         **{name: options[name] for name in own})
            check = f"`haproxy -c -f {output}`, run it with `haproxy -W -db -f {output}`"
        else:
            module = options["stream_module"]
            module = (None if module == "none"
                      else module if module is not None else nginx.find_stream_module())
            text = nginx.render_config(
                nodes, frontend_port=options["port"], **common,
                max_fails=options["max_fails"], fail_timeout_s=options["fail_timeout_s"],
                stream_module=module, pid_file=options["pid_file"],
                access_log=options["access_log"])
            check = f"`nginx -t -c {output}`, run it with `nginx -c {output} -g 'daemon off;'`"
    except PhalanxError as error:
        fail(str(error), 2)
    if output is None:
        click.echo(text, nl=False)
        return
    Path(output).write_text(text)
    click.echo(f"wrote {output}: {len(nodes)} nodes from {source}; check it with {check}",
               err=True)


@click.command("lb-config")
@click.option("--kind", type=click.Choice(["haproxy", "nginx"]), default="haproxy",
              show_default=True, help="Which load balancer to configure.")
@_lb_options
def lb_config(kind: str, data_dir: str, output: str | None, **options: Any) -> None:
    """Write a load balancer's config (TCP) for the cluster.

    haproxy: active health checks (GET /ready on each node's admin port). nginx (open source,
    stream module): passive checks only (failed connections: max_fails, fail_timeout,
    proxy_next_upstream); it cannot see a node that accepts connections but cannot serve
    (docs/load-balancers.md). The nodes come from /status of a running node (the cluster
    map), else from cluster.json.
    """
    _lb_config(kind, data_dir, output, **options)


@click.command("haproxy-config")
@_lb_options
def haproxy_config(data_dir: str, output: str | None, **options: Any) -> None:
    """Write an HAProxy config (TCP) for the cluster: `lb-config --kind haproxy`.

    The nodes come from /status of a running node (the cluster map), else from cluster.json.
    """
    _lb_config("haproxy", data_dir, output, **options)


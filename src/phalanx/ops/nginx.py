"""nginx (open source, stream module) in front of a phalanx cluster: the config.

`render_config(nodes, frontend_port=...)` returns a complete `nginx.conf` that proxies RESP (TCP)
to every node, `least_conn`, with nginx's PASSIVE health checks (open source nginx has no
active ones):

- `max_fails` / `fail_timeout`: a node whose connection attempt failed `max_fails` times within
  `fail_timeout` is skipped for `fail_timeout`, then tried again with the next connection. A
  killed node refuses connections at once, so it costs one failed attempt per `fail_timeout`;
- `proxy_next_upstream on`: a connection attempt that fails (refused, or no answer within
  `proxy_connect_timeout`) is retried on the next node, so the client never sees it
  (`proxy_next_upstream_tries`, `proxy_next_upstream_timeout` bound the retries);
- `proxy_timeout` is the IDLE timeout of a proxied session (RESP connections idle for long:
  pools, pub/sub, blocking pops), `proxy_socket_keepalive` lets TCP keepalives find dead peers.

What open source nginx cannot do, and HAProxy (`phalanx.ops.haproxy`) does: it never asks a
node's `/ready` (active `health_check` is NGINX Plus only), so a node that accepts connections
but cannot serve (a minority side of a partition, a SIGSTOPped or hung process, a node catching
up after a restart) keeps receiving new connections, which then see the node's errors or
timeouts; a dead node is only noticed when a connection to it fails; and it does not close the
established sessions of a node it marks failed (HAProxy's `on-marked-down shutdown-sessions`).
docs/load-balancers.md says so too.

Rules of this module:
- The output must pass `nginx -t` (tests/ops checks it, and that a broken config fails it).
- Nodes come from the same discovery as the HAProxy config (`haproxy.discover_nodes`); only the
  RESP address is used (nginx has no way to use the admin port).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from phalanx.errors import ConfigError
from phalanx.ops.haproxy import backend_node

#: Where distributions install the dynamic stream module (Debian/Ubuntu, RHEL/Fedora, source).
STREAM_MODULE_PATHS = (
    "/usr/lib/nginx/modules/ngx_stream_module.so",
    "/usr/lib64/nginx/modules/ngx_stream_module.so",
    "/usr/local/nginx/modules/ngx_stream_module.so",
)

UPSTREAM = "phalanx_resp"

DEFAULT_MAX_FAILS = 1
DEFAULT_FAIL_TIMEOUT_S = 2


def find_stream_module() -> str | None:
    """The first installed dynamic stream module of `STREAM_MODULE_PATHS`, or None (an nginx
    built with the stream module inside needs no `load_module`)."""
    return next((path for path in STREAM_MODULE_PATHS if Path(path).is_file()), None)


def _address(address: str, where: str) -> str:
    host, separator, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not separator or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{where}: {address!r} is not host:port")
    return f"[{host}]:{port_text}" if ":" in host else f"{host}:{port_text}"


_COMMENT = """\
        # Passive health checks only (open source nginx has no active ones, so it never asks a
        # node's /ready): a connection attempt that fails (refused: a killed node; no answer within
        # proxy_connect_timeout: a dead host) is retried on the next node (proxy_next_upstream),
        # and after max_fails={max_fails} such failures within fail_timeout={fail_timeout}s the node
        # is skipped for {fail_timeout} s, then tried again. A node that accepts connections but
        # cannot serve (hung, partitioned, catching up) is NOT detected: use HAProxy
        # (`phalanx lb-config --kind haproxy`, checks GET /ready) where that matters.
"""


def render_config(nodes: Iterable[object], *, frontend_port: int,
                  bind_address: str = "127.0.0.1", max_fails: int = DEFAULT_MAX_FAILS,
                  fail_timeout_s: int = DEFAULT_FAIL_TIMEOUT_S, connect_timeout_ms: int = 1000,
                  next_upstream_tries: int = 3, idle_timeout_s: int = 3600,
                  max_connections: int = 4096, stream_module: str | None = None,
                  pid_file: str = "/run/nginx-phalanx.pid", access_log: str | None = None,
                  error_log: str = "stderr") -> str:
    """A complete nginx.conf for these nodes (see the module docstring).

    `nodes`: `/status` `nodes` entries, `cluster.json` NodeEntries or BackendNodes.
    `stream_module`: path of `ngx_stream_module.so` to `load_module` (None: built in).
    `access_log`: a file for one line per proxied session (None: off).
    """
    backend = [backend_node(item) for item in nodes]
    if not backend:
        raise ConfigError("no nodes: nginx needs at least one upstream server")
    if not 0 < frontend_port < 65536:
        raise ConfigError(f"frontend_port: {frontend_port} is not a TCP port")
    if max_fails < 1:
        raise ConfigError(f"max_fails must be at least 1, got {max_fails} (0 turns the "
                          "passive health check off)")
    if fail_timeout_s < 1 or connect_timeout_ms < 1 or idle_timeout_s < 1 \
            or max_connections < 1 or next_upstream_tries < 1:
        raise ConfigError("timeouts, tries and max_connections must be positive")
    for text, name in ((pid_file, "pid_file"), (error_log, "error_log"),
                       (access_log or "", "access_log"), (stream_module or "", "stream_module")):
        if any(character in text for character in ";{}\"'\n") or " " in text.strip():
            raise ConfigError(f"{name}: {text!r} is not a plain path")
    bind = _address(f"{bind_address}:{frontend_port}", "bind")
    if bind_address == "*":
        bind = str(frontend_port)

    lines = [
        "# nginx (stream module) in front of a phalanx cluster; written by "
        "`phalanx lb-config --kind nginx`.",
        f"# Nodes: {', '.join(n.id for n in backend)}. Validate: nginx -t -c <this file>;",
        "# run: nginx -c <this file> -g 'daemon off;' (or under systemd).",
    ]
    if stream_module:
        lines.append(f"load_module {stream_module};")
    lines += [
        "worker_processes 1;",
        f"pid {pid_file};",
        f"error_log {error_log} notice;",
        "",
        "events {",
        f"    worker_connections {max_connections};",
        "}",
        "",
        "stream {",
    ]
    if access_log:
        lines += [
            "    log_format phalanx '$remote_addr $time_iso8601 upstream=$upstream_addr "
            "status=$status session=${session_time}s connect=${upstream_connect_time}s';",
            f"    access_log {access_log} phalanx;",
        ]
    lines += [
        "",
        f"    upstream {UPSTREAM} {{",
        "        # Any node serves any key (it forwards to the shard's leader).",
        "        least_conn;",
    ]
    lines += _COMMENT.format(max_fails=max_fails, fail_timeout=fail_timeout_s).splitlines()
    for node in backend:
        where = ", ".join(part for part in (node.zone and f"zone {node.zone}",
                                            node.state and f"state {node.state}") if part)
        lines.append(f"        server {_address(node.resp, f'node {node.id}: resp')} "
                     f"max_fails={max_fails} fail_timeout={fail_timeout_s}s;"
                     f"  # {node.id}" + (f", {where}" if where else ""))
    lines += [
        "    }",
        "",
        "    server {",
        f"        listen {bind};",
        f"        proxy_pass {UPSTREAM};",
        # A node on a LAN connects in well under a millisecond; a dead host's SYN goes
        # unanswered, and after this the next node is tried.
        f"        proxy_connect_timeout {connect_timeout_ms}ms;",
        "        proxy_next_upstream on;",
        f"        proxy_next_upstream_tries {next_upstream_tries};",
        f"        proxy_next_upstream_timeout {max(1, 2 * connect_timeout_ms)}ms;",
        # RESP sessions are long-lived and often idle: this is the idle timeout, not a
        # request timeout; TCP keepalives notice a dead peer of an idle session.
        f"        proxy_timeout {idle_timeout_s}s;",
        "        proxy_socket_keepalive on;",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


__all__ = ["STREAM_MODULE_PATHS", "UPSTREAM", "find_stream_module", "render_config"]

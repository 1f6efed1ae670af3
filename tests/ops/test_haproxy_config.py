"""The HAProxy config renderer (phalanx.ops.haproxy) and `phalanx haproxy-config`.

Rules of this file:
- The rendered config is validated by the real `haproxy -c -f` (installed by .ci/run); a
  deliberately broken config must FAIL that check, so the validation is known to be real.
  Without the binary those tests skip and say so.
- No process outlives its test: the fake admin server is a thread shut down in a `finally`.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from phalanx.cli import main
from phalanx.errors import ConfigError
from phalanx.ops import cluster_file, haproxy
from phalanx.ops.haproxy import (
    RESP_BACKEND,
    WRITER_BACKEND,
    BackendNode,
    discover_nodes,
    parse_show_stat,
    render_config,
)
from phalanx.ops.ports import refused_address

HAPROXY = shutil.which("haproxy")
needs_haproxy = pytest.mark.skipif(HAPROXY is None,
                                   reason="haproxy is not installed (.ci/run installs it)")

STATUS_NODES = [
    {"id": "n1", "resp": "127.0.0.11:7001", "admin": "127.0.0.11:7101", "zone": "z1",
     "region": "r1", "state": "alive", "peer": "127.0.0.11:7201"},
    {"id": "n2", "resp": "127.0.0.12:7002", "admin": "127.0.0.12:7102", "zone": "z2",
     "region": "r1", "state": "alive", "peer": "127.0.0.12:7202"},
    {"id": "n3", "resp": "127.0.0.13:7003", "admin": "127.0.0.13:7103", "zone": "z3",
     "region": "r1", "state": "draining", "peer": "127.0.0.13:7203"},
]


def haproxy_check(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert HAPROXY is not None
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    return subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def sections(config: str) -> dict[str, list[str]]:
    """{"backend be_phalanx": [its lines], ...}: the config's sections, comments dropped."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in config.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            current = found.setdefault(line.strip(), [])
        elif current is not None:
            current.append(line.split("#")[0].strip())
    return found


def servers(section: list[str]) -> dict[str, list[str]]:
    return {line.split()[1]: line.split()[2:] for line in section if line.startswith("server ")}


def full_config(**options: Any) -> str:
    defaults: dict[str, Any] = {"frontend_port": 6400, "writer_port": 6401, "stats_port": 6402}
    return render_config(STATUS_NODES, **{**defaults, **options})


# --------------------------------------------------------------------------- structure

def test_every_node_is_a_server_of_every_backend_and_checks_hit_the_admin_port() -> None:
    parsed = sections(full_config())
    for backend in (RESP_BACKEND, WRITER_BACKEND):
        found = servers(parsed[f"backend {backend}"])
        assert sorted(found) == ["n1", "n2", "n3"]
        for node in STATUS_NODES:
            words = found[node["id"]]
            assert words[0] == node["resp"], "traffic must go to the RESP port"
            admin_port = node["admin"].rpartition(":")[2]
            assert words[words.index("port") + 1] == admin_port, "checks go to the admin port"
            assert admin_port != node["resp"].rpartition(":")[2]


def test_health_checks_are_http_on_ready_and_primary_with_on_marked_down() -> None:
    parsed = sections(full_config(check_inter_ms=150, fall=3, rise=4))
    resp, writer = parsed[f"backend {RESP_BACKEND}"], parsed[f"backend {WRITER_BACKEND}"]
    assert "option httpchk GET /ready" in resp
    assert "option httpchk GET /primary" in writer
    for section in (resp, writer):
        assert "http-check expect status 200" in section
        (default_server,) = [line for line in section if line.startswith("default-server")]
        assert "on-marked-down shutdown-sessions" in default_server
        assert re.search(r"\bcheck inter 150ms fall 3 rise 4\b", default_server)
        assert any(line.startswith("balance ") for line in section)
    assert "mode tcp" in parsed["defaults"]
    assert "option redispatch 1" in parsed["defaults"]


def test_frontends_bind_the_requested_ports() -> None:
    parsed = sections(full_config(bind_address="0.0.0.0"))
    assert "bind 0.0.0.0:6400" in parsed[f"frontend {haproxy.RESP_FRONTEND}"]
    assert "bind 0.0.0.0:6401" in parsed[f"frontend {haproxy.WRITER_FRONTEND}"]
    assert "bind 0.0.0.0:6402" in parsed["listen stats"]


def test_without_writer_or_stats_there_is_only_the_balanced_frontend() -> None:
    config = render_config(STATUS_NODES, frontend_port=6400)
    parsed = sections(config)
    assert f"backend {RESP_BACKEND}" in parsed
    assert f"backend {WRITER_BACKEND}" not in parsed
    assert "listen stats" not in parsed
    assert "stats socket" not in config


def test_writer_for_another_shard_checks_primary_of_that_shard() -> None:
    parsed = sections(full_config(writer_shard=2))
    assert "option httpchk GET /primary?shard=2" in parsed[f"backend {WRITER_BACKEND}"]


def test_the_writer_frontend_says_it_is_for_single_shard_clusters() -> None:
    assert "SINGLE-SHARD" in full_config()


def test_nodes_from_cluster_json_entries_and_status_agree() -> None:
    entries = [cluster_file.NodeEntry(id=n["id"], zone=n["zone"], region="r1", resp=n["resp"],
                                      admin=n["admin"], peer=n["peer"], pid=None, data_dir="")
               for n in STATUS_NODES]
    from_entries = sections(render_config(entries, frontend_port=6400))
    from_status = sections(render_config(haproxy.nodes_from_status({"nodes": STATUS_NODES}),
                                         frontend_port=6400))
    assert servers(from_entries[f"backend {RESP_BACKEND}"]) == \
        servers(from_status[f"backend {RESP_BACKEND}"])


def test_admin_on_another_address_gets_a_check_addr() -> None:
    nodes = [BackendNode("a", "10.0.0.1:7001", "10.0.1.1:7101"),
             BackendNode("b", "10.0.0.2:7001", "0.0.0.0:7101")]
    found = servers(sections(render_config(nodes, frontend_port=6400))[f"backend {RESP_BACKEND}"])
    assert found["a"][found["a"].index("addr") + 1] == "10.0.1.1"
    assert "addr" not in found["b"], "a wildcard admin bind is reached on the node's address"


def test_odd_node_ids_become_valid_server_names() -> None:
    nodes = [BackendNode("node 1/a", "127.0.0.1:7001", "127.0.0.1:7101")]
    found = servers(sections(render_config(nodes, frontend_port=6400))[f"backend {RESP_BACKEND}"])
    assert list(found) == ["node_1_a"]


@pytest.mark.parametrize(("nodes", "options", "message"), [
    ([], {}, "no nodes"),
    ([{"id": "n1", "resp": "127.0.0.1:7001", "admin": ""}], {}, "no admin address"),
    ([{"id": "n1", "resp": "127.0.0.1", "admin": "127.0.0.1:7101"}], {}, "not host:port"),
    ([{"resp": "127.0.0.1:7001", "admin": "127.0.0.1:7101"}], {}, "without an id"),
    (STATUS_NODES, {"writer_port": 6400}, "both 6400"),
    (STATUS_NODES, {"frontend_port": 70000}, "not a TCP port"),
    (STATUS_NODES, {"fall": 0}, "at least 1"),
    (STATUS_NODES, {"check_inter_ms": 1}, "at least 10"),
    ([BackendNode("a b", "127.0.0.1:1", "127.0.0.1:2"),
      BackendNode("a_b", "127.0.0.1:3", "127.0.0.1:4")], {}, "server name"),
])
def test_bad_input_is_a_config_error(nodes: list[Any], options: dict[str, Any],
                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render_config(nodes, **{"frontend_port": 6400, **options})


def test_parse_show_stat() -> None:
    text = ("# pxname,svname,qcur,status,check_status\n"
            "be_phalanx,n1,0,UP,L7OK\nbe_phalanx,n2,0,DOWN,L4CON\nbe_phalanx,BACKEND,0,UP,\n\n")
    rows = parse_show_stat(text)
    assert [(r["svname"], r["status"]) for r in rows] == [
        ("n1", "UP"), ("n2", "DOWN"), ("BACKEND", "UP")]
    with pytest.raises(ConfigError):
        parse_show_stat("Unknown command\n")


# --------------------------------------------------------------------------- haproxy -c

@needs_haproxy
@pytest.mark.parametrize("options", [
    {},
    {"writer_port": None, "stats_port": None},
    {"writer_shard": 3, "bind_address": "*"},
    {"bind_address": "::1"},
])
def test_haproxy_accepts_the_config(options: dict[str, Any], tmp_path: Path) -> None:
    config = full_config(stats_socket=tmp_path / "haproxy.sock", **options)
    checked = haproxy_check(config, tmp_path)
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "[WARNING]" not in output and "[ALERT]" not in output, output


@needs_haproxy
def test_haproxy_accepts_ipv6_nodes(tmp_path: Path) -> None:
    nodes = [BackendNode("n1", "[::1]:7001", "[::1]:7101"), BackendNode("n2", "::1:7002",
                                                                          "::1:7102")]
    checked = haproxy_check(render_config(nodes, frontend_port=6400), tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_haproxy
@pytest.mark.parametrize(("good", "bad"), [
    ("balance leastconn", "balance leastest"),
    ("option httpchk GET /ready", "option httpchk GET /ready extra words here"),
    ("on-marked-down shutdown-sessions", "on-marked-down explode"),
    ("default_backend be_phalanx\n", "default_backend be_missing\n"),
])
def test_haproxy_check_catches_a_broken_config(good: str, bad: str, tmp_path: Path) -> None:
    config = full_config()
    assert good in config
    checked = haproxy_check(config.replace(good, bad), tmp_path)
    assert checked.returncode != 0, "haproxy -c accepted a broken config: the check is not real"


# --------------------------------------------------------------------------- discovery and CLI

def _write_cluster_file(data_dir: Path, nodes: list[dict[str, Any]]) -> None:
    entries = [cluster_file.NodeEntry(id=n["id"], zone=n["zone"], region="r1", resp=n["resp"],
                                      admin=n["admin"], peer=n.get("peer", ""), pid=None,
                                      data_dir=str(data_dir / n["id"])) for n in nodes]
    cluster_file.write_cluster_file(data_dir, cluster_file.ClusterFile(entries))


def _refused_address() -> str:
    """host:port nobody listens on (a port just released)."""
    return refused_address()


@pytest.fixture
def fake_admin() -> Iterator[tuple[str, dict[str, Any]]]:
    """An admin HTTP server answering /status with a settable body; (host:port, body)."""
    body: dict[str, Any] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = json.dumps(body if self.path == "/status" else {"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", body
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_discovery_prefers_the_map_of_a_running_node(
        tmp_path: Path, fake_admin: tuple[str, dict[str, Any]]) -> None:
    address, body = fake_admin
    dead = _refused_address()
    _write_cluster_file(tmp_path, [
        {"id": "n1", "zone": "z1", "resp": "127.0.0.1:7001", "admin": dead},
        {"id": "n2", "zone": "z2", "resp": "127.0.0.1:7002", "admin": address}])
    # The map knows a node that joined after `phalanx up` (n4), and n1 without its admin.
    body.update({"map_version": 7, "nodes": [
        {"id": "n1", "resp": "127.0.0.1:7001", "admin": "", "zone": "z1", "state": "alive"},
        {"id": "n2", "resp": "127.0.0.1:7002", "admin": address, "zone": "z2"},
        {"id": "n4", "resp": "127.0.0.1:7004", "admin": "127.0.0.1:7104", "zone": "z3"}]})
    nodes, source = discover_nodes(tmp_path, timeout=2.0)
    assert [n.id for n in nodes] == ["n1", "n2", "n4"]
    assert nodes[0].admin == dead, "a missing admin address is filled in from cluster.json"
    assert "n2" in source and "map version 7" in source


def test_discovery_falls_back_to_cluster_json(tmp_path: Path) -> None:
    _write_cluster_file(tmp_path, [
        {"id": f"n{i}", "zone": f"z{i}", "resp": f"127.0.0.1:{7000 + i}",
         "admin": _refused_address()} for i in (1, 2, 3)])
    nodes, source = discover_nodes(tmp_path, timeout=1.0)
    assert [n.id for n in nodes] == ["n1", "n2", "n3"]
    assert "cluster.json" in source


def test_cli_writes_a_config(tmp_path: Path) -> None:
    _write_cluster_file(tmp_path, [
        {"id": f"n{i}", "zone": f"z{i}", "resp": f"127.0.0.1:{7000 + i}",
         "admin": _refused_address()} for i in (1, 2, 3)])
    output = tmp_path / "haproxy.cfg"
    result = CliRunner().invoke(main, ["haproxy-config", "--data-dir", str(tmp_path),
                                       "--port", "16400", "--writer-port", "16401",
                                       "--output", str(output)])
    assert result.exit_code == 0, result.output
    parsed = sections(output.read_text())
    assert sorted(servers(parsed[f"backend {RESP_BACKEND}"])) == ["n1", "n2", "n3"]
    assert "bind 127.0.0.1:16401" in parsed[f"frontend {haproxy.WRITER_FRONTEND}"]
    if HAPROXY is not None:
        checked = haproxy_check(output.read_text(), tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    printed = CliRunner().invoke(main, ["haproxy-config", "--data-dir", str(tmp_path)])
    assert printed.exit_code == 0 and "backend be_phalanx" in printed.output


def test_cli_without_a_cluster_fails_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["haproxy-config", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no cluster" in result.output

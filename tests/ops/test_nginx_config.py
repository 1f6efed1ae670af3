"""The nginx config renderer (phalanx.ops.nginx) and `phalanx lb-config --kind nginx`.

Rules of this file:
- The rendered config is validated by the real `nginx -t` (Debian's nginx with
  libnginx-mod-stream, installed by .ci/run); a deliberately broken config must FAIL that
  check, so the validation is known to be real. Without the binary those tests skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from phalanx.cli import main
from phalanx.errors import ConfigError
from phalanx.ops import cluster_file
from phalanx.ops.haproxy import BackendNode
from phalanx.ops.nginx import UPSTREAM, find_stream_module, render_config
from phalanx.ops.ports import refused_address

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file()
                                  else None)
needs_nginx = pytest.mark.skipif(
    NGINX is None or find_stream_module() is None,
    reason="nginx with its stream module is not installed (.ci/run installs nginx and "
           "libnginx-mod-stream)")

NODES = [
    {"id": "n1", "resp": "127.0.0.11:7001", "admin": "127.0.0.11:7101", "zone": "z1",
     "state": "alive"},
    {"id": "n2", "resp": "127.0.0.12:7002", "admin": "127.0.0.12:7102", "zone": "z2"},
    {"id": "n3", "resp": "127.0.0.13:7003", "admin": "127.0.0.13:7103", "zone": "z3",
     "state": "draining"},
]


def _config(tmp_path: Path, **options: Any) -> str:
    defaults: dict[str, Any] = {"frontend_port": 6400, "stream_module": find_stream_module(),
                                "pid_file": str(tmp_path / "nginx.pid")}
    return render_config(NODES, **{**defaults, **options})


def nginx_check(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert NGINX is not None
    path = tmp_path / "nginx.conf"
    path.write_text(config)
    return subprocess.run([NGINX, "-t", "-q", "-c", str(path), "-p", str(tmp_path)],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def _upstream(config: str) -> list[str]:
    lines = config.splitlines()
    start = lines.index(f"    upstream {UPSTREAM} {{")
    end = lines.index("    }", start)
    return [line.split("#")[0].strip() for line in lines[start + 1:end]
            if line.split("#")[0].strip()]


def test_every_node_is_an_upstream_server_with_passive_checks(tmp_path: Path) -> None:
    upstream = _upstream(_config(tmp_path, max_fails=2, fail_timeout_s=5))
    assert "least_conn;" in upstream
    servers = [line for line in upstream if line.startswith("server ")]
    assert servers == [f"server {n['resp']} max_fails=2 fail_timeout=5s;" for n in NODES]


def test_failed_connections_go_to_the_next_node_and_sessions_may_idle(tmp_path: Path) -> None:
    config = _config(tmp_path, connect_timeout_ms=300, idle_timeout_s=600)
    for line in ("listen 127.0.0.1:6400;", f"proxy_pass {UPSTREAM};",
                 "proxy_connect_timeout 300ms;", "proxy_next_upstream on;",
                 "proxy_timeout 600s;", "proxy_socket_keepalive on;"):
        assert f"        {line}\n" in config, line
    # It says what it cannot do.
    assert "NOT detected" in config and "/ready" in config


def test_ipv6_and_wildcard_addresses(tmp_path: Path) -> None:
    nodes = [BackendNode("n1", "[::1]:7001", "[::1]:7101"),
             BackendNode("n2", "::1:7002", "[::1]:7102")]
    config = render_config(nodes, frontend_port=6400, bind_address="*")
    assert "server [::1]:7001 " in config and "server [::1]:7002 " in config
    assert "        listen 6400;\n" in config


@pytest.mark.parametrize(("options", "message"), [
    ({"frontend_port": 0}, "not a TCP port"),
    ({"max_fails": 0}, "max_fails"),
    ({"fail_timeout_s": 0}, "positive"),
    ({"pid_file": "/tmp/x; user root"}, "plain path"),
    ({"access_log": "/tmp/a b"}, "plain path"),
])
def test_bad_input_is_a_config_error(options: dict[str, Any], message: str,
                                     tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, **options)
    with pytest.raises(ConfigError, match="no nodes"):
        render_config([], frontend_port=6400)


@needs_nginx
@pytest.mark.parametrize("options", [{}, {"bind_address": "*", "max_fails": 3},
                                     {"access_log": "sessions.log"}])
def test_nginx_accepts_the_config(options: dict[str, Any], tmp_path: Path) -> None:
    if "access_log" in options:
        options = {**options, "access_log": str(tmp_path / options["access_log"])}
    checked = nginx_check(_config(tmp_path, **options), tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_nginx
@pytest.mark.parametrize(("good", "bad"), [
    ("least_conn;", "least_connections;"),
    ("proxy_next_upstream on;", "proxy_next_upstream sometimes;"),
    ("max_fails=1 fail_timeout=2s;", "max_fails=1 fail_timeout=2parsecs;"),
    (f"proxy_pass {UPSTREAM};", "proxy_pass;"),
])
def test_nginx_check_catches_a_broken_config(good: str, bad: str, tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert good in config
    checked = nginx_check(config.replace(good, bad), tmp_path)
    assert checked.returncode != 0, "nginx -t accepted a broken config: the check is not real"


def _cluster_file(data_dir: Path) -> None:

    def refused() -> str:
        return refused_address()

    entries = [cluster_file.NodeEntry(id=f"n{i}", zone=f"z{i}", region="r1",
                                      resp=f"127.0.0.1:{7000 + i}", admin=refused(), peer="",
                                      pid=None, data_dir=str(data_dir / f"n{i}"))
               for i in (1, 2, 3)]
    cluster_file.write_cluster_file(data_dir, cluster_file.ClusterFile(entries))


def test_lb_config_writes_either_kind_and_haproxy_config_is_its_alias(tmp_path: Path) -> None:
    _cluster_file(tmp_path)
    output = tmp_path / "nginx.conf"
    result = CliRunner().invoke(main, [
        "lb-config", "--kind", "nginx", "--data-dir", str(tmp_path), "--port", "16400",
        "--max-fails", "2", "--pid-file", str(tmp_path / "nginx.pid"), "--output",
        str(output)])
    assert result.exit_code == 0, result.output
    text = output.read_text()
    assert "listen 127.0.0.1:16400;" in text and "max_fails=2" in text
    assert [line for line in _upstream(text) if line.startswith("server ")] == [
        f"server 127.0.0.1:{7000 + i} max_fails=2 fail_timeout=2s;" for i in (1, 2, 3)]
    if NGINX is not None and find_stream_module() is not None:
        checked = nginx_check(text, tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    haproxy = CliRunner().invoke(main, ["lb-config", "--data-dir", str(tmp_path)])
    alias = CliRunner().invoke(main, ["haproxy-config", "--data-dir", str(tmp_path)])
    assert haproxy.exit_code == alias.exit_code == 0
    assert "backend be_phalanx" in haproxy.output and haproxy.output == alias.output


@pytest.mark.parametrize(("arguments", "refused"), [
    (["lb-config", "--kind", "nginx", "--writer-port", "6401"], "--writer-port"),
    (["lb-config", "--kind", "haproxy", "--max-fails", "3"], "--max-fails"),
    (["haproxy-config", "--access-log", "x.log"], "--access-log"),
])
def test_options_of_the_other_kind_are_refused(arguments: list[str], refused: str,
                                               tmp_path: Path) -> None:
    _cluster_file(tmp_path)
    result = CliRunner().invoke(main, [*arguments, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and refused in result.output, result.output

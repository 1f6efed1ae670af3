"""The local-cluster commands: plan, cluster file, `phalanx node` config errors, down/status on
dead pids, the process/admin logic against fake nodes, and end to end against the real node.

Rules of this file:
- Every test that starts processes kills every pid it started in a `finally`, even on failure.
- Each process-starting test picks its own loopback range and a free base port, so parallel
  workers (pytest -n) do not clash.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from phalanx.cli import main
from phalanx.errors import ClusterError, ConfigError, StartupInterrupted
from phalanx.ops import admin, cluster_file, launcher
from phalanx.server.config import load_config

# --------------------------------------------------------------------------- helpers


def _free_layout(nodes: int) -> tuple[int, int]:
    """(loopback_base, base_port) whose every listener address is free right now."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    plan = launcher.pick_free_plan("/nonexistent", rng, nodes=nodes,
                                   loopback_bases=(30, 240 - nodes), tries=200)
    host, _, port = plan[0].config.me.resp.rpartition(":")
    return int(host.rpartition(".")[2]) - 1, int(port) - 1


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if launcher.is_our_node(pid):
                os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


def _pids_of(data_dir: Path) -> list[int]:
    try:
        return [e.pid for e in cluster_file.read_cluster_file(data_dir).nodes if e.pid is not None]
    except ClusterError:
        return []


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "phalanx.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


# --------------------------------------------------------------------------- plan


def test_plan_assigns_addresses_ports_zones_and_argv(tmp_path: Path) -> None:
    plan = launcher.plan_local_cluster(tmp_path, nodes=5, zones=3, base_port=7000)
    ids = [node.config.id for node in plan]
    assert ids == ["n1", "n2", "n3", "n4", "n5"]
    n1 = plan[0].config.me
    assert (n1.resp, n1.admin, n1.peer) == ("127.0.0.11:7001", "127.0.0.11:7101",
                                            "127.0.0.11:7201")
    n5 = plan[4].config.me
    assert (n5.resp, n5.admin, n5.peer) == ("127.0.0.15:7005", "127.0.0.15:7105",
                                            "127.0.0.15:7205")
    assert [node.config.me.zone for node in plan] == ["z1", "z2", "z3", "z1", "z2"]
    assert {node.config.me.region for node in plan} == {"r1"}
    for node in plan:
        assert node.config.peers == plan[0].config.peers  # same membership everywhere
        assert node.config.data_dir == str(tmp_path.absolute() / node.config.id)
        assert node.config_path == tmp_path.absolute() / node.config.id / "node.toml"
        assert node.argv == [sys.executable, "-m", "phalanx.cli", "node", "--config",
                             str(node.config_path)]


def test_plan_applies_loopback_base_and_overrides(tmp_path: Path) -> None:
    plan = launcher.plan_local_cluster(tmp_path, nodes=3, zones=1, base_port=30000,
                                       loopback_base=100,
                                       overrides={"election_ticks": 20, "heartbeat_ticks": 2,
                                                  "lease_reads": True, "tick_ms": None})
    assert [n.config.me.resp for n in plan] == ["127.0.0.101:30001", "127.0.0.102:30002",
                                                "127.0.0.103:30003"]
    assert {n.config.me.zone for n in plan} == {"z1"}
    config = plan[1].config
    assert (config.election_ticks, config.heartbeat_ticks, config.lease_reads) == (20, 2, True)
    assert config.tick_ms == 10  # None means "keep the default"


def test_plan_puts_k_nodes_on_each_synthetic_host(tmp_path: Path) -> None:
    """--nodes 6 --nodes-per-host 2: hosts h1..h3 of two consecutive nodes each, one zone per
    host (docs/hosts.md); one node per host keeps the old zones, host hI for node nI."""
    plan = launcher.plan_local_cluster(tmp_path, nodes=6, zones=3, nodes_per_host=2)
    assert [n.config.me.host for n in plan] == ["h1", "h1", "h2", "h2", "h3", "h3"]
    assert [n.config.me.zone for n in plan] == ["z1", "z1", "z2", "z2", "z3", "z3"]
    assert len({n.config.me.resp for n in plan}) == 6  # still one address per node
    one_zone = launcher.plan_local_cluster(tmp_path, nodes=5, zones=1, nodes_per_host=2)
    assert [n.config.me.host for n in one_zone] == ["h1", "h1", "h2", "h2", "h3"]
    single = launcher.plan_local_cluster(tmp_path, nodes=4, zones=3)
    assert [n.config.me.host for n in single] == ["h1", "h2", "h3", "h4"]
    assert [n.config.me.zone for n in single] == ["z1", "z2", "z3", "z1"]
    launcher.write_node_configs(plan)
    loaded = load_config(plan[3].config_path)
    assert [p.host for p in loaded.peers] == ["h1", "h1", "h2", "h2", "h3", "h3"]
    bad = plan[0].config_path.read_text().replace('host = "h1"', 'host = "two words"', 1)
    plan[0].config_path.write_text(bad)
    with pytest.raises(ConfigError, match=r"peers\[0\]\.host"):
        load_config(plan[0].config_path)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"nodes": 0}, "nodes"),
    ({"zones": 0}, "zones"),
    ({"nodes_per_host": 0}, "nodes_per_host"),
    ({"loopback_base": 252}, "loopback_base"),
    ({"base_port": 65400}, "base_port"),
    ({"overrides": {"election_ticks": 1}}, "election_ticks"),
    ({"overrides": {"no_such_knob": 1}}, "no_such_knob"),
])
def test_impossible_plans_name_the_field(tmp_path: Path, kwargs: dict[str, object],
                                         field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        launcher.plan_local_cluster(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_written_node_configs_load_back(tmp_path: Path) -> None:
    plan = launcher.plan_local_cluster(tmp_path, nodes=3, overrides={"election_ticks": 30})
    launcher.write_node_configs(plan)
    for node in plan:
        assert load_config(node.config_path) == node.config


def test_check_addresses_free_names_a_taken_address(tmp_path: Path) -> None:
    loopback_base, base_port = _free_layout(2)
    plan = launcher.plan_local_cluster(tmp_path, nodes=2, base_port=base_port,
                                       loopback_base=loopback_base)
    taken = plan[1].config.me.admin
    host, _, port = taken.rpartition(":")
    with socket.socket() as holder:
        holder.bind((host, int(port)))
        holder.listen()
        with pytest.raises(ClusterError, match=f"n2 admin address {taken}"):
            launcher.check_addresses_free(plan)


# --------------------------------------------------------------------------- cluster file


def test_cluster_file_round_trip(tmp_path: Path) -> None:
    plan = launcher.plan_local_cluster(tmp_path, nodes=3)
    cluster = cluster_file.ClusterFile([node.entry(1000 + i) for i, node in enumerate(plan)])
    path = cluster_file.write_cluster_file(tmp_path, cluster)
    assert path == tmp_path / "cluster.json"
    raw = json.loads(path.read_text())
    assert set(raw["nodes"][0]) >= {"id", "zone", "region", "resp", "admin", "pid", "data_dir",
                                    "argv"}
    assert raw["nodes"][0]["argv"] == plan[0].argv
    assert cluster_file.read_cluster_file(tmp_path) == cluster
    updated = cluster.with_pid("n2", 4242)
    cluster_file.write_cluster_file(tmp_path, updated)
    assert cluster_file.read_cluster_file(tmp_path).node("n2").pid == 4242
    assert cluster_file.read_cluster_file(tmp_path).node("n2").config_path == str(plan[1].config_path)


def test_cluster_file_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = launcher.plan_local_cluster(tmp_path, nodes=1)
    old = cluster_file.ClusterFile([plan[0].entry(1)])
    cluster_file.write_cluster_file(tmp_path, old)

    def broken_replace(source: str, target: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        cluster_file.write_cluster_file(tmp_path, old.with_pid("n1", 2))
    monkeypatch.undo()
    assert cluster_file.read_cluster_file(tmp_path) == old  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.json"]  # no temp file left


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    ('{"nodes": 3}', "nodes"),
    ('{"nodes": [{"id": "n1"}]}', r"nodes\[0\]\.resp: missing"),
    ('{"nodes": [{"id": "n1", "resp": "a:1", "admin": "a:2", "argv": [], "pid": -4}]}',
     r"nodes\[0\]\.pid"),
])
def test_bad_cluster_files_are_reported(tmp_path: Path, content: str | None,
                                        message: str) -> None:
    if content is not None:
        (tmp_path / "cluster.json").write_text(content)
    with pytest.raises(ClusterError, match=message):
        cluster_file.read_cluster_file(tmp_path)


# --------------------------------------------------------------------------- phalanx node


def test_node_with_a_bad_config_file_exits_2_naming_the_field(tmp_path: Path) -> None:
    plan = launcher.plan_local_cluster(tmp_path, nodes=3)
    launcher.write_node_configs(plan)
    path = plan[0].config_path
    path.write_text(path.read_text().replace("election_ticks = 50", "election_ticks = 2"))
    result = CliRunner().invoke(main, ["node", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert "election_ticks" in result.output
    assert len(result.output.strip().splitlines()) == 1
    # A flag override is validated the same way.
    launcher.write_node_configs(plan)
    result = CliRunner().invoke(main, ["node", "--config", str(path), "--id", "n9"])
    assert result.exit_code == 2 and "id: 'n9' is not one of peers" in result.output


def test_node_with_bad_flags_exits_2_naming_the_field(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["node", "--id", "n1", "--data-dir", str(tmp_path),
                                  "--peer", "id=n1,peer=127.0.0.11:nope,resp=127.0.0.11:7001"])
    assert result.exit_code == 2 and "peers[0].peer" in result.output, result.output
    result = runner.invoke(main, ["node", "--id", "n1", "--data-dir", str(tmp_path),
                                  "--peer", "id=n1,peer"])
    assert result.exit_code == 2 and "--peer[0]" in result.output, result.output
    result = runner.invoke(main, ["node", "--id", "n1", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "peers" in result.output, result.output
    result = runner.invoke(main, ["node", "--config", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "cannot read config" in result.output, result.output


def test_node_config_error_from_a_real_process(tmp_path: Path) -> None:
    result = _run_cli("node", "--id", "n2", "--data-dir", str(tmp_path), "--peer",
                      "id=n1,peer=127.0.0.11:7201,resp=127.0.0.11:7001,admin=127.0.0.11:7101")
    assert result.returncode == 2
    assert "config error: id: 'n2' is not one of peers (n1)" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- dead clusters


def _dead_cluster(tmp_path: Path) -> cluster_file.ClusterFile:
    loopback_base, base_port = _free_layout(3)
    plan = launcher.plan_local_cluster(tmp_path, nodes=3, base_port=base_port,
                                       loopback_base=loopback_base)
    cluster = cluster_file.ClusterFile([node.entry(_dead_pid()) for node in plan])
    cluster_file.write_cluster_file(tmp_path, cluster)
    return cluster


def test_down_and_status_on_dead_pids_are_graceful(tmp_path: Path) -> None:
    _dead_cluster(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["down", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "n1: not running" in result.output and "no node was running" in result.output
    assert runner.invoke(main, ["down", "--data-dir", str(tmp_path)]).exit_code == 0
    result = runner.invoke(main, ["status", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["id"] for row in rows] == ["n1", "n2", "n3"]
    assert all(row["health"] == "down" and row["status"] is None for row in rows)
    result = runner.invoke(main, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and "no node is reachable" in result.output, result.output
    result = runner.invoke(main, ["failover", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no leader" in result.output, result.output


def test_up_refuses_a_bad_nodes_per_host_before_starting_anything(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["up", "--nodes", "6", "--nodes-per-host", "0",
                                       "--data-dir", str(tmp_path / "c")])
    assert result.exit_code == 2, result.output
    assert "nodes_per_host: must be >= 1 (got 0)" in result.output
    assert not (tmp_path / "c" / "cluster.json").exists()


def test_commands_without_a_cluster_file_say_so(tmp_path: Path) -> None:
    for command in ("down", "status", "failover"):
        result = CliRunner().invoke(main, [command, "--data-dir", str(tmp_path)])
        assert result.exit_code == 1 and "no cluster in" in result.output, (command, result.output)


def test_a_reused_pid_that_is_not_phalanx_is_never_signalled(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        plan = launcher.plan_local_cluster(tmp_path, nodes=1)
        cluster_file.write_cluster_file(tmp_path, cluster_file.ClusterFile([plan[0].entry(sleeper.pid)]))
        assert launcher.stop_cluster(tmp_path, grace=0.5) == {"n1": "not phalanx"}
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


# --------------------------------------------------------------------------- fake nodes

FAKE_NODE = textwrap.dedent('''
    """A stand-in for the node: serves /status, /health and /failover from a shared file."""
    import json, signal, sys, tomllib
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from pathlib import Path

    config = tomllib.loads(Path(sys.argv[1]).read_text())
    me = config["id"]
    ids = [peer["id"] for peer in config["peers"]]
    admin = next(peer["admin"] for peer in config["peers"] if peer["id"] == me)
    shared = Path(config["data_dir"]).parent / "fake-leader"

    def leader():
        return shared.read_text() if shared.exists() else ids[0]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/status":
                current = leader()
                peers = [{"id": i, "match": 7, "lag_entries": 1} for i in ids if i != me]
                self.reply(200, {"node": me, "role": "leader" if current == me else "follower",
                                 "term": 3, "leader": current, "commit_index": 7,
                                 "applied_index": 7, "peers": peers if current == me else []})
            else:
                self.reply(200, {"status": "ok"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            if leader() != me:
                self.reply(409, {"error": "not the leader"})
                return
            target = body.get("to") or next(i for i in ids if i != me)
            shared.write_text(target)
            self.reply(200, {"leader": target})

    host, _, port = admin.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("fake node", me, "on", admin, flush=True)
    server.serve_forever()
''')


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[tuple[Path, list[launcher.PlannedNode]]]:
    """A 3-node plan whose argv runs the fake node (its path contains "phalanx")."""
    script = tmp_path / "fake_phalanx_node.py"
    script.write_text(FAKE_NODE)
    data_dir = tmp_path / "data"
    loopback_base, base_port = _free_layout(3)
    plan = launcher.plan_local_cluster(data_dir, nodes=3, base_port=base_port,
                                       loopback_base=loopback_base)
    plan = [launcher.PlannedNode(config=n.config, config_path=n.config_path,
                                 log_path=n.log_path,
                                 argv=[sys.executable, str(script), str(n.config_path)])
            for n in plan]
    try:
        yield data_dir, plan
    finally:
        _kill_all(_pids_of(data_dir))


def test_fake_cluster_up_status_failover_restart_down(
        fake_cluster: tuple[Path, list[launcher.PlannedNode]]) -> None:
    data_dir, plan = fake_cluster
    cluster, leader, processes = launcher.start_local_cluster(data_dir, plan, timeout=15)
    assert leader == "n1"
    assert cluster_file.read_cluster_file(data_dir) == cluster
    assert [e.pid for e in cluster.nodes] == [processes[e.id].pid for e in cluster.nodes]
    with pytest.raises(ClusterError, match="already running"):
        launcher.start_local_cluster(data_dir, plan, timeout=5)

    # On a loaded machine a fake node may miss one status query: ask again (bounded).
    deadline = time.monotonic() + 30
    while True:
        rows = json.loads(CliRunner().invoke(main, ["status", "--data-dir", str(data_dir),
                                                    "--json", "--timeout", "5"]).output)
        if all(row["status"] is not None for row in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [row["status"]["role"] for row in rows] == ["leader", "follower", "follower"]
    statuses = admin.query_status(cluster.nodes, timeout=5)
    assert admin.lag_by_node(statuses) == {"n1": 0, "n2": 1, "n3": 1}
    table = CliRunner().invoke(main, ["status", "--data-dir", str(data_dir), "--timeout", "5"])
    assert table.exit_code == 0 and "leader" in table.output, table.output

    result = CliRunner().invoke(main, ["failover", "--data-dir", str(data_dir), "--to", "n3"])
    assert result.exit_code == 0, result.output
    assert "leadership moved from n1 to n3 in" in result.output
    result = CliRunner().invoke(main, ["failover", "--data-dir", str(data_dir), "--to", "n3"])
    assert result.exit_code == 1 and "n3 is already the leader" in result.output
    result = CliRunner().invoke(main, ["failover", "--data-dir", str(data_dir), "--to", "n7"])
    assert result.exit_code == 1 and "no node 'n7'" in result.output

    old_pid = processes["n2"].pid
    processes["n2"].kill()
    processes["n2"].wait()
    rows = json.loads(CliRunner().invoke(main, ["status", "--data-dir", str(data_dir),
                                                "--json", "--timeout", "5"]).output)
    assert rows[1]["health"] == "down"
    result = CliRunner().invoke(main, ["restart", "n2", "--data-dir", str(data_dir), "--wait"])
    assert result.exit_code == 0, result.output
    new_pid = cluster_file.read_cluster_file(data_dir).node("n2").pid
    assert new_pid not in (None, old_pid) and launcher.is_our_node(new_pid)
    result = CliRunner().invoke(main, ["restart", "n2", "--data-dir", str(data_dir)])
    assert result.exit_code == 1 and "already running" in result.output
    assert "fake node n2" in (data_dir / "n2" / "node.log").read_text()

    pids = _pids_of(data_dir)
    result = CliRunner().invoke(main, ["down", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    for process in processes.values():
        process.wait(timeout=30)
    assert not any(launcher.pid_alive(pid) for pid in pids)


def test_startup_failure_names_the_node_and_stops_the_others(
        fake_cluster: tuple[Path, list[launcher.PlannedNode]]) -> None:
    data_dir, plan = fake_cluster
    broken = plan[2]
    plan[2] = launcher.PlannedNode(config=broken.config, config_path=broken.config_path,
                                   log_path=broken.log_path,
                                   argv=[sys.executable, "-c",
                                      "import sys; print('boom: no phalanx here', "
                                      "file=sys.stderr); sys.exit(3)"])
    started: list[int] = []
    real_start = launcher.start_node_process

    def recording_start(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        process = real_start(argv, log_path)
        started.append(process.pid)
        return process

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(launcher, "start_node_process", recording_start)
        try:
            with pytest.raises(ClusterError) as caught:
                launcher.start_local_cluster(data_dir, plan, timeout=10)
        finally:
            _kill_all(started)
    message = str(caught.value)
    assert "n3 (exit code 3)" in message and "boom: no phalanx here" in message
    assert not (data_dir / "cluster.json").exists()
    assert not any(launcher.pid_alive(pid) for pid in started)


def test_cancelled_startup_stops_what_it_started(
        fake_cluster: tuple[Path, list[launcher.PlannedNode]]) -> None:
    data_dir, plan = fake_cluster
    started: list[subprocess.Popen[bytes]] = []
    real_start = launcher.start_node_process

    def recording_start(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        started.append(real_start(argv, log_path))
        return started[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(launcher, "start_node_process", recording_start)
        try:
            with pytest.raises(StartupInterrupted):
                launcher.start_local_cluster(data_dir, plan, timeout=10, cancelled=lambda: True)
        finally:
            _kill_all([process.pid for process in started])
    assert len(started) == 3 and all(process.returncode is not None for process in started)
    assert not (data_dir / "cluster.json").exists()


def test_wait_for_leader_timeout_names_the_silent_nodes(tmp_path: Path) -> None:
    loopback_base, base_port = _free_layout(2)
    plan = launcher.plan_local_cluster(tmp_path, nodes=2, base_port=base_port,
                                       loopback_base=loopback_base)
    log = tmp_path / "n1.log"
    log.write_text("line 1\nlast words of n1\n")
    with pytest.raises(ClusterError) as caught:
        launcher.wait_for_leader([n.entry(None) for n in plan], timeout=0.5,
                                 log_paths={"n1": log})
    message = str(caught.value)
    assert "did not come up within 0.5 s: n1, n2" in message
    assert "last words of n1" in message


# --------------------------------------------------------------------------- end to end

def test_end_to_end_up_status_failover_down(tmp_path: Path) -> None:
    data_dir = tmp_path / "cluster"
    loopback_base, base_port = _free_layout(3)
    try:
        result = _run_cli("up", "--nodes", "3", "--detach", "--data-dir", str(data_dir),
                          "--base-port", str(base_port), "--loopback-base", str(loopback_base),
                          "--election-ticks", "30", "--heartbeat-ticks", "3", timeout=90)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"redis-cli -h 127.0.0.{loopback_base + 1} -p {base_port + 1}" in result.stdout
        cluster = cluster_file.read_cluster_file(data_dir)
        assert all(launcher.is_our_node(entry.pid) for entry in cluster.nodes)

        status = _run_cli("status", "--json", "--data-dir", str(data_dir))
        assert status.returncode == 0, status.stderr
        rows = json.loads(status.stdout)
        leaders = [row["id"] for row in rows if (row["status"] or {}).get("role") == "leader"]
        assert len(leaders) == 1, rows
        target = next(row["id"] for row in rows if row["id"] != leaders[0])

        moved = _run_cli("failover", "--to", target, "--data-dir", str(data_dir))
        assert moved.returncode == 0, moved.stdout + moved.stderr
        assert f"leadership moved from {leaders[0]} to {target}" in moved.stdout
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            statuses = admin.query_status(cluster.nodes)
            if (leader := admin.current_leader(statuses)) and leader.entry.id == target:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"{target} did not become the leader")

        down = _run_cli("down", "--data-dir", str(data_dir))
        assert down.returncode == 0, down.stdout + down.stderr
        pids = [entry.pid for entry in cluster.nodes]
        assert not any(launcher.pid_alive(pid) for pid in pids)
        assert "stopped" in down.stdout
    finally:
        _kill_all(_pids_of(data_dir))


def test_end_to_end_foreground_up_stops_its_nodes_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "cluster"
    loopback_base, base_port = _free_layout(3)
    up = subprocess.Popen([sys.executable, "-m", "phalanx.cli", "up", "--data-dir",
                           str(data_dir), "--base-port", str(base_port), "--loopback-base",
                           str(loopback_base)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (data_dir / "cluster.json").exists():
            assert up.poll() is None, up.communicate()[0]
            assert time.monotonic() < deadline, "no cluster.json within 60 s"
            time.sleep(0.1)
        pids = _pids_of(data_dir)
        assert len(pids) == 3 and all(launcher.is_our_node(pid) for pid in pids)
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=20)
        assert up.returncode == 0, output
        assert "stopped" in output
        assert not any(launcher.pid_alive(pid) for pid in pids)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        _kill_all(_pids_of(data_dir))


def test_a_node_without_a_replica_of_the_first_shard_shows_as_a_member_not_as_term_0(
        tmp_path: Path) -> None:
    """Session 8 saw `phalanx status` show n4 with role "none", term 0 in a 4-node
    `--zones 1 --nodes-per-host 2` cluster. Not a node that failed to join: 1 shard of 3
    replicas on 4 nodes leaves one node without a replica of it (it still votes or learns in
    the placement driver's group). Its /status now says term null (it knows no term of that
    shard), and the table says "no replica" and lists what the node does hold."""
    from phalanx.cli.cluster import replicas_cell, role_cell

    data_dir = tmp_path / "cluster"
    loopback_base, base_port = _free_layout(4)
    try:
        result = _run_cli("up", "--nodes", "4", "--zones", "1", "--nodes-per-host", "2",
                          "--detach", "--data-dir", str(data_dir), "--base-port",
                          str(base_port), "--loopback-base", str(loopback_base), timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        cluster = cluster_file.read_cluster_file(data_dir)
        # Until the placement settled: every node answers, shard 1 has its 3 voters and every
        # one of them reports its replica (bounded; a loaded machine starts slowly).
        deadline = time.monotonic() + 60
        while True:
            raws = {s.entry.id: s.status for s in admin.query_status(cluster.nodes, timeout=5)}
            statuses = {node: raw for node, raw in raws.items() if raw is not None}
            newest = max(statuses.values(), key=lambda raw: int(raw.get("map_version") or 0),
                         default={})
            shard = next(iter(newest.get("shards") or []), {})
            voters = set(shard.get("voters") or [])
            holders = {node for node, raw in statuses.items() if "1" in (raw.get("local") or {})}
            if (len(statuses) == 4 and len(voters) == 3 and holders == voters
                    and all(statuses[v].get("role") in ("leader", "follower") for v in voters)):
                break
            assert time.monotonic() < deadline, f"placement did not settle: {raws}"
            time.sleep(0.2)
        spares = sorted(set(statuses) - voters)
        assert len(spares) == 1, statuses
        spare = statuses[spares[0]]
        # A member: alive in the map, in the placement driver's group.
        assert {n["id"]: n["state"] for n in newest["nodes"]}[spares[0]] == "alive"
        assert "0" in spare["local"], spare["local"]
        assert spare["role"] == "none" and spare["term"] is None, spare
        assert role_cell(spare) == "no replica"
        assert replicas_cell(spare) in ("meta", "meta learner"), spare["meta"]
        for voter in voters:
            assert isinstance(statuses[voter]["term"], int) and statuses[voter]["term"] >= 1
            assert role_cell(statuses[voter]) in ("leader", "follower")
            assert replicas_cell(statuses[voter]).split(",")[0] == "1"
        table = subprocess.run([sys.executable, "-m", "phalanx.cli", "status", "--data-dir",
                                str(data_dir), "--timeout", "5"], capture_output=True,
                               text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
        assert table.returncode == 0, table.stderr
        row = next(line for line in table.stdout.splitlines() if f" {spares[0]} " in line)
        assert "no replica" in row and "meta" in row, table.stdout
    finally:
        _kill_all(_pids_of(data_dir))

"""A real HAProxy in front of a real 3-node cluster, with a node killed (-9) under load.

The config comes from the real `phalanx haproxy-config` (nodes from a running node's /status),
with a stats socket; `haproxy -f cfg -db` runs as a subprocess. A client writes through HAProxy
in a bounded loop (short timeouts, reconnect on error) while the leader, or in a variant a
follower, is killed. The test shows:
- clients through HAProxy keep working: writes are acknowledged again after the kill, and every
  acknowledged write is readable through HAProxy afterwards (errors during the switch are
  allowed; the loop bounds them);
- HAProxy marks the dead node DOWN (`show stat` on the stats socket) and opens no new session
  to it afterwards (its `stot` stops growing);
- in the leader variant, the writer frontend (`/primary`) ends up on the new leader alone.

Per-shard readiness (6 nodes, 2 shards): when one shard loses its quorum, HAProxy keeps every
surviving node in rotation, including that shard's surviving replica, because `/ready` answers
200 while a node can serve some shard; the lost shard's keys fail alike on every node.

It MEASURES and prints (asserts no bound: the machine is shared) the time from the kill to the
dead server's status DOWN in `show stat`, to the first acknowledged write after the kill, and
whether the survivors were taken out meanwhile (their /ready fails while no leader is known).

Rules: every process is killed by pid in a `finally` (the cluster fixture kills the nodes; the
`haproxy` fixture kills HAProxy), even when the test fails. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from integration_harness import (
    LocalCluster,
    NodeRef,
    describe_map,
    keys_of_shard,
    kill_together,
    no_retry,
    retry_command,
    run_cli,
    settled,
    shards_of,
    wait_map,
    wait_until,
)

from phalanx.ops import admin
from phalanx.ops.haproxy import RESP_BACKEND, WRITER_BACKEND, parse_show_stat, stats_command
from phalanx.ops.ports import free_port

HAPROXY = shutil.which("haproxy")
pytestmark = [
    pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (.ci/run installs it)"),
    pytest.mark.timeout(120),
]

#: Short client timeouts: a request stuck on a dead node fails fast and the loop reconnects.
CLIENT_TIMEOUT_S = 1.0




@dataclass
class HAProxy:
    process: subprocess.Popen[bytes]
    config: Path
    socket_path: Path
    log_path: Path
    port: int
    writer_port: int

    def show_stat(self) -> list[dict[str, str]]:
        return parse_show_stat(stats_command(self.socket_path, "show stat", timeout=1.0))

    def servers(self, backend: str = RESP_BACKEND) -> dict[str, dict[str, str]]:
        return {row["svname"]: row for row in self.show_stat()
                if row.get("pxname") == backend
                and row.get("svname") not in ("FRONTEND", "BACKEND")}

    def statuses(self, backend: str = RESP_BACKEND) -> dict[str, str]:
        return {name: row.get("status", "") for name, row in self.servers(backend).items()}

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def start_haproxy(c: LocalCluster, workdir: Path) -> HAProxy:
    """`phalanx haproxy-config` for the cluster, then `haproxy -f cfg -db`; waits until every
    server of the balanced backend is UP."""
    assert HAPROXY is not None
    port, writer_port = free_port(), free_port()
    socket_path = workdir / "haproxy.sock"
    config = workdir / "haproxy.cfg"
    completed = run_cli(["haproxy-config", "--data-dir", str(c.data_dir), "--port", str(port),
                         "--writer-port", str(writer_port), "--stats-socket", str(socket_path),
                         "--output", str(config)])
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "/status of" in completed.stderr, completed.stderr  # nodes from the live map
    checked = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True,
                             text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log_path = workdir / "haproxy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([HAPROXY, "-f", str(config), "-db"], stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    proxy = HAProxy(process, config, socket_path, log_path, port, writer_port)

    def all_up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"haproxy exited ({process.returncode}):\n{proxy.log()}")
        try:
            statuses = proxy.statuses()
        except OSError:
            return False
        return len(statuses) == len(c.nodes) and all(s == "UP" for s in statuses.values())

    wait_until(all_up, 30.0, "every HAProxy server to be UP")
    return proxy


@pytest.fixture
def haproxy() -> Iterator[Callable[[LocalCluster], HAProxy]]:
    started: list[HAProxy] = []
    # A short directory: a unix socket path must stay under ~108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="phx-hap-"))

    def start(c: LocalCluster) -> HAProxy:
        proxy = start_haproxy(c, workdir)
        started.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            if proxy.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proxy.process.send_signal(signal.SIGTERM)
                try:
                    proxy.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proxy.process.kill()
                    proxy.process.wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class StatPoller:
    """Polls `show stat` every few milliseconds; remembers every status change with its time."""

    proxy: HAProxy
    interval_s: float = 0.005
    changes: list[tuple[float, str, str]] = field(default_factory=list)
    last: dict[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: int = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                statuses = self.proxy.statuses()
            except OSError:
                self.errors += 1
                time.sleep(self.interval_s)
                continue
            now = time.monotonic()
            for name, status in statuses.items():
                if self.last.get(name) != status:
                    self.changes.append((now, name, status))
                    self.last[name] = status
            time.sleep(self.interval_s)

    def first(self, name: str, prefix: str, after: float) -> float | None:
        return next((t for t, n, s in self.changes if n == name and t >= after
                     and s.startswith(prefix)), None)


@dataclass
class Writer:
    """SET/GET through HAProxy in a bounded loop: short timeouts, a new connection after an
    error, a fresh key per attempt (an unacknowledged write may or may not have happened)."""

    port: int
    prefix: str
    acked: dict[str, str] = field(default_factory=dict)
    ack_times: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    stale_reads: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    deadline_s: float = 45.0

    def run(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=CLIENT_TIMEOUT_S,
                             socket_connect_timeout=CLIENT_TIMEOUT_S, retry=no_retry(),
                             protocol=2, decode_responses=True)
        end = time.monotonic() + self.deadline_s
        attempt = 0
        try:
            while not self.stop.is_set() and time.monotonic() < end:
                attempt += 1
                key, value = f"{self.prefix}:{attempt}", f"v{attempt}"
                try:
                    assert client.set(key, value) is True
                    self.acked[key] = value
                    self.ack_times.append(time.monotonic())
                    read = client.get(key)
                    if read != value:
                        self.stale_reads.append(f"{key}: {read!r} != {value!r}")
                except redis.RedisError as error:
                    self.errors.append((time.monotonic(), f"{type(error).__name__}: {error}"))
                    client.connection_pool.disconnect()
                    time.sleep(0.02)
        finally:
            client.close()

    def acked_after(self, moment: float) -> int:
        return sum(1 for t in self.ack_times if t > moment)


def _fmt(value: float | None) -> str:
    return "never" if value is None else f"{value * 1000:.0f} ms"


@pytest.mark.parametrize("victim_role", ["leader", "follower"])
def test_clients_through_haproxy_survive_a_killed_node(
        cluster: Callable[..., LocalCluster], haproxy: Callable[[LocalCluster], HAProxy],
        victim_role: str, record_property: Callable[[str, object], None]) -> None:
    c = cluster(3)
    leader = c.leader()
    victim: NodeRef = leader if victim_role == "leader" else c.others(leader)[0]
    survivors = [n.id for n in c.others(victim)]
    proxy = haproxy(c)
    wait_until(lambda: proxy.statuses(WRITER_BACKEND).get(leader.id) == "UP", 15.0,
               f"the writer backend to route to the leader {leader.id}")

    poller = StatPoller(proxy)
    # One persistent connection per node (leastconn spreads them), so the victim certainly
    # carries a client session when it dies.
    writers = [Writer(proxy.port, f"hap{i}") for i in range(len(c.nodes))]
    threads = [threading.Thread(target=poller.run, daemon=True),
               *(threading.Thread(target=w.run, daemon=True) for w in writers)]
    for thread in threads:
        thread.start()

    def acked_after(moment: float) -> int:
        return sum(w.acked_after(moment) for w in writers)

    try:
        wait_until(lambda: all(len(w.acked) >= 30 for w in writers), 20.0,
                   "30 writes per client through HAProxy")
        wait_until(lambda: int(proxy.servers()[victim.id].get("scur") or 0) >= 1, 30.0,
                   f"a client session on {victim.id}")
        sessions_before = int(proxy.servers()[victim.id].get("stot") or 0)
        killed_at = time.monotonic()
        c.kill(victim)
        wait_until(lambda: poller.last.get(victim.id, "").startswith("DOWN"), 15.0,
                   f"HAProxy to mark {victim.id} DOWN")
        down_at = poller.first(victim.id, "DOWN", killed_at)
        assert down_at is not None
        sessions_at_down = int(proxy.servers()[victim.id].get("stot") or 0)
        # Clients keep working: more writes are acknowledged after the node was marked DOWN.
        wait_until(lambda: all(w.acked_after(down_at) >= 30 for w in writers), 30.0,
                   "30 acknowledged writes per client through HAProxy after the kill")
        if victim_role == "leader":
            new_leader = c.leader(exclude=[victim.id])

            def writer_backend_on_new_leader() -> bool:
                statuses = proxy.statuses(WRITER_BACKEND)
                return [n for n, s in statuses.items() if s == "UP"] == [new_leader.id]

            wait_until(writer_backend_on_new_leader, 15.0,
                       f"the writer backend to route to the new leader {new_leader.id} only")
            writer_client = redis.Redis(host="127.0.0.1", port=proxy.writer_port,
                                        socket_timeout=5.0, retry=no_retry(), protocol=2,
                                        decode_responses=True)
            try:
                assert retry_command(writer_client, "SET", "hap:writer", "ok") in (True, "OK")
                assert writer_client.execute_command("ROLE")[0] == "master"
            finally:
                writer_client.close()
    finally:
        for w in writers:
            w.stop.set()
        poller.stop.set()
        for thread in threads:
            thread.join(timeout=10)

    # HAProxy stopped routing to the dead node: DOWN, and no new session since.
    row = proxy.servers()[victim.id]
    assert row["status"].startswith("DOWN"), row
    sessions_after = int(row.get("stot") or 0)
    assert sessions_after == sessions_at_down, (
        f"HAProxy opened {sessions_after - sessions_at_down} sessions to {victim.id} after "
        f"marking it DOWN")
    later = acked_after(down_at)
    acked = {k: v for w in writers for k, v in w.acked.items()}
    stale_reads = [r for w in writers for r in w.stale_reads]
    ack_times = sorted(t for w in writers for t in w.ack_times)
    errors = [(t, e) for w in writers for t, e in w.errors]

    # Every acknowledged write is readable through HAProxy.
    assert not stale_reads, stale_reads[:5]
    reader = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=5.0,
                         retry=no_retry(), protocol=2, decode_responses=True)
    try:
        keys = sorted(acked)
        found: list[Any] = []
        for start in range(0, len(keys), 200):
            found += retry_command(reader, "MGET", *keys[start:start + 200])
    finally:
        reader.close()
    missing = [k for k, v in zip(keys, found, strict=True) if v != acked[k]]
    assert not missing, f"{len(missing)} acknowledged writes are missing: {missing[:10]}"

    first_ack = next((t for t in ack_times if t > killed_at), None)
    errors_after = [e for t, e in errors if t >= killed_at]
    all_back = None  # when the last client that saw an error after the kill succeeded again
    for w in writers:
        failed = [t for t, _ in w.errors if t >= killed_at]
        if failed:
            back = next((t for t in w.ack_times if t > failed[0]), None)
            if back is not None and (all_back is None or back > all_back):
                all_back = back
    survivor_downs = [(round((t - killed_at) * 1000), n, s) for t, n, s in poller.changes
                      if n in survivors and t >= killed_at and not s.startswith("UP")]
    measurement = {
        "victim": f"{victim.id} ({victim_role})",
        "kill_to_down_ms": round((down_at - killed_at) * 1000),
        "kill_to_first_ack_ms": None if first_ack is None else round(
            (first_ack - killed_at) * 1000),
        "victim_transitions_ms": [(round((t - killed_at) * 1000), s)
                                  for t, n, s in poller.changes
                                  if n == victim.id and t >= killed_at],
        "survivor_non_up_ms": survivor_downs,
        "client_errors_after_kill": len(errors_after),
        "errors_after_kill": [(round((t - killed_at) * 1000), w.prefix, e[:80])
                              for w in writers for t, e in w.errors if t >= killed_at],
        "all_clients_back_ms": None if all_back is None else round(
            (all_back - killed_at) * 1000),
        "acked_writes": len(acked),
        "acked_after_down": later,
        "victim_sessions": f"{sessions_before} before the kill, {sessions_at_down} when "
                           f"marked DOWN, {sessions_after} at the end",
    }
    record_property("haproxy_failover", json.dumps(measurement))
    print(f"\nHAPROXY MEASUREMENT ({victim_role} killed): kill -> DOWN in show stat: "
          f"{_fmt(down_at - killed_at)}; kill -> first acknowledged write through HAProxy: "
          f"{_fmt(None if first_ack is None else first_ack - killed_at)}; "
          f"{len(errors_after)} client errors after the kill\n{json.dumps(measurement)}")


def _ready(node: NodeRef, query: str = "") -> tuple[int, dict[str, Any]]:
    code, body = admin.admin_request(node.admin, f"/ready{query}", timeout=2.0)
    return code, body if isinstance(body, dict) else {}


def test_a_shard_without_quorum_takes_no_healthy_node_out_of_rotation(
        cluster: Callable[..., LocalCluster], haproxy: Callable[[LocalCluster], HAProxy]) -> None:
    """Per-shard readiness (issue 14): 6 nodes, 2 shards; kill -9 two of the three replicas of
    shard S (the placement driver and the other shard keep their quorum). HAProxy marks the
    two dead nodes DOWN and keeps the four survivors UP, including S's surviving replica,
    whose own shard has no leader: through it the other shard's keys still work, while S's
    keys answer -CLUSTERDOWN on every node alike. That survivor's /ready lists S as degraded;
    /ready?shard=S and /ready?strict=1 give the strict answers (503)."""
    c = cluster(6, shards=2)
    status = wait_map(c, lambda s: settled(s) and all(
        sh["leader"] == sh["preferred_leader"] for sh in shards_of(s).values()),
        60.0, "every shard led by its preferred leader")
    shards = shards_of(status)
    driver_voters = set((status.get("meta") or {}).get("voters") or [])
    choices = []
    for shard_id, shard in sorted(shards.items()):
        others = [s for sid, s in shards.items() if sid != shard_id]
        for keep_id in sorted(shard["replicas"]):
            doomed = sorted(set(shard["replicas"]) - {keep_id})
            if all(len(set(o["replicas"]) - set(doomed)) >= 2 for o in others) and \
                    len(driver_voters - set(doomed)) * 2 > len(driver_voters):
                choices.append((keep_id == shard["leader"], shard_id, keep_id, doomed))
    assert choices, f"no shard can lose 2 replicas alone: {describe_map(status)}"
    _, lost_shard, keep_id, doomed = min(choices)
    healthy_shard = next(sid for sid in shards if sid != lost_shard)
    keep = c.node(keep_id)
    survivors = [n.id for n in c.nodes if n.id not in doomed]
    lost_keys = keys_of_shard(status, lost_shard, 5, prefix="lost")
    healthy_keys = keys_of_shard(status, healthy_shard, 40, prefix="healthy")

    proxy = haproxy(c)
    poller = StatPoller(proxy)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=5.0,
                         retry=no_retry(), protocol=2, decode_responses=True)
    try:
        killed_at = time.monotonic()
        kill_together(c, doomed)
        for node_id in doomed:
            wait_until(lambda node_id=node_id: poller.last.get(node_id, "").startswith("DOWN"),
                       15.0, f"HAProxy to mark {node_id} DOWN")
        # The lost shard answers CLUSTERDOWN through its survivor: it has seen no leader for
        # several election timeouts, so the quorum is gone.
        direct = c.client(keep, timeout=10.0)
        answers: list[str] = []

        def lost_shard_refused() -> bool:
            try:
                direct.set(lost_keys[0], "x")
            except redis.RedisError as error:
                answers.append(f"{type(error).__name__}: {error}")
                # (redis-py strips the CLUSTERDOWN code into its own exception class.)
                return isinstance(error, redis.exceptions.ClusterDownError) and \
                    "no quorum" in str(error)
            raise AssertionError(f"a write to shard {lost_shard} without quorum was "
                                 f"acknowledged")

        try:
            wait_until(lost_shard_refused, 30.0,
                       f"{keep.id} to answer CLUSTERDOWN for shard {lost_shard}")
        except AssertionError as error:
            raise AssertionError(f"{error}; it answered {answers[-3:]}") from None
        code, body = _ready(keep)
        assert code == 200 and str(lost_shard) in body["degraded"], (code, body)
        assert _ready(keep, f"?shard={lost_shard}")[0] == 503
        assert _ready(keep, "?strict=1")[0] == 503
        assert _ready(keep, f"?shard={healthy_shard}")[0] == 200
        # Several check rounds (inter 100 ms, fall 2) with the shard lost: no survivor leaves.
        observed_from = time.monotonic()
        time.sleep(2.0)
        statuses = proxy.statuses()
        assert all(statuses[n] == "UP" for n in survivors), statuses
        # Through HAProxy (leastconn over the four survivors, each of them in turn): the
        # healthy shard's keys are written and read; the lost shard's keys are refused.
        for key in healthy_keys:
            assert retry_command(client, "SET", key, f"v-{key}") in (True, "OK")
            assert retry_command(client, "GET", key) == f"v-{key}"
            client.connection_pool.disconnect()  # a new connection: another survivor
        for key in lost_keys:
            with pytest.raises(redis.exceptions.ClusterDownError, match="no quorum"):
                client.set(key, "x")
            client.connection_pool.disconnect()
    finally:
        poller.stop.set()
        thread.join(timeout=10)
        client.close()
    downs = [(round((t - killed_at) * 1000), n, s) for t, n, s in poller.changes
             if n in survivors and t >= killed_at and s.startswith("DOWN")]
    print(f"\nlost shard {lost_shard} (killed {', '.join(doomed)}; survivor {keep.id}); "
          f"survivor statuses observed for {time.monotonic() - observed_from:.1f} s after "
          f"CLUSTERDOWN; survivors marked DOWN: {downs or 'none'}")
    assert not downs, f"HAProxy took healthy survivors out of rotation: {downs}"

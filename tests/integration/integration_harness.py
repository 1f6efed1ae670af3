"""Real local phalanx clusters for the integration tests (and the failover-timing script).

A `LocalCluster` is N real node processes on loopback, each on its own 127.0.0.X address,
started through `phalanx.ops.launcher` (the code behind `phalanx up`), so that config
overrides the CLI has no flag for (`snapshot_every_entries`, `max_value_bytes`) can be set.
Restarts and manual failovers go through the real `phalanx` CLI.

Rules of this file:
- Every process ever started for a cluster is remembered by pid and SIGKILLed by `close()`
  (which the `cluster` fixture always calls); pids are only signalled while they are live
  phalanx processes (`is_our_node`), because pids get reused. The data directory is removed.
- Every wait is bounded and raises `AssertionError` with what it saw when it times out.
- No assertion about speed: the machine is shared and noisy.
- Ports and loopback addresses are random (base port 20000-40000, loopback base 30-200) and
  checked free, so modules can run in parallel under pytest-xdist.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from phalanx.errors import ClusterError
from phalanx.ops import admin, cluster_file, launcher

#: Generous bounds: the machine is shared and runs other test suites at the same time.
LEADER_TIMEOUT_S = 30.0
CONVERGE_TIMEOUT_S = 60.0
CLIENT_SOCKET_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class NodeRef:
    """One node of a cluster: its id and its addresses (the pid lives in the cluster)."""

    id: str
    host: str
    port: int
    admin: str
    data_dir: str

    @property
    def resp(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"

    @property
    def log_path(self) -> Path:
        return Path(self.data_dir) / cluster_file.NODE_LOG_FILE


class LocalCluster:
    """A running local cluster; see the module docstring."""

    def __init__(self, nodes: int = 3, *, overrides: dict[str, Any] | None = None,
                 name: str = "cluster", seed: int | None = None, regions: int = 1,
                 plan: list[launcher.PlannedNode] | None = None,
                 root: Path | None = None, zones: int | None = None,
                 nodes_per_host: int = 1) -> None:
        """`plan` (with the `root` directory it lives in, removed at close): start that
        plan instead of picking one (a region of an active-active setup, ops/regions.py).
        `zones` (default min(3, nodes)) and `nodes_per_host` lay the picked plan out as
        `phalanx up --zones Z --nodes-per-host K` does (docs/hosts.md)."""
        self.rng = random.Random(seed)
        self.root = root if root is not None else Path(
            tempfile.mkdtemp(prefix=f"phalanx-it-{name}-"))
        self.data_dir = self.root / "cluster"
        options = {"enable_fault_injection": True, **(overrides or {})}
        self.overrides = options
        self.pids: set[int] = set()
        self._stopped: set[int] = set()
        self._clients: list[redis.Redis] = []
        self.closed = False
        if plan is not None:
            self.data_dir = Path(plan[0].config.data_dir).parent
        else:
            plan = launcher.pick_free_plan(self.data_dir, self.rng, nodes=nodes,
                                           zones=zones or min(3, nodes), regions=regions,
                                           nodes_per_host=nodes_per_host,
                                           overrides=options, base_ports=(20000, 40000 - 300),
                                           loopback_bases=(30, 200), tries=50)
        try:
            entries, _leader, processes = launcher.start_local_cluster(
                self.data_dir, plan, timeout=LEADER_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        self._processes = processes
        self.pids.update(p.pid for p in processes.values())
        self.nodes = [NodeRef(id=e.id, host=e.host, port=int(e.resp.rpartition(":")[2]),
                              admin=e.admin, data_dir=e.data_dir) for e in entries.nodes]
        self.by_id = {n.id: n for n in self.nodes}

    # ---- lookups --------------------------------------------------------------------------
    def node(self, node: NodeRef | str) -> NodeRef:
        return self.by_id[node] if isinstance(node, str) else node

    def others(self, node: NodeRef | str) -> list[NodeRef]:
        node = self.node(node)
        return [n for n in self.nodes if n.id != node.id]

    def pid(self, node: NodeRef | str) -> int:
        entry = cluster_file.read_cluster_file(self.data_dir).node(self.node(node).id)
        assert entry.pid is not None
        self.pids.add(entry.pid)
        return entry.pid

    def alive(self, node: NodeRef | str) -> bool:
        return launcher.is_our_node(self.pid(node))

    # ---- admin API ------------------------------------------------------------------------
    def status(self, node: NodeRef | str, timeout: float = 1.0) -> dict[str, Any] | None:
        """The node's /status JSON, or None when it does not answer."""
        node = self.node(node)
        try:
            code, body = admin.admin_request(node.admin, "/status", timeout=timeout)
        except OSError:
            return None
        return body if code == 200 and isinstance(body, dict) else None

    def statuses(self, nodes: Iterable[NodeRef] | None = None,
                 timeout: float = 1.0) -> dict[str, dict[str, Any] | None]:
        chosen = list(nodes) if nodes is not None else self.nodes
        entries = [cluster_file.NodeEntry(id=n.id, zone="", region="", resp=n.resp,
                                          admin=n.admin, peer="", pid=None, data_dir=n.data_dir)
                   for n in chosen]
        found: dict[str, dict[str, Any] | None] = {}
        for s in admin.query_status(entries, timeout=timeout):
            found[s.entry.id] = s.status
        return found

    def role(self, node: NodeRef | str) -> str | None:
        status = self.status(node)
        return None if status is None else status.get("role")

    def leader(self, among: Iterable[NodeRef] | None = None, *, exclude: Iterable[str] = (),
               timeout: float = LEADER_TIMEOUT_S) -> NodeRef:
        """The leader agreed by a majority of the whole cluster among the given nodes.

        Waits (bounded) until a node of `among` (default: every node) says it is the leader
        and a majority of the cluster names it, ignoring ids in `exclude`.
        """
        chosen = list(among) if among is not None else list(self.nodes)
        excluded = set(exclude)
        majority = len(self.nodes) // 2 + 1
        deadline = time.monotonic() + timeout
        seen: dict[str, dict[str, Any] | None] = {}
        while time.monotonic() < deadline:
            seen = self.statuses(chosen)
            votes: dict[str, int] = {}
            terms: dict[str, int] = {}
            for node_id, status in seen.items():
                if status is None:
                    continue
                named = node_id if status.get("role") == "leader" else status.get("leader")
                if named:
                    votes[named] = votes.get(named, 0) + 1
                if status.get("role") == "leader":
                    terms[node_id] = int(status.get("term") or 0)
            for node_id in sorted(terms, key=lambda n: -terms[n]):
                if node_id not in excluded and votes.get(node_id, 0) >= majority:
                    return self.by_id[node_id]
            time.sleep(0.1)
        raise AssertionError(f"no agreed leader within {timeout:g} s: {_brief(seen)}")

    def set_faults(self, node: NodeRef | str, rules: dict[str, Any]) -> dict[str, Any]:
        node = self.node(node)
        code, body = admin.admin_request(node.admin, "/faults", method="PUT", body=rules,
                                         timeout=5.0)
        assert code == 200, f"PUT /faults on {node.id}: {code} {body}"
        return body

    def clear_faults(self, node: NodeRef | str) -> None:
        node = self.node(node)
        code, body = admin.admin_request(node.admin, "/faults", method="DELETE", timeout=5.0)
        assert code == 200, f"DELETE /faults on {node.id}: {code} {body}"

    # ---- clients --------------------------------------------------------------------------
    def client(self, node: NodeRef | str, *, timeout: float = CLIENT_SOCKET_TIMEOUT_S,
               **options: Any) -> redis.Redis:
        """A redis-py client of `node` (closed when the cluster closes)."""
        node = self.node(node)
        options.setdefault("socket_connect_timeout", min(timeout, 5.0))
        options.setdefault("retry", no_retry())
        # redis-py 8 speaks RESP3 by default; the suite pins RESP2 (what most clients speak)
        # and tests RESP3 explicitly (see test_clients.py).
        options.setdefault("protocol", 2)
        client = redis.Redis(host=node.host, port=node.port, socket_timeout=timeout,
                             decode_responses=options.pop("decode_responses", True), **options)
        self._clients.append(client)
        return client

    def readonly_client(self, node: NodeRef | str, **options: Any) -> redis.Redis:
        """A client whose single connection has sent READONLY (local, possibly stale reads)."""
        client = self.client(node, single_connection_client=True, **options)
        assert client.execute_command("READONLY") in (True, "OK", b"OK")
        return client

    # ---- processes ------------------------------------------------------------------------
    def kill(self, node: NodeRef | str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to the node's process; for SIGKILL/SIGTERM wait (bounded) until it is gone."""
        node = self.node(node)
        pid = self.pid(node)
        assert launcher.is_our_node(pid), f"{node.id} (pid {pid}) is not running"
        os.kill(pid, sig)
        if sig == signal.SIGSTOP:
            self._stopped.add(pid)
        elif sig == signal.SIGCONT:
            self._stopped.discard(pid)
        elif sig in (signal.SIGKILL, signal.SIGTERM):
            self._stopped.discard(pid)
            wait_until(lambda: not launcher.pid_alive(pid), 30.0, f"{node.id} pid {pid} to exit")
        return pid

    def restart(self, node: NodeRef | str, *, wait: bool = True) -> int:
        """`phalanx restart NODE --wait`: start it again with its recorded argv; the new pid."""
        node = self.node(node)
        completed = run_cli(["restart", node.id, "--data-dir", str(self.data_dir),
                             *(["--wait", "--timeout", "60"] if wait else [])], timeout=90)
        pid = self.pid(node)
        assert completed.returncode == 0, (
            f"phalanx restart {node.id} failed ({completed.returncode}):\n{completed.stdout}\n"
            f"{completed.stderr}\n{launcher.tail(node.log_path)}")
        return pid

    def wait_converged(self, nodes: Iterable[NodeRef] | None = None, *,
                       timeout: float = CONVERGE_TIMEOUT_S) -> dict[str, dict[str, Any]]:
        """Wait until the given nodes agree on one leader and term and have all applied the same
        index (== their commit index), observed twice in a row; returns their statuses."""
        chosen = list(nodes) if nodes is not None else list(self.nodes)
        deadline = time.monotonic() + timeout
        previous: tuple[Any, ...] | None = None
        seen: dict[str, dict[str, Any] | None] = {}
        while time.monotonic() < deadline:
            seen = self.statuses(chosen)
            if all(s is not None for s in seen.values()):
                values = list(seen.values())
                # (A status without these fields: the node holds no replica of the shard its
                # status reports first yet: not converged.)
                leaders = {s.get("leader") for s in values if s}
                terms = {s.get("term") for s in values if s}
                applied = {s.get("applied_index") for s in values if s}
                committed = {s.get("commit_index") for s in values if s}
                if (len(leaders) == 1 and None not in leaders and len(terms) == 1
                        and len(applied) == 1 and None not in applied
                        and applied == committed):
                    key = (next(iter(leaders)), next(iter(terms)), next(iter(applied)))
                    if key == previous:
                        return {k: v for k, v in seen.items() if v is not None}
                    previous = key
                else:
                    previous = None
            time.sleep(0.2)
        raise AssertionError(f"nodes did not converge within {timeout:g} s: {_brief(seen)}")

    def logs(self, lines: int = 40) -> str:
        return "".join(f"\n--- {n.id}: {n.log_path} ---\n{launcher.tail(n.log_path, lines)}"
                       for n in self.nodes)

    def grep_logs(self, node: NodeRef | str, needle: str) -> list[str]:
        try:
            text = self.node(node).log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if needle in line]

    def close(self) -> None:
        """SIGKILL every process this cluster ever started (live ones only); remove its files."""
        if self.closed:
            return
        self.closed = True
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        with contextlib.suppress(ClusterError, OSError):
            for entry in cluster_file.read_cluster_file(self.data_dir).nodes:
                if entry.pid is not None:
                    self.pids.add(entry.pid)
        for pid in sorted(self.pids):
            if launcher.is_our_node(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pid in sorted(self.pids):
            with contextlib.suppress(AssertionError):
                wait_until(lambda pid=pid: not launcher.pid_alive(pid), 30.0, f"pid {pid} to exit")
        for process in getattr(self, "_processes", {}).values():
            with contextlib.suppress(Exception):
                process.wait(timeout=1)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- helpers ----------------------------------------------------------------------------

def no_retry() -> Retry:
    """No client-side retries: the tests see every failure the server or network causes."""
    return Retry(NoBackoff(), 0)


def run_cli(arguments: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m phalanx ARGS` (the real CLI), bounded."""
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "phalanx", *arguments], capture_output=True,
                          text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns a truthy value (returned); AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def retry_write(client: redis.Redis, *args: Any, timeout: float = 30.0) -> Any:
    """Run a write until it succeeds (bounded): for setup steps around faults."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.execute_command(*args)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as error:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{args[:2]} kept failing for {timeout:g} s: {error}") \
                    from error
            time.sleep(0.1)


def _brief(statuses: dict[str, dict[str, Any] | None]) -> str:
    parts = []
    for node_id, s in statuses.items():
        if s is None:
            parts.append(f"{node_id}=down")
        else:
            parts.append(f"{node_id}={s.get('role')}/t{s.get('term')}/lead {s.get('leader')}"
                         f"/commit {s.get('commit_index')}/applied {s.get('applied_index')}")
    return ", ".join(parts) or "(nothing)"


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


class WriteLoad:
    """Client threads writing unique keys to random nodes; records which writes were acknowledged.

    A write is acknowledged when the server answered OK. Any error or timeout leaves its outcome
    unknown (recorded in `attempted`): it may or may not have been applied, and a later read
    may legitimately see it.
    """

    def __init__(self, cluster: LocalCluster, *, threads: int = 4, max_writes: int = 20_000,
                 socket_timeout: float = 8.0, prefix: str = "load",
                 nodes: Iterable[NodeRef] | None = None, sets: bool = False) -> None:
        import threading

        self.cluster = cluster
        self.nodes = list(nodes) if nodes is not None else list(cluster.nodes)
        self.threads_count = threads
        self.max_writes = max_writes
        self.socket_timeout = socket_timeout
        self.prefix = prefix
        self.sets = sets
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        #: key -> value of every acknowledged SET.
        self.acknowledged: dict[str, str] = {}
        #: set key -> members whose SADD was acknowledged.
        self.acknowledged_members: dict[str, set[str]] = {}
        #: key -> value of every SET sent (acknowledged or not).
        self.attempted: dict[str, str] = {}
        #: (monotonic start, monotonic end, ok) of every finished write.
        self.events: list[tuple[float, float, bool]] = []
        self.errors: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        self._count = 0

    def start(self) -> WriteLoad:
        import threading

        for index in range(self.threads_count):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True,
                                      name=f"writer-{index}")
            self._threads.append(thread)
            thread.start()
        return self

    def _run(self, index: int) -> None:
        rng = random.Random(index * 7919 + os.getpid())
        clients = {n.id: redis.Redis(host=n.host, port=n.port, socket_timeout=self.socket_timeout,
                                     socket_connect_timeout=2.0, decode_responses=True,
                                     retry=no_retry(), protocol=2)
                   for n in self.nodes}
        sequence = 0
        try:
            while not self.stop_event.is_set():
                with self.lock:
                    if self._count >= self.max_writes:
                        return
                    self._count += 1
                sequence += 1
                node_id = rng.choice(list(clients))
                key = f"{self.prefix}:{index}:{sequence}"
                value = f"v{index}.{sequence}.{node_id}"
                with self.lock:
                    self.attempted[key] = value
                ok = False
                began = time.monotonic()
                try:
                    if self.sets and sequence % 2 == 0:
                        set_key = f"{self.prefix}:set:{index}"
                        client = clients[node_id]
                        client.sadd(set_key, value)
                        with self.lock:
                            self.acknowledged_members.setdefault(set_key, set()).add(value)
                        ok = True
                    else:
                        ok = clients[node_id].set(key, value) is True
                        if ok:
                            with self.lock:
                                self.acknowledged[key] = value
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as error:
                    name = type(error).__name__ + ": " + str(error)[:60]
                    with self.lock:
                        self.errors[name] = self.errors.get(name, 0) + 1
                    if isinstance(error, redis.ConnectionError):
                        time.sleep(0.02)  # a refused connect fails at once: do not spin
                with self.lock:
                    self.events.append((began, time.monotonic(), ok))
        finally:
            for client in clients.values():
                with contextlib.suppress(Exception):
                    client.close()

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acknowledged) + sum(len(m) for m in self.acknowledged_members.values())

    def wait_acked(self, count: int, timeout: float = 60.0) -> None:
        wait_until(lambda: self.acked_count() >= count, timeout,
                   f"{count} acknowledged writes (have {self.acked_count()}, errors "
                   f"{self.errors})")

    def first_success_after(self, moment: float) -> float | None:
        """End time of the first acknowledged write that was sent after `moment`."""
        with self.lock:
            times = [end for began, end, ok in self.events if ok and began > moment]
        return min(times) if times else None

    def last_success_before(self, moment: float) -> float | None:
        """End time of the last acknowledged write that finished before `moment`."""
        with self.lock:
            times = [end for _began, end, ok in self.events if ok and end <= moment]
        return max(times) if times else None

    def stop(self, timeout: float = 60.0) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"writer threads did not stop: {alive}"


def check_all_present(cluster: LocalCluster, load: WriteLoad,
                      nodes: Iterable[NodeRef] | None = None) -> dict[str, dict[str, str | None]]:
    """Read every attempted key from every node (READONLY local reads, after convergence).

    Asserts that every acknowledged write is present with its value on every node and that all
    nodes hold identical values for every attempted key; returns node -> key -> value.
    """
    chosen = list(nodes) if nodes is not None else list(cluster.nodes)
    cluster.wait_converged(chosen)
    keys = sorted(load.attempted)
    seen: dict[str, dict[str, str | None]] = {}
    members: dict[str, dict[str, set[str]]] = {}
    for node in chosen:
        client = cluster.readonly_client(node)
        values: dict[str, str | None] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            values.update(zip(chunk, client.mget(chunk), strict=True))
        seen[node.id] = values
        members[node.id] = {k: set(client.smembers(k)) for k in load.acknowledged_members}
        missing = {k: v for k, v in load.acknowledged.items() if values.get(k) != v}
        assert not missing, (f"{len(missing)} acknowledged writes missing or wrong on {node.id}, "
                             f"e.g. {sorted(missing.items())[:5]} -> "
                             f"{[values.get(k) for k in sorted(missing)[:5]]}")
        for set_key, expected in load.acknowledged_members.items():
            lost = expected - members[node.id][set_key]
            assert not lost, f"{node.id}: {set_key} lost acknowledged members {sorted(lost)[:5]}"
        unknown_values = {values[k] for k in keys if values[k] is not None} - set(
            load.attempted.values())
        assert not unknown_values, f"{node.id} holds values nobody wrote: {unknown_values}"
    reference = chosen[0].id
    for node in chosen[1:]:
        differing = [k for k in keys if seen[node.id][k] != seen[reference][k]]
        assert not differing, (f"{node.id} and {reference} differ on {len(differing)} keys, "
                               f"e.g. {differing[:5]}")
        assert members[node.id] == members[reference], f"{node.id} and {reference}: set differs"
    return seen


# ---- sharded clusters (test_sharding.py) -------------------------------------------------
#
# A sharded node's /status carries the cluster map: `nodes` (id, zone, region, state),
# `shards` (id, slots, desired `replicas`, reported `leader`/`voters`/`learners`,
# `fully_replicated`), `map_version`. These helpers read the NEWEST map among the nodes asked
# (a node that lags in applying the driver's log shows an older one).

def is_transient(error: BaseException) -> bool:
    """A connection problem, or an error reply after which a command certainly did nothing
    (-TRYAGAIN, -CLUSTERDOWN) or an idempotent one may be resent ("ERR phalanx: ... outcome
    unknown / timed out"). redis-py strips the prefix it maps to an exception class (TRYAGAIN,
    CLUSTERDOWN) and the "ERR " of other errors, so classes and both spellings are checked."""
    if isinstance(error, redis.ConnectionError | redis.TimeoutError
                  | redis.exceptions.TryAgainError | redis.exceptions.ClusterDownError):
        return True
    return isinstance(error, redis.ResponseError) and str(error).startswith(
        ("TRYAGAIN", "CLUSTERDOWN", "ERR phalanx", "phalanx"))


def node_at(cluster: LocalCluster, address: str) -> NodeRef:
    """The node whose RESP address is `address` ("host:port"), e.g. from a -MOVED reply."""
    found = next((n for n in cluster.nodes if n.resp == address), None)
    assert found is not None, f"no node of the cluster listens on {address}"
    return found


def retry_command(client: redis.Redis, *args: Any, timeout: float = 15.0) -> Any:
    """Run a command until it succeeds, retrying only transient errors (bounded). Use for
    reads and idempotent writes (a SET of a fixed value) around faults."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.execute_command(*args)
        except redis.RedisError as error:
            if not is_transient(error):
                raise
            if time.monotonic() >= deadline:
                raise AssertionError(f"{' '.join(map(str, args[:2]))} kept failing for "
                                     f"{timeout:g} s: {type(error).__name__}: {error}") from error
            time.sleep(0.1)


def admin_token(cluster: LocalCluster) -> str:
    return str(cluster.overrides.get("admin_token") or "")


def admin_post(cluster: LocalCluster, node: NodeRef | str, path: str, body: dict[str, Any],
               timeout: float = 15.0) -> tuple[int, Any]:
    """POST a JSON body to a node's admin API (with the cluster's admin token, if any)."""
    node = cluster.node(node)
    return admin.admin_request(node.admin, path, method="POST", body=body,
                               token=admin_token(cluster) or None, timeout=timeout)


def shards_of(status: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """shard id -> the shard's entry of a /status."""
    return {int(s["id"]): s for s in status.get("shards") or []}


def map_nodes_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """node id -> the node's entry (zone, region, state, ...) of a /status's map."""
    return {str(n["id"]): n for n in status.get("nodes") or []}


def describe_map(status: dict[str, Any] | None) -> str:
    """One readable line of a /status's map (for failure messages)."""
    if status is None:
        return "(no status)"
    nodes = " ".join(f"{n['id']}:{n.get('zone')}/{n.get('state')}"
                     for n in status.get("nodes") or [])
    shards = "; ".join(
        f"shard {s['id']} replicas={','.join(s.get('replicas') or [])} "
        f"voters={','.join(s.get('voters') or [])} learners={','.join(s.get('learners') or [])}"
        f" leader={s.get('leader')} full={s.get('fully_replicated')}"
        for s in status.get("shards") or [])
    return (f"[{status.get('node')} map v{status.get('map_version')}] nodes {nodes} | {shards} "
            f"| driver voters {(status.get('meta') or {}).get('voters')}")


def newest_map(cluster: LocalCluster, among: Iterable[NodeRef] | None = None,
               timeout: float = 2.0) -> dict[str, Any] | None:
    """The /status with the highest map_version among the reachable nodes of `among`."""
    seen = [s for s in cluster.statuses(among, timeout=timeout).values() if s is not None]
    if not seen:
        return None
    return max(seen, key=lambda s: int(s.get("map_version") or 0))


def wait_map(cluster: LocalCluster, predicate: Callable[[dict[str, Any]], object],
             timeout: float, what: str, among: Iterable[NodeRef] | None = None,
             interval: float = 0.2) -> dict[str, Any]:
    """Poll the newest map among `among` until `predicate(status)` is truthy; returns that
    status. AssertionError naming `what` and showing the last map on timeout."""
    chosen = list(among) if among is not None else None
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while True:
        status = newest_map(cluster, chosen)
        if status is not None:
            last = status
            if predicate(status):
                return status
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last map: "
                                 f"{describe_map(last)}")
        time.sleep(interval)


def holds_nothing(status: dict[str, Any], node_id: str) -> bool:
    """No shard lists `node_id` as a desired replica, reported voter or learner."""
    return not any(node_id in (s.get("replicas") or []) or node_id in (s.get("voters") or [])
                   or node_id in (s.get("learners") or []) for s in status.get("shards") or [])


def settled(status: dict[str, Any]) -> bool:
    """Every shard runs its desired replicas on alive nodes and reports a leader."""
    shards = status.get("shards") or []
    return bool(shards) and bool(status.get("fully_replicated")) and all(
        s.get("leader") for s in shards)


def shard_primary(cluster: LocalCluster, shard_id: int,
                  among: Iterable[NodeRef] | None = None,
                  timeout: float = LEADER_TIMEOUT_S) -> NodeRef:
    """The node whose /primary?shard=N answers 200 (the shard's leader), waiting (bounded)."""
    chosen = list(among) if among is not None else list(cluster.nodes)

    def find() -> NodeRef | None:
        for node in chosen:
            try:
                code, _ = admin.admin_request(node.admin, f"/primary?shard={shard_id}",
                                              timeout=1.0)
            except OSError:
                continue
            if code == 200:
                return node
        return None

    found: NodeRef = wait_until(find, timeout, f"a leader of shard {shard_id} (/primary)",
                                interval=0.1)
    return found


def slot_in(shard: dict[str, Any], slot: int) -> bool:
    return any(first <= slot <= last for first, last in shard.get("slots") or [])


def shard_of_key(status: dict[str, Any], key: str) -> int:
    from phalanx.placement import key_slot

    slot = key_slot(key.encode())
    for shard_id, shard in shards_of(status).items():
        if slot_in(shard, slot):
            return shard_id
    raise AssertionError(f"no shard owns slot {slot} of {key!r}: {describe_map(status)}")


def keys_of_shard(status: dict[str, Any], shard_id: int, count: int,
                  prefix: str = "k") -> list[str]:
    """`count` distinct keys `prefix:i` whose slots belong to `shard_id`."""
    from phalanx.placement import key_slot

    shard = shards_of(status)[shard_id]
    keys: list[str] = []
    index = 0
    while len(keys) < count:
        key = f"{prefix}:{index}"
        if slot_in(shard, key_slot(key.encode())):
            keys.append(key)
        index += 1
        assert index < 1_000_000, f"no keys for shard {shard_id}"
    return keys


def start_joining_node(cluster: LocalCluster, node_id: str, *, zone: str,
                       region: str | None = None, join: NodeRef | str | None = None,
                       index: int | None = None) -> NodeRef:
    """Start a NEW node process that joins the running cluster through `join`'s RESP address
    (`phalanx node --config FILE` whose config lists only itself in `peers` and sets `join`).

    Its config copies the first node's (cluster name, secret, timing, overrides). Its addresses
    follow the local plan's scheme for node `index` (default: the number in `node_id`). It is
    added to cluster.json, `cluster.nodes` and `cluster.pids`, so `close()` kills it.
    """
    from phalanx.server.config import PeerConfig, load_config

    seed = cluster.node(join) if join is not None else cluster.nodes[0]
    first = cluster.nodes[0]
    loopback_base = int(first.host.rsplit(".", 1)[1]) - 1
    base_port = first.port - 1
    position = index if index is not None else int("".join(ch for ch in node_id if ch.isdigit()))
    host = f"127.0.0.{loopback_base + position}"
    template = cluster_file.read_cluster_file(cluster.data_dir).node(first.id)
    assert template.config_path is not None, f"{first.id} has no config file"
    base = load_config(template.config_path)
    me = PeerConfig(id=node_id, peer=f"{host}:{base_port + 200 + position}",
                    resp=f"{host}:{base_port + position}",
                    admin=f"{host}:{base_port + 100 + position}", zone=zone,
                    region=region if region is not None else base.me.region)
    node_dir = cluster.data_dir / node_id
    config = dataclasses.replace(base, id=node_id, data_dir=str(node_dir), peers=(me,),
                                 join=seed.resp)
    _entry, process = launcher.add_node(cluster.data_dir, config)
    cluster.pids.add(process.pid)
    cluster._processes[node_id] = process
    ref = NodeRef(id=node_id, host=host, port=base_port + position, admin=me.admin,
                  data_dir=str(node_dir))
    cluster.nodes.append(ref)
    cluster.by_id[node_id] = ref
    return ref


def kill_together(cluster: LocalCluster, nodes: Iterable[NodeRef | str]) -> list[int]:
    """SIGKILL several nodes at (almost) the same instant, as a zone or rack failure would,
    then wait (bounded) until every one has exited; returns their pids. (`cluster.kill` one
    after the other leaves the survivors time to elect a leader in between.)"""
    chosen = [cluster.node(n) for n in nodes]
    pids = [cluster.pid(n) for n in chosen]
    for node, pid in zip(chosen, pids, strict=True):
        assert launcher.is_our_node(pid), f"{node.id} (pid {pid}) is not running"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for node, pid in zip(chosen, pids, strict=True):
        wait_until(lambda pid=pid: not launcher.pid_alive(pid), 30.0, f"{node.id} pid {pid} to exit")
    return pids

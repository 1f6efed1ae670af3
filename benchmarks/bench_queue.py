"""The `phalanx bench` section `queue` (issue 17): a message queue that loses nothing, side by side.

Three targets, started here, on their own (nothing else of the bench runs meanwhile):
- `rabbitmq`: a 3-node RabbitMQ cluster (benchmarks/bench_queue_rabbit.py) with one quorum queue
  (Raft-replicated, `x-queue-type: quorum`); publisher confirms on, persistent messages, manual
  acks; the client is aio-pika (benchmarks/bench_queue_client.py);
- `redis-aof-always`: one redis-server with `appendonly yes`, `appendfsync always` (durable,
  not replicated), a stream with a consumer group;
- `phalanx`: a 3-node phalanx cluster (node defaults: fsync per Raft batch, quorum commit), the
  same stream commands (XADD, XREADGROUP, XACK) through redis-py's asyncio client.

Figures (every client run is bench_queue_client.py in a child process, bounded in count and
time; the targets alternate, the order rotating per repeat):
- publish: confirmed messages/s with 1 and 64 publishers (each waits for its confirm);
- consume: consume-and-ack messages/s of the backlog those publishes left;
- latency: end-to-end p50/p99 at fixed rates (open loop, from the scheduled publish time to the
  delivery);
- failover: kill -9 of the queue's leader node (RabbitMQ: the quorum queue's leader; phalanx:
  the shard leader; redis-server: the one process, restarted in place at once) under an open
  loop of publishes and a consumer, both through surviving nodes: the publish gap, the consume
  gap, messages lost (confirmed, never delivered) and duplicated (delivered twice).
Ratios phalanx/rabbitmq and phalanx/redis-aof-always of every figure.

Rules: every process is started through phalanx_bench.Processes (stopped by pid at the end,
also on error and SIGTERM); every client run and every wait has a timeout; a target that is
not installed or does not start (or a phalanx without XADD) is reported as skipped with why.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue as queue_module
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bench_queue_rabbit as rabbit
import resp_bench as rb
from bench_common import log, wait_for
from bench_ratios import higher, lower

if TYPE_CHECKING:
    from bench_common import Processes
    from phalanx_bench import Settings

CLIENT = Path(__file__).resolve().parent / "bench_queue_client.py"
TARGETS = ("phalanx", "rabbitmq", "redis-aof-always")
QUEUE = "bench-queue"


@dataclass
class QueueSettings:
    #: publishers -> messages per publish run (each run also stops after `run_seconds`).
    publish_messages: dict[int, int] = field(default_factory=lambda: {1: 1000, 64: 10000})
    run_seconds: float = 30.0
    size: int = 128
    prefetch: int = 100
    latency_rates: tuple[float, ...] = (200.0, 500.0)
    latency_seconds: float = 10.0
    failover_tries: int = 3
    gap_rate: float = 200.0
    #: A publish not confirmed within this many seconds counts as failed; also the clients'
    #: connect and socket timeouts.
    timeout_s: float = 2.0
    #: seconds of steady publishing after the fault's recovery, before the drain.
    after_recovery_s: float = 1.0
    recover_timeout_s: float = 60.0
    drain_s: float = 30.0
    targets: tuple[str, ...] = TARGETS

    @classmethod
    def quick(cls) -> QueueSettings:
        return cls(publish_messages={1: 300, 64: 3000}, run_seconds=30.0,
                   latency_rates=(200.0,), latency_seconds=2.0, failover_tries=1,
                   drain_s=15.0)


# --------------------------------------------------------------------------- client runs


def client_argv(kind: str, addresses: list[str], mode: str, *options: str) -> list[str]:
    return [sys.executable, str(CLIENT), kind, ",".join(addresses), QUEUE, mode, *options]


def run_client(kind: str, addresses: list[str], mode: str, options: list[str],
               timeout: float) -> dict[str, Any]:
    """One client run; its JSON result, or {"error": ...}."""
    try:
        done = subprocess.run(client_argv(kind, addresses, mode, *options), capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"client {mode} timed out after {timeout:g} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"client {mode} exit {done.returncode}: "
                         f"{done.stderr.strip()[-500:]}"}
    try:
        return dict(json.loads(lines[-1]))
    except ValueError:
        return {"error": f"client {mode}: unreadable output {lines[-1][:200]!r}"}


# --------------------------------------------------------------------------- targets


class QueueTarget:
    """One system under test: where clients connect, how to kill its queue leader, heal."""

    name = ""
    kind = ""

    def leader_addresses(self) -> list[str]:
        raise NotImplementedError

    def prepare_fault(self) -> tuple[list[str], Callable[[], None], str]:
        """(survivor addresses, kill -9 of the leader, what was killed)."""
        raise NotImplementedError

    def heal(self) -> None:
        raise NotImplementedError


class RabbitTarget(QueueTarget):
    name, kind = "rabbitmq", "amqp"

    def __init__(self, cluster: rabbit.RabbitCluster) -> None:
        self.cluster = cluster
        self.killed: dict[str, Any] | None = None

    def leader(self) -> dict[str, Any]:
        return wait_for(lambda: self.cluster.queue_leader(QUEUE), 60,
                        "the quorum queue's leader", poll=0.2)

    def leader_addresses(self) -> list[str]:
        return [self.cluster.url(self.leader())]

    def setup_addresses(self) -> list[str]:
        return [self.cluster.url(self.cluster.nodes[0])]

    def prepare_fault(self) -> tuple[list[str], Callable[[], None], str]:
        leader = self.leader()
        self.killed = leader
        survivors = [self.cluster.url(n) for n in self.cluster.nodes if n is not leader]
        return survivors, lambda: self.cluster.kill(leader), leader["name"]

    def heal(self) -> None:
        if self.killed is not None:
            self.cluster.restart(self.killed)
            self.killed = None
        wait_for(lambda: self.cluster.queue_members_online(QUEUE), 120,
                 "rabbitmq: every node running and the quorum queue's 3 members online", 1.0)


class RedisTarget(QueueTarget):
    name, kind = "redis-aof-always", "redis"

    def __init__(self, server: rb.RedisServer, processes: Processes) -> None:
        self.server = server
        self.processes = processes

    def leader_addresses(self) -> list[str]:
        return [f"{self.server.host}:{self.server.port}"]

    setup_addresses = leader_addresses

    def prepare_fault(self) -> tuple[list[str], Callable[[], None], str]:
        def fault() -> None:
            # No replica to fail over to: kill -9, then start it again at once on its AOF.
            self.server.process.kill()
            self.server.process.wait(10)
            self.server.process = subprocess.Popen(
                self.server.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
            self.processes.children.append(self.server.process)
        return self.leader_addresses(), fault, f"redis-server :{self.server.port}"

    def heal(self) -> None:
        wait_for(lambda: rb.ping(self.server.host, self.server.port), 60, "redis-server back",
                 poll=0.2)


class PhalanxTarget(QueueTarget):
    name, kind = "phalanx", "redis"

    def __init__(self, cluster: rb.Phalanx) -> None:
        self.cluster = cluster
        self.killed: tuple[str, int] | None = None

    def leader_addresses(self) -> list[str]:
        from bench_common import phalanx_leader

        _node, host, port = phalanx_leader(self.cluster)
        return [f"{host}:{port}"]

    setup_addresses = leader_addresses

    def prepare_fault(self) -> tuple[list[str], Callable[[], None], str]:
        from bench_common import phalanx_leader

        from phalanx.ops import cluster_file, launcher

        leader, _host, _port = phalanx_leader(self.cluster)
        survivors = [":".join(map(str, self.cluster.address(n["id"])))
                     for n in self.cluster.nodes if n["id"] != leader]
        pid = cluster_file.read_cluster_file(self.cluster.data_dir).node(leader).pid
        assert pid is not None and launcher.is_our_node(pid), f"{leader} pid {pid} not running"
        self.killed = (leader, pid)
        return survivors, lambda: os.kill(pid, signal.SIGKILL), leader

    def heal(self) -> None:
        from bench_common import phalanx_converged

        from phalanx.ops import launcher

        if self.killed is not None:
            leader, pid = self.killed
            wait_for(lambda: not launcher.pid_alive(pid), 10, f"{leader} to exit", poll=0.2)
            done = subprocess.run([sys.executable, "-m", "phalanx", "restart", leader,
                                   "--data-dir", str(self.cluster.data_dir), "--wait",
                                   "--timeout", "60"], capture_output=True, text=True,
                                  timeout=90, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"phalanx restart {leader} failed: {done.stdout} "
                                   f"{done.stderr}")
            self.killed = None
        wait_for(lambda: phalanx_converged(self.cluster), 60, "the phalanx cluster to converge",
                 poll=0.2)


def phalanx_streams(host: str, port: int) -> str:
    """'' when this phalanx answers XADD/XGROUP/XREADGROUP/XACK, else why not."""
    from bench_common import resp_command

    key = "bench-queue-probe"
    for args in (("XADD", key, "*", "p", "x"), ("XGROUP", "CREATE", key, "g", "0"),
                 ("XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", key, ">")):
        try:
            reply = resp_command(host, port, *args, timeout=10.0)
        except OSError as error:
            return f"{args[0]}: {error}"
        if reply.startswith(b"-"):
            return f"{args[0]} answered {reply.decode(errors='replace').strip()[:120]}"
    resp_command(host, port, "DEL", key, timeout=10.0)
    return ""


# --------------------------------------------------------------------------- measuring


def publish_run(target: QueueTarget, publishers: int, messages: int, repeat: int,
                qs: QueueSettings) -> dict[str, Any]:
    load = os.getloadavg()[0]
    result = run_client(target.kind, target.leader_addresses(), "publish",
                        ["--publishers", str(publishers), "--messages", str(messages),
                         "--seconds", f"{qs.run_seconds:g}", "--size", str(qs.size),
                         "--tag", f"r{repeat}p{publishers}", "--timeout", f"{qs.timeout_s:g}"],
                        qs.run_seconds + 90)
    ok = "error" not in result and not result.get("errors") and result.get("confirmed", 0) > 0
    error = result.get("error") or (f"{result['errors']} failed publishes, first: "
                                    f"{result.get('first_error')}" if result.get("errors")
                                    else "")
    log(f"queue repeat {repeat} {target.name:<16} publish c={publishers:<2}: "
        f"{result.get('rate', 0):>8,.0f} msg/s ({result.get('confirmed', 0)} confirmed, "
        f"p50 {result.get('p50_ms')} p99 {result.get('p99_ms')} ms, client cpu "
        f"{result.get('client_cpu_s')} s of {result.get('seconds')}) {error} [load {load:.1f}]")
    return {"target": target.name, "test": "publish", "clients": publishers, "repeat": repeat,
            "ok": ok, "error": error, "load_1m": round(load, 2), **result}


def consume_run(target: QueueTarget, messages: int, repeat: int,
                qs: QueueSettings) -> dict[str, Any]:
    load = os.getloadavg()[0]
    result = run_client(target.kind, target.leader_addresses(), "consume",
                        ["--messages", str(messages), "--prefetch", str(qs.prefetch),
                         "--seconds", f"{qs.run_seconds:g}", "--timeout", f"{qs.timeout_s:g}"],
                        qs.run_seconds + 90)
    ok = "error" not in result and bool(result.get("complete")) and not result.get("duplicates")
    error = result.get("error", "")
    if not error and not result.get("complete"):
        error = f"only {result.get('delivered')} of {messages} delivered in {qs.run_seconds:g} s"
    if not error and result.get("duplicates"):
        error = f"{result['duplicates']} duplicate deliveries"
    log(f"queue repeat {repeat} {target.name:<16} consume n={messages}: "
        f"{result.get('rate', 0):>8,.0f} msg/s (client cpu {result.get('client_cpu_s')} s of "
        f"{result.get('seconds')}) {error} [load {load:.1f}]")
    return {"target": target.name, "test": "consume", "clients": 1, "repeat": repeat,
            "ok": ok, "error": error, "load_1m": round(load, 2), "messages": messages, **result}


def latency_run(target: QueueTarget, rate: float, qs: QueueSettings) -> dict[str, Any]:
    load = os.getloadavg()[0]
    result = run_client(target.kind, target.leader_addresses(), "latency",
                        ["--rate", f"{rate:g}", "--seconds", f"{qs.latency_seconds:g}",
                         "--size", str(qs.size), "--prefetch", str(qs.prefetch),
                         "--drain", f"{qs.drain_s:g}", "--tag", f"lat{rate:g}",
                         "--timeout", f"{qs.timeout_s:g}"],
                        qs.latency_seconds + qs.drain_s + 90)
    error = result.get("error") or (result.get("first_error") if result.get("errors") else "")
    log(f"queue latency {target.name:<16} {rate:g}/s: achieved {result.get('achieved_rate')} "
        f"p50 {result.get('p50_ms')} p99 {result.get('p99_ms')} ms, lost {result.get('lost')} "
        f"{error} [load {load:.1f}]")
    return {"target": target.name, "rate": rate, "load_1m": round(load, 2), "error": error,
            **{k: v for k, v in result.items() if k != "error"}}


class LineReader:
    """The gap client's stdout lines, read by a thread, handed out with a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue_module.Queue[str | None] = queue_module.Queue()
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def expect(self, word: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue_module.Empty:
                raise RuntimeError(f"no '{word}' from the client in {timeout:g} s") from None
            if line is None:
                raise RuntimeError(f"the client exited before '{word}'")
            if line.startswith(word) or (word == "{" and line.startswith("{")):
                return line


def failover_try(target: QueueTarget, attempt: int, processes: Processes,
                 qs: QueueSettings) -> dict[str, Any]:
    """One kill -9 under load; the client's gap result plus what was killed."""
    load = os.getloadavg()[0]
    survivors, fault, killed = target.prepare_fault()
    argv = client_argv(target.kind, survivors, "gap", "--rate", f"{qs.gap_rate:g}",
                       "--seconds", "600", "--size", str(qs.size), "--prefetch",
                       str(qs.prefetch), "--drain", f"{qs.drain_s:g}", "--tag", f"f{attempt}",
                       "--timeout", f"{qs.timeout_s:g}")
    client_log = processes.root / f"queue-gap-{target.name}-{attempt}.log"
    with open(client_log, "ab") as errors:
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=errors, text=True, start_new_session=True)
    processes.children.append(process)  # type: ignore[arg-type]
    lines = LineReader(process)
    at: float | None = None
    row: dict[str, Any] = {"target": target.name, "try": attempt, "killed": killed,
                           "via": survivors, "load_1m": round(load, 2), "ok": False, "error": ""}
    try:
        lines.expect("ready", 60)
        assert process.stdin is not None
        at = time.monotonic()
        fault()
        process.stdin.write(f"fault {at:.6f}\n")
        process.stdin.flush()
        try:
            lines.expect("recovered", qs.recover_timeout_s)
        except RuntimeError as error:
            row["error"] = f"not recovered: {error}"
        time.sleep(qs.after_recovery_s)
        process.stdin.write("stop\n")
        process.stdin.flush()
        result = json.loads(lines.expect("{", qs.drain_s + 60))
        row.update(result)
        row["ok"] = not row["error"] and result.get("publish_gap_ms") is not None
    except (RuntimeError, OSError, ValueError) as error:
        row["error"] = row["error"] or f"{type(error).__name__}: {error}"
    finally:
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # The client's own timeline (faults, reconnects, pauses), relative to the kill.
        with contextlib.suppress(OSError, ValueError):
            lines_out = []
            for line in client_log.read_text(errors="replace").splitlines()[-30:]:
                stamp, _, rest = line.partition(" ")
                lines_out.append(f"{(float(stamp) - at) * 1000:+.0f} ms {rest}"
                                 if at is not None else line)
            row["client_log"] = lines_out
    log(f"queue failover {target.name:<16} try {attempt}: kill -9 {killed}: publish gap "
        f"{row.get('publish_gap_ms')} ms, consume gap {row.get('consume_gap_ms')} ms, "
        f"confirmed {row.get('confirmed')}, lost {row.get('lost')}, duplicates "
        f"{row.get('duplicates')} {row['error']} [load {load:.1f}]")
    return row


# --------------------------------------------------------------------------- the section


def start_targets(processes: Processes, settings: Settings, qs: QueueSettings,
                  skipped: dict[str, str]) -> list[QueueTarget]:
    import importlib.util

    import bench_sections as more

    targets: list[QueueTarget] = []
    want = [t for t in qs.targets if t not in settings.assume_missing]
    for name in qs.targets:
        if name in settings.assume_missing:
            skipped[name] = "skipped: treated as not installed"
    if "phalanx" in want:
        cluster = more.start_cluster(processes, "queue-phalanx", 3, {})
        host, port = more.hostport(more.shard_leader(cluster).resp)
        why = phalanx_streams(host, port)
        if why:
            skipped["phalanx"] = f"skipped: this phalanx has no usable streams ({why})"
            more.stop_cluster(processes, cluster)
        else:
            targets.append(PhalanxTarget(cluster))
    if "redis-aof-always" in want:
        if shutil.which("redis-server") is None:
            skipped["redis-aof-always"] = "skipped: not installed (apt-get install redis-server)"
        else:
            server = rb.start_redis("queue-redis-aof-always", processes.root,
                                    ["--save", "", "--appendonly", "yes", "--appendfsync",
                                     "always"])
            processes.children.append(server.process)
            targets.append(RedisTarget(server, processes))
    if "rabbitmq" in want:
        if not rabbit.installed():
            skipped["rabbitmq"] = "skipped: not installed (apt-get install rabbitmq-server)"
        elif importlib.util.find_spec("aio_pika") is None:
            skipped["rabbitmq"] = "skipped: aio-pika not installed (pip install -e '.[dev]')"
        else:
            cluster_r = rabbit.RabbitCluster(processes.root / "rabbitmq", processes)
            try:
                cluster_r.start()
                targets.append(RabbitTarget(cluster_r))
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as error:
                skipped["rabbitmq"] = f"skipped: the cluster did not start: {error}"
    for name, note in skipped.items():
        log(f"queue: {name}: {note}")
    return sorted(targets, key=lambda t: TARGETS.index(t.name))


def queue_section(processes: Processes, settings: Settings) -> dict[str, Any]:
    qs: QueueSettings = settings.queue
    out: dict[str, Any] = {"settings": {**qs.__dict__, "targets": list(qs.targets),
                                        "latency_rates": list(qs.latency_rates)},
                           "skipped": {}, "runs": [], "latency": [], "failover": [],
                           "error": "", "load_average_start": [round(x, 2)
                                                               for x in os.getloadavg()]}
    targets = start_targets(processes, settings, qs, out["skipped"])
    out["measured"] = [t.name for t in targets]
    try:
        for target in targets:
            result = run_client(target.kind, target.setup_addresses(), "setup", [], 120)
            if "error" in result:
                raise RuntimeError(f"{target.name}: queue setup failed: {result['error']}")
        for repeat in range(1, settings.repeats + 1):
            shift = (repeat - 1) % max(len(targets), 1)
            order = targets[shift:] + targets[:shift]
            confirmed = {t.name: 0 for t in targets}
            for publishers, messages in sorted(qs.publish_messages.items()):
                for target in order:
                    run = publish_run(target, publishers, messages, repeat, qs)
                    confirmed[target.name] += run.get("confirmed", 0)
                    out["runs"].append(run)
            for target in order:
                if confirmed[target.name]:
                    out["runs"].append(consume_run(target, confirmed[target.name], repeat, qs))
        for index, rate in enumerate(qs.latency_rates):
            shift = index % max(len(targets), 1)
            for target in targets[shift:] + targets[:shift]:
                out["latency"].append(latency_run(target, rate, qs))
        for attempt in range(1, qs.failover_tries + 1):
            shift = (attempt - 1) % max(len(targets), 1)
            for target in targets[shift:] + targets[:shift]:
                out["failover"].append(failover_try(target, attempt, processes, qs))
                if attempt < qs.failover_tries:  # nothing runs on it after its last try
                    target.heal()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        out["error"] = f"{type(error).__name__}: {error}"
        log(f"queue: stopped: {out['error']}")
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    out["rows"] = throughput_rows(out["runs"])
    out["failover_rows"] = failover_rows(out["failover"])
    out["ratios"] = ratios(out)
    return out


# --------------------------------------------------------------------------- summaries


def throughput_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for test, clients in sorted({(r["test"], r["clients"]) for r in runs},
                                key=lambda k: (k[0] != "publish", k[1])):
        for target in TARGETS:
            chosen = [r for r in runs if (r["target"], r["test"], r["clients"])
                      == (target, test, clients)]
            if not chosen:
                continue
            good = [r for r in chosen if r["ok"]]
            row: dict[str, Any] = {"target": target, "test": test, "clients": clients,
                                   "runs": len(chosen), "ok_runs": len(good),
                                   "failures": [r["error"] for r in chosen if not r["ok"]]}
            if good:
                rates = [float(r["rate"]) for r in good]
                row.update(rate_median=statistics.median(rates), rate_min=min(rates),
                           rate_max=max(rates),
                           client_cpu_share=statistics.median(
                               r["client_cpu_s"] / r["seconds"] for r in good if r["seconds"]))
                if test == "publish":
                    row.update(p50_ms=statistics.median(r["p50_ms"] for r in good),
                               p99_ms=statistics.median(r["p99_ms"] for r in good))
            rows.append(row)
    return rows


def failover_rows(tries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for target in TARGETS:
        chosen = [t for t in tries if t["target"] == target]
        if not chosen:
            continue
        good = [t for t in chosen if t["ok"]]

        def median(key: str, good: list[dict[str, Any]] = good) -> float | None:
            values = [t[key] for t in good if t.get(key) is not None]
            return statistics.median(values) if values else None

        rows.append({"target": target, "tries": len(chosen), "ok_tries": len(good),
                     "publish_gap_ms": median("publish_gap_ms"),
                     "consume_gap_ms": median("consume_gap_ms"),
                     "publish_gaps_ms": [t.get("publish_gap_ms") for t in chosen],
                     "consume_gaps_ms": [t.get("consume_gap_ms") for t in chosen],
                     "confirmed": sum(t.get("confirmed") or 0 for t in chosen),
                     "lost": sum(t.get("lost") or 0 for t in chosen),
                     "duplicates": sum(t.get("duplicates") or 0 for t in chosen),
                     "unconfirmed_delivered": sum(t.get("unconfirmed_delivered") or 0
                                                  for t in chosen),
                     "failures": [t["error"] for t in chosen if t["error"]]})
    return rows


def ratios(out: dict[str, Any]) -> dict[str, float]:
    """"<figure> vs <peer>" -> phalanx / peer (rates: above 1 = phalanx better; latency and
    gaps: below 1 = phalanx better)."""
    result: dict[str, float] = {}
    by = {(r["target"], r["test"], r["clients"]): r for r in out["rows"]}
    lat = {(r["target"], r["rate"]): r for r in out["latency"]}
    gaps = {r["target"]: r for r in out["failover_rows"]}
    for peer in ("rabbitmq", "redis-aof-always"):
        for (target, test, clients), row in by.items():
            other = by.get((peer, test, clients))
            if target == "phalanx" and other and row.get("rate_median") and \
                    other.get("rate_median"):
                result[f"{test} c={clients} msg/s vs {peer}"] = (row["rate_median"]
                                                                 / other["rate_median"])
        for (target, rate), row in lat.items():
            other = lat.get((peer, rate))
            if target != "phalanx" or not other:
                continue
            for key in ("p50_ms", "p99_ms"):
                if row.get(key) and other.get(key):
                    result[f"latency {key[:3]} at {rate:g}/s vs {peer}"] = row[key] / other[key]
        ours, theirs = gaps.get("phalanx"), gaps.get(peer)
        if ours and theirs:
            for key in ("publish_gap_ms", "consume_gap_ms"):
                if ours.get(key) and theirs.get(key):
                    result[f"{key[:-3].replace('_', ' ')} vs {peer}"] = ours[key] / theirs[key]
    return result


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(doc: dict[str, Any]) -> list[str]:
    """The section's RESULTS.md lines (nothing when it was not run)."""
    out = doc.get("queue")
    if not out:
        return []
    s = out["settings"]
    load = " / ".join(f"{x:.2f}" for x in out["load_average_start"])
    load_end = " / ".join(f"{x:.2f}" for x in out.get("load_average_end", []))
    lines = ["", "## Queue: Redis Streams on phalanx vs RabbitMQ quorum queues vs redis-server "
             "(issue 17)", "",
             f"Measured: {', '.join(out['measured']) or 'nothing'}, {doc['settings']['repeats']} "
             f"repeat(s). Load average (1/5/15 min) at the start of the section: {load}; at its "
             f"end: {load_end} (on {doc['machine']['cpu_count']} CPUs, "
             f"{doc['machine']['cpu_model']}; phalanx git {doc['machine']['git_commit']}; "
             f"results written {doc['started_utc']}).", "",
             "- phalanx: 3 nodes (node defaults: fsync per Raft batch, quorum commit), one "
             "stream, `XADD` (auto id; the reply is the confirm), one consumer group, "
             f"`XREADGROUP COUNT {s['prefetch']} BLOCK 1000` and one `XACK` per delivered "
             "batch; redis-py's asyncio client (hiredis). Clients talk to the leader; in the "
             "failover runs to the two other nodes.",
             "- rabbitmq: Debian's rabbitmq-server, 3 nodes on loopback (join_cluster), one "
             "quorum queue (`x-queue-type: quorum`, Raft, WAL fsynced before a confirm), "
             "persistent messages, publisher confirms, manual acks (`Basic.Ack` per message), "
             f"`prefetch_count {s['prefetch']}`; aio-pika. Clients talk to the queue "
             "leader's node; in the failover runs to the two other nodes.",
             "- redis-aof-always: one redis-server, `appendonly yes`, `appendfsync always`, no "
             "replication; the same stream commands and client as phalanx.", "",
             f"{s['size']}-byte payloads, each with a unique id. A publisher waits for the "
             "confirm of each message before the next (64 publishers: 64 connections, 64 "
             "messages in flight). consume: one consumer drains what the publish runs of "
             "that repeat left, acking as it goes. The load client is one Python process "
             "(bench_queue_client.py) per run, on the same 2 cores: `client cpu` is its CPU "
             "time / wall time (near 1.0: the client, not the server, was the bottleneck).", "",
             "| test | clients | target | median msg/s (min-max) | confirm p50 ms "
             "| confirm p99 ms | client cpu | phalanx / rabbitmq | phalanx / redis-aof |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    by = {(r["target"], r["test"], r["clients"]): r for r in out["rows"]}
    for row in out["rows"]:
        if "rate_median" in row:
            shown = (f"{int(row['rate_median']):,} ({int(row['rate_min']):,}-"
                     f"{int(row['rate_max']):,})")
        else:
            shown = "failed"
        if row["ok_runs"] < row["runs"]:
            shown += f" [{row['runs'] - row['ok_runs']}/{row['runs']} failed]"
        vs = []
        for peer in ("rabbitmq", "redis-aof-always"):
            other = by.get((peer, row["test"], row["clients"]))
            if row["target"] == "phalanx" and other and row.get("rate_median") and \
                    other.get("rate_median"):
                vs.append(higher(row["rate_median"] / other["rate_median"], 3))
            else:
                vs.append("")
        lines.append(f"| {row['test']} | {row['clients']} | {row['target']} | {shown} "
                     f"| {_num(row.get('p50_ms'), 2)} | {_num(row.get('p99_ms'), 2)} "
                     f"| {_num(row.get('client_cpu_share'), 2)} | {vs[0]} | {vs[1]} |")
    if not out["rows"]:
        lines.append("| (not measured) | | | | | | | | |")
    lines += [f"- failed: {r['target']} {r['test']} c={r['clients']}: {e}"
              for r in out["rows"] for e in r["failures"]]
    lines += ["", f"### End-to-end latency at a fixed rate (open loop, "
              f"{s['latency_seconds']:g} s per run)", "",
              "Message *i* is published at start + i/rate whatever the confirms do (rabbitmq: "
              "4 connections, each pipelining publishes on its confirm channel; streams: a "
              "pool of up to 64 connections), one consumer; latency = delivery at the consumer "
              "- the scheduled publish time, so a stall shows in the percentiles.", "",
              "| rate/s | target | achieved/s | p50 ms | p90 ms | p99 ms | max ms "
              "| confirm p50 / p99 ms | lost | error |", "|---:|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for row in out["latency"]:
        lines.append(f"| {row['rate']:g} | {row['target']} | {_num(row.get('achieved_rate'))} "
                     f"| {_num(row.get('p50_ms'), 2)} | {_num(row.get('p90_ms'), 2)} "
                     f"| {_num(row.get('p99_ms'), 2)} | {_num(row.get('max_ms'), 2)} "
                     f"| {_num(row.get('confirm_p50_ms'), 2)} / "
                     f"{_num(row.get('confirm_p99_ms'), 2)} | {row.get('lost', '-')} "
                     f"| {row.get('error') or ''} |")
    if not out["latency"]:
        lines.append("| (not measured) | | | | | | | | | |")
    lines += ["", "### kill -9 of the queue's leader node: gaps, lost and duplicated messages",
              "",
              f"An open loop publishes {s['gap_rate']:g} messages/s (unique ids, confirms on, "
              f"{s.get('timeout_s', 2.0):g} s timeout each) and one consumer acks them, both connected to surviving "
              "nodes; then kill -9 of the leader (phalanx: the shard leader; rabbitmq: the "
              "node leading the quorum queue; redis-aof-always: the one server, restarted in "
              "place at once, so its gap is a restart, not a failover). Publish gap: last "
              "confirm before the kill to the first confirm of a message sent after it. "
              "Consume gap: the longest pause between two deliveries from the last delivery "
              "before the kill until publishing stops. After recovery + "
              f"{s['after_recovery_s']:g} s publishing stops and the consumer drains (up to "
              f"{s['drain_s']:g} s): lost = confirmed ids never delivered; duplicates = "
              "deliveries of an id already delivered (redeliveries of unacked messages). "
              "The killed node is restarted and the cluster healed between tries.", "",
              "| target | tries | median publish gap ms | median consume gap ms "
              "| every publish gap | every consume gap | confirmed | lost | duplicated |",
              "|---|---:|---:|---:|---|---|---:|---:|---:|"]
    for row in out["failover_rows"]:
        lines.append(
            f"| {row['target']} | {row['ok_tries']}/{row['tries']} "
            f"| {_num(row['publish_gap_ms'], 0)} | {_num(row['consume_gap_ms'], 0)} "
            f"| {', '.join(_num(g, 0) for g in row['publish_gaps_ms'])} "
            f"| {', '.join(_num(g, 0) for g in row['consume_gaps_ms'])} "
            f"| {row['confirmed']} | {row['lost']} | {row['duplicates']} |")
        lines += [f"- {row['target']}: {e}" for e in row["failures"]]
    if not out["failover_rows"]:
        lines.append("| (not measured) | | | | | | | | |")
    if out["ratios"]:
        lines += ["", "Ratios phalanx / peer (msg/s: above 1 = phalanx faster; latency and "
                  "gaps: below 1 = phalanx better); msg/s ratios truncated, latency and gap "
                  "ratios rounded up, so none is rounded in phalanx's favour:", ""]
        lines += [f"- {name}: {higher(value, 3) if 'msg/s' in name else lower(value, 3)}"
                  for name, value in out["ratios"].items()]
    polled = {r["target"]: 0 for r in out["latency"] + out["failover"]}
    for r in out["latency"] + out["failover"]:
        polled[r["target"]] += r.get("early_empty_reads") or 0
    notes = [f"- {target}: answered `XREADGROUP ... BLOCK 1000` with nothing at once {n} "
             "time(s) (it did not block): the consumer then polled every 2 ms"
             for target, n in polled.items() if n]
    lines += ["", *notes] if notes else []
    if out["skipped"]:
        lines += ["", *[f"- {name}: {note}" for name, note in out["skipped"].items()]]
    if out["error"]:
        lines += ["", f"**queue: {out['error']}**"]
    return lines


# --------------------------------------------------------------------------- committing a run


def splice(run_dir: Path, results_md: Path, json_out: Path) -> None:
    """Put the queue section of a `phalanx bench --only queue --output RUN_DIR` run into
    `results_md` (replacing an earlier queue section, else before "## Peers not measured", else
    at the end) and copy that run's results.json to `json_out`: the full bench's RESULTS.md
    keeps its other sections, which came from another run."""
    document = json.loads((run_dir / "results.json").read_text())
    section = "\n".join(markdown(document)).strip("\n") + "\n"
    text = results_md.read_text()
    start = text.find("\n## Queue: ")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start + 1] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    elif "\n## Peers not measured" in text:
        at = text.index("\n## Peers not measured")
        text = text[:at + 1] + section + "\n" + text[at + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    results_md.write_text(text)
    json_out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "splice":
        sys.exit("usage: python benchmarks/bench_queue.py splice RUN_DIR  (the --output of a "
                 "`phalanx bench --only queue` run; writes benchmarks/RESULTS.md's queue "
                 "section and benchmarks/results_queue.json)")
    here = Path(__file__).resolve().parent
    splice(Path(sys.argv[2]), here / "RESULTS.md", here / "results_queue.json")

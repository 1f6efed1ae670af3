"""Writes forwarded by followers while their shard's leader is killed (issue 14, items 2 and 3).

Real processes: a 3-node cluster (one data shard), writer threads connected ONLY to the two
followers of shard 1, so every write is forwarded (`DataRouter._forward` over a
`LeaderLink`), then kill -9 of the leader while those writes are in flight, a few rounds,
and one SIGSTOP of the leader (its links stay open but silent: only the new leader's
election can end the wait).

Proves, for every write that was in flight at the kill or sent after it:
- it ends with an answer that says what happened, never by waiting out a deadline: OK, or
  `-TRYAGAIN` (certainly not applied), or `outcome unknown` because the link to the dead leader
  broke or a new leader took over (a write that had not left yet is retried on the new
  leader instead); a GET through a follower (a ReadIndex round with the leader) always ends
  with the value, since a read is safe to retry: a read request sent to the dead leader is
  failed at once and retried on the new one (`RaftGroup._fail_reads_sent_to`); never "did not answer in time" / "not confirmed in time"
  (the node's request timeout) and never a client-side socket timeout;
- never `-CLUSTERDOWN`: the shard keeps its quorum (2 of 3) and elects within milliseconds,
  so "no quorum" would be false (the leaderless clock, `RaftGroup.leaderless_for`);
- every acknowledged write is readable afterwards.
It prints how long the in-flight writes took to end after the kill (no timed assertion: the
machine is shared).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from integration_harness import LocalCluster, no_retry, shard_primary, wait_until

#: kill -9 rounds per run (each followed by a restart of the killed node), then one SIGSTOP.
KILLS = 3
WRITERS_PER_FOLLOWER = 3
#: The nodes' request timeout is set far beyond the clients' (60 s vs 20 s): a request that
#: waits for a deadline instead of ending when the leader is gone shows as a client timeout.
CLIENT_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_MS = 60_000

#: The node's deadline errors: a forwarded write that ends with one of these waited.
DEADLINE_TEXTS = ("did not answer in time", "not confirmed in time", "within")


@dataclass
class Attempt:
    writer: int
    node: str
    key: str
    began: float
    ended: float = 0.0
    outcome: str = ""  # ok | tryagain | unknown | clusterdown | timeout | other
    text: str = ""


class ForwardedWriters:
    """Threads writing unique keys through given nodes; every attempt recorded."""

    def __init__(self, cluster: LocalCluster, nodes: list[Any], per_node: int,
                 prefix: str) -> None:
        self.cluster = cluster
        self.nodes = nodes
        self.per_node = per_node
        self.prefix = prefix
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.attempts: list[Attempt] = []
        self.threads: list[threading.Thread] = []

    def start(self) -> ForwardedWriters:
        for index in range(self.per_node * len(self.nodes)):
            node = self.nodes[index % len(self.nodes)]
            thread = threading.Thread(target=self._run, args=(index, node), daemon=True)
            self.threads.append(thread)
            thread.start()
        return self

    def _run(self, index: int, node: Any) -> None:
        client = redis.Redis(host=node.host, port=node.port, socket_timeout=CLIENT_TIMEOUT_S,
                             socket_connect_timeout=2.0, retry=no_retry(), protocol=2,
                             decode_responses=True)
        sequence = 0
        last_acked = ""
        try:
            # Bounded in count and time: at most 20,000 writes or 120 s per thread.
            end = time.monotonic() + 120
            while not self.stop_event.is_set() and sequence < 20_000 \
                    and time.monotonic() < end:
                sequence += 1
                attempt = Attempt(index, node.id, f"{self.prefix}:{index}:{sequence}",
                                  time.monotonic())
                try:
                    ok = client.set(attempt.key, "v") is True
                    attempt.outcome = "ok" if ok else "other"
                except redis.TimeoutError as error:
                    attempt.outcome, attempt.text = "timeout", str(error)
                except redis.ResponseError as error:
                    text = str(error)
                    attempt.text = text
                    if text.startswith("TRYAGAIN"):
                        attempt.outcome = "tryagain"
                    elif "outcome unknown" in text:
                        attempt.outcome = "unknown"
                    elif text.startswith("CLUSTERDOWN"):
                        attempt.outcome = "clusterdown"
                    else:
                        attempt.outcome = "other"
                except redis.RedisError as error:
                    attempt.outcome, attempt.text = "other", f"{type(error).__name__}: {error}"
                    time.sleep(0.02)
                attempt.ended = time.monotonic()
                with self.lock:
                    self.attempts.append(attempt)
                if attempt.outcome == "ok":
                    last_acked = attempt.key
                if last_acked:
                    self._read(client, index, node, last_acked)
        finally:
            client.close()

    def _read(self, client: redis.Redis, index: int, node: Any, key: str) -> None:
        """GET an acknowledged key through the follower (a ReadIndex round with the leader):
        a read is always safe to retry, so the node must answer it, never fail it."""
        read = Attempt(index, node.id, key, time.monotonic())
        try:
            value = client.get(key)
            read.outcome = "read-ok" if value == "v" else "read-wrong"
            read.text = repr(value)
        except redis.RedisError as error:
            read.outcome, read.text = "read-error", f"{type(error).__name__}: {error}"
        read.ended = time.monotonic()
        with self.lock:
            self.attempts.append(read)

    def successes_since(self, moment: float) -> set[int]:
        with self.lock:
            return {a.writer for a in self.attempts if a.outcome == "ok" and a.began > moment}

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(CLIENT_TIMEOUT_S + 10)
        assert not any(t.is_alive() for t in self.threads), "writer threads did not stop"


def _round(c: LocalCluster, name: str, fault: str, report: list[str],
           bad: list[Attempt], acknowledged: list[str]) -> None:
    """One fault on shard 1's leader (`kill`: kill -9, then restart; `stop`: SIGSTOP until a
    new leader serves, then SIGCONT) with forwarded writes in flight."""
    c.wait_converged()
    leader = shard_primary(c, 1)
    writers = ForwardedWriters(c, c.others(leader), WRITERS_PER_FOLLOWER, name).start()
    writers_total = WRITERS_PER_FOLLOWER * 2
    try:
        started = time.monotonic()
        wait_until(lambda: len(writers.successes_since(started)) == writers_total, 60,
                   "every writer to get a forwarded write acknowledged")
        time.sleep(0.3)
        faulted_at = time.monotonic()
        c.kill(leader, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        wait_until(lambda: len(writers.successes_since(faulted_at)) == writers_total, 60,
                   "every writer to get a write acknowledged after the fault")
        time.sleep(0.2)
    finally:
        writers.stop()
        if fault == "stop":
            c.kill(leader, signal.SIGCONT)
    with writers.lock:
        attempts = list(writers.attempts)
    acknowledged += [a.key for a in attempts if a.outcome == "ok"]
    after = [a for a in attempts if a.ended >= faulted_at]
    in_flight = [a for a in after if a.began <= faulted_at]
    kinds: dict[str, int] = {}
    for attempt in after:
        kinds[attempt.outcome] = kinds.get(attempt.outcome, 0) + 1
    first_ok = min((a.ended for a in after if a.outcome == "ok" and a.began > faulted_at),
                   default=float("nan"))
    slowest = max(((a.ended - a.began) * 1000 for a in after
                   if a.outcome not in ("ok", "read-ok")), default=0)
    slowest_read = max(((a.ended - a.began) * 1000 for a in after
                        if a.outcome.startswith("read")), default=0)
    report.append(
        f"{name} ({fault} {leader.id}): {len(in_flight)} writes in flight ended "
        f"{sorted(round((a.ended - faulted_at) * 1000) for a in in_flight)} ms after the "
        f"fault as {sorted(a.outcome for a in in_flight)}; slowest failed attempt "
        f"{slowest:.0f} ms; slowest read {slowest_read:.0f} ms; first new write acknowledged "
        f"{(first_ok - faulted_at) * 1000:.0f} ms after the fault; outcomes since {kinds}")
    for attempt in after:
        if attempt.outcome in ("timeout", "clusterdown", "other", "read-error",
                               "read-wrong") or any(
                text in attempt.text for text in DEADLINE_TEXTS):
            bad.append(attempt)
    if fault == "kill":
        c.restart(leader)


def test_forwarded_writes_fail_fast_when_the_leader_dies_or_pauses(cluster: Any) -> None:
    c: LocalCluster = cluster(3, request_timeout_ms=REQUEST_TIMEOUT_MS)
    report: list[str] = []
    bad: list[Attempt] = []
    acknowledged: list[str] = []
    for number in range(KILLS):
        _round(c, f"kill{number}", "kill", report, bad, acknowledged)
    _round(c, "stop", "stop", report, bad, acknowledged)
    print("\n" + "\n".join(report))
    assert not bad, (
        "forwarded writes ended by waiting or with a false no-quorum: "
        + "; ".join(f"{a.node} {a.outcome} after {(a.ended - a.began) * 1000:.0f} ms: "
                    f"{a.text[:160]}" for a in bad[:10]))
    c.wait_converged()
    reader = c.client(c.nodes[0])
    missing: list[str] = []
    for start in range(0, len(acknowledged), 500):
        chunk = acknowledged[start:start + 500]
        values: list[Any] = []
        for _ in range(50):
            with contextlib.suppress(redis.ResponseError):
                values = reader.mget(chunk)
                break
            time.sleep(0.1)
        missing += [key for key, value in zip(chunk, values, strict=False) if value != "v"]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"

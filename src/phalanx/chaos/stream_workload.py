"""The chaos lab's `stream` workload: Redis Streams with a consumer group, under faults on the
nodes AND on the consumers.

Client threads are producers or consumers (`producers_for`: half the clients produce, and at
least 3 consumers read):
- produce: `XADD stream * p <unique payload>`; every attempt is recorded with its outcome (ok
  with the id the server gave, fail, unknown);
- consume: `XREADGROUP GROUP g <me> COUNT 10 BLOCK 200 STREAMS stream >`, "process" each entry
  (a delivery is recorded), then `XACK stream g id...`; about once a second a consumer also
  runs `XAUTOCLAIM stream g <me> 1000 <cursor> COUNT 10`: entries pending for more than the
  min-idle time at another consumer (a dead one) are reclaimed, processed and acked.
- the client nemesis (`_ConsumerKiller`, a thread of this workload) kills a random consumer
  every 2-4 s: it dies the moment it next holds delivered entries (a crash while processing,
  before the ack; or after 1 s holding nothing), drops its connections without a word, and
  comes back 1 s later as a new consumer (a new name, as a restarted process would be). Its
  pending entries are reclaimed by the survivors' XAUTOCLAIM once idle for 1 s.

Rules of this file:
- Same client rules as `phalanx.chaos.workload` (any node, no client-side retry of an XADD,
  short socket timeouts, the same outcome classification). An XACK that failed or timed out is
  retried at the consumer's next step before anything else (XACK is idempotent). An
  XREADGROUP with an unknown outcome may have handed entries to this consumer unseen: they sit
  in its pending list until an XAUTOCLAIM reclaims them (no special recovery needed).
- Redis docs: XREADGROUP `>` serves entries never delivered to the group; XAUTOCLAIM transfers
  entries idle for at least min-idle-time and returns [next cursor, claimed entries, deleted
  ids] (Redis 7); XACK returns how many ids it removed from the group's pending list
  (https://redis.io/docs/latest/commands/xreadgroup/, /xautoclaim/, /xack/).
- After healing (`final_check`), a drain consumer reads what is left (`>`) and claims every
  pending entry (min-idle 0), acking all, until the group has nothing pending; then every node
  (but the lost ones) is asked for the whole stream (XRANGE) and the group's pending list
  (XPENDING), and `phalanx.checker.check_stream` accounts for every acknowledged XADD on each
  node's answer; the worst answer is the verdict.
- One key (the stream) under a `{hashtag}`; times are seconds since the run's start.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from phalanx.chaos.control import NodeInfo
from phalanx.chaos.metrics import FAIL, INFO, OK, OpRecord
from phalanx.chaos.workload import Workload, WorkloadConfig, _call, classify
from phalanx.checker.stream_check import (
    CLAIM,
    NEW,
    Ack,
    Delivery,
    FinalState,
    Produce,
    StreamCheck,
    check_stream,
    stream_timeline,
)

GROUP = "workers"
#: How long a consumer's XREADGROUP blocks on an empty stream (ms; below the socket timeout).
BLOCK_MS = 200
#: Entries per XREADGROUP / XAUTOCLAIM.
COUNT = 10
#: XAUTOCLAIM's min-idle-time (ms), and how often each consumer runs one (s).
MIN_IDLE_MS = 1000
CLAIM_EVERY_S = 1.0
#: The client nemesis: a consumer killed every KILL_EVERY_S (uniform in the range), back after
#: RESTART_S under a new name; no kill in the last KILL_QUIET_S of the run.
KILL_EVERY_S = (2.0, 4.0)
RESTART_S = 1.0
#: A killed consumer dies at once when it holds entries, else at its first step after this (s).
KILL_GRACE_S = 1.0
KILL_QUIET_S = 2.0
#: How long `start` tries to create the group, and how long the final drain may take (s).
SETUP_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 30.0


def producers_for(clients: int) -> tuple[int, int]:
    """(producers, consumers) for `clients` client threads: half of them produce (at least
    one), the others consume (at least 3, so a consumer group has survivors to reclaim)."""
    producers = max(1, clients // 2)
    return producers, max(3, clients - producers)


#: Commands whose replies redis-py would reshape (dicts, tuples): this workload reads Redis's
#: replies as they come.
RAW_COMMANDS = ("XADD", "XREADGROUP", "XAUTOCLAIM", "XACK", "XRANGE", "XPENDING")


def _raw(response: Any, **_options: Any) -> Any:
    return response


def _raw_replies(client: redis.Redis) -> redis.Redis:
    """`client`, answering the stream commands with Redis's replies unchanged."""
    for command in RAW_COMMANDS:
        client.set_response_callback(command, _raw)
    return client


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _entries(raw: Any) -> list[tuple[str, str | None]]:
    """[(id, payload or None)] from a list of stream entries [id, [field, value, ...]]."""
    found: list[tuple[str, str | None]] = []
    for item in raw or []:
        entry_id, fields = item[0], item[1]
        payload: str | None = None
        if fields:
            pairs = dict(zip(fields[::2], fields[1::2], strict=False))
            value = pairs.get(b"p", pairs.get("p"))
            payload = None if value is None else _text(value)
        found.append((_text(entry_id), payload))
    return found


class _ConsumerKiller:
    """The client nemesis: kills a random live consumer every few seconds (see the module)."""

    def __init__(self, workload: StreamWorkload, rng: random.Random) -> None:
        self.workload = workload
        self.rng = rng
        self.thread = threading.Thread(target=self._run, daemon=True, name="consumer-killer")

    def _run(self) -> None:
        workload = self.workload
        state = workload.state
        next_kill = state.now() + self.rng.uniform(*KILL_EVERY_S)
        while not workload.stop_event.is_set():
            now = state.now()
            if now >= workload.until_s - KILL_QUIET_S:
                return
            if now < next_kill:
                workload.stop_event.wait(min(0.1, next_kill - now))
                continue
            next_kill = now + self.rng.uniform(*KILL_EVERY_S)
            alive = [i for i in workload.consumer_indexes if not workload._dying.get(i)
                     and now >= workload._down_until.get(i, 0.0)]
            if alive:
                workload.kill(self.rng.choice(alive))


class StreamWorkload(Workload):
    """Producers and a consumer group on one stream, consumers killed; see the module."""

    name = "stream"

    def __init__(self, nodes: Sequence[NodeInfo], config: WorkloadConfig, *, seed: int,
                 t0: float, until_s: float, kill_consumers: bool = True) -> None:
        producers, consumers = producers_for(config.clients)
        super().__init__(nodes, replace(config, clients=producers + consumers), seed=seed,
                         t0=t0, until_s=until_s)
        self.register_keys = []
        self.set_keys = []
        self.stream_key = "{" + f"{config.prefix}:s" + "}:stream"
        self.producer_count = producers
        self.consumer_indexes = list(range(producers, producers + consumers))
        self.kill_consumers = kill_consumers
        self._lock = threading.Lock()
        self.produces: list[Produce] = []
        self.deliveries: list[Delivery] = []
        self.acks: list[Ack] = []
        #: (consumer, time, ids it held unacked) of every consumer killed.
        self.deaths: list[tuple[str, float, list[str]]] = []
        self._generation: dict[int, int] = {}
        self._dying: dict[int, bool] = {}
        self._down_until: dict[int, float] = {}
        self._unacked: dict[int, list[str]] = {}
        self._last_claim: dict[int, float] = {}
        self._cursor: dict[int, str] = {}
        self._clients_of: dict[int, list[redis.Redis]] = {}
        self._kill_at: dict[int, float] = {}
        self._killer = _ConsumerKiller(self, random.Random(f"{seed}/consumer-killer"))
        self.check_result: StreamCheck | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> StreamWorkload:
        self.setup()
        super().start()
        if self.kill_consumers:
            self._killer.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        if self._killer.thread.is_alive():
            self._killer.thread.join(2.0)

    def setup(self, timeout_s: float = SETUP_TIMEOUT_S) -> None:
        """Create the stream and the group (retried on any node; BUSYGROUP means it exists)."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                client = super()._client(node)
                try:
                    _call(client, "XGROUP", "CREATE", self.stream_key, GROUP, "0", "MKSTREAM")
                    return
                except redis.ResponseError as error:
                    if str(error).startswith("BUSYGROUP"):
                        return
                    last = error
                except redis.RedisError as error:
                    last = error
                finally:
                    with contextlib.suppress(Exception):
                        client.close()
            time.sleep(0.2)
        raise RuntimeError(f"the stream workload could not create its consumer group: {last}")

    def _client(self, node: NodeInfo) -> redis.Redis:
        client = _raw_replies(super()._client(node))
        name = threading.current_thread().name
        if name.startswith("chaos-client-"):
            index = int(name.rpartition("-")[2])
            self._clients_of.setdefault(index, []).append(client)
        return client

    def consumer_name(self, index: int) -> str:
        return f"c{index}.{self._generation.get(index, 0)}"

    def kill(self, index: int) -> None:
        """Kill consumer `index`: it dies at the first moment it holds entries (delivered, not
        acked yet: a crash while processing), or after `KILL_GRACE_S` holding nothing; see
        `_die`."""
        self._kill_at[index] = self.state.now()
        self._dying[index] = True

    def _should_die(self, index: int, holding: bool) -> bool:
        if not self._dying.get(index):
            return False
        return holding or self.state.now() - self._kill_at.get(index, 0.0) >= KILL_GRACE_S

    def _die(self, index: int, holding: Sequence[str]) -> None:
        now = self.state.now()
        with self._lock:
            held = dict.fromkeys([*self._unacked.pop(index, []), *holding])
            self.deaths.append((self.consumer_name(index), now, list(held)))
        self._generation[index] = self._generation.get(index, 0) + 1
        self._cursor.pop(index, None)
        self._down_until[index] = now + RESTART_S
        for client in self._clients_of.get(index, []):  # the restarted consumer connects anew
            connection = getattr(client, "connection", None)
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.disconnect()
        self._dying[index] = False

    # ---- one step -----------------------------------------------------------------------------
    def _operation(self, index: int, rng: random.Random, client: redis.Redis, node: str,
                   process: str, sequence: int) -> str:
        if index < self.producer_count:
            return self._produce(client, node, f"s{index}-{sequence}")
        if self._should_die(index, holding=False):
            self._die(index, [])
            return OK
        if self.state.now() < self._down_until.get(index, 0.0):
            return OK  # dead, not restarted yet
        unacked = self._unacked.get(index)
        if unacked:
            return self._ack(index, client, node, unacked)
        now = self.state.now()
        if now - self._last_claim.get(index, -CLAIM_EVERY_S * rng.random()) >= CLAIM_EVERY_S:
            self._last_claim[index] = now
            return self._claim(index, client, node)
        return self._read(index, client, node)

    def _request(self, client: redis.Redis, node: str, kind: str,
                 *arguments: object) -> tuple[str, Any, float, float]:
        """One request, recorded as an OpRecord: (outcome, reply or None, began, ended)."""
        state = self.state
        began = state.now()
        try:
            reply = _call(client, *arguments)
        except Exception as error:
            outcome = classify(error, True)
            self._note_error(error)
            ended = state.now()
            with state.lock:
                state.ops.append(OpRecord(began, ended, kind, outcome, node))
            return outcome, None, began, ended
        ended = state.now()
        with state.lock:
            state.ops.append(OpRecord(began, ended, kind, OK, node))
        return OK, reply, began, ended

    def _produce(self, client: redis.Redis, node: str, payload: str) -> str:
        outcome, reply, began, ended = self._request(client, node, "xadd", "XADD",
                                                     self.stream_key, "*", "p", payload)
        entry_id = _text(reply) if outcome == OK and reply is not None else None
        with self._lock:
            self.produces.append(Produce(payload, outcome, began, ended, entry_id))
        return outcome

    def _deliver(self, index: int, entries: list[tuple[str, str | None]], kind: str,
                 began: float, ended: float, min_idle_ms: int = 0) -> None:
        consumer = self.consumer_name(index)
        with self._lock:
            self.deliveries.extend(Delivery(entry_id, payload, consumer, kind, began, ended,
                                            min_idle_ms) for entry_id, payload in entries)

    def _read(self, index: int, client: redis.Redis, node: str) -> str:
        outcome, reply, began, ended = self._request(
            client, node, "xreadgroup", "XREADGROUP", "GROUP", GROUP, self.consumer_name(index),
            "COUNT", COUNT, "BLOCK", BLOCK_MS, "STREAMS", self.stream_key, ">")
        held = _entries(reply[0][1]) if outcome == OK and reply else []
        if self._should_die(index, holding=bool(held)):
            self._deliver(index, held, NEW, began, ended)
            self._die(index, [entry_id for entry_id, _ in held])
            return outcome
        if outcome != OK:
            return outcome
        return self._process(index, client, node, held, NEW, began, ended)

    def _claim(self, index: int, client: redis.Redis, node: str) -> str:
        cursor = self._cursor.get(index, "0-0")
        outcome, reply, began, ended = self._request(
            client, node, "xautoclaim", "XAUTOCLAIM", self.stream_key, GROUP,
            self.consumer_name(index), MIN_IDLE_MS, cursor, "COUNT", COUNT)
        if outcome != OK or not reply:
            return outcome
        self._cursor[index] = _text(reply[0])
        claimed = _entries(reply[1])
        if self._should_die(index, holding=bool(claimed)):
            self._deliver(index, claimed, CLAIM, began, ended, MIN_IDLE_MS)
            self._die(index, [entry_id for entry_id, _ in claimed])
            return outcome
        return self._process(index, client, node, claimed, CLAIM, began, ended, MIN_IDLE_MS)

    def _process(self, index: int, client: redis.Redis, node: str,
                 entries: list[tuple[str, str | None]], kind: str, began: float, ended: float,
                 min_idle_ms: int = 0) -> str:
        """'Process' the delivered entries (record them), then ack them all."""
        self._deliver(index, entries, kind, began, ended, min_idle_ms)
        if not entries:
            return OK
        return self._ack(index, client, node, [entry_id for entry_id, _ in entries])

    def _ack(self, index: int, client: redis.Redis, node: str, ids: list[str]) -> str:
        if self._should_die(index, holding=True):
            self._die(index, ids)
            return OK
        outcome, reply, began, ended = self._request(client, node, "xack", "XACK",
                                                     self.stream_key, GROUP, *ids)
        removed = int(reply) if outcome == OK and isinstance(reply, int) else None
        with self._lock:
            self.acks.append(Ack(tuple(ids), self.consumer_name(index), outcome, began, ended,
                                 removed))
        if outcome == OK:
            self._unacked.pop(index, None)
        else:
            self._unacked[index] = list(ids)
        return outcome

    # ---- after healing ------------------------------------------------------------------------
    def _final_client(self, node: NodeInfo, timeout_s: float) -> redis.Redis:
        return _raw_replies(redis.Redis(
            host=node.resp_host, port=node.resp_port, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0), protocol=2,
            single_connection_client=True))

    def drain(self, exclude: frozenset[str] = frozenset(), timeout_s: float = DRAIN_TIMEOUT_S,
              consumer: str = "drain") -> bool:
        """Deliver and ack everything left (see the module rules); True when the group has
        nothing pending at the end. Deliveries and acks are recorded as the consumers' are."""
        deadline = time.monotonic() + timeout_s
        nodes = [n for n in self.nodes if n.id not in exclude]
        position = 0
        while time.monotonic() < deadline and nodes:
            node = nodes[position % len(nodes)]
            client = self._final_client(node, 5.0)
            try:
                if self._drain_on(client, node.id, consumer, deadline):
                    return True
            except redis.RedisError:
                position += 1
                time.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    client.close()
        return False

    def _drain_on(self, client: redis.Redis, node: str, consumer: str, deadline: float) -> bool:
        state = self.state
        while time.monotonic() < deadline:
            began = state.now()
            reply = _call(client, "XREADGROUP", "GROUP", GROUP, consumer, "COUNT", 100,
                          "STREAMS", self.stream_key, ">")
            kind, claimed = NEW, _entries(reply[0][1]) if reply else []
            if not claimed:
                began = state.now()
                cursor = "0-0"
                while True:
                    reply = _call(client, "XAUTOCLAIM", self.stream_key, GROUP, consumer, 0,
                                  cursor, "COUNT", 100)
                    cursor = _text(reply[0])
                    claimed.extend(_entries(reply[1]))
                    if cursor == "0-0" or time.monotonic() >= deadline:
                        break
                kind = CLAIM
            ended = state.now()
            with self._lock:
                self.deliveries.extend(Delivery(entry_id, payload, consumer, kind, began, ended)
                                       for entry_id, payload in claimed)
            if claimed:
                ids = [entry_id for entry_id, _ in claimed]
                began = state.now()
                removed = _call(client, "XACK", self.stream_key, GROUP, *ids)
                with self._lock:
                    self.acks.append(Ack(tuple(ids), consumer, OK, began, state.now(),
                                         int(removed)))
                continue
            summary = _call(client, "XPENDING", self.stream_key, GROUP)
            if int(summary[0]) == 0:
                return True
        return False

    def final_state(self, node: NodeInfo, timeout_s: float = 5.0) -> FinalState | None:
        """The whole stream (XRANGE in pages) and the group's pending ids as `node` answers
        them (linearizable reads); None when it did not answer."""
        client = self._final_client(node, timeout_s)
        try:
            entries: list[tuple[str, str | None]] = []
            start = "-"
            while True:
                page = _entries(_call(client, "XRANGE", self.stream_key, start, "+",
                                      "COUNT", 1000))
                entries.extend(page)
                if len(page) < 1000:
                    break
                start = "(" + page[-1][0]
            pending = [_text(item[0]) for item in
                       _call(client, "XPENDING", self.stream_key, GROUP, "-", "+", 100_000)]
            return FinalState(entries, pending)
        except redis.RedisError:
            return None
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def records(self) -> tuple[list[Produce], list[Delivery], list[Ack]]:
        with self._lock:
            return list(self.produces), list(self.deliveries), list(self.acks)

    def final_check(self, exclude: frozenset[str] = frozenset()) -> dict[str, Any] | None:
        drained = self.drain(exclude)
        finals = {node.id: self.final_state(node) for node in self.nodes
                  if node.id not in exclude}
        produces, deliveries, acks = self.records()
        with self._lock:
            deaths = list(self.deaths)
        checks = {node: check_stream(produces, deliveries, acks, final)
                  for node, final in sorted(finals.items()) if final is not None}
        unanswered = sorted(node for node, final in finals.items() if final is None)
        extra = {"drained": drained, "consumer_deaths": len(deaths),
                 "consumer_deaths_at_s": [round(at, 3) for _c, at, _held in deaths],
                 "held_by_the_dead": sum(len(held) for _c, _t, held in deaths),
                 "consumers": len(self.consumer_indexes), "producers": self.producer_count,
                 "min_idle_ms": MIN_IDLE_MS,
                 "timeline": stream_timeline(produces, deliveries, acks, self.until_s)}
        if not checks:
            self.check_result = check_stream(produces, deliveries, acks, None)
            return {**self.check_result.to_json(), **extra, "ok": False, "nodes_read": [],
                    "unanswered": unanswered,
                    "problems": [*self.check_result.problems(),
                                 "no node answered the final read of the stream"]}
        worst = next((n for n, c in checks.items() if not c.ok), next(iter(checks)))
        self.check_result = checks[worst]
        problems = self.check_result.problems()
        if not drained:
            problems.append("the final drain did not empty the group's pending list within "
                            f"{DRAIN_TIMEOUT_S:g} s")
        return {**self.check_result.to_json(), **extra, "ok": self.check_result.ok and drained,
                "problems": problems, "node": worst, "nodes_read": sorted(checks),
                "unanswered": unanswered}

    def lost_writes(self) -> list[tuple[float, str, str]]:
        if self.check_result is None:
            return []
        ended = {p.payload: p.ended for p in self.produces}
        lost = dict.fromkeys((*self.check_result.never_delivered, *self.check_result.missing))
        return [(ended[payload], self.stream_key, payload) for payload in lost]


__all__ = ["FAIL", "GROUP", "INFO", "StreamWorkload", "producers_for"]

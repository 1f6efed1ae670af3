"""The chaos lab's `queue` workload: the reliable-queue pattern on a Redis list, under faults.

Every client thread is both a producer and a consumer:
- produce: `LPUSH queue id` of a unique id (acknowledged pushes are recorded with their time);
- consume: `BLMOVE queue processing:<client> RIGHT LEFT 0.2` (a short block), "process" the id
  (a delivery is recorded), then ack with `LREM processing:<client> 1 id`.

Rules of this file:
- Same client rules as `phalanx.chaos.workload` (any node, no client-side retry, short socket
  timeouts, the same outcome classification): a consumer whose BLMOVE had an unknown outcome,
  or that "died" (on purpose, `crash_share` of the deliveries, after processing and before
  the ack), RECOVERS at its next step: it reads its own processing list (LRANGE) and processes
  and acks what it finds there (the pattern's recovery; a died consumer re-delivers, which is
  the at-least-once duplicate the check counts). An ack that failed or timed out is retried at
  the next step before anything else.
- All keys carry one `{hashtag}` (BLMOVE's source and destination must be in one slot).
- After healing, every node (but the lost ones) is asked for the queue and every processing
  list (linearizable LRANGE); `phalanx.checker.check_queue` accounts for every acknowledged
  push on each node's answer, and the worst answer is the verdict.
- Times are seconds since the run's start, as in the other workload.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from phalanx.chaos.control import NodeInfo
from phalanx.chaos.metrics import INFO, OK, OpRecord
from phalanx.chaos.workload import Workload, WorkloadConfig, _call, classify
from phalanx.checker.queue_check import QueueCheck, check_queue

#: How long a consumer's BLMOVE blocks on an empty queue (s; below the socket timeout).
BLOCK_S = 0.2
#: Share of steps that push (the rest consume).
PUSH_SHARE = 0.5
#: Share of deliveries after which the consumer "dies" before its ack (then recovers).
CRASH_SHARE = 0.05


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class QueueWorkload(Workload):
    """Producers and reliable consumers on one list; see the module docstring."""

    name = "queue"

    def __init__(self, nodes: Sequence[NodeInfo], config: WorkloadConfig, *, seed: int,
                 t0: float, until_s: float, crash_share: float = CRASH_SHARE) -> None:
        super().__init__(nodes, config, seed=seed, t0=t0, until_s=until_s)
        self.register_keys = []
        self.set_keys = []
        tag = "{" + f"{config.prefix}:q" + "}"
        self.queue_key = f"{tag}:queue"
        self.processing_keys = [f"{tag}:processing:{i}" for i in range(config.clients)]
        self.crash_share = crash_share
        self._lock = threading.Lock()
        #: id -> ack time of every acknowledged push, in ack order.
        self.pushed: dict[str, float] = {}
        #: every id ever sent.
        self.sent: set[str] = set()
        #: (id, consumer, time) of every delivery.
        self.deliveries: list[tuple[str, int, float]] = []
        self.acks_found_nothing: list[str] = []
        self.crashes = 0
        self.recoveries = 0
        self._recover: dict[int, bool] = {}
        self._pending_ack: dict[int, str] = {}
        self.check_result: QueueCheck | None = None

    # ---- one step -----------------------------------------------------------------------------
    def _operation(self, index: int, rng: random.Random, client: redis.Redis, node: str,
                   process: str, sequence: int) -> str:
        pending = self._pending_ack.get(index)
        if pending is not None:
            return self._ack(index, client, node, pending, first=False)
        if self._recover.get(index):
            return self._recover_step(index, client, node)
        if rng.random() < PUSH_SHARE:
            return self._push(client, node, f"q{index}-{sequence}")
        return self._consume(index, rng, client, node)

    def _request(self, client: redis.Redis, node: str, kind: str, is_write: bool,
                 *arguments: object) -> tuple[str, Any]:
        """One request, recorded as an OpRecord: (outcome, reply or None)."""
        state = self.state
        began = state.now()
        try:
            reply = _call(client, *arguments)
        except Exception as error:
            outcome = classify(error, is_write)
            self._note_error(error)
            with state.lock:
                state.ops.append(OpRecord(began, state.now(), kind, outcome, node))
            return outcome, None
        with state.lock:
            state.ops.append(OpRecord(began, state.now(), kind, OK, node))
        return OK, reply

    def _push(self, client: redis.Redis, node: str, item: str) -> str:
        with self._lock:
            self.sent.add(item)
        outcome, _ = self._request(client, node, "lpush", True, "LPUSH", self.queue_key, item)
        if outcome == OK:
            with self._lock:
                self.pushed[item] = self.state.now()
        return outcome

    def _deliver(self, index: int, item: str) -> None:
        with self._lock:
            self.deliveries.append((item, index, self.state.now()))

    def _consume(self, index: int, rng: random.Random, client: redis.Redis, node: str) -> str:
        processing = self.processing_keys[index]
        outcome, reply = self._request(client, node, "blmove", True, "BLMOVE", self.queue_key,
                                       processing, "RIGHT", "LEFT", BLOCK_S)
        if outcome == INFO:
            self._recover[index] = True  # it may be in our processing list: look there next
        if outcome != OK or reply is None:
            return outcome
        item = _text(reply)
        self._deliver(index, item)
        if rng.random() < self.crash_share:
            with self._lock:
                self.crashes += 1
            self._recover[index] = True  # died after processing, before the ack
            return OK
        return self._ack(index, client, node, item, first=True)

    def _ack(self, index: int, client: redis.Redis, node: str, item: str, *,
             first: bool) -> str:
        outcome, reply = self._request(client, node, "lrem", True, "LREM",
                                       self.processing_keys[index], 1, item)
        if outcome != OK:
            self._pending_ack[index] = item
            return outcome
        self._pending_ack.pop(index, None)
        if first and reply == 0:
            # Only this consumer touches its processing list, and its BLMOVE put the id there.
            with self._lock:
                self.acks_found_nothing.append(item)
        return OK

    def _recover_step(self, index: int, client: redis.Redis, node: str) -> str:
        outcome, reply = self._request(client, node, "lrange", False, "LRANGE",
                                       self.processing_keys[index], 0, -1)
        if outcome != OK:
            return outcome
        with self._lock:
            self.recoveries += 1
        self._recover[index] = False
        for raw in reversed(reply or []):  # oldest first
            item = _text(raw)
            self._deliver(index, item)
            outcome = self._ack(index, client, node, item, first=False)
            if outcome != OK:
                self._recover[index] = True  # the rest stays in the list: next time
                return outcome
        return OK

    # ---- after healing ------------------------------------------------------------------------
    def final_lists(self, timeout_s: float = 5.0, exclude: frozenset[str] = frozenset()
                    ) -> dict[str, dict[str, list[str]] | None]:
        """Node -> list key -> items (linearizable LRANGE), None where a node did not answer."""
        found: dict[str, dict[str, list[str]] | None] = {}
        for node in self.nodes:
            if node.id in exclude:
                continue
            client = redis.Redis(host=node.resp_host, port=node.resp_port,
                                 socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                 retry=Retry(NoBackoff(), 0), protocol=2,
                                 single_connection_client=True, decode_responses=True)
            try:
                found[node.id] = {key: [str(i) for i in _call(client, "LRANGE", key, 0, -1)]
                                  for key in (self.queue_key, *self.processing_keys)}
            except redis.RedisError:
                found[node.id] = None
            finally:
                with contextlib.suppress(Exception):
                    client.close()
        return found

    def final_check(self, exclude: frozenset[str] = frozenset()) -> dict[str, Any] | None:
        per_node = self.final_lists(exclude=exclude)
        with self._lock:
            pushed = list(self.pushed)
            sent = set(self.sent)
            delivered = [item for item, _consumer, _at in self.deliveries]
            nothing = list(self.acks_found_nothing)
            crashes, recoveries = self.crashes, self.recoveries
        checks = {node: check_queue(pushed, sent, delivered, lists, nothing)
                  for node, lists in sorted(per_node.items()) if lists is not None}
        unanswered = sorted(node for node, lists in per_node.items() if lists is None)
        if not checks:
            self.check_result = None
            return {"workload": "queue", "ok": False, "nodes_read": [],
                    "unanswered": unanswered,
                    "problems": ["no node answered the final read of the queue"]}
        worst_node = next((n for n, c in checks.items() if not c.ok), next(iter(checks)))
        self.check_result = checks[worst_node]
        return {**self.check_result.to_json(), "node": worst_node,
                "nodes_read": sorted(checks), "unanswered": unanswered,
                "consumer_crashes": crashes, "recoveries": recoveries}

    def lost_writes(self) -> list[tuple[float, str, str]]:
        if self.check_result is None:
            return []
        return [(self.pushed[item], self.queue_key, item) for item in self.check_result.lost]

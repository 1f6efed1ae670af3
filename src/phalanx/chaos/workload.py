"""The chaos lab's workloads: client threads sending a bounded stream of requests to every node.

Two workloads run side by side in every client thread:
- register: per-key GET, SET of a unique value, and CAS (`SET k new IFEQ old`), recorded as a
  `phalanx.checker.History` (invoke, then ok / fail / info) for the linearizability check;
- set: `SADD` of unique members to a few keys; the acknowledged ones (with their ack times) are
  checked at the end against every node's copy (lost acknowledged writes, RPO).

Rules of this file:
- How a request reaches the cluster is the client mode (`phalanx.chaos.clients`). raw (the
  default): every request has a short socket timeout, no client-side retry, and goes to a node
  chosen at random (any node serves any key); a node that refused a connection is skipped by
  that client for a second, as a load balancer's health check would. smart: phalanx's own
  client, routed and retried under its rules within a deadline per call. haproxy: through the
  lab's HAProxy, retried under the same rules. Rate and time are bounded. A node the runner
  `retire`s (lost for good, and declared dead by the cluster) leaves the raw rotation, as it
  would leave a load balancer's pool.
- Every ATTEMPT is one operation of the history and one `OpRecord` (raw availability); every
  call is one `CallRecord` (application availability). A write re-sent after an attempt with an
  unknown outcome is a second write of the SAME unique value by a new process: the first stays
  open (`info`) in the history, so the checker sees both and may apply the value at either
  time (or twice): nothing the cluster did is hidden from it. A set member re-sent is the same
  member, acknowledged once, when an attempt is acknowledged. Other workloads record calls,
  not attempts: through HAProxy they are not retried; in the smart mode (the queue only: the
  bank needs WATCH/MULTI, which a routing client refuses) their commands go through the smart
  client, which re-sends a non-idempotent one (LPUSH, BLMOVE, LREM) only when it was certainly
  not applied, so every push is still applied at most once.
- Outcomes (what the client may conclude): a reply is `ok` (a nil reply of `SET ... IFEQ` is an ok
  CAS that did not match, output False); `-TRYAGAIN`, `-CLUSTERDOWN` and a refused connection are
  `fail` (certainly not applied); a timeout, a broken connection, `-ERR phalanx: outcome unknown`
  or any other error of a write is `info` (it may or may not take effect). A read's error reply is
  `fail` (a read changes nothing).
- After an `info`, the thread continues as a new process id (Jepsen style): the unknown operation
  stays open forever in the model.
- Long runs rename the register keys every `key_epoch_s` (`...:reg:3:e17`): each key's history
  then spans one epoch, and an operation left open by an unknown outcome (it may take effect
  at any later time) constrains only its own key's short history, not an hour of it. The
  linearizability of each key is checked independently anyway (P-compositionality).
- Times are seconds since the run's start (`time.monotonic()` - t0), taken just before the request
  is sent and just after the reply, under the history's lock.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, TryAgainError
from redis.retry import Retry

from phalanx.chaos.clients import (
    DEFAULT_CLIENT,
    DEFAULT_DEADLINE_S,
    Caller,
    RawCaller,
    RetryingCaller,
    SmartCaller,
    attempt_outcome,
)
from phalanx.chaos.control import NodeInfo
from phalanx.chaos.metrics import FAIL, INFO, OK, CallRecord, OpRecord
from phalanx.checker import History
from phalanx.client.policy import OutcomeUnknownError

#: Per-request socket timeout (s).
SOCKET_TIMEOUT_S = 1.0
#: Connect timeout (s): a dead node refuses at once, a paused one never answers.
CONNECT_TIMEOUT_S = 0.5
#: How long a client skips a node that refused a connection (a load balancer's health check).
AVOID_REFUSED_NODE_S = 1.0


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    clients: int = 4
    rate_ops_s: float = 200.0
    register_keys: int = 5
    set_keys: int = 3
    #: Share of requests that are register operations (the rest are SADDs).
    register_share: float = 0.6
    socket_timeout_s: float = SOCKET_TIMEOUT_S
    prefix: str = "chaos"
    #: raw | smart | haproxy (`phalanx.chaos.clients`).
    client: str = DEFAULT_CLIENT
    #: The application's deadline per call (smart and haproxy modes).
    deadline_s: float = DEFAULT_DEADLINE_S
    #: The lab's HAProxy frontend (host, port), for the haproxy mode.
    haproxy: tuple[str, int] | None = None
    #: Register keys are renamed every this many seconds (None: the same keys all run long),
    #: so that a long run's history is many short independent ones (see the module rules).
    key_epoch_s: float | None = None


def _call(client: redis.Redis, *arguments: object) -> Any:
    """One command, no retry (redis-py's execute_command is untyped)."""
    return client.execute_command(*arguments)  # type: ignore[no-untyped-call]


def classify(error: Exception, is_write: bool) -> str:
    """The outcome a client may conclude from `error` (see the module rules)."""
    if isinstance(error, TryAgainError | ClusterDownError):
        return FAIL
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        text = str(error).lower()
        if "connecting" in text or "connection refused" in text:
            return FAIL  # the request was never sent
        return INFO
    if isinstance(error, redis.ResponseError):
        text = str(error)
        if text.startswith(("TRYAGAIN", "CLUSTERDOWN")):
            return FAIL
        return INFO if is_write else FAIL
    return INFO


@dataclass
class WorkloadState:
    """Everything the clients saw; shared by the client threads (guarded by `lock`)."""

    t0: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    history: History = field(default_factory=History)
    ops: list[OpRecord] = field(default_factory=list)
    #: Every application call (one or more attempts); empty for workloads that do not record
    #: calls (then every request is its own call).
    calls: list[CallRecord] = field(default_factory=list)
    #: set key -> member -> ack time (s) of every acknowledged SADD.
    acknowledged: dict[str, dict[str, float]] = field(default_factory=dict)
    #: set key -> every member ever sent.
    attempted: dict[str, set[str]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic() - self.t0


class Workload:
    """Client threads running the register and set workloads until `stop()` or `until_s`."""

    name = "register"

    def __init__(self, nodes: Sequence[NodeInfo], config: WorkloadConfig, *, seed: int,
                 t0: float, until_s: float) -> None:
        self.nodes = list(nodes)
        self.config = config
        self.seed = seed
        self.until_s = until_s
        self.state = WorkloadState(t0=t0)
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._refused: dict[int, bool] = {}
        self._known: dict[int, dict[str, bytes | None]] = {}
        #: Nodes out of the rotation for good (replaced whole, never mutated: threads read it).
        self.retired: frozenset[str] = frozenset()
        #: Where the client threads send requests: every node, or the lab's HAProxy.
        self.targets = list(self.nodes)
        if config.client == "haproxy":
            if config.haproxy is None:
                raise ValueError("the haproxy client mode needs the lab's HAProxy address")
            host, port = config.haproxy
            self.targets = [NodeInfo(id="haproxy", zone="", region="", resp_host=host,
                                     resp_port=port, admin_url="", pid=0)]
        self._callers: dict[int, Caller] = {}
        self._generation: dict[int, int] = {}
        self._names = {f"{n.resp_host}:{n.resp_port}": n.id for n in self.nodes}
        self.register_keys = [f"{config.prefix}:reg:{i}" for i in range(config.register_keys)]
        self.set_keys = [f"{config.prefix}:set:{i}" for i in range(config.set_keys)]

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> Workload:
        for index in range(self.config.clients):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True,
                                      name=f"chaos-client-{index}")
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    def retire(self, node_id: str) -> None:
        """Take `node_id` out of every client's rotation for the rest of the run."""
        self.retired = self.retired | {node_id}

    def _client(self, node: NodeInfo) -> redis.Redis:
        return redis.Redis(host=node.resp_host, port=node.resp_port,
                           socket_timeout=self.config.socket_timeout_s,
                           socket_connect_timeout=CONNECT_TIMEOUT_S, retry=Retry(NoBackoff(), 0),
                           protocol=2, single_connection_client=True)

    # ---- one client -------------------------------------------------------------------------
    def _history_process(self, index: int) -> str:
        return f"c{index}.{self._generation.get(index, 0)}"

    def _new_history_process(self, index: int) -> None:
        """After an unknown outcome the thread goes on as a new process (module rules)."""
        self._generation[index] = self._generation.get(index, 0) + 1

    def _make_caller(self, index: int, rng: random.Random) -> Caller | None:
        """The thread's retrying client (None in the raw mode: a `RawCaller` per request)."""
        config = self.config
        if config.client == "smart":
            seeds = [f"{n.resp_host}:{n.resp_port}" for n in self.nodes]
            for _ in range(50):
                try:
                    return SmartCaller(seeds, deadline_s=config.deadline_s,
                                       socket_timeout_s=config.socket_timeout_s,
                                       connect_timeout_s=CONNECT_TIMEOUT_S,
                                       rng=random.Random(rng.random()))
                except redis.RedisError:
                    if self.stop_event.wait(0.2):
                        break
            raise RuntimeError("the smart client found no node answering CLUSTER SHARDS")
        if config.client == "haproxy":
            return RetryingCaller(self._client(self.targets[0]), where="haproxy",
                                  deadline_s=config.deadline_s,
                                  rng=random.Random(rng.random()))
        return None

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        clients = {node.id: self._client(node) for node in self.targets}
        interval = self.config.clients / max(0.1, self.config.rate_ops_s)
        sequence = 0
        avoid: dict[str, float] = {}
        state = self.state
        next_due = state.now() + rng.uniform(0, interval)
        try:
            caller = self._make_caller(index, rng)
            if caller is not None:
                self._callers[index] = caller
            if isinstance(caller, SmartCaller):
                # Workloads that send their own commands (the queue) go through the smart
                # client too, whichever node the loop draws.
                smart: Any = caller.client
                clients = dict.fromkeys(clients, smart)
            while not self.stop_event.is_set():
                now = state.now()
                if now >= self.until_s:
                    return
                if next_due > now:
                    self.stop_event.wait(next_due - now)
                    continue
                next_due = max(next_due + interval, now)
                sequence += 1
                # Like a load balancer's health check: a node that refused a connection is
                # skipped by this client for a second (the refused request counts as failed).
                retired = self.retired
                pool = [n for n in self.targets if n.id not in retired] or self.targets
                usable = [n for n in pool if avoid.get(n.id, -1.0) <= now] or pool
                node = rng.choice(usable)
                client = clients[node.id]
                process = self._history_process(index)
                outcome = self._operation(index, rng, client, node.id, process, sequence)
                if outcome == INFO and self._history_process(index) == process:
                    self._new_history_process(index)
                if outcome == FAIL and self._refused.pop(index, False):
                    avoid[node.id] = state.now() + AVOID_REFUSED_NODE_S
                if outcome != OK:
                    # A broken single connection is reopened by the next call; a refused
                    # connect fails at once, so do not spin on it.
                    self.stop_event.wait(0.01)
        finally:
            for client in set(clients.values()):
                with contextlib.suppress(Exception):
                    client.close()
            own = self._callers.pop(index, None)
            if own is not None:
                with contextlib.suppress(Exception):
                    own.close()

    def _operation(self, index: int, rng: random.Random, client: redis.Redis, node: str,
                   process: str, sequence: int) -> str:
        """One request (or one step) of client `index` on `node`; its outcome (ok/fail/info).
        Other workloads (`phalanx.chaos.workloads`) override this and `final_check`."""
        known = self._known.setdefault(index, {})
        caller = self._callers.get(index) or RawCaller(client, node)
        if rng.random() < self.config.register_share:
            return self._register_op(rng, caller, index, known, f"{index}-{sequence}".encode())
        return self._set_op(rng, caller, index, f"{index}-{sequence}")

    def final_check(self, exclude: frozenset[str] = frozenset()) -> dict[str, Any] | None:
        """The workload's own verdict after healing (None: the register and set checks are
        all there is)."""
        return None

    def lost_writes(self) -> list[tuple[float, str, str]]:
        """Acknowledged writes of the workload's own kind found lost by `final_check`, as
        (ack time, key, value); folded into the run's lost writes and RPO."""
        return []

    def _note_error(self, error: Exception) -> None:
        text = str(error).lower()
        if isinstance(error, redis.ConnectionError) and (
                "connecting" in text or "refused" in text):
            index = int(threading.current_thread().name.rpartition("-")[2])
            self._refused[index] = True
        name = f"{type(error).__name__}: {str(error)[:80]}"
        with self.state.lock:
            self.state.errors[name] = self.state.errors.get(name, 0) + 1

    def _register_op(self, rng: random.Random, caller: Caller, index: int,
                     known: dict[str, bytes | None], unique: bytes) -> str:
        key = rng.choice(self.register_keys)
        epoch_s = self.config.key_epoch_s
        if epoch_s:
            key = f"{key}:e{int(self.state.now() // epoch_s)}"
        roll = rng.random()
        expected = known.get(key)
        if roll < 0.5:
            kind = "read"
        elif roll < 0.75 or expected is None:
            kind = "write"
        else:
            kind = "cas"
        if kind == "read":
            args: tuple[Any, ...] = ("GET", key)
        elif kind == "write":
            args = ("SET", key, unique)
        else:
            assert expected is not None
            args = ("SET", key, unique, "IFEQ", expected)
        attempts = _Attempts(self, index, kind, key, None if kind == "read" else unique,
                             expected if kind == "cas" else None)
        outcome = self._make_call(caller, attempts, args)
        if outcome != OK:
            known.pop(key, None)
        elif kind == "read":
            known[key] = attempts.output  # type: ignore[assignment]
        elif kind == "write" or attempts.output:
            known[key] = unique
        else:
            known.pop(key, None)
        return outcome

    def _set_op(self, rng: random.Random, caller: Caller, index: int, member: str) -> str:
        state = self.state
        key = rng.choice(self.set_keys)
        with state.lock:
            state.attempted.setdefault(key, set()).add(member)
        attempts = _Attempts(self, index, "sadd", key, member.encode(), None)
        outcome = self._make_call(caller, attempts, ("SADD", key, member))
        if outcome == OK:
            with state.lock:
                state.acknowledged.setdefault(key, {})[member] = attempts.acked_s
        return outcome

    def _make_call(self, caller: Caller, attempts: _Attempts, args: tuple[Any, ...]) -> str:
        """One application call through `caller` (its attempts recorded by `attempts`); the
        call is recorded too, and its outcome returned."""
        state = self.state
        began = state.now()
        try:
            caller.call(attempts, *args)
        except Exception as error:
            if attempts.count == 0:
                self._note_error(error)
            maybe_applied = attempts.kind != "read" and (
                attempts.unknown or isinstance(error, OutcomeUnknownError))
            outcome = INFO if maybe_applied else FAIL
        else:
            outcome = OK
        with state.lock:
            state.calls.append(CallRecord(began, state.now(), attempts.kind, outcome,
                                          max(1, attempts.count),
                                          None if self.config.client == "raw"
                                          else self.config.deadline_s))
        return outcome

    # ---- the final read ---------------------------------------------------------------------
    def final_members(self, timeout_s: float = 5.0, exclude: frozenset[str] = frozenset()
                      ) -> tuple[dict[str, dict[str, set[str] | None]],
                                 dict[str, dict[str, set[str] | None]]]:
        """Every set as each node answers it: (linearizable SMEMBERS, local READONLY SMEMBERS),
        each node -> set key -> members (None where the node did not answer). Nodes in
        `exclude` (lost for good) are not asked."""
        linearizable: dict[str, dict[str, set[str] | None]] = {}
        local_copy: dict[str, dict[str, set[str] | None]] = {}
        for node in self.nodes:
            if node.id in exclude:
                continue
            for readonly, found in ((False, linearizable), (True, local_copy)):
                per_key: dict[str, set[str] | None] = dict.fromkeys(self.set_keys)
                client = redis.Redis(host=node.resp_host, port=node.resp_port,
                                     socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                     retry=Retry(NoBackoff(), 0), protocol=2,
                                     single_connection_client=True, decode_responses=True)
                try:
                    if readonly:
                        _call(client, "READONLY")
                    for key in self.set_keys:
                        with contextlib.suppress(redis.RedisError):
                            per_key[key] = {str(m) for m in client.smembers(key)}
                except redis.RedisError:
                    pass
                finally:
                    client.close()
                found[node.id] = per_key
        return linearizable, local_copy


@dataclass(frozen=True, slots=True)
class _Token:
    op_id: int | None
    began: float
    node: str


class _Attempts:
    """Records every attempt of one register or set call (an `AttemptObserver`): a history
    operation per register attempt (a new process after an unknown outcome) and an `OpRecord`
    per attempt of either kind."""

    def __init__(self, workload: Workload, index: int, kind: str, key: str,
                 value: bytes | None, expected: bytes | None) -> None:
        self.workload = workload
        self.index = index
        self.kind = kind
        self.key = key
        self.value = value
        self.expected = expected
        self.count = 0
        self.unknown = False
        self.output: bytes | bool | None = None
        self.acked_s = 0.0

    def begin(self, where: str) -> object:
        workload, state = self.workload, self.workload.state
        self.count += 1
        node = workload._names.get(where, where)
        with state.lock:
            began = state.now()
            op_id = None
            if self.kind != "sadd":
                op_id = state.history.invoke(workload._history_process(self.index), self.kind,
                                             self.key, value=self.value,
                                             expected=self.expected, time=began)
        return _Token(op_id, began, node)

    def succeeded(self, token: object, reply: Any) -> None:
        assert isinstance(token, _Token)
        op_id, began, node = token.op_id, token.began, token.node
        if self.kind == "read":
            self.output = reply if isinstance(reply, bytes) else None
        elif self.kind == "cas":
            self.output = bool(reply)
        state = self.workload.state
        with state.lock:
            ended = state.now()
            if op_id is not None:
                state.history.ok(op_id, self.output if self.kind != "write" else None,
                                 time=ended)
            state.ops.append(OpRecord(began, ended, self.kind, OK, node))
        self.acked_s = ended

    def failed(self, token: object, error: Exception, sent: bool) -> None:
        assert isinstance(token, _Token)
        op_id, began, node = token.op_id, token.began, token.node
        outcome = attempt_outcome(error, sent=sent, is_write=self.kind != "read")
        workload, state = self.workload, self.workload.state
        workload._note_error(error)
        with state.lock:
            ended = state.now()
            if op_id is not None:
                if outcome == FAIL:
                    state.history.fail(op_id, time=ended)
                else:
                    state.history.info(op_id, time=ended)
            state.ops.append(OpRecord(began, ended, self.kind, outcome, node))
        if outcome == INFO:
            self.unknown = True
            workload._new_history_process(self.index)

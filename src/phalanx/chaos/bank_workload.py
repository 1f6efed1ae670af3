"""The chaos lab's `bank` workload: atomic transfers between accounts, and reads of them all.

`ACCOUNTS` accounts start with `INITIAL` each (one MSET before the clients start), all under
one `{hashtag}` (one shard). Each client step is one of:
- read: `MGET` of every account (the sum must be the total, no balance negative);
- transfer with a transaction: `WATCH a b`, `MGET a b`, then (when a holds enough) `MULTI`,
  `DECRBY a n`, `INCRBY b n`, `EXEC`; EXEC's null is an abort (a write to a or b came between);
- transfer with a script: `EVALSHA` of a Lua script that checks a's balance and moves the
  amount atomically (`EVAL` when the cache answers NOSCRIPT).

Rules of this file:
- Same client rules as `phalanx.chaos.workload`. Before EXEC nothing is applied, so an error
  there is `fail`; EXEC's or EVALSHA's error is classified as any write's (`info` when the
  outcome is unknown). After any error inside a transaction the connection is closed, so no
  WATCH or MULTI state survives into the next step.
- An unknown-outcome transfer is fine: it is atomic, so applied or not the sum holds. The
  check (`phalanx.checker.check_bank`) fails on ANY read that does not sum to the total, and
  on the final reads (every node but the lost ones, after healing) likewise.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from phalanx.chaos.control import NodeInfo
from phalanx.chaos.metrics import FAIL, INFO, OK, OpRecord
from phalanx.chaos.workload import Workload, WorkloadConfig, _call, classify
from phalanx.checker.bank_check import BankCheck, check_bank

ACCOUNTS = 5
INITIAL = 100
#: Shares of reads and of transaction transfers (the rest are script transfers).
READ_SHARE = 0.4
WATCH_SHARE = 0.3
#: How long `start` tries to create the accounts (s).
SETUP_TIMEOUT_S = 20.0

#: KEYS[1] pays ARGV[1] to KEYS[2] when it holds enough; 1 when moved, 0 when not.
TRANSFER_SCRIPT = """
local balance = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if balance < amount then return 0 end
redis.call('DECRBY', KEYS[1], amount)
redis.call('INCRBY', KEYS[2], amount)
return 1
"""
TRANSFER_SHA = hashlib.sha1(TRANSFER_SCRIPT.encode()).hexdigest()


def _balance(value: object) -> int | None:
    if value is None:
        return None
    try:
        return int(value.decode() if isinstance(value, bytes) else str(value))
    except ValueError:
        return None


def _drop_connection(client: redis.Redis) -> None:
    """Close the client's one connection: the server forgets its WATCH / MULTI state."""
    connection = getattr(client, "connection", None)
    if connection is not None:
        with contextlib.suppress(Exception):
            connection.disconnect()


class BankWorkload(Workload):
    """Transfers and whole-bank reads; see the module docstring."""

    name = "bank"

    def __init__(self, nodes: Sequence[NodeInfo], config: WorkloadConfig, *, seed: int,
                 t0: float, until_s: float, accounts: int = ACCOUNTS,
                 initial: int = INITIAL) -> None:
        super().__init__(nodes, config, seed=seed, t0=t0, until_s=until_s)
        self.register_keys = []
        self.set_keys = []
        tag = "{" + f"{config.prefix}:bank" + "}"
        self.accounts = [f"{tag}:account:{i}" for i in range(accounts)]
        self.initial = initial
        self.total = initial * accounts
        self._lock = threading.Lock()
        #: (time, balances) of every successful read of all the accounts.
        self.reads: list[tuple[float, list[int | None]]] = []
        #: outcome counts, e.g. "watch applied", "script unknown".
        self.transfers: dict[str, int] = {}
        self.check_result: BankCheck | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> BankWorkload:
        self.setup()
        super().start()
        return self

    def setup(self, timeout_s: float = SETUP_TIMEOUT_S) -> None:
        """Create every account (MSET, idempotent, so retried on any node until it is ok)."""
        deadline = time.monotonic() + timeout_s
        arguments: list[object] = []
        for key in self.accounts:
            arguments += [key, self.initial]
        last: Exception | None = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                client = self._client(node)
                try:
                    _call(client, "MSET", *arguments)
                    return
                except redis.RedisError as error:
                    last = error
                finally:
                    with contextlib.suppress(Exception):
                        client.close()
            time.sleep(0.2)
        raise RuntimeError(f"the bank workload could not create its accounts: {last}")

    # ---- one step -----------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        with self._lock:
            self.transfers[name] = self.transfers.get(name, 0) + 1

    def _record(self, began: float, kind: str, outcome: str, node: str) -> None:
        with self.state.lock:
            self.state.ops.append(OpRecord(began, self.state.now(), kind, outcome, node))

    def _operation(self, index: int, rng: random.Random, client: redis.Redis, node: str,
                   process: str, sequence: int) -> str:
        roll = rng.random()
        if roll < READ_SHARE:
            return self._read(client, node)
        source, target = rng.sample(self.accounts, 2)
        amount = rng.randint(1, 20)
        if roll < READ_SHARE + WATCH_SHARE:
            return self._watch_transfer(client, node, source, target, amount)
        return self._script_transfer(client, node, source, target, amount)

    def _read(self, client: redis.Redis, node: str) -> str:
        began = self.state.now()
        try:
            reply = _call(client, "MGET", *self.accounts)
        except Exception as error:
            outcome = classify(error, False)
            self._note_error(error)
            self._record(began, "read", outcome, node)
            return outcome
        balances = [_balance(value) for value in reply]
        with self._lock:
            self.reads.append((self.state.now(), balances))
        self._record(began, "read", OK, node)
        return OK

    def _watch_transfer(self, client: redis.Redis, node: str, source: str, target: str,
                        amount: int) -> str:
        began = self.state.now()
        try:
            _call(client, "WATCH", source, target)
            balances = _call(client, "MGET", source, target)
            balance = _balance(balances[0])
            if balance is None or balance < amount:
                _call(client, "UNWATCH")
                self._count("watch insufficient")
                self._record(began, "read", OK, node)
                return OK
            _call(client, "MULTI")
            _call(client, "DECRBY", source, amount)
            _call(client, "INCRBY", target, amount)
        except Exception as error:  # nothing is applied before EXEC
            self._note_error(error)
            _drop_connection(client)
            self._count("watch failed")
            self._record(began, "transfer", FAIL, node)
            return FAIL
        try:
            reply = _call(client, "EXEC")
        except Exception as error:
            outcome = classify(error, True)
            self._note_error(error)
            _drop_connection(client)
            self._count("watch unknown" if outcome == INFO else "watch failed")
            self._record(began, "transfer", outcome, node)
            return outcome
        self._count("watch aborted" if reply is None else "watch applied")
        self._record(began, "transfer", OK, node)
        return OK

    def _script_transfer(self, client: redis.Redis, node: str, source: str, target: str,
                         amount: int) -> str:
        began = self.state.now()
        try:
            try:
                reply = _call(client, "EVALSHA", TRANSFER_SHA, 2, source, target, amount)
            except redis.exceptions.NoScriptError:
                self._count("script NOSCRIPT")
                reply = _call(client, "EVAL", TRANSFER_SCRIPT, 2, source, target, amount)
        except Exception as error:
            outcome = classify(error, True)
            self._note_error(error)
            self._count("script unknown" if outcome == INFO else "script failed")
            self._record(began, "script-transfer", outcome, node)
            return outcome
        self._count("script applied" if reply == 1 else "script insufficient")
        self._record(began, "script-transfer", OK, node)
        return OK

    # ---- after healing ------------------------------------------------------------------------
    def final_balances(self, timeout_s: float = 5.0, exclude: frozenset[str] = frozenset()
                       ) -> dict[str, list[int | None] | None]:
        """Node -> every account's balance (linearizable MGET), None where it did not answer."""
        found: dict[str, list[int | None] | None] = {}
        for node in self.nodes:
            if node.id in exclude:
                continue
            client = redis.Redis(host=node.resp_host, port=node.resp_port,
                                 socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                 retry=Retry(NoBackoff(), 0), protocol=2,
                                 single_connection_client=True)
            try:
                found[node.id] = [_balance(v) for v in _call(client, "MGET", *self.accounts)]
            except redis.RedisError:
                found[node.id] = None
            finally:
                with contextlib.suppress(Exception):
                    client.close()
        return found

    def final_check(self, exclude: frozenset[str] = frozenset()) -> dict[str, Any] | None:
        final = self.final_balances(exclude=exclude)
        with self._lock:
            reads = list(self.reads)
            transfers = dict(sorted(self.transfers.items()))
        self.check_result = check_bank(self.total, reads, final, transfers)
        return {**self.check_result.to_json(), "accounts": len(self.accounts),
                "final": {node: balances for node, balances in sorted(final.items())}}

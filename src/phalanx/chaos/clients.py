"""How the chaos lab's clients reach the cluster: `--client raw | smart | haproxy`.

- raw: one redis-py connection per node, a node chosen at random per request, no retry (what
  the lab always did: it measures what the cluster answers, node by node);
- smart: phalanx's own client (`phalanx.client.PhalanxClient`): routed to the shard's leader,
  retried on another node under its documented rules (`phalanx.client.policy`), one deadline
  per call;
- haproxy: one redis-py connection to the HAProxy the lab starts with the config phalanx
  generates (`phalanx.chaos.haproxy_lab`), retried under the same rules and deadline as the
  smart client (HAProxy itself never re-sends a request: it is a TCP proxy).

Rules of this file:
- Every ATTEMPT is reported to an `AttemptObserver` before it is sent (`begin`) and when it
  ends (`succeeded` / `failed` with whether the request may have left the client), so the
  workload records every attempt in its history: a write re-sent after an unknown outcome is
  two writes of one value in the history, the first one still open (`info`). The smart client
  is observed by overriding its per-attempt primitive (`PhalanxClient._exchange`); its retry
  loop, routing and backoff are its own, unchanged.
- `attempt_outcome` is the one place that turns a failed attempt into ok / fail / info for the
  history: never sent, -MOVED, -TRYAGAIN and -CLUSTERDOWN are `fail` (certainly not applied);
  any other failure of a write is `info`; a failed read is `fail` (it changed nothing).
- A call ends with the reply, or raises: `OutcomeUnknownError` (a write that may have been
  applied and was not re-sent) or the last attempt's error.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any, Protocol

import redis
from redis.exceptions import ClusterDownError, MovedError, TryAgainError

from phalanx.chaos.metrics import FAIL, INFO
from phalanx.client import PhalanxClient
from phalanx.client.cluster_client import _AttemptFailed
from phalanx.client.policy import (
    OutcomeUnknownError,
    Verdict,
    classify,
    is_read_only,
    safe_to_resend,
)

CLIENT_MODES = ("raw", "smart", "haproxy")
DEFAULT_CLIENT = "raw"
#: The application's deadline per call (s) in the smart and haproxy modes.
DEFAULT_DEADLINE_S = 5.0
#: Backoff of the haproxy mode's retries: full jitter, as the smart client's defaults.
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 1.0
MAX_ATTEMPTS = 20


class AttemptObserver(Protocol):
    """Told about every attempt of one call (see the module rules)."""

    def begin(self, where: str) -> object: ...

    def succeeded(self, token: object, reply: Any) -> None: ...

    def failed(self, token: object, error: Exception, sent: bool) -> None: ...


def attempt_outcome(error: Exception, *, sent: bool, is_write: bool) -> str:
    """fail or info for one failed attempt (see the module rules)."""
    if not sent or isinstance(error, MovedError | TryAgainError | ClusterDownError):
        return FAIL
    if isinstance(error, redis.ResponseError) and str(error).startswith(
            ("TRYAGAIN", "CLUSTERDOWN", "MOVED")):
        return FAIL
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        return INFO
    return INFO if is_write else FAIL


def never_sent(error: Exception) -> bool:
    """A redis-py connection error raised while connecting (the request never left)."""
    text = str(error).lower()
    return isinstance(error, redis.ConnectionError | redis.TimeoutError) and (
        "connecting" in text or "connection refused" in text)


class RecordingClient(PhalanxClient):
    """`PhalanxClient` whose attempts of an `observed_call` are told to an observer."""

    def __init__(self, seeds: Sequence[str], **options: Any) -> None:
        self._watched: tuple[tuple[Any, ...], AttemptObserver] | None = None
        super().__init__(seeds, **options)

    def observed_call(self, observer: AttemptObserver, *args: Any) -> Any:
        self._watched = (tuple(args), observer)
        try:
            return self.execute_command(*args)
        finally:
            self._watched = None

    def _exchange(self, address: str, args: Sequence[Any], timeout: float) -> Any:
        watched = self._watched
        # Map refreshes (CLUSTER SHARDS) go through here too: only the call's own attempts
        # are observed.
        if watched is None or tuple(args) != watched[0]:
            return super()._exchange(address, args, timeout)
        observer = watched[1]
        token = observer.begin(address)
        try:
            reply = super()._exchange(address, args, timeout)
        except _AttemptFailed as failure:
            observer.failed(token, failure.error, failure.sent)
            raise
        observer.succeeded(token, reply)
        return reply


class Caller(Protocol):
    def call(self, observer: AttemptObserver, *args: Any) -> Any: ...

    def close(self) -> None: ...


class SmartCaller:
    """The smart mode: one `RecordingClient` per client thread."""

    def __init__(self, seeds: Sequence[str], *, deadline_s: float, socket_timeout_s: float,
                 connect_timeout_s: float, rng: random.Random) -> None:
        self.client = RecordingClient(seeds, socket_timeout=socket_timeout_s,
                                      connect_timeout=connect_timeout_s,
                                      request_timeout_s=deadline_s, rng=rng)

    def call(self, observer: AttemptObserver, *args: Any) -> Any:
        return self.client.observed_call(observer, *args)

    def close(self) -> None:
        self.client.close()


class RawCaller:
    """The raw mode: one attempt on the given connection, never retried."""

    def __init__(self, client: redis.Redis, where: str) -> None:
        self.client = client
        self.where = where

    def call(self, observer: AttemptObserver, *args: Any) -> Any:
        token = observer.begin(self.where)
        try:
            reply = self.client.execute_command(*args)  # type: ignore[no-untyped-call]
        except redis.RedisError as error:
            observer.failed(token, error, not never_sent(error))
            raise
        observer.succeeded(token, reply)
        return reply

    def close(self) -> None:
        self.client.close()


class RetryingCaller:
    """The haproxy mode: one connection to one address (HAProxy's frontend), each call retried
    under the smart client's rules (`phalanx.client.policy`) until its deadline."""

    def __init__(self, client: redis.Redis, *, where: str, deadline_s: float,
                 rng: random.Random) -> None:
        self.where = where
        self.deadline_s = deadline_s
        self.rng = rng
        self.client = client

    def call(self, observer: AttemptObserver, *args: Any) -> Any:
        deadline = time.monotonic() + self.deadline_s
        name = str(args[0]).upper().encode()
        encoded = [a if isinstance(a, bytes) else str(a).encode() for a in args[1:]]
        resend_ok = safe_to_resend(name, encoded)
        write = not is_read_only(name)
        maybe_applied = False
        attempt = 0
        while True:
            attempt += 1
            token = observer.begin(self.where)
            try:
                reply = self.client.execute_command(*args)  # type: ignore[no-untyped-call]
            except redis.RedisError as error:
                sent = not never_sent(error)
                observer.failed(token, error, sent)
                verdict = classify(error, sent=sent)
                if verdict is Verdict.FINAL:
                    raise
                if verdict is Verdict.UNKNOWN:
                    if not resend_ok:
                        raise OutcomeUnknownError(
                            f"{name.decode()} may or may not have been applied (not re-sent): "
                            f"{type(error).__name__}: {error}", command=name.decode(),
                            address=self.where) from error
                    maybe_applied = maybe_applied or write
                delay = self.rng.uniform(0.0, min(BACKOFF_MAX_S,
                                                  BACKOFF_BASE_S * 2 ** min(attempt, 30)))
                if attempt >= MAX_ATTEMPTS or time.monotonic() + delay >= deadline:
                    if maybe_applied:
                        raise OutcomeUnknownError(
                            f"{name.decode()} failed after {attempt} attempts and may have been "
                            f"applied by an earlier one: {error}", command=name.decode(),
                            address=self.where) from error
                    raise
                time.sleep(delay)
                continue
            observer.succeeded(token, reply)
            return reply

    def close(self) -> None:
        self.client.close()

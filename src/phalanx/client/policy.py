"""The retry policy of `PhalanxClient`: which commands may be re-sent, after which errors.

What this module owns:
- `OutcomeUnknownError`, the error a caller sees when a write may or may not have been applied.
- `is_read_only` / `is_idempotent` / `safe_to_resend`: whether a request may be sent again
  after an attempt whose outcome is unknown.
- `classify`: what one failed attempt means (certainly not applied, a redirect, an unknown
  outcome, or a final answer).

Rules of this module:
- Pure: no IO, no clock; the client owns sockets, sleeping and deadlines.
- When in doubt a command is NOT idempotent: an unknown command, an option we do not recognise,
  or an option whose reply would lie on a re-send (SET GET/NX/IFEQ, EXPIRE NX/XX/GT/LT) makes
  the request non-idempotent. Being wrong in that direction costs an `OutcomeUnknownError`;
  the other direction costs a double increment.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import redis

from phalanx.errors import OutcomeUnknown
from phalanx.kv import command_spec


class OutcomeUnknownError(redis.exceptions.RedisError, OutcomeUnknown):
    """A write may or may not have been applied, and the client did not re-send it.

    Raised for a non-idempotent request (INCR, LPUSH, APPEND, SET ... GET, ...) when an attempt
    ended without a definite answer: the server said `-ERR phalanx: outcome unknown`, or the
    connection failed or timed out after the request was sent. It is also raised for an
    idempotent write whose retries ran out after one such attempt (it may have been applied).

    It derives from both `redis.exceptions.RedisError` (so `except redis.RedisError` handlers
    keep working) and `phalanx.errors.OutcomeUnknown` (the product's own error tree). The
    original error is chained as `__cause__`; `command` names the request, `address` the node.
    """

    def __init__(self, message: str, *, command: str = "", address: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.address = address


#: Writes that leave the same state when applied twice in a row (their reply to the re-send may
#: differ: DEL then counts 0 deleted keys). Options are checked by `is_idempotent`.
IDEMPOTENT_WRITES = frozenset({
    b"SET",        # without GET, NX or IFEQ (their replies depend on the first attempt)
    b"MSET",
    b"DEL", b"UNLINK",
    b"HSET", b"HDEL",
    b"SADD", b"SREM",
    b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT",   # without NX/XX/GT/LT
    b"PERSIST",
    b"FLUSHDB", b"FLUSHALL",
})

#: Keyless commands that change nothing (their command-table flags do not say "readonly").
_HARMLESS = frozenset({b"PING", b"ECHO", b"INFO", b"CLUSTER", b"COMMAND", b"ROLE", b"TIME"})

#: SET options whose reply to a re-send would differ from the first attempt's (or that are
#: not idempotent at all: IFEQ is a compare-and-set).
_SET_UNSAFE_OPTIONS = frozenset({b"GET", b"NX", b"IFEQ"})

#: Commands that set per-connection state, which a routing, pooling client cannot keep.
CONNECTION_STATE_COMMANDS = frozenset({
    b"SELECT", b"READONLY", b"READWRITE", b"HELLO", b"AUTH", b"QUIT", b"RESET",
    b"MULTI", b"EXEC", b"DISCARD", b"WATCH", b"UNWATCH", b"SUBSCRIBE", b"PSUBSCRIBE",
})


def is_read_only(name: bytes) -> bool:
    """True for a command that never changes data: the command table flags it "readonly",
    or it is a keyless informational command (PING, INFO, CLUSTER, ...)."""
    upper = name.upper()
    spec = command_spec(upper)
    if spec is not None and "readonly" in spec.flags:
        return True
    return upper in _HARMLESS


def is_idempotent(name: bytes, args: Sequence[bytes]) -> bool:
    """True for a write that may be applied twice with the effect of once (see
    `IDEMPOTENT_WRITES`); `args` excludes the command name."""
    upper = name.upper()
    if upper not in IDEMPOTENT_WRITES:
        return False
    if upper == b"SET":
        return not any(arg.upper() in _SET_UNSAFE_OPTIONS for arg in args[2:])
    if upper in (b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT"):
        return len(args) == 2
    return True


def safe_to_resend(name: bytes, args: Sequence[bytes]) -> bool:
    """May this request be sent again after an attempt whose outcome is unknown?"""
    return is_read_only(name) or is_idempotent(name, args)


class Verdict(enum.Enum):
    """What one failed attempt tells the client."""

    NOT_APPLIED = "not applied"
    """Certainly not applied (TRYAGAIN, CLUSTERDOWN, refused connection): retry any command."""
    REDIRECT = "redirect"
    """-MOVED: not applied here; send it to the named node (any command)."""
    UNKNOWN = "unknown"
    """May have been applied: retry only reads and idempotent writes."""
    FINAL = "final"
    """A real answer (WRONGTYPE, syntax, CROSSSLOT, ...): raise it, never retry."""


def _is_outcome_unknown_reply(error: redis.exceptions.ResponseError) -> bool:
    # redis-py strips the "ERR " of an -ERR reply; accept both spellings.
    text = str(error)
    if text.startswith("ERR "):
        text = text[4:]
    return text.startswith(("phalanx: outcome unknown", "phalanx: timed out"))


def classify(error: BaseException, *, sent: bool) -> Verdict:
    """The verdict on one attempt that raised `error`; `sent` is False when it failed while
    connecting (the request never left the client)."""
    if isinstance(error, redis.exceptions.AuthenticationError):
        return Verdict.FINAL  # a wrong password does not heal by retrying
    if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return Verdict.UNKNOWN if sent else Verdict.NOT_APPLIED
    if isinstance(error, redis.exceptions.MovedError):
        return Verdict.REDIRECT
    if isinstance(error, redis.exceptions.TryAgainError | redis.exceptions.ClusterDownError):
        return Verdict.NOT_APPLIED
    if isinstance(error, redis.exceptions.ResponseError) and _is_outcome_unknown_reply(error):
        return Verdict.UNKNOWN
    return Verdict.FINAL

"""A deterministic digest of the key-value state, for the consistency checker.

Replicas of a shard that applied the same log prefix hold the same keys and values; the digest
lets them compare that state without shipping it (as CockroachDB's consistency checker and
etcd's corruption check compare a hash of their state at the same applied index). A replica
whose digest differs at the same index has diverged (a lying disk, a bug) and must not serve.

Rules of this file:
- Pure and deterministic across processes: no `hash()` (randomised per process for bytes), no
  set or dict iteration order that depends on history. The digest is blake2b-128 over
  marshal((key, canonical value, expire_at)) of every key in sorted key order (marshal
  version 2: no reference-count-dependent back-references, see snapshot.py); a change of
  one key, value or expiry changes it (unless 2**-128 luck).
- Canonical values: a string as is; a hash, a sorted set and a set as sorted tuples; a list
  head first; a stream as its deterministic plain form (`Stream.to_plain`).
- What is covered: the data and the expiry times (what a client can read). Client sessions,
  WATCH versions and the script cache are not (they are bookkeeping, not data).
- Sliced (`DigestBuilder`): the same digest of the state at one applied index, computed a
  few keys per step while the state machine keeps applying entries, so that no replica stalls
  for the whole keyspace at once (8.4 s at 1M keys under load, issue 15). The state at the
  start is captured copy-on-write by `kv/snapshot_stream.py`'s `KeyCapture` (the sliced
  snapshot's machinery: a key's canonical value is kept the first time it changes); the sorted
  order comes from runs of `RUN_KEYS` keys sorted one per step, then merged lazily
  (`heapq.merge`), so no step sorts the whole keyspace. Its result equals `state_digest` of
  the state at the start, byte for byte (tested with random command sequences).
- Standard library only.
"""

from __future__ import annotations

import hashlib
import heapq
import marshal
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from phalanx.kv.keyspace import Keyspace
from phalanx.kv.snapshot_stream import ABSENT, KeyCapture
from phalanx.kv.stream import Stream
from phalanx.kv.zset import ZSet

_MARSHAL_VERSION = 2
#: Keys per sorted run of a `DigestBuilder` (one run is sorted in one step).
RUN_KEYS = 4096


def canonical_value(value: object) -> Any:
    """A value as plain marshal-able data whose bytes do not depend on its history."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    if isinstance(value, set):
        return tuple(sorted(value))
    if isinstance(value, ZSet):
        return tuple(value.order)
    if isinstance(value, Stream):
        return (None, value.to_plain())
    if isinstance(value, deque | list | tuple):
        return tuple(value)
    raise TypeError(f"not a stored value: {type(value).__name__}")


def state_digest(data: Mapping[bytes, object], expires: Mapping[bytes, int]) -> str:
    """The digest of a whole keyspace, as 32 hex digits."""
    hasher = hashlib.blake2b(digest_size=16)
    update = hasher.update
    get_expiry = expires.get
    for key in sorted(data):
        update(marshal.dumps((key, canonical_value(data[key]), get_expiry(key)),
                             _MARSHAL_VERSION))
    return hasher.hexdigest()


class DigestBuilder:
    """`state_digest` of a keyspace as it is when this object is made, computed by `step`
    while the keyspace keeps changing (see the module rules). `close()` it to give up."""

    def __init__(self, keyspace: Keyspace, run_keys: int = RUN_KEYS) -> None:
        self._run_keys = max(1, run_keys)
        self._capture = KeyCapture(keyspace, "digest", canonical_value)
        self._hasher = hashlib.blake2b(digest_size=16)
        self._runs: list[list[bytes]] = []
        self._sorted_up_to = 0
        self._merged: Iterator[bytes] | None = None
        #: The digest (32 hex digits) once every key is hashed; None until then.
        self.result: str | None = None

    @property
    def closed(self) -> bool:
        return self._capture.closed

    def close(self) -> None:
        """Stop following the keyspace (the result, if any, stays)."""
        self._capture.close()
        self._runs = []
        self._merged = None

    def step(self, budget: int) -> bool:
        """Do about `budget` keys' worth of work (a run sorted counts its keys); True once
        the result is known."""
        if self.result is not None:
            return True
        if self._capture.closed:
            raise RuntimeError("digest builder closed")
        capture = self._capture
        keys = capture.keys
        if self._merged is None:
            while self._sorted_up_to < len(keys) and budget > 0:
                end = min(len(keys), self._sorted_up_to + self._run_keys)
                self._runs.append(sorted(keys[self._sorted_up_to:end]))
                budget -= end - self._sorted_up_to
                self._sorted_up_to = end
            if self._sorted_up_to < len(keys):
                return False
            self._merged = heapq.merge(*self._runs)
        update = self._hasher.update
        saved, data, get_expiry, dumps = capture.saved, capture.data, capture.expires.get, \
            marshal.dumps
        for key in self._merged:
            frozen: Any = saved.get(key, ABSENT)
            if frozen is ABSENT:
                frozen = canonical_value(data[key])
            update(dumps((key, frozen, get_expiry(key)), _MARSHAL_VERSION))
            budget -= 1
            if budget <= 0:
                return False
        self.result = self._hasher.hexdigest()
        self.close()
        return True


__all__ = ["RUN_KEYS", "DigestBuilder", "canonical_value", "state_digest"]

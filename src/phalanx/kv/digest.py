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
- Standard library only.
"""

from __future__ import annotations

import hashlib
import marshal
from collections import deque
from collections.abc import Mapping
from typing import Any

from phalanx.kv.stream import Stream
from phalanx.kv.zset import ZSet

_MARSHAL_VERSION = 2


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


__all__ = ["canonical_value", "state_digest"]

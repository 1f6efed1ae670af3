"""The Redis commands active-active keys accept, and how each merges (docs/active-active.md).

Each handler runs on one shard's `ActiveActiveStore` (store.py) for ONE key: a write applies
its delta locally and emits it to the outbox (`store.emit`), a read answers from the merged
local state. Replies are Redis's (redis.io/commands/<name>), the merge rule is the type's
(types.py), as Redis Enterprise's Active-Active databases document them
(redis.io/docs/latest/operate/rs/databases/active-active/develop/data-types/):

| command | on | merge rule |
|---|---|---|
| SET k v, GET, (DEL) | string | last writer wins by (hybrid logical clock, region) |
| INCR, DECR, INCRBY, DECRBY, GET | counter | every increment counts (per-region PN-counter); DEL resets what it observed |
| SADD, SREM, SMEMBERS, SISMEMBER, SCARD | set | add wins over a concurrent remove (observed remove) |
| HSET, HDEL, HGET, HGETALL, HLEN, HEXISTS | hash | fields add-wins; a field's value last writer wins |
| DEL, EXISTS, TYPE | any | DEL removes what it observed of every type |
| EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, PERSIST, TTL, PTTL | any | the expiry time is a last-writer-wins register; a key is absent from its expiry time on (every region agrees: absolute time); a write to an expired key first deletes what it observed |

Everything else (lists, sorted sets, streams, SET's options, EXPIRE's NX/XX/GT/LT, multi-key
commands) is refused on an active-active key with a clear error: no sound merge rule here yet.
A SET over a counter, set or hash replaces it, as in Redis (it removes what it observed); an
INCR on a string written by SET is refused (two regions converting one string concurrently
would count its value twice): counters are created by INCR/INCRBY/DECR/DECRBY.

Rules of this file: pure; one key per command; the reply shapes are redis-server's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from phalanx.crdt.types import EXPIRE, Counter, DotMap, KeyState, Register, Stamp, Typed
from phalanx.kv.replies import (
    NOT_INTEGER,
    OVERFLOW,
    WRONGTYPE,
    Error,
    Reply,
    arity_error,
    invalid_expire,
)


class ActiveActiveStore(Protocol):
    """What a command sees of the store (store.py's `ActiveActiveStore`)."""

    region: str
    keys: dict[bytes, KeyState]
    #: The time of the command (the entry's replicated clock, or the read's time).
    now: int

    def stamp(self) -> Stamp: ...

    def emit(self, key: bytes, type_name: str, delta: Typed) -> None: ...


Handler = Callable[[ActiveActiveStore, bytes, list[bytes]], Reply]
_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_COUNTER_FROM_STRING = Error(
    "WRONGTYPE phalanx active-active: this key is a string written by SET; counters are "
    "created by INCR/INCRBY/DECR/DECRBY (DEL the key first)")


def _visible(store: ActiveActiveStore, key: bytes) -> tuple[str, object] | None:
    state = store.keys.get(key)
    return None if state is None else state.visible(store.now)


def _typed(store: ActiveActiveStore, key: bytes, name: str) -> KeyState:
    state = store.keys.get(key)
    if state is None:
        state = store.keys[key] = KeyState()
    return state


# -- strings and counters ------------------------------------------------------------------
def _get(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    seen = _visible(store, key)
    if seen is None:
        return None
    state = seen[1]
    if isinstance(state, Register):
        return state.value
    if isinstance(state, Counter):
        return str(state.value).encode()
    return WRONGTYPE


def _set(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    if len(args) != 1:
        return Error("ERR phalanx active-active: SET takes no options on an active-active key "
                     "(EX/PX/NX/XX/GET/KEEPTTL are not supported)")
    stamp = store.stamp()
    _delete_observed(store, key, stamp, keep="string")
    state = _typed(store, key, "string")
    register = state.typed.setdefault("string", Register())
    delta = Register(stamp, args[0])
    assert isinstance(register, Register)
    register.join(delta)
    store.emit(key, "string", delta)
    return "OK"


def _increment(store: ActiveActiveStore, key: bytes, by: int) -> Reply:
    seen = _visible(store, key)
    if seen is not None and not isinstance(seen[1], Counter):
        return _COUNTER_FROM_STRING if isinstance(seen[1], Register) else WRONGTYPE
    if by == 0:  # nothing to count (and no key created: a difference from Redis)
        return 0 if seen is None else _counter_value(seen[1])
    state = _typed(store, key, "counter")
    counter = state.typed.setdefault("counter", Counter())
    assert isinstance(counter, Counter)
    result = counter.value + by
    if not _INT64_MIN <= result <= _INT64_MAX:
        return OVERFLOW
    delta = counter.increment(store.region, by, store.stamp())
    store.emit(key, "counter", delta)
    return counter.value


def _counter_value(state: object) -> int:
    assert isinstance(state, Counter)
    return state.value


def _integer(raw: bytes) -> int | None:
    try:
        value = int(raw)
    except ValueError:
        return None
    if raw != str(value).encode() or not _INT64_MIN <= value <= _INT64_MAX:
        return None
    return value


def _incr(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    return _increment(store, key, 1)


def _decr(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    return _increment(store, key, -1)


def _incrby(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    by = _integer(args[0])
    return NOT_INTEGER if by is None else _increment(store, key, by)


def _decrby(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    by = _integer(args[0])
    if by is None or by == _INT64_MIN:
        return NOT_INTEGER if by is None else Error("ERR decrement would overflow")
    return _increment(store, key, -by)


# -- generic ---------------------------------------------------------------------------------
def _delete_observed(store: ActiveActiveStore, key: bytes, stamp: tuple[int, str],
                     keep: str = "") -> bool:
    """Remove every typed state of `key` this replica observes (except `keep`); emit the
    deltas. True if the key existed."""
    state = store.keys.get(key)
    if state is None:
        return False
    existed = state.visible(store.now) is not None
    for name, typed in sorted(state.typed.items()):
        if name == keep or not typed.exists:
            continue
        delta: Register | Counter | DotMap
        if isinstance(typed, Register):
            tombstone = Register(stamp, None)
            typed.join(tombstone)
            delta = tombstone
        elif isinstance(typed, Counter):
            delta = typed.reset(stamp)
        else:
            delta = typed.remove([], stamp)
        store.emit(key, name, delta)
    return existed


def _del(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    if args:
        return _one_key("del")
    if _visible(store, key) is None:
        return 0
    return int(_delete_observed(store, key, store.stamp()))


def _exists(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    if args:
        return _one_key("exists")
    return int(_visible(store, key) is not None)


def _type(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    seen = _visible(store, key)
    if seen is None:
        return "none"
    return "string" if seen[0] == "counter" else seen[0]


def _one_key(name: str) -> Error:
    return Error(f"ERR phalanx active-active: {name.upper()} takes one active-active key "
                 f"per command")


# -- sets and hashes -------------------------------------------------------------------------
def _dotmap(store: ActiveActiveStore, key: bytes, kind: str,
            create: bool) -> DotMap | Error | None:
    seen = _visible(store, key)
    if seen is not None and seen[0] != kind:
        return WRONGTYPE
    if seen is None and not create:
        return None
    state = _typed(store, key, kind)
    typed = state.typed.setdefault(kind, DotMap())
    assert isinstance(typed, DotMap)
    return typed


def _add(store: ActiveActiveStore, key: bytes, kind: str,
         pairs: list[tuple[bytes, bytes | None]]) -> Reply:
    target = _dotmap(store, key, kind, True)
    if isinstance(target, Error) or target is None:
        return target
    stamp = store.stamp()
    added = 0
    combined: DotMap | None = None
    for element, value in pairs:
        added += element not in target.entries
        payload = None if value is None else (stamp[0], value)
        delta = target.add(element, payload, store.region, stamp)
        if combined is None:
            combined = delta
        else:
            combined.join(delta)
    assert combined is not None
    store.emit(key, kind, combined)
    return added


def _remove(store: ActiveActiveStore, key: bytes, kind: str, elements: list[bytes]) -> Reply:
    target = _dotmap(store, key, kind, False)
    if isinstance(target, Error) or target is None:
        return 0 if target is None else target
    present = sorted({element for element in elements if element in target.entries})
    if not present:
        return 0
    store.emit(key, kind, target.remove(present, store.stamp()))
    return len(present)


def _sadd(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    return _add(store, key, "set", [(member, None) for member in args])


def _srem(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    return _remove(store, key, "set", args)


def _read_dotmap(store: ActiveActiveStore, key: bytes, kind: str) -> DotMap | Error | None:
    return _dotmap(store, key, kind, False)


def _smembers(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    target = _read_dotmap(store, key, "set")
    if isinstance(target, Error):
        return target
    members: list[Reply] = [] if target is None else list(sorted(target.entries))
    return members


def _sismember(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    target = _read_dotmap(store, key, "set")
    if isinstance(target, Error):
        return target
    return int(target is not None and args[0] in target.entries)


def _scard(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    target = _read_dotmap(store, key, "set")
    if isinstance(target, Error):
        return target
    return 0 if target is None else len(target.entries)


def _hset(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    if len(args) % 2:
        return arity_error("hset")
    return _add(store, key, "hash", [(args[i], args[i + 1]) for i in range(0, len(args), 2)])


def _hdel(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    return _remove(store, key, "hash", args)


def _hget(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    target = _read_dotmap(store, key, "hash")
    if isinstance(target, Error):
        return target
    return None if target is None else target.field_value(args[0])


def _hgetall(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    target = _read_dotmap(store, key, "hash")
    if isinstance(target, Error):
        return target
    if target is None:
        return []
    out: list[Reply] = []
    for name in sorted(target.entries):
        out += [name, target.field_value(name)]
    return out


def _hlen(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    target = _read_dotmap(store, key, "hash")
    if isinstance(target, Error):
        return target
    return 0 if target is None else len(target.entries)


def _hexists(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    target = _read_dotmap(store, key, "hash")
    if isinstance(target, Error):
        return target
    return int(target is not None and args[0] in target.entries)


# -- expiry ---------------------------------------------------------------------------------
def purge_expired(store: ActiveActiveStore, key: bytes) -> None:
    """Before a write: a key expired at `store.now` is deleted (what this replica observed of
    it) so the write starts from nothing, as in Redis (a write never revives old content)."""
    state = store.keys.get(key)
    if state is not None and state.expired(store.now):
        _delete_observed(store, key, store.stamp())


def _set_expiry(store: ActiveActiveStore, key: bytes, name: str, raw: bytes, unit_ms: int,
                absolute: bool, extra: list[bytes]) -> Reply:
    if extra:
        return Error(f"ERR phalanx active-active: {name.upper()} takes no NX/XX/GT/LT option "
                     f"on an active-active key")
    amount = _integer(raw)
    if amount is None:
        return NOT_INTEGER
    if abs(amount) > (2 ** 62) // unit_ms:
        return invalid_expire(name)
    at = amount * unit_ms if absolute else store.now + amount * unit_ms
    if _visible(store, key) is None:
        return 0
    stamp = store.stamp()
    if at <= store.now:  # Redis: a time in the past deletes the key
        _delete_observed(store, key, stamp)
        return 1
    state = _typed(store, key, EXPIRE)
    register = state.typed.setdefault(EXPIRE, Register())
    assert isinstance(register, Register)
    delta = Register(stamp, str(at).encode())
    register.join(delta)
    store.emit(key, EXPIRE, delta)
    return 1


def _expire(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    return _set_expiry(store, key, "expire", args[0], 1000, False, args[1:])


def _pexpire(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    return _set_expiry(store, key, "pexpire", args[0], 1, False, args[1:])


def _expireat(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    return _set_expiry(store, key, "expireat", args[0], 1000, True, args[1:])


def _pexpireat(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    return _set_expiry(store, key, "pexpireat", args[0], 1, True, args[1:])


def _persist(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    state = store.keys.get(key)
    if state is None or state.visible(store.now) is None or state.expire_at() is None:
        return 0
    register = state.typed[EXPIRE]
    assert isinstance(register, Register)
    delta = Register(store.stamp(), None)
    register.join(delta)
    store.emit(key, EXPIRE, delta)
    return 1


def _remaining_ms(store: ActiveActiveStore, key: bytes) -> int:
    state = store.keys.get(key)
    if state is None or state.visible(store.now) is None:
        return -2
    at = state.expire_at()
    return -1 if at is None else at - store.now


def _ttl(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    remaining = _remaining_ms(store, key)
    return remaining if remaining < 0 else (remaining + 500) // 1000


def _pttl(store: ActiveActiveStore, key: bytes, args: list[bytes]) -> Reply:
    return _remaining_ms(store, key)


#: name -> (handler, Redis arity counting the name and the key: negative = at least).
WRITES: dict[bytes, tuple[Handler, int]] = {
    b"SET": (_set, -3), b"DEL": (_del, -2),
    b"INCR": (_incr, 2), b"DECR": (_decr, 2), b"INCRBY": (_incrby, 3),
    b"DECRBY": (_decrby, 3),
    b"SADD": (_sadd, -3), b"SREM": (_srem, -3),
    b"HSET": (_hset, -4), b"HDEL": (_hdel, -3),
    b"EXPIRE": (_expire, -3), b"PEXPIRE": (_pexpire, -3), b"EXPIREAT": (_expireat, -3),
    b"PEXPIREAT": (_pexpireat, -3), b"PERSIST": (_persist, 2),
}
READS: dict[bytes, tuple[Handler, int]] = {
    b"GET": (_get, 2), b"EXISTS": (_exists, -2), b"TYPE": (_type, 2),
    b"SMEMBERS": (_smembers, 2), b"SISMEMBER": (_sismember, 3), b"SCARD": (_scard, 2),
    b"HGET": (_hget, 3), b"HGETALL": (_hgetall, 2), b"HLEN": (_hlen, 2),
    b"HEXISTS": (_hexists, 3), b"TTL": (_ttl, 2), b"PTTL": (_pttl, 2),
}


def check_arity(name: bytes, argument_count: int) -> Error | None:
    """Redis's arity error for `name` with `argument_count` arguments (the key included)."""
    entry = WRITES.get(name) or READS.get(name)
    if entry is None:
        return unsupported(name)
    arity = entry[1]
    count = argument_count + 1
    if (arity > 0 and count != arity) or count < -arity:
        return arity_error(name.decode().lower())
    return None


def unsupported(name: bytes) -> Error:
    """The refusal of a command active-active keys do not support."""
    return Error(f"ERR phalanx active-active: {name.decode('ascii', 'replace').upper()} is not "
                 f"supported on active-active keys (no conflict-free merge rule; see "
                 f"docs/active-active.md)")

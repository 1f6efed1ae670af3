"""Transactions in the state machine (kv/transaction.py): one PHALANX.EXEC entry runs a whole
MULTI ... EXEC atomically, and WATCH's check is made at apply time on the replicated versions
(kv/keyspace.py), which survive snapshots, splits and merges."""

from __future__ import annotations

import contextlib
import marshal
import random
import struct
import zlib
from collections import Counter, deque
from typing import Any

import pytest

import phalanx.kv.keyspace as keyspace_module
from phalanx.errors import Corrupt
from phalanx.kv import Error, KVStateMachine
from phalanx.kv.codec import Transaction, Watch, decode_transaction, encode_transaction
from phalanx.kv.snapshot import decode_snapshot
from phalanx.kv.transaction import EXEC_COMMAND, WATCH_COMMAND

Driver = Any  # tests/kv/conftest.py's Driver, through its fixtures


def exec_args(commands: list[list[bytes]], watches: list[Watch] = (),  # type: ignore[assignment]
              keys: list[bytes] | None = None) -> list[bytes]:
    """The arguments of a PHALANX.EXEC entry; `keys` defaults to every word after a name
    that looks like a key in these tests (k*, h*, s*, l*)."""
    payload = encode_transaction(Transaction(tuple(watches),
                                             tuple(tuple(c) for c in commands)))
    if keys is None:
        found: list[bytes] = [w.key for w in watches]
        for command in commands:
            found += [word for word in command[1:] if word[:1] in (b"k", b"h", b"s", b"l")]
        keys = list(dict.fromkeys(found))
    return [payload, *keys]


def watch(kv: Driver, *keys: bytes) -> list[Watch]:
    reply = kv.read(WATCH_COMMAND, *keys)
    assert isinstance(reply, list)
    version = reply[0]
    return [Watch(key, version, bool(flag)) for key, flag in zip(keys, reply[1:], strict=True)]


def test_codec_round_trip_and_corrupt_payloads() -> None:
    transaction = Transaction((Watch(b"k", 7, False), Watch(b"", -1, True)),
                              ((b"SET", b"k", b"v"), (b"PING",), (b"GET", b"")))
    payload = encode_transaction(transaction)
    assert decode_transaction(payload) == transaction
    assert decode_transaction(encode_transaction(Transaction((), ()))) == Transaction((), ())
    for bad in (b"", b"\x02", payload[:-1], payload + b"\x00", payload[:5],
                b"\x01" + struct.pack("<I", 2**31)):
        with pytest.raises(Corrupt):
            decode_transaction(bad)
    rng = random.Random(5)
    for _ in range(2000):  # never anything but Corrupt
        blob = bytearray(payload)
        for _ in range(rng.randrange(1, 4)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        with contextlib.suppress(Corrupt):
            decode_transaction(bytes(blob))


def test_exec_runs_every_command_in_order_and_keeps_runtime_errors(kv: Driver) -> None:
    reply = kv(EXEC_COMMAND, *exec_args([
        [b"SET", b"k1", b"1"], [b"LPUSH", b"k1", b"x"], [b"INCR", b"k1"], [b"GET", b"k1"],
        [b"HSET", b"h", b"f", b"v"], [b"HGETALL", b"h"], [b"NOPE", b"x"], [b"GET"],
    ]))
    assert reply == ["OK", Error("WRONGTYPE Operation against a key holding the wrong kind of "
                                 "value"), 2, b"2", 1, [b"f", b"v"],
                     Error("ERR unknown command 'NOPE', with args beginning with: 'x' "),
                     Error("ERR wrong number of arguments for 'get' command")]
    assert kv(EXEC_COMMAND, *exec_args([])) == []


def test_a_watched_key_changed_after_watch_aborts_and_nothing_runs(kv: Driver) -> None:
    kv(b"SET", b"k1", b"a")
    watches = watch(kv, b"k1", b"k2")
    kv(b"SET", b"k3", b"other key")  # not watched: no abort
    assert kv(EXEC_COMMAND, *exec_args([[b"GET", b"k1"]], watches)) == [b"a"]
    watches = watch(kv, b"k1")
    kv(b"SET", b"k1", b"a")  # same value: still a change (Redis too)
    assert kv(EXEC_COMMAND, *exec_args([[b"SET", b"k2", b"never"]], watches)) is None
    assert kv(b"GET", b"k2") is None
    # A key absent when watched, created and deleted again, is a change.
    watches = watch(kv, b"k9")
    kv(b"SET", b"k9", b"x")
    kv(b"DEL", b"k9")
    assert kv(EXEC_COMMAND, *exec_args([], watches)) is None
    # DEL of a missing key changes nothing.
    watches = watch(kv, b"k8")
    kv(b"DEL", b"k8")
    assert kv(EXEC_COMMAND, *exec_args([[b"EXISTS", b"k8"]], watches)) == [0]
    # A failed WATCH read (version -1) always aborts.
    assert kv(EXEC_COMMAND, *exec_args([], [Watch(b"k1", -1)])) is None


@pytest.mark.parametrize("change", [
    [b"EXPIRE", b"k1", b"100"], [b"PERSIST", b"k1"], [b"APPEND", b"k1", b"x"],
    [b"DEL", b"k1"], [b"GETDEL", b"k1"], [b"INCR", b"k1"], [b"SET", b"k1", b"v", b"KEEPTTL"],
    [b"FLUSHALL"], [b"FLUSHDB"], [b"MSET", b"k2", b"1", b"k1", b"2"],
    [b"PHALANX.EXPIRE", b"k1", b"1000500"],
])
def test_every_kind_of_change_aborts(kv: Driver, change: list[bytes]) -> None:
    kv(b"SET", b"k1", b"5", b"PX", b"500")
    watches = watch(kv, b"k1")
    if change[0] == b"PHALANX.EXPIRE":
        kv.now_ms += 600
    kv(*change)
    assert kv(EXEC_COMMAND, *exec_args([[b"SET", b"k1", b"mine"]], watches)) is None


def test_container_changes_abort(kv: Driver) -> None:
    kv(b"HSET", b"h", b"f", b"v")
    kv(b"SADD", b"s", b"m")
    kv(b"RPUSH", b"l", b"a", b"b")
    for change in ([b"HSET", b"h", b"g", b"w"], [b"HDEL", b"h", b"f"], [b"SREM", b"s", b"m"],
                   [b"SADD", b"s", b"n"], [b"LPOP", b"l"], [b"RPUSH", b"l", b"c"],
                   [b"HINCRBY", b"h", b"n", b"1"]):
        key = change[1]
        watches = watch(kv, key)
        kv(*change)
        assert kv(EXEC_COMMAND, *exec_args([], watches)) is None, change
        watches = watch(kv, key)
        assert kv(EXEC_COMMAND, *exec_args([[b"TYPE", key]], watches)) is not None


def test_flushall_touches_keys_that_existed_only(kv: Driver) -> None:
    kv(b"SET", b"k1", b"1")
    present, absent = watch(kv, b"k1"), watch(kv, b"k2")
    kv(b"FLUSHALL")
    assert kv(EXEC_COMMAND, *exec_args([], present)) is None
    assert kv(EXEC_COMMAND, *exec_args([], absent)) == []  # as Redis 7.0


def test_expiry_after_watch_aborts_and_before_watch_does_not(kv: Driver) -> None:
    kv(b"SET", b"k1", b"v", b"PX", b"100")
    watches = watch(kv, b"k1")
    assert watches[0].expired is False
    kv.now_ms += 200  # logically expired, not deleted yet
    assert kv(EXEC_COMMAND, *exec_args([[b"GET", b"k1"]], watches)) is None
    watches = watch(kv, b"k1")  # already expired when watched: no logical change since
    assert watches[0].expired is True
    assert kv(EXEC_COMMAND, *exec_args([[b"GET", b"k1"]], watches)) == [None]


def test_bad_entries_are_refused_whole(kv: Driver) -> None:
    assert kv(EXEC_COMMAND, b"garbage", b"k1") == Error(
        "ERR PHALANX.EXEC: transaction: unknown format")
    # A key the entry does not list (the shard checked only the listed ones).
    refused = kv(EXEC_COMMAND, *exec_args([[b"SET", b"k1", b"1"], [b"SET", b"k2", b"2"]],
                                          keys=[b"k1"]))
    assert isinstance(refused, Error) and "is not listed" in refused.message
    refused = kv(EXEC_COMMAND, *exec_args([], [Watch(b"k3", 0)], keys=[]))
    assert isinstance(refused, Error)
    inner = exec_args([[b"SET", b"k1", b"1"]])
    refused = kv(EXEC_COMMAND, *exec_args([[b"SET", b"k1", b"2"], [b"phalanx.exec", *inner]],
                                          keys=[b"k1", *inner[1:], inner[0]]))
    assert refused == Error("ERR PHALANX.EXEC cannot be nested")
    assert kv(b"GET", b"k1") is None and kv(b"GET", b"k2") is None
    assert isinstance(kv.read(EXEC_COMMAND, *exec_args([])), Error)  # never a local read


def test_a_retried_exec_is_answered_from_the_session(kv: Driver) -> None:
    args = exec_args([[b"INCR", b"k1"], [b"INCR", b"k1"]])
    assert kv(EXEC_COMMAND, *args, client=(7, 1)) == [1, 2]
    assert kv(EXEC_COMMAND, *args, client=(7, 1)) == [1, 2]
    assert kv(b"GET", b"k1") == b"2"


def test_versions_survive_snapshots_byte_for_byte(make_driver: Any) -> None:
    first = make_driver()
    first(b"SET", b"k1", b"1")
    first(b"SET", b"k2", b"1")
    watches = watch(first, b"k1", b"k2")
    first(b"SET", b"k2", b"2")
    blob = first.machine.snapshot()
    state = decode_snapshot(blob)
    assert state.watch is not None and state.watch.version == first.machine.applied_index
    second = make_driver(KVStateMachine())
    second.machine.restore(blob)
    assert second.machine.snapshot() == blob
    # The restored replica decides exactly as the original.
    for driver in (first, second):
        driver.index = driver.machine.applied_index
        assert driver(EXEC_COMMAND, *exec_args([], watches[:1])) == []
        assert driver(EXEC_COMMAND, *exec_args([], watches[1:])) is None
    assert first.machine.snapshot() == second.machine.snapshot()


def test_an_old_snapshot_loads_and_counts_every_key_changed(kv: Driver,
                                                           make_driver: Any) -> None:
    kv(b"SET", b"k1", b"1")
    watches = watch(kv, b"k1")
    kv(b"SET", b"k2", b"2")
    blob = kv.machine.snapshot()
    payload = marshal.loads(blob[10:])
    old_payload = marshal.dumps(payload[:5], 2)
    old = blob[:6] + struct.pack("<I", zlib.crc32(old_payload)) + old_payload
    restored = make_driver(KVStateMachine())
    restored.machine.restore(old)
    assert restored.machine.key_count == 2
    restored.index = restored.machine.applied_index
    assert restored(EXEC_COMMAND, *exec_args([], watches)) is None  # conservative
    fresh = watch(restored, b"k1")
    assert restored(EXEC_COMMAND, *exec_args([], fresh)) == []


@pytest.mark.parametrize("bad", [
    (5, 6, []), (5, 3, [b"k", 2]), (5, 3, [b"k", 6]), (5, 3, [b"k", 4, b"j", 3]),
    (5, 3, [b"k", 4, b"k", 4]), (5, 3, [b"k"]), (5, 3, ["k", 4]), (5, 3), "x",
])
def test_bad_watch_sections_are_corrupt(kv: Driver, bad: Any) -> None:
    blob = kv.machine.snapshot()
    payload = marshal.loads(blob[10:])
    forged = marshal.dumps((*payload[:5], bad), 2)
    with pytest.raises(Corrupt):
        decode_snapshot(blob[:6] + struct.pack("<I", zlib.crc32(forged)) + forged)


def test_a_split_keeps_the_clock_and_a_merge_moves_past_both(make_driver: Any) -> None:
    parent = make_driver()
    parent(b"SET", b"k1", b"1")
    parent(b"SET", b"s1", b"1")
    early = watch(parent, b"s1")
    parent(b"SET", b"k1", b"2")  # an entry after the early watch, before the split
    parent.index += 1
    parent.machine.apply(parent.index, b"")
    late = watch(parent, b"s1")  # at the split's state
    blob = parent.machine.extract(lambda key: key.startswith(b"s"), 1)
    child = make_driver(KVStateMachine())
    child.machine.restore(blob)
    child.index = 1
    # Watched before the split at an older state: abort (conservative); at the split's
    # state: proceed (nothing changed).
    assert child(EXEC_COMMAND, *exec_args([], early)) is None
    assert child(EXEC_COMMAND, *exec_args([[b"GET", b"s1"]], late)) == [b"1"]
    # Merge the child back: a version read on either shard before is older than the keys now.
    child_watch = watch(child, b"s1")
    parent_watch = watch(parent, b"k1")
    parent.machine.absorb(child.machine.snapshot())
    parent.index += 1
    assert parent(EXEC_COMMAND, *exec_args([], child_watch)) is None
    assert parent(EXEC_COMMAND, *exec_args([], parent_watch)) is None
    assert parent(EXEC_COMMAND, *exec_args([], watch(parent, b"s1", b"k1"))) == []


def test_the_version_table_is_bounded_and_never_reports_an_older_change(
        kv: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyspace_module, "WATCH_TABLE_SIZE", 8)
    rng = random.Random(3)
    last_change: dict[bytes, int] = {}
    for _ in range(400):
        key = b"k%d" % rng.randrange(30)
        kv(b"SET", key, b"v")
        last_change[key] = kv.machine._keyspace.version
        keyspace = kv.machine._keyspace
        assert len(keyspace.touched) <= 8
        for other, version in last_change.items():
            assert keyspace.version_of(other) >= version
        assert list(keyspace.touched.values()) == sorted(keyspace.touched.values())
    blob = kv.machine.snapshot()
    copy = KVStateMachine()
    copy.restore(blob)
    assert copy.snapshot() == blob


def _image(machine: KVStateMachine) -> dict[bytes, Any]:
    keyspace = machine._keyspace
    image: dict[bytes, Any] = {}
    for key, value in keyspace.data.items():
        copied = list(value) if isinstance(value, deque) else (
            set(value) if isinstance(value, set) else (
                dict(value) if isinstance(value, dict) else value))
        image[key] = (type(value).__name__, copied, keyspace.expires.get(key))
    return image


@pytest.mark.parametrize("seed", range(6))
def test_every_change_of_every_command_is_recorded(command_source: Any, make_driver: Any,
                                                  seed: int) -> None:
    """The invariant WATCH rests on, over random commands of every family: after an entry, each
    key whose value, type or expiry changed reports that entry's version."""
    rng = random.Random(seed)
    kv = make_driver()
    for _ in range(3000):
        kv.now_ms += rng.choice([0, 1, 5, 300])
        command = command_source(rng, False)
        before = _image(kv.machine)
        kv(*command)
        after = _image(kv.machine)
        keyspace = kv.machine._keyspace
        for key in before.keys() | after.keys():
            if before.get(key) != after.get(key):
                assert keyspace.version_of(key) == keyspace.version, (command, key)


@pytest.mark.parametrize("seed", range(4))
def test_replicas_agree_byte_for_byte_with_transactions_and_restores(
        command_source: Any, make_driver: Any, seed: int) -> None:
    """Two replicas apply the same log of commands and transactions (watched from a lagging
    read, so some abort); one restarts from the other's snapshot midway: same replies, same
    snapshot bytes."""
    rng = random.Random(seed)
    first, second = make_driver(), make_driver()
    log: list[list[bytes]] = []
    outcomes: Counter[str] = Counter()
    for step in range(1500):
        if rng.random() < 0.2:
            commands = [command_source(rng, False) for _ in range(rng.randint(0, 4))]
            keys = list(dict.fromkeys(rng.choice([b"k1", b"k2", b"h", b"s"])
                                      for _ in range(rng.randint(0, 2))))
            lag = rng.choice([0, 0, 1, 5])
            version = max(0, first.machine._keyspace.version - lag)
            watches = [Watch(key, version, rng.random() < 0.1) for key in keys]
            found = [word for command in commands for word in command[1:]]
            log.append([EXEC_COMMAND, *exec_args(commands, watches,
                                                 list(dict.fromkeys(keys + found)))])
        else:
            log.append(command_source(rng, False))
        first.now_ms = second.now_ms = 1_000_000 + step
        reply = first(*log[-1])
        assert reply == second(*log[-1]), log[-1]
        if log[-1][0] == EXEC_COMMAND:
            outcomes["aborted" if reply is None else type(reply).__name__] += 1
        if step == 700:
            restored = make_driver(KVStateMachine())
            restored.machine.restore(second.machine.snapshot())
            restored.index = second.index
            second = restored
    assert first.machine.snapshot() == second.machine.snapshot()
    assert outcomes["aborted"] > 10 and outcomes["list"] > 100, outcomes

"""Snapshots: deterministic bytes, exact round trips, and Corrupt on anything else."""

from __future__ import annotations

import marshal
import random
import struct
import zlib
from typing import Any

import pytest

from phalanx.errors import Corrupt
from phalanx.kv import Command, KVStateMachine, encode_command


def entries(source: Any, seed: int, count: int) -> list[bytes]:
    """A random log: commands with advancing time, some client sessions and retries."""
    rng = random.Random(seed)
    now = 1_000_000
    log: list[bytes] = []
    sequences: dict[int, int] = {}
    for _ in range(count):
        now += rng.choice([0, 0, 1, 3, 10])
        command = source(rng, False)
        session: tuple[int, int] | tuple[None, None] = (None, None)
        if rng.random() < 0.3:
            client = rng.randrange(5)
            if rng.random() < 0.8:
                sequences[client] = sequences.get(client, 0) + 1
            session = (client, sequences.get(client, 0))
        log.append(encode_command(Command(command[0], tuple(command[1:]), now, *session)))
        if rng.random() < 0.05:
            log.append(b"")  # a leader's no-op
    return log


def apply_all(machine: KVStateMachine, log: list[bytes], start: int) -> list[object]:
    return [machine.apply(start + offset + 1, data) for offset, data in enumerate(log)]


def expire_everything(machine: KVStateMachine, now: int) -> None:
    for key, when in machine.expired_keys(now, 1000):
        data = encode_command(Command(b"PHALANX.EXPIRE", (key, b"%d" % when), now))
        machine.apply(machine.applied_index + 1, data)


@pytest.mark.parametrize("seed", range(12))
def test_restore_then_continue_is_identical(command_source: Any, seed: int) -> None:
    log = entries(command_source, seed, 600)
    head, tail = log[:400], log[400:]
    original = KVStateMachine(max_sessions=3)
    apply_all(original, head, 0)
    expire_everything(original, 1_000_000 + 400)
    blob = original.snapshot()
    copy = KVStateMachine(max_sessions=3)
    copy.restore(blob)
    assert copy.snapshot() == blob
    assert copy.applied_index == original.applied_index
    assert copy.key_count == original.key_count
    start = original.applied_index
    assert apply_all(original, tail, start) == apply_all(copy, tail, start)
    assert original.snapshot() == copy.snapshot()
    for pattern in (b"*", b"k*"):
        assert original.read(b"KEYS", [pattern], 2_000_000) == copy.read(
            b"KEYS", [pattern], 2_000_000)


@pytest.mark.parametrize("seed", range(4))
def test_replicas_applying_the_same_log_write_the_same_bytes(
    command_source: Any, seed: int
) -> None:
    log = entries(command_source, seed, 500)
    first, second = KVStateMachine(), KVStateMachine()
    assert apply_all(first, log, 0) == apply_all(second, log, 0)
    assert first.snapshot() == second.snapshot()


def test_snapshot_round_trips_every_type_and_session() -> None:
    machine = KVStateMachine()
    log = [
        Command(b"SET", (b"s", b"v", b"PX", b"5000"), 10),
        Command(b"HSET", (b"h", b"b", b"1", b"a", b"2"), 11),
        Command(b"SADD", (b"set", b"z", b"a", b"m"), 12),
        Command(b"RPUSH", (b"l", b"1", b"2", b"3"), 13),
        Command(b"INCR", (b"s",), 14, 1, 1),
        Command(b"MGET", (b"s", b"h"), 15, 2, 9),
    ]
    for index, command in enumerate(log, 1):
        machine.apply(index, encode_command(command))
    copy = KVStateMachine()
    copy.restore(machine.snapshot())
    assert copy.read(b"HGETALL", [b"h"], 20) == [b"b", b"1", b"a", b"2"]
    assert copy.read(b"SMEMBERS", [b"set"], 20) == [b"a", b"m", b"z"]
    assert copy.read(b"LRANGE", [b"l", b"0", b"-1"], 20) == [b"1", b"2", b"3"]
    assert copy.read(b"PTTL", [b"s"], 20) == 4990
    assert copy.clock_ms == 15
    retry = encode_command(Command(b"INCR", (b"s",), 30, 1, 1))
    assert copy.apply(7, retry) == machine.apply(7, retry)
    assert copy.apply(8, encode_command(Command(b"MGET", (b"s", b"h"), 31, 2, 9))) == [
        b"v", None]


def valid_header(payload: bytes) -> bytes:
    return struct.pack("<4sBBI", b"PXKV", 1, 2, zlib.crc32(payload)) + payload


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"PXKV",
        b"XXXX" + bytes(6),
        struct.pack("<4sBBI", b"PXKV", 9, 2, 0),
        valid_header(b"\x00garbage"),
        valid_header(marshal.dumps([1, 2], 2)),
        valid_header(marshal.dumps((1, 0, [b"k"], [], []), 2)),  # odd data list
        valid_header(marshal.dumps((1, 0, [b"k", 5], [], []), 2)),  # bad value type
        valid_header(marshal.dumps((1, 0, [b"k", b"v", b"k", b"w"], [], []), 2)),  # repeat
        valid_header(marshal.dumps((1, 0, [b"k", {}], [], []), 2)),  # empty hash
        valid_header(marshal.dumps((1, 0, [b"k", (b"b", b"a")], [], []), 2)),  # unsorted set
        valid_header(marshal.dumps((1, 0, [b"k", [1]], [], []), 2)),  # bad list item
        valid_header(marshal.dumps((1, 0, [], [b"k", 5], []), 2)),  # expiry for no key
        valid_header(marshal.dumps((1, 0, [], [], [1, 1, {1}]), 2)),  # bad cached reply
        valid_header(marshal.dumps((-1, 0, [], [], []), 2)),
    ],
)
def test_garbage_snapshots_are_corrupt(blob: bytes) -> None:
    machine = KVStateMachine()
    machine.apply(1, encode_command(Command(b"SET", (b"keep", b"me"), 1)))
    before = machine.snapshot()
    with pytest.raises(Corrupt):
        machine.restore(blob)
    assert machine.snapshot() == before  # a failed restore changes nothing


def test_bit_flips_are_caught(command_source: Any) -> None:
    machine = KVStateMachine()
    apply_all(machine, entries(command_source, 99, 200), 0)
    blob = bytearray(machine.snapshot())
    rng = random.Random(1)
    for _ in range(200):
        position = rng.randrange(len(blob))
        damaged = bytearray(blob)
        damaged[position] ^= 1 << rng.randrange(8)
        with pytest.raises(Corrupt):
            KVStateMachine().restore(bytes(damaged))

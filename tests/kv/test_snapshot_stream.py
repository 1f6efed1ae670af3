"""Snapshot format 6 (kv/snapshot_stream.py): written frame by frame while entries keep being
applied, it holds exactly the state at the moment it started; read frame by frame, the state
changes only at the end; every frame is checked."""

from __future__ import annotations

import random

import pytest

from phalanx.errors import Corrupt
from phalanx.kv import Command, KVStateMachine, encode_command
from phalanx.kv.snapshot_stream import SnapshotReader, snapshot_version
from phalanx.placement.shard import ShardMachine


class _Driver:
    """Applies random writes of every type to a machine, with log indexes."""

    def __init__(self, machine: KVStateMachine, seed: int) -> None:
        self.machine = machine
        self.index = 0
        self.rng = random.Random(seed)

    def apply(self, *args: bytes) -> None:
        self.index += 1
        self.machine.apply(self.index, encode_command(
            Command(name=args[0], args=tuple(args[1:]), now_ms=1_000_000 + self.index)))

    def random_write(self, keys: int) -> None:
        rng = self.rng
        key = b"k%d" % rng.randrange(keys)
        member = b"m%d" % rng.randrange(8)
        choice = rng.randrange(14)
        kind = int(key[1:]) % 7  # one type per key, so most writes are not WRONGTYPE
        if choice == 0:
            self.apply(b"DEL", key)
        elif choice == 1:
            self.apply(b"PEXPIRE", key, b"%d" % rng.randrange(1, 10**9))
        elif choice == 2:
            self.apply(b"PERSIST", key)
        elif kind == 0:
            self.apply(b"SET", key, b"v%d" % rng.randrange(10**6))
        elif kind == 1:
            self.apply(b"APPEND", key, b"x")
        elif kind == 2:
            self.apply(b"HSET", key, member, b"%d" % rng.randrange(100))
        elif kind == 3:
            self.apply(rng.choice([b"RPUSH", b"LPUSH", b"LPOP"]), key, member)
        elif kind == 4:
            self.apply(rng.choice([b"SADD", b"SREM"]), key, member)
        elif kind == 5:
            self.apply(b"ZADD", key, b"%d" % rng.randrange(100), member)
        else:
            self.apply(b"XADD", key, b"*", member, b"v")


@pytest.mark.parametrize("seed", range(6))
def test_a_snapshot_written_while_writes_go_on_holds_the_state_at_its_start(seed: int) -> None:
    machine = KVStateMachine()
    driver = _Driver(machine, seed)
    for _ in range(3000):
        driver.random_write(400)
    expected = machine.snapshot()  # format 5, in one go, at the start
    frames = machine.snapshot_writer(frame_keys=7).frames()
    parts = [next(frames)]
    for part in frames:
        parts.append(part)
        for _ in range(driver.rng.randrange(12)):
            driver.random_write(500)
        if driver.rng.random() < 0.01:
            driver.apply(b"FLUSHALL")
    blob = b"".join(parts)
    assert snapshot_version(blob) == 6
    restored = KVStateMachine()
    restored.restore(blob)
    assert restored.snapshot() == expected
    # the writer let go of the keyspace: a new snapshot can start
    machine.snapshot_writer().close()


def test_replicas_with_the_same_state_write_the_same_bytes() -> None:
    blobs = []
    for _ in range(2):
        machine = KVStateMachine()
        driver = _Driver(machine, 99)
        for _ in range(2000):
            driver.random_write(300)
        blobs.append(b"".join(machine.snapshot_writer(frame_keys=16).frames()))
    assert blobs[0] == blobs[1]


def _big_machine(keys: int) -> ShardMachine:
    shard = ShardMachine()
    driver = _Driver(shard.kv, 1)
    for number in range(keys):
        driver.apply(b"SET", b"key:%d" % number, b"value:%d" % number)
    driver.apply(b"PEXPIRE", b"key:3", b"100000")
    return shard


def test_restore_steps_change_the_state_only_at_the_end() -> None:
    source = _big_machine(20_000)
    blob = b"".join(source.snapshot_frames(frame_keys=1000))
    target = ShardMachine()
    target.kv.apply(1, encode_command(Command(name=b"SET", args=(b"old", b"1"), now_ms=1)))
    steps = 0
    for _ in target.restore_steps(blob):
        steps += 1
        assert target.kv.key_count == 1  # still the old state
    assert steps >= 20
    assert target.kv.key_count == 20_000
    assert target.snapshot() == source.snapshot()


@pytest.mark.parametrize("position", [12, 40, 500, -3])
def test_a_damaged_frame_is_refused(position: int) -> None:
    blob = bytearray(b"".join(_big_machine(3000).kv.snapshot_writer(frame_keys=500).frames()))
    blob[position] ^= 0x40
    with pytest.raises(Corrupt):
        KVStateMachine().restore(bytes(blob))


def test_a_truncated_or_padded_snapshot_is_refused() -> None:
    blob = b"".join(_big_machine(3000).kv.snapshot_writer(frame_keys=500).frames())
    for bad in (blob[:-1], blob[: len(blob) // 2], blob + b"\0"):
        with pytest.raises(Corrupt):
            KVStateMachine().restore(bad)
    # a whole frame missing: the counts disagree
    reader = SnapshotReader(blob)
    cut = reader._offset  # after the meta frame
    reader.step()
    dropped = blob[:cut] + blob[reader._offset:]
    with pytest.raises(Corrupt, match="counted keys"):
        KVStateMachine().restore(dropped)


def test_only_one_snapshot_follows_a_keyspace_at_a_time() -> None:
    machine = _big_machine(10).kv
    writer = machine.snapshot_writer()
    with pytest.raises(RuntimeError):
        machine.snapshot_writer()
    writer.close()
    machine.snapshot_writer().close()

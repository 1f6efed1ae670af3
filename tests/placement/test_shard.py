"""The data shard's state machine: slot ownership checked at apply time, and splits."""

from __future__ import annotations

import pytest

from phalanx.errors import Corrupt
from phalanx.kv import Command, Error, encode_command
from phalanx.placement import SLOT_COUNT, key_slot
from phalanx.placement.shard import SPLIT_COMMAND, SPLIT_SNAPSHOT_INDEX, ShardMachine, split_command


class Log:
    """Feeds commands to a machine with increasing indexes."""

    def __init__(self, machine: ShardMachine) -> None:
        self.machine = machine
        self.index = 0

    def apply(self, name: bytes, *args: bytes) -> object:
        self.index += 1
        data = encode_command(Command(name=name, args=tuple(args), now_ms=1_000))
        return self.machine.apply(self.index, data)


def keys_with_slots(count: int) -> list[bytes]:
    return [b"key:%d" % i for i in range(count)]


def test_split_moves_exactly_the_keys_of_the_range_and_refuses_them_afterwards() -> None:
    machine = ShardMachine()
    log = Log(machine)
    keys = keys_with_slots(300)
    for key in keys:
        assert log.apply(b"SET", key, b"v" + key) == "OK"
    assert log.apply(SPLIT_COMMAND, *split_command(8192, SLOT_COUNT - 1, 2)) == "OK"
    moved = [k for k in keys if key_slot(k) >= 8192]
    kept = [k for k in keys if key_slot(k) < 8192]
    assert moved and kept
    assert machine.owned == ((0, 8191),)
    assert machine.key_count == len(kept)
    (split_off,) = machine.take_split_offs()
    assert (split_off.new_shard, split_off.first_slot, split_off.last_slot) == (2, 8192, 16383)
    assert split_off.index == log.index
    assert machine.take_split_offs() == []
    # The new shard starts from the split-off snapshot and owns only the moved range.
    child = ShardMachine(())
    child.restore(split_off.snapshot)
    assert child.owned == ((8192, 16383),)
    assert child.kv.applied_index == SPLIT_SNAPSHOT_INDEX
    assert child.key_count == len(moved)
    for key in moved:
        assert child.read(b"GET", (key,), 1_000) == b"v" + key
    # The old shard refuses (does not apply) commands for moved slots, reads too.
    reply = log.apply(b"SET", moved[0], b"late")
    assert isinstance(reply, Error) and reply.message.startswith("TRYAGAIN slot")
    assert "shard 2" in reply.message
    assert machine.key_count == len(kept)
    read = machine.read(b"GET", (moved[0],), 1_000)
    assert isinstance(read, Error) and read.message.startswith("TRYAGAIN slot")
    assert log.apply(b"SET", kept[0], b"new") == "OK"
    # The refused entry still advanced the applied index (log order is kept).
    assert machine.kv.applied_index == log.index


def test_replicas_applying_the_same_log_split_identically() -> None:
    images = []
    for _ in range(2):
        machine = ShardMachine()
        log = Log(machine)
        for key in keys_with_slots(100):
            log.apply(b"SET", key, key)
        log.apply(b"EXPIRE", b"key:3", b"1000")
        log.apply(SPLIT_COMMAND, *split_command(100, 9000, 7))
        (split_off,) = machine.take_split_offs()
        images.append((machine.snapshot(), split_off.snapshot))
    assert images[0] == images[1]


def test_snapshot_round_trip_keeps_ownership() -> None:
    machine = ShardMachine(((0, 99), (200, 299)))
    log = Log(machine)
    log.apply(SPLIT_COMMAND, *split_command(250, 299, 4))
    copy = ShardMachine()
    copy.restore(machine.snapshot())
    assert copy.owned == ((0, 99), (200, 249))
    assert copy.moved == {(250, 299): 4}
    with pytest.raises(Corrupt):
        copy.restore(b"not a shard snapshot")


@pytest.mark.parametrize("args", [
    (b"5", b"3", b"2"),          # inverted range
    (b"0", b"16384", b"2"),      # beyond the last slot
    (b"a", b"b", b"c"),          # not numbers
    (b"0", b"16383", b"2"),      # would keep nothing
])
def test_bad_split_is_refused_and_changes_nothing(args: tuple[bytes, ...]) -> None:
    machine = ShardMachine()
    log = Log(machine)
    log.apply(b"SET", b"k", b"v")
    reply = log.apply(SPLIT_COMMAND, *args)
    assert isinstance(reply, Error)
    assert machine.owned == ((0, SLOT_COUNT - 1),)
    assert machine.key_count == 1
    assert machine.take_split_offs() == []


def test_split_of_slots_not_owned_is_refused() -> None:
    machine = ShardMachine(((0, 99),))
    reply = Log(machine).apply(SPLIT_COMMAND, *split_command(50, 150, 3))
    assert isinstance(reply, Error) and "not all owned" in reply.message

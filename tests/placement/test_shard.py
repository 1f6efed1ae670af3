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


def test_merge_freeze_then_absorb_moves_every_key_and_slot() -> None:
    import json

    from phalanx.placement.shard import ABSORB_COMMAND, FREEZE_COMMAND

    left, right = ShardMachine(((0, 8191),)), ShardMachine(((8192, 16383),))
    left_log, right_log = Log(left), Log(right)
    keys = keys_with_slots(200)
    for key in keys:
        (left_log if key_slot(key) < 8192 else right_log).apply(b"SET", key, key)
    right_log.apply(b"EXPIRE", next(k for k in keys if key_slot(k) >= 8192), b"100")
    assert right_log.apply(FREEZE_COMMAND, b"1") == "OK"
    assert right_log.apply(FREEZE_COMMAND, b"1") == "OK"  # idempotent
    refused = right_log.apply(b"FLUSHDB")  # a frozen shard changes no more, keyless included
    assert isinstance(refused, Error) and refused.message.startswith("TRYAGAIN")
    ranges, image = right.frozen_image()
    assert ranges == ((8192, 16383),)
    payload = json.dumps([list(r) for r in ranges]).encode()
    assert left_log.apply(ABSORB_COMMAND, b"2", payload, image) == "OK"
    assert left_log.apply(ABSORB_COMMAND, b"2", payload, image) == "OK"  # applied once
    assert left.owned == ((0, 16383),)
    assert left.key_count == len(keys)
    for key in keys:
        assert left.read(b"GET", (key,), 1_000) == key
    assert left.absorbed == {2}
    copy = ShardMachine()
    copy.restore(left.snapshot())
    assert copy.absorbed == {2} and copy.owned == ((0, 16383),)
    frozen_copy = ShardMachine()
    frozen_copy.restore(right.snapshot())
    assert frozen_copy.frozen_into == 1 and frozen_copy.owned == ()
    # Absorbing slots already owned is refused.
    bad = left_log.apply(ABSORB_COMMAND, b"3", b"[[0, 10]]", image)
    assert isinstance(bad, Error) and "already owned" in bad.message


def test_sort_patterns_may_form_keys_the_shard_owns_checked_at_apply_time() -> None:
    """SORT BY/GET: any key this shard owns, whatever its slot; a key of another shard gets
    Redis Cluster's refusal and nothing is stored (kv/commands/sort.py)."""
    machine = ShardMachine()
    log = Log(machine)
    assert log.apply(b"RPUSH", b"list", b"1", b"2", b"3") == 3
    for element in (b"1", b"2", b"3"):
        assert log.apply(b"SET", b"weight_" + element, b"%d" % (10 - int(element))) == "OK"
        assert log.apply(b"SET", b"name_" + element, b"n" + element) == "OK"
    assert len({key_slot(b"weight_%d" % i) for i in (1, 2, 3)} | {key_slot(b"list")}) > 1
    assert log.apply(b"SORT", b"list", b"BY", b"weight_*", b"GET", b"name_*") == [
        b"n3", b"n2", b"n1"]
    # Split away the half of the slots holding one of the formed keys.
    foreign = next(i for i in (1, 2, 3) if (key_slot(b"name_%d" % i) >= 8192)
                   != (key_slot(b"list") >= 8192))
    first, last = (8192, SLOT_COUNT - 1) if key_slot(b"list") < 8192 else (0, 8191)
    assert log.apply(SPLIT_COMMAND, *split_command(first, last, 2)) == "OK"
    denied = "option of SORT denied in Cluster mode when keys formed by the pattern may be " \
             "in different slots."
    assert first <= key_slot(b"name_%d" % foreign) <= last
    assert log.apply(b"SORT", b"list", b"GET", b"name_*", b"STORE", b"list") == Error(
        f"ERR GET {denied}")
    assert log.apply(b"LRANGE", b"list", b"0", b"-1") == [b"1", b"2", b"3"]  # not stored
    assert machine.read(b"SORT_RO", (b"list", b"BY", b"{list}w*"), 1_000) == [
        b"1", b"2", b"3"]  # a pattern pinned to the key's slot always works

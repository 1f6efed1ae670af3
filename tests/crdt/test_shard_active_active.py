"""Active-active keys inside a shard's state machine (placement/shard.py): log entries,
client de-duplication, ownership, snapshots (whole and streamed), splits and merges."""

from __future__ import annotations

from phalanx.crdt.store import PullReply
from phalanx.kv.codec import Command, encode_command
from phalanx.placement.shard import AA_MERGE_COMMAND, AA_PULL_COMMAND, ShardMachine
from phalanx.placement.slots import key_slot


class Log:
    def __init__(self, machine: ShardMachine) -> None:
        self.machine = machine
        self.index = 0

    def apply(self, *words: bytes, client: tuple[int, int] | None = None) -> object:
        self.index += 1
        command = Command(name=words[0], args=tuple(words[1:]), now_ms=1_000 + self.index,
                          client_id=None if client is None else client[0],
                          sequence=None if client is None else client[1])
        return self.machine.apply(self.index, encode_command(command))


def _region(name: str) -> tuple[ShardMachine, Log]:
    machine = ShardMachine()
    machine.aa.region = name
    return machine, Log(machine)


def test_writes_reads_and_a_retried_entry_counted_once() -> None:
    machine, log = _region("eu")
    assert log.apply(b"PHALANX.AA", b"INCRBY", b"aa:c", b"5", client=(7, 1)) == 5
    # The same client request committed twice (a retry): the cached reply, no second count.
    assert log.apply(b"PHALANX.AA", b"INCRBY", b"aa:c", b"5", client=(7, 1)) == 5
    assert machine.read(b"PHALANX.AAR", (b"GET", b"aa:c"), 0) == b"5"
    assert machine.aa.next_seq == 1
    assert machine.kv.key_count == 0  # never in the plain keyspace


def test_merge_entry_joins_and_records_the_position_once() -> None:
    eu, eu_log = _region("eu")
    us, us_log = _region("us")
    eu_log.apply(b"PHALANX.AA", b"SADD", b"aa:s", b"x", b"y")
    reply = PullReply.decode(eu.read(AA_PULL_COMMAND, (b"1", b"0", b"100", b"", b""), 0))
    payload = reply.encode()[2]
    assert isinstance(payload, bytes)
    merge = (AA_MERGE_COMMAND, b"eu", b"1", str(reply.next_seq).encode(), b"0", payload)
    assert us_log.apply(*merge) == 1
    assert us_log.apply(*merge) == 1          # applied twice: no change
    assert us.read(b"PHALANX.AAR", (b"SMEMBERS", b"aa:s"), 0) == [b"x", b"y"]
    assert us.aa.positions == {("eu", 1): 1}
    assert us.aa.next_seq == 0                # merged deltas are not re-shipped
    assert "PHALANX.AA.MERGE" in str(us_log.apply(AA_MERGE_COMMAND, b"eu", b"1", b"x", b"0",
                                                  b"junk"))


def test_streamed_and_whole_snapshots_carry_the_store() -> None:
    machine, log = _region("eu")
    log.apply(b"PHALANX.AA", b"HSET", b"aa:h", b"f", b"v")
    log.apply(b"SET", b"plain", b"1")
    whole = machine.snapshot()
    streamed = b"".join(machine.snapshot_frames())
    for data in (whole, streamed):
        copy = ShardMachine()
        copy.restore(data)
        assert copy.aa.snapshot() == machine.aa.snapshot()
        assert copy.read(b"PHALANX.AAR", (b"HGET", b"aa:h", b"f"), 0) == b"v"
        assert copy.read(b"GET", (b"plain",), 0) == b"1"


def test_split_moves_active_active_keys_with_their_slots() -> None:
    machine, log = _region("eu")
    keys = [b"aa:%d" % n for n in range(40)]
    for key in keys:
        log.apply(b"PHALANX.AA", b"INCR", key)
    assert log.apply(b"PHALANX.SPLIT", b"8192", b"16383", b"2") == "OK"
    child = ShardMachine()
    child.restore(machine.take_split_offs()[0].snapshot)
    for key in keys:
        moved = key_slot(key) >= 8192
        owner, other = (child, machine) if moved else (machine, child)
        assert owner.read(b"PHALANX.AAR", (b"GET", key), 0) == b"1"
        assert "TRYAGAIN" in str(other.read(b"PHALANX.AAR", (b"GET", key), 0))
    # The child's outbox starts past 0: a region that never pulled it takes the full state.
    assert PullReply.decode(child.read(AA_PULL_COMMAND, (b"2", b"0", b"10", b"", b""), 0)).full


def test_a_full_state_comes_in_pages_and_the_position_is_the_first_pages_head() -> None:
    eu, eu_log = _region("eu")
    us, us_log = _region("us")
    eu.aa.outbox_max = 5   # a short outbox: a region that pulls late gets the full state
    for number in range(23):
        eu_log.apply(b"PHALANX.AA", b"SADD", b"aa:%d" % number, b"m")
    first = PullReply.decode(eu.read(AA_PULL_COMMAND, (b"1", b"0", b"10", b"", b""), 0))
    assert first.full and first.more and len(first.items) == 10 and first.next_seq == 23
    eu_log.apply(b"PHALANX.AA", b"SADD", b"aa:0", b"late")   # changed after its page
    reply, pages = first, 1
    while True:
        payload = reply.encode()[2]
        assert isinstance(payload, bytes)
        mode = b"2" if reply.more else b"1"
        us_log.apply(AA_MERGE_COMMAND, b"eu", b"1", str(first.next_seq).encode(), mode, payload)
        if not reply.more:
            break
        reply = PullReply.decode(eu.read(AA_PULL_COMMAND, (b"1", b"0", b"10", b"",
                                                           reply.cursor), 0))
        pages += 1
    assert pages == 3 and us.aa.positions == {("eu", 1): 23}
    # The change made during the pages comes as a delta from the first page's head.
    rest = PullReply.decode(eu.read(AA_PULL_COMMAND, (b"1", b"23", b"10", b"", b""), 0))
    assert not rest.full and [key for key, _ in rest.items] == [b"aa:0"]
    payload = rest.encode()[2]
    assert isinstance(payload, bytes)
    us_log.apply(AA_MERGE_COMMAND, b"eu", b"1", str(rest.next_seq).encode(), b"0", payload)
    for number in range(23):
        key = b"aa:%d" % number
        assert us.read(b"PHALANX.AAR", (b"SMEMBERS", key), 0) == \
            eu.read(b"PHALANX.AAR", (b"SMEMBERS", key), 0)
    assert us.read(b"PHALANX.AAR", (b"SMEMBERS", b"aa:0"), 0) == [b"late", b"m"]

"""Streams in the state machine: auto ids decided at apply time (monotonic across leaders whose
clocks disagree), delivery times on the replicated clock, snapshots, DUMP/RESTORE, routing
(key extraction) and the error replies for bad input. The reply-by-reply comparison with
redis-server is tests/kv/test_streams_differential.py."""

from __future__ import annotations

import time

import pytest

from phalanx.kv import Error, KVStateMachine
from phalanx.kv.snapshot import decode_snapshot, encode_snapshot
from phalanx.kv.stream import MAX_ID, Stream, format_id, make_id, parse_id
from phalanx.placement import command_keys

from .conftest import Driver


def _id(reply: object) -> tuple[int, int]:
    assert isinstance(reply, bytes), reply
    ms, seq = reply.split(b"-")
    return int(ms), int(seq)


def test_auto_ids_never_go_back_when_the_leaders_clock_does() -> None:
    """The log carries `*`; the id comes from max(replicated clock, last id + 1) at apply
    time, so a new leader whose clock is behind (or a restored replica) continues above every
    id already issued."""
    kv = Driver(now_ms=5_000)
    first = _id(kv("XADD", "s", "*", "f", "1"))
    assert first == (5_000, 0)
    kv.now_ms = 1_000  # a new leader whose wall clock is 4 s behind
    second = _id(kv("XADD", "s", "*", "f", "2"))
    assert second > first
    # an explicit id far in the future: `*` continues above it whatever the clock
    assert kv("XADD", "s", "9000000-7", "f", "3") == b"9000000-7"
    assert _id(kv("XADD", "s", "*", "f", "4")) == (9_000_000, 8)
    # a replica restored from a snapshot decides the same ids
    twin = KVStateMachine()
    twin.restore(kv.machine.snapshot())
    other = Driver(twin, now_ms=2_000)
    ours = kv("XADD", "s", "*", "f", "5")
    theirs = other("XADD", "s", "*", "f", "5")
    assert ours == theirs == b"9000000-9"


def test_auto_id_rolls_to_the_next_millisecond_and_exhausts() -> None:
    kv = Driver(now_ms=10)
    assert kv("XADD", "s", "10-18446744073709551615", "a", "b") == b"10-18446744073709551615"
    assert kv("XADD", "s", "*", "a", "b") == b"11-0"
    assert kv("XADD", "s", "11-*", "a", "b") == b"11-1"
    assert kv("XADD", "m", "18446744073709551615-18446744073709551615", "a", "b")
    reply = kv("XADD", "m", "*", "a", "b")
    assert isinstance(reply, Error) and "exhausted the last possible ID" in reply.message


def test_delivery_times_and_idle_are_replicated_time() -> None:
    kv = Driver(now_ms=1_000)
    kv("XADD", "q", "1-1", "job", "a")
    kv("XGROUP", "CREATE", "q", "g", "0")
    kv("XREADGROUP", "GROUP", "g", "alice", "STREAMS", "q", ">")
    kv.now_ms = 4_000
    rows = kv("XPENDING", "q", "g", "-", "+", "10")
    assert rows == [[b"1-1", b"alice", 3_000, 1]]
    # XCLAIM's min-idle uses the same clock: 3 s idle is not 5 s
    assert kv("XCLAIM", "q", "g", "bob", "5000", "1-1") == []
    assert kv("XCLAIM", "q", "g", "bob", "2000", "1-1") == [[b"1-1", [b"job", b"a"]]]
    assert kv("XPENDING", "q", "g", "-", "+", "10") == [[b"1-1", b"bob", 0, 2]]
    kv.now_ms = 9_000
    assert kv("XAUTOCLAIM", "q", "g", "carol", "4000", "0") == [
        b"0-0", [[b"1-1", [b"job", b"a"]]], []]
    # a leader whose clock is behind does not make the entry younger
    kv.now_ms = 100
    assert kv("XPENDING", "q", "g", "-", "+", "10") == [[b"1-1", b"carol", 0, 3]]


def test_maxlen_zero_and_claim_of_deleted_entry() -> None:
    kv = Driver()
    assert kv("XADD", "s", "MAXLEN", "0", "5-1", "a", "1") == b"5-1"
    assert kv("XLEN", "s") == 0
    assert kv("EXISTS", "s") == 1
    assert kv("TYPE", "s") == "stream"
    too_small = kv("XADD", "s", "MAXLEN", "0", "5-1", "a", "1")
    assert isinstance(too_small, Error) and "equal or smaller" in too_small.message
    kv("XADD", "q", "1-1", "a", "1")
    kv("XADD", "q", "2-1", "a", "2")
    kv("XGROUP", "CREATE", "q", "g", "0")
    kv("XREADGROUP", "GROUP", "g", "c1", "STREAMS", "q", ">")
    assert kv("XDEL", "q", "1-1") == 1
    assert kv("XCLAIM", "q", "g", "c2", "0", "1-1", "2-1", "JUSTID") == [b"2-1"]
    assert kv("XPENDING", "q", "g") == [1, b"2-1", b"2-1", [[b"c2", b"1"]]]
    kv("XDEL", "q", "2-1")
    assert kv("XAUTOCLAIM", "q", "g", "c3", "0", "0") == [b"0-0", [], [b"2-1"]]
    assert kv("XPENDING", "q", "g") == [0, None, None, None]


@pytest.mark.parametrize("command, message", [
    (("XADD", "s", "1-1", "a", "1"), None),
    (("XADD", "s", "1-0", "a", "1"), "equal or smaller than the target stream top item"),
    (("XADD", "s", "0-0", "a", "1"), "must be greater than 0-0"),
    (("XREADGROUP", "GROUP", "nope", "c", "STREAMS", "s", ">"),
     "NOGROUP No such key 's' or consumer group 'nope' in XREADGROUP with GROUP option"),
    (("XPENDING", "s", "nope"), "NOGROUP No such key 's' or consumer group 'nope'"),
    (("XINFO", "CONSUMERS", "s", "nope"),
     "NOGROUP No such consumer group 'nope' for key name 's'"),
    (("XADD", "l", "*", "a", "1"), "WRONGTYPE"),
    (("XRANGE", "s", "x", "+"), "Invalid stream ID"),
    (("XADD", "s", "MAXLEN", "1", "LIMIT", "5", "*", "a", "1"), "LIMIT cannot be used"),
])
def test_error_replies(command: tuple[str, ...], message: str | None) -> None:
    kv = Driver()
    if command[:3] != ("XADD", "s", "1-1"):
        kv("XADD", "s", "1-1", "a", "1")
    kv("LPUSH", "l", "x")
    reply = kv(*command)
    if message is None:
        assert not isinstance(reply, Error)
    else:
        assert isinstance(reply, Error) and message in reply.message, reply


def test_snapshot_keeps_groups_pels_and_counters() -> None:
    kv = Driver(now_ms=7_000)
    for number in range(1, 6):
        kv("XADD", "q", f"{number}-1", "n", str(number))
    kv("XGROUP", "CREATE", "q", "g", "0")
    kv("XGROUP", "CREATE", "q", "h", "$")
    kv("XREADGROUP", "GROUP", "g", "alice", "COUNT", "3", "STREAMS", "q", ">")
    kv("XGROUP", "CREATECONSUMER", "q", "g", "idle-one")
    kv("XDEL", "q", "2-1")
    kv("XACK", "q", "g", "1-1")
    snapshot = kv.machine.snapshot()
    assert snapshot == kv.machine.snapshot()  # deterministic bytes
    twin = KVStateMachine()
    twin.restore(snapshot)
    assert twin.snapshot() == snapshot
    other = Driver(twin, now_ms=7_000)
    for command in (("XINFO", "STREAM", "q", "FULL"), ("XINFO", "GROUPS", "q"),
                    ("XPENDING", "q", "g", "-", "+", "10"), ("XRANGE", "q", "-", "+")):
        assert other.read(*command) == kv.read(*command)
    assert other("XREADGROUP", "GROUP", "g", "bob", "STREAMS", "q", ">") == \
        kv("XREADGROUP", "GROUP", "g", "bob", "STREAMS", "q", ">")


def test_older_snapshot_formats_still_load() -> None:
    """A format 3 snapshot (no streams) written by the previous code still restores."""
    kv = Driver()
    kv("SET", "k", "v")
    kv("RPUSH", "l", "a")
    blob = kv.machine.snapshot()
    old = bytearray(blob)
    old[4] = 3  # the format byte: the payload of a stream-free state is unchanged
    state = decode_snapshot(bytes(old))
    assert state.data[b"k"] == b"v"


def test_corrupt_stream_in_snapshot_is_refused() -> None:
    stream = Stream()
    stream.append(make_id(2, 0), (b"a", b"b"))
    stream.append(make_id(3, 0), (b"a", b"b"))
    plain = list(stream.to_plain())
    plain[0] = [make_id(3, 0), make_id(2, 0)]  # out of order
    blob = encode_snapshot(1, 0, {b"s": stream}, {}, {})
    assert decode_snapshot(blob).data[b"s"].last_id == make_id(3, 0)  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        Stream.from_plain(tuple(plain))


def test_dump_restore_round_trip() -> None:
    kv = Driver()
    kv("XADD", "s", "1-1", "a", "1")
    kv("XGROUP", "CREATE", "s", "g", "0")
    kv("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">")
    payload = kv("DUMP", "s")
    assert isinstance(payload, bytes)
    assert kv("RESTORE", "t", "0", payload) == "OK"
    assert kv("XINFO", "STREAM", "t", "FULL") == kv("XINFO", "STREAM", "s", "FULL")
    assert kv("OBJECT", "ENCODING", "t") == "stream"


def test_keys_of_stream_commands_route_by_their_streams() -> None:
    assert command_keys(b"XREAD", (b"COUNT", b"1", b"STREAMS", b"a", b"b", b"0", b"0")) == [
        b"a", b"b"]
    assert command_keys(b"XREADGROUP", (b"GROUP", b"g", b"c", b"BLOCK", b"0", b"STREAMS",
                                        b"{x}1", b">")) == [b"{x}1"]
    assert command_keys(b"XGROUP", (b"CREATE", b"q", b"g", b"$")) == [b"q"]
    assert command_keys(b"XINFO", (b"STREAM", b"q")) == [b"q"]
    assert command_keys(b"XAUTOCLAIM", (b"q", b"g", b"c", b"0", b"0")) == [b"q"]


def test_id_parsing() -> None:
    assert parse_id(b"-") == (0, True)
    assert parse_id(b"+") == (MAX_ID, True)
    assert parse_id(b"+", strict=True) is None
    assert parse_id(b"5", missing_seq=9) == (make_id(5, 9), True)
    assert parse_id(b"5-*", allow_star_seq=True) == (make_id(5, 0), False)
    assert parse_id(b"5-*") is None
    assert parse_id(b"18446744073709551616") is None
    assert parse_id(b"1-2-3") is None
    assert format_id(make_id(12, 34)) == b"12-34"


def test_a_million_entries_snapshot_and_restore() -> None:
    """A 1,000,000-entry stream with a consumer group goes through a snapshot and back
    (entries marshal as two flat lists; `-s` prints the times, reported in the docs)."""
    count = 1_000_000
    ids = [make_id(number, 0) for number in range(1, count + 1)]
    fields = [(b"f", b"%d" % number) for number in range(1, count + 1)]
    stream = Stream.from_plain((ids, fields, ids[-1], 0, count, [
        (b"g", ids[10], 11, [ids[5], b"c", 1, 1], [b"c", 1])]))
    machine = KVStateMachine()
    kv = Driver(machine)
    kv("XADD", "big", "1-1", "f", "v")  # the key exists as a stream ...
    machine._keyspace.data[b"big"] = stream  # ... now bulk-loaded (1M XADDs take long)
    started, cpu = time.perf_counter(), time.process_time()
    blob = machine.snapshot()
    taken, taken_cpu = time.perf_counter() - started, time.process_time() - cpu
    twin = KVStateMachine()
    started, cpu = time.perf_counter(), time.process_time()
    twin.restore(blob)
    restored_in, restored_cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"\n1M-entry stream: snapshot {taken:.2f} s wall / {taken_cpu:.2f} s CPU, "
          f"{len(blob)} bytes; restore {restored_in:.2f} s wall / {restored_cpu:.2f} s CPU")
    other = Driver(twin)
    assert other("XLEN", "big") == count
    assert other("XRANGE", "big", "777777", "777777") == [[b"777777-0", [b"f", b"777777"]]]
    assert other("XPENDING", "big", "g") == [1, b"6-0", b"6-0", [[b"c", b"1"]]]
    assert other("XADD", "big", "*", "f", "next") == kv("XADD", "big", "*", "f", "next")


def test_xread_plus_reads_the_last_entry() -> None:
    """XREAD's `+` (Redis 7.4): the last entry of each stream, nothing for an empty one."""
    kv = Driver()
    kv("XADD", "s", "1-1", "a", "1")
    kv("XADD", "s", "2-1", "b", "2")
    kv("XADD", "e", "MAXLEN", "0", "1-1", "a", "1")
    assert kv.read("XREAD", "STREAMS", "s", "+") == [[b"s", [[b"2-1", [b"b", b"2"]]]]]
    assert kv.read("XREAD", "COUNT", "5", "STREAMS", "s", "e", "+", "+") == [
        [b"s", [[b"2-1", [b"b", b"2"]]]]]
    assert kv.read("XREAD", "STREAMS", "e", "nosuch", "+", "+") is None
    kv("XGROUP", "CREATE", "s", "g", "0")
    reply = kv("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", "+")
    assert isinstance(reply, Error) and "Invalid stream ID" in reply.message


def test_restore_of_a_forged_stream_payload_never_breaks_the_machine() -> None:
    """A client may send any RESTORE payload with a valid checksum: every mutation of a
    stream's DUMP either restores a readable stream or gets "Bad data format"."""
    import random
    import struct
    import zlib

    kv = Driver()
    kv("XADD", "s", "1-1", "a", "1", "b", "22")
    kv("XADD", "s", "2-1", "c", "3")
    kv("XGROUP", "CREATE", "s", "g", "0")
    kv("XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", "s", ">")
    kv("XDEL", "s", "2-1")
    payload = kv("DUMP", "s")
    assert isinstance(payload, bytes)
    body = payload[:-8]
    rng = random.Random(17)
    restored = 0
    for attempt in range(400):
        forged = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            forged[rng.randrange(1, len(forged))] = rng.randrange(256)
        if rng.random() < 0.2:
            forged = forged[:rng.randrange(1, len(forged))]
        sealed = bytes(forged) + payload[-8:-4]
        sealed += struct.pack("<I", zlib.crc32(sealed))
        reply = kv("RESTORE", f"k{attempt}", "0", sealed)
        if reply == "OK":
            restored += 1
            for command in (("XRANGE", f"k{attempt}", "-", "+"),
                            ("XINFO", "STREAM", f"k{attempt}", "FULL"),
                            ("XPENDING", f"k{attempt}", "g", "-", "+", "10")):
                kv(*command)  # must answer, whatever it answers
        else:
            assert reply == Error("ERR Bad data format"), reply
    assert restored < 400

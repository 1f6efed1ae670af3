"""Client sessions in the state machine (Raft dissertation §6.3): a request identified by
(client id, sequence) runs at most once, with many requests of one client in flight, applied
in any order; replies below the client's first unacknowledged sequence are discarded;
sessions expire on the replicated clock and travel in snapshots (old formats still load)."""

from __future__ import annotations

import marshal
import struct
import zlib

import pytest

from phalanx.errors import Corrupt
from phalanx.kv import Command, KVStateMachine, encode_command
from phalanx.kv.codec import decode_command
from phalanx.kv.machine import SESSION_EXPIRY_MS
from phalanx.kv.replies import Error
from phalanx.kv.snapshot import decode_snapshot


class Log:
    """Applies commands to one machine, one log entry each."""

    def __init__(self, machine: KVStateMachine | None = None, now_ms: int = 1_000_000) -> None:
        self.machine = machine or KVStateMachine()
        self.now_ms = now_ms
        self.index = self.machine.applied_index

    def __call__(self, *parts: bytes | str, client: int | None = None, seq: int | None = None,
                 first: int | None = None) -> object:
        name, *args = (p.encode() if isinstance(p, str) else p for p in parts)
        self.index += 1
        return self.machine.apply(self.index, encode_command(
            Command(name, tuple(args), self.now_ms, client, seq, first)))


def test_codec_carries_the_first_unacknowledged_sequence() -> None:
    command = Command(b"INCR", (b"n",), 5, 7, 12, 9)
    assert decode_command(encode_command(command)) == command
    legacy = Command(b"INCR", (b"n",), 5, 7, 12)
    assert decode_command(encode_command(legacy)).first_unacked is None
    data = bytearray(encode_command(command))
    data[18 + 8 : 18 + 16] = struct.pack("<Q", 13)  # first_unacked after the sequence
    with pytest.raises(Corrupt):
        decode_command(bytes(data))


def test_the_same_request_twice_is_applied_once() -> None:
    log = Log()
    assert log("INCR", "n", client=1, seq=1, first=1) == 1
    assert log("INCR", "n", client=1, seq=1, first=1) == 1  # a retry: the cached reply
    assert log.machine.read(b"GET", [b"n"], 0) == b"1"


def test_requests_in_flight_applied_out_of_order_each_run_once() -> None:
    """Five requests in flight (first unacknowledged: 1); the log holds them out of order
    and each twice (a forwarding node re-sent them to a new leader)."""
    log = Log()
    order = [3, 1, 5, 3, 2, 1, 4, 5, 2, 4]
    replies: dict[int, object] = {}
    for seq in order:
        reply = log("INCR", "n", client=1, seq=seq, first=1)
        assert replies.setdefault(seq, reply) == reply  # a duplicate gets the first reply
    assert sorted(replies.values()) == [1, 2, 3, 4, 5]
    assert replies[3] == 1 and replies[1] == 2  # applied in log order, not sequence order
    assert log.machine.read(b"GET", [b"n"], 0) == b"5"


def test_acknowledged_replies_are_discarded() -> None:
    log = Log()
    for seq in (1, 2, 3):
        log("INCR", "n", client=1, seq=seq, first=1)
    # The client got replies 1 and 2: its next request says so.
    assert log("INCR", "n", client=1, seq=4, first=3) == 4
    assert log("INCR", "n", client=1, seq=3, first=3) == 3  # still cached
    stale = log("INCR", "n", client=1, seq=2, first=1)  # a late copy of request 2
    assert isinstance(stale, Error) and "acknowledged" in stale.message
    assert log.machine.read(b"GET", [b"n"], 0) == b"4"
    snapshot = decode_snapshot(log.machine.snapshot())
    assert sorted(snapshot.sessions[1].replies) == [3, 4]


def test_sessions_are_separate() -> None:
    log = Log()
    assert log("INCR", "n", client=1, seq=1, first=1) == 1
    assert log("INCR", "n", client=2, seq=1, first=1) == 2
    assert log("INCR", "n", client=1, seq=1, first=1) == 1


def test_sessions_expire_on_the_replicated_clock() -> None:
    log = Log()
    assert log("INCR", "n", client=1, seq=1, first=1) == 1
    log.now_ms += SESSION_EXPIRY_MS // 2
    assert log("INCR", "n", client=2, seq=1, first=1) == 2
    log.now_ms += SESSION_EXPIRY_MS // 2  # client 1 unused for the whole expiry: gone
    assert log("INCR", "m", client=3, seq=1, first=1) == 1
    assert sorted(decode_snapshot(log.machine.snapshot()).sessions) == [2, 3]
    assert log("INCR", "n", client=2, seq=1, first=1) == 2  # client 2 still cached
    # A replica applying the same log decides the same (it is only the log's clock).
    replica = Log(now_ms=1_000_000)
    replica("INCR", "n", client=1, seq=1, first=1)
    replica.now_ms += SESSION_EXPIRY_MS // 2
    replica("INCR", "n", client=2, seq=1, first=1)
    replica.now_ms += SESSION_EXPIRY_MS // 2
    replica("INCR", "m", client=3, seq=1, first=1)
    replica("INCR", "n", client=2, seq=1, first=1)
    assert replica.machine.snapshot() == log.machine.snapshot()


def test_sessions_survive_a_snapshot() -> None:
    log = Log()
    log("INCR", "n", client=1, seq=1, first=1)
    log("INCR", "n", client=1, seq=2, first=1)
    log("SET", "s", "x")
    log("INCR", "s", client=2, seq=7, first=7)  # an error reply is cached too
    machine = KVStateMachine()
    machine.restore(log.machine.snapshot())
    copy = Log(machine)
    assert copy.machine.snapshot() == log.machine.snapshot()
    assert copy("INCR", "n", client=1, seq=1, first=1) == 1
    assert copy("INCR", "n", client=1, seq=2, first=1) == 2
    assert isinstance(copy("INCR", "s", client=2, seq=7, first=7), Error)
    assert copy.machine.read(b"GET", [b"n"], 0) == b"2"


def test_a_format_4_snapshot_with_old_sessions_still_loads() -> None:
    """Before format 5 a session was (client id, sequence, reply): it loads as a session
    whose first unacknowledged request is that sequence."""
    state = (12, 5000, [b"n", b"3"], [], [7, 4, 3, 8, 1, ("ERR x",)], None, [])
    payload = marshal.dumps(state, 2)
    blob = struct.pack("<4sBBI", b"PXKV", 4, 2, zlib.crc32(payload)) + payload
    machine = KVStateMachine()
    machine.restore(blob)
    log = Log(machine, now_ms=6000)
    assert log("INCR", "n", client=7, seq=4) == 3  # the cached reply
    assert log("INCR", "n", client=8, seq=1) == Error("ERR x")
    assert isinstance(log("INCR", "n", client=7, seq=3), Error)
    assert log("INCR", "n", client=7, seq=5) == 4
    restored = decode_snapshot(machine.snapshot())
    assert restored.sessions[7].first_unacked == 5


@pytest.mark.parametrize("sessions", [
    [1, 5, 10, [4, b"x"]],          # a reply below the first unacknowledged sequence
    [1, 1, 10, [2, b"x", 2, b"y"]],  # the same sequence twice
    [1, 1, 10, [], 2, 1, 9, []],     # not in order of last use
    [1, 1, 10, [2]],                 # odd reply list
    [1, 1, 10],                      # truncated
])
def test_bad_format_5_sessions_are_corrupt(sessions: list[object]) -> None:
    payload = marshal.dumps((1, 10, [], [], sessions, None, []), 2)
    blob = struct.pack("<4sBBI", b"PXKV", 5, 2, zlib.crc32(payload)) + payload
    with pytest.raises(Corrupt):
        decode_snapshot(blob)

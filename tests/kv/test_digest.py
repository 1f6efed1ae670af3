"""The state digest of the consistency checker (kv/digest.py): equal data gives equal digests
whatever the history and the process (hash seed); any change of a key, a value or an expiry
changes it."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.kv import Command, KVStateMachine, encode_command

_COMMANDS = [
    (b"SET", b"s", b"1"), (b"HSET", b"h", b"a", b"1", b"b", b"2"), (b"SADD", b"set", b"x", b"y", b"z"),
    (b"RPUSH", b"l", b"1", b"2", b"3"), (b"ZADD", b"z", b"1", b"m", b"2", b"n"),
    (b"XADD", b"st", b"1-1", b"f", b"v"), (b"PEXPIREAT", b"s", b"99999999999"),
]


def machine(commands: list[tuple[bytes, ...]]) -> KVStateMachine:
    kv = KVStateMachine()
    for index, (name, *args) in enumerate(commands, start=1):
        kv.apply(index, encode_command(Command(name=name, args=tuple(args), now_ms=1_000)))
    return kv


def test_same_data_in_another_order_of_history_gives_the_same_digest() -> None:
    a = machine(_COMMANDS)
    b = machine([*reversed(_COMMANDS[:-1]), _COMMANDS[-1],
        (b"SREM", b"set", b"y"), (b"SADD", b"set", b"y"),
        (b"HDEL", b"h", b"a"), (b"HSET", b"h", b"a", b"1")])
    assert a.digest() == b.digest()
    restored = KVStateMachine()
    restored.restore(a.snapshot())
    assert restored.digest() == a.digest()


def test_any_change_changes_the_digest() -> None:
    base = machine(_COMMANDS).digest()
    for extra in [(b"SET", b"s", b"2"), (b"HSET", b"h", b"b", b"3"), (b"SADD", b"set", b"w"),
                  (b"LPUSH", b"l", b"0"), (b"ZADD", b"z", b"3", b"m"), (b"PERSIST", b"s"),
                  (b"SET", b"new", b""), (b"DEL", b"l"), (b"XADD", b"st", b"2-1", b"f", b"v")]:
        assert machine([*_COMMANDS, extra]).digest() != base, extra
    assert len(KVStateMachine().digest()) == 32


def test_the_digest_does_not_depend_on_the_process_hash_seed() -> None:
    """Bytes hashing is randomised per process: two processes with different seeds, whose
    sets therefore iterate in different orders, must agree (replicas are processes)."""
    code = ("from phalanx.kv import Command, KVStateMachine, encode_command\n"
            "kv = KVStateMachine()\n"
            "members = tuple(b'm%d' % i for i in range(200))\n"
            "kv.apply(1, encode_command(Command(b'SADD', (b'big', *members), 1000)))\n"
            "kv.apply(2, encode_command(Command(b'HSET', (b'h', *members), 1000)))\n"
            "print(kv.digest())\n")
    digests = set()
    for seed in ("1", "2", "3"):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env={**os.environ, "PYTHONHASHSEED": seed}, timeout=60,
                                check=True)
        digests.add(result.stdout.strip())
    assert len(digests) == 1, digests


def test_cost_per_key_is_printed() -> None:
    """Not a timed assertion: prints the digest's cost per key for docs/disk-faults.md."""
    kv = machine([(b"SET", b"k%d" % i, b"v" * 32) for i in range(20_000)])
    started = time.perf_counter()
    digest = kv.digest()
    elapsed = time.perf_counter() - started
    assert len(digest) == 32
    print(f"digest of 20,000 32-byte strings: {elapsed * 1e3:.1f} ms, "
          f"{elapsed / 20_000 * 1e6:.2f} us per key")


# -- the sliced digest (DigestBuilder): the state at its start, while commands keep changing it

_KEYS = [b"k%d" % i for i in range(6)]
_key = st.sampled_from(_KEYS)
_member = st.sampled_from([b"a", b"b", b"c"])
_value = st.sampled_from([b"", b"1", b"xyz", b"7" * 40])
_mutation = st.one_of(
    st.tuples(st.just(b"SET"), _key, _value),
    st.tuples(st.just(b"APPEND"), _key, _value),
    st.tuples(st.just(b"INCR"), _key),
    st.tuples(st.just(b"SETRANGE"), _key, st.just(b"2"), _value),
    st.tuples(st.just(b"DEL"), _key),
    st.tuples(st.just(b"UNLINK"), _key, _key),
    st.tuples(st.just(b"HSET"), _key, _member, _value),
    st.tuples(st.just(b"HDEL"), _key, _member),
    st.tuples(st.just(b"HINCRBY"), _key, _member, st.just(b"3")),
    st.tuples(st.just(b"SADD"), _key, _member),
    st.tuples(st.just(b"SREM"), _key, _member),
    st.tuples(st.just(b"SMOVE"), _key, _key, _member),
    st.tuples(st.just(b"RPUSH"), _key, _value),
    st.tuples(st.just(b"LPUSH"), _key, _value),
    st.tuples(st.just(b"LPOP"), _key),
    st.tuples(st.just(b"LSET"), _key, st.just(b"0"), _value),
    st.tuples(st.just(b"LMOVE"), _key, _key, st.just(b"LEFT"), st.just(b"RIGHT")),
    st.tuples(st.just(b"ZADD"), _key, st.sampled_from([b"1", b"2.5", b"-3"]), _member),
    st.tuples(st.just(b"ZINCRBY"), _key, st.just(b"2"), _member),
    st.tuples(st.just(b"ZREM"), _key, _member),
    st.tuples(st.just(b"XADD"), _key, st.just(b"*"), _member, _value),
    st.tuples(st.just(b"PEXPIRE"), _key, st.sampled_from([b"1", b"5", b"100000"])),
    st.tuples(st.just(b"PERSIST"), _key),
    st.tuples(st.just(b"RENAME"), _key, _key),
    st.tuples(st.just(b"COPY"), _key, _key, st.just(b"REPLACE")),
    st.tuples(st.just(b"SUNIONSTORE"), _key, _key, _key),
    st.tuples(st.just(b"GETDEL"), _key),
    st.tuples(st.just(b"FLUSHALL")),
    st.tuples(st.just(b"FLUSHDB")),
)


class _Clocked:
    """A KV machine fed commands one log index and a few ms at a time (keys expire)."""

    def __init__(self) -> None:
        self.kv = KVStateMachine()
        self.index = 0
        self.now = 1_000

    def run(self, command: tuple[bytes, ...]) -> None:
        self.index += 1
        self.now += 2
        name, *args = command
        self.kv.apply(self.index, encode_command(Command(name=name, args=tuple(args),
                                                          now_ms=self.now)))


@settings(max_examples=150, deadline=None)
@given(before=st.lists(_mutation, max_size=40), during=st.lists(_mutation, max_size=60),
       filler=st.integers(min_value=0, max_value=40), run_keys=st.integers(1, 8),
       budget=st.integers(1, 5), with_snapshot=st.booleans())
def test_the_sliced_digest_is_the_state_at_its_start_whatever_changes_meanwhile(
        before: list[tuple[bytes, ...]], during: list[tuple[bytes, ...]], filler: int,
        run_keys: int, budget: int, with_snapshot: bool) -> None:
    machine = _Clocked()
    for number in range(filler):
        machine.run((b"SET", b"f%d" % number, b"%d" % number))
    for command in before:
        machine.run(command)
    from_scratch = machine.kv.digest()
    builder = machine.kv.digest_builder(run_keys=run_keys)
    # A snapshot being written at the same time follows the same keyspace (one hook, both).
    writer = machine.kv.snapshot_writer(frame_keys=3) if with_snapshot else None
    frames = writer.frames() if writer is not None else None
    written: list[bytes] = []
    for command in during:
        builder.step(budget)
        machine.run(command)
        if frames is not None:
            written.extend(itertools.islice(frames, 1))
    while not builder.step(budget):
        pass
    assert builder.result == from_scratch
    assert builder.closed
    if writer is not None:
        assert frames is not None
        restored = KVStateMachine()
        restored.restore(b"".join([*written, *frames]))
        assert restored.digest() == from_scratch
        assert writer.closed
    assert machine.kv._keyspace.before_change is None  # nothing left following the keyspace
    # And from scratch again now: the live state's digest (it may differ: it changed).
    later = machine.kv.digest_builder(run_keys=run_keys)
    while not later.step(budget):
        pass
    assert later.result == machine.kv.digest()


def test_a_digest_builder_given_up_leaves_the_keyspace_alone() -> None:
    kv = machine([(b"SET", b"k%d" % i, b"v") for i in range(50)])
    builder = kv.digest_builder(run_keys=10)
    assert not builder.step(5)
    with pytest.raises(RuntimeError):
        kv.digest_builder()  # one digest at a time per keyspace
    snapshot = kv.snapshot_writer()  # but a snapshot alongside is fine
    builder.close()
    assert kv._keyspace.before_change is not None  # the snapshot still follows it
    snapshot.close()
    assert kv._keyspace.before_change is None
    with pytest.raises(RuntimeError):
        builder.step(5)
    kv.digest_builder().close()

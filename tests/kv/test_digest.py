"""The state digest of the consistency checker (kv/digest.py): equal data gives equal digests
whatever the history and the process (hash seed); any change of a key, a value or an expiry
changes it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

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

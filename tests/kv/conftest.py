"""Shared fixtures of the kv tests: drive a KVStateMachine through the real codec, one log entry per command."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from phalanx.kv import Command, KVStateMachine, Reply, encode_command


def b(value: object) -> bytes:
    """Arguments as bytes (str and int accepted for brevity)."""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


class Driver:
    """Applies commands to a state machine at a controllable replicated time."""

    def __init__(self, machine: KVStateMachine | None = None, now_ms: int = 1_000_000) -> None:
        self.machine = machine if machine is not None else KVStateMachine()
        self.now_ms = now_ms
        self.index = self.machine.applied_index

    def __call__(self, *parts: object, client: tuple[int, int] | None = None) -> Reply:
        name, *args = (b(part) for part in parts)
        command = Command(
            name, tuple(args), self.now_ms,
            client[0] if client else None, client[1] if client else None,
        )
        self.index += 1
        return self.machine.apply(self.index, encode_command(command))

    def read(self, *parts: object) -> Reply:
        name, *args = (b(part) for part in parts)
        return self.machine.read(name, args, self.now_ms)


@pytest.fixture
def kv() -> Driver:
    """A fresh state machine behind a driver."""
    return Driver()


@pytest.fixture
def make_driver() -> type[Driver]:
    """The driver class, for tests that need several machines or options."""
    return Driver


KEYS = [b"k1", b"k2", b"k3", b"h", b"s", b"l", b"n", b"f", b""]
VALUES = [b"v", b"", b"1", b"-5", b"0", b"10.5", b"0.1", b"abc", b"9223372036854775807",
          b"-9223372036854775808", b"3.0e3", b"inf", b"x" * 40]
OPTIONS = [b"NX", b"XX", b"GET", b"KEEPTTL", b"EX", b"PX", b"EXAT", b"PXAT", b"BOGUS"]
PATTERNS = [b"*", b"k*", b"k?", b"[hs]", b"[^k]*", b"*1*", b"\\k1", b"[a-l]"]


def random_command(rng: random.Random, *, realtime: bool) -> list[bytes]:
    """One random command over a tiny keyspace, often ill-typed or malformed.

    `realtime` restricts to commands whose replies do not depend on when they run against a
    real server (long TTLs only, no IFEQ which Redis 7 lacks, no order-dependent replies).
    """
    key = rng.choice(KEYS)
    value = rng.choice(VALUES)
    number = rng.choice([b"1", b"-1", b"0", b"7", b"x", b"1.5", b"9223372036854775807",
                         b"-9223372036854775808", b"100"])
    ttl = rng.choice([b"1000", b"5000"]) if realtime else rng.choice([b"1", b"5", b"20", b"0"])
    choice = rng.randrange(40)
    if choice < 6:
        options: list[bytes] = []
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            option = rng.choice(OPTIONS)
            options.append(option)
            if option in (b"EX", b"PX") and rng.random() < 0.9:
                options.append(ttl)
            elif option in (b"EXAT", b"PXAT") and rng.random() < 0.9:
                options.append(rng.choice([b"1", b"99999999999"]))
        if not realtime and rng.random() < 0.2:
            options += [b"IFEQ", rng.choice(VALUES)]
        return [b"SET", key, value, *options]
    simple: list[list[bytes]] = [
        [b"GET", key], [b"SETNX", key, value], [b"GETSET", key, value], [b"GETDEL", key],
        [b"MGET", key, rng.choice(KEYS)], [b"MSET", key, value, rng.choice(KEYS), value],
        [b"APPEND", key, value], [b"STRLEN", key], [b"INCR", key], [b"DECR", key],
        [b"INCRBY", key, number], [b"DECRBY", key, number],
        [b"INCRBYFLOAT", key, rng.choice([b"0.1", b"-2.5", b"1e3", b"x", b"3"])],
        [b"DEL", key, rng.choice(KEYS)], [b"UNLINK", key], [b"EXISTS", key, key],
        [b"TYPE", key], [b"EXPIRE", key, rng.choice([ttl, b"-1", b"x"])],
        [b"PEXPIRE", key, ttl + b"000"], [b"EXPIREAT", key, b"1"],
        [b"EXPIRE", key, ttl, rng.choice([b"NX", b"XX", b"GT", b"LT"])],
        [b"PERSIST", key], [b"TTL", key], [b"PTTL", key], [b"KEYS", rng.choice(PATTERNS)],
        [b"DBSIZE"], [b"HSET", key, value, value], [b"HSET", key, b"f2", number],
        [b"HGET", key, value], [b"HDEL", key, value], [b"HGETALL", key],
        [b"HEXISTS", key, value], [b"HLEN", key], [b"HINCRBY", key, b"f2", number],
        [b"SADD", key, value, rng.choice(VALUES)], [b"SREM", key, value],
        [b"SMEMBERS", key], [b"SISMEMBER", key, value], [b"SCARD", key],
        [b"LPUSH", key, value, rng.choice(VALUES)], [b"RPUSH", key, value],
        [b"LPOP", key], [b"RPOP", key], [b"LPOP", key, rng.choice([b"0", b"2", b"-1"])],
        [b"RPOP", key, b"3"], [b"LRANGE", key, rng.choice([b"0", b"-2", b"1"]),
                               rng.choice([b"-1", b"0", b"5"])],
        [b"LLEN", key],
    ]
    if rng.random() < 0.01:
        return [b"FLUSHDB"]
    return rng.choice(simple)


@pytest.fixture
def command_source() -> Callable[[random.Random, bool], list[bytes]]:
    """`random_command` as a fixture: (rng, realtime) -> command."""
    return lambda rng, realtime: random_command(rng, realtime=realtime)

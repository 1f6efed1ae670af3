"""Shared fixtures of the kv tests: drive a KVStateMachine through the real codec, one log entry per command."""

from __future__ import annotations

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

"""The one command table (phalanx.kv.table): Redis 7's COMMAND INFO values, the rows the state
machine dispatches on, and the COMMAND reply redis-py reads. Key extraction and slots derived
from it are tested in tests/placement/test_slots.py."""

from __future__ import annotations

import pytest
from redis._parsers.helpers import parse_command, parse_command_resp3, parse_command_unified
from redis._parsers.response_callbacks import _RedisCallbacks

from phalanx.kv import (
    COMMAND_NAMES,
    COMMAND_SPECS,
    Command,
    CommandSpec,
    Error,
    KVStateMachine,
    command_info,
    command_spec,
    encode_command,
    is_known,
    is_write,
)
from phalanx.kv.table import SERVER_COMMANDS, STATE_MACHINE_COMMANDS

SERVER_NAMES = ["PING", "ECHO", "HELLO", "AUTH", "SELECT", "CLIENT", "COMMAND", "INFO",
                "READONLY", "READWRITE", "ROLE", "WAIT", "CONFIG", "DEBUG", "FAILOVER", "QUIT",
                "CLUSTER", "ASKING"]


def test_every_state_machine_command_has_a_spec() -> None:
    for name in COMMAND_NAMES:
        assert name.encode() in COMMAND_SPECS
        assert COMMAND_SPECS[name.encode()].handler is not None
    for name in SERVER_NAMES:
        spec = COMMAND_SPECS[name.encode()]
        assert (spec.first_key, spec.last_key, spec.step) == (0, 0, 0)
        assert spec.name == name.lower()
        assert spec.handler is None
        assert not is_known(name)
    assert len(COMMAND_SPECS) == len(STATE_MACHINE_COMMANDS) + len(SERVER_COMMANDS)


@pytest.mark.parametrize(("name", "arity", "flags", "positions"), [
    ("GET", 2, ("readonly", "fast"), (1, 1, 1)),
    ("SET", -3, ("write", "denyoom"), (1, 1, 1)),
    ("MSET", -3, ("write", "denyoom"), (1, -1, 2)),
    ("MGET", -2, ("readonly", "fast"), (1, -1, 1)),
    ("DEL", -2, ("write",), (1, -1, 1)),
    ("EXISTS", -2, ("readonly", "fast"), (1, -1, 1)),
    ("KEYS", 2, ("readonly",), (0, 0, 0)),
    ("SCAN", -2, ("readonly",), (0, 0, 0)),
    ("DBSIZE", 1, ("readonly", "fast"), (0, 0, 0)),
    ("FLUSHDB", -1, ("write",), (0, 0, 0)),
    ("FLUSHALL", -1, ("write",), (0, 0, 0)),
    ("PHALANX.EXPIRE", 3, ("write",), (1, 1, 1)),
])
def test_redis7_command_info(name: str, arity: int, flags: tuple[str, ...],
                             positions: tuple[int, int, int]) -> None:
    spec = COMMAND_SPECS[name.encode()]
    assert spec.arity == arity
    assert spec.flags == flags
    assert (spec.first_key, spec.last_key, spec.step) == positions


def test_write_flag_decides_is_write() -> None:
    for spec in STATE_MACHINE_COMMANDS:
        write = "write" in spec.flags
        assert write == spec.write == is_write(spec.name) == is_write(spec.name.upper()), spec
        assert ("readonly" in spec.flags) == (not write), spec.name
        assert is_known(spec.name.encode()) and is_known(spec.name.upper())
    # Unknown commands and the server's own are never served as local reads.
    assert is_write(b"NOSUCH") and not is_known(b"NOSUCH")
    assert is_write(b"PING") and is_write("ping")


def test_the_machine_checks_the_table_arity() -> None:
    machine = KVStateMachine()
    index = 0
    for spec in STATE_MACHINE_COMMANDS:
        words = abs(spec.arity) - 1
        too_few = (b"k",) * (words - 1) if words else None
        wrong = [too_few] if too_few is not None else []
        if spec.arity > 0:
            wrong.append((b"k",) * (words + 1))
        for args in wrong:
            index += 1
            reply = machine.apply(index, encode_command(Command(spec.name.encode(), args, 1)))
            assert reply == Error(f"ERR wrong number of arguments for '{spec.name}' command"), \
                (spec.name, args)


def test_command_spec_any_case() -> None:
    assert command_spec(b"get") is COMMAND_SPECS[b"GET"]
    assert command_spec(b"HgEt") is COMMAND_SPECS[b"HGET"]
    assert command_spec(b"nosuch") is None


def test_command_info_shape() -> None:
    info = command_info(COMMAND_SPECS[b"MSET"])
    assert info == [b"mset", -3, [b"write", b"denyoom"], 1, -1, 2,
                    [b"@write", b"@string", b"@slow"], [], [], []]


def test_redis_py_registers_parse_command() -> None:
    assert _RedisCallbacks["COMMAND"] is parse_command


@pytest.mark.parametrize("parser", [parse_command, parse_command_unified, parse_command_resp3])
def test_redis_py_parses_our_command_reply(parser: object) -> None:
    assert callable(parser)
    commands = parser([command_info(spec) for spec in COMMAND_SPECS.values()])
    assert set(commands) == {spec.name for spec in COMMAND_SPECS.values()}
    mset = commands["mset"]
    assert (mset["arity"], mset["first_key_pos"], mset["last_key_pos"], mset["step_count"]) \
        == (-3, 1, -1, 2)
    assert "write" in mset["flags"]


def test_spec_is_frozen() -> None:
    spec = COMMAND_SPECS[b"GET"]
    assert isinstance(spec, CommandSpec)
    assert not spec.keyless
    assert COMMAND_SPECS[b"PING"].keyless
    with pytest.raises(AttributeError):
        spec.arity = 3  # type: ignore[misc]

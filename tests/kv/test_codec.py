"""The command codec: round trips, the exact layout's version byte, Corrupt on garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phalanx.errors import Corrupt, InvariantViolation
from phalanx.kv import Command, decode_command, encode_command

commands = st.builds(
    lambda name, args, now, session: Command(
        name, tuple(args), now, session[0] if session else None, session[1] if session else None
    ),
    st.binary(min_size=1, max_size=255),
    st.lists(st.binary(max_size=64), max_size=8),
    st.integers(-(2**63), 2**63 - 1),
    st.none() | st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
)


@given(commands)
def test_round_trip(command: Command) -> None:
    assert decode_command(encode_command(command)) == command


@given(commands)
def test_every_truncation_and_extension_is_corrupt(command: Command) -> None:
    data = encode_command(command)
    for cut in range(len(data)):
        with pytest.raises(Corrupt):
            decode_command(data[:cut])
    with pytest.raises(Corrupt):
        decode_command(data + b"\x00")


@given(st.binary(max_size=200))
def test_garbage_raises_only_corrupt(data: bytes) -> None:
    try:
        command = decode_command(data)
    except Corrupt:
        return
    assert encode_command(command) == data  # anything accepted is canonical


def test_version_and_flags_are_checked() -> None:
    data = encode_command(Command(b"SET", (b"k", b"v"), 5))
    assert data[0] == 1
    with pytest.raises(Corrupt, match="version"):
        decode_command(b"\x02" + data[1:])
    with pytest.raises(Corrupt, match="flags"):
        decode_command(data[:1] + b"\x04" + data[2:])


def test_huge_argument_count_is_corrupt_without_allocating() -> None:
    data = encode_command(Command(b"GET", (), 0))
    with pytest.raises(Corrupt):
        decode_command(data[:-4] + b"\xff\xff\xff\xff")


def test_unencodable_commands_are_caller_bugs() -> None:
    with pytest.raises(InvariantViolation):
        encode_command(Command(b"", (), 0))
    with pytest.raises(InvariantViolation):
        encode_command(Command(b"x" * 256, (), 0))
    with pytest.raises(InvariantViolation):
        encode_command(Command(b"GET", (), 0, client_id=1))


def _reference_encode(cmd: Command) -> bytes:
    """The format spelled out field by field (the straightforward encoder of version 1):
    `encode_command` must produce exactly these bytes, which are in every Raft log on disk."""
    import struct

    session = cmd.client_id is not None
    out = struct.pack("<BBq", 1, 1 if session else 0, cmd.now_ms)
    if session:
        out += struct.pack("<QQ", cmd.client_id, cmd.sequence)
    out += bytes((len(cmd.name),)) + cmd.name + struct.pack("<I", len(cmd.args))
    for arg in cmd.args:
        out += struct.pack("<I", len(arg)) + arg
    return out


@given(commands)
def test_encoding_is_byte_for_byte_the_format(command: Command) -> None:
    assert encode_command(command) == _reference_encode(command)


def test_known_bytes_of_a_session_command() -> None:
    data = encode_command(Command(b"SET", (b"k", b"vv"), 1700000000000, 7, 9))
    assert data.hex() == (
        "0101" "0068e5cf8b010000" "0700000000000000" "0900000000000000"
        "03" "534554" "02000000" "01000000" "6b" "02000000" "7676"
    )

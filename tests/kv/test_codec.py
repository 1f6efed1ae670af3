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

"""The command codec: a client command stamped by the leader, as the bytes of one log entry.

Rules of this file:
- Format (little endian), version 1:
  `u8 version | u8 flags | i64 now_ms | [u64 client_id | u64 sequence] if flags & 1 |
  u8 name_len | name | u32 argc | argc x (u32 len | bytes)`.
  No trailing bytes. Any other flag bit, an unknown version, a short buffer or trailing bytes
  raise `phalanx.errors.Corrupt`; decoding never raises anything else.
- `now_ms` is the leader's wall clock when it proposed the command: expiry runs on this
  replicated time, never on a replica's own clock.
- `(client_id, sequence)` identify a client request for idempotent retries (see machine.py).
- Standard library only; encoding is a pure function of the `Command`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from phalanx.errors import Corrupt, require

FORMAT_VERSION = 1
_FLAG_SESSION = 1

_HEADER = struct.Struct("<BBq")
_SESSION = struct.Struct("<QQ")
_U32 = struct.Struct("<I")
_HEADER_SIZE = _HEADER.size
_SESSION_SIZE = _SESSION.size

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Command:
    """A Redis command (name and arguments, all bytes) as replicated through the log.

    `name` is kept as the client sent it; the state machine compares it case-insensitively.
    `client_id` and `sequence` are both set or both None.
    """

    name: bytes
    args: tuple[bytes, ...]
    now_ms: int
    client_id: int | None = None
    sequence: int | None = None


def encode_command(cmd: Command) -> bytes:
    """The log-entry bytes of `cmd`. A command that cannot be encoded is a caller bug."""
    name = cmd.name
    require(0 < len(name) <= 255, "command name must be 1..255 bytes")
    require(_INT64_MIN <= cmd.now_ms <= _INT64_MAX, "now_ms must fit in a signed 64-bit int")
    args = cmd.args
    if cmd.client_id is None:
        require(cmd.sequence is None, "sequence without client_id")
        parts = [_HEADER.pack(FORMAT_VERSION, 0, cmd.now_ms)]
    else:
        require(cmd.sequence is not None, "client_id without sequence")
        sequence = cmd.sequence if cmd.sequence is not None else 0
        require(0 <= cmd.client_id <= _UINT64_MAX and 0 <= sequence <= _UINT64_MAX,
                "client_id and sequence must fit in an unsigned 64-bit int")
        parts = [_HEADER.pack(FORMAT_VERSION, _FLAG_SESSION, cmd.now_ms),
                 _SESSION.pack(cmd.client_id, sequence)]
    parts.append(bytes((len(name),)))
    parts.append(name)
    parts.append(_U32.pack(len(args)))
    pack = _U32.pack
    for arg in args:
        require(len(arg) <= _U32_MAX, "argument longer than 4 GiB")
        parts.append(pack(len(arg)))
        parts.append(arg)
    return b"".join(parts)


def decode_command(data: bytes) -> Command:
    """The command in `data`; raises `Corrupt` on anything that `encode_command` cannot produce."""
    return Command(*decode_fields(data))


def decode_fields(
    data: bytes,
) -> tuple[bytes, tuple[bytes, ...], int, int | None, int | None]:
    """`decode_command` without building a `Command`: (name, args, now_ms, client_id, sequence).

    The state machine's apply path uses this directly; it is the hot loop of every replica.
    """
    size = len(data)
    if size < _HEADER_SIZE:
        raise Corrupt("command: truncated header")
    version, flags, now_ms = _HEADER.unpack_from(data, 0)
    if version != FORMAT_VERSION:
        raise Corrupt(f"command: unknown format version {version}")
    offset = _HEADER_SIZE
    client_id: int | None = None
    sequence: int | None = None
    if flags:
        if flags != _FLAG_SESSION:
            raise Corrupt(f"command: unknown flags {flags:#x}")
        if size < offset + _SESSION_SIZE:
            raise Corrupt("command: truncated session")
        client_id, sequence = _SESSION.unpack_from(data, offset)
        offset += _SESSION_SIZE
    if size <= offset:
        raise Corrupt("command: truncated name")
    name_end = offset + 1 + data[offset]
    if name_end == offset + 1 or size < name_end + 4:
        raise Corrupt("command: bad or truncated name")
    name = data[offset + 1 : name_end]
    (argc,) = _U32.unpack_from(data, name_end)
    offset = name_end + 4
    if argc * 4 > size - offset:
        raise Corrupt("command: argument count exceeds the buffer")
    unpack_from = _U32.unpack_from
    args = []
    for _ in range(argc):
        if size < offset + 4:
            raise Corrupt("command: truncated argument length")
        start = offset + 4
        offset = start + unpack_from(data, offset)[0]
        args.append(data[start:offset])
    if offset != size:
        raise Corrupt("command: truncated argument or trailing bytes")
    return name, tuple(args), now_ms, client_id, sequence

"""The command codec: a client command stamped by the leader, as the bytes of one log entry.

Rules of this file:
- Format (little endian), version 1:
  `u8 version | u8 flags | i64 now_ms | [u64 client_id | u64 sequence] if flags & 1 |
  [u64 first_unacked] if flags & 2 | u8 name_len | name | u32 argc | argc x (u32 len | bytes)`.
  Flag 2 (only with flag 1) carries the client's lowest sequence not yet acknowledged (Raft
  dissertation §6.3: the state machine may discard the replies below it); an entry without it
  (written before it existed, or by a client with one request at a time) has
  `first_unacked = sequence`. No trailing bytes. Any other flag bit, an unknown version, a short buffer or trailing bytes
  raise `phalanx.errors.Corrupt`; decoding never raises anything else.
- `now_ms` is the leader's wall clock when it proposed the command: expiry runs on this
  replicated time, never on a replica's own clock.
- `(client_id, sequence)` identify a client request for idempotent retries (see machine.py).
- A transaction (MULTI ... EXEC) is ONE log entry: the command `PHALANX.EXEC payload keys...`
  whose payload (`encode_transaction`) carries the watched keys with the versions their WATCH
  read and the queued commands; see kv/transaction.py. Payload format, version 1:
  `u8 1 | u32 n | n x (u32 len | key | i64 version | u8 expired) |
  u32 m | m x (u32 argc | argc x (u32 len | bytes))`, each command's first word its name.
- Standard library only; encoding is a pure function of the `Command`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from phalanx.errors import Corrupt, InvariantViolation

FORMAT_VERSION = 1
_FLAG_SESSION = 1
_FLAG_FIRST_UNACKED = 2
_U64 = struct.Struct("<Q")

_HEADER = struct.Struct("<BBq")
_SESSION = struct.Struct("<QQ")
_U32 = struct.Struct("<I")
# The header (and session) with the name's length byte: what encode_command packs at once.
_HEADER_NAME = struct.Struct("<BBqB")
_HEADER_SESSION_NAME = struct.Struct("<BBqQQB")
_HEADER_SESSION = struct.Struct("<BBqQQ")
_HEADER_SIZE = _HEADER.size
_SESSION_SIZE = _SESSION.size

_TX_FORMAT = 1
_I64_U8 = struct.Struct("<qB")

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Command:
    """A Redis command (name and arguments, all bytes) as replicated through the log.

    `name` is kept as the client sent it; the state machine compares it case-insensitively.
    `client_id` and `sequence` are both set or both None. `first_unacked` (only with them)
    is the client's lowest sequence still waiting for its reply (§6.3); None means
    `sequence` itself (one request at a time).
    """

    name: bytes
    args: tuple[bytes, ...]
    now_ms: int
    client_id: int | None = None
    sequence: int | None = None
    first_unacked: int | None = None


def encode_command(cmd: Command) -> bytes:
    """The log-entry bytes of `cmd`. A command that cannot be encoded is a caller bug.

    Hot path (every write of every client): the fixed fields and the name's length are one
    `struct` pack, and the checks are inline comparisons (no call per check).
    """
    name = cmd.name
    args = cmd.args
    now_ms = cmd.now_ms
    client_id = cmd.client_id
    if not 0 < len(name) <= 255:
        raise InvariantViolation("command name must be 1..255 bytes")
    if not _INT64_MIN <= now_ms <= _INT64_MAX:
        raise InvariantViolation("now_ms must fit in a signed 64-bit int")
    if client_id is None:
        if cmd.sequence is not None or cmd.first_unacked is not None:
            raise InvariantViolation("sequence without client_id")
        parts = [_HEADER_NAME.pack(FORMAT_VERSION, 0, now_ms, len(name)), name,
                 _U32.pack(len(args))]
    else:
        sequence = cmd.sequence
        if sequence is None:
            raise InvariantViolation("client_id without sequence")
        if not (0 <= client_id <= _UINT64_MAX and 0 <= sequence <= _UINT64_MAX):
            raise InvariantViolation("client_id and sequence must fit in an unsigned 64-bit int")
        first_unacked = cmd.first_unacked
        if first_unacked is None:
            parts = [_HEADER_SESSION_NAME.pack(FORMAT_VERSION, _FLAG_SESSION, now_ms, client_id,
                                               sequence, len(name)),
                     name, _U32.pack(len(args))]
        else:
            if not 0 <= first_unacked <= sequence:
                raise InvariantViolation("first_unacked must be in 0..sequence")
            parts = [_HEADER_SESSION.pack(FORMAT_VERSION, _FLAG_SESSION | _FLAG_FIRST_UNACKED,
                                          now_ms, client_id, sequence),
                     _U64.pack(first_unacked), bytes((len(name),)), name, _U32.pack(len(args))]
    pack = _U32.pack
    append = parts.append
    for arg in args:
        size = len(arg)
        if size > _U32_MAX:
            raise InvariantViolation("argument longer than 4 GiB")
        append(pack(size))
        append(arg)
    return b"".join(parts)


def decode_command(data: bytes) -> Command:
    """The command in `data`; raises `Corrupt` on anything that `encode_command` cannot produce."""
    return Command(*decode_fields(data))


def decode_fields(
    data: bytes,
) -> tuple[bytes, tuple[bytes, ...], int, int | None, int | None, int | None]:
    """`decode_command` without building a `Command`: (name, args, now_ms, client_id, sequence,
    first_unacked).

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
    first_unacked: int | None = None
    if flags:
        if flags != _FLAG_SESSION and flags != _FLAG_SESSION | _FLAG_FIRST_UNACKED:
            raise Corrupt(f"command: unknown flags {flags:#x}")
        if size < offset + _SESSION_SIZE:
            raise Corrupt("command: truncated session")
        client_id, sequence = _SESSION.unpack_from(data, offset)
        offset += _SESSION_SIZE
        if flags & _FLAG_FIRST_UNACKED:
            if size < offset + 8:
                raise Corrupt("command: truncated session")
            (first_unacked,) = _U64.unpack_from(data, offset)
            offset += 8
            if first_unacked > sequence:
                raise Corrupt("command: first unacknowledged sequence after the sequence")
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
    return name, tuple(args), now_ms, client_id, sequence, first_unacked


@dataclass(frozen=True, slots=True)
class Watch:
    """A watched key: the version clock its WATCH read, and whether the key was logically
    expired then (Redis 7.0 aborts EXEC when a watched key expires after WATCH)."""

    key: bytes
    version: int
    expired: bool = False


@dataclass(frozen=True, slots=True)
class Transaction:
    """The payload of one `PHALANX.EXEC` entry: watches, then the queued commands (each a
    tuple whose first word is the command's name)."""

    watches: tuple[Watch, ...]
    commands: tuple[tuple[bytes, ...], ...]


def encode_transaction(transaction: Transaction) -> bytes:
    """The payload bytes of `transaction` (format in the module rules)."""
    pack = _U32.pack
    parts = [bytes((_TX_FORMAT,)), pack(len(transaction.watches))]
    append = parts.append
    for watch in transaction.watches:
        if not _INT64_MIN <= watch.version <= _INT64_MAX:
            raise InvariantViolation("a watch version must fit in a signed 64-bit int")
        append(pack(len(watch.key)))
        append(watch.key)
        append(_I64_U8.pack(watch.version, 1 if watch.expired else 0))
    append(pack(len(transaction.commands)))
    for command in transaction.commands:
        if not command:
            raise InvariantViolation("a queued command needs a name")
        append(pack(len(command)))
        for word in command:
            append(pack(len(word)))
            append(word)
    return b"".join(parts)


def decode_transaction(payload: bytes) -> Transaction:
    """The transaction in `payload`; raises `Corrupt` on anything `encode_transaction` cannot
    produce."""
    size = len(payload)
    if size < 1 or payload[0] != _TX_FORMAT:
        raise Corrupt("transaction: unknown format")
    offset = 1

    def u32() -> int:
        nonlocal offset
        if size < offset + 4:
            raise Corrupt("transaction: truncated")
        (value,) = _U32.unpack_from(payload, offset)
        offset += 4
        return int(value)

    def chunk() -> bytes:
        nonlocal offset
        length = u32()
        if size < offset + length:
            raise Corrupt("transaction: truncated")
        offset += length
        return payload[offset - length:offset]

    count = u32()
    if count * (4 + _I64_U8.size) > size - offset:
        raise Corrupt("transaction: watch count exceeds the buffer")
    watches = []
    for _ in range(count):
        key = chunk()
        if size < offset + _I64_U8.size:
            raise Corrupt("transaction: truncated watch")
        version, expired = _I64_U8.unpack_from(payload, offset)
        offset += _I64_U8.size
        if expired > 1:
            raise Corrupt("transaction: bad watch flag")
        watches.append(Watch(key, version, bool(expired)))
    count = u32()
    if count * 8 > size - offset:
        raise Corrupt("transaction: command count exceeds the buffer")
    commands = []
    for _ in range(count):
        argc = u32()
        if argc < 1 or argc * 4 > size - offset:
            raise Corrupt("transaction: bad argument count")
        commands.append(tuple(chunk() for _ in range(argc)))
    if offset != size:
        raise Corrupt("transaction: trailing bytes")
    return Transaction(tuple(watches), tuple(commands))

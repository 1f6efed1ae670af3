"""The hot path of the peer codec: msgspec for the batch bytes, slot setters for the messages.

`phalanx.transport.codec` owns the wire format (protocol 2, unchanged: frames, handshake,
`WIRE_FIELDS`); this module makes its hot path fast (issue 15, lever 3). The bytes are the
same msgpack as before, so a node with this module and a node without it talk to each other
during a rolling upgrade, in both directions, with no new protocol version
(tests/transport/test_codec_msgspec.py checks both directions against the old encoder):

- Encoding: the codec's message arrays are packed by msgspec's encoder (byte for byte what
  msgpack-python produced, about 3x faster).
- Decoding: a batch made only of the hot messages (AppendEntries, its response, Heartbeat, its
  response) is decoded by msgspec into array-like Structs, `HOT_WIRE_STRUCTS`: msgspec checks
  every type, that ints are not bools, that every int is >= 0 and the arity, in C. The Raft
  messages are then built through their slots. Anything else (another message type, a
  malformed frame) makes `decode_hot_batch` return None, and the codec's checked path decodes
  the frame again (it names the problem precisely when there is one).

Rules of this file:
- A Struct here is the codec's array for its message, field for field, tag = type code: a
  mismatch with `WIRE_FIELDS` fails at import (`_check_structs`), never on the wire.
- `decode_hot_batch` accepts only what the codec's checked path accepts (same checks); on any
  doubt it returns None, never raises, never returns a half-checked message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from itertools import repeat
from typing import Annotated, Any, Final, Union

import msgspec

from phalanx.errors import InvariantViolation, PeerProtocolError
from phalanx.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
)
from phalanx.raft.types import Entry, EntryType, GroupId

__all__ = [
    "ENCODER",
    "HOT_WIRE_STRUCTS",
    "decode_entries",
    "decode_hot_batch",
    "explain_entries",
    "slot_setters",
]

_Natural = Annotated[int, msgspec.Meta(ge=0)]
_Group = Annotated[GroupId, msgspec.Meta(ge=0)]

# Wire format: the tags are the codec's TYPE_CODES, the fields its WIRE_FIELDS (after
# [type_code, group_id]); `_check_structs` in the codec compares them at import.


class _AppendEntries(msgspec.Struct, array_like=True, tag=3, forbid_unknown_fields=True,
                     gc=False):
    group_id: _Group
    source: str
    target: str
    term: _Natural
    prev_log_index: _Natural
    prev_log_term: _Natural
    commit: _Natural
    entries: list[_Natural | bytes]  # flat: term, index, type, data per entry


class _AppendEntriesResponse(msgspec.Struct, array_like=True, tag=4, forbid_unknown_fields=True,
                             gc=False):
    group_id: _Group
    source: str
    target: str
    term: _Natural
    success: bool
    index: _Natural
    reject_hint: _Natural


class _Heartbeat(msgspec.Struct, array_like=True, tag=5, forbid_unknown_fields=True, gc=False):
    group_id: _Group
    source: str
    target: str
    term: _Natural
    commit: _Natural
    round: _Natural


class _HeartbeatResponse(msgspec.Struct, array_like=True, tag=6, forbid_unknown_fields=True,
                         gc=False):
    group_id: _Group
    source: str
    target: str
    term: _Natural
    round: _Natural


#: Message class -> the Struct of its wire array (checked against WIRE_FIELDS by the codec).
HOT_WIRE_STRUCTS: Final[dict[type, type[msgspec.Struct]]] = {
    AppendEntries: _AppendEntries,
    AppendEntriesResponse: _AppendEntriesResponse,
    Heartbeat: _Heartbeat,
    HeartbeatResponse: _HeartbeatResponse,
}

_DECODER: Final = msgspec.msgpack.Decoder(
    list[Union[_AppendEntries, _AppendEntriesResponse, _Heartbeat, _HeartbeatResponse]]  # noqa: UP007
)
#: The one encoder of batch and handshake bodies (no enc_hook: it runs no Python code).
ENCODER: Final = msgspec.msgpack.Encoder()


# Fast construction. A frozen dataclass's generated __init__ calls object.__setattr__ once per
# field through keyword arguments: about 3x slower than creating the object and setting its slots
# through their C descriptors, which is what the hot messages (and Entry) use here. That is only
# equivalent while the class is a slotted dataclass without __post_init__ whose fields are exactly
# the ones set here; `slot_setters` checks this at import, so a change in `phalanx.raft` fails
# loudly instead of building half-initialised objects.
_new = object.__new__
_SINK: Final = deque[object](maxlen=0).extend  # runs an iterator to exhaustion at C speed


def slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Callable[[object, Any], None], ...]:
    """The C-level setters of `cls`'s slots `names`, after checking that setting exactly these
    is equivalent to calling the constructor."""
    field_names = tuple(field.name for field in fields(cls))
    if (
        not is_dataclass(cls)
        or "__slots__" not in cls.__dict__
        or hasattr(cls, "__post_init__")
        or sorted(field_names) != sorted(names)
    ):
        raise InvariantViolation(
            f"{cls.__qualname__} is no longer a slotted dataclass with fields {names} and no "
            "__post_init__: update phalanx.transport.codec (and the protocol version)"
        )
    return tuple(cls.__dict__[name].__set__ for name in names)


_ENTRY_TYPE_BY_CODE: Final[dict[int, EntryType]] = {kind.value: kind for kind in EntryType}
_ENTRY_TYPE_CODES: Final = frozenset(_ENTRY_TYPE_BY_CODE)
_ONLY_INT: Final = frozenset({int})
_ONLY_BYTES: Final = frozenset({bytes})
_SET_ENTRY_TERM, _SET_ENTRY_INDEX, _SET_ENTRY_TYPE, _SET_ENTRY_DATA = slot_setters(
    Entry, ("term", "index", "type", "data")
)
_AE_FIELDS: Final = ("source", "target", "term", "prev_log_index", "prev_log_term", "commit",
                     "entries")
_S_AE = slot_setters(AppendEntries, _AE_FIELDS)
_S_AER = slot_setters(AppendEntriesResponse, ("source", "target", "term", "success", "index",
                                              "reject_hint"))
_S_HB = slot_setters(Heartbeat, ("source", "target", "term", "commit", "round"))
_S_HBR = slot_setters(HeartbeatResponse, ("source", "target", "term", "round"))


def _type_name(value: object) -> str:
    return type(value).__name__


def decode_entries(flat: list[Any], max_entries: int) -> tuple[Entry, ...]:
    """The entries of an AppendEntries from their flat wire array, checked (PeerProtocolError)."""
    count, rest = divmod(len(flat), 4)
    if rest:
        raise PeerProtocolError(
            f"AppendEntries.entries has {len(flat)} items, not a multiple of 4 "
            "(term, index, type, data per entry)"
        )
    if count > max_entries:
        raise PeerProtocolError(
            f"AppendEntries carries {count} entries, more than "
            f"max_entries_per_message={max_entries}"
        )
    if not count:
        return ()
    terms = flat[0::4]
    indexes = flat[1::4]
    kinds = flat[2::4]
    datas = flat[3::4]
    if not (
        _ONLY_INT.issuperset(map(type, terms))
        and _ONLY_INT.issuperset(map(type, indexes))
        and _ONLY_INT.issuperset(map(type, kinds))
        and _ONLY_BYTES.issuperset(map(type, datas))
        and min(terms) >= 0
        and min(indexes) >= 0
        and _ENTRY_TYPE_CODES.issuperset(kinds)
    ):
        raise PeerProtocolError(explain_entries(flat))
    entries = tuple(map(_new, repeat(Entry, count)))
    _SINK(map(_SET_ENTRY_TERM, entries, terms))
    _SINK(map(_SET_ENTRY_INDEX, entries, indexes))
    _SINK(map(_SET_ENTRY_TYPE, entries, map(_ENTRY_TYPE_BY_CODE.__getitem__, kinds)))
    _SINK(map(_SET_ENTRY_DATA, entries, datas))
    return entries


def explain_entries(flat: list[Any]) -> str:
    """Slow path: say which entry of a rejected AppendEntries is wrong and why."""
    for position in range(0, len(flat), 4):
        where = f"AppendEntries.entries[{position // 4}]"
        for field, value in zip(("term", "index", "type"), flat[position:position + 3],
                                strict=True):
            if type(value) is not int:
                return f"{where}.{field} must be int, got {_type_name(value)}"
            if value < 0:
                return f"{where}.{field} must be >= 0, got {value}"
        kind, data = flat[position + 2], flat[position + 3]
        if kind not in _ENTRY_TYPE_CODES:
            return f"{where}.type {kind} is not an EntryType (known: {sorted(_ENTRY_TYPE_CODES)})"
        if type(data) is not bytes:
            return f"{where}.data must be bytes, got {_type_name(data)}"
    return "AppendEntries.entries is malformed"  # pragma: no cover - only called on a mismatch


_FEW_ITEMS: Final = 4 * 4  # up to 4 entries a plain loop is faster than `decode_entries`
_GET_ENTRY_TYPE: Final = _ENTRY_TYPE_BY_CODE.get


def _few_entries(flat: list[int | bytes], max_entries: int) -> tuple[Entry, ...] | None:
    """`decode_entries` for a few entries that msgspec already checked (ints are >= 0 ints,
    the rest bytes); None for anything `decode_entries` would refuse."""
    if len(flat) & 3 or len(flat) > 4 * max_entries:
        return None
    entries: list[Entry] = []
    for position in range(0, len(flat), 4):
        term, index, code, data = flat[position:position + 4]
        kind = _GET_ENTRY_TYPE(code)  # type: ignore[arg-type]
        if type(term) is not int or type(index) is not int or kind is None \
                or type(code) is not int or type(data) is not bytes:
            return None
        entry = _new(Entry)
        _SET_ENTRY_TERM(entry, term)
        _SET_ENTRY_INDEX(entry, index)
        _SET_ENTRY_TYPE(entry, kind)
        _SET_ENTRY_DATA(entry, data)
        entries.append(entry)
    return tuple(entries)


def decode_hot_batch(body: bytes | bytearray, max_entries: int) -> list[tuple[GroupId, Message]] | None:
    """The batch of a frame body made only of hot messages, fully checked; None when the body
    holds anything else or anything malformed (the codec's checked path decides then)."""
    try:
        wires = _DECODER.decode(body)
    except Exception:  # DecodeError, ValidationError, UnicodeDecodeError...
        return None
    batch: list[tuple[GroupId, Message]] = []
    append = batch.append
    new = _new
    for wire in wires:
        if type(wire) is _AppendEntries:
            flat = wire.entries
            if len(flat) <= _FEW_ITEMS:
                entries = _few_entries(flat, max_entries)
                if entries is None:
                    return None
            else:
                try:
                    entries = decode_entries(flat, max_entries)
                except PeerProtocolError:
                    return None
            m: Message = new(AppendEntries)
            s = _S_AE
            s[0](m, wire.source)
            s[1](m, wire.target)
            s[2](m, wire.term)
            s[3](m, wire.prev_log_index)
            s[4](m, wire.prev_log_term)
            s[5](m, wire.commit)
            s[6](m, entries)
        elif type(wire) is _Heartbeat:
            m = new(Heartbeat)
            s = _S_HB
            s[0](m, wire.source)
            s[1](m, wire.target)
            s[2](m, wire.term)
            s[3](m, wire.commit)
            s[4](m, wire.round)
        elif type(wire) is _AppendEntriesResponse:
            m = new(AppendEntriesResponse)
            s = _S_AER
            s[0](m, wire.source)
            s[1](m, wire.target)
            s[2](m, wire.term)
            s[3](m, wire.success)
            s[4](m, wire.index)
            s[5](m, wire.reject_hint)
        elif type(wire) is _HeartbeatResponse:
            m = new(HeartbeatResponse)
            s = _S_HBR
            s[0](m, wire.source)
            s[1](m, wire.target)
            s[2](m, wire.term)
            s[3](m, wire.round)
        else:  # pragma: no cover - the decoder's union holds only the four Structs
            return None
        append((wire.group_id, m))
    return batch

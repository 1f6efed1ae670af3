"""Tests of the peer wire codec: schema coverage, round trips, stream chunking, limits, and
fuzzing that proves malformed input only ever raises PeerProtocolError."""

from __future__ import annotations

import contextlib
import dataclasses
import struct

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phalanx.errors import ConfigError, InvariantViolation, PeerProtocolError
from phalanx.raft.messages import (
    MESSAGE_TYPES,
    AppendEntries,
    Heartbeat,
    InstallSnapshot,
    Message,
)
from phalanx.raft.types import (
    ConfState,
    Entry,
    EntryType,
    GroupId,
    Index,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)
from phalanx.transport.codec import (
    DEFAULT_MAX_FRAME_BYTES,
    MAGIC,
    NEED_DATA,
    PROTOCOL_VERSION,
    TYPE_CODES,
    WIRE_FIELDS,
    Batch,
    FrameDecoder,
    Handshake,
    decode_handshake,
    encode_batch,
    encode_handshake,
    verify_handshake,
)

# ----------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------

uint64 = st.integers(min_value=0, max_value=2**64 - 1)
node_ids = st.text(alphabet=st.characters(codec="utf-8"), max_size=6).map(NodeId)
node_id_tuples = st.lists(node_ids, max_size=4).map(tuple)
entries = st.builds(
    Entry, uint64.map(Term), uint64.map(Index), st.sampled_from(EntryType), st.binary(max_size=40)
)
conf_states = st.builds(
    ConfState,
    voters=node_id_tuples,
    learners=node_id_tuples,
    voters_outgoing=node_id_tuples,
    learners_next=node_id_tuples,
    auto_leave=st.booleans(),
)
snapshots = st.builds(
    Snapshot,
    meta=st.builds(SnapshotMeta, index=uint64.map(Index), term=uint64.map(Term),
                   conf_state=conf_states),
    data=st.binary(max_size=200),
)

# By the annotation of each message field (a string: messages.py uses postponed annotations).
# A field of a new type fails here loudly, and so does a message class the codec forgets.
FIELD_STRATEGIES: dict[str, st.SearchStrategy[object]] = {
    "NodeId": node_ids,
    "Term": uint64,
    "Index": uint64,
    "int": uint64,
    "bool": st.booleans(),
    "bytes": st.binary(max_size=40),
    "tuple[Entry, ...]": st.lists(entries, max_size=8).map(tuple),
    "Snapshot": snapshots,
}


def message_strategy(cls: type) -> st.SearchStrategy[Message]:
    kwargs = {field.name: FIELD_STRATEGIES[str(field.type)] for field in dataclasses.fields(cls)}
    return st.builds(cls, **kwargs)


messages = st.one_of([message_strategy(cls) for cls in MESSAGE_TYPES])
group_ids = uint64.map(GroupId)
batches = st.lists(st.tuples(group_ids, messages), max_size=6)


def decode_all(data: bytes, **limits: int) -> list[Batch]:
    decoder = FrameDecoder(**limits)
    decoder.feed(data)
    out = []
    while (batch := decoder.next_batch()) is not NEED_DATA:
        out.append(batch)
    assert decoder.buffered_bytes == 0
    return out


def frame(payload: object) -> bytes:
    body: bytes = msgpack.packb(payload, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def batch_error(payload: object) -> str:
    with pytest.raises(PeerProtocolError) as info:
        decode_all(frame(payload))
    return str(info.value)


HB = Heartbeat(source=NodeId("n1"), target=NodeId("n2"), term=Term(3), commit=Index(9), round=4)
AE = AppendEntries(
    source=NodeId("n1"), target=NodeId("n2"), term=Term(3), prev_log_index=Index(5),
    prev_log_term=Term(2), commit=Index(4),
    entries=(Entry(Term(3), Index(6), EntryType.NORMAL, b"x"),
             Entry(Term(3), Index(7), EntryType.CONF_CHANGE, b"")),
)

# ----------------------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------------------


def test_every_message_type_has_a_unique_code() -> None:
    assert set(TYPE_CODES) == set(MESSAGE_TYPES)
    assert len(set(TYPE_CODES.values())) == len(TYPE_CODES)


def test_wire_fields_match_the_dataclasses() -> None:
    for cls in MESSAGE_TYPES:
        names = {field.name for field in dataclasses.fields(cls)}
        on_wire = {name.split(".")[0] for name in WIRE_FIELDS[cls]}
        assert on_wire == names, cls
    snapshot_leaves = {
        "snapshot.meta.index", "snapshot.meta.term", "snapshot.data",
        *(f"snapshot.meta.conf_state.{field.name}" for field in dataclasses.fields(ConfState)),
    }
    assert set(WIRE_FIELDS[InstallSnapshot][3:]) == snapshot_leaves


# ----------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda cls: cls.__name__)
@given(data=st.data(), group_id=group_ids)
def test_round_trip_of_every_message_type(cls: type, data: st.DataObject, group_id: GroupId) -> None:
    message = data.draw(message_strategy(cls))
    [batch] = decode_all(encode_batch([(group_id, message)]))
    assert batch == [(group_id, message)]
    decoded = batch[0][1]
    assert type(decoded) is cls
    if isinstance(decoded, AppendEntries):
        assert all(type(entry.type) is EntryType for entry in decoded.entries)
        assert all(type(entry) is Entry for entry in decoded.entries)
    if isinstance(decoded, InstallSnapshot):
        assert type(decoded.snapshot.meta.conf_state.voters) is tuple


def test_decoded_messages_are_equal_hashable_and_frozen() -> None:
    [[(group_id, message)]] = decode_all(encode_batch([(GroupId(1), AE)]))
    assert group_id == 1 and message == AE and hash(message) == hash(AE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.term = Term(9)  # type: ignore[misc]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(batches, max_size=5), data=st.data())
def test_batches_survive_any_chunking_of_the_stream(frames: list[Batch], data: st.DataObject) -> None:
    handshake = encode_handshake(NodeId("n1"), "c1")
    stream = handshake + b"".join(encode_batch(batch) for batch in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[start:end] for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    decoder = FrameDecoder()
    received: list[Batch] = []
    got_handshake: Handshake | None = None
    for chunk in chunks:
        decoder.feed(chunk)
        if got_handshake is None:
            result = decoder.next_handshake()
            if result is NEED_DATA:
                continue
            got_handshake = result
        while (batch := decoder.next_batch()) is not NEED_DATA:
            received.append(batch)
    assert got_handshake == Handshake(version=PROTOCOL_VERSION, node_id=NodeId("n1"),
                                      cluster_id="c1")
    assert received == frames
    assert decoder.buffered_bytes == 0


def test_many_frames_in_one_feed_and_buffer_compaction() -> None:
    big = encode_batch([(GroupId(1), AppendEntries(
        source=NodeId("a"), target=NodeId("b"), term=Term(1), prev_log_index=Index(0),
        prev_log_term=Term(0), commit=Index(0),
        entries=tuple(Entry(Term(1), Index(i + 1), data=bytes(1000)) for i in range(100)),
    ))])
    stream = big * 5 + encode_batch([(GroupId(2), HB)])
    decoder = FrameDecoder()
    decoder.feed(stream[:-3])
    assert len([decoder.next_batch() for _ in range(5)]) == 5
    assert decoder.next_batch() is NEED_DATA
    assert decoder.buffered_bytes == len(encode_batch([(GroupId(2), HB)])) - 3
    decoder.feed(stream[-3:])
    assert decoder.next_batch() == [(GroupId(2), HB)]
    assert decoder.buffered_bytes == 0


def test_empty_batch_round_trips() -> None:
    assert decode_all(encode_batch([])) == [[]]


# ----------------------------------------------------------------------------------------------
# Handshake
# ----------------------------------------------------------------------------------------------


def test_handshake_round_trip_and_authentication() -> None:
    secret = b"s3cret"
    frame_bytes = encode_handshake(NodeId("n7"), "prod", secret=secret, nonce=b"\x01\x02")
    assert frame_bytes.startswith(MAGIC)
    handshake = decode_handshake(frame_bytes)
    assert (handshake.node_id, handshake.cluster_id, handshake.nonce) == ("n7", "prod", b"\x01\x02")
    assert len(handshake.mac) == 32
    verify_handshake(handshake, cluster_id="prod", secret=secret)
    verify_handshake(handshake, cluster_id="prod", secret=None)
    with pytest.raises(PeerProtocolError, match="wrong HMAC"):
        verify_handshake(handshake, cluster_id="prod", secret=b"other")
    with pytest.raises(PeerProtocolError, match="belongs to cluster 'prod', not 'test'"):
        verify_handshake(handshake, cluster_id="test", secret=secret)
    forged = dataclasses.replace(handshake, node_id=NodeId("n8"))
    with pytest.raises(PeerProtocolError, match="wrong HMAC"):
        verify_handshake(forged, cluster_id="prod", secret=secret)
    unsigned = decode_handshake(encode_handshake(NodeId("n7"), "prod"))
    assert unsigned.mac == b""
    with pytest.raises(PeerProtocolError, match="no authentication tag"):
        verify_handshake(unsigned, cluster_id="prod", secret=secret)


def test_version_mismatch_is_refused_with_both_versions_named() -> None:
    future = encode_handshake(NodeId("n1"), "c", version=PROTOCOL_VERSION + 1)
    with pytest.raises(PeerProtocolError) as info:
        decode_handshake(future)
    assert str(info.value) == (
        f"peer speaks phalanx protocol version {PROTOCOL_VERSION + 1}; this node speaks "
        f"version {PROTOCOL_VERSION} (supported: [1, {PROTOCOL_VERSION}])"
    )
    # The version is checked from the fixed header alone, before the body arrives.
    decoder = FrameDecoder()
    decoder.feed(future[:10])
    with pytest.raises(PeerProtocolError, match="protocol version"):
        decoder.next_handshake()


def test_wrong_magic_is_refused_from_the_first_bytes() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"GE")
    with pytest.raises(PeerProtocolError, match=r"not a phalanx peer: stream starts with b'GE'"):
        decoder.next_handshake()
    decoder = FrameDecoder()
    decoder.feed(b"PH")
    assert decoder.next_handshake() is NEED_DATA


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (encode_handshake(NodeId("n1"), "c")[:-1], "truncated handshake"),
        (encode_handshake(NodeId("n1"), "c") + b"\x00", "1 unexpected bytes after"),
        (struct.pack(">4sHI", MAGIC, 1, 5000), "handshake of 5000 bytes exceeds"),
        (struct.pack(">4sHI", MAGIC, 1, 1) + b"\xc1", "handshake is not valid msgpack"),
        (struct.pack(">4sHI", MAGIC, 1, 2) + b"\x91\x01", "got 1 items"),
        (struct.pack(">4sHI", MAGIC, 1, 1) + b"\x01", "got int"),
        (struct.pack(">4sHI", MAGIC, 1, 5) + b"\x94\x01\xa0\xc4\x00\xc4\x00"[:5],
         "handshake is not valid msgpack"),
    ],
)
def test_malformed_handshakes(data: bytes, message: str) -> None:
    with pytest.raises(PeerProtocolError, match=message):
        decode_handshake(data)


def test_handshake_field_types_and_mac_length_are_checked() -> None:
    def handshake_with(fields: list[object]) -> bytes:
        body: bytes = msgpack.packb(fields, use_bin_type=True)
        return struct.pack(">4sHI", MAGIC, 1, len(body)) + body

    with pytest.raises(PeerProtocolError, match=r"handshake\.node_id must be str, got int"):
        decode_handshake(handshake_with([1, "c", b"", b""]))
    with pytest.raises(PeerProtocolError, match=r"handshake\.nonce must be bytes, got str"):
        decode_handshake(handshake_with(["n", "c", "x", b""]))
    with pytest.raises(PeerProtocolError, match="mac must be empty or 32 bytes, got 3"):
        decode_handshake(handshake_with(["n", "c", b"", b"abc"]))


# ----------------------------------------------------------------------------------------------
# Malformed batch frames: precise errors
# ----------------------------------------------------------------------------------------------

HB_CODE = TYPE_CODES[Heartbeat]
AE_CODE = TYPE_CODES[AppendEntries]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"a": 1}, "batch frame must be an array of messages, got dict"),
        ([5], "batch item 0 must be a non-empty array"),
        ([[]], "got an empty array"),
        ([[99, 1, "a", "b", 1]], "unknown message type code 99"),
        ([["x", 1]], "unknown message type code 'x'"),
        ([[[1], 1]], r"unknown message type code \[1\]"),
        ([[HB_CODE, 1, "a", "b", 1, 2]], "Heartbeat has 4 fields, expected 5"),
        ([[HB_CODE, 1, "a", "b", 1, 2, 3, 4]], "Heartbeat has 6 fields, expected 5"),
        ([[HB_CODE, 1, "a", "b", True, 2, 3]], "Heartbeat.term must be int, got bool"),
        ([[HB_CODE, 1, "a", b"b", 1, 2, 3]], "Heartbeat.target must be str, got bytes"),
        ([[HB_CODE, -1, "a", "b", 1, 2, 3]], "Heartbeat.group_id must be >= 0, got -1"),
        ([[HB_CODE, 1, "a", "b", 1, -2, 3]], "Heartbeat.commit must be >= 0, got -2"),
        ([[HB_CODE, 1, "a", "b", 1.0, 2, 3]], "Heartbeat.term must be int, got float"),
        ([[HB_CODE, 1, "a", "b", 1, 2, None]], "Heartbeat.round must be int, got NoneType"),
        ([[HB_CODE, 1, "a", "b", 1, 2, 3], [HB_CODE, 1]], "batch item 1: Heartbeat has 0 fields"),
        ([[AE_CODE, 1, "a", "b", 1, 0, 0, 0, [1, 2, 0]]], "not a multiple of 4"),
        ([[AE_CODE, 1, "a", "b", 1, 0, 0, 0, [1, 2, 0, "x"]]],
         r"entries\[0\]\.data must be bytes, got str"),
        ([[AE_CODE, 1, "a", "b", 1, 0, 0, 0, [1, 2, 0, b"", 1, 3, 7, b""]]],
         r"entries\[1\]\.type 7 is not an EntryType"),
        ([[AE_CODE, 1, "a", "b", 1, 0, 0, 0, [1, -2, 0, b""]]],
         r"entries\[0\]\.index must be >= 0, got -2"),
        ([[AE_CODE, 1, "a", "b", 1, 0, 0, 0, [1, 2, False, b""]]],
         r"entries\[0\]\.type must be int, got bool"),
        ([[AE_CODE, 1, "a", "b", 1, 0, 0, 0, {}]], "AppendEntries.entries must be list, got dict"),
        ([[TYPE_CODES[InstallSnapshot], 1, "a", "b", 1, 0, 0, ["a", 2], [], [], [], False, b""]],
         "conf_state.voters must hold str node ids, got int"),
    ],
)
def test_malformed_batch_frames_name_the_problem(payload: object, message: str) -> None:
    with pytest.raises(PeerProtocolError, match=message):
        decode_all(frame(payload))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty batch frame"),
        (b"\xc1", "not valid msgpack"),  # 0xc1 is never used in msgpack
        (b"\x92\x01", "not valid msgpack"),  # truncated array
        (b"\x91\x01\x02", "not valid msgpack"),  # trailing bytes after the array
        (b"\x91\xa2\xff\xfe", "not valid msgpack"),  # invalid UTF-8 in a str
        (b"\x91" * 100_000, "not valid msgpack"),  # nesting deeper than msgpack's stack
        (b"\x81\x91\x00\x00", "not valid msgpack"),  # unhashable map key
        (b"\x91\xd6\xff\x00\x00\x00\x00", "must be a non-empty array"),  # timestamp ext
        (b"\x91\xd4\x05\x00", "must be a non-empty array"),  # ext type
    ],
)
def test_undecodable_bodies(body: bytes, message: str) -> None:
    with pytest.raises(PeerProtocolError, match=message):
        decode_all(struct.pack(">I", len(body)) + body)


def test_max_entries_per_message() -> None:
    data = encode_batch([(GroupId(1), AE)])
    assert decode_all(data, max_entries_per_message=2) == [[(GroupId(1), AE)]]
    with pytest.raises(PeerProtocolError, match="carries 2 entries, more than "
                                                 "max_entries_per_message=1"):
        decode_all(data, max_entries_per_message=1)


# ----------------------------------------------------------------------------------------------
# Limits
# ----------------------------------------------------------------------------------------------


def test_oversize_frame_is_refused_from_its_length_prefix() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    decoder.feed(struct.pack(">I", 1025) + b"\x91")  # the body has not arrived
    with pytest.raises(PeerProtocolError, match="frame of 1025 bytes exceeds max_frame_bytes=1024"):
        decoder.next_batch()
    # The decoder is broken for good: the connection must be dropped.
    decoder.feed(encode_batch([(GroupId(1), HB)]))
    with pytest.raises(PeerProtocolError, match="already failed"):
        decoder.next_batch()
    default = FrameDecoder()
    default.feed(struct.pack(">I", DEFAULT_MAX_FRAME_BYTES + 1))
    with pytest.raises(PeerProtocolError, match="exceeds max_frame_bytes=67108864"):
        default.next_batch()


def test_a_second_handshake_is_named_as_such() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_handshake(NodeId("n1"), "c"))
    with pytest.raises(PeerProtocolError, match="looks like a handshake"):
        decoder.next_batch()


def test_a_frame_exactly_at_the_limit_is_accepted() -> None:
    data = encode_batch([(GroupId(1), HB)])
    assert decode_all(data, max_frame_bytes=len(data) - 4) == [[(GroupId(1), HB)]]
    with pytest.raises(PeerProtocolError, match="exceeds"):
        decode_all(data, max_frame_bytes=len(data) - 5)


def test_encoder_refuses_frames_the_peer_would_refuse() -> None:
    big = InstallSnapshot(source=NodeId("a"), target=NodeId("b"), term=Term(1),
                          snapshot=Snapshot(data=bytes(2000)))
    with pytest.raises(PeerProtocolError, match="chunks"):
        encode_batch([(GroupId(1), big)], max_frame_bytes=1000)


@pytest.mark.parametrize(
    "bad",
    [
        (GroupId(1), "not a message"),
        (GroupId(-1), HB),
        (GroupId(1), dataclasses.replace(HB, term=Term(2**64))),
        (GroupId(1), dataclasses.replace(HB, source=object())),  # type: ignore[arg-type]
    ],
)
def test_unencodable_messages_are_bugs_of_the_sender(bad: tuple[GroupId, Message]) -> None:
    with pytest.raises((InvariantViolation, PeerProtocolError)):
        decode_all(encode_batch([bad]))


def test_negative_group_id_is_caught_by_the_decoder_if_not_the_encoder() -> None:
    # msgpack can encode a negative int; the decoder is what guarantees well-formedness.
    with pytest.raises(PeerProtocolError, match="group_id must be >= 0"):
        decode_all(encode_batch([(GroupId(-1), HB)]))


def test_bad_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_frame_bytes"):
        FrameDecoder(max_frame_bytes=0)
    with pytest.raises(ConfigError, match="max_entries_per_message"):
        FrameDecoder(max_entries_per_message=-1)


# ----------------------------------------------------------------------------------------------
# Fuzzing: garbage only ever raises PeerProtocolError, and decoding always terminates
# ----------------------------------------------------------------------------------------------


def drain(data: bytes, chunk: int, handshake_first: bool) -> None:
    """Feed `data` in chunks; every result must be NEED_DATA or well-formed."""
    decoder = FrameDecoder(max_frame_bytes=1 << 16)
    try:
        for start in range(0, len(data), chunk):
            decoder.feed(data[start:start + chunk])
            if handshake_first:
                result = decoder.next_handshake()
                if result is NEED_DATA:
                    continue
                assert isinstance(result, Handshake)
                handshake_first = False
            # Each call either consumes a frame or returns NEED_DATA, so this terminates.
            while (batch := decoder.next_batch()) is not NEED_DATA:
                # A decoded batch is well formed: it re-encodes and decodes to itself.
                assert decode_all(encode_batch(batch)) == [batch]
    except PeerProtocolError:
        pass


@settings(max_examples=300)
@given(data=st.binary(max_size=300), chunk=st.integers(1, 64), handshake_first=st.booleans())
def test_random_bytes_raise_only_peer_protocol_errors(
    data: bytes, chunk: int, handshake_first: bool
) -> None:
    drain(data, chunk, handshake_first)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    data = bytearray(encode_batch(draw(batches)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[position:position + draw(st.integers(1, 4))]
        else:
            del data[position:]
    return bytes(data)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated_frames(), chunk=st.integers(1, 512))
def test_mutated_frames_raise_only_peer_protocol_errors(data: bytes, chunk: int) -> None:
    drain(data, chunk, handshake_first=False)


# No deadline: a shared, loaded machine made one example take 472 ms (a timing check).
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=80), position=st.integers(0, 80), value=st.integers(0, 255))
def test_mutated_handshakes_raise_only_peer_protocol_errors(
    data: bytes, position: int, value: int
) -> None:
    mutated = bytearray(encode_handshake(NodeId("n1"), "cluster", secret=b"k", nonce=data[:8]))
    if position < len(mutated):
        mutated[position] = value
    drain(bytes(mutated) + data, 7, handshake_first=True)
    with contextlib.suppress(PeerProtocolError):
        decode_handshake(bytes(mutated))

"""The msgspec hot path of the peer codec (transport/wire.py) against the codec as it was.

The wire format did not change (protocol 2), so a node of this version and a node of the one
before talk during a rolling upgrade, both ways:
- new -> old: the frames are byte for byte what the old encoder (msgpack-python over the same
  arrays) produced, checked on every message type and on a frame recorded from the old codec;
- old -> new: the hot path decodes old frames to exactly what the checked path decodes, and it
  never accepts an array the checked path refuses (then the checked path names the problem).
"""

from __future__ import annotations

import struct

import msgpack  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

import phalanx.transport.codec as codec
from phalanx.errors import PeerProtocolError
from phalanx.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
)
from phalanx.raft.types import Entry, EntryType, GroupId, Index, NodeId, Term
from phalanx.transport import wire
from phalanx.transport.codec import NEED_DATA, TYPE_CODES, FrameDecoder, encode_batch

uint64 = st.integers(min_value=0, max_value=2**64 - 1)
node_ids = st.text(max_size=6).map(NodeId)
entries = st.builds(Entry, uint64.map(Term), uint64.map(Index), st.sampled_from(EntryType),
                    st.binary(max_size=40))
hot_messages = st.one_of(
    st.builds(AppendEntries, source=node_ids, target=node_ids, term=uint64.map(Term),
              prev_log_index=uint64.map(Index), prev_log_term=uint64.map(Term),
              commit=uint64.map(Index), entries=st.lists(entries, max_size=5).map(tuple)),
    st.builds(AppendEntriesResponse, source=node_ids, target=node_ids, term=uint64.map(Term),
              success=st.booleans(), index=uint64.map(Index), reject_hint=uint64.map(Index)),
    st.builds(Heartbeat, source=node_ids, target=node_ids, term=uint64.map(Term),
              commit=uint64.map(Index), round=uint64),
    st.builds(HeartbeatResponse, source=node_ids, target=node_ids, term=uint64.map(Term),
              round=uint64),
)
batches = st.lists(st.tuples(uint64.map(GroupId), hot_messages), max_size=6)


def _old_body(batch: list[tuple[GroupId, Message]]) -> bytes:
    """The body the previous codec sent: msgpack-python over the codec's message arrays."""
    arrays = []
    for group_id, message in batch:
        code, encode = codec._ENCODERS[type(message)]
        arrays.append(encode(code, group_id, message))
    body: bytes = msgpack.packb(arrays, use_bin_type=True)
    return body


def _decode(frame: bytes) -> list[tuple[GroupId, Message]]:
    decoder = FrameDecoder()
    decoder.feed(frame)
    batch = decoder.next_batch()
    assert batch is not NEED_DATA
    return batch


@settings(max_examples=300, deadline=None)
@given(batch=batches)
def test_new_frames_are_the_old_bytes_and_old_frames_decode_the_same(
    batch: list[tuple[GroupId, Message]],
) -> None:
    old = _old_body(batch)
    assert encode_batch(batch) == struct.pack(">I", len(old)) + old  # new -> old: same bytes
    hot = wire.decode_hot_batch(old, 65_536)  # old -> new: the hot path takes it ...
    assert hot == batch == codec._decode_checked(old, 65_536)  # ... as the checked path does
    assert [type(message) for _, message in hot] == [type(message) for _, message in batch]


# A frame recorded from the codec before msgspec (main at 326fc97): AppendEntries (2 entries,
# one at index 2**64-1), Heartbeat (term 2**63), AppendEntriesResponse, HeartbeatResponse,
# RequestVote (not a hot message: the checked path decodes it).
RECORDED = bytes.fromhex(
    "0000006695990307a26e31a46e32c3a90305020498030600c4017803cfffffffffffffffff01c400970500a26e"
    "31a26e32cf80000000000000000904980401a26e32a26e3103c205cd012c9606ce00010000a0a26e3103ce0001"
    "1170990102a26e33a26e31040603c3c2"
)
RECORDED_BATCH: list[tuple[GroupId, Message]] = [
    (GroupId(7), AppendEntries(
        source=NodeId("n1"), target=NodeId("n2é"), term=Term(3), prev_log_index=Index(5),
        prev_log_term=Term(2), commit=Index(4),
        entries=(Entry(Term(3), Index(6), EntryType.NORMAL, b"x"),
                 Entry(Term(3), Index(2**64 - 1), EntryType.CONF_CHANGE, b"")))),
    (GroupId(0), Heartbeat(source=NodeId("n1"), target=NodeId("n2"), term=Term(2**63),
                           commit=Index(9), round=4)),
    (GroupId(1), AppendEntriesResponse(source=NodeId("n2"), target=NodeId("n1"), term=Term(3),
                                       success=False, index=Index(5), reject_hint=Index(300))),
    (GroupId(65536), HeartbeatResponse(source=NodeId(""), target=NodeId("n1"), term=Term(3),
                                       round=70000)),
    (GroupId(2), RequestVote(source=NodeId("n3"), target=NodeId("n1"), term=Term(4),
                             last_log_index=Index(6), last_log_term=Term(3), pre_vote=True)),
]


def test_a_frame_recorded_from_the_old_codec() -> None:
    assert _decode(RECORDED) == RECORDED_BATCH
    assert encode_batch(RECORDED_BATCH) == RECORDED
    assert encode_batch([]) == bytes.fromhex("0000000190")  # the keepalive frame
    hot_only = RECORDED_BATCH[:4]
    assert _decode(encode_batch(hot_only)) == hot_only
    assert wire.decode_hot_batch(encode_batch(hot_only)[4:], 65_536) == hot_only
    assert wire.decode_hot_batch(RECORDED[4:], 65_536) is None  # RequestVote: checked path


_AE = TYPE_CODES[AppendEntries]
_HB = TYPE_CODES[Heartbeat]
_items = st.one_of(st.integers(min_value=-3, max_value=2**64 - 1), st.booleans(), st.none(),
                   st.text(max_size=3), st.binary(max_size=3), st.floats(allow_nan=False))
_near_arrays = st.one_of(
    st.lists(_items, min_size=0, max_size=9).map(lambda items: [_HB, *items]),
    st.tuples(st.lists(_items, min_size=6, max_size=8),
              st.lists(_items, max_size=9)).map(lambda pair: [_AE, *pair[0], pair[1]]),
    st.lists(_items, min_size=1, max_size=9),
)


@settings(max_examples=500, deadline=None)
@given(arrays=st.lists(_near_arrays, min_size=1, max_size=3))
def test_the_hot_path_never_accepts_what_the_checked_path_refuses(arrays: list[object]) -> None:
    body = msgpack.packb(arrays, use_bin_type=True)
    hot = wire.decode_hot_batch(body, 4)
    try:
        checked = codec._decode_checked(body, 4)
    except PeerProtocolError:
        assert hot is None, f"hot path accepted {arrays!r}"
    else:
        assert hot is None or hot == checked

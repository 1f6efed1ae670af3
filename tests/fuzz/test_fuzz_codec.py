"""Fuzzing the peer wire codec (`phalanx.transport.codec`): frames, batches and handshakes.

Properties, on any input and any chunking of it (split points are drawn by hypothesis):
- no crash: `FrameDecoder` and `decode_handshake` raise only `PeerProtocolError`, and a broken
  decoder stays broken;
- no hang: every call returns (a SIGALRM watchdog per example) and a stream of n bytes fed in
  k chunks needs at most n + k calls to drain (each frame consumes at least 4 bytes);
- bounded memory: a frame over `max_frame_bytes` is refused from its length prefix, before its
  body is buffered, and a drained decoder holds less than one frame;
- structure: random batches of every Raft message round-trip exactly; mutated frames are
  refused or decode to batches that re-encode; a handshake is never accepted with a wrong
  HMAC, a wrong secret, or fields changed under its tag.

`PHALANX_FUZZ_EXAMPLES=N` sets max_examples of every property, for soaks (see test_fuzz_resp).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from phalanx.errors import PeerProtocolError
from phalanx.raft.messages import MESSAGE_TYPES
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
    MAGIC,
    NEED_DATA,
    PROTOCOL_VERSION,
    Batch,
    FrameDecoder,
    Handshake,
    decode_handshake,
    encode_batch,
    encode_handshake,
    handshake_mac,
    verify_handshake,
)


def examples(default: int) -> int:
    """max_examples for one property: `PHALANX_FUZZ_EXAMPLES` when set, else `default`."""
    return int(os.environ.get("PHALANX_FUZZ_EXAMPLES") or default)


def fuzz_settings(default: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples(default),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Hang(Exception):
    """A decoder call did not return in time."""


@contextmanager
def watchdog(seconds: float = 20.0) -> Iterator[None]:
    """Fail (instead of hanging the run) if the block takes longer than `seconds`; restores any
    timer already armed (pytest-timeout's) on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"a decoder call did not return within {seconds} s")

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            left = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)


def chunked(data: st.DataObject, stream: bytes) -> list[bytes]:
    """Split `stream` at points drawn by hypothesis (sometimes byte by byte)."""
    if len(stream) <= 400 and data.draw(st.integers(0, 9), label="bytewise") == 0:
        return [stream[index:index + 1] for index in range(len(stream))]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts"))
    bounds = [0, *cuts, len(stream)]
    return [stream[start:end] for start, end in itertools.pairwise(bounds)]


@st.composite
def mutations(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "length"]))
        if action == "flip" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[position:position + draw(st.integers(1, 4))]
        elif action == "length":  # an extreme big-endian length, prefix or msgpack header
            data[position:position] = draw(st.sampled_from(
                [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00", b"\xdd\xff\xff\xff\xff",
                 b"\xdf\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\xdb\x7f\xff\xff\xff",
                 b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",
                 b"\xc1", b"\xd4\x01\x01", b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00"]
            ))
        else:
            del data[position:]
    return bytes(data)


# ----------------------------------------------------------------------------------------------
# Messages, from the dataclasses of phalanx.raft.messages (by field annotation, so a new field
# type fails here loudly)
# ----------------------------------------------------------------------------------------------

uint64 = st.integers(min_value=0, max_value=2**64 - 1)
node_ids = st.text(st.characters(codec="utf-8"), max_size=6).map(NodeId)
node_id_tuples = st.lists(node_ids, max_size=4).map(tuple)
entries = st.builds(
    Entry, uint64.map(Term), uint64.map(Index), st.sampled_from(EntryType), st.binary(max_size=40)
)
snapshots = st.builds(
    Snapshot,
    meta=st.builds(
        SnapshotMeta,
        index=uint64.map(Index),
        term=uint64.map(Term),
        conf_state=st.builds(ConfState, voters=node_id_tuples, learners=node_id_tuples,
                             voters_outgoing=node_id_tuples, learners_next=node_id_tuples,
                             auto_leave=st.booleans()),
    ),
    data=st.binary(max_size=200),
)
FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "NodeId": node_ids,
    "Term": uint64,
    "Index": uint64,
    "int": uint64,
    "bool": st.booleans(),
    "bytes": st.binary(max_size=40),
    "tuple[Entry, ...]": st.lists(entries, max_size=8).map(tuple),
    "Snapshot": snapshots,
}
messages = st.one_of([
    st.builds(cls, **{f.name: FIELD_STRATEGIES[str(f.type)] for f in dataclasses.fields(cls)})
    for cls in MESSAGE_TYPES
])
batches = st.lists(st.tuples(uint64.map(GroupId), messages), max_size=6)

MAX_FRAME = 1 << 16


def drain(
    chunks: list[bytes], *, handshake_first: bool, max_frame_bytes: int = MAX_FRAME
) -> tuple[Handshake | None, list[Batch], str | None]:
    """Feed `chunks` one at a time, draining after each; return what decoded and the error."""
    decoder = FrameDecoder(max_frame_bytes=max_frame_bytes)
    handshake: Handshake | None = None
    decoded: list[Batch] = []
    calls_max = sum(map(len, chunks)) + len(chunks)
    calls = 0
    try:
        with watchdog():
            for chunk in chunks:
                decoder.feed(chunk)
                if handshake_first and handshake is None:
                    calls += 1
                    result = decoder.next_handshake()
                    if result is NEED_DATA:
                        continue
                    assert isinstance(result, Handshake)
                    handshake = result
                while True:
                    calls += 1
                    assert calls <= calls_max, "the decoder returns without consuming anything"
                    batch = decoder.next_batch()
                    if batch is NEED_DATA:
                        break
                    decoded.append(batch)
                # Less than one frame is left, and the buffer holds at most a compaction's
                # worth of consumed bytes more (see FrameDecoder._consume).
                assert decoder.buffered_bytes < 4 + max_frame_bytes
                assert len(decoder._buffer) <= 65536 + 2 * (4 + max_frame_bytes) + len(chunk)
    except PeerProtocolError as error:
        with pytest.raises(PeerProtocolError):
            decoder.next_batch()  # broken for good
        return handshake, decoded, str(error)
    return handshake, decoded, None


def assert_well_formed(decoded: list[Batch]) -> None:
    """Whatever decoded is a well-formed batch: it re-encodes and decodes to itself."""
    for batch in decoded:
        assert drain([encode_batch(batch)], handshake_first=False)[1:] == ([batch], None)


@fuzz_settings(60)
@given(frames=st.lists(batches, max_size=4), handshake=st.booleans(), data=st.data())
def test_batches_round_trip_under_any_chunking(
    frames: list[Batch], handshake: bool, data: st.DataObject
) -> None:
    hello = encode_handshake(NodeId("n1"), "c", secret=b"s", nonce=b"x") if handshake else b""
    stream = hello + b"".join(encode_batch(batch) for batch in frames)
    got_handshake, decoded, error = drain(chunked(data, stream), handshake_first=handshake)
    assert (decoded, error) == (frames, None)
    if handshake:
        assert got_handshake is not None
        verify_handshake(got_handshake, cluster_id="c", secret=b"s")


@fuzz_settings(150)
@given(stream=st.binary(max_size=400), handshake=st.booleans(), data=st.data())
def test_arbitrary_bytes_only_raise_peer_protocol_errors(
    stream: bytes, handshake: bool, data: st.DataObject
) -> None:
    if handshake and data.draw(st.booleans(), label="magic"):
        stream = MAGIC + struct.pack(">H", PROTOCOL_VERSION) + stream  # past the first check
    _, decoded, _ = drain(chunked(data, stream), handshake_first=handshake)
    assert_well_formed(decoded)


@st.composite
def msgpack_values(draw: st.DrawFn) -> object:
    """Message-shaped msgpack arrays with arbitrary items, to get past the first checks."""
    item = st.one_of(
        st.integers(-(2**63), 2**64 - 1), st.booleans(), st.none(), st.binary(max_size=8),
        st.text(max_size=4), st.floats(), st.lists(st.integers(-2, 5) | st.binary(max_size=3),
                                                   max_size=9),
    )
    code = draw(st.integers(-1, 12))
    return [[code, *draw(st.lists(item, max_size=13))] for _ in range(draw(st.integers(1, 3)))]


@fuzz_settings(120)
@given(payload=msgpack_values(), data=st.data())
def test_message_shaped_garbage_only_raises_peer_protocol_errors(
    payload: object, data: st.DataObject
) -> None:
    body = msgpack.packb(payload, use_bin_type=True)
    stream = struct.pack(">I", len(body)) + body
    _, decoded, _ = drain(chunked(data, stream), handshake_first=False)
    assert_well_formed(decoded)


@fuzz_settings(100)
@given(data=st.data())
def test_mutated_frames_only_raise_peer_protocol_errors(data: st.DataObject) -> None:
    frames = data.draw(st.lists(batches, min_size=1, max_size=3), label="frames")
    original = b"".join(encode_batch(batch) for batch in frames)
    mutated = data.draw(mutations(original), label="mutated")
    _, decoded, _ = drain(chunked(data, mutated), handshake_first=False)
    assert_well_formed(decoded)


@fuzz_settings(100)
@given(
    length=st.integers(MAX_FRAME + 1, 2**32 - 1),
    second_handshake=st.booleans(),
    data=st.data(),
)
def test_oversize_frames_are_refused_from_their_length_prefix(
    length: int, second_handshake: bool, data: st.DataObject
) -> None:
    prefix = struct.pack(">I", length)
    if second_handshake:
        prefix = MAGIC  # read as a length prefix: 0x50484C58, far over the limit
    decoder = FrameDecoder(max_frame_bytes=MAX_FRAME)
    cut = data.draw(st.integers(0, 3), label="cut")
    decoder.feed(prefix[:cut])
    assert decoder.next_batch() is NEED_DATA
    decoder.feed(prefix[cut:])
    with pytest.raises(PeerProtocolError, match="exceeds max_frame_bytes"):
        decoder.next_batch()
    assert decoder.buffered_bytes == 4  # nothing of the body was waited for
    decoder.feed(b"\x00" * 1000)
    with pytest.raises(PeerProtocolError, match="already failed"):
        decoder.next_batch()


@pytest.mark.parametrize("max_frame_bytes", [2, 100, MAX_FRAME])
def test_a_frame_just_under_the_limit_is_buffered_only_as_it_arrives(max_frame_bytes: int) -> None:
    decoder = FrameDecoder(max_frame_bytes=max_frame_bytes)
    decoder.feed(struct.pack(">I", max_frame_bytes) + b"\x91")  # declared, one byte sent
    assert decoder.next_batch() is NEED_DATA
    assert decoder.buffered_bytes == 5
    assert len(decoder._buffer) == 5  # not reserved up front


# ----------------------------------------------------------------------------------------------
# Handshakes
# ----------------------------------------------------------------------------------------------

secrets = st.binary(min_size=1, max_size=16)
short_texts = st.text(st.characters(codec="utf-8"), max_size=8)


@fuzz_settings(100)
@given(node_id=short_texts, cluster_id=short_texts, nonce=st.binary(max_size=8), secret=secrets,
       other_secret=secrets, data=st.data())
def test_handshakes_are_never_accepted_with_a_wrong_tag(
    node_id: str, cluster_id: str, nonce: bytes, secret: bytes, other_secret: bytes,
    data: st.DataObject,
) -> None:
    original = encode_handshake(NodeId(node_id), cluster_id, secret=secret, nonce=nonce)
    handshake, _, error = drain(chunked(data, original), handshake_first=True)
    assert error is None and handshake is not None
    verify_handshake(handshake, cluster_id=cluster_id, secret=secret)
    if other_secret != secret:
        with pytest.raises(PeerProtocolError, match="wrong HMAC"):
            verify_handshake(handshake, cluster_id=cluster_id, secret=other_secret)
    unsigned = decode_handshake(encode_handshake(NodeId(node_id), cluster_id, nonce=nonce))
    with pytest.raises(PeerProtocolError, match="no authentication tag"):
        verify_handshake(unsigned, cluster_id=cluster_id, secret=secret)
    forged = dataclasses.replace(handshake, mac=data.draw(st.binary(min_size=32, max_size=32)))
    assume(forged.mac != handshake.mac)
    with pytest.raises(PeerProtocolError, match="wrong HMAC"):
        verify_handshake(forged, cluster_id=cluster_id, secret=secret)

    # A mutated frame is refused, or decodes; if it then verifies, it is the original handshake.
    mutated = data.draw(mutations(original), label="mutated")
    try:
        with watchdog():
            decoded = decode_handshake(mutated)
            verify_handshake(decoded, cluster_id=decoded.cluster_id, secret=secret)
    except PeerProtocolError:
        return
    assert decoded == handshake
    assert decoded.mac == handshake_mac(secret, version=decoded.version, node_id=node_id,
                                        cluster_id=cluster_id, nonce=nonce)


@fuzz_settings(150)
@given(stream=st.binary(max_size=120), magic=st.booleans(), data=st.data())
def test_garbage_handshakes_only_raise_peer_protocol_errors(
    stream: bytes, magic: bool, data: st.DataObject
) -> None:
    if magic:
        body = stream[2:]
        stream = MAGIC + stream[:2] + struct.pack(">I", len(body)) + body
    handshake, decoded, _ = drain(chunked(data, stream), handshake_first=True)
    assert_well_formed(decoded)
    try:
        with watchdog():
            handshake = decode_handshake(stream)
    except PeerProtocolError:
        return
    # Whatever decoded has the declared field types, and never verifies under a secret by luck.
    assert type(handshake.node_id) is str and type(handshake.cluster_id) is str
    assert type(handshake.nonce) is bytes and len(handshake.mac) in (0, 32)
    with pytest.raises(PeerProtocolError):
        verify_handshake(handshake, cluster_id=handshake.cluster_id, secret=b"secret")

"""How a blocking XREAD / XREADGROUP is turned into its non-blocking attempts
(`server/front/blocking_streams.py`): BLOCK removed, ids kept in place for `$` resolution,
malformed or non-blocking requests left to the state machine. The waiting itself runs on a
real cluster in tests/integration/test_streams_cluster.py."""

from __future__ import annotations

from phalanx.server.front.blocking_streams import blocks, stream_request


def _words(text: str) -> list[bytes]:
    return [word.encode() for word in text.split()]


def test_blocks_only_with_a_block_option_before_streams() -> None:
    assert blocks(b"XREAD", _words("XREAD BLOCK 0 STREAMS s $"))
    assert blocks(b"XREADGROUP", _words("XREADGROUP GROUP g c block 10 STREAMS s >"))
    assert not blocks(b"XREAD", _words("XREAD COUNT 1 STREAMS s $"))
    assert not blocks(b"XREAD", _words("XREAD STREAMS BLOCK 0"))  # a key named BLOCK
    assert not blocks(b"XRANGE", _words("XRANGE BLOCK - +"))


def test_the_attempt_drops_block_and_keeps_the_rest() -> None:
    request = stream_request(b"XREAD", _words("XREAD COUNT 2 BLOCK 500 STREAMS a b $ 0-1"), 0)
    assert request is not None
    assert request.attempt == _words("XREAD COUNT 2 STREAMS a b $ 0-1")
    assert request.keys == [b"a", b"b"] and request.timeout_ms == 500
    assert [request.attempt[p] for p in request.id_positions] == [b"$", b"0-1"]
    assert request.group is None
    group = stream_request(b"XREADGROUP",
                           _words("XREADGROUP GROUP g c BLOCK 0 NOACK STREAMS q >"), 0)
    assert group is not None and group.group == b"g" and group.timeout_ms == 0
    assert group.attempt == _words("XREADGROUP GROUP g c NOACK STREAMS q >")


def test_malformed_or_non_blocking_requests_go_to_the_state_machine() -> None:
    assert stream_request(b"XREAD", _words("XREAD STREAMS s $"), 0) is None
    assert stream_request(b"XREAD", _words("XREAD BLOCK x STREAMS s $"), 0) is None
    assert stream_request(b"XREAD", _words("XREAD BLOCK 1 STREAMS s"), 0) is None
    assert stream_request(b"XREADGROUP", _words("XREADGROUP BLOCK 1 STREAMS s >"), 0) is None

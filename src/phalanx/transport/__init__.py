"""Peer transport: the versioned wire codec (`phalanx.transport.codec`), and later the asyncio
TCP transport with per-peer batching, its in-memory twin and the fault rules of the chaos lab.

Rules of this package:
- It may import `phalanx.raft` (messages and types) and `phalanx.errors`, nothing above it.
- Every byte a peer sends is untrusted: malformed input raises `PeerProtocolError` and the
  connection is dropped; the process stays up.
"""

from phalanx.transport.codec import (
    NEED_DATA,
    PROTOCOL_VERSION,
    FrameDecoder,
    Handshake,
    decode_handshake,
    encode_batch,
    encode_handshake,
    verify_handshake,
)

__all__ = [
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "FrameDecoder",
    "Handshake",
    "decode_handshake",
    "encode_batch",
    "encode_handshake",
    "verify_handshake",
]

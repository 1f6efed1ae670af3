"""phalanx.resp: the pure RESP2/RESP3 codec, in the h11 style (bring your own IO).

Rules of this package:
- Pure: stdlib only (hiredis optional, behind the same interface); no asyncio, socket, time,
  threading, sqlite3 or random.
- Three verbs: `parser.feed(bytes)`, `parser.next_command() -> list[bytes] | NEED_DATA`, and
  `encode(reply, protocol) -> bytes`. `RespReplyParser` is the mirror image for clients.
- A client's protocol error raises `ClientProtocolError` with Redis's message; reply with it as
  an error and close the connection, as Redis does.
- The private modules each keep their own rules; this file only re-exports the public API.
"""

from __future__ import annotations

from phalanx.resp._encoder import (
    EMPTY_ARRAY,
    EMPTY_BULK,
    NULL_ARRAY_RESP2,
    NULL_BULK,
    NULL_RESP3,
    OK,
    ONE,
    PONG,
    QUEUED,
    ZERO,
    encode,
    encode_command,
)
from phalanx.resp._hiredis import HIREDIS_AVAILABLE, HiredisRespParser, create_parser
from phalanx.resp._inline import split_inline_arguments
from phalanx.resp._parser import RespParser, parse_canonical_integer
from phalanx.resp._reply_parser import RespReplyParser
from phalanx.resp._types import (
    DEFAULT_LIMITS,
    NEED_DATA,
    NULL_ARRAY,
    BigNumber,
    Command,
    ErrorReply,
    NeedData,
    NullArray,
    OrderedSet,
    Push,
    Reply,
    RespLimits,
    SimpleString,
    VerbatimString,
)

__all__ = [
    "DEFAULT_LIMITS",
    "EMPTY_ARRAY",
    "EMPTY_BULK",
    "HIREDIS_AVAILABLE",
    "NEED_DATA",
    "NULL_ARRAY",
    "NULL_ARRAY_RESP2",
    "NULL_BULK",
    "NULL_RESP3",
    "OK",
    "ONE",
    "PONG",
    "QUEUED",
    "ZERO",
    "BigNumber",
    "Command",
    "ErrorReply",
    "HiredisRespParser",
    "NeedData",
    "NullArray",
    "OrderedSet",
    "Push",
    "Reply",
    "RespLimits",
    "RespParser",
    "RespReplyParser",
    "SimpleString",
    "VerbatimString",
    "create_parser",
    "encode",
    "encode_command",
    "parse_canonical_integer",
    "split_inline_arguments",
]

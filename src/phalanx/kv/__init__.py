"""phalanx.kv: the pure, deterministic replicated state machine holding the Redis data model.

Rules of this package:
- Standard library only (plus `phalanx.errors`); never asyncio, socket, time, threading,
  sqlite3 or module-level random.
- Deterministic: the same log gives the same replies and byte-identical snapshots on every
  replica. Time enters only as the leader-stamped `now_ms` of each command.
- Files: `codec.py` (command <-> log-entry bytes), `machine.py` (KVStateMachine, the
  commands), `snapshot.py` (snapshot format), `replies.py` (reply values), `numbers.py`
  (Redis integer/float rules), `glob.py` (Redis glob patterns).
"""

from phalanx.kv.codec import Command, decode_command, encode_command
from phalanx.kv.glob import glob_match
from phalanx.kv.machine import (
    COMMAND_NAMES,
    DEFAULT_MAX_SESSIONS,
    EXPIRE_COMMAND,
    KVStateMachine,
    expire_command_args,
    is_known,
    is_write,
)
from phalanx.kv.replies import OK, Error, Reply

__all__ = [
    "COMMAND_NAMES",
    "DEFAULT_MAX_SESSIONS",
    "EXPIRE_COMMAND",
    "OK",
    "Command",
    "Error",
    "KVStateMachine",
    "Reply",
    "decode_command",
    "encode_command",
    "expire_command_args",
    "glob_match",
    "is_known",
    "is_write",
]

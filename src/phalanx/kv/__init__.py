"""phalanx.kv: the pure, deterministic replicated state machine holding the Redis data model.

Rules of this package:
- Standard library only (plus `phalanx.errors`); never asyncio, socket, time, threading,
  sqlite3 or module-level random.
- Deterministic: the same log gives the same replies and byte-identical snapshots on every
  replica. Time enters only as the leader-stamped `now_ms` of each command.
- Files: `machine.py` (KVStateMachine: apply, client sessions, replicated clock, snapshot
  hooks, dispatch), `keyspace.py` (the keys, their values and expiries, the expiry heap and
  SCAN index), `table.py` (the one command table: every command's arity, flags, key positions,
  ACL categories and handler; placement derives key slots from it), `spec.py` (one row of it),
  `commands/` (one module per command family: strings, keys, hashes, sets, lists),
  `codec.py` (command <-> log-entry bytes), `snapshot.py` (snapshot format), `replies.py`
  (reply values), `numbers.py` (Redis integer/float rules), `glob.py` (Redis glob patterns).

How to add a command (say HSTRLEN; details in docs/architecture.md):
1. Write its handler in its family's module, `commands/hashes.py`:
   `def _hstrlen(db: Keyspace, args: Args, now: int) -> Reply` (`args` excludes the name; the
   arity is already checked). Read with `db.live`; write with `db.live_for_write`, `db.store`,
   `db.delete`; answer bad input with an `Error` carrying Redis's exact text, never raise.
2. Add its row to that module's `COMMANDS`, copied from redis-server's `COMMAND INFO`:
   `CommandSpec("hstrlen", 3, ("readonly", "fast"), 1, 1, 1, ("@read", "@hash", "@fast"),
   _hstrlen)`. "write" vs "readonly" decides log vs local read; key positions decide the slot.
3. A new family (`commands/zsets.py`) adds one line to `table.py`'s `STATE_MACHINE_COMMANDS`; a
   new value type also touches `snapshot.py` (format) and `commands/keys.py` (TYPE names).
4. Test it in tests/kv (test_commands.py; test_differential.py runs it against redis-server).
"""

from phalanx.kv.codec import Command, decode_command, encode_command
from phalanx.kv.commands.keys import EXPIRE_COMMAND, expire_command_args
from phalanx.kv.glob import glob_match
from phalanx.kv.machine import DEFAULT_MAX_SESSIONS, KVStateMachine
from phalanx.kv.replies import OK, Error, Reply
from phalanx.kv.spec import CommandSpec
from phalanx.kv.table import (
    COMMAND_NAMES,
    COMMAND_SPECS,
    command_info,
    command_spec,
    is_known,
    is_write,
)

__all__ = [
    "COMMAND_NAMES",
    "COMMAND_SPECS",
    "DEFAULT_MAX_SESSIONS",
    "EXPIRE_COMMAND",
    "OK",
    "Command",
    "CommandSpec",
    "Error",
    "KVStateMachine",
    "Reply",
    "command_info",
    "command_spec",
    "decode_command",
    "encode_command",
    "expire_command_args",
    "glob_match",
    "is_known",
    "is_write",
]

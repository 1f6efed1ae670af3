"""The command table's rows of the active-active wrappers (docs/active-active.md, issue 18).

A command on an active-active key travels as `PHALANX.AA <command> <key> <args...>` (a write,
through the log) or `PHALANX.AAR <command> <key> <args...>` (a read); the key is the third word,
so routing, ownership checks and forwarding treat it as any keyed command. The shard machine
(`placement/shard.py`) runs them on its `crdt.ActiveActiveStore`, never on this keyspace: the
handlers here only answer if one reaches the plain key-value machine (a bug or a hand-made
entry).

Rules of this file: pure; rows only.
"""

from __future__ import annotations

from phalanx.kv.keyspace import Keyspace
from phalanx.kv.replies import Error, Reply
from phalanx.kv.spec import Args, CommandSpec

AA_WRITE = b"PHALANX.AA"
AA_READ = b"PHALANX.AAR"


def _not_here(keyspace: Keyspace, args: Args, now: int) -> Reply:
    return Error("ERR phalanx active-active commands are applied by a shard's active-active "
                 "store, not the key-value machine")


INTERNAL_COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("phalanx.aa", -3, ("write",), 2, 2, 1, ("@write", "@slow"), _not_here),
    CommandSpec("phalanx.aar", -3, ("readonly",), 2, 2, 1, ("@read", "@slow"), _not_here),
)
"""The wrappers of active-active commands (see the module docstring)."""

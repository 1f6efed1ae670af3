"""Transactions in the state machine: one `PHALANX.EXEC` log entry applies a whole MULTI ...
EXEC atomically, and `PHALANX.WATCH` is the linearizable read behind WATCH.

The design (Redis semantics: https://redis.io/topics/transactions/ and
https://redis.io/commands/exec; the front end's half is server/front/transactions.py):
- MULTI queues commands in the client's session on the node it is connected to; nothing
  reaches the log before EXEC. EXEC becomes ONE log entry, `PHALANX.EXEC payload keys...`
  (payload: `codec.encode_transaction`; keys: every key of the transaction, watched or queued,
  listed so the shard checks it owns all of them at apply time, like any command's keys).
  Every replica applies the queued commands one after the other inside that entry, so no other
  command runs in between, and the EXEC reply is the array of their replies. A command that
  fails at run time (WRONGTYPE, ...) puts its error in the array; the others still run
  (Redis does not roll back). A client retry of the same entry is answered from the session
  table like any command (machine.py).
- WATCH reads, linearizably through the normal read path, `PHALANX.WATCH key...`: the
  keyspace's version clock at the read, and for each key whether it was logically expired.
  The EXEC entry carries those (key, version, expired) triples. At APPLY time, on replicated
  state, the entry aborts (reply None: EXEC's null) when a watched key changed after the read
  (`Keyspace.version_of(key)` newer than the version read), or when a key that was not expired
  at WATCH has expired since (as Redis 7.0 does). Since the check runs on every replica at the
  same log position, a change committed under any leader, before or after a failover or a
  snapshot, aborts the transaction; the node the client talks to keeps no state that matters
  for correctness, and a closed connection leaves nothing behind.
- Known differences from Redis, all in the safe direction (a spurious abort, never a missed
  change): a write command that takes a key and leaves it unchanged (SADD of a present
  member, ...) counts as a change; a key already expired at WATCH and then deleted by the
  expiry sweep counts as a change; more than `WATCH_TABLE_SIZE` distinct keys changed in the
  shard between WATCH and EXEC abort it (keyspace.py), and so does a shard merge.

Rules of this module: pure and deterministic (standard library and the kv modules); a bad
payload is an `Error` reply, never an exception; nothing runs unless the whole entry is valid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from phalanx.errors import Corrupt
from phalanx.kv.codec import decode_transaction
from phalanx.kv.keyspace import Keyspace
from phalanx.kv.replies import Error, Reply, error_text
from phalanx.kv.spec import Args, CommandSpec

EXEC_COMMAND = b"PHALANX.EXEC"
"""`PHALANX.EXEC payload key...`: a whole transaction as one log entry (internal)."""

WATCH_COMMAND = b"PHALANX.WATCH"
"""`PHALANX.WATCH key...`: the version clock now, then 1/0 per key: logically expired."""


def _watch(db: Keyspace, args: Args, now: int) -> Reply:
    data = db.data
    expires = db.expires
    reply: list[Reply] = [db.version]
    for key in args:
        when = expires.get(key)
        reply.append(1 if when is not None and now >= when and key in data else 0)
    return reply


def exec_placeholder(db: Keyspace, args: Args, now: int) -> Reply:
    """PHALANX.EXEC's row in the table; the state machine runs `run_transaction` instead."""
    return Error("ERR PHALANX.EXEC is applied by the state machine only")


def run_transaction(
    db: Keyspace,
    args: Args,
    now: int,
    execute: Callable[[bytes, Args, int], Reply],
    keys_of: Callable[[bytes, Sequence[bytes]], list[bytes]],
) -> Reply:
    """Apply a `PHALANX.EXEC` entry: None when a watch fails, else the replies of the queued
    commands (run through `execute`, the machine's dispatch). `keys_of` gives a command's keys
    from its table row: each must be listed in the entry (the shard checked those)."""
    try:
        transaction = decode_transaction(args[0])
    except Corrupt as exc:
        return Error(f"ERR PHALANX.EXEC: {exc}")
    listed = set(args[1:])
    for watch in transaction.watches:
        if watch.key not in listed:
            return Error("ERR PHALANX.EXEC: a watched key is not listed")
    for command in transaction.commands:
        name = command[0]
        if name.upper() == EXEC_COMMAND:
            return Error("ERR PHALANX.EXEC cannot be nested")
        for key in keys_of(name, command[1:]):
            if key not in listed:
                return Error(f"ERR PHALANX.EXEC: key '{error_text(key[:128])}' of "
                             f"'{error_text(name[:64])}' is not listed")
    expires = db.expires
    for watch in transaction.watches:
        key = watch.key
        if db.version_of(key) > watch.version:
            return None
        if not watch.expired and key in db.data:
            when = expires.get(key)
            if when is not None and now >= when:
                return None
    return [execute(command[0], command[1:], now) for command in transaction.commands]


COMMANDS: tuple[CommandSpec, ...] = (
    # Answered by the front end (server/front/transactions.py); Redis 7.0's COMMAND INFO.
    CommandSpec("multi", 1, ("noscript", "loading", "stale", "fast", "allow_busy"), 0, 0, 0,
                ("@fast", "@transaction")),
    CommandSpec("exec", 1, ("noscript", "loading", "stale", "skip_slowlog"), 0, 0, 0,
                ("@slow", "@transaction")),
    CommandSpec("discard", 1, ("noscript", "loading", "stale", "fast", "allow_busy"), 0, 0, 0,
                ("@fast", "@transaction")),
    CommandSpec("watch", -2, ("noscript", "loading", "stale", "fast", "allow_busy"), 1, -1, 1,
                ("@fast", "@transaction")),
    CommandSpec("unwatch", 1, ("noscript", "loading", "stale", "fast", "allow_busy"), 0, 0, 0,
                ("@fast", "@transaction")),
)
"""The transaction commands clients send; the front end answers them."""

INTERNAL_COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("phalanx.exec", -2, ("write",), 2, -1, 1, ("@write", "@slow", "@transaction"),
                exec_placeholder),
    CommandSpec("phalanx.watch", -2, ("readonly", "fast"), 1, -1, 1,
                ("@read", "@fast", "@transaction"), _watch),
)
"""The state machine's half of transactions (internal: sent by the front end)."""

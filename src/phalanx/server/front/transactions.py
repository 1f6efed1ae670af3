"""Transactions in the front end: MULTI, EXEC, DISCARD, WATCH, UNWATCH (and PHALANX.EXEC, an
EXEC forwarded by another node).

Redis semantics (https://redis.io/topics/transactions/, https://redis.io/commands/exec,
checked reply by reply against redis-server 7.0 in tests/server/test_transactions_redis.py):
- After MULTI every command is queued (+QUEUED) except EXEC, DISCARD, MULTI and WATCH. A
  command refused when queued (unknown, wrong arity, NOPERM, over max_value_bytes, keys over
  shards, -MOVED) gets its error and marks the transaction: EXEC then answers `-EXECABORT
  Transaction discarded because of previous errors.` and runs nothing. MULTI inside MULTI and
  WATCH inside MULTI get their errors without marking it. EXEC or DISCARD without MULTI get
  theirs; EXEC with arguments discards the transaction (`-EXECABORT ... because of: ...`).
- EXEC replies the array of the queued commands' replies; a command failing at run time has
  its error in the array and the others still run (no rollback). When a watched key changed
  between its WATCH and the EXEC, EXEC replies a null array (RESP2 `*-1`, RESP3 `_`), which
  redis-py raises as WatchError. EXEC, DISCARD and the connection's end unwatch every key.

How it runs (the state machine's half, and why WATCH survives failover: kv/transaction.py):
- The queue and the watched keys live in the client's session (`ClientState`) on the node it
  is connected to. EXEC sends the state-machine commands of the transaction as ONE write,
  `PHALANX.EXEC payload keys...`, through the one write path (`DataRouter.write`): proposed
  at once on the shard's local leader, forwarded whole to the leader by a follower (the leader
  receives PHALANX.EXEC, handled here too), or -MOVED in `redirect = "moved"` mode.
- WATCH is a linearizable read through the one read path (`DataRouter.read`) of
  `PHALANX.WATCH key...`: the shard's version clock and each key's expiry state. EXEC carries
  them; the watch check is made when the entry is APPLIED, on every replica, so a write that
  committed under any leader between WATCH and EXEC aborts it. A WATCH whose read failed
  makes EXEC abort (never a transaction run unprotected).
- Every key of a transaction, watched or queued, must live in one shard: otherwise EXEC
  answers `-CROSSSLOT Keys in request don't hash to the same slot` and the transaction is
  discarded (Redis Cluster's rule; phalanx, as for multi-key commands, accepts keys of
  different slots of one shard). A keyless data command (DBSIZE, FLUSHALL, KEYS...) runs on
  the transaction's shard (slot 0's when it has no key), as Redis Cluster runs it on its node.
- Commands the front end answers (PING, ECHO, CLIENT, ...) are not replicated: they are
  answered in their place in the EXEC array once the entry applied (not at all when the
  transaction aborts); a queued UNWATCH is a no-op (EXEC already unwatched).
- State changes happen synchronously, in command order, as commands are parsed (a pipelined
  `WATCH k; MULTI; ...; EXEC` is exact): EXEC leaves MULTI and unwatches at once, then waits
  for the connection's WATCH reads still running before it proposes.

Rules of this file: the node is seen only through `ReplicaRegistry` and the router; errors
are `CommandError` with Redis's text; see docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from phalanx.errors import CommandError, Corrupt, CrossSlotError, PhalanxError
from phalanx.kv import Error as KVError
from phalanx.kv import command_spec, is_known, is_write
from phalanx.kv.codec import Transaction, Watch, decode_transaction, encode_transaction
from phalanx.kv.table import BLOCKING_COMMANDS
from phalanx.kv.transaction import EXEC_COMMAND, WATCH_COMMAND
from phalanx.placement import ShardInfo, command_keys, key_slot
from phalanx.resp import NULL_ARRAY, ErrorReply, SimpleString, encode
from phalanx.server.front.blocking import PopRequest, pop_request
from phalanx.server.front.replies import error_text, resp3_reply, to_resp

if TYPE_CHECKING:
    from phalanx.server.front.replicas import ReplicaRegistry
    from phalanx.server.front.router import DataRouter
    from phalanx.server.front.session import ClientState

OK = SimpleString("OK")
_QUEUED = b"+QUEUED\r\n"
#: Commands never queued: they act on the transaction itself (QUIT ends the connection).
CONTROL = frozenset({b"EXEC", b"DISCARD", b"MULTI", b"WATCH", b"QUIT", b"RESET"})
"""Commands that run at once after MULTI instead of being queued (as redis-server's
processCommand decides: EXEC, DISCARD, MULTI, WATCH, QUIT, RESET)."""
EXECABORT = "EXECABORT Transaction discarded because of previous errors."
_CROSSSLOT = str(CrossSlotError())


class FrontCommand(Protocol):
    """A front-end table entry (listener.Handler)."""

    @property
    def run(self) -> Callable[[ClientState, list[bytes]], object]: ...

    @property
    def awaits(self) -> bool: ...


def unknown_command_text(arguments: list[bytes]) -> str:
    """Redis's error for an unknown command: its quoted arguments while under 128 chars."""
    shown = ""
    for argument in arguments[1:]:
        if len(shown) >= 128:
            break
        shown += f"'{argument.decode(errors='replace')[:128 - len(shown)]}' "
    return (f"ERR unknown command '{arguments[0].decode(errors='replace')[:128]}', "
            f"with args beginning with: {shown}")


def _arity_text(name: str) -> str:
    return f"ERR wrong number of arguments for '{name}' command"


def _shaped(state: ClientState, arguments: list[bytes], reply: object) -> object:
    """One reply of the EXEC array as RESP, in the RESP3 shape of its command for a RESP3
    session (`replies.resp3_reply`), as the reply of the command alone would be."""
    value = to_resp(reply)
    return resp3_reply(arguments, value) if state.protocol == 3 else value


class Transactions:
    """MULTI / EXEC / DISCARD / WATCH / UNWATCH, and the queueing of commands after MULTI."""

    def __init__(self, replicas: ReplicaRegistry, router: DataRouter) -> None:
        self.replicas = replicas
        self.config = replicas.config
        self.router = router
        #: The listener's command table (set by the listener once built): the commands the
        #: front end answers itself, answered in their place in an EXEC.
        self.commands: Mapping[bytes, FrontCommand] = {}

    # -- MULTI and queueing ----------------------------------------------------------------
    def multi(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) != 1:
            self._refused(state)
            raise CommandError(_arity_text("multi"))
        if state.multi is not None:
            raise CommandError("ERR MULTI calls can not be nested")
        state.multi = []
        state.multi_failed = False
        state.multi_bytes = 0
        return OK

    def queue(self, state: ClientState, name: bytes, arguments: list[bytes],
              handler: FrontCommand | None) -> bytes:
        """A command sent after MULTI: +QUEUED, or its refusal (which marks the transaction)."""
        queued = state.multi
        assert queued is not None
        size = state.multi_bytes + sum(len(argument) for argument in arguments)
        refusal = self._refusal(state, name, arguments, handler)
        if refusal is None and size > self.config.max_bulk_bytes:
            refusal = (f"ERR phalanx: the transaction exceeds max_bulk_bytes "
                       f"({self.config.max_bulk_bytes})")
        if refusal is not None:
            state.multi_failed = True
            return encode(ErrorReply(refusal), state.protocol)
        queued.append(arguments)
        state.multi_bytes = size
        return _QUEUED

    def _refusal(self, state: ClientState, name: bytes, arguments: list[bytes],
                 handler: FrontCommand | None) -> str | None:
        """Why a command cannot be queued (Redis's checks before it queues), or None."""
        if handler is None and not is_known(name):
            return unknown_command_text(arguments)
        spec = command_spec(name)
        count = len(arguments)
        if spec is not None and ((spec.arity > 0 and count != spec.arity)
                                 or count < -spec.arity):
            return _arity_text(spec.name)
        if handler is not None:
            # A Pub/Sub (un)subscription answers with its own frames and changes the
            # connection's mode: phalanx does not queue it (Redis does; a deliberate difference).
            return ("ERR phalanx: Pub/Sub (un)subscriptions are not allowed inside a transaction"
                    if getattr(handler, "raw", False) else None)
        args = tuple(arguments[1:])
        write = is_write(name)
        if write:
            too_big = next((a for a in args if len(a) > self.config.max_value_bytes), None)
            if too_big is not None:
                return (f"ERR value of {len(too_big)} bytes exceeds max_value_bytes "
                        f"({self.config.max_value_bytes})")
        keys = command_keys(name, args)
        if keys:
            slot = self.router.one_shard_slot(name, args)
            if slot is None:
                return _CROSSSLOT
            moved = self.router.redirection(state, slot, write)
            if moved is not None:
                return moved.text
        return None

    # -- DISCARD, UNWATCH ------------------------------------------------------------------
    def discard(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) != 1:
            self._refused(state)
            raise CommandError(_arity_text("discard"))
        if state.multi is None:
            raise CommandError("ERR DISCARD without MULTI")
        self._discard(state)
        return OK

    def unwatch(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) != 1:
            raise CommandError(_arity_text("unwatch"))
        self._unwatch(state)
        return OK

    @staticmethod
    def _refused(state: ClientState) -> None:
        """A transaction command refused before it ran marks an open transaction."""
        if state.multi is not None:
            state.multi_failed = True

    @staticmethod
    def _unwatch(state: ClientState) -> None:
        # New containers: a WATCH read still running fills the old ones, now forgotten.
        state.watched = {}
        state.watch_reads = []

    def _discard(self, state: ClientState) -> None:
        state.multi = None
        state.multi_failed = False
        state.multi_bytes = 0
        self._unwatch(state)

    # -- WATCH -----------------------------------------------------------------------------
    def watch(self, state: ClientState, arguments: list[bytes]) -> object:
        """Read the keys' versions linearizably; OK (or a future of it) once recorded."""
        if len(arguments) < 2:
            self._refused(state)
            raise CommandError(_arity_text("watch"))
        if state.multi is not None:
            raise CommandError("ERR WATCH inside MULTI is not allowed")
        keys = [key for key in dict.fromkeys(arguments[1:]) if key not in state.watched]
        if not keys:
            return OK
        target = state.watched
        slot = self.router.one_shard_slot(WATCH_COMMAND, tuple(keys))
        if slot is None:
            raise CommandError(_CROSSSLOT)
        shard = self._shard(slot)
        moved = self.router.redirection(state, slot, False)
        if moved is not None:
            raise CommandError(moved.text)
        try:
            reply = self.router.read(state, WATCH_COMMAND, [WATCH_COMMAND, *keys], shard.id,
                                     slot, state.last_write)
        except PhalanxError:
            self._record(target, keys, None, quiet=True)
            raise
        if not isinstance(reply, asyncio.Future):
            return self._record(target, keys, reply)
        task = asyncio.get_running_loop().create_task(self._watch_read(target, keys, reply))
        state.watch_reads = [read for read in state.watch_reads if not read.done()]
        state.watch_reads.append(task)
        state.hold = task  # the connection's next commands wait for this read
        return task

    async def _watch_read(self, target: dict[bytes, tuple[int, bool]], keys: list[bytes],
                          reply: Awaitable[object]) -> object:
        try:
            value = await reply
        except BaseException:
            self._record(target, keys, None, quiet=True)
            raise
        return self._record(target, keys, value)

    @staticmethod
    def _record(target: dict[bytes, tuple[int, bool]], keys: list[bytes], reply: object,
                quiet: bool = False) -> object:
        """Record a PHALANX.WATCH reply; a key watched twice keeps its older version (Redis
        keeps the first WATCH). A failed read records version -1: EXEC will abort."""
        valid = (isinstance(reply, list) and len(reply) == len(keys) + 1
                 and all(isinstance(item, int) for item in reply))
        for position, key in enumerate(keys):
            entry = ((reply[0], bool(reply[position + 1]))  # type: ignore[index]
                     if valid else (-1, False))
            if key not in target or entry[0] < target[key][0]:
                target[key] = entry
        if valid or quiet:
            return OK
        if isinstance(reply, KVError):
            raise CommandError(reply.message)
        if isinstance(reply, ErrorReply):
            raise CommandError(reply.text)
        raise CommandError(f"ERR phalanx: unexpected WATCH read reply {reply!r}")

    # -- EXEC ------------------------------------------------------------------------------
    def exec(self, state: ClientState, arguments: list[bytes]) -> object:
        """Leave MULTI, unwatch and propose the entry at once (so the connection's later
        commands come after it in the log); the reply is a future of the EXEC array."""
        if len(arguments) != 1:
            self._discard(state)
            raise CommandError("EXECABORT Transaction discarded because of: wrong number of "
                               "arguments for 'exec' command")
        queued = state.multi
        if queued is None:
            raise CommandError("ERR EXEC without MULTI")
        failed = state.multi_failed
        watched = state.watched
        reads = [read for read in state.watch_reads if not read.done()]
        self._discard(state)
        if failed:
            raise CommandError(EXECABORT)
        if reads:  # not expected: a WATCH read holds the connection's next commands back
            task = asyncio.get_running_loop().create_task(
                self._exec_after(state, queued, watched, reads))
            state.hold = task
            return task
        return self._exec_now(state, queued, watched)

    async def _exec_after(self, state: ClientState, queued: list[list[bytes]],
                          watched: dict[bytes, tuple[int, bool]],
                          reads: list[asyncio.Future[object]]) -> object:
        await asyncio.wait(reads)
        result = self._exec_now(state, queued, watched)
        return await result if isinstance(result, asyncio.Future) else result

    def _exec_now(self, state: ClientState, queued: list[list[bytes]],
                  watched: dict[bytes, tuple[int, bool]]) -> object:
        front = self.commands
        keys: dict[bytes, None] = dict.fromkeys(watched)
        logged: list[tuple[bytes, ...]] = []
        positions: list[int] = []
        #: Blocking pops run as their non-blocking form inside the entry (Redis: a blocking
        #: command in a transaction never blocks), and the refused ones (a bad timeout).
        pops: dict[int, PopRequest] = {}
        refused: dict[int, ErrorReply] = {}
        for position, arguments in enumerate(queued):
            name = arguments[0].upper()
            if name in BLOCKING_COMMANDS:
                try:
                    request = pop_request(name, arguments, int(time.time() * 1000))
                except CommandError as error:
                    refused[position] = ErrorReply(error.text)
                    continue
                pops[position] = request
                arguments = request.pop
                name = arguments[0].upper()
            elif name in front:
                continue
            logged.append(tuple(arguments))
            positions.append(position)
            keys.update(dict.fromkeys(command_keys(name, tuple(arguments[1:]))))
        write: asyncio.Future[object] | None = None
        if logged or watched:
            watches = tuple(Watch(key, version, expired)
                            for key, (version, expired) in watched.items())
            write = self._propose(state, Transaction(watches, tuple(logged)), list(keys))
            state.last_write = write
        elif not queued:
            return []
        return asyncio.get_running_loop().create_task(
            self._finish(state, queued, positions, write, pops, refused))

    async def _finish(self, state: ClientState, queued: list[list[bytes]],
                      positions: list[int], write: asyncio.Future[object] | None,
                      pops: Mapping[int, PopRequest] | None = None,
                      refused: Mapping[int, ErrorReply] | None = None) -> object:
        """The EXEC array: the entry's replies, then the front-end commands' in their place."""
        results: list[object] = [None] * len(queued)
        if write is not None:
            reply = await write
            if reply is None:
                return NULL_ARRAY
            if not isinstance(reply, list) or len(reply) != len(positions):
                return reply if isinstance(reply, (KVError, ErrorReply)) else ErrorReply(
                    f"ERR phalanx: unexpected transaction reply {reply!r}")
            for position, item in zip(positions, reply, strict=True):
                request = (pops or {}).get(position)
                if request is not None and not isinstance(item, KVError):
                    if item is None or item == []:
                        results[position] = request.null  # empty: nil, as when it times out
                        continue
                    item = request.shape(item)
                results[position] = _shaped(state, queued[position], item)
        logged = set(positions)
        for position, arguments in enumerate(queued):
            if refused and position in refused:
                results[position] = refused[position]
            elif position not in logged:
                results[position] = await self._answer(state, arguments[0].upper(), arguments)
        return results

    def _propose(self, state: ClientState, transaction: Transaction,
                 keys: list[bytes]) -> asyncio.Future[object]:
        """Write the transaction's entry on its shard: a future of the state machine's reply
        (proposed now when this node leads the shard)."""
        cmap = self.replicas.cluster_map
        shard_ids = {getattr(cmap.shard_for_slot(key_slot(key)), "id", None) for key in keys}
        if len(shard_ids) > 1:
            raise CommandError(_CROSSSLOT)
        slot = key_slot(keys[0]) if keys else None
        shard = self._shard(slot if slot is not None else 0)
        moved = self.router.redirection(state, slot if slot is not None else 0, True)
        if moved is not None:
            raise CommandError(moved.text)
        arguments = [EXEC_COMMAND, encode_transaction(transaction), *keys]
        return self.router.write(state, EXEC_COMMAND, arguments, shard.id, slot)

    async def _answer(self, state: ClientState, name: bytes, arguments: list[bytes]) -> object:
        """A front-end command queued in the transaction, answered in its place."""
        if name == b"UNWATCH":
            return OK  # EXEC unwatched already
        handler = self.commands[name]
        try:
            reply = handler.run(state, arguments)
            if handler.awaits or isinstance(reply, asyncio.Future):
                reply = await reply  # type: ignore[misc]
        except PhalanxError as error:
            return ErrorReply(error_text(error))
        return _shaped(state, arguments, reply)

    # -- PHALANX.EXEC (forwarded) ----------------------------------------------------------
    def forwarded(self, state: ClientState, arguments: list[bytes]) -> object:
        """PHALANX.EXEC payload keys...: a transaction another node forwards to this leader
        (internal; the caller checked it may run internal commands)."""
        if len(arguments) < 2:
            raise CommandError(_arity_text("phalanx.exec"))
        try:
            decode_transaction(arguments[1])
        except Corrupt as error:
            raise CommandError(f"ERR PHALANX.EXEC: {error}") from error
        keys = arguments[2:]
        slot = self.router.one_shard_slot(EXEC_COMMAND, tuple(arguments[1:])) if keys else None
        if keys and slot is None:
            raise CommandError(_CROSSSLOT)
        shard = self._shard(slot if slot is not None else 0)
        moved = self.router.redirection(state, slot if slot is not None else 0, True)
        if moved is not None:
            raise CommandError(moved.text)
        future = self.router.write(state, EXEC_COMMAND, arguments, shard.id, slot)
        state.last_write = future
        return future

    def _shard(self, slot: int) -> ShardInfo:
        shard = self.replicas.cluster_map.shard_for_slot(slot)
        if shard is None:
            raise CommandError(f"CLUSTERDOWN Hash slot {slot} is not served")
        return shard

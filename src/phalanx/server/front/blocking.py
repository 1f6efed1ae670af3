"""The blocking pops: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP.

What lives here: `BlockingPops` (the command handler the dispatch table calls, and this node's
waiters), `parse_timeout`, `pop_request` (a blocking command -> its non-blocking form).

Semantics are Redis 7.0's (https://redis.io/commands/blpop/ "Non-blocking behavior",
"Blocking behavior", "What key is served first? What client?"; https://redis.io/commands/blmove/,
https://redis.io/commands/bzpopmin/, /blmpop/, /bzmpop/): the timeout is a double in seconds
(0 = forever), "ERR timeout is not a float or out of range", "ERR timeout is negative"; the
first non-empty key in argument order serves; a timeout answers nil (a RESP2 null array,
`*-1`, for every one of them, BLMOVE and BRPOPLPUSH included, as redis-server 7.0 sends; RESP3
null); clients blocked on a key are served first come, first served.

Rules of this file (the design):
- A pop is ALWAYS a replicated write: every attempt runs the command's non-blocking form
  (BLPOP k1 k2 -> `LMPOP 2 k1 k2 LEFT`, BZPOPMAX -> `ZMPOP .. MAX`, BLMOVE -> `LMOVE`,
  BRPOPLPUSH -> `RPOPLPUSH`, BLMPOP -> `LMPOP`, BZMPOP -> `ZMPOP`) through the one write path,
  `DataRouter.write`. The log decides who gets an element: it is never handed to two clients
  and never vanishes. A nil reply (someone else got it) means: keep waiting.
- The first attempt runs at once; its errors (WRONGTYPE, syntax, numkeys...) reach the client.
  If it is empty, the client becomes a waiter on THIS node, queued per key (a key lives in one
  shard at a time, so the key alone names the queue). Later attempts' errors (TRYAGAIN,
  CLUSTERDOWN, a WRONGTYPE: Redis 7.0 keeps such a client blocked) never reach the client: it
  keeps waiting until its timeout. Only "outcome unknown" does (the pop may have been applied;
  the client must know, as for any write).
- Wake-ups: every replica applies every entry, so the local replica's apply tells us
  (`RaftGroup.watched_keys` / `on_watched_write`, a hook that costs nothing while nobody
  waits). Only the HEAD of a key's queue is woken; it looks at the local replica first (is one
  of its keys now a list / sorted set?) and only then proposes its pop; when it is served, the
  next head is woken: one attempt at a time per key, in arrival order. A waiter on a follower
  is woken by the follower's apply and forwards its pop to the leader like any write.
- Every waiter also re-checks every `RECHECK_S` (a head only, or any waiter when this node
  holds no replica of the shard: then each re-check is a pop attempt), covering missed
  wake-ups, a replica created or replaced, leader changes (the write path waits for the new
  leader; its errors keep the client waiting).
- The timeout is measured here with the monotonic clock (Redis measures it on its server). An
  element popped by an attempt that finishes after the deadline is still returned.
- A client that disconnects is forgotten (it no longer is in `Sessions.clients`): it is dropped
  from the queues before any attempt, so it pops nothing. A pop already proposed when the
  client goes is applied and its reply is lost, as a Redis reply written to a closing socket.
- `never_block=True` (inside MULTI, as Redis runs a blocking command in a transaction): the
  non-blocking form once, nil when empty. `pop_request` gives a transaction the command's
  non-blocking form and reply shape without this class.
- Commands pipelined behind a waiting blocking command start only once it answers
  (`front/connection.py`, `held`), as Redis runs nothing for a blocked client.
- Argument checks in Redis 7.0's order: BLMOVE's directions before the timeout; BLMPOP /
  BZMPOP's numkeys, direction and COUNT before the timeout (the non-blocking form's own checks,
  run on an empty keyspace); a timeout past the clock's range is "ERR timeout is out of range"
  (redis-server 7.0.15 crashes on it).
See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from phalanx.errors import CommandError, CrossSlotError, OutcomeUnknown, PhalanxError
from phalanx.kv import Error as KVError
from phalanx.kv import command_spec
from phalanx.kv.keyspace import Keyspace
from phalanx.placement import command_keys, command_slot
from phalanx.resp import NULL_ARRAY, ErrorReply

if TYPE_CHECKING:
    from phalanx.server.front.replicas import ReplicaRegistry
    from phalanx.server.front.router import DataRouter
    from phalanx.server.front.session import ClientState
    from phalanx.server.group import RaftGroup

logger = logging.getLogger(__name__)

RECHECK_S = 1.0
"""How often a waiter looks again without a wake-up (missed wake-ups, leader changes)."""


def move_watch(old: RaftGroup | None, new: RaftGroup | None, keys: Sequence[bytes],
               hook: Callable[[int, list[bytes]], None] | None) -> None:
    """Move a waiter's count of `keys` from replica `old`'s watched keys to `new`'s (either
    may be None) and point `new`'s write hook at `hook` (blocking pops and stream readers)."""
    if old is not None:
        watched = old.watched_keys
        for key in dict.fromkeys(keys):
            left = watched.get(key, 0) - 1
            if left > 0:
                watched[key] = left
            else:
                watched.pop(key, None)
    if new is not None:
        watched = new.watched_keys
        for key in dict.fromkeys(keys):
            watched[key] = watched.get(key, 0) + 1
        new.on_watched_write = hook

_LLONG_MAX = 2**63 - 1
_NOT_A_FLOAT = "ERR timeout is not a float or out of range"


def parse_timeout(raw: bytes, now_ms: int) -> int:
    """A blocking timeout in seconds (a double) as milliseconds, 0 = forever; raises
    `CommandError` with Redis 7.0's text. Redis parses a long double (`strtold`: no leading
    space, the whole argument, no NaN), multiplies by 1000 and truncates to a long long (so
    -0.0001 is 0, forever; an overflow, inf included, comes out negative)."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise CommandError(_NOT_A_FLOAT) from None
    if not text or text != text.strip() or "_" in text:
        raise CommandError(_NOT_A_FLOAT)
    try:
        unsigned = text.lstrip("+-").lower()
        value = float.fromhex(text) if unsigned.startswith("0x") else float(text)
    except (ValueError, OverflowError):
        raise CommandError(_NOT_A_FLOAT) from None
    if math.isnan(value):
        raise CommandError(_NOT_A_FLOAT)
    scaled = value * 1000.0
    if not math.isfinite(scaled) or not -2.0**63 <= scaled < 2.0**63:
        raise CommandError("ERR timeout is negative")  # the C cast's overflow: LLONG_MIN
    ms = int(scaled)
    if ms < 0:
        raise CommandError("ERR timeout is negative")
    if ms > 0 and ms > _LLONG_MAX - now_ms:
        raise CommandError("ERR timeout is out of range")
    return ms


def _identity(reply: object) -> object:
    return reply


def _key_and_element(reply: object) -> object:
    """LMPOP's [key, [element]] as BLPOP's [key, element]."""
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], list) and reply[1]:
        return [reply[0], reply[1][0]]
    return reply


def _key_member_score(reply: object) -> object:
    """ZMPOP's [key, [[member, score]]] as BZPOPMIN's [key, member, score]."""
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], list) and reply[1]:
        pair = reply[1][0]
        if isinstance(pair, list) and len(pair) == 2:
            return [reply[0], pair[0], pair[1]]
    return reply


@dataclass(slots=True)
class PopRequest:
    """A blocking command, as the non-blocking write its attempts run."""

    keys: list[bytes]
    timeout_ms: int
    #: The non-blocking form, name first (LMPOP / LMOVE / RPOPLPUSH / ZMPOP ...).
    pop: list[bytes]
    #: The non-blocking reply -> the blocking command's reply.
    shape: Callable[[object], object]
    #: The TYPE a key must have for an attempt to be worth it ("list" or "zset").
    kind: str
    #: The timeout's (and the never-blocking form's empty) reply: RESP2 `*-1`, RESP3 null.
    null: object = NULL_ARRAY


def pop_request(name: bytes, arguments: list[bytes], now_ms: int) -> PopRequest:
    """Parse a blocking command (`arguments`: name first, arity checked) into its request;
    raises `CommandError` for what Redis refuses before looking at keys (the timeout, BLMOVE's
    directions). The rest (numkeys, COUNT, ...) the non-blocking form answers."""
    args = arguments[1:]
    if name in (b"BLPOP", b"BRPOP", b"BZPOPMIN", b"BZPOPMAX"):
        timeout = parse_timeout(args[-1], now_ms)
        keys = list(args[:-1])
        count = str(len(keys)).encode()
        if name in (b"BLPOP", b"BRPOP"):
            side = b"LEFT" if name == b"BLPOP" else b"RIGHT"
            return PopRequest(keys, timeout, [b"LMPOP", count, *keys, side], _key_and_element,
                              "list")
        side = b"MIN" if name == b"BZPOPMIN" else b"MAX"
        return PopRequest(keys, timeout, [b"ZMPOP", count, *keys, side], _key_member_score,
                          "zset")
    if name == b"BLMOVE":
        # blmove: the directions are checked before the timeout (Redis 7.0's order).
        if any(side.upper() not in (b"LEFT", b"RIGHT") for side in args[2:4]):
            raise CommandError("ERR syntax error")
        timeout = parse_timeout(args[4], now_ms)
        return PopRequest([args[0]], timeout, [b"LMOVE", *args[:4]], _identity, "list")
    if name == b"BRPOPLPUSH":
        timeout = parse_timeout(args[2], now_ms)
        return PopRequest([args[0]], timeout, [b"RPOPLPUSH", *args[:2]], _identity, "list")
    # BLMPOP / BZMPOP timeout numkeys key... : Redis 7.0 checks numkeys, the direction and
    # COUNT before the timeout, so the non-blocking form checks them first, on an empty
    # keyspace (with no key it can only answer an error or nil).
    base = b"LMPOP" if name == b"BLMPOP" else b"ZMPOP"
    pop = [base, *args[1:]]
    spec = command_spec(base)
    assert spec is not None and spec.handler is not None
    refused = spec.handler(Keyspace(), pop[1:], now_ms)
    if isinstance(refused, KVError):
        raise CommandError(refused.message)
    timeout = parse_timeout(args[0], now_ms)
    return PopRequest(command_keys(base, pop[1:]), timeout, pop, _identity,
                      "list" if base == b"LMPOP" else "zset")


@dataclass(eq=False, slots=True)
class _Waiter:
    state: ClientState
    request: PopRequest
    slot: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: The local replica whose `watched_keys` count this waiter's keys (None: none held).
    group: RaftGroup | None = None
    #: CLIENT UNBLOCK: "timeout" (answer nil now) or "error" (-UNBLOCKED), else None.
    unblocked: str | None = None


_EMPTY = object()
"""An attempt that popped nothing (empty keys, or an error that keeps the client waiting)."""


class BlockingPops:
    """The blocking pop commands of one node, and the clients waiting in them."""

    def __init__(self, replicas: ReplicaRegistry, router: DataRouter,
                 clients: dict[int, ClientState]) -> None:
        self.replicas = replicas
        self.router = router
        #: The node's live sessions (a client missing from it has disconnected).
        self.clients = clients
        #: Per key, its waiters in arrival order (the head is the one woken).
        self.queues: dict[bytes, deque[_Waiter]] = {}
        #: Told of every watched write too: the blocking stream reads (blocking_streams.py),
        #: which share this apply hook.
        self.also_written: Callable[[list[bytes]], None] | None = None
        #: The apply hook installed on replicas (the listener's, which calls `written` and
        #: CLIENT TRACKING's invalidations: tracking.py).
        self.hook: Callable[[int, list[bytes]], None] = self.written

    # -- the command -----------------------------------------------------------------------
    async def run(self, state: ClientState, arguments: list[bytes],
                  never_block: bool = False) -> object:
        """Serve one blocking command (the dispatch table's handler)."""
        name = arguments[0].upper()
        spec = command_spec(name)
        assert spec is not None
        if (spec.arity >= 0 and len(arguments) != spec.arity) or len(arguments) < -spec.arity:
            raise CommandError(f"ERR wrong number of arguments for '{spec.name}' command")
        if state.permissions == "read":  # (a user with ACL rules was admitted by them)
            raise CommandError(f"NOPERM User {state.user} has no permissions to run the "
                               f"'{spec.name}' command")
        request = pop_request(name, arguments, int(time.time() * 1000))
        slot = self._slot(request)
        shard = self.replicas.cluster_map.shard_for_slot(slot)
        if shard is None:
            raise CommandError(f"CLUSTERDOWN Hash slot {slot} is not served")
        if self.router.config.redirect == "moved" and not state.forwarded:
            moved = self.router._moved(state, shard, slot, True)
            if moved is not None:
                return moved
        started = time.monotonic()
        # A later read on this connection waits for this pop (a client reads its own writes).
        state.last_write = asyncio.current_task()
        reply = await self.router.write(state, request.pop[0], request.pop, shard.id, slot)
        if not _is_empty(reply):
            return request.shape(reply)
        if never_block or state.forwarded:
            return request.null
        deadline = None if request.timeout_ms == 0 else started + request.timeout_ms / 1000
        waiter = _Waiter(state, request, slot)
        self._enqueue(waiter)
        if waiter.group is not None:
            waiter.wake.set()  # one local look: a push may have landed since the attempt
        try:
            return await self._wait(waiter, deadline)
        finally:
            self._dequeue(waiter)

    def _slot(self, request: PopRequest) -> int:
        """The slot of the request's keys: one slot, or several in one shard (as `_data_command`
        allows a multi-key command), else -CROSSSLOT."""
        name, args = request.pop[0], tuple(request.pop[1:])
        try:
            slot = command_slot(name, args)
        except CrossSlotError as error:
            slot = self.router.one_shard_slot(name, args)
            if slot is None:
                raise CommandError(str(error)) from error
        if slot is None:  # no key: a bad numkeys the non-blocking form answers
            slot = 0
        return slot

    async def _wait(self, waiter: _Waiter, deadline: float | None) -> object:
        request = waiter.request
        while True:
            step = RECHECK_S
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return request.null
                step = min(step, remaining)
            try:
                await asyncio.wait_for(waiter.wake.wait(), step)
                woken = True
            except TimeoutError:
                woken = False
            waiter.wake.clear()
            if self.clients.get(waiter.state.id) is not waiter.state:
                return request.null  # the client is gone: it must pop nothing
            if waiter.unblocked is not None:  # CLIENT UNBLOCK (clients.py)
                if waiter.unblocked == "error":
                    raise CommandError("UNBLOCKED client unblocked via CLIENT UNBLOCK")
                return request.null
            self._watch(waiter)
            if not woken and waiter.group is not None and not self._is_head(waiter):
                continue
            if not self._looks_ready(waiter):
                continue
            reply = await self._attempt(waiter)
            if reply is not _EMPTY:
                return request.shape(reply)

    async def _attempt(self, waiter: _Waiter) -> object:
        """One pop through the write path: its reply, or `_EMPTY` (nothing popped, keep
        waiting). Errors that say nothing was applied keep the client waiting."""
        request = waiter.request
        shard = self.replicas.cluster_map.shard_for_slot(waiter.slot)
        if shard is None:
            return _EMPTY
        try:
            reply = await self.router.write(waiter.state, request.pop[0], request.pop,
                                            shard.id, waiter.slot)
        except OutcomeUnknown:
            raise  # the pop may have been applied: the client must know
        except PhalanxError as error:
            logger.debug("blocking pop: attempt failed, still waiting: %s", error)
            return _EMPTY
        if _is_empty(reply) or isinstance(reply, (KVError, ErrorReply)):
            return _EMPTY
        return reply

    def _looks_ready(self, waiter: _Waiter) -> bool:
        """Whether the local replica shows one of the waiter's keys holding the right type
        (no local replica: we cannot tell, so yes)."""
        group = waiter.group
        shard_machine = group.shard if group is not None else None
        if shard_machine is None:
            return True
        now_ms = int(time.time() * 1000)
        for key in waiter.request.keys:
            kind = shard_machine.read(b"TYPE", (key,), now_ms)
            if isinstance(kind, (KVError, ErrorReply)) or str(kind) == waiter.request.kind:
                return True  # an error (the slot moved): let the write path find out
        return False

    # -- the queues and the apply hook -----------------------------------------------------
    def _enqueue(self, waiter: _Waiter) -> None:
        for key in dict.fromkeys(waiter.request.keys):
            self.queues.setdefault(key, deque()).append(waiter)
        self._watch(waiter)

    def _dequeue(self, waiter: _Waiter) -> None:
        """Forget a waiter (served, timed out or gone) and wake the new heads of its keys."""
        self._unwatch(waiter)
        for key in dict.fromkeys(waiter.request.keys):
            queue = self.queues.get(key)
            if queue is None:
                continue
            head = queue[0] is waiter
            try:
                queue.remove(waiter)
            except ValueError:
                continue
            if not queue:
                del self.queues[key]
            elif head:
                queue[0].wake.set()

    def _is_head(self, waiter: _Waiter) -> bool:
        return any((queue := self.queues.get(key)) and queue[0] is waiter
                   for key in waiter.request.keys)

    def _watch(self, waiter: _Waiter) -> None:
        """Count the waiter's keys on the local replica that holds them now (it may have
        appeared, been replaced, or the slot may have moved to another shard)."""
        shard = self.replicas.cluster_map.shard_for_slot(waiter.slot)
        group = self.replicas.local_group(shard.id) if shard is not None else None
        if group is waiter.group:
            return
        move_watch(waiter.group, group, waiter.request.keys, self.hook)
        waiter.group = group

    @staticmethod
    def _unwatch(waiter: _Waiter) -> None:
        move_watch(waiter.group, None, waiter.request.keys, None)
        waiter.group = None

    def written(self, group_id: int, keys: list[bytes]) -> None:
        """The apply hook (`RaftGroup.on_watched_write`): entries applied on a local replica
        wrote `keys`; wake the head waiter of each (dropping heads whose client is gone)."""
        if self.also_written is not None:
            self.also_written(keys)
        for key in keys:
            queue = self.queues.get(key)
            while queue:
                head = queue[0]
                if self.clients.get(head.state.id) is head.state:
                    head.wake.set()
                    break
                head.wake.set()  # it sees its client is gone and leaves the queues itself
                queue.popleft()
            if queue is not None and not queue:
                del self.queues[key]

    def unblock(self, client_id: int, error: bool) -> bool:
        """CLIENT UNBLOCK: wake client `client_id`'s waiter to answer nil (or -UNBLOCKED);
        False if that client waits in no blocking pop here. A pop it already proposed
        still answers with what it popped."""
        for queue in self.queues.values():
            for waiter in queue:
                if waiter.state.id == client_id and waiter.unblocked is None:
                    waiter.unblocked = "error" if error else "timeout"
                    waiter.wake.set()
                    return True
        return False

    def waiting(self) -> int:
        """How many clients wait in a blocking pop on this node."""
        return len({id(w) for queue in self.queues.values() for w in queue})


def _is_empty(reply: object) -> bool:
    return reply is None or reply is NULL_ARRAY or reply == []

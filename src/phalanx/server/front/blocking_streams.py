"""Blocking stream reads: XREAD ... BLOCK ms and XREADGROUP ... BLOCK ms.

What lives here: `BlockingStreams` (started by `RespServer._data_command` for an XREAD /
XREADGROUP carrying BLOCK; this node's waiting stream readers), `blocks` (does a request
carry BLOCK?), `stream_request`.

Semantics are Redis 7.0's (https://redis.io/commands/xread/ "Blocking for data",
https://redis.io/commands/xreadgroup/): BLOCK is in milliseconds, 0 = forever; XREAD's `$`
means "entries added after the call" (resolved once, before waiting); a reader is served as
soon as an entry arrives on one of its streams, and a timeout answers a null array (`*-1`;
RESP3 null). XREADGROUP with an id other than `>` never blocks (it reads the consumer's
history). Every XREAD reader of a stream is served (reads do not compete); XREADGROUP `>`
consumers of one group compete for the entries: they are woken one at a time per (stream,
group), first come first served, like the blocking pops.

Rules of this file (the design; it shares `blocking.py`'s apply hook and its rules):
- XREAD attempts are linearizable READS (`DataRouter.read`, ReadIndex): XREAD without BLOCK,
  the `$` ids replaced by the stream's last entry id read at the start (`XREVRANGE key + -
  COUNT 1`: no entry can lie between it and the last generated id, so the same entries
  follow either).
- XREADGROUP attempts are WRITES through the one write path (`DataRouter.write`): the log
  decides which consumer gets an entry (the group's last id and PEL move in the state machine,
  delivery time = the replicated clock), so an entry is never handed to two consumers of a
  group, and a blocked consumer on a follower is served through the leader like any write.
- Wake-ups come from the local replica's apply (`RaftGroup.watched_keys` /
  `on_watched_write`, the hook `BlockingPops` installs; `BlockingPops.written` passes the keys
  on here): followers apply every entry too, so a reader connected to a follower is woken by
  its own replica. A woken waiter first looks at the local replica (XREAD there, or
  PHALANX.XPEEKGROUP: would XREADGROUP `>` deliver?) and only then makes its attempt. Every
  waiter re-checks every `RECHECK_S` (missed wake-ups, a replica created, a slot moved).
- While waiting, a leader change or a lost quorum never reaches the client (TRYAGAIN,
  CLUSTERDOWN and every error of a later attempt keep it waiting until its timeout, as
  blocking pops do); only "outcome unknown" of an XREADGROUP does (it may have delivered).
- The timeout runs on this node's monotonic clock. A disconnected client is forgotten before
  its next attempt (a blocked XREADGROUP whose client left proposes nothing more).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from phalanx.errors import CommandError, CrossSlotError, OutcomeUnknown, PhalanxError
from phalanx.kv import Error as KVError
from phalanx.kv.commands.streamgroups import PEEK_GROUP_COMMAND
from phalanx.kv.commands.streams import parse_read
from phalanx.placement import command_slot
from phalanx.resp import NULL_ARRAY, ErrorReply
from phalanx.server.front.blocking import RECHECK_S, move_watch

if TYPE_CHECKING:
    from phalanx.server.front.blocking import BlockingPops
    from phalanx.server.front.replicas import ReplicaRegistry
    from phalanx.server.front.router import DataRouter
    from phalanx.server.front.session import ClientState
    from phalanx.server.group import RaftGroup

logger = logging.getLogger(__name__)

STREAM_READS = frozenset((b"XREAD", b"XREADGROUP"))


def blocks(name: bytes, arguments: list[bytes]) -> bool:
    """Whether an XREAD / XREADGROUP request carries BLOCK (before STREAMS)."""
    if name not in STREAM_READS:
        return False
    for argument in arguments[1:]:
        upper = argument.upper()
        if upper == b"STREAMS":
            return False
        if upper == b"BLOCK":
            return True
    return False


@dataclass(slots=True)
class StreamRequest:
    """A blocking stream read, as the non-blocking command its attempts run."""

    keys: list[bytes]
    timeout_ms: int
    #: The non-blocking form (BLOCK removed), name first; XREAD's `$` resolved before waiting.
    attempt: list[bytes]
    #: XREADGROUP (a write; consumers of a group compete) or XREAD (a read).
    group: bytes | None
    #: Positions in `attempt` of each key's id.
    id_positions: list[int] = field(default_factory=list)


def stream_request(name: bytes, arguments: list[bytes], now_ms: int) -> StreamRequest | None:
    """The request of an XREAD / XREADGROUP with BLOCK; None when it does not block or is
    malformed (the state machine then answers it, errors included)."""
    group_mode = name == b"XREADGROUP"
    parsed = parse_read(arguments[1:], group_mode, now_ms)
    if isinstance(parsed, KVError) or parsed.block_ms is None:
        return None
    attempt = [name]
    position = 1
    while position < len(arguments):
        upper = arguments[position].upper()
        if upper == b"STREAMS":
            attempt.extend(arguments[position:])
            break
        if upper == b"BLOCK":
            position += 2
            continue
        attempt.append(arguments[position])
        position += 1
    count = len(parsed.keys)
    first_id = len(attempt) - count
    return StreamRequest(list(parsed.keys), parsed.block_ms, attempt, parsed.group,
                         list(range(first_id, first_id + count)))


@dataclass(eq=False, slots=True)
class _Waiter:
    state: ClientState
    request: StreamRequest
    slot: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: The local replica whose `watched_keys` count this waiter's keys (None: none held).
    group: RaftGroup | None = None
    #: CLIENT UNBLOCK asked it to stop: "timeout" (nil) or "error" (-UNBLOCKED).
    unblocked: str | None = None


_EMPTY = object()
"""An attempt that found nothing (or failed in a way that keeps the client waiting)."""


def _is_empty(reply: object) -> bool:
    return reply is None or reply is NULL_ARRAY or reply == []


class BlockingStreams:
    """This node's blocked XREAD / XREADGROUP clients."""

    def __init__(self, replicas: ReplicaRegistry, router: DataRouter,
                 clients: dict[int, ClientState], pops: BlockingPops) -> None:
        self.replicas = replicas
        self.router = router
        self.clients = clients
        self.pops = pops
        pops.also_written = self.written
        #: XREAD waiters per key (all are woken).
        self.readers: dict[bytes, list[_Waiter]] = {}
        #: XREADGROUP waiters per key and group, in arrival order (the head is woken).
        self.consumers: dict[bytes, dict[bytes, deque[_Waiter]]] = {}

    # -- the command -----------------------------------------------------------------------
    def start(self, state: ClientState, name: bytes, arguments: list[bytes]) -> object | None:
        """A task serving a blocking XREAD / XREADGROUP, or None when the request does not
        block (the ordinary data path serves it)."""
        request = stream_request(name, arguments, int(time.time() * 1000))
        if request is None:
            return None
        try:
            slot = command_slot(name, tuple(arguments[1:]))
        except CrossSlotError as error:
            slot = self.router.one_shard_slot(name, tuple(arguments[1:]))
            if slot is None:
                raise CommandError(str(error)) from error
        if slot is None:
            return None
        shard = self.replicas.cluster_map.shard_for_slot(slot)
        if shard is None:
            raise CommandError(f"CLUSTERDOWN Hash slot {slot} is not served")
        if self.router.config.redirect == "moved" and not state.forwarded:
            moved = self.router._moved(state, shard, slot, request.group is not None)
            if moved is not None:
                return moved
        task = asyncio.get_running_loop().create_task(self.run(state, request, slot))
        if request.group is not None:
            state.last_write = task  # a later read on this connection waits for it
        return task

    async def run(self, state: ClientState, request: StreamRequest, slot: int) -> object:
        """Serve one blocking stream read: at once if there is something, else wait."""
        started = time.monotonic()
        if request.group is None:
            resolved = await self._resolve_last_ids(state, request, slot)
            if resolved is not None:
                return resolved  # an error (WRONGTYPE ...)
        reply = await self._call(state, request, slot)
        if not _is_empty(reply):
            return reply
        if request.group is None and any(request.attempt[p] == b"+"
                                         for p in request.id_positions):
            resolved = await self._resolve_last_ids(state, request, slot, b"+")
            if resolved is not None:
                return resolved
        deadline = None if request.timeout_ms == 0 else started + request.timeout_ms / 1000
        waiter = _Waiter(state, request, slot)
        self._enqueue(waiter)
        if waiter.group is not None:
            waiter.wake.set()  # one local look: an entry may have landed since the attempt
        try:
            return await self._wait(waiter, deadline)
        finally:
            self._dequeue(waiter)

    async def _resolve_last_ids(self, state: ClientState, request: StreamRequest, slot: int,
                                symbol: bytes = b"$") -> object | None:
        """Replace XREAD's `$` (or `+`) ids by the stream's last entry id, read linearizably;
        an error reply to return, or None."""
        shard = self.replicas.cluster_map.shard_for_slot(slot)
        for key, position in zip(request.keys, request.id_positions, strict=True):
            if request.attempt[position] != symbol or shard is None:
                continue
            arguments = [b"XREVRANGE", key, b"+", b"-", b"COUNT", b"1"]
            reply = self.router.read(state, b"XREVRANGE", arguments, shard.id, slot,
                                     state.last_write)
            if isinstance(reply, asyncio.Future):
                reply = await reply
            if isinstance(reply, (KVError, ErrorReply)):
                return reply
            last = b"0-0"
            if isinstance(reply, list) and reply and isinstance(reply[0], list):
                last = reply[0][0]
            request.attempt[position] = last
        return None

    async def _call(self, state: ClientState, request: StreamRequest, slot: int) -> object:
        """One attempt through the read (XREAD) or write (XREADGROUP) path; errors raise."""
        shard = self.replicas.cluster_map.shard_for_slot(slot)
        if shard is None:
            raise CommandError(f"CLUSTERDOWN Hash slot {slot} is not served")
        name = request.attempt[0]
        if request.group is not None:
            return await self.router.write(state, name, request.attempt, shard.id, slot)
        reply = self.router.read(state, name, request.attempt, shard.id, slot,
                                 state.last_write)
        if isinstance(reply, asyncio.Future):
            reply = await reply
        return reply

    async def _wait(self, waiter: _Waiter, deadline: float | None) -> object:
        while True:
            step = RECHECK_S
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return NULL_ARRAY
                step = min(step, remaining)
            try:
                await asyncio.wait_for(waiter.wake.wait(), step)
                woken = True
            except TimeoutError:
                woken = False
            waiter.wake.clear()
            if self.clients.get(waiter.state.id) is not waiter.state:
                return NULL_ARRAY  # the client is gone: it must take nothing
            if waiter.unblocked is not None:  # CLIENT UNBLOCK (clients.py)
                if waiter.unblocked == "error":
                    raise CommandError("UNBLOCKED client unblocked via CLIENT UNBLOCK")
                return NULL_ARRAY
            self._watch(waiter)
            if not woken and waiter.group is not None and not self._is_head(waiter):
                continue
            if not self._looks_ready(waiter):
                continue
            reply = await self._attempt(waiter)
            if reply is not _EMPTY:
                return reply

    async def _attempt(self, waiter: _Waiter) -> object:
        """One attempt: its reply, or `_EMPTY` (nothing yet, or a refusal that says nothing
        happened: keep waiting)."""
        try:
            reply = await self._call(waiter.state, waiter.request, waiter.slot)
        except OutcomeUnknown:
            if waiter.request.group is not None:
                raise  # the read may have delivered entries: the client must know
            return _EMPTY
        except PhalanxError as error:
            logger.debug("blocking stream read: attempt failed, still waiting: %s", error)
            return _EMPTY
        if _is_empty(reply) or isinstance(reply, (KVError, ErrorReply)):
            return _EMPTY
        return reply

    def _looks_ready(self, waiter: _Waiter) -> bool:
        """Whether the local replica shows something to serve (no local replica, or an
        error: we cannot tell, so yes)."""
        group = waiter.group
        shard_machine = group.shard if group is not None else None
        if shard_machine is None:
            return True
        request = waiter.request
        now_ms = int(time.time() * 1000)
        if request.group is None:
            found = shard_machine.read(request.attempt[0], tuple(request.attempt[1:]), now_ms)
            return isinstance(found, (KVError, ErrorReply)) or not _is_empty(found)
        found = shard_machine.read(PEEK_GROUP_COMMAND, tuple(request.attempt[1:]), now_ms)
        return found != 0

    # -- the queues and the apply hook -----------------------------------------------------
    def _enqueue(self, waiter: _Waiter) -> None:
        group_name = waiter.request.group
        for key in dict.fromkeys(waiter.request.keys):
            if group_name is None:
                self.readers.setdefault(key, []).append(waiter)
            else:
                self.consumers.setdefault(key, {}).setdefault(group_name, deque()).append(
                    waiter)
        self._watch(waiter)

    def _dequeue(self, waiter: _Waiter) -> None:
        """Forget a waiter (served, timed out or gone); wake the new heads of its queues."""
        self._unwatch(waiter)
        group_name = waiter.request.group
        for key in dict.fromkeys(waiter.request.keys):
            if group_name is None:
                readers = self.readers.get(key)
                if readers is not None and waiter in readers:
                    readers.remove(waiter)
                    if not readers:
                        del self.readers[key]
                continue
            groups = self.consumers.get(key)
            queue = groups.get(group_name) if groups is not None else None
            if groups is None or queue is None:
                continue
            head = bool(queue) and queue[0] is waiter
            try:
                queue.remove(waiter)
            except ValueError:
                continue
            if not queue:
                del groups[group_name]
                if not groups:
                    del self.consumers[key]
            elif head:
                queue[0].wake.set()

    def _is_head(self, waiter: _Waiter) -> bool:
        group_name = waiter.request.group
        if group_name is None:
            return True
        for key in waiter.request.keys:
            queue = self.consumers.get(key, {}).get(group_name)
            if queue and queue[0] is waiter:
                return True
        return False

    def _watch(self, waiter: _Waiter) -> None:
        """Count the waiter's keys on the local replica that holds them now."""
        shard = self.replicas.cluster_map.shard_for_slot(waiter.slot)
        group = self.replicas.local_group(shard.id) if shard is not None else None
        if group is waiter.group:
            return
        move_watch(waiter.group, group, waiter.request.keys, self.pops.hook)
        waiter.group = group

    @staticmethod
    def _unwatch(waiter: _Waiter) -> None:
        move_watch(waiter.group, None, waiter.request.keys, None)
        waiter.group = None

    def written(self, keys: list[bytes]) -> None:
        """Entries applied on a local replica wrote `keys`: wake every XREAD reader of them
        and the head consumer of each group waiting on them."""
        for key in keys:
            for reader in self.readers.get(key, ()):
                reader.wake.set()
            for queue in self.consumers.get(key, {}).values():
                while queue:
                    head = queue[0]
                    head.wake.set()
                    if self.clients.get(head.state.id) is head.state:
                        break
                    queue.popleft()  # gone: it leaves the other queues itself

    def unblock(self, client_id: int, error: bool) -> bool:
        """CLIENT UNBLOCK: wake client `client_id`'s waiter to answer nil (or -UNBLOCKED);
        False if that client waits in no blocking stream read here."""
        everyone = [w for readers in self.readers.values() for w in readers]
        everyone += [w for groups in self.consumers.values() for queue in groups.values()
                     for w in queue]
        for waiter in everyone:
            if waiter.state.id == client_id and waiter.unblocked is None:
                waiter.unblocked = "error" if error else "timeout"
                waiter.wake.set()
                return True
        return False

    def waiting(self) -> int:
        """How many clients wait in a blocking stream read on this node."""
        waiters = {id(w) for readers in self.readers.values() for w in readers}
        waiters |= {id(w) for groups in self.consumers.values() for queue in groups.values()
                    for w in queue}
        return len(waiters)

"""Commands that span shards: split over the shards, run through the data path, combined.

What lives here: MGET / EXISTS over keys of several shards, the keyless commands (KEYS, SCAN,
DBSIZE, FLUSHDB, FLUSHALL, SCRIPT LOAD|EXISTS|FLUSH: every shard keeps its own replicated
script cache) over every shard, a keyless EVAL* on one shard, and PHALANX.SHARD (internal: one shard's share of
such a command, as another node forwards it).

Rules of this file:
- Every share goes through the one data path (`DataRouter.write` / `DataRouter.read`); this
  module only splits and combines.
- A multi-shard read is linearizable per key, not one atomic snapshot (no multi-shard
  transaction). Writes over several shards are refused with -CROSSSLOT before they get here.
- The first error of any share is the reply. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from phalanx.errors import ClusterDown, CommandError, PhalanxError
from phalanx.kv import Error as KVError
from phalanx.kv import is_known, is_write
from phalanx.placement import command_keys, key_slot
from phalanx.placement.shard import DIGEST_COMMAND, FREEZE_COMMAND
from phalanx.resp import ErrorReply
from phalanx.server.front.replies import error_reply
from phalanx.server.internal_auth import check, verify_key

if TYPE_CHECKING:
    from phalanx.server.front.replicas import ReplicaRegistry
    from phalanx.server.front.router import DataRouter
    from phalanx.server.front.session import ClientState

#: Keyless commands one shard answers (scripts with no declared key).
_ONE_SHARD_KEYLESS = frozenset({b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO"})
#: The internal commands PHALANX.SHARD carries, and their length unsigned (name included).
_INTERNAL_ARITY = {FREEZE_COMMAND: 2, DIGEST_COMMAND: 4}
#: Read commands a proxying node splits over shards instead of answering -CROSSSLOT.
FAN_OUT_READS = frozenset({b"MGET", b"EXISTS"})


async def _reply_of(result: object) -> object:
    """The reply of a `DataRouter.read` result (served at once, or a future)."""
    if isinstance(result, asyncio.Future):
        return await result
    return result


class FanOut:
    """Splits commands over shards and combines the replies."""

    def __init__(self, replicas: ReplicaRegistry, router: DataRouter) -> None:
        self.replicas = replicas
        self.router = router
        self.config = replicas.config

    async def multi_shard_read(self, state: ClientState, name: bytes,
                               args: tuple[bytes, ...],
                               previous: asyncio.Future[object] | None) -> object:
        """MGET / EXISTS over keys of several shards (proxy convenience, as Redis Cluster
        proxies do): one linearizable read per shard, replies put back in key order."""
        cmap = self.replicas.cluster_map
        by_shard: dict[int, list[int]] = {}
        for position, key in enumerate(args):
            found = cmap.shard_for_slot(key_slot(key))
            by_shard.setdefault(found.id if found is not None else -1, []).append(position)

        async def one(shard: int, positions: list[int]) -> object:
            keys = [args[i] for i in positions]
            return await _reply_of(self.router.read(state, name, [name, *keys],
                                                    max(shard, 0), key_slot(keys[0]),
                                                    previous))

        shard_ids = sorted(by_shard)
        replies = await asyncio.gather(*(one(shard, by_shard[shard]) for shard in shard_ids))
        for reply in replies:
            if isinstance(reply, (KVError, ErrorReply)):
                return reply
        if name == b"EXISTS":
            return sum(int(r) for r in replies if isinstance(r, int))
        merged: list[object] = [None] * len(args)
        for shard, reply in zip(shard_ids, replies, strict=True):
            if isinstance(reply, list):
                for position, value in zip(by_shard[shard], reply, strict=True):
                    merged[position] = value
        return merged

    async def _on_shard(self, state: ClientState, name: bytes, arguments: list[bytes],
                        write: bool, shard_id: int) -> object:
        """One keyless command on one shard; errors become error replies."""
        try:
            if write:
                return await self.router.write(state, name, arguments, shard_id)
            return await _reply_of(self.router.read(state, name, arguments, shard_id, None,
                                                    None))
        except (TimeoutError, PhalanxError) as error:
            return error_reply(error)

    async def keyless(self, state: ClientState, name: bytes, arguments: list[bytes],
                      write: bool) -> object:
        """KEYS, SCAN, DBSIZE, FLUSHDB/FLUSHALL span every shard: fan out and combine."""
        shard_ids = sorted(self.replicas.cluster_map.shards)
        if not shard_ids:
            raise ClusterDown("the cluster map has no shards yet")
        previous = state.last_write
        if previous is not None and not previous.done():
            with contextlib.suppress(Exception):
                await previous
        upper = name.upper()
        if upper == b"SCAN":
            return await self._scan(state, arguments, shard_ids)
        if upper in _ONE_SHARD_KEYLESS:
            # EVAL* with no key: one shard runs it (Redis Cluster sends it to any one node);
            # its undeclared keys must live in that shard (kv/commands/scripts.py).
            return await self._on_shard(state, name, arguments, write, shard_ids[0])
        replies = await asyncio.gather(*(self._on_shard(state, name, arguments, write, shard)
                                         for shard in shard_ids))
        error = next((r for r in replies if isinstance(r, ErrorReply)), None)
        if error is not None:
            return error
        if upper == b"DBSIZE":
            return sum(int(r) for r in replies if isinstance(r, int))
        if upper == b"KEYS":
            return [key for r in replies if isinstance(r, list) for key in r]
        if upper == b"SCRIPT" and len(arguments) > 1 and arguments[1].upper() == b"EXISTS":
            # Every shard holds its own replicated script cache: a script exists if all do.
            lists = [r for r in replies if isinstance(r, list)]
            return [min(flags) for flags in zip(*lists, strict=False)] if lists else replies[0]
        return replies[0]

    async def _scan(self, state: ClientState, arguments: list[bytes],
                    shard_ids: list[int]) -> object:
        """SCAN across shards: cursor = shard_cursor * shards + shard position (one shard:
        the shard's own cursor, unchanged)."""
        if len(arguments) < 2:
            raise CommandError("ERR wrong number of arguments for 'scan' command")
        try:
            cursor = int(arguments[1])
        except ValueError as error:
            raise CommandError("ERR invalid cursor") from error
        if cursor < 0:
            raise CommandError("ERR invalid cursor")
        count = len(shard_ids)
        inner, position = divmod(cursor, count)
        shard_arguments = [arguments[0], str(inner).encode(), *arguments[2:]]
        reply = await self._on_shard(state, b"SCAN", shard_arguments, False, shard_ids[position])
        if isinstance(reply, ErrorReply) or not isinstance(reply, list) or len(reply) != 2:
            return reply
        next_inner = int(reply[0])
        if next_inner == 0:
            position += 1
            next_cursor = position if position < count else 0
        else:
            next_cursor = next_inner * count + position
        return [str(next_cursor).encode(), reply[1]]

    async def shard_scoped(self, state: ClientState, arguments: list[bytes]) -> object:
        """PHALANX.SHARD <id> <command...>: a keyless command (DBSIZE, KEYS, SCAN, FLUSHDB)
        on one shard only: how a node forwards its share of a fan-out (internal)."""
        if len(arguments) < 3 or not arguments[1].isdigit():
            raise CommandError("ERR usage: PHALANX.SHARD <shard id> <command> [args...]")
        shard_id = int(arguments[1])
        if shard_id not in self.replicas.cluster_map.shards:
            raise CommandError(f"ERR no shard {shard_id}")
        inner = arguments[2:]
        name = inner[0].upper()
        if name in (FREEZE_COMMAND, DIGEST_COMMAND):
            # Internal (merge step 1; a replica's consistency-check vote): signed under the
            # cluster's internal key (the last argument, over shard, name, args;
            # server/internal_auth.py), so no client can freeze a shard or vote.
            signed = len(inner) == _INTERNAL_ARITY[name] + 1
            key = verify_key(self.config, self.replicas.cluster_map)
            if key or signed:
                check(key, inner[-1] if signed else b"",
                      b"\0".join([arguments[1], *inner[:-1]]))
                if signed:
                    inner = inner[:-1]
            return await self.router.write(state, name, inner, shard_id)
        if not is_known(name) or command_keys(name, tuple(inner[1:])):
            raise CommandError("ERR PHALANX.SHARD takes a keyless data command")
        if is_write(name):
            return await self.router.write(state, name, inner, shard_id)
        return await _reply_of(self.router.read(state, name, inner, shard_id, None, None))

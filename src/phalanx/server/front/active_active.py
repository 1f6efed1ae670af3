"""Active-active keys in the front end (docs/active-active.md, issue 18).

- `rewrite`: a command on an active-active key (its key starts with one of `aa_prefixes`)
  becomes `PHALANX.AA <command> <key> ...` (a write) or `PHALANX.AAR ...` (a read) before
  routing, so it reaches the shard's active-active store (placement/shard.py) through the one
  write path and the one read path: a write is local to this region (its Raft quorum only, then
  shipped to the other regions by their pulls), a read is this region's linearizable view.
  Commands without a merge rule, and commands mixing keys, are refused with a clear error.
- `guard`: every other way into the router (MULTI/EXEC, scripts, blocking pops, fan-outs)
  refuses an active-active key instead of running it on the plain keyspace.
- `ActiveActiveCommands`: the two internal commands other regions' links send here:
  `PHALANX.AA.SHARDS` (this region's shard ids) and `PHALANX.AA.PULL shard from max ranges
  [signature]` (a shard's outbox, read through the read path: ReadIndex on the leader or a
  follower), signed with an HMAC under `aa_secret` when one is configured.

Rules of this file: no state; the router is used as any client's command would use it.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Protocol

from phalanx.crdt.commands import READS, WRITES, unsupported
from phalanx.errors import CommandError
from phalanx.kv.commands.activeactive import AA_READ, AA_WRITE
from phalanx.kv.replies import Error
from phalanx.placement import command_keys
from phalanx.placement.shard import AA_PULL_COMMAND
from phalanx.resp import ErrorReply
from phalanx.server.peer_link import internal_signature

if TYPE_CHECKING:
    from phalanx.server.front.replicas import ReplicaRegistry
    from phalanx.server.front.session import ClientState

AA_SHARDS_COMMAND = b"PHALANX.AA.SHARDS"


class _Reader(Protocol):
    """The router's read path (front/router.py `DataRouter.read`)."""

    def read(self, state: ClientState, name: bytes, arguments: list[bytes], shard_id: int,
             slot: int | None, previous_write: asyncio.Future[object] | None) -> object: ...


def prefixes_of(config: object) -> tuple[bytes, ...]:
    """The active-active key prefixes of a node configuration (`aa_prefixes`; a stand-in
    configuration without the field, as unit tests build, has none)."""
    text = getattr(config, "aa_prefixes", "")
    return tuple(p.strip().encode() for p in text.split(",") if p.strip()) \
        if isinstance(text, str) else ()


def pull_signature(secret: str, arguments: list[bytes]) -> bytes:
    """The HMAC a pull carries: over `shard from max ranges cursor`."""
    return internal_signature(secret, b"\0".join(arguments))


def rewrite(prefixes: tuple[bytes, ...], name: bytes,
            arguments: list[bytes]) -> tuple[bytes, list[bytes], bool] | ErrorReply | None:
    """(name, arguments, write) of the wrapped command, an error, or None (not active-active).
    `name` is upper case; `arguments` start with the command name."""
    if name in (AA_WRITE, AA_READ):
        if len(arguments) < 3 or not arguments[2].startswith(prefixes):
            return ErrorReply(f"ERR {name.decode()} takes an active-active key (prefixes: "
                              f"{b','.join(prefixes).decode('utf-8', 'replace')})")
        return None
    keys = command_keys(name, tuple(arguments[1:]))
    if not any(key.startswith(prefixes) for key in keys):
        return None
    if len(keys) != 1:
        return ErrorReply(f"ERR phalanx active-active: {name.decode('ascii', 'replace')} "
                          f"takes one active-active key per command (and no other key)")
    if name in WRITES:
        return AA_WRITE, [AA_WRITE, name, *arguments[1:]], True
    if name in READS:
        return AA_READ, [AA_READ, name, *arguments[1:]], False
    return ErrorReply(unsupported(name).message)


def guard(prefixes: tuple[bytes, ...], name: bytes, arguments: list[bytes],
          strong_elsewhere: bool = False) -> Error | None:
    """The refusal of a command that reaches the router any other way with an active-active
    key (MULTI/EXEC, scripts, blocking pops, fan-out shares), or with a strong key when strong
    keys live in another region (`strong_elsewhere`); None when it may run here."""
    upper = name.upper()
    if upper in (AA_WRITE, AA_READ, AA_PULL_COMMAND):
        return None
    keys = command_keys(upper, tuple(arguments[1:]))
    if strong_elsewhere and any(not key.startswith(prefixes) for key in keys):
        return Error(f"ERR phalanx active-active: {upper.decode('ascii', 'replace')} on strong "
                     f"keys must be sent to their home region (aa_strong_home): only "
                     f"single-shard commands are forwarded there")
    if any(key.startswith(prefixes) for key in keys):
        return Error(f"ERR phalanx active-active: {upper.decode('ascii', 'replace')} cannot "
                     f"touch an active-active key here (transactions, scripts, blocking "
                     f"commands and multi-key commands are not supported on them)")
    return None


class ActiveActiveCommands:
    """PHALANX.AA.SHARDS and PHALANX.AA.PULL (see the module docstring)."""

    def __init__(self, replicas: ReplicaRegistry, router: _Reader) -> None:
        self.replicas = replicas
        self.router = router
        self.config = replicas.config

    def shards(self, state: ClientState, arguments: list[bytes]) -> object:
        """PHALANX.AA.SHARDS: this region's data shard ids."""
        return sorted(self.replicas.cluster_map.shards)

    async def pull(self, state: ClientState, arguments: list[bytes]) -> object:
        """PHALANX.AA.PULL shard from max ranges cursor [signature]: read a shard's outbox
        (or a page of its full state)."""
        if len(arguments) not in (6, 7) or not arguments[1].isdigit():
            raise CommandError("ERR usage: PHALANX.AA.PULL shard from max ranges cursor "
                               "[signature]")
        secret = self.config.aa_secret
        if secret and (len(arguments) != 7 or not hmac.compare_digest(
                arguments[6], pull_signature(secret, arguments[1:6]))):
            raise CommandError("NOPERM PHALANX.AA.PULL without a valid region link signature "
                               "(aa_secret)")
        shard_id = int(arguments[1])
        if shard_id not in self.replicas.cluster_map.shards:
            raise CommandError(f"ERR no shard {shard_id}")
        result = self.router.read(state, AA_PULL_COMMAND, [AA_PULL_COMMAND, *arguments[1:]],
                                  shard_id, None, None)
        if isinstance(result, Error):
            raise CommandError(result.message)
        if isinstance(result, asyncio.Future):
            return await result
        return result

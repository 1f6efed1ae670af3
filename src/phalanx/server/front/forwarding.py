"""The forwarding half of the data path: a command sent to another node's RESP port, and the
forwarded writes this node receives as a leader.

What lives here: `Forwarding` (the mixin of `router.DataRouter`: `_forward` (over the client
connection's own peer link, `LeaderLink`, with the link's watchdog), `_remote` (a shard this
node holds no replica of), `_tagged` (a write with its session as a signed `PHALANX.FWD`),
`forwarded_write` (the leader's side of `PHALANX.FWD`), the link bookkeeping), and the shared
constants of both halves.

Rules of this file:
- A forward never waits for a dead leader: it ends when the link breaks, when a new leader is
  known (the link's watchdog), or at the deadline. Not sent yet: `LeaderUnreachable` (certainly
  not applied, the caller retries); sent: `OutcomeUnknown` (a write with its session is sent
  again with the same identity, Raft dissertation §6.3).
- A forwarded write carries its connection's session and is signed with the cluster's
  internal key (server/internal_auth.py); the leader checks the signature before anything.
- A connection's re-sent writes keep its order (`WriteTag.held`).
- A forwarded command is never forwarded again. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from phalanx.errors import (
    ClusterDown,
    CommandError,
    CrossSlotError,
    LeaderUnreachable,
    OutcomeUnknown,
    PeerProtocolError,
    TryAgain,
)
from phalanx.kv import is_known, is_write
from phalanx.placement import command_keys, command_slot
from phalanx.resp import ErrorReply, encode_command
from phalanx.server.front.replies import TRYAGAIN, outcome_unknown, unknown_forward, wire_code
from phalanx.server.front.write_session import WAITING, WriteTag
from phalanx.server.internal_auth import (
    check,
    internal_key,
    is_internal_refusal,
    sign,
    verify_key,
)
from phalanx.server.peer_link import LeaderLink, LinkPool

if TYPE_CHECKING:
    from phalanx.server.config import NodeConfig
    from phalanx.server.front.replicas import ReplicaRegistry
    from phalanx.server.front.session import ClientState

#: How long the data path sleeps between two looks at a leader, a slot or a retry.
LEADER_WAIT_STEP_S = 0.01
#: How often a re-sent write looks again whether the lower writes of its connection went.
_ORDER_WAIT_S = 0.001
#: The internal command a node forwards a write with: `PHALANX.FWD client_id sequence
#: first_unacked signature command...` (§6.3: the leader's state machine runs it once).
FORWARD_COMMAND = b"PHALANX.FWD"


def retrieved(task: asyncio.Future[object]) -> None:
    """Mark a finished task's exception retrieved (its caller may have stopped waiting)."""
    if not task.cancelled():
        task.exception()


def lagging_signature(tag: WriteTag | None, reply: object) -> bool:
    """Did the leader refuse a forwarded write's signature? This node's map does not have the
    cluster's internal token yet (internal_auth.py): nothing was applied, ask again."""
    return tag is not None and is_internal_refusal(reply)


def _signed_part(arguments: list[bytes]) -> bytes:
    """What a PHALANX.FWD signature covers: the session fields and the whole command, framed
    (RESP) so that no two different commands sign alike."""
    return encode_command(*arguments[1:4], *arguments[5:])


class Forwarding:
    """The forwarding half of `router.DataRouter` (see the module docstring)."""

    replicas: ReplicaRegistry
    config: NodeConfig
    client_tls: ssl.SSLContext | None
    links: LinkPool

    if TYPE_CHECKING:
        def write(self, state: ClientState, name: bytes, arguments: list[bytes],
                  shard_id: int, slot: int | None = None,
                  tag: WriteTag | None = None) -> asyncio.Future[object]: ...

        def one_shard_slot(self, name: bytes, args: tuple[bytes, ...]) -> int | None: ...

    def forwarded_write(self, state: ClientState, arguments: list[bytes]) -> object:
        """PHALANX.FWD client_id sequence first_unacked signature command...: a write another
        node forwards to this leader with its client's session (internal; signed under the
        cluster secret when there is one). It runs once however often it is sent (§6.3)."""
        if len(arguments) < 6:
            raise CommandError("ERR wrong number of arguments for 'phalanx.fwd' command")
        check(verify_key(self.config, self.replicas.cluster_map), arguments[4],
              _signed_part(arguments))
        try:
            client_id, sequence, first_unacked = (int(arguments[i]) for i in (1, 2, 3))
        except ValueError as error:
            raise CommandError("ERR PHALANX.FWD: client id, sequence and first "
                               "unacknowledged sequence must be integers") from error
        if not (0 <= client_id < 2**64 and 0 <= first_unacked <= sequence < 2**64):
            raise CommandError("ERR PHALANX.FWD: bad client id or sequences")
        tag = WriteTag(None, sequence, (client_id, sequence, first_unacked))
        command = arguments[5:]
        name = command[0].upper()
        if name == b"PHALANX.SHARD":
            # A keyless write's share of a fan-out, for one shard.
            if len(command) < 3 or not command[1].isdigit():
                raise CommandError("ERR usage: PHALANX.SHARD <shard id> <command> [args...]")
            shard_id = int(command[1])
            inner = command[2:]
            if shard_id not in self.replicas.cluster_map.shards or not is_known(inner[0]) \
                    or not is_write(inner[0]) or command_keys(inner[0], tuple(inner[1:])):
                raise CommandError("ERR PHALANX.FWD: PHALANX.SHARD takes a keyless write of "
                                   "a shard")
            future = self.write(state, inner[0], inner, shard_id, None, tag)
            state.last_write = future
            return future
        args = tuple(command[1:])
        if name != b"PHALANX.EXEC" and not (is_known(name) and is_write(name)):
            raise CommandError("ERR PHALANX.FWD takes a write command")
        try:
            slot = command_slot(name, args)
        except CrossSlotError:
            slot = self.one_shard_slot(name, args)
        if slot is None:
            raise CommandError("ERR PHALANX.FWD takes a write of keys of one shard")
        shard = self.replicas.cluster_map.shard_for_slot(slot)
        if shard is None:
            raise CommandError(f"CLUSTERDOWN Hash slot {slot} is not served")
        future = self.write(state, command[0], command, shard.id, slot, tag)
        state.last_write = future
        return future

    async def _remote(self, state: ClientState, shard_id: int, arguments: list[bytes],
                      deadline: float, tag: WriteTag | None = None,
                      read: bool = False) -> object:
        """Serve a command for a shard this node holds no replica of: forward it to the
        shard's leader (the map's hint), else to another replica, which never forwards again.
        A read whose link broke is asked again (a read is safe to repeat), and so is a write
        with its session (it runs once, §6.3)."""
        if state.forwarded:
            raise TryAgain(f"this node holds no replica of shard {shard_id}")
        while True:
            shard = self.replicas.cluster_map.shards.get(shard_id)
            if shard is None:
                raise ClusterDown(f"shard {shard_id} no longer exists; retry")
            candidates = [shard.leader] if shard.leader else []
            candidates += [n for n in (*shard.voters, *shard.replicas) if n not in candidates]
            if arguments[0].upper() != b"PHALANX.SHARD" and \
                    not command_keys(arguments[0], tuple(arguments[1:])):
                # A keyless command's share of a fan-out: this shard only, over there too.
                arguments = [b"PHALANX.SHARD", str(shard_id).encode(), *arguments]
            reply: object = None
            for target in candidates:
                if target == self.config.id:
                    continue
                hinted = functools.partial(self.replicas.shard_leader, shard) \
                    if target == shard.leader else None
                try:
                    reply = await self._forward(state, target, arguments, deadline, hinted, tag)
                except LeaderUnreachable:
                    continue
                except OutcomeUnknown:
                    if not read and tag is None:
                        raise
                    if tag is not None:
                        tag.uncertain = True
                    if time.monotonic() >= deadline:
                        raise
                    continue
                if wire_code(reply) == TRYAGAIN or lagging_signature(tag, reply):
                    continue
                if tag is not None and time.monotonic() < deadline:
                    if outcome_unknown(reply):
                        tag.uncertain = True
                        continue
                    if not tag.raw_forward and unknown_forward(reply):
                        tag.raw_forward = True  # an older node: the bare command, as before
                        continue
                return reply
            if time.monotonic() >= deadline:
                if isinstance(reply, ErrorReply):
                    return reply
                raise ClusterDown(f"no replica of shard {shard_id} is reachable")
            await asyncio.sleep(LEADER_WAIT_STEP_S * 5)

    async def _forward(self, state: ClientState, leader: str, arguments: list[bytes],
                       deadline: float, current_leader: Callable[[], str] | None,
                       tag: WriteTag | None = None) -> object:
        """Send the command to `leader` over this client's peer link and return its reply.
        With `tag` (a write with its session) it goes as PHALANX.FWD, after every lower
        write of the connection that waits to be re-sent (the connection's order).

        Fails fast (never waits for a dead leader): when the link breaks, when
        `current_leader()` names another node (a new leader exists: the old one is dead or
        paused), and at the deadline. If the command had not left yet (still connecting, or
        waiting for its turn: `sent` unset) it was certainly not applied:
        `LeaderUnreachable`, and the caller retries on the new leader; once it has left, a
        write's outcome is unknown (`OutcomeUnknown`: the old leader may have replicated it
        before it died, and the new leader may commit it; with its session the caller sends
        it again)."""
        address = self.replicas.resp_address(leader)
        if address is None:
            raise ClusterDown(f"node {leader} is not in this node's cluster map")
        host, port = address
        link = state.links.get(leader)
        #: True when this call alone owns `link` (its client had left when it was made).
        only_ours = False
        if link is None:
            link = self.links.take(leader, host, int(port)) or LeaderLink(
                leader, host, int(port), max(0.05, deadline - time.monotonic()),
                self.config.requirepass, self.client_tls)
            if not state.closed:
                state.links[leader] = link
            else:
                # The client left while this command kept trying (a failover): the link is
                # this call's only and goes to the pool after it (below), never left to the
                # garbage collector with its connection open and its reader task pending.
                only_ours = True
        link.timeout = max(0.05, deadline - time.monotonic())
        link.watch(current_leader, self.config.request_timeout_ms / 1000)
        if tag is not None:
            tag.mark(WAITING)
            while tag.held():  # a lower write of this connection goes first
                if time.monotonic() >= deadline:
                    raise LeaderUnreachable("the connection's earlier writes were not re-sent "
                                            "in time")
                await asyncio.sleep(_ORDER_WAIT_S)
            if not tag.raw_forward:
                arguments = self._tagged(tag, arguments)
            tag.mark(link)  # handed to the link: written in this order
        sent = asyncio.Event()
        moved = link.moved()
        call = asyncio.get_running_loop().create_task(link.call(
            arguments, sent, None if tag is None else tag.mark))
        call.add_done_callback(retrieved)  # a call given up on may still fail later
        try:
            # One wait per call, no poll: the link's watchdog resolves `moved` when a new
            # leader is known (the old one is dead or paused), for every call on the link.
            waited: set[asyncio.Future[object]] = {call, moved}  # type: ignore[arg-type]
            done, _ = await asyncio.wait(waited, timeout=max(
                0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED)
            if call in done and not call.cancelled() and call.exception() is None:
                return call.result()
            if moved in done:
                # The write may still commit through the new leader's log.
                if not sent.is_set():
                    raise LeaderUnreachable(f"leadership moved from {leader} to "
                                            f"{moved.result()} before the command was sent")
                raise OutcomeUnknown(
                    f"leadership moved from {leader} to {moved.result()} while the command "
                    f"was forwarded; a write may or may not have been applied")
            if call in done:
                error = call.exception() if not call.cancelled() else None
                raise error if error is not None else ConnectionResetError(
                    f"the call to {leader} was cancelled")  # (handled below)
            if not sent.is_set():
                raise LeaderUnreachable(f"node {leader} could not be reached in time")
            raise OutcomeUnknown(f"node {leader} did not answer in time; a write "
                                 f"may or may not have been applied")
        except LeaderUnreachable:
            # The link may be half-connected (a cancelled handshake): never reuse it.
            self._drop_link(state, leader, link, tag, only_ours)
            raise
        except (OSError, TimeoutError, PeerProtocolError) as error:
            self._drop_link(state, leader, link, tag, only_ours)
            raise OutcomeUnknown(
                f"the connection to {leader} failed while forwarding ({error}); a "
                f"write may or may not have been applied"
            ) from error
        except OutcomeUnknown:
            self._drop_link(state, leader, link, tag, only_ours)
            raise
        finally:
            if not call.done():
                call.cancel()
            if only_ours:
                self.links.give_back(link)

    def _pooled_link(self, state: ClientState, leader: str) -> LeaderLink | None:
        """An idle pooled link to `leader`, now the connection's own (None: none idle)."""
        address = self.replicas.resp_address(leader)
        if address is None:
            return None
        link = self.links.take(leader, address[0], int(address[1]))
        if link is not None:
            state.links[leader] = link
        return link

    def _tagged(self, tag: WriteTag, arguments: list[bytes]) -> list[bytes]:
        """`arguments` as PHALANX.FWD with the write's session (signed when the cluster has a
        secret)."""
        client_id, sequence, first_unacked = tag.current()
        tagged = [FORWARD_COMMAND, str(client_id).encode(), str(sequence).encode(),
                  str(first_unacked).encode(), b"", *arguments]
        tagged[4] = sign(internal_key(self.config, self.replicas.cluster_map),
                         _signed_part(tagged))
        return tagged

    @staticmethod
    def _drop_link(state: ClientState, leader: str, link: LeaderLink,
                   tag: WriteTag | None, only_ours: bool = False) -> None:
        """Close a link that failed (every call still on it fails: those writes are sent
        again, in order), and never reuse it. A link this connection no longer holds (its
        client left and the pool took it back) is not this call's to close: the pool parks
        only links whose calls were all answered, and drops broken ones."""
        if tag is not None:
            tag.mark(WAITING)
        if only_ours or state.links.get(leader) is link:
            link.close()
        if state.links.get(leader) is link:
            del state.links[leader]

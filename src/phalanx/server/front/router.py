"""The data path: one path for writes and one for reads, from a keyed command to its reply.

Rules of this file:
- Any node accepts any command. The slot of a command's keys picks the shard (Redis Cluster's
  rule), from the newest cluster map.
- `write` is the only way a write is served. Its fast case is inline: on the shard's local
  leader the command is proposed at once (no task, no timer: the group's sweeper fails writes
  that wait too long with OutcomeUnknown). Every other case, and a fast case that could not
  finish (another leader's entry replaced it, §5.3, or the slot moved at apply: certainly not
  applied), continues in `_write_attempts`, which waits through elections, proposes on the
  local leader or forwards to the leader, and retries what was certainly not applied until
  the deadline. The attempts never re-enter the fast case.
- `read` is the only way a read is served. A read waits for the connection's earlier writes
  (a client reads its own writes). Its fast cases: served at once under the leader's lease, or
  when the group's batched ReadIndex confirms; otherwise (and when a fast case cannot finish)
  `_read_attempts` runs a ReadIndex round on any replica (followers too) and reads locally.
  `READONLY` connections read the local replica as it is, once it has caught up with its
  leader (`RaftGroup.caught_up`: one ReadIndex round since it opened); before that the read
  takes that round, or answers -LOADING (docs/security.md): never back in time.
- A forwarded command is never forwarded again (no ping-pong between nodes that disagree
  about the leader). In `redirect = "moved"` mode a client gets -MOVED instead of a forward.
- Errors say what the client may do (typed, see `phalanx.errors`): `TryAgain` and the other
  `RetrySafe` errors (certainly not applied), `ClusterDown` (no leader within the timeout, no
  reachable replica), `OutcomeUnknown` (do not blindly retry a non-idempotent write).
- The node is seen only through `ReplicaRegistry`. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from phalanx.errors import (
    ClusterDown,
    CommandError,
    LeaderUnreachable,
    Loading,
    NotLeader,
    OutcomeUnknown,
    PhalanxError,
    ProposalDropped,
    RetrySafe,
    TryAgain,
)
from phalanx.kv.replies import Error
from phalanx.placement import ShardInfo, command_keys, key_slot
from phalanx.resp import ErrorReply, encode
from phalanx.server.front.active_active import guard, prefixes_of, rewrite
from phalanx.server.front.forwarding import (
    LEADER_WAIT_STEP_S,
    Forwarding,
    lagging_signature,
    retrieved,
)
from phalanx.server.front.replies import (
    TRYAGAIN,
    outcome_unknown,
    slot_moved,
    unknown_forward,
    wire_code,
)
from phalanx.server.front.write_session import LOCAL, WAITING, WriteSession, WriteTag
from phalanx.server.peer_link import LinkPool
from phalanx.server.running_loop import LoopCache

if TYPE_CHECKING:
    from phalanx.server.front.replicas import ReplicaRegistry
    from phalanx.server.front.session import ClientState
    from phalanx.server.group import RaftGroup

#: The shortest time a leaderless shard waits before refusing with -CLUSTERDOWN (see
#: `Router.no_quorum_after_s`).
NO_QUORUM_FLOOR_S = 2.0
#: `read`'s fast case could not serve the read now (take the attempts).
_NOT_NOW = object()


def _copy_outcome(out: asyncio.Future[object], task: asyncio.Future[object]) -> None:
    """Resolve `out` as `task` ended (a callback chaining a task into a waiting future)."""
    if out.done():
        return
    if task.cancelled():
        out.cancel()
    elif (error := task.exception()) is not None:
        out.set_exception(error)
    else:
        out.set_result(task.result())


class StrongHomeLink(Protocol):
    """Where strong keys go when their home is another region (server/aa_home.py)."""

    async def call(self, arguments: list[bytes]) -> object: ...


def _leader_of(group: RaftGroup) -> Callable[[], str]:
    """Who `group` (a local replica) knows as its leader, asked at each call."""
    return lambda: group.leader


class DataRouter(Forwarding):
    """Routes data commands to their shard's replica: locally, or over a peer link (the
    forwarding half: `Forwarding`, front/forwarding.py)."""

    def __init__(self, replicas: ReplicaRegistry, client_tls: ssl.SSLContext | None,
                 encode_reply: Callable[[ClientState, object, bytes, list[bytes]], bytes]) -> None:
        self.replicas = replicas
        self.config = replicas.config
        self.client_tls = client_tls
        self.encode_reply = encode_reply
        #: The running loop, asked once (`running_loop`: no getpid() per request).
        self.loops = LoopCache()
        #: Idle forwarding links left by closed client connections, for the next ones
        #: (`peer_link.LinkPool`: no TCP connection and handshake per forwarded client).
        self.links = LinkPool()
        #: A shard without a leader for this long answers -CLUSTERDOWN at once: 4 minimum
        #: election timeouts, and never less than 2 s (2 s with a 500 ms timeout or shorter).
        #: The clock (`RaftGroup.leaderless_for`) starts the instant a replica stops knowing a
        #: leader; an election with a quorum then takes milliseconds (PreVote, then one vote
        #: round), and a split vote costs one randomised timeout in [1, 2) election timeouts
        #: (§5.2), so two full rounds fit: only a shard that cannot elect gets there. The 2 s
        #: floor keeps a short election timeout from turning a slow election on a loaded
        #: machine into refusals. Before, writes wait for the election.
        self.no_quorum_after_s = max(
            NO_QUORUM_FLOOR_S, 4 * self.config.election_ticks * self.config.tick_ms / 1000)
        #: Active-active key prefixes (front/active_active.py); empty: every key is strong.
        self.aa_prefixes = prefixes_of(self.config)
        #: Strong keys' home region when it is another region (server/aa_home.py; set by the
        #: node): every command on a strong key is run there.
        self.strong_home: StrongHomeLink | None = None

    # -- entry -----------------------------------------------------------------------------
    def command(self, state: ClientState, name: bytes, arguments: list[bytes], slot: int,
                write: bool) -> object:
        """Start a command whose keys live in one shard (`slot`: of its first key): its
        encoded reply (bytes) or a future of its reply."""
        # A reply is shaped (RESP3) as the client's command's, not as a wrapper's.
        client_name, client_arguments = name, arguments
        if self.aa_prefixes:
            routed = rewrite(self.aa_prefixes, name.upper(), arguments)
            if isinstance(routed, ErrorReply):
                return encode(routed, state.protocol)
            if routed is not None:
                name, arguments, write = routed
            elif self.strong_home is not None:
                task = asyncio.get_running_loop().create_task(self.strong_home.call(arguments))
                if write:
                    state.last_write = task
                return task
        shard = self.replicas.cluster_map.shard_for_slot(slot)
        if shard is None:
            return encode(ErrorReply(f"CLUSTERDOWN Hash slot {slot} is not served"),
                          state.protocol)
        if self.config.redirect == "moved" and not state.forwarded:
            moved = self._moved(state, shard, slot, write)
            if moved is not None:
                return encode(moved, state.protocol)
        if write:
            future = self.write(state, name, arguments, shard.id, slot)
            state.last_write = future
            return future
        reply = self.read(state, name, arguments, shard.id, slot, state.last_write)
        if isinstance(reply, asyncio.Future):
            return reply
        return self.encode_reply(state, reply, client_name, client_arguments)

    def one_shard_slot(self, name: bytes, args: tuple[bytes, ...]) -> int | None:
        """The slot of the first key when every key lives in the same shard, else None."""
        cmap = self.replicas.cluster_map
        keys = command_keys(name, args)
        shards = {getattr(cmap.shard_for_slot(key_slot(key)), "id", None) for key in keys}
        return key_slot(keys[0]) if keys and len(shards) == 1 else None

    def redirection(self, state: ClientState, slot: int, write: bool) -> ErrorReply | None:
        """In `moved` mode, the -MOVED a client gets for `slot` from this node (None: serve it
        here, or forward). Used where a command is checked before it is routed (a command
        queued in a transaction)."""
        if self.config.redirect != "moved" or state.forwarded:
            return None
        shard = self.replicas.cluster_map.shard_for_slot(slot)
        return None if shard is None else self._moved(state, shard, slot, write)

    def _moved(self, state: ClientState, shard: ShardInfo, slot: int,
               write: bool) -> ErrorReply | None:
        """In `moved` mode: the -MOVED redirection for a key this node should not serve."""
        leader = self.replicas.shard_leader(shard)
        if leader == self.config.id or not leader:
            return None
        if not write and state.readonly and self.replicas.local_group(shard.id) is not None:
            return None  # a READONLY client reads this replica (Redis Cluster's rule)
        address = self.replicas.resp_address(leader)
        if address is None:
            return None
        return ErrorReply(f"MOVED {slot} {address[0]}:{address[1]}")

    # -- the write path --------------------------------------------------------------------
    def write(self, state: ClientState, name: bytes, arguments: list[bytes], shard_id: int,
              slot: int | None = None,
              tag: WriteTag | None = None) -> asyncio.Future[object]:
        """Serve a write on shard `shard_id`: a future of its reply (see the module rules).

        Every write of a client connected here carries its connection's session and a new
        sequence (`write_session.py`, Raft dissertation §6.3): when its outcome becomes
        unknown (a broken link, a step-down) it is sent again with the same identity until
        its deadline, and the state machine answers the first application's reply. `tag` is
        given for a write another node forwarded (PHALANX.FWD): it keeps that node's."""
        loop = self.loops.get()
        if self.aa_prefixes:
            refused = guard(self.aa_prefixes, name, arguments, self.strong_home is not None)
            if refused is not None:
                done: asyncio.Future[object] = loop.create_future()
                done.set_result(refused)
                return done
        if tag is None and not state.forwarded:
            session = state.write_session
            if session is None:
                session = state.write_session = WriteSession()
            tag = WriteTag(session, session.begin())
        out: asyncio.Future[object]
        group = self.replicas.local_group(shard_id)
        if group is not None and group.is_leader() and (slot is None or group.owns(slot)):
            try:
                proposal = group.propose_command(
                    name, tuple(arguments[1:]), None if tag is None else tag.current())
            except (NotLeader, ProposalDropped):
                pass  # leadership is moving: the attempts wait for the new leader
            else:
                out = loop.create_future()
                proposal.add_done_callback(functools.partial(
                    self._proposed, out, state, name, arguments, shard_id, slot, tag))
                return self._ends(out, tag)
        elif group is not None and tag is not None and slot is not None:
            forwarded = self._forward_now(state, group, name, arguments, shard_id, slot, tag)
            if forwarded is not None:
                return self._ends(forwarded, tag)
        out = loop.create_task(self._write_attempts(state, name, arguments, shard_id, slot,
                                                    tag))
        return self._ends(out, tag)

    def _forward_now(self, state: ClientState, group: RaftGroup, name: bytes,
                     arguments: list[bytes], shard_id: int, slot: int,
                     tag: WriteTag) -> asyncio.Future[object] | None:
        """The forwarding fast case (a pipeline forwarded as a pipeline, issue 15): this
        node's replica follows a known leader and the connection's link to it is open, so
        the write goes on the link at once, without a task: a future of its reply. None when
        the case does not apply (the attempts forward it). A write whose link breaks, or that
        the leader answers "not the leader" / "outcome unknown", continues in the attempts
        (with its session: re-sent with the same identity)."""
        leader = group.leader
        if not leader or leader == self.config.id or group.stopped or not group.owns(slot) \
                or tag.raw_forward or tag.held():
            return None
        link = state.links.get(leader)
        if link is None and not state.closed:
            link = self._pooled_link(state, leader)
        if link is None or not link.usable():
            return None
        timeout = self.config.request_timeout_ms / 1000
        link.watch(_leader_of(group), timeout)
        reply = link.send(self._tagged(tag, arguments))
        tag.mark(link.connection)
        out: asyncio.Future[object] = self.loops.get().create_future()
        reply.add_done_callback(functools.partial(
            self._forwarded, out, state, name, arguments, shard_id, slot, tag,
            time.monotonic() + timeout))
        return out

    def _forwarded(self, out: asyncio.Future[object], state: ClientState, name: bytes,
                   arguments: list[bytes], shard_id: int, slot: int, tag: WriteTag,
                   deadline: float, reply: asyncio.Future[object]) -> None:
        """The fast forward's reply came (or its link broke): pass it on, or continue in
        the attempts until the same deadline."""
        if out.done():
            return
        if reply.cancelled():
            out.cancel()
            return
        if reply.exception() is not None:
            # The link broke (or its watchdog saw a new leader) after the write left.
            tag.uncertain = True
            tag.mark(WAITING)
        else:
            result = reply.result()
            if outcome_unknown(result):
                tag.uncertain = True
            elif unknown_forward(result):
                tag.raw_forward = True
            elif wire_code(result) != TRYAGAIN:
                out.set_result(result)
                return
        task = asyncio.get_running_loop().create_task(self._write_attempts(
            state, name, arguments, shard_id, slot, tag, deadline))
        task.add_done_callback(functools.partial(_copy_outcome, out))

    @staticmethod
    def _ends(out: asyncio.Future[object], tag: WriteTag | None) -> asyncio.Future[object]:
        """`out`, its write leaving its session's flight when it ends (§6.3: acknowledged).
        Its failure counts as retrieved: a client that left does not await it."""
        out.add_done_callback(retrieved)
        if tag is not None and tag.session is not None:
            out.add_done_callback(lambda _: tag.session.end(tag.sequence)  # type: ignore[union-attr]
                                  )
        return out

    def _proposed(self, out: asyncio.Future[object], state: ClientState, name: bytes,
                  arguments: list[bytes], shard_id: int, slot: int | None,
                  tag: WriteTag | None, proposal: asyncio.Future[object]) -> None:
        """The fast case's proposal ended: pass its outcome on, unless it was certainly not
        applied (replaced by another leader's entry, or refused at apply because the slot
        moved), or its outcome is unknown (a step-down) and it carries a session: then the
        write continues in the attempts instead of failing the client."""
        if out.done():
            return
        if proposal.cancelled():
            out.cancel()
            return
        error = proposal.exception()
        if error is None and not slot_moved(proposal.result()):
            out.set_result(proposal.result())
            return
        if isinstance(error, OutcomeUnknown) and tag is not None:
            tag.uncertain = True  # it may have been applied: sent again with its identity
        elif not (error is None or isinstance(error, ProposalDropped)):
            out.set_exception(error)
            return
        task = asyncio.get_running_loop().create_task(self._write_attempts(
            state, name, arguments, shard_id, slot, tag))
        task.add_done_callback(functools.partial(_copy_outcome, out))

    async def _write_attempts(self, state: ClientState, name: bytes, arguments: list[bytes],
                              shard_id: int, slot: int | None, tag: WriteTag | None,
                              deadline: float | None = None) -> object:
        """The write's attempts until its deadline (one request timeout from now unless
        given). A write that may have been applied by an earlier attempt never ends with a
        "certainly not applied" answer."""
        if deadline is None:
            deadline = time.monotonic() + self.config.request_timeout_ms / 1000
        try:
            reply = await self._write_loop(state, name, arguments, shard_id, slot, tag,
                                           deadline)
        except (RetrySafe, ClusterDown) as error:
            if tag is not None and tag.uncertain:
                raise OutcomeUnknown(f"the write may have been applied by an earlier attempt, "
                                     f"then: {error}") from error
            raise
        if tag is not None and tag.uncertain and wire_code(reply) in (TRYAGAIN, "CLUSTERDOWN"):
            raise OutcomeUnknown(f"the write may have been applied by an earlier attempt, "
                                 f"then: {getattr(reply, 'text', reply)}")
        return reply

    async def _write_loop(self, state: ClientState, name: bytes, arguments: list[bytes],
                          shard_id: int, slot: int | None, tag: WriteTag | None,
                          deadline: float) -> object:
        attempts = 0
        while True:
            if state.closed and (attempts or (tag is not None and tag.uncertain)):
                # The client is gone and this write was tried at least once: nobody waits for
                # the reply, so it is not tried again. During a failover, retrying every
                # abandoned request until its deadline (each with its own link to the
                # leader) turned a 0.5 s client timeout into a retry storm that kept a
                # follower from answering anyone within it (benchmarks/detection_lab.py).
                raise OutcomeUnknown("the client disconnected; the write was not sent again")
            attempts += 1
            shard_id, group = await self._route(shard_id, slot, deadline)
            if group is None:
                return await self._remote(state, shard_id, arguments, deadline, tag)
            leader = await self._leader_or_wait(group, deadline)
            if leader == self.config.id:
                if tag is not None:
                    tag.mark(LOCAL)
                try:
                    future = group.propose_command(name, tuple(arguments[1:]),
                                                   None if tag is None else tag.current())
                except (NotLeader, ProposalDropped):
                    # Certainly not applied; wait for the new leader and try again.
                    if time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(LEADER_WAIT_STEP_S)
                    continue
                remaining = max(0.001, deadline - time.monotonic())
                try:
                    reply = await asyncio.wait_for(future, remaining)
                except TimeoutError as error:
                    raise OutcomeUnknown("the write was proposed but not confirmed in time") \
                        from error
                except ProposalDropped:
                    # Another leader's entry took its index (§5.3): certainly not applied.
                    if time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(LEADER_WAIT_STEP_S)
                    continue
                except OutcomeUnknown:
                    # A step-down: the entry may still commit. With its session the write is
                    # proposed again (or forwarded to the new leader): it runs once (§6.3).
                    if tag is None or time.monotonic() >= deadline:
                        raise
                    tag.uncertain = True
                    await asyncio.sleep(LEADER_WAIT_STEP_S)
                    continue
                if slot_moved(reply) and time.monotonic() < deadline:
                    # Refused at apply (the slot moved by a split): certainly not applied.
                    await asyncio.sleep(LEADER_WAIT_STEP_S)
                    continue
                return reply
            if state.forwarded:
                raise TryAgain(f"this node is not the leader of shard {shard_id} "
                               f"(leader: {leader})")
            forwarded = arguments
            if arguments[0].upper() != b"PHALANX.SHARD" and \
                    not command_keys(arguments[0], tuple(arguments[1:])):
                # A keyless command's share of a fan-out (SCRIPT LOAD, FLUSHALL, a keyless
                # EVAL): this shard only, over there too (else the leader fans out again).
                forwarded = [b"PHALANX.SHARD", str(shard_id).encode(), *arguments]
            try:
                reply = await self._forward(state, leader, forwarded, deadline,
                                            _leader_of(group), tag)
            except LeaderUnreachable as error:
                # Nothing was sent: retrying is safe until the deadline.
                if isinstance(error.__cause__, ConnectionRefusedError):
                    # Nobody listens where the leader was: its process is gone. Tell the
                    # replica now (a PreVote soon, as when the peer connection resets; PreVote
                    # keeps a live leader safe) rather than after an election timeout.
                    group.leader_lost(leader)
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(LEADER_WAIT_STEP_S * (1 if group.leader != leader else 5))
                continue
            except OutcomeUnknown:
                # The link broke (or a new leader took over) after the write left. With its
                # session it is sent again, with the same identity, to whoever leads now.
                if tag is None or time.monotonic() >= deadline:
                    raise
                tag.uncertain = True
                await asyncio.sleep(LEADER_WAIT_STEP_S * (1 if group.leader != leader else 5))
                continue
            if tag is not None and time.monotonic() < deadline:
                if outcome_unknown(reply):
                    # The leader stepped down with it: send it again (same identity).
                    tag.uncertain = True
                    await asyncio.sleep(LEADER_WAIT_STEP_S)
                    continue
                if not tag.raw_forward and unknown_forward(reply):
                    tag.raw_forward = True  # an older leader: the bare command, as before
                    continue
            if wire_code(reply) == TRYAGAIN or lagging_signature(tag, reply):
                # The node we asked was not (or no longer) the leader: nothing was applied.
                if time.monotonic() >= deadline:
                    return reply
                await asyncio.sleep(LEADER_WAIT_STEP_S * 5)
                continue
            return reply

    # -- the read path ---------------------------------------------------------------------
    def read(self, state: ClientState, name: bytes, arguments: list[bytes], shard_id: int,
             slot: int | None, previous_write: asyncio.Future[object] | None) -> object:
        """Serve a read on shard `shard_id` after `previous_write` (the connection's last
        write when the read arrived): the reply (served now, under the lease) or a future of
        it (see the module rules)."""
        if self.aa_prefixes:
            refused: Error | None = guard(self.aa_prefixes, name, arguments,
                                          self.strong_home is not None)
            if refused is not None:
                return refused
        if slot is not None and not state.readonly and (
                previous_write is None or previous_write.done()):
            group = self.replicas.local_group(shard_id)
            if group is not None and group.shard is not None and group.owns(slot) \
                    and group.leader and not group.stopped:
                reply = self._read_here(state, group, name, arguments, shard_id, slot)
                if reply is not _NOT_NOW:
                    return reply
        return self.loops.get().create_task(self._read_attempts(
            state, name, arguments, previous_write, shard_id, slot))

    def _read_here(self, state: ClientState, group: RaftGroup, name: bytes,
                   arguments: list[bytes], shard_id: int, slot: int) -> object:
        """The fast cases of a linearizable read, without a task per command: served at once
        under the leader's lease, else when the group's batched ReadIndex confirms
        (`read_index_future`). The reply, a future of it, or `_NOT_NOW`."""
        shard_machine = group.shard
        assert shard_machine is not None
        args = tuple(arguments[1:])
        if group.lease_read_ready():
            reply = shard_machine.read(name, args, int(time.time() * 1000))
            return _NOT_NOW if slot_moved(reply) else reply
        try:
            barrier = group.read_index_future()
        except NotLeader:
            return _NOT_NOW
        loop = self.loops.get()
        out: asyncio.Future[object] = loop.create_future()
        started = time.perf_counter()

        def attempts() -> None:
            task = loop.create_task(self._read_attempts(state, name, arguments, None,
                                                        shard_id, slot))
            task.add_done_callback(functools.partial(_copy_outcome, out))

        def confirmed(barrier: asyncio.Future[int]) -> None:
            if out.done():
                return
            if barrier.cancelled() or barrier.exception() is not None:
                attempts()  # leadership moved: the attempts wait and retry
                return
            if group.raw.applied < barrier.result() or group.stopped:
                attempts()
                return
            group.metrics.observe_read_index(time.perf_counter() - started)
            try:
                reply = shard_machine.read(name, args, int(time.time() * 1000))
            except PhalanxError as error:
                out.set_exception(error)
                return
            if slot_moved(reply):
                attempts()
            else:
                out.set_result(reply)

        barrier.add_done_callback(confirmed)
        return out

    async def _read_attempts(self, state: ClientState, name: bytes, arguments: list[bytes],
                             previous_write: asyncio.Future[object] | None, shard_id: int,
                             slot: int | None) -> object:
        if previous_write is not None and not previous_write.done():
            with contextlib.suppress(Exception):
                await previous_write
        args = tuple(arguments[1:])
        timeout = self.config.request_timeout_ms / 1000
        deadline = time.monotonic() + timeout
        while True:
            shard_id, group = await self._route(shard_id, slot, deadline)
            if group is None:
                return await self._remote(state, shard_id, arguments, deadline, read=True)
            if not state.readonly:
                try:
                    await self._barrier(group, deadline)
                except TimeoutError as error:
                    if not group.loading():
                        raise
                    # Still replaying its log after a restart: Redis's -LOADING, not a
                    # timeout (docs/security.md).
                    raise Loading(f"this node's replica of shard {group.group_id} is "
                                  f"replaying its log ({group.raw.applied} of "
                                  f"{group.boot_commit} entries applied)") from error
            elif not group.caught_up:
                # A READONLY read is stale, but never older than what the shard held when
                # this replica last confirmed with its leader: the first one here waits for
                # that (a ReadIndex round, then the replica applies up to it), so a replica
                # rebuilt empty or restarted answers -LOADING while it catches up, never a
                # nil for a key that exists (docs/security.md, "replicas catching up").
                try:
                    await self._barrier(group, deadline)
                except (TimeoutError, NotLeader, ClusterDown) as error:
                    raise Loading(f"this node's replica of shard {group.group_id} is "
                                  f"catching up with its leader") from error
            shard_machine = group.shard
            if shard_machine is None:
                raise CommandError(f"ERR phalanx: group {shard_id} holds no data")
            reply = shard_machine.read(name, args, int(time.time() * 1000))
            if slot_moved(reply) and time.monotonic() < deadline:
                await asyncio.sleep(LEADER_WAIT_STEP_S)
                continue
            return reply

    # -- shared steps: the shard, its leader, forwarding -----------------------------------
    async def _barrier(self, group: RaftGroup, deadline: float) -> None:
        """Wait until a linearizable read may be served from `group` (ReadIndex, §6.4)."""
        while True:
            await self._leader_or_wait(group, deadline)
            try:
                await group.read_barrier(max(0.001, deadline - time.monotonic()))
                return
            except NotLeader:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(LEADER_WAIT_STEP_S)

    async def _leader_or_wait(self, group: RaftGroup, deadline: float) -> str:
        """The group's leader, waiting through an election; a shard whose quorum is gone
        fails fast with -CLUSTERDOWN (graceful degradation: other shards are unaffected)."""
        while True:
            if group.stopped:
                raise CommandError(f"ERR phalanx: this node's replica of shard "
                                   f"{group.group_id} stopped: {group.fatal_error}")
            leader = group.leader
            if leader:
                return leader
            now = time.monotonic()
            if now >= deadline or group.leaderless_for() > self.no_quorum_after_s:
                raise ClusterDown(f"The shard for this key has no quorum "
                                  f"(shard {group.group_id}: no leader for "
                                  f"{group.leaderless_for():.1f} s)")
            await asyncio.sleep(LEADER_WAIT_STEP_S)

    async def _route(self, shard_id: int, slot: int | None,
                     deadline: float) -> tuple[int, RaftGroup | None]:
        """(shard id, local replica or None) for a slot, from the newest map. While the local
        replica no longer owns the slot (a split or merge the map has not caught up with), wait
        and look again, until the deadline (-TRYAGAIN: nothing was done)."""
        while True:
            if slot is not None:
                current = self.replicas.cluster_map.shard_for_slot(slot)
                if current is not None:
                    shard_id = current.id
            group = self.replicas.local_group(shard_id)
            if group is None or slot is None or group.owns(slot):
                return shard_id, group
            if time.monotonic() >= deadline:
                raise TryAgain(f"slot {slot} is moving between shards")
            await asyncio.sleep(LEADER_WAIT_STEP_S)

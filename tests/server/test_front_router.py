"""The data router's one write path and one read path (`phalanx.server.front.router`), with a
fake replica registry: the fast cases are served inline, and a fast case that cannot finish
continues in the same path's attempts instead of failing the client."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

from phalanx.errors import CommandError, Loading, NotLeader, OutcomeUnknown, ProposalDropped
from phalanx.placement.shard import SlotMoved
from phalanx.server.front.replies import error_text
from phalanx.server.front.router import DataRouter
from phalanx.server.front.session import ClientState
from phalanx.server.front.write_session import WriteSession, WriteTag

SLOT = 42


class FakeGroup:
    """A local leader of shard 1: proposals resolve with the queued outcomes."""

    def __init__(self, outcomes: list[object], lease: bool = True) -> None:
        self.outcomes = deque(outcomes)
        self.proposed = 0
        self.clients: list[tuple[int, int, int] | None] = []
        self.group_id = 1
        self.leader = "n1"
        self.stopped = False
        self.lease = lease
        self.reads: deque[object] = deque()
        self.shard = SimpleNamespace(read=self._read)
        self.barrier: asyncio.Future[int] | None = None
        self.barriers = 0

    def is_leader(self) -> bool:
        return True

    def owns(self, slot: int) -> bool:
        return True

    def leaderless_for(self) -> float:
        return 0.0

    def propose_command(self, name: bytes, args: tuple[bytes, ...],
                        client: tuple[int, int, int] | None = None) -> asyncio.Future[object]:
        self.proposed += 1
        self.clients.append(client)
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        outcome = self.outcomes.popleft()
        loop = asyncio.get_running_loop()
        if isinstance(outcome, BaseException):
            loop.call_soon(future.set_exception, outcome)
        else:
            loop.call_soon(future.set_result, outcome)
        return future

    def _read(self, name: bytes, args: tuple[bytes, ...], now_ms: int) -> object:
        return self.reads.popleft()

    def lease_read_ready(self) -> bool:
        return self.lease

    def read_index_future(self) -> asyncio.Future[int]:
        self.barrier = asyncio.get_running_loop().create_future()
        return self.barrier

    async def read_barrier(self, timeout: float) -> None:
        self.barriers += 1


def _router(group: FakeGroup) -> DataRouter:
    shard = SimpleNamespace(id=1, leader="n1", voters=("n1",), replicas=("n1",))
    replicas: Any = SimpleNamespace(
        config=SimpleNamespace(id="n1", election_ticks=50, tick_ms=10, request_timeout_ms=2_000,
                               redirect="proxy", requirepass="", cluster_secret="",
                               aa_prefixes=()),
        cluster_map=SimpleNamespace(shard_for_slot=lambda slot: shard, shards={1: shard}),
        local_group=lambda shard_id: group, shard_leader=lambda shard: "n1",
        resp_address=lambda node_id: ("127.0.0.1", 1))
    return DataRouter(replicas, None,
                      lambda state, reply, name, arguments: repr(reply).encode())


def test_a_write_on_the_local_leader_is_proposed_inline() -> None:
    async def body() -> None:
        group = FakeGroup(["OK"])
        state = ClientState(id=1, address="?")
        future = _router(group).write(state, b"SET", [b"SET", b"k", b"v"], 1, SLOT)
        assert not isinstance(future, asyncio.Task)  # no task for the fast case
        assert group.proposed == 1
        assert await future == "OK"

    asyncio.run(body())


def test_a_write_whose_outcome_became_unknown_is_sent_again_with_its_session() -> None:
    """A step-down fails the pending write with OutcomeUnknown: it may have been applied. The
    write carries its connection's session (§6.3), so it is proposed again with the SAME
    (client id, sequence): the state machine answers the first application's reply."""
    async def body() -> None:
        group = FakeGroup([OutcomeUnknown("stepped down"), "OK", "OK"])
        state = ClientState(id=1, address="?")
        router = _router(group)
        assert await router.write(state, b"INCR", [b"INCR", b"k"], 1, SLOT) == "OK"
        assert group.proposed == 2
        first, again = group.clients
        assert first is not None and first == again and first[1] == first[2] == 1
        # The next write has the next sequence, and its first unacknowledged is itself.
        assert await router.write(state, b"INCR", [b"INCR", b"k"], 1, SLOT) == "OK"
        last = group.clients[-1]
        assert last is not None and last[0] == first[0] and last[1:] == (2, 2)
        assert state.write_session is not None and not state.write_session.in_flight

    asyncio.run(body())


def test_a_write_whose_client_left_is_not_sent_again() -> None:
    """The same step-down, but the client has disconnected meanwhile: nobody waits for the
    reply, so the write is not proposed again (no retry storm of abandoned requests during a
    failover); it ends as "outcome unknown"."""
    async def body() -> None:
        group = FakeGroup([OutcomeUnknown("stepped down"), "OK"])
        state = ClientState(id=1, address="?")
        state.closed = True  # what Sessions.close does when the connection is lost
        try:
            await _router(group).write(state, b"INCR", [b"INCR", b"k"], 1, SLOT)
        except OutcomeUnknown as error:
            assert "client disconnected" in str(error)
        else:
            raise AssertionError("expected OutcomeUnknown")
        assert group.proposed == 1

    asyncio.run(body())


def test_a_write_without_session_whose_outcome_became_unknown_fails() -> None:
    """A write that arrived without a session (a node forwarding the bare command) cannot be
    sent again safely: its client hears "outcome unknown"."""
    async def body() -> None:
        group = FakeGroup([OutcomeUnknown("stepped down"), "OK"])
        state = ClientState(id=1, address="?", forwarded=True)
        try:
            await _router(group).write(state, b"INCR", [b"INCR", b"k"], 1, SLOT)
        except OutcomeUnknown:
            pass
        else:
            raise AssertionError("expected OutcomeUnknown")
        assert group.proposed == 1 and group.clients == [None]

    asyncio.run(body())


def test_a_forwarded_write_carries_its_session_signed_and_the_leader_checks_it() -> None:
    """PHALANX.FWD (a follower's forward): the leader proposes the command with the
    forwarder's (client id, sequence, first unacknowledged), only under a valid signature
    when the cluster has a secret; a forged or altered one is refused, nothing proposed."""
    async def body() -> None:
        group = FakeGroup(["OK", "OK"])
        router = _router(group)
        router.config.cluster_secret = "s3cret"
        session = WriteSession()
        tag = WriteTag(session, session.begin())
        forwarded = router._tagged(tag, [b"SET", b"k", b"v"])
        assert forwarded[0] == b"PHALANX.FWD" and forwarded[4]
        leader_side = ClientState(id=2, address="?", forwarded=True)
        assert await router.forwarded_write(leader_side, forwarded) == "OK"
        assert group.clients == [(session.client_id, 1, 1)]
        # Sent again (a broken link): the same identity, so the machine runs it once.
        assert await router.forwarded_write(leader_side, list(forwarded)) == "OK"
        assert group.clients[1] == group.clients[0]
        for position, forged in ((-1, b"w"), (2, b"9"), (4, b"0" * 64)):
            altered = list(forwarded)
            altered[position] = forged
            with pytest.raises(CommandError, match="NOPERM"):
                router.forwarded_write(leader_side, altered)
        assert group.proposed == 2
        with pytest.raises(CommandError, match="takes a write"):
            router.forwarded_write(leader_side, router._tagged(tag, [b"GET", b"k"]))

    asyncio.run(body())


def test_a_dropped_or_moved_fast_write_continues_in_the_attempts() -> None:
    async def body() -> None:
        for first in (ProposalDropped("replaced by another leader's entry"),
                      SlotMoved("TRYAGAIN slot 42 moved to shard 2; retry")):
            group = FakeGroup([first, "OK"])
            state = ClientState(id=1, address="?")
            future = _router(group).write(state, b"SET", [b"SET", b"k", b"v"], 1, SLOT)
            assert await future == "OK"
            assert group.proposed == 2

    asyncio.run(body())


def test_a_leadership_change_at_propose_time_goes_to_the_attempts() -> None:
    async def body() -> None:
        group = FakeGroup(["OK"])
        calls = {"n": 0}
        propose = group.propose_command

        def first_refused(name: bytes, args: tuple[bytes, ...],
                          client: tuple[int, int, int] | None = None) -> asyncio.Future[object]:
            calls["n"] += 1
            if calls["n"] == 1:
                raise NotLeader("n1")
            return propose(name, args, client)

        group.propose_command = first_refused  # type: ignore[method-assign]
        state = ClientState(id=1, address="?")
        future = _router(group).write(state, b"SET", [b"SET", b"k", b"v"], 1, SLOT)
        assert isinstance(future, asyncio.Future)
        assert await future == "OK"

    asyncio.run(body())


def test_a_read_under_the_lease_is_served_at_once() -> None:
    async def body() -> None:
        group = FakeGroup([])
        group.reads.append(b"v")
        state = ClientState(id=1, address="?")
        router = _router(group)
        assert router.read(state, b"GET", [b"GET", b"k"], 1, SLOT, None) == b"v"
        # Encoded for the connection when it comes through `command`.
        group.reads.append(b"v")
        assert router.command(state, b"GET", [b"GET", b"k"], SLOT, False) == b"b'v'"

    asyncio.run(body())


def test_a_failed_read_index_batch_continues_in_the_attempts() -> None:
    async def body() -> None:
        group = FakeGroup([], lease=False)
        group.reads.append(b"v")
        state = ClientState(id=1, address="?")
        reply = _router(group).read(state, b"GET", [b"GET", b"k"], 1, SLOT, None)
        assert isinstance(reply, asyncio.Future)
        assert group.barrier is not None
        group.barrier.set_exception(NotLeader(None))
        assert await reply == b"v"
        assert group.barriers == 1  # the attempts ran their own ReadIndex round

    asyncio.run(body())


class FollowerGroup(FakeGroup):
    """A follower replica: its ReadIndex round times out (no catch-up in time) unless
    `confirms`; `replaying`: it has not yet applied what it had committed before a restart."""

    def __init__(self, confirms: bool, replaying: bool = False) -> None:
        super().__init__([], lease=False)
        self.confirms = confirms
        self.replaying = replaying
        self.caught_up = False
        self.boot_commit = 100
        self.raw = SimpleNamespace(applied=40 if replaying else 100)

    def loading(self) -> bool:
        return self.replaying

    def read_index_future(self) -> asyncio.Future[int]:
        raise NotLeader(None)  # the fast case gives up: the attempts take the round

    async def read_barrier(self, timeout: float) -> None:
        self.barriers += 1
        if not self.confirms:
            raise TimeoutError
        self.caught_up = True


def test_a_readonly_read_waits_for_the_replica_to_catch_up_once() -> None:
    """A READONLY read of a replica that never confirmed with its leader takes one ReadIndex
    round first (never a stale answer of a replica rebuilt empty); later ones are served at
    once from the replica."""
    async def body() -> None:
        group = FollowerGroup(confirms=True)
        group.reads.extend([b"v", b"v"])
        state = ClientState(id=1, address="?")
        state.readonly = True
        router = _router(group)
        assert await router.read(state, b"GET", [b"GET", b"k"], 1, SLOT, None) == b"v"
        assert group.barriers == 1 and group.caught_up
        assert await router.read(state, b"GET", [b"GET", b"k"], 1, SLOT, None) == b"v"
        assert group.barriers == 1

    asyncio.run(body())


def test_a_replica_catching_up_or_replaying_answers_loading_not_a_timeout() -> None:
    """READONLY on a replica that cannot confirm in time, and a linearizable read on a
    replica still replaying its log after a restart: -LOADING (Redis's reply while loading),
    nothing read; a replica that is not loading keeps the ordinary timeout."""
    async def body() -> None:
        state = ClientState(id=1, address="?")
        state.readonly = True
        catching_up = FollowerGroup(confirms=False)
        with pytest.raises(Loading, match="catching up with its leader"):
            await _router(catching_up).read(state, b"GET", [b"GET", b"k"], 1, SLOT, None)
        plain = ClientState(id=2, address="?")
        replaying = FollowerGroup(confirms=False, replaying=True)
        with pytest.raises(Loading, match="replaying its log"):
            await _router(replaying).read(plain, b"GET", [b"GET", b"k"], 1, SLOT, None)
        with pytest.raises(TimeoutError):
            await _router(FollowerGroup(confirms=False)).read(plain, b"GET", [b"GET", b"k"],
                                                              1, SLOT, None)
        assert error_text(Loading("x")).startswith("LOADING ")

    asyncio.run(body())

"""The front end's transactions (`phalanx.server.front.transactions`) over two shards, with a
fake registry whose groups are real `ShardMachine`s applying every proposal at once: -CROSSSLOT
when a transaction's keys span shards (at queue time for one command, at EXEC across them,
the transaction then discarded), -MOVED in moved mode, refusals that mark the transaction,
a failed WATCH read that makes EXEC abort, and PHALANX.EXEC as another node forwards it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from phalanx.errors import ClusterDown, PhalanxError
from phalanx.kv import Command, encode_command
from phalanx.kv.codec import Transaction, encode_transaction
from phalanx.placement import SLOT_COUNT, key_slot
from phalanx.placement.shard import ShardMachine
from phalanx.resp import NULL_ARRAY, ErrorReply, SimpleString
from phalanx.server.front.replies import error_text
from phalanx.server.front.router import DataRouter
from phalanx.server.front.session import ClientState
from phalanx.server.front.transactions import EXECABORT, Transactions

HALF = SLOT_COUNT // 2


def key_in(shard: int, prefix: str = "k") -> bytes:
    """A key of shard 1 (slots below HALF) or 2."""
    return next(key for i in range(10_000)
                if ((key := f"{prefix}{i}".encode()) and (key_slot(key) < HALF) == (shard == 1)))


class Group:
    """A local leader of one shard over a real ShardMachine: proposals apply at once."""

    def __init__(self, shard_id: int, owned: tuple[tuple[int, int], ...]) -> None:
        self.group_id = shard_id
        self.machine = ShardMachine(owned)
        self.shard = self.machine
        self.index = 0
        self.leader = "n1"
        self.stopped = False
        self.fail_reads = False

    def is_leader(self) -> bool:
        return True

    def owns(self, slot: int) -> bool:
        return self.machine.owns(slot)

    def leaderless_for(self) -> float:
        return 0.0

    def lease_read_ready(self) -> bool:
        if self.fail_reads:
            raise ClusterDown("no quorum (test)")
        return True

    def propose_command(self, name: bytes, args: tuple[bytes, ...],
                        client: tuple[int, int, int] | None = None) -> asyncio.Future[object]:
        self.index += 1
        reply = self.machine.apply(self.index, encode_command(
            Command(name, args, int(time.time() * 1000), *(client or (None, None, None)))))
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        future.set_result(reply)
        return future


class Front:
    """Transactions over two shards (1: the lower half of the slots, 2: the upper half)."""

    def __init__(self, redirect: str = "proxy", leader_of_2: str = "n1") -> None:
        self.groups = {1: Group(1, ((0, HALF - 1),)), 2: Group(2, ((HALF, SLOT_COUNT - 1),))}
        infos = {i: SimpleNamespace(id=i, leader="n1" if i == 1 else leader_of_2,
                                    voters=("n1",), replicas=("n1",)) for i in (1, 2)}
        self.config = SimpleNamespace(
            id="n1", election_ticks=50, tick_ms=10, request_timeout_ms=2_000,
            redirect=redirect, requirepass="", max_value_bytes=100, max_bulk_bytes=1000)
        replicas: Any = SimpleNamespace(
            config=self.config,
            cluster_map=SimpleNamespace(
                shard_for_slot=lambda slot: infos[1 if slot < HALF else 2], shards=infos),
            local_group=lambda shard_id: self.groups[shard_id],
            shard_leader=lambda shard: shard.leader,
            resp_address=lambda node_id: ("127.0.0.9", 7009))
        self.router = DataRouter(replicas, None, lambda state, reply, name: b"")
        self.tx = Transactions(replicas, self.router)
        self.tx.commands = {b"PING": SimpleNamespace(run=lambda state, args: SimpleString("PONG"),
                                                     awaits=False)}
        self.state = ClientState(id=1, address="?")

    async def call(self, *words: bytes | str) -> object:
        """One command as the listener runs it on this session."""
        arguments = [w.encode() if isinstance(w, str) else w for w in words]
        name = arguments[0].upper()
        try:
            if self.state.multi is not None and name not in (b"EXEC", b"DISCARD", b"MULTI",
                                                             b"WATCH"):
                handler = self.tx.commands.get(name)
                return self.tx.queue(self.state, name, arguments, handler)  # type: ignore[arg-type]
            method: Callable[[ClientState, list[bytes]], object] = {
                b"MULTI": self.tx.multi, b"EXEC": self.tx.exec, b"DISCARD": self.tx.discard,
                b"WATCH": self.tx.watch, b"UNWATCH": self.tx.unwatch,
                b"PHALANX.EXEC": self.tx.forwarded}[name]
            reply = method(self.state, arguments)
            if isinstance(reply, asyncio.Future):
                reply = await reply
            return reply
        except PhalanxError as error:
            return ErrorReply(error_text(error))

    def get(self, key: bytes) -> object:
        shard = 1 if key_slot(key) < HALF else 2
        return self.groups[shard].machine.read(b"GET", (key,), int(time.time() * 1000))


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())  # type: ignore[arg-type]


CROSSSLOT = ErrorReply("CROSSSLOT Keys in request don't hash to the same slot")


def test_keys_of_one_shard_run_and_keys_of_two_are_crossslot_at_exec() -> None:
    async def body() -> None:
        front = Front()
        a, b, c = key_in(1, "a"), key_in(1, "b"), key_in(2, "c")
        assert key_slot(a) != key_slot(b)  # different slots, one shard: accepted
        assert await front.call("MULTI") == SimpleString("OK")
        assert await front.call("SET", a, "1") == b"+QUEUED\r\n"
        assert await front.call("MSET", b, "2", a, "3") == b"+QUEUED\r\n"
        assert await front.call("PING") == b"+QUEUED\r\n"
        assert await front.call("DBSIZE") == b"+QUEUED\r\n"  # keyless: the transaction's shard
        assert await front.call("EXEC") == [SimpleString("OK"), SimpleString("OK"),
                                            SimpleString("PONG"), 2]
        assert front.get(a) == b"3"
        # Across shards: refused at EXEC, nothing applied, the transaction gone.
        await front.call("MULTI")
        await front.call("SET", a, "x")
        await front.call("SET", c, "y")
        assert await front.call("EXEC") == CROSSSLOT
        assert front.get(a) == b"3" and front.get(c) is None
        assert await front.call("EXEC") == ErrorReply("ERR EXEC without MULTI")
        # One command over both shards: refused when queued, EXECABORT.
        await front.call("MULTI")
        assert await front.call("MSET", a, "1", c, "2") == b"-" + CROSSSLOT.text.encode() + \
            b"\r\n"
        assert await front.call("EXEC") == ErrorReply(EXECABORT)
        # A watched key of the other shard counts too.
        await front.call("WATCH", c)
        await front.call("MULTI")
        await front.call("SET", a, "z")
        assert await front.call("EXEC") == CROSSSLOT
        assert await front.call("WATCH", a, c) == CROSSSLOT

    run(body)


def test_watch_aborts_on_a_change_and_a_failed_watch_read_aborts() -> None:
    async def body() -> None:
        front = Front()
        other = ClientState(id=2, address="?")
        a = key_in(2, "w")
        assert await front.call("WATCH", a) == SimpleString("OK")
        assert await front.call("WATCH", a) == SimpleString("OK")  # already watched
        writer = front.router.write(other, b"SET", [b"SET", a, b"theirs"], 2, key_slot(a))
        assert await writer == "OK"
        await front.call("MULTI")
        await front.call("SET", a, "mine")
        assert await front.call("EXEC") is NULL_ARRAY
        assert front.get(a) == b"theirs"
        front.groups[2].fail_reads = True
        reply = await front.call("WATCH", a)
        assert isinstance(reply, ErrorReply)
        front.groups[2].fail_reads = False
        await front.call("MULTI")
        await front.call("SET", a, "mine")
        assert await front.call("EXEC") is NULL_ARRAY  # never run unprotected
        assert front.get(a) == b"theirs"

    run(body)


def test_refusals_when_queued_mark_the_transaction() -> None:
    async def body() -> None:
        front = Front()
        a = key_in(1)
        for bad in (("SET", a, "x" * 101), ("NOPE",), ("GET",), ("SET", a, "y" * 99) * 11):
            await front.call("MULTI")
            assert (await front.call(*bad)).startswith(b"-")  # type: ignore[union-attr]
            assert await front.call("EXEC") == ErrorReply(EXECABORT)
        assert front.get(a) is None

    run(body)


def test_moved_mode_redirects_commands_of_a_shard_led_elsewhere() -> None:
    async def body() -> None:
        front = Front(redirect="moved", leader_of_2="n2")
        here, there = key_in(1), key_in(2)
        await front.call("MULTI")
        assert await front.call("SET", here, "1") == b"+QUEUED\r\n"
        assert await front.call("SET", there, "1") == (
            f"-MOVED {key_slot(there)} 127.0.0.9:7009\r\n".encode())
        assert await front.call("EXEC") == ErrorReply(EXECABORT)
        assert await front.call("WATCH", there) == ErrorReply(
            f"MOVED {key_slot(there)} 127.0.0.9:7009")
        await front.call("MULTI")
        await front.call("INCR", here)
        assert await front.call("EXEC") == [1]

    run(body)


def test_a_forwarded_exec_is_checked_and_applied() -> None:
    async def body() -> None:
        front = Front()
        a = key_in(1)
        payload = encode_transaction(Transaction((), ((b"SET", a, b"v"), (b"GET", a))))
        assert await front.call("PHALANX.EXEC", payload, a) == ["OK", b"v"]
        assert await front.call("PHALANX.EXEC", b"bad", a) == ErrorReply(
            "ERR PHALANX.EXEC: transaction: unknown format")
        assert await front.call("PHALANX.EXEC", payload, a, key_in(2)) == CROSSSLOT
        # The shard checks the listed keys at apply time: a key it does not own is refused.
        stray = encode_transaction(Transaction((), ((b"SET", key_in(2), b"v"),)))
        reply = await front.call("PHALANX.EXEC", stray, a)
        assert isinstance(reply, object) and "is not listed" in str(reply)

    run(body)


@pytest.mark.parametrize("words", [("MULTI", "x"), ("DISCARD", "x"), ("WATCH",)])
def test_a_control_command_with_a_wrong_arity_marks_the_transaction(
        words: tuple[str, ...]) -> None:
    async def body() -> None:
        front = Front()
        await front.call("MULTI")
        assert isinstance(await front.call(*words), ErrorReply)
        assert await front.call("EXEC") == ErrorReply(EXECABORT)

    run(body)


def test_a_held_connection_starts_its_next_commands_in_order_after_the_hold() -> None:
    """The listener's chain (start_command): a command that holds the connection (a WATCH
    read) delays every later command, also when it was itself started late."""
    from phalanx.server.front.listener import RespServer

    async def body() -> None:
        loop = asyncio.get_running_loop()
        holds: dict[bytes, asyncio.Future[object]] = {}
        started: list[bytes] = []
        server: Any = RespServer.__new__(RespServer)

        def start(state: ClientState, name: bytes, arguments: list[bytes]) -> object:
            started.append(arguments[1])
            if name == b"WATCH":
                state.hold = holds[arguments[1]] = loop.create_future()
            return b"+OK\r\n"

        server._start = start
        state = ClientState(id=1, address="?")
        replies = [RespServer.start_command(server, state, word.split()[0], word.split())
                   for word in (b"WATCH 1", b"WATCH 2", b"SET 3", b"GET 4")]
        await asyncio.sleep(0.01)
        assert started == [b"1"]
        holds[b"1"].set_result(None)
        await asyncio.sleep(0.01)
        assert started == [b"1", b"2"]  # 3 waits for the second WATCH's read
        holds[b"2"].set_result(None)
        await asyncio.sleep(0.01)
        assert started == [b"1", b"2", b"3", b"4"]
        assert RespServer.start_command(server, state, b"PING", [b"PING", b"5"]) == b"+OK\r\n"
        assert replies[0] == b"+OK\r\n"
        for reply in replies[1:]:
            assert await reply == b"+OK\r\n"  # type: ignore[misc]

    run(body)

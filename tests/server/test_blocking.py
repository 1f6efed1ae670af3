"""The blocking pops (`phalanx.server.front.blocking`) over a fake local leader that applies
every proposal to a real `ShardMachine` and runs the real apply hook
(`RaftGroup._watched_in` -> `on_watched_write`): immediate pops, waiting, FIFO service, a
disconnected client pops nothing, timeouts, errors while waiting, the MULTI "never block" form,
and the reply bytes and error texts compared with a real redis-server 7."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from phalanx.errors import CommandError, TryAgain
from phalanx.kv import Command, encode_command
from phalanx.ops.ports import free_port as _free_port
from phalanx.placement import command_keys
from phalanx.placement.shard import ShardMachine
from phalanx.resp import DEFAULT_LIMITS, NEED_DATA, NULL_ARRAY, ErrorReply, RespReplyParser, encode
from phalanx.resp import encode_command as encode_request
from phalanx.server.front.blocking import BlockingPops, parse_timeout, pop_request
from phalanx.server.front.connection import RespConnection
from phalanx.server.front.replies import to_resp
from phalanx.server.front.router import DataRouter
from phalanx.server.front.session import ClientState
from phalanx.server.group import RaftGroup

REDIS_SERVER = shutil.which("redis-server")


class ApplyingGroup:
    """A local leader of shard 1 that commits every proposal at once on a real machine, and
    tells its watcher what it wrote exactly as `RaftGroup._apply_ready` does."""

    def __init__(self) -> None:
        self.group_id = 1
        self.leader = "n1"
        self.stopped = False
        self.shard = ShardMachine()
        self.index = 0
        self.watched_keys: dict[bytes, int] = {}
        self.on_watched_write: Any = None
        self.proposed: list[tuple[bytes, tuple[bytes, ...]]] = []
        #: Errors the next pops raise (a leader change), before applying anything.
        self.failures: list[BaseException] = []

    def is_leader(self) -> bool:
        return True

    def owns(self, slot: int) -> bool:
        return True

    def leaderless_for(self) -> float:
        return 0.0

    def propose_command(self, name: bytes, args: tuple[bytes, ...],
                        client: tuple[int, int, int] | None = None) -> asyncio.Future[object]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        if self.failures and name.upper() in (b"LMPOP", b"ZMPOP", b"LMOVE", b"RPOPLPUSH"):
            loop.call_soon(future.set_exception, self.failures.pop(0))
            return future
        self.proposed.append((name.upper(), args))
        data = encode_command(Command(name, args, int(time.time() * 1000),
                                      *(client or (None, None, None))))

        def commit() -> None:
            self.index += 1
            reply = self.shard.apply(self.index, data)
            future.set_result(reply)
            touched = RaftGroup._watched_in(self, data) if self.watched_keys else []  # type: ignore[arg-type]
            if touched and self.on_watched_write is not None:
                self.on_watched_write(self.group_id, touched)

        loop.call_soon(commit)
        return future


def _pops(group: ApplyingGroup) -> tuple[BlockingPops, dict[int, ClientState]]:
    shard = SimpleNamespace(id=1, leader="n1", voters=("n1",), replicas=("n1",))
    replicas: Any = SimpleNamespace(
        config=SimpleNamespace(id="n1", election_ticks=50, tick_ms=10, request_timeout_ms=2_000,
                               redirect="proxy", requirepass=""),
        cluster_map=SimpleNamespace(shard_for_slot=lambda slot: shard, shards={1: shard}),
        local_group=lambda shard_id: group, shard_leader=lambda shard: "n1",
        resp_address=lambda node_id: ("127.0.0.1", 1))
    router = DataRouter(replicas, None, lambda state, reply, name: repr(reply).encode())
    clients: dict[int, ClientState] = {}
    return BlockingPops(replicas, router, clients), clients


def _client(clients: dict[int, ClientState], number: int) -> ClientState:
    state = ClientState(id=number, address=f"127.0.0.1:{number}")
    clients[number] = state
    return state


def _args(*parts: object) -> list[bytes]:
    return [part if isinstance(part, bytes) else str(part).encode() for part in parts]


async def _write(group: ApplyingGroup, *parts: object) -> object:
    arguments = _args(*parts)
    return await group.propose_command(arguments[0], tuple(arguments[1:]))


# -- the timeout and the request ----------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    (b"0", 0), (b"1", 1000), (b"0.5", 500), (b"1.2345", 1234), (b"-0.0001", 0),
    (b"0.0009", 0), (b"+2", 2000), (b"1e3", 1_000_000), (b"0x10", 16_000),
])
def test_timeouts_parse_as_redis_does(raw: bytes, expected: int) -> None:
    assert parse_timeout(raw, 1_700_000_000_000) == expected


@pytest.mark.parametrize(("raw", "text"), [
    (b"x", "ERR timeout is not a float or out of range"),
    (b"", "ERR timeout is not a float or out of range"),
    (b" 1", "ERR timeout is not a float or out of range"),
    (b"1 ", "ERR timeout is not a float or out of range"),
    (b"nan", "ERR timeout is not a float or out of range"),
    (b"1_0", "ERR timeout is not a float or out of range"),
    (b"\xff", "ERR timeout is not a float or out of range"),
    (b"-1", "ERR timeout is negative"),
    (b"-0.5", "ERR timeout is negative"),
    (b"inf", "ERR timeout is negative"),
    (b"1e400", "ERR timeout is negative"),
    # (redis-server 7.0.15 crashes on this one; phalanx refuses it as later Redis versions do)
    (b"9223372036000000", "ERR timeout is out of range"),
    (b"9223372037000000", "ERR timeout is negative"),
])
def test_bad_timeouts_get_redis_error_texts(raw: bytes, text: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_timeout(raw, 1_700_000_000_000)
    assert caught.value.text == text


def test_each_blocking_command_runs_as_its_non_blocking_form() -> None:
    now = 1_700_000_000_000
    cases = {
        (b"BLPOP", b"a", b"b", b"1"): [b"LMPOP", b"2", b"a", b"b", b"LEFT"],
        (b"BRPOP", b"a", b"0"): [b"LMPOP", b"1", b"a", b"RIGHT"],
        (b"BZPOPMIN", b"z", b"0"): [b"ZMPOP", b"1", b"z", b"MIN"],
        (b"BZPOPMAX", b"z", b"y", b"0"): [b"ZMPOP", b"2", b"z", b"y", b"MAX"],
        (b"BLMOVE", b"s", b"d", b"left", b"RIGHT", b"0"): [b"LMOVE", b"s", b"d", b"left",
                                                          b"RIGHT"],
        (b"BRPOPLPUSH", b"s", b"d", b"0"): [b"RPOPLPUSH", b"s", b"d"],
        (b"BLMPOP", b"0", b"2", b"a", b"b", b"LEFT", b"COUNT", b"3"):
            [b"LMPOP", b"2", b"a", b"b", b"LEFT", b"COUNT", b"3"],
        (b"BZMPOP", b"0", b"1", b"z", b"MAX"): [b"ZMPOP", b"1", b"z", b"MAX"],
    }
    for arguments, pop in cases.items():
        request = pop_request(arguments[0], list(arguments), now)
        assert request.pop == pop
        moves = pop[0] in (b"LMOVE", b"RPOPLPUSH")  # a move waits on its source only
        keys = command_keys(pop[0], pop[1:])
        assert request.keys == (keys[:1] if moves else keys)
        # The blocking command names the same keys as its non-blocking form.
        waited = command_keys(arguments[0], arguments[1:])
        assert set(waited) >= set(request.keys), arguments
    with pytest.raises(CommandError, match="syntax error"):
        pop_request(b"BLMOVE", _args("BLMOVE", "s", "d", "up", "LEFT", "x"), now)


# -- serving --------------------------------------------------------------------------------

def test_data_present_is_served_at_once_with_redis_shapes() -> None:
    async def scenario() -> None:
        group = ApplyingGroup()
        pops, clients = _pops(group)
        state = _client(clients, 1)
        await _write(group, "RPUSH", "b", "x", "y", "z")
        await _write(group, "ZADD", "z", "1", "m1", "2.5", "m2")
        assert await pops.run(state, _args("BLPOP", "a", "b", "0")) == [b"b", b"x"]
        assert await pops.run(state, _args("BRPOP", "b", "a", "0")) == [b"b", b"z"]
        assert await pops.run(state, _args("BZPOPMAX", "z", "0")) == [b"z", b"m2", b"2.5"]
        assert await pops.run(state, _args("BLMOVE", "b", "c", "LEFT", "LEFT", "0")) == b"y"
        assert await pops.run(state, _args("BRPOPLPUSH", "c", "d", "0")) == b"y"
        assert await pops.run(state, _args("BZMPOP", "0", "1", "z", "MIN")) == [
            b"z", [[b"m1", b"1"]]]
        await _write(group, "SET", "s", "v")
        reply = await pops.run(state, _args("BLPOP", "s", "0"))
        assert to_resp(reply) == ErrorReply(
            "WRONGTYPE Operation against a key holding the wrong kind of value")
        assert not group.watched_keys and not pops.queues  # nobody waited

    asyncio.run(scenario())


def test_a_waiter_is_served_by_a_later_push_and_waiters_go_first_come_first_served() -> None:
    async def scenario() -> None:
        group = ApplyingGroup()
        pops, clients = _pops(group)
        tasks = []
        for number in (1, 2, 3):
            tasks.append(asyncio.create_task(
                pops.run(_client(clients, number), _args("BLPOP", "q", "other", "0"))))
            await asyncio.sleep(0.01)
        assert pops.waiting() == 3 and group.watched_keys == {b"q": 3, b"other": 3}
        await _write(group, "RPUSH", "q", "first")
        await asyncio.sleep(0.05)
        assert [t.done() for t in tasks] == [True, False, False]
        assert tasks[0].result() == [b"q", b"first"]
        await _write(group, "RPUSH", "other", "second", "third")
        done = await asyncio.wait_for(asyncio.gather(*tasks[1:]), 2)
        assert done == [[b"other", b"second"], [b"other", b"third"]]
        assert not pops.queues and not group.watched_keys

    asyncio.run(scenario())


def test_each_element_reaches_exactly_one_of_many_waiters() -> None:
    async def scenario() -> None:
        group = ApplyingGroup()
        pops, clients = _pops(group)
        rng = random.Random(7)
        tasks = [asyncio.create_task(pops.run(_client(clients, n), _args(
            rng.choice(["BLPOP", "BRPOP"]), "jobs", "5"))) for n in range(1, 21)]
        await asyncio.sleep(0.02)
        for start in range(0, 20, 5):
            await _write(group, "LPUSH", "jobs", *[f"j{i}" for i in range(start, start + 5)])
        replies = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert sorted(reply[1] for reply in replies) == sorted(
            f"j{i}".encode() for i in range(20))

    asyncio.run(scenario())


def test_a_timeout_answers_nil_in_the_command_shape() -> None:
    async def scenario() -> None:
        group = ApplyingGroup()
        pops, clients = _pops(group)
        state = _client(clients, 1)
        started = time.monotonic()
        assert await pops.run(state, _args("BLPOP", "none", "0.1")) is NULL_ARRAY
        assert 0.09 <= time.monotonic() - started < 5
        # BLMOVE too: redis-server 7.0 answers *-1, not a null bulk.
        assert await pops.run(state, _args("BLMOVE", "none", "d", "LEFT", "LEFT", "0.05")) \
            is NULL_ARRAY
        assert await pops.run(state, _args("BZMPOP", "0.05", "1", "none", "MIN")) \
            is NULL_ARRAY
        assert encode(NULL_ARRAY, 2) == b"*-1\r\n" and encode(NULL_ARRAY, 3) == b"_\r\n"
        assert not pops.queues and not group.watched_keys

    asyncio.run(scenario())


def test_never_block_answers_nil_at_once() -> None:
    async def scenario() -> None:
        group = ApplyingGroup()
        pops, clients = _pops(group)
        reply = await asyncio.wait_for(pops.run(_client(clients, 1), _args(
            "BRPOP", "none", "0"), never_block=True), 1)
        assert reply is NULL_ARRAY

    asyncio.run(scenario())


def test_a_disconnected_waiter_pops_nothing_and_the_next_one_is_served() -> None:
    async def scenario() -> None:
        group = ApplyingGroup()
        pops, clients = _pops(group)
        gone = asyncio.create_task(pops.run(_client(clients, 1), _args("BLPOP", "q", "0")))
        await asyncio.sleep(0.01)
        stays = asyncio.create_task(pops.run(_client(clients, 2), _args("BLPOP", "q", "0")))
        await asyncio.sleep(0.01)
        del clients[1]  # the connection closed (Sessions.close)
        await _write(group, "RPUSH", "q", "only")
        assert await asyncio.wait_for(stays, 2) == [b"q", b"only"]
        assert await asyncio.wait_for(gone, 2) is NULL_ARRAY
        pops_proposed = [name for name, _ in group.proposed if name == b"LMPOP"]
        assert len(pops_proposed) == 3  # two first attempts, one served pop
        assert not pops.queues and not group.watched_keys

    asyncio.run(scenario())


def test_errors_while_waiting_keep_the_client_waiting() -> None:
    async def scenario() -> None:
        group = ApplyingGroup()
        pops, clients = _pops(group)
        task = asyncio.create_task(pops.run(_client(clients, 1), _args("BLPOP", "q", "5")))
        await asyncio.sleep(0.01)
        # The key becomes a string (Redis 7.0 keeps the client blocked), then a list again
        # while the leader changes under the next attempts (TRYAGAIN: retried, not shown).
        await _write(group, "SET", "q", "v")
        await asyncio.sleep(0.02)
        assert not task.done()
        await _write(group, "DEL", "q")
        group.failures = [TryAgain("moving")] * 2
        await _write(group, "RPUSH", "q", "x")
        assert await asyncio.wait_for(task, 5) == [b"q", b"x"]

    asyncio.run(scenario())


def test_the_apply_hook_finds_the_written_keys() -> None:
    owner: Any = SimpleNamespace(watched_keys={b"a": 1, b"d": 2})

    def touched(*parts: object) -> list[bytes]:
        arguments = _args(*parts)
        data = encode_command(Command(name=arguments[0], args=tuple(arguments[1:]), now_ms=1))
        return RaftGroup._watched_in(owner, data)

    assert touched("RPUSH", "a", "x") == [b"a"]
    assert touched("LMOVE", "s", "d", "LEFT", "LEFT") == [b"d"]
    assert touched("ZUNIONSTORE", "d", "2", "a", "b") == [b"d", b"a"]
    assert touched("SET", "other", "v") == []
    assert sorted(touched("FLUSHALL")) == [b"a", b"d"]  # keyless: everyone looks again
    assert sorted(RaftGroup._watched_in(owner, b"\x00garbage")) == [b"a", b"d"]


# -- against a real redis-server -------------------------------------------------------------



@pytest.fixture(scope="module")
def redis_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[socket.socket]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis-blocking"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield connection
        connection.close()
    finally:
        process.terminate()
        process.wait(timeout=5)


def _redis_reply(connection: socket.socket, arguments: list[bytes]) -> object:
    connection.sendall(encode_request(*arguments))
    parser = RespReplyParser()
    while True:
        reply = parser.next_reply()
        if reply is not NEED_DATA:
            return reply
        parser.feed(connection.recv(65536))


def _ours(reply: object) -> object:
    parser = RespReplyParser()
    parser.feed(encode(to_resp(reply), 2))  # type: ignore[arg-type]
    return parser.next_reply()


def _random_command(rng: random.Random) -> list[bytes]:
    keys = ["l1", "l2", "z1", "z2", "s"]
    key = rng.choice(keys)
    kind = rng.randrange(12)
    timeout = rng.choice(["0.01", "0.02", "x", "-1", "nan", "1e400", "0.01"])
    if kind == 0:
        return _args("RPUSH", rng.choice(keys), *rng.sample("abcdef", rng.randint(1, 3)))
    if kind == 1:
        return _args("ZADD", rng.choice(keys), rng.randint(1, 9), rng.choice("abcdef"))
    if kind == 2:
        return _args("SET", "s", "v")
    if kind == 3:
        return _args(rng.choice(["BLPOP", "BRPOP"]), *rng.sample(keys, rng.randint(1, 3)),
                     timeout)
    if kind == 4:
        return _args(rng.choice(["BZPOPMIN", "BZPOPMAX"]), *rng.sample(keys, rng.randint(1, 3)),
                     timeout)
    if kind == 5:
        return _args("BLMOVE", key, rng.choice(keys), rng.choice(["LEFT", "RIGHT", "UP"]),
                     rng.choice(["LEFT", "RIGHT"]), timeout)
    if kind == 6:
        return _args("BRPOPLPUSH", key, rng.choice(keys), timeout)
    if kind in (7, 8):
        chosen = rng.sample(keys, rng.randint(1, 2))
        extra = rng.choice([[], ["COUNT", rng.choice(["2", "0", "x"])], ["BOGUS"]])
        return _args(rng.choice(["BLMPOP", "BZMPOP"]), timeout,
                     rng.choice([len(chosen), len(chosen), 0]), *chosen,
                     rng.choice(["LEFT", "RIGHT", "MIN", "MAX"]), *extra)
    if kind == 9:
        return _args("BLPOP", key)  # arity
    return _args("RPUSH", rng.choice(["l1", "l2"]), rng.choice("xyz"))


def test_replies_match_redis_server(redis_socket: socket.socket) -> None:
    """Random sequences of pushes and blocking pops (short timeouts, bad timeouts, bad
    directions, counts, numkeys, wrong types): every reply equals redis-server 7's."""
    async def scenario() -> int:
        compared = 0
        for seed in range(6):
            rng = random.Random(seed)
            group = ApplyingGroup()
            pops, clients = _pops(group)
            state = _client(clients, 1)
            _redis_reply(redis_socket, _args("FLUSHALL"))
            for _ in range(80):
                arguments = _random_command(rng)
                theirs = _redis_reply(redis_socket, arguments)
                name = arguments[0].upper()
                if name in (b"RPUSH", b"ZADD", b"SET"):
                    ours: object = await _write(group, *arguments)
                else:
                    try:
                        ours = await pops.run(state, arguments)
                    except CommandError as error:
                        ours = ErrorReply(error.text)
                assert _ours(ours) == theirs, (seed, arguments)
                compared += 1
        return compared

    assert asyncio.run(scenario()) == 480


# -- the connection: commands behind a blocked one ------------------------------------------

class _Transport:
    def __init__(self) -> None:
        self.written = bytearray()

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 5)

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Owner:
    """Starts commands: BLPOP waits on a future the test resolves; others answer at once."""

    def __init__(self) -> None:
        self.limits = DEFAULT_LIMITS
        self.started: list[bytes] = []
        self.blocked: list[asyncio.Future[object]] = []

    def open_client(self, connection: object, address: str) -> ClientState:
        return ClientState(id=1, address=address)

    def close_client(self, connection: object, state: object) -> None:
        pass

    def protocol_error(self) -> None:
        pass

    def start_command(self, state: ClientState, name: bytes, arguments: list[bytes]) -> object:
        self.started.append(name)
        if name == b"BLPOP":
            future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            self.blocked.append(future)
            return future
        return b"+" + name + b"\r\n"

    def reply_bytes(self, state: ClientState, name: bytes,
                    future: asyncio.Future[object], arguments: list[bytes]) -> bytes:
        return encode(future.result(), 2)  # type: ignore[arg-type]


def test_commands_pipelined_behind_a_blocked_one_start_after_it_answers() -> None:
    async def scenario() -> None:
        owner = _Owner()
        connection = RespConnection(owner)  # type: ignore[arg-type]
        transport = _Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(encode_request("BLPOP", "q", "0") + encode_request("RPUSH", "q", "x")
                                 + encode_request("BLPOP", "q", "0") + encode_request("GET", "k"))
        assert owner.started == [b"BLPOP"] and transport.written == b""
        owner.blocked[0].set_result(None)
        await asyncio.sleep(0)
        assert owner.started == [b"BLPOP", b"RPUSH", b"BLPOP"]
        connection.data_received(encode_request("PING"))
        assert owner.started == [b"BLPOP", b"RPUSH", b"BLPOP"]
        owner.blocked[1].set_result([b"q", b"x"])
        await asyncio.sleep(0)
        assert owner.started == [b"BLPOP", b"RPUSH", b"BLPOP", b"GET", b"PING"]
        assert bytes(transport.written) == (b"$-1\r\n+RPUSH\r\n*2\r\n$1\r\nq\r\n$1\r\nx\r\n"
                                            b"+GET\r\n+PING\r\n")

    asyncio.run(scenario())


def test_arity_and_a_read_only_user_are_refused_as_redis_does() -> None:
    async def scenario() -> None:
        group = ApplyingGroup()
        pops, clients = _pops(group)
        state = _client(clients, 1)
        for arguments, text in [
            (_args("BLPOP", "q"), "ERR wrong number of arguments for 'blpop' command"),
            (_args("BLMOVE", "a", "b", "LEFT", "LEFT"),
             "ERR wrong number of arguments for 'blmove' command"),
            (_args("BZMPOP", "0", "1", "z"), "ERR wrong number of arguments for 'bzmpop' command"),
        ]:
            with pytest.raises(CommandError) as caught:
                await pops.run(state, arguments)
            assert caught.value.text == text
        state.user, state.permissions = "reader", "read"
        with pytest.raises(CommandError) as caught:
            await pops.run(state, _args("BRPOP", "q", "0"))
        assert caught.value.text == ("NOPERM User reader has no permissions to run the "
                                     "'brpop' command")
        assert group.proposed == []

    asyncio.run(scenario())

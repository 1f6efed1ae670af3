"""The peer link (`phalanx.server.peer_link.LeaderLink`) and the router's forwarding
(`DataRouter._forward`) against real sockets (issue 14): a peer that misbehaves gets a clear
protocol error, never unbounded memory or a hang; a forward ends as soon as a new leader is
known, as "certainly not applied" when the command never left, else "outcome unknown"."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from phalanx.errors import LeaderUnreachable, OutcomeUnknown, PeerProtocolError
from phalanx.resp import SimpleString
from phalanx.server.front.session import ClientState
from phalanx.server.peer_link import LeaderLink


def test_a_peer_sending_an_endless_reply_line_gets_a_protocol_error() -> None:
    async def body() -> None:
        sent = {"bytes": 0}

        async def endless_peer(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"phalanx-forward\r\n")  # CLIENT SETNAME
            writer.write(b"+OK\r\n")
            await reader.readuntil(b"GET\r\n$1\r\nk\r\n")
            writer.write(b"+")
            chunk = b"x" * 65536
            try:
                while sent["bytes"] < 256 << 20:  # bounded: 256 MiB at most, never ending
                    writer.write(chunk)
                    sent["bytes"] += len(chunk)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass  # the link gave up: what we want
            finally:
                writer.close()

        server = await asyncio.start_server(endless_peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        link = LeaderLink("n2", "127.0.0.1", port, 30.0, "", None)
        try:
            with pytest.raises(PeerProtocolError, match="reply line longer than"):
                await link.call([b"GET", b"k"])
        finally:
            link.close()
            server.close()
            await server.wait_closed()
        # The link stopped reading soon after the bound (1 MiB), far from the 256 MiB the
        # peer would have sent (socket buffers hold a few MiB at most).
        assert sent["bytes"] < 64 << 20

    asyncio.run(body())


class FakeLeader:
    """A RESP peer on a real socket: answers the link's handshake (unless `silent`), then each
    command with `+OK`, or never (`mute`); `close_after_reply` closes each connection after
    its first command's reply (a leader that restarted while the link was idle)."""

    def __init__(self, *, silent: bool = False, mute: bool = False,
                 close_after_reply: bool = False, hold: asyncio.Event | None = None) -> None:
        self.silent = silent
        self.mute = mute
        self.close_after_reply = close_after_reply
        #: When set: each reply waits for this event (a write still committing).
        self.hold = hold
        self.commands = 0
        self.connections = 0
        #: Connections that ended (the link closed them, or they failed).
        self.ended = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"phalanx-forward\r\n")
            if self.silent:
                await reader.read()  # never answers (a paused process: the kernel accepted)
                return
            writer.write(b"+OK\r\n")
            while True:
                await reader.readuntil(b"SET\r\n$1\r\nk\r\n$1\r\nv\r\n")
                self.commands += 1
                if self.mute:
                    await reader.read()
                    return
                if self.hold is not None:
                    await self.hold.wait()
                writer.write(b"+OK\r\n")
                await writer.drain()
                if self.close_after_reply:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.ended += 1
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def _router(port: int) -> Any:
    from phalanx.server.front.router import DataRouter

    replicas: Any = SimpleNamespace(
        config=SimpleNamespace(id="n1", election_ticks=50, tick_ms=10, request_timeout_ms=5_000,
                               redirect="proxy", requirepass=""),
        resp_address=lambda node_id: ("127.0.0.1", port))
    return DataRouter(replicas, None, lambda state, reply, name, arguments: b"")


SET = [b"SET", b"k", b"v"]


def test_a_forward_not_yet_sent_when_a_new_leader_appears_is_certainly_not_applied() -> None:
    """The old leader accepts connections but is paused (SIGSTOP): the handshake never ends,
    so the command never left. When a new leader is known the caller may retry on it."""
    async def body() -> None:
        peer = FakeLeader(silent=True)
        port = await peer.start()
        router, state = _router(port), ClientState(id=1, address="?")
        leader = {"now": "n2"}
        try:
            call = asyncio.ensure_future(router._forward(
                state, "n2", SET, time.monotonic() + 30, lambda: leader["now"]))
            await asyncio.sleep(0.2)
            assert not call.done()
            leader["now"] = "n3"
            with pytest.raises(LeaderUnreachable, match="before the command was sent"):
                await asyncio.wait_for(call, 5)
            assert peer.commands == 0
            assert "n2" not in state.links  # a half-open link is never reused
        finally:
            await peer.stop()

    asyncio.run(body())


def test_a_forward_sent_to_a_leader_that_goes_silent_has_an_unknown_outcome() -> None:
    async def body() -> None:
        peer = FakeLeader(mute=True)
        port = await peer.start()
        router, state = _router(port), ClientState(id=1, address="?")
        leader = {"now": "n2"}
        try:
            call = asyncio.ensure_future(router._forward(
                state, "n2", SET, time.monotonic() + 30, lambda: leader["now"]))
            for _ in range(1000):  # bounded (10 s): the command reaches the mute leader
                if peer.commands:
                    break
                await asyncio.sleep(0.01)
            assert peer.commands == 1 and not call.done()
            leader["now"] = "n3"
            with pytest.raises(OutcomeUnknown, match="leadership moved from n2 to n3"):
                await asyncio.wait_for(call, 5)
        finally:
            await peer.stop()

    asyncio.run(body())


def test_a_command_still_forwarding_after_its_client_left_leaves_no_link_behind() -> None:
    """A write keeps trying after its client disconnected (a failover: the client's timeout is
    shorter than the request's). The link it opens then never stays in the closed session's
    dict (before the fix, its connection stayed open and its reader task pending until the
    garbage collector destroyed it: "Task was destroyed but it is pending!", hundreds per
    second through a follower during a SIGSTOP failover): it goes to the router's pool of
    idle links, which owns it and closes it when the node stops."""
    async def body() -> None:
        peer = FakeLeader()
        port = await peer.start()
        router, state = _router(port), ClientState(id=1, address="?")
        state.closed = True  # what Sessions.close does when the connection is lost
        try:
            reply = await asyncio.wait_for(router._forward(
                state, "n2", SET, time.monotonic() + 30, None), 10)
            assert reply == SimpleString("OK") and peer.commands == 1
            assert state.links == {}
            assert router.links.idle_count() == 1
            router.links.close()  # the node stops
            deadline = time.monotonic() + 10
            while peer.ended < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert peer.connections == 1 and peer.ended == 1
            assert router.links.idle_count() == 0
        finally:
            await peer.stop()

    asyncio.run(body())


def _close_session(router: Any, state: ClientState) -> None:
    """What `Sessions.close` does with a closed connection's links (the listener hands
    them to the router's pool)."""
    state.closed = True
    for link in state.links.values():
        router.links.give_back(link)
    state.links.clear()


def test_a_closed_clients_link_serves_the_next_client_without_a_new_connection() -> None:
    """A client that connects for each command (the gap writer of the failover benchmarks)
    used to cost a TCP connection, AUTH and CLIENT SETNAME to the leader per command, on
    both nodes; under load that drove a follower into answering nobody in time (see
    `LinkPool`). The next client connection takes the idle link over."""
    async def body() -> None:
        peer = FakeLeader()
        port = await peer.start()
        router = _router(port)
        try:
            for client in range(1, 4):
                state = ClientState(id=client, address="?")
                reply = await asyncio.wait_for(router._forward(
                    state, "n2", SET, time.monotonic() + 30, None), 10)
                assert reply == SimpleString("OK")
                _close_session(router, state)
            assert peer.commands == 3 and peer.connections == 1
            assert router.links.idle_count() == 1
        finally:
            router.links.close()
            await peer.stop()

    asyncio.run(body())


def test_a_link_given_back_with_a_call_in_flight_is_parked_once_answered() -> None:
    """A client left while its write was on the link (its reply still to come): the link is
    neither closed (the write was sent; closing cannot take it back) nor handed to another
    client before that reply is read (replies match calls in order)."""
    async def body() -> None:
        hold = asyncio.Event()
        peer = FakeLeader(hold=hold)
        port = await peer.start()
        router, state = _router(port), ClientState(id=1, address="?")
        try:
            call = asyncio.ensure_future(router._forward(
                state, "n2", SET, time.monotonic() + 30, None))
            deadline = time.monotonic() + 10
            while peer.commands < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert peer.commands == 1 and not call.done()
            _close_session(router, state)
            assert router.links.idle_count() == 0
            other = ClientState(id=2, address="?")
            assert router.links.take("n2", "127.0.0.1", port) is None
            hold.set()
            assert await asyncio.wait_for(call, 10) == SimpleString("OK")
            assert router.links.idle_count() == 1
            reply = await asyncio.wait_for(router._forward(
                other, "n2", SET, time.monotonic() + 30, None), 10)
            assert reply == SimpleString("OK") and peer.connections == 1
        finally:
            router.links.close()
            await peer.stop()

    asyncio.run(body())


def test_a_link_its_peer_closed_is_not_reused_from_the_pool() -> None:
    async def body() -> None:
        peer = FakeLeader(close_after_reply=True)
        port = await peer.start()
        router = _router(port)
        try:
            for client in range(1, 3):
                state = ClientState(id=client, address="?")
                reply = await asyncio.wait_for(router._forward(
                    state, "n2", SET, time.monotonic() + 30, None), 10)
                assert reply == SimpleString("OK")
                link = state.links["n2"]
                deadline = time.monotonic() + 10
                while link.usable() and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)  # the peer's FIN arrives
                _close_session(router, state)
                assert router.links.idle_count() == 0
            assert peer.commands == 2 and peer.connections == 2
        finally:
            router.links.close()
            await peer.stop()

    asyncio.run(body())


def test_a_link_the_peer_closed_while_idle_is_reconnected_not_written_to() -> None:
    """Writing on a link whose peer already closed it would make a certain "not applied" an
    unknown outcome: the link sees the EOF and reconnects first."""
    async def body() -> None:
        peer = FakeLeader(close_after_reply=True)
        port = await peer.start()
        link = LeaderLink("n2", "127.0.0.1", port, 10.0, "", None)
        try:
            for _ in range(3):
                assert await link.call(SET) == SimpleString("OK")
                await asyncio.sleep(0.1)  # the peer's FIN arrives while the link is idle
            assert peer.commands == 3 and peer.connections == 3
        finally:
            link.close()
            await peer.stop()

    asyncio.run(body())


def test_a_refused_connection_is_certainly_not_applied() -> None:
    async def body() -> None:
        peer = FakeLeader()
        port = await peer.start()
        await peer.stop()  # nobody listens there any more (a killed leader)
        router, state = _router(port), ClientState(id=1, address="?")
        with pytest.raises(LeaderUnreachable) as raised:
            await router._forward(state, "n2", SET, time.monotonic() + 5, lambda: "n2")
        assert isinstance(raised.value.__cause__, ConnectionRefusedError)

    asyncio.run(body())


class EchoLeader:
    """A RESP peer that answers each `ECHO x` with `$x` after reading a whole batch: the
    replies of many commands in flight arrive together, in order. `cut_after` closes the
    connection once that many commands arrived (a leader killed mid-pipeline)."""

    def __init__(self, cut_after: int = 0) -> None:
        self.cut_after = cut_after
        self.received: list[bytes] = []
        self.reads = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from phalanx.resp import NEED_DATA, RespParser, encode

        parser = RespParser()
        try:
            await reader.readuntil(b"phalanx-forward\r\n")
            writer.write(b"+OK\r\n")
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                self.reads += 1
                parser.feed(data)
                out = b""
                while (command := parser.next_command()) is not NEED_DATA:
                    argument = command[1]  # type: ignore[index]
                    self.received.append(argument)
                    if self.cut_after and len(self.received) == self.cut_after:
                        return  # (once: the next connection is served)
                    out += encode(argument)
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.ended += 1
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def test_many_calls_in_flight_on_one_link_get_their_own_replies_in_order() -> None:
    """A pipeline forwarded as a pipeline (issue 15 lever 5): 200 calls written at once, in
    few sends; each gets its own reply."""
    async def body() -> None:
        peer = EchoLeader()
        port = await peer.start()
        link = LeaderLink("n2", "127.0.0.1", port, 10.0, "", None)
        try:
            assert await link.call([b"ECHO", b"first"]) == b"first"  # connects
            futures = [link.send([b"ECHO", b"%d" % i]) for i in range(200)]
            replies = await asyncio.gather(*futures)
            assert replies == [b"%d" % i for i in range(200)]
            assert peer.received[1:] == [b"%d" % i for i in range(200)]
            assert peer.reads < 50  # written together, not one round trip each
        finally:
            link.close()
            await peer.stop()

    asyncio.run(body())


def test_a_connection_cut_mid_pipeline_fails_every_call_still_waiting() -> None:
    """The leader dies after 30 of 100 calls arrived: every call without its reply fails (an
    OSError: the caller decides what that means for its command), none hangs, no bare
    assertion, and the connection is marked failed (re-sent writes wait for it)."""
    async def body() -> None:
        peer = EchoLeader(cut_after=31)
        port = await peer.start()
        link = LeaderLink("n2", "127.0.0.1", port, 10.0, "", None)
        try:
            assert await link.call([b"ECHO", b"first"]) == b"first"
            connection = link.connection
            futures = [link.send([b"ECHO", b"%d" % i]) for i in range(100)]
            results = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), 10)
            assert all(isinstance(r, OSError) for r in results), results[:3]
            assert connection is not None and connection.failed
            assert not link.usable()
            # The next call connects again.
            assert await link.call([b"ECHO", b"again"]) == b"again"
        finally:
            link.close()
            await peer.stop()

    asyncio.run(body())


def test_the_watchdog_fails_calls_waiting_on_a_leader_that_was_replaced() -> None:
    async def body() -> None:
        peer = FakeLeader(mute=True)
        port = await peer.start()
        link = LeaderLink("n2", "127.0.0.1", port, 10.0, "", None)
        leader = {"now": "n2"}
        link.watch(lambda: leader["now"], 30.0)
        try:
            call = asyncio.ensure_future(link.call(SET))
            for _ in range(1000):  # bounded (10 s): the call is waiting on the mute leader
                if peer.commands:
                    break
                await asyncio.sleep(0.01)
            assert peer.commands == 1 and not call.done()
            leader["now"] = "n3"
            with pytest.raises(ConnectionResetError, match="leadership moved"):
                await asyncio.wait_for(call, 5)
        finally:
            link.close()
            await peer.stop()

    asyncio.run(body())

"""The peer link (`phalanx.server.peer_link.LeaderLink`) against real sockets: a peer that
misbehaves gets a clear protocol error, never unbounded memory or a hang (issue 14)."""

from __future__ import annotations

import asyncio

import pytest

from phalanx.errors import PeerProtocolError
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

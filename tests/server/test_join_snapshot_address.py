"""A joining node can reach the member that sends it group 0's snapshot.

A node started with `--join` lists only itself: the map (and with it every member's RESP
address) arrives with group 0's snapshot, which the node pulls from the sender's RESP port
(`server/snapshot_transfer.py`). The sender's address therefore comes from the join reply
(`MetaClient.resp_address`); before, the fetch looped on "no address for n1" forever.

A real seed on a real socket answers PHALANX.JOIN with a real encoded map; the joining node is
a real `Node` (not started: only its join and its fetcher's address book are exercised).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from phalanx.ops.ports import free_port as _free_port
from phalanx.server.config import NodeConfig, PeerConfig
from phalanx.server.node import Node


def _peer(node_id: str) -> PeerConfig:
    return PeerConfig(id=node_id, peer=f"127.0.0.1:{_free_port()}",
                      resp=f"127.0.0.1:{_free_port()}", admin=f"127.0.0.1:{_free_port()}")


async def _read_command(reader: asyncio.StreamReader) -> list[bytes]:
    header = await reader.readline()
    if not header:
        raise ConnectionError("the client closed the connection")
    assert header.startswith(b"*"), header
    arguments = []
    for _ in range(int(header[1:])):
        length = int((await reader.readline())[1:])
        arguments.append((await reader.readexactly(length + 2))[:-2])
    return arguments


def test_a_joining_node_resolves_the_snapshot_senders_address_from_the_join_reply(
        tmp_path: Path) -> None:
    async def main() -> None:
        seed = Node(NodeConfig(id="n1", data_dir=str(tmp_path / "n1"), peers=(_peer("n1"),)))
        map_bytes = seed.replicas.cluster_map.encode()
        joins: list[list[bytes]] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    command = await _read_command(reader)
                    if command[0].upper() == b"PHALANX.JOIN":
                        joins.append(command)
                        writer.write(b"$%d\r\n%s\r\n" % (len(map_bytes), map_bytes))
                    else:
                        writer.write(b"+OK\r\n")
                    await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        seed_port = server.sockets[0].getsockname()[1]
        joiner = Node(NodeConfig(id="n4", data_dir=str(tmp_path / "n4"), peers=(_peer("n4"),),
                                 join=f"127.0.0.1:{seed_port}", request_timeout_ms=3000))
        resolve = joiner.snapshot_fetcher._resolve
        # Before the join reply: the joining node's own map knows no other member.
        assert "n1" not in joiner.replicas.cluster_map.nodes
        assert resolve("n1") is None
        task = asyncio.create_task(joiner.meta_client.join())
        try:
            for _ in range(500):  # bounded: the join retries until the map lists n4
                if joins and resolve("n1") is not None:
                    break
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            joiner.meta_client.close()
            server.close()
            await server.wait_closed()
        assert joins, "the joining node never sent PHALANX.JOIN"
        host, port = seed.config.me.resp.rsplit(":", 1)
        # The map still does not list n1 (it comes with group 0's snapshot) ...
        assert joiner.replicas.resp_address("n1") is None
        # ... but the snapshot fetcher reaches n1 at the address the join reply gave.
        assert resolve("n1") == (host, int(port))
        assert resolve("n9") is None

    asyncio.run(main())

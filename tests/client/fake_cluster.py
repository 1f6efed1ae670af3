"""Fake phalanx nodes for the client's unit tests: tiny threaded RESP servers on loopback.

Each `FakeNode` answers `CLUSTER SHARDS|SLOTS` from its `FakeCluster`'s map, `CLIENT ...`
(redis-py's handshake) with +OK, and every other command from its script first (a queue of
raw replies, `DROP` to close the connection after reading the command without answering,
or `SILENT` never to answer),
then from a tiny shared key-value store (GET SET MGET MSET DEL INCR INCRBY). Every command it
receives, other than CLUSTER and CLIENT, is recorded in `received`. Replies are written with
`phalanx.resp.encode`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from collections.abc import Sequence

from phalanx.resp import NEED_DATA, OK, ErrorReply, RespParser, SimpleString, encode

DROP = object()
"""A scripted "reply": read the command, then close the connection without answering."""
SILENT = object()
"""A scripted "reply": read the command and never answer (the client's read times out)."""


def error(text: str) -> bytes:
    return encode(ErrorReply(text))


class FakeNode:
    def __init__(self, cluster: FakeCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.received: list[list[bytes]] = []
        self.script: deque[bytes | object] = deque()
        self.map_requests = 0
        self.connections: list[socket.socket] = []
        self.stopped = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name=f"fake-{name}").start()

    # ---- test API ---------------------------------------------------------------------------
    def then(self, *replies: bytes | object) -> FakeNode:
        """Queue scripted replies for the next commands (after them: the KV store)."""
        self.script.extend(replies)
        return self

    def commands(self, name: str) -> list[list[bytes]]:
        with self._lock:
            return [c for c in self.received if c[0].upper() == name.upper().encode()]

    def stop(self) -> None:
        """Close the listener and every connection: later connects are refused."""
        self.stopped = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        with contextlib.suppress(OSError):
            self.listener.close()
        for connection in list(self.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)  # close() alone waits for recv()
            with contextlib.suppress(OSError):
                connection.close()

    # ---- serving ----------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self.stopped:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        parser = RespParser()
        with contextlib.suppress(OSError), connection:
            while True:
                data = connection.recv(65536)
                if not data:
                    return
                parser.feed(data)
                while (command := parser.next_command()) is not NEED_DATA:
                    assert isinstance(command, list)
                    reply = self._answer(command)
                    if reply is DROP:
                        connection.shutdown(socket.SHUT_RDWR)
                        return
                    if reply is SILENT:
                        continue
                    assert isinstance(reply, bytes)
                    connection.sendall(reply)

    def _answer(self, command: list[bytes]) -> bytes | object:
        name = command[0].upper()
        if name == b"CLUSTER":
            with self._lock:
                self.map_requests += 1
            return self.cluster.cluster_reply(command[1].upper())
        if name == b"CLIENT":
            return OK
        with self._lock:
            self.received.append(command)
            if self.script:
                return self.script.popleft()
        return self.cluster.kv(command)


class FakeCluster:
    """Fake nodes plus a map: `shards` is a list of (first slot, last slot, [node index...]),
    the leader first (`leaderless` shards list no master)."""

    def __init__(self, nodes: int = 3) -> None:
        self.nodes = [FakeNode(self, f"n{i + 1}") for i in range(nodes)]
        self.shards: list[tuple[int, int, list[int]]] = [(0, 8191, [0, 1]),
                                                          (8192, 16383, [1, 2])]
        self.leaderless: set[int] = set()
        self.slots_only = False
        self.data: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    @property
    def seeds(self) -> list[str]:
        return [node.address for node in self.nodes]

    def close(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> FakeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the map ----------------------------------------------------------------------------
    def cluster_reply(self, sub: bytes) -> bytes:
        if sub == b"SHARDS" and not self.slots_only:
            shards: list[object] = []
            for index, (first, last, members) in enumerate(self.shards):
                nodes: list[object] = []
                for position, member in enumerate(members):
                    node = self.nodes[member]
                    master = position == 0 and index not in self.leaderless
                    nodes.append([b"id", node.name.encode(), b"port", node.port,
                                  b"ip", b"127.0.0.1", b"endpoint", b"127.0.0.1",
                                  b"role", b"master" if master else b"replica",
                                  b"replication-offset", 0, b"health", b"online"])
                shards.append([b"slots", [first, last], b"nodes", nodes])
            return encode(shards)
        if sub == b"SLOTS":
            ranges: list[object] = []
            for first, last, members in self.shards:
                ranges.append([first, last, *[[b"127.0.0.1", self.nodes[m].port,
                                               self.nodes[m].name.encode()] for m in members]])
            return encode(ranges)
        return error("ERR unknown subcommand")

    # ---- a tiny KV --------------------------------------------------------------------------
    def kv(self, command: Sequence[bytes]) -> bytes:
        name, args = command[0].upper(), list(command[1:])
        with self._lock:
            if name == b"PING":
                return encode(SimpleString("PONG"))
            if name == b"GET":
                return encode(self.data.get(args[0]))
            if name == b"SET":
                if b"GET" in [a.upper() for a in args[2:]]:
                    old = self.data.get(args[0])
                    self.data[args[0]] = args[1]
                    return encode(old)
                self.data[args[0]] = args[1]
                return OK
            if name == b"MGET":
                return encode([self.data.get(key) for key in args])
            if name == b"MSET":
                for index in range(0, len(args), 2):
                    self.data[args[index]] = args[index + 1]
                return OK
            if name == b"DEL":
                return encode(sum(1 for key in args if self.data.pop(key, None) is not None))
            if name in (b"INCR", b"INCRBY"):
                value = int(self.data.get(args[0], b"0")) + (int(args[1]) if len(args) > 1
                                                              else 1)
                self.data[args[0]] = b"%d" % value
                return encode(value)
            if name == b"LPUSH":
                return encode(1)
        return error(f"ERR unknown command '{name.decode()}'")

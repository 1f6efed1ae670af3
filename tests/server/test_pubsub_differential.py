"""Pub/Sub differential test: seeded random sequences of (P|S)(UN)SUBSCRIBE, PING, ECHO,
PUBLISH, SPUBLISH and PUBSUB sent to a phalanx front end and to a real redis-server 7.0, every
frame each subscriber receives compared step by step (RESP2 and RESP3).

Redis iterates its dicts in hash order (UNSUBSCRIBE without arguments, several matching
patterns, PUBSUB CHANNELS), phalanx in insertion order: each step's frames are compared as a
multiset, with the subscription counts compared as a multiset of their own."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from phalanx.resp import Push
from phalanx.server.front.listener import RespServer

from .test_pubsub import Client, _free_port, _registry

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")

CHANNELS = [b"a", b"b", b"news", b"nx", b"n"]
PATTERNS = [b"n*", b"*", b"a?", b"[ab]", b"n\\*"]
SHARD = [b"{s}1", b"{s}2", b"{s}3"]  # one slot: redis-server (not in cluster mode) does not check
_CONFIRMATIONS = {b"subscribe", b"psubscribe", b"ssubscribe", b"unsubscribe",
                  b"punsubscribe", b"sunsubscribe"}


def _step(rng: random.Random) -> tuple[str, list[bytes]]:
    """One random command: ("sub", arguments) for the subscriber, ("pub", ...) for the
    publisher."""
    kind = rng.randrange(12)
    if kind == 0:
        return "sub", [b"SUBSCRIBE", *rng.sample(CHANNELS, rng.randint(1, 3))]
    if kind == 1:
        return "sub", [b"PSUBSCRIBE", *rng.sample(PATTERNS, rng.randint(1, 2))]
    if kind == 2:
        return "sub", [b"SSUBSCRIBE", *rng.sample(SHARD, rng.randint(1, 2))]
    if kind == 3:
        return "sub", [b"UNSUBSCRIBE", *rng.sample(CHANNELS, rng.randint(0, 2))]
    if kind == 4:
        return "sub", [b"PUNSUBSCRIBE", *rng.sample(PATTERNS, rng.randint(0, 1))]
    if kind == 5:
        return "sub", [b"SUNSUBSCRIBE", *rng.sample(SHARD, rng.randint(0, 1))]
    if kind == 6:
        return "sub", rng.choice([[b"ECHO", b"x"], [b"PING", b"hey"], [b"PING"]])
    if kind in (7, 8):
        return "pub", [b"PUBLISH", rng.choice(CHANNELS), b"m%d" % rng.randrange(100)]
    if kind == 9:
        return "pub", [b"SPUBLISH", rng.choice(SHARD), b"s%d" % rng.randrange(100)]
    return "pub", rng.choice([
        [b"PUBSUB", b"NUMSUB", *rng.sample(CHANNELS, 2)], [b"PUBSUB", b"NUMPAT"],
        [b"PUBSUB", b"SHARDNUMSUB", *SHARD], [b"PUBSUB", b"CHANNELS", b"n*"],
        [b"PUBSUB", b"SHARDCHANNELS"]])


def _normal(frames: list[object]) -> tuple[list[str], list[int]]:
    """A step's frames as a multiset, the confirmations' counts apart."""
    shown: list[str] = []
    counts: list[int] = []
    for frame in frames:
        items = frame.items if isinstance(frame, Push) else frame
        if isinstance(items, list) and items and items[0] in _CONFIRMATIONS:
            counts.append(int(items[2]))  # type: ignore[call-overload]
            shown.append(repr([type(frame).__name__, *items[:2]]))
        elif isinstance(items, list) and all(isinstance(i, bytes) for i in items):
            shown.append(repr([type(frame).__name__, *sorted(items)]))  # type: ignore[type-var]
        else:
            shown.append(repr(frame))
    return sorted(shown), sorted(counts)


async def _drain(client: Client) -> list[object]:
    """Everything the subscriber received up to the reply of a barrier PING."""
    client.writer.write(b"*2\r\n$4\r\nPING\r\n$7\r\nbarrier\r\n")
    frames: list[object] = []
    while True:
        frame = await client.next()
        if frame == b"barrier" or (isinstance(frame, list) and frame == [b"pong", b"barrier"]):
            return frames
        frames.append(frame)


async def _send(client: Client, arguments: list[bytes]) -> None:
    client.writer.write(b"*%d\r\n" % len(arguments) + b"".join(
        b"$%d\r\n%b\r\n" % (len(a), a) for a in arguments))


async def _publisher_reply(client: Client, arguments: list[bytes]) -> object:
    await _send(client, arguments)
    reply = await client.next()
    if arguments[:2] in ([b"PUBSUB", b"CHANNELS"], [b"PUBSUB", b"SHARDCHANNELS"]):
        return sorted(reply)  # type: ignore[call-overload]
    return reply


async def _compare(seed: int, redis_port: int, steps: int) -> None:
    rng = random.Random(seed)
    protocol = 3 if seed % 2 else 2
    ports = {"n1": _free_port()}
    server = RespServer(_registry("n1", ports, ""), "127.0.0.1", ports["n1"])
    await server.start()
    try:
        subs = [await Client.open(ports["n1"]), await Client.open(redis_port)]
        pubs = [await Client.open(ports["n1"]), await Client.open(redis_port)]
        for sub in subs:
            if protocol == 3:
                await _send(sub, [b"HELLO", b"3"])
                await sub.next()
        for index in range(steps):
            who, arguments = _step(rng)
            if who == "sub":
                for sub in subs:
                    await _send(sub, arguments)
            else:
                ours, theirs = [await _publisher_reply(p, arguments) for p in pubs]
                assert ours == theirs, (seed, index, arguments)
            ours_frames, their_frames = [await _drain(sub) for sub in subs]
            assert _normal(ours_frames) == _normal(their_frames), (
                seed, index, arguments, ours_frames, their_frames)
        for client in (*subs, *pubs):
            client.close()
    finally:
        await server.stop()


@pytest.mark.parametrize("seed", range(6))
def test_pubsub_matches_redis(seed: int) -> None:
    assert REDIS_SERVER is not None
    port = _free_port()
    with tempfile.TemporaryDirectory() as workdir:
        process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), 0.2):
                        break
                except OSError:
                    assert time.monotonic() < deadline and process.poll() is None
                    time.sleep(0.05)
            asyncio.run(asyncio.wait_for(_compare(seed, port, 150), 120))
        finally:
            process.terminate()
            process.wait(timeout=5)

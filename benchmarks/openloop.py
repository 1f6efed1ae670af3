"""Open-loop RESP load generator: requests at a fixed rate, per-request latency (issue 7).

redis-benchmark has no rate limit: it measures a closed loop at saturation. This sends request
`i` at `start + i / rate` whatever the replies do (open loop), over `--connections` pipelined
connections (round robin; RESP replies come back in order on a connection, so each reply is
matched to its send time FIFO), and measures each latency from the request's *scheduled* send
time, so a stall shows up in the percentiles instead of silently slowing the sender down
(no coordinated omission).

Bounded: at most `--seconds` of sending, at most `--requests` requests, at most
`--max-in-flight` requests outstanding (beyond that a scheduled request is counted as `dropped`,
not sent), and `--timeout` to drain the replies after the last send. One JSON line on stdout:

  {"target_rate", "achieved_rate", "sent", "ok", "errors", "dropped", "late_timeouts",
   "seconds", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "first_error"}

Tests: `set` (SET key:<12 digits> xxx), `get`, `mixed` (`--set-fraction` SETs, the rest GETs),
keys uniform over `--keyspace` (redis-benchmark's key format, so its keys and ours coincide).

    python benchmarks/openloop.py --port 7001 --rate 500 --seconds 10 --test set
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import time

import hiredis


def command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 stats: Stats) -> None:
        self.reader = reader
        self.writer = writer
        self.pending: collections.deque[float] = collections.deque()
        self.parser = hiredis.Reader()
        self.stats = stats
        self.task = asyncio.ensure_future(self._read())

    def send(self, payload: bytes, scheduled: float) -> None:
        self.pending.append(scheduled)
        self.writer.write(payload)

    async def _read(self) -> None:
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            self.parser.feed(data)
            while True:
                reply = self.parser.gets()
                if reply is False:
                    break
                scheduled = self.pending.popleft()
                now = time.monotonic()
                if isinstance(reply, hiredis.ReplyError):
                    self.stats.errors += 1
                    if not self.stats.first_error:
                        self.stats.first_error = str(reply)[:200]
                else:
                    self.stats.latencies.append(now - scheduled)


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error = ""


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(fraction * len(values)))] * 1000.0


async def run(args: argparse.Namespace) -> dict[str, object]:
    stats = Stats()
    connections = []
    for _ in range(args.connections):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(args.host, args.port), timeout=5)
        connections.append(Connection(reader, writer, stats))
    rng = random.Random(args.seed)
    value = b"x" * args.value_size
    interval = 1.0 / args.rate
    total = min(args.requests, int(args.rate * args.seconds)) if args.requests else \
        int(args.rate * args.seconds)
    sent = dropped = 0
    start = time.monotonic() + 0.05
    index = 0
    while index < total:
        now = time.monotonic()
        due = start + index * interval
        if due > now:
            await asyncio.sleep(due - now)
            continue
        # Send everything that is due (the event loop may have been late).
        while index < total and start + index * interval <= now:
            scheduled = start + index * interval
            index += 1
            connection = connections[index % len(connections)]
            if len(connection.pending) * len(connections) >= args.max_in_flight:
                dropped += 1
                continue
            key = b"key:%012d" % rng.randrange(args.keyspace)
            is_set = args.test == "set" or (args.test == "mixed"
                                            and rng.random() < args.set_fraction)
            connection.send(command(b"SET", key, value) if is_set else command(b"GET", key),
                            scheduled)
            sent += 1
    send_end = time.monotonic()
    deadline = send_end + args.timeout
    while any(c.pending for c in connections) and time.monotonic() < deadline:
        if all(c.task.done() for c in connections):
            break
        await asyncio.sleep(0.01)
    late = sum(len(c.pending) for c in connections)
    for connection in connections:
        connection.task.cancel()
        connection.writer.close()
    latencies = sorted(stats.latencies)
    elapsed = max(send_end - start, 1e-9)
    return {"target_rate": args.rate, "achieved_rate": round(len(latencies) / elapsed, 1),
            "test": args.test, "sent": sent, "ok": len(latencies), "errors": stats.errors,
            "dropped": dropped, "late_timeouts": late, "seconds": round(elapsed, 3),
            "p50_ms": round(percentile(latencies, 0.50), 3),
            "p90_ms": round(percentile(latencies, 0.90), 3),
            "p99_ms": round(percentile(latencies, 0.99), 3),
            "p999_ms": round(percentile(latencies, 0.999), 3),
            "max_ms": round(latencies[-1] * 1000.0, 3) if latencies else 0.0,
            "first_error": stats.first_error}


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--test", choices=("set", "get", "mixed"), default="set")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to send")
    parser.add_argument("--requests", type=int, default=0, help="at most this many (0: no cap)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--keyspace", type=int, default=100000)
    parser.add_argument("--value-size", type=int, default=3)
    parser.add_argument("--set-fraction", type=float, default=0.5, help="mixed: share of SETs")
    parser.add_argument("--max-in-flight", type=int, default=10000)
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the replies after the last send")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

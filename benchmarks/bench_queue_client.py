"""The queue bench's load client (issue 17): one run against one target, a JSON line on stdout.

Run by benchmarks/bench_queue.py as a child process (the project's interpreter), once per
measurement, so every target gets the same fresh client and its CPU time is reported:

    python bench_queue_client.py KIND ADDRESSES QUEUE MODE [options]

KIND is `amqp` (aio-pika, the asyncio client of RabbitMQ's docs: publisher confirms on the
channel, persistent messages to a quorum queue through the default exchange, manual acks,
`prefetch_count` unacked deliveries at most) or `redis` (redis-py's asyncio client with hiredis:
`XADD`, `XREADGROUP GROUP`, `XACK`; the consumer group is created by the bench). ADDRESSES is a
comma-separated list (AMQP URLs, or host:port): clients use the first and move to the next
after a connection error (the gap mode connects through survivors only).

Modes (every loop is bounded by a count and by `--seconds`):
- `publish`: `--publishers` concurrent publishers, each its own connection, each waits for the
  confirm (AMQP Basic.Ack / the XADD reply) of a message before sending the next; `--messages`
  in total. Rate = confirmed / wall time of the sending phase.
- `consume`: one consumer takes `--messages` messages and acks each (AMQP: Basic.Ack per message,
  `multiple=False`; streams: `XREADGROUP COUNT prefetch` then one `XACK` with the ids of that
  batch). Rate = acked / wall time; checks the payload ids: duplicates and the count.
- `latency`: open loop. Message *i* is published at start + i/rate whatever the confirms do
  (at most `--max-in-flight` unconfirmed), carrying its scheduled time; one consumer (its own
  connection) acks every message; end-to-end latency = delivery time - scheduled time (no
  coordinated omission), plus confirm latency. Ends when every confirmed message was delivered
  or `--drain` seconds after the last send.
- `gap`: open loop at `--rate` with unique payload ids and a consumer, for the failover runs.
  Prints `ready` once publishing and consuming both work; then reads `fault <monotonic time>`
  from stdin (the bench's kill -9), prints `recovered` when a publish started after the fault
  was confirmed and a delivery happened after it, and `stop` ends publishing; the consumer then
  drains until every confirmed id was delivered (or `--drain` s). Reports the publish gap (last
  confirm before the fault to the first confirm of a publish sent after it), the consume gap
  (the longest pause between two deliveries from the last delivery before the fault on), ids
  confirmed but never delivered (lost), deliveries of an id already delivered (duplicates).

Monotonic times are CLOCK_MONOTONIC, shared by every process of the machine, so the bench's
fault time and this client's times compare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

GROUP = "bench"
CONSUMER = "c1"
#: Empty XREADGROUP ... BLOCK 1000 replies that came back at once (a non-blocking server).
EARLY_EMPTY = [0]


def note(message: str) -> None:
    """A timestamped line on stderr (the bench keeps it in its work directory's logs)."""
    print(f"{time.monotonic():.3f} {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def payload(tag: str, sequence: int, size: int, scheduled: float = 0.0) -> bytes:
    head = f"{tag}:{sequence}:{scheduled:.6f}:".encode()
    return head + b"x" * max(size - len(head), 0)


def parse_payload(body: bytes) -> tuple[str, float]:
    """(unique id, scheduled monotonic time) of a message body."""
    tag, sequence, scheduled, _ = body.split(b":", 3)
    return f"{tag.decode()}:{sequence.decode()}", float(scheduled)


# --------------------------------------------------------------------------- connections


class Target:
    """publish(body) -> None (raises when not confirmed); consume(handler); close().

    A consumer calls `handler(body)` when a message arrives and counts it in `acked` (then
    calls `on_ack()`) once its ack was sent."""

    def __init__(self, addresses: list[str], queue: str, timeout: float) -> None:
        self.addresses = addresses
        self.queue = queue
        self.timeout = timeout
        self.index = 0
        self.acked = 0
        self.on_ack: Callable[[], None] = lambda: None

    def next_address(self) -> str:
        address = self.addresses[self.index % len(self.addresses)]
        return address

    def rotate(self) -> None:
        self.index += 1


class AmqpPublisher(Target):
    async def connect(self) -> None:
        import aio_pika

        self.connection = await aio_pika.connect(self.next_address(), timeout=self.timeout)
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.message_class = aio_pika.Message
        self.persistent = aio_pika.DeliveryMode.PERSISTENT

    async def publish(self, body: bytes) -> None:
        confirmation = await self.channel.default_exchange.publish(
            self.message_class(body, delivery_mode=self.persistent), routing_key=self.queue,
            timeout=self.timeout)
        name = type(confirmation).__name__
        if name != "Ack":
            raise RuntimeError(f"publish not confirmed: {name}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.connection.close(), 5)


class AmqpConsumer(Target):
    """Push consumer (Basic.Consume), manual ack per message."""

    async def connect(self, prefetch: int, handler: Callable[[bytes], None]) -> None:
        import aio_pika

        self.connection = await aio_pika.connect(self.next_address(), timeout=self.timeout)
        self.channel = await self.connection.channel()
        await self.channel.set_qos(prefetch_count=prefetch)
        queue = await self.channel.get_queue(self.queue, ensure=False)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            handler(message.body)
            await message.ack()
            self.acked += 1
            self.on_ack()

        await queue.consume(on_message, no_ack=False)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.connection.close(), 5)


def no_retry() -> Any:
    """redis-py retries a command once on a connection error by default: an XADD sent again
    is a second entry (a duplicate the bench would not see as such), and an XREADGROUP `>`
    sent again hides the lost reply of the first, whose entries then sit in the pending list
    with nobody re-reading them. So no retries: the error reaches the loop, which reconnects
    and (consumer) re-reads its pending entries first."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Retry(NoBackoff(), 0)


class RedisPublisher(Target):
    """One connection (a publisher that waits for each confirm), or with `pool` > 1 up to that
    many connections used concurrently (the open loops: redis-py sends one command at a time
    on a connection, so many messages in flight need many connections, where AMQP pipelines
    them on one channel)."""

    pool = 1

    async def connect(self) -> None:
        import redis.asyncio as redis

        host, _, port = self.next_address().rpartition(":")
        options = {"host": host, "port": int(port), "socket_timeout": self.timeout,
                   "socket_connect_timeout": self.timeout, "retry": no_retry()}
        if self.pool > 1:
            self.client = redis.Redis(connection_pool=redis.BlockingConnectionPool(
                max_connections=self.pool, timeout=None, **options))
        else:
            self.client = redis.Redis(single_connection_client=True, **options)
        await self.client.ping()

    async def publish(self, body: bytes) -> None:
        # https://redis.io/docs/latest/commands/xadd/ : auto id, the reply is the new id.
        await self.client.xadd(self.queue, {"p": body})

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.aclose(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.connection_pool.disconnect(), 5)


class RedisConsumer(Target):
    """XREADGROUP (https://redis.io/docs/latest/commands/xreadgroup/) COUNT prefetch BLOCK; the
    consumer's own pending entries (id 0) first after a (re)connect, then `>`; one XACK per
    batch."""

    async def connect(self, prefetch: int, handler: Callable[[bytes], None]) -> None:
        import redis.asyncio as redis

        host, _, port = self.next_address().rpartition(":")
        self.client = redis.Redis(host=host, port=int(port), socket_timeout=self.timeout + 2,
                                  socket_connect_timeout=self.timeout,
                                  single_connection_client=True, retry=no_retry())
        await self.client.ping()
        self.prefetch = prefetch
        self.handler = handler
        self.stopped = False
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        history = True
        while not self.stopped:
            asked = time.monotonic()
            reply = await self.client.xreadgroup(GROUP, CONSUMER,
                                                 {self.queue: "0" if history else ">"},
                                                 count=self.prefetch, block=1000)
            entries = reply[0][1] if reply else []
            if history and not entries:
                history = False
                continue
            if not entries and time.monotonic() - asked < 0.5:
                # A server that answered an empty BLOCK read at once (it does not block):
                # poll every 2 ms instead of spinning, and say so in the result.
                EARLY_EMPTY[0] += 1
                await asyncio.sleep(0.002)
            for _id, fields in entries:
                if fields:  # a pending entry deleted meanwhile comes back without fields
                    self.handler(fields[b"p"])
            if entries:
                await self.client.xack(self.queue, GROUP, *[i for i, _ in entries])
                self.acked += len(entries)
                self.on_ack()

    async def close(self) -> None:
        if hasattr(self, "task"):
            # redis-py may swallow a cancellation inside a blocking read: the flag ends the
            # loop at the next reply (BLOCK 1000: within a second) whatever happens.
            self.stopped = True
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.aclose(), 5)


def publisher(kind: str, addresses: list[str], queue: str, timeout: float,
              pool: int = 1) -> Any:
    if kind == "amqp":
        return AmqpPublisher(addresses, queue, timeout)
    client = RedisPublisher(addresses, queue, timeout)
    client.pool = pool
    return client


def consumer(kind: str, addresses: list[str], queue: str, timeout: float) -> Any:
    return (AmqpConsumer if kind == "amqp" else RedisConsumer)(addresses, queue, timeout)


# --------------------------------------------------------------------------- modes


async def mode_publish(args: argparse.Namespace) -> dict[str, Any]:
    clients = [publisher(args.kind, args.addresses, args.queue, args.timeout)
               for _ in range(args.publishers)]
    await asyncio.gather(*(c.connect() for c in clients))
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(args.messages))
    began, cpu = time.monotonic(), time.process_time()
    deadline = began + args.seconds

    async def run(client: Any) -> None:
        for sequence in counter:
            if time.monotonic() > deadline:
                return
            start = time.monotonic()
            try:
                await client.publish(payload(args.tag, sequence, args.size))
            except Exception as error:
                errors.append(f"{type(error).__name__}: {error or 'no confirm in time'}"[:200])
                if len(errors) > 100:
                    return
                continue
            latencies.append(time.monotonic() - start)

    await asyncio.gather(*(run(c) for c in clients))
    elapsed, cpu = time.monotonic() - began, time.process_time() - cpu
    await asyncio.gather(*(c.close() for c in clients))
    return {"confirmed": len(latencies), "errors": len(errors), "client_cpu_s": round(cpu, 3),
            "first_error": errors[0] if errors else "", "seconds": round(elapsed, 3),
            "rate": len(latencies) / elapsed if elapsed > 0 else 0.0,
            "p50_ms": ms(percentile(latencies, 0.5)), "p99_ms": ms(percentile(latencies, 0.99))}


async def mode_consume(args: argparse.Namespace) -> dict[str, Any]:
    seen: Counter[str] = Counter()
    done = asyncio.Event()
    state = {"count": 0}

    def handle(body: bytes) -> None:
        seen[parse_payload(body)[0]] += 1
        state["count"] += 1

    client = consumer(args.kind, args.addresses, args.queue, args.timeout)

    def acked() -> None:
        # Done once `messages` acks were sent (closing before would requeue the unacked).
        if client.acked >= args.messages:
            done.set()

    client.on_ack = acked
    began, cpu = time.monotonic(), time.process_time()
    await client.connect(args.prefetch, handle)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), args.seconds)
    elapsed, cpu = time.monotonic() - began, time.process_time() - cpu
    await client.close()  # AMQP: the channel close flushes the acks sent before it
    return {"delivered": state["count"], "unique": len(seen),
            "duplicates": sum(n - 1 for n in seen.values()), "seconds": round(elapsed, 3),
            "client_cpu_s": round(cpu, 3),
            "rate": state["count"] / elapsed if elapsed > 0 else 0.0,
            "acked": client.acked, "complete": client.acked >= args.messages}


async def mode_latency(args: argparse.Namespace) -> dict[str, Any]:
    confirms: list[float] = []
    ends: list[float] = []
    errors: list[str] = []
    delivered: dict[str, float] = {}
    confirmed: set[str] = set()
    state = {"in_flight": 0, "dropped": 0, "foreign": 0}

    def handle(body: bytes) -> None:
        ident, scheduled = parse_payload(body)
        if not ident.startswith(args.tag + ":"):
            state["foreign"] += 1  # left in the queue by an earlier run
            return
        if ident not in delivered:
            delivered[ident] = time.monotonic()
            ends.append(delivered[ident] - scheduled)

    # AMQP: `--connections` channels, each pipelining its publishes; redis: one client with
    # up to `--redis-pool` connections (one command in flight on each).
    pool = [publisher(args.kind, args.addresses, args.queue, args.timeout, args.redis_pool)
            for _ in range(args.connections if args.kind == "amqp" else 1)]
    await asyncio.gather(*(p.connect() for p in pool))
    reader = consumer(args.kind, args.addresses, args.queue, args.timeout)
    await reader.connect(args.prefetch, handle)
    tasks: set[asyncio.Task[None]] = set()

    async def send(client: Any, sequence: int, scheduled: float) -> None:
        try:
            await client.publish(payload(args.tag, sequence, args.size, scheduled))
            confirms.append(time.monotonic() - scheduled)
            confirmed.add(f"{args.tag}:{sequence}")
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error or 'no confirm in time'}"[:200])
        finally:
            state["in_flight"] -= 1

    began = time.monotonic()
    total = int(args.rate * args.seconds)
    for sequence in range(total):
        scheduled = began + sequence / args.rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if state["in_flight"] >= args.max_in_flight:
            state["dropped"] += 1
            continue
        state["in_flight"] += 1
        task = asyncio.ensure_future(send(pool[sequence % len(pool)], sequence, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sent_for = time.monotonic() - began
    if tasks:
        await asyncio.wait(list(tasks), timeout=args.drain)
    deadline = time.monotonic() + args.drain
    while not confirmed <= set(delivered) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await reader.close()
    await asyncio.gather(*(p.close() for p in pool))
    return {"target_rate": args.rate, "sent": total - state["dropped"],
            "dropped": state["dropped"], "confirmed": len(confirmed), "errors": len(errors),
            "first_error": errors[0] if errors else "", "delivered": len(delivered),
            "lost": len(confirmed - set(delivered)), "foreign": state["foreign"],
            "achieved_rate": len(confirmed) / sent_for if sent_for > 0 else 0.0,
            "p50_ms": ms(percentile(ends, 0.5)), "p90_ms": ms(percentile(ends, 0.9)),
            "p99_ms": ms(percentile(ends, 0.99)), "max_ms": ms(max(ends) if ends else None),
            "confirm_p50_ms": ms(percentile(confirms, 0.5)),
            "confirm_p99_ms": ms(percentile(confirms, 0.99))}


async def with_reconnect(make: Callable[[], Awaitable[None]], stop: asyncio.Event,
                         rotate: Callable[[], None]) -> None:
    """Call `make` until it succeeds (rotating through the addresses), or until `stop`."""
    while not stop.is_set():
        try:
            await make()
            return
        except Exception:
            rotate()
            await asyncio.sleep(0.05)


async def mode_gap(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    events: list[tuple[float, float, bool]] = []   # (sent, confirmed or failed, ok)
    confirmed: set[str] = set()
    published: set[str] = set()
    deliveries: list[tuple[float, str]] = []
    stop_publishing = asyncio.Event()
    stopping = asyncio.Event()
    state: dict[str, Any] = {"fault": None, "recovered": False, "ready": False, "foreign": 0}

    def emit(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def handle(body: bytes) -> None:
        now = time.monotonic()
        ident = parse_payload(body)[0]
        if not ident.startswith(args.tag + ":"):
            state["foreign"] += 1  # left in the queue by an earlier run
            return
        deliveries.append((now, ident))
        if state["fault"] is not None and len(deliveries) > 1 and \
                now - deliveries[-2][0] > 0.2:
            note(f"consumer: delivery after a {now - deliveries[-2][0]:.3f} s pause")
        check()

    def check() -> None:
        if not state["ready"] and sum(1 for e in events if e[2]) >= 20 and len(deliveries) >= 20:
            state["ready"] = True
            emit("ready")
        fault = state["fault"]
        if fault is not None and not state["recovered"] and deliveries[-1][0] > fault and any(
                ok and sent > fault for sent, _end, ok in events):
            state["recovered"] = True
            emit("recovered")

    # The publisher: one connection, reconnected (next address) after an error.
    pub = publisher(args.kind, args.addresses, args.queue, args.timeout, args.redis_pool)
    pub_state = {"healthy": False, "connecting": False}
    background: set[asyncio.Future[None]] = set()

    async def reconnect_publisher() -> None:
        pub_state["connecting"] = True
        try:
            with contextlib.suppress(Exception):
                await pub.close()
            await with_reconnect(pub.connect, stopping, pub.rotate)
            pub_state["healthy"] = True
        finally:
            pub_state["connecting"] = False

    async def send(sequence: int) -> None:
        ident = f"{args.tag}:{sequence}"
        sent = time.monotonic()
        ok = False
        try:
            if pub_state["healthy"]:
                published.add(ident)
                await pub.publish(payload(args.tag, sequence, args.size, sent))
                ok = True
                confirmed.add(ident)
        except Exception:
            # A timeout on AMQP is a late confirm (the broker keeps the message): the connection
            # is fine. A closed connection, or any error on redis, means reconnecting.
            broken = args.kind == "redis" or pub.connection.is_closed
            if pub_state["healthy"] and broken:
                note(f"publisher: {sequence} failed; reconnecting")
                pub_state["healthy"] = False
                if not pub_state["connecting"]:
                    pub.rotate()
                    background.add(asyncio.ensure_future(reconnect_publisher()))
        events.append((sent, time.monotonic(), ok))
        check()

    await pub.connect()
    pub_state["healthy"] = True

    # The consumer, reconnected (next address) when its connection fails.
    reader = consumer(args.kind, args.addresses, args.queue, args.timeout)

    async def consume_forever() -> None:
        while not stopping.is_set():
            try:
                await reader.connect(args.prefetch, handle)
                if state["fault"] is not None:
                    note("consumer: connected")
                if args.kind == "redis":
                    # Not `await reader.task`: a cancel of this loop would cancel that task,
                    # which redis-py may swallow mid-read (close() stops it by its flag).
                    await asyncio.wait({reader.task})
                    reader.task.result()
                else:
                    await reader.connection.closed()
                    raise ConnectionError("the AMQP connection closed")
            except asyncio.CancelledError:
                return
            except Exception as error:
                note(f"consumer: {type(error).__name__}: {error}; reconnecting")
                with contextlib.suppress(Exception):
                    await reader.close()
                note("consumer: closed")
                reader.rotate()
                await asyncio.sleep(0.05)

    consuming = asyncio.ensure_future(consume_forever())
    tasks: set[asyncio.Task[None]] = set()

    async def produce() -> None:
        began = time.monotonic()
        sequence = 0
        while not stop_publishing.is_set() and time.monotonic() - began < args.seconds:
            scheduled = began + sequence / args.rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) < args.max_in_flight:
                task = asyncio.ensure_future(send(sequence))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            sequence += 1

    async def control() -> None:
        reader_stream = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader_stream),
                                     sys.stdin)
        while True:
            line = (await reader_stream.readline()).decode().split()
            if not line or line[0] == "stop":
                state["stopped_at"] = time.monotonic()
                stop_publishing.set()
                return
            if line[0] == "fault":
                state["fault"] = float(line[1])
                note("fault")

    producing = asyncio.ensure_future(produce())
    await control()
    await producing
    if tasks:
        await asyncio.wait(list(tasks), timeout=args.timeout + 5)
    deadline = time.monotonic() + args.drain
    while not confirmed <= {i for _t, i in deliveries} and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stopping.set()
    consuming.cancel()
    await asyncio.wait({consuming}, timeout=5)
    await reader.close()
    await pub.close()

    fault = state["fault"]
    counts = Counter(i for _t, i in deliveries)
    result: dict[str, Any] = {
        "published": len(published), "confirmed": len(confirmed),
        "failed": sum(1 for e in events if not e[2]), "delivered": len(counts),
        "lost": len(confirmed - set(counts)), "lost_ids": sorted(confirmed - set(counts))[:20],
        "duplicates": sum(n - 1 for n in counts.values()),
        "unconfirmed_delivered": len(set(counts) - confirmed), "foreign": state["foreign"],
        "publish_gap_ms": None, "consume_gap_ms": None, "recovered": state["recovered"]}
    if fault is not None:
        before = [end for _s, end, ok in events if ok and end <= fault]
        after = [end for sent, end, ok in events if ok and sent > fault]
        if after:
            result["publish_gap_ms"] = ms(min(after) - (max(before) if before else fault))
        # Up to the end of publishing: the drain after it delivers the stragglers, whose
        # spacing is not a pause of the queue.
        end = state.get("stopped_at", float("inf"))
        times = sorted(t for t, _i in deliveries if t <= end)
        start = max((t for t in times if t <= fault), default=fault)
        later = [t for t in times if t >= start]
        if len(later) >= 2 and later[-1] > fault:
            result["consume_gap_ms"] = ms(max(b - a for a, b in itertools.pairwise(later)))
    return result


async def mode_setup(args: argparse.Namespace) -> dict[str, Any]:
    """A fresh, empty queue: AMQP declares the quorum queue (durable, `x-queue-type: quorum`,
    https://www.rabbitmq.com/quorum-queues.html) and purges it; redis deletes the stream and
    creates the consumer group at `$` with MKSTREAM
    (https://redis.io/docs/latest/commands/xgroup-create/)."""
    if args.kind == "amqp":
        import aio_pika

        connection = await aio_pika.connect(args.addresses[0], timeout=args.timeout)
        channel = await connection.channel()
        queue = await channel.declare_queue(args.queue, durable=True,
                                            arguments={"x-queue-type": "quorum"})
        await queue.purge()
        await connection.close()
        return {"ok": True}
    import redis.asyncio as redis

    host, _, port = args.addresses[0].rpartition(":")
    client = redis.Redis(host=host, port=int(port), socket_timeout=10)
    await client.delete(args.queue)
    await client.xgroup_create(args.queue, GROUP, id="$", mkstream=True)
    await client.aclose()
    return {"ok": True}


MODES = {"setup": mode_setup, "publish": mode_publish, "consume": mode_consume, "latency": mode_latency,
         "gap": mode_gap}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("amqp", "redis"))
    parser.add_argument("addresses", type=lambda s: s.split(","))
    parser.add_argument("queue")
    parser.add_argument("mode", choices=tuple(MODES))
    parser.add_argument("--publishers", type=int, default=1)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0, help="bound of the run")
    parser.add_argument("--size", type=int, default=128, help="payload bytes")
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--connections", type=int, default=4,
                        help="latency: AMQP publisher connections (each pipelines)")
    parser.add_argument("--redis-pool", type=int, default=64,
                        help="latency, gap: redis connections in the publisher's pool")
    parser.add_argument("--max-in-flight", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=2.0, help="per publish / connect")
    parser.add_argument("--drain", type=float, default=20.0)
    parser.add_argument("--tag", default="m")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    result = asyncio.run(MODES[args.mode](args))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # publish/consume: CPU of the measured phase; the others: of the whole process.
    result.setdefault("client_cpu_s", round(usage.ru_utime + usage.ru_stime, 3))
    if args.kind == "redis":
        result["early_empty_reads"] = EARLY_EMPTY[0]
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

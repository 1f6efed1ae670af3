"""Blocking pops (BLPOP, BRPOP, BLMOVE, BZPOPMIN, ...) through redis-py on a real 3-node
cluster: a waiter on a follower is served by a push on another node, N elements reach M
consumers exactly once, a leader killed while a consumer waits costs no spurious error, and a
timeout answers nil after about the right time (bounds are generous: the machine is shared)."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from integration_harness import LocalCluster, NodeRef, retry_write, wait_until

from phalanx.placement import key_slot


def _slot_leader(c: LocalCluster, key: str) -> NodeRef:
    """The node CLUSTER SLOTS names as the master of `key`'s slot (waits for one)."""
    slot = key_slot(key.encode())

    def find() -> NodeRef | None:
        for node in c.nodes:
            try:
                ranges = c.client(node).execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            for low, high, master, *_ in ranges:
                if int(low) <= slot <= int(high):
                    port = int(master[1])
                    host = master[0]
                    return next((n for n in c.nodes if n.port == port and n.host == host),
                                None)
        return None

    return wait_until(find, 30.0, f"a master for slot {slot}")


def _wait_blocked(c: LocalCluster, node: NodeRef, seconds: float = 0.5) -> None:
    """Give a consumer time to reach its wait (no server-side introspection needed)."""
    del c, node
    time.sleep(seconds)


def test_blocked_on_a_follower_is_served_by_a_push_elsewhere(cluster: Any) -> None:
    """Proves: BRPOP on a follower of the key's shard blocks, then returns the element an
    LPUSH on another node commits; BLPOP / BZPOPMIN / BLMOVE / BLMPOP answer at once when
    data is there, with Redis's reply shapes; a timeout answers nil after about its time;
    commands pipelined behind a blocked one run after it answers."""
    c: LocalCluster = cluster(3)
    key = "queue"
    leader = _slot_leader(c, key)
    follower = next(n for n in c.nodes if n.id != leader.id)
    producer_node = next(n for n in c.nodes if n.id not in (follower.id,))
    consumer = c.client(follower, timeout=60)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(consumer.brpop([key], timeout=30)))
    thread.start()
    _wait_blocked(c, follower, 1.0)
    assert thread.is_alive(), f"BRPOP returned before any push: {result}"
    producer = c.client(producer_node)
    retry_write(producer, "LPUSH", key, "job-1")
    thread.join(30)
    assert not thread.is_alive()
    assert result == [(key, "job-1")]
    assert producer.llen(key) == 0

    # Non-blocking cases answer at once, first non-empty key in argument order.
    producer.rpush("{q}b", "x", "y")
    producer.zadd("{q}z", {"m1": 1, "m2": 2})
    r = c.client(follower)
    assert r.blpop(["{q}a", "{q}b"], timeout=1) == ("{q}b", "x")
    assert r.blmove("{q}b", "{q}c", 0, "RIGHT", "LEFT") == "y"
    assert r.bzpopmax(["{q}a", "{q}z"], timeout=0) == ("{q}z", "m2", 2.0)
    assert r.execute_command("BLMPOP", 0, 2, "{q}a", "{q}c", "LEFT", "COUNT", 5) == [
        "{q}c", ["y"]]
    assert r.execute_command("BZMPOP", 0, 1, "{q}z", "MIN") == ["{q}z", [["m1", "1"]]]
    # A timeout: nil after about the timeout (generous bounds).
    started = time.monotonic()
    assert r.blpop(["{q}empty"], timeout=0.5) is None
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 10, elapsed
    # A pipelined command waits behind a blocked one (Redis runs nothing for a blocked
    # client): the push after BLPOP does not feed it; BLPOP times out, then the push runs.
    pipe = r.pipeline(transaction=False)
    pipe.blpop(["{q}p"], timeout=0.5)
    pipe.rpush("{q}p", "later")
    pipe.lpop("{q}p")
    assert pipe.execute() == [None, 1, "later"]
    try:
        r.blpop(["{q}a"], timeout=-1)
        raise AssertionError("a negative timeout was accepted")
    except redis.ResponseError as error:
        assert str(error) == "timeout is negative"


def test_n_elements_reach_m_consumers_exactly_once(cluster: Any) -> None:
    """Proves: M consumers blocked in BLPOP on every node (followers included) receive N
    pushed elements, each exactly once, nothing lost, nothing duplicated."""
    c: LocalCluster = cluster(3)
    key = "work"
    consumers_per_node, elements = 2, 40
    got: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def consume(node: NodeRef) -> None:
        r = c.client(node, timeout=30)
        while not stop.is_set():
            try:
                item = r.blpop([key], timeout=1)
            except redis.RedisError as error:  # no error is expected at all
                errors.append(error)
                return
            if item is not None:
                with lock:
                    got.append(item[1])

    threads = [threading.Thread(target=consume, args=(node,))
               for node in c.nodes for _ in range(consumers_per_node)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    producer = c.client(c.nodes[0])
    for start in range(0, elements, 4):
        retry_write(producer, "RPUSH", key, *[f"e{i}" for i in range(start, start + 4)])
    wait_until(lambda: len(got) >= elements, 60, f"{elements} elements consumed (got {len(got)})")
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert sorted(got) == sorted(f"e{i}" for i in range(elements)), got
    assert producer.llen(key) == 0


def test_leader_killed_while_a_consumer_waits(cluster: Any) -> None:
    """Proves: a consumer blocked in BLPOP on a follower survives a kill -9 of the shard's
    leader: no spurious error reaches it; it is served by a push made after the election (or
    times out with nil), and the element is not lost."""
    c: LocalCluster = cluster(3)
    key = "survivor"
    leader = _slot_leader(c, key)
    follower = next(n for n in c.nodes if n.id != leader.id)
    consumer = c.client(follower, timeout=90)
    result: list[Any] = []

    def consume() -> None:
        try:
            result.append(consumer.blpop([key], timeout=60))
        except redis.RedisError as error:
            result.append(error)

    thread = threading.Thread(target=consume)
    thread.start()
    _wait_blocked(c, follower, 1.0)
    c.kill(leader)
    time.sleep(2.0)
    assert thread.is_alive(), f"the consumer returned when the leader died: {result}"
    survivors = [n for n in c.nodes if n.id != leader.id]
    retry_write(c.client(survivors[-1]), "RPUSH", key, "after-failover", timeout=60)
    thread.join(90)
    assert not thread.is_alive()
    assert result in ([(key, "after-failover")], [None]), result
    if result == [None]:  # timed out: the element must still be there
        assert c.client(follower).lrange(key, 0, -1) == ["after-failover"]
    else:
        assert retry_write(c.client(follower), "LLEN", key) == 0

"""Redis Streams through redis-py on a real 3-node cluster: blocked XREAD / XREADGROUP readers
on a follower are served by an XADD committed through another node; consumers of one group on
every node get each entry exactly once; a consumer blocked on a follower survives a kill -9 of
the shard's leader (no error reaches it, the entry added after the election is delivered, its
pending entry and delivery count are there), and auto ids after the failover are above every
id acknowledged before it, whatever the new leader's clock."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from integration_harness import LocalCluster, NodeRef, retry_write, shards_of, wait_until
from test_blocking_cluster import _slot_leader

from phalanx.placement import key_slot


def _follower(c: LocalCluster, key: str) -> tuple[NodeRef, NodeRef]:
    leader = _slot_leader(c, key)
    return leader, next(n for n in c.nodes if n.id != leader.id)


def _id(raw: str) -> tuple[int, int]:
    ms, seq = raw.split("-")
    return int(ms), int(seq)


def test_blocked_stream_readers_on_a_follower_are_served(cluster: Any) -> None:
    """Proves: XREAD BLOCK `$` and XREADGROUP BLOCK `>` on a follower wait, then return the
    entry an XADD on another node commits; a timeout answers nil; a command pipelined behind
    a blocked XREAD runs after it; XREADGROUP with a history id does not block."""
    c: LocalCluster = cluster(3)
    key = "events"
    leader, follower = _follower(c, key)
    producer = c.client(leader)
    retry_write(producer, "XGROUP", "CREATE", key, "workers", "$", "MKSTREAM")
    results: dict[str, Any] = {}

    def read() -> None:
        results["xread"] = c.client(follower, timeout=60).xread({key: "$"}, block=30_000)

    def read_group() -> None:
        results["group"] = c.client(follower, timeout=60).xreadgroup(
            "workers", "alice", {key: ">"}, block=30_000)

    threads = [threading.Thread(target=read), threading.Thread(target=read_group)]
    for thread in threads:
        thread.start()
    # Both commands reached the follower (its CLIENT LIST), then 1 s for XREAD's `$` to be
    # resolved (a ReadIndex round trip): an XADD before that would be taken for "before the
    # call" and the XREAD would wait its 30 s. (It slept 1 s from the threads' start: on a
    # loaded machine the commands may not even have been sent by then.)
    watcher = c.client(follower)
    wait_until(lambda: {"xread", "xreadgroup"} <= {
        entry.get("cmd") for entry in watcher.client_list()}, 30, "both readers to block")
    time.sleep(1.0)
    assert all(thread.is_alive() for thread in threads), f"returned before XADD: {results}"
    added = retry_write(producer, "XADD", key, "*", "job", "1")
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert results["xread"] == [[key, [(added, {"job": "1"})]]]
    assert results["group"] == [[key, [(added, {"job": "1"})]]]
    r = c.client(follower)
    pending = r.xpending_range(key, "workers", "-", "+", 10)
    assert [(p["message_id"], p["consumer"], p["times_delivered"]) for p in pending] == [
        (added, "alice", 1)]
    # History ids never block; an empty group read with BLOCK times out with nil.
    assert r.xreadgroup("workers", "alice", {key: "0"}, block=5_000) == [
        [key, [(added, {"job": "1"})]]]
    started = time.monotonic()
    assert r.xreadgroup("workers", "bob", {key: ">"}, block=500) == []
    assert r.xread({key: "$"}, block=500) == []
    assert time.monotonic() - started >= 0.9
    # Pipelined behind a blocked XREAD: the XADD runs after it times out (Redis order).
    pipe = r.pipeline(transaction=False)
    pipe.xread({"{events}p": "$"}, block=500)
    pipe.xadd("{events}p", {"a": "b"}, id="5-1")
    pipe.xread({"{events}p": "0"})
    assert pipe.execute() == [[], "5-1", [["{events}p", [("5-1", {"a": "b"})]]]]
    # CLIENT UNBLOCK ... ERROR stops a blocked XREADGROUP with -UNBLOCKED (Redis's reply).
    blocked = c.client(follower, timeout=60)
    blocked_id = blocked.client_id()
    outcome: list[Any] = []

    def wait_blocked() -> None:
        try:
            outcome.append(blocked.xreadgroup("workers", "carol", {key: ">"}, block=30_000))
        except redis.ResponseError as error:
            outcome.append(str(error))

    thread = threading.Thread(target=wait_blocked)
    thread.start()
    wait_until(lambda: r.client_unblock(blocked_id, error=True), 30, "a blocked client")
    thread.join(30)
    assert outcome == ["UNBLOCKED client unblocked via CLIENT UNBLOCK"], outcome
    try:
        r.execute_command("XREAD", "BLOCK", "-1", "STREAMS", key, "$")
        raise AssertionError("a negative BLOCK was accepted")
    except redis.ResponseError as error:
        assert str(error) == "timeout is negative"


def test_entries_reach_group_consumers_on_every_node_exactly_once(cluster: Any) -> None:
    """Proves: consumers of one group blocked in XREADGROUP on every node (followers too)
    receive N entries, each delivered to exactly one of them, nothing lost; XACK empties the
    PEL."""
    c: LocalCluster = cluster(3)
    key = "tasks"
    entries = 30
    retry_write(c.client(c.nodes[0]), "XGROUP", "CREATE", key, "g", "$", "MKSTREAM")
    got: dict[str, str] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def consume(node: NodeRef, name: str) -> None:
        r = c.client(node, timeout=30)
        while not stop.is_set():
            try:
                reply = r.xreadgroup("g", name, {key: ">"}, count=2, block=1_000)
                for _stream, items in reply:
                    for entry_id, _fields in items:
                        with lock:
                            assert entry_id not in got, f"{entry_id} delivered twice"
                            got[entry_id] = name
                        r.xack(key, "g", entry_id)
            except (redis.RedisError, AssertionError) as error:
                errors.append(error)
                return

    threads = [threading.Thread(target=consume, args=(node, f"{node.id}-{i}"))
               for node in c.nodes for i in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    producer = c.client(c.nodes[1])
    added = [retry_write(producer, "XADD", key, "*", "n", str(i)) for i in range(entries)]
    wait_until(lambda: len(got) >= entries, 60, f"{entries} entries consumed (got {len(got)})")
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert sorted(got) == sorted(added)
    assert len(set(got.values())) > 1, "one consumer got everything"
    wait_until(lambda: c.client(c.nodes[0]).xpending(key, "g")["pending"] == 0, 30,
               "every entry acked")


def test_leader_killed_while_a_consumer_waits_on_a_follower(cluster: Any) -> None:
    """Proves: a consumer blocked in XREADGROUP on a follower survives kill -9 of the shard's
    leader without an error; an XADD after the election reaches it; its PEL entry and delivery
    count are intact; auto ids after the failover are above every id acknowledged before."""
    c: LocalCluster = cluster(3)
    key = "jobs"
    leader, follower = _follower(c, key)
    producer = c.client(follower)
    retry_write(producer, "XGROUP", "CREATE", key, "g", "$", "MKSTREAM")
    before = [retry_write(producer, "XADD", key, "*", "n", str(i)) for i in range(20)]
    r = c.client(follower)
    first = r.xreadgroup("g", "c1", {key: ">"}, count=20)
    assert [entry_id for entry_id, _ in first[0][1]] == before
    result: list[Any] = []

    def consume() -> None:
        try:
            result.append(c.client(follower, timeout=120).xreadgroup(
                "g", "c2", {key: ">"}, block=90_000))
        except redis.RedisError as error:
            result.append(error)

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(1.0)
    c.kill(leader)
    time.sleep(2.0)
    assert thread.is_alive(), f"the consumer returned when the leader died: {result}"
    survivors = [n for n in c.nodes if n.id != leader.id]
    after = retry_write(c.client(survivors[-1]), "XADD", key, "*", "n", "after", timeout=60)
    thread.join(100)
    assert not thread.is_alive()
    assert result == [[[key, [(after, {"n": "after"})]]]], result
    assert _id(after) > max(_id(entry_id) for entry_id in before)
    more = [retry_write(c.client(survivors[0]), "XADD", key, "*", "n", str(i), timeout=30)
            for i in range(5)]
    ids = [_id(entry_id) for entry_id in [*before, after, *more]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # The PEL survived the failover: c1 holds the 20 first entries, c2 the one after.
    summary = retry_write(r, "XPENDING", key, "g")  # redis-py parses it into a dict
    assert summary["pending"] == 21, summary
    assert summary["consumers"] == [{"name": "c1", "pending": 20},
                                    {"name": "c2", "pending": 1}], summary
    rows = c.client(follower).xpending_range(key, "g", "-", "+", 100, consumername="c2")
    assert [(row["message_id"], row["times_delivered"]) for row in rows] == [(after, 1)]
    assert retry_write(r, "XACK", key, "g", *before, after) == 21


def test_redis_cluster_client_routes_stream_commands(cluster: Any) -> None:
    """Proves: with 3 shards and MOVED redirection, redis-py's RedisCluster finds the key of
    every stream command from COMMAND / COMMAND GETKEYS (XGROUP and XINFO by their
    subcommand's key, XREAD / XREADGROUP after STREAMS): the node it picks serves the command
    without a MOVED, and a consumer-group round trip works through it."""
    c: LocalCluster = cluster(3, shards=3, redirect="moved")
    wait_until(lambda: all(len(shards_of(c.status(node) or {})) >= 3 for node in c.nodes),
               60, "3 shards in every node's map")
    first = c.nodes[0]
    client = redis.cluster.RedisCluster(host=first.host, port=first.port, protocol=2,
                                        decode_responses=True, socket_timeout=10)
    try:
        for key in ("orders", "payments", "emails", "audit"):
            wait_until(lambda key=key: _try(lambda: client.xgroup_create(
                key, "g", "$", mkstream=True)), 60, f"XGROUP CREATE {key}")
            added = client.xadd(key, {"k": key})
            commands = [
                ("XLEN", key), ("XRANGE", key, "-", "+"), ("XINFO", "STREAM", key),
                ("XINFO", "GROUPS", key), ("XREAD", "COUNT", "1", "STREAMS", key, "0"),
                ("XREADGROUP", "GROUP", "g", "c", "STREAMS", key, ">"),
                ("XPENDING", key, "g"), ("XACK", key, "g", added),
                ("XGROUP", "CREATECONSUMER", key, "g", "c2"),
                ("XAUTOCLAIM", key, "g", "c2", "0", "0"), ("XTRIM", key, "MAXLEN", "10"),
            ]
            for command in commands:
                slot = client.determine_slot(*command)  # from COMMAND / COMMAND GETKEYS
                assert slot == key_slot(key.encode()), command
                _run_on_slot_owner(client, slot, command)
            assert client.xreadgroup("g", "c", {key: ">"}) == []
            assert client.xpending(key, "g")["pending"] == 0
    finally:
        client.close()


def _run_on_slot_owner(client: Any, slot: int, command: tuple[str, ...]) -> None:
    """Run `command` on the node redis-py's map names for `slot`: it must serve it. A MOVED
    for that same slot means only that the shard's leadership moved after the map was read
    (leaders still move to their preferred nodes for a while after start-up, longer on a
    loaded machine): the command was refused, not run, so refresh the map and retry (bounded).
    A MOVED for another slot (the server found another key) fails at once."""
    for _ in range(30):
        node = client.nodes_manager.get_node_from_slot(slot)
        plain = redis.Redis(host=node.host, port=node.port, decode_responses=True,
                            socket_timeout=10)
        try:
            plain.execute_command(*command)
            return
        except redis.exceptions.MovedError as moved:
            assert moved.slot_id == slot, (command, str(moved))
        finally:
            plain.close()
        time.sleep(0.2)
        client.nodes_manager.initialize()
    raise AssertionError(f"{command}: MOVED for 30 tries (the map never settled)")


def _try(action: Any) -> bool:
    try:
        action()
    except redis.ResponseError as error:
        if "BUSYGROUP" in str(error):
            return True
        raise
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError):
        return False
    return True

"""Transactions on a real 3-node cluster with redis-py, unmodified: WATCH stays correct when
the shard's leader is killed (kill -9) between WATCH and EXEC, and WATCH-guarded transfers
keep a bank's total through a leader kill (see server/front/transactions.py and
kv/transaction.py: the watch check is made when the EXEC entry is applied, on every replica)."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest
import redis
from integration_harness import (
    LocalCluster,
    is_transient,
    retry_command,
    retry_write,
    shard_primary,
    wait_until,
)
from redis.cluster import RedisCluster


def _exec(pipe: Any) -> str:
    """Run a watched pipeline's EXEC: "applied", "aborted" (WatchError) or "unknown" (a
    transient error: the transaction may or may not have been applied)."""
    try:
        pipe.execute()
        return "applied"
    except redis.WatchError:
        return "aborted"
    except redis.RedisError as error:
        assert is_transient(error), f"{type(error).__name__}: {error}"
        return "unknown"
    finally:
        pipe.reset()


def test_watch_across_a_leader_kill_never_applies_a_stale_transaction(cluster: Any) -> None:
    """Proves: a client of a surviving node WATCHes a key and reads it; another client's write
    of that key is acknowledged by the shard's leader; the leader is killed (-9). The EXEC sent
    through the survivor then never applies (at once while the shard elects, or once a new
    leader is known: WatchError), so the acknowledged write is never lost to a stale
    read-modify-write; a transaction whose watched key nobody wrote commits after the
    failover. Once the old leader is back, every replica holds the acknowledged value.
    redis-py's RedisCluster runs transactions (and WATCH) unchanged too."""
    c: LocalCluster = cluster(3)
    first = c.nodes[0]
    cluster_client = RedisCluster(host=first.host, port=first.port, socket_timeout=10)
    try:
        with cluster_client.pipeline(transaction=True) as pipe:
            pipe.set("{u}a", 1).incr("{u}a").get("{u}a")
            # (redis-py's cluster transactions leave SET's reply unconverted)
            assert pipe.execute() in ([True, 2, b"2"], [b"OK", 2, b"2"])
        with cluster_client.pipeline(transaction=True) as pipe:
            pipe.watch("{u}a")
            value = int(pipe.get("{u}a"))
            cluster_client.set("{u}a", 100)
            pipe.multi()
            pipe.set("{u}a", value + 1)
            with pytest.raises(redis.WatchError):
                pipe.execute()
        assert cluster_client.get("{u}a") == b"100"
    finally:
        cluster_client.close()
    leader = shard_primary(c, 1)
    survivor = c.others(leader)[0]
    client = c.client(survivor)
    retry_write(client, "MSET", "acct", "100", "quiet", "1")
    pipes = {name: c.client(survivor).pipeline() for name in ("racing", "stale", "calm")}
    for name, pipe in pipes.items():
        key = "quiet" if name == "calm" else "acct"
        pipe.watch(key)
        assert int(pipe.get(key)) == (1 if name == "calm" else 100)
    assert c.client(leader).set("acct", "500") is True  # acknowledged by the leader
    c.kill(leader, signal.SIGKILL)
    started = time.monotonic()
    racing = pipes["racing"]
    racing.multi()
    racing.set("acct", 101)
    racing_outcome = _exec(racing)  # while the shard elects a new leader
    new_leader = shard_primary(c, 1, among=c.others(leader))
    stale, calm = pipes["stale"], pipes["calm"]
    stale.multi()
    stale.set("acct", 101)
    assert _exec(stale) == "aborted"
    calm.multi()
    calm.incr("quiet")
    assert calm.execute() == [2]
    print(f"\nkill -9 of {leader.id}: EXEC during the election: {racing_outcome}; "
          f"new leader {new_leader.id} after {time.monotonic() - started:.2f} s")
    assert racing_outcome != "applied"
    assert retry_command(client, "GET", "acct") == "500"
    c.restart(leader)
    for node in c.nodes:
        reader = c.readonly_client(node)
        wait_until(lambda r=reader: r.mget("acct", "quiet") == ["500", "2"], 30,
                   f"{node.id}'s replica to hold acct=500, quiet=2")


def test_bank_transfers_with_watch_keep_the_total_through_a_leader_kill(cluster: Any) -> None:
    """Proves: four threads move money between five accounts with redis-py's WATCH / MULTI /
    EXEC (the optimistic-locking loop, through every node) while two threads read all the
    accounts in one MULTI; the shard's leader is killed (-9) mid-run and restarted. Every
    transactional read sums to the initial total, and so do the final balances, whatever
    each transfer's outcome (applied, aborted by WATCH, or unknown at a failover)."""
    c: LocalCluster = cluster(3)
    accounts = [f"{{bank}}:{i}" for i in range(5)]
    total = 100 * len(accounts)
    retry_write(c.client(c.nodes[0]), "MSET", *[x for a in accounts for x in (a, "100")])
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    bad_sums: list[int] = []
    lock = threading.Lock()
    dead: set[str] = set()

    def transfers(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            node = rng.choice([n for n in c.nodes if n.id not in dead] or c.nodes)
            client = c.client(node, timeout=10)
            try:
                with client.pipeline() as pipe:
                    source, target = rng.sample(accounts, 2)
                    pipe.watch(source, target)
                    balance = int(pipe.get(source))
                    amount = min(balance, rng.randint(1, 30))
                    pipe.multi()
                    pipe.decrby(source, amount)
                    pipe.incrby(target, amount)
                    outcome = _exec(pipe)
            except redis.RedisError as error:  # the WATCH or GET itself failed
                # redis-py reports a connection lost in WATCH mode as a WatchError.
                assert is_transient(error) or "ConnectionError occurred" in str(error), (
                    f"{type(error).__name__}: {error}")
                outcome = "not started"
            finally:
                client.close()
            with lock:
                outcomes[outcome] += 1

    def audits(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            node = rng.choice([n for n in c.nodes if n.id not in dead] or c.nodes)
            client = c.client(node, timeout=10)
            try:
                with client.pipeline() as pipe:
                    for account in accounts:
                        pipe.get(account)
                    balances = pipe.execute()
                seen = sum(int(b) for b in balances)
                with lock:
                    outcomes["audit"] += 1
                    if seen != total:
                        bad_sums.append(seen)
            except redis.RedisError as error:
                assert is_transient(error), f"{type(error).__name__}: {error}"
            finally:
                client.close()

    errors: list[BaseException] = []

    def guarded(target: Any, seed: int) -> None:
        try:
            target(seed)
        except BaseException as error:
            errors.append(error)
            stop.set()

    threads = [threading.Thread(target=guarded, args=(transfers, i)) for i in range(4)]
    threads += [threading.Thread(target=guarded, args=(audits, 10 + i)) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: outcomes["applied"] >= 60 or errors, 90, "60 transfers")
        leader = shard_primary(c, 1)
        dead.add(leader.id)
        c.kill(leader, signal.SIGKILL)
        applied_at_kill = outcomes["applied"]
        wait_until(lambda: outcomes["applied"] >= applied_at_kill + 60 or errors, 90,
                   "60 transfers after the kill")
        c.restart(leader)
        dead.discard(leader.id)
        wait_until(lambda: outcomes["applied"] >= applied_at_kill + 100 or errors, 90,
                   "transfers after the restart")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    print(f"\nbank: {dict(outcomes)}")
    assert not bad_sums, f"transactional reads that did not sum to {total}: {bad_sums[:10]}"
    final = [int(b) for b in retry_command(c.client(c.nodes[0]), "MGET", *accounts)]
    assert sum(final) == total and min(final) >= 0, final


def test_blocking_pops_inside_a_transaction_never_block(cluster: Any) -> None:
    """Proves (Redis: a blocking command inside MULTI behaves as its non-blocking form): BLPOP
    and BZPOPMIN queued in a transaction pop inside the transaction's one entry when there is
    an element, and answer nil at once when there is none, whatever their timeout (0 =
    forever); a bad timeout is an error in its place of the EXEC array; the same replies as
    redis-server's."""
    c: LocalCluster = cluster(3)
    node = c.nodes[1]
    # A pop that blocked inside EXEC (timeout 0 = forever) would hold the reply until the
    # client's 60 s timeout; the bound below (30 s; it was 5 s, which a loaded machine's EXEC
    # through a follower could pass) tells the two apart.
    client = redis.Redis(host=node.host, port=node.port, socket_timeout=60)
    try:
        retry_write(client, "DEL", "{q}list", "{q}zset")
        retry_write(client, "RPUSH", "{q}list", "a")
        retry_write(client, "ZADD", "{q}zset", "1.5", "m")
        with client.pipeline(transaction=True) as pipe:
            pipe.blpop(["{q}list"], timeout=0).blpop(["{q}list"], timeout=0)
            pipe.bzpopmin(["{q}zset"], timeout=0).bzpopmin(["{q}zset"], timeout=0)
            pipe.execute_command("BLPOP", "{q}list", "nope")
            started = time.monotonic()
            replies = pipe.execute(raise_on_error=False)
        assert time.monotonic() - started < 30, "a blocking pop blocked inside EXEC"
        assert replies[:4] == [(b"{q}list", b"a"), None, (b"{q}zset", b"m", 1.5), None], replies
        assert isinstance(replies[4], redis.ResponseError)
        assert "timeout is not a float or out of range" in str(replies[4])
        assert client.exists("{q}list", "{q}zset") == 0
    finally:
        client.close()

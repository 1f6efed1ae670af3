"""Active-active regions on real processes (issue 18, docs/active-active.md).

Two regions, each a 3-node phalanx cluster on loopback (`ops/regions.py`), linked by the
region link (`server/aa_link.py`). Clients write counters, sets, hashes and strings under the
active-active prefix on both sides; the link is cut with the lab's fault rules (`drop_to` the
other region's name, on every node of both regions), writes go on on both sides, the link
heals, and both regions converge to the model's state: every acknowledged increment counted
exactly once, every add present unless removed after being seen, the causally last SET of a
register wins. Then the leader of each region's shard is killed (kill -9) while a backlog is
being replicated: nothing is lost, nothing applied twice.
"""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from integration_harness import LocalCluster, retry_write, wait_until

from phalanx.ops.regions import plan_regions

CONVERGE_S = 60.0


@pytest.fixture
def regions(request: pytest.FixtureRequest) -> Iterator[dict[str, LocalCluster]]:
    count = getattr(request, "param", 2)
    root = Path(tempfile.mkdtemp(prefix="phalanx-it-aa-"))
    started: dict[str, LocalCluster] = {}
    try:
        plans = plan_regions(root, random.Random(), regions=count, prefixes="aa:",
                             strong_home="dc1",
                             # Small pulls and a short outbox: the leader-kill test's
                             # backlog overflows it, so full states come in pages.
                             overrides={"enable_fault_injection": True, "aa_poll_ms": 50,
                                        "aa_batch": 50, "aa_outbox_max": 200},
                             base_ports=(20000, 40000 - 300))
        for name, plan in plans.items():
            started[name] = LocalCluster(plan=plan, root=root / name, name=name)
        yield started
    finally:
        for instance in started.values():
            instance.close()
        shutil.rmtree(root, ignore_errors=True)


def _state(client: redis.Redis) -> tuple[Any, ...]:
    return (client.get("aa:counter"), sorted(client.smembers("aa:set")),
            sorted(client.hgetall("aa:hash").items()), client.get("aa:register"))


def _converged(clients: list[redis.Redis], expected: tuple[Any, ...] | None = None) -> bool:
    try:
        states = [_state(client) for client in clients]
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return False
    return all(state == states[0] for state in states) and (
        expected is None or states[0] == expected)


def _metrics(node: Any) -> str:
    with urllib.request.urlopen(f"{node.admin_url}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _cut(regions: dict[str, LocalCluster], cut: bool, alone: str | None = None) -> None:
    """Cut every region link (or only those of region `alone`), or heal them all."""
    for name, cluster in regions.items():
        others = [other for other in regions if other != name
                  and (alone is None or alone in (name, other))]
        for node in cluster.nodes:
            if cut:
                cluster.set_faults(node, {"drop_to": others})
            else:
                cluster.clear_faults(node)


def test_two_regions_write_through_a_cut_and_converge(
        regions: dict[str, LocalCluster]) -> None:
    dc1, dc2 = regions["dc1"], regions["dc2"]
    one, two = dc1.client(dc1.nodes[0]), dc2.client(dc2.nodes[1])
    total = 0
    members: set[str] = set()
    fields: dict[str, str] = {}

    # Linked: a write in one region is seen in the other.
    assert one.incrby("aa:counter", 5) == 5
    total += 5
    assert one.sadd("aa:set", "from-dc1") == 1
    members.add("from-dc1")
    one.set("aa:register", "first")
    wait_until(lambda: two.get("aa:register") == "first", CONVERGE_S, "dc2 sees dc1's SET")
    # A SET made after seeing another wins everywhere (its clock is greater).
    two.set("aa:register", "second")
    # A rate limiter's window: INCR + EXPIRE in dc1, the TTL is seen in dc2.
    assert one.incr("aa:limit") == 1 and one.expire("aa:limit", 3600) is True
    wait_until(lambda: 0 < two.ttl("aa:limit") <= 3600, CONVERGE_S, "dc2 to see the TTL")
    # Strong keys live in dc1 (the home region): dc2 forwards them there.
    assert two.set("strong:key", "written from dc2") is True
    assert one.get("strong:key") == "written from dc2"
    assert two.incr("strong:counter") == 1 and one.incr("strong:counter") == 2
    # Refusals are clear.
    with pytest.raises(redis.ResponseError, match="not supported on active-active"):
        one.lpush("aa:list", "x")
    with pytest.raises(redis.ResponseError, match="one active-active key"):
        one.delete("aa:counter", "aa:set")

    # The cut: both sides keep writing.
    _cut(regions, True)
    wait_until(lambda: all(
        link["state"] == "down" for cluster in regions.values() for node in cluster.nodes
        for link in (cluster.status(node) or {}).get("active_active", {}).get("links", [])),
        CONVERGE_S, "every region link to report the cut")
    for number in range(20):
        assert one.incrby("aa:counter", number) is not None
        assert two.incrby("aa:counter", 2 * number + 1) is not None
        total += number + 2 * number + 1
    assert one.sadd("aa:set", "cut-dc1") == 1
    assert two.sadd("aa:set", "cut-dc2") == 1
    # Concurrent add (dc1) and remove (dc2) of an element both sides had seen: add wins.
    assert two.srem("aa:set", "from-dc1") == 1
    assert one.sadd("aa:set", "from-dc1") == 0   # already there locally: a fresh add anyway
    members |= {"cut-dc1", "cut-dc2"}
    assert one.hset("aa:hash", mapping={"a": "1", "b": "1"}) == 2
    assert two.hset("aa:hash", mapping={"c": "2"}) == 1
    fields.update({"a": "1", "b": "1", "c": "2"})
    # Strong keys: the home region keeps serving them, the cut-off region refuses them.
    assert one.incr("strong:counter") == 3
    with pytest.raises(redis.ResponseError, match="strong keys live in region dc1"):
        two.incr("strong:counter")
    with pytest.raises(redis.ResponseError, match="cannot reach"):
        two.get("strong:key")
    # During the cut each side sees only its own writes.
    assert one.sismember("aa:set", "cut-dc2") == 0
    assert two.sismember("aa:set", "cut-dc1") == 0

    _cut(regions, False)
    expected = (str(total), sorted(members), sorted(fields.items()), "second")
    clients = [dc1.client(node) for node in dc1.nodes] + [dc2.client(node) for node in dc2.nodes]
    wait_until(lambda: _converged(clients, expected), CONVERGE_S,
               f"every node of both regions to hold {expected}")
    assert two.incr("strong:counter") == 4     # the refused INCR was certainly not applied
    # The links are up again in the metrics (on the node that leads the shard: it pulls),
    # with no lag left anywhere.
    for cluster, other in ((dc1, "dc2"), (dc2, "dc1")):
        def healed(cluster: LocalCluster = cluster, other: str = other) -> bool:
            texts = [_metrics(node) for node in cluster.nodes]
            return any(f'phalanx_region_link_up{{region="{other}"}} 1.0' in text
                       for text in texts) and all(
                f'phalanx_region_link_lag_entries{{region="{other}"}} 0.0' in text
                for text in texts)
        wait_until(healed, CONVERGE_S, f"{other}'s link metrics to show it up")


def test_leader_kills_during_replication_lose_nothing_and_apply_nothing_twice(
        regions: dict[str, LocalCluster]) -> None:
    dc1, dc2 = regions["dc1"], regions["dc2"]
    one, two = dc1.client(dc1.nodes[0]), dc2.client(dc2.nodes[0])
    _cut(regions, True)
    total = own_one = own_two = 0
    members: set[str] = set()
    # A backlog on both sides (bounded: 300 writes each).
    for number in range(300):
        one.incrby("aa:counter", 1 + number % 7)
        two.incrby("aa:counter", 2 + number % 5)
        own_one += 1 + number % 7
        own_two += 2 + number % 5
        total += 1 + number % 7 + 2 + number % 5
        if number % 10 == 0:
            one.sadd("aa:set", f"a{number}")
            two.sadd("aa:set", f"b{number}")
            members |= {f"a{number}", f"b{number}"}
    assert (int(one.get("aa:counter")), int(two.get("aa:counter"))) == (own_one, own_two)
    _cut(regions, False)
    # As soon as replication has started somewhere (a region holds more than its own
    # increments), kill -9 the shard leader of each region. (It waited for a counter strictly
    # between a region's own sum and the total: on a loaded machine both regions could be
    # complete before the first poll, and it then waited in vain.)
    wait_until(lambda: int(one.get("aa:counter") or 0) != own_one
               or int(two.get("aa:counter") or 0) != own_two, CONVERGE_S,
               "replication to start", interval=0.01)
    killed = []
    for cluster in regions.values():
        leader = cluster.leader()
        cluster.kill(leader, signal.SIGKILL)
        killed.append((cluster, leader))
    for cluster, leader in killed:
        cluster.restart(leader)
    expected = (str(total), sorted(members), [], None)
    clients = [dc1.client(node) for node in dc1.nodes] + [dc2.client(node) for node in dc2.nodes]
    wait_until(lambda: _converged(clients, expected), CONVERGE_S,
               f"both regions to hold exactly {expected[:2]}")
    # And it stays so: a further write in each region is counted once more, nothing else.
    retry_write(one, "INCRBY", "aa:counter", "1000")
    retry_write(two, "INCRBY", "aa:counter", "1")
    total += 1001
    wait_until(lambda: _converged(clients, (str(total), *expected[1:])), CONVERGE_S,
               "the last writes to be counted once in both regions")


@pytest.mark.parametrize("regions", [3], indirect=True)
def test_three_regions_one_cut_off_converge_after_the_heal(
        regions: dict[str, LocalCluster]) -> None:
    clients = {name: cluster.client(cluster.nodes[index % 3])
               for index, (name, cluster) in enumerate(regions.items())}
    everyone = [cluster.client(node) for cluster in regions.values() for node in cluster.nodes]
    clients["dc1"].sadd("aa:set", "seen-by-all")
    wait_until(lambda: all(c.sismember("aa:set", "seen-by-all") for c in everyone),
               CONVERGE_S, "the first add to reach every region")
    _cut(regions, True, alone="dc3")
    total = 0
    for number in range(30):
        for name, client in clients.items():
            client.incrby("aa:counter", number + len(name))
            total += number + len(name)
    clients["dc3"].srem("aa:set", "seen-by-all")     # observed: removed everywhere later
    clients["dc1"].sadd("aa:set", "dc1-during-cut")
    clients["dc3"].sadd("aa:set", "dc3-during-cut")
    clients["dc2"].hset("aa:hash", "k", "dc2")
    # dc1 and dc2 still replicate to each other; dc3 sees only itself.
    wait_until(lambda: clients["dc2"].sismember("aa:set", "dc1-during-cut"), CONVERGE_S,
               "dc2 to see dc1's add during dc3's cut")
    assert clients["dc3"].sismember("aa:set", "dc1-during-cut") == 0
    assert clients["dc1"].sismember("aa:set", "dc3-during-cut") == 0
    _cut(regions, False)
    expected = (str(total), ["dc1-during-cut", "dc3-during-cut"], [("k", "dc2")], None)
    wait_until(lambda: _converged(everyone, expected), CONVERGE_S,
               f"all nine nodes of the three regions to hold {expected}")

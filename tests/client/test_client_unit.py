"""PhalanxClient against fake RESP nodes: routing, redirects and the exact retry rules.

The fake map (see fake_cluster.py): shard 0 = slots 0-8191 led by n1 (replica n2), shard 1 =
slots 8192-16383 led by n2 (replica n3). Keys "b", "c", "counter" live in shard 0; "a", "x",
"y" in shard 1.
"""

from __future__ import annotations

import random
import time

import pytest
import redis
from fake_cluster import DROP, SILENT, FakeCluster, error

from phalanx.client import (
    OutcomeUnknownError,
    PhalanxClient,
    Verdict,
    classify,
    is_idempotent,
    is_read_only,
    safe_to_resend,
)
from phalanx.errors import OutcomeUnknown
from phalanx.ops.ports import refused_address
from phalanx.placement import key_slot

UNKNOWN = error("ERR phalanx: outcome unknown: leadership moved while the command was forwarded")
TRYAGAIN = error("TRYAGAIN this node is not the leader of shard 0")
CLUSTERDOWN = error("CLUSTERDOWN The shard for this key has no quorum (shard 0)")


class MaxRandom(random.Random):
    """Full jitter at its ceiling: makes backoff sleeps deterministic."""

    def uniform(self, a: float, b: float) -> float:
        return b


def total(fake: FakeCluster, name: str) -> int:
    return sum(len(node.commands(name)) for node in fake.nodes)


def dead_address() -> str:
    return refused_address()


def test_the_keys_of_the_fake_map() -> None:
    assert all(key_slot(k.encode()) <= 8191 for k in ("b", "c", "counter"))
    assert all(key_slot(k.encode()) > 8191 for k in ("a", "x", "y"))


# ---- discovery and routing -------------------------------------------------------------------

def test_routes_each_key_to_its_shard_leader(fake: FakeCluster, make_client) -> None:
    client = make_client()
    n1, n2, n3 = fake.nodes
    assert client.set("a", "1") is True
    assert client.set("b", "2") is True
    assert client.get("a") == b"1"
    assert [c[1] for c in n2.commands("SET")] == [b"a"]
    assert [c[1] for c in n1.commands("SET")] == [b"b"]
    assert n3.received == []
    shard = client.slot_map.shard_for_slot(key_slot(b"b"))
    assert shard is not None and shard.leader == n1.address


def test_cluster_slots_is_the_fallback(fake: FakeCluster, make_client) -> None:
    fake.slots_only = True
    client = make_client()
    client.set("x", "1")
    assert len(fake.nodes[1].commands("SET")) == 1


def test_an_unreachable_seed_is_skipped(fake: FakeCluster, make_client) -> None:
    client = make_client([dead_address(), *fake.seeds])
    assert client.incr("counter") == 1


def test_no_reachable_seed_raises_connection_error(make_client) -> None:
    with pytest.raises(redis.exceptions.ConnectionError):
        make_client([dead_address()], connect_timeout=0.5)


def test_a_leaderless_shard_is_still_routed_to_its_replicas(fake: FakeCluster,
                                                           make_client) -> None:
    fake.leaderless.add(0)
    client = make_client()
    assert client.slot_map.shards[0].leader is None
    client.set("b", "1")
    assert len(fake.nodes[0].commands("SET")) == 1   # first listed member


def test_keyless_commands_go_to_any_node(fake: FakeCluster, make_client) -> None:
    assert make_client().ping() is True


def test_connection_state_commands_are_refused(make_client) -> None:
    client = make_client()
    for command in (("SELECT", 1), ("MULTI",), ("READONLY",)):
        with pytest.raises(redis.exceptions.DataError):
            client.execute_command(*command)


# ---- redirects ---------------------------------------------------------------------------------

def test_moved_is_followed_at_once_and_updates_routing(fake: FakeCluster, make_client) -> None:
    # A backoff sleep would be 30 s: "well under it" cannot fail on a loaded machine (it was
    # < 0.9 s against a 1 s backoff: a timed assertion).
    client = make_client(rng=MaxRandom(), backoff_base_s=30.0, backoff_max_s=30.0)
    n1, _, n3 = fake.nodes
    client.set("b", "v")                      # via n1, the leader the map names
    fake.shards[0] = (0, 8191, [2, 0])        # leadership moved to n3 ...
    n1.then(error(f"MOVED {key_slot(b'b')} {n3.address}"))   # ... and n1 says so
    started = time.monotonic()
    assert client.get("b") == b"v"
    assert time.monotonic() - started < 15.0  # no backoff sleep (it would be 30 s)
    assert client.get("b") == b"v"            # straight to n3 now
    assert len(n1.commands("GET")) == 1
    assert len(n3.commands("GET")) == 2
    shard = client.slot_map.shard_for_slot(key_slot(b"b"))
    assert shard is not None and shard.leader == n3.address
    assert client.stats["moved"] == 1


def test_moved_ping_pong_is_bounded(fake: FakeCluster, make_client) -> None:
    n1, _, n3 = fake.nodes
    slot = key_slot(b"b")
    n1.then(*[error(f"MOVED {slot} {n3.address}")] * 50)
    n3.then(*[error(f"MOVED {slot} {n1.address}")] * 50)
    client = make_client(max_attempts=6)
    with pytest.raises(redis.exceptions.MovedError):
        client.get("b")
    assert total(fake, "GET") == 6


# ---- the retry rules -------------------------------------------------------------------------

def test_tryagain_is_retried_even_for_incr(fake: FakeCluster, make_client) -> None:
    fake.nodes[0].then(TRYAGAIN, TRYAGAIN)
    assert make_client().incr("counter") == 1
    assert total(fake, "INCR") == 3
    assert fake.data[b"counter"] == b"1"


def test_clusterdown_is_retried_even_for_incr(fake: FakeCluster, make_client) -> None:
    fake.nodes[0].then(CLUSTERDOWN)
    assert make_client().incr("counter") == 1
    assert total(fake, "INCR") == 2


def test_incr_after_outcome_unknown_is_not_retried(fake: FakeCluster, make_client) -> None:
    fake.nodes[0].then(UNKNOWN)
    client = make_client()
    with pytest.raises(OutcomeUnknownError) as raised:
        client.incr("counter")
    assert total(fake, "INCR") == 1
    assert isinstance(raised.value, redis.exceptions.RedisError)
    assert isinstance(raised.value, OutcomeUnknown)
    assert raised.value.command == "INCR"
    assert isinstance(raised.value.__cause__, redis.exceptions.ResponseError)
    assert client.stats["outcome_unknown"] == 1


def test_incr_after_a_dropped_connection_is_not_retried(fake: FakeCluster, make_client) -> None:
    fake.nodes[0].then(DROP)
    with pytest.raises(OutcomeUnknownError) as raised:
        make_client().incr("counter")
    assert total(fake, "INCR") == 1
    assert isinstance(raised.value.__cause__, redis.exceptions.ConnectionError)


def test_incr_after_a_reply_timeout_is_not_retried(fake: FakeCluster, make_client) -> None:
    fake.nodes[0].then(SILENT)
    with pytest.raises(OutcomeUnknownError) as raised:
        make_client(socket_timeout=0.3).incr("counter")
    assert isinstance(raised.value.__cause__, redis.exceptions.TimeoutError)
    assert total(fake, "INCR") == 1


def test_get_after_a_reply_timeout_is_retried(fake: FakeCluster, make_client) -> None:
    fake.data[b"b"] = b"v"
    fake.nodes[0].then(SILENT)
    assert make_client(socket_timeout=0.3).get("b") == b"v"
    assert total(fake, "GET") == 2


@pytest.mark.parametrize("failure", [UNKNOWN, DROP], ids=["outcome-unknown", "dropped"])
def test_set_is_retried_after_an_unknown_outcome(fake: FakeCluster, make_client,
                                                  failure: object) -> None:
    fake.nodes[0].then(failure)
    client = make_client()
    assert client.set("b", "v") is True
    assert total(fake, "SET") == 2
    assert fake.data[b"b"] == b"v"
    assert client.stats["retried_after_unknown"] == 1


@pytest.mark.parametrize("failure", [UNKNOWN, DROP], ids=["outcome-unknown", "dropped"])
def test_reads_are_retried_after_an_unknown_outcome(fake: FakeCluster, make_client,
                                                    failure: object) -> None:
    fake.data[b"b"] = b"v"
    fake.nodes[0].then(failure)
    assert make_client().get("b") == b"v"
    assert total(fake, "GET") == 2


@pytest.mark.parametrize("options", [{"get": True}, {"nx": True}], ids=["GET", "NX"])
def test_set_with_get_or_nx_is_not_retried(fake: FakeCluster, make_client,
                                           options: dict[str, bool]) -> None:
    fake.nodes[0].then(UNKNOWN)
    with pytest.raises(OutcomeUnknownError):
        make_client().set("b", "v", **options)
    assert total(fake, "SET") == 1


def test_non_idempotent_write_is_retried_when_the_leader_refuses_connections(
        fake: FakeCluster, make_client) -> None:
    client = make_client()
    n1, n2, _ = fake.nodes
    client.set("b", "v")            # a pooled connection to n1 exists ...
    n1.stop()                       # ... and n1 dies: the connection is dead, connects refused
    assert client.incr("counter") == 1   # sent to n2 (a replica: proxies) instead
    assert len(n2.commands("INCR")) == 1
    assert total(fake, "INCR") == 1
    assert client.stats["connect_failures"] >= 1
    assert client.stats["outcome_unknown"] == 0


def test_clusterdown_backs_off_and_gives_up_at_the_deadline(fake: FakeCluster,
                                                           make_client) -> None:
    fake.nodes[0].then(*[CLUSTERDOWN] * 1000)
    # A 2 s deadline (it was 0.5 s): on a loaded machine a few slow round trips to the fake
    # node could leave fewer than 3 attempts in 0.5 s, and 4x the deadline was a timed bound.
    client = make_client(rng=MaxRandom(), request_timeout_s=2.0, backoff_base_s=0.02,
                         backoff_max_s=0.1, max_attempts=1000)
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ClusterDownError):
        client.get("b")
    elapsed = time.monotonic() - started
    attempts = total(fake, "GET")
    # Sleeps 0.04, 0.08, 0.1, 0.1, ...: about 21 attempts fit in 2 s; far fewer than a spin
    # (max_attempts 1,000, which would also take 100 s of sleeps: past the upper bound).
    assert 3 <= attempts <= 30, attempts
    assert 1.2 <= elapsed <= 20.0, elapsed


def test_max_attempts_bounds_the_retries(fake: FakeCluster, make_client) -> None:
    fake.nodes[0].then(*[TRYAGAIN] * 100)
    with pytest.raises(redis.exceptions.TryAgainError):
        make_client(max_attempts=3).get("b")
    assert total(fake, "GET") == 3


def test_idempotent_write_that_may_have_applied_reports_unknown_when_retries_run_out(
        fake: FakeCluster, make_client) -> None:
    fake.nodes[0].then(UNKNOWN, *[CLUSTERDOWN] * 100)
    with pytest.raises(OutcomeUnknownError):
        make_client(max_attempts=4).set("b", "v")
    assert total(fake, "SET") == 4


def test_a_real_error_is_raised_at_once(fake: FakeCluster, make_client) -> None:
    fake.nodes[0].then(error("WRONGTYPE Operation against a key holding the wrong kind of value"))
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        make_client().get("b")
    assert total(fake, "GET") == 1


# ---- multi-key helpers and refresh -----------------------------------------------------------

def test_mset_mget_and_delete_are_split_per_shard(fake: FakeCluster, make_client) -> None:
    client = make_client()
    n1, n2, _ = fake.nodes
    assert client.mset({"a": "1", "b": "2", "x": "3", "c": "4"}) is True
    assert [c[1::2] for c in n1.commands("MSET")] == [[b"b", b"c"]]
    assert [c[1::2] for c in n2.commands("MSET")] == [[b"a", b"x"]]
    assert client.mget(["a", "b", "missing", "x", "c"]) == [b"1", b"2", None, b"3", b"4"]
    assert client.mget("c", "a") == [b"4", b"1"]
    assert client.delete("a", "b", "x", "nothing") == 3
    assert fake.data == {b"c": b"4"}


def test_the_map_is_refreshed_periodically(fake: FakeCluster, make_client) -> None:
    client = make_client(refresh_interval_s=0.0)
    before = sum(node.map_requests for node in fake.nodes)
    for _ in range(3):
        client.get("b")
    assert sum(node.map_requests for node in fake.nodes) >= before + 3


def test_a_refresh_learns_a_new_leader(fake: FakeCluster, make_client) -> None:
    client = make_client()
    fake.shards[1] = (8192, 16383, [2, 1])   # shard 1 now led by n3
    fake.nodes[1].then(TRYAGAIN)               # n2 is no longer the leader
    time.sleep(0.15)                           # past the minimum gap between refreshes
    client.set("a", "1")
    client.set("a", "2")
    assert len(fake.nodes[2].commands("SET")) == 2


def test_close_and_context_manager(fake: FakeCluster) -> None:
    with PhalanxClient(fake.seeds) as client:
        client.set("b", "1")
    with pytest.raises(redis.exceptions.ConnectionError):
        client.set("b", "2")


# ---- the policy, table-driven ----------------------------------------------------------------

@pytest.mark.parametrize(("command", "safe"), [
    ("GET k", True), ("MGET a b", True), ("TTL k", True), ("PING", True),
    ("SET k v", True), ("SET k v EX 10", True), ("SET k v XX", True), ("MSET a 1 b 2", True),
    ("DEL a b", True), ("HSET h f v", True), ("SADD s m", True), ("EXPIRE k 10", True),
    ("SET k v GET", False), ("SET k v NX", False), ("SET k v IFEQ old", False),
    ("EXPIRE k 10 NX", False), ("INCR k", False), ("INCRBY k 2", False), ("DECR k", False),
    ("APPEND k v", False), ("LPUSH l v", False), ("RPOP l", False), ("GETSET k v", False),
    ("GETDEL k", False), ("SETNX k v", False), ("HINCRBY h f 1", False),
    ("NOSUCHCOMMAND k", False),
])
def test_safe_to_resend(command: str, safe: bool) -> None:
    name, *args = [word.encode() for word in command.split()]
    assert safe_to_resend(name, args) is safe
    assert safe_to_resend(name.lower(), args) is safe


def test_read_only_and_idempotent_are_distinct() -> None:
    assert is_read_only(b"get") and not is_idempotent(b"GET", [b"k"])
    assert is_idempotent(b"SET", [b"k", b"v"]) and not is_read_only(b"SET")


def test_classify() -> None:
    connection = redis.exceptions.ConnectionError("refused")
    assert classify(connection, sent=False) is Verdict.NOT_APPLIED
    assert classify(connection, sent=True) is Verdict.UNKNOWN
    assert classify(redis.exceptions.TimeoutError("t"), sent=True) is Verdict.UNKNOWN
    assert classify(redis.exceptions.TryAgainError("x"), sent=True) is Verdict.NOT_APPLIED
    assert classify(redis.exceptions.ClusterDownError("x"), sent=True) is Verdict.NOT_APPLIED
    assert classify(redis.exceptions.MovedError("5 h:1"), sent=True) is Verdict.REDIRECT
    assert classify(redis.exceptions.ResponseError("phalanx: outcome unknown: x"),
                    sent=True) is Verdict.UNKNOWN
    assert classify(redis.exceptions.ResponseError("phalanx: timed out waiting"),
                    sent=True) is Verdict.UNKNOWN
    assert classify(redis.exceptions.ResponseError("WRONGTYPE x"), sent=True) is Verdict.FINAL
    assert classify(redis.exceptions.AuthenticationError("bad"), sent=False) is Verdict.FINAL

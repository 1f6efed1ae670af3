"""NetnsControl: one network namespace per node, real iptables partitions, real latency.

The cluster test needs root, iproute2 and iptables (CI has them); elsewhere it is skipped with
the reason `NetnsControl.available()` gives. The pure helpers are tested everywhere.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from phalanx.chaos.netns import CHAIN, NetnsControl, _pick_subnet, partition_rules
from phalanx.errors import NetnsError

ADDRESSES = {"n1": "10.0.0.11", "n2": "10.0.0.12", "n3": "10.0.0.13"}


def test_partition_rules_cut_only_between_groups() -> None:
    rules = partition_rules([["n1"], ["n2", "n3"]], ADDRESSES)
    assert rules["n1"] == [f"-A {CHAIN} -s 10.0.0.12/32 -j DROP", f"-A {CHAIN} -d 10.0.0.12/32 -j DROP",
                           f"-A {CHAIN} -s 10.0.0.13/32 -j DROP", f"-A {CHAIN} -d 10.0.0.13/32 -j DROP"]
    assert rules["n2"] == [f"-A {CHAIN} -s 10.0.0.11/32 -j DROP", f"-A {CHAIN} -d 10.0.0.11/32 -j DROP"]
    assert rules["n3"] == [f"-A {CHAIN} -s 10.0.0.11/32 -j DROP", f"-A {CHAIN} -d 10.0.0.11/32 -j DROP"]


def test_partition_rules_isolate_nodes_in_no_group() -> None:
    rules = partition_rules([["n1", "n2"]], ADDRESSES)
    assert all("10.0.0.13" in rule for rule in rules["n1"])
    assert len(rules["n3"]) == 4


def test_partition_rules_refuse_unknown_and_duplicate_nodes() -> None:
    with pytest.raises(NetnsError, match="unknown node"):
        partition_rules([["n9"]], ADDRESSES)
    with pytest.raises(NetnsError, match="more than one group"):
        partition_rules([["n1"], ["n1", "n2"]], ADDRESSES)


def test_pick_subnet_avoids_used_networks() -> None:
    import secrets
    used = " ".join(f"inet 10.213.{third}.1/24" for third in range(1, 255) if third != 77)
    assert _pick_subnet(used, secrets.SystemRandom()) == "10.213.77"
    with pytest.raises(NetnsError, match="no free"):
        _pick_subnet(used + " 10.213.77.0/24", secrets.SystemRandom())


def test_failed_command_names_command_and_stderr() -> None:
    from phalanx.chaos.netns import run
    with pytest.raises(NetnsError, match=r"`ls /nonexistent-phalanx` failed \(exit \d+\): .*No such"):
        run(["ls", "/nonexistent-phalanx"])
    with pytest.raises(NetnsError, match="timed out"):
        run(["sleep", "5"], timeout=0.2)


# --------------------------------------------------------------------------- the real thing

AVAILABLE, REASON = NetnsControl.available()


def _wait(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _get_or_none(made: redis.Redis, key: str) -> object:
    """GET, with a cluster refusal (CLUSTERDOWN, TRYAGAIN) read as "not yet"."""
    try:
        return made.get(key)
    except (redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError):
        return None


_CONNECT_MS = """
import socket, sys, time
samples = []
for _ in range(5):
    began = time.monotonic()
    try:
        socket.create_connection((sys.argv[1], 9), timeout=2).close()
    except ConnectionRefusedError:
        pass
    samples.append((time.monotonic() - began) * 1000)
print(min(samples))
"""


def _connect_ms(namespace: str | None, address: str) -> float:
    """Fastest of 5 TCP connect RTTs in ms (a refused connect is a full round trip) from
    `namespace` (None: the root namespace) to `address`. The minimum, not the median: an
    injected delay is a floor under every sample, while a loaded machine only adds to some
    (a median of 3 could pass an upper bound like "under 50 ms" only when idle)."""
    inside = ["ip", "netns", "exec", namespace] if namespace else []
    out = subprocess.run([*inside, sys.executable, "-c", _CONNECT_MS, address],
                         capture_output=True, text=True, timeout=15, check=True).stdout
    return float(out)


def _set_ms(client: redis.Redis, key: str, rounds: int = 9) -> float:
    """Fastest of `rounds` SET latencies in ms (the minimum: see `_connect_ms`)."""
    samples = []
    for i in range(rounds):
        began = time.monotonic()
        assert client.set(key, str(i))
        samples.append((time.monotonic() - began) * 1000)
    return min(samples)


def _ours_left(prefix: str) -> list[str]:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [line for line in (namespaces + links).splitlines() if prefix in line]


@pytest.mark.skipif(not AVAILABLE, reason=f"netns mode unavailable: {REASON}")
@pytest.mark.timeout(120)
def test_netns_cluster_partition_latency_kill_restart(tmp_path: Path) -> None:
    began = time.monotonic()
    control = NetnsControl.start(nodes=3, data_dir=tmp_path,
                                 overrides={"request_timeout_ms": 2000})
    prefix = control.prefix
    clients: list[redis.Redis] = []

    def client(node: str, timeout: float = 3.0) -> redis.Redis:
        info = next(n for n in control.nodes() if n.id == node)
        made = redis.Redis(host=info.resp_host, port=info.resp_port, socket_timeout=timeout,
                           socket_connect_timeout=timeout)
        clients.append(made)
        return made

    try:
        print(f"setup {control.setup_total_s:.2f} s (network {control.setup_network_s:.2f} s); "
              f"latency: {control.latency_note}")
        nodes = control.nodes()
        assert [n.id for n in nodes] == ["n1", "n2", "n3"]
        assert len({n.resp_host for n in nodes}) == 3
        leader = control.leader()
        assert leader is not None
        assert client(leader).set("before", "1")

        # The nodes bind to and source from their own addresses: peer connections seen
        # inside the leader's namespace go between namespace addresses only.
        sockets = subprocess.run(["ip", "netns", "exec", control.namespace(leader), "ss", "-tn"],
                                 capture_output=True, text=True, timeout=5).stdout
        local = {line.split()[3].rpartition(":")[0] for line in sockets.splitlines()[1:] if line}
        assert local <= {control.address(leader)}, sockets

        # Isolate the leader: it steps down, the majority elects another and serves.
        others = [n.id for n in nodes if n.id != leader]
        control.partition([[leader], others])
        _wait(lambda: control.role(leader) != "leader", 30, f"{leader} to step down")
        new_leader = _wait(lambda: (lambda x: x if x in others else None)(control.leader()), 30,
                           "the majority to elect a leader")
        assert isinstance(new_leader, str)
        follower = next(n for n in others if n != new_leader)
        assert client(follower).set("during", "majority")
        with pytest.raises(redis.RedisError):
            client(leader, timeout=3.0).set("isolated", "x")

        # Heal: everyone agrees again and reads what the majority wrote.
        control.heal()
        _wait(lambda: all(control.role(n.id) in ("leader", "follower") for n in nodes)
              and control.leader() is not None, 30, "the cluster to converge")
        # The node that was cut off has had no leader for longer than the no-quorum threshold:
        # until it hears the new leader it answers -CLUSTERDOWN (a clear, retryable refusal,
        # never a wrong value), so each node gets 30 s to serve the write.
        for node in nodes:
            _wait(lambda node=node: _get_or_none(client(node.id), "during") == b"majority", 30,
                  f"{node.id} to serve the majority's write")

        # Latency on the peer path.
        current = control.leader()
        assert current is not None
        followers = [n.id for n in nodes if n.id != current]
        if control.latency_backend == "netem":
            slow, other = followers
            base = _connect_ms(control.namespace(other), control.address(slow))
            control.add_latency(slow, 100)
            delayed = _connect_ms(control.namespace(other), control.address(slow))
            control.clear_latency()
            assert delayed >= 95 > base, (base, delayed)
            # Only peer traffic is delayed: the lab's own ping from the root namespace is not.
            control.add_latency(slow, 100)
            direct = _connect_ms(None, control.address(slow))
            control.clear_latency()
            assert direct < 50, direct
        # On every backend: delaying what the leader sends to its peers delays each write.
        writer = client(current)
        base_set = _set_ms(writer, "lat")
        control.add_latency(current, 100)
        slow_set = _set_ms(writer, "lat")
        control.clear_latency()
        fast_again = _set_ms(writer, "lat")
        assert slow_set >= 90 > base_set, (base_set, slow_set)
        assert fast_again < 90, fast_again

        # Pause a follower: it stops answering, the leader still serves; resume brings it back.
        sleeper = followers[1]
        control.pause(sleeper)
        assert control.role(sleeper) is None
        assert client(current).set("while-paused", "yes")
        control.resume(sleeper)
        _wait(lambda: client(sleeper).get("while-paused") == b"yes", 30, f"{sleeper} to resume")

        # Kill a follower and restart it; it rejoins and catches up.
        victim = followers[0]
        old_pid = next(n.pid for n in control.nodes() if n.id == victim)
        control.kill(victim)
        assert control.role(victim) is None
        assert client(current).set("while-down", "yes")
        control.restart(victim)
        assert next(n.pid for n in control.nodes() if n.id == victim) != old_pid
        _wait(lambda: client(victim).get("while-down") == b"yes", 30, f"{victim} to catch up")
        print(f"whole test body {time.monotonic() - began:.1f} s")
    finally:
        for made in clients:
            made.close()
        control.close()
        control.close()  # idempotent
    assert _ours_left(prefix) == []

"""Automatic and manual failover of a real 3-node cluster: kill -9, SIGSTOP, leadership transfer."""

from __future__ import annotations

import signal
import socket
import time
from typing import Any

import redis
from integration_harness import (
    LocalCluster,
    WriteLoad,
    check_all_present,
    retry_write,
    run_cli,
    wait_until,
)


def test_kill_leader_under_write_load_loses_no_acknowledged_write(cluster: Any) -> None:
    """Proves: kill -9 of the leader while 4 client threads write unique keys to random nodes
    loses no acknowledged write: a new leader is elected and serves writes, and once the killed
    node is restarted and caught up, every acknowledged key is readable with its value from
    every node (READONLY local reads after convergence), and all nodes hold identical values
    for every key that was attempted. Prints the client-visible write gap."""
    c: LocalCluster = cluster(3)
    old = c.leader()
    load = WriteLoad(c, threads=4, max_writes=8000, prefix="kill").start()
    try:
        load.wait_acked(300)
        killed_at = time.monotonic()
        c.kill(old, signal.SIGKILL)
        new = c.leader(among=c.others(old))
        assert new.id != old.id
        first = wait_until(lambda: load.first_success_after(killed_at), 60,
                           "a write acknowledged after the kill")
        acked_at_kill = load.acked_count()
        load.wait_acked(acked_at_kill + 300)
    finally:
        load.stop()
    print(f"\nkill -9 of leader {old.id}: new leader {new.id}; client-visible write gap "
          f"{(first - killed_at) * 1000:.0f} ms; {len(load.acknowledged)} acknowledged writes, "
          f"{len(load.attempted) - len(load.acknowledged)} unacknowledged; errors {load.errors}")
    c.restart(old)
    check_all_present(c, load)


def test_sigstop_leader_is_replaced_and_steps_down_after_sigcont(cluster: Any) -> None:
    """Proves: a SIGSTOPped leader is replaced by the other two (new leader elected, writes
    succeed through it and through the other follower); the stopped node acknowledges nothing;
    after SIGCONT it steps down (follower, higher term) and a write sent directly to it, both
    one queued while it was stopped and one sent afterwards, is either refused or forwarded to
    the new leader, never acknowledged on its own: every acknowledged value is readable from
    the new leader and all nodes converge to the same values."""
    c: LocalCluster = cluster(3)
    old = c.leader()
    assert c.client(old).set("before", "1") is True
    term_before = c.status(old)["term"]  # type: ignore[index]

    stopped_at = time.monotonic()
    c.kill(old, signal.SIGSTOP)
    queued = socket.create_connection((old.host, old.port), timeout=5)
    try:
        queued.sendall(b"*3\r\n$3\r\nSET\r\n$6\r\nqueued\r\n$9\r\nwhile-off\r\n")
        new = c.leader(among=c.others(old))
        elected_after = time.monotonic() - stopped_at
        assert new.id != old.id
        for node in c.others(old):
            assert retry_write(c.client(node), "SET", f"during:{node.id}", "ok") in (True, "OK")
        queued.settimeout(1.0)
        try:
            early = queued.recv(1000)
        except TimeoutError:
            early = b""
        assert early == b"", f"the stopped leader answered {early!r}"

        c.kill(old, signal.SIGCONT)
        status = wait_until(lambda: (s := c.status(old)) and s.get("role") != "leader"
                            and s.get("term", 0) > term_before and s, 30,
                            f"{old.id} to step down after SIGCONT")
        assert status["role"] in ("follower", "pre-candidate", "candidate"), status

        queued.settimeout(30.0)
        queued_reply = b""
        while not queued_reply.endswith(b"\r\n"):
            chunk = queued.recv(1000)
            if not chunk:
                break
            queued_reply += chunk
    finally:
        queued.close()
    print(f"\nSIGSTOP of leader {old.id}: {new.id} agreed leader after {elected_after * 1000:.0f}"
          f" ms; old leader after SIGCONT: {status['role']} at term {status['term']} "
          f"(was {term_before}); queued write answered {queued_reply!r}")

    direct = c.client(old)
    try:
        direct_ok = direct.set("after", "via-old") is True
    except redis.ResponseError as error:
        direct_ok = False
        print(f"write sent to the old leader after SIGCONT refused: {error}")
    new_leader = c.leader()
    reader = c.client(new_leader)
    if queued_reply.startswith(b"+OK"):
        assert reader.get("queued") == "while-off"
    else:
        assert queued_reply.startswith((b"-", b"")), queued_reply
    if direct_ok:
        assert reader.get("after") == "via-old"
    assert c.status(old)["role"] != "leader" or new_leader.id == old.id  # type: ignore[index]
    c.wait_converged()
    values = {n.id: c.readonly_client(n).mget(["before", "queued", "after", *[
        f"during:{m.id}" for m in c.others(old)]]) for n in c.nodes}
    assert len({tuple(v) for v in values.values()}) == 1, values
    assert values[old.id][0] == "1" and all(v == "ok" for v in values[old.id][3:]), values


def test_manual_failover_cli_and_redis_failover(cluster: Any) -> None:
    """Proves: `phalanx failover --to nX` moves leadership to nX, and Redis `FAILOVER TO host
    port` sent to the leader moves it to that node; after each, /status, ROLE and writes through
    every node agree with the new leader."""
    c: LocalCluster = cluster(3)
    first = c.leader()
    target = c.others(first)[0]
    completed = run_cli(["failover", "--to", target.id, "--data-dir", str(c.data_dir)], timeout=60)
    assert completed.returncode == 0, completed.stderr + completed.stdout
    assert f"to {target.id}" in completed.stdout, completed.stdout
    assert c.leader().id == target.id
    for node in c.nodes:
        assert retry_write(c.client(node), "SET", f"after-cli:{node.id}", "1") in (True, "OK")

    second = next(n for n in c.nodes if n.id not in (first.id, target.id))
    reply = c.client(target).execute_command("FAILOVER", "TO", second.host, str(second.port))
    assert reply in (True, "OK"), reply
    assert c.leader().id == second.id
    assert c.client(second).execute_command("ROLE")[0] == "master"
    for node in c.nodes:
        assert retry_write(c.client(node), "SET", f"after-redis:{node.id}", "1") in (True, "OK")
    c.wait_converged()
    for node in c.nodes:
        ro = c.readonly_client(node)
        assert ro.mget([f"after-cli:{n.id}" for n in c.nodes]) == ["1"] * 3
        assert ro.mget([f"after-redis:{n.id}" for n in c.nodes]) == ["1"] * 3

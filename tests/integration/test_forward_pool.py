"""Clients that connect for each command, through a follower (the SIGSTOP failover "hang").

Real processes: a 3-node cluster (one data shard). A client that opens a new connection for
every command (the failover benchmarks' gap writer, a PHP request, a pool that health-checks
by reconnecting) through a follower used to cost a new TCP connection from the follower to
the leader, AUTH and CLIENT SETNAME there, for each command. On the shared 2-core machine at
load 19-38, 100-140 such SETs a second drove the follower into answering none of them within
the clients' 0.5 s for 13-34 s at a time (its accept queue full of connections whose clients
had already given up, each still forwarded on a link of its own), while the same load
through the leader was all served: the session 8 note's "no write through the surviving
follower for 30 s" after a SIGSTOP of the leader (`benchmarks/sigstop_hang.py`). The links
of closed connections now wait in the router's pool (`peer_link.LinkPool`) for the next.

Proves (counted, not timed): 40 SETs through a follower, each on its own connection, are all
acknowledged and readable, and the cluster as a whole accepts at most a handful of RESP
connections besides the 40 clients' own (before: one more per SET, at the leader).
"""

from __future__ import annotations

from typing import Any

import redis
from integration_harness import LocalCluster, no_retry, wait_until

WRITES = 40
#: RESP connections the nodes may accept beyond the clients' own: a link per leader the
#: follower forwarded to (one, or two after a leader change) and this test's own readers.
SLACK = 8


def connections_received(cluster: LocalCluster) -> int:
    total = 0
    for node in cluster.nodes:
        client = cluster.client(node)
        try:
            info = client.info("stats")
        finally:
            client.close()
        total += int(info["total_connections_received"])
    return total


def test_clients_connecting_per_command_through_a_follower_share_its_link(cluster: Any) -> None:
    c: LocalCluster = cluster(3)
    c.wait_converged()
    leader = c.leader()
    follower = c.others(leader)[0]
    before = connections_received(c)  # (its own 3 connections count here, before the reading)
    for index in range(WRITES):
        client = redis.Redis(host=follower.host, port=follower.port, socket_timeout=15,
                             socket_connect_timeout=15, retry=no_retry(), protocol=2,
                             single_connection_client=True)
        try:
            assert client.set(f"pool:{index}", str(index)) is True
        finally:
            client.close()
    after = connections_received(c)
    # The 40 clients' connections and the 3 of the first count; the rest are node-to-node
    # links (before the pool: 40 of them, one per forwarded SET).
    extra = after - before - WRITES - len(c.nodes)
    assert extra <= SLACK, f"{extra} RESP connections besides the clients' own"
    reader = c.client(leader)
    try:
        def all_read() -> bool:
            values = reader.mget([f"pool:{i}" for i in range(WRITES)])
            return values == [str(i) for i in range(WRITES)]
        wait_until(all_read, 30, "every acknowledged SET readable through the leader")
    finally:
        reader.close()

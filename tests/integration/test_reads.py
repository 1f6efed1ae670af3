"""Linearizable reads on real nodes: the batched ReadIndex path and the lease path.

A read that starts after a write was acknowledged must see that write (or a later one),
whichever node serves it: the leader (ReadIndex rounds shared by the reads that arrived
before the round left, or the lease) or a follower (a ReadIndexRequest to the leader,
shared the same way). Reads are pipelined so that many of them share one request.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from integration_harness import LocalCluster

ROUNDS = 40
PIPELINED_READS = 25


def _reads_see_acknowledged_writes(cluster: LocalCluster) -> None:
    leader = cluster.leader()
    writer = cluster.client(leader)
    readers = [cluster.client(node) for node in cluster.nodes]
    for round_number in range(ROUNDS):
        value = f"v{round_number}"
        assert writer.set("reads:k", value) is True
        for reader in readers:
            pipe = reader.pipeline(transaction=False)
            for _ in range(PIPELINED_READS):
                pipe.get("reads:k")
            got = pipe.execute()
            # Every read started after the write was acknowledged: none may be older.
            assert got == [value] * PIPELINED_READS, (round_number, got)


@pytest.mark.parametrize("lease_reads", [False, True], ids=["read-index", "lease"])
def test_reads_on_every_node_see_every_acknowledged_write(
        cluster: Any, lease_reads: bool) -> None:
    _reads_see_acknowledged_writes(cluster(3, lease_reads=lease_reads))


def test_concurrent_readers_never_go_back_in_time(cluster: Any) -> None:
    """Writers bump a counter; readers on every node, many connections at once, must never
    read a value lower than one that was acknowledged before their read started."""
    instance: LocalCluster = cluster(3)
    leader = instance.leader()
    writer = instance.client(leader)
    writer.set("reads:n", 0)
    acknowledged = [0]
    errors: list[str] = []
    stop = threading.Event()

    def write() -> None:
        for value in range(1, 301):
            if stop.is_set():
                return
            writer.set("reads:n", value)
            acknowledged[0] = value

    def read(node_index: int) -> None:
        client = instance.client(instance.nodes[node_index % len(instance.nodes)])
        while not stop.is_set():
            floor = acknowledged[0]
            got = int(client.get("reads:n") or 0)
            if got < floor:
                errors.append(f"read {got} after {floor} was acknowledged")
                return

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(6)]
    for thread in threads:
        thread.start()
    try:
        write()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors, errors
    assert acknowledged[0] == 300

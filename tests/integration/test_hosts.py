"""Hosts as a failure domain on real processes (docs/hosts.md).

A cluster laid out as `phalanx up --nodes 6 --nodes-per-host 2 --zones 1 --shards 6` (the
launcher code behind `phalanx up`): three synthetic hosts of two node processes each, in ONE
zone, so only the host rule can keep two replicas of a shard off one host. Both nodes of one
host are killed with kill -9 at the same instant while clients write: no shard loses its
quorum (every shard takes writes afterwards through the survivors), and every acknowledged
write reads back with its value.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from integration_harness import (
    LocalCluster,
    WriteLoad,
    describe_map,
    keys_of_shard,
    kill_together,
    map_nodes_of,
    retry_command,
    settled,
    shards_of,
    wait_map,
)

#: Generous bounds: the machine is shared.
SETTLE_TIMEOUT_S = 90.0


def test_losing_a_host_of_two_nodes_loses_no_quorum_and_no_acknowledged_write() -> None:
    with LocalCluster(6, zones=1, nodes_per_host=2, overrides={"shards": 6},
                      name="hosts-k2") as c:
        status = wait_map(c, settled, SETTLE_TIMEOUT_S,
                          "every shard fully replicated with a leader")
        nodes = map_nodes_of(status)
        assert {n["host"] for n in nodes.values()} == {"h1", "h2", "h3"}, describe_map(status)
        assert {n["zone"] for n in nodes.values()} == {"z1"}
        shards = shards_of(status)
        assert sorted(shards) == [1, 2, 3, 4, 5, 6], describe_map(status)
        for shard_id, shard in shards.items():
            hosts = [nodes[m]["host"] for m in shard["replicas"]]
            assert len(shard["replicas"]) == 3 and len(set(hosts)) == 3, (
                f"shard {shard_id}: replicas {shard['replicas']} on hosts {hosts}")

        # The host leading the most shards goes (its two nodes at once, like a power cut).
        led = Counter(nodes[s["leader"]]["host"] for s in shards.values())
        host = max(sorted(led), key=lambda h: led[h])
        victims = [n for n in c.nodes if nodes[n.id]["host"] == host]
        survivors = [n for n in c.nodes if n not in victims]
        assert len(victims) == 2 and len(survivors) == 4

        load = WriteLoad(c, threads=4, max_writes=3_000, prefix="hosts").start()
        try:
            load.wait_acked(150, timeout=120.0)
            kill_together(c, victims)
            before = load.acked_count()
            # Writes keep being acknowledged after the host is gone (the writers pick nodes at
            # random; those on the dead host fail at once).
            load.wait_acked(before + 150, timeout=120.0)
        finally:
            load.stop()
        assert load.acked_count() > before

        # Every shard still has a quorum: each takes a write (and reads it back) through the
        # survivors, in turn.
        for position, shard_id in enumerate(sorted(shards)):
            key = keys_of_shard(status, shard_id, 1, prefix=f"after-{host}")[0]
            writer = c.client(survivors[position % len(survivors)])
            assert retry_command(writer, "SET", key, f"v{shard_id}", timeout=60.0) in (True, "OK")
            reader = c.client(survivors[(position + 1) % len(survivors)])
            assert retry_command(reader, "GET", key, timeout=60.0) == f"v{shard_id}"

        # Nothing acknowledged was lost: linearizable reads through the survivors.
        lost: dict[str, Any] = {}
        clients = [c.client(n) for n in survivors]
        for position, (key, value) in enumerate(sorted(load.acknowledged.items())):
            got = retry_command(clients[position % len(clients)], "GET", key, timeout=60.0)
            if got != value:
                lost[key] = (value, got)
        assert not lost, f"{len(lost)} acknowledged writes lost or wrong, e.g. " \
            f"{sorted(lost.items())[:5]}"
        print(f"\nhost {host} ({', '.join(v.id for v in victims)}; it led {led[host]} of 6 "
              f"shards) killed: {len(load.acknowledged)} acknowledged writes all read back "
              f"through {', '.join(s.id for s in survivors)}; errors seen {load.errors}")

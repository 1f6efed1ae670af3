"""Exactly-once forwarded writes through a leader kill (issue 13; Raft dissertation §6.3).

Real processes: a 3-node cluster (one data shard). Pipelining clients connected ONLY to the
followers of shard 1 send, in pipelines of 50, `INCR counter` and `RPUSH ids <unique id>`:
every command is forwarded over the follower's peer link as PHALANX.FWD with the client's
session (client id, sequence), many in flight at once. Then kill -9 of the shard's leader
while pipelines are in flight (twice: the killed node restarts in between).

A forwarded write whose link broke is re-sent to the new leader with the SAME (client id,
sequence); the state machine runs it once and answers the first application's reply. Proves:
- no write is applied twice: the `ids` list holds every id at most once, and the counter is
  at most the number of acknowledged INCRs plus the unacknowledged ones (and at least the
  acknowledged ones: nothing acknowledged is lost); the acknowledged INCR replies are all
  different (a re-sent INCR got its first reply, not a second increment);
- every acknowledged RPUSH id is in the list.
It prints how many commands ended with an error (the re-sending should leave few or none).
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from typing import Any

import redis
from integration_harness import LocalCluster, no_retry, shard_primary, wait_until

PIPELINE = 50
CLIENTS_PER_FOLLOWER = 2
KILLS = 2


class PipeliningClient:
    """A thread sending pipelines of INCR / RPUSH through one node; every outcome kept."""

    def __init__(self, node: Any, name: str) -> None:
        self.node = node
        self.name = name
        self.stop = threading.Event()
        self.acked_incr: list[int] = []
        self.unacked_incr = 0
        self.unacked_ids = 0
        self.acked_ids: list[str] = []
        self.errors: Counter[str] = Counter()
        self.pipelines = 0
        #: A pipeline is being sent or waits for its replies.
        self.executing = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = redis.Redis(host=self.node.host, port=self.node.port, socket_timeout=30,
                             socket_connect_timeout=2.0, retry=no_retry(), protocol=2,
                             decode_responses=True)
        number = 0
        end = time.monotonic() + 150  # bounded in time and count
        try:
            while not self.stop.is_set() and time.monotonic() < end and self.pipelines < 2_000:
                pipe = client.pipeline(transaction=False)
                ids = []
                for _ in range(PIPELINE // 2):
                    number += 1
                    ids.append(f"{self.name}:{number}")
                    pipe.incr("counter")
                    pipe.rpush("ids", ids[-1])
                self.executing = True
                try:
                    replies = pipe.execute(raise_on_error=False)
                except redis.RedisError as error:
                    # The connection to the follower itself failed: nothing acknowledged.
                    self.errors[type(error).__name__] += PIPELINE
                    self.unacked_incr += PIPELINE // 2
                    self.unacked_ids += PIPELINE // 2
                    time.sleep(0.05)
                    continue
                finally:
                    self.executing = False
                self.pipelines += 1
                for position, reply in enumerate(replies):
                    incr = position % 2 == 0
                    if isinstance(reply, Exception):
                        self.errors[str(reply).split(":")[0][:60]] += 1
                        if incr:
                            self.unacked_incr += 1
                        else:
                            self.unacked_ids += 1
                    elif incr:
                        self.acked_incr.append(int(reply))
                    else:
                        self.acked_ids.append(ids[position // 2])
        finally:
            client.close()


def test_forwarded_pipelined_writes_apply_once_through_leader_kills(cluster: Any) -> None:
    c: LocalCluster = cluster(3)
    c.wait_converged()
    clients: list[PipeliningClient] = []
    report = []
    try:
        for round_number in range(KILLS):
            leader = shard_primary(c, 1)
            followers = c.others(leader)
            batch = [PipeliningClient(node, f"r{round_number}c{i}")
                     for i, node in enumerate(followers * CLIENTS_PER_FOLLOWER)]
            clients += batch
            for client in batch:
                client.thread.start()
            wait_until(lambda b=batch: all(x.pipelines >= 2 for x in b), 60,
                       "every client to get pipelines through")
            before = sum(x.pipelines for x in batch)
            executing = sum(x.executing for x in batch)
            c.kill(leader, signal.SIGKILL)
            wait_until(lambda b=batch, n=before: sum(x.pipelines for x in b) >= n + 8, 60,
                       "pipelines to go through the new leader")
            for client in batch:
                client.stop.set()
            for client in batch:
                client.thread.join(60)
            assert not any(x.thread.is_alive() for x in batch), "clients did not stop"
            report.append(f"round {round_number}: killed {leader.id} with {executing} of "
                          f"{len(batch)} pipelines in flight")
            c.restart(leader)
            c.wait_converged()
        reader = c.client(c.nodes[0], decode_responses=True, timeout=30)
        counter = int(reader.get("counter") or 0)
        ids = reader.lrange("ids", 0, -1)
    finally:
        for client in clients:
            client.stop.set()
    acked = [value for x in clients for value in x.acked_incr]
    unacked = sum(x.unacked_incr for x in clients)
    errors: Counter[str] = Counter()
    for client in clients:
        errors.update(client.errors)
    acked_ids = [i for x in clients for i in x.acked_ids]
    print(f"{report}; counter {counter}, {len(acked)} INCRs acknowledged, {unacked} not; "
          f"{len(ids)} ids, {len(acked_ids)} acknowledged; errors {dict(errors)}")
    duplicated = [i for i, n in Counter(ids).items() if n > 1]
    assert duplicated == [], f"RPUSH applied twice: {duplicated[:10]}"
    assert len(set(acked)) == len(acked), "two INCRs acknowledged with the same value"
    assert len(acked) <= counter <= len(acked) + unacked, (counter, len(acked), unacked)
    assert not set(acked_ids) - set(ids), "an acknowledged RPUSH is missing"
    assert len(ids) <= len(acked_ids) + sum(x.unacked_ids for x in clients)

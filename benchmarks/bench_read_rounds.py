"""ReadIndex rounds per read, and reads per unit of network delay, for each
`read_rounds_in_flight`: closed-loop readers against the real Raft core, no clock.

    .venv/bin/python benchmarks/bench_read_rounds.py [--clients 50] [--hops 400]

A 3-voter group on the in-memory harness (`phalanx.testing.raft_harness`), n1 leading. One step
is one network hop: every queued message is delivered once per step (a heartbeat round takes
two: out and back). Each of `--clients` readers makes a linearizable read (`read_index`, diss.
§6.4) on the leader, and `client hops` (+ a seeded random jitter of 0..J hops) after its answer
the next one: a closed loop, as redis-benchmark's clients. Reported per setting: the reads
answered in `--hops` steps (more = lower latency per read where the network, not CPU, is the
limit) and the heartbeats sent per read (the CPU every round costs the leader and followers).

Rules of this file:
- A measurement, not a test: no threshold. Deterministic (seeded): the same figures every run,
  whatever the machine's load.
"""

from __future__ import annotations

import argparse
import random

from phalanx.raft import Heartbeat
from phalanx.testing.raft_harness import Network


def run(in_flight: int, clients: int, hops: int, client_hops: int, jitter: int,
        seed: int = 7) -> tuple[int, int]:
    """(reads answered, heartbeats sent) in `hops` steps."""
    rng = random.Random(seed)
    net = Network.create(3, read_rounds_in_flight=in_flight)
    net.elect("n1")
    net.tick_all(1)
    leader = net.nodes["n1"]
    due = {client: rng.randint(0, 4) for client in range(clients)}  # staggered starts
    waiting: dict[bytes, int] = {}
    answered = heartbeats = seen = 0
    for step in range(hops):
        for client, at in list(due.items()):
            if at == step:
                del due[client]
                context = f"{client}:{step}".encode()
                leader.read_index(context)
                waiting[context] = client
        net.process_all()
        states = net.read_states["n1"][seen:]
        seen += len(states)
        for state in states:
            client = waiting.pop(state.context)
            answered += 1
            due[client] = step + client_hops + rng.randint(0, jitter)
        heartbeats += sum(1 for m in net.queue if isinstance(m, Heartbeat))
        net.deliver()
    return answered, heartbeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--hops", type=int, default=400)
    args = parser.parse_args()
    print(f"{args.clients} closed-loop readers, {args.hops} hops, heartbeat round = 2 hops\n")
    print("| client round trip (hops) | rounds in flight | reads answered | vs 1 in flight "
          "| heartbeats per read |")
    print("|---|---|---|---|---|")
    for client_hops, jitter in ((1, 0), (1, 1), (1, 3), (2, 0), (2, 1), (2, 3), (3, 1)):
        base = 0
        for in_flight in (1, 2, 3):
            answered, heartbeats = run(in_flight, args.clients, args.hops, client_hops, jitter)
            base = base or answered
            print(f"| {client_hops} + 0..{jitter} | {in_flight} | {answered} | "
                  f"{answered / base:.3f}x | {heartbeats / answered:.3f} |")


if __name__ == "__main__":
    main()

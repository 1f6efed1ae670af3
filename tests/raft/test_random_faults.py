"""Seeded random faults against the safety properties of Figure 3 (§5.2 Election Safety, §5.3
Log Matching, §5.4 Leader Completeness / State Machine Safety), then liveness once healed.

The deterministic simulator (phalanx.sim) covers this at scale; this small version keeps the
properties next to the paper tests and runs in a couple of seconds.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections import deque

import pytest

from phalanx.errors import NotLeader, ProposalDropped
from phalanx.raft import Entry, Message, NodeId, Role
from phalanx.testing.raft_harness import Network


class SafetyChecker:
    """Remembers every leader per term and every applied entry per index."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.leader_of_term: dict[int, NodeId] = {}
        self.applied_at: dict[int, Entry] = {}
        self.cursor: dict[NodeId, int] = {}

    def restarted(self, node: NodeId) -> None:
        self.cursor[node] = 0

    def check(self) -> None:
        for node, raw in self.net.nodes.items():
            if raw.raft.role is Role.LEADER:
                term = raw.raft.term
                other = self.leader_of_term.setdefault(term, node)
                assert other == node, f"two leaders in term {term}: {other} and {node}"
            entries = self.net.applied_entries[node]
            for entry in entries[self.cursor.get(node, 0):]:
                seen = self.applied_at.setdefault(entry.index, entry)
                assert seen == entry, f"{node} applied {entry} where {seen} was applied"
            self.cursor[node] = len(entries)


def lossy_round(net: Network, rng: random.Random, loss: float) -> None:
    """Deliver what is queued with loss, reordering and duplication."""
    net.process_all()
    batch = [m for m in net.queue if rng.random() >= loss]
    extra: list[Message] = [m for m in batch if rng.random() < 0.05]
    batch.extend(extra)
    rng.shuffle(batch)
    net.queue = deque(batch)
    net.deliver()
    net.process_all()


@pytest.mark.parametrize("seed", range(int(os.environ.get("PHALANX_RAFT_FUZZ_SEEDS", "12"))))
def test_random_partitions_crashes_and_loss_keep_raft_safe(seed: int) -> None:
    """Figure 3: Election Safety, Log Matching, Leader Completeness and State Machine Safety hold
    under partitions, message loss, reordering, duplication and restarts (§5.2-§5.4); once
    healed, a leader emerges and every replica applies the same entries (§5.2 liveness)."""
    rng = random.Random(seed)
    net = Network.create(5, seed=seed, max_inflight_messages=4, max_message_bytes=64)
    checker = SafetyChecker(net)
    names = sorted(net.nodes)
    proposed = 0
    for _step in range(400):
        action = rng.random()
        if action < 0.05:
            net.isolate(rng.choice(names))
        elif action < 0.10:
            net.cut(rng.choice(names), rng.choice(names))
        elif action < 0.14:
            net.recover()
        elif action < 0.16:
            node = NodeId(rng.choice(names))
            net.queue = deque(m for m in net.queue if m.source != node)  # unsent messages die
            net.restart(node)
            checker.restarted(node)
        elif action < 0.17:
            node = NodeId(rng.choice(names))
            if net.nodes[node].raft.log.applied > 0:
                net.compact(node)
        elif action < 0.19 and (leader := net.leader()) is not None:
            with contextlib.suppress(NotLeader):
                net.nodes[leader].transfer_leader(NodeId(rng.choice(names)))
        elif action < 0.45 and (leader := net.leader()) is not None:
            try:
                net.nodes[leader].propose(b"%d" % proposed)
                proposed += 1
            except (NotLeader, ProposalDropped):
                pass
        for node in names:
            net.nodes[NodeId(node)].tick()
        lossy_round(net, rng, loss=0.1)
        checker.check()
    # Liveness: heal everything; a leader emerges and every replica converges.
    net.recover()
    net.tick_all(60)
    checker.check()
    leader = net.leader()
    assert leader is not None
    net.propose(leader, b"final")
    net.tick_all(3)
    checker.check()
    assert all(net.applied[n][-1:] == [b"final"] for n in net.nodes), net.applied
    # Log Matching (§5.3): same index and term at the end means identical logs before it.
    ends = {(raw.raft.log.last_index(), raw.raft.log.last_term()) for raw in net.nodes.values()}
    assert len(ends) == 1

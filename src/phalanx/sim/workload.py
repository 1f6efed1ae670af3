"""The client workload of a simulated run: reads, writes and compare-and-sets against the
cluster, recorded in a `History` that the linearizability checker judges at the end.

Rules of this file:
- Every operation is invoked and completed in the history with the simulated time: ok with its
  result, fail when it certainly did not happen, info when it may or may not have (timeouts,
  crashes, snapshots that replaced it).
- Clients draw only from the client stream (`random.Random(f"{seed}/clients")`).
- Operations with a negative id are the bank's (bank.py): they stay out of the history and
  reach bank.py through the `_client_bank`, `_on_bank_applied`, `_on_entry_applied` and
  `_serve_bank_read` hooks.
"""

from __future__ import annotations

from collections.abc import Callable

from phalanx.checker import History
from phalanx.errors import NotLeader, ProposalDropped, require
from phalanx.kv import Command, encode_command
from phalanx.kv.codec import Transaction, Watch, encode_transaction
from phalanx.raft import Entry, NodeId, ReadState, Role
from phalanx.sim.checks import CheckedCluster
from phalanx.sim.faults import FaultPlan
from phalanx.sim.model import EV_CLIENT, EV_TIMEOUT, ClientOp, SimNode

CLIENT_TIMEOUT_MS = 600
#: The share of client operations that are bank operations (bank.py).
BANK_SHARE = 0.25


class Workload(CheckedCluster):
    """A checked cluster with clients."""

    def __init__(
        self,
        seed: int,
        plan: FaultPlan,
        *,
        trace: Callable[[str], None] | None = None,
        bug: str | None = None,
    ) -> None:
        super().__init__(seed, plan, trace=trace, bug=bug)
        # Workload state.
        self.history = History()
        self.ops: dict[int, ClientOp] = {}
        self.client_busy: dict[int, int] = {}
        self.client_leader_hint: dict[int, NodeId] = {}
        self.write_counter = 0
        self.keys = [f"k{i}".encode() for i in range(plan.key_count)]
        self.last_written: dict[bytes, bytes] = {}
        #: A leader the nemesis cut off from its peers (simulator.py); clients keep reading
        #: from it and write through the others.
        self.isolated_leader: NodeId | None = None

    def _on_client(self, client: int) -> None:
        if self.liveness:
            return
        self._schedule(self.now + self.client_rng.uniform(5, 60), EV_CLIENT, client)
        if client in self.client_busy:
            return
        rng = self.client_rng
        hint = self.client_leader_hint.get(client)
        target = hint if hint is not None and rng.random() < 0.8 else rng.choice(self.node_ids)
        key = rng.choice(self.keys)
        roll = rng.random()
        isolated = self.isolated_leader
        if isolated is not None:
            # Reads go to the isolated (soon deposed) leader; writes go around it.
            if roll < 0.4:
                target = isolated
            elif target == isolated:
                target = rng.choice([n for n in self.node_ids if n != isolated])
        node = self.nodes[target]
        if not node.alive or node.raw is None:
            self.client_leader_hint.pop(client, None)
            return
        if rng.random() < BANK_SHARE:
            self._client_bank(client, node)
            return
        if roll < 0.4:
            self._client_read(client, node, key)
        elif roll < 0.8 or key not in self.last_written:
            self.write_counter += 1
            value = f"v{self.write_counter}".encode()
            self._client_write(client, node, key, value, None)
        else:
            self.write_counter += 1
            value = f"v{self.write_counter}".encode()
            self._client_write(client, node, key, value, self.last_written[key])

    def _client_write(
        self, client: int, node: SimNode, key: bytes, value: bytes, expected: bytes | None
    ) -> None:
        raw = node.raw
        assert raw is not None
        kind = "write" if expected is None else "cas"
        op_id = self.history.invoke(
            client, kind, key, value=value, expected=expected, time=self.now
        )
        op = ClientOp(op_id=op_id, client=client, kind=kind, key=key, node=node.id, value=value,
                 expected=expected)
        args = (key, value) if expected is None else (key, value, b"IFEQ", expected)
        data = encode_command(Command(name=b"SET", args=args, now_ms=int(self.now)))
        if expected is not None and self.write_counter % 2 == 0:
            # Every other cas is a transaction watching its key from the proposer's local state
            # (possibly stale: then it aborts, and was certainly not applied).
            op.transaction = True
            watched = node.machine.read(b"PHALANX.WATCH", (key,), int(self.now))
            version = watched[0] if isinstance(watched, list) else None
            require(isinstance(version, int), f"PHALANX.WATCH answered {watched!r}")
            assert isinstance(watched, list) and isinstance(version, int)
            payload = encode_transaction(Transaction(
                (Watch(key, version, bool(watched[1])),), ((b"SET", *args),)))
            data = encode_command(Command(name=b"PHALANX.EXEC", args=(payload, key),
                                          now_ms=int(self.now)))
        try:
            index, term = raw.propose(data)
        except (NotLeader, ProposalDropped) as error:
            if isinstance(error, NotLeader) and error.leader_hint:
                self.client_leader_hint[client] = NodeId(error.leader_hint)
            self.history.fail(op_id, time=self.now)
            return
        op.index, op.term = index, term
        node.proposals[index] = op
        self.ops[op_id] = op
        self.client_busy[client] = op_id
        self.last_written[key] = value
        self._schedule(self.now + CLIENT_TIMEOUT_MS, EV_TIMEOUT, op_id)
        self._process(node)

    def _client_read(self, client: int, node: SimNode, key: bytes) -> None:
        raw = node.raw
        assert raw is not None
        op_id = self.history.invoke(client, "read", key, time=self.now)
        op = ClientOp(op_id=op_id, client=client, kind="read", key=key, node=node.id)
        context = f"r{op_id}".encode()
        if self.bug == "read-without-confirm" and raw.role is Role.LEADER:
            # Deliberate bug: a leader answers from its local state without confirming it
            # still leads (no ReadIndex round, no lease).
            self.ops[op_id] = op
            self.client_busy[client] = op_id
            op.read_index = raw.committed
            node.waiting_reads.append(op)
            self._serve_reads(node)
            return
        try:
            raw.read_index(context)
        except NotLeader:
            self.history.fail(op_id, time=self.now)
            return
        self.ops[op_id] = op
        self.client_busy[client] = op_id
        node.reads[context] = op
        self._schedule(self.now + CLIENT_TIMEOUT_MS, EV_TIMEOUT, op_id)
        self._process(node)

    def _serve_reads(self, node: SimNode) -> None:
        raw = node.raw
        if raw is None or not node.waiting_reads:
            return
        applied = raw.applied
        still: list[ClientOp] = []
        for op in node.waiting_reads:
            if op.read_index <= applied and op.op_id < 0:
                self._serve_bank_read(node, op)
                self._finish(op)
            elif op.read_index <= applied:
                reply = node.machine.read(b"GET", (op.key,), int(self.now))
                if op.op_id in self.ops:
                    self._complete_read(op, reply)
            else:
                still.append(op)
        node.waiting_reads = still

    def _finish(self, op: ClientOp) -> bool:
        if self.ops.pop(op.op_id, None) is None:
            return False
        if self.client_busy.get(op.client) == op.op_id:
            del self.client_busy[op.client]
        return True

    def _complete_write(self, op: ClientOp, reply: object) -> None:
        if op.op_id < 0:
            self._finish(op)  # a bank operation: not in the history
            return
        if not self._finish(op):
            return
        self.client_leader_hint[op.client] = op.node
        if op.transaction:
            if isinstance(reply, list):
                self.history.ok(op.op_id, reply == ["OK"], time=self.now)
            else:
                self.history.fail(op.op_id, time=self.now)  # a watched key changed: not applied
        elif op.kind == "cas":
            self.history.ok(op.op_id, reply == "OK", time=self.now)
        else:
            self.history.ok(op.op_id, time=self.now)

    def _complete_read(self, op: ClientOp, reply: object) -> None:
        if op.op_id < 0:
            self._finish(op)  # a bank operation: not in the history
            return
        if not self._finish(op):
            return
        value = reply if isinstance(reply, bytes) else None
        self.history.ok(op.op_id, value, time=self.now)

    def _complete_fail(self, op: ClientOp) -> None:
        if op.op_id < 0:
            self._finish(op)  # a bank operation: not in the history
            return
        if self._finish(op):
            self.history.fail(op.op_id, time=self.now)

    def _complete_info(self, op: ClientOp) -> None:
        if op.op_id < 0:
            self._finish(op)  # a bank operation: not in the history
            return
        if self._finish(op):
            self.history.info(op.op_id, time=self.now)

    def _on_client_timeout(self, op_id: int) -> None:
        op = self.ops.get(op_id)
        if op is None:
            return
        node = self.nodes[op.node]
        if op.kind != "read":
            node.proposals.pop(op.index, None)
        node.reads = {c: o for c, o in node.reads.items() if o.op_id != op_id}
        node.waiting_reads = [o for o in node.waiting_reads if o.op_id != op_id]
        self._complete_info(op)

    # -- what the cluster reports ------------------------------------------------------------
    def _on_applied(self, node: SimNode, entry: Entry, reply: object) -> None:
        self._on_entry_applied(node, entry, reply)
        op = node.proposals.pop(entry.index, None)
        if op is not None and op.op_id < 0 and op.term == entry.term:
            self._on_bank_applied(node, op, reply)
        if op is not None:
            if op.term == entry.term:
                self._complete_write(op, reply)
            else:
                self._complete_fail(op)  # overwritten: it can never commit (§5.3)

    def _on_read_state(self, node: SimNode, state: ReadState) -> None:
        read_op = node.reads.pop(state.context, None)
        if read_op is None:
            return
        if not state.ok:
            self._complete_fail(read_op)
        else:
            read_op.read_index = state.index
            node.waiting_reads.append(read_op)

    def _on_snapshot_restored(self, node: SimNode, index: int) -> None:
        for proposed, op in list(node.proposals.items()):
            if proposed <= index:
                del node.proposals[proposed]
                self._complete_info(op)

    # -- hooks for the bank (bank.py) ---------------------------------------------------------
    def _client_bank(self, client: int, node: SimNode) -> None:
        """Issue one bank operation (bank.py)."""

    def _on_bank_applied(self, node: SimNode, op: ClientOp, reply: object) -> None:
        """The proposer of bank operation `op` applied it with `reply` (bank.py)."""

    def _on_entry_applied(self, node: SimNode, entry: Entry, reply: object) -> None:
        """`node` applied `entry` with `reply` (bank.py checks the script cache)."""

    def _serve_bank_read(self, node: SimNode, op: ClientOp) -> None:
        """Serve a whole-bank read whose index `node` applied (bank.py)."""

    def _on_crashed(self, node: SimNode) -> None:
        for op in list(node.proposals.values()) + list(node.reads.values()) + node.waiting_reads:
            self._complete_info(op)
        node.proposals.clear()
        node.reads.clear()
        node.waiting_reads.clear()

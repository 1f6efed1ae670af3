"""The bank part of the simulated workload: transfers through MULTI/EXEC with WATCH and through
Lua scripts (EVAL, EVALSHA), and reads of every account, against the real state machine
(kv/transaction.py, kv/commands/scripts.py, kv/scripting.py) under every fault.

Rules of this file:
- Accounts start empty (0) and every transfer moves an amount from one account to another, so
  the balances always sum to 0. Every read of all accounts (one linearizable read, served at
  one applied index) must sum to 0, and so must every replica's state at the end: a
  transaction or script applied in part, twice on one replica, or a WATCH that missed a change
  (the transactional transfer SETs balances it read, trusting WATCH) breaks the sum.
- The script cache is replicated state: once an EVAL of the transfer script is applied, no
  later EVALSHA of it may answer NOSCRIPT (the leader changed, a snapshot was installed...).
- A transaction's reply is checked against its model: EXEC answers ["OK", "OK"] or, when a
  watched account changed, None (and then nothing was applied); a script answers the two new
  balances.
- Bank operations are not register operations: they stay out of the linearizability history
  (workload.py) and are checked here. Draws come from the client stream only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from phalanx.errors import NotLeader, PhalanxError, ProposalDropped
from phalanx.kv import Command, encode_command
from phalanx.kv.codec import Transaction, Watch, decode_command, encode_transaction
from phalanx.raft import Entry, NodeId
from phalanx.sim.faults import FaultPlan
from phalanx.sim.model import EV_TIMEOUT, ClientOp, SimNode
from phalanx.sim.workload import CLIENT_TIMEOUT_MS, Workload

ACCOUNTS = (b"acct:0", b"acct:1", b"acct:2")
#: Transfer ARGV[1] from KEYS[1] to KEYS[2]; answers the new balances.
TRANSFER_SCRIPT = (
    b"local a = tonumber(redis.call('GET', KEYS[1]) or '0') "
    b"local b = tonumber(redis.call('GET', KEYS[2]) or '0') "
    b"local x = tonumber(ARGV[1]) "
    b"redis.call('SET', KEYS[1], a - x) "
    b"redis.call('SET', KEYS[2], b + x) "
    b"return {a - x, b + x}"
)
TRANSFER_SHA = hashlib.sha1(TRANSFER_SCRIPT).hexdigest().encode()
BANK_KINDS = frozenset({"tx-transfer", "eval-transfer", "evalsha-transfer", "bank-read"})


class BankWorkload(Workload):
    """The workload with bank transfers and whole-bank reads."""

    def __init__(
        self,
        seed: int,
        plan: FaultPlan,
        *,
        trace: Callable[[str], None] | None = None,
        bug: str | None = None,
    ) -> None:
        super().__init__(seed, plan, trace=trace, bug=bug)
        #: op id -> bank operation in flight (kept apart from the register history).
        self.bank_ops: dict[int, ClientOp] = {}
        self.bank_counter = 0
        #: The lowest log index at which an EVAL of the transfer script was applied.
        self.script_cached_at: int | None = None
        self.bank_stats = {"tx-committed": 0, "tx-aborted": 0, "script-ok": 0,
                           "noscript": 0, "bank-reads": 0}

    # -- issuing -----------------------------------------------------------------------------
    def _client_bank(self, client: int, node: SimNode) -> None:
        """One bank operation from `client` on `node` (called by `Workload._on_client`)."""
        rng = self.client_rng
        roll = rng.random()
        if roll < 0.3:
            self._bank_read(client, node)
            return
        source, target = rng.sample(ACCOUNTS, 2)
        amount = rng.randrange(1, 20)
        if roll < 0.6:
            self._transfer_tx(client, node, source, target, amount)
        else:
            sha = roll < 0.85
            self._transfer_script(client, node, source, target, amount, sha=sha)

    def _bank_op(self, client: int, node: SimNode, kind: str) -> ClientOp:
        self.bank_counter += 1
        # Negative ids: never confused with the register history's.
        return ClientOp(op_id=-self.bank_counter, client=client, kind=kind, key=ACCOUNTS[0],
                        node=node.id)

    def _transfer_tx(self, client: int, node: SimNode, source: bytes, target: bytes,
                     amount: int) -> None:
        # WATCH both accounts at the proposer's (possibly stale) state, read them there, and
        # SET the new balances: only a correct WATCH keeps the sum when the state was stale.
        now = int(self.now)
        watched = node.machine.read(b"PHALANX.WATCH", (source, target), now)
        assert isinstance(watched, list) and isinstance(watched[0], int)
        balances = node.machine.read(b"MGET", (source, target), now)
        assert isinstance(balances, list)
        old_source, old_target = (int(b) if isinstance(b, bytes) else 0 for b in balances)
        watches: tuple[Watch, ...] = (Watch(source, watched[0], bool(watched[1])),
                   Watch(target, watched[0], bool(watched[2])))
        if self.bug == "tx-without-watch":
            watches = ()  # planted bug: the transfer trusts balances nobody watches
        payload = encode_transaction(Transaction(
            watches,
            ((b"SET", source, str(old_source - amount).encode()),
             (b"SET", target, str(old_target + amount).encode())),
        ))
        data = encode_command(Command(name=b"PHALANX.EXEC", args=(payload, source, target),
                                      now_ms=now))
        self._propose_bank(node, self._bank_op(client, node, "tx-transfer"), data)

    def _transfer_script(self, client: int, node: SimNode, source: bytes, target: bytes,
                         amount: int, *, sha: bool) -> None:
        kind = "evalsha-transfer" if sha else "eval-transfer"
        head = TRANSFER_SHA if sha else TRANSFER_SCRIPT
        data = encode_command(Command(
            name=b"EVALSHA" if sha else b"EVAL",
            args=(head, b"2", source, target, str(amount).encode()), now_ms=int(self.now)))
        self._propose_bank(node, self._bank_op(client, node, kind), data)

    def _propose_bank(self, node: SimNode, op: ClientOp, data: bytes) -> None:
        raw = node.raw
        assert raw is not None
        try:
            index, term = raw.propose(data)
        except (NotLeader, ProposalDropped) as error:
            if isinstance(error, NotLeader) and error.leader_hint:
                self.client_leader_hint[op.client] = NodeId(error.leader_hint)
            return
        op.index, op.term = index, term
        node.proposals[index] = op
        self.bank_ops[op.op_id] = op
        self.ops[op.op_id] = op
        self.client_busy[op.client] = op.op_id
        self._schedule(self.now + CLIENT_TIMEOUT_MS, EV_TIMEOUT, op.op_id)
        self._process(node)

    def _bank_read(self, client: int, node: SimNode) -> None:
        raw = node.raw
        assert raw is not None
        op = self._bank_op(client, node, "bank-read")
        context = f"b{-op.op_id}".encode()
        try:
            raw.read_index(context)
        except NotLeader:
            return
        self.bank_ops[op.op_id] = op
        self.ops[op.op_id] = op
        self.client_busy[client] = op.op_id
        node.reads[context] = op
        self._schedule(self.now + CLIENT_TIMEOUT_MS, EV_TIMEOUT, op.op_id)
        self._process(node)

    # -- checking ----------------------------------------------------------------------------
    def _serve_bank_read(self, node: SimNode, op: ClientOp) -> None:
        """Serve a whole-bank read on `node` (its read index is applied): the sum must be 0."""
        reply = node.machine.read(b"MGET", ACCOUNTS, int(self.now))
        assert isinstance(reply, list)
        total = sum(int(b) if isinstance(b, bytes) else 0 for b in reply)
        self.bank_stats["bank-reads"] += 1
        if total != 0:
            self._fail(f"bank: a read on {node.id} at applied index "
                       f"{node.raw.applied if node.raw else '?'} sees balances {reply!r} "
                       f"summing to {total}, not 0")

    def _on_entry_applied(self, node: SimNode, entry: Entry, reply: object) -> None:
        """Check the script cache as `node` applies any entry (every replica): once an EVAL
        of the transfer script applied, no later EVALSHA of it answers NOSCRIPT."""
        text = getattr(reply, "message", None)
        noscript = isinstance(text, str) and text.startswith("NOSCRIPT")
        if not noscript and not (isinstance(reply, list) and len(reply) == 2):
            return
        try:
            command = decode_command(entry.data)
        except PhalanxError:
            return
        if noscript and command.name == b"EVALSHA":
            cached = self.script_cached_at
            if cached is not None and cached < entry.index:
                self._fail(f"bank: EVALSHA at index {entry.index} on {node.id} answered "
                           f"NOSCRIPT although EVAL cached the script at index {cached}")
        elif command.name == b"EVAL" and command.args[:1] == (TRANSFER_SCRIPT,) and (
                self.script_cached_at is None or entry.index < self.script_cached_at):
            self.script_cached_at = entry.index

    def _on_bank_applied(self, node: SimNode, op: ClientOp, reply: object) -> None:
        """Check the reply the proposer of a bank entry gets against the model."""
        kind = op.kind
        if kind == "tx-transfer":
            if reply is None:
                self.bank_stats["tx-aborted"] += 1
            elif reply == ["OK", "OK"]:
                self.bank_stats["tx-committed"] += 1
            else:
                self._fail(f"bank: EXEC of a transfer answered {reply!r} on {node.id}")
            return
        text = getattr(reply, "message", None)
        if isinstance(text, str) and text.startswith("NOSCRIPT") and kind == "evalsha-transfer":
            self.bank_stats["noscript"] += 1  # (a client would now send EVAL)
        elif isinstance(reply, list) and len(reply) == 2 and all(
                isinstance(x, int) for x in reply):
            self.bank_stats["script-ok"] += 1
        else:
            self._fail(f"bank: a transfer script answered {reply!r} on {node.id}")

    def _check_bank_replicas(self) -> None:
        """At the end: every live replica's accounts sum to 0."""
        for node_id in self.node_ids:
            node = self.nodes[node_id]
            if node.raw is None:
                continue
            reply = node.machine.read(b"MGET", ACCOUNTS, int(self.now))
            assert isinstance(reply, list)
            total = sum(int(b) if isinstance(b, bytes) else 0 for b in reply)
            if total != 0:
                self._fail(f"bank: replica {node_id} ends with balances {reply!r} summing to "
                           f"{total}, not 0")


__all__ = ["ACCOUNTS", "BANK_KINDS", "TRANSFER_SCRIPT", "BankWorkload"]

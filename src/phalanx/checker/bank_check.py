"""The bank invariant: N accounts with a known total, moved between by atomic transfers
(MULTI/EXEC under WATCH, or a Lua script); every read of all the accounts at once must sum to
the total and show no negative balance.

Rules of this file:
- Pure: plain values in, a frozen `BankCheck` out; no clocks, no I/O.
- A read is (time, balances), one balance per account, None where the account was missing
  (a missing account is a violation: every account exists before the first transfer).
- A transfer is atomic, so an aborted or unknown-outcome transfer never breaks the sum: any
  read that does not sum to the total is a failure, whatever the clients saw.
- Only transfers that checked the balance first run, so a negative balance is a failure too.
- The final reads (one per node, after healing) are checked the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: How many violating reads the report keeps (the counts are always complete).
SAMPLE = 10

Balances = Sequence[int | None]


@dataclass(frozen=True, slots=True)
class SumViolation:
    at_s: float | None  # None for a final read
    where: str  # "read" or the node of a final read
    balances: tuple[int | None, ...]
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"at_s": None if self.at_s is None else round(self.at_s, 3),
                "where": self.where, "balances": list(self.balances), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class BankCheck:
    total: int
    reads: int
    violations: tuple[SumViolation, ...]
    final_reads: int
    final_violations: tuple[SumViolation, ...]
    transfers: Mapping[str, int]  # outcome counts, passed through for the report

    @property
    def ok(self) -> bool:
        return not self.violations and not self.final_violations and self.final_reads > 0

    def problems(self) -> list[str]:
        found = [f"{len(self.violations)} of {self.reads} reads broke the invariant (first: "
                 f"{self.violations[0].reason})"] if self.violations else []
        if self.final_violations:
            found.append(f"{len(self.final_violations)} final reads broke the invariant "
                         f"(first: {self.final_violations[0].reason})")
        if self.final_reads == 0:
            found.append("no node answered the final read of the accounts")
        return found

    def to_json(self) -> dict[str, object]:
        return {"workload": "bank", "ok": self.ok, "total": self.total, "reads": self.reads,
                "sum_violations": len(self.violations), "final_reads": self.final_reads,
                "final_violations": len(self.final_violations),
                "transfers": dict(self.transfers),
                "examples": [v.to_json() for v in
                             (*self.violations[:SAMPLE], *self.final_violations[:SAMPLE])],
                "problems": self.problems()}


def read_violation(total: int, balances: Balances) -> str | None:
    """Why one read of every account breaks the invariant, or None when it holds."""
    if any(b is None for b in balances):
        missing = sum(1 for b in balances if b is None)
        return f"{missing} account(s) missing"
    known = [b for b in balances if b is not None]
    if sum(known) != total:
        return f"sum {sum(known)} != {total}"
    negative = [b for b in known if b < 0]
    if negative:
        return f"negative balance {negative[0]}"
    return None


def check_bank(total: int, reads: Iterable[tuple[float, Balances]],
               final: Mapping[str, Balances | None],
               transfers: Mapping[str, int] | None = None) -> BankCheck:
    """Every read (time, balances) during the run and the final read per node (None: the node
    did not answer, not counted)."""
    count = 0
    violations = []
    for at, balances in reads:
        count += 1
        reason = read_violation(total, balances)
        if reason is not None:
            violations.append(SumViolation(at, "read", tuple(balances), reason))
    finals = []
    answered = 0
    for node, answer in sorted(final.items()):
        if answer is None:
            continue
        answered += 1
        reason = read_violation(total, answer)
        if reason is not None:
            finals.append(SumViolation(None, node, tuple(answer), reason))
    return BankCheck(total=total, reads=count, violations=tuple(violations),
                     final_reads=answered, final_violations=tuple(finals),
                     transfers=dict(transfers or {}))

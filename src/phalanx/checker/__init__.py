"""phalanx.checker: a linearizability checker for per-key register histories, and a lost-write
counter for set workloads,
and the accounting of the chaos lab's queue, bank and stream workloads, and the model of the
active-active merge rules (`aa_check`). Used by the deterministic simulator and by the chaos lab.

Rules of this package:
- Pure: standard library only; never imports asyncio, socket, time, threading, sqlite3, or
  module-level random. No clocks: times come in with the history.
- Deterministic: the same history and budget give the same verdict, report and step count.
- Never a false verdict: a search that runs out of budget says "unknown (budget exceeded)".

Quick use::

    h = History()
    w = h.invoke(1, "write", "k", value=b"a", time=0); h.ok(w, time=2)
    r = h.invoke(2, "read", "k", time=3);              h.ok(r, None, time=4)
    result = check(h)          # not linearizable: the read missed a completed write
    print(result.explain())
"""

from phalanx.checker.bank_check import BankCheck, check_bank
from phalanx.checker.check import DEFAULT_MAX_STEPS, check, check_key
from phalanx.checker.history import (
    History,
    Key,
    Operation,
    OpKind,
    Outcome,
    Output,
    Process,
    Value,
)
from phalanx.checker.lost_writes import check_lost_writes
from phalanx.checker.queue_check import QueueCheck, check_queue
from phalanx.checker.result import CheckResult, KeyResult, Verdict
from phalanx.checker.stream_check import (
    Ack,
    Delivery,
    FinalState,
    Produce,
    StreamCheck,
    check_stream,
)
from phalanx.errors import InvalidHistory

__all__ = [
    "DEFAULT_MAX_STEPS",
    "Ack",
    "BankCheck",
    "CheckResult",
    "Delivery",
    "FinalState",
    "History",
    "InvalidHistory",
    "Key",
    "KeyResult",
    "OpKind",
    "Operation",
    "Outcome",
    "Output",
    "Process",
    "Produce",
    "QueueCheck",
    "StreamCheck",
    "Value",
    "Verdict",
    "check",
    "check_bank",
    "check_key",
    "check_lost_writes",
    "check_queue",
    "check_stream",
]

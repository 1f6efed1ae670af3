"""What the checker says: a verdict per key, an overall verdict, and an explanation.

Rules of this file:
- Plain frozen dataclasses; no search logic here (see `search.py`, `check.py`).
- The overall verdict is "not linearizable" if any key is (a definite violation wins), else
  "unknown (budget exceeded)" if any key ran out of steps, else "linearizable". `ok` is True
  only for "linearizable".
- Keys are reported in the order they first appear in the history; output is deterministic.
- On a violation, a key result carries what Porcupine reports: the longest linearizable prefix
  found, the operation that could not be linearized next (`blocked`), and a small window around
  it: `blocked`, the operations concurrent with it (any of which could have been ordered around
  it), and the operation that set the state it had to agree with. `explain()` prints that window
  as a timeline, so a reader can see the contradiction without reading the whole history.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from phalanx.checker.history import Key, Operation, OpKind, Output, Value, show_key, show_value


class Verdict(enum.StrEnum):
    """The answer for a key or a whole history."""

    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown (budget exceeded)"


_WINDOW_LINES = 40
"""At most this many window lines are printed by `explain()`; the data keeps all of them."""


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key (one register).

    - `operations`: how many operations were searched; `excluded`: how many were left out
      because they cannot constrain the order (`fail` ops, `info` reads, and `info` writes whose
      value nobody could have observed, which are equivalent to never taking effect).
    - `linearization`: a full linearization when linearizable; otherwise the longest
      linearizable prefix found. `state` is the register value after it.
    - `blocked`: the operation that could not be linearized after that prefix (violations only).
    - `window`: the operations to look at, in invoke order (violations only).
    - `state_source`: the prefix operation that set `state` (None: the initial value).
    - `state_witness`: the last prefix operation that observed `state` after it was set.
    - `needed_writer`: the last operation that wrote the value `blocked` needed (a read's
      result, a cas's expected value), if any was invoked before `blocked` returned.
    - `steps`: search steps taken (compare with the budget).
    """

    key: Key
    verdict: Verdict
    operations: int
    excluded: int
    steps: int
    linearization: tuple[Operation, ...]
    state: Value
    blocked: Operation | None = None
    window: tuple[Operation, ...] = ()
    state_source: Operation | None = None
    state_witness: Operation | None = None
    needed_writer: Operation | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.LINEARIZABLE

    def summary(self) -> str:
        """One line: key, verdict, sizes."""
        return (
            f"key {show_key(self.key)}: {self.verdict} "
            f"({self.operations} ops checked, {self.excluded} excluded, {self.steps} steps)"
        )

    def explain(self) -> str:
        """A readable account of this key's verdict; for a violation, the window as a timeline."""
        lines = [self.summary()]
        if self.verdict is Verdict.UNKNOWN:
            lines.append(
                f"  the search gave up after {self.steps} steps; the longest linearizable "
                f"prefix found has {len(self.linearization)} of {self.operations} operations. "
                "Raise max_steps or shorten the history."
            )
        if self.verdict is not Verdict.NOT_LINEARIZABLE or self.blocked is None:
            return "\n".join(lines)
        blocked = self.blocked
        prefix_ids = {op.op_id for op in self.linearization}
        lines.append(
            f"  the longest linearizable prefix has {len(self.linearization)} of "
            f"{self.operations} operations and leaves the register at {show_value(self.state)}"
            + (
                f" (set by #{self.state_source.op_id})"
                if self.state_source is not None
                else " (its initial value)"
            )
            + ";"
        )
        lines.append(
            f"  after it, #{blocked.op_id} cannot be linearized before it returns, "
            "in any order of the operations concurrent with it."
        )
        needed = _needed_value(blocked)
        if self.needed_writer is not None:
            overwritten = self.needed_writer.op_id in prefix_ids and (
                self.state_source is None or self.needed_writer.op_id != self.state_source.op_id
            )
            lines.append(
                f"  it needs the value {show_value(needed)}, last written by "
                f"#{self.needed_writer.op_id}"
                + (", which the prefix had already overwritten." if overwritten else ".")
            )
        elif blocked.kind is not OpKind.WRITE and not (
            blocked.kind is OpKind.CAS and blocked.output is False
        ):
            lines.append(
                f"  it needs the value {show_value(needed)}, which no operation invoked "
                "before it returned wrote (only an initial value could explain it)."
            )
        lines.append("  window (invoke order; L = in the linearizable prefix):")
        shown = self.window[:_WINDOW_LINES]
        for op in shown:
            if op is blocked or op.op_id == blocked.op_id:
                mark = "  <-- cannot be linearized"
            elif self.state_source is not None and op.op_id == self.state_source.op_id:
                mark = f"  <-- set {show_value(self.state)}"
            elif self.state_witness is not None and op.op_id == self.state_witness.op_id:
                mark = f"  <-- saw {show_value(self.state)}"
            elif self.needed_writer is not None and op.op_id == self.needed_writer.op_id:
                mark = f"  <-- wrote {show_value(_needed_value(blocked))}"
            else:
                mark = ""
            flag = "L" if op.op_id in prefix_ids else " "
            lines.append(f"    {flag} {op.describe()}{mark}")
        if len(self.window) > len(shown):
            lines.append(f"    … {len(self.window) - len(shown)} more in KeyResult.window")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict for a whole history: the combination of its per-key verdicts."""

    verdict: Verdict
    keys: tuple[KeyResult, ...]

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.LINEARIZABLE

    @property
    def failure(self) -> KeyResult | None:
        """The first key (in history order) that is not linearizable, if any."""
        return next((k for k in self.keys if k.verdict is Verdict.NOT_LINEARIZABLE), None)

    def key(self, key: Key) -> KeyResult:
        """The result for one key; KeyError if the history never touched it."""
        for result in self.keys:
            if result.key == key:
                return result
        raise KeyError(key)

    def explain(self) -> str:
        """A readable report: the verdict, then the failing (or unfinished) keys in detail."""
        counts = {verdict: 0 for verdict in Verdict}
        for result in self.keys:
            counts[result.verdict] += 1
        header = f"{self.verdict}: {len(self.keys)} keys, " + ", ".join(
            f"{counts[verdict]} {verdict}" for verdict in Verdict if counts[verdict]
        )
        lines = [header.rstrip(", ")]
        for result in self.keys:
            if result.verdict is not Verdict.LINEARIZABLE:
                lines.append(result.explain())
        return "\n".join(lines)


def _needed_value(op: Operation) -> Output:
    return op.output if op.kind is OpKind.READ else op.expected


def combine(keys: list[KeyResult]) -> CheckResult:
    """The overall verdict: a violation anywhere wins, then unknown, else linearizable."""
    verdicts = {result.verdict for result in keys}
    if Verdict.NOT_LINEARIZABLE in verdicts:
        verdict = Verdict.NOT_LINEARIZABLE
    elif Verdict.UNKNOWN in verdicts:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.LINEARIZABLE
    return CheckResult(verdict, tuple(keys))

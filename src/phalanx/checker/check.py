"""`check(history)`: is a history of register operations linearizable?

Rules of this file:
- P-compositionality (Herlihy & Wing): a history is linearizable iff each key's sub-history
  is, so keys are checked one at a time, in the order they first appear.
- What is searched (Jepsen / Porcupine conventions):
  * `fail` operations never took effect: left out.
  * `info` reads constrain nothing (their result is unknown): left out.
  * `info` writes and cas may take effect at any time after their invoke, or never: their
    return time is +infinity, so the search may linearize them anywhere after the invoke, and
    "never" is the same as "last". An `info` write (or cas) whose value no read returned and no
    cas expected, on a key with no "not matched" cas, cannot be observed, so it is left out as
    well: that is the same as "never", and it keeps info-heavy histories from exploding. On a
    key with a "not matched" cas such writes are kept (one could explain the mismatch) but
    marked interchangeable, so the search treats them as one pool (see `search.py`).
  * `ok` cas with output `False` observed "value != expected" and did not write.
- The search has a step budget per key (`max_steps`); a key that runs out is "unknown", never
  a false verdict. Same history, same budget: same result, always.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from phalanx.checker.history import (
    Key,
    Operation,
    OpKind,
    Outcome,
    Value,
    initial_values,
    number,
)
from phalanx.checker.result import CheckResult, KeyResult, Verdict, combine
from phalanx.checker.search import (
    CAS_FAILED,
    CAS_MAYBE,
    CAS_OK,
    INFINITY,
    READ,
    WRITE,
    SearchResult,
    Status,
    Step,
    apply,
    search,
)

_ValueId = Callable[[Value], int]
"""Interns a value as a small integer (None is 0)."""

DEFAULT_MAX_STEPS = 2_000_000
"""Search steps allowed per key. A linearizable key with n ops and concurrency c usually
needs about n * c steps; a violation is found within a few times that."""


def check(
    history: Iterable[Operation],
    *,
    initial: Mapping[Key, Value] | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> CheckResult:
    """Check a history (a `History` builder or any iterable of `Operation`s).

    `initial` gives keys a value before the history (default: absent; a `History`'s own
    `initial` is used too, overridden by this). `max_steps` bounds the search on each key.
    """
    if max_steps < 0:
        raise ValueError("max_steps must be >= 0")
    starting = initial_values(history, initial)
    by_key: dict[Key, list[Operation]] = {}
    for op in number(history):
        by_key.setdefault(op.key, []).append(op)
    results = [check_key(key, ops, starting.get(key), max_steps) for key, ops in by_key.items()]
    return combine(results)


def check_key(key: Key, operations: list[Operation], initial: Value, max_steps: int) -> KeyResult:
    """Check the operations of one key (all must be on `key`, validated and numbered)."""
    kept, interchangeable = _relevant(operations)
    values: dict[Value, int] = {None: 0}

    def value_id(value: Value) -> int:
        return values.setdefault(value, len(values))

    steps = [_encode(op, value_id, i in interchangeable) for i, op in enumerate(kept)]
    initial_id = value_id(initial)
    names = list(values)  # value id -> value, ids are dense and in insertion order
    found = search(steps, initial_id, max_steps)
    excluded = len(operations) - len(kept)
    order = tuple(kept[i] for i in found.order)

    if found.status is Status.LINEARIZABLE:
        return KeyResult(
            key, Verdict.LINEARIZABLE, len(kept), excluded, found.steps, order, names[found.state]
        )
    if found.status is Status.UNKNOWN or found.blocked is None:
        return KeyResult(
            key, Verdict.UNKNOWN, len(kept), excluded, found.steps, order, names[found.state]
        )
    source, witness = _state_source(found, steps, initial_id)
    writer = _needed_writer(steps, found.blocked)
    extra = [i for i in (source, witness, writer) if i is not None]
    window = _window(kept, steps, found, extra)
    return KeyResult(
        key,
        Verdict.NOT_LINEARIZABLE,
        len(kept),
        excluded,
        found.steps,
        order,
        names[found.state],
        blocked=kept[found.blocked],
        window=tuple(kept[i] for i in window),
        state_source=None if source is None else kept[source],
        state_witness=None if witness is None else kept[witness],
        needed_writer=None if writer is None else kept[writer],
    )


def _relevant(operations: list[Operation]) -> tuple[list[Operation], set[int]]:
    """The operations that constrain the order (see the module rules), and the positions among
    them of the unknown-outcome writes of unobserved values (interchangeable, see search.py)."""
    live = [
        op
        for op in operations
        if op.outcome is not Outcome.FAIL
        and not (op.outcome is Outcome.INFO and op.kind is OpKind.READ)
    ]
    observed: set[Value] = set()
    any_unmatched_cas = False
    for op in live:
        if op.kind is OpKind.READ:
            observed.add(op.output)  # type: ignore[arg-type]  # validated: bytes | None
        elif op.kind is OpKind.CAS:
            observed.add(op.expected)
            if op.outcome is Outcome.OK and op.output is False:
                any_unmatched_cas = True
    if not any_unmatched_cas:
        kept = [op for op in live if op.outcome is not Outcome.INFO or op.value in observed]
        return kept, set()
    interchangeable = {
        i
        for i, op in enumerate(live)
        if op.outcome is Outcome.INFO and op.kind is OpKind.WRITE and op.value not in observed
    }
    return live, interchangeable


def _encode(op: Operation, value_id: _ValueId, interchangeable: bool) -> Step:
    call = float(op.invoke_time)
    if op.outcome is Outcome.INFO or op.complete_time is None:
        ret = INFINITY
    else:
        ret = float(op.complete_time)
    if op.kind is OpKind.READ:
        return Step(READ, value_id(op.output), 0, call, ret)  # type: ignore[arg-type]
    if op.kind is OpKind.WRITE:
        return Step(WRITE, value_id(op.value), 0, call, ret, interchangeable)
    expected, new = value_id(op.expected), value_id(op.value)
    if op.outcome is Outcome.INFO:
        return Step(CAS_MAYBE, expected, new, call, ret)
    return Step(CAS_OK if op.output else CAS_FAILED, expected, new, call, ret)


def _state_source(
    found: SearchResult, steps: list[Step], initial_state: int
) -> tuple[int | None, int | None]:
    """In the prefix: the op that last set the state (None: the initial value), and the last
    op after it that observed the state (a read or a cas: evidence of what the state was)."""
    state = initial_state
    source: int | None = None
    witness: int | None = None
    for i in found.order:
        step = steps[i]
        after = apply(step.code, step.a, step.b, state)
        if step.code in (WRITE, CAS_OK) or after != state:
            source, witness = i, None
        if step.code in (READ, CAS_OK, CAS_FAILED):
            witness = i
        state = after
    return source, witness


def _needed_writer(steps: list[Step], blocked: int) -> int | None:
    """The last op invoked before `blocked` returned that wrote the value `blocked` needed.

    A read needs the value it returned, a successful cas its expected value. None when the
    blocked op needs no particular value or nothing wrote it (then only the initial value could
    explain it).
    """
    need = steps[blocked]
    if need.code not in (READ, CAS_OK):
        return None
    writer: int | None = None
    for i, step in enumerate(steps):
        if i == blocked or step.call_time > need.return_time:
            continue
        wrote = step.a if step.code == WRITE else step.b
        writes_it = step.code in (WRITE, CAS_OK, CAS_MAYBE) and wrote == need.a
        if writes_it and (writer is None or step.call_time >= steps[writer].call_time):
            writer = i
    return writer


def _window(
    kept: list[Operation], steps: list[Step], found: SearchResult, extra: list[int]
) -> list[int]:
    """The blocked op, the ops concurrent with it, and the `extra` ops that explain it."""
    blocked = found.blocked
    if blocked is None:
        return []
    start, end = steps[blocked].call_time, steps[blocked].return_time
    in_prefix = set(found.order)
    chosen = {blocked}
    for i, step in enumerate(steps):
        if i in in_prefix:
            # Linearized before it, but overlapping it: could have gone after it instead.
            if step.return_time >= start:
                chosen.add(i)
        elif step.call_time <= end:
            # Not linearized, invoked before it returned: could have gone before it.
            chosen.add(i)
    chosen.update(extra)
    return sorted(chosen, key=lambda i: (steps[i].call_time, kept[i].op_id or 0))

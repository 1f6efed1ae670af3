"""The history model: what clients asked for, when, and what they were told.

This is the Jepsen / Porcupine model of a concurrent history of register operations.

Rules of this file:
- An `Operation` is one client call on one key: `read`, `write` or `cas` (compare-and-set).
  It has an invoke time and, unless its outcome is `info`, a complete time. Times are plain
  numbers (simulator ticks or monotonic seconds); only their order matters, and equal times
  are treated as overlapping (the permissive reading, so ties never invent a violation).
- Values are `bytes | None`; `None` means "the key is absent". Every key starts absent unless an
  initial value is given. A write of `None` is a delete; a cas expecting `None` is "set if absent".
- Outcomes: `ok` (it took effect, and `output` is what the client saw: the value for a read,
  `True`/`False` for a cas, nothing for a write), `fail` (it definitely did not take effect: the
  checker ignores it) and `info` (unknown: it may take effect at any time after its invoke, or
  never). A `cas` answered "not matched" is `ok` with output `False`, not `fail`: it observed that
  the value differed from `expected`.
- A process (client) runs one operation at a time; the builder enforces this. After an `info`
  the process may go on (its op is closed), though Jepsen style is to switch to a new process id.
- The builder numbers operations 0, 1, 2, ... in invoke order; that number is the op id and the
  index in `History.operations`. Operations invoked but never completed count as `info`.
- Malformed input raises `InvalidHistory` with a message that names the operation.
- Standard library only; no clocks: the caller passes times, or the builder counts events.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from phalanx.errors import InvalidHistory

Value = bytes | None
"""A register value: bytes, or None for "key absent"."""

Key = bytes | str
"""A register name. Each key is an independent register (checked on its own)."""

Process = int | str
"""A client identity. One process runs at most one operation at a time."""

Output = bytes | bool | None
"""What an ok operation returned: a read's value, a cas's success flag, None for a write."""


class OpKind(enum.StrEnum):
    """The three register operations."""

    READ = "read"
    WRITE = "write"
    CAS = "cas"


class Outcome(enum.StrEnum):
    """How an operation ended, as far as the client knows."""

    OK = "ok"
    FAIL = "fail"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Operation:
    """One completed (or abandoned) client call: the direct form of a history entry.

    `value` is a write's value or a cas's new value; `expected` is a cas's expected value.
    `complete_time` may be None only for `info` operations (it is ignored for them anyway: an
    unknown outcome may take effect at any time up to forever). `op_id` is filled in by the
    builder or by `check()` (position in the history) when left as None.
    """

    process: Process
    kind: OpKind
    key: Key
    invoke_time: float
    complete_time: float | None
    outcome: Outcome
    value: Value = None
    expected: Value = None
    output: Output = None
    op_id: int | None = None

    def describe(self) -> str:
        """One readable line, for example `#7 p2 cas k 'a'->'b' [3, 5] ok True`."""
        if self.kind is OpKind.READ:
            call = "read"
        elif self.kind is OpKind.WRITE:
            call = f"write {show_value(self.value)}"
        else:
            call = f"cas {show_value(self.expected)}->{show_value(self.value)}"
        end = (
            "…"
            if self.outcome is Outcome.INFO or self.complete_time is None
            else _num(self.complete_time)
        )
        result = str(self.outcome)
        if self.outcome is Outcome.OK and self.kind is OpKind.READ:
            result += f" {show_value(self.output)}"
        elif self.outcome is Outcome.OK and self.kind is OpKind.CAS:
            result += f" {self.output!r}"
        ident = "#?" if self.op_id is None else f"#{self.op_id}"
        return (
            f"{ident} p{self.process} {call} on {show_key(self.key)} "
            f"[{_num(self.invoke_time)}, {end}] {result}"
        )


def validate(op: Operation) -> None:
    """Raise `InvalidHistory` unless `op` is well formed."""
    where = op.describe()
    if not isinstance(op.kind, OpKind):
        raise InvalidHistory(f"{where}: kind must be an OpKind, got {op.kind!r}")
    if not isinstance(op.outcome, Outcome):
        raise InvalidHistory(f"{where}: outcome must be an Outcome, got {op.outcome!r}")
    for name, value in (("value", op.value), ("expected", op.expected)):
        if value is not None and not isinstance(value, bytes):
            raise InvalidHistory(f"{where}: {name} must be bytes or None, got {value!r}")
    if op.outcome is not Outcome.INFO:
        if op.complete_time is None:
            raise InvalidHistory(f"{where}: an {op.outcome} operation needs a complete_time")
        if op.complete_time < op.invoke_time:
            raise InvalidHistory(f"{where}: completes before it is invoked")
    if op.outcome is Outcome.OK:
        if op.kind is OpKind.READ and op.output is not None and not isinstance(op.output, bytes):
            raise InvalidHistory(f"{where}: a read's output must be bytes or None")
        if op.kind is OpKind.CAS and not isinstance(op.output, bool):
            raise InvalidHistory(f"{where}: a cas's output must be True or False")


@dataclass(slots=True)
class _Pending:
    process: Process
    kind: OpKind
    key: Key
    invoke_time: float
    value: Value
    expected: Value


@dataclass
class History:
    """A builder for histories, Jepsen style: `invoke` then `ok` / `fail` / `info`.

    >>> h = History()
    >>> w = h.invoke(1, "write", "k", value=b"a")
    >>> h.ok(w)
    >>> r = h.invoke(2, "read", "k")
    >>> h.ok(r, b"a")

    Times are optional: pass `time=` on every call (ticks, seconds) or on none, in which case
    each invoke/complete event gets the next integer. Mixing the two styles is an error.
    `initial` maps keys to their value before the history (default: absent).
    """

    initial: dict[Key, Value] = field(default_factory=dict)
    _ops: list[Operation | _Pending] = field(default_factory=list, init=False, repr=False)
    _busy: dict[Process, int] = field(default_factory=dict, init=False, repr=False)
    _clock: int = field(default=0, init=False, repr=False)
    _explicit_time: bool | None = field(default=None, init=False, repr=False)

    def invoke(
        self,
        process: Process,
        kind: OpKind | str,
        key: Key,
        *,
        value: Value = None,
        expected: Value = None,
        time: float | None = None,
    ) -> int:
        """Record that `process` called `kind` on `key`; returns the op id to complete it with.

        `value` is the write value or the cas new value; `expected` the cas expected value.
        """
        try:
            op_kind = OpKind(kind)
        except ValueError:
            raise InvalidHistory(f"unknown operation kind {kind!r}") from None
        if process in self._busy:
            raise InvalidHistory(
                f"process {process!r} invoked {op_kind} while op #{self._busy[process]} "
                "is still outstanding (one operation per process at a time)"
            )
        for name, given in (("value", value), ("expected", expected)):
            if given is not None and not isinstance(given, bytes):
                raise InvalidHistory(f"{name} must be bytes or None, got {given!r}")
        op_id = len(self._ops)
        self._ops.append(_Pending(process, op_kind, key, self._time(time), value, expected))
        self._busy[process] = op_id
        return op_id

    def ok(self, op_id: int, output: Output = None, *, time: float | None = None) -> None:
        """The operation took effect; `output` is the read value or the cas success flag."""
        self._complete(op_id, Outcome.OK, output, time)

    def fail(self, op_id: int, *, time: float | None = None) -> None:
        """The operation definitely did not take effect."""
        self._complete(op_id, Outcome.FAIL, None, time)

    def info(self, op_id: int, *, time: float | None = None) -> None:
        """The outcome is unknown: it may take effect at any time after its invoke, or never."""
        self._complete(op_id, Outcome.INFO, None, time)

    @property
    def operations(self) -> list[Operation]:
        """All operations in invoke order; ones still outstanding appear as `info`."""
        return list(self)

    def __iter__(self) -> Iterator[Operation]:
        for op_id, entry in enumerate(self._ops):
            if isinstance(entry, Operation):
                yield entry
            else:
                yield self._close(op_id, entry, Outcome.INFO, None, None)

    def __len__(self) -> int:
        return len(self._ops)

    def _time(self, time: float | None) -> float:
        explicit = time is not None
        if self._explicit_time is None:
            self._explicit_time = explicit
        elif self._explicit_time != explicit:
            raise InvalidHistory("pass time= on every event or on none of them")
        if time is not None:
            return time
        self._clock += 1
        return self._clock

    def _complete(self, op_id: int, outcome: Outcome, output: Output, time: float | None) -> None:
        if not 0 <= op_id < len(self._ops):
            raise InvalidHistory(f"no operation with id {op_id}")
        entry = self._ops[op_id]
        if isinstance(entry, Operation):
            raise InvalidHistory(f"operation #{op_id} was already completed ({entry.outcome})")
        closed = self._close(op_id, entry, outcome, output, self._time(time))
        validate(closed)
        self._ops[op_id] = closed
        del self._busy[entry.process]

    @staticmethod
    def _close(
        op_id: int, entry: _Pending, outcome: Outcome, output: Output, time: float | None
    ) -> Operation:
        return Operation(
            process=entry.process,
            kind=entry.kind,
            key=entry.key,
            invoke_time=entry.invoke_time,
            complete_time=time,
            outcome=outcome,
            value=entry.value,
            expected=entry.expected,
            output=output,
            op_id=op_id,
        )


def number(operations: Iterable[Operation]) -> list[Operation]:
    """Validate `operations` and give each one without an op id its position as id."""
    numbered: list[Operation] = []
    seen: set[int] = set()
    for position, op in enumerate(operations):
        if op.op_id is None:
            op = replace(op, op_id=position)
        validate(op)
        if op.op_id in seen:
            raise InvalidHistory(f"{op.describe()}: op id {op.op_id} is used twice")
        seen.add(position if op.op_id is None else op.op_id)
        numbered.append(op)
    return numbered


def initial_values(
    history: Iterable[Operation], initial: Mapping[Key, Value] | None
) -> dict[Key, Value]:
    """The initial values: the builder's, overridden by those passed to `check()`."""
    merged: dict[Key, Value] = dict(history.initial) if isinstance(history, History) else {}
    if initial:
        merged.update(initial)
    return merged


def show_value(value: Output) -> str:
    if value is None:
        return "∅"
    if not isinstance(value, bytes):  # True / False, or a malformed value being reported
        return repr(value)
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return repr(value)
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:37] + "…'"


def show_key(key: Key) -> str:
    return key if isinstance(key, str) else show_value(key)


def _num(time: float) -> str:
    return f"{time:g}" if isinstance(time, float) else str(time)

"""The linearizability search for one register: Wing & Gong / Lowe, as in Porcupine.

Rules of this file:
- Input is already reduced to small integers: values are ids (0 is "absent"), operations are
  `Step`s with a call time and a return time (`math.inf` for an unknown outcome). Nothing here
  knows about keys, processes or bytes; `check.py` does that encoding.
- The algorithm is Porcupine's `checkSingle` (checker.go): a doubly linked list of call and
  return entries sorted by time (calls before returns at equal times, so ties overlap); walk it,
  and at a call try to linearize that operation now ("just in time"): if the register model
  accepts it and (linearized set, state) is not in the cache, lift the call and its return out
  of the list and start again from the head; at a return, the op it closes was not linearized in
  time, so backtrack (unlift the last linearized call and try the entry after it). Success is
  an empty list, or a list of unknown-outcome ops only (their returns are at +infinity: they
  may all go last, or never happen; the linearization reported leaves them out). The cache is what makes the search fast in the common case (Lowe 2017).
- The linked list lives in flat integer arrays (prev / next / match) for speed; entry 0 is the
  head sentinel and entry 2n+1 the tail sentinel.
- The cache key is (lowest unlinearized op, linearized bitset shifted right by it, state): the
  same information as the full bitset, but small, because the linearized set is almost always
  "everything before some point, plus a few concurrent ops".
- The observer rule (an addition to Porcupine, which is exponential on many concurrent reads):
  a read, or a cas that did not match, changes nothing. If one is pending at the front of the
  list and fits the current state, linearizing it right now loses nothing (everything that had
  to precede it is already linearized, and it leaves the state as it was). So once the search
  has failed after linearizing such an observer, the configuration before it fails too: the
  search backtracks past it instead of trying the alternatives to it.
- The unknown-outcome rule: an operation with return time +infinity that would change nothing
  now (a write of the value already there, a cas that does not match) is not tried: leaving
  it pending loses nothing, because it can still go anywhere later, or last.
- The interchangeable rule (also an addition): an unknown-outcome write whose value no
  operation observes (no read returned it, no cas expected it) is kept only when some cas
  answered "not matched" (it could explain the mismatch). Once invoked, all such writes are
  alike: any of them can go anywhere later, and every op behaves the same on their values. So
  the search only ever tries the earliest pending one, and never while the state already holds
  such a value (no observable change: the rule above). Without this, k of them never taking effect cost 2^k configurations.
- Every loop iteration is a step; after `max_steps` the search gives up and says so. It never
  uses a clock, so the same input always gives the same answer after the same steps.
- The calls stack is a persistent cons list (entry, state before, parent), so remembering the
  deepest partial linearization for the failure report costs O(1).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from phalanx.errors import require

INFINITY = math.inf
"""The return time of an operation whose outcome is unknown."""

READ = 0
"""Read that returned `a`: needs state == a."""
WRITE = 1
"""Write of `a` (ok or info): always allowed; state becomes a."""
CAS_OK = 2
"""Cas that succeeded: needs state == a; state becomes b."""
CAS_FAILED = 3
"""Cas answered "not matched": needs state != a; state stays."""
CAS_MAYBE = 4
"""Cas with unknown outcome that takes effect now: if state == a then state becomes b."""


@dataclass(frozen=True, slots=True)
class Step:
    """One operation of one register, encoded. `a` / `b` are value ids (see the codes above)."""

    code: int
    a: int
    b: int
    call_time: float
    return_time: float
    interchangeable: bool = False
    """An unknown-outcome write of a value no operation observes (see the module rules)."""


def apply(code: int, a: int, b: int, state: int) -> int:
    """The register model: the next state, or -1 if the operation cannot happen in `state`."""
    if code == READ:
        return state if state == a else -1
    if code == WRITE:
        return a
    if code == CAS_OK:
        return b if state == a else -1
    if code == CAS_FAILED:
        return state if state != a else -1
    # CAS_MAYBE: an unknown cas either matched (and wrote) or did not (and did nothing).
    return b if state == a else state


class Status(enum.Enum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SearchResult:
    """What the search found.

    `order` is a full linearization (indices into the steps) when linearizable; otherwise the
    longest linearizable prefix found. `blocked` is the operation that could not be linearized
    next after that prefix (None when linearizable or when the budget ran out first).
    `state` is the register state after `order`.
    """

    status: Status
    order: tuple[int, ...]
    blocked: int | None
    state: int
    steps: int


_Calls = tuple[int, int, bool, "_Calls"] | None
"""The calls stack: (call entry, state before it, scan flag before it, rest), or None."""


def search(steps: list[Step], initial_state: int, max_steps: int) -> SearchResult:
    """Decide whether `steps` (one register, starting in `initial_state`) are linearizable."""
    n = len(steps)
    if n == 0:
        return SearchResult(Status.LINEARIZABLE, (), None, initial_state, 0)

    # Entries 1..2n: call of op i is an entry with kind 0, its return an entry with kind 1.
    # Sorted by (time, call before return, op index): deterministic, ties overlap.
    events = sorted(
        [(s.call_time, 0, i) for i, s in enumerate(steps)]
        + [(s.return_time, 1, i) for i, s in enumerate(steps)]
    )
    # Op ids are renumbered by call order, so that "all ops before m are linearized" is the
    # usual shape of the linearized set and the shifted cache key stays small.
    next_rank = 0
    total = 2 * n + 2
    tail = total - 1
    op_of: list[int] = [0] * total  # entry -> op index (into steps)
    bit_of: list[int] = [0] * total  # call entry -> its rank (bit position)
    match: list[int] = [0] * total  # call entry -> its return entry; return entries -> 0
    call_entry: list[int] = [0] * n
    for position, (_time, kind, i) in enumerate(events, start=1):
        op_of[position] = i
        if kind == 0:
            call_entry[i] = position
            bit_of[position] = next_rank
            next_rank += 1
        else:
            match[call_entry[i]] = position
    nxt = list(range(1, total + 1))
    prv = list(range(-1, total - 1))
    nxt[tail] = tail
    prv[0] = 0

    codes = [s.code for s in steps]
    arg_a = [s.a for s in steps]
    arg_b = [s.b for s in steps]
    observer = [s.code in (READ, CAS_FAILED) for s in steps]
    interchangeable = [s.interchangeable for s in steps]
    quiet_values = {s.a for s in steps if s.interchangeable}
    unknown = [s.return_time == INFINITY for s in steps]

    cache: set[tuple[int, int, int]] = set()
    calls: _Calls = None
    depth = 0
    best_depth = -1
    best_calls: _Calls = None
    best_blocked: int | None = None
    best_state = initial_state
    linearized = 0
    state = initial_state
    entry = nxt[0]
    passed_interchangeable = False  # a pending interchangeable call lies before `entry`
    taken = 0

    found = False
    while True:
        if entry == tail:  # every operation is linearized
            found = True
            break
        taken += 1
        if taken > max_steps:
            prefix, prefix_state = _unwind(best_calls, op_of, steps, initial_state)
            return SearchResult(Status.UNKNOWN, prefix, None, prefix_state, taken - 1)
        ret = match[entry]
        if ret:  # a call entry: try to linearize its operation now
            i = op_of[entry]
            if interchangeable[i] and passed_interchangeable:
                entry = nxt[entry]
                continue
            new_state = apply(codes[i], arg_a[i], arg_b[i], state)
            if new_state < 0:
                entry = nxt[entry]
                continue
            if unknown[i] and (
                new_state == state or (new_state in quiet_values and state in quiet_values)
            ):
                # The unknown-outcome rule: it would change nothing observable now.
                passed_interchangeable = passed_interchangeable or interchangeable[i]
                entry = nxt[entry]
                continue
            new_linearized = linearized | (1 << bit_of[entry])
            low = (~new_linearized & (new_linearized + 1)).bit_length() - 1
            key = (low, new_linearized >> low, new_state)
            if key not in cache:
                cache.add(key)
                calls = (entry, state, passed_interchangeable, calls)
                depth += 1
                state = new_state
                linearized = new_linearized
                # lift: take the call and its return out of the list
                nxt[prv[entry]] = nxt[entry]
                prv[nxt[entry]] = prv[entry]
                nxt[prv[ret]] = nxt[ret]
                prv[nxt[ret]] = prv[ret]
                entry = nxt[0]
                passed_interchangeable = False
                continue
            if not observer[i]:
                passed_interchangeable = passed_interchangeable or interchangeable[i]
                entry = nxt[entry]
                continue
            # An observer that fits now but whose configuration already failed: by the
            # observer rule (module docstring) this configuration fails too. Backtrack.
        elif unknown[op_of[entry]]:
            # Only unknown-outcome ops are left: they may all take effect last, or never.
            found = True
            break
        elif depth > best_depth:  # a return entry: its operation was not linearized in time
            best_depth = depth
            best_calls = calls
            best_blocked = op_of[entry]
            best_state = state
        # Backtrack: undo the last linearized call and try the entry after it; undo an
        # observer and its parent together, since trying alternatives to it is pointless.
        while calls is not None:
            entry, state, passed_interchangeable, calls = calls
            depth -= 1
            linearized &= ~(1 << bit_of[entry])
            # unlift: put the return back, then the call
            ret = match[entry]
            nxt[prv[ret]] = ret
            prv[nxt[ret]] = ret
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry
            if not observer[op_of[entry]]:
                break
        else:
            break  # the empty prefix failed: not linearizable
        passed_interchangeable = passed_interchangeable or interchangeable[op_of[entry]]
        entry = nxt[entry]

    if found:
        order, final_state = _unwind(calls, op_of, steps, initial_state)
        return SearchResult(Status.LINEARIZABLE, order, None, final_state, taken)
    prefix, prefix_state = _unwind(best_calls, op_of, steps, initial_state)
    require(prefix_state == best_state, "replayed prefix disagrees with the recorded state")
    return SearchResult(Status.NOT_LINEARIZABLE, prefix, best_blocked, best_state, taken)


def _unwind(
    calls: _Calls, op_of: list[int], steps: list[Step], initial_state: int
) -> tuple[tuple[int, ...], int]:
    """The op indices on a calls stack, oldest first, and the state after replaying them."""
    order: list[int] = []
    while calls is not None:
        entry, _, _, calls = calls
        order.append(op_of[entry])
    order.reverse()
    state = initial_state
    for i in order:
        s = steps[i]
        state = apply(s.code, s.a, s.b, state)
    return tuple(order), state

"""The shared contract every Raft log store must pass (`MemoryStorage`, `SqliteLogStore`, ...).

Rules of this file:
- The contract is a tuple of plain functions `check_*(harness)`; each builds its own stores via a
  `StoreHarness`, so any test runner can drive it (tests/storage parametrizes it with pytest).
- `MemoryStorage` is the reference: where the two could differ, the contract states what the
  reference does. A durable store must in addition give back the same state after `reopen`.
- Checks raise `ContractViolation` (an `AssertionError`) with a message naming what differed;
  no bare `assert` (it vanishes under `python -O`).
- No pytest import: this module is importable from the simulator and the CLI too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from phalanx.errors import Compacted, InvariantViolation, PhalanxError, Unavailable
from phalanx.raft.storage import LogWriter, entry_size_bytes
from phalanx.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Index,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)

_Value = TypeVar("_Value")


class ContractViolation(AssertionError):
    """A store broke the storage contract."""


class StoreHarness(Protocol):
    """How the contract creates and reopens stores of one implementation."""

    def create(self, conf_state: ConfState | None = None) -> LogWriter:
        """A fresh, empty store (bootstrapped with `conf_state`)."""
        ...

    def reopen(self, store: LogWriter) -> LogWriter:
        """The same store as a process restart would see it. For a durable store: close `store`
        and open its directory again; for an in-memory store: `store` itself."""
        ...


def expect_equal(actual: _Value, expected: _Value, what: str) -> None:
    """Raise `ContractViolation` unless `actual == expected`."""
    if actual != expected:
        raise ContractViolation(f"{what}: expected {expected!r}, got {actual!r}")


def expect_raises(error: type[PhalanxError], call: Callable[[], object], what: str) -> None:
    """Raise `ContractViolation` unless `call()` raises `error`."""
    try:
        result = call()
    except error:
        return
    except Exception as exc:
        raise ContractViolation(
            f"{what}: expected {error.__name__}, got {type(exc).__name__}: {exc}"
        ) from exc
    raise ContractViolation(f"{what}: expected {error.__name__}, returned {result!r}")


def make_entries(low: int, high: int, term: int, payload: bytes = b"") -> list[Entry]:
    """Entries [low, high) in `term`, each carrying distinct data."""
    return [
        Entry(term=Term(term), index=Index(i), data=b"%d/%d/" % (term, i) + payload)
        for i in range(low, high)
    ]


def _state(store: LogWriter) -> tuple[object, ...]:
    """Everything a reader can observe, for comparing a store with its reopened self."""
    first, last = store.first_index(), store.last_index()
    return (
        store.initial_state(),
        first,
        last,
        store.term(Index(first - 1)),
        store.entries(first, Index(last + 1)),
        store.snapshot(),
    )


def _expect_same_after_reopen(harness: StoreHarness, store: LogWriter) -> LogWriter:
    before = _state(store)
    reopened = harness.reopen(store)
    expect_equal(_state(reopened), before, "state after reopen")
    return reopened


# -- the checks -----------------------------------------------------------------------------------
def check_empty_store(harness: StoreHarness) -> None:
    voters = ConfState(voters=(NodeId("n1"), NodeId("n2"), NodeId("n3")))
    store = harness.create(voters)
    expect_equal(store.first_index(), Index(1), "first index of an empty store")
    expect_equal(store.last_index(), Index(0), "last index of an empty store")
    expect_equal(store.term(Index(0)), Term(0), "term of the dummy position")
    expect_equal(store.entries(Index(1), Index(1)), [], "empty range")
    expect_equal(store.initial_state(), (HardState(), voters), "initial state")
    expect_equal(store.snapshot().empty, True, "no snapshot yet")
    expect_raises(Unavailable, lambda: store.term(Index(1)), "term beyond the end")
    expect_raises(Unavailable, lambda: store.entries(Index(1), Index(2)), "entries beyond end")
    expect_raises(Compacted, lambda: store.entries(Index(0), Index(1)), "entries at dummy")
    store = _expect_same_after_reopen(harness, store)
    expect_equal(store.initial_state(), (HardState(), voters), "initial state after reopen")


def check_append_and_read(harness: StoreHarness) -> None:
    store = harness.create()
    written = make_entries(1, 11, term=1)
    store.append(written)
    expect_equal(store.first_index(), Index(1), "first index")
    expect_equal(store.last_index(), Index(10), "last index")
    expect_equal(store.entries(Index(1), Index(11)), written, "all entries")
    expect_equal(store.entries(Index(3), Index(6)), written[2:5], "a middle range")
    expect_equal(store.term(Index(10)), Term(1), "term of the last entry")
    store.append(make_entries(11, 13, term=2))
    expect_equal(store.term(Index(12)), Term(2), "term after a second append")
    store.append([])  # a no-op
    expect_equal(store.last_index(), Index(12), "last index after an empty append")
    expect_raises(Unavailable, lambda: store.entries(Index(5), Index(14)), "range past the end")
    expect_raises(Unavailable, lambda: store.term(Index(13)), "term past the end")
    conf = Entry(term=Term(2), index=Index(13), type=EntryType.CONF_CHANGE, data=b"\x00\xff")
    store.append([conf])
    store = _expect_same_after_reopen(harness, store)
    expect_equal(store.entries(Index(13), Index(14)), [conf], "a conf-change entry")


def check_append_overwrites_conflicting_suffix(harness: StoreHarness) -> None:
    store = harness.create()
    store.append(make_entries(1, 11, term=1))
    replacement = make_entries(6, 8, term=3)
    store.append(replacement)  # §5.3: the suffix from 6 on is replaced, 8..10 are gone
    expect_equal(store.last_index(), Index(7), "last index after overwrite")
    expect_equal(store.entries(Index(6), Index(8)), replacement, "overwritten entries")
    expect_equal(store.entries(Index(1), Index(6)), make_entries(1, 6, term=1), "kept prefix")
    expect_raises(Unavailable, lambda: store.term(Index(8)), "truncated entry")
    store.append(make_entries(8, 9, term=3))  # plain append after an overwrite
    store = _expect_same_after_reopen(harness, store)
    expect_equal(store.last_index(), Index(8), "last index after reopen")
    expect_equal(store.term(Index(6)), Term(3), "overwritten term after reopen")


def check_append_rejects_gap(harness: StoreHarness) -> None:
    store = harness.create()
    store.append(make_entries(1, 4, term=1))
    expect_raises(
        InvariantViolation, lambda: store.append(make_entries(6, 8, term=1)), "append with a gap"
    )
    expect_equal(store.last_index(), Index(3), "log unchanged by a rejected append")


def check_max_size(harness: StoreHarness) -> None:
    store = harness.create()
    written = make_entries(1, 6, term=1, payload=b"x" * 100)
    store.append(written)
    size = entry_size_bytes(written[0])
    expect_equal(len(store.entries(Index(1), Index(6), None)), 5, "no limit")
    expect_equal(len(store.entries(Index(1), Index(6), 0)), 1, "at least one entry")
    expect_equal(len(store.entries(Index(1), Index(6), size - 1)), 1, "one entry over the limit")
    expect_equal(len(store.entries(Index(1), Index(6), size)), 1, "exactly one entry")
    expect_equal(len(store.entries(Index(1), Index(6), 3 * size)), 3, "exactly three entries")
    expect_equal(len(store.entries(Index(1), Index(6), 3 * size + 1)), 3, "three and a bit")
    expect_equal(len(store.entries(Index(2), Index(6), 10**9)), 4, "a large limit")


def check_hard_state(harness: StoreHarness) -> None:
    store = harness.create()
    conf = ConfState(voters=(NodeId("a"),))
    store.set_hard_state(HardState(term=Term(3), vote=NodeId("n2"), commit=Index(0)))
    store.append(make_entries(1, 4, term=3))
    hard_state = HardState(term=Term(4), vote=NodeId(""), commit=Index(3))
    store.set_hard_state(hard_state)
    expect_equal(store.initial_state()[0], hard_state, "hard state")
    store = _expect_same_after_reopen(harness, store)
    expect_equal(store.initial_state(), (hard_state, ConfState()), "initial state after reopen")
    store.create_snapshot(Index(2), conf, b"image")
    store = _expect_same_after_reopen(harness, store)
    expect_equal(store.initial_state(), (hard_state, conf), "conf state from the snapshot")


def check_create_snapshot(harness: StoreHarness) -> None:
    store = harness.create()
    store.append(make_entries(1, 6, term=1) + make_entries(6, 11, term=2))
    conf = ConfState(voters=(NodeId("n1"), NodeId("n2")), learners=(NodeId("n9"),))
    snapshot = store.create_snapshot(Index(7), conf, b"state at 7")
    expected = Snapshot(
        meta=SnapshotMeta(index=Index(7), term=Term(2), conf_state=conf), data=b"state at 7"
    )
    expect_equal(snapshot, expected, "created snapshot")
    expect_equal(store.snapshot(), expected, "latest snapshot")
    expect_equal(store.first_index(), Index(1), "a snapshot alone compacts nothing")
    older = store.create_snapshot(Index(5), ConfState(), b"older")
    expect_equal(older, expected, "an older snapshot request returns the latest")
    expect_raises(
        InvariantViolation,
        lambda: store.create_snapshot(Index(11), conf, b""),
        "snapshot beyond the last index",
    )
    store = _expect_same_after_reopen(harness, store)
    expect_equal(store.snapshot(), expected, "snapshot after reopen")
    joint = ConfState(
        voters=(NodeId("a"),),
        voters_outgoing=(NodeId("b"),),
        learners_next=(NodeId("b"),),
        auto_leave=True,
    )
    store.create_snapshot(Index(10), joint, b"")
    store = _expect_same_after_reopen(harness, store)
    expect_equal(store.snapshot().meta.conf_state, joint, "joint conf state after reopen")
    expect_equal(store.snapshot().data, b"", "empty snapshot payload")


def check_compaction(harness: StoreHarness) -> None:
    store = harness.create()
    store.append(make_entries(1, 11, term=1))
    expect_raises(InvariantViolation, lambda: store.compact(Index(3)), "compact past snapshot")
    store.create_snapshot(Index(6), ConfState(), b"six")
    store.compact(Index(4))
    expect_equal(store.first_index(), Index(5), "first index after compaction")
    expect_equal(store.last_index(), Index(10), "last index after compaction")
    expect_equal(store.term(Index(4)), Term(1), "term of the compaction point")
    expect_raises(Compacted, lambda: store.term(Index(3)), "term of a compacted entry")
    expect_raises(Compacted, lambda: store.entries(Index(4), Index(6)), "compacted entries")
    expect_equal(store.entries(Index(5), Index(11)), make_entries(5, 11, term=1), "kept entries")
    store.compact(Index(2))  # older than the offset: a no-op
    expect_equal(store.first_index(), Index(5), "first index after a stale compaction")
    store = _expect_same_after_reopen(harness, store)
    store.compact(Index(6))
    expect_equal(store.first_index(), Index(7), "compaction up to the snapshot")
    expect_raises(InvariantViolation, lambda: store.compact(Index(7)), "compact past snapshot")
    expect_raises(InvariantViolation, lambda: store.compact(Index(11)), "compact past the end")
    store.append(make_entries(9, 12, term=2))  # overwrite after compaction
    expect_equal(
        store.entries(Index(7), Index(12)),
        make_entries(7, 9, term=1) + make_entries(9, 12, term=2),
        "log after overwrite",
    )
    store.append(make_entries(3, 8, term=1))  # entirely or partly compacted: skipped part
    expect_equal(store.last_index(), Index(7), "append overlapping the compacted prefix")
    store = _expect_same_after_reopen(harness, store)
    expect_equal(store.first_index(), Index(7), "first index after reopen")


def check_apply_snapshot(harness: StoreHarness) -> None:
    store = harness.create()
    store.append(make_entries(1, 6, term=1))
    conf = ConfState(voters=(NodeId("n1"), NodeId("n4")))
    incoming = Snapshot(
        meta=SnapshotMeta(index=Index(20), term=Term(4), conf_state=conf), data=b"leader image"
    )
    store.apply_snapshot(incoming)
    expect_equal(store.snapshot(), incoming, "installed snapshot")
    expect_equal(store.first_index(), Index(21), "first index after install")
    expect_equal(store.last_index(), Index(20), "last index after install")
    expect_equal(store.term(Index(20)), Term(4), "term at the snapshot")
    expect_raises(Compacted, lambda: store.term(Index(5)), "the old log is gone")
    expect_raises(Unavailable, lambda: store.term(Index(21)), "nothing after the snapshot")
    expect_equal(store.initial_state()[1], conf, "conf state from the snapshot")
    stale = Snapshot(meta=SnapshotMeta(index=Index(10), term=Term(3)), data=b"stale")
    store.apply_snapshot(stale)
    expect_equal(store.snapshot(), incoming, "an older snapshot is ignored")
    store = _expect_same_after_reopen(harness, store)
    store.append(make_entries(21, 24, term=4))
    expect_equal(
        store.entries(Index(21), Index(24)),
        make_entries(21, 24, term=4),
        "appending after an installed snapshot",
    )
    store = _expect_same_after_reopen(harness, store)
    # A snapshot inside the current log also replaces the whole log (etcd semantics).
    inside = Snapshot(meta=SnapshotMeta(index=Index(22), term=Term(4), conf_state=conf), data=b"")
    store.apply_snapshot(inside)
    expect_equal(
        (store.first_index(), store.last_index()),
        (Index(23), Index(22)),
        "a snapshot inside the log replaces it",
    )
    _expect_same_after_reopen(harness, store)


def check_reopen_many_times(harness: StoreHarness) -> None:
    store = harness.create()
    for round_number in range(1, 6):
        start = store.last_index() + 1
        store.append(make_entries(start, start + 7, term=round_number))
        store.set_hard_state(HardState(term=Term(round_number), commit=Index(start)))
        if round_number % 2 == 0:
            store.create_snapshot(Index(start), ConfState(), b"round %d" % round_number)
            store.compact(Index(start - 1))
        store = _expect_same_after_reopen(harness, store)
    expect_equal(store.last_index(), Index(35), "last index after five rounds")


CONTRACT: tuple[Callable[[StoreHarness], None], ...] = (
    check_empty_store,
    check_append_and_read,
    check_append_overwrites_conflicting_suffix,
    check_append_rejects_gap,
    check_max_size,
    check_hard_state,
    check_create_snapshot,
    check_compaction,
    check_apply_snapshot,
    check_reopen_many_times,
)
"""Every check of the contract, in a stable order."""

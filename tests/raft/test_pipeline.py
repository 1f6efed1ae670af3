"""The Ready pipeline (`phalanx.raft.pipeline`) the server and the simulator share: the order of
sends, writes, acknowledgements and applies, group commit, and held snapshot Readys (see
docs/architecture.md, "the Ready loop")."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from phalanx.errors import InvariantViolation
from phalanx.raft import (
    AppendEntries,
    AppendEntriesResponse,
    ConfState,
    Entry,
    Heartbeat,
    InstallSnapshot,
    LogWrite,
    MemoryStorage,
    Message,
    NodeId,
    RawNode,
    Ready,
    ReadyPipeline,
    Snapshot,
    SnapshotMeta,
)
from phalanx.raft.types import Index, Term
from phalanx.testing.raft_harness import make_node


class FakeIO:
    """Records what the pipeline sends and writes; `complete()` makes the running write durable."""

    def __init__(self, storage: MemoryStorage) -> None:
        self.storage = storage
        self.sent: list[Message] = []
        self.writes: list[LogWrite] = []
        self.running: LogWrite | None = None
        self.pipeline: ReadyPipeline | None = None

    def send(self, messages: Sequence[Message]) -> None:
        self.sent.extend(messages)

    def start_write(self, write: LogWrite) -> None:
        assert self.running is None, "two writes at once"
        self.writes.append(write)
        self.running = write

    def complete(self) -> None:
        write, self.running = self.running, None
        assert write is not None and self.pipeline is not None
        if write.snapshot is not None:
            self.storage.apply_snapshot(write.snapshot)
        if write.entries:
            self.storage.append(list(write.entries))
        if write.hard_state is not None:
            self.storage.set_hard_state(write.hard_state)
        self.pipeline.write_done()

    def acks(self) -> list[int]:
        return [m.index for m in self.sent if isinstance(m, AppendEntriesResponse)]


def _follower(*, async_writes: bool = True) -> tuple[RawNode, ReadyPipeline, FakeIO]:
    raw, storage = make_node("n1", ["n1", "n2", "n3"])
    io = FakeIO(storage)
    pipeline = ReadyPipeline(raw, io, async_writes=async_writes)
    io.pipeline = pipeline
    return raw, pipeline, io


def _append(term: int, prev: int, prev_term: int, entries: list[tuple[int, int]],
            commit: int = 0) -> AppendEntries:
    return AppendEntries(
        source=NodeId("n2"), target=NodeId("n1"), term=Term(term), prev_log_index=Index(prev),
        prev_log_term=Term(prev_term), commit=Index(commit),
        entries=tuple(Entry(term=Term(t), index=Index(i), data=b"%d" % i) for i, t in entries))


def _drain(pipeline: ReadyPipeline) -> list[Ready]:
    handed: list[Ready] = []
    while (rd := pipeline.next_ready()) is not None:
        handed.append(rd)
        pipeline.applied(rd)
    return handed


def test_acknowledgement_leaves_only_after_the_write_is_durable() -> None:
    raw, pipeline, io = _follower()
    raw.step(_append(1, 0, 0, [(1, 1), (2, 1)]))
    assert len(_drain(pipeline)) == 1  # applied at once, its write still running
    assert [e.index for e in io.writes[0].entries] == [1, 2]
    assert io.acks() == []
    io.complete()
    assert io.acks() == [2]
    assert pipeline.next_ready() is None and not pipeline.writing


def test_readys_arriving_during_a_write_share_the_next_one() -> None:
    raw, pipeline, io = _follower()
    raw.step(_append(1, 0, 0, [(1, 1)]))
    _drain(pipeline)
    raw.step(_append(1, 1, 1, [(2, 1)]))
    _drain(pipeline)
    raw.step(_append(1, 2, 1, [(3, 1)]))
    _drain(pipeline)
    assert len(io.writes) == 1  # one write at a time
    io.complete()
    assert io.acks() == [1]
    assert [e.index for e in io.writes[1].entries] == [2, 3]  # group commit: one write
    io.complete()
    assert io.acks() == [1, 2, 3]  # in Ready order


def test_an_overwrite_replaces_the_queued_suffix() -> None:
    raw, pipeline, io = _follower()
    raw.step(_append(1, 0, 0, [(1, 1)]))
    _drain(pipeline)
    raw.step(_append(1, 1, 1, [(2, 1), (3, 1)]))
    _drain(pipeline)
    raw.step(_append(2, 2, 1, [(3, 2), (4, 2)]))  # a new leader replaces entry 3 (§5.3)
    _drain(pipeline)
    io.complete()
    assert [(e.index, e.term) for e in io.writes[1].entries] == [(2, 1), (3, 2), (4, 2)]
    io.complete()
    assert io.storage.term(Index(3)) == 2


def test_a_commit_index_change_alone_rides_with_the_next_write() -> None:
    raw, pipeline, io = _follower()
    raw.step(_append(1, 0, 0, [(1, 1)]))
    _drain(pipeline)
    io.complete()
    raw.step(Heartbeat(source=NodeId("n2"), target=NodeId("n1"), term=Term(1),
                       commit=Index(1), round=1))
    (rd,) = _drain(pipeline)
    assert rd.hard_state is not None and rd.hard_state.commit == 1 and not rd.must_sync
    assert [e.index for e in rd.committed_entries] == [1]
    assert len(io.writes) == 1  # no write for the commit index alone
    raw.step(_append(1, 1, 1, [(2, 1)], commit=1))
    _drain(pipeline)
    hard_state = io.writes[1].hard_state
    assert hard_state is not None and hard_state.commit == 1


def test_a_snapshot_waits_for_earlier_writes_and_is_applied_once_durable() -> None:
    raw, pipeline, io = _follower()
    raw.step(_append(1, 0, 0, [(1, 1)]))
    _drain(pipeline)
    conf = ConfState(voters=(NodeId("n1"), NodeId("n2"), NodeId("n3")))
    snapshot = Snapshot(meta=SnapshotMeta(index=Index(10), term=Term(1), conf_state=conf),
                        data=b"image")
    raw.step(InstallSnapshot(source=NodeId("n2"), target=NodeId("n1"), term=Term(1),
                             snapshot=snapshot))
    assert pipeline.next_ready() is None and pipeline.holding
    assert len(io.writes) == 1  # the snapshot waits for the running write
    io.complete()
    assert io.writes[1].snapshot == snapshot
    assert pipeline.next_ready() is None  # not durable yet: nothing to restore
    io.complete()
    (rd,) = _drain(pipeline)
    assert rd.snapshot == snapshot and not pipeline.holding
    assert io.acks() == [1, 10]


def test_without_async_writes_a_written_ready_is_applied_after_its_write() -> None:
    raw, pipeline, io = _follower(async_writes=False)
    raw.step(_append(1, 0, 0, [(1, 1)]))
    assert pipeline.next_ready() is None and pipeline.holding
    io.complete()
    assert io.acks() == [1]
    assert len(_drain(pipeline)) == 1
    assert not pipeline.holding


def test_applied_must_follow_next_ready() -> None:
    raw, pipeline, _ = _follower()
    raw.step(_append(1, 0, 0, [(1, 1)]))
    assert pipeline.next_ready() is not None
    with pytest.raises(InvariantViolation):
        pipeline.next_ready()

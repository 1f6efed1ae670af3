"""The Ready pipeline: the one order in which a replica sends, persists and applies its Readys.

Both the server (`phalanx.server.group`, driven by asyncio and a real disk) and the simulator
(`phalanx.sim`, driven by a simulated disk and clock) run this code, so every simulated seed
exercises the write path production runs. See docs/architecture.md ("the Ready loop").

Rules of this file:
- Sans-IO: no asyncio, clocks, threads or files. IO is injected through `ReadyIO`: `send`
  hands messages to the network, `start_write` hands one `LogWrite` to durable storage, and the
  driver calls `write_done()` once that write is durable (one write runs at a time).
- The driver loops `rd = next_ready()`; applies `rd` (restore its snapshot if any, apply its
  committed entries, calling `RawNode.apply_conf_change` for configuration entries, serve its
  read states); `applied(rd)`; until `next_ready()` returns None. It calls `next_ready()` again
  whenever the node may have work (a tick, a message, a proposal, a `write_done`).
- Asynchronous writes (etcd's AsyncStorageWrites; diss. §10.2.1): a Ready's `messages` leave at
  once, its entries and hard state join the log write, and its committed entries are applied at
  once (durable on a quorum already; the state machine lives in memory). Its
  `persisted_messages` (votes, acknowledgements) leave, and `RawNode.persisted` is called, only
  when its write and every earlier one are durable, in Ready order.
- Group commit: while a write runs, every Ready handed out joins the next write (their entries
  merged, a later Ready's overwrite of a suffix replacing it, §5.3): one write, one fsync.
- A change of the commit index alone costs no write: it rides with the next one (the commit
  index is volatile, Raft paper Figure 2; a restarted replica relearns it).
- A Ready with a snapshot is held: it waits for every earlier write, is written on its own, and
  is handed to the application only once durable (restore, then apply). With
  `async_writes=False` every Ready that must be written is held the same way (the classic
  persist-then-apply loop; the simulator runs half its seeds so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from phalanx.errors import require
from phalanx.raft.messages import Message
from phalanx.raft.node import RawNode, Ready
from phalanx.raft.types import Entry, HardState, Snapshot


@dataclass(frozen=True, slots=True)
class LogWrite:
    """One write to durable storage: the snapshot (if any), then the entries, then the hard
    state (if any), atomically, with one fsync."""

    entries: Sequence[Entry]
    hard_state: HardState | None
    snapshot: Snapshot | None


class ReadyIO(Protocol):
    """The IO a `ReadyPipeline` drives."""

    def send(self, messages: Sequence[Message]) -> None:
        """Hand `messages` to the network (they may be lost; Raft retries)."""

    def start_write(self, write: LogWrite) -> None:
        """Start writing `write` durably; call `ReadyPipeline.write_done()` once it is."""


class ReadyPipeline:
    """Drives one `RawNode` through its Readys with asynchronous, batched log writes."""

    def __init__(self, raw: RawNode, io: ReadyIO, *, async_writes: bool = True) -> None:
        self.raw = raw
        self.io = io
        self.async_writes = async_writes
        #: The newest hard state handed out and not yet written.
        self._pending_hard: HardState | None = None
        #: Readys waiting for the next write, the entries they hand out (merged), and whether
        #: any of them needs a sync (else they only wait for earlier writes).
        self._queued: list[Ready] = []
        self._queued_entries: list[Entry] = []
        self._queued_sync = False
        #: The Readys of the running write (None: no write runs).
        self._writing: list[Ready] | None = None
        #: A Ready held back until its own write is durable, and whether it is.
        self._held: Ready | None = None
        self._held_started = False
        self._held_durable = False
        #: The Ready handed to the application and not yet `applied`.
        self._applying: Ready | None = None

    # -- state -------------------------------------------------------------------------------
    @property
    def writing(self) -> bool:
        """True while a write runs."""
        return self._writing is not None

    @property
    def holding(self) -> bool:
        """True while a Ready waits for its write before it may be applied (a snapshot's, or
        any with `async_writes=False`): no new Ready is taken from the node meanwhile, and the
        application must not take a snapshot of its own."""
        return self._held is not None

    # -- the loop ----------------------------------------------------------------------------
    def next_ready(self) -> Ready | None:
        """The next Ready to apply now (then call `applied`), or None: nothing to apply now."""
        require(self._applying is None, "next_ready() called before applied()")
        held = self._held
        if held is not None:
            if not self._held_durable:
                return None
            self._held = None
            self._applying = held
            return held
        rd = self.raw.ready()
        if rd is None:
            return None
        if rd.messages:
            self.io.send(rd.messages)
        if rd.hard_state is not None:
            self._pending_hard = rd.hard_state
        must_write = bool(rd.entries) or (rd.hard_state is not None and rd.must_sync)
        if rd.snapshot is not None or (must_write and not self.async_writes):
            self._held, self._held_started, self._held_durable = rd, False, False
            self._start_next()
            return None
        if must_write or rd.persisted_messages or self._writing is not None or self._queued:
            self._queue(rd, must_write)
        else:
            self.raw.persisted(rd)  # nothing to write, nothing to wait for
        self._applying = rd
        return rd

    def applied(self, rd: Ready) -> None:
        """The application applied `rd` (see the module rules); the next Ready may follow."""
        require(rd is self._applying, "applied() for a Ready that was not handed out")
        self._applying = None
        self.raw.advance_applied(rd)

    def write_done(self) -> None:
        """The running write is durable: release its acknowledgements, start the next one."""
        batch = self._writing
        require(batch is not None, "write_done() without a running write")
        assert batch is not None
        self._writing = None
        self._finish(batch)
        if self._held is not None and self._held_started:
            self._held_durable = True
        self._start_next()

    # -- writes ------------------------------------------------------------------------------
    def _queue(self, rd: Ready, must_write: bool) -> None:
        self._queued.append(rd)
        if rd.entries:
            merged = self._queued_entries
            first = rd.entries[0].index
            if merged and first <= merged[-1].index:
                # A later Ready overwrote a suffix handed out earlier (§5.3): write the new one.
                del merged[max(0, first - merged[0].index):]
            merged.extend(rd.entries)
        self._queued_sync = self._queued_sync or must_write
        self._start_next()

    def _start_next(self) -> None:
        while self._writing is None:
            if self._queued:
                batch, entries, must_sync = self._queued, self._queued_entries, self._queued_sync
                self._queued, self._queued_entries, self._queued_sync = [], [], False
                if not must_sync:
                    # Only acknowledgements that waited for earlier writes: durable now.
                    self._finish(batch)
                    continue
                self._write(batch, LogWrite(entries, self._take_hard_state(), None))
            elif self._held is not None and not self._held_started:
                held = self._held
                self._held_started = True
                self._write([held], LogWrite(held.entries, self._take_hard_state(),
                                             held.snapshot))
            return

    def _take_hard_state(self) -> HardState | None:
        hard_state, self._pending_hard = self._pending_hard, None
        return hard_state

    def _write(self, batch: list[Ready], write: LogWrite) -> None:
        self._writing = batch
        self.io.start_write(write)

    def _finish(self, batch: list[Ready]) -> None:
        for rd in batch:
            if rd.persisted_messages:
                self.io.send(rd.persisted_messages)
            self.raw.persisted(rd)


__all__ = ["LogWrite", "ReadyIO", "ReadyPipeline"]

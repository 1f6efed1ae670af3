"""The replicated key-value state machine: the Redis data model every Raft replica applies.

What this module holds: `KVStateMachine`, the log-facing core. It applies committed entries
(decode, advance the replicated clock, deduplicate client retries, dispatch), serves local
reads, reports expired keys for the leader's sweep, and takes / restores / splits / merges
snapshots. The data lives in a `Keyspace` (`keyspace.py`); the commands live in one module per
family (`commands/`), registered in the one command table (`table.py`).

Rules of this module:
- Deterministic: the state after applying a sequence of log entries, every reply, and the
  snapshot bytes depend only on those entries. No clocks, no randomness, no iteration over a
  set that reaches a reply or a snapshot unless sorted (SMEMBERS is sorted).
- Time is replicated: each command carries `now_ms`, stamped by the leader. The machine keeps a
  monotonic replicated clock (`max` of every applied `now_ms`), so a new leader whose clock lags
  cannot bring an expired key back. A key is logically absent once `clock >= expire_at`.
- Only `apply` mutates state. Read commands (through `apply` or `read`) treat expired keys as
  absent without deleting them; write commands delete an expired key they touch first. Expired
  keys are otherwise removed by the leader proposing `PHALANX.EXPIRE key expire_at` for what
  `expired_keys()` reports (see `commands/keys.py`).
- `apply` never raises for a bad command: garbage, unknown commands, wrong arity, wrong types
  all come back as `Error` replies with Redis's exact text. It raises `InvariantViolation` only
  for a broken caller contract (an index that does not advance).
- Client sessions (Raft dissertation §6.3, "Implementing linearizable semantics"): a command
  carrying (client_id, sequence, first_unacked) runs at most once. The session keeps the reply
  of every sequence at or after `first_unacked` (the client's lowest request still waiting for
  its reply: many requests may be in flight, and their entries may even be applied out of
  order); a request seen before gets the cached reply instead of running again, a request
  below `first_unacked` (its reply was acknowledged and discarded) gets an error. An entry
  without `first_unacked` counts as `first_unacked = sequence` (one request at a time).
  Sessions expire deterministically: on the replicated clock (the same on every replica), a
  session unused for `SESSION_EXPIRY_MS` is dropped when a later session command is applied,
  and the table is bounded (least recently used client evicted). Both are part of the
  snapshot. A client's session starts with its first request (there is no RegisterClient
  entry): its retries must end well within the expiry (a forwarding node retries for one
  request timeout, seconds).
- Transactions: a `PHALANX.EXEC` entry runs a whole MULTI ... EXEC (`transaction.py`). Every
  applied entry advances the keyspace's version clock by one, and the WATCH versions (see
  keyspace.py) are part of the snapshot; a split's new shard keeps counting from its parent's
  clock and a merge moves the clock past both, so a version read before either stays
  comparable (a transaction watched before can only abort).
- See docs/architecture.md (the kv layer, "how to add a command").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from phalanx.errors import Corrupt, require
from phalanx.kv.codec import decode_fields
from phalanx.kv.commands.scripts import Scripts, script_handler
from phalanx.kv.digest import RUN_KEYS, DigestBuilder, state_digest
from phalanx.kv.keyspace import Keyspace
from phalanx.kv.replies import Error, Reply, arity_error, error_text
from phalanx.kv.snapshot import ClientSession, SnapshotState, WatchVersions, encode_snapshot
from phalanx.kv.snapshot_stream import (
    STREAM_FORMAT_VERSION,
    SnapshotReader,
    SnapshotWriter,
    decode_any,
    snapshot_version,
)
from phalanx.kv.spec import Args, Handler
from phalanx.kv.table import STATE_MACHINE_COMMANDS, command_spec, is_known, is_write
from phalanx.kv.transaction import exec_placeholder, run_transaction

DEFAULT_MAX_SESSIONS = 100_000
#: A client session unused for this long on the replicated clock is forgotten (§6.3). A
#: forwarding node retries a request for one request timeout (seconds), far below this.
SESSION_EXPIRY_MS = 15 * 60 * 1000
_MISSING = object()


class _Dispatch(NamedTuple):
    handler: Handler
    arity: int  # Redis convention: counts the name; negative means "at least -arity"
    lower_name: str


def _dispatch_table() -> dict[bytes, _Dispatch]:
    table: dict[bytes, _Dispatch] = {}
    for spec in STATE_MACHINE_COMMANDS:
        handler = spec.handler
        assert handler is not None  # checked when the table is built
        entry = _Dispatch(handler, spec.arity, spec.name)
        table[spec.name.upper().encode()] = entry
        # The lowercase alias spares an `upper()` on the hot path for lowercase clients.
        table[spec.name.encode()] = entry
    return table


_DISPATCH = _dispatch_table()


def _static_keys(name: bytes, args: Sequence[bytes]) -> list[bytes]:
    """The keys of `name args...` at its table row's key positions (placement's rule)."""
    spec = command_spec(name)
    if spec is None or spec.first_key <= 0:
        return []
    count = len(args)
    last = spec.last_key if spec.last_key >= 0 else count + 1 + spec.last_key
    return [args[position - 1]
            for position in range(spec.first_key, min(last, count) + 1, spec.step)]


class KVStateMachine:
    """The Redis data model as a deterministic Raft state machine (see the module rules)."""

    __slots__ = ("_applied_index", "_clock_ms", "_key_owned", "_keyspace", "_max_sessions",
                 "_sessions", "external", "scripts")

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        require(max_sessions >= 1, "max_sessions must be at least 1")
        self._max_sessions = max_sessions
        self._keyspace = Keyspace()
        #: client id -> its session (§6.3), least recently used first.
        self._sessions: dict[int, ClientSession] = {}
        self._applied_index = 0
        self._clock_ms = 0
        #: Scripting (commands/scripts.py): the replicated script cache and the Lua engine.
        self.scripts = Scripts()
        self._key_owned: Callable[[bytes], bool] | None = None
        #: Commands run by the owner of this machine instead of the keyspace (upper-case name
        #: -> handler(args, now)), after the log-entry bookkeeping (clock, client de-duplication):
        #: the shard's active-active store (placement/shard.py).
        self.external: dict[bytes, Callable[[Args, int], Reply]] = {}

    @property
    def key_owned(self) -> Callable[[bytes], bool] | None:
        """Slot ownership of keys a command forms itself (SORT's BY/GET patterns), set by the
        shard (placement/shard.py); kept across snapshot restores."""
        return self._key_owned

    @key_owned.setter
    def key_owned(self, check: Callable[[bytes], bool] | None) -> None:
        self._key_owned = check
        self._keyspace.key_owned = check

    # ------------------------------------------------------------------ public API

    @property
    def applied_index(self) -> int:
        """The index of the last log entry applied (0 before any)."""
        return self._applied_index

    @property
    def key_count(self) -> int:
        """Keys held, including expired keys whose deletion has not been applied yet."""
        return len(self._keyspace.data)

    @property
    def expire_count(self) -> int:
        """Keys with a TTL (INFO keyspace's `expires`)."""
        return len(self._keyspace.expires)

    @property
    def clock_ms(self) -> int:
        """The replicated clock: the largest `now_ms` applied so far."""
        return self._clock_ms

    def apply(self, index: int, data: bytes) -> Reply:
        """Apply the committed log entry `index` carrying `data`; return the client's reply.

        Empty `data` (a leader's no-op entry) only advances the applied index.
        """
        require(index > self._applied_index,
                f"applied index must advance: {index} after {self._applied_index}")
        self._applied_index = index
        self._keyspace.version += 1
        if not data:
            return None
        try:
            name, args, now, client_id, sequence, first_unacked = decode_fields(data)
        except Corrupt as exc:
            return Error(f"ERR corrupt command in log entry {index}: {exc}")
        if now > self._clock_ms:
            self._clock_ms = now
        else:
            now = self._clock_ms
        if client_id is None or sequence is None:
            return self._execute(name, args, now)
        return self._session_apply(client_id, sequence,
                                   sequence if first_unacked is None else first_unacked,
                                   name, args, now)

    def _session_apply(self, client_id: int, sequence: int, first_unacked: int, name: bytes,
                       args: Args, now: int) -> Reply:
        """Apply a command of a client session at most once (Raft dissertation §6.3)."""
        sessions = self._sessions
        # Expiry first, on the replicated clock: deterministic on every replica. The table is
        # in order of last use and the clock never goes back, so the oldest are at the front.
        while sessions:
            oldest_id, oldest = next(iter(sessions.items()))
            if now - oldest.last_active_ms < SESSION_EXPIRY_MS:
                break
            del sessions[oldest_id]
        session = sessions.get(client_id)
        if session is None:
            session = sessions[client_id] = ClientSession(first_unacked, now, {})
            if len(sessions) > self._max_sessions:
                del sessions[next(iter(sessions))]
        else:
            session.last_active_ms = now
            if next(reversed(sessions)) != client_id:  # most recently used last
                del sessions[client_id]
                sessions[client_id] = session
            if first_unacked > session.first_unacked:
                # The client has the replies below `first_unacked`: discard them (§6.3).
                session.first_unacked = first_unacked
                replies = session.replies
                if len(replies) == 1:
                    if next(iter(replies)) < first_unacked:
                        replies.clear()
                else:
                    for acknowledged in [seq for seq in replies if seq < first_unacked]:
                        del replies[acknowledged]
        cached = session.replies.get(sequence, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        if sequence < session.first_unacked:
            return Error(
                f"ERR request {sequence} of client {client_id} was already acknowledged "
                f"(superseded: the first unacknowledged request is {session.first_unacked}); "
                f"its reply is no longer cached"
            )
        reply = self._execute(name, args, now)
        session.replies[sequence] = reply
        return reply

    def read(self, command_name: bytes | str, args: Sequence[bytes], now_ms: int) -> Reply:
        """Answer a read-only command from local state at `now_ms`, without mutating it.

        Used after ReadIndex (or under a lease). `now_ms` is the caller's notion of the
        current time; the replicated clock is never moved backwards by it.
        """
        name = command_name.encode() if isinstance(command_name, str) else command_name
        if is_known(name) and is_write(name):
            return Error(f"ERR '{error_text(name).lower()}' is a write command; "
                         "it must go through the log")
        return self._execute(name, args, max(now_ms, self._clock_ms))

    def is_write(self, command_name: bytes | str) -> bool:
        """True when the command must go through the log (see the module-level `is_write`)."""
        return is_write(command_name)

    def expired_keys(self, now_ms: int, limit: int) -> list[tuple[bytes, int]]:
        """Up to `limit` keys logically expired at `now_ms`, earliest first, with their expiry.

        The leader proposes `PHALANX.EXPIRE key expire_at` for each (see `expire_command_args`).
        Reading only: the same keys are reported again until their deletion is applied.
        """
        return self._keyspace.expired(now_ms, limit)

    def plant_lie(self, key: bytes, value: bytes) -> None:
        """Set a string value WITHOUT a log entry: what a disk that lies does to a replica
        (the chaos lab's fault injection, `POST /faults/lie`, server/disk_faults.py; nothing
        else may call it: only the consistency checker can see the difference)."""
        self._keyspace.store(key, value)

    def digest(self) -> str:
        """A digest of the data and expiry times, equal on replicas with equal data (see
        digest.py; the consistency checker compares it across replicas)."""
        return state_digest(self._keyspace.data, self._keyspace.expires)

    def digest_builder(self, run_keys: int = RUN_KEYS) -> DigestBuilder:
        """`digest()` of the state now, computed a step at a time while entries keep being
        applied (digest.py, `DigestBuilder`); the same digest on every replica."""
        return DigestBuilder(self._keyspace, run_keys)

    def snapshot(self) -> bytes:
        """The whole state as deterministic bytes (see snapshot.py)."""
        keyspace = self._keyspace
        return encode_snapshot(
            self._applied_index, self._clock_ms, keyspace.data, keyspace.expires,
            self._sessions, WatchVersions(keyspace.version, keyspace.floor, keyspace.touched),
            self.scripts.cache,
        )

    def snapshot_writer(self, frame_keys: int = 4096) -> SnapshotWriter:
        """A format 6 snapshot of the state now, written frame by frame while entries keep
        being applied (kv/snapshot_stream.py); the same bytes on every replica."""
        return SnapshotWriter(self._keyspace, self._applied_index, self._clock_ms,
                              self._sessions, self.scripts.cache, frame_keys=frame_keys)

    def restore_steps(self, data: bytes | memoryview) -> Iterator[None]:
        """`restore`, one frame per step (format 6; older formats in one step): the state is
        replaced only at the last step, once everything checked; raises Corrupt if bad."""
        if snapshot_version(data) == STREAM_FORMAT_VERSION:
            reader = SnapshotReader(data)
            while not reader.step():
                yield
            self._install(reader.state())
        else:
            self._install(decode_any(data))

    def extract(self, predicate: Callable[[bytes], bool], applied_index: int) -> bytes:
        """Remove every key for which `predicate(key)` is true and return them as a snapshot
        whose applied index is `applied_index` (a shard split: the new shard starts from it).

        Deterministic: replicas holding the same state extract byte-identical snapshots.
        Client sessions stay here (a retried request is answered by the shard that ran it).
        The new shard keeps this version clock and counts every key changed now.
        """
        keyspace = self._keyspace
        moved = {key: value for key, value in keyspace.data.items() if predicate(key)}
        moved_expires = {key: at for key, at in keyspace.expires.items() if key in moved}
        for key in moved:
            keyspace.delete(key)
        keyspace.forget_indexes()
        version = keyspace.version
        return encode_snapshot(applied_index, self._clock_ms, moved, moved_expires, {},
                               WatchVersions(version, version, {}), dict(self.scripts.cache))

    def absorb(self, data: bytes) -> int:
        """Add every key of snapshot `data` (another shard's, merged into this one); keys
        already here are replaced. Returns how many keys came in; raises Corrupt if bad."""
        state = decode_any(data)
        keyspace = self._keyspace
        for key, value in state.data.items():
            if key in keyspace.data:
                keyspace.delete(key)
            keyspace.data[key] = value
        keyspace.expires.update(state.expires)
        keyspace.forget_indexes()
        # Every key counts as changed, at a version past both shards' clocks: a version read
        # on either shard before the merge is older.
        theirs = state.watch.version if state.watch is not None else state.applied_index
        keyspace.version = max(keyspace.version, theirs) + 1
        keyspace.touch_all()
        for sha, body in state.scripts.items():
            self.scripts.cache.setdefault(sha, body)
        return len(state.data)

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; raises Corrupt (state unchanged) if bad."""
        self._install(decode_any(data))

    def _install(self, state: SnapshotState) -> None:
        self._applied_index = state.applied_index
        self._clock_ms = state.clock_ms
        watch = state.watch
        if watch is None:  # written before WATCH versions: every key changed at the snapshot
            self._keyspace = Keyspace(state.data, state.expires, state.applied_index,
                                      None, state.applied_index)
        else:
            self._keyspace = Keyspace(state.data, state.expires, watch.version, watch.touched,
                                      watch.floor)
        self._keyspace.key_owned = self._key_owned
        self._sessions = state.sessions
        self.scripts.cache = state.scripts

    # ------------------------------------------------------------------ dispatch

    def _execute(self, name: bytes, args: Args, now: int) -> Reply:
        if self.external:
            hook = self.external.get(name.upper())
            if hook is not None:
                return hook(args, now)
        entry = _DISPATCH.get(name) or _DISPATCH.get(name.upper())
        if entry is None:
            shown = "".join(f"'{error_text(arg[:128])}' " for arg in args[:16])
            return Error(f"ERR unknown command '{error_text(name[:128])}', "
                         f"with args beginning with: {shown}")
        handler, arity, lower_name = entry
        count = len(args) + 1
        if (arity > 0 and count != arity) or count < -arity:
            return arity_error(lower_name)
        if handler is exec_placeholder:
            return run_transaction(self._keyspace, args, now, self._execute, _static_keys)
        if handler is script_handler:  # EVAL*, SCRIPT: they need the cache and the dispatch
            return self.scripts.execute(lower_name.upper().encode(), args, now,
                                        self._applied_index, self._keyspace, self._execute,
                                        command_spec)
        try:
            return handler(self._keyspace, args, now)
        except RecursionError:
            return Error("ERR pattern too complex")

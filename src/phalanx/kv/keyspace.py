"""The keyspace: every key's value and expiry, plus the read-side indexes built from them.

What this module holds:
- `Keyspace`: one dict of key -> value (bytes, dict, set, deque, ZSet or Stream) and a second dict of
  key -> expire-at (ms) only for keys with a TTL. Those two dicts are the replicated state (the
  snapshot writes them); `KVStateMachine` owns one `Keyspace` and hands it to every command.
- The helpers every command family uses: `live` (read: an expired key is absent, never
  deleted), `live_for_write` (write: an expired key is deleted first), `store`, `delete`,
  `set_expire`, `clear`.
- The WATCH versions (see "WATCH versions" below): `version`, `touched`, `floor`,
  `version_of`. They are replicated state (the snapshot writes them).
- Two auxiliary indexes, built lazily and only on the replica that uses them, never part of
  the state: the expiry heap behind `expired` (the leader's sweep) and the SCAN index behind
  `scan_from`.

Rules of this module:
- Deterministic and pure (standard library only). A key is logically absent once
  `now >= expire_at`; `now` is always the replicated clock the state machine passes in.
- Commands change `data` / `expires` only through these helpers (or, for a key already
  present, by assigning `data[key]` / popping `expires[key]` after `live_for_write`), so the
  indexes stay consistent and a snapshot being written sees every change coming
  (`before_change`, see kv/snapshot_stream.py).
- SCAN order is by a 64-bit BLAKE2b hash of the key, and the cursor is a hash value: it is
  valid on every replica (the order depends only on the key set) and keys present for the whole
  iteration are returned at least once, whatever is added or deleted meanwhile.
- See docs/architecture.md (the kv layer).

WATCH versions (what makes WATCH correct across failover and snapshots):
- `version` is the keyspace's version clock: the state machine adds one for every log entry it
  applies (no-ops included), so it is the same on every replica at the same log position. It is
  not the log index: a shard cut out by a split starts its log at 1 but keeps counting from its
  parent's version, so a WATCH taken on the parent stays comparable.
- Every change of a key records the current version for it in `touched`: `store`, `delete`,
  `set_expire`, `clear` (FLUSHDB/FLUSHALL: every key present), and `live_for_write` on a key
  present (the handle a write command takes before changing a value in place; a write that
  then leaves the key unchanged counts as a change: a spurious abort, never a missed one).
- `version_of(key)` is the version of the last change of `key` (deleted keys included), or
  `floor` for a key not in `touched`. `touched` is bounded (`WATCH_TABLE_SIZE` keys, kept in
  version order): past the bound its older half is forgotten and `floor` rises to the newest
  forgotten version, so a key never reports a version older than its last change. A WATCH
  remembers the version clock at a linearizable read; EXEC aborts if `version_of(key)` is
  newer (see `kv/transaction.py`). Forgetting can only make EXEC abort spuriously, when about
  `WATCH_TABLE_SIZE / 2` distinct keys of the shard changed between WATCH and EXEC.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from hashlib import blake2b

from phalanx.kv.snapshot import Value

WATCH_TABLE_SIZE = 1 << 16
"""Most keys whose last change version is kept exactly (see "WATCH versions" above). Part of
the replicated behaviour: every replica must use the same value."""


def scan_hash(key: bytes) -> int:
    """The SCAN position of a key: a 64-bit hash that is the same on every replica."""
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big")


class _ScanIndex:
    """Keys sorted by `scan_hash`, plus the keys added since the sort (read-side cache only).

    Deleted keys stay in the sorted part until the next rebuild and are skipped when scanned.
    """

    __slots__ = ("added", "hashes", "keys", "removed")

    def __init__(self, keys: Sequence[bytes]) -> None:
        pairs = sorted([(scan_hash(key), key) for key in keys])
        self.hashes = array("Q", [pair[0] for pair in pairs])
        self.keys = [pair[1] for pair in pairs]
        self.added: list[bytes] = []
        self.removed = 0

    def stale(self) -> bool:
        """True when enough changed since the sort that a rebuild is cheaper than merging."""
        return len(self.added) + self.removed > 256 + len(self.keys) // 8


class Keyspace:
    """The values and expiries of every key, and the lazily built indexes over them."""

    __slots__ = ("_expiry_heap", "_scan", "before_change", "data", "expires", "floor",
                 "key_owned", "touched", "version")

    def __init__(
        self,
        data: dict[bytes, Value] | None = None,
        expires: dict[bytes, int] | None = None,
        version: int = 0,
        touched: dict[bytes, int] | None = None,
        floor: int = 0,
    ) -> None:
        self.data: dict[bytes, Value] = {} if data is None else data
        """Key -> value, in insertion order (the snapshot keeps it)."""
        self.expires: dict[bytes, int] = {} if expires is None else expires
        """Key -> expire-at in ms, only for keys with a TTL."""
        self.version = version
        """The version clock: one more for every applied log entry (see the module rules)."""
        self.touched: dict[bytes, int] = {} if touched is None else touched
        """Key -> version of its last change, in version order (insertion order: a change
        re-inserts the key last), at most WATCH_TABLE_SIZE keys."""
        self.floor = floor
        """The version of every key not in `touched` (the newest evicted entry's)."""
        self._expiry_heap: list[tuple[int, bytes]] | None = None
        self._scan: _ScanIndex | None = None
        self.key_owned: Callable[[bytes], bool] | None = None
        """Whether this shard owns a key a command did not declare (SORT's BY/GET patterns),
        checked at apply time; None (a bare state machine): every key is local."""
        self.before_change: Callable[[bytes], None] | None = None
        """Called with a key just before `store`, `delete` or `touch` changes it, while a
        snapshot is being written (`kv/snapshot_stream.py`: copy on write); None otherwise."""

    # ------------------------------------------------------------------ reading

    def live(self, key: bytes, now: int) -> Value | None:
        """The value of `key` at `now`, or None if absent or expired. Never mutates."""
        value = self.data.get(key)
        if value is not None and self.expires:
            when = self.expires.get(key)
            if when is not None and now >= when:
                return None
        return value

    def version_of(self, key: bytes) -> int:
        """The version of the last change of `key` (or `floor`; see the module rules)."""
        return self.touched.get(key, self.floor)

    # ------------------------------------------------------------------ writing

    def touch(self, key: bytes) -> None:
        """Record that `key` changes at the current version (see the module rules)."""
        if self.before_change is not None:
            self.before_change(key)
        touched = self.touched
        touched.pop(key, None)  # re-inserted last: `touched` stays in version order
        touched[key] = self.version
        if len(touched) > WATCH_TABLE_SIZE:
            self._evict()

    def _evict(self) -> None:
        """Forget the older half of `touched` at once (one pass, and the dict is rebuilt
        compact); `floor` becomes the newest forgotten version."""
        items = iter(self.touched.items())
        for _ in range(WATCH_TABLE_SIZE // 2):
            self.floor = next(items)[1]
        self.touched = dict(items)

    def touch_all(self) -> None:
        """Record that every key, present or not, changes at the current version (a merge
        brings keys in wholesale; an old snapshot carries no versions)."""
        self.touched = {}
        self.floor = self.version

    def live_for_write(self, key: bytes, now: int) -> Value | None:
        """Like `live`, but an expired key is deleted first (writes only). A key present
        counts as changed (`touch`): the caller takes it to write it."""
        value = self.data.get(key)
        if value is not None:
            if self.expires:
                when = self.expires.get(key)
                if when is not None and now >= when:
                    self.delete(key)
                    return None
            self.touch(key)
        return value

    def store(self, key: bytes, value: Value) -> None:
        """Put `value` at `key` (keeping any TTL)."""
        data = self.data
        if self.before_change is not None:
            self.before_change(key)
        if self._scan is not None and key not in data:
            self._scan.added.append(key)
        data[key] = value
        touched = self.touched  # `touch`, inlined: every write of every client comes here
        touched.pop(key, None)
        touched[key] = self.version
        if len(touched) > WATCH_TABLE_SIZE:
            self._evict()

    def delete(self, key: bytes) -> None:
        """Remove `key` (present) and its TTL."""
        if self.before_change is not None:
            self.before_change(key)
        del self.data[key]
        if self.expires:
            self.expires.pop(key, None)
        if self._scan is not None:
            self._scan.removed += 1
        self.touch(key)

    def set_expire(self, key: bytes, when: int) -> None:
        """Give `key` (present) the expiry `when` (ms), replacing any."""
        self.expires[key] = when
        if self._expiry_heap is not None:
            heapq.heappush(self._expiry_heap, (when, key))
        self.touch(key)

    def clear(self) -> None:
        """Remove every key (FLUSHDB). Every key present counts as changed (Redis 7.0 touches
        the watched keys that existed)."""
        if len(self.data) >= WATCH_TABLE_SIZE:
            self.touch_all()
        else:
            for key in self.data:
                self.touch(key)
        self.data = {}
        self.expires = {}
        self.forget_indexes()

    def forget_indexes(self) -> None:
        """Drop the lazily built indexes (after a bulk change); they are rebuilt on next use."""
        self._expiry_heap = None
        self._scan = None

    # ------------------------------------------------------------------ indexes

    def expired(self, now_ms: int, limit: int) -> list[tuple[bytes, int]]:
        """Up to `limit` keys logically expired at `now_ms`, earliest first, with their expiry.

        Reading only: the same keys are reported again until their deletion is applied.
        """
        heap = self._expiry_heap
        if heap is None:
            heap = [(when, key) for key, when in self.expires.items()]
            heapq.heapify(heap)
            self._expiry_heap = heap
        elif len(heap) > 2 * len(self.expires) + 1024:
            heap[:] = [(when, key) for key, when in self.expires.items()]
            heapq.heapify(heap)
        found: list[tuple[int, bytes]] = []
        expires = self.expires
        while heap and len(found) < limit and heap[0][0] <= now_ms:
            entry = heapq.heappop(heap)
            if expires.get(entry[1]) == entry[0] and (not found or found[-1] != entry):
                found.append(entry)
        for entry in found:
            heapq.heappush(heap, entry)
        return [(key, when) for when, key in found]

    def scan_from(self, cursor: int, count: int, now: int) -> tuple[int, list[bytes]]:
        """About `count` live keys in hash order from `cursor`, and the cursor after them."""
        index = self._scan
        if index is None or index.stale():
            index = self._scan = _ScanIndex(list(self.data))
        start = bisect_left(index.hashes, cursor)
        hashes, sorted_keys = index.hashes, index.keys
        sorted_part = ((hashes[i], sorted_keys[i]) for i in range(start, len(sorted_keys)))
        added = sorted(
            entry for entry in ((scan_hash(key), key) for key in index.added)
            if entry[0] >= cursor
        )
        keys: list[bytes] = []
        seen: set[bytes] = set()
        last_hash = -1
        for entry_hash, key in heapq.merge(sorted_part, added):
            if len(keys) >= count and entry_hash != last_hash:
                return entry_hash, keys
            last_hash = entry_hash
            if key not in seen and self.live(key, now) is not None:
                seen.add(key)
                keys.append(key)
        return 0, keys

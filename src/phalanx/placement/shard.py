"""The state machine of one data shard: the Redis data model plus the slots the shard owns.

Why ownership lives in the replicated state: routing uses each node's copy of the cluster map,
which lags. After a split, a write for a moved slot may still reach the old shard; if the old
shard applied it, the new shard (created from the split point) would never see it. So every
command's keys are checked against the owned slots AT APPLY TIME, in log order, on every
replica: a command for a slot this shard no longer owns is refused with `-TRYAGAIN` (certainly
not applied; the router retries with a newer map). The check is deterministic, so replicas agree.

A split is a log entry (`PHALANX.SPLIT first last new_shard`): every replica applies it at the
same index, removes the keys of those slots from its own data, and keeps them as the new shard's
initial snapshot (`SplitOff`); the node turns that into a new Raft group on the same replicas.
This is CockroachDB's split trigger, on Raft's log.

A merge of shard R into shard L (both on the same replicas) is two log entries: R applies
`PHALANX.FREEZE L` (it stops serving and hands every slot to L: from then on its state never
changes, so every replica has the same frozen image), then L applies `PHALANX.ABSORB R ranges
image` carrying that image (keys and slot ranges join L; applied at most once per source). The
server drives both steps idempotently from the leaders' control loop, so a crash between them
only delays the merge.

The consistency checker (`phalanx.server.consistency`) is log entries too, and decides by a
MAJORITY VOTE over digests, as etcd's corruption check does (a leader whose hash differs from
a quorum's is the corrupt one; CockroachDB's consistency checker compares at one applied index
the same way). The leader proposes `PHALANX.CHECK voter...` naming the configuration's voters;
every replica applying it at index i records the digest of its data at i (`kv/digest.py`: same
applied index and same data, same digest). Each replica then commits its vote,
`PHALANX.DIGEST i node digest`, through the shard's leader. When the votes for one digest
reach a majority of the voters named in the check, that digest is the verdict, at the same
log position on every replica: a replica whose own digest at i differs sets `divergence` (the
server stops that replica and has it rebuilt), WHETHER OR NOT IT LEADS: a divergent leader
stops and the healthy majority elects another one. No majority for any digest (every
replica different) is no verdict: nobody can tell which is right, nothing is stopped. A
replica with no digest at i (it installed a snapshot past i) has nothing to compare and skips.
The digest at i is computed in slices after the CHECK entry is applied, while later entries
keep being applied (`kv/digest.py`, `DigestBuilder`: copy on write, as a snapshot is taken):
a shard of up to `CHECK_SYNC_KEYS` keys gets it at apply time; a bigger one keeps it pending
(`pending_digest`) and the server calls `step_digest` between loop turns
(`ConsistencyChecker.build_digests`). A replica votes only once its digest is known; if the
verdict was applied before its own digest was done, the comparison happens when it is done
(`divergence` is set then, and the server stops the replica the same way). A newer check or
a snapshot installed abandons a pending digest (no digest at i: that replica skips i).
The older two-entry form (`PHALANX.CHECK` with no voters, then `PHALANX.VERIFY i digest`
with the leader's digest as the reference) is still applied as it was, for logs written by
earlier versions.

Active-active keys (docs/active-active.md) live beside the KV data, in `aa`
(`crdt.ActiveActiveStore`): `PHALANX.AA cmd key ...` (a local write: its delta goes to the
shard's outbox) and `PHALANX.AAR cmd key ...` (a read) run there, with the same ownership check;
`PHALANX.AA.MERGE region shard to_seq full items` joins another region's deltas for the keys
this shard owns and records the position pulled to; `PHALANX.AA.PULL shard from max ranges` (a
read) hands out this shard's outbox. Splits and merges of shards carry the store along.

Rules of this file: pure (stdlib, `phalanx.kv`, `phalanx.crdt`, this package); deterministic;
snapshots are the KV snapshot behind a small JSON header that carries the owned and moved-out
slot ranges (and the length of the active-active store's snapshot, which comes first).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from phalanx.crdt import ActiveActiveStore
from phalanx.crdt.store import decode_items
from phalanx.errors import Corrupt
from phalanx.kv import Error, KVStateMachine
from phalanx.kv.codec import decode_fields
from phalanx.kv.commands.activeactive import AA_READ, AA_WRITE
from phalanx.kv.digest import DigestBuilder
from phalanx.kv.replies import Reply
from phalanx.placement.map import coalesce, subtract_range
from phalanx.placement.slots import SLOT_COUNT, command_keys, key_slot

SPLIT_COMMAND = b"PHALANX.SPLIT"
#: Merge, step 1, in the shard that goes away: stop serving, hand every slot to the target.
FREEZE_COMMAND = b"PHALANX.FREEZE"
#: Merge, step 2, in the target: take the frozen shard's slots and keys (carried in the entry).
ABSORB_COMMAND = b"PHALANX.ABSORB"
#: The consistency checker: `PHALANX.CHECK voter...`: record the digest of the data at this
#: entry's index; the voters named are the electorate of the vote on it.
CHECK_COMMAND = b"PHALANX.CHECK"
#: The consistency checker: `PHALANX.DIGEST index node digest`, one replica's vote.
DIGEST_COMMAND = b"PHALANX.DIGEST"
#: The consistency checker's older form: `PHALANX.VERIFY index digest`, the leader's digest.
VERIFY_COMMAND = b"PHALANX.VERIFY"
#: How many recorded check digests a replica keeps (the latest ones).
CHECK_DIGESTS_KEPT = 8
#: A check's digest is computed at apply time when the shard has at most this many keys;
#: bigger shards compute it in slices (see the module docstring).
CHECK_SYNC_KEYS = 4096
#: The Raft index (and term) of a shard's initial snapshot after a split.
SPLIT_SNAPSHOT_INDEX = 1
#: Active-active: join another region's deltas (see the module docstring).
AA_MERGE_COMMAND = b"PHALANX.AA.MERGE"
#: Active-active: read this shard's outbox from a sequence number.
AA_PULL_COMMAND = b"PHALANX.AA.PULL"
_MAGIC = b"PXSHARD1"
#: A frozen image that carries an active-active store too (see `frozen_image`).
_AA_IMAGE = b"PXAAIMG1"
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class SlotMoved(Error):
    """The apply-time refusal of a command for a slot this shard no longer owns (split away or
    merged): certainly not applied, safe to route again with a newer map. Its own type, so the
    router decides by type; the wire text is `message` ("TRYAGAIN slot ...")."""


@dataclass(frozen=True, slots=True)
class SplitOff:
    """A new shard cut out of this one by a split entry (see the module docstring)."""

    new_shard: int
    first_slot: int
    last_slot: int
    #: The new shard's initial state: a ShardMachine snapshot at SPLIT_SNAPSHOT_INDEX.
    snapshot: bytes
    #: The log index of the split entry in the old shard.
    index: int


def split_command(first_slot: int, last_slot: int, new_shard: int) -> tuple[bytes, ...]:
    """The arguments of the split entry (after the command name)."""
    return (str(first_slot).encode(), str(last_slot).encode(), str(new_shard).encode())


class ShardMachine:
    """KVStateMachine + owned slot ranges; the same interface the server's groups use."""

    def __init__(self, owned: tuple[tuple[int, int], ...] = ((0, SLOT_COUNT - 1),)) -> None:
        self.kv = KVStateMachine()
        # A script's undeclared keys are checked against the owned slots at apply time too
        # (kv/commands/scripts.py): they work here, or get a clear error if in another shard.
        self.kv.scripts.key_owned = self._owns_key
        # So are the keys SORT's BY/GET patterns form (kv/commands/sort.py).
        self.kv.key_owned = self._owns_key
        self._owned: tuple[tuple[int, int], ...] = ()
        #: (first, last) -> new shard id, for the slots moved out by splits.
        self.moved: dict[tuple[int, int], int] = {}
        self._owner = bytearray(SLOT_COUNT)
        self._set_owned(owned)
        #: Splits applied since the server last collected them (`take_split_offs`).
        self.split_offs: list[SplitOff] = []
        #: Merge: the shard this one was frozen into (it serves nothing any more), or None.
        self.frozen_into: int | None = None
        #: The consistency checker: check index -> this replica's digest there (the latest
        #: CHECK_DIGESTS_KEPT), and why this replica diverged (None while it agrees).
        self.check_digests: dict[int, str] = {}
        self.divergence: str | None = None
        #: The vote on each check (the same kept ones): its voters, the votes so far (node ->
        #: digest), and the verdict once a majority agrees: (digest, dissenting nodes).
        self.check_voters: dict[int, tuple[str, ...]] = {}
        self.check_votes: dict[int, dict[str, str]] = {}
        self.check_verdicts: dict[int, tuple[str, list[str]]] = {}
        #: The check whose digest is being computed in slices: (index, builder), or None.
        self.pending_digest: tuple[int, DigestBuilder] | None = None
        #: Merge: the shards absorbed into this one (an ABSORB is applied once).
        self.absorbed: set[int] = set()
        #: Active-active keys (crdt/); its `region` is set by the server from configuration.
        #: Local writes go through the KV machine's entry bookkeeping (clock, de-duplication).
        self.aa = ActiveActiveStore()
        self.kv.external[AA_WRITE] = self._aa_write

    def _set_owned(self, owned: tuple[tuple[int, int], ...]) -> None:
        self._owned = tuple(sorted(owned))
        table = bytearray(SLOT_COUNT)
        for first, last in self._owned:
            table[first:last + 1] = b"\x01" * (last - first + 1)
        self._owner = table

    @property
    def owned(self) -> tuple[tuple[int, int], ...]:
        return self._owned

    @property
    def key_count(self) -> int:
        return self.kv.key_count

    def owns(self, slot: int) -> bool:
        return bool(self._owner[slot])

    def _owns_key(self, key: bytes) -> bool:
        return bool(self._owner[key_slot(key)])

    def refusal(self, name: bytes, args: tuple[bytes, ...] | list[bytes]) -> Error | None:
        """The -TRYAGAIN error if the command touches a slot this shard does not own."""
        for key in command_keys(name, args):
            slot = key_slot(key)
            if not self._owner[slot]:
                target = next((shard for (a, b), shard in self.moved.items() if a <= slot <= b),
                              None)
                where = f"shard {target}" if target is not None else "another shard"
                return SlotMoved(f"TRYAGAIN slot {slot} moved to {where}; retry")
        return None

    def apply(self, index: int, data: bytes) -> object:
        if data:
            try:
                name, args = decode_fields(data)[:2]
            except Corrupt:
                return self.kv.apply(index, data)  # the KV machine answers a corrupt entry
            upper = name.upper()
            if upper in (CHECK_COMMAND, VERIFY_COMMAND, DIGEST_COMMAND):
                self.kv.apply(index, b"")
                if upper == CHECK_COMMAND:
                    return self._check(index, args)
                return self._verify(args) if upper == VERIFY_COMMAND else self._vote(args)
            if upper == SPLIT_COMMAND:
                self.kv.apply(index, b"")
                return self._split(index, args)
            if upper == FREEZE_COMMAND:
                self.kv.apply(index, b"")
                return self._freeze(args)
            if upper == ABSORB_COMMAND:
                self.kv.apply(index, b"")
                return self._absorb(args)
            if self.frozen_into is not None:
                self.kv.apply(index, b"")
                return SlotMoved(f"TRYAGAIN slot moved to shard {self.frozen_into} (this "
                                 f"shard was merged into it); retry")
            if upper == AA_MERGE_COMMAND:
                self.kv.apply(index, b"")
                return self._aa_merge(args)
            refused = self.refusal(upper, args)
            if refused is not None:
                self.kv.apply(index, b"")
                return refused
        return self.kv.apply(index, data)

    def _aa_write(self, args: Sequence[bytes], now_ms: int) -> Reply:
        if len(args) < 2:
            return Error("ERR wrong number of arguments for 'phalanx.aa' command")
        return self.aa.execute(args[0], list(args[1:]), now_ms)

    def _aa_merge(self, args: tuple[bytes, ...]) -> object:
        if len(args) != 5 or not args[1].isdigit() or not args[2].isdigit() or \
                args[3] not in (b"0", b"1", b"2"):
            return Error("ERR PHALANX.AA.MERGE takes region shard to_seq full(0|1|2) items")
        try:
            items = decode_items(args[4])
            # full: 0 = deltas, 1 = a full state's last page, 2 = one of its earlier pages.
            return self.aa.merge(args[0].decode(), int(args[1]), int(args[2]),
                                 args[3] == b"1", items, self._owns_key, page=args[3] == b"2")
        except (Corrupt, UnicodeDecodeError) as error:
            return Error(f"ERR PHALANX.AA.MERGE: {error}")

    def _aa_pull(self, args: tuple[bytes, ...]) -> object:
        """`shard from max ranges cursor`: this shard's outbox from `from` (keys of `ranges`,
        "first-last,..." or empty for all; a full state's page after `cursor`), encoded as
        `crdt.PullReply.encode`."""
        if len(args) not in (5, 6) or not all(arg.lstrip(b"-").isdigit() for arg in args[:3]):
            return Error("ERR PHALANX.AA.PULL takes shard from max ranges cursor [signature]")
        try:
            ranges = [tuple(int(n) for n in part.split(b"-", 1))
                      for part in args[3].split(b",") if part]
        except ValueError:
            return Error("ERR PHALANX.AA.PULL: bad slot ranges")
        owner = self._owner

        def wanted(key: bytes) -> bool:
            slot = key_slot(key)
            return bool(owner[slot]) and (not ranges or any(
                r[0] <= slot <= r[-1] for r in ranges))

        return self.aa.pull(int(args[1]), max(1, int(args[2])), wanted, args[4]).encode()

    def _check(self, index: int, args: tuple[bytes, ...] = ()) -> bytes:
        """Start the digest of the data at `index` (and record the check's voters); reply
        `index digest`, or `index pending` while a big shard's digest is computed in slices
        (see the module docstring). The older form (no voters) computes it here."""
        self.abandon_digest()
        if args:
            self.check_voters[index] = tuple(a.decode("utf-8", "replace") for a in args)
            self.check_votes[index] = {}
            builder = self.kv.digest_builder()
            if not builder.step(CHECK_SYNC_KEYS) or builder.result is None:
                self.pending_digest = (index, builder)
                self._forget_old_checks()
                return b"%d pending" % index
            digest = builder.result
        else:
            digest = self.kv.digest()
        self._record_digest(index, digest)
        return b"%d %s" % (index, digest.encode())

    def step_digest(self, budget: int) -> bool:
        """Advance the pending digest by about `budget` keys; True when none is pending any
        more (then `divergence` tells whether it disagrees with a verdict already taken)."""
        pending = self.pending_digest
        if pending is None:
            return True
        index, builder = pending
        if not builder.step(budget) or builder.result is None:
            return False
        self.pending_digest = None
        self._record_digest(index, builder.result)
        return True

    def abandon_digest(self) -> None:
        """Give up the pending digest, if any (a newer check, a snapshot installed)."""
        if self.pending_digest is not None:
            self.pending_digest[1].close()
            self.pending_digest = None

    def _record_digest(self, index: int, digest: str) -> None:
        self.check_digests[index] = digest
        self._forget_old_checks()
        verdict = self.check_verdicts.get(index)
        if verdict is not None and verdict[0] != digest and self.divergence is None:
            votes = self.check_votes.get(index, {})
            agreeing = sum(1 for vote in votes.values() if vote == verdict[0])
            self.divergence = (f"state digest at index {index} is {digest}; a majority of the "
                               f"replicas ({agreeing} of {len(self.check_voters.get(index, ()))})"
                               f" has {verdict[0]}")

    def _forget_old_checks(self) -> None:
        """Keep the latest CHECK_DIGESTS_KEPT digests, and the vote state of those (and of the
        pending one): a verdict needs its check's voters."""
        while len(self.check_digests) > CHECK_DIGESTS_KEPT:
            del self.check_digests[min(self.check_digests)]
        kept = set(self.check_digests)
        if self.pending_digest is not None:
            kept.add(self.pending_digest[0])
        for table in (self.check_voters, self.check_votes, self.check_verdicts):
            for old in [i for i in table if i not in kept]:
                del table[old]

    def _vote(self, args: tuple[bytes, ...]) -> object:
        """One replica's digest at a check index (see the module docstring). Always replies
        OK (a vote for an unknown or decided check, or from a non-voter, changes nothing; the
        voter's own retry must not fail); the verdict is taken when a digest's votes reach a
        majority of the check's voters, and every replica compares its own digest with it."""
        if len(args) != 3 or not args[0].isdigit():
            return Error("ERR PHALANX.DIGEST needs: index node digest")
        index = int(args[0])
        node, digest = args[1].decode("utf-8", "replace"), args[2].decode("ascii", "replace")
        voters = self.check_voters.get(index)
        votes = self.check_votes.get(index)
        if voters is None or votes is None or node not in voters or node in votes:
            return b"OK"
        votes[node] = digest
        verdict = self.check_verdicts.get(index)
        if verdict is not None:
            if digest != verdict[0]:
                verdict[1].append(node)
            return b"OK"
        agreeing = sum(1 for vote in votes.values() if vote == digest)
        if agreeing < len(voters) // 2 + 1:
            return b"OK"
        self.check_verdicts[index] = (digest, sorted(n for n, v in votes.items()
                                                     if v != digest))
        mine = self.check_digests.get(index)
        if mine is not None and mine != digest and self.divergence is None:
            self.divergence = (f"state digest at index {index} is {mine}; a majority of the "
                               f"replicas ({agreeing} of {len(voters)}) has {digest}")
        return b"OK"

    def _verify(self, args: tuple[bytes, ...]) -> bytes:
        """Compare the leader's digest at a check index with ours (see the module docstring).
        Replies OK, SKIPPED (no digest of ours at that index) or MISMATCH."""
        if len(args) != 2 or not args[0].isdigit():
            return b"SKIPPED"
        index, theirs = int(args[0]), args[1].decode("ascii", "replace")
        mine = self.check_digests.get(index)
        if mine is None:
            return b"SKIPPED"
        if mine != theirs:
            if self.divergence is None:
                self.divergence = (f"state digest at index {index} is {mine}, the leader's "
                                   f"is {theirs}")
            return b"MISMATCH"
        return b"OK"

    def read(self, name: bytes, args: tuple[bytes, ...], now_ms: int) -> object:
        if name == AA_PULL_COMMAND:
            return self._aa_pull(args)
        refused = self.refusal(name, args)
        if refused is not None:
            return refused
        if name == AA_READ:
            return self.aa.read(args[0], list(args[1:]), max(now_ms, self.kv.clock_ms))
        return self.kv.read(name, args, now_ms)

    def _split(self, index: int, args: tuple[bytes, ...]) -> object:
        try:
            first, last, new_shard = (int(arg) for arg in args)
        except ValueError:
            return Error("ERR PHALANX.SPLIT takes first_slot last_slot new_shard")
        if not 0 <= first <= last < SLOT_COUNT or new_shard < 1:
            return Error("ERR PHALANX.SPLIT: bad slot range or shard id")
        if not any(a <= first and last <= b for a, b in self._owned):
            return Error(f"ERR PHALANX.SPLIT: slots {first}-{last} are not all owned here")
        remaining = subtract_range(self._owned, first, last)
        if not remaining:
            return Error("ERR PHALANX.SPLIT: the shard would keep no slot")
        kv_blob = self.kv.extract(lambda key: first <= key_slot(key) <= last,
                                  SPLIT_SNAPSHOT_INDEX)
        aa_blob = self.aa.extract(lambda key: first <= key_slot(key) <= last)
        self._set_owned(remaining)
        self.moved[(first, last)] = new_shard
        child = _encode(((first, last),), {}, kv_blob, aa_blob=aa_blob)
        self.split_offs.append(SplitOff(new_shard, first, last, child, index))
        return "OK"

    def _freeze(self, args: tuple[bytes, ...]) -> object:
        if len(args) != 1 or not args[0].isdigit():
            return Error("ERR PHALANX.FREEZE takes the target shard id")
        if self.frozen_into is not None:
            return "OK" if self.frozen_into == int(args[0]) else Error(
                f"ERR this shard is already frozen into shard {self.frozen_into}")
        if not self._owned:
            return Error("ERR PHALANX.FREEZE: this shard owns no slot")
        target = int(args[0])
        for first, last in self._owned:
            self.moved[(first, last)] = target
        self.frozen_into = target
        self._set_owned(())
        return "OK"

    def frozen_image(self) -> tuple[tuple[tuple[int, int], ...], bytes]:
        """(slot ranges, KV snapshot) of a frozen shard: what its merge target absorbs. The
        state no longer changes once frozen, so every replica gives the same bytes."""
        ranges = tuple(r for r, target in sorted(self.moved.items())
                       if target == self.frozen_into)
        aa_blob = self.aa.snapshot()
        if not aa_blob:
            return ranges, self.kv.snapshot()
        return ranges, _AA_IMAGE + _LENGTH.pack(len(aa_blob)) + aa_blob + self.kv.snapshot()

    def _absorb(self, args: tuple[bytes, ...]) -> object:
        if len(args) != 3 or not args[0].isdigit():
            return Error("ERR PHALANX.ABSORB takes source_shard ranges kv_snapshot")
        source = int(args[0])
        if source in self.absorbed:
            return "OK"
        try:
            ranges = tuple((int(a), int(b)) for a, b in json.loads(args[1]))
        except (ValueError, TypeError) as error:
            return Error(f"ERR PHALANX.ABSORB: bad ranges: {error}")
        for first, last in ranges:
            if not 0 <= first <= last < SLOT_COUNT or any(
                    self._owner[first:last + 1]):
                return Error(f"ERR PHALANX.ABSORB: bad or already owned range {first}-{last}")
        image, aa_blob = args[2], b""
        if image.startswith(_AA_IMAGE):
            start = len(_AA_IMAGE) + _LENGTH.size
            (length,) = _LENGTH.unpack_from(image, len(_AA_IMAGE))
            aa_blob, image = image[start:start + length], image[start + length:]
        try:
            self.kv.absorb(image)
            if aa_blob:
                self.aa.absorb(aa_blob)
        except Corrupt as error:
            return Error(f"ERR PHALANX.ABSORB: {error}")
        self._set_owned(coalesce(self._owned + ranges))
        for key in [r for r in self.moved if r in ranges]:
            del self.moved[key]
        self.absorbed.add(source)
        return "OK"

    def take_split_offs(self) -> list[SplitOff]:
        taken, self.split_offs = self.split_offs, []
        return taken

    def snapshot(self) -> bytes:
        return _encode(self._owned, self.moved, self.kv.snapshot(), self.frozen_into,
                       self.absorbed, self.aa.snapshot())

    def snapshot_frames(self, frame_keys: int = 4096) -> Iterator[bytes]:
        """`snapshot`'s bytes as the state is now, a part per step, while entries keep being
        applied (the KV part in format 6, kv/snapshot_stream.py). Close the iterator to give
        up early."""
        prefix = _encode(self._owned, self.moved, b"", self.frozen_into, self.absorbed,
                         self.aa.snapshot())
        writer = self.kv.snapshot_writer(frame_keys)

        def parts() -> Iterator[bytes]:
            try:
                yield prefix
                yield from writer.frames()
            finally:
                writer.close()

        return parts()

    def restore(self, data: bytes) -> None:
        for _ in self.restore_steps(data):
            pass

    def restore_steps(self, data: bytes | memoryview) -> Iterator[None]:
        """`restore`, a frame per step; the state changes only at the last step."""
        owned, moved, kv_blob, frozen_into, absorbed, aa_blob = _decode(data)
        yield from self.kv.restore_steps(kv_blob)
        self.abandon_digest()  # its state is gone: no digest at that check here
        self.aa.restore(bytes(aa_blob))
        self._set_owned(owned)
        self.moved = moved
        self.frozen_into = frozen_into
        self.absorbed = absorbed


def _encode(owned: tuple[tuple[int, int], ...], moved: dict[tuple[int, int], int],
            kv_blob: bytes, frozen_into: int | None = None,
            absorbed: set[int] | None = None, aa_blob: bytes = b"") -> bytes:
    fields: dict[str, object] = {
        "owned": [list(r) for r in owned],
        "moved": [[a, b, shard] for (a, b), shard in sorted(moved.items())],
        "frozen_into": frozen_into, "absorbed": sorted(absorbed or ())}
    if aa_blob:
        fields["aa"] = len(aa_blob)
    header = json.dumps(fields, separators=(",", ":")).encode()
    return _MAGIC + _LENGTH.pack(len(header)) + header + aa_blob + kv_blob


def _decode(data: bytes | memoryview) -> tuple[tuple[tuple[int, int], ...],
                                               dict[tuple[int, int], int],
                                               memoryview, int | None, set[int], memoryview]:
    data = memoryview(data)
    if data[:len(_MAGIC)] != _MAGIC or len(data) < len(_MAGIC) + _LENGTH.size:
        raise Corrupt("shard snapshot: bad magic (not a phalanx shard snapshot)")
    start = len(_MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack_from(data, len(_MAGIC))
    try:
        header = json.loads(bytes(data[start:start + length]))
        owned = tuple((int(a), int(b)) for a, b in header["owned"])
        moved = {(int(a), int(b)): int(shard) for a, b, shard in header["moved"]}
        frozen_raw = header.get("frozen_into")
        frozen_into = None if frozen_raw is None else int(frozen_raw)
        absorbed = {int(shard) for shard in header.get("absorbed", [])}
        aa_length = int(header.get("aa", 0))
    except (ValueError, KeyError, TypeError) as error:
        raise Corrupt(f"shard snapshot: bad header: {error}") from error
    for first, last in owned:
        if not 0 <= first <= last < SLOT_COUNT:
            raise Corrupt(f"shard snapshot: bad slot range {first}-{last}")
    body = start + length
    return (owned, moved, data[body + aa_length:], frozen_into, absorbed,
            data[body:body + aa_length])


__all__ = ["AA_MERGE_COMMAND", "AA_PULL_COMMAND", "ABSORB_COMMAND", "CHECK_COMMAND", "CHECK_SYNC_KEYS", "DIGEST_COMMAND", "FREEZE_COMMAND", "SPLIT_COMMAND", "SPLIT_SNAPSHOT_INDEX", "VERIFY_COMMAND", "ShardMachine", "SplitOff", "split_command"]

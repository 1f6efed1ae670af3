"""The consistency checker and the damaged-replica watch (issue 16, "disks that fail or lie").

A disk can lie: return bytes that pass every checksum but are not what was written (a
misdirected write, a bug, a hand-edited file). Checksums cannot see that; comparing replicas
can. The replicas of a shard compare a digest of their state at the same applied index and
decide by a MAJORITY VOTE, as etcd's corruption check does (etcd `server/etcdserver/
corrupt.go`: a leader whose hash differs from a quorum of its followers' is the corrupt
member) and CockroachDB's consistency checker compares replicas at one applied index:

1. every `consistency_check_ms` the leader of each data shard proposes `PHALANX.CHECK
   voter...` (its configuration's voters); every replica that applies it at index i records
   the digest of its data at i (`placement/shard.py`, `kv/digest.py`; same index and same
   data give the same digest). A big shard's digest is computed in slices of
   `snapshot_slice_ms` of the event loop after the entry is applied (`build_digests`: the
   state at i is captured copy-on-write as a snapshot's is), never in one go at apply time:
   at 1M keys that stalled every replica of the shard at once for seconds (issue 15);
2. every replica (the leader too) commits its vote `PHALANX.DIGEST i node digest` through the
   shard's leader (`vote_on_checks`, `MetaClient.propose_on_shard`);
3. when one digest has the votes of a majority of the voters, every replica compares its own
   digest at i with it, at the same log position: one that differs stops (`RaftGroup` raises
   `Corrupt` from the apply loop: it never serves or acknowledges anything from that state
   again), is reported and rebuilt. A divergent LEADER stops the same way: it sends nothing
   more, the healthy majority elects a new leader (Raft §5.2) and keeps serving.

Every node also watches its own replicas: one that stopped on a storage failure (checksum
mismatch, EIO, full disk) or a divergence, at run time or when its store was opened, is a
damaged replica. It is reported (event, metric, `/status`) and rebuilt from its healthy peers
through the cluster map (`rebuild_replica`: the shard's leader removes it from the
configuration, the node deletes its data, then it comes back as a new member: learner,
snapshot, voter; see `Controllers.rebuild_damaged`).

Rules of this file:
- The checks are rate-bounded: at most one per shard per `consistency_check_ms` (0 = off), and
  one check at a time per shard. The digest costs about 3.5 µs of CPU per key (measured,
  docs/disk-faults.md), spent in slices of at most `snapshot_slice_ms` between which the loop
  runs everything else (one digest task per replica at a time).
- Nothing here decides alone that data is bad: the votes and the verdict are in the log, the
  same on every replica; no majority for any digest is no verdict (nothing is stopped).
- A replica votes once per check (retried at most once a second until its vote is in the
  log), only on checks it recorded a digest for and that have no verdict yet.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

from phalanx.errors import Corrupt, PhalanxError, StorageError
from phalanx.kv import Command, encode_command
from phalanx.placement.planner import relocation_op, relocation_target
from phalanx.placement.shard import CHECK_COMMAND, DIGEST_COMMAND
from phalanx.server.config import NodeConfig
from phalanx.server.events import EventLog
from phalanx.server.group import RaftGroup
from phalanx.server.meta_client import MetaClient
from phalanx.server.metrics import NodeMetrics, _Counter, _Gauge
from phalanx.server.replicas import META_GROUP, Replicas

logger = logging.getLogger(__name__)

#: Keys hashed (or sorted) between two looks at the clock while a check digest is computed.
_DIGEST_STEP_KEYS = 256


#: What a failed disk (not a lie, not one bad record) says in a replica's stop reason: EIO,
#: ENOSPC (storage/ and server/disk_faults.py word them as the OS does).
_DISK_FAILURES = ("Errno 5]", "Errno 28]", "Input/output error", "No space left",
                  "disk full")


def disk_failed(why: str) -> bool:
    """True when a damaged replica stopped because its disk failed (EIO, full), rather than
    because its bytes were bad or its state diverged: such a replica is rebuilt elsewhere."""
    return any(sign in why for sign in _DISK_FAILURES)


class ConsistencyChecker:
    """Proposes the checks on the shards this node leads; watches this node's replicas."""

    def __init__(self, replicas: Replicas, config: NodeConfig, metrics: NodeMetrics,
                 events: EventLog, meta_client: MetaClient) -> None:
        self.replicas = replicas
        self.meta_client = meta_client
        #: Damaged replicas being rebuilt on another node: group id -> the target node.
        self.relocating: dict[int, str] = {}
        #: When a map op was last sent, per (op, shard, node): one a second at most.
        self.sent_at: dict[tuple[str, int, str], float] = {}
        self.config = config
        self.events = events
        self.last_check: dict[int, float] = {}
        self.running: set[int] = set()
        #: Damaged replicas already reported (group id -> why).
        self.reported: dict[int, str] = {}
        #: The last verified check per shard led here: (index, digest, result).
        self.results: dict[int, tuple[int, str, str]] = {}
        #: Votes committed: (group id, check index); when each vote was last sent.
        self.voted: set[tuple[int, int]] = set()
        #: Replicas whose pending check digest a task is computing (group ids).
        self.digesting: set[int] = set()
        self.vote_sent_at: dict[tuple[int, int], float] = {}
        self.scrubbing = False
        self.last_scrub_at = time.monotonic()  # the first scrub one interval after the start
        #: When each replica was last scrubbed (monotonic).
        self.scrubbed: dict[int, float] = {}
        registry = metrics.registry
        self._scrubs = _Counter("phalanx_scrubs", "Background scrubs of a replica's files, by "
                                "result.", ("result",), registry=registry)
        self._scrub_bytes = _Counter("phalanx_scrub_bytes", "Bytes read back and verified by "
                                     "the background scrub.", registry=registry)
        self._checks = _Counter("phalanx_consistency_checks",
                                "Consistency checks this node proposed as a shard's leader, by "
                                "result.", ("result",), registry=registry)
        self._damaged_total = _Counter("phalanx_replicas_damaged",
                                       "Replicas of this node that stopped on a storage failure "
                                       "or a divergence.", ("cause",), registry=registry)
        self._damaged_now = _Gauge("phalanx_replicas_damaged_now",
                                   "Replicas of this node stopped and waiting to be rebuilt.",
                                   registry=registry)

    # -- the damaged-replica watch (every node) -------------------------------------------
    def damaged(self) -> dict[int, str]:
        """Every damaged data replica of this node: group id -> why."""
        found = dict(self.replicas.damaged)
        for group_id, group in self.replicas.data_groups().items():
            if group.stopped and group.fatal_error:
                found[group_id] = group.fatal_error
        return found

    def watch(self) -> dict[int, str]:
        """Report newly damaged replicas (event, metric, log); returns every damaged one."""
        damaged = self.damaged()
        for group_id, why in damaged.items():
            if self.reported.get(group_id) == why:
                continue
            self.reported[group_id] = why
            cause = "divergence" if "diverged" in why else "storage"
            self._damaged_total.labels(cause).inc()
            self.events.record("replica-damaged", f"{self.config.id}: replica of shard "
                                                  f"{group_id} stopped: {why}; it will be "
                                                  f"rebuilt from its peers")
            logger.error("%s: replica of shard %s is damaged: %s", self.config.id, group_id,
                         why)
        for group_id in [g for g in self.reported if g not in damaged]:
            del self.reported[group_id]
        self._damaged_now.unlabelled().set(len(damaged))
        return damaged

    # -- the rebuild (the damaged node, then the shard's leader) ---------------------------
    async def rebuild_damaged(self) -> None:
        """On every node: have each damaged replica rebuilt. A replica whose DISK failed (EIO,
        disk full: `disk_failed`) is rebuilt on another node when the planner has one
        (`relocation_target`; a compare-and-set `set_replicas` moving it there:
        `relocation_op`); this node deletes its copy once the shard's configuration no longer
        holds it (which frees the disk). Otherwise
        (bad bytes, a divergence, or no other node) it is rebuilt in place: ask the map to
        rebuild it; once the map lists it as rebuilding, delete its data (it is stopped, so it
        votes and acknowledges nothing; it comes back empty only after the leader removed it:
        a new member)."""
        replicas = self.replicas
        if not replicas.meta_caught_up():
            return
        me = self.config.id
        cmap = replicas.cluster_map
        for group_id, why in self.watch().items():
            shard = cmap.shards.get(group_id)
            if shard is None:
                continue
            if me in shard.rebuilding:
                await self._delete_damaged(group_id, why, "it comes back as a new member")
            elif me in shard.replicas:
                # A compare-and-set (planner.relocation_op): this node's map may be frozen
                # (its own placement-driver replica stopped), and a relocation computed from
                # it must not undo a later move of the shard.
                target = relocation_target(cmap, group_id, me) if disk_failed(why) else None
                if target is None:
                    self._send_once({"op": "rebuild_replica", "shard": group_id, "node": me})
                    continue
                self._send_once(relocation_op(cmap, group_id, me, target), node=me)
                if self.relocating.get(group_id) != target:
                    self.relocating[group_id] = target
                    self.events.record("replica-relocate", f"{me}: the disk of its replica of "
                                                           f"shard {group_id} failed; rebuilding "
                                                           f"it on {target}")
            elif me not in shard.voters and me not in shard.learners:
                # Relocated and out of the configuration: nobody needs these bytes any more.
                self.relocating.pop(group_id, None)
                await self._delete_damaged(group_id, why, "it was rebuilt on another node")

    async def _delete_damaged(self, group_id: int, why: str, then: str) -> None:
        replicas = self.replicas
        if group_id in replicas.groups:
            await replicas.close_group(group_id, delete=True)
        else:
            shutil.rmtree(replicas.data_dir / "groups" / str(group_id), ignore_errors=True)
        replicas.damaged.pop(group_id, None)
        self.events.record("replica-rebuild", f"{self.config.id} deleted its damaged replica "
                                              f"of shard {group_id} ({why}); {then}")

    def finish_rebuilds(self) -> None:
        """On each shard's leader: a replica being rebuilt that has left the configuration
        may come back (the controllers then add it as a learner: snapshot, then voter)."""
        replicas = self.replicas
        if not replicas.meta_caught_up():
            return
        for group_id, group in replicas.data_groups().items():
            shard = replicas.cluster_map.shards.get(group_id)
            if shard is None or not shard.rebuilding or group.stopped or \
                    not group.is_leader():
                continue
            conf = group.raw.conf
            members = {*conf.voters, *conf.learners, *conf.voters_outgoing}
            for node in shard.rebuilding:
                if node not in members and group.raw.pending_conf_index <= group.raw.applied:
                    self._send_once({"op": "finish_rebuild", "shard": group_id,
                                     "node": node})

    def _send_once(self, op: dict[str, object], *, node: str | None = None) -> None:
        key = (str(op["op"]), int(str(op["shard"])), str(op.get("node", node)))
        now = time.monotonic()
        if now - self.sent_at.get(key, 0.0) < 1.0:
            return
        self.sent_at[key] = now
        logger.info("%s: %s shard %s node %s", self.config.id, op["op"], op["shard"], key[2])
        asyncio.get_running_loop().create_task(self.meta_client.propose_quietly(op))

    # -- the checks (on each shard's leader) ----------------------------------------------
    def start_due_checks(self) -> None:
        """Start a check on every shard led here whose last one is `consistency_check_ms` old."""
        interval = self.config.consistency_check_ms / 1000
        if interval <= 0:
            return
        now = time.monotonic()
        for group_id, group in self.replicas.data_groups().items():
            if group_id == META_GROUP or group.shard is None or group.stopped or \
                    not group.is_leader() or group_id in self.running:
                continue
            last = self.last_check.setdefault(group_id, now)
            if now - last < interval:
                continue
            self.last_check[group_id] = now
            self.running.add(group_id)
            asyncio.get_running_loop().create_task(self._check(group_id, group),
                                                   name=f"consistency-check-{group_id}")

    async def _check(self, group_id: int, group: RaftGroup) -> None:
        timeout = self.config.request_timeout_ms / 1000
        now_ms = int(time.time() * 1000)
        conf = group.raw.conf
        if conf.voters_outgoing or group.shard is None:
            self.running.discard(group_id)  # a joint configuration: check after it is left
            return
        voters = tuple(str(v).encode() for v in sorted(conf.voters))
        try:
            reply = await asyncio.wait_for(group.propose_data(encode_command(
                Command(name=CHECK_COMMAND, args=voters, now_ms=now_ms))), timeout)
            if not isinstance(reply, bytes) or b" " not in reply:
                self._checks.labels("failed").inc()
                return
            index = int(reply.split(b" ", 1)[0])
            shard = group.shard
            # The votes come in through the log (vote_on_checks on every replica, this one
            # too): wait, bounded, for the verdict.
            deadline = time.monotonic() + 3 * timeout
            while not group.stopped and index in shard.check_voters:
                pending = shard.pending_digest
                if pending is not None and pending[0] == index:
                    # Our own digest is still being computed (a big shard; the followers'
                    # votes may even make the verdict first): the bounded wait for the
                    # verdict starts once it is done.
                    deadline = time.monotonic() + 3 * timeout
                elif index in shard.check_verdicts or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.05)
            verdict = shard.check_verdicts.get(index)
            if verdict is None:
                result = "stopped" if group.stopped else "no-majority"
                self._checks.labels(result).inc()
                self.results[group_id] = (index, shard.check_digests.get(index, ""), result)
                return
            digest, dissenters = verdict
            result = "MISMATCH" if dissenters or shard.check_digests.get(index) != digest \
                else "OK"
            self._checks.labels(result.lower()).inc()
            self.results[group_id] = (index, digest, result)
        except (PhalanxError, TimeoutError) as error:
            self._checks.labels("failed").inc()
            logger.info("%s: consistency check of shard %s did not complete: %s",
                        self.config.id, group_id, error)
        finally:
            self.running.discard(group_id)

    def build_digests(self) -> None:
        """On every node: start computing each local replica's pending check digest (a big
        shard's, `ShardMachine.pending_digest`) in a task of its own, one per replica."""
        for group_id, group in self.replicas.data_groups().items():
            shard = group.shard
            if shard is None or group.stopped or shard.pending_digest is None or \
                    group_id in self.digesting:
                continue
            self.digesting.add(group_id)
            asyncio.get_running_loop().create_task(self._build_digest(group_id, group),
                                                   name=f"consistency-digest-{group_id}")

    async def _build_digest(self, group_id: int, group: RaftGroup) -> None:
        """Compute the pending digest in slices of `snapshot_slice_ms` of the loop (as a
        snapshot is written: server/group_snapshots.py); if it disagrees with a verdict
        already applied, stop the replica as the apply loop would have."""
        budget = max(1, self.config.snapshot_slice_ms) / 1000
        shard = group.shard
        started = time.perf_counter()
        slices = 0
        try:
            while shard is not None and not group.stopped and \
                    self.replicas.groups.get(group_id) is group:
                deadline = time.perf_counter() + budget
                done = shard.step_digest(_DIGEST_STEP_KEYS)
                while not done and time.perf_counter() < deadline:
                    done = shard.step_digest(_DIGEST_STEP_KEYS)
                if done:
                    if shard.divergence is not None:
                        group.stop_on_storage_failure(
                            Corrupt(f"replica diverged: {shard.divergence}"))
                    logger.info("%s: check digest of shard %s: ~%d keys in %.0f ms (%d slices)",
                                self.config.id, group_id, group.machine.key_count,
                                (time.perf_counter() - started) * 1e3, slices)
                    return
                slices += 1
                await asyncio.sleep(0)
            if shard is not None:
                shard.abandon_digest()  # the replica stopped or was closed meanwhile
        finally:
            self.digesting.discard(group_id)

    def vote_on_checks(self) -> None:
        """On every node: commit this replica's digest at each check it recorded that has no
        verdict yet (`PHALANX.DIGEST`, through the shard's leader; see the module docstring).
        Starts the pending digests' tasks first (`build_digests`)."""
        self.build_digests()
        me = self.config.id
        now = time.monotonic()
        pending: set[tuple[int, int]] = set()
        for group_id, group in self.replicas.data_groups().items():
            shard = group.shard
            if shard is None or group.stopped:
                continue
            for index, voters in list(shard.check_voters.items()):
                key = (group_id, index)
                votes = shard.check_votes.get(index, {})
                if me not in voters or me in votes or index in shard.check_verdicts or \
                        index not in shard.check_digests:
                    continue
                pending.add(key)
                if key in self.voted or now - self.vote_sent_at.get(key, 0.0) < 1.0:
                    continue
                self.vote_sent_at[key] = now
                asyncio.get_running_loop().create_task(
                    self._vote(group_id, index, shard.check_digests[index]),
                    name=f"consistency-vote-{group_id}-{index}")
        for key in [k for k in self.vote_sent_at if k not in pending]:
            del self.vote_sent_at[key]
        self.voted &= pending

    async def _vote(self, group_id: int, index: int, digest: str) -> None:
        try:
            await self.meta_client.propose_on_shard(group_id, DIGEST_COMMAND, (
                str(index).encode(), self.config.id.encode(), digest.encode()))
            self.voted.add((group_id, index))
        except (PhalanxError, OSError, TimeoutError) as error:
            logger.info("%s: vote on check %s of shard %s not committed yet: %s",
                        self.config.id, index, group_id, error)

    # -- the background scrub (every node) -------------------------------------------------
    def start_due_scrub(self) -> None:
        """Every `scrub_interval_ms`, scrub the replica of this node scrubbed longest ago: its
        files read back and verified on its store's writer thread (`WalLogStore.scrub`). One
        replica at a time, so the disk reads stay bounded."""
        interval = self.config.scrub_interval_ms / 1000
        now = time.monotonic()
        if interval <= 0 or self.scrubbing or now - self.last_scrub_at < interval:
            return
        candidates = [(self.scrubbed.get(gid, 0.0), gid) for gid, group
                      in self.replicas.data_groups().items() if not group.stopped]
        if not candidates:
            return
        _, group_id = min(candidates)
        self.last_scrub_at = now
        self.scrubbed[group_id] = now
        self.scrubbing = True
        asyncio.get_running_loop().create_task(self._scrub(group_id),
                                               name=f"scrub-{group_id}")

    async def _scrub(self, group_id: int) -> None:
        try:
            group = self.replicas.groups.get(group_id)
            store = self.replicas.stores.get(group_id)
            if group is None or store is None or group.stopped:
                return
            started = time.perf_counter()
            try:
                verified = await store.scrub()
            except StorageError as error:
                if self.replicas.groups.get(group_id) is group and not group.stopped:
                    group.stop_on_storage_failure(error)
                    self._scrubs.labels("failed").inc()
                return
            self._scrubs.labels("ok").inc()
            self._scrub_bytes.unlabelled().inc(verified)
            logger.debug("%s: scrubbed shard %s: %d bytes in %.0f ms", self.config.id,
                         group_id, verified, (time.perf_counter() - started) * 1e3)
        finally:
            self.scrubbing = False

    def status(self) -> dict[str, object]:
        """For `/status`: the damaged replicas and the last check of each shard led here."""
        return {
            "interval_ms": self.config.consistency_check_ms,
            "scrub_interval_ms": self.config.scrub_interval_ms,
            "damaged": {str(g): why for g, why in sorted(self.damaged().items())},
            "last_checks": {str(g): {"index": index, "digest": digest, "result": result}
                            for g, (index, digest, result) in sorted(self.results.items())},
            # The latest verdict each local replica applied (the majority's digest, the
            # replicas that voted otherwise), and the latest one with a dissent among those
            # kept (a dissenter stops; later checks no longer count it).
            "verdicts": {str(g): _verdicts(group.shard.check_verdicts)
                         for g, group in sorted(self.replicas.data_groups().items())
                         if group.shard is not None and group.shard.check_verdicts},
            # Every local replica's latest check digest (leader or not), so that the digests
            # of one index can be compared across the nodes' /status.
            "digests": {str(g): {"index": max(group.shard.check_digests),
                                 "digest": group.shard.check_digests[
                                     max(group.shard.check_digests)]}
                        for g, group in sorted(self.replicas.data_groups().items())
                        if group.shard is not None and group.shard.check_digests},
        }


def _verdicts(verdicts: dict[int, tuple[str, list[str]]]) -> dict[str, object]:
    latest = max(verdicts)
    shown: dict[str, object] = {"index": latest, "digest": verdicts[latest][0],
                                "dissenters": list(verdicts[latest][1])}
    dissents = [index for index, (_, dissenters) in verdicts.items() if dissenters]
    if dissents:
        index = max(dissents)
        shown["last_dissent"] = {"index": index, "digest": verdicts[index][0],
                                 "dissenters": list(verdicts[index][1])}
    return shown


__all__ = ["ConsistencyChecker", "disk_failed"]
